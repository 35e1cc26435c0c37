//! Resolve once, carry a context: what `AgentStack` resolves at its entry
//! travels with the request, and the layers agree on it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};

use mantissa::core::{
    BoxError, LlmRequest, LlmResponse, METADATA_STAKES, Message, ModelSpec, TierRaised, TierSet, Usage,
};
use mantissa::reset::{BrittlenessPolicy, ContextWarning};
use mantissa::triage::{TierDecision, TriageReason};
use mantissa::{AgentSpec, AgentStack, LlmService, Upstream};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

type Seen = Arc<Mutex<Vec<LlmRequest>>>;

/// Every model answers at once and records the request it got.
fn recording(seen: Seen) -> Upstream {
    Upstream::Custom(Arc::new(
        move |spec: &ModelSpec| -> Result<LlmService, BoxError> {
            let seen = seen.clone();
            let id = spec.id.clone();
            Ok(BoxCloneSyncService::new(tower::service_fn(
                move |req: LlmRequest| {
                    seen.lock().unwrap().push(req);
                    std::future::ready(Ok::<_, BoxError>(LlmResponse::new(
                        id.clone(),
                        Message::assistant("ok"),
                        Usage::new(10, 2),
                    )))
                },
            )))
        },
    ))
}

/// A triage that reads the tier off the request's `stakes` metadata.
fn by_stakes(req: &LlmRequest) -> TierDecision {
    let tier = match req.metadata.get(METADATA_STAKES).map(String::as_str) {
        Some("high") => "high",
        Some("medium") => "medium",
        _ => "low",
    };
    TierDecision::new(tier, 0.5, TriageReason::Custom("stakes_test"))
}

fn turn(session: &str, text: &str, stakes: &str) -> LlmRequest {
    LlmRequest::new(session, "trader", vec![Message::user(text)]).with_metadata(METADATA_STAKES, stakes)
}

#[tokio::test(start_paused = true)]
async fn the_stack_resolves_the_call_context_once_and_every_layer_reads_it() {
    let seen: Seen = Arc::default();
    let stack = AgentStack::builder(recording(seen.clone()))
        .agent(AgentSpec::new("trader"))
        .triage(by_stakes)
        .without_monitor()
        .build()
        .unwrap();
    stack
        .llm("trader")
        .oneshot(turn("s1", "hi", "medium"))
        .await
        .unwrap();
    stack
        .llm("intruder-42")
        .oneshot(turn("s2", "hi", "low"))
        .await
        .unwrap();

    let seen = seen.lock().unwrap();
    let (a, b) = (&seen[0], &seen[1]);
    // Resolved at the entry: the agent's label index (configured agents
    // count from 1; unknown ones are `other`, index 0) and the session hash.
    assert_eq!(a.ctx.agent.index(), 1);
    assert!(b.ctx.agent.is_other());
    assert!(a.ctx.is_resolved() && a.ctx.session_hash != 0);
    assert_ne!(a.ctx.session_hash, b.ctx.session_hash);
    // Filled in on the way: triage's tier and the router's model, as indices
    // that agree with the names.
    assert_eq!(a.tier.as_ref().unwrap().as_str(), "medium");
    assert_eq!(a.ctx.tier.map(|t| t.index()), Some(1));
    assert_eq!(a.model.as_ref().unwrap().as_str(), "mock-medium");
    assert_eq!(a.ctx.model.map(|m| m.index()), Some(1));
}

#[tokio::test(start_paused = true)]
async fn stickiness_lives_in_the_session_state_and_is_reported_by_triage() {
    let seen: Seen = Arc::default();
    let stack = AgentStack::builder(recording(seen.clone()))
        .agent(AgentSpec::new("trader"))
        .triage(by_stakes)
        .without_monitor()
        .build()
        .unwrap();
    let llm = stack.llm("trader");
    let first = llm
        .clone()
        .oneshot(turn("s1", "a hard one", "high"))
        .await
        .unwrap();
    assert_eq!(first.model.as_str(), "mock-large");
    // A cheap follow-up in the same session stays on the session's tier...
    let next = llm.clone().oneshot(turn("s1", "thanks", "low")).await.unwrap();
    assert_eq!(next.model.as_str(), "mock-large");
    let d = next.tier_decision().unwrap();
    assert_eq!((d.tier.as_str(), d.reason), ("high", TriageReason::Sticky));
    assert_eq!(
        next.extensions.get::<TierRaised>(),
        Some(&TierRaised {
            from: "low".into(),
            to: "high".into()
        })
    );
    // ...kept with the session's state (one store, one hash)...
    let state = stack.sessions().snapshot(&"s1".into(), 20).unwrap();
    assert_eq!(state.sticky_rank, Some(2));
    // ...and another session is not affected.
    let other = llm.clone().oneshot(turn("s2", "thanks", "low")).await.unwrap();
    assert_eq!(other.model.as_str(), "mock-small");

    // Off: each call stands alone.
    let stack = AgentStack::builder(recording(seen.clone()))
        .triage(by_stakes)
        .sticky_tiers(false)
        .without_monitor()
        .build()
        .unwrap();
    let llm = stack.llm("trader");
    llm.clone()
        .oneshot(turn("s1", "a hard one", "high"))
        .await
        .unwrap();
    let next = llm.oneshot(turn("s1", "thanks", "low")).await.unwrap();
    assert_eq!(next.model.as_str(), "mock-small");
}

/// Reset runs once the tier is decided, so its context check uses the
/// window of the tier that will serve, not the smallest of all models.
#[tokio::test(start_paused = true)]
async fn reset_checks_the_window_of_the_tier_that_will_serve() {
    // TierSet::default(): low 16,384 / medium 65,536 / high 200,000 tokens.
    let stack = AgentStack::builder(recording(Arc::default()))
        .triage(by_stakes)
        .tiers(TierSet::default())
        .reset_policy(BrittlenessPolicy::default())
        .without_monitor()
        .build()
        .unwrap();
    let long = "x".repeat(4 * 30_000); // about 30k tokens
    let high = stack
        .llm("trader")
        .oneshot(turn("a", &long, "high"))
        .await
        .unwrap();
    assert!(
        high.extensions.get::<ContextWarning>().is_none(),
        "30k tokens are 15 % of the high tier's window"
    );
    let low = stack.llm("trader").oneshot(turn("b", &long, "low")).await;
    let flagged = match &low {
        Ok(r) => r.extensions.get::<ContextWarning>().is_some(),
        Err(_) => true,
    };
    assert!(flagged, "30k tokens are over the low tier's 16k window: {low:?}");
}
