//! Two routers as two replicas sharing model state through a real
//! `redis-server` (started by the test; see `common`). The test fails (never
//! skips) when the binary is missing: `apt-get install redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::RedisServer;
use mantissa_core::{BoxError, FailureClass, LlmError, LlmRequest, LlmResponse, Message, TierSet, Usage};
use mantissa_redis::{RedisConfig, RedisModelState};
use mantissa_triage::{CooldownPolicy, ModelService, ModelState, TierRouter};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;

/// A model that answers or fails with a 503, and counts its calls.
#[derive(Clone, Default)]
struct Model {
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Model {
    fn service(&self) -> ModelService {
        let m = self.clone();
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: LlmRequest| {
            let m = m.clone();
            async move {
                m.calls.fetch_add(1, Ordering::SeqCst);
                if m.down.load(Ordering::SeqCst) {
                    return Err(LlmError::new(FailureClass::UpstreamServer, "down")
                        .with_status(503)
                        .into());
                }
                let model = req.model.clone().unwrap_or_else(|| "none".into());
                Ok::<_, BoxError>(LlmResponse::new(
                    model,
                    Message::assistant("ok"),
                    Usage::default(),
                ))
            }
        }))
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

struct Replica {
    router: TierRouter,
    small: Model,
    medium: Model,
}

fn replica(url: &str, prefix: &str) -> Replica {
    let (small, medium, large) = (Model::default(), Model::default(), Model::default());
    let shared = RedisModelState::new(&RedisConfig::new(url).prefix(prefix)).unwrap();
    let router = TierRouter::builder(TierSet::default())
        .model("mock-small", small.service())
        .model("mock-medium", medium.service())
        .model("mock-large", large.service())
        .cooldown(CooldownPolicy {
            consecutive_failures: 3,
            base_cooldown: Duration::from_millis(400),
            jitter: 0.0,
            ..CooldownPolicy::default()
        })
        .shared_state(Arc::new(shared))
        .build()
        .unwrap();
    Replica {
        router,
        small,
        medium,
    }
}

async fn served_by(r: &Replica, tier: &str) -> String {
    let req = LlmRequest::new("s", "agent", vec![Message::user("hi")]).with_tier(tier);
    let resp = r.router.clone().oneshot(req).await.expect("every call succeeds");
    resp.model.as_str().to_owned()
}

fn state(r: &Replica, model: &str) -> ModelState {
    r.router.model_snapshot(model).unwrap().state
}

/// Polls `cond` every 10 ms for up to 5 s (waiting for another task, not
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

fn subscribers(server: &RedisServer, prefix: &str) -> usize {
    // Reply: *2 $len channel :N
    let reply = server.command(&["PUBSUB", "NUMSUB", &format!("{prefix}:models")]);
    reply
        .lines()
        .last()
        .and_then(|l| l.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
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

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| {
            k.key().name() == name
                && labels
                    .iter()
                    .all(|(lk, lv)| k.key().labels().any(|l| l.key() == *lk && l.value() == *lv))
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => c,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cooldown_on_one_replica_is_honoured_by_the_other_and_one_replica_probes() {
    snapshotter();
    let server = RedisServer::start();
    let (a, b) = (replica(&server.url(), "t1"), replica(&server.url(), "t1"));
    eventually("both replicas subscribed", || subscribers(&server, "t1") == 2).await;

    // A cools mock-small down; B skips it from its next call on.
    a.small.set_down(true);
    for _ in 0..3 {
        assert_eq!(served_by(&a, "low").await, "mock-medium");
    }
    assert_eq!(state(&a, "mock-small"), ModelState::CooledDown);
    eventually("B hears of the cooldown", || {
        state(&b, "mock-small") == ModelState::CooledDown
    })
    .await;
    assert_eq!(served_by(&b, "low").await, "mock-medium");
    assert_eq!(b.small.calls(), 0, "B never called the model A cooled down");

    // The cooldown ends: A asks first and holds the probe lease; B is denied
    // and keeps the model out until A's verdict.
    a.small.set_down(false);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(served_by(&a, "low").await, "mock-medium");
    eventually("A holds the probe lease", || {
        server
            .command(&["EXISTS", "t1:model:mock-small:probe"])
            .starts_with(":1")
    })
    .await;
    assert_eq!(served_by(&b, "low").await, "mock-medium");
    eventually("B is denied the lease", || {
        state(&b, "mock-small") == ModelState::CooledDown
    })
    .await;
    assert_eq!(served_by(&b, "low").await, "mock-medium");
    assert_eq!(b.small.calls(), 0, "only A probes");

    eventually("A's lease answer arrived", || {
        state(&a, "mock-small") == ModelState::Degraded
    })
    .await;
    assert_eq!(served_by(&a, "low").await, "mock-small", "A's probe");
    assert_eq!(state(&a, "mock-small"), ModelState::Healthy);
    eventually("B hears the verdict", || {
        state(&b, "mock-small") == ModelState::Healthy
    })
    .await;
    assert_eq!(served_by(&b, "low").await, "mock-small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_replica_started_later_loads_the_cooldowns_in_force() {
    snapshotter();
    let server = RedisServer::start();
    let a = replica(&server.url(), "t2");
    eventually("A subscribed", || subscribers(&server, "t2") == 1).await;
    mantissa_core::control::ModelControl::cool_down(
        &a.router,
        &"mock-medium".into(),
        Duration::from_secs(60),
    );
    eventually("the cooldown is in Redis", || {
        server
            .command(&["EXISTS", "t2:model:mock-medium:cooldown"])
            .starts_with(":1")
    })
    .await;
    let b = replica(&server.url(), "t2");
    eventually("B loads it", || {
        state(&b, "mock-medium") == ModelState::CooledDown
    })
    .await;
    assert_eq!(served_by(&b, "medium").await, "mock-large");
    assert_eq!(b.medium.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_calls_keep_succeeding_and_sharing_resumes_after_restart() {
    snapshotter();
    let mut server = RedisServer::start();
    let (a, b) = (replica(&server.url(), "t3"), replica(&server.url(), "t3"));
    eventually("both replicas subscribed", || subscribers(&server, "t3") == 2).await;
    // A snapshot resets what it reads: drain, then count the outage alone.
    counter("mantissa_redis_errors_total", &[("component", "models")]);

    server.kill();
    // Every call succeeds on local state; a cooldown on A stays A's.
    a.small.set_down(true);
    for _ in 0..3 {
        assert_eq!(served_by(&a, "low").await, "mock-medium");
    }
    assert_eq!(state(&a, "mock-small"), ModelState::CooledDown);
    for _ in 0..5 {
        served_by(&b, "low").await;
    }
    eventually("the outage is counted", || {
        counter("mantissa_redis_errors_total", &[("component", "models")]) > 0
    })
    .await;

    // The monitor cools mock-large down on A during the outage.
    mantissa_core::control::ModelControl::cool_down(&a.router, &"mock-large".into(), Duration::from_secs(60));

    server.restart();
    eventually("both replicas subscribed again", || {
        subscribers(&server, "t3") == 2
    })
    .await;
    // A republished what it decided while Redis was away.
    eventually("B hears of the outage-time cooldown", || {
        state(&b, "mock-large") == ModelState::CooledDown
    })
    .await;
    // The monitor's restore crosses too.
    mantissa_core::control::ModelControl::restore(&a.router, &"mock-large".into());
    eventually("B re-admits mock-large", || {
        state(&b, "mock-large") == ModelState::Healthy
    })
    .await;
    // Sharing resumed: a new cooldown on A reaches B.
    a.medium.set_down(true);
    let req = || LlmRequest::new("s", "agent", vec![Message::user("hi")]).with_tier("medium");
    for _ in 0..3 {
        let resp = a.router.clone().oneshot(req()).await.expect("falls back");
        assert_eq!(resp.model.as_str(), "mock-large");
    }
    assert_eq!(state(&a, "mock-medium"), ModelState::CooledDown);
    eventually("B hears of the new cooldown", || {
        state(&b, "mock-medium") == ModelState::CooledDown
    })
    .await;
}
