//! The triage layer and the router over the shared in-process mock LLM.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use mantissa_core::{FailureClass, LlmRequest, Message, TierSet};
use mantissa_mock::{MockFailure, MockLlm};
use mantissa_triage::{AgentSpawner, ModelState, Routed, RuleTriage, TierRouter, TriageLayer};
use tower::{Layer, ServiceExt};

fn router(mock: &MockLlm) -> TierRouter {
    TierRouter::builder(TierSet::default())
        .model("mock-small", mock.clone())
        .model("mock-medium", mock.clone())
        .model("mock-large", mock.clone())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failing_mock_model_is_cooled_down_and_probed_back() {
    let mock = MockLlm::new();
    let router = router(&mock);
    let tiers = TierSet::default();
    let stack = TriageLayer::new(&tiers, RuleTriage::new(&tiers))
        .without_stickiness()
        .layer(router.clone());
    mock.control()
        .fail_model("mock-small", MockFailure::new(FailureClass::UpstreamServer));
    for i in 0..25 {
        let req = LlmRequest::new(format!("s{i}"), "helper", vec![Message::user("hi!")]);
        let resp = stack.clone().oneshot(req).await.unwrap();
        assert_eq!(
            resp.extensions.get::<Routed>().unwrap().model.as_str(),
            "mock-medium"
        );
    }
    assert_eq!(mock.calls("mock-small"), 5);
    assert_eq!(
        router.model_snapshot("mock-small").unwrap().state,
        ModelState::CooledDown
    );
    mock.control().recover_model("mock-small");
    tokio::time::advance(Duration::from_secs(40)).await;
    let req = LlmRequest::new("s", "helper", vec![Message::user("hi!")]);
    let resp = stack.clone().oneshot(req).await.unwrap();
    assert_eq!(
        resp.extensions.get::<Routed>().unwrap().model.as_str(),
        "mock-small"
    );
    assert_eq!(
        router.model_snapshot("mock-small").unwrap().state,
        ModelState::Healthy
    );
}

#[tokio::test(start_paused = true)]
async fn spawned_agents_share_the_router() {
    let mock = MockLlm::new();
    let tiers = TierSet::default();
    let router = router(&mock);
    let spawner = AgentSpawner::new(router.clone(), &tiers);
    let cheap = spawner.spawn("scout", "low").unwrap();
    let expensive = spawner.spawn("analyst", "high").unwrap();
    for _ in 0..3 {
        let req = LlmRequest::new("s", "x", vec![Message::user("go")]);
        cheap.clone().oneshot(req.clone()).await.unwrap();
        expensive.clone().oneshot(req).await.unwrap();
    }
    assert_eq!((mock.calls("mock-small"), mock.calls("mock-large")), (3, 3));
    assert_eq!(mock.last_request().unwrap().agent.as_str(), "analyst");

    // The scout's calls cool the small model down ...
    mock.control()
        .fail_model("mock-small", MockFailure::new(FailureClass::UpstreamServer));
    for _ in 0..5 {
        let req = LlmRequest::new("s", "x", vec![Message::user("go")]);
        let resp = cheap.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.model.as_str(), "mock-medium");
    }
    assert_eq!(mock.calls("mock-small"), 8);
    assert_eq!(
        router.model_snapshot("mock-small").unwrap().state,
        ModelState::CooledDown
    );
    // ... and another agent of the same tier, spawned later, skips it.
    let helper = spawner.spawn("helper", "low").unwrap();
    let req = LlmRequest::new("s2", "x", vec![Message::user("go")]);
    let resp = helper.oneshot(req).await.unwrap();
    let routed = resp.extensions.get::<Routed>().unwrap();
    assert_eq!((routed.model.as_str(), routed.attempts), ("mock-medium", 1));
    assert_eq!(
        mock.calls("mock-small"),
        8,
        "the helper never called the cooled model"
    );
    assert_eq!(mock.last_request().unwrap().agent.as_str(), "helper");
}
