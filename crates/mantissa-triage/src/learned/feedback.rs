//! Outcomes of served calls: [`CallId`], [`FeedbackLog`], [`FeedbackLayer`]
//! and the [`OnlineLearner`].
//!
//! [`FeedbackLayer`] sits above [`TriageLayer`](crate::TriageLayer). For
//! each call that triage decided, it remembers the latest user turn, the
//! tier and the model that answered in the [`FeedbackLog`] (a bounded
//! memory of recent calls), and puts a [`CallId`] into the response's
//! extensions. Later, [`FeedbackLog::feedback`]`(id, score)` writes the
//! outcome as a JSON line (`{"prompt", "tier", "model", "score"}`, the
//! training format) and, with an [`OnlineLearner`], queues it for an online
//! update.
//!
//! ```
//! use mantissa_core::{LlmRequest, LlmResponse, Message, TierSet, Usage};
//! use mantissa_triage::{CallId, FeedbackLayer, FeedbackLog, RuleTriage, TriageLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let tiers = TierSet::default();
//! let model = service_fn(|req: LlmRequest| async move {
//!     Ok::<_, std::convert::Infallible>(LlmResponse::new("m", Message::assistant("ok"), Usage::default()))
//! });
//! let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
//! let log = FeedbackLog::new(SharedBuf(lines.clone()));
//! let svc = FeedbackLayer::new(log.clone()).layer(TriageLayer::new(&tiers, RuleTriage::new(&tiers)).layer(model));
//! let resp = svc.oneshot(LlmRequest::new("s", "a", vec![Message::user("hi")])).await.unwrap();
//! let id = *resp.extensions.get::<CallId>().unwrap();
//! log.feedback(id, 1.0).unwrap();
//! assert_eq!(
//!     String::from_utf8(lines.lock().unwrap().clone()).unwrap(),
//!     "{\"prompt\":\"hi\",\"tier\":\"low\",\"model\":\"m\",\"score\":1.0}\n"
//! );
//! # });
//! # struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
//! # impl std::io::Write for SharedBuf {
//! #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(b) }
//! #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use mantissa_core::{LlmRequest, LlmResponse, Tier};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::features::Featurizer;
use super::model::Model;
use super::train::{Outcome, online_update};

/// The id of a call whose outcome can be reported, found in the response's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// Why feedback was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedbackError {
    /// The id is unknown: never issued, already reported, or forgotten (the
    /// log remembers only the most recent calls).
    #[error("unknown call id {0} (never issued, already reported, or older than the remembered calls)")]
    UnknownCall(CallId),
    /// The score is not in `[0, 1]`.
    #[error("feedback score must be in [0, 1], got {0}")]
    Score(f64),
    /// The outcome line could not be written.
    #[error("writing the outcome: {0}")]
    Write(#[from] std::io::Error),
    /// No feedback log is configured.
    #[error("feedback is not enabled (configure a feedback log)")]
    Disabled,
}

#[derive(Debug)]
struct Pending {
    prompt: String,
    tier: Tier,
    model: String,
}

struct LogInner {
    calls: Mutex<(HashMap<u64, Pending>, VecDeque<u64>)>,
    capacity: usize,
    next: AtomicU64,
    writer: Mutex<Box<dyn Write + Send>>,
    learner: Option<OnlineLearner>,
}

/// Remembers recent calls and writes their outcomes. Cheap to clone.
#[derive(Clone)]
pub struct FeedbackLog {
    inner: Arc<LogInner>,
}

impl fmt::Debug for FeedbackLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedbackLog")
            .field("capacity", &self.inner.capacity)
            .field("online", &self.inner.learner.is_some())
            .finish_non_exhaustive()
    }
}

/// Default number of recent calls a [`FeedbackLog`] remembers.
pub const DEFAULT_FEEDBACK_CAPACITY: usize = 10_000;

impl FeedbackLog {
    /// A log writing outcome lines to `writer`, remembering the last
    /// [`DEFAULT_FEEDBACK_CAPACITY`] calls.
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Self::build(Box::new(writer), DEFAULT_FEEDBACK_CAPACITY, None)
    }

    /// A log appending to the file at `path` (created if missing).
    pub fn open(path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(file))
    }

    fn build(writer: Box<dyn Write + Send>, capacity: usize, learner: Option<OnlineLearner>) -> Self {
        Self {
            inner: Arc::new(LogInner {
                calls: Mutex::new((HashMap::new(), VecDeque::new())),
                capacity,
                next: AtomicU64::new(1),
                writer: Mutex::new(writer),
                learner,
            }),
        }
    }

    fn rebuild(self, capacity: usize, learner: Option<OnlineLearner>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                let writer = inner.writer.into_inner().unwrap_or_else(|p| p.into_inner());
                Self::build(writer, capacity, learner)
            }
            // Already shared: keep it as it is.
            Err(inner) => Self { inner },
        }
    }

    /// Remembers up to `calls` recent calls (at least 1). Set before cloning
    /// the log. Defaults to [`DEFAULT_FEEDBACK_CAPACITY`].
    pub fn capacity(self, calls: usize) -> Self {
        let learner = self.inner.learner.clone();
        self.rebuild(calls.max(1), learner)
    }

    /// Hands every outcome to `learner` for online updates. Set before
    /// cloning the log. Defaults to none (outcomes are only written).
    pub fn learner(self, learner: OnlineLearner) -> Self {
        let capacity = self.inner.capacity;
        self.rebuild(capacity, Some(learner))
    }

    /// The online learner, if any.
    pub fn get_learner(&self) -> Option<&OnlineLearner> {
        self.inner.learner.as_ref()
    }

    /// Remembers a served call and returns its id.
    pub fn record(&self, prompt: String, tier: Tier, model: String) -> CallId {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.inner.calls.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        while order.len() >= self.inner.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        map.insert(id, Pending { prompt, tier, model });
        order.push_back(id);
        CallId(id)
    }

    /// Reports how call `id` went (`score` in `[0, 1]`, 1 = good): writes
    /// the outcome line and hands it to the online learner. Each call is
    /// reported once.
    pub fn feedback(&self, id: CallId, score: f64) -> Result<Outcome, FeedbackError> {
        if !(score.is_finite() && (0.0..=1.0).contains(&score)) {
            return Err(FeedbackError::Score(score));
        }
        let pending = {
            let mut guard = self.inner.calls.lock().unwrap_or_else(|p| p.into_inner());
            let (map, order) = &mut *guard;
            let p = map.remove(&id.0).ok_or(FeedbackError::UnknownCall(id))?;
            if let Some(i) = order.iter().position(|x| *x == id.0) {
                order.remove(i);
            }
            p
        };
        let outcome = Outcome {
            prompt: pending.prompt,
            tier: pending.tier.to_string(),
            model: pending.model,
            score,
            domain: None,
        };
        let mut line = serde_json::to_vec(&outcome).map_err(std::io::Error::other)?;
        line.push(b'\n');
        {
            let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            w.write_all(&line)?;
            w.flush()?;
        }
        if let Some(l) = &self.inner.learner {
            l.push(outcome.clone());
        }
        Ok(outcome)
    }
}

/// Puts a [`CallId`] on the responses of triaged calls and remembers them
/// in a [`FeedbackLog`]. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct FeedbackLayer {
    log: Option<FeedbackLog>,
}

impl FeedbackLayer {
    /// Records calls in `log`.
    pub fn new(log: FeedbackLog) -> Self {
        Self { log: Some(log) }
    }

    /// Records nothing: responses pass through unchanged.
    pub fn disabled() -> Self {
        Self { log: None }
    }
}

impl<S> Layer<S> for FeedbackLayer {
    type Service = FeedbackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FeedbackService {
            inner,
            log: self.log.clone(),
        }
    }
}

/// The service of [`FeedbackLayer`].
#[derive(Debug, Clone)]
pub struct FeedbackService<S> {
    inner: S,
    log: Option<FeedbackLog>,
}

impl<S> Service<LlmRequest> for FeedbackService<S>
where
    S: Service<LlmRequest, Response = LlmResponse>,
{
    type Response = LlmResponse;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let pending = self.log.as_ref().and_then(|log| {
            req.latest_user_message()
                .map(|m| (log.clone(), m.text().to_owned()))
        });
        ResponseFuture {
            inner: self.inner.call(req),
            pending,
        }
    }
}

pin_project! {
    /// Response future of [`FeedbackService`]: attaches the [`CallId`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<(FeedbackLog, String)>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<LlmResponse, E>>,
{
    type Output = Result<LlmResponse, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        if let Some((log, prompt)) = this.pending.take() {
            if let Some(tier) = resp.tier_decision().map(|d| d.tier.clone()) {
                let id = log.record(prompt, tier, resp.model.to_string());
                resp.extensions.insert(id);
            }
        }
        Poll::Ready(Ok(resp))
    }
}

struct LearnerInner {
    model: Arc<ArcSwap<Model>>,
    featurizer: Featurizer,
    ladder: Vec<Tier>,
    step: f32,
    batch: usize,
    pending: Mutex<VecDeque<Outcome>>,
    history: Mutex<Vec<Arc<Model>>>,
    dropped: AtomicU64,
}

/// Online updates of a served [`LearnedTriage`](super::LearnedTriage)
/// model. Cheap to clone.
///
/// Outcomes are queued (at most 10,000; the oldest are dropped beyond that
/// and counted in [`dropped`](Self::dropped)). [`apply_pending`](Self::apply_pending)
/// — called by [`FeedbackLog::feedback`] whenever a batch is full, or by you
/// — copies the model, applies one SGD step of at most `step` per outcome to
/// the head of the tier that served it, and swaps the copy in atomically:
/// triage never waits for it. The previous models (the last 8) stay
/// available to [`rollback`](Self::rollback).
///
/// An outcome's tier maps to a head by name; otherwise the ladder's lowest
/// tier maps to the cheapest head and its top tier to the strongest head;
/// outcomes of other tiers are not learned from (they are still written).
#[derive(Clone)]
pub struct OnlineLearner {
    inner: Arc<LearnerInner>,
}

impl fmt::Debug for OnlineLearner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnlineLearner")
            .field("step", &self.inner.step)
            .field("batch", &self.inner.batch)
            .finish_non_exhaustive()
    }
}

const MAX_PENDING: usize = 10_000;
const HISTORY: usize = 8;

impl OnlineLearner {
    pub(crate) fn new(model: Arc<ArcSwap<Model>>, ladder: Vec<Tier>, step: f32) -> Self {
        let featurizer = model.load().featurizer();
        let step = if step.is_finite() {
            step.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            inner: Arc::new(LearnerInner {
                model,
                featurizer,
                ladder,
                step,
                batch: 64,
                pending: Mutex::new(VecDeque::new()),
                history: Mutex::new(Vec::new()),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// The step size bound (clamped to `[0, 1]`).
    pub fn step(&self) -> f32 {
        self.inner.step
    }

    /// Queues an outcome; applies the queue when it holds a batch (64).
    pub fn push(&self, outcome: Outcome) {
        let full = {
            let mut q = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= MAX_PENDING {
                q.pop_front();
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(outcome);
            q.len() >= self.inner.batch
        };
        if full {
            self.apply_pending();
        }
    }

    /// Outcomes waiting for an update.
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().map_or(0, |q| q.len())
    }

    /// Outcomes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn head(&self, model: &Model, tier: &str) -> Option<usize> {
        if let Some(h) = model.tiers().iter().position(|t| t == tier) {
            return Some(h);
        }
        let rank = self.inner.ladder.iter().position(|t| t.as_str() == tier)?;
        if rank == 0 {
            Some(0)
        } else if rank + 1 == self.inner.ladder.len() {
            Some(model.tiers().len() - 1)
        } else {
            None
        }
    }

    /// Applies the queued outcomes to a copy of the served model and serves
    /// the copy. Returns how many outcomes were learned from.
    pub fn apply_pending(&self) -> usize {
        let batch: Vec<Outcome> = {
            let mut q = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            q.drain(..).collect()
        };
        if batch.is_empty() {
            return 0;
        }
        let mut history = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.inner.model.load_full();
        let mut next = (*current).clone();
        let mut learned = 0;
        for o in &batch {
            if let Some(h) = self.head(&next, &o.tier) {
                online_update(
                    &mut next,
                    &self.inner.featurizer,
                    &o.prompt,
                    h,
                    o.score,
                    self.inner.step,
                );
                learned += 1;
            }
        }
        if learned > 0 {
            if history.len() >= HISTORY {
                history.remove(0);
            }
            history.push(current);
            self.inner.model.store(Arc::new(next));
        }
        learned
    }

    /// The model served now (save it with [`Model::save`]).
    pub fn snapshot(&self) -> Arc<Model> {
        self.inner.model.load_full()
    }

    /// Serves `model` (for example a snapshot taken earlier).
    pub fn restore(&self, model: Arc<Model>) {
        let mut history = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() >= HISTORY {
            history.remove(0);
        }
        history.push(self.inner.model.load_full());
        self.inner.model.store(model);
    }

    /// Serves the model from before the last update; `false` when there is
    /// none.
    pub fn rollback(&self) -> bool {
        let mut history = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        match history.pop() {
            Some(m) => {
                self.inner.model.store(m);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::TierDecision;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_remembers_only_the_most_recent_calls() {
        let buf = Buf::default();
        let log = FeedbackLog::new(buf.clone()).capacity(2);
        let a = log.record("a".into(), Tier::low(), "m".into());
        let b = log.record("b".into(), Tier::high(), "m".into());
        let c = log.record("c".into(), Tier::low(), "m".into());
        assert!(matches!(log.feedback(a, 1.0), Err(FeedbackError::UnknownCall(id)) if id == a));
        assert_eq!(log.feedback(b, 0.25).unwrap().tier, "high");
        assert_eq!(log.feedback(c, 1.0).unwrap().prompt, "c");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("{\"prompt\":\"b\",\"tier\":\"high\",\"model\":\"m\",\"score\":0.25}\n"));
        assert!(matches!(log.feedback(c, f64::NAN), Err(FeedbackError::Score(_))));
    }

    #[test]
    fn a_disabled_layer_passes_responses_through() {
        use tower::{ServiceExt, service_fn};
        let svc = FeedbackLayer::disabled().layer(service_fn(|_r: LlmRequest| async {
            let mut resp = LlmResponse::new(
                "m",
                mantissa_core::Message::assistant("ok"),
                mantissa_core::Usage::default(),
            );
            resp.decision = Some(TierDecision::new("low", 0.1, crate::TriageReason::Rules));
            Ok::<_, std::convert::Infallible>(resp)
        }));
        let req = LlmRequest::new("s", "a", vec![mantissa_core::Message::user("hi")]);
        let resp = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(svc.oneshot(req))
            .unwrap();
        assert!(resp.extensions.get::<CallId>().is_none());
    }
}
