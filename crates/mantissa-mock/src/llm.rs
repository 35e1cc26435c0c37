//! [`MockLlm`]: an in-process, scriptable LLM as a tower service.
//!
//! The mock serves any model id (the request's `model`, else its default
//! model) and decides each call's outcome when the call is made, in this
//! order:
//!
//! 1. a pending "fail the next N calls" failure ([`MockControl::fail_next`]);
//! 2. the model's failing mode ([`MockControl::fail_model`]);
//! 3. the next reply scripted for that model ([`MockControl::push_reply_for`]);
//! 4. the next reply of the shared script ([`MockControl::push_reply`]);
//! 5. the model's random failure rate (seeded, so a run is reproducible);
//! 6. the default responder: a closure if one was set, else an echo of the
//!    latest user message.
//!
//! It then waits the model's latency (with `tokio::time::sleep`, so paused-time
//! tests advance instantly) and answers. When `req.params.stream` is set the
//! answer is a streaming [`LlmResponse`] whose chunks carry the text, tool-call
//! deltas and, on the last chunk, the usage. For a stream the model's latency
//! is the wait before the response itself (the headers, in HTTP terms); the
//! [`StreamOptions`] delays then pace the chunks (time to first chunk, and
//! between chunks). A failure is returned from the call itself, never inside
//! a stream, except a deliberate cut ([`MockReply::cut_stream_after`]).
//!
//! Input tokens are estimated from the request with [`CharEstimator`] (or
//! taken from [`MockReply::with_usage`]); output tokens from the reply.
//!
//! # Examples
//!
//! Defaults: an echo model.
//!
//! ```
//! use mantissa_core::{LlmRequest, Message};
//! use mantissa_mock::MockLlm;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mantissa_core::BoxError> {
//! let llm = MockLlm::new();
//! let req = LlmRequest::new("s1", "trader", vec![Message::user("Buy ACME?")]);
//! let resp = llm.clone().oneshot(req).await?;
//! assert_eq!(resp.message.text(), "mock reply to: Buy ACME?");
//! assert_eq!(resp.model.as_str(), "mock-model");
//! assert!(resp.usage.input_tokens > 0);
//! assert_eq!(llm.calls("mock-model"), 1);
//! # Ok(()) }
//! ```
//!
//! Customised: a script, per-model latency, and a model switched into failing
//! mode mid-run.
//!
//! ```
//! use std::time::Duration;
//! use mantissa_core::{classify_box, FailureClass, LlmRequest, Message};
//! use mantissa_mock::{Latency, MockLlm, MockReply};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), mantissa_core::BoxError> {
//! let llm = MockLlm::builder()
//!     .default_model("mock-medium")
//!     .model_latency("mock-medium", Latency::millis(250))
//!     .seed(7)
//!     .build();
//! llm.push_reply(MockReply::tool_call("call_1", "get_market_price", serde_json::json!({"symbol": "ACME"})));
//!
//! let req = || LlmRequest::new("s1", "trader", vec![Message::user("Price of ACME?")]);
//! let start = tokio::time::Instant::now();
//! let resp = llm.clone().oneshot(req()).await?;
//! assert_eq!(resp.message.tool_calls[0].function.name, "get_market_price");
//! assert_eq!(start.elapsed(), Duration::from_millis(250));
//!
//! let control = llm.control();
//! control.fail_model("mock-medium", FailureClass::UpstreamServer);
//! let err = llm.clone().oneshot(req()).await.unwrap_err();
//! assert_eq!(classify_box(&err), FailureClass::UpstreamServer);
//! control.recover_model("mock-medium");
//! assert!(llm.clone().oneshot(req()).await.is_ok());
//! assert_eq!(llm.calls("mock-medium"), 3);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use mantissa_core::{
    BoxError, CharEstimator, FailureClass, FinishReason, LlmError, LlmRequest, LlmResponse, Message, ModelId,
    Role, TokenEstimator, Usage,
};
use pin_project_lite::pin_project;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Sleep;
use tower_service::Service;

use crate::latency::{FailNext, Latency};
use crate::reply::{MockFailure, MockReply, ReplyKind};
use crate::stream::{StreamOptions, chunks_for, paced};

/// The default model id the mock serves when a request names none.
pub const DEFAULT_MODEL: &str = "mock-model";

/// The default seed of the mock's random generator.
pub const DEFAULT_SEED: u64 = 0x6d61_6e74_6973_7361;

/// The default number of received requests the mock keeps.
pub const DEFAULT_RECORD_LIMIT: usize = 256;

type Responder = Arc<dyn Fn(&LlmRequest) -> MockReply + Send + Sync>;

struct Shared {
    default_model: ModelId,
    responder: Option<Responder>,
    stream: StreamOptions,
    record_limit: usize,
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<MockReply>,
    model_queues: HashMap<ModelId, VecDeque<MockReply>>,
    failing: HashMap<ModelId, MockFailure>,
    fail_next: FailNext<MockFailure>,
    default_latency: Latency,
    latencies: HashMap<ModelId, Latency>,
    failure_rates: HashMap<ModelId, (f64, MockFailure)>,
    calls: HashMap<ModelId, u64>,
    total: u64,
    requests: VecDeque<LlmRequest>,
    rng: StdRng,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every update is a single push/insert), so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An in-process mock LLM: a cheap-to-clone `tower::Service<LlmRequest>`.
///
/// Clones share their state (script, counters, failing modes). See the
/// [module docs](crate::llm) for the order in which an outcome is decided.
#[derive(Clone)]
pub struct MockLlm {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockLlm")
            .field("default_model", &self.shared.default_model)
            .field("total_calls", &self.control().total_calls())
            .finish_non_exhaustive()
    }
}

impl Default for MockLlm {
    fn default() -> Self {
        Self::new()
    }
}

impl MockLlm {
    /// An echo model named [`DEFAULT_MODEL`] with no latency and no failures.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a customised mock.
    pub fn builder() -> MockLlmBuilder {
        MockLlmBuilder::default()
    }

    /// A mock that answers with these replies in order, then echoes.
    pub fn with_replies(replies: impl IntoIterator<Item = MockReply>) -> Self {
        Self::builder().replies(replies).build()
    }

    /// A handle to script, steer and inspect the mock while it is in use
    /// (for example after it was moved into a service stack).
    pub fn control(&self) -> MockControl {
        MockControl {
            shared: self.shared.clone(),
        }
    }

    /// The model served when a request names none.
    pub fn default_model(&self) -> &ModelId {
        &self.shared.default_model
    }

    /// Appends a reply to the shared script (see [`MockControl::push_reply`]).
    pub fn push_reply(&self, reply: MockReply) {
        self.control().push_reply(reply);
    }

    /// Calls received for `model` (see [`MockControl::calls`]).
    pub fn calls(&self, model: &str) -> u64 {
        self.control().calls(model)
    }

    /// Calls received for every model (see [`MockControl::total_calls`]).
    pub fn total_calls(&self) -> u64 {
        self.control().total_calls()
    }

    /// The most recent request received (see [`MockControl::last_request`]).
    pub fn last_request(&self) -> Option<LlmRequest> {
        self.control().last_request()
    }

    /// The kept requests, oldest first (see [`MockControl::requests`]).
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.control().requests()
    }
}

/// Builds a [`MockLlm`].
///
/// ```
/// use std::time::Duration;
/// use mantissa_core::FailureClass;
/// use mantissa_mock::{Latency, MockLlm, MockReply, StreamOptions};
///
/// let llm = MockLlm::builder()
///     .default_model("mock-low")
///     .seed(42)
///     .latency(Latency::range(Duration::from_millis(20), Duration::from_millis(80)))
///     .model_latency("mock-high", Latency::millis(900))
///     .failure_rate("mock-low", 0.1, FailureClass::UpstreamServer)
///     .stream_options(StreamOptions::default().chunk_delay(Duration::from_millis(15)))
///     .responder(|req| MockReply::text(format!("{} messages seen", req.messages().len())))
///     .build();
/// assert_eq!(llm.default_model().as_str(), "mock-low");
/// ```
pub struct MockLlmBuilder {
    default_model: ModelId,
    seed: u64,
    default_latency: Latency,
    latencies: HashMap<ModelId, Latency>,
    failure_rates: HashMap<ModelId, (f64, MockFailure)>,
    responder: Option<Responder>,
    stream: StreamOptions,
    record_limit: usize,
    replies: VecDeque<MockReply>,
}

impl fmt::Debug for MockLlmBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockLlmBuilder")
            .field("default_model", &self.default_model)
            .field("seed", &self.seed)
            .field("default_latency", &self.default_latency)
            .field("latencies", &self.latencies)
            .field("failure_rates", &self.failure_rates)
            .field("responder", &self.responder.is_some())
            .field("stream", &self.stream)
            .field("record_limit", &self.record_limit)
            .field("replies", &self.replies.len())
            .finish()
    }
}

impl Default for MockLlmBuilder {
    fn default() -> Self {
        Self {
            default_model: ModelId::new(DEFAULT_MODEL),
            seed: DEFAULT_SEED,
            default_latency: Latency::Zero,
            latencies: HashMap::new(),
            failure_rates: HashMap::new(),
            responder: None,
            stream: StreamOptions::default(),
            record_limit: DEFAULT_RECORD_LIMIT,
            replies: VecDeque::new(),
        }
    }
}

impl MockLlmBuilder {
    /// The model served when a request names none. Defaults to [`DEFAULT_MODEL`].
    pub fn default_model(mut self, model: impl Into<ModelId>) -> Self {
        self.default_model = model.into();
        self
    }

    /// Seed of the generator behind latency ranges and failure rates.
    /// Defaults to [`DEFAULT_SEED`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Latency of models without their own. Defaults to [`Latency::Zero`].
    pub fn latency(mut self, latency: Latency) -> Self {
        self.default_latency = latency;
        self
    }

    /// Latency of one model. Defaults to the shared [`latency`](Self::latency).
    pub fn model_latency(mut self, model: impl Into<ModelId>, latency: Latency) -> Self {
        self.latencies.insert(model.into(), latency);
        self
    }

    /// Makes a fraction `rate` (clamped to `0..=1`) of `model`'s calls fail
    /// with `failure`, drawn from the seeded generator. Defaults to none.
    pub fn failure_rate(
        mut self,
        model: impl Into<ModelId>,
        rate: f64,
        failure: impl Into<MockFailure>,
    ) -> Self {
        self.failure_rates.insert(model.into(), (rate, failure.into()));
        self
    }

    /// Answers unscripted calls with this closure. Defaults to an echo of the
    /// latest user message (`mock reply to: …`).
    pub fn responder<F>(mut self, f: F) -> Self
    where
        F: Fn(&LlmRequest) -> MockReply + Send + Sync + 'static,
    {
        self.responder = Some(Arc::new(f));
        self
    }

    /// Pacing of streamed replies. Defaults to [`StreamOptions::default`]
    /// (no delays, one word per chunk).
    pub fn stream_options(mut self, opts: StreamOptions) -> Self {
        self.stream = opts;
        self
    }

    /// How many received requests to keep (0 keeps none). Defaults to
    /// [`DEFAULT_RECORD_LIMIT`].
    pub fn record_limit(mut self, n: usize) -> Self {
        self.record_limit = n;
        self
    }

    /// Scripted replies, answered in order before the responder.
    pub fn replies(mut self, replies: impl IntoIterator<Item = MockReply>) -> Self {
        self.replies.extend(replies);
        self
    }

    /// Builds the mock.
    pub fn build(self) -> MockLlm {
        MockLlm {
            shared: Arc::new(Shared {
                default_model: self.default_model,
                responder: self.responder,
                stream: self.stream,
                record_limit: self.record_limit,
                state: Mutex::new(State {
                    queue: self.replies,
                    model_queues: HashMap::new(),
                    failing: HashMap::new(),
                    fail_next: FailNext::default(),
                    default_latency: self.default_latency,
                    latencies: self.latencies,
                    failure_rates: self.failure_rates,
                    calls: HashMap::new(),
                    total: 0,
                    requests: VecDeque::new(),
                    rng: StdRng::seed_from_u64(self.seed),
                }),
            }),
        }
    }
}

/// Scripts, steers and inspects a [`MockLlm`] (shares its state).
#[derive(Clone)]
pub struct MockControl {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockControl")
            .field("default_model", &self.shared.default_model)
            .finish_non_exhaustive()
    }
}

impl MockControl {
    /// Appends a reply to the shared script (used by any model).
    pub fn push_reply(&self, reply: MockReply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// Appends several replies to the shared script.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = MockReply>) {
        self.shared.lock().queue.extend(replies);
    }

    /// Appends a reply that only calls to `model` consume (before the shared script).
    pub fn push_reply_for(&self, model: impl Into<ModelId>, reply: MockReply) {
        self.shared
            .lock()
            .model_queues
            .entry(model.into())
            .or_default()
            .push_back(reply);
    }

    /// Scripted replies not yet consumed (shared and per-model).
    pub fn pending_replies(&self) -> usize {
        let st = self.shared.lock();
        st.queue.len() + st.model_queues.values().map(VecDeque::len).sum::<usize>()
    }

    /// Drops every scripted reply not yet consumed.
    pub fn clear_replies(&self) {
        let mut st = self.shared.lock();
        st.queue.clear();
        st.model_queues.clear();
    }

    /// Every call to `model` fails with `failure` until [`recover_model`](Self::recover_model).
    pub fn fail_model(&self, model: impl Into<ModelId>, failure: impl Into<MockFailure>) {
        self.shared.lock().failing.insert(model.into(), failure.into());
    }

    /// Ends `model`'s failing mode.
    pub fn recover_model(&self, model: &str) {
        self.shared.lock().failing.remove(model);
    }

    /// Whether `model` is in failing mode.
    pub fn is_failing(&self, model: &str) -> bool {
        self.shared.lock().failing.contains_key(model)
    }

    /// The next `n` calls (to any model) fail with `failure`.
    pub fn fail_next(&self, n: usize, failure: impl Into<MockFailure>) {
        let failure = failure.into();
        self.shared.lock().fail_next.push(n, failure);
    }

    /// Sets `model`'s latency.
    pub fn set_latency(&self, model: impl Into<ModelId>, latency: Latency) {
        self.shared.lock().latencies.insert(model.into(), latency);
    }

    /// Sets `model`'s random failure rate (see [`MockLlmBuilder::failure_rate`]).
    pub fn set_failure_rate(&self, model: impl Into<ModelId>, rate: f64, failure: impl Into<MockFailure>) {
        self.shared
            .lock()
            .failure_rates
            .insert(model.into(), (rate, failure.into()));
    }

    /// Calls received for `model` (every call counts, failed ones too).
    pub fn calls(&self, model: &str) -> u64 {
        self.shared.lock().calls.get(model).copied().unwrap_or(0)
    }

    /// Calls received for every model.
    pub fn total_calls(&self) -> u64 {
        self.shared.lock().total
    }

    /// Calls received per model.
    pub fn calls_by_model(&self) -> BTreeMap<String, u64> {
        self.shared
            .lock()
            .calls
            .iter()
            .map(|(m, n)| (m.as_str().to_owned(), *n))
            .collect()
    }

    /// The most recent request received.
    pub fn last_request(&self) -> Option<LlmRequest> {
        self.shared.lock().requests.back().cloned()
    }

    /// The kept requests, oldest first (at most the record limit).
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// Zeroes the counters and forgets the kept requests.
    pub fn reset_counters(&self) {
        let mut st = self.shared.lock();
        st.calls.clear();
        st.total = 0;
        st.requests.clear();
    }
}

impl Service<LlmRequest> for MockLlm {
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let shared = &self.shared;
        let model = req.model.clone().unwrap_or_else(|| shared.default_model.clone());
        let (decided, latency) = {
            let mut st = shared.lock();
            *st.calls.entry(model.clone()).or_insert(0) += 1;
            st.total += 1;
            if shared.record_limit > 0 {
                if st.requests.len() >= shared.record_limit {
                    st.requests.pop_front();
                }
                st.requests.push_back(req.clone());
            }
            let decided = decide(&mut st, &model);
            let latency = match decided.as_ref().and_then(|r| r.latency) {
                Some(d) => d,
                None => {
                    let l = st.latencies.get(&model).copied().unwrap_or(st.default_latency);
                    l.sample(&mut st.rng)
                }
            };
            (decided, latency)
        };
        // The responder runs outside the lock: it may use the control handle.
        let reply = match decided {
            Some(r) => r,
            None => match &shared.responder {
                Some(f) => f(&req),
                None => echo(&req),
            },
        };
        let result = respond(reply, &req, model, shared.stream);
        ResponseFuture::new(latency, result)
    }
}

fn decide(st: &mut State, model: &ModelId) -> Option<MockReply> {
    if let Some(f) = st.fail_next.pop() {
        return Some(MockReply::failure(f));
    }
    if let Some(f) = st.failing.get(model) {
        return Some(MockReply::failure(f.clone()));
    }
    if let Some(r) = st.model_queues.get_mut(model).and_then(VecDeque::pop_front) {
        return Some(r);
    }
    if let Some(r) = st.queue.pop_front() {
        return Some(r);
    }
    if let Some((rate, failure)) = st.failure_rates.get(model) {
        let (rate, failure) = (*rate, failure.clone());
        if rate > 0.0 && st.rng.random::<f64>() < rate {
            return Some(MockReply::failure(failure));
        }
    }
    None
}

/// The default reply: `mock reply to: <latest user text>` (at most 200 chars of it).
fn echo(req: &LlmRequest) -> MockReply {
    match req.latest_user_message() {
        Some(m) => {
            let text: String = m.text().chars().take(200).collect();
            MockReply::text(format!("mock reply to: {text}"))
        }
        None => MockReply::text("mock reply"),
    }
}

fn respond(
    reply: MockReply,
    req: &LlmRequest,
    model: ModelId,
    opts: StreamOptions,
) -> Result<LlmResponse, BoxError> {
    let (text, calls) = match reply.kind {
        ReplyKind::Fail(f) => return Err(f.to_error()),
        ReplyKind::Message { text, calls } => (text, calls),
    };
    let usage = reply.usage.unwrap_or_else(|| {
        let est = CharEstimator;
        let mut out = text.as_deref().map_or(0, |t| u64::from(est.estimate_text(t)));
        for c in &calls {
            out += u64::from(est.estimate_text(&c.function.name));
            out += u64::from(est.estimate_text(&c.function.arguments));
        }
        Usage::new(est.estimate_messages(req.messages()), out)
    });
    let finish = reply.finish_reason.unwrap_or(if calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    });
    if req.params.stream {
        let chunks = chunks_for(
            text.as_deref(),
            &calls,
            finish,
            usage,
            opts.words_per_chunk_value(),
        );
        let cut = reply.cut_stream_after.or(opts.cut_after_value());
        return Ok(LlmResponse::streaming(model, paced(chunks, opts, cut)));
    }
    let message = Message {
        role: Role::Assistant,
        content: text,
        name: None,
        tool_calls: calls,
        tool_call_id: None,
    };
    let mut resp = LlmResponse::new(model, message, usage);
    resp.finish_reason = Some(finish);
    Ok(resp)
}

pin_project! {
    /// The future of a [`MockLlm`] call: waits the simulated latency, then
    /// yields the outcome decided when the call was made.
    pub struct ResponseFuture {
        #[pin]
        sleep: Option<Sleep>,
        result: Option<Result<LlmResponse, BoxError>>,
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("waiting", &self.sleep.is_some())
            .field("result", &self.result)
            .finish()
    }
}

impl ResponseFuture {
    fn new(latency: Duration, result: Result<LlmResponse, BoxError>) -> Self {
        Self {
            sleep: (!latency.is_zero()).then(|| tokio::time::sleep(latency)),
            result: Some(result),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<LlmResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(sleep) = this.sleep.as_pin_mut() {
            if sleep.poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(this.result.take().unwrap_or_else(|| {
            Err(Box::new(LlmError::new(
                FailureClass::Other,
                "mock response future polled after completion",
            )))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use mantissa_core::{Chunk, StreamAssembler, ToolCall, classify_box};
    use tokio::time::Instant;
    use tower::ServiceExt;

    fn req(text: &str) -> LlmRequest {
        LlmRequest::new(
            "s",
            "agent",
            vec![Message::system("be brief"), Message::user(text)],
        )
    }

    fn req_for(model: &str) -> LlmRequest {
        req("hi").with_model(model)
    }

    fn streaming(mut r: LlmRequest) -> LlmRequest {
        r.params.stream = true;
        r
    }

    async fn collect(resp: LlmResponse) -> (Vec<Result<Chunk, BoxError>>, StreamAssembler) {
        let mut asm = StreamAssembler::new();
        let mut items = Vec::new();
        let mut stream = resp.stream.unwrap();
        while let Some(item) = stream.next().await {
            if let Ok(c) = &item {
                asm.push(c);
            }
            items.push(item);
        }
        (items, asm)
    }

    #[tokio::test]
    async fn script_runs_in_order_then_echoes() {
        let llm = MockLlm::with_replies([
            MockReply::text("one"),
            MockReply::tool_call("call_9", "place_order", serde_json::json!({"symbol": "ACME"})),
        ]);
        let r1 = llm.clone().oneshot(req("a")).await.unwrap();
        assert_eq!(r1.message.text(), "one");
        assert_eq!(r1.finish_reason, Some(FinishReason::Stop));
        let r2 = llm.clone().oneshot(req("b")).await.unwrap();
        assert_eq!(r2.message.content, None);
        assert_eq!(r2.message.tool_calls[0].id, "call_9");
        assert_eq!(
            r2.message.tool_calls[0].parse_arguments().unwrap(),
            serde_json::json!({"symbol": "ACME"})
        );
        assert_eq!(r2.finish_reason, Some(FinishReason::ToolCalls));
        let r3 = llm.clone().oneshot(req("third")).await.unwrap();
        assert_eq!(r3.message.text(), "mock reply to: third");
        assert_eq!(llm.control().pending_replies(), 0);
    }

    #[tokio::test]
    async fn per_model_script_takes_precedence_and_models_are_served_as_asked() {
        let llm = MockLlm::new();
        let c = llm.control();
        c.push_reply(MockReply::text("shared"));
        c.push_reply_for("mock-high", MockReply::text("high only"));
        let low = llm.clone().oneshot(req_for("mock-low")).await.unwrap();
        assert_eq!((low.message.text(), low.model.as_str()), ("shared", "mock-low"));
        let high = llm.clone().oneshot(req_for("mock-high")).await.unwrap();
        assert_eq!(
            (high.message.text(), high.model.as_str()),
            ("high only", "mock-high")
        );
        assert_eq!(llm.calls("mock-low"), 1);
        assert_eq!(llm.calls("mock-high"), 1);
        assert_eq!(llm.calls("mock-model"), 0);
        assert_eq!(llm.total_calls(), 2);
        assert_eq!(c.calls_by_model().len(), 2);
    }

    #[tokio::test]
    async fn failures_reach_the_caller_classified() {
        let llm = MockLlm::with_replies([
            MockReply::rate_limited(Some(Duration::from_secs(2))),
            MockReply::http_error(503),
            MockReply::context_length_exceeded(),
            MockReply::transport(),
        ]);
        let e = llm.clone().oneshot(req("x")).await.unwrap_err();
        assert_eq!(
            classify_box(&e),
            FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(e.downcast_ref::<LlmError>().unwrap().status(), Some(429));
        let e = llm.clone().oneshot(req("x")).await.unwrap_err();
        assert_eq!(classify_box(&e), FailureClass::UpstreamServer);
        assert_eq!(e.downcast_ref::<LlmError>().unwrap().status(), Some(503));
        let e = llm.clone().oneshot(req("x")).await.unwrap_err();
        assert_eq!(classify_box(&e), FailureClass::ContextLengthExceeded);
        let e = llm.clone().oneshot(req("x")).await.unwrap_err();
        assert_eq!(classify_box(&e), FailureClass::Transport);
        assert!(std::error::Error::source(&*e).is_some());
    }

    #[tokio::test]
    async fn failing_mode_and_fail_next() {
        let llm = MockLlm::new();
        let c = llm.control();
        c.push_reply(MockReply::text("kept for later"));
        c.fail_model("mock-medium", FailureClass::UpstreamServer);
        assert!(c.is_failing("mock-medium"));
        let e = llm.clone().oneshot(req_for("mock-medium")).await.unwrap_err();
        assert_eq!(classify_box(&e), FailureClass::UpstreamServer);
        // Other models are unaffected and the script was not consumed by the failure.
        let ok = llm.clone().oneshot(req_for("mock-low")).await.unwrap();
        assert_eq!(ok.message.text(), "kept for later");
        c.recover_model("mock-medium");
        assert!(llm.clone().oneshot(req_for("mock-medium")).await.is_ok());

        c.fail_next(2, FailureClass::Timeout);
        for _ in 0..2 {
            let e = llm.clone().oneshot(req_for("mock-low")).await.unwrap_err();
            assert_eq!(classify_box(&e), FailureClass::Timeout);
        }
        assert!(llm.clone().oneshot(req_for("mock-low")).await.is_ok());
    }

    #[tokio::test]
    async fn failure_rate_is_seeded_and_roughly_right() {
        async fn pattern(seed: u64) -> Vec<bool> {
            let llm = MockLlm::builder()
                .seed(seed)
                .failure_rate("m", 0.3, FailureClass::UpstreamServer)
                .record_limit(0)
                .build();
            let mut out = Vec::new();
            for _ in 0..400 {
                out.push(llm.clone().oneshot(req_for("m")).await.is_err());
            }
            // Another model is never affected.
            assert!(llm.clone().oneshot(req_for("other")).await.is_ok());
            out
        }
        let a = pattern(1).await;
        assert_eq!(a, pattern(1).await);
        assert_ne!(a, pattern(2).await);
        let failures = a.iter().filter(|f| **f).count();
        assert!(
            (80..=160).contains(&failures),
            "{failures} failures of 400 at rate 0.3"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_simulated_on_the_tokio_clock() {
        let llm = MockLlm::builder()
            .latency(Latency::millis(100))
            .model_latency("slow", Latency::millis(2_000))
            .model_latency(
                "ranged",
                Latency::range(Duration::from_millis(10), Duration::from_millis(20)),
            )
            .build();
        let t = Instant::now();
        llm.clone().oneshot(req_for("fast")).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(100));
        let t = Instant::now();
        llm.clone().oneshot(req_for("slow")).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(2_000));
        let t = Instant::now();
        llm.clone().oneshot(req_for("ranged")).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(10) && t.elapsed() <= Duration::from_millis(21));
        // A reply's own latency wins, failures wait too.
        llm.push_reply(MockReply::server_error().with_latency(Duration::from_secs(5)));
        let t = Instant::now();
        assert!(llm.clone().oneshot(req_for("fast")).await.is_err());
        assert_eq!(t.elapsed(), Duration::from_secs(5));
        // Changing a model's latency mid-run.
        llm.control().set_latency("fast", Latency::Zero);
        let t = Instant::now();
        llm.clone().oneshot(req_for("fast")).await.unwrap();
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn usage_is_estimated_or_scripted() {
        let llm = MockLlm::new();
        let r = req("abcdefgh");
        let expected_in = CharEstimator.estimate_messages(r.messages());
        let resp = llm.clone().oneshot(r).await.unwrap();
        assert_eq!(resp.usage.input_tokens, expected_in);
        let expected_out = u64::from(CharEstimator.estimate_text("mock reply to: abcdefgh"));
        assert_eq!(resp.usage.output_tokens, expected_out);
        llm.push_reply(MockReply::text("x").with_usage(Usage::new(1234, 56)));
        let resp = llm.clone().oneshot(req("y")).await.unwrap();
        assert_eq!(resp.usage, Usage::new(1234, 56));
    }

    #[tokio::test]
    async fn responder_closure_and_recorded_requests() {
        let llm = MockLlm::builder()
            .responder(|r| MockReply::text(format!("{} msgs", r.messages().len())))
            .record_limit(2)
            .build();
        for text in ["a", "b", "c"] {
            let resp = llm.clone().oneshot(req(text)).await.unwrap();
            assert_eq!(resp.message.text(), "2 msgs");
        }
        let kept = llm.requests();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].latest_user_message().unwrap().text(), "b");
        assert_eq!(
            llm.last_request().unwrap().latest_user_message().unwrap().text(),
            "c"
        );
        llm.control().reset_counters();
        assert_eq!(llm.total_calls(), 0);
        assert!(llm.last_request().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn streams_text_with_pacing_and_final_usage() {
        let llm = MockLlm::builder()
            .stream_options(
                StreamOptions::default()
                    .first_chunk_delay(Duration::from_millis(300))
                    .chunk_delay(Duration::from_millis(10)),
            )
            .build();
        llm.push_reply(MockReply::text("Hello brave new world").with_usage(Usage::new(7, 4)));
        let start = Instant::now();
        let resp = llm.clone().oneshot(streaming(req("x"))).await.unwrap();
        assert!(resp.is_streaming());
        assert_eq!(start.elapsed(), Duration::ZERO);
        let mut stream = resp.stream.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.content.as_deref(), Some("Hello "));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        let mut asm = StreamAssembler::new();
        asm.push(&first);
        let mut n = 1;
        while let Some(c) = stream.next().await {
            let c = c.unwrap();
            if c.usage.is_none() {
                assert!(c.content.is_some());
            }
            asm.push(&c);
            n += 1;
        }
        assert_eq!(n, 5, "4 words and a final chunk");
        assert_eq!(start.elapsed(), Duration::from_millis(340));
        assert_eq!(asm.message().text(), "Hello brave new world");
        assert_eq!(asm.usage(), Some(Usage::new(7, 4)));
        assert_eq!(asm.finish_reason(), Some(&FinishReason::Stop));
    }

    #[tokio::test]
    async fn streams_tool_calls_as_deltas() {
        let calls = vec![
            ToolCall::new(
                "call_a",
                "get_market_price",
                &serde_json::json!({"symbol": "ACME"}),
            ),
            ToolCall::new(
                "call_b",
                "assess_risk",
                &serde_json::json!({"symbol": "ACME", "quantity": 5}),
            ),
        ];
        let llm = MockLlm::with_replies([MockReply::tool_calls(calls.clone())]);
        let resp = llm.clone().oneshot(streaming(req("x"))).await.unwrap();
        let (items, asm) = collect(resp).await;
        assert!(items.iter().all(Result::is_ok));
        let deltas = items
            .iter()
            .filter(|c| !c.as_ref().unwrap().tool_calls.is_empty())
            .count();
        assert!(
            deltas >= 4,
            "id/name delta plus argument pieces per call, got {deltas}"
        );
        assert_eq!(asm.message().tool_calls, calls);
        assert_eq!(asm.finish_reason(), Some(&FinishReason::ToolCalls));
        assert!(asm.usage().unwrap().input_tokens > 0);
    }

    #[tokio::test]
    async fn stream_can_be_cut_with_a_transport_error() {
        let llm = MockLlm::with_replies([MockReply::text("one two three four").cut_stream_after(2)]);
        let resp = llm.clone().oneshot(streaming(req("x"))).await.unwrap();
        let (items, asm) = collect(resp).await;
        assert_eq!(items.len(), 3);
        let err = items[2].as_ref().unwrap_err();
        assert_eq!(classify_box(err), FailureClass::Transport);
        assert_eq!(asm.message().text(), "one two ");
        assert_eq!(asm.usage(), None);

        let cut_all = MockLlm::builder()
            .stream_options(StreamOptions::default().cut_after(Some(0)))
            .build();
        let resp = cut_all.clone().oneshot(streaming(req("x"))).await.unwrap();
        let (items, _) = collect(resp).await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }

    #[tokio::test]
    async fn streaming_failure_fails_the_call_itself() {
        let llm = MockLlm::with_replies([MockReply::server_error()]);
        let e = llm.clone().oneshot(streaming(req("x"))).await.unwrap_err();
        assert_eq!(classify_box(&e), FailureClass::UpstreamServer);
    }

    #[tokio::test]
    async fn odd_inputs_do_not_panic() {
        let llm = MockLlm::builder()
            .failure_rate("nan", f64::NAN, FailureClass::Other)
            .failure_rate("big", 7.0, FailureClass::Other)
            .failure_rate("neg", -1.0, FailureClass::Other)
            .build();
        let empty = LlmRequest::new("s", "a", Vec::new());
        let r = llm.clone().oneshot(empty.clone()).await.unwrap();
        assert_eq!(r.message.text(), "mock reply");
        assert!(llm.clone().oneshot(empty.clone().with_model("nan")).await.is_ok());
        assert!(
            llm.clone()
                .oneshot(empty.clone().with_model("big"))
                .await
                .is_err()
        );
        assert!(llm.clone().oneshot(empty.clone().with_model("neg")).await.is_ok());
        llm.push_reply(MockReply::text(""));
        let resp = llm.clone().oneshot(streaming(empty)).await.unwrap();
        let (items, asm) = collect(resp).await;
        assert_eq!(items.len(), 1);
        assert_eq!(asm.finish_reason(), Some(&FinishReason::Stop));
        let long = "é".repeat(10_000);
        let resp = llm.clone().oneshot(req(&long)).await.unwrap();
        assert_eq!(resp.message.text().chars().count(), "mock reply to: ".len() + 200);
    }
}
