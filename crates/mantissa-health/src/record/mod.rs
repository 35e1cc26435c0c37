//! The per-call bookkeeping: label folding, the cache of metric handles and
//! registry subjects, and [`Call`], the drop guard that records each call
//! exactly once.

use std::borrow::Borrow;
use std::cell::Cell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mantissa_core::catalog::{self, labels};
use mantissa_core::{
    AgentName, BoundedLabels, EventKind, EventSink, FailureClass, HealthEvent, ModelCatalog, ModelId,
    OTHER_LABEL, Outcome, Pricing, SessionId, Tier, Usage,
};
use metrics::{Counter, Gauge, Histogram, Label};
use tokio::time::Instant;

use crate::cache::{CowMap, LabelMap};
use crate::registry::{HealthRegistry, Sample, SubjectStats};
use crate::request::ObservedRequest;
use crate::trace::{self, TraceSettings};

/// The label value of `layer` on the overhead histogram.
pub(crate) const LAYER_NAME: &str = "health";
/// The tier label of calls without a tier.
pub(crate) const NO_TIER: &str = "none";

/// What a [`HealthLayer`](crate::HealthLayer) records of each call it sees.
///
/// A layer over one client sees each call once, so it records everything
/// ([`Scope::Call`], the default). Under a router, one call of an agent may
/// be several upstream attempts: the per-model layers record the attempts
/// ([`Scope::Attempt`]: model and tool windows, every metric, events) and a
/// layer above the router records what the agent experienced
/// ([`Scope::Outcome`]: the agent's window only — the final outcome of each
/// call, its whole latency against the agent's baseline at the serving tier,
/// its tokens and cost). `AgentStack` composes it that way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// Each call is one call of the agent and one upstream call: the agent's
    /// and the model's (or tool's) windows, metrics, events, spans.
    #[default]
    Call,
    /// Each call is one upstream attempt: the model's (or tool's) window,
    /// metrics, events and spans; not the agent's window.
    Attempt,
    /// Each call is a whole call of the agent: only the agent's window; no
    /// metrics, events or spans (the attempts below record those).
    Outcome,
}

/// What the catalog says about one model label.
#[derive(Debug, Clone)]
pub(crate) struct ModelInfo {
    pub(crate) label: Arc<str>,
    pub(crate) provider: Arc<str>,
    pub(crate) tier: Option<Tier>,
    pub(crate) pricing: Pricing,
    /// Whether the model has a configured or catalogued price.
    pub(crate) priced: bool,
}

/// The layer's configuration, frozen, plus its caches.
pub(crate) struct Shared {
    pub(crate) registry: HealthRegistry,
    models: LabelMap<ModelId, ModelInfo>,
    other_model: ModelInfo,
    fixed_model: Option<ModelId>,
    tiers: BoundedLabels,
    top_pricing: Option<Pricing>,
    agents: BoundedLabels,
    tools: BoundedLabels,
    sinks: Box<[Arc<dyn EventSink>]>,
    journal: bool,
    pub(crate) trace: TraceSettings,
    scope: Scope,
    other_agent: AgentName,
    series: CowMap<SeriesKey, Arc<Series>>,
    agent_series: CowMap<AgentName, Arc<AgentSeries>>,
    overhead: OnceLock<Histogram>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("models", &self.models.len())
            .field("fixed_model", &self.fixed_model)
            .field("agents", &self.agents)
            .field("tools", &self.tools)
            .field("sinks", &self.sinks.len())
            .field("journal", &self.journal)
            .field("series", &self.series.len())
            .finish_non_exhaustive()
    }
}

/// Inputs to [`Shared::new`].
pub(crate) struct Settings {
    pub(crate) registry: HealthRegistry,
    pub(crate) catalog: ModelCatalog,
    pub(crate) fixed_model: Option<ModelId>,
    pub(crate) tiers: BoundedLabels,
    pub(crate) top_pricing: Option<Pricing>,
    pub(crate) agents: BoundedLabels,
    pub(crate) tools: BoundedLabels,
    pub(crate) sinks: Vec<Arc<dyn EventSink>>,
    pub(crate) journal: bool,
    pub(crate) trace: TraceSettings,
    pub(crate) scope: Scope,
}

impl Shared {
    pub(crate) fn new(s: Settings) -> Self {
        let models = s
            .catalog
            .iter()
            .map(|spec| {
                let info = ModelInfo {
                    label: Arc::from(spec.id.as_str()),
                    provider: Arc::from(spec.provider.as_str()),
                    tier: s.catalog.tier_of(spec.id.as_str()).cloned(),
                    pricing: spec.pricing,
                    priced: spec.is_priced(),
                };
                (spec.id.clone(), info)
            })
            .collect();
        Self {
            registry: s.registry,
            models,
            other_model: ModelInfo {
                label: Arc::from(OTHER_LABEL),
                provider: Arc::from(OTHER_LABEL),
                tier: None,
                pricing: Pricing::default(),
                priced: false,
            },
            fixed_model: s.fixed_model,
            tiers: s.tiers,
            top_pricing: s.top_pricing,
            agents: s.agents,
            tools: s.tools,
            sinks: s.sinks.into_boxed_slice(),
            journal: s.journal,
            trace: s.trace,
            scope: s.scope,
            other_agent: AgentName::new(OTHER_LABEL),
            series: CowMap::new(),
            agent_series: CowMap::new(),
            overhead: OnceLock::new(),
        }
    }

    #[inline]
    fn agent_label<'a>(&'a self, agent: &'a AgentName) -> &'a AgentName {
        if self.agents.admits(agent.as_str()) {
            agent
        } else {
            &self.other_agent
        }
    }

    #[inline]
    fn model_info(&self, model: &str) -> &ModelInfo {
        self.models.get(model).unwrap_or(&self.other_model)
    }

    #[inline]
    fn tier_label<'a>(&'a self, requested: Option<&'a Tier>, info: &'a ModelInfo) -> &'a str {
        match requested {
            Some(t) => self.tiers.fold_str(t.as_str()),
            None => info.tier.as_ref().map_or(NO_TIER, Tier::as_str),
        }
    }

    fn agent_series(&self, agent: &AgentName) -> Arc<AgentSeries> {
        self.agent_series.get_or_insert_with(agent.as_str(), || {
            let stats = self.registry.agent_stats(agent.as_str());
            let counterfactual = self.top_pricing.filter(|_| self.scope != Scope::Outcome).map(|_| {
                metrics::gauge!(catalog::COUNTERFACTUAL_COST_USD_TOTAL, labels::AGENT => agent.to_string())
            });
            let series = AgentSeries {
                name: agent.clone(),
                stats,
                in_flight_llm: OnceLock::new(),
                in_flight_tool: OnceLock::new(),
                counterfactual,
            };
            (agent.clone(), Arc::new(series))
        })
    }

    /// Starts observing a call. `memo` is the calling service's memory of the
    /// label tuple of its previous call: a service that sees the same agent,
    /// model and tier again (the common case) skips the cache lookup.
    pub(crate) fn begin<R: ObservedRequest>(
        self: &Arc<Self>,
        req: &R,
        start: Instant,
        memo: &mut Option<Memo>,
    ) -> Call {
        let target = match memo {
            Some(m) if m.matches(req) => Target::Bound(m.series.clone()),
            _ => {
                let target = self.target(req);
                if let Target::Bound(series) = &target {
                    *memo = Some(Memo {
                        agent: req.agent().clone(),
                        subject: req.subject().map(Arc::from),
                        tier: req.tier().cloned(),
                        series: series.clone(),
                    });
                }
                target
            }
        };
        let (span, sampled) = if self.scope == Scope::Outcome {
            (tracing::Span::none(), false)
        } else {
            target.agent().in_flight(R::KIND).increment(1.0);
            (self.open_span(req, &target), sample_overhead())
        };
        let pre_overhead = if sampled { start.elapsed() } else { Duration::ZERO };
        Call {
            shared: self.clone(),
            target,
            kind: R::KIND,
            session: Some(req.session().clone()),
            start,
            sampled,
            pre_overhead,
            done: false,
            span,
        }
    }

    /// Opens the call's span (a no-op span when no subscriber wants it).
    #[inline]
    fn open_span<R: ObservedRequest>(&self, req: &R, target: &Target) -> tracing::Span {
        let model = match R::KIND {
            EventKind::Tool => None,
            _ => req.subject().or(self.fixed_model.as_ref().map(ModelId::as_str)),
        };
        let provider = match target {
            Target::Bound(s) => &*s.provider,
            Target::Unbound { .. } => OTHER_LABEL,
        };
        trace::open(req, model, provider, self.trace)
    }

    /// Folds the request's labels and finds (or creates) their series.
    fn target<R: ObservedRequest>(&self, req: &R) -> Target {
        let agent = self.agent_label(req.agent());
        match R::KIND {
            EventKind::Tool => {
                let name = req.subject().unwrap_or(OTHER_LABEL);
                let name = self.tools.fold_str(name);
                Target::Bound(self.series(EventKind::Tool, agent, name, "", None))
            }
            _ => match req.subject().or(self.fixed_model.as_ref().map(ModelId::as_str)) {
                Some(model) => {
                    let info = self.model_info(model);
                    let tier = self.tier_label(req.tier(), info);
                    Target::Bound(self.series(EventKind::Llm, agent, &info.label, tier, Some(info)))
                }
                // The model is only known from the response.
                None => Target::Unbound {
                    agent: self.agent_series(agent),
                    tier: req.tier().cloned(),
                },
            },
        }
    }

    fn series(
        &self,
        kind: EventKind,
        agent: &AgentName,
        subject: &str,
        tier: &str,
        info: Option<&ModelInfo>,
    ) -> Arc<Series> {
        let key = KeyRef {
            kind,
            agent: agent.as_str(),
            subject,
            tier,
        };
        self.series.get_or_insert_with(&key as &dyn AsKeyRef, || {
            let agent_series = self.agent_series(agent);
            let series = Series::new(self, agent_series, kind, subject, tier, info);
            let key = SeriesKey {
                kind,
                agent: agent.clone(),
                subject: Arc::from(subject),
                tier: Arc::from(tier),
            };
            (key, Arc::new(series))
        })
    }

    fn overhead(&self) -> &Histogram {
        self.overhead
            .get_or_init(|| metrics::histogram!(catalog::MIDDLEWARE_OVERHEAD, labels::LAYER => LAYER_NAME))
    }
}

// ---- the cache key: owned in the map, borrowed for lookups ----

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    kind: EventKind,
    agent: &'a str,
    subject: &'a str,
    tier: &'a str,
}

trait AsKeyRef {
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

#[derive(Clone)]
struct SeriesKey {
    kind: EventKind,
    agent: AgentName,
    subject: Arc<str>,
    tier: Arc<str>,
}

impl AsKeyRef for SeriesKey {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            kind: self.kind,
            agent: self.agent.as_str(),
            subject: &self.subject,
            tier: &self.tier,
        }
    }
}

impl<'a> Borrow<dyn AsKeyRef + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl Hash for dyn AsKeyRef + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for SeriesKey {}

// ---- metric handles ----

/// Handles and registry subject of one agent.
pub(crate) struct AgentSeries {
    name: AgentName,
    stats: Arc<SubjectStats>,
    in_flight_llm: OnceLock<Gauge>,
    in_flight_tool: OnceLock<Gauge>,
    counterfactual: Option<Gauge>,
}

impl AgentSeries {
    fn in_flight(&self, kind: EventKind) -> &Gauge {
        let (cell, kind) = match kind {
            EventKind::Tool => (&self.in_flight_tool, "tool"),
            _ => (&self.in_flight_llm, "llm"),
        };
        cell.get_or_init(|| {
            metrics::gauge!(catalog::CALLS_IN_FLIGHT, labels::KIND => kind, labels::AGENT => self.name.to_string())
        })
    }
}

struct OutcomeSeries {
    duration: Histogram,
    calls: Counter,
}

struct TokenSeries {
    usage_input: Histogram,
    usage_output: Histogram,
    total_input: Counter,
    total_output: Counter,
    cost: Gauge,
    /// Counts the calls of an unpriced model (`None` for a priced one).
    unknown_cost: Option<Counter>,
    time_to_first_chunk: Histogram,
}

/// Handles and registry subjects of one (kind, agent, model or tool, tier) tuple.
pub(crate) struct Series {
    kind: EventKind,
    agent: Arc<AgentSeries>,
    subject: Arc<str>,
    tier: Option<Tier>,
    provider: Arc<str>,
    pricing: Pricing,
    stats: Arc<SubjectStats>,
    ok: OutcomeSeries,
    failures: [OnceLock<OutcomeSeries>; 10],
    tokens: Option<TokenSeries>,
}

impl Series {
    fn new(
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
    fn outcome_series(&self, failure: Option<FailureClass>) -> OutcomeSeries {
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

    fn outcome(&self, failure: Option<FailureClass>) -> &OutcomeSeries {
        match failure {
            None => &self.ok,
            Some(c) => self.failures[c.index()].get_or_init(|| self.outcome_series(Some(c))),
        }
    }
}

// ---- the drop guard ----

/// The overhead histogram samples one call in this many (per thread).
const OVERHEAD_SAMPLE_EVERY: u32 = 16;

thread_local! {
    static OVERHEAD_TICK: Cell<u32> = const { Cell::new(0) };
}

/// Whether this call measures the layer's overhead (the first of every
/// [`OVERHEAD_SAMPLE_EVERY`] calls on a thread): it saves two clock reads on
/// the other calls.
fn sample_overhead() -> bool {
    OVERHEAD_TICK.with(|t| {
        let n = t.get();
        t.set(n.wrapping_add(1));
        n % OVERHEAD_SAMPLE_EVERY == 0
    })
}

/// The raw labels of a service's previous call and the series they folded
/// into. Compared by content, so it is correct for any request.
#[derive(Clone)]
pub(crate) struct Memo {
    agent: AgentName,
    subject: Option<Arc<str>>,
    tier: Option<Tier>,
    series: Arc<Series>,
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("agent", &self.agent)
            .field("subject", &self.subject)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

impl Memo {
    #[inline]
    fn matches<R: ObservedRequest>(&self, req: &R) -> bool {
        self.series.kind == R::KIND
            && self.agent.as_str() == req.agent().as_str()
            && self.subject.as_deref() == req.subject()
            && self.tier.as_ref().map(Tier::as_str) == req.tier().map(Tier::as_str)
    }
}

/// What a call records into: its series, or (until the response names the
/// model) only its agent.
enum Target {
    Bound(Arc<Series>),
    Unbound {
        agent: Arc<AgentSeries>,
        tier: Option<Tier>,
    },
}

impl Target {
    fn agent(&self) -> &AgentSeries {
        match self {
            Target::Bound(s) => &s.agent,
            Target::Unbound { agent, .. } => agent,
        }
    }
}

/// One call being observed. Records exactly once: through [`Call::finish`],
/// or as cancelled when dropped unfinished.
pub(crate) struct Call {
    shared: Arc<Shared>,
    target: Target,
    kind: EventKind,
    session: Option<SessionId>,
    start: Instant,
    sampled: bool,
    pre_overhead: Duration,
    done: bool,
    span: tracing::Span,
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
        let info = model.map_or(&shared.other_model, |m| shared.model_info(m.as_str()));
        // An agent's outcome is labelled with the tier that served it (the
        // router may have fallen back from the requested one).
        let requested = match (shared.scope, model) {
            (Scope::Outcome, Some(_)) => None,
            _ => tier.as_ref(),
        };
        let tier = shared.tier_label(requested, info);
        let series = shared.series(self.kind, &agent.name, &info.label, tier, Some(info));
        self.target = Target::Bound(series);
    }

    /// Records the time to the first chunk of a streamed response.
    pub(crate) fn first_chunk(&mut self) {
        let ttfc = self.start.elapsed();
        self.bind_model(None);
        if let Target::Bound(s) = &self.target {
            if let Some(t) = &s.tokens {
                t.time_to_first_chunk.record(ttfc.as_secs_f64());
            }
        }
    }

    /// Records the end of the call.
    pub(crate) fn finish(&mut self, failure: Option<FailureClass>, usage: Usage, detail: Option<String>) {
        if self.done {
            return;
        }
        self.done = true;
        trace::record_end(&self.span, failure, usage, self.kind == EventKind::Llm);
        let end = Instant::now();
        self.bind_model(None);
        let Target::Bound(series) = &self.target else {
            return;
        };
        let shared = &*self.shared;
        let scope = shared.scope;
        let agent = &*series.agent;
        let duration = end.saturating_duration_since(self.start);

        let mut cost = 0.0;
        let mut counterfactual = 0.0;
        if usage.total() > 0 && self.kind == EventKind::Llm {
            cost = series.pricing.cost(&usage);
            if let Some(top) = &shared.top_pricing {
                counterfactual = top.cost(&usage);
            }
        }
        if scope != Scope::Outcome {
            agent.in_flight(self.kind).decrement(1.0);
            let out = series.outcome(failure);
            out.duration.record(duration.as_secs_f64());
            out.calls.increment(1);
            if let Some(t) = &series.tokens {
                if usage.total() > 0 {
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
                    if let Some(g) = &agent.counterfactual {
                        g.increment(counterfactual);
                    }
                }
            }
        }

        let sample = Sample::new(failure, duration, usage, cost, counterfactual);
        let (secs, wall_ms) = shared.registry.clock(end);
        if scope != Scope::Attempt {
            let tier = series.tier.as_ref().map(Tier::as_str);
            agent.stats.record_in_tier(secs, end, &sample, tier);
        }
        if scope == Scope::Outcome {
            return;
        }
        series.stats.record(secs, end, &sample);

        if shared.journal || !shared.sinks.is_empty() {
            let event = HealthEvent {
                timestamp_ms: wall_ms,
                agent: agent.name.clone(),
                session: self.session.take().unwrap_or_default(),
                kind: self.kind,
                subject: series.subject.clone(),
                tier: series.tier.clone(),
                outcome: failure.map_or(Outcome::Success, Outcome::Failure),
                duration,
                usage,
                cost_usd: cost,
                detail,
                reason: None,
            };
            for sink in shared.sinks.iter() {
                sink.record(&event);
            }
            if shared.journal {
                shared.registry.journal(event);
            }
        }
        if self.sampled && failure != Some(FailureClass::Cancelled) {
            let overhead = self.pre_overhead + end.elapsed();
            shared.overhead().record(overhead.as_secs_f64());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Some(FailureClass::Cancelled), Usage::default(), None);
        }
    }
}
