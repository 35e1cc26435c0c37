//! Wiring: one small function per layer, each made from the
//! [`StackContext`] (as Helicone's `app.rs` makes each layer from
//! `app_state.clone()`). [`AgentStackBuilder::build`](super::AgentStackBuilder::build)
//! calls them in the order the data flows.

use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{ConfigError, LlmRequest, SessionId};
use mantissa_health::{Health, HealthLayer, Scope};
use mantissa_monitor::{
    HealthAlertReceiver, HealthToolkit, MonitorHandle, Rule, SystemMonitor, WebhookSink, toolkit,
};
use mantissa_reset::{BrittlenessPolicy, MemorySessionStore, Reset, ResetLayer, SessionSnapshot};
use mantissa_triage::{
    BoxTriage, CooldownPolicy, FeedbackLayer, FeedbackLog, FeedbackService, RuleTriage, SharedModelState,
    TierRouter, TriageControl, TriageLayer, Triaged,
};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use super::context::StackContext;
use super::tools::NoTools;
use super::upstream::Leaves;
use super::{BuildError, ToolService, Upstream};

/// The composed LLM stack, kept unboxed so each agent's service boxes once.
pub(super) type Composed = FeedbackService<Triaged<Reset<Health<TierRouter>, MemorySessionStore>, BoxTriage>>;

/// The monitor's settings, as the builder collected them.
#[derive(Default)]
pub(super) struct MonitorSettings {
    pub(super) rules: Vec<Rule>,
    pub(super) interval: Option<Duration>,
    pub(super) receivers: Vec<Arc<dyn HealthAlertReceiver>>,
    pub(super) webhook: Option<String>,
}

/// A running monitor and the handle that stops it with the stack.
pub(super) type Monitor = (SystemMonitor, MonitorHandle);

/// Health of every upstream attempt and every tool call: the registry, the
/// bounded labels, and every event to the application's sinks.
fn measured(ctx: &StackContext) -> HealthLayer {
    let health = HealthLayer::with_registry(ctx.registry.clone())
        .tiers(ctx.tiers.clone())
        .call_context(ctx.catalog.clone())
        .agent_labels(ctx.agent_labels.clone())
        .tools(ctx.tool_names.iter().cloned());
    ctx.sinks.iter().cloned().fold(health, |h, s| h.sink(s))
}

/// The router over every model's upstream, each measured per attempt.
pub(super) fn router(
    ctx: &StackContext,
    upstream: &Upstream,
    cooldown: CooldownPolicy,
    shared: Option<Arc<dyn SharedModelState>>,
) -> Result<TierRouter, BuildError> {
    let leaves = upstream.leaves().map_err(|source| BuildError::Upstream {
        model: "*".to_owned(),
        source,
    })?;
    let attempts = measured(ctx).scope(Scope::Attempt);
    let mut router = TierRouter::builder(ctx.tiers.clone())
        .catalog(ctx.catalog.clone())
        .cooldown(cooldown);
    if let Some(backend) = shared {
        router = router.shared_state(backend);
    }
    for spec in ctx.tiers.iter().flat_map(|tier| &tier.models) {
        let measured = attempts.clone().model(spec.clone());
        let id = spec.id.clone();
        // The router boxes each model's service; a built-in leaf goes in
        // unboxed (one box, not two, per attempt).
        router = match &leaves {
            Leaves::Mock(mock) => router.model(id, measured.layer(mock.clone())),
            #[cfg(feature = "openai")]
            Leaves::OpenAi(client) => {
                router.model(id, measured.layer(client.with_default_model(spec.id.clone())))
            }
            Leaves::Custom(factory) => {
                let leaf = factory(spec).map_err(|source| BuildError::Upstream {
                    model: spec.id.to_string(),
                    source,
                })?;
                router.model(id, measured.layer(leaf))
            }
        };
    }
    Ok(router.build()?)
}

/// Agent health is what the agent experienced: one final outcome per call,
/// recorded above the router (the per-model layers below it record each
/// attempt for the models).
pub(super) fn outcomes(ctx: &StackContext) -> HealthLayer {
    HealthLayer::with_registry(ctx.registry.clone())
        .tiers(ctx.tiers.clone())
        .call_context(ctx.catalog.clone())
        .agent_labels(ctx.agent_labels.clone())
        .scope(Scope::Outcome)
}

/// Triage with `strategy` (by default [`RuleTriage`] over the ladder).
pub(super) fn triage(ctx: &StackContext, strategy: Option<BoxTriage>) -> TriageLayer<BoxTriage> {
    let strategy = strategy.unwrap_or_else(|| BoxTriage::new(RuleTriage::new(&ctx.tiers)));
    TriageLayer::new(&ctx.tiers, strategy)
        .catalog(ctx.catalog.clone())
        .agent_labels(ctx.agent_labels.clone())
}

/// Feedback records for `log`, or a pass-through.
pub(super) fn feedback(log: Option<&FeedbackLog>) -> FeedbackLayer {
    match log {
        Some(log) => FeedbackLayer::new(log.clone()),
        None => FeedbackLayer::disabled(),
    }
}

/// Reset, inside triage: it knows the tier that will serve (its window) and
/// keeps the session's sticky tier with the session (`sticky`). Tracks
/// sessions in the store, reports warnings and resets to the registry and
/// sinks, and (with `summarize`) summarizes through the router on the lowest
/// tier.
pub(super) fn reset(
    ctx: &StackContext,
    router: &TierRouter,
    policy: BrittlenessPolicy,
    sticky: bool,
    summarize: bool,
) -> ResetLayer<MemorySessionStore> {
    let mut reset = ResetLayer::with_store(ctx.store.clone())
        .policy(policy)
        .catalog(ctx.catalog.clone())
        .agent_labels(ctx.agent_labels.clone())
        .event_sink(ctx.registry.clone());
    if !sticky {
        reset = reset.without_stickiness();
    }
    for sink in &ctx.sinks {
        reset = reset.event_sink(sink.clone());
    }
    if let (true, Some(low)) = (summarize, ctx.tiers.bottom()) {
        let low = low.name.clone();
        let summarizer = router.clone().map_request(move |mut req: LlmRequest| {
            req.tier = Some(low.clone());
            req
        });
        reset = reset.summarizer(summarizer);
    }
    reset
}

/// The tool stack: `tools` (or [`NoTools`]) measured like every tool call.
pub(super) fn tools(ctx: &StackContext, tools: Option<ToolService>) -> ToolService {
    let leaf = tools.unwrap_or_else(|| BoxCloneSyncService::new(NoTools));
    // Tool events also reach the session store (tool failures make a
    // session brittle); LLM attempts do not (the reset layer sees those
    // calls itself), so no event is built for them without other sinks.
    BoxCloneSyncService::new(measured(ctx).sink(ctx.store.clone()).layer(leaf))
}

/// The monitor, acting through the router, the session store and triage.
pub(super) fn monitor(
    ctx: &StackContext,
    router: &TierRouter,
    triage: &TriageControl,
    settings: Option<MonitorSettings>,
) -> Result<Option<Monitor>, BuildError> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let mut m = SystemMonitor::builder(ctx.registry.clone())
        .model_control(Arc::new(router.clone()))
        .session_control(Arc::new(ctx.store.clone()))
        .tier_control(Arc::new(triage.clone()));
    m = if settings.rules.is_empty() {
        m.default_rules()
    } else {
        m.rules(settings.rules)
    };
    if let Some(interval) = settings.interval {
        m = m.interval(interval);
    }
    for r in settings.receivers {
        m = m.shared_receiver(r);
    }
    if let Some(url) = settings.webhook {
        let sink = WebhookSink::builder(url)
            .build()
            .map_err(|e| ConfigError::new("monitor.webhook", e.to_string()))?;
        m = m.receiver(sink);
    }
    let monitor = m.build()?;
    let handle = monitor.spawn();
    Ok(Some((monitor, handle)))
}

/// The health toolkit over the registry, the session store and the monitor;
/// the manager's logged actions reach the same sinks as every call.
pub(super) fn toolkit(ctx: &StackContext, monitor: Option<&SystemMonitor>) -> HealthToolkit {
    let store = ctx.store.clone();
    let mut toolkit =
        HealthToolkit::new(ctx.registry.clone()).with_session_health(move |session: &SessionId| {
            store.snapshot(session, 20).map(|s| session_json(&s))
        });
    if let Some(m) = monitor {
        toolkit = toolkit.with_monitor(m.clone());
    }
    for sink in &ctx.sinks {
        toolkit = toolkit.shared_event_sink(sink.clone());
    }
    toolkit
}

/// The toolkit as a tool service, measured with the stack's agent labels
/// and the toolkit's tool names. Built once; each agent's service stamps it.
pub(super) fn health_tools(ctx: &StackContext, toolkit: &HealthToolkit) -> ToolService {
    let measured = HealthLayer::with_registry(ctx.registry.clone())
        .agent_labels(ctx.agent_labels.clone())
        .tools([
            toolkit::GET_AGENT_HEALTH_SUMMARY,
            toolkit::LIST_ACTIVE_ALERTS,
            toolkit::GET_SESSION_HEALTH,
            toolkit::LOG_AGENT_ACTION,
        ]);
    BoxCloneSyncService::new(measured.layer(toolkit.clone()))
}

/// The session tracker's view of a session, as the `get_session_health`
/// tool renders it.
fn session_json(s: &SessionSnapshot) -> serde_json::Value {
    let now = tokio::time::Instant::now();
    serde_json::json!({
        "turns": s.turns,
        "turns_since_reset": s.turns_since_reset,
        "llm_calls": s.llm_calls,
        "context_tokens": s.context_tokens,
        "consecutive_llm_errors": s.consecutive_llm_errors,
        "consecutive_tool_errors": s.consecutive_tool_errors,
        "recent_errors": s.recent_errors,
        "recent_calls": s.calls_seen,
        "latency_baseline_ms": s.latency_baseline_ms,
        "latency_recent_ms": s.latency_recent_ms,
        "resets": s.resets,
        "seconds_since_last_reset": s.last_reset.map(|t| now.saturating_duration_since(t).as_secs_f64()),
        "seconds_idle": now.saturating_duration_since(s.last_activity).as_secs_f64(),
        "brittleness": s.brittleness,
        "pending_reset": s.pending_reset,
        "remembered_reset": s.remembered_reset.map(|(t, st)| format!("{} / {}", t.as_str(), st.as_str())),
    })
}
