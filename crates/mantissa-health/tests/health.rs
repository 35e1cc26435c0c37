//! Observable behaviour of the health layer: metric values (through a local
//! `DebuggingRecorder`), registry windows, events and drop-safety.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mantissa_core::catalog::{self, labels};
use mantissa_core::{
    BoxError, Cancelled, Chunk, ChunkStream, EventKind, EventSink, FailureClass, HealthEvent, LlmError,
    LlmRequest, LlmResponse, Message, ModelSpec, Outcome, TierSet, ToolRequest, ToolResponse, Usage,
};
use mantissa_health::{HealthLayer, HealthRegistry, JsonLinesSink, Scope};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, Service, ServiceExt, service_fn};

// ---- helpers ----

type Series = Vec<(String, BTreeMap<String, String>, DebugValue)>;

/// Accumulates drained snapshots of a `DebuggingRecorder` (each snapshot
/// resets what it reads): counters and gauges add up, histograms append.
struct Metrics {
    snap: Snapshotter,
    acc: Series,
}

impl Metrics {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snap: recorder.snapshotter(),
            acc: Vec::new(),
        }
    }

    fn read(&mut self) -> &Series {
        for (k, _, _, v) in self.snap.snapshot().into_vec() {
            let key = k.key();
            let name = key.name().to_owned();
            let labels: BTreeMap<String, String> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            match self.acc.iter_mut().find(|(n, l, _)| *n == name && *l == labels) {
                None => self.acc.push((name, labels, v)),
                Some((_, _, old)) => match (old, v) {
                    (DebugValue::Counter(a), DebugValue::Counter(b)) => *a += b,
                    (DebugValue::Gauge(a), DebugValue::Gauge(b)) => {
                        *a = (a.into_inner() + b.into_inner()).into()
                    }
                    (DebugValue::Histogram(a), DebugValue::Histogram(b)) => a.extend(b),
                    (old, v) => panic!("{old:?} then {v:?}"),
                },
            }
        }
        &self.acc
    }
}

/// The value of the series with exactly these labels.
fn value<'a>(series: &'a Series, name: &str, want: &[(&str, &str)]) -> &'a DebugValue {
    let want: BTreeMap<String, String> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    series
        .iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| v)
        .unwrap_or_else(|| {
            let names: Vec<_> = series
                .iter()
                .filter(|(n, ..)| n == name)
                .map(|(_, l, _)| l)
                .collect();
            panic!("no {name} with {want:?}; have {names:#?}")
        })
}

fn counter(series: &Series, name: &str, want: &[(&str, &str)]) -> u64 {
    match value(series, name, want) {
        DebugValue::Counter(c) => *c,
        other => panic!("{name} is {other:?}"),
    }
}

fn gauge(series: &Series, name: &str, want: &[(&str, &str)]) -> f64 {
    match value(series, name, want) {
        DebugValue::Gauge(g) => g.into_inner(),
        other => panic!("{name} is {other:?}"),
    }
}

fn hist(series: &Series, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
    match value(series, name, want) {
        DebugValue::Histogram(h) => h.iter().map(|v| v.into_inner()).collect(),
        other => panic!("{name} is {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn chat(session: &str, agent: &str, model: Option<&str>) -> LlmRequest {
    let req = LlmRequest::new(session, agent, vec![Message::user("hello")]);
    match model {
        Some(m) => req.with_model(m),
        None => req,
    }
}

fn tool_req(session: &str, agent: &str, name: &str) -> ToolRequest {
    ToolRequest::new(
        session,
        agent,
        "call-1",
        name,
        serde_json::json!({"symbol": "XYZ"}),
    )
}

/// An LLM service that answers after `delay` with `usage` from model `model`.
fn llm(
    model: &'static str,
    usage: Usage,
    delay: Duration,
) -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_req: LlmRequest| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(LlmResponse::new(model, Message::assistant("ok"), usage))
    })
}

// ---- metrics ----

#[tokio::test(start_paused = true)]
async fn llm_call_records_every_metric_with_exact_labels() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let layer = HealthLayer::with_tiers(TierSet::default()).agents(["trader"]);
    let registry = layer.registry().clone();
    let svc = layer.layer(llm("mock-small", Usage::new(1000, 500), Duration::from_secs(2)));
    svc.oneshot(chat("s1", "trader", Some("mock-small")))
        .await
        .unwrap();

    let s = metrics.read();
    let gen_ai = [
        (labels::GEN_AI_OPERATION_NAME, "chat"),
        (labels::GEN_AI_PROVIDER_NAME, "mock"),
        (labels::GEN_AI_REQUEST_MODEL, "mock-small"),
        (labels::GEN_AI_AGENT_NAME, "trader"),
    ];
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_OPERATION_DURATION, &gen_ai),
        vec![2.0]
    );
    let with_type = |t| {
        let mut l = gen_ai.to_vec();
        l.push((labels::GEN_AI_TOKEN_TYPE, t));
        l
    };
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_TOKEN_USAGE, &with_type("input")),
        vec![1000.0]
    );
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_TOKEN_USAGE, &with_type("output")),
        vec![500.0]
    );
    assert_eq!(
        counter(
            s,
            catalog::CALLS_TOTAL,
            &[
                ("kind", "llm"),
                ("agent", "trader"),
                ("model", "mock-small"),
                ("outcome", "success")
            ]
        ),
        1
    );
    let tokens = |t| [("agent", "trader"), ("model", "mock-small"), ("token_type", t)];
    assert_eq!(counter(s, catalog::TOKENS_TOTAL, &tokens("input")), 1000);
    assert_eq!(counter(s, catalog::TOKENS_TOTAL, &tokens("output")), 500);
    // mock-small: $0.15 / $0.60 per Mtok; top tier mock-large: $5 / $15.
    let cost = gauge(
        s,
        catalog::COST_USD_TOTAL,
        &[("agent", "trader"), ("tier", "low"), ("model", "mock-small")],
    );
    assert!(close(cost, (1000.0 * 0.15 + 500.0 * 0.60) / 1e6), "{cost}");
    let cf = gauge(s, catalog::COUNTERFACTUAL_COST_USD_TOTAL, &[("agent", "trader")]);
    assert!(close(cf, (1000.0 * 5.0 + 500.0 * 15.0) / 1e6), "{cf}");
    assert_eq!(
        gauge(
            s,
            catalog::CALLS_IN_FLIGHT,
            &[("kind", "llm"), ("agent", "trader")]
        ),
        0.0
    );
    assert_eq!(
        hist(s, catalog::MIDDLEWARE_OVERHEAD, &[("layer", "health")]).len(),
        1
    );

    let w = registry.agent("trader").unwrap().last_1m;
    assert_eq!(
        (w.calls, w.successes, w.input_tokens, w.output_tokens),
        (1, 1, 1000, 500)
    );
    assert!(close(w.cost_usd, cost) && close(w.counterfactual_cost_usd, cf));
    assert!(close(w.savings_usd, cf - cost));
    let m = registry.model("mock-small").unwrap();
    let p50 = m.last_15m.p50_secs.unwrap();
    assert!((p50 - 2.0).abs() / 2.0 <= 0.125, "{p50}");
    assert!(close(m.latency_baseline_secs.unwrap(), 2.0));
}

#[tokio::test(start_paused = true)]
async fn every_failure_class_is_classified_from_a_real_error() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
        .await
        .unwrap_err();
    let json = serde_json::from_str::<serde_json::Value>("{oops").unwrap_err();
    let errors: Vec<(BoxError, FailureClass)> = vec![
        (Box::new(elapsed), FailureClass::Timeout),
        (
            Box::new(
                LlmError::new(
                    FailureClass::RateLimited {
                        retry_after: Some(Duration::from_secs(2)),
                    },
                    "slow down",
                )
                .with_status(429),
            ),
            FailureClass::RateLimited { retry_after: None },
        ),
        (
            Box::new(LlmError::new(FailureClass::UpstreamServer, "bad gateway").with_status(502)),
            FailureClass::UpstreamServer,
        ),
        (
            Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
            FailureClass::Transport,
        ),
        (Box::new(json), FailureClass::InvalidResponse),
        (
            Box::new(LlmError::new(FailureClass::ContextLengthExceeded, "too long").with_status(400)),
            FailureClass::ContextLengthExceeded,
        ),
        (
            Box::new(LlmError::new(FailureClass::ClientError, "bad field").with_status(400)),
            FailureClass::ClientError,
        ),
        (Box::new(std::fmt::Error), FailureClass::Other),
        (Box::new(Cancelled), FailureClass::Cancelled),
    ];
    let expected: Vec<FailureClass> = errors.iter().map(|(_, c)| *c).collect();
    let queue = Arc::new(Mutex::new(
        errors.into_iter().map(|(e, _)| e).collect::<VecDeque<_>>(),
    ));
    let inner = service_fn(move |_req: LlmRequest| {
        let err = queue.lock().unwrap().pop_front();
        async move {
            match err {
                Some(e) => Err::<LlmResponse, BoxError>(e),
                None => Ok(LlmResponse::new(
                    "mock-small",
                    Message::assistant("ok"),
                    Usage::default(),
                )),
            }
        }
    });
    let layer = HealthLayer::with_tiers(TierSet::default());
    let registry = layer.registry().clone();
    let mut svc = layer.layer(inner);
    for class in &expected {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(chat("s", "trader", Some("mock-small")))
            .await
            .unwrap_err();
        assert_eq!(mantissa_core::classify_box(&err).as_str(), class.as_str());
    }

    let s = metrics.read();
    for class in &expected {
        let outcome = Outcome::Failure(*class).as_str();
        let labels = [
            ("kind", "llm"),
            ("agent", "trader"),
            ("model", "mock-small"),
            ("outcome", outcome),
            ("error_type", class.as_str()),
        ];
        assert_eq!(counter(s, catalog::CALLS_TOTAL, &labels), 1, "{class}");
        let duration = [
            (labels::GEN_AI_OPERATION_NAME, "chat"),
            (labels::GEN_AI_PROVIDER_NAME, "mock"),
            (labels::GEN_AI_REQUEST_MODEL, "mock-small"),
            (labels::GEN_AI_AGENT_NAME, "trader"),
            (labels::ERROR_TYPE, class.as_str()),
        ];
        assert_eq!(
            hist(s, catalog::GEN_AI_CLIENT_OPERATION_DURATION, &duration).len(),
            1
        );
    }
    let m = registry.model("mock-small").unwrap();
    for class in &expected {
        assert_eq!(m.last_1m.errors_of(*class), 1, "{class}");
    }
    assert_eq!(m.last_1m.failures, 8);
    assert_eq!(m.last_1m.cancelled, 1);
    assert_eq!(m.consecutive_failures, 8);
    assert_eq!(m.last_failure, Some(FailureClass::Other));
    // The event carries the error message.
    let last_error = &registry.recent(2)[0];
    assert_eq!(
        last_error.detail.as_deref(),
        Some("an error occurred when formatting an argument")
    );
}

#[tokio::test(start_paused = true)]
async fn tool_calls_count_is_error_and_err_as_tool_errors() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let inner = service_fn(|req: ToolRequest| async move {
        match req.name.as_str() {
            "get_price" => Ok(ToolResponse::error("no such symbol")),
            "rm_rf" => Err::<ToolResponse, BoxError>("refused".into()),
            _ => Ok(ToolResponse::ok("42")),
        }
    });
    let layer = HealthLayer::new().tools(["get_price", "get_news"]);
    let registry = layer.registry().clone();
    let mut svc = layer.layer(inner);
    for name in ["get_price", "get_news", "rm_rf"] {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(tool_req("s", "trader", name))
            .await;
    }

    let s = metrics.read();
    let calls = |tool, outcome, error: Option<&'static str>| {
        let mut l = vec![
            ("kind", "tool"),
            ("agent", "trader"),
            ("tool", tool),
            ("outcome", outcome),
        ];
        if let Some(e) = error {
            l.push(("error_type", e));
        }
        counter(s, catalog::CALLS_TOTAL, &l)
    };
    assert_eq!(calls("get_price", "error", Some("tool_error")), 1);
    assert_eq!(calls("get_news", "success", None), 1);
    // Not allow-listed: folded into `other`; an `Err` from a tool is a tool error too.
    assert_eq!(calls("other", "error", Some("tool_error")), 1);
    let duration = [
        (labels::GEN_AI_OPERATION_NAME, "execute_tool"),
        (labels::GEN_AI_TOOL_NAME, "get_price"),
        (labels::GEN_AI_AGENT_NAME, "trader"),
        (labels::ERROR_TYPE, "tool_error"),
    ];
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_OPERATION_DURATION, &duration).len(),
        1
    );
    assert_eq!(
        gauge(
            s,
            catalog::CALLS_IN_FLIGHT,
            &[("kind", "tool"), ("agent", "trader")]
        ),
        0.0
    );
    assert!(
        !s.iter()
            .any(|(n, ..)| n == catalog::TOKENS_TOTAL || n == catalog::COST_USD_TOTAL)
    );

    let t = registry.tool("get_price").unwrap();
    assert_eq!(t.last_1m.errors_of(FailureClass::ToolError), 1);
    assert_eq!(registry.tool("other").unwrap().last_1m.failures, 1);
    assert_eq!(registry.agent("trader").unwrap().last_1m.calls, 3);
    let events = registry.recent(10);
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e.kind == EventKind::Tool && e.session.as_str() == "s")
    );
}

// ---- labels stay bounded ----

#[tokio::test(start_paused = true)]
async fn ten_thousand_sessions_add_no_series() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let layer = HealthLayer::with_tiers(TierSet::default());
    let mut llm_svc = layer.layer(llm("mock-small", Usage::new(5, 5), Duration::ZERO));
    let mut tool_svc = layer.layer(service_fn(|_r: ToolRequest| async {
        Ok::<_, BoxError>(ToolResponse::ok("x"))
    }));

    let mut run = async |i: usize| {
        let session = format!("session-{i}");
        let req = chat(&session, "trader", Some("mock-small"));
        llm_svc.ready().await.unwrap().call(req).await.unwrap();
        let req = tool_req(&session, "trader", "get_price");
        tool_svc.ready().await.unwrap().call(req).await.unwrap();
    };
    run(0).await;
    let before = metrics.read().len();
    for i in 1..10_000 {
        run(i).await;
    }
    let after = metrics.read();
    assert_eq!(after.len(), before, "series grew with sessions");
    assert!(
        after
            .iter()
            .all(|(_, l, _)| l.values().all(|v| !v.starts_with("session-")))
    );
    assert_eq!(
        counter(
            after,
            catalog::CALLS_TOTAL,
            &[
                ("kind", "tool"),
                ("agent", "trader"),
                ("tool", "get_price"),
                ("outcome", "success")
            ]
        ),
        10_000
    );
}

/// Labels that come from code are bounded even on a layer configured with
/// nothing: a thousand agent, tool and tier names make at most
/// `DEFAULT_MAX_LABELS` distinct values each, and the rest are `other`.
#[tokio::test(start_paused = true)]
async fn names_from_code_are_bounded_without_configuration() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let layer = HealthLayer::new();
    let mut llm_svc = layer.layer(llm("mock-small", Usage::new(5, 5), Duration::ZERO));
    let mut tool_svc = layer.layer(service_fn(|_r: ToolRequest| async {
        Ok::<_, BoxError>(ToolResponse::ok("x"))
    }));
    for i in 0..1_000 {
        let req = chat("s", &format!("agent-{i}"), Some("mock-small")).with_tier(format!("tier-{i}"));
        llm_svc.ready().await.unwrap().call(req).await.unwrap();
        let req = tool_req("s", "trader", &format!("tool-{i}"));
        tool_svc.ready().await.unwrap().call(req).await.unwrap();
    }
    let series = metrics.read();
    for label in ["agent", "tool", "tier", "gen_ai_agent_name", "gen_ai_tool_name"] {
        let values: std::collections::BTreeSet<&str> = series
            .iter()
            .filter_map(|(_, l, _)| l.get(label).map(String::as_str))
            .collect();
        assert!(
            values.len() <= mantissa_core::DEFAULT_MAX_LABELS + 2,
            "{label}: {} values",
            values.len()
        );
    }
    assert!(
        series
            .iter()
            .any(|(_, l, _)| l.get("tool").map(String::as_str) == Some("other"))
    );
    assert!(
        series
            .iter()
            .any(|(_, l, _)| l.get("agent").map(String::as_str) == Some("other"))
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_models_and_agents_fold_into_other() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let layer = HealthLayer::with_tiers(TierSet::default()).agents(["trader"]);
    let registry = layer.registry().clone();
    let svc = layer.layer(llm("gpt-9-turbo", Usage::new(100, 100), Duration::ZERO));
    svc.clone()
        .oneshot(chat("s", "intern-42", Some("gpt-9-turbo")))
        .await
        .unwrap();
    // No model on the request: the response's model decides (also unknown here).
    svc.oneshot(chat("s", "trader", None).with_tier("medium"))
        .await
        .unwrap();

    let s = metrics.read();
    let calls = |agent| {
        counter(
            s,
            catalog::CALLS_TOTAL,
            &[
                ("kind", "llm"),
                ("agent", agent),
                ("model", "other"),
                ("outcome", "success"),
            ],
        )
    };
    assert_eq!(calls("other"), 1);
    assert_eq!(calls("trader"), 1);
    assert_eq!(
        gauge(
            s,
            catalog::COST_USD_TOTAL,
            &[("agent", "trader"), ("tier", "medium"), ("model", "other")]
        ),
        0.0
    );
    assert!(
        s.iter()
            .all(|(_, l, _)| l.values().all(|v| v != "gpt-9-turbo" && v != "intern-42"))
    );
    assert_eq!(registry.model("other").unwrap().last_1m.calls, 2);
    assert!(registry.model("gpt-9-turbo").is_none());
    assert_eq!(registry.agent_names(), ["other", "trader"]);
}

#[tokio::test(start_paused = true)]
async fn model_comes_from_request_then_layer_then_response() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    // A per-model instance under a router.
    let per_model = HealthLayer::new().model(ModelSpec::new("gpt-4o").provider("openai").pricing(2.5, 10.0));
    per_model
        .layer(llm(
            "gpt-4o-2024-08-06",
            Usage::new(1_000_000, 100_000),
            Duration::ZERO,
        ))
        .oneshot(chat("s", "trader", None))
        .await
        .unwrap();
    // No model on request or layer: the response's model, and its catalog tier.
    let by_response = HealthLayer::with_tiers(TierSet::default());
    by_response
        .layer(llm("mock-medium", Usage::new(1_000_000, 0), Duration::ZERO))
        .oneshot(chat("s", "trader", None))
        .await
        .unwrap();

    let s = metrics.read();
    let cost = gauge(
        s,
        catalog::COST_USD_TOTAL,
        &[("agent", "trader"), ("tier", "none"), ("model", "gpt-4o")],
    );
    assert!(close(cost, 2.5 + 1.0), "{cost}");
    let duration = [
        (labels::GEN_AI_OPERATION_NAME, "chat"),
        (labels::GEN_AI_PROVIDER_NAME, "openai"),
        (labels::GEN_AI_REQUEST_MODEL, "gpt-4o"),
        (labels::GEN_AI_AGENT_NAME, "trader"),
    ];
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_OPERATION_DURATION, &duration).len(),
        1
    );
    let cost = gauge(
        s,
        catalog::COST_USD_TOTAL,
        &[("agent", "trader"), ("tier", "medium"), ("model", "mock-medium")],
    );
    assert!(close(cost, 1.0), "{cost}");
    // Without a tier set there is no counterfactual series; with one there is.
    let cf = gauge(s, catalog::COUNTERFACTUAL_COST_USD_TOTAL, &[("agent", "trader")]);
    assert!(close(cf, 5.0), "{cf}");
}

/// Real model names take the built-in catalogue's prices (prefixed or dated
/// ids too, cached input at the cached price); an unpriced or unconfigured
/// model costs 0 and is counted as a call of unknown cost.
#[tokio::test(start_paused = true)]
async fn catalogue_prices_reach_the_cost_metrics_and_unknown_costs_are_counted() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);
    let tiers = TierSet::new(vec![
        mantissa_core::TierConfig::new("low", vec![ModelSpec::new("openai/gpt-4o-mini-2024-07-18")]),
        mantissa_core::TierConfig::new("medium", vec![ModelSpec::new("my-finetune")]),
        mantissa_core::TierConfig::new("high", vec![ModelSpec::new("o3")]),
    ])
    .unwrap();
    let layer = HealthLayer::with_tiers(tiers);
    let registry = layer.registry().clone();
    let usage = Usage::new(1_000_000, 100_000).with_cached_input(400_000);
    for model in ["openai/gpt-4o-mini-2024-07-18", "my-finetune", "not-configured"] {
        layer
            .layer(llm("x", usage, Duration::ZERO))
            .oneshot(chat("s", "trader", Some(model)))
            .await
            .unwrap();
    }
    let s = metrics.read();
    // gpt-4o-mini: 600k x 0.15 + 400k x 0.075 + 100k x 0.60 = 0.18 dollars.
    let cost = gauge(
        s,
        catalog::COST_USD_TOTAL,
        &[
            ("agent", "trader"),
            ("tier", "low"),
            ("model", "openai/gpt-4o-mini-2024-07-18"),
        ],
    );
    assert!(close(cost, 0.18), "{cost}");
    // The counterfactual on o3 (2.00 / 0.50 cached / 8.00) for three calls.
    let cf = gauge(s, catalog::COUNTERFACTUAL_COST_USD_TOTAL, &[("agent", "trader")]);
    assert!(close(cf, 3.0 * (0.6 * 2.0 + 0.4 * 0.5 + 0.1 * 8.0)), "{cf}");
    for model in ["my-finetune", "other"] {
        assert_eq!(
            counter(s, catalog::UNKNOWN_COST_CALLS_TOTAL, &[("model", model)]),
            1,
            "{model}"
        );
    }
    assert!(
        !s.iter()
            .any(|(n, l, _)| n == catalog::UNKNOWN_COST_CALLS_TOTAL && l.values().any(|v| v.contains("gpt"))),
        "a priced model is never a call of unknown cost"
    );
    for (tier, model) in [("medium", "my-finetune"), ("none", "other")] {
        let cost = gauge(
            s,
            catalog::COST_USD_TOTAL,
            &[("agent", "trader"), ("tier", tier), ("model", model)],
        );
        assert_eq!(cost, 0.0, "unknown costs are not dollars: {model}");
    }
    let snapshot = registry.snapshot();
    let agent = &snapshot.agents["trader"];
    assert!(close(agent.last_1m.cost_usd, 0.18), "{}", agent.last_1m.cost_usd);
}

#[tokio::test(start_paused = true)]
async fn one_service_attributes_alternating_labels_correctly() {
    let layer = HealthLayer::with_tiers(TierSet::default());
    let registry = layer.registry().clone();
    let mut svc = layer.layer(llm("mock-small", Usage::new(1, 1), Duration::ZERO));
    for (agent, model, tier) in [
        ("a", "mock-small", None),
        ("b", "mock-small", None),
        ("a", "mock-large", None),
        ("a", "mock-large", Some("low")),
        ("a", "mock-large", Some("low")),
    ] {
        let mut req = chat("s", agent, Some(model));
        if let Some(t) = tier {
            req = req.with_tier(t);
        }
        svc.ready().await.unwrap().call(req).await.unwrap();
    }
    assert_eq!(registry.agent("a").unwrap().last_1m.calls, 4);
    assert_eq!(registry.agent("b").unwrap().last_1m.calls, 1);
    assert_eq!(registry.model("mock-small").unwrap().last_1m.calls, 2);
    let tiers: Vec<_> = registry
        .recent(10)
        .iter()
        .map(|e| e.tier.clone().unwrap().to_string())
        .collect();
    assert_eq!(tiers, ["low", "low", "high", "low", "low"]);
}

// ---- drop-safety and streams ----

#[tokio::test(start_paused = true)]
async fn dropped_future_is_cancelled_and_lowers_in_flight() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let layer = HealthLayer::with_tiers(TierSet::default());
    let registry = layer.registry().clone();
    let mut svc = layer.layer(service_fn(|_r: LlmRequest| async {
        std::future::pending::<Result<LlmResponse, BoxError>>().await
    }));
    let mut fut = Box::pin(
        svc.ready()
            .await
            .unwrap()
            .call(chat("s", "trader", Some("mock-large"))),
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut fut)
            .await
            .is_err()
    );
    let in_flight = [("kind", "llm"), ("agent", "trader")];
    assert_eq!(gauge(metrics.read(), catalog::CALLS_IN_FLIGHT, &in_flight), 1.0);
    drop(fut);

    let s = metrics.read();
    assert_eq!(gauge(s, catalog::CALLS_IN_FLIGHT, &in_flight), 0.0);
    let labels = [
        ("kind", "llm"),
        ("agent", "trader"),
        ("model", "mock-large"),
        ("outcome", "cancelled"),
        ("error_type", "cancelled"),
    ];
    assert_eq!(counter(s, catalog::CALLS_TOTAL, &labels), 1);
    let m = registry.model("mock-large").unwrap();
    assert_eq!(
        (m.last_1m.calls, m.last_1m.cancelled, m.last_1m.failures),
        (1, 1, 0)
    );
    assert_eq!(m.consecutive_failures, 0);
    assert_eq!(
        registry.recent(1)[0].outcome,
        Outcome::Failure(FailureClass::Cancelled)
    );
    assert_eq!(registry.recent(1)[0].duration, Duration::from_secs(3));
}

/// A streaming LLM: the first chunk after 250 ms, then 100 ms per chunk; the
/// last chunk carries usage; optionally an error instead of the last chunk.
fn streaming_llm(
    fail: bool,
) -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_req: LlmRequest| async move {
        let chunks = futures_util::stream::unfold(0u32, move |i| async move {
            let item: Result<Chunk, BoxError> = match i {
                0 | 1 => {
                    let wait = if i == 0 { 250 } else { 100 };
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    Ok(Chunk {
                        content: Some(format!("part {i} ")),
                        ..Chunk::default()
                    })
                }
                2 if fail => Err(Box::new(LlmError::new(FailureClass::InvalidResponse, "cut"))),
                2 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Chunk {
                        usage: Some(Usage::new(20, 7)),
                        ..Chunk::default()
                    })
                }
                _ => return None,
            };
            Some((item, i + 1))
        });
        Ok::<_, BoxError>(LlmResponse::streaming("mock-medium", ChunkStream::new(chunks)))
    })
}

#[tokio::test(start_paused = true)]
async fn streams_record_ttfc_then_usage_at_the_end() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let layer = HealthLayer::with_tiers(TierSet::default());
    let registry = layer.registry().clone();
    let resp = layer
        .layer(streaming_llm(false))
        .oneshot(chat("s", "trader", None))
        .await
        .unwrap();
    let mut stream = resp.stream.unwrap();
    let in_flight = [("kind", "llm"), ("agent", "trader")];
    assert_eq!(gauge(metrics.read(), catalog::CALLS_IN_FLIGHT, &in_flight), 1.0);
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        n += 1;
    }
    assert_eq!(n, 3);

    let s = metrics.read();
    let gen_ai = [
        (labels::GEN_AI_OPERATION_NAME, "chat"),
        (labels::GEN_AI_PROVIDER_NAME, "mock"),
        (labels::GEN_AI_REQUEST_MODEL, "mock-medium"),
        (labels::GEN_AI_AGENT_NAME, "trader"),
    ];
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, &gen_ai),
        vec![0.25]
    );
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_OPERATION_DURATION, &gen_ai),
        vec![0.45]
    );
    assert_eq!(gauge(s, catalog::CALLS_IN_FLIGHT, &in_flight), 0.0);
    let tokens = [
        ("agent", "trader"),
        ("model", "mock-medium"),
        ("token_type", "output"),
    ];
    assert_eq!(counter(s, catalog::TOKENS_TOTAL, &tokens), 7);
    let w = registry.model("mock-medium").unwrap().last_1m;
    assert_eq!(
        (w.calls, w.successes, w.input_tokens, w.output_tokens),
        (1, 1, 20, 7)
    );
}

#[tokio::test(start_paused = true)]
async fn stream_dropped_early_is_cancelled_and_error_chunks_are_classified() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics::new(&recorder);
    let _g = metrics::set_default_local_recorder(&recorder);

    let layer = HealthLayer::with_tiers(TierSet::default());
    let registry = layer.registry().clone();
    let resp = layer
        .layer(streaming_llm(false))
        .oneshot(chat("s", "trader", None))
        .await
        .unwrap();
    let mut stream = resp.stream.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);

    let resp = layer
        .layer(streaming_llm(true))
        .oneshot(chat("s", "trader", None))
        .await
        .unwrap();
    let items: Vec<_> = resp.stream.unwrap().collect().await;
    assert!(items[2].is_err());

    let s = metrics.read();
    assert_eq!(
        gauge(
            s,
            catalog::CALLS_IN_FLIGHT,
            &[("kind", "llm"), ("agent", "trader")]
        ),
        0.0
    );
    let calls = |outcome, error_type| {
        counter(
            s,
            catalog::CALLS_TOTAL,
            &[
                ("kind", "llm"),
                ("agent", "trader"),
                ("model", "mock-medium"),
                ("outcome", outcome),
                ("error_type", error_type),
            ],
        )
    };
    assert_eq!(calls("cancelled", "cancelled"), 1);
    assert_eq!(calls("error", "invalid_response"), 1);
    let ttfc = [
        (labels::GEN_AI_OPERATION_NAME, "chat"),
        (labels::GEN_AI_PROVIDER_NAME, "mock"),
        (labels::GEN_AI_REQUEST_MODEL, "mock-medium"),
        (labels::GEN_AI_AGENT_NAME, "trader"),
    ];
    assert_eq!(
        hist(s, catalog::GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, &ttfc),
        vec![0.25, 0.25]
    );
    let w = registry.model("mock-medium").unwrap().last_1m;
    assert_eq!((w.cancelled, w.failures), (1, 1));
    assert_eq!(w.errors_of(FailureClass::InvalidResponse), 1);
}

// ---- registry ----

#[tokio::test(start_paused = true)]
async fn registry_windows_hold_counts_classes_and_quantiles() {
    let registry = HealthRegistry::new();
    let layer = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    // Latency from the request's metadata; every tenth call fails with a 503.
    let inner = service_fn(|req: LlmRequest| async move {
        let ms: u64 = req.metadata["ms"].parse().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if ms % 10 == 0 {
            return Err::<LlmResponse, BoxError>(Box::new(
                LlmError::new(FailureClass::UpstreamServer, "unavailable").with_status(503),
            ));
        }
        Ok(LlmResponse::new(
            "mock-small",
            Message::assistant("ok"),
            Usage::new(10, 1),
        ))
    });
    let mut svc = layer.layer(inner);
    for ms in 1..=100u64 {
        let req = chat("s", "trader", Some("mock-small")).with_metadata("ms", ms.to_string());
        let _ = svc.ready().await.unwrap().call(req).await;
    }

    let snapshot = registry.snapshot();
    let m = snapshot.model("mock-small").unwrap();
    let w = &m.last_15m;
    assert_eq!((w.calls, w.successes, w.failures), (100, 90, 10));
    assert_eq!(w.errors_of(FailureClass::UpstreamServer), 10);
    assert!(close(w.error_rate, 0.1));
    assert_eq!(w.input_tokens, 900);
    for (got, want) in [(w.p50_secs, 0.050), (w.p95_secs, 0.095), (w.p99_secs, 0.099)] {
        let got = got.unwrap();
        assert!((got - want).abs() / want <= 0.125, "{got} vs {want}");
    }
    assert_eq!(m.consecutive_failures, 1);
    assert_eq!(m.total_calls, 100);
    // 100 calls over 5.05 s: the burn rate is per covered second.
    assert!(w.tokens_per_minute > 0.0 && w.cost_usd_per_hour > 0.0);
    // The model's score: its median against its own baseline (the agent's
    // latency is judged per call against its tier baseline, and this ramp
    // of latencies is an agent slowing down).
    let score = m.score;
    assert!(close(score, (91.0 / 101.0) * 0.8), "{score}");

    // Snapshots serialize for the toolkit and the monitor.
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(
        json["models"]["mock-small"]["last_15m"]["errors"]["upstream_server_error"],
        10
    );

    // Silence and expiry.
    tokio::time::advance(Duration::from_secs(120)).await;
    let m = registry.model("mock-small").unwrap();
    assert_eq!(m.last_1m.calls, 0);
    assert_eq!(m.last_15m.calls, 100);
    assert!(m.seconds_since_last_call.unwrap() >= 120.0);

    let recent = registry.recent(3);
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[2].outcome, Outcome::Failure(FailureClass::UpstreamServer));
    assert_eq!(recent[2].duration, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn registry_counts_context_resets_per_window() {
    let registry = HealthRegistry::new();
    let event = |kind| {
        HealthEvent::now(
            "trader".into(),
            "s".into(),
            kind,
            "summarize",
            Outcome::Success,
            Duration::ZERO,
        )
    };
    for _ in 0..3 {
        registry.record(&event(EventKind::ContextReset));
    }
    registry.record(&event(EventKind::ContextWarning));
    let w = registry.agent("trader").unwrap();
    assert_eq!((w.last_1m.context_resets, w.last_1m.context_warnings), (3, 1));
    assert_eq!(w.last_1m.calls, 0);
    tokio::time::advance(Duration::from_secs(65)).await;
    let w = registry.agent("trader").unwrap();
    assert_eq!((w.last_1m.context_resets, w.last_15m.context_resets), (0, 3));
    assert_eq!(registry.recent(10).len(), 4);
}

/// A failure streak is as old as its last call: a model that failed five
/// times and then got no traffic (cooled down) for 15 minutes scores 1 again
/// and shows no streak, as the score's documentation says.
#[tokio::test(start_paused = true)]
async fn a_failure_streak_expires_with_the_window() {
    let registry = HealthRegistry::new();
    let layer = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    let mut svc = layer.layer(service_fn(|_req: LlmRequest| async {
        Err::<LlmResponse, BoxError>(Box::new(
            LlmError::new(FailureClass::UpstreamServer, "unavailable").with_status(503),
        ))
    }));
    for _ in 0..5 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(chat("s", "trader", Some("mock-small")))
            .await;
    }
    let m = registry.model("mock-small").unwrap();
    assert_eq!(m.consecutive_failures, 5);
    assert!(m.score < 0.1, "{}", m.score);

    // Still inside the window: the streak holds.
    tokio::time::advance(Duration::from_secs(14 * 60)).await;
    assert_eq!(registry.model("mock-small").unwrap().consecutive_failures, 5);

    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    for h in [
        registry.model("mock-small").unwrap(),
        registry.agent("trader").unwrap(),
    ] {
        assert_eq!(h.consecutive_failures, 0, "{}", h.name);
        assert_eq!(h.score, 1.0, "{}", h.name);
        assert_eq!(h.last_failure, Some(FailureClass::UpstreamServer));
    }
}

/// A successful probe after a streak ends the streak: the score rises at once.
#[tokio::test(start_paused = true)]
async fn a_successful_probe_shows_in_the_score() {
    let registry = HealthRegistry::new();
    let layer = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail.clone();
    let mut svc = layer.layer(service_fn(move |_req: LlmRequest| {
        let failing = f.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            if failing {
                return Err::<LlmResponse, BoxError>(Box::new(LlmError::new(
                    FailureClass::Timeout,
                    "timed out",
                )));
            }
            Ok(LlmResponse::new(
                "mock-small",
                Message::assistant("ok"),
                Usage::new(5, 1),
            ))
        }
    }));
    for _ in 0..5 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(chat("s", "trader", Some("mock-small")))
            .await;
    }
    let before = registry.model("mock-small").unwrap().score;
    tokio::time::advance(Duration::from_secs(60)).await;
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    svc.ready()
        .await
        .unwrap()
        .call(chat("s", "trader", Some("mock-small")))
        .await
        .unwrap();
    let after = registry.model("mock-small").unwrap();
    assert_eq!(after.consecutive_failures, 0);
    // 1 success of 6 calls: (1 + 1) / (6 + 1), no streak factor.
    assert!(close(after.score, 2.0 / 7.0), "{before} -> {}", after.score);
    assert!(after.score > 4.0 * before);
}

/// Agent health is what the agent experienced. Under a router, per-model
/// layers record attempts ([`Scope::Attempt`]) and a layer above the router
/// records each call's final outcome ([`Scope::Outcome`]): a failed attempt
/// the router recovered from is the model's failure, not the agent's; and
/// moving the agent to a slower tier is not the agent getting slower.
#[tokio::test(start_paused = true)]
async fn agent_health_is_the_final_outcome_against_the_tier_baseline() {
    let registry = HealthRegistry::new();
    let base = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    // Upstreams: `mock-small` always fails, `mock-medium` answers in 20 ms,
    // `mock-large` in 800 ms.
    let small = base
        .clone()
        .scope(Scope::Attempt)
        .model(TierSet::default().catalog().get("mock-small").unwrap().clone())
        .layer(service_fn(|_req: LlmRequest| async {
            Err::<LlmResponse, BoxError>(Box::new(
                LlmError::new(FailureClass::UpstreamServer, "down").with_status(503),
            ))
        }));
    let medium = base.clone().scope(Scope::Attempt).layer(llm(
        "mock-medium",
        Usage::new(10, 2),
        Duration::from_millis(20),
    ));
    let large = base.clone().scope(Scope::Attempt).layer(llm(
        "mock-large",
        Usage::new(10, 2),
        Duration::from_millis(800),
    ));
    // A tiny router: `low` tries small then falls back to medium; `high` goes to large.
    let router = service_fn(move |mut req: LlmRequest| {
        let (mut small, mut medium, mut large) = (small.clone(), medium.clone(), large.clone());
        async move {
            if req.tier.as_ref().map(|t| t.as_str()) == Some("high") {
                req.model = Some("mock-large".into());
                return large.ready().await?.call(req).await;
            }
            let mut attempt = req.clone();
            attempt.model = Some("mock-small".into());
            if let Ok(r) = small.ready().await?.call(attempt).await {
                return Ok(r);
            }
            req.model = Some("mock-medium".into());
            req.tier = Some("medium".into());
            medium.ready().await?.call(req).await
        }
    });
    let mut agent = base.clone().scope(Scope::Outcome).layer(router);

    for _ in 0..30 {
        let req = chat("s", "trader", None).with_tier("low");
        agent.ready().await.unwrap().call(req).await.unwrap();
    }
    let trader = registry.agent("trader").unwrap();
    assert_eq!((trader.last_1m.calls, trader.last_1m.failures), (30, 0));
    assert_eq!(trader.consecutive_failures, 0);
    assert_eq!(trader.score, 1.0);
    let small_h = registry.model("mock-small").unwrap();
    assert_eq!(small_h.last_1m.failures, 30);
    assert_eq!(registry.model("mock-medium").unwrap().last_1m.successes, 30);
    // The agent's tokens and cost are those of the calls that served it.
    assert_eq!(trader.last_1m.input_tokens, 300);
    assert!(trader.last_1m.cost_usd > 0.0);

    // Triage moves the agent to the slow top tier: 40 times slower, as expected of that tier.
    tokio::time::advance(Duration::from_secs(61)).await;
    for _ in 0..30 {
        let req = chat("s", "trader", None).with_tier("high");
        agent.ready().await.unwrap().call(req).await.unwrap();
    }
    let trader = registry.agent("trader").unwrap();
    assert!(trader.last_1m.p50_secs.unwrap() > 0.7);
    assert_eq!(
        trader.score, 1.0,
        "latency is judged against the serving tier's baseline"
    );

    // The same tier getting slower is the agent getting slower.
    let slow_large = base.clone().scope(Scope::Attempt).layer(llm(
        "mock-large",
        Usage::new(10, 2),
        Duration::from_millis(4_000),
    ));
    let mut slow = base.clone().scope(Scope::Outcome).layer(slow_large);
    tokio::time::advance(Duration::from_secs(61)).await;
    for _ in 0..5 {
        let req = chat("s", "trader", Some("mock-large")).with_tier("high");
        slow.ready().await.unwrap().call(req).await.unwrap();
    }
    let trader = registry.agent("trader").unwrap();
    assert!(trader.score < 0.5, "{}", trader.score);
}

// ---- events ----

#[tokio::test(start_paused = true)]
async fn json_lines_sink_writes_one_parseable_event_per_call() {
    let dir = std::env::temp_dir().join(format!(
        "mantissa-health-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let sink = Arc::new(JsonLinesSink::create(&path).unwrap());

    let layer = HealthLayer::with_tiers(TierSet::default()).sink(sink.clone());
    let llm_svc = layer.layer(llm("mock-small", Usage::new(3, 4), Duration::from_millis(20)));
    for i in 0..3 {
        llm_svc
            .clone()
            .oneshot(chat(&format!("s{i}"), "trader", Some("mock-small")))
            .await
            .unwrap();
    }
    let tool = layer.layer(service_fn(|_r: ToolRequest| async {
        Ok::<_, BoxError>(ToolResponse::error("no"))
    }));
    tool.oneshot(tool_req("s9", "trader", "get_price")).await.unwrap();
    drop((layer, llm_svc));
    assert_eq!(sink.dropped(), 0);
    drop(Arc::try_unwrap(sink).unwrap()); // flushes and joins the writer

    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<HealthEvent> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].session.as_str(), "s0");
    assert_eq!(&*events[0].subject, "mock-small");
    assert_eq!(events[0].usage, Usage::new(3, 4));
    assert_eq!(events[0].duration, Duration::from_millis(20));
    assert_eq!(events[0].tier.as_ref().map(|t| t.as_str()), Some("low"));
    assert_eq!(events[3].kind, EventKind::Tool);
    assert_eq!(events[3].outcome, Outcome::Failure(FailureClass::ToolError));
    std::fs::remove_dir_all(&dir).unwrap();
}
