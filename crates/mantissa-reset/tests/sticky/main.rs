//! Session stickiness lives in the session state: a tier triage chose may
//! rise within a session but not fall, and the window the reset layer
//! checks is the window of the tier that will serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mantissa_core::{
    BoxError, Catalog, LlmRequest, LlmResponse, Message, TierRaised, TierSet, TierSource, Usage,
};
use mantissa_reset::{BrittlenessPolicy, ContextWarning, ResetLayer, SessionStore};
use tower::{Layer, Service, ServiceExt, service_fn};

type Seen = Arc<Mutex<Vec<LlmRequest>>>;

fn model(
    seen: Seen,
) -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |req: LlmRequest| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(req);
            Ok::<_, BoxError>(LlmResponse::new("m", Message::assistant("ok"), Usage::default()))
        }
    })
}

/// A request as triage leaves it: its tier chose by a strategy.
fn triaged(catalog: &Catalog, session: &str, tier: &str, history: Vec<Message>) -> LlmRequest {
    let mut req = LlmRequest::new(session, "agent", history).with_tier(tier);
    catalog.resolve(&mut req);
    req.ctx.tier_source = TierSource::Triage;
    req
}

fn hello() -> Vec<Message> {
    vec![Message::user("hello")]
}

#[tokio::test(start_paused = true)]
async fn within_a_session_a_triaged_tier_rises_but_does_not_fall() {
    let catalog = Catalog::new(&TierSet::default());
    let seen: Seen = Arc::default();
    let layer = ResetLayer::new()
        .catalog(catalog.clone())
        .stickiness(Duration::from_secs(600));
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen.clone()));
    let served = |resp: &LlmResponse| resp.extensions.get::<TierRaised>().cloned();

    let r = svc
        .ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "a", "high", hello()))
        .await
        .unwrap();
    assert_eq!(served(&r), None);
    // A cheaper decision later in the session is raised to the session's tier.
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "a", "low", hello()))
        .await
        .unwrap();
    assert_eq!(
        served(&r),
        Some(TierRaised {
            from: "low".into(),
            to: "high".into()
        })
    );
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.tier.as_ref().map(|t| t.as_str()), Some("high"));
    assert_eq!(
        last.ctx.tier,
        catalog.tier_index("high"),
        "the context follows the raise"
    );
    // The sticky tier is part of the session's state (so it follows the session to a shared store).
    let state = store.get(&"a".into()).await.unwrap().unwrap();
    assert_eq!(state.sticky_rank(), Some(2));

    // Another session is not affected; a tier the caller chose is never raised.
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "b", "low", hello()))
        .await
        .unwrap();
    assert_eq!(served(&r), None);
    let mut pinned = triaged(&catalog, "a", "low", hello());
    pinned.ctx.tier_source = TierSource::Caller;
    let r = svc.ready().await.unwrap().call(pinned).await.unwrap();
    assert_eq!(served(&r), None);

    // After the idle TTL the session may fall again.
    tokio::time::advance(Duration::from_secs(601)).await;
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "a", "low", hello()))
        .await
        .unwrap();
    assert_eq!(served(&r), None);

    // Without stickiness each request stands alone.
    let mut svc = ResetLayer::new()
        .catalog(catalog.clone())
        .without_stickiness()
        .layer(model(seen.clone()));
    svc.ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "c", "high", hello()))
        .await
        .unwrap();
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "c", "low", hello()))
        .await
        .unwrap();
    assert_eq!(served(&r), None);
}

/// The context check uses the window of the tier that will serve, not the
/// smallest window of all models.
#[tokio::test(start_paused = true)]
async fn the_window_is_the_serving_tiers() {
    // TierSet::default(): low 16,384 / medium 65,536 / high 200,000 tokens.
    let catalog = Catalog::new(&TierSet::default());
    let policy = BrittlenessPolicy::default();
    let big = vec![Message::user("x".repeat(4 * 30_000))]; // ~30k tokens: 46 % of medium, 183 % of low
    let warned = |resp: &LlmResponse| resp.extensions.get::<ContextWarning>().is_some();
    let seen: Seen = Arc::default();
    let mut svc = ResetLayer::new()
        .catalog(catalog.clone())
        .policy(policy.clone())
        .layer(model(seen.clone()));
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "a", "high", big.clone()))
        .await
        .unwrap();
    assert!(!warned(&r), "30k tokens fit the high tier's 200k window");
    // A session raised to `high` by stickiness is checked against high's window.
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(triaged(&catalog, "a", "low", big.clone()))
        .await
        .unwrap();
    assert!(r.extensions.get::<TierRaised>().is_some());
    assert!(!warned(&r), "raised to high: high's window");
    // The same history triaged to `low` in a fresh session is over low's window.
    let r = svc.oneshot(triaged(&catalog, "b", "low", big)).await;
    let warned_low = match &r {
        Ok(resp) => warned(resp) || seen.lock().unwrap().last().unwrap().messages.len() != 1,
        Err(_) => true,
    };
    assert!(warned_low, "30k tokens are over low's 16k window: {r:?}");
}
