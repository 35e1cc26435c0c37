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
//! The service lives in its own example package, `examples/agent-service`
//! (`example_agent_service`); this is a thin `main` over it.
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

use clap::Parser;
use example_agent_service::cli::{self, Args, OtelStart};
use mantissa::core::BoxError;

// `--otel` needs the root package's `otel` feature, which this example
// checks (the example package's own `otel` feature is for its `main`).
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
