//! End-to-end tests of the agent service example: the demo runs in-process
//! on `127.0.0.1:0` (against the embedded mock, or an OpenAI-compatible HTTP
//! mock on loopback) and the tests read its report and its `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::OnceLock;
use std::time::Duration;

use example_agent_service::{Demo, DemoConfig};
use mantissa::core::{ModelSpec, TierConfig, TierSet, catalog};
use mantissa::mock::http::HttpMockLlm;
use mantissa::openai::OpenAiConfig;
use mantissa::{ExporterHandle, PrometheusConfig, Upstream};

/// The process's Prometheus recorder, installed once for every run of this
/// test binary (an application installs once too); no upkeep task, as every
/// test has its own runtime.
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

/// The demo with an outage tells the whole story, every run: the failing
/// model's traffic falls back, the model is cooled down, probed and
/// re-admitted; the consecutive-failures alert fires and resolves; no agent
/// call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_outage_falls_back_cools_down_readmits_and_alerts() {
    let mut demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        exporter: Some(exporter()),
        duration: Duration::from_secs(6),
        sessions: 12,
        think_time: Duration::from_millis(20),
        outage: Some((0.2, 0.5)),
        progress: None,
        monitor_interval: Duration::from_millis(100),
        seed: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let report = demo.wait().await.unwrap();
    let text = &report.text;
    assert!(report.fallbacks > 0, "no fallback\n{text}");
    assert_eq!(report.llm_errors, 0, "an agent call failed\n{text}");
    assert!(report.cooldowns >= 1, "never cooled down\n{text}");
    assert!(report.readmissions >= 1, "never re-admitted\n{text}");
    assert!(
        report
            .model_timeline
            .iter()
            .any(|l| l.contains("mock-small") && l.contains("-> cooled_down")),
        "{text}"
    );
    let fired = report.alert_timeline.iter().position(|l| {
        l.starts_with("firing") && l.contains("model_consecutive_failures") && l.contains("mock-small")
    });
    let resolved = report.alert_timeline.iter().position(|l| {
        l.starts_with("resolved") && l.contains("model_consecutive_failures") && l.contains("mock-small")
    });
    assert!(matches!((fired, resolved), (Some(f), Some(r)) if f < r), "{text}");
    // The report names its figures: failures after fallbacks, fallback-served responses.
    assert!(
        text.contains("failed after fallbacks") && text.contains("served by a fallback"),
        "{text}"
    );
    demo.shutdown().await.unwrap();
}

/// The main job's service on 127.0.0.1:0: `/metrics` over HTTP has labelled
/// series for each agent, model and tool, and every catalogued metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_labelled_series_for_every_agent_model_and_tool() {
    let mut demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        exporter: Some(exporter()),
        duration: Duration::from_secs(4),
        sessions: 12,
        think_time: Duration::from_millis(20),
        outage: Some((0.2, 0.5)),
        progress: None,
        monitor_interval: Duration::from_millis(200),
        max_turns: 4,
        seed: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let report = demo.wait().await.unwrap();
    assert!(report.turns >= 12 && report.tool_calls > 0, "{}", report.text);
    assert!(report.resets > 0, "sessions crossed max_turns\n{}", report.text);
    assert!(report.counterfactual_cost_usd > report.cost_usd);

    let body = scrape(demo.metrics_addr()).await;
    for agent in ["trader", "risk_analyst", "manager"] {
        assert!(
            body.contains(&format!("agent=\"{agent}\"")),
            "no series for agent {agent}"
        );
    }
    for model in ["mock-small", "mock-medium", "mock-large"] {
        assert!(
            body.contains(&format!("model=\"{model}\"")),
            "no series for model {model}"
        );
    }
    for tool in ["get_market_price", "assess_risk", "place_order"] {
        assert!(
            body.contains(&format!("tool=\"{tool}\"")),
            "no series for tool {tool}"
        );
    }
    // Histograms have buckets, never quantiles (summaries).
    assert!(body.contains("gen_ai_client_operation_duration_seconds_bucket{"));
    assert!(!body.contains("quantile=\""));
    // Session ids never become labels.
    assert!(!body.contains("trader-0"));
    demo.shutdown().await.unwrap();
}

/// The main job against a real OpenAI-compatible server (here the HTTP mock)
/// instead of the embedded mock: `--upstream URL --models a,b,c`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_against_an_openai_compatible_upstream() {
    let server = HttpMockLlm::start().await;
    server.respond_with_text("Holding; nothing to do.");
    let tiers = TierSet::new(vec![
        TierConfig::new("low", vec![ModelSpec::new("m-low")]),
        TierConfig::new("medium", vec![ModelSpec::new("m-mid")]),
        TierConfig::new("high", vec![ModelSpec::new("m-high")]),
    ])
    .unwrap();
    let mut demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        exporter: Some(exporter()),
        duration: Duration::from_millis(1500),
        sessions: 3,
        progress: None,
        upstream: Some(Upstream::OpenAi(Box::new(
            OpenAiConfig::new(server.base_url()).api_key("sk-x"),
        ))),
        tiers: Some(tiers),
        ..Default::default()
    })
    .await
    .unwrap();
    let report = demo.wait().await.unwrap();
    assert!(report.turns > 0 && report.llm_errors == 0, "{report:?}");
    let models: std::collections::BTreeSet<String> = server
        .request_bodies()
        .iter()
        .filter_map(|b| b["model"].as_str().map(str::to_owned))
        .collect();
    assert!(
        models.contains("m-low") && models.contains("m-high"),
        "{models:?}"
    );
    demo.shutdown().await.unwrap();
}

/// The main job against an OpenAI-compatible server with real model names
/// (`--upstream URL`, default `--models gpt-4o-mini,gpt-4o,o3`): the built-in
/// catalogue prices every call, so the report shows a real cost and savings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_reports_real_cost_and_savings_with_real_model_names() {
    let server = HttpMockLlm::start().await;
    server.respond_with_text("Holding; nothing to do.");
    let tiers = TierSet::new(
        ["gpt-4o-mini", "gpt-4o", "o3"]
            .into_iter()
            .zip(["low", "medium", "high"])
            .map(|(id, tier)| TierConfig::new(tier, vec![ModelSpec::new(id)]))
            .collect(),
    )
    .unwrap();
    let mut demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        exporter: Some(exporter()),
        duration: Duration::from_millis(1500),
        sessions: 3,
        progress: None,
        upstream: Some(Upstream::OpenAi(Box::new(
            OpenAiConfig::new(server.base_url()).api_key("sk-x"),
        ))),
        tiers: Some(tiers),
        ..Default::default()
    })
    .await
    .unwrap();
    let report = demo.wait().await.unwrap();
    assert!(report.turns > 0 && report.llm_errors == 0, "{report:?}");
    assert!(report.cost_usd > 0.0, "{}", report.text);
    assert!(
        report.counterfactual_cost_usd > report.cost_usd,
        "triage saves against o3: {}",
        report.text
    );
    assert!(!report.text.contains("saved $0.0000"), "{}", report.text);
    let body = scrape(demo.metrics_addr()).await;
    // (The recorder is process-wide: other tests' models may show up too.)
    let unpriced: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with(catalog::UNKNOWN_COST_CALLS_TOTAL))
        .filter(|l| {
            ["gpt-4o-mini", "gpt-4o", "o3", "other"]
                .iter()
                .any(|m| l.contains(&format!("\"{m}\"")))
        })
        .collect();
    assert!(unpriced.is_empty(), "every call was priced: {unpriced:?}");
    demo.shutdown().await.unwrap();
}
