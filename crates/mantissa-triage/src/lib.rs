//! # mantissa-triage
//!
//! Precision tiers: score each request, pick a tier, route it to a model of
//! that tier and fall back when that model is cooled down or fails.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod calibrate;
mod config;
mod decision;
pub mod router;
mod rule;
pub mod triage_layer;

pub use calibrate::calibrate;
pub use config::{tier_set_from_toml, tier_set_from_toml_file};
pub use decision::{AsyncTriage, Boundaries, TierDecision, Triage, TriageReason};
pub use router::{
    AllModelsFailed, BuildError, CooldownPolicy, FallbackOrder, ModelService, ModelSnapshot, ModelState,
    Routed, TierRouter, TierRouterBuilder, UnknownModel, UnknownTier,
};
pub use rule::{RuleTriage, RuleWeights, Signals};
pub use triage_layer::{TriageControl, TriageLayer, TriageService};
