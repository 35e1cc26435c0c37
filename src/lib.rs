//! # mantissa
//!
//! Tower middleware for LLM agent services. Wrap every LLM call and every
//! tool call of an agent service in layers that:
//!
//! - **health** ([`health`]) — time each call, classify its failure, count
//!   tokens and cost, keep queryable rolling windows and export to Prometheus;
//! - **triage + router** ([`triage`]) — score each request, pick a precision
//!   tier (low / medium / high → model ids), fall back to a neighbouring tier
//!   when a model fails or is cooled down;
//! - **reset** ([`reset`]) — track each session's turns, context tokens, error
//!   streaks and latency drift, and compact its context when it turns brittle,
//!   without breaking the conversation;
//! - **monitor + toolkit** ([`monitor`]) — raise and resolve health alerts and
//!   hand them to the manager agent; the same data as LLM-callable tools.
//!
//! [`AgentStack`] composes all of it for a team of agents in the right order:
//!
//! ```text
//! LLM:   [Feedback] -> Triage -> Reset -> Health (agent outcome) -> TierRouter
//!          -> [per model: Health (attempts) -> client]
//! tools: Health -> tool service   (tool failures -> session tracker)
//! ```
//!
//! ```
//! use mantissa::{AgentStack, core::{LlmRequest, Message}};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mantissa::core::BoxError> {
//! let stack = AgentStack::demo().build()?; // the mock preset; no recorder installed
//! let reply = stack
//!     .llm("trader")
//!     .oneshot(LlmRequest::new("session-1", "trader", vec![Message::user("hi")]))
//!     .await?;
//! println!("{} answered: {}", reply.model, reply.message.text());
//! # Ok(()) }
//! ```
//!
//! The upstream is always explicit (`AgentStack::builder(upstream)`, or the
//! [`AgentStack::demo`] preset over the embedded mock), and the stack
//! installs no metrics recorder: the application installs one
//! ([`PrometheusConfig::install`] returns its [`ExporterHandle`]) and hands
//! it to [`AgentStackBuilder::exporter`]. The runnable demo service is the
//! example package `examples/agent-service` (`cargo run --example agent_service`).
//!
//! Each crate can also be used on its own; see their docs.
//!
//! ## Features
//!
//! - `openai` (default): the OpenAI-compatible HTTP client ([`openai`]) and
//!   [`Upstream::OpenAi`].
//! - `async-openai`: conversions between async-openai's chat types and
//!   mantissa's, and an upstream over your `async_openai::Client`
//!   (`adapters::async_openai`).
//! - `rig`: a rig `CompletionModel` over an `AgentStack` LLM service
//!   (`adapters::rig`).

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(any(feature = "async-openai", feature = "rig"))]
pub mod adapters;
#[cfg(feature = "otel")]
pub mod otel;
pub mod stack;

pub use mantissa_core as core;
pub use mantissa_health as health;
pub use mantissa_mock as mock;
pub use mantissa_monitor as monitor;
#[cfg(feature = "openai")]
pub use mantissa_openai as openai;
pub use mantissa_prometheus as prometheus;
#[cfg(feature = "redis")]
pub use mantissa_redis as redis;
pub use mantissa_reset as reset;
pub use mantissa_triage as triage;

pub use mantissa_health::{HealthLayer, HealthRegistry};
pub use mantissa_reset::ResetLayer;
pub use mantissa_triage::{TierRouter, TriageLayer};
/// The README's code blocks, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use mantissa_prometheus::{ExporterHandle, PrometheusConfig};
pub use stack::{
    AgentSpec, AgentStack, AgentStackBuilder, BuildError, LlmService, MetricsConfig, ModelFactory,
    StackConfig, ToolService, ToolsNotConfigured, Upstream,
};
