//! The series a layer in [`MetricsMode::Cells`](crate::MetricsMode::Cells)
//! exports, and how they are read into a [`MetricVisitor`] at scrape time
//! with exactly the names, label keys and label order that the `metrics`
//! recorder path uses (`docs/metrics.md`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mantissa_core::catalog::{self, MetricVisitor, labels};
use mantissa_core::{EventKind, FailureClass, Outcome};

use super::{Cells, DURATION_BOUNDS, HIST_CELLS, Hist, OUTCOMES, TOKEN_BOUNDS, load_f64};

/// The per-agent cells of one layer: calls started (in flight = started −
/// finished, read at scrape time, so a call costs one increment, not two).
pub(crate) struct AgentCells {
    pub(crate) name: Arc<str>,
    /// Calls started: `[llm, tool]`.
    pub(crate) started: [AtomicU64; 2],
    /// Whether the layer records a counterfactual cost (it has a tier ladder).
    pub(crate) counterfactual: bool,
}

impl AgentCells {
    pub(crate) fn new(name: &str, counterfactual: bool) -> Arc<Self> {
        Arc::new(Self {
            name: Arc::from(name),
            started: [AtomicU64::new(0), AtomicU64::new(0)],
            counterfactual,
        })
    }

    #[inline]
    pub(crate) fn start(&self, kind: EventKind) {
        self.started[kind_index(kind)].fetch_add(1, Relaxed);
    }
}

fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::Tool => 1,
        _ => 0,
    }
}

/// One exported series: its labels and its cells.
pub(crate) struct Exported {
    pub(crate) agent: Arc<AgentCells>,
    pub(crate) subject: Arc<str>,
    pub(crate) tier: Arc<str>,
    pub(crate) provider: Arc<str>,
    /// Whether the model has a configured or catalogued price.
    pub(crate) priced: bool,
    pub(crate) cells: Arc<Cells>,
}

fn outcome_labels(o: usize) -> (&'static str, Option<&'static str>) {
    match o.checked_sub(1).and_then(|i| FailureClass::ALL.get(i)) {
        None => (Outcome::Success.as_str(), None),
        Some(c) => (Outcome::Failure(*c).as_str(), Some(c.as_str())),
    }
}

fn histogram(
    v: &mut dyn MetricVisitor,
    name: &'static str,
    labels: &[(&'static str, &str)],
    bounds: &'static [f64],
    h: &Hist,
    scale: f64,
) {
    let mut counts = [0u64; HIST_CELLS - 1];
    let count = h.cumulative_into(&mut counts);
    // Rendered from the series' creation on, at zero, as a registered
    // recorder handle is.
    v.histogram(name, labels, bounds, &counts, h.sum() as f64 * scale, count);
}

/// Reads every exported series and agent into `v`.
pub(crate) fn collect(series: &[Arc<Exported>], agents: &[Arc<AgentCells>], v: &mut dyn MetricVisitor) {
    for a in agents {
        // Finished calls are read before started ones: a call starts before
        // it finishes, so the difference is never negative.
        let mut finished = [0u64; 2];
        for s in series.iter().filter(|s| Arc::ptr_eq(&s.agent, a)) {
            let calls = s
                .cells
                .duration
                .iter()
                .fold(0u64, |n, h| n.wrapping_add(h.count()));
            let k = kind_index(s.cells.kind);
            finished[k] = finished[k].wrapping_add(calls);
        }
        for (k, kind) in ["llm", "tool"].into_iter().enumerate() {
            let started = a.started[k].load(Relaxed);
            if started > 0 {
                let in_flight = started.saturating_sub(finished[k]) as f64;
                v.gauge(
                    catalog::CALLS_IN_FLIGHT,
                    &[(labels::KIND, kind), (labels::AGENT, &a.name)],
                    in_flight,
                );
            }
        }
        if a.counterfactual {
            v.counter(
                catalog::COUNTERFACTUAL_COST_USD_TOTAL,
                &[(labels::AGENT, &a.name)],
                0.0,
            );
        }
    }
    for s in series {
        collect_series(s, v);
    }
}

fn collect_series(s: &Exported, v: &mut dyn MetricVisitor) {
    let c = &*s.cells;
    let agent = &*s.agent.name;
    let subject = &*s.subject;
    let llm = c.kind != EventKind::Tool;
    for o in 0..OUTCOMES {
        let h = &c.duration[o];
        let calls = h.count();
        if o > 0 && calls == 0 {
            continue;
        }
        let (outcome, error_type) = outcome_labels(o);
        let mut d: Vec<(&'static str, &str)> = Vec::with_capacity(5);
        let mut n: Vec<(&'static str, &str)> = Vec::with_capacity(5);
        if llm {
            d.push((labels::GEN_AI_OPERATION_NAME, catalog::OPERATION_CHAT));
            d.push((labels::GEN_AI_PROVIDER_NAME, &s.provider));
            d.push((labels::GEN_AI_REQUEST_MODEL, subject));
            n.extend([
                (labels::KIND, "llm"),
                (labels::AGENT, agent),
                (labels::MODEL, subject),
            ]);
        } else {
            d.push((labels::GEN_AI_OPERATION_NAME, catalog::OPERATION_EXECUTE_TOOL));
            d.push((labels::GEN_AI_TOOL_NAME, subject));
            n.extend([
                (labels::KIND, "tool"),
                (labels::AGENT, agent),
                (labels::TOOL, subject),
            ]);
        }
        d.push((labels::GEN_AI_AGENT_NAME, agent));
        n.push((labels::OUTCOME, outcome));
        if let Some(e) = error_type {
            d.push((labels::ERROR_TYPE, e));
            n.push((labels::ERROR_TYPE, e));
        }
        histogram(
            v,
            catalog::GEN_AI_CLIENT_OPERATION_DURATION,
            &d,
            DURATION_BOUNDS,
            h,
            1e-9,
        );
        v.counter(catalog::CALLS_TOTAL, &n, calls as f64);
    }
    if !llm {
        return;
    }
    let gen_ai = |token_type| {
        [
            (labels::GEN_AI_OPERATION_NAME, catalog::OPERATION_CHAT),
            (labels::GEN_AI_PROVIDER_NAME, &*s.provider),
            (labels::GEN_AI_REQUEST_MODEL, subject),
            (labels::GEN_AI_AGENT_NAME, agent),
            (labels::GEN_AI_TOKEN_TYPE, token_type),
        ]
    };
    histogram(
        v,
        catalog::GEN_AI_CLIENT_TOKEN_USAGE,
        &gen_ai("input"),
        TOKEN_BOUNDS,
        &c.input,
        1.0,
    );
    histogram(
        v,
        catalog::GEN_AI_CLIENT_TOKEN_USAGE,
        &gen_ai("output"),
        TOKEN_BOUNDS,
        &c.output,
        1.0,
    );
    for (token_type, h) in [("input", &c.input), ("output", &c.output)] {
        v.counter(
            catalog::TOKENS_TOTAL,
            &[
                (labels::AGENT, agent),
                (labels::MODEL, subject),
                (labels::TOKEN_TYPE, token_type),
            ],
            h.sum() as f64,
        );
    }
    v.counter(
        catalog::COST_USD_TOTAL,
        &[
            (labels::AGENT, agent),
            (labels::TIER, &s.tier),
            (labels::MODEL, subject),
        ],
        load_f64(&c.cost_usd),
    );
    if !s.priced {
        // Calls with tokens: each recorded one token-usage sample.
        v.counter(
            catalog::UNKNOWN_COST_CALLS_TOTAL,
            &[(labels::MODEL, subject)],
            c.input.count() as f64,
        );
    }
    if s.agent.counterfactual {
        v.counter(
            catalog::COUNTERFACTUAL_COST_USD_TOTAL,
            &[(labels::AGENT, agent)],
            load_f64(&c.counterfactual_usd),
        );
    }
    let ttfc = [
        (labels::GEN_AI_OPERATION_NAME, catalog::OPERATION_CHAT),
        (labels::GEN_AI_PROVIDER_NAME, &*s.provider),
        (labels::GEN_AI_REQUEST_MODEL, subject),
        (labels::GEN_AI_AGENT_NAME, agent),
    ];
    histogram(
        v,
        catalog::GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
        &ttfc,
        DURATION_BOUNDS,
        &c.time_to_first_chunk,
        1e-9,
    );
}
