//! The agent service on the command line: a trader, a risk analyst and a
//! manager on the embedded mock LLM through the whole mantissa stack, with
//! a model outage midway, serving `/metrics` (see the crate docs).
//!
//! ```text
//! cargo run -p example-agent-service -- --duration 10
//! cargo run -p example-agent-service --features otel -- --otel --duration 10
//! ```
//!
//! The README's command, `cargo run --example agent_service`, runs the same
//! thing through the root package's thin example.

use clap::Parser;
use example_agent_service::cli::{self, Args, OtelStart};
use mantissa::core::BoxError;

#[cfg(feature = "otel")]
const OTEL: Option<OtelStart> = Some(|| Ok(Box::new(mantissa::otel::init()?)));
#[cfg(not(feature = "otel"))]
const OTEL: Option<OtelStart> = None;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let _telemetry = cli::init_telemetry(&args, OTEL)?;
    cli::run(args).await
}
