//! `mantissa gateway`: the whole stack behind an OpenAI-compatible endpoint.

use std::error::Error;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use mantissa_gateway::{Gateway, KeyDigest};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Serve an `AgentStack` TOML file (plus its `[gateway]` table) as an
/// OpenAI-compatible HTTP endpoint: POST /v1/chat/completions, GET /v1/models,
/// /metrics, /healthz, /readyz.
#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// The configuration: `AgentStack`'s TOML plus a `[gateway]` table.
    #[arg(long, value_name = "FILE", required_unless_present = "hash_key")]
    config: Option<PathBuf>,
    /// Listen here instead of `[gateway] listen` (default 127.0.0.1:4000;
    /// port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Read a client key on standard input and print the `hash = "sha256:…"`
    /// value for `[[gateway.keys]]`, then exit.
    #[arg(long)]
    hash_key: bool,
}

pub(crate) fn run(args: GatewayArgs) -> Result<()> {
    if args.hash_key {
        let mut key = String::new();
        std::io::stdin().read_to_string(&mut key)?;
        let key = key.trim();
        if key.is_empty() {
            return Err("no key on standard input".into());
        }
        println!("{}", KeyDigest::of(key).to_config_string());
        return Ok(());
    }
    let Some(config) = args.config else {
        return Err("--config FILE is required".into());
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,mantissa_gateway=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One core (e.g. pinned with taskset): a current-thread runtime, which
    // skips the work-stealing scheduler's wake-ups between threads.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    runtime.block_on(async move {
        let gateway = Gateway::from_toml_file(&config)?;
        let addr = args.listen.unwrap_or(gateway.config().listen);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        let server = gateway.serve(listener, shutdown_signal())?;
        println!("mantissa gateway listening on http://{}", server.local_addr());
        server.wait().await?;
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
