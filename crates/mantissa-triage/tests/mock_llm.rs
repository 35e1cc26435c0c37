//! The triage layer and the router over the shared in-process mock LLM.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use mantissa_core::{AgentName, FailureClass, LlmRequest, Message, Tier, TierSet};
use mantissa_mock::{MockFailure, MockLlm};
use mantissa_triage::{ModelState, RuleTriage, TierRouter, TriageLayer};
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
    let stack = TriageLayer::new(&tiers, RuleTriage::new(&tiers)).layer(router.clone());
    mock.control()
        .fail_model("mock-small", MockFailure::new(FailureClass::UpstreamServer));
    for i in 0..25 {
        let req = LlmRequest::new(format!("s{i}"), "helper", vec![Message::user("hi!")]);
        let resp = stack.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.routed().unwrap().model.as_str(), "mock-medium");
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
    assert_eq!(resp.routed().unwrap().model.as_str(), "mock-small");
    assert_eq!(
        router.model_snapshot("mock-small").unwrap().state,
        ModelState::Healthy
    );
}

/// An agent bound to a tier over the shared router (what `AgentStack::llm`
/// does for a pinned agent): stamps its name and tier on every request.
fn agent(
    router: &TierRouter,
    name: &str,
    tier: &str,
) -> impl tower::Service<LlmRequest, Response = mantissa_core::LlmResponse, Error = mantissa_core::BoxError> + Clone
{
    let (name, tier) = (AgentName::new(name), Tier::new(tier));
    router.clone().map_request(move |mut req: LlmRequest| {
        req.agent = name.clone();
        req.tier = Some(tier.clone());
        req
    })
}

#[tokio::test(start_paused = true)]
async fn agents_bound_to_tiers_share_the_router() {
    let mock = MockLlm::new();
    let router = router(&mock);
    let cheap = agent(&router, "scout", "low");
    let expensive = agent(&router, "analyst", "high");
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
    // ... and another agent of the same tier, bound later, skips it.
    let helper = agent(&router, "helper", "low");
    let req = LlmRequest::new("s2", "x", vec![Message::user("go")]);
    let resp = helper.oneshot(req).await.unwrap();
    let routed = resp.routed().unwrap();
    assert_eq!((routed.model.as_str(), routed.attempts), ("mock-medium", 1));
    assert_eq!(
        mock.calls("mock-small"),
        8,
        "the helper never called the cooled model"
    );
    assert_eq!(mock.last_request().unwrap().agent.as_str(), "helper");
}
