//! [`LearnedTriage`]: a triage that learns, from the service's own
//! outcomes, which requests need a stronger tier.
//!
//! # What it does
//!
//! The latest user turn is turned into [features] (hashed word
//! unigrams and bigrams, length, [`RuleTriage`](crate::RuleTriage)'s
//! signals, code and maths markers). A [`Model`] holds one logistic
//! "success" head per tier it was trained on, cheapest first; the score is
//! the expected gain of the strongest tier over the cheapest, mapped to
//! `[0, 1]`, and blended with two priors: the turn's length, and a domain
//! head's estimate of how often the cheapest tier fails on this *kind* of
//! task (learned from each training domain's failure rate), all three as
//! percentiles of the training prompts; see [`Model`]. [`Boundaries`] come from
//! [`calibrate`](crate::calibrate()) on the training scores for the tier
//! shares you ask for ([`LearnedTriage::shares`]); by default the top tier
//! gets 20 % of calls and the others share the rest equally.
//!
//! A model trained on two tiers (say `low` and `high`) drives a ladder of
//! any length: the score is the same, only the boundaries differ.
//!
//! # Learning from outcomes
//!
//! * **Offline**: [`train()`] (and `mantissa triage train`) on JSON lines of
//!   [`Outcome`]s — the records a [`FeedbackLog`] writes.
//! * **Online** (optional): an [`OnlineLearner`] takes outcomes from the
//!   feedback log and applies them off the hot path
//!   ([`OnlineLearner::apply_pending`]) with a bounded SGD step to a copy of
//!   the model, which then replaces the served one atomically; the previous
//!   models are kept for [`rollback`](OnlineLearner::rollback). Online
//!   updates move the tier heads only; the domain head and the priors'
//!   tables change when the model is retrained.
//!
//! **Bandit feedback.** A call observes only the tier that served it. Each
//! outcome therefore trains only that tier's success head, so each head
//! learns from the traffic its tier saw and nothing is imputed for the
//! others; the gain is read off the two heads. Because the triage routes hard-looking
//! prompts up, the cheap head would rarely see them: a small
//! [`exploration`](LearnedTriage::exploration) rate sends a random share of
//! calls to a uniformly chosen tier (reason `explore`), so every head keeps
//! seeing every kind of prompt.
//!
//! # Example
//!
//! ```
//! use mantissa_core::{LlmRequest, Message, TierSet};
//! use mantissa_triage::{LearnedTriage, Triage};
//!
//! // The built-in model, default shares (low / medium / high: 40 / 40 / 20 %).
//! let triage = LearnedTriage::builtin(&TierSet::default()).unwrap();
//! let req = LlmRequest::new("s", "a", vec![Message::user("What is 17 * 23 - 4?")]);
//! let d = triage.triage(&req);
//! assert!((0.0..=1.0).contains(&d.score));
//!
//! // Customised: 70 % low, 20 % medium, 10 % high, 1 % exploration.
//! let triage = LearnedTriage::builtin(&TierSet::default()).unwrap()
//!     .shares(&[0.7, 0.2, 0.1]).unwrap()
//!     .exploration(0.01).unwrap();
//! assert_eq!(triage.boundaries().cuts().len(), 2);
//! ```

pub mod eval;
pub mod features;
pub mod feedback;
pub mod model;
pub mod train;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use mantissa_core::{ConfigError, LlmRequest, Tier, TierSet};

use self::features::Featurizer;
pub use self::feedback::{CallId, FeedbackError, FeedbackLayer, FeedbackLog, FeedbackService, OnlineLearner};
pub use self::model::{Model, ModelError};
pub use self::train::{Outcome, TrainConfig, train};
use crate::decision::{Boundaries, TierDecision, Triage, TriageReason, tier_names};

/// The built-in model file: trained on `shared/routing/` (see
/// `models/SOURCE.md` beside it).
pub const BUILTIN_MODEL: &[u8] = include_bytes!("../../models/default.mtm");

/// The built-in model, decoded once.
pub fn builtin_model() -> Result<Arc<Model>, ModelError> {
    static MODEL: OnceLock<Result<Arc<Model>, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Model::from_bytes(BUILTIN_MODEL)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(ModelError::Builtin)
}

/// The default tier shares for a ladder of `n` tiers: 20 % on the top tier,
/// the rest split equally (one tier: 100 %).
pub fn default_shares(n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![1.0],
        n => {
            let mut s = vec![0.8 / (n - 1) as f64; n - 1];
            s.push(0.2);
            s
        }
    }
}

/// A learned triage. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LearnedTriage {
    model: Arc<ArcSwap<Model>>,
    featurizer: Featurizer,
    tiers: Vec<Tier>,
    boundaries: Boundaries,
    explore: u64,
    counter: Arc<AtomicU64>,
}

impl LearnedTriage {
    /// A learned triage over the tiers of `set` with `model` and the
    /// [default shares](default_shares).
    pub fn new(set: &TierSet, model: Model) -> Result<Self, ConfigError> {
        Self::with_shared(set, Arc::new(model))
    }

    /// With the [built-in model](builtin_model).
    pub fn builtin(set: &TierSet) -> Result<Self, ConfigError> {
        let model = builtin_model().map_err(|e| ConfigError::new("triage.model", e.to_string()))?;
        Self::with_shared(set, model)
    }

    /// With the model file at `path`.
    pub fn from_file(set: &TierSet, path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let model = Model::load(path).map_err(|e| ConfigError::new("triage.model", e.to_string()))?;
        Self::new(set, model)
    }

    fn with_shared(set: &TierSet, model: Arc<Model>) -> Result<Self, ConfigError> {
        let tiers = tier_names(set);
        let boundaries = model.boundaries(&default_shares(tiers.len()))?;
        Ok(Self {
            featurizer: model.featurizer(),
            model: Arc::new(ArcSwap::new(model)),
            tiers,
            boundaries,
            explore: 0,
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Sets the share of calls each tier should get (cheapest first, summing
    /// to 1), calibrated on the model's training scores. Defaults to
    /// [`default_shares`].
    pub fn shares(mut self, shares: &[f64]) -> Result<Self, ConfigError> {
        if shares.len() != self.tiers.len() {
            return Err(ConfigError::new(
                "shares",
                format!(
                    "{} tiers need {} shares, got {}",
                    self.tiers.len(),
                    self.tiers.len(),
                    shares.len()
                ),
            ));
        }
        self.boundaries = self.model.load().boundaries(shares)?;
        Ok(self)
    }

    /// Sets the score cut points directly. Defaults to the calibrated
    /// [default shares](default_shares).
    pub fn with_boundaries(mut self, boundaries: Boundaries) -> Result<Self, ConfigError> {
        boundaries.check_len(self.tiers.len())?;
        self.boundaries = boundaries;
        Ok(self)
    }

    /// Sends a share `rate` (in `[0, 0.5]`) of calls to a uniformly chosen
    /// tier instead (reason `explore`), so every tier's success head keeps
    /// seeing every kind of prompt. Defaults to 0.
    pub fn exploration(mut self, rate: f64) -> Result<Self, ConfigError> {
        if !(0.0..=0.5).contains(&rate) {
            return Err(ConfigError::new(
                "triage.exploration",
                format!("must be in [0, 0.5], got {rate}"),
            ));
        }
        self.explore = (rate * u64::MAX as f64) as u64;
        Ok(self)
    }

    /// The boundaries in use.
    pub fn boundaries(&self) -> &Boundaries {
        &self.boundaries
    }

    /// The model being served now.
    pub fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// The score of a turn's text in `[0, 1]`.
    pub fn score_text(&self, text: &str) -> f64 {
        self.model.load().score_with(&self.featurizer, text)
    }

    /// An online learner that updates the model this triage serves (see
    /// the [module docs](self)), with a step of at most `step` per outcome.
    pub fn online(&self, step: f32) -> OnlineLearner {
        OnlineLearner::new(self.model.clone(), self.tiers.clone(), step)
    }
}

impl Triage for LearnedTriage {
    fn triage(&self, req: &LlmRequest) -> TierDecision {
        let Some(top) = self.tiers.len().checked_sub(1) else {
            return TierDecision::new(Tier::low(), 0.0, TriageReason::Default);
        };
        let Some(msg) = req.latest_user_message() else {
            return TierDecision::new(self.tiers[0].clone(), 0.0, TriageReason::Default);
        };
        let score = self.score_text(msg.text());
        if self.explore > 0 {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut r = train::SplitMix(n ^ 0x5eed);
            if r.next_u64() < self.explore {
                let rank = r.below(top + 1);
                return TierDecision::new(self.tiers[rank].clone(), score, TriageReason::Custom("explore"));
            }
        }
        let rank = self.boundaries.rank(score).min(top);
        TierDecision::new(self.tiers[rank].clone(), score, TriageReason::Custom("learned"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TriageLayer;
    use mantissa_core::{LlmResponse, Message, Usage};
    use tower::{Layer, ServiceExt, service_fn};

    fn req(text: &str) -> LlmRequest {
        LlmRequest::new("s", "a", vec![Message::user(text)])
    }

    #[test]
    fn the_builtin_model_loads_and_scores_stably() {
        let m = builtin_model().unwrap();
        assert_eq!(m.tiers(), ["low", "high"]);
        assert_eq!(m.quantiles().len(), 101);
        assert!(BUILTIN_MODEL.len() <= 4 * 1024 * 1024);
        let s = m.score("Janet has 3 apples and buys 5 more. How many apples does she have?");
        assert!((0.0..=1.0).contains(&s));
        // Same bytes, same score (no state, no randomness).
        assert_eq!(
            s,
            Model::from_bytes(BUILTIN_MODEL)
                .unwrap()
                .score("Janet has 3 apples and buys 5 more. How many apples does she have?")
        );
    }

    #[tokio::test]
    async fn plugs_into_the_triage_layer() {
        let tiers = TierSet::default();
        let triage = LearnedTriage::builtin(&tiers).unwrap();
        let expected = triage.triage(&req("Compute 17 * 23 and explain."));
        let model = service_fn(|r: LlmRequest| async move {
            let tier = r.tier.clone().unwrap();
            Ok::<_, std::convert::Infallible>(LlmResponse::new(
                tier.as_str(),
                Message::assistant("ok"),
                Usage::default(),
            ))
        });
        let svc = TriageLayer::new(&tiers, triage).layer(model);
        let resp = svc.oneshot(req("Compute 17 * 23 and explain.")).await.unwrap();
        let d = resp.tier_decision().unwrap();
        assert_eq!(d, &expected);
        assert_eq!(resp.model.as_str(), expected.tier.as_str());
        assert_eq!(d.reason.as_str(), "learned");
    }

    #[test]
    fn shares_set_boundaries_and_exploration_samples_tiers() {
        let tiers = TierSet::default();
        let t = LearnedTriage::builtin(&tiers).unwrap();
        // Default shares 40 / 40 / 20 on the training score quantiles.
        let q = t.model().quantiles().to_vec();
        let share_above =
            |cut: f64| q.iter().filter(|x| f64::from(**x) >= cut).count() as f64 / q.len() as f64;
        assert!((share_above(t.boundaries().cuts()[1]) - 0.2).abs() < 0.02);
        let t = t.shares(&[0.7, 0.2, 0.1]).unwrap();
        assert!((share_above(t.boundaries().cuts()[1]) - 0.1).abs() < 0.02);
        assert!(t.clone().shares(&[0.5, 0.5]).is_err());
        assert!(t.clone().exploration(0.9).is_err());

        let t = t.exploration(0.25).unwrap();
        let r = req("hello there");
        let n = 4000;
        let explored = (0..n)
            .filter(|_| t.triage(&r).reason == TriageReason::Custom("explore"))
            .count();
        let rate = explored as f64 / n as f64;
        assert!((rate - 0.25).abs() < 0.03, "{rate}");
        let no_user = LlmRequest::new("s", "a", vec![Message::system("x")]);
        assert_eq!(t.triage(&no_user).reason, TriageReason::Default);
    }
}
