//! The cells, registry subjects and (in [`MetricsMode::Recorder`]) metric
//! handles of one agent and of one label tuple, made once and then held.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use mantissa_core::catalog::{self, labels};
use mantissa_core::{AgentName, EventKind, FailureClass, Outcome, Pricing, Tier};
use metrics::{Counter, Gauge, Histogram, Label};

use crate::MetricsMode;
use crate::cells::{AgentCells, Cells, Exported};
use crate::events::CallLabels;
use crate::registry::SubjectStats;

use super::{ModelInfo, NO_TIER, Scope, Shared};

/// Cells, handles and registry subject of one agent.
pub(crate) struct AgentSeries {
    pub(super) name: AgentName,
    pub(super) stats: Arc<SubjectStats>,
    /// Calls started, for the in-flight gauge ([`MetricsMode::Cells`]).
    pub(super) cells: Arc<AgentCells>,
    /// [`MetricsMode::Recorder`] only.
    pub(super) in_flight_llm: OnceLock<Gauge>,
    pub(super) in_flight_tool: OnceLock<Gauge>,
    pub(super) counterfactual: Option<Gauge>,
}

impl AgentSeries {
    pub(super) fn new(shared: &Shared, agent: &AgentName) -> Self {
        let stats = shared.registry.agent_stats(agent.as_str());
        let metrics_on = shared.scope != Scope::Outcome;
        let counterfactual_on = shared.top_pricing.is_some() && metrics_on;
        let cells = AgentCells::new(agent.as_str(), counterfactual_on);
        let recorder = metrics_on && shared.mode == MetricsMode::Recorder;
        if metrics_on && shared.mode == MetricsMode::Cells {
            shared.registry.export_agent(cells.clone());
        }
        let counterfactual = (counterfactual_on && recorder).then(
            || metrics::gauge!(catalog::COUNTERFACTUAL_COST_USD_TOTAL, labels::AGENT => agent.to_string()),
        );
        Self {
            name: agent.clone(),
            stats,
            cells,
            in_flight_llm: OnceLock::new(),
            in_flight_tool: OnceLock::new(),
            counterfactual,
        }
    }

    /// The in-flight gauge of `kind` ([`MetricsMode::Recorder`]).
    pub(super) fn in_flight(&self, kind: EventKind) -> &Gauge {
        let (cell, kind) = match kind {
            EventKind::Tool => (&self.in_flight_tool, "tool"),
            _ => (&self.in_flight_llm, "llm"),
        };
        cell.get_or_init(|| {
            metrics::gauge!(catalog::CALLS_IN_FLIGHT, labels::KIND => kind, labels::AGENT => self.name.to_string())
        })
    }
}

pub(super) struct OutcomeSeries {
    pub(super) duration: Histogram,
    pub(super) calls: Counter,
}

pub(super) struct TokenSeries {
    pub(super) usage_input: Histogram,
    pub(super) usage_output: Histogram,
    pub(super) total_input: Counter,
    pub(super) total_output: Counter,
    pub(super) cost: Gauge,
    /// Counts the calls of an unpriced model (`None` for a priced one).
    pub(super) unknown_cost: Option<Counter>,
    pub(super) time_to_first_chunk: Histogram,
}

/// The metric handles of a series in [`MetricsMode::Recorder`].
pub(super) struct Handles {
    pub(super) ok: OutcomeSeries,
    pub(super) failures: [OnceLock<OutcomeSeries>; 10],
    pub(super) tokens: Option<TokenSeries>,
}

/// Cells, registry subjects and handles of one (kind, agent, model or tool,
/// tier) tuple.
pub(crate) struct Series {
    pub(super) kind: EventKind,
    pub(super) agent: Arc<AgentSeries>,
    pub(super) subject: Arc<str>,
    pub(super) tier: Option<Tier>,
    pub(super) provider: Arc<str>,
    pub(super) pricing: Pricing,
    /// The model's or tool's subject.
    pub(super) stats: Arc<SubjectStats>,
    /// What every call of the series records, once.
    pub(super) cells: Arc<Cells>,
    /// The agent's latency baseline at the series' tier, when the series
    /// feeds the agent's window.
    pub(super) tier_baseline: Option<Arc<AtomicU64>>,
    /// [`MetricsMode::Recorder`] only (and never in [`Scope::Outcome`]).
    pub(super) handles: Option<Handles>,
    /// The labels its journal entries share.
    pub(super) labels: Arc<CallLabels>,
}

impl Series {
    pub(super) fn new(
        shared: &Shared,
        agent: Arc<AgentSeries>,
        kind: EventKind,
        subject: &str,
        tier: &str,
        info: Option<&ModelInfo>,
    ) -> Self {
        let info = info.unwrap_or(&shared.other_model);
        let metrics_on = shared.scope != Scope::Outcome;
        let stats = shared.registry.subject_stats(kind, subject);
        let cells = Cells::new(kind);
        // The cells feed the windows of the subjects of the scope (before
        // any call records into them).
        let tier_baseline = (shared.scope != Scope::Attempt).then(|| {
            agent.stats.attach(cells.clone());
            agent
                .stats
                .tier_baseline(if kind == EventKind::Llm { tier } else { NO_TIER })
        });
        if metrics_on {
            stats.attach(cells.clone());
        }
        if kind == EventKind::Llm && metrics_on && !info.priced {
            mantissa_core::models::warn_unpriced(subject);
        }
        let mut series = Series {
            kind,
            subject: Arc::from(subject),
            tier: (kind == EventKind::Llm).then(|| Tier::new(tier)),
            provider: info.provider.clone(),
            pricing: info.pricing,
            stats,
            cells,
            tier_baseline,
            labels: Arc::new(CallLabels {
                agent: agent.name.clone(),
                kind,
                subject: Arc::from(subject),
                tier: (kind == EventKind::Llm).then(|| Tier::new(tier)),
            }),
            agent,
            handles: None,
        };
        if metrics_on {
            match shared.mode {
                MetricsMode::Cells => shared.registry.export(Arc::new(Exported {
                    agent: series.agent.cells.clone(),
                    subject: series.subject.clone(),
                    tier: Arc::from(tier),
                    provider: series.provider.clone(),
                    priced: info.priced,
                    cells: series.cells.clone(),
                })),
                MetricsMode::Recorder => series.handles = Some(series.handles(tier, info)),
            }
        }
        series
    }

    /// Registers the handles of the series with the current recorder.
    fn handles(&self, tier: &str, info: &ModelInfo) -> Handles {
        let subject = &*self.subject;
        let agent_name = self.agent.name.to_string();
        let tokens = (self.kind == EventKind::Llm).then(|| {
            let usage = |token_type: &'static str| {
                metrics::histogram!(
                    catalog::GEN_AI_CLIENT_TOKEN_USAGE,
                    labels::GEN_AI_OPERATION_NAME => catalog::OPERATION_CHAT,
                    labels::GEN_AI_PROVIDER_NAME => info.provider.to_string(),
                    labels::GEN_AI_REQUEST_MODEL => subject.to_owned(),
                    labels::GEN_AI_AGENT_NAME => agent_name.clone(),
                    labels::GEN_AI_TOKEN_TYPE => token_type,
                )
            };
            let total = |token_type: &'static str| {
                metrics::counter!(
                    catalog::TOKENS_TOTAL,
                    labels::AGENT => agent_name.clone(),
                    labels::MODEL => subject.to_owned(),
                    labels::TOKEN_TYPE => token_type,
                )
            };
            TokenSeries {
                usage_input: usage("input"),
                usage_output: usage("output"),
                total_input: total("input"),
                total_output: total("output"),
                cost: metrics::gauge!(
                    catalog::COST_USD_TOTAL,
                    labels::AGENT => agent_name.clone(),
                    labels::TIER => tier.to_owned(),
                    labels::MODEL => subject.to_owned(),
                ),
                unknown_cost: (!info.priced).then(|| {
                    metrics::counter!(catalog::UNKNOWN_COST_CALLS_TOTAL, labels::MODEL => subject.to_owned())
                }),
                time_to_first_chunk: metrics::histogram!(
                    catalog::GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
                    labels::GEN_AI_OPERATION_NAME => catalog::OPERATION_CHAT,
                    labels::GEN_AI_PROVIDER_NAME => info.provider.to_string(),
                    labels::GEN_AI_REQUEST_MODEL => subject.to_owned(),
                    labels::GEN_AI_AGENT_NAME => agent_name.clone(),
                ),
            }
        });
        Handles {
            ok: self.outcome_series(None),
            failures: Default::default(),
            tokens,
        }
    }

    /// Registers the duration histogram and call counter of one outcome.
    pub(super) fn outcome_series(&self, failure: Option<FailureClass>) -> OutcomeSeries {
        let agent = self.agent.name.to_string();
        let subject = self.subject.to_string();
        let outcome = match failure {
            None => Outcome::Success,
            Some(c) => Outcome::Failure(c),
        };
        let mut duration = Vec::with_capacity(5);
        let mut calls = Vec::with_capacity(5);
        match self.kind {
            EventKind::Tool => {
                duration.push(Label::new(
                    labels::GEN_AI_OPERATION_NAME,
                    catalog::OPERATION_EXECUTE_TOOL,
                ));
                duration.push(Label::new(labels::GEN_AI_TOOL_NAME, subject.clone()));
                calls.push(Label::new(labels::KIND, "tool"));
                calls.push(Label::new(labels::AGENT, agent.clone()));
                calls.push(Label::new(labels::TOOL, subject));
            }
            _ => {
                duration.push(Label::new(labels::GEN_AI_OPERATION_NAME, catalog::OPERATION_CHAT));
                duration.push(Label::new(
                    labels::GEN_AI_PROVIDER_NAME,
                    self.provider.to_string(),
                ));
                duration.push(Label::new(labels::GEN_AI_REQUEST_MODEL, subject.clone()));
                calls.push(Label::new(labels::KIND, "llm"));
                calls.push(Label::new(labels::AGENT, agent.clone()));
                calls.push(Label::new(labels::MODEL, subject));
            }
        }
        duration.push(Label::new(labels::GEN_AI_AGENT_NAME, agent));
        calls.push(Label::new(labels::OUTCOME, outcome.as_str()));
        if let Some(c) = failure {
            duration.push(Label::new(labels::ERROR_TYPE, c.as_str()));
            calls.push(Label::new(labels::ERROR_TYPE, c.as_str()));
        }
        OutcomeSeries {
            duration: metrics::histogram!(catalog::GEN_AI_CLIENT_OPERATION_DURATION, duration),
            calls: metrics::counter!(catalog::CALLS_TOTAL, calls),
        }
    }
}

impl Handles {
    pub(super) fn outcome(&self, series: &Series, failure: Option<FailureClass>) -> &OutcomeSeries {
        match failure {
            None => &self.ok,
            Some(c) => self.failures[c.index()].get_or_init(|| series.outcome_series(Some(c))),
        }
    }
}
