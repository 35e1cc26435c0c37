use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mantissa_core::control::ModelControl;
use mantissa_core::{
    BoxError, FailureClass, LlmError, LlmRequest, LlmResponse, Message, ModelSpec, TierConfig, TierSet,
    Usage, classify_box,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::*;

#[derive(Clone, Debug)]
pub(crate) enum Mode {
    Ok,
    Fail(FailureClass, u16),
    Io(std::io::ErrorKind),
    Hang,
    Sleep(Duration),
    /// Fails like `Fail` after a delay (a call in flight across a state change).
    SlowFail(Duration, FailureClass, u16),
}

#[derive(Debug)]
struct ScriptState {
    mode: Mode,
    calls: usize,
    seen: Vec<LlmRequest>,
}

/// A scriptable model: its behaviour can change between requests.
#[derive(Clone, Debug)]
pub(crate) struct Script(Arc<Mutex<ScriptState>>);

type BoxFut = Pin<Box<dyn Future<Output = Result<LlmResponse, BoxError>> + Send>>;

impl Script {
    pub(crate) fn new(mode: Mode) -> Self {
        Self(Arc::new(Mutex::new(ScriptState {
            mode,
            calls: 0,
            seen: Vec::new(),
        })))
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.0.lock().unwrap().mode = mode;
    }

    pub(crate) fn calls(&self) -> usize {
        self.0.lock().unwrap().calls
    }

    pub(crate) fn first_request(&self) -> Option<LlmRequest> {
        self.0.lock().unwrap().seen.first().cloned()
    }

    pub(crate) fn last_request(&self) -> Option<LlmRequest> {
        self.0.lock().unwrap().seen.last().cloned()
    }

    pub(crate) fn service(
        &self,
    ) -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future = BoxFut>
    + Clone
    + Send
    + Sync
    + 'static {
        let script = self.clone();
        tower::service_fn(move |req: LlmRequest| {
            let mode = {
                let mut g = script.0.lock().unwrap();
                g.calls += 1;
                g.seen.push(req.clone());
                g.mode.clone()
            };
            let fut: BoxFut = Box::pin(async move {
                let model = req.model.clone().unwrap_or_else(|| "none".into());
                match mode {
                    Mode::Ok => Ok(LlmResponse::new(
                        model,
                        Message::assistant("ok"),
                        Usage::new(10, 2),
                    )),
                    Mode::Fail(class, status) => Err(LlmError::new(class, "scripted failure")
                        .with_status(status)
                        .into()),
                    Mode::Io(kind) => Err(std::io::Error::new(kind, "scripted io error").into()),
                    Mode::Hang => std::future::pending().await,
                    Mode::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        Ok(LlmResponse::new(
                            model,
                            Message::assistant("slow"),
                            Usage::new(10, 2),
                        ))
                    }
                    Mode::SlowFail(d, class, status) => {
                        tokio::time::sleep(d).await;
                        Err(LlmError::new(class, "scripted late failure")
                            .with_status(status)
                            .into())
                    }
                }
            });
            fut
        })
    }
}

pub(crate) struct Fixture {
    pub(crate) router: TierRouter,
    pub(crate) small: Script,
    pub(crate) medium: Script,
    pub(crate) large: Script,
}

pub(crate) fn fixture(policy: CooldownPolicy) -> Fixture {
    let (small, medium, large) = (
        Script::new(Mode::Ok),
        Script::new(Mode::Ok),
        Script::new(Mode::Ok),
    );
    let router = TierRouter::builder(TierSet::default())
        .model("mock-small", small.service())
        .model("mock-medium", medium.service())
        .model("mock-large", large.service())
        .cooldown(policy)
        .build()
        .unwrap();
    Fixture {
        router,
        small,
        medium,
        large,
    }
}

fn no_jitter() -> CooldownPolicy {
    CooldownPolicy {
        jitter: 0.0,
        ..CooldownPolicy::default()
    }
}

fn req(tier: &str) -> LlmRequest {
    LlmRequest::new("s", "agent", vec![Message::user("hello")]).with_tier(tier)
}

async fn send(router: &TierRouter, r: LlmRequest) -> Result<LlmResponse, BoxError> {
    router.clone().oneshot(r).await
}

fn state(router: &TierRouter, model: &str) -> ModelState {
    router.model_snapshot(model).unwrap().state
}

/// Runs `f` on a paused current-thread runtime with a local debugging recorder.
pub(crate) fn with_metrics<F: Future<Output = ()>>(f: impl FnOnce() -> F) -> Snapshotter {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f())
    });
    snapshotter
}

pub(crate) fn metric<'a>(
    snap: &'a [(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snap.iter()
        .find(|(k, _, _, _)| {
            let key = k.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(lk, lv)| key.labels().any(|l| l.key() == *lk && l.value() == *lv))
                && key.labels().count() == labels.len()
        })
        .map(|(_, _, _, v)| v)
}

#[test]
fn twenty_five_500s_cool_down_fall_back_and_a_probe_restores() {
    let snapshotter = with_metrics(|| async {
        let f = fixture(no_jitter());
        f.small.set(Mode::Fail(FailureClass::UpstreamServer, 500));
        for _ in 0..25 {
            let resp = send(&f.router, req("low")).await.unwrap();
            assert_eq!(resp.model.as_str(), "mock-medium");
            let routed = resp.routed().unwrap();
            assert_eq!(routed.requested_tier.as_str(), "low");
            assert_eq!(routed.tier.as_str(), "medium");
        }
        // Five failures in a row, then the model was skipped.
        assert_eq!(f.small.calls(), 5);
        assert_eq!(f.medium.calls(), 25);
        let snap = f.router.model_snapshot("mock-small").unwrap();
        assert_eq!(snap.state, ModelState::CooledDown);
        assert_eq!(
            snap.cooled_until.unwrap() - Instant::now(),
            Duration::from_secs(30)
        );
        // The request reached the medium model labelled with its real model and tier.
        let seen = f.medium.last_request().unwrap();
        assert_eq!(seen.model.unwrap().as_str(), "mock-medium");
        assert_eq!(seen.tier.unwrap().as_str(), "medium");

        // Recovery: after the cooldown one probe is admitted and brings it back.
        f.small.set(Mode::Ok);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(
            send(&f.router, req("low")).await.unwrap().model.as_str(),
            "mock-medium"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(state(&f.router, "mock-small"), ModelState::Degraded);
        assert_eq!(
            send(&f.router, req("low")).await.unwrap().model.as_str(),
            "mock-small"
        );
        assert_eq!(state(&f.router, "mock-small"), ModelState::Healthy);
        assert_eq!(
            send(&f.router, req("low")).await.unwrap().model.as_str(),
            "mock-small"
        );
    })
    .snapshot()
    .into_vec();
    let fb = |to: &str, reason: &str| {
        metric(
            &snapshotter,
            catalog::FALLBACKS_TOTAL,
            &[("from_tier", "low"), ("to_tier", to), ("reason", reason)],
        )
    };
    assert_eq!(
        fb("medium", "upstream_server_error"),
        Some(&DebugValue::Counter(5))
    );
    assert_eq!(fb("medium", "cooled_down"), Some(&DebugValue::Counter(21)));
    let gauge = metric(&snapshotter, catalog::MODEL_STATE, &[("model", "mock-small")]);
    assert_eq!(gauge, Some(&DebugValue::Gauge(0.0.into())));
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_backs_off_exponentially() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(FailureClass::UpstreamServer, 503));
    for _ in 0..5 {
        send(&f.router, req("low")).await.unwrap();
    }
    assert_eq!(state(&f.router, "mock-small"), ModelState::CooledDown);
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&f.router, req("low")).await.unwrap(); // the probe fails
    assert_eq!(f.small.calls(), 6);
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(
        snap.cooled_until.unwrap() - Instant::now(),
        Duration::from_secs(60)
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    f.small.set(Mode::Ok);
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-small"
    );
    // Jittered backoff stays within ±20 % of the doubled cooldown.
    let p = CooldownPolicy::default();
    for _ in 0..50 {
        let d = p.cooldown(2);
        assert!(
            d >= Duration::from_secs(48) && d <= Duration::from_secs(72),
            "{d:?}"
        );
        assert!(p.cooldown(10) <= Duration::from_secs(300));
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_connection_errors_count_toward_cooldown() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(FailureClass::Timeout, 504));
    for _ in 0..3 {
        send(&f.router, req("low")).await.unwrap();
    }
    f.small.set(Mode::Io(std::io::ErrorKind::ConnectionReset));
    assert_eq!(
        f.router
            .model_snapshot("mock-small")
            .unwrap()
            .consecutive_failures,
        3
    );
    send(&f.router, req("low")).await.unwrap();
    assert_eq!(state(&f.router, "mock-small"), ModelState::Degraded);
    send(&f.router, req("low")).await.unwrap();
    assert_eq!(state(&f.router, "mock-small"), ModelState::CooledDown);
    assert_eq!(f.small.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_high_failure_rate_cools_down_without_five_in_a_row() {
    let f = fixture(no_jitter());
    for i in 0..11 {
        f.small.set(if i % 2 == 0 {
            Mode::Fail(FailureClass::UpstreamServer, 500)
        } else {
            Mode::Ok
        });
        send(&f.router, req("low")).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(state(&f.router, "mock-small"), ModelState::CooledDown);
    // Old failures leave the window: 60 s later a fresh run starts clean.
    let f = fixture(no_jitter());
    for _ in 0..4 {
        f.small.set(Mode::Fail(FailureClass::UpstreamServer, 500));
        send(&f.router, req("low")).await.unwrap();
        f.small.set(Mode::Ok);
        send(&f.router, req("low")).await.unwrap();
    }
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!((snap.window_calls, snap.failure_rate), (8, 0.5));
    assert_eq!(snap.state, ModelState::Healthy);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(f.router.model_snapshot("mock-small").unwrap().window_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_cools_for_exactly_that_long() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(
        FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        },
        429,
    ));
    let resp = send(&f.router, req("low")).await.unwrap();
    assert_eq!(resp.model.as_str(), "mock-medium");
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(snap.state, ModelState::CooledDown);
    assert_eq!(
        snap.cooled_until.unwrap() - Instant::now(),
        Duration::from_secs(7)
    );
    assert_eq!(snap.consecutive_failures, 0, "a 429 is not a countable failure");
    f.small.set(Mode::Ok);
    tokio::time::advance(Duration::from_millis(6_999)).await;
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-medium"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-small"
    );
    // A 429 without Retry-After moves on but does not cool the model down.
    f.small
        .set(Mode::Fail(FailureClass::RateLimited { retry_after: None }, 429));
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-medium"
    );
    assert_eq!(state(&f.router, "mock-small"), ModelState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(FailureClass::ClientError, 400));
    let err = send(&f.router, req("low")).await.unwrap_err();
    assert_eq!(classify_box(&err), FailureClass::ClientError);
    assert_eq!(err.downcast_ref::<LlmError>().unwrap().status(), Some(400));
    assert_eq!((f.small.calls(), f.medium.calls(), f.large.calls()), (1, 0, 0));
    assert_eq!(state(&f.router, "mock-small"), ModelState::Healthy);
    f.small.set(Mode::Fail(FailureClass::Cancelled, 499));
    let err = send(&f.router, req("low")).await.unwrap_err();
    assert_eq!(classify_box(&err), FailureClass::Cancelled);
    assert_eq!(f.medium.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_is_not_a_failure_and_frees_the_probe() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Hang);
    for _ in 0..10 {
        let fut = send(&f.router, req("low"));
        assert!(
            tokio::time::timeout(Duration::from_millis(10), fut)
                .await
                .is_err()
        );
    }
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(
        (snap.state, snap.consecutive_failures, snap.window_calls),
        (ModelState::Healthy, 0, 0)
    );

    // A probe that is cancelled releases its slot: the next request probes.
    f.router.cool_down(&"mock-small".into(), Duration::from_secs(5));
    tokio::time::advance(Duration::from_secs(5)).await;
    let calls = f.small.calls();
    let fut = send(&f.router, req("low"));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), fut)
            .await
            .is_err()
    );
    assert_eq!(f.small.calls(), calls + 1);
    f.small.set(Mode::Ok);
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-small"
    );
    assert_eq!(state(&f.router, "mock-small"), ModelState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn only_one_probe_at_a_time() {
    let f = fixture(no_jitter());
    f.router.cool_down(&"mock-small".into(), Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    f.small.set(Mode::Sleep(Duration::from_secs(10)));
    let probe = tokio::spawn(f.router.clone().oneshot(req("low")));
    tokio::task::yield_now().await;
    // While the probe is in flight, other requests skip the model.
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-medium"
    );
    assert_eq!(f.small.calls(), 1);
    assert_eq!(probe.await.unwrap().unwrap().model.as_str(), "mock-small");
    assert_eq!(state(&f.router, "mock-small"), ModelState::Healthy);
}

#[test]
fn a_cooled_tier_falls_back_while_another_is_healthy() {
    let snapshotter = with_metrics(|| async {
        let set = TierSet::new(vec![
            TierConfig::new("low", vec![ModelSpec::new("a"), ModelSpec::new("b")]),
            TierConfig::new("high", vec![ModelSpec::new("c")]),
        ])
        .unwrap();
        let (a, b, c) = (
            Script::new(Mode::Ok),
            Script::new(Mode::Ok),
            Script::new(Mode::Ok),
        );
        let router = TierRouter::builder(set)
            .model("a", a.service())
            .model("b", b.service())
            .model("c", c.service())
            .build()
            .unwrap();
        // The monitor cools the first model down: the tier's second model serves.
        assert!(router.cool_down(&"a".into(), Duration::from_secs(60)));
        assert!(!router.cool_down(&"zzz".into(), Duration::from_secs(60)));
        assert_eq!(send(&router, req("low")).await.unwrap().model.as_str(), "b");
        // The whole tier cooled down: the next tier serves.
        router.cool_down(&"b".into(), Duration::from_secs(60));
        assert_eq!(send(&router, req("low")).await.unwrap().model.as_str(), "c");
        assert_eq!(state(&router, "a"), ModelState::CooledDown);
        // Everything cooled down: the call fails and says why.
        router.cool_down(&"c".into(), Duration::from_secs(60));
        let err = send(&router, req("low")).await.unwrap_err();
        let all = err.downcast_ref::<AllModelsFailed>().unwrap();
        assert!(all.tried.is_empty());
        assert_eq!(err.to_string(), "all models failed: cooled down a, b, c");
        assert!(router.restore(&"a".into()));
        assert_eq!(send(&router, req("low")).await.unwrap().model.as_str(), "a");
        assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 1));
    })
    .snapshot()
    .into_vec();
    let fb = |to: &str| {
        metric(
            &snapshotter,
            catalog::FALLBACKS_TOTAL,
            &[("from_tier", "low"), ("to_tier", to), ("reason", "cooled_down")],
        )
    };
    assert_eq!(fb("low"), Some(&DebugValue::Counter(1)));
    assert_eq!(fb("high"), Some(&DebugValue::Counter(1)));
    assert_eq!(
        metric(&snapshotter, catalog::MODEL_STATE, &[("model", "b")]),
        Some(&DebugValue::Gauge(2.0.into()))
    );
}

#[tokio::test(start_paused = true)]
async fn all_models_failing_reports_each_and_classifies_as_the_last() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(FailureClass::UpstreamServer, 500));
    f.medium.set(Mode::Io(std::io::ErrorKind::ConnectionRefused));
    f.large.set(Mode::Fail(FailureClass::Timeout, 504));
    let err = send(&f.router, req("medium")).await.unwrap_err();
    // Medium first, then up, then down: the last failure was the small model's.
    assert_eq!(classify_box(&err), FailureClass::UpstreamServer);
    let all = err.downcast_ref::<AllModelsFailed>().unwrap();
    let tried: Vec<_> = all.tried.iter().map(|(m, c)| (m.as_str(), *c)).collect();
    assert_eq!(
        tried,
        vec![
            ("mock-medium", FailureClass::Transport),
            ("mock-large", FailureClass::Timeout),
            ("mock-small", FailureClass::UpstreamServer),
        ]
    );
    assert_eq!(
        err.to_string(),
        "all models failed: tried mock-medium (transport), mock-large (timeout), mock-small (upstream_server_error)"
    );
}

#[tokio::test(start_paused = true)]
async fn context_length_goes_to_a_bigger_window() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(FailureClass::ContextLengthExceeded, 400));
    let resp = send(&f.router, req("low")).await.unwrap();
    assert_eq!(resp.model.as_str(), "mock-medium");
    assert_eq!(state(&f.router, "mock-small"), ModelState::Healthy);
    // From the top there is nothing bigger: fails with the context class.
    f.large.set(Mode::Fail(FailureClass::ContextLengthExceeded, 400));
    let err = send(&f.router, req("high")).await.unwrap_err();
    assert_eq!(classify_box(&err), FailureClass::ContextLengthExceeded);
    assert_eq!(
        (f.small.calls(), f.medium.calls()),
        (1, 1),
        "smaller windows are not tried"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_model_does_not_stall_other_tiers() {
    let (mock, mut handle) = tower_test::mock::pair::<LlmRequest, LlmResponse>();
    handle.allow(0); // the low model is saturated: never ready
    let large = Script::new(Mode::Ok);
    let router = TierRouter::builder(TierSet::default())
        .model("mock-small", mock)
        .model("mock-medium", Script::new(Mode::Ok).service())
        .model("mock-large", large.service())
        .build()
        .unwrap();
    let stuck = tokio::spawn(router.clone().oneshot(req("low")));
    tokio::task::yield_now().await;
    let mut r = router.clone();
    // The router itself stays ready and high-tier calls complete.
    std::future::poll_fn(|cx| r.poll_ready(cx)).await.unwrap();
    for _ in 0..3 {
        let resp = tokio::time::timeout(Duration::from_secs(1), send(&router, req("high")))
            .await
            .expect("high tier stalled")
            .unwrap();
        assert_eq!(resp.model.as_str(), "mock-large");
    }
    assert!(!stuck.is_finished());
    stuck.abort();
}

#[tokio::test(start_paused = true)]
async fn explicit_models_and_unknown_targets() {
    let f = fixture(no_jitter());
    let r = LlmRequest::new("s", "a", vec![Message::user("x")]).with_model("mock-large");
    assert_eq!(send(&f.router, r).await.unwrap().model.as_str(), "mock-large");
    // A failing pinned model falls back within its tier's neighbours.
    f.large.set(Mode::Fail(FailureClass::UpstreamServer, 500));
    let r = LlmRequest::new("s", "a", vec![Message::user("x")]).with_model("mock-large");
    assert_eq!(send(&f.router, r).await.unwrap().model.as_str(), "mock-medium");
    // No tier: the default (lowest) tier.
    let r = LlmRequest::new("s", "a", vec![Message::user("x")]);
    assert_eq!(send(&f.router, r).await.unwrap().model.as_str(), "mock-small");
    let err = send(&f.router, req("ultra")).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown tier `ultra`");
    let r = LlmRequest::new("s", "a", vec![Message::user("x")]).with_model("gpt-9");
    let err = send(&f.router, r).await.unwrap_err();
    assert!(err.is::<UnknownModel>());
}

#[test]
fn fallback_orders() {
    let order = |o: FallbackOrder, start| (0..6).filter_map(|s| o.tier_at(start, s, 4)).collect::<Vec<_>>();
    assert_eq!(order(FallbackOrder::UpThenDown, 1), vec![1, 2, 3, 0]);
    assert_eq!(order(FallbackOrder::DownThenUp, 2), vec![2, 1, 0, 3]);
    assert_eq!(order(FallbackOrder::UpOnly, 2), vec![2, 3]);
    assert_eq!(order(FallbackOrder::DownOnly, 2), vec![2, 1, 0]);
    assert_eq!(order(FallbackOrder::SameTier, 2), vec![2]);
    assert_eq!(order(FallbackOrder::UpThenDown, 3), vec![3, 2, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn builder_errors() {
    let s = Script::new(Mode::Ok);
    let err = TierRouter::builder(TierSet::default())
        .model("mock-small", s.service())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, RouterBuildError::MissingService(ref m) if m.as_str() == "mock-medium"),
        "{err}"
    );
    let err = TierRouter::builder(TierSet::default())
        .model("nope", s.service())
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "model `nope` is not in the tier set");
    let err = fixture_builder(&s).default_tier("ultra").build().unwrap_err();
    assert!(matches!(err, RouterBuildError::UnknownTier(_)));
    let err = fixture_builder(&s)
        .cooldown(CooldownPolicy {
            failure_rate_threshold: 0.0,
            ..CooldownPolicy::default()
        })
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("cooldown.failure_rate_threshold"),
        "{err}"
    );
}

fn fixture_builder(s: &Script) -> TierRouterBuilder {
    TierRouter::builder(TierSet::default())
        .model("mock-small", s.service())
        .model("mock-medium", s.service())
        .model("mock-large", s.service())
}

#[tokio::test(start_paused = true)]
async fn streaming_responses_pass_through() {
    use futures_util::StreamExt;
    let stream = Script::new(Mode::Ok);
    // Two chunks, then the connection is cut mid-stream.
    let svc = tower::service_fn(|req: LlmRequest| async move {
        let chunk = |text: &str| {
            Ok(mantissa_core::Chunk {
                content: Some(text.to_owned()),
                ..mantissa_core::Chunk::default()
            })
        };
        let cut: BoxError = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut mid-stream").into();
        let chunks = futures_util::stream::iter(vec![chunk("hel"), chunk("lo"), Err(cut)]);
        Ok::<_, BoxError>(LlmResponse::streaming(
            req.model.unwrap(),
            mantissa_core::ChunkStream::new(chunks),
        ))
    });
    let router = TierRouter::builder(TierSet::default())
        .model("mock-small", svc)
        .model("mock-medium", stream.service())
        .model("mock-large", stream.service())
        .build()
        .unwrap();
    let mut resp = send(&router, req("low")).await.unwrap();
    assert!(resp.is_streaming());
    assert_eq!(resp.model.as_str(), "mock-small");
    assert_eq!(resp.routed().unwrap().attempts, 1);
    let items: Vec<_> = resp.stream.take().unwrap().collect().await;
    let text: Vec<_> = items
        .iter()
        .filter_map(|i| i.as_ref().ok()?.content.as_deref())
        .collect();
    assert_eq!(text, ["hel", "lo"]);
    // The mid-stream failure reaches the reader and is not retried elsewhere.
    assert_eq!(items.len(), 3);
    let err = items[2].as_ref().unwrap_err();
    assert_eq!(classify_box(err), FailureClass::Transport);
    assert_eq!(stream.calls(), 0, "no fallback after the stream started");
}

/// Lets spawned tasks run without moving the paused clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn stale_failures_do_not_poison_the_readmitted_window() {
    let f = fixture(no_jitter());
    // 15 calls admitted while healthy all fail 10 s later: the first 5 cool
    // the model down, the other 10 arrive after the cooldown began.
    f.small.set(Mode::SlowFail(
        Duration::from_secs(10),
        FailureClass::UpstreamServer,
        500,
    ));
    let calls: Vec<_> = (0..15)
        .map(|_| tokio::spawn(f.router.clone().oneshot(req("low"))))
        .collect();
    settle().await;
    assert_eq!(f.small.calls(), 15);
    tokio::time::advance(Duration::from_secs(10)).await;
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().model.as_str(), "mock-medium");
    }
    assert_eq!(state(&f.router, "mock-small"), ModelState::CooledDown);

    // The probe re-admits the model with a clean slate.
    tokio::time::advance(Duration::from_secs(30)).await;
    f.small.set(Mode::Ok);
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-small"
    );
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(
        (
            snap.state,
            snap.consecutive_failures,
            snap.window_calls,
            snap.failure_rate
        ),
        (ModelState::Healthy, 0, 0, 0.0)
    );

    // One new failure is one failure, not the 16th of 17 calls.
    f.small.set(Mode::Fail(FailureClass::UpstreamServer, 500));
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-medium"
    );
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(
        (
            snap.state,
            snap.consecutive_failures,
            snap.window_calls,
            snap.failure_rate
        ),
        (ModelState::Degraded, 1, 1, 1.0)
    );
    let calls = f.small.calls();
    send(&f.router, req("low")).await.unwrap();
    assert_eq!(f.small.calls(), calls + 1, "the model is still in rotation");
}

#[tokio::test(start_paused = true)]
async fn a_stale_failure_during_the_probe_is_not_the_probes_verdict() {
    let f = fixture(no_jitter());
    // A straggler admitted while healthy, failing at t = 100 s.
    f.small.set(Mode::SlowFail(
        Duration::from_secs(100),
        FailureClass::UpstreamServer,
        500,
    ));
    let straggler = tokio::spawn(f.router.clone().oneshot(req("low")));
    settle().await;
    assert_eq!(f.small.calls(), 1);
    // Five failures in a row cool the model down until t = 30 s.
    f.small.set(Mode::Fail(FailureClass::UpstreamServer, 500));
    for _ in 0..5 {
        send(&f.router, req("low")).await.unwrap();
    }
    assert_eq!(state(&f.router, "mock-small"), ModelState::CooledDown);
    // At t = 30 s the probe is admitted; it succeeds at t = 110 s.
    tokio::time::advance(Duration::from_secs(30)).await;
    f.small.set(Mode::Sleep(Duration::from_secs(80)));
    let probe = tokio::spawn(f.router.clone().oneshot(req("low")));
    settle().await;
    assert_eq!(f.small.calls(), 7);
    // The straggler fails in the middle of the probe: not the probe's verdict.
    tokio::time::advance(Duration::from_secs(70)).await;
    settle().await;
    assert_eq!(straggler.await.unwrap().unwrap().model.as_str(), "mock-medium");
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!((snap.state, snap.cooled_until), (ModelState::Degraded, None));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(probe.await.unwrap().unwrap().model.as_str(), "mock-small");
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(
        (snap.state, snap.cooled_until, snap.consecutive_failures),
        (ModelState::Healthy, None, 0)
    );
    f.small.set(Mode::Ok);
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-small"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_capped_at_the_longest_cooldown() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(
        FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(999_999_999)),
        },
        429,
    ));
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-medium"
    );
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(snap.state, ModelState::CooledDown);
    assert_eq!(
        snap.cooled_until.unwrap() - Instant::now(),
        Duration::from_secs(300)
    );
    // After the longest cooldown the model is probed again.
    f.small.set(Mode::Ok);
    tokio::time::advance(Duration::from_secs(300)).await;
    assert_eq!(
        send(&f.router, req("low")).await.unwrap().model.as_str(),
        "mock-small"
    );
    // The monitor's cooldown is exact, and one too long for the clock saturates.
    assert!(f.router.cool_down(&"mock-large".into(), Duration::MAX));
    let snap = f.router.model_snapshot("mock-large").unwrap();
    assert_eq!(snap.state, ModelState::CooledDown);
    assert!(snap.cooled_until.unwrap() - Instant::now() > Duration::from_secs(86_400 * 365 * 100));
}

#[test]
fn jittered_backoff_never_exceeds_the_longest_cooldown() {
    let p = CooldownPolicy {
        base_cooldown: Duration::from_secs(30),
        max_cooldown: Duration::from_secs(100),
        jitter: 0.2,
        ..CooldownPolicy::default()
    };
    for ejections in [3, 4, 10, 1000] {
        for _ in 0..200 {
            let d = p.cooldown(ejections);
            assert!(d <= Duration::from_secs(100), "{ejections}: {d:?}");
            assert!(d >= Duration::from_secs(80), "{ejections}: {d:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cooled_model_shows_the_window_it_was_cooled_with() {
    let f = fixture(no_jitter());
    // 6 failures in 11 calls, never 5 in a row: cooled by the failure rate.
    for i in 0..11 {
        f.small.set(if i % 2 == 0 {
            Mode::Fail(FailureClass::UpstreamServer, 500)
        } else {
            Mode::Ok
        });
        send(&f.router, req("low")).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(snap.state, ModelState::CooledDown);
    assert_eq!(
        (snap.consecutive_failures, snap.window_calls, snap.failure_rate),
        (1, 11, 6.0 / 11.0)
    );
    // Still shown once the failures have left the window, and while half-open.
    tokio::time::advance(Duration::from_secs(29)).await;
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(snap.state, ModelState::Degraded);
    assert_eq!((snap.window_calls, snap.failure_rate), (11, 6.0 / 11.0));
    // Five in a row: the streak that cooled it.
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(FailureClass::Timeout, 504));
    for _ in 0..5 {
        send(&f.router, req("low")).await.unwrap();
    }
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(
        (
            snap.state,
            snap.consecutive_failures,
            snap.window_calls,
            snap.failure_rate
        ),
        (ModelState::CooledDown, 5, 5, 1.0)
    );
    // A failed probe extends the streak (the first five are still in the window).
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&f.router, req("low")).await.unwrap();
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!(
        (
            snap.state,
            snap.consecutive_failures,
            snap.window_calls,
            snap.failure_rate
        ),
        (ModelState::CooledDown, 6, 6, 1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_streak_expires_with_the_window() {
    let f = fixture(no_jitter());
    f.small.set(Mode::Fail(FailureClass::UpstreamServer, 500));
    for _ in 0..4 {
        send(&f.router, req("low")).await.unwrap();
    }
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!((snap.state, snap.consecutive_failures), (ModelState::Degraded, 4));
    // An hour without calls: the old streak is gone.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!((snap.state, snap.consecutive_failures), (ModelState::Healthy, 0));
    // One failure now is the first of a new streak, not the fifth.
    send(&f.router, req("low")).await.unwrap();
    let snap = f.router.model_snapshot("mock-small").unwrap();
    assert_eq!((snap.state, snap.consecutive_failures), (ModelState::Degraded, 1));
}

#[tokio::test(start_paused = true)]
async fn a_resolved_context_routes_by_index_and_each_attempt_carries_its_model() {
    let (small, medium, large) = (
        Script::new(Mode::Fail(FailureClass::UpstreamServer, 500)),
        Script::new(Mode::Ok),
        Script::new(Mode::Ok),
    );
    let catalog = Catalog::new(&TierSet::default());
    let router = TierRouter::builder(TierSet::default())
        .catalog(catalog.clone())
        .model("mock-small", small.service())
        .model("mock-medium", medium.service())
        .model("mock-large", large.service())
        .cooldown(no_jitter())
        .build()
        .unwrap();

    // The request names no tier: only its context does (resolved once, upstream).
    let mut r = LlmRequest::new("s", "agent", vec![Message::user("hello")]);
    catalog.resolve(&mut r);
    r.ctx.tier = catalog.tier_index("low");
    let resp = send(&router, r).await.unwrap();
    assert_eq!(resp.model.as_str(), "mock-medium", "fell back from low to medium");

    let first = small.last_request().unwrap();
    assert_eq!(first.ctx.model, catalog.model_index("mock-small"));
    assert_eq!(first.ctx.tier, catalog.tier_index("low"));
    let second = medium.last_request().unwrap();
    assert_eq!(second.ctx.model, catalog.model_index("mock-medium"));
    assert_eq!(second.ctx.tier, catalog.tier_index("medium"));
    assert_eq!(second.tier.as_ref().map(|t| t.as_str()), Some("medium"));

    // A context from another catalog is not trusted: the names decide.
    let mut foreign = req("high");
    Catalog::new(&TierSet::default()).resolve(&mut foreign);
    foreign.ctx.tier = catalog.tier_index("low");
    let resp = send(&router, foreign).await.unwrap();
    assert_eq!(resp.model.as_str(), "mock-large");
}

#[tokio::test(start_paused = true)]
async fn the_last_possible_attempt_gets_the_request_itself_not_a_copy() {
    // Counts the holders of the history when the model is called: the test's
    // handle and the request; a template kept for a fallback would be a third.
    let holders = Arc::new(Mutex::new(Vec::new()));
    let model = {
        let holders = holders.clone();
        tower::service_fn(move |req: LlmRequest| {
            holders.lock().unwrap().push(Arc::strong_count(&req.messages));
            let model = req.model.clone().unwrap_or_else(|| "none".into());
            std::future::ready(Ok::<_, BoxError>(LlmResponse::new(
                model,
                Message::assistant("ok"),
                Usage::new(1, 1),
            )))
        })
    };
    let build = |order| {
        TierRouter::builder(TierSet::default())
            .model("mock-small", model.clone())
            .model("mock-medium", model.clone())
            .model("mock-large", model.clone())
            .fallback_order(order)
            .build()
            .unwrap()
    };
    let history = Arc::new(vec![Message::user("hello")]);
    let call = |router: TierRouter| {
        let mut r = req("high");
        r.messages = history.clone();
        async move { send(&router, r).await.unwrap() }
    };
    // No other model to fall back to: the request moves into the attempt.
    call(build(FallbackOrder::SameTier)).await;
    // Lower tiers remain: the first attempt gets a copy, the template stays.
    call(build(FallbackOrder::DownOnly)).await;
    assert_eq!(*holders.lock().unwrap(), [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_a_saturated_model_gets_it_when_it_frees() {
    // A model that takes one call at a time. The second call finds it busy
    // and waits; when the first answers, the second must get the model's
    // freed capacity without a third call coming along to unstick it.
    let slow = Script::new(Mode::Sleep(Duration::from_secs(1)));
    let router = TierRouter::builder(TierSet::default())
        .model(
            "mock-small",
            tower::limit::ConcurrencyLimit::new(slow.service(), 1),
        )
        .model("mock-medium", Script::new(Mode::Ok).service())
        .model("mock-large", Script::new(Mode::Ok).service())
        .build()
        .unwrap();
    let first = tokio::spawn(router.clone().oneshot(req("low")));
    tokio::task::yield_now().await;
    let second = tokio::spawn(router.clone().oneshot(req("low")));
    tokio::task::yield_now().await;
    assert_eq!(slow.calls(), 1, "the second call waits for the limit");
    let first = tokio::time::timeout(Duration::from_secs(5), first).await;
    assert!(first.expect("first call stalled").unwrap().is_ok());
    let second = tokio::time::timeout(Duration::from_secs(5), second).await;
    let resp = second
        .expect("the waiting call stalled after the model freed")
        .unwrap();
    assert_eq!(resp.unwrap().model.as_str(), "mock-small");
    assert_eq!(slow.calls(), 2);
}
