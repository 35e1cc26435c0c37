//! The metric handles and registry subjects of one agent and of one label
//! tuple, registered once and then held.

use std::sync::{Arc, OnceLock};

use mantissa_core::catalog::{self, labels};
use mantissa_core::{AgentName, EventKind, FailureClass, Outcome, Pricing, Tier};
use metrics::{Counter, Gauge, Histogram, Label};

use crate::registry::SubjectStats;

use super::{ModelInfo, Scope, Shared};

/// Handles and registry subject of one agent.
pub(crate) struct AgentSeries {
    pub(super) name: AgentName,
    pub(super) stats: Arc<SubjectStats>,
    pub(super) in_flight_llm: OnceLock<Gauge>,
    pub(super) in_flight_tool: OnceLock<Gauge>,
    pub(super) counterfactual: Option<Gauge>,
}

impl AgentSeries {
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

/// Handles and registry subjects of one (kind, agent, model or tool, tier) tuple.
pub(crate) struct Series {
    pub(super) kind: EventKind,
    pub(super) agent: Arc<AgentSeries>,
    pub(super) subject: Arc<str>,
    pub(super) tier: Option<Tier>,
    pub(super) provider: Arc<str>,
    pub(super) pricing: Pricing,
    pub(super) stats: Arc<SubjectStats>,
    pub(super) ok: OutcomeSeries,
    pub(super) failures: [OnceLock<OutcomeSeries>; 10],
    pub(super) tokens: Option<TokenSeries>,
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
        let agent_name = agent.name.to_string();
        let metrics_on = shared.scope != Scope::Outcome;
        let tokens = (kind == EventKind::Llm && metrics_on).then(|| {
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
                    mantissa_core::models::warn_unpriced(subject);
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
        let mut series = Series {
            kind,
            subject: Arc::from(subject),
            tier: (kind == EventKind::Llm).then(|| Tier::new(tier)),
            provider: info.provider.clone(),
            pricing: info.pricing,
            stats: shared.registry.subject_stats(kind, subject),
            agent,
            ok: OutcomeSeries {
                duration: Histogram::noop(),
                calls: Counter::noop(),
            },
            failures: Default::default(),
            tokens,
        };
        if metrics_on {
            series.ok = series.outcome_series(None);
        }
        series
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

    pub(super) fn outcome(&self, failure: Option<FailureClass>) -> &OutcomeSeries {
        match failure {
            None => &self.ok,
            Some(c) => self.failures[c.index()].get_or_init(|| self.outcome_series(Some(c))),
        }
    }
}
