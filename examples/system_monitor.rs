//! The SystemMonitor watching a team of agents, end to end.
//!
//! Two agents (`trader`, `analyst`) call `mock-small` through a `HealthLayer`.
//! At t = 10 s the model starts failing (`MockControl::fail_model`). The
//! monitor's `model_errors` rule (error rate > 50 % over 1 m, at least 5
//! calls, `for` 10 s) goes pending, then firing. The manager agent receives
//! the alert through `receive_health_alert` (a `ChannelSink` feeding its task)
//! and reacts: it cools the model down in a small local router, so the team
//! routes to `mock-medium`, and it asks the monitor agent — an LLM (a
//! `MockLlm` with a scripted responder) that calls the health toolkit's tools
//! through a measured tool stack — for a report, then logs its action with
//! `log_agent_action`. The model recovers at t = 45 s; when the cooldown ends
//! traffic returns to it, the error rate falls back past the hysteresis bound
//! and the alert resolves. The timeline is printed at the end.
//!
//! Runs on tokio's paused clock (a current-thread runtime with
//! `start_paused`), so two simulated minutes take a fraction of a second:
//!
//! ```text
//! cargo run --example system_monitor
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mantissa_core::control::ModelControl;
use mantissa_core::{
    BoxError, FailureClass, LlmRequest, Message, ModelId, Role, TierSet, ToolCall, ToolRequest,
};
use mantissa_health::{Health, HealthLayer};
use mantissa_mock::{MockLlm, MockReply};
use mantissa_monitor::{
    Alert, AlertState, ChannelSink, Condition, HealthToolkit, Rule, Selector, Severity, SubjectKind,
    SystemMonitor, TracingSink, Window,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const PRIMARY: &str = "mock-small";
const FALLBACK: &str = "mock-medium";

/// A tiny router: the monitor and the manager act on it through
/// `ModelControl`; the team asks it which model to use.
#[derive(Default)]
struct Router {
    cooled_until: Mutex<HashMap<String, Instant>>,
}

impl Router {
    fn pick(&self) -> &'static str {
        let cooled = self
            .cooled_until
            .lock()
            .map(|m| m.get(PRIMARY).copied())
            .ok()
            .flatten();
        match cooled {
            Some(until) if Instant::now() < until => FALLBACK,
            _ => PRIMARY,
        }
    }
}

impl ModelControl for Router {
    fn cool_down(&self, model: &ModelId, duration: Duration) -> bool {
        if let Ok(mut m) = self.cooled_until.lock() {
            m.insert(model.to_string(), Instant::now() + duration);
        }
        true
    }

    fn restore(&self, model: &ModelId) -> bool {
        self.cooled_until
            .lock()
            .map(|mut m| m.remove(model.as_str()).is_some())
            .unwrap_or(false)
    }
}

/// The monitor agent's "LLM": list the alerts, read the health summary, then
/// answer with a short report built from the tool results.
fn monitor_agent(req: &LlmRequest) -> MockReply {
    let msgs = req.messages();
    let start = msgs.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
    let results: Vec<&Message> = msgs[start..].iter().filter(|m| m.role == Role::Tool).collect();
    let call = |name: &str, args: Value| {
        MockReply::tool_calls(vec![ToolCall::new(format!("call_{}", msgs.len()), name, &args)])
    };
    match results.len() {
        0 => call("list_active_alerts", json!({"severity": "warning"})),
        1 => call("get_agent_health_summary", json!({"window": "1m"})),
        _ => {
            let alerts: Value = serde_json::from_str(results[0].text()).unwrap_or_default();
            let health: Value = serde_json::from_str(results[1].text()).unwrap_or_default();
            let firing: Vec<String> = alerts["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    format!(
                        "{} on {}",
                        a["rule"].as_str().unwrap_or("?"),
                        a["subject"]["name"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            let models: Vec<String> = health["models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{} error rate {:.0} %",
                        m["name"].as_str().unwrap_or("?"),
                        m["error_rate"].as_f64().unwrap_or(0.0) * 100.0
                    )
                })
                .collect();
            MockReply::text(format!(
                "Active alerts: [{}]. Models: {}. Recommend routing away from failing models.",
                firing.join(", "),
                models.join("; ")
            ))
        }
    }
}

type Timeline = Arc<Mutex<Vec<String>>>;

fn note(timeline: &Timeline, t0: Instant, line: impl Into<String>) {
    let line = format!(
        "[t+{:>5.1}s] {}",
        Instant::now().duration_since(t0).as_secs_f64(),
        line.into()
    );
    println!("{line}");
    if let Ok(mut t) = timeline.lock() {
        t.push(line);
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .without_time()
        .with_ansi(false)
        .init();
    let t0 = Instant::now();
    let timeline: Timeline = Arc::default();

    // The team's LLM stack: HealthLayer -> MockLlm (models from the default tier set).
    let layer = HealthLayer::with_tiers(TierSet::default());
    let registry = layer.registry().clone();
    let team_mock = MockLlm::new();
    let faults = team_mock.control();
    let team_llm = layer.layer(team_mock);
    let router = Arc::new(Router::default());

    // The monitor: one rule, a manager channel and the tracing sink.
    let (manager_sink, mut manager_inbox) = ChannelSink::new(16);
    let monitor = SystemMonitor::builder(registry.clone())
        .rule(
            Rule::new(
                "model_errors",
                Selector::models(),
                Condition::error_rate(Window::OneMinute, 0.5, 5),
            )
            .severity(Severity::Critical)
            .for_duration(Duration::from_secs(10))
            .label("team", "trading"),
        )
        .interval(Duration::from_secs(5))
        .receiver(manager_sink.named("manager"))
        .receiver(TracingSink::new())
        .build()?;
    let monitor_task = monitor.spawn();

    // The monitor agent's tool stack: HealthLayer -> HealthToolkit, and its LLM.
    let toolkit = HealthToolkit::new(registry.clone()).with_monitor(monitor.clone());
    let tools = layer.layer(toolkit.clone());
    let monitor_llm = layer.layer(MockLlm::builder().responder(monitor_agent).build());

    // The manager agent: reacts to alerts from its inbox.
    let manager = {
        let (router, timeline, tools) = (router.clone(), timeline.clone(), tools.clone());
        tokio::spawn(async move {
            while let Some(alert) = manager_inbox.recv().await {
                on_alert(&alert, &router, &timeline, t0, &monitor_llm, &tools).await;
            }
        })
    };

    // The team works for two simulated minutes, two calls per second.
    let mut pending_seen = false;
    for second in 0..120u64 {
        // Pending alerts stay inside the monitor (sinks get firing and resolved).
        let pending = monitor
            .active_alerts()
            .into_iter()
            .find(|a| a.state == AlertState::Pending);
        if let (Some(a), false) = (pending, pending_seen) {
            note(&timeline, t0, format!("monitor: {a}"));
            pending_seen = true;
        }
        match second {
            10 => {
                faults.fail_model(PRIMARY, FailureClass::UpstreamServer);
                note(&timeline, t0, format!("{PRIMARY} starts failing (HTTP 5xx)"));
            }
            45 => {
                faults.recover_model(PRIMARY);
                note(&timeline, t0, format!("{PRIMARY} recovers"));
            }
            _ => {}
        }
        for agent in ["trader", "analyst"] {
            let model = router.pick();
            let req = LlmRequest::new(format!("{agent}-1"), agent, vec![Message::user("next step?")])
                .with_model(model);
            let _ = team_llm.clone().oneshot(req).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    monitor_task.shutdown().await;
    manager.abort();

    println!("\nalert transitions (SystemMonitor::timeline):");
    let mut states = Vec::new();
    for a in monitor.timeline() {
        println!("  {a}");
        states.push(a.state);
    }
    println!("\nmanager's action log (log_agent_action):");
    for a in toolkit.action_log() {
        println!("  {}: {} -> {}", a.agent, a.action, a.outcome);
    }
    let calls = |m: &str| registry.model(m).map_or(0, |h| h.total_calls);
    println!(
        "\ncalls: {PRIMARY} {}, {FALLBACK} {}",
        calls(PRIMARY),
        calls(FALLBACK)
    );

    if states != [AlertState::Pending, AlertState::Firing, AlertState::Resolved] {
        return Err(format!("unexpected alert lifecycle: {states:?}").into());
    }
    Ok(())
}

type Llm = Health<MockLlm>;
type Tools = Health<HealthToolkit>;

/// The manager's `receive_health_alert` reaction (run on its own task, fed by
/// the channel sink, so the monitor never waits for it).
async fn on_alert(
    alert: &Alert,
    router: &Router,
    timeline: &Timeline,
    t0: Instant,
    llm: &Llm,
    tools: &Tools,
) {
    note(timeline, t0, format!("manager received: {alert}"));
    let model = ModelId::new(&alert.subject.name);
    let (action, outcome) = match alert.state {
        AlertState::Firing if alert.subject.kind == SubjectKind::Model => {
            router.cool_down(&model, Duration::from_secs(20));
            note(
                timeline,
                t0,
                format!("manager cools {model} down for 20 s: the team routes to {FALLBACK}"),
            );
            match ask_monitor_agent(llm, tools, timeline, t0).await {
                Ok(report) => note(timeline, t0, format!("monitor agent reports: {report}")),
                Err(e) => note(timeline, t0, format!("monitor agent failed: {e}")),
            }
            (format!("cool_down {model} 20s"), "success")
        }
        AlertState::Resolved => (format!("close incident {}", alert.rule), "success"),
        _ => return,
    };
    let args = json!({"agent": "manager", "action": action, "outcome": outcome, "details": alert.summary});
    let req = ToolRequest::new("manager-1", "manager", "log-1", "log_agent_action", args);
    if let Ok(resp) = tools.clone().oneshot(req).await {
        note(timeline, t0, format!("manager logs `{action}`: {}", resp.content));
    }
}

/// One agent loop of the monitor agent: the LLM calls toolkit tools until it answers.
async fn ask_monitor_agent(
    llm: &Llm,
    tools: &Tools,
    timeline: &Timeline,
    t0: Instant,
) -> Result<String, BoxError> {
    let mut history = vec![
        Message::system("You are the SystemMonitor agent. Use the health tools."),
        Message::user("An alert is firing. What is going on?"),
    ];
    for _ in 0..5 {
        let req = LlmRequest::new("monitor-1", "monitor", history.clone())
            .with_tools(HealthToolkit::tool_specs())
            .with_model("mock-large");
        let reply = llm.clone().oneshot(req).await?.message;
        history.push(reply.clone());
        if reply.tool_calls.is_empty() {
            return Ok(reply.text().to_owned());
        }
        for call in &reply.tool_calls {
            note(
                timeline,
                t0,
                format!(
                    "monitor agent calls {}({})",
                    call.function.name, call.function.arguments
                ),
            );
            let out = tools
                .clone()
                .oneshot(ToolRequest::from_call("monitor-1", "monitor", call)?)
                .await?;
            history.push(Message::tool(call.id.clone(), out.content));
        }
    }
    Err("the monitor agent did not finish".into())
}
