//! The session store under the layer: idle TTL, capacity eviction,
//! concurrent updates and cancelled calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::control::SessionControl;
use mantissa_core::{
    BoxError, EventKind, EventSink, HealthEvent, LlmRequest, LlmResponse, Message, Outcome, Usage,
};
use mantissa_reset::{MemorySessionStore, ResetLayer, SessionStore, SummaryConfig};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[tokio::test(start_paused = true)]
async fn idle_sessions_expire_after_the_ttl() {
    let store = MemorySessionStore::builder()
        .idle_ttl(Some(Duration::from_secs(60)))
        .shards(1)
        .build();
    let seen: Seen = Default::default();
    let mut svc = ResetLayer::with_store(store.clone()).layer(model(seen));
    for s in ["a", "b"] {
        send(&mut svc, LlmRequest::new(s, "x", vec![Message::user("hi")]))
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&mut svc, LlmRequest::new("a", "x", vec![Message::user("hi")]))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(store.evict_idle(tokio::time::Instant::now()), 1);
    assert!(store.snapshot(&"a".into(), 20).is_some());
    assert!(store.snapshot(&"b".into(), 20).is_none());
    assert_eq!(store.len(), 1);
    // Lazy eviction: touching the store drops expired sessions of the shard.
    tokio::time::advance(Duration::from_secs(61)).await;
    send(&mut svc, LlmRequest::new("c", "x", vec![Message::user("hi")]))
        .await
        .unwrap();
    assert!(store.snapshot(&"a".into(), 20).is_none());
    assert_eq!(store.evictions().0, 2);
}

#[tokio::test(start_paused = true)]
async fn capacity_evicts_the_least_recently_active() {
    let store = MemorySessionStore::builder().capacity(3).idle_ttl(None).build();
    let seen: Seen = Default::default();
    let mut svc = ResetLayer::with_store(store.clone()).layer(model(seen));
    for s in ["a", "b", "c", "a", "d"] {
        send(&mut svc, LlmRequest::new(s, "x", vec![Message::user("hi")]))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(store.len(), 3);
    assert!(
        store.snapshot(&"b".into(), 20).is_none(),
        "b was least recently active"
    );
    for s in ["a", "c", "d"] {
        assert!(store.snapshot(&s.into(), 20).is_some(), "{s}");
    }
    assert_eq!(store.evictions(), (0, 1));
}

#[test]
fn concurrent_updates_of_one_session_lose_no_count() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemorySessionStore::new();
        let seen: Seen = Default::default();
        let svc = ResetLayer::with_store(store.clone())
            .policy(quiet_policy())
            .layer(model(seen));
        let sink = store.clone();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let mut svc = svc.clone();
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..250 {
                    let req = LlmRequest::new("shared", "a", vec![Message::user(format!("{t}-{i}"))]);
                    svc.ready().await.unwrap().call(req).await.unwrap();
                    sink.record(&HealthEvent::now(
                        "a".into(),
                        "shared".into(),
                        EventKind::Tool,
                        "t",
                        Outcome::Success,
                        Duration::ZERO,
                    ));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let snap = store.snapshot(&"shared".into(), 64).unwrap();
        assert_eq!((snap.turns, snap.llm_calls), (2000, 2000));
        assert_eq!(snap.calls_seen, 64);
        assert_eq!(snap.recent_errors, 0);
    });
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_leaves_no_half_written_state() {
    // The summarizer never answers: the call is dropped mid-compaction.
    let summarizer = service_fn(|_req: LlmRequest| async move {
        std::future::pending::<()>().await;
        Ok::<LlmResponse, BoxError>(LlmResponse::new("s", Message::assistant(""), Usage::default()))
    });
    let seen: Seen = Default::default();
    let layer = ResetLayer::new()
        .policy(quiet_policy())
        .summarizer(summarizer)
        .summary(SummaryConfig::new().timeout(Duration::from_secs(3600)));
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen.clone()));
    let h = vec![
        Message::system("sys"),
        Message::user("a"),
        Message::assistant("b"),
        Message::user("c"),
    ];
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    assert!(store.request_reset(&"s".into(), "test"));
    let fut = svc
        .ready()
        .await
        .unwrap()
        .call(LlmRequest::new("s", "a", h.clone()));
    let out = tokio::time::timeout(Duration::from_secs(1), fut).await;
    assert!(out.is_err(), "the call was still summarizing");
    // The call was counted (first atomic update); the reset was not half-done.
    let snap = store.snapshot(&"s".into(), 20).unwrap();
    assert_eq!((snap.llm_calls, snap.resets, snap.remembered_reset), (2, 0, None));
    assert_eq!(snap.pending_reset.as_deref(), Some("test"));
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing went out");
    // No lock is held: the store and the session keep working.
    assert!(store.request_reset(&"s".into(), "again"));
    assert!(store.remove(&"s".into()).await.unwrap());
}

/// The call context's session hash and the store's index are one hash: an
/// update by hash (the reset layer's, per call) and one by id (a tool
/// event's) reach the same session.
#[tokio::test(start_paused = true)]
async fn an_update_by_the_context_hash_and_one_by_id_reach_the_same_session() {
    let store = MemorySessionStore::new();
    let id = mantissa_core::SessionId::new("s-7");
    let hash = mantissa_core::session_hash(id.as_str());
    let now = tokio::time::Instant::now();
    store
        .update_hashed(&id, hash, now, |st| st.stick(2, now, Duration::from_secs(60)))
        .await
        .unwrap();
    let rank = store.update(&id, now, |st| st.sticky_rank()).await.unwrap();
    assert_eq!(rank, Some(2));
    assert_eq!(store.len(), 1);
}
