use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{BoundedLabels, TierSet};
use tower_layer::Layer;

use super::{DEFAULT_STICKY_CAPACITY, DEFAULT_STICKY_TTL, Shared, TriageControl, TriageService};

/// Builds [`TriageService`]s that share one strategy, one stickiness memory
/// and one set of agent overrides. See the [module docs](super).
#[derive(Debug)]
pub struct TriageLayer<T> {
    triage: Arc<T>,
    set: TierSet,
    sticky: Option<(usize, Duration)>,
    labels: BoundedLabels,
    shared: Arc<Shared>,
}

impl<T> Clone for TriageLayer<T> {
    fn clone(&self) -> Self {
        Self {
            triage: self.triage.clone(),
            set: self.set.clone(),
            sticky: self.sticky,
            labels: self.labels.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> TriageLayer<T> {
    /// A layer deciding tiers of `set` with `triage`, stickiness on.
    pub fn new(set: &TierSet, triage: T) -> Self {
        let sticky = Some((DEFAULT_STICKY_CAPACITY, DEFAULT_STICKY_TTL));
        let labels = BoundedLabels::default();
        Self {
            triage: Arc::new(triage),
            set: set.clone(),
            sticky,
            shared: Arc::new(Shared::new(set, sticky, labels.clone())),
            labels,
        }
    }

    /// Remembers up to `capacity` sessions; a session idle for `idle_ttl`
    /// may fall to a lower tier again. Defaults to 10,000 sessions and 30
    /// minutes.
    ///
    /// Set this (like every setter) before taking [`control`](Self::control)
    /// or building services: a setter starts fresh shared state.
    pub fn stickiness(mut self, capacity: usize, idle_ttl: Duration) -> Self {
        self.sticky = Some((capacity, idle_ttl));
        self.rebuild()
    }

    /// Turns session stickiness off: every request is triaged on its own.
    /// Defaults to on.
    pub fn without_stickiness(mut self) -> Self {
        self.sticky = None;
        self.rebuild()
    }

    /// The rule that bounds the `agent` label of the triage metrics, shared
    /// with the other layers of a stack. Defaults to
    /// [`BoundedLabels::default`].
    pub fn agent_labels(mut self, labels: BoundedLabels) -> Self {
        self.labels = labels;
        self.rebuild()
    }

    fn rebuild(mut self) -> Self {
        self.shared = Arc::new(Shared::new(&self.set, self.sticky, self.labels.clone()));
        self
    }

    /// The handle that pins agents to tiers ([`TierControl`](mantissa_core::control::TierControl)).
    pub fn control(&self) -> TriageControl {
        TriageControl {
            shared: self.shared.clone(),
        }
    }
}

impl<S, T> Layer<S> for TriageLayer<T> {
    type Service = TriageService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        TriageService {
            inner,
            triage: self.triage.clone(),
            shared: self.shared.clone(),
        }
    }
}
