//! What the layer tells the outside world besides the caller: the
//! [`Emitter`] holds the reset layer's metric handles, its event sinks and its
//! tracing, so the orchestration reads as `emit.warning(..)` and
//! `emit.reset(..)` — the reset crate's counterpart of tower-http's `on_*`
//! hooks (`trace/on_response.rs`, `on_failure.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mantissa_core::catalog::{self, labels};
use mantissa_core::{
    AgentName, BoundedLabels, CallContext, Catalog, EventKind, EventSink, HealthEvent, Outcome,
};
use parking_lot::RwLock;

use crate::notice::{ContextReset, ContextWarning};

/// Agents whose brittleness histogram handle is cached (beyond this, handles
/// are looked up per call).
const HISTOGRAM_CACHE_LIMIT: usize = 1024;

/// The reset layer's metrics, events and tracing, shared by every service a
/// layer builds.
pub(crate) struct Emitter {
    sinks: Vec<Arc<dyn EventSink>>,
    labels: BoundedLabels,
    // Agent names come from the application's configuration, not from end
    // users, so a fast unkeyed hash is fine here.
    histograms: RwLock<HashMap<AgentName, metrics::Histogram, foldhash::fast::FixedState>>,
    /// The stack's catalog and its agents' handles by label index: a call
    /// whose context the catalog resolved finds its handle without hashing
    /// the agent's name.
    catalog: Option<(Catalog, Box<[OnceLock<metrics::Histogram>]>)>,
    published_sessions: AtomicUsize,
}

impl Emitter {
    pub(crate) fn new(
        sinks: Vec<Arc<dyn EventSink>>,
        labels: BoundedLabels,
        catalog: Option<Catalog>,
    ) -> Self {
        let catalog = catalog.map(|c| {
            let slots = (0..c.agent_labels().capacity())
                .map(|_| OnceLock::new())
                .collect();
            (c, slots)
        });
        Self {
            sinks,
            labels,
            histograms: RwLock::new(HashMap::default()),
            catalog,
            published_sessions: AtomicUsize::new(usize::MAX),
        }
    }

    /// The bounded label of `agent` (the stack's one rule).
    fn agent_label(&self, agent: &AgentName) -> AgentName {
        self.labels.fold(agent)
    }

    /// Every call: the active-sessions gauge (set only when the count
    /// changed) and the session's brittleness score.
    pub(crate) fn call(&self, agent: &AgentName, ctx: &CallContext, sessions: usize, score: f64) {
        if self.published_sessions.swap(sessions, Ordering::Relaxed) != sessions {
            metrics::gauge!(catalog::ACTIVE_SESSIONS).set(sessions as f64);
        }
        if let Some((c, slots)) = self.catalog.as_ref().filter(|(c, _)| c.owns(ctx)) {
            if let Some(slot) = slots.get(ctx.agent.index()) {
                let h = slot.get_or_init(|| {
                    let label = c.agent_label(ctx.agent).to_string();
                    metrics::histogram!(catalog::SESSION_BRITTLENESS, labels::AGENT => label)
                });
                h.record(score);
                return;
            }
        }
        // Keyed by the name the caller passed, labelled with its bounded
        // label: the label rule runs once per name, not per call.
        if let Some(h) = self.histograms.read().get(agent.as_str()) {
            h.record(score);
            return;
        }
        let label = self.agent_label(agent);
        let h = metrics::histogram!(catalog::SESSION_BRITTLENESS, labels::AGENT => label.as_str().to_owned());
        h.record(score);
        let mut map = self.histograms.write();
        if map.len() < HISTOGRAM_CACHE_LIMIT {
            map.insert(agent.clone(), h);
        }
    }

    /// A warning: one counter increment and one event per trigger, a span
    /// event on the caller's span, and a log line for its note.
    pub(crate) fn warning(&self, agent: &AgentName, w: &ContextWarning) {
        let label = self.agent_label(agent);
        for t in w.triggers.iter() {
            metrics::counter!(
                catalog::CONTEXT_WARNINGS_TOTAL,
                labels::AGENT => label.as_str().to_owned(),
                labels::REASON => t.as_str()
            )
            .increment(1);
            let mut ev = HealthEvent::now(
                label.clone(),
                w.session.clone(),
                EventKind::ContextWarning,
                t.as_str(),
                Outcome::Success,
                Duration::ZERO,
            );
            let mut detail = format!(
                "score {:.2}, context {} of {} tokens, turn {}, {} LLM calls",
                w.score, w.context_tokens, w.window, w.turns, w.llm_calls
            );
            if let Some(n) = &w.note {
                detail.push_str("; ");
                detail.push_str(n);
            }
            ev.detail = Some(detail);
            self.event(&ev);
        }
        // A span event on the caller's current span (exported by `mantissa::otel`).
        tracing::event!(
            target: "mantissa_reset",
            tracing::Level::INFO,
            mantissa.warning.score = w.score,
            mantissa.warning.context_tokens = w.context_tokens,
            mantissa.warning.turns = w.turns,
            mantissa.warning.llm_calls = w.llm_calls,
            "{w}"
        );
        if let Some(n) = &w.note {
            // Operators' log: what the layer could not do, or suggests.
            tracing::warn!(target: "mantissa_reset", session = %w.session, "{n}");
        }
    }

    /// A reset that took `elapsed`: the reset counter and the turns and
    /// tokens at reset, one event (its reason the trigger, its subject the
    /// strategy), and a span event on the caller's span.
    pub(crate) fn reset(&self, agent: &AgentName, notice: &ContextReset, elapsed: Duration) {
        let label = self.agent_label(agent);
        let agent = label.as_str().to_owned();
        metrics::counter!(
            catalog::CONTEXT_RESETS_TOTAL,
            labels::AGENT => agent.clone(),
            labels::REASON => notice.reason.as_str(),
            labels::STRATEGY => notice.strategy.as_str()
        )
        .increment(1);
        metrics::histogram!(catalog::SESSION_TURNS_AT_RESET, labels::AGENT => agent.clone())
            .record(f64::from(notice.turns));
        metrics::histogram!(catalog::SESSION_CONTEXT_TOKENS_AT_RESET, labels::AGENT => agent)
            .record(notice.tokens_before as f64);
        let mut ev = HealthEvent::now(
            label,
            notice.session.clone(),
            EventKind::ContextReset,
            notice.strategy.as_str(),
            Outcome::Success,
            elapsed,
        );
        ev.detail = Some(notice.to_string());
        ev.reason = Some(Arc::from(notice.reason.as_str()));
        self.event(&ev);
        // A span event on the caller's current span (exported by `mantissa::otel`).
        tracing::event!(
            target: "mantissa_reset",
            tracing::Level::INFO,
            mantissa.reset.reason = notice.reason.as_str(),
            mantissa.reset.strategy = notice.strategy.as_str(),
            mantissa.reset.tokens_before = notice.tokens_before,
            mantissa.reset.tokens_after = notice.tokens_after,
            mantissa.reset.turns = notice.turns,
            mantissa.reset.llm_calls = notice.llm_calls,
            "{notice}"
        );
    }

    fn event(&self, event: &HealthEvent) {
        for sink in &self.sinks {
            sink.record(event);
        }
    }
}
