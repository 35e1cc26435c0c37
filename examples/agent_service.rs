//! The main job: a small multi-agent service — a trader, a risk analyst and a
//! manager — running many concurrent sessions against the embedded mock LLM
//! through the whole mantissa stack (triage → reset → router → per-model
//! health → mock; tools through health; a monitor raising alerts to the
//! manager), serving Prometheus metrics on `/metrics`.
//!
//! Midway, one model (`mock-small`, the low tier) starts failing: watch traffic fall back,
//! the model cool down, an alert fire and resolve. Long sessions cross the
//! brittleness thresholds and are compacted. At the end it prints a health
//! table per agent, model and tool, tier shares and the money triage saved.
//!
//! ```text
//! cargo run --example agent_service                      # ~40 s, then exits
//! cargo run --example agent_service -- --duration 10 --sessions 50
//! cargo run --example agent_service -- --serve           # keep /metrics up until Ctrl-C
//! cargo run --example agent_service -- --listen 127.0.0.1:9000
//! # a real OpenAI-compatible server (vLLM, Ollama, llama.cpp, LiteLLM, OpenAI);
//! # the key comes from OPENAI_API_KEY, models are low,medium,high (default
//! # gpt-4o-mini,gpt-4o,o3); known models are priced from the built-in catalogue:
//! cargo run --example agent_service -- --upstream http://127.0.0.1:8000/v1 \
//!     --models qwen2.5-0.5b,qwen2.5-7b,qwen2.5-32b --duration 20 --sessions 4
//! # export the call spans to an OTLP/HTTP collector (OTEL_EXPORTER_OTLP_ENDPOINT,
//! # default http://localhost:4318; OTEL_SERVICE_NAME, default mantissa):
//! cargo run --example agent_service --features otel -- --otel --duration 10
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use mantissa::Upstream;
use mantissa::core::{BoxError, ModelSpec, TierConfig, TierSet};
use mantissa::demo::{Demo, DemoConfig};
use mantissa::openai::OpenAiConfig;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(about = "mantissa demo agent service on the embedded mock LLM")]
struct Args {
    /// Seconds of load to generate.
    #[arg(long, default_value_t = 40)]
    duration: u64,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 24)]
    sessions: usize,
    /// Address of the /metrics server.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Milliseconds each session waits between turns.
    #[arg(long, default_value_t = 100)]
    think_ms: u64,
    /// Keep serving /metrics after the load ends, until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// No model outage midway.
    #[arg(long)]
    no_outage: bool,
    /// Seed of every random draw of the run (mock latencies and failures,
    /// tool latencies, cooldown jitter): the same seed replays the same story.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Base URL of an OpenAI-compatible server (with `/v1`) to use instead of
    /// the embedded mock. The API key is read from OPENAI_API_KEY.
    #[arg(long)]
    upstream: Option<String>,
    /// Model ids of the low, medium and high tiers, comma-separated (with --upstream).
    #[arg(long, default_value = "gpt-4o-mini,gpt-4o,o3")]
    models: String,
    /// Export traces with OpenTelemetry (OTLP over HTTP, configured by the
    /// OTEL_* environment variables). Needs the `otel` feature.
    #[arg(long)]
    otel: bool,
}

/// Installs the log subscriber and, with `--otel`, the OpenTelemetry export.
/// The returned guard flushes the exporter when dropped at the end of `main`.
#[cfg(feature = "otel")]
fn init_tracing(otel: bool) -> Result<Option<mantissa::otel::OtelGuard>, BoxError> {
    if otel {
        let guard = mantissa::otel::init()?;
        println!("exporting traces over OTLP/HTTP (see OTEL_EXPORTER_OTLP_ENDPOINT)");
        return Ok(Some(guard));
    }
    init_logs();
    Ok(None)
}

/// Installs the log subscriber; `--otel` needs the `otel` feature.
#[cfg(not(feature = "otel"))]
fn init_tracing(otel: bool) -> Result<Option<()>, BoxError> {
    if otel {
        println!("--otel: this binary was built without the `otel` feature; no traces are exported");
    }
    init_logs();
    Ok(None)
}

fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

/// The upstream and the tier ladder for `--upstream URL --models a,b,c`.
fn upstream_config(url: &str, models: &str) -> Result<(Option<Upstream>, Option<TierSet>), BoxError> {
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
    Ok((
        Some(Upstream::OpenAi(Box::new(config))),
        Some(TierSet::new(tiers)?),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let _tracing = init_tracing(args.otel)?;
    let (upstream, tiers) = match &args.upstream {
        None => (None, None),
        Some(url) => upstream_config(url, &args.models)?,
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
