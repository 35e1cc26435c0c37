//! The main job: a small multi-agent service — a trader, a risk analyst and a
//! manager — running many concurrent sessions against the embedded mock LLM
//! through the whole mantissa stack (reset → triage → router → per-model
//! health → mock; tools through health; a monitor raising alerts to the
//! manager), serving Prometheus metrics on `/metrics`.
//!
//! Midway, one model (`mock-medium`) starts failing: watch traffic fall back,
//! the model cool down, an alert fire and resolve. Long sessions cross the
//! brittleness thresholds and are compacted. At the end it prints a health
//! table per agent, model and tool, tier shares and the money triage saved.
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
use mantissa::demo::{Demo, DemoConfig};

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
}

#[tokio::main]
async fn main() -> Result<(), mantissa::core::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let config = DemoConfig {
        listen: args.listen,
        duration: Duration::from_secs(args.duration),
        sessions: args.sessions,
        think_time: Duration::from_millis(args.think_ms),
        outage: (!args.no_outage).then_some((0.3, 0.6)),
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
