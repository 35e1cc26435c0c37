//! End-to-end tests of the composed stack ([`AgentStack`]) over the HTTP mock:
//! real OpenAI-compatible HTTP on loopback, the whole layer order, the
//! monitor, and the Prometheus exposition.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use mantissa::core::{
    BoxError, FailureClass, LlmRequest, Message, ModelId, ModelSpec, TierConfig, TierSet, ToolRequest,
    catalog, classify_box,
};
use mantissa::mock::http::{HttpMockLlm, HttpReply};
use mantissa::mock::{MockTools, ToolFault};
use mantissa::monitor::{AlertState, ChannelSink, Condition, Rule, Selector, Window};
use mantissa::openai::{OpenAiClient, OpenAiConfig};
use mantissa::reset::{BrittlenessPolicy, ContextReset, Stage, StagePlan, Trigger};
use mantissa::triage::{CooldownPolicy, TierRouter};
use mantissa::{AgentSpec, AgentStack, ExporterHandle, LlmService, PrometheusConfig, Upstream};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// One HTTP mock server per model, so one model can fail alone.
struct Upstreams {
    servers: HashMap<String, HttpMockLlm>,
}

impl Upstreams {
    async fn start(models: &[&str]) -> Self {
        let mut servers = HashMap::new();
        for m in models {
            servers.insert((*m).to_owned(), HttpMockLlm::start().await);
        }
        Self { servers }
    }

    fn get(&self, model: &str) -> &HttpMockLlm {
        &self.servers[model]
    }

    fn upstream(&self) -> Upstream {
        let urls: HashMap<String, String> = self
            .servers
            .iter()
            .map(|(m, s)| (m.clone(), s.base_url()))
            .collect();
        Upstream::Custom(Arc::new(
            move |spec: &ModelSpec| -> Result<LlmService, BoxError> {
                let url = urls.get(spec.id.as_str()).ok_or("no server for model")?;
                let client = OpenAiClient::new(
                    OpenAiConfig::new(url.clone())
                        .api_key("sk-test-secret")
                        .default_model(spec.id.clone()),
                )?;
                Ok(BoxCloneSyncService::new(client))
            },
        ))
    }
}

fn small_tiers() -> TierSet {
    TierSet::new(vec![
        TierConfig::new(
            "low",
            vec![
                ModelSpec::new("small")
                    .provider("mock")
                    .context_window(4_000)
                    .pricing(0.15, 0.6),
            ],
        ),
        TierConfig::new(
            "medium",
            vec![
                ModelSpec::new("medium")
                    .provider("mock")
                    .context_window(16_000)
                    .pricing(1.0, 4.0),
            ],
        ),
        TierConfig::new(
            "high",
            vec![
                ModelSpec::new("large")
                    .provider("mock")
                    .context_window(64_000)
                    .pricing(5.0, 15.0),
            ],
        ),
    ])
    .unwrap()
}

/// The process's Prometheus recorder, installed once by the first test that
/// serves metrics (an application installs once too); no upkeep task, as
/// every test has its own runtime.
fn exporter() -> ExporterHandle {
    static EXPORTER: OnceLock<ExporterHandle> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            PrometheusConfig::new()
                .without_upkeep()
                .install()
                .expect("the first recorder of this test binary")
        })
        .clone()
}

/// The exposition served on `addr`.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let url = format!("http://{addr}/metrics");
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn user(session: &str, agent: &str, history: &[Message]) -> LlmRequest {
    LlmRequest::new(session, agent, history.to_vec())
}

/// A policy that compacts after `turns` user turns (turns only warn by default).
fn compact_on_turns(turns: u32) -> BrittlenessPolicy {
    BrittlenessPolicy::default()
        .max_turns(Some(turns))
        .stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize))
}

#[tokio::test]
async fn a_long_session_is_compacted_and_the_reset_is_remembered() {
    let ups = Upstreams::start(&["small", "medium", "large"]).await;
    let stack = AgentStack::builder(ups.upstream())
        .agent(AgentSpec::new("trader"))
        .tiers(small_tiers())
        .reset_policy(compact_on_turns(6))
        .summarize_on_low_tier(false)
        .without_monitor()
        .build()
        .unwrap();
    let llm = stack.llm("trader");

    let mut history = vec![Message::system("You are a trader.")];
    let mut reset = None;
    for turn in 1..=6 {
        history.push(Message::user(format!("turn {turn}: anything new on ACME?")));
        let resp = llm
            .clone()
            .oneshot(user("s-long", "trader", &history))
            .await
            .unwrap();
        if let Some(r) = ContextReset::of(&resp) {
            reset = Some(r.clone());
        }
        history.push(resp.message);
    }
    let reset = reset.expect("the sixth turn crosses max_turns = 6");
    assert_eq!(reset.reason.as_str(), "turns");
    assert!(reset.tokens_after < reset.tokens_before, "{reset}");
    assert_eq!(reset.history[0], Message::system("You are a trader."));

    // What reached the upstream on the reset turn is the compacted history.
    let bodies = ups.get("small").request_bodies();
    let last = bodies.last().unwrap();
    assert_eq!(last["messages"].as_array().unwrap().len(), reset.messages_after);

    // A caller that resends its full history gets the same compaction applied again.
    history.push(Message::user("turn 7: and now?"));
    llm.clone()
        .oneshot(user("s-long", "trader", &history))
        .await
        .unwrap();
    let sent = ups.get("small").request_bodies().last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        sent < history.len(),
        "remembered reset re-applied: sent {sent} of {}",
        history.len()
    );
    assert_eq!(stack.sessions().snapshot(&"s-long".into(), 20).unwrap().resets, 1);
}

#[tokio::test]
async fn a_failing_model_falls_back_cools_down_alerts_and_recovers() {
    let ups = Upstreams::start(&["small", "medium", "large"]).await;
    let (sink, mut alerts) = ChannelSink::new(16);
    let stack = AgentStack::builder(ups.upstream())
        .agent(AgentSpec::new("trader"))
        .tiers(small_tiers())
        .cooldown(CooldownPolicy {
            base_cooldown: Duration::from_secs(3600),
            max_cooldown: Duration::from_secs(3600),
            ..CooldownPolicy::default()
        })
        .monitor_rule(Rule::new(
            "model_down",
            Selector::models(),
            Condition::consecutive_failures(5),
        ))
        .monitor_interval(Duration::from_secs(3600))
        .alert_receiver(sink)
        .build()
        .unwrap();
    let llm = stack.llm("trader");
    ups.get("small").fail_with_status(503);

    // Easy requests go to the low tier; every one is still answered, by medium.
    for i in 0..8 {
        let resp = llm
            .clone()
            .oneshot(user(&format!("s{i}"), "trader", &[Message::user("hi")]))
            .await
            .unwrap();
        let routed = resp.routed().unwrap();
        assert_eq!(routed.requested_tier.as_str(), "low");
        assert_eq!(routed.model.as_str(), "medium");
    }
    // Five failures cooled `small` down: later requests skip it.
    assert_eq!(ups.get("small").calls(), 5);
    let state = stack.router().model_snapshot("small").unwrap();
    assert_eq!(state.state.as_str(), "cooled_down");

    let monitor = stack.monitor().unwrap();
    monitor.tick();
    let firing = alerts.try_recv().unwrap();
    assert_eq!(
        (firing.rule.as_str(), firing.state),
        ("model_down", AlertState::Firing)
    );
    assert_eq!(firing.subject.name, "small");

    // The model recovers; an operator (or a monitor action) ends the cooldown;
    // the next low-tier request goes back to it and the alert resolves.
    ups.get("small").respond_with_text("back");
    use mantissa::core::control::ModelControl;
    assert!(stack.router().restore(&ModelId::new("small")));
    let resp = llm
        .clone()
        .oneshot(user("s-back", "trader", &[Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(resp.model.as_str(), "small");
    monitor.tick();
    let resolved = alerts.try_recv().unwrap();
    assert_eq!(
        (resolved.rule.as_str(), resolved.state),
        ("model_down", AlertState::Resolved)
    );
}

#[tokio::test]
async fn tool_failures_raise_a_sessions_brittleness() {
    let ups = Upstreams::start(&["small", "medium", "large"]).await;
    let tools = MockTools::demo();
    tools.fail_tool("get_market_price", ToolFault::reported());
    let stack = AgentStack::builder(ups.upstream())
        .agent(AgentSpec::new("trader"))
        .tiers(small_tiers())
        .tools(tools, ["get_market_price", "assess_risk", "place_order"])
        .without_monitor()
        .build()
        .unwrap();
    let llm = stack.llm("trader");
    // Two turns: a reset must have an older turn to remove (a compaction
    // that removes nothing is only a warning).
    let history = vec![
        Message::user("hello"),
        Message::assistant("hi"),
        Message::user("price of ACME?"),
    ];
    llm.clone()
        .oneshot(user("s-tools", "trader", &history))
        .await
        .unwrap();
    let before = stack.sessions().snapshot(&"s-tools".into(), 20).unwrap();
    assert_eq!(before.consecutive_tool_errors, 0);

    let tool_svc = stack.tools("trader");
    for i in 0..3 {
        let req = ToolRequest::new(
            "s-tools",
            "trader",
            format!("c{i}"),
            "get_market_price",
            serde_json::json!({"symbol": "ACME"}),
        );
        let out = tool_svc.clone().oneshot(req).await.unwrap();
        assert!(out.is_error);
    }
    let after = stack.sessions().snapshot(&"s-tools".into(), 20).unwrap();
    assert_eq!(after.consecutive_tool_errors, 3);
    let tool = stack.registry().tool("get_market_price").unwrap();
    assert_eq!(tool.last_1m.errors_of(FailureClass::ToolError), 3);

    // The next LLM call of the session assesses the streak (brittleness is
    // scored per call) and resets the context.
    let resp = llm
        .clone()
        .oneshot(user("s-tools", "trader", &history))
        .await
        .unwrap();
    let reset = ContextReset::of(&resp).expect("three tool errors in a row trigger a reset");
    assert_eq!(reset.reason.as_str(), "consecutive_errors");
    // The registry knows the reset is error-driven (the monitor's reset spike counts it).
    let trader = stack.registry().agent("trader").unwrap();
    assert_eq!(
        (trader.last_1m.context_resets, trader.last_1m.error_driven_resets),
        (1, 1)
    );
}

/// The router may fall back while no chunk has reached the caller, never after.
#[tokio::test]
async fn router_falls_back_before_the_first_chunk_but_not_after() {
    let a = HttpMockLlm::start().await;
    let b = HttpMockLlm::start().await;
    let tiers = TierSet::new(vec![
        TierConfig::new("low", vec![ModelSpec::new("a")]),
        TierConfig::new("high", vec![ModelSpec::new("b")]),
    ])
    .unwrap();
    let client = |url: String, model: &str| {
        OpenAiClient::new(OpenAiConfig::new(url).api_key("k").default_model(model)).unwrap()
    };
    let router = TierRouter::builder(tiers)
        .model("a", client(a.base_url(), "a"))
        .model("b", client(b.base_url(), "b"))
        .build()
        .unwrap();
    let streamed = || {
        let mut req = LlmRequest::new("s", "agent", vec![Message::user("hi")]).with_tier("low");
        req.params.stream = true;
        req
    };

    // 503 before the stream starts: the router falls back to b.
    a.fail_with_status(503);
    b.stream_text(["Hel", "lo"]);
    let mut resp = router.clone().oneshot(streamed()).await.unwrap();
    assert_eq!(resp.model.as_str(), "b");
    let mut text = String::new();
    let mut stream = resp.stream.take().unwrap();
    while let Some(chunk) = stream.next().await {
        text.push_str(chunk.unwrap().content.as_deref().unwrap_or(""));
    }
    assert_eq!(text, "Hello");
    assert_eq!(b.calls(), 1);

    // a streams its first chunk, then the connection is cut: the caller sees
    // the chunk and then a classified error; b is not called again.
    a.set_default(HttpReply::truncated_stream("partial answer here", 1));
    let mut resp = router.clone().oneshot(streamed()).await.unwrap();
    assert_eq!(resp.model.as_str(), "a");
    let mut stream = resp.stream.take().unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.content.is_some());
    let mut failure = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            failure = Some(classify_box(&e));
        }
    }
    assert!(
        matches!(
            failure,
            Some(FailureClass::Transport | FailureClass::InvalidResponse)
        ),
        "{failure:?}"
    );
    assert_eq!(b.calls(), 1, "no retry after the first chunk");
}

#[tokio::test]
async fn toml_configuration_builds_a_stack_and_names_bad_fields() {
    let text = r#"
        [[agents]]
        name = "planner"
        tier = "high"

        [[agents]]
        name = "clerk"

        [reset]
        max_turns = 30

        [metrics]
        install = false

        [monitor]
        enabled = false
    "#;
    let stack = AgentStack::from_toml(text).unwrap().build().unwrap();
    let resp = stack
        .llm("planner")
        .oneshot(user("s", "planner", &[Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(resp.model.as_str(), "mock-large");
    assert_eq!(stack.agents().count(), 2);

    let err = AgentStack::from_toml("[[agents]]\nname = \"x\"\ntier = \"ultra\"\n").unwrap_err();
    assert!(err.to_string().contains("agents.x.tier"), "{err}");
    let err = AgentStack::from_toml("[upstream]\nkind = \"carrier-pigeon\"\n").unwrap_err();
    assert!(err.to_string().contains("upstream.kind"), "{err}");
    let err = AgentStack::from_toml("[reset]\nmax_turns = \"many\"\n").unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");
}

/// Bad configuration is an error naming the field, never a silent default:
/// an empty tier ladder does not become the mock ladder (which an OpenAI
/// upstream would send to the provider), nor does a missing one with a real
/// upstream; absurd cooldown and monitor settings are refused.
#[tokio::test]
async fn bad_configuration_names_the_field_instead_of_defaulting() {
    for (text, field) in [
        ("tiers = []\n", "tiers"),
        (
            "tiers = []\n[upstream]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
            "tiers",
        ),
        (
            "[upstream]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
            "tiers",
        ),
        (
            "[cooldown]\nconsecutive_failures = 0\n",
            "cooldown.consecutive_failures",
        ),
        (
            "[cooldown]\nfailure_rate_threshold = 7.0\n",
            "cooldown.failure_rate_threshold",
        ),
        ("[monitor]\ninterval_secs = 0\n", "monitor.interval_secs"),
        (
            "[cooldown]\nbase_cooldown_secs = -1\n",
            "cooldown.base_cooldown_secs",
        ),
        (
            "[reset]\ncontext_warn = 0.9\ncontext_compact = 0.1\n",
            "reset.context_warn",
        ),
        ("[reset]\ncontext_compact = 1.5\n", "reset.context_compact"),
    ] {
        let err = AgentStack::from_toml(text).and_then(|b| b.build()).unwrap_err();
        assert!(err.to_string().contains(field), "{text:?}: {err}");
    }
}

/// After a scenario that exercises every layer, the exposition contains every
/// catalogued series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_every_catalogued_series() {
    let ups = Upstreams::start(&["small", "medium", "large"]).await;
    let (sink, _alerts_rx) = ChannelSink::new(1); // never drained: drops are counted
    // The medium model has no price: the fallbacks to it are calls of unknown cost.
    let mut tiers = small_tiers();
    tiers.tiers[1].models[0] = ModelSpec::new("medium").provider("mock").context_window(16_000);
    let stack = AgentStack::builder(ups.upstream())
        .agent(AgentSpec::new("trader"))
        .tiers(tiers)
        .tools(
            MockTools::demo(),
            MockTools::demo_specs().into_iter().map(|t| t.function.name),
        )
        .exporter(exporter())
        .reset_policy(compact_on_turns(3))
        .monitor_rule(Rule::new(
            "model_down",
            Selector::models(),
            Condition::consecutive_failures(5),
        ))
        // A second alert that fires, for the channel to drop (the session's
        // turn-limit resets are routine: no reset spike).
        .monitor_rule(Rule::new(
            "tokens",
            Selector::agents(),
            Condition::token_burn(Window::OneMinute, 1.0),
        ))
        .monitor_interval(Duration::from_secs(3600))
        .alert_receiver(sink)
        .build()
        .unwrap();
    let server = stack.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let llm = stack.llm("trader");

    // Plain calls, a long prompt (context warning on the 4k-token model), and a session that resets.
    let mut history = vec![Message::system("sys")];
    for turn in 0..4 {
        history.push(Message::user(format!("turn {turn}")));
        let resp = llm
            .clone()
            .oneshot(user("s-all", "trader", &history))
            .await
            .unwrap();
        history.push(resp.message);
    }
    let long = "word ".repeat(2_600);
    llm.clone()
        .oneshot(user("s-warn", "trader", &[Message::user(long)]).with_tier("low"))
        .await
        .unwrap();
    // Streaming: time to first chunk.
    let mut req = user("s-stream", "trader", &[Message::user("stream please")]);
    req.params.stream = true;
    ups.get("small").stream_text(["a", "b"]);
    let mut resp = llm.clone().oneshot(req).await.unwrap();
    if let Some(mut s) = resp.stream.take() {
        while s.next().await.is_some() {}
    }
    // A failing model: fallbacks, cooldown, an alert.
    ups.get("small").fail_with_status(500);
    for i in 0..20 {
        let _ = llm
            .clone()
            .oneshot(user(&format!("f{i}"), "trader", &[Message::user("hi")]))
            .await;
    }
    // Tools.
    stack
        .tools("trader")
        .oneshot(ToolRequest::new(
            "s-all",
            "trader",
            "c1",
            "get_market_price",
            serde_json::json!({"symbol": "ACME"}),
        ))
        .await
        .unwrap();
    let monitor = stack.monitor().unwrap();
    monitor.tick();
    monitor.tick();

    let body = scrape(server.local_addr()).await;
    let mut missing = Vec::new();
    for name in catalog::COUNTERS.iter().chain(catalog::GAUGES) {
        if !body.lines().any(|l| l.starts_with(name) && !l.starts_with('#')) {
            missing.push(*name);
        }
    }
    for (name, _) in catalog::HISTOGRAMS {
        if !body.contains(&format!("{name}_bucket{{")) {
            missing.push(*name);
        }
    }
    assert!(missing.is_empty(), "missing series: {missing:?}");
    server.shutdown().await.unwrap();
}

/// With agents configured, agent names the program passes to
/// `AgentStack::llm` that are not configured fold into `other` in every
/// metric family (health, triage, reset) and in the registry: one rule,
/// decided once for the stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agent_names_fold_into_other_in_every_metric_family() {
    let stack = AgentStack::demo()
        .agent(AgentSpec::new("trader"))
        .exporter(exporter())
        .without_monitor()
        .build()
        .unwrap();
    let server = stack.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for i in 0..300 {
        let req = LlmRequest::new(format!("s{i}"), "ignored", vec![Message::user("hello")]);
        stack.llm(format!("user-{i}")).oneshot(req).await.unwrap();
    }
    let body = scrape(server.local_addr()).await;
    let leaked: Vec<&str> = body.lines().filter(|l| l.contains("\"user-")).take(3).collect();
    assert!(leaked.is_empty(), "raw agent names became labels: {leaked:?}");
    for family in [
        catalog::CALLS_TOTAL,
        catalog::TRIAGE_DECISIONS_TOTAL,
        catalog::SESSION_BRITTLENESS,
    ] {
        assert!(
            body.lines()
                .any(|l| l.starts_with(family) && l.contains("agent=\"other\"")),
            "no `other` series in {family}"
        );
    }
    assert!(
        stack
            .registry()
            .agent_names()
            .iter()
            .all(|a| !a.starts_with("user-")),
        "{:?}",
        stack.registry().agent_names()
    );
    server.shutdown().await.unwrap();
}

/// Agent health is the agent's experience: calls the router recovered by
/// falling back are successes for the agent and failures for the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_attempts_are_the_models_failures_not_the_agents() {
    let ups = Upstreams::start(&["small", "medium", "large"]).await;
    ups.get("small").fail_with_status(500);
    let stack = AgentStack::builder(ups.upstream())
        .agent(AgentSpec::new("trader"))
        .tiers(small_tiers())
        .cooldown(CooldownPolicy {
            consecutive_failures: 1000,
            minimum_calls: 1000,
            ..CooldownPolicy::default()
        })
        .without_monitor()
        .build()
        .unwrap();
    for i in 0..8 {
        let req = user(&format!("r{i}"), "trader", &[Message::user("hi")]).with_tier("low");
        let resp = stack.llm("trader").oneshot(req).await.unwrap();
        assert_eq!(resp.model.as_str(), "medium");
    }
    let trader = stack.registry().agent("trader").unwrap();
    assert_eq!((trader.last_1m.successes, trader.last_1m.failures), (8, 0));
    assert_eq!(trader.consecutive_failures, 0);
    let small = stack.registry().model("small").unwrap();
    assert_eq!(small.last_1m.failures, 8);
}

/// `log_agent_action` records a health event in the registry's journal and
/// the stack's event sinks, like every call.
#[tokio::test]
async fn the_toolkits_logged_actions_reach_the_stacks_event_sinks() {
    use mantissa::core::{EventKind, HealthEvent};
    use std::sync::Mutex;
    let ups = Upstreams::start(&["small", "medium", "large"]).await;
    let seen: Arc<Mutex<Vec<HealthEvent>>> = Arc::default();
    let stack = AgentStack::builder(ups.upstream())
        .agent(AgentSpec::new("manager"))
        .tiers(small_tiers())
        .event_sink({
            let seen = seen.clone();
            move |e: &HealthEvent| seen.lock().unwrap().push(e.clone())
        })
        .without_monitor()
        .build()
        .unwrap();
    let r = stack.toolkit().call(
        "log_agent_action",
        &serde_json::json!({"agent": "manager", "action": "cool_down small", "outcome": "success"}),
    );
    assert!(!r.is_error, "{}", r.content);
    let actions: Vec<HealthEvent> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::AgentAction)
        .cloned()
        .collect();
    assert_eq!(actions.len(), 1);
    assert_eq!(&*actions[0].subject, "cool_down small");
    assert_eq!(stack.registry().recent(1)[0], actions[0]);
}

/// No count is lost under concurrency: 400 concurrent calls through the
/// whole stack leave the registry, the exposition and the in-flight gauge
/// agreeing with what the callers saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_counted_exactly_once() {
    let stack = AgentStack::demo()
        .agent(AgentSpec::new("counter"))
        .exporter(exporter())
        .without_monitor()
        .build()
        .unwrap();
    let server = stack.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let llm = stack.llm("counter");
        tasks.spawn(async move {
            let req = LlmRequest::new(format!("c{}", i % 37), "counter", vec![Message::user("count me")]);
            llm.oneshot(req).await.map(|_| ())
        });
    }
    let mut ok = 0u64;
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, 400);
    let agent = stack.registry().agent("counter").unwrap();
    assert_eq!((agent.last_1m.calls, agent.last_1m.successes), (400, 400));
    let body = scrape(server.local_addr()).await;
    let sum = |prefix: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(prefix) && l.contains("agent=\"counter\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sum("mantissa_calls_total{"), 400.0);
    assert_eq!(sum("mantissa_calls_in_flight{"), 0.0);
    server.shutdown().await.unwrap();
}

/// No silent mock: a stack built without `.tools(..)` answers every tool
/// call with an error that names the problem, and the health layer counts it
/// as a failed tool call (under `other`: no tool name is configured).
#[tokio::test]
async fn a_stack_without_tools_answers_tool_calls_with_an_error_that_says_so() {
    let stack = AgentStack::builder(Upstream::Mock(mantissa::mock::MockLlm::new()))
        .agent(AgentSpec::new("clerk"))
        .without_monitor()
        .build()
        .unwrap();
    let req = ToolRequest::new("s-none", "clerk", "c1", "lookup", serde_json::json!({}));
    let err = stack.tools("clerk").oneshot(req).await.unwrap_err();
    let missing = err
        .downcast_ref::<mantissa::ToolsNotConfigured>()
        .expect("a ToolsNotConfigured error");
    assert_eq!(missing.tool, "lookup");
    assert!(err.to_string().contains("no tool service configured"), "{err}");
    let tool = stack.registry().tool("other").unwrap();
    assert_eq!(tool.last_1m.errors_of(FailureClass::ToolError), 1);
}

/// The toolkit's tool service is built once with the stack: every agent's
/// `health_tools` measures into the same series, with the stack's bounded
/// agent labels (an unconfigured agent is `other`).
#[tokio::test]
async fn health_tools_are_measured_once_for_every_agent_with_bounded_labels() {
    let stack = AgentStack::demo()
        .agent(AgentSpec::new("manager"))
        .without_monitor()
        .build()
        .unwrap();
    for agent in ["manager", "intruder"] {
        let req = ToolRequest::new(
            "s-kit",
            agent,
            "c1",
            "get_agent_health_summary",
            serde_json::json!({}),
        );
        let resp = stack.health_tools(agent).oneshot(req).await.unwrap();
        assert!(!resp.is_error, "{}", resp.content);
    }
    let tool = stack.registry().tool("get_agent_health_summary").unwrap();
    assert_eq!(tool.last_1m.calls, 2);
    let agents = stack.registry().agent_names();
    assert!(!agents.iter().any(|a| a == "intruder"), "{agents:?}");
}

/// `[metrics]` is the application's: the builder installs nothing, and the
/// section says how the application installs the recorder.
#[test]
fn the_metrics_section_is_read_by_the_application() {
    let config = mantissa::StackConfig::from_toml("[metrics]\ninstall = false\n").unwrap();
    assert!(config.metrics.prometheus().is_none());
    assert!(config.metrics.install().unwrap().is_none());
    let config = mantissa::StackConfig::from_toml("[metrics]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    assert!(config.metrics.prometheus().is_some());
    let stack = AgentStack::from_toml("[monitor]\nenabled = false\n")
        .unwrap()
        .build()
        .unwrap();
    assert!(stack.exporter().is_none(), "the builder installed a recorder");
}
