//! The health layer's two metrics modes give the same exposition: the same
//! calls through a layer in `MetricsMode::Recorder` (rendered by the
//! `metrics` recorder) and through one in `MetricsMode::Cells` (its
//! registry's collector rendered by `ExporterHandle::register_collector`)
//! produce the same families, `# HELP`/`# TYPE` lines, series, label order,
//! buckets and values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mantissa_core::{
    BoxError, FailureClass, LlmError, LlmRequest, LlmResponse, Message, TierSet, ToolRequest, ToolResponse,
    Usage, catalog,
};
use mantissa_health::{HealthLayer, HealthRegistry, MetricsMode};
use mantissa_prometheus::{ExporterHandle, PrometheusConfig, PrometheusRecorder};
use tower::{Layer, ServiceExt, service_fn};

/// Runs the same calls through a layer built by `layer` under `recorder`.
fn drive(recorder: &PrometheusRecorder, layer: HealthLayer) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(recorder, || {
        rt.block_on(async {
            let llm = layer.layer(service_fn(|req: LlmRequest| async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if req.latest_user_message().is_some_and(|m| m.text() == "fail") {
                    return Err::<LlmResponse, BoxError>(Box::new(LlmError::new(
                        FailureClass::Timeout,
                        "slow",
                    )));
                }
                let model = req
                    .model
                    .clone()
                    .map_or("mock-small".to_owned(), |m| m.to_string());
                Ok(LlmResponse::new(
                    model,
                    Message::assistant("ok"),
                    Usage::new(300, 20),
                ))
            }));
            let tool = layer.layer(service_fn(|req: ToolRequest| async move {
                tokio::time::sleep(Duration::from_millis(3)).await;
                Ok::<_, BoxError>(if req.name.as_str() == "broken" {
                    ToolResponse::error("no")
                } else {
                    ToolResponse::ok("yes")
                })
            }));
            for (agent, model, text) in [
                ("trader", "mock-small", "hi"),
                ("trader", "mock-small", "hi"),
                ("analyst", "mock-large", "hi"),
                ("trader", "mock-medium", "fail"),
                ("trader", "unlisted-model", "hi"),
            ] {
                let req = LlmRequest::new("s1", agent, vec![Message::user(text)]).with_model(model);
                let _ = llm.clone().oneshot(req).await;
            }
            // A call dropped before it ends is cancelled.
            let req = LlmRequest::new("s1", "analyst", vec![Message::user("hi")]).with_model("mock-small");
            let _ = tokio::time::timeout(Duration::from_millis(1), llm.clone().oneshot(req)).await;
            for name in ["get_price", "broken"] {
                let req = ToolRequest::new("s1", "trader", "c1", name, serde_json::json!({}));
                let _ = tool.clone().oneshot(req).await;
            }
        })
    });
}

/// The health families of an exposition: comment lines, and series lines
/// by name and labels with their values. The overhead histogram is left out
/// (it samples 1 call in 16 per thread, so two runs differ).
fn parse(text: &str) -> (BTreeSet<String>, BTreeMap<String, f64>) {
    let mut comments = BTreeSet::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.contains(catalog::MIDDLEWARE_OVERHEAD) {
            continue;
        }
        if line.starts_with('#') {
            comments.insert(line.to_owned());
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        series.insert(key.to_owned(), value.parse::<f64>().unwrap());
    }
    (comments, series)
}

fn exposition(mode: MetricsMode) -> String {
    let (recorder, handle): (PrometheusRecorder, ExporterHandle) = PrometheusConfig::new()
        .global_label("replica", "a")
        .build_recorder()
        .unwrap();
    let registry = HealthRegistry::new();
    if mode == MetricsMode::Cells {
        handle.register_collector(registry.collector());
    }
    let layer = HealthLayer::with_registry(registry)
        .tiers(TierSet::default())
        .agents(["trader", "analyst"])
        .tools(["get_price", "broken"]);
    assert_eq!(layer.mode(), mode);
    drive(&recorder, layer);
    handle.render()
}

#[test]
fn cells_render_exactly_what_the_recorder_renders() {
    let recorded = exposition(MetricsMode::Recorder);
    let cells = exposition(MetricsMode::Cells);
    let (rc, rs) = parse(&recorded);
    let (cc, cs) = parse(&cells);
    assert_eq!(
        rc, cc,
        "comment lines differ\nrecorder:\n{recorded}\ncells:\n{cells}"
    );
    let rk: Vec<_> = rs.keys().collect();
    let ck: Vec<_> = cs.keys().collect();
    assert_eq!(rk, ck, "series differ\nrecorder:\n{recorded}\ncells:\n{cells}");
    for (key, want) in &rs {
        let got = cs[key];
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{key}: cells {got}, recorder {want}"
        );
    }
    // The exposition has every family the calls touch, the float counters typed `counter`.
    for needle in [
        "# TYPE mantissa_cost_usd_total counter",
        "# TYPE mantissa_counterfactual_cost_usd_total counter",
        "# TYPE gen_ai_client_operation_duration_seconds histogram",
        r#"mantissa_calls_total{replica="a",kind="llm",agent="trader",model="mock-medium",outcome="error",error_type="timeout"} 1"#,
        r#"mantissa_calls_in_flight{replica="a",kind="llm",agent="analyst"} 0"#,
        r#"mantissa_unknown_cost_calls_total{replica="a",model="other"} 1"#,
    ] {
        assert!(cells.contains(needle), "missing {needle}:\n{cells}");
    }
}
