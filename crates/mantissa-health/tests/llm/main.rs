//! LLM calls through the health layer: every metric with its exact labels
//! (streams too: time to first chunk, usage at the end), the failure class
//! of each real error, where the model comes from, and the costs from the
//! catalogue's prices. Metrics are read through a `MetricsCapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mantissa_core::catalog::{self, labels};
use mantissa_core::{
    BoxError, Cancelled, FailureClass, LlmError, LlmRequest, LlmResponse, Message, ModelSpec, Outcome,
    TierSet, Usage,
};
use mantissa_health::HealthLayer;
use mantissa_mock::metrics::MetricsCapture;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[test]
fn llm_call_records_every_metric_with_exact_labels() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
    });
}

#[test]
fn every_failure_class_is_classified_from_a_real_error() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
    });
}

#[test]
fn streams_record_ttfc_then_usage_at_the_end() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
    });
}

#[test]
fn model_comes_from_request_then_layer_then_response() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
        // A per-model instance under a router.
        let per_model =
            HealthLayer::new().model(ModelSpec::new("gpt-4o").provider("openai").pricing(2.5, 10.0));
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
    });
}

/// Real model names take the built-in catalogue's prices (prefixed or dated
/// ids too, cached input at the cached price); an unpriced or unconfigured
/// model costs 0 and is counted as a call of unknown cost.
#[test]
fn catalogue_prices_reach_the_cost_metrics_and_unknown_costs_are_counted() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
            !s.iter().any(|x| x.name == catalog::UNKNOWN_COST_CALLS_TOTAL
                && x.labels.iter().any(|(_, v)| v.contains("gpt"))),
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
    });
}
