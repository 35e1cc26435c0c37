use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{BoundedLabels, TierSet};
use tower_layer::Layer;

use super::{DEFAULT_STICKY_CAPACITY, DEFAULT_STICKY_TTL, Overrides, Shared, TriageControl, Triaged};

/// Builds [`Triaged`]s that share one strategy, one stickiness memory
/// and one set of agent overrides. See the [module docs](super).
#[derive(Debug)]
pub struct TriageLayer<T> {
    triage: Arc<T>,
    set: TierSet,
    sticky: Option<(usize, Duration)>,
    labels: BoundedLabels,
    overrides: Arc<Overrides>,
    shared: Arc<Shared>,
}

impl<T> Clone for TriageLayer<T> {
    fn clone(&self) -> Self {
        Self {
            triage: self.triage.clone(),
            set: self.set.clone(),
            sticky: self.sticky,
            labels: self.labels.clone(),
            overrides: self.overrides.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> TriageLayer<T> {
    /// A layer deciding tiers of `set` with `triage`, stickiness on.
    pub fn new(set: &TierSet, triage: T) -> Self {
        let sticky = Some((DEFAULT_STICKY_CAPACITY, DEFAULT_STICKY_TTL));
        let labels = BoundedLabels::default();
        let overrides = Arc::new(Overrides::new(set));
        Self {
            triage: Arc::new(triage),
            set: set.clone(),
            sticky,
            shared: Arc::new(Shared::new(set, sticky, labels.clone(), overrides.clone())),
            labels,
            overrides,
        }
    }

    /// Remembers up to `capacity` sessions; a session idle for `idle_ttl`
    /// may fall to a lower tier again. Defaults to 10,000 sessions and 30
    /// minutes.
    ///
    /// Set this (like every setter) before building services: services
    /// built earlier keep the settings they were built with. A
    /// [`control`](Self::control) handle taken at any time stays valid.
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
        self.shared = Arc::new(Shared::new(
            &self.set,
            self.sticky,
            self.labels.clone(),
            self.overrides.clone(),
        ));
        self
    }

    /// The handle that pins agents to tiers ([`TierControl`](mantissa_core::control::TierControl)).
    pub fn control(&self) -> TriageControl {
        TriageControl {
            overrides: self.overrides.clone(),
        }
    }
}

impl<S, T> Layer<S> for TriageLayer<T> {
    type Service = Triaged<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Triaged {
            inner,
            triage: self.triage.clone(),
            shared: self.shared.clone(),
        }
    }
}
