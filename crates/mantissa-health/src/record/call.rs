//! [`Call`], the drop guard that records each call exactly once.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{
    EventKind, EventSink, FailureClass, HealthEvent, LabelIdx, ModelId, Outcome, SessionId, Tier, Usage,
};
use tokio::time::Instant;

use crate::cells::Recorded;
use crate::events::CallRecord;
use crate::registry::{NANOS, expect_latency};
use crate::trace::{self, TraceSettings};

use super::series::Handles;
use super::{AgentSeries, Scope, Series, Shared};

/// The overhead histogram samples one call in this many (per thread).
pub(super) const OVERHEAD_SAMPLE_EVERY: u32 = 16;

thread_local! {
    static OVERHEAD_TICK: Cell<u32> = const { Cell::new(0) };
}

/// Whether this call measures the layer's overhead (the first of every
/// [`OVERHEAD_SAMPLE_EVERY`] calls on a thread): it saves two clock reads on
/// the other calls.
pub(super) fn sample_overhead() -> bool {
    OVERHEAD_TICK.with(|t| {
        let n = t.get();
        t.set(n.wrapping_add(1));
        n % OVERHEAD_SAMPLE_EVERY == 0
    })
}

/// What a call records into: its series, or (until the response names the
/// model) only its agent.
pub(super) enum Target {
    Bound(Arc<Series>),
    Unbound {
        agent: Arc<AgentSeries>,
        tier: Option<Tier>,
    },
}

impl Target {
    pub(super) fn agent(&self) -> &AgentSeries {
        match self {
            Target::Bound(s) => &s.agent,
            Target::Unbound { agent, .. } => agent,
        }
    }
}

/// One call being observed. Records exactly once: through [`Call::finish`],
/// or as cancelled when dropped unfinished.
pub(crate) struct Call {
    pub(super) shared: Arc<Shared>,
    pub(super) target: Target,
    /// The agent's catalog index, for an unbound call whose context the
    /// layer's catalog resolved.
    pub(super) agent_idx: Option<LabelIdx>,
    pub(super) kind: EventKind,
    pub(super) session: Option<SessionId>,
    pub(super) start: Instant,
    pub(super) sampled: bool,
    pub(super) pre_overhead: Duration,
    pub(super) done: bool,
    pub(super) span: tracing::Span,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = match &self.target {
            Target::Bound(s) => Some(&s.subject),
            Target::Unbound { .. } => None,
        };
        f.debug_struct("Call")
            .field("agent", &self.target.agent().name)
            .field("kind", &self.kind)
            .field("subject", &subject)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// The call's span (disabled when no subscriber wants it).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The layer's trace settings.
    /// The scope of the layer that made this call.
    pub(crate) fn scope(&self) -> Scope {
        self.shared.scope
    }

    pub(crate) fn trace_settings(&self) -> TraceSettings {
        self.shared.trace
    }

    /// Binds the call to the model of its response when the request named
    /// none (`None`: the model stays unknown and is recorded as `other`).
    pub(crate) fn bind_model(&mut self, model: Option<&ModelId>) {
        let Target::Unbound { agent, tier } = &self.target else {
            return;
        };
        let shared = &*self.shared;
        // An outcome (labelled with the model's own tier) by index: a slot
        // filled by an earlier call of this agent and model.
        let slot = match (shared.scope, model, self.agent_idx, &shared.dense) {
            (Scope::Outcome, Some(m), Some(a), Some(d)) => d.outcome_slot(a, m.as_str()),
            _ => None,
        };
        if let Some(series) = slot.and_then(|s| s.get()) {
            if Arc::ptr_eq(&series.agent, agent) && series.kind == self.kind {
                self.target = Target::Bound(series.clone());
                return;
            }
        }
        let info = model.map_or(&shared.other_model, |m| shared.model_info(m.as_str()));
        // An agent's outcome is labelled with the tier that served it (the
        // router may have fallen back from the requested one).
        let requested = match (shared.scope, model) {
            (Scope::Outcome, Some(_)) => None,
            _ => tier.as_ref(),
        };
        let tier = shared.tier_label(requested, info);
        let series = shared.series(self.kind, &agent.name, &info.label, tier, Some(info));
        if let Some(slot) = slot {
            // The series depends only on the agent's and the model's names:
            // the slot's model is the model, and its agent is checked on use.
            let _ = slot.set(series.clone());
        }
        self.target = Target::Bound(series);
    }

    /// Records the time to the first chunk of a streamed response.
    pub(crate) fn first_chunk(&mut self) {
        let ttfc = self.start.elapsed();
        self.bind_model(None);
        if let Target::Bound(s) = &self.target {
            if s.kind == EventKind::Llm && self.shared.scope != Scope::Outcome {
                s.cells
                    .first_chunk(u64::try_from(ttfc.as_nanos()).unwrap_or(u64::MAX));
            }
            if let Some(t) = s.handles.as_ref().and_then(|h| h.tokens.as_ref()) {
                t.time_to_first_chunk.record(ttfc.as_secs_f64());
            }
        }
    }

    /// Records the end of the call.
    pub(crate) fn finish(
        &mut self,
        failure: Option<FailureClass>,
        usage: Usage,
        detail: Option<String>,
        end: Instant,
    ) {
        if self.done {
            return;
        }
        self.done = true;
        trace::record_end(&self.span, failure, usage, self.kind == EventKind::Llm);
        self.bind_model(None);
        let Target::Bound(series) = &self.target else {
            return;
        };
        let shared = &*self.shared;
        let scope = shared.scope;
        let agent = &*series.agent;
        let duration = end.saturating_duration_since(self.start);
        let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let secs = duration.as_secs_f64();

        let with_usage = usage.total() > 0 && self.kind == EventKind::Llm;
        let mut cost = 0.0;
        let mut counterfactual = 0.0;
        if with_usage {
            cost = series.pricing.cost(&usage);
            if let Some(top) = &shared.top_pricing {
                counterfactual = top.cost(&usage);
            }
        }

        // Count once: the cells feed the registry's windows and, in
        // `MetricsMode::Cells`, the exposition.
        let now_ns = shared.registry.nanos(end);
        let slot_secs = now_ns / NANOS;
        let feeds_agent = scope != Scope::Attempt;
        let feeds_subject = scope != Scope::Outcome;
        if feeds_agent {
            agent.stats.roll(slot_secs);
        }
        if feeds_subject {
            series.stats.roll(slot_secs);
        }
        let expected_secs = match (&series.tier_baseline, failure) {
            (Some(cell), None) => Some(expect_latency(cell, secs)),
            _ => None,
        };
        series.cells.record(&Recorded {
            failure,
            duration_ns,
            tokens: with_usage.then_some((usage.input_tokens, usage.output_tokens)),
            cost_usd: cost,
            counterfactual_usd: counterfactual,
            expected_secs,
        });
        if feeds_agent {
            agent.stats.finish(now_ns, failure, secs);
        }
        if scope == Scope::Outcome {
            return;
        }
        series.stats.finish(now_ns, failure, secs);
        if let Some(h) = &series.handles {
            record_to_recorder(h, series, failure, secs, usage, with_usage, cost, counterfactual);
        }

        if shared.journal || !shared.sinks.is_empty() {
            let session = self.session.take().unwrap_or_default();
            let timestamp_ms = shared.registry.wall_ms_of(now_ns);
            let outcome = failure.map_or(Outcome::Success, Outcome::Failure);
            if !shared.sinks.is_empty() {
                let event = HealthEvent {
                    timestamp_ms,
                    agent: agent.name.clone(),
                    session: session.clone(),
                    kind: self.kind,
                    subject: series.subject.clone(),
                    tier: series.tier.clone(),
                    outcome,
                    duration,
                    usage,
                    cost_usd: cost,
                    detail: detail.clone(),
                    reason: None,
                };
                for sink in shared.sinks.iter() {
                    sink.record(&event);
                }
            }
            if shared.journal {
                shared.registry.journal_call(CallRecord {
                    labels: series.labels.clone(),
                    session,
                    timestamp_ms,
                    outcome,
                    duration,
                    usage,
                    cost_usd: cost,
                    detail,
                });
            }
        }
        if self.sampled && failure != Some(FailureClass::Cancelled) {
            let overhead = self.pre_overhead + end.elapsed();
            shared.overhead().record(overhead.as_secs_f64());
        }
    }
}

/// [`MetricsMode::Recorder`](crate::MetricsMode::Recorder): the same call,
/// through the `metrics` handles of its series.
#[allow(clippy::too_many_arguments)]
fn record_to_recorder(
    h: &Handles,
    series: &Series,
    failure: Option<FailureClass>,
    secs: f64,
    usage: Usage,
    with_usage: bool,
    cost: f64,
    counterfactual: f64,
) {
    series.agent.in_flight(series.kind).decrement(1.0);
    let out = h.outcome(series, failure);
    out.duration.record(secs);
    out.calls.increment(1);
    if let (Some(t), true) = (&h.tokens, with_usage) {
        t.usage_input.record(usage.input_tokens as f64);
        t.usage_output.record(usage.output_tokens as f64);
        t.total_input.increment(usage.input_tokens);
        t.total_output.increment(usage.output_tokens);
        if cost > 0.0 {
            t.cost.increment(cost);
        }
        if let Some(c) = &t.unknown_cost {
            c.increment(1);
        }
        if let Some(g) = &series.agent.counterfactual {
            g.increment(counterfactual);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            self.finish(
                Some(FailureClass::Cancelled),
                Usage::default(),
                None,
                Instant::now(),
            );
        }
    }
}
