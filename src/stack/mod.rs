//! [`AgentStack`]: health, triage, routing, reset and monitoring for a whole
//! team of agents, composed in the right order from a few lines of code or one
//! TOML file.
//!
//! ```text
//! LLM:   [agent stamp] -> Reset -> [Feedback] -> Triage -> Health (agent outcome)
//!          -> TierRouter -> [per model: Health (attempts) -> upstream]
//! tools: [agent stamp] -> Health -> tool service        (tool events -> session store)
//! ```
//!
//! One [`HealthRegistry`], one session store, one router (with its shared
//! cooldown memory) and one triage layer serve every agent; each agent gets its
//! own LLM and tool services ([`AgentStack::llm`], [`AgentStack::tools`]) that
//! stamp the agent's name (and pinned tier, if any) on each request.
//!
//! ## Defaults
//!
//! ```
//! use mantissa::{AgentStack, core::{LlmRequest, Message}};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mantissa::core::BoxError> {
//! // Embedded mock LLM, tiers low/medium/high on mock-small/-medium/-large,
//! // rule triage, default reset policy and cooldowns, demo tools.
//! let stack = AgentStack::builder().without_metrics().build()?;
//! let reply = stack
//!     .llm("trader")
//!     .oneshot(LlmRequest::new("s1", "trader", vec![Message::user("hello")]))
//!     .await?;
//! assert_eq!(reply.model.as_str(), "mock-small"); // chit-chat goes to the low tier
//! assert_eq!(stack.registry().agent("trader").unwrap().last_1m.calls, 1);
//! # Ok(()) }
//! ```
//!
//! ## Customised
//!
//! ```
//! use mantissa::{AgentStack, AgentSpec, Upstream};
//! use mantissa::core::{LlmRequest, Message, TierSet};
//! use mantissa::mock::MockLlm;
//! use mantissa::reset::BrittlenessPolicy;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mantissa::core::BoxError> {
//! let mock = MockLlm::new();
//! let stack = AgentStack::builder()
//!     .agent(AgentSpec::new("planner").role("plans the work").tier("high"))
//!     .agent(AgentSpec::new("clerk"))
//!     .tiers(TierSet::default())
//!     .upstream(Upstream::Mock(mock.clone()))
//!     .reset_policy(BrittlenessPolicy::default().max_turns(Some(20)))
//!     .without_metrics()
//!     .build()?;
//! let reply = stack.llm("planner").oneshot(LlmRequest::new("s1", "planner", vec![Message::user("hi")])).await?;
//! assert_eq!(reply.model.as_str(), "mock-large"); // pinned to the high tier
//! assert_eq!(mock.calls("mock-large"), 1);
//! # Ok(()) }
//! ```

mod config;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use mantissa_core::{
    AgentName, BoundedLabels, BoxError, ConfigError, EventSink, LlmRequest, LlmResponse, ModelSpec, Tier,
    TierSet, ToolRequest, ToolResponse,
};
use mantissa_health::{HealthLayer, HealthRegistry, Scope};
use mantissa_mock::{MockLlm, MockTools};
use mantissa_monitor::{
    Alert, HealthAlertReceiver, HealthToolkit, MonitorHandle, Rule, SystemMonitor, WebhookSink, toolkit,
};
use mantissa_prometheus::{ExporterHandle, MetricsServer, PrometheusConfig};
use mantissa_reset::{BrittlenessPolicy, MemorySessionStore, ResetLayer};
use mantissa_triage::{
    BoxTriage, CallId, CooldownPolicy, FeedbackError, FeedbackLayer, FeedbackLog, RuleTriage, TierRouter,
    Triage, TriageControl, TriageLayer,
};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};

pub use config::StackConfig;

/// An agent's LLM service: the whole composed stack.
pub type LlmService = BoxCloneSyncService<LlmRequest, LlmResponse, BoxError>;
/// An agent's tool service, measured by the health layer.
pub type ToolService = BoxCloneSyncService<ToolRequest, ToolResponse, BoxError>;

/// Builds the leaf service of one model.
pub type ModelFactory = Arc<dyn Fn(&ModelSpec) -> Result<LlmService, BoxError> + Send + Sync>;

/// One agent of the team.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentSpec {
    /// The agent's name (a bounded metric label).
    pub name: AgentName,
    /// What the agent does (documentation; the examples put it in the system prompt).
    #[serde(default)]
    pub role: String,
    /// A tier the agent is pinned to. `None` (the default): triage decides per request.
    #[serde(default)]
    pub tier: Option<Tier>,
}

impl AgentSpec {
    /// An agent triaged per request.
    pub fn new(name: impl Into<AgentName>) -> Self {
        Self {
            name: name.into(),
            role: String::new(),
            tier: None,
        }
    }

    /// Sets the role description.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// Pins the agent to a tier (its requests skip triage).
    pub fn tier(mut self, tier: impl Into<Tier>) -> Self {
        self.tier = Some(tier.into());
        self
    }
}

/// Where the models live.
#[derive(Clone)]
pub enum Upstream {
    /// The embedded, scriptable mock LLM (the default).
    Mock(MockLlm),
    /// An OpenAI-compatible chat-completions server.
    #[cfg(feature = "openai")]
    OpenAi(Box<mantissa_openai::OpenAiConfig>),
    /// Any service per model.
    Custom(ModelFactory),
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Mock(_) => f.write_str("Upstream::Mock"),
            #[cfg(feature = "openai")]
            Upstream::OpenAi(c) => f.debug_tuple("Upstream::OpenAi").field(c).finish(),
            Upstream::Custom(_) => f.write_str("Upstream::Custom"),
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::Mock(MockLlm::new())
    }
}

impl Upstream {
    /// Turns the upstream into a per-model factory. An OpenAI-compatible
    /// upstream builds one client (one connection pool) shared by every model.
    fn into_factory(self) -> Result<ModelFactory, BoxError> {
        Ok(match self {
            Upstream::Mock(mock) => {
                Arc::new(move |_spec: &ModelSpec| Ok(BoxCloneSyncService::new(mock.clone())))
            }
            #[cfg(feature = "openai")]
            Upstream::OpenAi(config) => {
                let base = mantissa_openai::OpenAiClient::new(*config)?;
                Arc::new(move |spec: &ModelSpec| {
                    Ok(BoxCloneSyncService::new(base.with_default_model(spec.id.clone())))
                })
            }
            Upstream::Custom(factory) => factory,
        })
    }
}

/// Why an [`AgentStack`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration value is wrong (names the field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The router could not be built.
    #[error("router: {0}")]
    Router(#[from] mantissa_triage::RouterBuildError),
    /// The upstream service of a model could not be built.
    #[error("upstream for model `{model}`: {source}")]
    Upstream {
        /// The model.
        model: String,
        /// Why.
        source: BoxError,
    },
    /// The monitor needs a tokio runtime to run its background task.
    #[error("the monitor needs a tokio runtime: build the stack inside one, or call `without_monitor`")]
    NoRuntime,
    /// The configuration file could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How the stack exports metrics.
#[derive(Debug, Clone)]
enum MetricsMode {
    /// Install mantissa's Prometheus recorder once per process (default).
    Install(PrometheusConfig),
    /// Use whatever recorder is installed (or none).
    External,
}

/// The composed LLM stack, kept unboxed so each agent's service boxes once.
type Composed = mantissa_reset::Reset<
    mantissa_triage::FeedbackService<
        mantissa_triage::Triaged<mantissa_health::Health<TierRouter>, BoxTriage>,
    >,
    MemorySessionStore,
>;

/// Builder of an [`AgentStack`]. See the [module docs](self).
pub struct AgentStackBuilder {
    agents: Vec<AgentSpec>,
    tiers: TierSet,
    upstream: Upstream,
    tools: Option<ToolService>,
    tool_names: Option<Vec<String>>,
    triage: Option<BoxTriage>,
    feedback: Option<FeedbackLog>,
    sticky: bool,
    cooldown: CooldownPolicy,
    reset_policy: BrittlenessPolicy,
    summarize_on_low_tier: bool,
    store: Option<MemorySessionStore>,
    metrics: MetricsMode,
    sinks: Vec<Arc<dyn EventSink>>,
    monitor: Option<MonitorSettings>,
}

#[derive(Default)]
struct MonitorSettings {
    rules: Vec<Rule>,
    interval: Option<std::time::Duration>,
    receivers: Vec<Arc<dyn HealthAlertReceiver>>,
    webhook: Option<String>,
}

impl fmt::Debug for AgentStackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentStackBuilder")
            .field("agents", &self.agents)
            .field("tiers", &self.tiers)
            .field("upstream", &self.upstream)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Default for AgentStackBuilder {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            tiers: TierSet::default(),
            upstream: Upstream::default(),
            tools: None,
            tool_names: None,
            triage: None,
            feedback: None,
            sticky: true,
            cooldown: CooldownPolicy::default(),
            reset_policy: BrittlenessPolicy::default(),
            summarize_on_low_tier: true,
            store: None,
            metrics: MetricsMode::Install(PrometheusConfig::new()),
            sinks: Vec::new(),
            monitor: Some(MonitorSettings::default()),
        }
    }
}

impl AgentStackBuilder {
    /// Adds an agent. With no agents configured any agent name is accepted and
    /// used as a label as is; with agents configured, other names are folded
    /// into `other` in metrics. Defaults to none.
    pub fn agent(mut self, agent: AgentSpec) -> Self {
        self.agents.push(agent);
        self
    }

    /// The tier ladder. Defaults to [`TierSet::default`] (mock models).
    pub fn tiers(mut self, tiers: TierSet) -> Self {
        self.tiers = tiers;
        self
    }

    /// Where the models live. Defaults to a fresh [`MockLlm`].
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = upstream;
        self
    }

    /// The tool service every agent calls. Defaults to [`MockTools::demo`].
    /// `names` bounds the tool label (others fold into `other`).
    pub fn tools<S>(mut self, tools: S, names: impl IntoIterator<Item = impl Into<String>>) -> Self
    where
        S: tower::Service<ToolRequest, Response = ToolResponse, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.tools = Some(BoxCloneSyncService::new(tools));
        self.tool_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The triage strategy. Defaults to [`RuleTriage`] over the tiers.
    pub fn triage(mut self, triage: impl Triage) -> Self {
        self.triage = Some(BoxTriage::new(triage));
        self
    }

    /// Remembers triaged calls in `log` and puts a [`CallId`] into each
    /// response's extensions, so [`AgentStack::feedback`] can report how the
    /// call went. Defaults to none (feedback is disabled).
    pub fn feedback_log(mut self, log: FeedbackLog) -> Self {
        self.feedback = Some(log);
        self
    }

    /// Whether a session's tier may only rise (session stickiness). Defaults to `true`.
    pub fn sticky_tiers(mut self, sticky: bool) -> Self {
        self.sticky = sticky;
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
    pub fn event_sink(mut self, sink: impl EventSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Prometheus exporter settings (installed once per process). Defaults to
    /// [`PrometheusConfig::new`].
    pub fn metrics(mut self, config: PrometheusConfig) -> Self {
        self.metrics = MetricsMode::Install(config);
        self
    }

    /// Installs no recorder: metrics go to whatever recorder the application installed.
    pub fn without_metrics(mut self) -> Self {
        self.metrics = MetricsMode::External;
        self
    }

    /// Adds a monitor rule. Defaults to [`SystemMonitor`]'s default rules when none is added.
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
    pub fn monitor_interval(mut self, interval: std::time::Duration) -> Self {
        self.monitor.get_or_insert_with(Default::default).interval = Some(interval);
        self
    }

    /// Hands alerts to `receiver` (for example the manager agent's
    /// `receive_health_alert`).
    pub fn alert_receiver(mut self, receiver: impl HealthAlertReceiver) -> Self {
        self.monitor
            .get_or_insert_with(Default::default)
            .receivers
            .push(Arc::new(receiver));
        self
    }

    /// Posts alerts to an Alertmanager-compatible webhook.
    pub fn alert_webhook(mut self, url: impl Into<String>) -> Self {
        self.monitor.get_or_insert_with(Default::default).webhook = Some(url.into());
        self
    }

    /// Runs no monitor.
    pub fn without_monitor(mut self) -> Self {
        self.monitor = None;
        self
    }

    /// Builds the stack. Starts the monitor (which needs a tokio runtime) and
    /// installs the metrics recorder unless disabled.
    pub fn build(self) -> Result<AgentStack, BuildError> {
        self.tiers.validate()?;
        let has_runtime = tokio::runtime::Handle::try_current().is_ok();
        if self.monitor.is_some() && !has_runtime {
            return Err(BuildError::NoRuntime);
        }
        let exporter = match &self.metrics {
            MetricsMode::Install(config) => install_once(config.clone(), has_runtime),
            MetricsMode::External => None,
        };

        let registry = HealthRegistry::new();
        let store = self.store.clone().unwrap_or_default();
        let agent_names: Vec<AgentName> = self.agents.iter().map(|a| a.name.clone()).collect();

        // Health: one configuration for LLM and tool calls; every event also
        // reaches the session store (tool failures make a session brittle)
        // and the user's sinks.
        // One rule bounds the agent label of every metric family: the
        // configured agents (others are `other`), or the first names seen.
        let agent_labels = if agent_names.is_empty() {
            BoundedLabels::default()
        } else {
            BoundedLabels::new(agent_names.iter().map(AgentName::as_str))
        };
        let health = HealthLayer::with_tiers(self.tiers.clone())
            .registry(registry.clone())
            .agent_labels(agent_labels.clone())
            .sink(store.clone());
        let tool_names = match (&self.tools, &self.tool_names) {
            (Some(_), Some(names)) => names.clone(),
            _ => MockTools::demo_specs()
                .into_iter()
                .map(|t| t.function.name)
                .collect(),
        };
        let health = health.tools(tool_names);
        let health = self.sinks.iter().cloned().fold(health, |h, s| h.sink(s));

        // Router over per-model health-measured upstreams.
        let factory = self
            .upstream
            .clone()
            .into_factory()
            .map_err(|source| BuildError::Upstream {
                model: "*".to_owned(),
                source,
            })?;
        let mut router = TierRouter::builder(self.tiers.clone()).cooldown(self.cooldown);
        for tier in self.tiers.iter() {
            for spec in &tier.models {
                let leaf = factory(spec).map_err(|source| BuildError::Upstream {
                    model: spec.id.to_string(),
                    source,
                })?;
                let attempts = health.clone().scope(Scope::Attempt).model(spec.clone());
                router = router.model(spec.id.clone(), attempts.layer(leaf));
            }
        }
        let router = router.build()?;

        // Triage.
        let triage = match &self.triage {
            Some(t) => t.clone(),
            None => BoxTriage::new(RuleTriage::new(&self.tiers)),
        };
        let mut triage_layer = TriageLayer::new(&self.tiers, triage).agent_labels(agent_labels.clone());
        if !self.sticky {
            triage_layer = triage_layer.without_stickiness();
        }
        let triage_control = triage_layer.control();

        // Reset, outermost: reports warnings and resets to the registry and sinks.
        let mut reset = ResetLayer::with_store(store.clone())
            .policy(self.reset_policy.clone())
            .tiers(&self.tiers)
            .agent_labels(agent_labels.clone())
            .event_sink(registry.clone());
        for sink in &self.sinks {
            reset = reset.event_sink(sink.clone());
        }
        if self.summarize_on_low_tier {
            if let Some(low) = self.tiers.bottom() {
                let low = low.name.clone();
                let summarizer = router.clone().map_request(move |mut req: LlmRequest| {
                    req.tier = Some(low.clone());
                    req
                });
                reset = reset.summarizer(summarizer);
            }
        }

        // Agent health is what the agent experienced: one final outcome per
        // call, recorded above the router (the per-model layers below it
        // record each attempt for the models).
        let outcomes = HealthLayer::with_tiers(self.tiers.clone())
            .registry(registry.clone())
            .agent_labels(agent_labels.clone())
            .scope(Scope::Outcome);
        let feedback_layer = match &self.feedback {
            Some(log) => FeedbackLayer::new(log.clone()),
            None => FeedbackLayer::disabled(),
        };
        let llm: Composed = ServiceBuilder::new()
            .layer(reset)
            .layer(feedback_layer)
            .layer(triage_layer)
            .layer(outcomes)
            .service(router.clone());
        let tools_leaf = self
            .tools
            .clone()
            .unwrap_or_else(|| BoxCloneSyncService::new(MockTools::demo()));
        let tools: ToolService = BoxCloneSyncService::new(health.layer(tools_leaf));

        // Monitor (acting through the router, the session store and triage) and toolkit.
        let monitor = match self.monitor {
            Some(settings) => {
                let mut m = SystemMonitor::builder(registry.clone())
                    .model_control(Arc::new(router.clone()))
                    .session_control(Arc::new(store.clone()))
                    .tier_control(Arc::new(triage_control.clone()));
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
                Some((monitor, handle))
            }
            None => None,
        };
        let session_store = store.clone();
        let mut toolkit = HealthToolkit::new(registry.clone()).with_session_health(
            move |session: &mantissa_core::SessionId| {
                session_store.snapshot(session, 20).map(|s| session_json(&s))
            },
        );
        if let Some((m, _)) = &monitor {
            toolkit = toolkit.with_monitor(m.clone());
        }
        // The manager's logged actions reach the same sinks as every call.
        for sink in &self.sinks {
            toolkit = toolkit.shared_event_sink(sink.clone());
        }

        Ok(AgentStack {
            inner: Arc::new(Inner {
                agents: self.agents.into_iter().map(|a| (a.name.clone(), a)).collect(),
                tiers: self.tiers,
                llm,
                tools,
                registry,
                store,
                router,
                triage: triage_control,
                feedback: self.feedback,
                toolkit,
                monitor,
                exporter,
                upstream: self.upstream,
                agent_labels,
            }),
        })
    }
}

/// The session tracker's view of a session, for the `get_session_health` tool.
fn session_json(s: &mantissa_reset::SessionSnapshot) -> serde_json::Value {
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

static EXPORTER: OnceLock<Option<ExporterHandle>> = OnceLock::new();

/// Installs mantissa's recorder the first time; later stacks share it. If
/// another recorder is already installed, metrics go there and no handle is kept.
fn install_once(config: PrometheusConfig, has_runtime: bool) -> Option<ExporterHandle> {
    EXPORTER
        .get_or_init(|| {
            let config = if has_runtime { config } else { config.without_upkeep() };
            match config.install() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "mantissa: metrics recorder not installed; using the existing one");
                    None
                }
            }
        })
        .clone()
}

struct Inner {
    agents: BTreeMap<AgentName, AgentSpec>,
    tiers: TierSet,
    llm: Composed,
    tools: ToolService,
    registry: HealthRegistry,
    store: MemorySessionStore,
    router: TierRouter,
    triage: TriageControl,
    feedback: Option<FeedbackLog>,
    toolkit: HealthToolkit,
    monitor: Option<(SystemMonitor, MonitorHandle)>,
    exporter: Option<ExporterHandle>,
    upstream: Upstream,
    agent_labels: BoundedLabels,
}

/// A composed stack for a team of agents. Cheap to clone.
#[derive(Clone)]
pub struct AgentStack {
    inner: Arc<Inner>,
}

impl fmt::Debug for AgentStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentStack")
            .field("agents", &self.inner.agents.keys().collect::<Vec<_>>())
            .field(
                "tiers",
                &self
                    .inner
                    .tiers
                    .iter()
                    .map(|t| t.name.clone())
                    .collect::<Vec<_>>(),
            )
            .field("upstream", &self.inner.upstream)
            .finish_non_exhaustive()
    }
}

impl AgentStack {
    /// A builder with every default.
    pub fn builder() -> AgentStackBuilder {
        AgentStackBuilder::default()
    }

    /// A builder configured from a TOML file (see [`StackConfig`]).
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<AgentStackBuilder, BuildError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| BuildError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// A builder configured from TOML text (see [`StackConfig`]).
    pub fn from_toml(text: &str) -> Result<AgentStackBuilder, BuildError> {
        StackConfig::from_toml(text)?.into_builder()
    }

    /// The LLM service of `agent`: every request is stamped with the agent's
    /// name (and its pinned tier, if any), then goes through reset, triage,
    /// the router and the per-model health layers.
    pub fn llm(&self, agent: impl Into<AgentName>) -> LlmService {
        let agent = agent.into();
        let tier = self.inner.agents.get(&agent).and_then(|a| a.tier.clone());
        BoxCloneSyncService::new(self.inner.llm.clone().map_request(move |mut req: LlmRequest| {
            req.agent = agent.clone();
            if req.tier.is_none() && req.model.is_none() {
                req.tier = tier.clone();
            }
            req
        }))
    }

    /// The tool service of `agent`, measured by the health layer; tool
    /// failures raise the session's brittleness.
    pub fn tools(&self, agent: impl Into<AgentName>) -> ToolService {
        let agent = agent.into();
        BoxCloneSyncService::new(self.inner.tools.clone().map_request(move |mut req: ToolRequest| {
            req.agent = agent.clone();
            req
        }))
    }

    /// The health toolkit (`get_agent_health_summary`, …) as a tool service of
    /// `agent`, measured like any other tool.
    pub fn health_tools(&self, agent: impl Into<AgentName>) -> ToolService {
        let agent = agent.into();
        let svc = HealthLayer::new()
            .registry(self.inner.registry.clone())
            .agent_labels(self.inner.agent_labels.clone())
            .tools([
                toolkit::GET_AGENT_HEALTH_SUMMARY,
                toolkit::LIST_ACTIVE_ALERTS,
                toolkit::GET_SESSION_HEALTH,
                toolkit::LOG_AGENT_ACTION,
            ])
            .layer(self.inner.toolkit.clone());
        BoxCloneSyncService::new(svc.map_request(move |mut req: ToolRequest| {
            req.agent = agent.clone();
            req
        }))
    }

    /// The configured agents.
    pub fn agents(&self) -> impl Iterator<Item = &AgentSpec> {
        self.inner.agents.values()
    }

    /// The tier ladder.
    pub fn tiers(&self) -> &TierSet {
        &self.inner.tiers
    }

    /// The health registry (rolling windows, scores, recent events).
    pub fn registry(&self) -> &HealthRegistry {
        &self.inner.registry
    }

    /// The session store of the reset layer.
    pub fn sessions(&self) -> &MemorySessionStore {
        &self.inner.store
    }

    /// The router (model states, cooldown control).
    pub fn router(&self) -> &TierRouter {
        &self.inner.router
    }

    /// The triage control (per-agent tier overrides).
    pub fn triage(&self) -> &TriageControl {
        &self.inner.triage
    }

    /// Reports how a call went: `score` in `[0, 1]` (1 = good) for the call
    /// whose response carried `call` in its extensions. Writes the outcome
    /// line to the feedback log (and feeds the online learner, if any). An
    /// unknown id, a score outside `[0, 1]` or a stack without a feedback
    /// log is an error.
    pub fn feedback(&self, call: CallId, score: f64) -> Result<(), FeedbackError> {
        match &self.inner.feedback {
            Some(log) => log.feedback(call, score).map(|_| ()),
            None => Err(FeedbackError::Disabled),
        }
    }

    /// The feedback log, if configured.
    pub fn feedback_log(&self) -> Option<&FeedbackLog> {
        self.inner.feedback.as_ref()
    }

    /// The health toolkit.
    pub fn toolkit(&self) -> &HealthToolkit {
        &self.inner.toolkit
    }

    /// Alerts currently pending or firing, if the monitor runs.
    pub fn active_alerts(&self) -> Vec<Alert> {
        self.inner
            .monitor
            .as_ref()
            .map(|(m, _)| m.active_alerts())
            .unwrap_or_default()
    }

    /// The monitor, if it runs (its background task runs until the stack is dropped).
    pub fn monitor(&self) -> Option<&SystemMonitor> {
        self.inner.monitor.as_ref().map(|(m, _)| m)
    }

    /// The Prometheus exporter, if mantissa installed it.
    pub fn exporter(&self) -> Option<&ExporterHandle> {
        self.inner.exporter.as_ref()
    }

    /// The mock LLM's control, when the upstream is the embedded mock.
    pub fn mock(&self) -> Option<mantissa_mock::MockControl> {
        match &self.inner.upstream {
            Upstream::Mock(m) => Some(m.control()),
            _ => None,
        }
    }

    /// Serves `/metrics` on `addr` (use port 0 for any free port).
    pub async fn serve_metrics(&self, addr: SocketAddr) -> Result<MetricsServer, BoxError> {
        match &self.inner.exporter {
            Some(handle) => Ok(handle.serve_on(addr).await?),
            None => Err("mantissa's metrics recorder is not installed in this process".into()),
        }
    }
}
