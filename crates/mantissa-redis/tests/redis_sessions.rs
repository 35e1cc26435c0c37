//! Two reset layers as two replicas sharing sessions through a real
//! `redis-server` (started by the test; see `common`). The test fails (never
//! skips) when the binary is missing: `apt-get install redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::RedisServer;
use mantissa_core::{BoxError, CharEstimator, LlmRequest, LlmResponse, Message, TokenEstimator, Usage};
use mantissa_redis::{RedisConfig, RedisSessions};
use mantissa_reset::{
    BrittlenessPolicy, ContextReset, MemorySessionStore, ResetLayer, SessionStore, Stage, StagePlan, Trigger,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

type Seen = Arc<Mutex<Vec<LlmRequest>>>;
type Svc = BoxCloneSyncService<LlmRequest, LlmResponse, BoxError>;

/// A model that records each request and reports usage.
fn model(seen: Seen) -> Svc {
    BoxCloneSyncService::new(service_fn(move |req: LlmRequest| {
        let seen = seen.clone();
        async move {
            let input = CharEstimator.estimate_messages(req.messages());
            seen.lock().unwrap().push(req);
            Ok::<_, BoxError>(LlmResponse::new(
                "m",
                Message::assistant("ok"),
                Usage::new(input, 5),
            ))
        }
    }))
}

/// Compacts (trims: no summarizer) after 3 user turns; nothing else fires.
fn policy() -> BrittlenessPolicy {
    BrittlenessPolicy::default()
        .max_consecutive_errors(None)
        .error_rate(None)
        .unwrap()
        .latency_drift(None, 5)
        .unwrap()
        .context_thresholds(None, None)
        .unwrap()
        .max_turns(Some(3))
        .stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize))
}

struct Replica {
    svc: Svc,
    seen: Seen,
    store: MemorySessionStore,
}

fn replica(url: &str, prefix: &str) -> Replica {
    let shared = RedisSessions::new(&RedisConfig::new(url).prefix(prefix)).unwrap();
    let store = MemorySessionStore::builder().shared(Arc::new(shared)).build();
    let seen: Seen = Default::default();
    let layer = ResetLayer::with_store(store.clone()).policy(policy());
    let svc = BoxCloneSyncService::new(layer.layer(model(seen.clone())).map_err(Into::<BoxError>::into));
    Replica { svc, seen, store }
}

async fn turn(r: &Replica, session: &str, history: &[Message]) -> LlmResponse {
    r.svc
        .clone()
        .oneshot(LlmRequest::new(session, "agent", history.to_vec()))
        .await
        .expect("every call succeeds")
}

/// Polls `cond` every 10 ms for up to 5 s (waiting for a write behind, not
/// measuring speed).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The shared copy of a session (its JSON, as the raw reply).
fn stored(server: &RedisServer, prefix: &str, session: &str) -> String {
    server.command(&["HGET", &format!("{prefix}:session:{session}"), "s"])
}

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let s = recorder.snapshotter();
        metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
        s
    })
}

fn redis_errors(component: &str) -> u64 {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| {
            k.key().name() == "mantissa_redis_errors_total"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "component" && l.value() == component)
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => c,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_remembered_reset_crosses_replicas() {
    snapshotter();
    let server = RedisServer::start();
    let (a, b) = (replica(&server.url(), "s1"), replica(&server.url(), "s1"));

    // A caller that resends its whole history; its turns alternate between
    // the replicas, so the turn count itself must cross them.
    let mut h = vec![Message::system("sys")];
    for (n, r) in [(1, &a), (2, &b)] {
        h.push(Message::user(format!("q{n}")));
        let resp = turn(r, "conv", &h).await;
        assert!(ContextReset::of(&resp).is_none());
        h.push(resp.message);
        eventually("the turn is shared", || {
            stored(&server, "s1", "conv").contains(&format!("\"turns\":{n},"))
        })
        .await;
    }
    // The third turn, on A, crosses the threshold counted over both replicas.
    h.push(Message::user("q3"));
    let resp = turn(&a, "conv", &h).await;
    let reset = ContextReset::of(&resp).expect("the third turn resets");
    assert_eq!(reset.turns, 3);
    let compacted = reset.history.to_vec();
    assert!(compacted.len() < h.len());
    h.push(resp.message);
    eventually("the reset is shared", || {
        let s = stored(&server, "s1", "conv");
        s.contains("\"resets\":1,") && s.contains("\"remembered\":{")
    })
    .await;

    // The fourth turn lands on B with the full history resent: B applies the
    // remembered reset (its model sees the compacted history) and does not
    // compact again.
    h.push(Message::user("q4"));
    let resp = turn(&b, "conv", &h).await;
    assert!(ContextReset::of(&resp).is_none(), "not compacted twice");
    let sent = b.seen.lock().unwrap().last().unwrap().messages().to_vec();
    assert_eq!(
        &sent[..compacted.len()],
        &compacted[..],
        "B sent the compacted prefix"
    );
    assert!(sent.len() < h.len());
    assert_eq!(sent.last().unwrap().text(), "q4");
    let snap = b.store.get(&"conv".into()).await.unwrap().unwrap();
    assert_eq!(snap.resets(), 1);
    assert_eq!(snap.turns(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_sessions_keep_serving_and_sharing_resumes_after_restart() {
    snapshotter();
    let mut server = RedisServer::start();
    let (a, b) = (replica(&server.url(), "s2"), replica(&server.url(), "s2"));
    let mut h = vec![Message::user("q1")];
    let resp = turn(&a, "k", &h).await;
    h.push(resp.message);
    eventually("shared", || stored(&server, "s2", "k").contains("\"turns\":1,")).await;
    // A snapshot resets what it reads: drain, then count the outage alone.
    redis_errors("sessions");

    server.kill();
    // Every call succeeds on local state while Redis is away.
    for n in 2..=6 {
        h.push(Message::user(format!("q{n}")));
        let resp = turn(&a, "k", &h).await;
        h.push(resp.message);
    }
    assert!(redis_errors("sessions") > 0, "the outage is counted");
    assert_eq!(a.store.get(&"k".into()).await.unwrap().unwrap().turns(), 6);

    // Redis comes back empty; once the backoff has passed, A's calls share
    // again (the flushed copy is simply written anew).
    server.restart();
    let mut shared_again = false;
    for _ in 0..100 {
        h.push(Message::user("again"));
        let resp = turn(&a, "k", &h).await;
        h.push(resp.message);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if stored(&server, "s2", "k").contains("\"turns\":") {
            shared_again = true;
            break;
        }
    }
    assert!(shared_again, "sharing resumed after the restart");
    let turns_a = a.store.get(&"k".into()).await.unwrap().unwrap().turns();
    eventually("A's latest state is shared", || {
        stored(&server, "s2", "k").contains(&format!("\"turns\":{turns_a},"))
    })
    .await;

    // B picks the session up where A left it.
    h.push(Message::user("on b"));
    turn(&b, "k", &h).await;
    assert_eq!(
        b.store.get(&"k".into()).await.unwrap().unwrap().turns(),
        turns_a + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_mid_run_the_next_call_writes_the_session_again() {
    snapshotter();
    let server = RedisServer::start();
    let (a, b) = (replica(&server.url(), "s3"), replica(&server.url(), "s3"));
    let mut h = vec![Message::user("q1")];
    let resp = turn(&a, "f", &h).await;
    h.push(resp.message);
    eventually("shared", || stored(&server, "s3", "f").contains("\"turns\":1,")).await;
    assert!(server.command(&["FLUSHALL"]).starts_with("+OK"));
    h.push(Message::user("q2"));
    turn(&a, "f", &h).await;
    eventually("written again", || {
        stored(&server, "s3", "f").contains("\"turns\":2,")
    })
    .await;
    h.push(Message::user("q3"));
    turn(&b, "f", &h).await;
    assert_eq!(b.store.get(&"f".into()).await.unwrap().unwrap().turns(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_slow_calls_go_on_with_local_state_without_waiting_for_it() {
    snapshotter();
    let server = RedisServer::start();
    let a = replica(&server.url(), "s4");
    let mut h = vec![Message::user("q1")];
    let resp = turn(&a, "w", &h).await;
    h.push(resp.message);
    eventually("shared", || stored(&server, "s4", "w").contains("\"turns\":1,")).await;
    redis_errors("sessions");

    // Redis stalls for 3 s; calls meanwhile finish on local state, before
    // the stall ends (ordering, not a timing bound).
    let url = server.url();
    let stall = std::thread::spawn(move || {
        let port = url
            .trim_start_matches("redis://127.0.0.1:")
            .trim_end_matches('/')
            .to_owned();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"DEBUG SLEEP 3\r\n").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 2..=4 {
        h.push(Message::user(format!("q{n}")));
        let resp = turn(&a, "w", &h).await;
        h.push(resp.message);
    }
    assert!(
        !stall.is_finished(),
        "the calls did not wait for the stalled Redis"
    );
    assert_eq!(a.store.get(&"w".into()).await.unwrap().unwrap().turns(), 4);
    assert!(redis_errors("sessions") > 0, "the timeout is counted");
    stall.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_reset_requested_on_one_replica_applies_on_the_other() {
    use mantissa_core::control::SessionControl;
    snapshotter();
    let server = RedisServer::start();
    let (a, b) = (replica(&server.url(), "s5"), replica(&server.url(), "s5"));
    let mut h = vec![Message::system("sys"), Message::user("q1")];
    let resp = turn(&a, "m", &h).await;
    h.push(resp.message);
    h.push(Message::user("q2"));
    let resp = turn(&a, "m", &h).await;
    h.push(resp.message);

    // The monitor (on A) asks for a reset; the session's next call lands on B.
    assert!(a.store.request_reset(&"m".into(), "operator"));
    eventually("the request is shared", || {
        stored(&server, "s5", "m").contains("\"pending_reset\":\"operator\"")
    })
    .await;
    h.push(Message::user("q3"));
    let resp = turn(&b, "m", &h).await;
    let reset = ContextReset::of(&resp).expect("B applies A's requested reset");
    assert_eq!(reset.reason, Trigger::Requested);
    assert_eq!(reset.requested_reason.as_deref(), Some("operator"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stickiness_follows_the_session_to_another_replica() {
    use mantissa_core::{Catalog, TierRaised, TierSet, TierSource};
    snapshotter();
    let server = RedisServer::start();
    let catalog = Catalog::new(&TierSet::default());
    let sticky_replica = |seen: Seen| {
        let shared = RedisSessions::new(&RedisConfig::new(server.url()).prefix("s6")).unwrap();
        let store = MemorySessionStore::builder().shared(Arc::new(shared)).build();
        let layer = ResetLayer::with_store(store)
            .catalog(catalog.clone())
            .stickiness(Duration::from_secs(600));
        BoxCloneSyncService::new(layer.layer(model(seen)).map_err(Into::<BoxError>::into))
    };
    let triaged = |tier: &str| {
        let mut req = LlmRequest::new("t", "agent", vec![Message::user("hello")]).with_tier(tier);
        catalog.resolve(&mut req);
        req.ctx.tier_source = TierSource::Triage;
        req
    };
    let (seen_a, seen_b): (Seen, Seen) = (Default::default(), Default::default());
    let (a, b) = (sticky_replica(seen_a), sticky_replica(seen_b.clone()));

    // Triage sends the session's first call to `high` on A.
    let resp = a.clone().oneshot(triaged("high")).await.unwrap();
    assert!(resp.extensions.get::<TierRaised>().is_none());
    eventually("the sticky tier is shared", || {
        stored(&server, "s6", "t").contains("\"sticky_rank\":2")
    })
    .await;

    // Its next call lands on B, triaged `low`: raised to the session's tier.
    let resp = b.clone().oneshot(triaged("low")).await.unwrap();
    assert_eq!(
        resp.extensions.get::<TierRaised>().cloned(),
        Some(TierRaised {
            from: "low".into(),
            to: "high".into()
        })
    );
    let sent = seen_b.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent.tier.as_ref().map(|t| t.as_str()), Some("high"));
}
