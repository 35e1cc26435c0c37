//! [`AgentStack`]: health, triage, routing, reset and monitoring for a whole
//! team of agents, composed in the right order from a few lines of code or one
//! TOML file.
//!
//! ```text
//! LLM:   [agent + call context] -> [Feedback] -> Triage -> Reset -> Health (agent outcome)
//!          -> TierRouter -> [per model: Health (attempts) -> upstream]
//! tools: [agent stamp] -> Health -> tool service        (tool events -> session store)
//! ```
//!
//! One [`HealthRegistry`], one session store, one router (with its shared
//! cooldown memory) and one triage layer serve every agent; each agent gets its
//! own LLM and tool services ([`AgentStack::llm`], [`AgentStack::tools`]) that
//! stamp the agent's name (and pinned tier, if any) on each request.
//!
//! The upstream is always explicit: [`AgentStack::builder`] takes it, and
//! [`AgentStack::demo`] is the preset over the embedded mock LLM and the demo
//! tools. The stack installs no metrics recorder: the application installs
//! one (`PrometheusConfig::new().install()?`) and hands its handle to
//! [`AgentStackBuilder::exporter`].
//!
//! ## Defaults
//!
//! ```
//! use mantissa::{AgentStack, core::{LlmRequest, Message}};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mantissa::core::BoxError> {
//! // The demo preset: embedded mock LLM, tiers low/medium/high on
//! // mock-small/-medium/-large, rule triage, default reset policy and
//! // cooldowns, the demo tools; no recorder installed.
//! let stack = AgentStack::demo().build()?;
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
//! let stack = AgentStack::builder(Upstream::Mock(mock.clone()))
//!     .agent(AgentSpec::new("planner").role("plans the work").tier("high"))
//!     .agent(AgentSpec::new("clerk"))
//!     .tiers(TierSet::default())
//!     .reset_policy(BrittlenessPolicy::default().max_turns(Some(20)))
//!     .without_monitor()
//!     .build()?;
//! let reply = stack.llm("planner").oneshot(LlmRequest::new("s1", "planner", vec![Message::user("hi")])).await?;
//! assert_eq!(reply.model.as_str(), "mock-large"); // pinned to the high tier
//! assert_eq!(mock.calls("mock-large"), 1);
//! // No tool service was given: a tool call is an error that says so.
//! let call = mantissa::core::ToolRequest::new("s1", "clerk", "c1", "lookup", serde_json::json!({}));
//! let err = stack.tools("clerk").oneshot(call).await.unwrap_err();
//! assert!(err.is::<mantissa::ToolsNotConfigured>());
//! # Ok(()) }
//! ```
//!
//! ## Metrics
//!
//! ```no_run
//! use mantissa::{AgentStack, PrometheusConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mantissa::core::BoxError> {
//! // Once per process, by the application: the recorder and its handle.
//! let exporter = PrometheusConfig::new().install()?;
//! let stack = AgentStack::demo().exporter(exporter).build()?;
//! let server = stack.serve_metrics("127.0.0.1:9464".parse()?).await?;
//! # drop(server); Ok(()) }
//! ```

mod agent;
mod builder;
mod config;
mod context;
mod error;
mod tools;
mod upstream;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use mantissa_core::{AgentName, BoxError, LlmRequest, LlmResponse, TierSet, ToolRequest, ToolResponse};
use mantissa_health::HealthRegistry;
use mantissa_mock::{MockLlm, MockTools};
use mantissa_monitor::{Alert, HealthToolkit, SystemMonitor};
use mantissa_prometheus::{ExporterHandle, MetricsServer};
use mantissa_reset::MemorySessionStore;
use mantissa_triage::{CallId, FeedbackError, FeedbackLog, TierRouter, TriageControl};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

pub use agent::AgentSpec;
pub use builder::AgentStackBuilder;
pub use config::{MetricsConfig, StackConfig};
pub use error::BuildError;
pub use tools::ToolsNotConfigured;
pub use upstream::{ModelFactory, Upstream};

/// An agent's LLM service: the whole composed stack.
pub type LlmService = BoxCloneSyncService<LlmRequest, LlmResponse, BoxError>;
/// An agent's tool service, measured by the health layer.
pub type ToolService = BoxCloneSyncService<ToolRequest, ToolResponse, BoxError>;

/// What a stack holds: the shared context and the layers wired from it.
struct Inner {
    ctx: context::StackContext,
    upstream: Upstream,
    llm: wire::Composed,
    tools: ToolService,
    health_tools: ToolService,
    router: TierRouter,
    triage: TriageControl,
    feedback: Option<FeedbackLog>,
    toolkit: HealthToolkit,
    monitor: Option<wire::Monitor>,
}

/// A composed stack for a team of agents. Cheap to clone.
#[derive(Clone)]
pub struct AgentStack {
    inner: Arc<Inner>,
}

impl fmt::Debug for AgentStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ctx = &self.inner.ctx;
        f.debug_struct("AgentStack")
            .field("agents", &ctx.agents.keys().collect::<Vec<_>>())
            .field(
                "tiers",
                &ctx.tiers.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            )
            .field("upstream", &self.inner.upstream)
            .finish_non_exhaustive()
    }
}

impl AgentStack {
    /// A builder over `upstream`, every other setting at its default (see
    /// [`AgentStackBuilder`]).
    pub fn builder(upstream: Upstream) -> AgentStackBuilder {
        AgentStackBuilder::new(upstream)
    }

    /// The demo preset: a builder over a fresh embedded [`MockLlm`] with the
    /// demo tools ([`MockTools::demo`]: `get_market_price`, `assess_risk`,
    /// `place_order`). For examples, tests and trying things out.
    pub fn demo() -> AgentStackBuilder {
        AgentStackBuilder::new(Upstream::Mock(MockLlm::new())).tools(
            MockTools::demo(),
            MockTools::demo_specs().into_iter().map(|t| t.function.name),
        )
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

    /// A builder configured from TOML text (see [`StackConfig`]). The
    /// `[metrics]` section is the application's to act on
    /// ([`MetricsConfig::install`]): the builder installs nothing.
    pub fn from_toml(text: &str) -> Result<AgentStackBuilder, BuildError> {
        StackConfig::from_toml(text)?.into_builder()
    }

    /// The LLM service of `agent`: every request is stamped with the agent's
    /// name (and its pinned tier, if any) and its call context, then goes
    /// through triage, reset, the router and the per-model health layers.
    /// The agent's state (label index, pinned tier) is resolved here, once
    /// per service (linkerd's `NewService<T>`); per call only the session is
    /// hashed, once, into the request's call context.
    pub fn llm(&self, agent: impl Into<AgentName>) -> LlmService {
        let binding = self.inner.ctx.bind(agent.into());
        BoxCloneSyncService::new(self.inner.llm.clone().map_request(move |req| binding.llm(req)))
    }

    /// The tool service of `agent`, measured by the health layer; tool
    /// failures raise the session's brittleness.
    pub fn tools(&self, agent: impl Into<AgentName>) -> ToolService {
        let binding = self.inner.ctx.bind(agent.into());
        BoxCloneSyncService::new(self.inner.tools.clone().map_request(move |req| binding.tool(req)))
    }

    /// The health toolkit (`get_agent_health_summary`, …) as a tool service of
    /// `agent`, measured like any other tool (one measured service, built
    /// with the stack, shared by every agent).
    pub fn health_tools(&self, agent: impl Into<AgentName>) -> ToolService {
        let binding = self.inner.ctx.bind(agent.into());
        BoxCloneSyncService::new(
            self.inner
                .health_tools
                .clone()
                .map_request(move |req| binding.tool(req)),
        )
    }

    /// The configured agents.
    pub fn agents(&self) -> impl Iterator<Item = &AgentSpec> {
        self.inner.ctx.agents.values()
    }

    /// The tier ladder.
    pub fn tiers(&self) -> &TierSet {
        &self.inner.ctx.tiers
    }

    /// The health registry (rolling windows, scores, recent events).
    pub fn registry(&self) -> &HealthRegistry {
        &self.inner.ctx.registry
    }

    /// The session store of the reset layer.
    pub fn sessions(&self) -> &MemorySessionStore {
        &self.inner.ctx.store
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

    /// The Prometheus exporter handed to [`AgentStackBuilder::exporter`], if any.
    pub fn exporter(&self) -> Option<&ExporterHandle> {
        self.inner.ctx.exporter.as_ref()
    }

    /// The mock LLM's control, when the upstream is the embedded mock.
    pub fn mock(&self) -> Option<mantissa_mock::MockControl> {
        match &self.inner.upstream {
            Upstream::Mock(m) => Some(m.control()),
            _ => None,
        }
    }

    /// Serves `/metrics` on `addr` (use port 0 for any free port) from the
    /// exporter handed to [`AgentStackBuilder::exporter`]; an error if none was.
    pub async fn serve_metrics(&self, addr: SocketAddr) -> Result<MetricsServer, BoxError> {
        match &self.inner.ctx.exporter {
            Some(handle) => Ok(handle.serve_on(addr).await?),
            None => Err(
                "no metrics exporter: install one (`PrometheusConfig::new().install()`) and hand it to \
                         `AgentStackBuilder::exporter`"
                    .into(),
            ),
        }
    }
}
