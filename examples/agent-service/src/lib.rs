//! The agent service example (the README's main command,
//! `cargo run --example agent_service`): a small multi-agent service (a
//! trader, a risk analyst and a manager) running many concurrent sessions
//! against the embedded mock LLM through the whole [`AgentStack`], serving
//! `/metrics`.
//!
//! This package is an example, not published: [`Demo`] is the service,
//! [`cli`] its command line (`src/main.rs`, and the root example
//! `examples/agent_service.rs`, are thin `main`s over it); its tests start
//! the same code on `127.0.0.1:0`.
//!
//! What happens during a run:
//!
//! - every session is a loop of user turns; the trader calls the demo tools
//!   (`get_market_price`, `assess_risk`, `place_order`), the risk analyst gets
//!   a mix of easy and hard (multi-step, code, high-stakes) questions, the
//!   manager is pinned to the high tier;
//! - triage sends easy turns to the low tier and hard ones higher; the
//!   final table shows tier shares and the money saved against sending
//!   everything to the top tier;
//! - between 30 % and 60 % of the run, `mock-small` fails with 503s: the
//!   router falls back, cools the model down, and re-admits it by a half-open
//!   probe after it recovers; the monitor raises and resolves an alert;
//! - sessions are long: the reset layer compacts them when they cross the
//!   brittleness thresholds, and the final report lists the resets.
//!
//! The run installs mantissa's Prometheus recorder itself unless it is
//! handed one ([`DemoConfig::exporter`]): a library never installs a
//! process-wide recorder, an application does, once.

#![forbid(unsafe_code)]

pub mod cli;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mantissa_core::{
    AgentName, BoxError, FailureClass, LlmRequest, METADATA_STAKES, Message, Role, StreamAssembler, TierSet,
    ToolRequest, ToolSpec,
};
use mantissa_mock::{Latency, MockFailure, MockLlm, MockReply, MockTools, demo as mock_demo};
use mantissa_monitor::{Alert, AlertState, Condition, Rule, Selector, Severity, Window, rule::default_rules};
use mantissa_prometheus::{ExporterHandle, MetricsServer, PrometheusConfig};
use mantissa_reset::{BrittlenessPolicy, ContextReset, Stage, StagePlan, Trigger};
use mantissa_triage::CooldownPolicy;
use tokio::task::JoinSet;
use tower::ServiceExt;

use mantissa::{AgentSpec, AgentStack, Upstream};

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where `/metrics` is served. Defaults to `127.0.0.1:9464`.
    pub listen: SocketAddr,
    /// How long load is generated. Defaults to 40 s.
    pub duration: Duration,
    /// Concurrent sessions. Defaults to 24.
    pub sessions: usize,
    /// Pause between a session's turns. Defaults to 100 ms.
    pub think_time: Duration,
    /// Make `mock-small` (the low tier, most of the traffic) fail with 503s
    /// between these fractions of the run. Defaults to `Some((0.3, 0.6))`.
    pub outage: Option<(f64, f64)>,
    /// Print a progress line this often (`None`: silent). Defaults to 5 s.
    pub progress: Option<Duration>,
    /// Monitor evaluation interval. Defaults to 1 s.
    pub monitor_interval: Duration,
    /// Turns before the reset layer compacts a session. Defaults to 20.
    pub max_turns: u32,
    /// Seed of the mock's latency and failure draws. Defaults to 7.
    pub seed: u64,
    /// Run against this upstream instead of the embedded mock (the outage is
    /// then not simulated). Defaults to `None`: the embedded mock.
    pub upstream: Option<Upstream>,
    /// The tier ladder (model ids per tier). Defaults to `None`: the mock's
    /// `mock-small` / `mock-medium` / `mock-large`.
    pub tiers: Option<TierSet>,
    /// The metrics exporter the application installed. Defaults to `None`:
    /// the run installs mantissa's Prometheus recorder itself (once per
    /// process: a second run in the same process must pass the handle).
    pub exporter: Option<ExporterHandle>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            listen: mantissa_prometheus::DEFAULT_LISTEN_ADDR,
            duration: Duration::from_secs(40),
            sessions: 24,
            think_time: Duration::from_millis(100),
            outage: Some((0.3, 0.6)),
            progress: Some(Duration::from_secs(5)),
            monitor_interval: Duration::from_secs(1),
            max_turns: 20,
            seed: 7,
            upstream: None,
            tiers: None,
            exporter: None,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    turns: AtomicU64,
    llm_calls: AtomicU64,
    llm_errors: AtomicU64,
    tool_calls: AtomicU64,
    fallbacks: AtomicU64,
    resets: AtomicU64,
}

/// What a run did, with the final report text.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// User turns completed.
    pub turns: u64,
    /// LLM calls made by the agents (not counting fallback attempts).
    pub llm_calls: u64,
    /// LLM calls that failed after every fallback (what the agents saw fail).
    pub llm_errors: u64,
    /// Tool calls.
    pub tool_calls: u64,
    /// Responses served by a fallback: by another tier than requested, or
    /// after a failed attempt.
    pub fallbacks: u64,
    /// Context resets.
    pub resets: u64,
    /// Calls per tier (by the model that answered).
    pub tier_calls: BTreeMap<String, u64>,
    /// Dollars spent.
    pub cost_usd: f64,
    /// Dollars the same calls would have cost on the top tier.
    pub counterfactual_cost_usd: f64,
    /// Alert transitions seen by the manager, in order.
    pub alert_timeline: Vec<String>,
    /// Model state transitions seen by the router, in order ("12.1s
    /// mock-small healthy -> cooled_down (failure rate 100.0 %)").
    pub model_timeline: Vec<String>,
    /// Times a model was cooled down.
    pub cooldowns: u64,
    /// Times a cooled-down model was re-admitted (a half-open probe succeeded).
    pub readmissions: u64,
    /// A few resets, described.
    pub reset_trace: Vec<String>,
    /// The printable report (health table, tiers, savings, router, resets, alerts).
    pub text: String,
}

/// A running demo.
#[derive(Debug)]
pub struct DemoHandle {
    stack: AgentStack,
    server: Option<MetricsServer>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<DemoReport, BoxError>>,
}

/// Starts demo runs. See the [crate docs](crate).
#[derive(Debug, Clone, Copy)]
pub struct Demo;

/// The manager agent: receives health alerts from the monitor.
#[derive(Debug, Clone, Default)]
pub struct Manager {
    timeline: Arc<Mutex<Vec<String>>>,
}

impl Manager {
    /// The alert transitions received so far.
    pub fn timeline(&self) -> Vec<String> {
        self.timeline.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl mantissa_monitor::HealthAlertReceiver for Manager {
    fn receive_health_alert(&self, alert: &Alert) {
        let line = alert_line(alert);
        if let Ok(mut t) = self.timeline.lock() {
            t.push(line);
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn alert_line(alert: &Alert) -> String {
    format!(
        "{:<8} {:<28} {:<9} {}",
        alert.state.as_str(),
        alert.rule,
        alert.severity.as_str(),
        alert.summary
    )
}

const EASY: &[&str] = &[
    "Thanks, that's all for now.",
    "What is the ticker for Acme Corp?",
    "Good morning! Anything new?",
    "Please confirm you received the report.",
];

const MEDIUM: &[&str] = &[
    "Compare ACME and TSLA on valuation. Which is cheaper, and why?",
    "Compare our ACME and MSFT exposure. Which one should we trim first, and why?",
];

/// The model that fails midway.
pub const OUTAGE_MODEL: &str = "mock-small";

const HARD: &[&str] = &[
    "Analyze step by step the downside risk of doubling our ACME position, compare it with hedging via options, \
     and propose a plan with numbered stages. Why would each stage fail? What would you monitor?",
    "Review this position-sizing code and prove it never exceeds the limit:\n```rust\nfn size(cap: f64, px: f64) \
     -> u64 { (cap / px).floor() as u64 }\n```\nWhat happens when px is 0? And when cap is negative?",
    "Plan a multi-step rebalancing of the portfolio across five sectors; first evaluate correlations, then \
     derive weights, then explain the trade-offs. Which constraints bind? How sensitive is the result?",
];

fn agent_reply(req: &LlmRequest) -> MockReply {
    match req.agent.as_str() {
        "trader" => mock_demo::trader(req),
        "summarizer" => MockReply::text("Summary: the desk discussed ACME positions and risk limits."),
        _ => {
            let q = req.latest_user_message().map(|m| m.text()).unwrap_or_default();
            let words = q.split_whitespace().count();
            MockReply::text(format!(
                "Considered {words} words; recommendation: hold, review limits, report back at close."
            ))
        }
    }
}

impl Demo {
    /// Builds the stack, serves `/metrics` on `config.listen` and starts the load.
    pub async fn start(config: DemoConfig) -> Result<DemoHandle, BoxError> {
        let mock = MockLlm::builder()
            .seed(config.seed)
            .responder(agent_reply)
            .model_latency(
                "mock-small",
                Latency::range(Duration::from_millis(20), Duration::from_millis(80)),
            )
            .model_latency(
                "mock-medium",
                Latency::range(Duration::from_millis(60), Duration::from_millis(200)),
            )
            .model_latency(
                "mock-large",
                Latency::range(Duration::from_millis(150), Duration::from_millis(500)),
            )
            .build();
        let manager = Manager::default();
        let exporter = match &config.exporter {
            Some(handle) => handle.clone(),
            None => PrometheusConfig::new().listen_addr(config.listen).install()?,
        };
        let upstream = config
            .upstream
            .clone()
            .unwrap_or_else(|| Upstream::Mock(mock.clone()));
        let stack = AgentStack::builder(upstream)
            .agent(AgentSpec::new("trader").role("Trades on request, using market tools"))
            .agent(AgentSpec::new("risk_analyst").role("Answers risk questions, easy and hard"))
            .agent(
                AgentSpec::new("manager")
                    .role("Supervises the desk; receives health alerts")
                    .tier("high"),
            )
            .tiers(config.tiers.clone().unwrap_or_default())
            .tools(
                MockTools::demo()
                    .with_seed(config.seed)
                    .with_latency("get_market_price", Latency::range(ms(2), ms(10)))
                    .with_latency("assess_risk", Latency::range(ms(5), ms(30)))
                    .with_latency("place_order", Latency::range(ms(5), ms(20))),
                MockTools::demo_specs().into_iter().map(|t| t.function.name),
            )
            // Turns only warn by default; the demo also compacts on them, to
            // show resets in a short run.
            .reset_policy(
                BrittlenessPolicy::default()
                    .max_turns(Some(config.max_turns))
                    .stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize)),
            )
            .cooldown(story_cooldown(config.duration))
            .monitor_rules(default_rules())
            .monitor_rule(
                Rule::new(
                    "model_error_rate_fast",
                    Selector::models(),
                    Condition::error_rate(Window::OneMinute, 0.2, 10),
                )
                .severity(Severity::Warning)
                .for_duration(Duration::from_secs(3)),
            )
            .exporter(exporter)
            .monitor_interval(config.monitor_interval)
            .alert_receiver(manager.clone())
            .build()?;
        let (server, addr) = match stack.serve_metrics(config.listen).await {
            Ok(server) => {
                let addr = server.local_addr();
                (Some(server), addr)
            }
            Err(e) => return Err(format!("cannot serve /metrics on {}: {e}", config.listen).into()),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(stack.clone(), mock, manager, config, stop.clone()));
        Ok(DemoHandle {
            stack,
            server,
            addr,
            stop,
            task,
        })
    }
}

impl DemoHandle {
    /// The address `/metrics` is served on.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stack the demo runs on.
    pub fn stack(&self) -> &AgentStack {
        &self.stack
    }

    /// Waits for the load to finish (the `/metrics` server keeps serving until
    /// the handle is dropped or [`DemoHandle::shutdown`] is called).
    pub async fn wait(&mut self) -> Result<DemoReport, BoxError> {
        (&mut self.task)
            .await
            .map_err(|e| -> BoxError { format!("demo task failed: {e}").into() })?
    }

    /// Asks the load to stop early and waits for the report.
    pub async fn stop(&mut self) -> Result<DemoReport, BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        self.wait().await
    }

    /// Stops serving `/metrics`.
    pub async fn shutdown(mut self) -> Result<(), BoxError> {
        if let Some(server) = self.server.take() {
            server.shutdown().await?;
        }
        Ok(())
    }
}

async fn run(
    stack: AgentStack,
    mock: MockLlm,
    manager: Manager,
    config: DemoConfig,
    stop: Arc<AtomicBool>,
) -> Result<DemoReport, BoxError> {
    let counters = Arc::new(Counters::default());
    let tiers = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let resets = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = tokio::time::Instant::now();
    let deadline = start + config.duration;

    // The outage: the low tier's model fails with 503s for part of the run.
    if let Some((from, to)) = config.outage {
        let control = mock.control();
        let d = config.duration;
        tokio::spawn(async move {
            tokio::time::sleep(d.mul_f64(from.clamp(0.0, 1.0))).await;
            control.fail_model(OUTAGE_MODEL, MockFailure::http(503));
            tokio::time::sleep(d.mul_f64((to - from).clamp(0.0, 1.0))).await;
            control.recover_model(OUTAGE_MODEL);
        });
    }

    // The router's story: sample the model states and keep each transition.
    let watcher = tokio::spawn(watch_models(stack.clone(), start, stop.clone(), deadline));

    let mut set = JoinSet::new();
    let agents = ["trader", "risk_analyst", "manager"];
    for i in 0..config.sessions.max(1) {
        let agent = agents[i % agents.len()];
        let stack = stack.clone();
        let counters = counters.clone();
        let tiers = tiers.clone();
        let resets = resets.clone();
        let stop = stop.clone();
        let think = config.think_time;
        set.spawn(async move {
            session_loop(i, agent, stack, counters, tiers, resets, stop, deadline, think).await
        });
    }

    let mut ticker = config.progress.map(|p| tokio::time::interval_at(start + p, p));
    loop {
        tokio::select! {
            done = set.join_next() => {
                match done {
                    None => break,
                    Some(Err(e)) => return Err(format!("session task failed: {e}").into()),
                    Some(Ok(())) => {}
                }
            }
            _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                let firing = stack.active_alerts().iter().filter(|a| a.state == AlertState::Firing).count();
                let cooled = stack
                    .router()
                    .snapshot()
                    .iter()
                    .filter(|m| m.state != mantissa_triage::ModelState::Healthy)
                    .count();
                println!(
                    "[{:>4.0}s] user turns {:>5}  llm calls {:>5} (failed after fallbacks {:>3}, served by a fallback {:>4})  \
                     tool calls {:>5}  context resets {:>3}  models not healthy {}  alerts firing {}",
                    start.elapsed().as_secs_f64(),
                    counters.turns.load(Ordering::Relaxed),
                    counters.llm_calls.load(Ordering::Relaxed),
                    counters.llm_errors.load(Ordering::Relaxed),
                    counters.fallbacks.load(Ordering::Relaxed),
                    counters.tool_calls.load(Ordering::Relaxed),
                    counters.resets.load(Ordering::Relaxed),
                    cooled,
                    firing,
                );
            }
        }
    }
    // Let the monitor see the recovery before the report.
    if let Some(m) = stack.monitor() {
        m.tick();
    }
    stop.store(true, Ordering::Relaxed);
    let story = watcher
        .await
        .map_err(|e| -> BoxError { format!("model watcher failed: {e}").into() })?;

    let tier_calls = tiers.lock().map(|t| t.clone()).unwrap_or_default();
    let reset_trace = resets.lock().map(|r| r.clone()).unwrap_or_default();
    let snapshot = stack.registry().snapshot();
    let (cost, counterfactual) = snapshot.agents.values().fold((0.0, 0.0), |(c, k), a| {
        (c + a.last_15m.cost_usd, k + a.last_15m.counterfactual_cost_usd)
    });
    let mut report = DemoReport {
        turns: counters.turns.load(Ordering::Relaxed),
        llm_calls: counters.llm_calls.load(Ordering::Relaxed),
        llm_errors: counters.llm_errors.load(Ordering::Relaxed),
        tool_calls: counters.tool_calls.load(Ordering::Relaxed),
        fallbacks: counters.fallbacks.load(Ordering::Relaxed),
        resets: counters.resets.load(Ordering::Relaxed),
        tier_calls,
        cost_usd: cost,
        counterfactual_cost_usd: counterfactual,
        alert_timeline: stack
            .monitor()
            .map(|m| m.timeline().iter().map(alert_line).collect())
            .unwrap_or_else(|| manager.timeline()),
        model_timeline: story.lines,
        cooldowns: story.cooldowns,
        readmissions: story.readmissions,
        reset_trace,
        text: String::new(),
    };
    report.text = render_report(&stack, &report);
    Ok(report)
}

/// The cooldown policy of the demo, scaled to the run so that every run
/// tells the whole outage story: a model is cooled down after 5 failures in
/// a row (the monitor's `model_consecutive_failures` rule fires on the same
/// streak), probed every 1/12 to 1/6 of the run, so it is re-admitted well
/// before the end; no jitter, so a seed replays the same cooldowns.
fn story_cooldown(duration: Duration) -> CooldownPolicy {
    let base = (duration / 12).max(Duration::from_millis(100));
    CooldownPolicy {
        consecutive_failures: 5,
        // Only a streak cools the model: a rate over a window full of the
        // calls before the outage would cool it after its first failures.
        failure_rate_threshold: 1.0,
        base_cooldown: base,
        max_cooldown: base * 2,
        jitter: 0.0,
        ..CooldownPolicy::default()
    }
}

/// Model state transitions seen while the load ran.
#[derive(Debug, Default)]
struct ModelStory {
    lines: Vec<String>,
    cooldowns: u64,
    readmissions: u64,
}

/// Samples the router's model states every 50 ms until the load stops, and
/// records every transition (a cooldown lasts seconds, a probe at least one
/// upstream call, so none is missed at this rate).
async fn watch_models(
    stack: AgentStack,
    start: tokio::time::Instant,
    stop: Arc<AtomicBool>,
    deadline: tokio::time::Instant,
) -> ModelStory {
    use mantissa_triage::ModelState;
    let mut story = ModelStory::default();
    let mut last: BTreeMap<String, ModelState> = BTreeMap::new();
    let mut cooled = std::collections::BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        for m in stack.router().snapshot() {
            let name = m.model.to_string();
            let before = last.insert(name.clone(), m.state).unwrap_or(ModelState::Healthy);
            if before == m.state {
                continue;
            }
            match m.state {
                ModelState::CooledDown => {
                    story.cooldowns += 1;
                    cooled.insert(name.clone());
                }
                ModelState::Healthy if cooled.remove(&name) => story.readmissions += 1,
                _ => {}
            }
            let detail = match m.state {
                ModelState::CooledDown => format!(
                    " (failure rate {:.1} %, {} consecutive failures)",
                    100.0 * m.failure_rate,
                    m.consecutive_failures
                ),
                _ => String::new(),
            };
            story.lines.push(format!(
                "{:>5.1}s  {:<12} {} -> {}{detail}",
                start.elapsed().as_secs_f64(),
                name,
                before.as_str(),
                m.state.as_str(),
            ));
        }
        if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() >= deadline + Duration::from_secs(60) {
            return story;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session_loop(
    index: usize,
    agent: &'static str,
    stack: AgentStack,
    counters: Arc<Counters>,
    tiers: Arc<Mutex<BTreeMap<String, u64>>>,
    resets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    deadline: tokio::time::Instant,
    think: Duration,
) {
    let llm = stack.llm(agent);
    let tools = stack.tools(agent);
    let specs: Vec<ToolSpec> = if agent == "trader" {
        MockTools::demo_specs()
    } else {
        Vec::new()
    };
    let mut session = format!("{agent}-{index}");
    let mut history = vec![Message::system(format!("You are the desk's {agent}."))];
    let mut turn = 0usize;
    while tokio::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        turn += 1;
        let (text, stakes) = match agent {
            "trader" => (
                format!(
                    "Should we buy {}?",
                    ["ACME", "TSLA", "NVDA", "MSFT"][(index + turn) % 4]
                ),
                None,
            ),
            _ => match (index + turn) % 4 {
                0 => (HARD[(index + turn) % HARD.len()].to_owned(), Some("high")),
                1 => (MEDIUM[(index + turn) % MEDIUM.len()].to_owned(), None),
                _ => (EASY[(index + turn) % EASY.len()].to_owned(), None),
            },
        };
        history.push(Message::user(text));
        // The agent loop of one user turn: model, tools, model, … (bounded).
        for _step in 0..6 {
            let mut req = LlmRequest::new(session.as_str(), agent, history.clone()).with_tools(specs.clone());
            if let Some(s) = stakes {
                req = req.with_metadata(METADATA_STAKES, s);
            }
            // Every other risk-analyst turn streams its answer.
            req.params.stream = agent == "risk_analyst" && turn % 2 == 0;
            counters.llm_calls.fetch_add(1, Ordering::Relaxed);
            let mut resp = match llm.clone().oneshot(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    counters.llm_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, agent, "llm call failed");
                    if mantissa_core::classify_box(&e) == FailureClass::Cancelled {
                        return;
                    }
                    break;
                }
            };
            if let Some(routed) = resp.routed() {
                // A fallback: another model was tried first, or the requested
                // tier's models were cooled down and skipped.
                if routed.attempts > 1 || routed.tier != routed.requested_tier {
                    counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut t) = tiers.lock() {
                    *t.entry(routed.tier.to_string()).or_default() += 1;
                }
            }
            if let Some(reset) = ContextReset::of(&resp) {
                counters.resets.fetch_add(1, Ordering::Relaxed);
                // Adopt the compacted history, as a well-behaved caller does.
                history = reset.history.to_vec();
                if let Some(new) = &reset.new_session {
                    session = new.to_string();
                }
                if let Ok(mut r) = resets.lock() {
                    if r.len() < 12 {
                        r.push(reset.to_string());
                    }
                }
            }
            // A streamed answer: read the chunks as they arrive and assemble them.
            if let Some(mut stream) = resp.stream.take() {
                let mut assembler = StreamAssembler::new();
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(chunk) => assembler.push(&chunk),
                        Err(e) => {
                            counters.llm_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, agent, "stream failed");
                            break;
                        }
                    }
                }
                resp.message = assembler.message();
            }
            let message = resp.message;
            let calls = message.tool_calls.clone();
            history.push(message);
            if calls.is_empty() {
                break;
            }
            for call in &calls {
                counters.tool_calls.fetch_add(1, Ordering::Relaxed);
                let content = match ToolRequest::from_call(session.as_str(), agent, call) {
                    Ok(req) => match tools.clone().oneshot(req).await {
                        Ok(out) => out.content,
                        Err(e) => format!("tool `{}` failed: {e}", call.function.name),
                    },
                    Err(e) => format!("invalid argument JSON: {e}"),
                };
                history.push(Message::tool(call.id.clone(), content));
            }
        }
        counters.turns.fetch_add(1, Ordering::Relaxed);
        // Keep the history the caller holds bounded even without resets.
        if history.len() > 400 {
            let keep = history.split_off(history.len() - 200);
            let first_user = keep.iter().position(|m| m.role == Role::User).unwrap_or(0);
            history.truncate(1);
            history.extend_from_slice(&keep[first_user..]);
        }
        tokio::time::sleep(think).await;
    }
}

fn render_report(stack: &AgentStack, report: &DemoReport) -> String {
    let snapshot = stack.registry().snapshot();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== health by agent (last 15 minutes; each call as the agent saw it, after fallbacks) =="
    );
    let _ = writeln!(
        out,
        "{:<14} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>10} {:>6}",
        "agent", "calls", "failed", "fail %", "p50 ms", "p95 ms", "tokens", "cost $", "score"
    );
    let mut agents: Vec<_> = snapshot.agents.values().collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    for a in agents {
        table_row(&mut out, &a.name, a);
    }
    let _ = writeln!(
        out,
        "\n== health by model (every upstream attempt, fallbacks included) =="
    );
    let mut models: Vec<_> = snapshot.models.values().collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    for m in models {
        table_row(&mut out, &m.name, m);
    }
    let _ = writeln!(out, "\n== health by tool ==");
    let mut tools: Vec<_> = snapshot.tools.values().collect();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tools {
        table_row(&mut out, &t.name, t);
    }

    let total: u64 = report.tier_calls.values().sum();
    let _ = writeln!(out, "\n== tiers ==");
    for tier in stack.tiers().iter() {
        let n = report.tier_calls.get(tier.name.as_str()).copied().unwrap_or(0);
        let share = if total > 0 {
            100.0 * n as f64 / total as f64
        } else {
            0.0
        };
        let _ = writeln!(out, "{:<8} {:>6} calls  {:>5.1} %", tier.name, n, share);
    }
    let saved = report.counterfactual_cost_usd - report.cost_usd;
    let pct = if report.counterfactual_cost_usd > 0.0 {
        100.0 * saved / report.counterfactual_cost_usd
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "cost ${:.4}; all on the top tier ${:.4}; saved ${:.4} ({pct:.1} %)",
        report.cost_usd, report.counterfactual_cost_usd, saved
    );

    let _ = writeln!(out, "\n== router ==");
    let _ = writeln!(
        out,
        "responses served by a fallback (another tier, or after a failed attempt): {}",
        report.fallbacks
    );
    let _ = writeln!(
        out,
        "models cooled down {} times, re-admitted by a successful probe {} times",
        report.cooldowns, report.readmissions
    );
    for line in &report.model_timeline {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "state at the end (a cooled model shows its failure rate when it was cooled):"
    );
    for m in stack.router().snapshot() {
        let _ = writeln!(
            out,
            "{:<12} {:<7} state {:<11} consecutive failures {:>2}  failure rate {:>5.1} %",
            m.model,
            m.tier,
            m.state.as_str(),
            m.consecutive_failures,
            100.0 * m.failure_rate
        );
    }

    let _ = writeln!(out, "\n== context resets: {} ==", report.resets);
    for r in &report.reset_trace {
        let _ = writeln!(out, "{r}");
    }

    let _ = writeln!(out, "\n== alert timeline (monitor) ==");
    if report.alert_timeline.is_empty() {
        let _ = writeln!(out, "(none)");
    }
    for line in &report.alert_timeline {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "\n{} user turns, {} LLM calls ({} failed after fallbacks, {} served by a fallback), {} tool calls",
        report.turns, report.llm_calls, report.llm_errors, report.fallbacks, report.tool_calls
    );
    out
}

fn table_row(out: &mut String, name: &str, s: &mantissa_health::registry::SubjectHealth) {
    let w = &s.last_15m;
    let ms = |v: Option<f64>| {
        v.map(|x| format!("{:.0}", x * 1000.0))
            .unwrap_or_else(|| "-".to_owned())
    };
    let _ = writeln!(
        out,
        "{:<14} {:>6} {:>7} {:>6.1}% {:>9} {:>9} {:>9} {:>10.4} {:>6.2}",
        name,
        w.calls,
        w.failures,
        100.0 * w.error_rate,
        ms(w.p50_secs),
        ms(w.p95_secs),
        w.input_tokens + w.output_tokens,
        w.cost_usd,
        s.score
    );
}

/// The agent names of the demo team.
pub fn team() -> [AgentName; 3] {
    [
        AgentName::new("trader"),
        AgentName::new("risk_analyst"),
        AgentName::new("manager"),
    ]
}
