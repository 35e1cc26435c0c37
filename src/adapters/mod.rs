//! Adapters to the Rust LLM stacks teams already use, each behind a feature:
//!
//! - `async-openai`: `adapters::async_openai` — conversions between
//!   async-openai's chat types and mantissa's, and an upstream over an
//!   `async_openai::Client`;
//! - `rig`: `adapters::rig` — a rig `CompletionModel` over an
//!   [`AgentStack`](crate::AgentStack) LLM service, so a rig agent's calls go
//!   through health, triage, routing and reset.

#[cfg(feature = "async-openai")]
pub mod async_openai;
#[cfg(feature = "rig")]
pub mod rig;
