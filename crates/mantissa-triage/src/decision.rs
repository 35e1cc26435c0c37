//! The triage vocabulary: [`TierDecision`], [`TriageReason`] (defined in
//! `mantissa-core`, carried by requests and responses as typed fields), the
//! [`Triage`] and [`AsyncTriage`] strategy traits and the score → tier
//! [`Boundaries`].

use std::future::{Future, Ready, ready};

use mantissa_core::{ConfigError, LlmRequest, Tier, TierSet};
pub use mantissa_core::{TierDecision, TriageReason};

/// A dense index for the built-in reasons (`None` for custom ones).
pub(crate) fn reason_index(reason: &TriageReason) -> Option<usize> {
    Some(match reason {
        TriageReason::Explicit => 0,
        TriageReason::Override => 1,
        TriageReason::Sticky => 2,
        TriageReason::Rules => 3,
        TriageReason::Stakes => 4,
        TriageReason::Model => 5,
        TriageReason::ModelFallback => 6,
        TriageReason::Default => 7,
        TriageReason::Custom(_) => return None,
    })
}

/// How many built-in reasons [`reason_index`] numbers.
pub(crate) const BUILTIN_REASONS: usize = 8;

/// A synchronous triage strategy: scores a request and picks its tier.
///
/// Closures `Fn(&LlmRequest) -> TierDecision` implement it:
///
/// ```
/// use mantissa_core::{LlmRequest, Message, Tier};
/// use mantissa_triage::{Triage, TierDecision, TriageReason};
///
/// let by_agent = |req: &LlmRequest| {
///     if req.agent.as_str() == "planner" {
///         TierDecision::new(Tier::high(), 1.0, TriageReason::Custom("agent"))
///     } else {
///         TierDecision::new(Tier::low(), 0.0, TriageReason::Custom("agent"))
///     }
/// };
/// let req = LlmRequest::new("s", "planner", vec![Message::user("hi")]);
/// assert_eq!(by_agent.triage(&req).tier, Tier::high());
/// ```
pub trait Triage: Send + Sync + 'static {
    /// Decides the tier of `req`. Must be cheap: it runs on every call.
    fn triage(&self, req: &LlmRequest) -> TierDecision;
}

impl<F> Triage for F
where
    F: Fn(&LlmRequest) -> TierDecision + Send + Sync + 'static,
{
    fn triage(&self, req: &LlmRequest) -> TierDecision {
        self(req)
    }
}

/// A triage strategy that may need to wait (for example to ask a model).
///
/// This is what [`TriageLayer`](crate::TriageLayer) runs. Every [`Triage`]
/// is an `AsyncTriage` whose future is already complete, so synchronous
/// strategies pay nothing for the asynchronous interface;
/// [`LlmTriage`](crate::LlmTriage) implements it directly.
pub trait AsyncTriage: Send + Sync + 'static {
    /// The future of a decision.
    type Future: Future<Output = TierDecision> + Send + 'static;

    /// Starts deciding the tier of `req`.
    fn decide(&self, req: &LlmRequest) -> Self::Future;

    /// The decision for `req` when it is known without waiting, or `None`
    /// when it needs [`decide`](Self::decide). Every [`Triage`] answers here,
    /// so the layer calls the inner service at once, without a pending
    /// state. Defaults to `None`.
    fn decide_now(&self, req: &LlmRequest) -> Option<TierDecision> {
        let _ = req;
        None
    }
}

impl<T: Triage> AsyncTriage for T {
    type Future = Ready<TierDecision>;

    fn decide(&self, req: &LlmRequest) -> Self::Future {
        ready(self.triage(req))
    }

    fn decide_now(&self, req: &LlmRequest) -> Option<TierDecision> {
        Some(self.triage(req))
    }
}

/// Cut points that map a score in `[0, 1]` to a tier of a ladder of `n`
/// tiers: `n - 1` non-decreasing values; a score below `b[0]` goes to the
/// lowest tier, a score in `[b[i-1], b[i])` to tier `i`, a score at or above
/// the last cut to the top tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Boundaries(Vec<f64>);

impl Boundaries {
    /// Validated cut points: finite and non-decreasing.
    pub fn new(cuts: Vec<f64>) -> Result<Self, ConfigError> {
        for (i, c) in cuts.iter().enumerate() {
            if !c.is_finite() {
                return Err(ConfigError::new(
                    format!("boundaries[{i}]"),
                    "must be a finite number",
                ));
            }
            if i > 0 && *c < cuts[i - 1] {
                return Err(ConfigError::new(
                    format!("boundaries[{i}]"),
                    format!("must not be below the previous boundary {}", cuts[i - 1]),
                ));
            }
        }
        Ok(Self(cuts))
    }

    /// The default cuts for a ladder of `tiers` tiers: the lowest cut at
    /// 0.25, the top cut at 0.6, any others evenly between. With the default
    /// [`RuleTriage`](crate::RuleTriage) weights a single strong signal (a
    /// code block, several reasoning markers) scores 0.7 and reaches the top
    /// tier, a single reasoning marker or a long turn lands in the middle,
    /// and chit-chat stays at the bottom.
    pub fn default_for(tiers: usize) -> Self {
        match tiers {
            0 | 1 => Self(Vec::new()),
            2 => Self(vec![0.6]),
            n => {
                let gaps = (n - 2) as f64;
                Self((0..n - 1).map(|i| 0.25 + 0.35 * i as f64 / gaps).collect())
            }
        }
    }

    /// The cut points.
    pub fn cuts(&self) -> &[f64] {
        &self.0
    }

    /// The tier rank (0 = lowest) of `score`.
    pub fn rank(&self, score: f64) -> usize {
        self.0.iter().take_while(|c| score >= **c).count()
    }

    /// The lowest score that maps to `rank` (0 for the lowest tier).
    pub fn floor_of(&self, rank: usize) -> f64 {
        if rank == 0 {
            0.0
        } else {
            self.0.get(rank - 1).copied().unwrap_or(1.0).clamp(0.0, 1.0)
        }
    }

    pub(crate) fn check_len(&self, tiers: usize) -> Result<(), ConfigError> {
        if self.0.len() + 1 != tiers {
            return Err(ConfigError::new(
                "boundaries",
                format!(
                    "{tiers} tiers need {} boundaries, got {}",
                    tiers.saturating_sub(1),
                    self.0.len()
                ),
            ));
        }
        Ok(())
    }
}

/// The tier names of a ladder, lowest first.
pub(crate) fn tier_names(set: &TierSet) -> Vec<Tier> {
    set.iter().map(|t| t.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_map_scores_to_ranks() {
        let b = Boundaries::default_for(3);
        assert_eq!(b.cuts(), &[0.25, 0.6]);
        assert_eq!(b.rank(0.0), 0);
        assert_eq!(b.rank(0.25), 1);
        assert_eq!(b.rank(0.59), 1);
        assert_eq!(b.rank(0.6), 2);
        assert_eq!(b.rank(1.0), 2);
        assert_eq!(Boundaries::default_for(4).cuts().len(), 3);
        assert_eq!(Boundaries::default_for(1).rank(0.9), 0);
        let err = Boundaries::new(vec![0.5, 0.2]).unwrap_err();
        assert_eq!(err.field, "boundaries[1]");
        assert!(Boundaries::new(vec![f64::NAN]).is_err());
    }

    #[test]
    fn decision_clamps_scores() {
        assert_eq!(TierDecision::new("low", 3.0, TriageReason::Rules).score, 1.0);
        assert_eq!(TierDecision::new("low", f64::NAN, TriageReason::Rules).score, 0.0);
        assert_eq!(TriageReason::ModelFallback.to_string(), "model_fallback");
    }
}
