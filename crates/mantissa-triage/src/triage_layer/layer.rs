use std::sync::Arc;

use mantissa_core::{BoundedLabels, Catalog, TierSet};
use tower_layer::Layer;

use super::{Overrides, Shared, TriageControl, Triaged};

/// Builds [`Triaged`]s that share one strategy and one set of agent
/// overrides. See the [module docs](super).
#[derive(Debug)]
pub struct TriageLayer<T> {
    triage: Arc<T>,
    set: TierSet,
    catalog: Catalog,
    labels: BoundedLabels,
    overrides: Arc<Overrides>,
    shared: Arc<Shared>,
}

impl<T> Clone for TriageLayer<T> {
    fn clone(&self) -> Self {
        Self {
            triage: self.triage.clone(),
            set: self.set.clone(),
            catalog: self.catalog.clone(),
            labels: self.labels.clone(),
            overrides: self.overrides.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> TriageLayer<T> {
    /// A layer deciding tiers of `set` with `triage`.
    pub fn new(set: &TierSet, triage: T) -> Self {
        let catalog = Catalog::new(set);
        let labels = BoundedLabels::default();
        let overrides = Arc::new(Overrides::new(set));
        Self {
            triage: Arc::new(triage),
            set: set.clone(),
            shared: Arc::new(Shared::new(
                set,
                catalog.clone(),
                labels.clone(),
                overrides.clone(),
            )),
            catalog,
            labels,
            overrides,
        }
    }

    /// The stack's catalog (built from the same ladder): the layer then
    /// records its decision in the request's [`CallContext`](mantissa_core::CallContext)
    /// as a tier index. Defaults to a catalog of its own (the decision is
    /// carried by name only).
    ///
    /// Set this (like every setter) before building services: services
    /// built earlier keep the settings they were built with. A
    /// [`control`](Self::control) handle taken at any time stays valid.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
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
            self.catalog.clone(),
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
