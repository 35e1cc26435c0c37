//! # mantissa-triage
//!
//! Precision tiers: spend model capability only where a request needs it.
//!
//! * [`config`] — the tier ladder ([`TierSet`](mantissa_core::TierSet),
//!   cheapest first) loaded from TOML and validated.
//! * [`Triage`] / [`AsyncTriage`] — strategies that decide a
//!   [`TierDecision`] (tier, score in `[0, 1]`, bounded [`TriageReason`]):
//!   [`RuleTriage`] (weighted features of the latest user turn, no
//!   allocation), [`LlmTriage`] (asks a cheap model, falls back on a late or
//!   garbled answer), [`LearnedTriage`] (per-tier success models over
//!   hashed word n-grams, trained on the service's own outcomes), or any
//!   closure.
//! * [`learned`] — the learned triage, its model file, training,
//!   RouteLLM's APGR metric, and the [`FeedbackLayer`] / [`FeedbackLog`]
//!   that turn served calls into outcome records.
//! * [`calibrate()`] — boundaries from recorded scores and target shares
//!   per tier.
//! * [`TriageLayer`] — decides each request's tier (explicit choices kept,
//!   agent overrides through [`TierControl`](mantissa_core::control::TierControl),
//!   session stickiness), attaches the decision, emits
//!   `mantissa_triage_decisions_total` and `mantissa_triage_score`.
//! * [`TierRouter`] — one inner service per model; picks a model of the
//!   tier, falls back to other models and neighbouring tiers on retryable
//!   failures, cools failing models down (shared state, half-open probes),
//!   implements [`ModelControl`](mantissa_core::control::ModelControl),
//!   emits `mantissa_fallbacks_total` and `mantissa_model_state`.
//! * [`BoxTriage`] — any [`Triage`] behind one type (as tower's `BoxService`
//!   erases services), for stacks that pick the strategy at run time.
//!
//! In a composed stack the order is `TriageLayer -> TierRouter -> [per model:
//! HealthLayer -> client]`; this crate does not depend on the health layer.
//!
//! ```
//! use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, Usage};
//! use mantissa_triage::{RuleTriage, TierDecision, TierRouter, TriageLayer, tier_set_from_toml};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let tiers = tier_set_from_toml(r#"
//!     [[tiers]]
//!     name = "low"
//!     [[tiers.models]]
//!     id = "small"
//!     [[tiers]]
//!     name = "high"
//!     [[tiers.models]]
//!     id = "large"
//! "#).unwrap();
//! let model = service_fn(|req: LlmRequest| async move {
//!     Ok::<_, BoxError>(LlmResponse::new(req.model.unwrap(), Message::assistant("ok"), Usage::default()))
//! });
//! let router = TierRouter::builder(tiers.clone()).model("small", model).model("large", model).build().unwrap();
//! let stack = TriageLayer::new(&tiers, RuleTriage::new(&tiers)).layer(router);
//!
//! let easy = LlmRequest::new("s1", "agent", vec![Message::user("thanks!")]);
//! assert_eq!(stack.clone().oneshot(easy).await.unwrap().model.as_str(), "small");
//! let hard = LlmRequest::new("s2", "agent", vec![Message::user("Prove it step by step, then derive the bound.")]);
//! let resp = stack.oneshot(hard).await.unwrap();
//! assert_eq!(resp.model.as_str(), "large");
//! assert_eq!(resp.tier_decision().unwrap().tier.as_str(), "high");
//! # });
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod boxed;
pub mod calibrate;
pub mod config;
mod decision;
pub mod learned;
pub mod llm;
pub mod router;
pub mod rule;
pub mod triage_layer;

pub use boxed::BoxTriage;
pub use calibrate::calibrate;
pub use config::{tier_set_from_toml, tier_set_from_toml_file};
pub use decision::{AsyncTriage, Boundaries, TierDecision, Triage, TriageReason};
pub use learned::{
    CallId, FeedbackError, FeedbackLayer, FeedbackLog, FeedbackService, LearnedTriage, Model, ModelError,
    OnlineLearner, Outcome, TrainConfig,
};
pub use llm::{DEFAULT_PROMPT, LlmTriage, LlmTriageFuture};
pub use router::{
    AllModelsFailed, CooldownPolicy, FallbackOrder, ModelService, ModelSnapshot, ModelState,
    RemoteModelState, Routed, RouterBuildError, SharedModelState, TierRouter, TierRouterBuilder,
    UnknownModel, UnknownTier,
};
pub use rule::{RuleTriage, RuleWeights, Signals};
pub use triage_layer::{TriageControl, TriageLayer, Triaged};
