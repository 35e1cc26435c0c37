//! # mantissa-monitor
//!
//! The SystemMonitor and the health toolkit.
//!
//! - [`SystemMonitor`] evaluates alert [rules](rule) against snapshots of a
//!   [`HealthRegistry`](mantissa_health::HealthRegistry) — on a background
//!   task ([`SystemMonitor::spawn`], every 15 s by default) or when driven
//!   ([`SystemMonitor::tick`], [`SystemMonitor::evaluate`]) — runs each
//!   alert's lifecycle, executes rule actions through the
//!   [`mantissa_core::control`] traits, and notifies [sinks](sink).
//! - [`HealthToolkit`] offers the same data to an LLM agent as tools
//!   (`get_agent_health_summary`, `list_active_alerts`, `get_session_health`,
//!   `log_agent_action`), as a `tower::Service<ToolRequest>`.
//!
//! ## Rules
//!
//! A [`Rule`] has a name, a [`Severity`], a [`Selector`] (agents, models or
//! tools, optionally by name pattern), a [`Condition`], a `for` duration, a
//! hysteresis margin, a `keep_firing_for` duration, labels and an optional
//! [`Action`]. Conditions: error rate over a window (with a minimum call
//! volume), consecutive failures, p95 latency above a bound or above k× the
//! subject's own baseline (drift), token or cost burn rate, silence, health
//! score below a threshold, and a spike of error-driven context resets. Rules are serde
//! data: build them in code or load a [`RuleSet`] from TOML (see [`rule`]).
//!
//! ## Lifecycle
//!
//! As in Prometheus, per `(rule, subject)` — at most one alert per pair:
//!
//! ```text
//!            condition met                 held for `for`
//! (inactive) ─────────────▶ pending ────────────────────────▶ firing
//!     ▲                        │ condition not met                │ value past threshold × (1 − margin)
//!     ├────────── lapsed ◀─────┘                                  │ for `keep_firing_for`
//!     ▲                                                            ▼
//!     └───────────────────────────────────────────────────────── resolved
//! ```
//!
//! A rule with `for = 0` fires on the first evaluation that sees the
//! condition. A firing alert resolves only when the value is back past the
//! hysteresis bound (or the subject has no verdict any more, for example too
//! few calls in the window) and stays there for `keep_firing_for`, so a value
//! hovering at the threshold does not flap; its summary describes the value at
//! resolution (or that there was no verdict). A pending alert whose condition
//! stops holding before `for` lapses: the timeline gets a closing `lapsed`
//! entry (receivers never heard of it). Lifecycle timing uses
//! [`tokio::time::Instant`] (paused-time tests work); the timestamps in
//! [`Alert`] are wall-clock milliseconds from the registry's clock.
//!
//! Receivers get firing and resolved alerts (Alertmanager semantics), and
//! after every evaluation the alerts still firing (the [`WebhookSink`]
//! re-sends them so that Alertmanager keeps them active); pending and lapsed
//! alerts are visible in [`SystemMonitor::active_alerts`] and the
//! [timeline](SystemMonitor::timeline). Every transition counts in
//! `mantissa_alerts_total{rule,severity,state}`; each tick sets
//! `mantissa_alerts_firing{rule,severity}` and calls
//! [`HealthRegistry::publish_scores`](mantissa_health::HealthRegistry::publish_scores).
//!
//! ## Actions
//!
//! On the transition to firing the monitor executes the rule's action:
//! `cool_down` a model ([`ModelControl`](mantissa_core::control::ModelControl)),
//! `reset_sessions` ([`SessionControl`](mantissa_core::control::SessionControl):
//! explicit session ids, and/or the sessions of the alert's subject found in
//! the registry's recent event journal — the registry keeps no per-session
//! windows), or `set_tier` for an agent
//! ([`TierControl`](mantissa_core::control::TierControl), lifted again on
//! resolution by default). Executed actions are recorded in
//! [`Alert::actions`] and the timeline. A rule whose action has no control
//! fails to build.
//!
//! ## Defaults
//!
//! ```
//! use mantissa_health::HealthRegistry;
//! use mantissa_monitor::{SystemMonitor, TracingSink};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let registry = HealthRegistry::new();
//! let monitor = SystemMonitor::builder(registry)
//!     .default_rules()          // see rule::default_rules
//!     .receiver(TracingSink::new())
//!     .build()
//!     .unwrap();
//! assert_eq!(monitor.interval(), std::time::Duration::from_secs(15));
//! let handle = monitor.spawn(); // ticks every 15 s until shut down (or dropped)
//! handle.shutdown().await;
//! # }
//! ```
//!
//! ## Customised: a rule with `for`, hysteresis and an action, driven by hand
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use mantissa_core::{EventKind, FailureClass, HealthEvent, ModelId, Outcome};
//! use mantissa_core::control::ModelControl;
//! use mantissa_health::HealthRegistry;
//! use mantissa_monitor::{Action, Alert, AlertState, Condition, Rule, Selector, Severity, SystemMonitor};
//!
//! #[derive(Default)]
//! struct Router(Mutex<Vec<String>>);
//! impl ModelControl for Router {
//!     fn cool_down(&self, model: &ModelId, _: Duration) -> bool {
//!         self.0.lock().unwrap().push(model.to_string());
//!         true
//!     }
//!     fn restore(&self, _: &ModelId) -> bool { true }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let registry = HealthRegistry::new();
//! let router = Arc::new(Router::default());
//! let manager = Arc::new(Mutex::new(Vec::<Alert>::new()));
//! let monitor = SystemMonitor::builder(registry.clone())
//!     .rule(
//!         Rule::new("model_down", Selector::models(), Condition::consecutive_failures(3))
//!             .severity(Severity::Critical)
//!             .for_duration(Duration::from_secs(10))
//!             .action(Action::cool_down(Duration::from_secs(60))),
//!     )
//!     .model_control(router.clone())
//!     .receiver({ let m = manager.clone(); move |a: &Alert| m.lock().unwrap().push(a.clone()) })
//!     .interval(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//!
//! let fail = || HealthEvent::now("trader".into(), "s1".into(), EventKind::Llm, "gpt-x",
//!     Outcome::Failure(FailureClass::Timeout), Duration::from_secs(30));
//! for _ in 0..3 { registry.record_event(&fail()); }
//!
//! assert_eq!(monitor.tick()[0].state, AlertState::Pending);
//! tokio::time::advance(Duration::from_secs(10)).await;
//! let fired = monitor.tick();
//! assert_eq!(fired[0].state, AlertState::Firing);
//! assert_eq!(router.0.lock().unwrap().as_slice(), ["gpt-x"]);
//! assert_eq!(manager.lock().unwrap()[0].actions[0].action, "cool_down");
//! # }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod alert;
mod duration;
mod monitor;
pub mod rule;
pub mod sink;
pub mod toolkit;

pub use alert::{ActionRecord, Alert, AlertState, SubjectRef};
pub use monitor::{
    DEFAULT_INTERVAL, DEFAULT_TIMELINE_CAPACITY, MonitorHandle, SystemMonitor, SystemMonitorBuilder,
};
pub use rule::{
    Action, Comparison, Condition, Rule, RuleSet, Selector, Severity, Signal, SubjectKind, Threshold, Window,
    default_rules,
};
pub use sink::{ChannelSink, Evaluation, HealthAlertReceiver, TracingSink, WebhookSink};
pub use toolkit::{HealthToolkit, LoggedAction, SessionHealthProvider};
