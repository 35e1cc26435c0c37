//! The command line of the agent service: [`Args`] (the flags) and [`run`].
//!
//! ```text
//! cargo run --example agent_service                      # ~40 s, then exits
//! cargo run --example agent_service -- --duration 10 --sessions 50
//! cargo run --example agent_service -- --serve           # keep /metrics up until Ctrl-C
//! cargo run --example agent_service -- --listen 127.0.0.1:9000
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use mantissa::Upstream;
use mantissa::core::{BoxError, ModelSpec, TierConfig, TierSet};
use mantissa::openai::OpenAiConfig;

use crate::{Demo, DemoConfig};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(about = "mantissa demo agent service on the embedded mock LLM")]
pub struct Args {
    /// Seconds of load to generate.
    #[arg(long, default_value_t = 40)]
    pub duration: u64,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 24)]
    pub sessions: usize,
    /// Address of the /metrics server.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Milliseconds each session waits between turns.
    #[arg(long, default_value_t = 100)]
    pub think_ms: u64,
    /// Keep serving /metrics after the load ends, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// No model outage midway.
    #[arg(long)]
    pub no_outage: bool,
    /// Seed of every random draw of the run (mock latencies and failures,
    /// tool latencies, cooldown jitter): the same seed replays the same story.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Base URL of an OpenAI-compatible server (with `/v1`) to use instead of
    /// the embedded mock. The API key is read from OPENAI_API_KEY.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Model ids of the low, medium and high tiers, comma-separated (with --upstream).
    #[arg(long, default_value = "gpt-4o-mini,gpt-4o,o3")]
    pub models: String,
    /// Export traces with OpenTelemetry (OTLP over HTTP, configured by the
    /// OTEL_* environment variables). Needs the `otel` feature.
    #[arg(long)]
    pub otel: bool,
}

/// Starts the OpenTelemetry export and returns what keeps it running
/// (dropping it flushes and stops the export). A `main` passes
/// `Some(start)` when its package was built with the `otel` feature.
pub type OtelStart = fn() -> Result<Box<dyn std::any::Any>, BoxError>;

/// Installs the telemetry `args` ask for: with `--otel` and an `otel` start
/// function, the OpenTelemetry export (its guard is returned: keep it until
/// the end of `main`); else the log subscriber ([`init_logs`]), saying so
/// when `--otel` was asked of a build without the feature.
pub fn init_telemetry(
    args: &Args,
    otel: Option<OtelStart>,
) -> Result<Option<Box<dyn std::any::Any>>, BoxError> {
    match (args.otel, otel) {
        (true, Some(start)) => {
            let guard = start()?;
            println!("exporting traces over OTLP/HTTP (see OTEL_EXPORTER_OTLP_ENDPOINT)");
            Ok(Some(guard))
        }
        (asked, _) => {
            if asked {
                println!("--otel: this binary was built without the `otel` feature; no traces are exported");
            }
            init_logs();
            Ok(None)
        }
    }
}

/// Installs the `tracing` log subscriber (`RUST_LOG`, default `warn`).
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

/// The upstream and the tier ladder for `--upstream URL --models a,b,c`.
fn upstream_config(url: &str, models: &str) -> Result<(Upstream, TierSet), BoxError> {
    let ids: Vec<&str> = models
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if ids.is_empty() {
        return Err("--models needs at least one model id".into());
    }
    let names = ["low", "medium", "high"];
    let tiers = ids
        .iter()
        .take(3)
        .zip(names)
        .map(|(id, tier)| TierConfig::new(tier, vec![ModelSpec::new(*id)]))
        .collect();
    let config = OpenAiConfig::from_env().with_base_url(url);
    Ok((Upstream::OpenAi(Box::new(config)), TierSet::new(tiers)?))
}

/// Runs the service as `args` say: the load, the report, then (with
/// `--serve`) `/metrics` until Ctrl-C. The caller installs the log
/// subscriber (and the OpenTelemetry export, with `--otel`).
pub async fn run(args: Args) -> Result<(), BoxError> {
    let (upstream, tiers) = match &args.upstream {
        None => (None, None),
        Some(url) => {
            let (upstream, tiers) = upstream_config(url, &args.models)?;
            (Some(upstream), Some(tiers))
        }
    };
    let config = DemoConfig {
        upstream,
        tiers,
        listen: args.listen,
        duration: Duration::from_secs(args.duration),
        sessions: args.sessions,
        think_time: Duration::from_millis(args.think_ms),
        outage: (!args.no_outage).then_some((0.3, 0.6)),
        seed: args.seed,
        ..DemoConfig::default()
    };
    let mut demo = Demo::start(config).await?;
    println!(
        "mantissa demo: {} sessions for {} s; metrics at http://{}/metrics",
        args.sessions,
        args.duration,
        demo.metrics_addr()
    );
    let report = tokio::select! {
        r = demo.wait() => r?,
        _ = tokio::signal::ctrl_c() => demo.stop().await?,
    };
    println!("{}", report.text);
    if args.serve {
        println!("serving http://{}/metrics until Ctrl-C", demo.metrics_addr());
        tokio::signal::ctrl_c().await?;
    }
    demo.shutdown().await?;
    Ok(())
}
