//! # mantissa-mock
//!
//! Mocks for testing, demonstrating and benchmarking mantissa stacks without a
//! real provider:
//!
//! - [`MockLlm`]: an in-process `tower::Service<LlmRequest>` with scripted
//!   replies (text, tool calls, failures of every [`FailureClass`] with
//!   realistic HTTP statuses), per-model latency and failure rates from a
//!   seeded generator, a [`MockControl`] handle to switch models into failing
//!   mode mid-run, token usage, streaming, and counters of what it received.
//! - [`MockTools`]: a `tower::Service<ToolRequest>` with registered tools,
//!   failure injection, latency, and demo trading tools (`get_market_price`,
//!   `assess_risk`, `place_order`).
//! - [`demo::trader`]: a scripted tool-using agent (a responder for
//!   [`MockLlm`]) that drives the demo tools, for examples.
//! - `HttpMockLlm` (feature `http`): an OpenAI-compatible chat-completions
//!   server on loopback (wiremock) with JSON and SSE replies and failures as
//!   real HTTP, for testing HTTP clients.
//! - `trace::SpanCapture`: a recording `tracing` subscriber, and
//!   `metrics::MetricsCapture` (feature `metrics`): a recording `metrics`
//!   recorder, for tests that assert spans and metrics.
//!
//! Time in the mock goes through `tokio::time`, so tests on a paused clock
//! advance through simulated latency instantly.
//!
//! ```
//! use mantissa_core::{LlmRequest, Message};
//! use mantissa_mock::{MockLlm, MockReply};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mantissa_core::BoxError> {
//! let llm = MockLlm::with_replies([MockReply::text("BUY 10 ACME")]);
//! let req = LlmRequest::new("s1", "trader", vec![Message::user("What now?")]);
//! let resp = llm.clone().oneshot(req).await?;
//! assert_eq!(resp.message.text(), "BUY 10 ACME");
//! # Ok(()) }
//! ```
//!
//! [`FailureClass`]: mantissa_core::FailureClass

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod demo;
#[cfg(feature = "http")]
pub mod http;
mod latency;
pub mod llm;
#[cfg(feature = "metrics")]
pub mod metrics;
mod reply;
mod stream;
pub mod tools;
pub mod trace;

#[cfg(feature = "http")]
pub use http::{HttpMockLlm, HttpReply};
pub use latency::Latency;
pub use llm::{MockControl, MockLlm, MockLlmBuilder};
pub use reply::{MockFailure, MockReply};
pub use stream::StreamOptions;
pub use tools::{MockTools, ToolFault};
