//! # mantissa-prometheus
//!
//! The Prometheus exporter of mantissa. mantissa's layers only *emit* metrics
//! through the `metrics` facade; this crate installs the recorder that turns
//! them into the Prometheus text format:
//!
//! - **explicit buckets for every histogram** of
//!   [`mantissa_core::catalog::HISTOGRAMS`] (OpenTelemetry GenAI boundaries for
//!   durations and tokens), so no histogram is rendered as a summary, which
//!   Prometheus could not aggregate across replicas;
//! - **descriptions** (`# HELP`) of the whole catalogue;
//! - an **upkeep task** draining histogram samples every 5 s ([`UpkeepTask`]);
//! - a **`/metrics` server** ([`ExporterHandle::serve`], default
//!   `127.0.0.1:9464`) with graceful shutdown, a [`metrics_router`] to merge
//!   into your own axum app, and plain [`render`] for other frameworks.
//!
//! # Examples
//!
//! Defaults: install globally and serve.
//!
//! ```rust,standalone_crate,no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let exporter = mantissa_prometheus::install()?;
//! let server = exporter.serve().await?; // http://127.0.0.1:9464/metrics
//! // ... run the agent service ...
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Customised, without touching global state (as in tests):
//!
//! ```
//! use mantissa_core::catalog;
//! use mantissa_prometheus::PrometheusConfig;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (recorder, handle) = PrometheusConfig::new()
//!     .global_label("replica", "a")
//!     .listen_addr("127.0.0.1:0".parse()?)
//!     .build_recorder()?;
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::histogram!(catalog::GEN_AI_CLIENT_TOKEN_USAGE, "gen_ai_token_type" => "input").record(300.0);
//! });
//! let text = handle.render();
//! assert!(text.contains(r#"gen_ai_client_token_usage_bucket{replica="a",gen_ai_token_type="input",le="1024"} 1"#));
//! assert!(!text.contains("quantile="));
//!
//! let server = handle.serve().await?;
//! println!("scrape http://{}/metrics", server.local_addr());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod collector;
mod config;
mod error;
mod server;
mod upkeep;

pub use collector::Collector;
pub use config::{DEFAULT_LISTEN_ADDR, ExporterHandle, PrometheusConfig, build_recorder, install, render};
pub use error::{BuildError, InstallError, ServeError};
pub use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
pub use server::{CONTENT_TYPE, METRICS_PATH, MetricsServer, metrics_router};
pub use upkeep::{DEFAULT_UPKEEP_INTERVAL, UpkeepTask};
