//! The health toolkit: the registry's health data and the monitor's alerts as
//! LLM-callable tools (the SystemHealthToolkit).
//!
//! [`HealthToolkit`] is a `tower::Service<ToolRequest, Response = ToolResponse>`,
//! so an agent calls it through the same measured tool stack as any other
//! tool (wrap it in a `HealthLayer`). [`HealthToolkit::tool_specs`] returns
//! the OpenAI function-calling schemas to offer the model:
//!
//! | tool | arguments | result |
//! |---|---|---|
//! | `get_agent_health_summary` | `agent?`, `window?` (`1m`/`15m`, default `1m`) | agents (and models, without `agent`) with score, calls, error rate, latency, streak, silence, burn rates, resets and active alerts; the latest logged agent actions |
//! | `list_active_alerts` | `severity?` (`info`/`warning`/`critical`: that severity or worse) | pending and firing alerts |
//! | `get_session_health` | `session` | what the session-health provider reports |
//! | `log_agent_action` | `agent`, `action`, `outcome`, `details?` | records the action as a health event (kind `agent_action`) in the registry's journal and the toolkit's event sinks, a bounded log and a `tracing` event |
//!
//! Results are JSON text. Invalid arguments (not an object, a missing or
//! unknown field, a wrong type, an unknown window or severity, an unknown
//! tool) give a `ToolResponse` with `is_error: true` naming the problem —
//! never a panic, never an `Err`.
//!
//! ```
//! use mantissa_core::{ToolRequest, EventKind, HealthEvent, Outcome};
//! use mantissa_health::HealthRegistry;
//! use mantissa_monitor::HealthToolkit;
//! use serde_json::json;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mantissa_core::BoxError> {
//! let registry = HealthRegistry::new();
//! registry.record_event(&HealthEvent::now(
//!     "trader".into(), "s1".into(), EventKind::Llm, "mock-small", Outcome::Success,
//!     std::time::Duration::from_millis(120),
//! ));
//! // Defaults: no monitor, no session provider, an action log of 256 entries.
//! let toolkit = HealthToolkit::new(registry);
//! assert_eq!(HealthToolkit::tool_specs().len(), 4);
//!
//! let req = ToolRequest::new("s9", "monitor", "call-1", "get_agent_health_summary", json!({"agent": "trader"}));
//! let resp = toolkit.clone().oneshot(req).await?;
//! assert!(!resp.is_error);
//! let body: serde_json::Value = serde_json::from_str(&resp.content)?;
//! assert_eq!(body["agent"]["calls"], 1);
//!
//! let bad = ToolRequest::new("s9", "monitor", "call-2", "get_agent_health_summary", json!({"window": "1y"}));
//! let resp = toolkit.oneshot(bad).await?;
//! assert!(resp.is_error);
//! assert!(resp.content.contains("window"));
//! # Ok(()) }
//! ```
//!
//! Customised, with a monitor, a session-health provider (the reset layer's
//! session store; a closure here), an event sink (for example the JSON Lines
//! sink the health layer writes to) and a smaller action log:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use mantissa_core::{EventKind, HealthEvent, SessionId};
//! use mantissa_health::HealthRegistry;
//! use mantissa_monitor::{HealthToolkit, SystemMonitor};
//! use serde_json::json;
//!
//! let registry = HealthRegistry::new();
//! let monitor = SystemMonitor::builder(registry.clone()).default_rules().build().unwrap();
//! let events = Arc::new(Mutex::new(Vec::<HealthEvent>::new()));
//! let toolkit = HealthToolkit::new(registry.clone())
//!     .with_monitor(monitor)
//!     .with_session_health(|s: &SessionId| (s.as_str() == "s1").then(|| json!({"turns": 12, "brittleness": 0.3})))
//!     .event_sink({ let e = events.clone(); move |ev: &HealthEvent| e.lock().unwrap().push(ev.clone()) })
//!     .action_log_capacity(16);
//! let r = toolkit.call("get_session_health", &json!({"session": "s1"}));
//! assert!(r.content.contains("brittleness"));
//! let r = toolkit.call("log_agent_action", &json!({"agent": "manager", "action": "cool_down", "outcome": "success"}));
//! assert!(!r.is_error);
//! assert_eq!(toolkit.action_log()[0].action, "cool_down");
//! // The same health event in the registry's journal and in the sink.
//! assert_eq!(registry.recent(1)[0].kind, EventKind::AgentAction);
//! assert_eq!(&*events.lock().unwrap()[0].subject, "cool_down");
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use mantissa_core::{
    AgentName, BoxError, EventKind, EventSink, FailureClass, HealthEvent, Outcome, SessionId, ToolRequest,
    ToolResponse, ToolSpec, unix_millis,
};
use mantissa_health::{HealthRegistry, SubjectHealth};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tower_service::Service;

use crate::alert::Alert;
use crate::monitor::SystemMonitor;
use crate::rule::{Severity, SubjectKind, Window};

/// Name of the agent health summary tool.
pub const GET_AGENT_HEALTH_SUMMARY: &str = "get_agent_health_summary";
/// Name of the active alerts tool.
pub const LIST_ACTIVE_ALERTS: &str = "list_active_alerts";
/// Name of the session health tool.
pub const GET_SESSION_HEALTH: &str = "get_session_health";
/// Name of the action logging tool.
pub const LOG_AGENT_ACTION: &str = "log_agent_action";
/// Default capacity of the action log.
pub const DEFAULT_ACTION_LOG_CAPACITY: usize = 256;
/// At most this many logged actions in a `get_agent_health_summary` answer.
pub const SUMMARY_ACTIONS: usize = 10;
/// Longest accepted string argument, in characters.
pub const MAX_ARGUMENT_CHARS: usize = 2000;

/// Reports the health of one session (the reset layer's session store knows
/// turns, context tokens, error streaks and brittleness). Closures
/// `Fn(&SessionId) -> Option<serde_json::Value>` implement it; `None` means
/// the session is unknown.
pub trait SessionHealthProvider: Send + Sync + 'static {
    /// The session's health as JSON, or `None` if unknown.
    fn session_health(&self, session: &SessionId) -> Option<Value>;
}

impl<F> SessionHealthProvider for F
where
    F: Fn(&SessionId) -> Option<Value> + Send + Sync + 'static,
{
    fn session_health(&self, session: &SessionId) -> Option<Value> {
        self(session)
    }
}

/// One entry of the action log (`log_agent_action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedAction {
    /// When, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The acting agent.
    pub agent: String,
    /// What it did.
    pub action: String,
    /// How it went.
    pub outcome: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

struct Inner {
    registry: HealthRegistry,
    monitor: Option<SystemMonitor>,
    sessions: Option<Arc<dyn SessionHealthProvider>>,
    sinks: Vec<Arc<dyn EventSink>>,
    log: Mutex<VecDeque<LoggedAction>>,
    log_capacity: usize,
}

/// The health toolkit service; see the [module docs](self).
#[derive(Clone)]
pub struct HealthToolkit {
    inner: Arc<Inner>,
}

impl fmt::Debug for HealthToolkit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthToolkit")
            .field("registry", &self.inner.registry)
            .field("monitor", &self.inner.monitor.is_some())
            .field("session_health", &self.inner.sessions.is_some())
            .field("event_sinks", &self.inner.sinks.len())
            .field("log_capacity", &self.inner.log_capacity)
            .finish()
    }
}

impl HealthToolkit {
    /// A toolkit over `registry`, with no monitor (so no alerts), no
    /// session-health provider, no extra event sink and an action log of 256
    /// entries.
    pub fn new(registry: HealthRegistry) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                monitor: None,
                sessions: None,
                sinks: Vec::new(),
                log: Mutex::new(VecDeque::new()),
                log_capacity: DEFAULT_ACTION_LOG_CAPACITY,
            }),
        }
    }

    fn edit(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                registry: shared.registry.clone(),
                monitor: shared.monitor.clone(),
                sessions: shared.sessions.clone(),
                sinks: shared.sinks.clone(),
                log: Mutex::new(shared.log.lock().clone()),
                log_capacity: shared.log_capacity,
            },
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Reads alerts from `monitor`. Defaults to none (`list_active_alerts`
    /// then answers with an error).
    pub fn with_monitor(self, monitor: SystemMonitor) -> Self {
        self.edit(|i| i.monitor = Some(monitor))
    }

    /// Answers `get_session_health` with `provider`. Defaults to none (the
    /// tool then answers with an error).
    pub fn with_session_health(self, provider: impl SessionHealthProvider) -> Self {
        self.edit(|i| i.sessions = Some(Arc::new(provider)))
    }

    /// Also hands the health events of `log_agent_action` to `sink` (the
    /// registry's journal always gets them), as the health layer hands it
    /// every call: give it the same sinks as the layer (for example its
    /// [`JsonLinesSink`](mantissa_health::JsonLinesSink)). Defaults to none.
    pub fn event_sink(self, sink: impl EventSink) -> Self {
        self.shared_event_sink(Arc::new(sink))
    }

    /// Like [`event_sink`](Self::event_sink), for a shared sink.
    pub fn shared_event_sink(self, sink: Arc<dyn EventSink>) -> Self {
        self.edit(|i| i.sinks.push(sink))
    }

    /// Keeps the latest `n` logged actions. Defaults to 256.
    pub fn action_log_capacity(self, n: usize) -> Self {
        self.edit(|i| i.log_capacity = n)
    }

    /// The logged actions, oldest first (each is also a health event of kind
    /// [`EventKind::AgentAction`] in the registry's journal and the sinks).
    pub fn action_log(&self) -> Vec<LoggedAction> {
        self.inner.log.lock().iter().cloned().collect()
    }

    /// The four tools' OpenAI function-calling specs.
    pub fn tool_specs() -> Vec<ToolSpec> {
        let s = |d: &str| json!({"type": "string", "description": d});
        vec![
            ToolSpec::function(
                GET_AGENT_HEALTH_SUMMARY,
                "Health of the agents (score 0..1, calls, error rate, latency, failure streak, silence, \
                 token and cost burn, context resets, active alerts) and the latest logged agent actions. \
                 Without `agent`, every agent and model.",
                json!({
                    "type": "object",
                    "properties": {
                        "agent": s("Only this agent."),
                        "window": {"type": "string", "enum": ["1m", "15m"], "description": "Rolling window. Defaults to 1m."},
                    },
                    "required": [],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::function(
                LIST_ACTIVE_ALERTS,
                "Pending and firing health alerts.",
                json!({
                    "type": "object",
                    "properties": {
                        "severity": {"type": "string", "enum": ["info", "warning", "critical"],
                                     "description": "Only alerts of this severity or worse."},
                    },
                    "required": [],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::function(
                GET_SESSION_HEALTH,
                "Health of one conversation session (turns, context size, error streak, brittleness).",
                json!({
                    "type": "object",
                    "properties": {"session": s("The session id.")},
                    "required": ["session"],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::function(
                LOG_AGENT_ACTION,
                "Record an action an agent took (for example a remediation) and how it went.",
                json!({
                    "type": "object",
                    "properties": {
                        "agent": s("The acting agent."),
                        "action": s("What it did."),
                        "outcome": s("How it went, for example success or failure."),
                        "details": s("Free text."),
                    },
                    "required": ["agent", "action", "outcome"],
                    "additionalProperties": false,
                }),
            ),
        ]
    }

    /// Runs tool `name` with `arguments` (a JSON object, `null` for none, or
    /// a string holding a JSON object).
    pub fn call(&self, name: &str, arguments: &Value) -> ToolResponse {
        self.call_in(None, name, arguments)
    }

    /// Runs a tool for `session` (the session of a `log_agent_action` event;
    /// none for [`call`](Self::call)).
    fn call_in(&self, session: Option<&SessionId>, name: &str, arguments: &Value) -> ToolResponse {
        let result = match name {
            GET_AGENT_HEALTH_SUMMARY => self.summary(arguments),
            LIST_ACTIVE_ALERTS => self.alerts(arguments),
            GET_SESSION_HEALTH => self.session(arguments),
            LOG_AGENT_ACTION => self.log(session, arguments),
            other => Err(format!(
                "unknown tool `{other}` (this toolkit offers {GET_AGENT_HEALTH_SUMMARY}, {LIST_ACTIVE_ALERTS}, \
                 {GET_SESSION_HEALTH}, {LOG_AGENT_ACTION})"
            )),
        };
        match result {
            Ok(v) => ToolResponse::ok(v.to_string()),
            Err(e) => ToolResponse::error(format!("{name}: {e}")),
        }
    }

    fn summary(&self, args: &Value) -> Result<Value, String> {
        let args = Args::parse(args, &["agent", "window"])?;
        let window = match args.opt_str("window")? {
            None => Window::OneMinute,
            Some(w) => {
                Window::parse(w).ok_or_else(|| format!("unknown window `{w}` (use \"1m\" or \"15m\")"))?
            }
        };
        let alerts = self.inner.monitor.as_ref().map(SystemMonitor::active_alerts);
        let alerts_of = |kind: SubjectKind, name: &str| -> Vec<Value> {
            alerts
                .iter()
                .flatten()
                .filter(|a| a.subject.kind == kind && a.subject.name == name)
                .map(|a| json!({"rule": a.rule, "severity": a.severity, "state": a.state, "summary": a.summary}))
                .collect()
        };
        let reg = &self.inner.registry;
        let agent = args.opt_str("agent")?;
        let actions = self.recent_actions(agent);
        match agent {
            Some(agent) => {
                let h = match reg.agent(agent) {
                    Some(h) => Some(h),
                    // An agent that only logged actions has no windows.
                    None if !actions.is_empty() => None,
                    None => {
                        let known = reg.agent_names();
                        return Err(if known.is_empty() {
                            format!("unknown agent `{agent}` (no agent has made a call yet)")
                        } else {
                            format!("unknown agent `{agent}` (known: {})", known.join(", "))
                        });
                    }
                };
                Ok(json!({
                    "window": window.as_str(),
                    "agent": h.map(|h| subject_json(&h, window, alerts_of(SubjectKind::Agent, agent))),
                    "recent_actions": actions,
                }))
            }
            None => {
                let snap = reg.snapshot();
                let list = |kind: SubjectKind,
                            m: &std::collections::BTreeMap<String, SubjectHealth>|
                 -> Vec<Value> {
                    m.values()
                        .map(|h| subject_json(h, window, alerts_of(kind, &h.name)))
                        .collect()
                };
                Ok(json!({
                    "window": window.as_str(),
                    "agents": list(SubjectKind::Agent, &snap.agents),
                    "models": list(SubjectKind::Model, &snap.models),
                    "recent_actions": actions,
                }))
            }
        }
    }

    fn alerts(&self, args: &Value) -> Result<Value, String> {
        let args = Args::parse(args, &["severity"])?;
        let min = match args.opt_str("severity")? {
            None => Severity::Info,
            Some(s) => Severity::parse(s).ok_or_else(|| {
                format!("unknown severity `{s}` (use \"info\", \"warning\" or \"critical\")")
            })?,
        };
        let monitor = self
            .inner
            .monitor
            .as_ref()
            .ok_or("alerts unavailable: no monitor is attached to this toolkit")?;
        let alerts: Vec<Alert> = monitor.alerts_at_least(min);
        Ok(json!({"count": alerts.len(), "alerts": alerts}))
    }

    fn session(&self, args: &Value) -> Result<Value, String> {
        let args = Args::parse(args, &["session"])?;
        let session = args.req_str("session")?;
        let provider = self
            .inner
            .sessions
            .as_ref()
            .ok_or("session health unavailable: no session-health provider is configured")?;
        let health = provider
            .session_health(&SessionId::new(session))
            .ok_or_else(|| format!("unknown session `{session}`"))?;
        Ok(json!({"session": session, "health": health}))
    }

    /// The latest logged actions in the registry's journal (of `agent`, if
    /// given), oldest first.
    fn recent_actions(&self, agent: Option<&str>) -> Vec<Value> {
        let mut actions: Vec<Value> = self
            .inner
            .registry
            .recent(usize::MAX)
            .iter()
            .rev()
            .filter(|e| e.kind == EventKind::AgentAction && agent.is_none_or(|a| e.agent.as_str() == a))
            .take(SUMMARY_ACTIONS)
            .map(|e| {
                json!({
                    "timestamp_ms": e.timestamp_ms,
                    "agent": e.agent.as_str(),
                    "action": &*e.subject,
                    "outcome": e.outcome.as_str(),
                    "detail": e.detail,
                })
            })
            .collect();
        actions.reverse();
        actions
    }

    fn log(&self, session: Option<&SessionId>, args: &Value) -> Result<Value, String> {
        let args = Args::parse(args, &["agent", "action", "outcome", "details"])?;
        let entry = LoggedAction {
            timestamp_ms: unix_millis(std::time::SystemTime::now()),
            agent: args.req_str("agent")?.to_owned(),
            action: args.req_str("action")?.to_owned(),
            outcome: args.req_str("outcome")?.to_owned(),
            details: args.opt_str("details")?.map(str::to_owned),
        };
        // The same record as every call: the registry's journal and the sinks.
        let mut event = HealthEvent::now(
            AgentName::new(&entry.agent),
            session.cloned().unwrap_or_else(|| SessionId::new("")),
            EventKind::AgentAction,
            entry.action.as_str(),
            action_outcome(&entry.outcome),
            std::time::Duration::ZERO,
        );
        event.timestamp_ms = entry.timestamp_ms;
        event.detail = Some(match &entry.details {
            Some(d) => format!("outcome: {}; {d}", entry.outcome),
            None => format!("outcome: {}", entry.outcome),
        });
        self.inner.registry.record_event(&event);
        for sink in &self.inner.sinks {
            sink.record(&event);
        }
        tracing::info!(
            target: "mantissa::agent_action",
            agent = %entry.agent,
            action = %entry.action,
            outcome = %entry.outcome,
            details = entry.details.as_deref().unwrap_or(""),
            "agent action"
        );
        let mut log = self.inner.log.lock();
        if self.inner.log_capacity > 0 {
            if log.len() >= self.inner.log_capacity {
                log.pop_front();
            }
            log.push_back(entry);
        }
        Ok(json!({"logged": true, "entries": log.len()}))
    }
}

/// The event outcome of an action's free-text outcome: a success when it
/// reads as one (`success`, `succeeded`, `ok`, `done`, any case), otherwise a
/// failure of class `other`. The text itself is kept in the event's detail.
fn action_outcome(outcome: &str) -> Outcome {
    let o = outcome.trim();
    if ["success", "succeeded", "successful", "ok", "done"]
        .iter()
        .any(|s| o.eq_ignore_ascii_case(s))
    {
        Outcome::Success
    } else {
        Outcome::Failure(FailureClass::Other)
    }
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |s| json!(round(s * 1000.0)))
}

fn subject_json(h: &SubjectHealth, window: Window, alerts: Vec<Value>) -> Value {
    let w = window.of(h);
    json!({
        "name": h.name,
        "score": round(h.score),
        "calls": w.calls,
        "failures": w.failures,
        "error_rate": round(w.error_rate),
        "errors": w.errors,
        "p50_ms": ms(w.p50_secs),
        "p95_ms": ms(w.p95_secs),
        "latency_baseline_ms": ms(h.latency_baseline_secs),
        "consecutive_failures": h.consecutive_failures,
        "last_failure": h.last_failure.map(|f| f.as_str()),
        "seconds_since_last_call": h.seconds_since_last_call.map(round),
        "tokens_per_minute": round(w.tokens_per_minute),
        "cost_usd_per_hour": round(w.cost_usd_per_hour),
        "context_resets": w.context_resets,
        "error_driven_resets": w.error_driven_resets,
        "active_alerts": alerts,
    })
}

/// Validated tool arguments.
struct Args {
    map: Map<String, Value>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Args {
    fn parse(v: &Value, allowed: &[&str]) -> Result<Self, String> {
        let map = match v {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            Value::String(s) if s.trim().is_empty() => Map::new(),
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => m,
                _ => return Err("arguments must be a JSON object, got a string".to_owned()),
            },
            other => {
                return Err(format!(
                    "arguments must be a JSON object, got {}",
                    type_name(other)
                ));
            }
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "unknown argument `{k}` (expected {})",
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            ));
        }
        Ok(Self { map })
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() > MAX_ARGUMENT_CHARS => Err(format!(
                "`{key}` is too long (at most {MAX_ARGUMENT_CHARS} characters)"
            )),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("`{key}` must be a string, got {}", type_name(other))),
        }
    }

    fn req_str(&self, key: &str) -> Result<&str, String> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(format!("`{key}` must not be empty")),
            None => Err(format!("missing required argument `{key}`")),
        }
    }
}

impl Service<ToolRequest> for HealthToolkit {
    type Response = ToolResponse;
    type Error = BoxError;
    type Future = Ready<Result<ToolResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        ready(Ok(self.call_in(Some(&req.session), &req.name, &req.arguments)))
    }
}
