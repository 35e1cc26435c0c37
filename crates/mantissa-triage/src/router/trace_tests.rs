//! The router's `route` span, captured with a recording `tracing`
//! subscriber: triage attributes, the fallback path as attempt events, and
//! each attempt's inner spans as children of the route span.

use mantissa_core::{BoxError, FailureClass, LlmError, LlmRequest, LlmResponse, Message, TierSet, Usage};
use tower::{ServiceExt, service_fn};
use tracing::Instrument;

use super::{ModelService, TierRouter};
use crate::{TierDecision, TriageReason};

use mantissa_mock::trace::{EventRecord as EventRec, SpanCapture as Capture, SpanRecord as SpanRec};

/// A model that opens its own span (as a health layer would) and fails
/// with a 503 or answers.
fn model(ok: bool) -> ModelService {
    tower::util::BoxCloneSyncService::new(service_fn(move |req: LlmRequest| {
        let model = req.model.clone().unwrap();
        let span = tracing::info_span!("model_call", model = model.as_str());
        async move {
            if ok {
                Ok(LlmResponse::new(
                    model,
                    Message::assistant("ok"),
                    Usage::default(),
                ))
            } else {
                Err::<LlmResponse, BoxError>(
                    LlmError::new(FailureClass::UpstreamServer, "down")
                        .with_status(503)
                        .into(),
                )
            }
        }
        .instrument(span)
    }))
}

fn router(small_ok: bool) -> TierRouter {
    TierRouter::builder(TierSet::default())
        .model("mock-small", model(small_ok))
        .model("mock-medium", model(true))
        .model("mock-large", model(true))
        .build()
        .unwrap()
}

#[test]
fn route_span_shows_the_fallback_path() {
    let cap = Capture::default();
    cap.run(async {
        let mut req = LlmRequest::new("s-9", "trader", vec![Message::user("hi")]).with_tier("low");
        req.decision = Some(TierDecision::new("low", 0.25, TriageReason::Rules));
        let resp = router(false)
            .oneshot(req)
            .instrument(tracing::info_span!("caller"))
            .await
            .unwrap();
        assert_eq!(resp.model.as_str(), "mock-medium");
    });
    let caller = cap.span("caller");
    let route = cap.span("route");
    assert_eq!(route.parent, Some(caller.id));
    assert!(route.closed);
    assert_eq!(route.get("otel.name"), Some("route low"));
    assert_eq!(route.get("mantissa.tier.requested"), Some("low"));
    assert_eq!(route.get("mantissa.triage.score"), Some("0.25"));
    assert_eq!(route.get("mantissa.triage.reason"), Some("rules"));
    assert_eq!(route.get("mantissa.fallback.attempts"), Some("2"));
    assert_eq!(route.get("mantissa.tier"), Some("medium"));
    assert_eq!(route.get("gen_ai.response.model"), Some("mock-medium"));
    assert_eq!(route.get("gen_ai.agent.name"), Some("trader"));
    assert_eq!(route.get("gen_ai.conversation.id"), Some("s-9"));
    assert_eq!(route.get("error.type"), None);

    // Each attempt's own span is a child of the route span, in order.
    let calls: Vec<SpanRec> = cap
        .spans()
        .into_iter()
        .filter(|s| s.name == "model_call")
        .collect();
    let models: Vec<_> = calls.iter().map(|s| s.get("model").unwrap().to_owned()).collect();
    assert_eq!(models, ["mock-small", "mock-medium"]);
    assert!(calls.iter().all(|s| s.parent == Some(route.id)));

    // One event per attempt, with the model and the outcome.
    let attempts: Vec<EventRec> = cap
        .events()
        .into_iter()
        .filter(|e| e.fields.contains_key("mantissa.fallback.attempt"))
        .collect();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|e| e.parent == Some(route.id)));
    let first = &attempts[0].fields;
    assert_eq!(first["mantissa.fallback.attempt"], "1");
    assert_eq!(first["gen_ai.request.model"], "mock-small");
    assert_eq!(first["outcome"], "error");
    assert_eq!(first["error.type"], "upstream_server_error");
    let second = &attempts[1].fields;
    assert_eq!(second["mantissa.fallback.attempt"], "2");
    assert_eq!(second["gen_ai.request.model"], "mock-medium");
    assert_eq!(second["outcome"], "success");
    assert!(!second.contains_key("error.type"));
}

#[test]
fn route_span_records_the_final_failure_and_cancellation() {
    let cap = Capture::default();
    cap.run(async {
        // Only the requested tier, which fails.
        let r = TierRouter::builder(TierSet::default())
            .model("mock-small", model(false))
            .model("mock-medium", model(true))
            .model("mock-large", model(true))
            .fallback_order(super::FallbackOrder::SameTier)
            .build()
            .unwrap();
        let err = r
            .oneshot(LlmRequest::new("s", "a", vec![Message::user("hi")]))
            .await
            .unwrap_err();
        assert_eq!(mantissa_core::classify_box(&err), FailureClass::UpstreamServer);

        // A hanging model, cancelled by the caller.
        let hang = tower::util::BoxCloneSyncService::new(service_fn(|_req: LlmRequest| {
            std::future::pending::<Result<LlmResponse, BoxError>>()
        }));
        let r = TierRouter::builder(TierSet::default())
            .model("mock-small", hang)
            .model("mock-medium", model(true))
            .model("mock-large", model(true))
            .build()
            .unwrap();
        let call = r.oneshot(LlmRequest::new("s", "a", vec![Message::user("hi")]));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(1), call)
                .await
                .is_err()
        );
    });
    let routes: Vec<SpanRec> = cap.spans().into_iter().filter(|s| s.name == "route").collect();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].get("error.type"), Some("upstream_server_error"));
    assert_eq!(routes[0].get("otel.status_code"), Some("ERROR"));
    assert_eq!(routes[0].get("mantissa.fallback.attempts"), Some("1"));
    assert_eq!(routes[1].get("error.type"), Some("cancelled"));
    assert_eq!(routes[1].get("otel.status_code"), None);
    assert!(routes.iter().all(|r| r.closed));
}
