//! [`StackContext`]: the state a stack's layers share, built once.

use std::collections::BTreeMap;
use std::sync::Arc;

use mantissa_core::{AgentName, BoundedLabels, Catalog, EventSink, TierSet};
use mantissa_health::HealthRegistry;
use mantissa_prometheus::ExporterHandle;
use mantissa_reset::MemorySessionStore;

use super::agent::{AgentBinding, AgentSpec};

/// What every layer of a stack is made from, built once from the builder's
/// settings (Helicone's `AppState`): the tier ladder, the agents, the one
/// rule that bounds the agent label, the [`Catalog`] compiled from them, the
/// tool label set, the health registry, the session store, the event sinks
/// and the metrics exporter.
///
/// The functions of [`wire`](super::wire) make each layer from it; the
/// context itself knows nothing of the layers.
pub(super) struct StackContext {
    /// The tier ladder (validated).
    pub(super) tiers: TierSet,
    /// The configured agents, by name.
    pub(super) agents: BTreeMap<AgentName, AgentSpec>,
    /// The one rule that bounds the `agent` label of every metric family:
    /// the configured agents (others are `other`), or the first names seen.
    pub(super) agent_labels: BoundedLabels,
    /// The configuration compiled once: router, triage and reset read the
    /// call context it resolves (agent, session hash, tier, model) by index.
    pub(super) catalog: Catalog,
    /// The tool names that are their own `tool` label (others are `other`).
    pub(super) tool_names: Vec<String>,
    /// Rolling windows and scores, read by the monitor and the toolkit.
    pub(super) registry: HealthRegistry,
    /// Session state: the reset layer's tracker, fed tool events too.
    pub(super) store: MemorySessionStore,
    /// The application's extra event sinks.
    pub(super) sinks: Vec<Arc<dyn EventSink>>,
    /// The exporter the application installed and handed to the builder.
    pub(super) exporter: Option<ExporterHandle>,
}

impl StackContext {
    /// The shared state of a stack of `agents` over `tiers`.
    pub(super) fn new(
        tiers: TierSet,
        agents: Vec<AgentSpec>,
        tool_names: Vec<String>,
        store: MemorySessionStore,
        sinks: Vec<Arc<dyn EventSink>>,
        exporter: Option<ExporterHandle>,
    ) -> Self {
        let agent_labels = if agents.is_empty() {
            BoundedLabels::default()
        } else {
            BoundedLabels::new(agents.iter().map(|a| a.name.as_str()))
        };
        let catalog = Catalog::builder(&tiers)
            .agent_labels(agent_labels.clone())
            .build();
        // Count once: with mantissa's exporter, the health layers' cells are
        // rendered at scrape time (the registry's windows read the same
        // cells); without it, health metrics go through the `metrics` crate
        // to whatever recorder the application installed.
        let registry = HealthRegistry::new();
        if let Some(e) = &exporter {
            e.register_collector(registry.collector());
        }
        Self {
            tiers,
            agents: agents.into_iter().map(|a| (a.name.clone(), a)).collect(),
            agent_labels,
            catalog,
            tool_names,
            registry,
            store,
            sinks,
            exporter,
        }
    }

    /// Resolves what the services of `agent` are bound to: its label index
    /// in the catalog and its pinned tier.
    pub(super) fn bind(&self, agent: AgentName) -> AgentBinding {
        let spec = self.agents.get(&agent);
        AgentBinding::new(&self.catalog, agent, spec)
    }
}
