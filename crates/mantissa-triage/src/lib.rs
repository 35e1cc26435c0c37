//! # mantissa-triage
//!
//! Precision tiers: score each request, pick a tier, route it to a model of
//! that tier and fall back when that model is cooled down or fails.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod calibrate;
pub mod config;
mod decision;
pub mod llm;
pub mod router;
pub mod rule;
pub mod spawner;
pub mod triage_layer;

pub use calibrate::calibrate;
pub use config::{tier_set_from_toml, tier_set_from_toml_file};
pub use decision::{AsyncTriage, Boundaries, TierDecision, Triage, TriageReason};
pub use llm::{DEFAULT_PROMPT, LlmTriage, LlmTriageFuture};
pub use router::{
    AllModelsFailed, BuildError, CooldownPolicy, FallbackOrder, ModelService, ModelSnapshot, ModelState,
    Routed, TierRouter, TierRouterBuilder, UnknownModel, UnknownTier,
};
pub use rule::{RuleTriage, RuleWeights, Signals};
pub use spawner::{AgentService, AgentSpawner};
pub use triage_layer::{TriageControl, TriageLayer, TriageService};
