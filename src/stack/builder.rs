//! [`AgentStackBuilder`]: the settings of a stack, then
//! [`build`](AgentStackBuilder::build), which wires it in the order the data
//! flows.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{BoxError, EventSink, TierSet, ToolRequest, ToolResponse};
use mantissa_monitor::{HealthAlertReceiver, Rule};
use mantissa_prometheus::ExporterHandle;
use mantissa_reset::{BrittlenessPolicy, MemorySessionStore};
use mantissa_triage::{BoxTriage, CooldownPolicy, FeedbackLog, SharedModelState, Triage};
use tower::util::BoxCloneSyncService;

use super::agent::AgentSpec;
use super::context::StackContext;
use super::wire::{self, MonitorSettings};
use super::{AgentStack, BuildError, Inner, ToolService, Upstream};

/// Builder of an [`AgentStack`]: [`AgentStack::builder`] with an explicit
/// upstream, or the [`AgentStack::demo`] preset. See the [module docs](super).
pub struct AgentStackBuilder {
    upstream: Upstream,
    agents: Vec<AgentSpec>,
    tiers: TierSet,
    tools: Option<(ToolService, Vec<String>)>,
    triage: Option<BoxTriage>,
    feedback: Option<FeedbackLog>,
    sticky: bool,
    cooldown: CooldownPolicy,
    reset_policy: BrittlenessPolicy,
    summarize_on_low_tier: bool,
    store: Option<MemorySessionStore>,
    shared_models: Option<Arc<dyn SharedModelState>>,
    #[cfg(feature = "redis")]
    redis: Option<mantissa_redis::RedisConfig>,
    exporter: Option<ExporterHandle>,
    sinks: Vec<Arc<dyn EventSink>>,
    monitor: Option<MonitorSettings>,
}

impl fmt::Debug for AgentStackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentStackBuilder")
            .field("upstream", &self.upstream)
            .field("agents", &self.agents)
            .field("tiers", &self.tiers)
            .field("exporter", &self.exporter)
            .finish_non_exhaustive()
    }
}

impl AgentStackBuilder {
    /// A builder over `upstream` with every other setting at its default.
    pub fn new(upstream: Upstream) -> Self {
        Self {
            upstream,
            agents: Vec::new(),
            tiers: TierSet::default(),
            tools: None,
            triage: None,
            feedback: None,
            sticky: true,
            cooldown: CooldownPolicy::default(),
            reset_policy: BrittlenessPolicy::default(),
            summarize_on_low_tier: true,
            store: None,
            shared_models: None,
            #[cfg(feature = "redis")]
            redis: None,
            exporter: None,
            sinks: Vec::new(),
            monitor: Some(MonitorSettings::default()),
        }
    }

    /// Adds an agent. With no agents configured any agent name is accepted and
    /// used as a label (the first 64 names seen, then `other`); with agents
    /// configured, other names are folded into `other` in metrics. Defaults
    /// to none.
    pub fn agent(mut self, agent: AgentSpec) -> Self {
        self.agents.push(agent);
        self
    }

    /// The tier ladder. Defaults to [`TierSet::default`] (the mock's models:
    /// set it with any other upstream).
    pub fn tiers(mut self, tiers: TierSet) -> Self {
        self.tiers = tiers;
        self
    }

    /// The tool service every agent calls; `names` bounds the tool label
    /// (others fold into `other`). Defaults to none: every tool call fails
    /// with [`ToolsNotConfigured`](super::ToolsNotConfigured).
    pub fn tools<S>(mut self, tools: S, names: impl IntoIterator<Item = impl Into<String>>) -> Self
    where
        S: tower::Service<ToolRequest, Response = ToolResponse, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let names = names.into_iter().map(Into::into).collect();
        self.tools = Some((BoxCloneSyncService::new(tools), names));
        self
    }

    /// The triage strategy. Defaults to [`RuleTriage`](mantissa_triage::RuleTriage)
    /// over the tiers.
    pub fn triage(mut self, triage: impl Triage) -> Self {
        self.triage = Some(BoxTriage::new(triage));
        self
    }

    /// Remembers triaged calls in `log` and puts a
    /// [`CallId`](mantissa_triage::CallId) into each response's extensions,
    /// so [`AgentStack::feedback`] can report how the call went. Defaults to
    /// none (feedback is disabled).
    pub fn feedback_log(mut self, log: FeedbackLog) -> Self {
        self.feedback = Some(log);
        self
    }

    /// Whether a session's tier may only rise (session stickiness). Defaults to `true`.
    pub fn sticky_tiers(mut self, sticky: bool) -> Self {
        self.sticky = sticky;
        self
    }

    /// Shares the router's cooldowns, re-admissions and half-open probe with
    /// other replicas through `backend` (for example
    /// `mantissa::redis::RedisModelState`; see [`redis`](Self::redis) for
    /// the one-line setup). Calls are still decided on this replica's state.
    /// Defaults to none: the state is this process's alone.
    pub fn shared_model_state(mut self, backend: Arc<dyn SharedModelState>) -> Self {
        self.shared_models = Some(backend);
        self
    }

    /// Runs this stack as one of several replicas sharing state through the
    /// Redis at `config`: session state (trackers, remembered resets, the
    /// sticky tier) and the router's model state (cooldowns, the half-open
    /// probe). Every call is still served from local state, with at most one
    /// Redis round trip (bounded by the config's timeout); when Redis is
    /// down the stack keeps serving alone, counts it, and resumes sharing
    /// when it is back. See `docs/operations.md`. The session store is built
    /// with the Redis backend: combining this with
    /// [`session_store`](Self::session_store) is an error (give that store
    /// `.shared(..)` yourself instead). Defaults to none.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, config: mantissa_redis::RedisConfig) -> Self {
        self.redis = Some(config);
        self
    }

    /// The router's cooldown policy. Defaults to [`CooldownPolicy::default`].
    pub fn cooldown(mut self, policy: CooldownPolicy) -> Self {
        self.cooldown = policy;
        self
    }

    /// The brittleness policy of the reset layer. Defaults to [`BrittlenessPolicy::default`].
    pub fn reset_policy(mut self, policy: BrittlenessPolicy) -> Self {
        self.reset_policy = policy;
        self
    }

    /// Whether the reset layer summarizes with the lowest tier (through the
    /// router). `false` trims instead. Defaults to `true`.
    pub fn summarize_on_low_tier(mut self, on: bool) -> Self {
        self.summarize_on_low_tier = on;
        self
    }

    /// The session store. Defaults to a [`MemorySessionStore`] with its defaults.
    pub fn session_store(mut self, store: MemorySessionStore) -> Self {
        self.store = Some(store);
        self
    }

    /// An extra sink for every health event (LLM and tool calls, warnings, resets,
    /// and the actions agents log through the toolkit's `log_agent_action`).
    /// Defaults to none.
    pub fn event_sink(mut self, sink: impl EventSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// The Prometheus exporter the application installed
    /// (`PrometheusConfig::new().install()?`), so that
    /// [`AgentStack::exporter`] and [`AgentStack::serve_metrics`] serve it.
    /// Defaults to none: the stack installs no recorder, and its metrics go
    /// to whatever recorder the application installed (or nowhere).
    pub fn exporter(mut self, exporter: ExporterHandle) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// Adds a monitor rule. Defaults to [`SystemMonitor`](mantissa_monitor::SystemMonitor)'s
    /// default rules when none is added.
    pub fn monitor_rule(mut self, rule: Rule) -> Self {
        self.monitor.get_or_insert_with(Default::default).rules.push(rule);
        self
    }

    /// Adds several monitor rules (for example `mantissa_monitor::default_rules()`
    /// plus your own).
    pub fn monitor_rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.monitor
            .get_or_insert_with(Default::default)
            .rules
            .extend(rules);
        self
    }

    /// The monitor's evaluation interval. Defaults to the monitor's default.
    pub fn monitor_interval(mut self, interval: Duration) -> Self {
        self.monitor.get_or_insert_with(Default::default).interval = Some(interval);
        self
    }

    /// Hands alerts to `receiver` (for example the manager agent's
    /// `receive_health_alert`). Defaults to none.
    pub fn alert_receiver(mut self, receiver: impl HealthAlertReceiver) -> Self {
        self.monitor
            .get_or_insert_with(Default::default)
            .receivers
            .push(Arc::new(receiver));
        self
    }

    /// Posts alerts to an Alertmanager-compatible webhook. Defaults to none.
    pub fn alert_webhook(mut self, url: impl Into<String>) -> Self {
        self.monitor.get_or_insert_with(Default::default).webhook = Some(url.into());
        self
    }

    /// Runs no monitor. Defaults to running one (with the default rules).
    pub fn without_monitor(mut self) -> Self {
        self.monitor = None;
        self
    }

    /// Builds the stack: the shared context first, then each layer from it,
    /// innermost first, and starts the monitor (which needs a tokio runtime).
    /// Installs nothing process-wide.
    pub fn build(self) -> Result<AgentStack, BuildError> {
        self.tiers.validate()?;
        if self.monitor.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let (tools, tool_names) = match self.tools {
            Some((service, names)) => (Some(service), names),
            None => (None, Vec::new()),
        };
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let (mut store, mut shared_models) = (self.store, self.shared_models);
        #[cfg(feature = "redis")]
        if let Some(config) = &self.redis {
            if store.is_some() {
                return Err(mantissa_core::ConfigError::new(
                    "redis",
                    "a stack sharing state through Redis builds its own session store; \
                     give the store set with `session_store` a shared backend instead",
                )
                .into());
            }
            let redis = |e: mantissa_redis::Error| mantissa_core::ConfigError::new("redis", e.to_string());
            let sessions = mantissa_redis::RedisSessions::new(config).map_err(redis)?;
            store = Some(MemorySessionStore::builder().shared(Arc::new(sessions)).build());
            if shared_models.is_none() {
                shared_models = Some(Arc::new(
                    mantissa_redis::RedisModelState::new(config).map_err(redis)?,
                ));
            }
        }
        let ctx = StackContext::new(
            self.tiers,
            self.agents,
            tool_names,
            store.unwrap_or_default(),
            self.sinks,
            self.exporter,
        );

        // LLM calls: [per model: health (attempts) -> upstream] <- router
        //   <- health (agent outcome) <- reset <- triage <- feedback.
        let router = wire::router(&ctx, &self.upstream, self.cooldown, shared_models)?;
        let triage = wire::triage(&ctx, self.triage);
        let control = triage.control();
        let reset = wire::reset(
            &ctx,
            &router,
            self.reset_policy,
            self.sticky,
            self.summarize_on_low_tier,
        );
        let llm = tower::ServiceBuilder::new()
            .layer(wire::feedback(self.feedback.as_ref()))
            .layer(triage)
            .layer(reset)
            .layer(wire::outcomes(&ctx))
            .service(router.clone());

        // Tool calls: health -> tool service (events -> session store).
        let tools = wire::tools(&ctx, tools);

        // The monitor acts on the router, the sessions and triage; the
        // toolkit reads the registry, the sessions and the monitor.
        let monitor = wire::monitor(&ctx, &router, &control, self.monitor)?;
        let toolkit = wire::toolkit(&ctx, monitor.as_ref().map(|(m, _)| m));
        let health_tools = wire::health_tools(&ctx, &toolkit);

        Ok(AgentStack {
            inner: Arc::new(Inner {
                ctx,
                upstream: self.upstream,
                llm,
                tools,
                health_tools,
                router,
                triage: control,
                feedback: self.feedback,
                toolkit,
                monitor,
            }),
        })
    }
}
