//! A layer given the stack's catalog finds a resolved request's series by its
//! call-context indices, with the same labels and windows as by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::{BoxError, Catalog, LlmRequest, LlmResponse, Message, TierSet, Usage};
use mantissa_health::HealthLayer;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn a_resolved_context_finds_its_series_by_index() {
    let tiers = TierSet::default();
    let catalog = Catalog::builder(&tiers).agents(["planner"]).build();
    let layer = HealthLayer::with_tiers(tiers).call_context(catalog.clone());
    let registry = layer.registry().clone();
    let svc = layer.layer(service_fn(|req: LlmRequest| async move {
        let model = req.model.clone().unwrap();
        Ok::<_, BoxError>(LlmResponse::new(
            model,
            Message::assistant("ok"),
            Usage::new(10, 2),
        ))
    }));
    let calls = [
        ("planner", "mock-small", true),
        ("planner", "mock-small", true),
        ("intern", "mock-large", true),
        // Not resolved by the catalog: found by name, counted the same way.
        ("planner", "mock-small", false),
    ];
    for (agent, model, resolve) in calls {
        let mut req = LlmRequest::new("s", agent, vec![Message::user("hi")]).with_model(model);
        if resolve {
            catalog.resolve(&mut req);
        }
        // A clone per call, as a router makes.
        svc.clone().oneshot(req).await.unwrap();
    }
    assert_eq!(registry.agent("planner").unwrap().last_1m.calls, 3);
    // The catalog's rule folds the unknown agent.
    assert_eq!(registry.agent("other").unwrap().last_1m.calls, 1);
    assert!(registry.agent("intern").is_none());
    assert_eq!(registry.model("mock-small").unwrap().last_1m.calls, 3);
    assert_eq!(registry.model("mock-large").unwrap().last_1m.input_tokens, 10);
}
