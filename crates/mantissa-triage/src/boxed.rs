//! [`BoxTriage`]: any [`Triage`] strategy behind one type.

use std::fmt;
use std::sync::Arc;

use mantissa_core::LlmRequest;

use crate::decision::{TierDecision, Triage};

/// A type-erased [`Triage`] strategy, cheap to clone (as tower's `BoxService`
/// erases a service's type).
///
/// Use it where the strategy is chosen at run time (from configuration, for
/// example) but a [`TriageLayer`](crate::TriageLayer) needs one concrete
/// type. An `Arc<dyn Triage>` cannot be that type itself: it would collide
/// with the blanket implementation of [`Triage`] for closures.
///
/// ```
/// use mantissa_core::{LlmRequest, Message, Tier, TierSet};
/// use mantissa_triage::{BoxTriage, RuleTriage, TierDecision, Triage, TriageReason};
///
/// let tiers = TierSet::default();
/// let always_high = |_: &LlmRequest| TierDecision::new(Tier::high(), 1.0, TriageReason::Custom("always_high"));
/// let choices = [BoxTriage::new(RuleTriage::new(&tiers)), BoxTriage::new(always_high)];
/// let req = LlmRequest::new("s", "agent", vec![Message::user("thanks!")]);
/// assert_eq!(choices[0].triage(&req).tier, Tier::low());
/// assert_eq!(choices[1].triage(&req).tier, Tier::high());
/// ```
#[derive(Clone)]
pub struct BoxTriage(Arc<dyn Triage>);

impl BoxTriage {
    /// Erases the type of `triage`.
    pub fn new(triage: impl Triage) -> Self {
        Self(Arc::new(triage))
    }
}

impl fmt::Debug for BoxTriage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxTriage")
    }
}

impl Triage for BoxTriage {
    fn triage(&self, req: &LlmRequest) -> TierDecision {
        self.0.triage(req)
    }
}
