//! Two routers sharing model state through an in-process backend (the Redis
//! backend is tested against a real redis-server in `mantissa-redis`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mantissa_core::{FailureClass, Message, ModelId, TierSet};
use tower::ServiceExt;

use super::tests::{Mode, Script, with_metrics};
use super::*;

/// A bus between replicas: what one replica decides reaches the others at
/// once; the probe lease is a map with deadlines.
#[derive(Debug, Default)]
struct Bus {
    replicas: Mutex<Vec<RemoteModelState>>,
    leases: Mutex<HashMap<ModelId, (usize, SystemTime)>>,
    /// When set, probe requests are never answered.
    mute: std::sync::atomic::AtomicBool,
}

/// One replica's view of the bus.
#[derive(Debug)]
struct Member {
    bus: Arc<Bus>,
    me: usize,
}

impl Member {
    fn others(&self) -> Vec<RemoteModelState> {
        let all = self.bus.replicas.lock().unwrap();
        all.iter()
            .enumerate()
            .filter(|(i, _)| *i != self.me)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

impl SharedModelState for Member {
    fn attach(&self, _models: &[ModelId], remote: RemoteModelState) {
        let mut all = self.bus.replicas.lock().unwrap();
        assert_eq!(all.len(), self.me);
        all.push(remote);
    }

    fn cooled_down(&self, model: &ModelId, until: SystemTime) {
        self.bus.leases.lock().unwrap().remove(model);
        for r in self.others() {
            r.cooled_down(model.as_str(), until);
        }
    }

    fn restored(&self, model: &ModelId) {
        self.bus.leases.lock().unwrap().remove(model);
        for r in self.others() {
            r.restored(model.as_str());
        }
    }

    fn request_probe(&self, model: &ModelId, lease: Duration) {
        if self.bus.mute.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let me = self.bus.replicas.lock().unwrap()[self.me].clone();
        let now = SystemTime::now();
        let mut leases = self.bus.leases.lock().unwrap();
        match leases.get(model) {
            Some(&(holder, until)) if holder != self.me && until > now => {
                drop(leases);
                me.probe_denied(model.as_str(), until.duration_since(now).unwrap_or_default());
            }
            _ => {
                leases.insert(model.clone(), (self.me, now + lease));
                drop(leases);
                me.probe_granted(model.as_str());
            }
        }
    }
}

struct Replica {
    router: TierRouter,
    small: Script,
}

fn replica(bus: &Arc<Bus>, me: usize) -> Replica {
    let small = Script::new(Mode::Ok);
    let router = TierRouter::builder(TierSet::default())
        .model("mock-small", small.service())
        .model("mock-medium", Script::new(Mode::Ok).service())
        .model("mock-large", Script::new(Mode::Ok).service())
        .cooldown(CooldownPolicy {
            jitter: 0.0,
            ..CooldownPolicy::default()
        })
        .shared_state(Arc::new(Member { bus: bus.clone(), me }))
        .build()
        .unwrap();
    Replica { router, small }
}

async fn served_by(r: &Replica) -> String {
    let req = LlmRequest::new("s", "agent", vec![Message::user("hi")]).with_tier("low");
    let resp = r.router.clone().oneshot(req).await.unwrap();
    resp.model.as_str().to_owned()
}

async fn cool_small_on(a: &Replica) {
    a.small.set(Mode::Fail(FailureClass::UpstreamServer, 503));
    for _ in 0..5 {
        assert_eq!(served_by(a).await, "mock-medium");
    }
    assert_eq!(
        a.router.model_snapshot("mock-small").unwrap().state,
        ModelState::CooledDown
    );
}

#[test]
fn a_cooldown_on_one_replica_is_honoured_by_the_other_from_its_next_call() {
    with_metrics(|| async {
        let bus = Arc::new(Bus::default());
        let (a, b) = (replica(&bus, 0), replica(&bus, 1));
        cool_small_on(&a).await;
        assert_eq!(
            b.router.model_snapshot("mock-small").unwrap().state,
            ModelState::CooledDown
        );
        assert_eq!(served_by(&b).await, "mock-medium");
        assert_eq!(b.small.calls(), 0, "B never sent to the model A cooled down");
    });
}

#[test]
fn one_replica_probes_and_its_verdict_reaches_the_other() {
    with_metrics(|| async {
        let bus = Arc::new(Bus::default());
        let (a, b) = (replica(&bus, 0), replica(&bus, 1));
        cool_small_on(&a).await;
        a.small.set(Mode::Ok);
        tokio::time::advance(Duration::from_secs(31)).await;

        // A's first call after the cooldown asks for the lease (granted) and
        // still falls back; its next call is the probe. Meanwhile B is
        // denied the lease and keeps the model out.
        assert_eq!(served_by(&a).await, "mock-medium");
        assert_eq!(served_by(&b).await, "mock-medium");
        assert_eq!(served_by(&b).await, "mock-medium");
        assert_eq!(b.small.calls(), 0);
        let probes_before = a.small.calls();
        assert_eq!(served_by(&a).await, "mock-small");
        assert_eq!(a.small.calls(), probes_before + 1);

        // The successful probe re-admitted the model on B as well.
        assert_eq!(
            b.router.model_snapshot("mock-small").unwrap().state,
            ModelState::Healthy
        );
        assert_eq!(served_by(&b).await, "mock-small");
    });
}

#[test]
fn a_failed_probe_cools_every_replica_again() {
    with_metrics(|| async {
        let bus = Arc::new(Bus::default());
        let (a, b) = (replica(&bus, 0), replica(&bus, 1));
        cool_small_on(&a).await;
        tokio::time::advance(Duration::from_secs(31)).await;
        served_by(&a).await; // asks for the lease
        assert_eq!(served_by(&a).await, "mock-medium"); // the probe fails, falls back
        let snap = b.router.model_snapshot("mock-small").unwrap();
        assert_eq!(snap.state, ModelState::CooledDown);
        assert!(snap.cooled_until.unwrap() > tokio::time::Instant::now() + Duration::from_secs(50));
        assert_eq!(b.small.calls(), 0);
    });
}

#[test]
fn without_an_answer_a_replica_probes_on_its_own() {
    with_metrics(|| async {
        let bus = Arc::new(Bus::default());
        let a = replica(&bus, 0);
        cool_small_on(&a).await;
        a.small.set(Mode::Ok);
        bus.mute.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(served_by(&a).await, "mock-medium");
        assert_eq!(served_by(&a).await, "mock-medium", "still waiting for the answer");
        tokio::time::advance(shared::PROBE_ANSWER_WAIT).await;
        assert_eq!(served_by(&a).await, "mock-small");
        assert_eq!(
            a.router.model_snapshot("mock-small").unwrap().state,
            ModelState::Healthy
        );
    });
}

#[test]
fn wall_clock_conversions_round_trip() {
    with_metrics(|| async {
        let at = tokio::time::Instant::now() + Duration::from_secs(10);
        let back = shared::to_instant(shared::to_wall(at));
        let diff = if back > at { back - at } else { at - back };
        assert!(diff < Duration::from_secs(1));
        let past = SystemTime::now() - Duration::from_secs(5);
        assert_eq!(shared::to_instant(past), tokio::time::Instant::now());
    });
}
