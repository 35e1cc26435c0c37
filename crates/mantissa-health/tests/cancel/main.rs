//! Drop safety: a dropped call future or a stream dropped before its end is
//! recorded as cancelled and lowers the in-flight gauge; an error chunk in a
//! stream is classified like an error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use mantissa_core::catalog::{self, labels};
use mantissa_core::{BoxError, FailureClass, LlmRequest, LlmResponse, Outcome, TierSet};
use mantissa_health::HealthLayer;
use mantissa_mock::metrics::MetricsCapture;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[test]
fn dropped_future_is_cancelled_and_lowers_in_flight() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
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
    });
}

#[test]
fn stream_dropped_early_is_cancelled_and_error_chunks_are_classified() {
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
    });
}
