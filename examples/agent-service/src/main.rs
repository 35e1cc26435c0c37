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
use example_agent_service::cli::{self, Args};
use mantissa::core::BoxError;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    #[cfg(feature = "otel")]
    let _guard = if args.otel {
        let guard = mantissa::otel::init()?;
        println!("exporting traces over OTLP/HTTP (see OTEL_EXPORTER_OTLP_ENDPOINT)");
        Some(guard)
    } else {
        cli::init_logs();
        None
    };
    #[cfg(not(feature = "otel"))]
    {
        if args.otel {
            println!("--otel: this binary was built without the `otel` feature; no traces are exported");
        }
        cli::init_logs();
    }
    cli::run(args).await
}
