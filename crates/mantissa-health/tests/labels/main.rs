//! Metric labels stay bounded: sessions never become labels, names from code
//! are capped without configuration, unknown models and agents fold into
//! `other`, and one service attributes each call to its own labels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mantissa_core::catalog;
use mantissa_core::{BoxError, TierSet, ToolRequest, ToolResponse, Usage};
use mantissa_health::HealthLayer;
use mantissa_mock::metrics::MetricsCapture;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[test]
fn ten_thousand_sessions_add_no_series() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
                .all(|s| s.labels.iter().all(|(_, v)| !v.starts_with("session-")))
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
    });
}

/// Labels that come from code are bounded even on a layer configured with
/// nothing: a thousand agent, tool and tier names make at most
/// `DEFAULT_MAX_LABELS` distinct values each, and the rest are `other`.
#[test]
fn names_from_code_are_bounded_without_configuration() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
            let values: std::collections::BTreeSet<&str> =
                series.iter().filter_map(|s| s.label(label)).collect();
            assert!(
                values.len() <= mantissa_core::DEFAULT_MAX_LABELS + 2,
                "{label}: {} values",
                values.len()
            );
        }
        assert!(series.iter().any(|s| s.label("tool") == Some("other")));
        assert!(series.iter().any(|s| s.label("agent") == Some("other")));
    });
}

#[test]
fn unknown_models_and_agents_fold_into_other() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
        assert!(s.iter().all(|x| {
            x.labels
                .iter()
                .all(|(_, v)| v != "gpt-9-turbo" && v != "intern-42")
        }));
        assert_eq!(registry.model("other").unwrap().last_1m.calls, 2);
        assert!(registry.model("gpt-9-turbo").is_none());
        assert_eq!(registry.agent_names(), ["other", "trader"]);
    });
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
