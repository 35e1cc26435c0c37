//! Metric handles of the triage layer, held per agent so the hot path does
//! not look metrics up by name.

use foldhash::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use mantissa_core::catalog::{self, labels};
use mantissa_core::{AgentName, BoundedLabels, CallContext, Catalog, OTHER_LABEL, Tier};
use metrics::{Counter, Histogram};

use crate::decision::{BUILTIN_REASONS, TierDecision, reason_index};

/// Agents whose handles are cached; beyond this, metrics are looked up per
/// call (agent names come from configuration, so this is a safety net).
const MAX_CACHED_AGENTS: usize = 256;

#[derive(Debug)]
struct AgentHandles {
    /// The agent's bounded label.
    label: AgentName,
    score: Histogram,
    /// `[tier rank][reason index]`, registered on first use.
    decisions: Vec<[OnceLock<Counter>; BUILTIN_REASONS]>,
}

#[derive(Debug)]
pub(crate) struct DecisionMetrics {
    labels: BoundedLabels,
    agents: RwLock<HashMap<AgentName, Arc<AgentHandles>>>,
    /// The catalog and its agents' handles by label index: a decision on a
    /// request the catalog resolved finds its handles without hashing the
    /// agent's name.
    dense: (Catalog, Box<[OnceLock<Arc<AgentHandles>>]>),
}

impl DecisionMetrics {
    /// Metrics whose agent label is bounded by `labels`.
    pub(crate) fn new(labels: BoundedLabels, catalog: Catalog) -> Self {
        let slots = (0..catalog.agent_labels().capacity())
            .map(|_| OnceLock::new())
            .collect();
        Self {
            labels,
            agents: RwLock::default(),
            dense: (catalog, slots),
        }
    }

    /// Counts a decision; records its score when `record_score` (scores of
    /// explicit and overridden decisions are not strategy scores).
    pub(crate) fn record(
        &self,
        agent: &AgentName,
        ctx: &CallContext,
        tiers: &[Tier],
        rank: Option<usize>,
        decision: &TierDecision,
        record_score: bool,
    ) {
        let (Some(rank), Some(reason)) = (rank, reason_index(&decision.reason)) else {
            return record_uncached(&self.labels.fold(agent), rank.is_some(), decision, record_score);
        };
        let (resolver, slots) = &self.dense;
        if let Some(slot) = slots.get(ctx.agent.index()).filter(|_| resolver.owns(ctx)) {
            let h = slot.get_or_init(|| {
                let label = AgentName::new(resolver.agent_label(ctx.agent));
                Arc::new(AgentHandles {
                    score: metrics::histogram!(catalog::TRIAGE_SCORE, labels::AGENT => label.as_str().to_owned()),
                    decisions: tiers.iter().map(|_| Default::default()).collect(),
                    label,
                })
            });
            return h.record(rank, reason, decision, record_score);
        }
        // The cache is keyed by the name the caller passed and holds handles
        // labelled with its bounded label: the label rule runs once per name,
        // not per call.
        if let Ok(map) = self.agents.read() {
            if let Some(h) = map.get(agent) {
                return h.record(rank, reason, decision, record_score);
            }
        }
        match self.insert(agent, tiers) {
            Some(h) => h.record(rank, reason, decision, record_score),
            None => record_uncached(&self.labels.fold(agent), true, decision, record_score),
        }
    }

    fn insert(&self, agent: &AgentName, tiers: &[Tier]) -> Option<Arc<AgentHandles>> {
        let mut map = self.agents.write().ok()?;
        if map.len() >= MAX_CACHED_AGENTS && !map.contains_key(agent) {
            return None;
        }
        let h = map
            .entry(agent.clone())
            .or_insert_with(|| {
                let label = self.labels.fold(agent);
                Arc::new(AgentHandles {
                    score: metrics::histogram!(catalog::TRIAGE_SCORE, labels::AGENT => label.as_str().to_owned()),
                    decisions: tiers.iter().map(|_| Default::default()).collect(),
                    label,
                })
            })
            .clone();
        Some(h)
    }
}

impl AgentHandles {
    fn record(&self, rank: usize, reason: usize, decision: &TierDecision, record_score: bool) {
        if let Some(slot) = self.decisions.get(rank).and_then(|slots| slots.get(reason)) {
            slot.get_or_init(|| {
                metrics::counter!(catalog::TRIAGE_DECISIONS_TOTAL,
                    labels::AGENT => self.label.as_str().to_owned(),
                    labels::TIER => decision.tier.as_str().to_owned(),
                    labels::REASON => decision.reason.as_str())
            })
            .increment(1);
        }
        if record_score {
            self.score.record(decision.score);
        }
    }
}

fn record_uncached(agent: &AgentName, known_tier: bool, decision: &TierDecision, record_score: bool) {
    let tier = if known_tier {
        decision.tier.as_str()
    } else {
        OTHER_LABEL
    };
    metrics::counter!(catalog::TRIAGE_DECISIONS_TOTAL,
        labels::AGENT => agent.as_str().to_owned(),
        labels::TIER => tier.to_owned(),
        labels::REASON => decision.reason.as_str())
    .increment(1);
    if record_score {
        metrics::histogram!(catalog::TRIAGE_SCORE, labels::AGENT => agent.as_str().to_owned())
            .record(decision.score);
    }
}
