//! [`HttpMockLlm`]: an OpenAI-compatible chat-completions server on loopback,
//! built on [`wiremock`].
//!
//! It answers `POST /v1/chat/completions` the way OpenAI does: JSON bodies in
//! the exact response shape, server-sent events for `"stream": true` (with a
//! usage chunk when `stream_options.include_usage` is set, then
//! `data: [DONE]`), and failures as real HTTP (429 with `Retry-After` and
//! `x-ratelimit-*` headers, 5xx, 400 with OpenAI's error body, malformed JSON,
//! empty `choices`, truncated streams, delayed responses).
//!
//! A streamed reply is sent as one SSE body (wiremock cannot pace chunks);
//! a delay ([`HttpReply::with_delay`]) holds back the whole response. Use the
//! in-process [`MockLlm`](crate::MockLlm) to test chunk timing.
//!
//! Behaviour is set per test with a *default* reply (`respond_with_text`,
//! `fail_with_status`, `stream_text`, …, each replacing the previous one) and
//! a queue of one-shot replies served first ([`HttpMockLlm::enqueue`]). The
//! underlying [`MockServer`] is exposed for custom mocks; those mounted with
//! wiremock's default priority take precedence over the built-in responder.
//!
//! # Examples
//!
//! Defaults: an echo model.
//!
//! ```
//! use mantissa_mock::HttpMockLlm;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = HttpMockLlm::start().await;
//! let body: serde_json::Value = reqwest::Client::new()
//!     .post(format!("{}/chat/completions", mock.base_url()))
//!     .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
//!     .send().await?
//!     .json().await?;
//! assert_eq!(body["object"], "chat.completion");
//! assert_eq!(body["choices"][0]["message"]["content"], "mock reply to: hi");
//! assert_eq!(mock.calls(), 1);
//! # Ok(()) }
//! ```
//!
//! Customised: a 429 first, then a streamed answer.
//!
//! ```
//! use std::time::Duration;
//! use mantissa_mock::{HttpMockLlm, HttpReply};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = HttpMockLlm::start().await;
//! mock.enqueue(HttpReply::rate_limited(Duration::from_secs(2)));
//! mock.stream_text(["He", "llo"]);
//! let client = reqwest::Client::new();
//! let url = format!("{}/chat/completions", mock.base_url());
//! let req = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
//! let first = client.post(&url).json(&req).send().await?;
//! assert_eq!(first.status(), 429);
//! assert_eq!(first.headers()["retry-after"], "2");
//! let sse = client.post(&url).json(&req).send().await?.text().await?;
//! assert!(sse.contains(r#""delta":{"content":"He"}"#) && sse.ends_with("data: [DONE]\n\n"));
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mantissa_core::{CharEstimator, Message, TokenEstimator, ToolCall};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::stream::{split_even, split_words};

/// The chat-completions path the mock serves.
pub const COMPLETIONS_PATH: &str = "/v1/chat/completions";

/// The model name reported when a request names none.
pub const HTTP_DEFAULT_MODEL: &str = "mock-model";

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Echo,
    Text(Vec<String>),
    ToolCalls {
        text: Option<String>,
        calls: Vec<ToolCall>,
    },
    Error {
        status: u16,
        error: Value,
        retry_after: Option<Duration>,
    },
    Malformed,
    EmptyChoices,
    Truncated {
        pieces: Vec<String>,
        after: usize,
    },
}

/// One reply of the HTTP mock. Text and tool-call replies are sent as JSON or
/// as SSE depending on the request's `stream` flag.
///
/// ```
/// use std::time::Duration;
/// use mantissa_mock::HttpReply;
///
/// let slow = HttpReply::text("late").with_delay(Duration::from_millis(500));
/// let overloaded = HttpReply::status(503);
/// let too_long = HttpReply::context_length_exceeded();
/// # let _ = (slow, overloaded, too_long);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    body: Body,
    delay: Option<Duration>,
    usage: Option<(u64, u64)>,
}

impl HttpReply {
    fn of(body: Body) -> Self {
        Self {
            body,
            delay: None,
            usage: None,
        }
    }

    /// `mock reply to: <latest user message>`.
    pub fn echo() -> Self {
        Self::of(Body::Echo)
    }

    /// A text answer (streamed word by word).
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::of(Body::Text(split_words(&text, 1)))
    }

    /// A text answer streamed in exactly these pieces (joined when not streamed).
    pub fn text_pieces<I, S>(pieces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::of(Body::Text(pieces.into_iter().map(Into::into).collect()))
    }

    /// An answer calling tools (`finish_reason: "tool_calls"`).
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        Self::of(Body::ToolCalls { text: None, calls })
    }

    /// An error status with OpenAI's error body for it: 429 (with
    /// `Retry-After: 1`), 400, 401, 403, 404, 500, 502, 503, or a generic body.
    pub fn status(status: u16) -> Self {
        let (kind, code, message) = match status {
            400 => ("invalid_request_error", Value::Null, "Invalid request (mock)."),
            401 => (
                "invalid_request_error",
                json!("invalid_api_key"),
                "Incorrect API key provided (mock).",
            ),
            403 => (
                "invalid_request_error",
                json!("unsupported_country_region_territory"),
                "Forbidden (mock).",
            ),
            404 => (
                "invalid_request_error",
                json!("model_not_found"),
                "The model does not exist (mock).",
            ),
            429 => return Self::rate_limited(Duration::from_secs(1)),
            500 => (
                "server_error",
                Value::Null,
                "The server had an error while processing your request. Sorry about that! (mock)",
            ),
            502 => ("server_error", Value::Null, "Bad gateway (mock)."),
            503 => (
                "server_error",
                Value::Null,
                "The engine is currently overloaded, please try again later. (mock)",
            ),
            _ => ("server_error", Value::Null, "Mock error."),
        };
        Self::error(status, kind, code, message)
    }

    /// An error status with an OpenAI error body of the given `type`, `code`
    /// (a string or null) and message.
    pub fn error(status: u16, kind: &str, code: Value, message: &str) -> Self {
        Self::of(Body::Error {
            status,
            error: json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
            retry_after: None,
        })
    }

    /// HTTP 429 with `Retry-After` (whole seconds, at least 1) and
    /// `x-ratelimit-*` headers.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::of(Body::Error {
            status: 429,
            error: json!({"error": {
                "message": "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1. (mock)",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }}),
            retry_after: Some(retry_after),
        })
    }

    /// HTTP 400 `context_length_exceeded`.
    pub fn context_length_exceeded() -> Self {
        Self::of(Body::Error {
            status: 400,
            error: json!({"error": {
                "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens. Please reduce the length of the messages. (mock)",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded"
            }}),
            retry_after: None,
        })
    }

    /// HTTP 200 with a body that is not valid JSON.
    pub fn malformed_json() -> Self {
        Self::of(Body::Malformed)
    }

    /// HTTP 200 with valid JSON but an empty `choices` array.
    pub fn empty_choices() -> Self {
        Self::of(Body::EmptyChoices)
    }

    /// A stream that ends after `after` content chunks with neither a finish
    /// reason nor `data: [DONE]` (a stream cut before its end). Sent as JSON
    /// text when the request is not streamed.
    pub fn truncated_stream(text: impl Into<String>, after: usize) -> Self {
        let text = text.into();
        Self::of(Body::Truncated {
            pieces: split_words(&text, 1),
            after,
        })
    }

    /// Sends the response after `delay` (real time, wiremock's `set_delay`).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Reports exactly these prompt and completion tokens instead of
    /// estimating them.
    pub fn with_usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.usage = Some((prompt_tokens, completion_tokens));
        self
    }
}

struct State {
    default: HttpReply,
    queue: VecDeque<HttpReply>,
    requests: Vec<Request>,
}

struct Shared {
    state: Mutex<State>,
    ids: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An OpenAI-compatible mock server on `127.0.0.1` (see the [module docs](self)).
pub struct HttpMockLlm {
    server: MockServer,
    shared: Arc<Shared>,
}

impl fmt::Debug for HttpMockLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMockLlm")
            .field("uri", &self.server.uri())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl HttpMockLlm {
    /// Starts a server on a free loopback port, answering with echo replies.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                default: HttpReply::echo(),
                queue: VecDeque::new(),
                requests: Vec::new(),
            }),
            ids: AtomicU64::new(0),
        });
        Mock::given(method("POST"))
            .and(path(COMPLETIONS_PATH))
            .respond_with(Responder {
                shared: shared.clone(),
            })
            .with_priority(u8::MAX)
            .named("mantissa-mock chat completions")
            .mount(&server)
            .await;
        Self { server, shared }
    }

    /// The OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    /// The full chat-completions URL.
    pub fn completions_url(&self) -> String {
        format!("{}{COMPLETIONS_PATH}", self.server.uri())
    }

    /// The underlying wiremock server, to mount custom mocks (they win over
    /// the built-in responder unless given a priority of 255).
    pub fn server(&self) -> &MockServer {
        &self.server
    }

    /// Sets the reply for every request not served from the queue.
    pub fn set_default(&self, reply: HttpReply) {
        self.shared.lock().default = reply;
    }

    /// Queues a one-shot reply, served before the default (in order).
    pub fn enqueue(&self, reply: HttpReply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// Answers every request with `text` (JSON, or SSE word by word when streamed).
    pub fn respond_with_text(&self, text: impl Into<String>) {
        self.set_default(HttpReply::text(text));
    }

    /// Answers every request with these tool calls.
    pub fn respond_with_tool_calls(&self, calls: Vec<ToolCall>) {
        self.set_default(HttpReply::tool_calls(calls));
    }

    /// Streams exactly these text pieces to every streamed request.
    pub fn stream_text<I, S>(&self, pieces: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.set_default(HttpReply::text_pieces(pieces));
    }

    /// Fails every request with `status` and OpenAI's error body for it.
    pub fn fail_with_status(&self, status: u16) {
        self.set_default(HttpReply::status(status));
    }

    /// Answers every request with 429 and `Retry-After`.
    pub fn rate_limit(&self, retry_after: Duration) {
        self.set_default(HttpReply::rate_limited(retry_after));
    }

    /// Requests received by the built-in responder, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The JSON bodies of the received requests (unparseable ones as `null`).
    pub fn request_bodies(&self) -> Vec<Value> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|r| r.body_json().unwrap_or(Value::Null))
            .collect()
    }

    /// How many requests the built-in responder served.
    pub fn calls(&self) -> usize {
        self.shared.lock().requests.len()
    }
}

struct Responder {
    shared: Arc<Shared>,
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let reply = {
            let mut st = self.shared.lock();
            st.requests.push(request.clone());
            st.queue.pop_front().unwrap_or_else(|| st.default.clone())
        };
        let id = self.shared.ids.fetch_add(1, Ordering::Relaxed) + 1;
        let template = render(&reply, request, id);
        match reply.delay {
            Some(d) => template.set_delay(d),
            None => template,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Ctx {
    id: String,
    created: u64,
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u64,
    latest_user: Option<String>,
}

impl Ctx {
    fn of(request: &Request, id: u64) -> Self {
        let body: Value = request.body_json().unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or(HTTP_DEFAULT_MODEL).to_owned();
        let messages: Option<Vec<Message>> = serde_json::from_value(body["messages"].clone()).ok();
        let (prompt_tokens, latest_user) = match &messages {
            Some(msgs) => (
                CharEstimator.estimate_messages(msgs),
                msgs.iter()
                    .rev()
                    .find(|m| m.role == mantissa_core::Role::User)
                    .map(|m| m.text().chars().take(200).collect()),
            ),
            None => {
                let raw = body["messages"].to_string();
                (u64::from(CharEstimator.estimate_text(&raw)), None)
            }
        };
        Self {
            id: format!("chatcmpl-mock{id:06}"),
            created: unix_now(),
            model,
            stream: body["stream"].as_bool().unwrap_or(false),
            include_usage: body["stream_options"]["include_usage"].as_bool().unwrap_or(false),
            prompt_tokens,
            latest_user,
        }
    }

    fn usage(&self, completion: u64, exact: Option<(u64, u64)>) -> Value {
        let (p, c) = exact.unwrap_or((self.prompt_tokens, completion));
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p.saturating_add(c)})
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }
}

fn completion_tokens(text: &str, calls: &[ToolCall]) -> u64 {
    let mut n = u64::from(CharEstimator.estimate_text(text));
    for c in calls {
        n += u64::from(CharEstimator.estimate_text(&c.function.name));
        n += u64::from(CharEstimator.estimate_text(&c.function.arguments));
    }
    n
}

fn sse(events: impl IntoIterator<Item = Value>, done: bool) -> ResponseTemplate {
    let mut body = String::new();
    for e in events {
        body.push_str("data: ");
        body.push_str(&e.to_string());
        body.push_str("\n\n");
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    ResponseTemplate::new(200)
        .insert_header("cache-control", "no-cache")
        .set_body_raw(body, "text/event-stream")
}

fn render(reply: &HttpReply, request: &Request, id: u64) -> ResponseTemplate {
    let ctx = Ctx::of(request, id);
    match &reply.body {
        Body::Echo => {
            let text = match &ctx.latest_user {
                Some(t) => format!("mock reply to: {t}"),
                None => "mock reply".to_owned(),
            };
            message_reply(&ctx, split_words(&text, 1), &[], reply.usage, true)
        }
        Body::Text(pieces) => message_reply(&ctx, pieces.clone(), &[], reply.usage, true),
        Body::ToolCalls { text, calls } => {
            let pieces = text.as_deref().map(|t| split_words(t, 1)).unwrap_or_default();
            message_reply(&ctx, pieces, calls, reply.usage, true)
        }
        Body::Truncated { pieces, after } => {
            let kept: Vec<String> = pieces.iter().take(*after).cloned().collect();
            message_reply(&ctx, kept, &[], reply.usage, false)
        }
        Body::Error {
            status,
            error,
            retry_after,
        } => {
            let mut t = ResponseTemplate::new(*status).set_body_json(error.clone());
            if let Some(d) = retry_after {
                let secs = d.as_secs().max(1);
                t = t
                    .insert_header("retry-after", secs.to_string().as_str())
                    .insert_header("x-ratelimit-limit-requests", "500")
                    .insert_header("x-ratelimit-remaining-requests", "0")
                    .insert_header("x-ratelimit-reset-requests", format!("{secs}s").as_str())
                    .insert_header("x-ratelimit-limit-tokens", "30000")
                    .insert_header("x-ratelimit-remaining-tokens", "0")
                    .insert_header("x-ratelimit-reset-tokens", format!("{secs}s").as_str());
            }
            t
        }
        Body::Malformed => ResponseTemplate::new(200).set_body_raw(
            r#"{"id": "chatcmpl-mock", "object": "chat.completion", "choices": [{"#,
            "application/json",
        ),
        Body::EmptyChoices => ResponseTemplate::new(200).set_body_json(json!({
            "id": ctx.id, "object": "chat.completion", "created": ctx.created, "model": ctx.model,
            "choices": [], "usage": ctx.usage(0, reply.usage),
        })),
    }
}

/// A text and/or tool-call reply, as JSON or SSE. `complete: false` sends a
/// stream without finish reason, usage or `[DONE]`.
fn message_reply(
    ctx: &Ctx,
    pieces: Vec<String>,
    calls: &[ToolCall],
    exact: Option<(u64, u64)>,
    complete: bool,
) -> ResponseTemplate {
    let text = pieces.concat();
    let completion = completion_tokens(&text, calls);
    let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
    if !ctx.stream {
        let content = if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        };
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if !calls.is_empty() {
            message["tool_calls"] = json!(calls);
        }
        return ResponseTemplate::new(200).set_body_json(json!({
            "id": ctx.id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": ctx.usage(completion, exact),
        }));
    }
    let mut events = vec![ctx.chunk(json!({"role": "assistant", "content": ""}), None)];
    for p in pieces {
        events.push(ctx.chunk(json!({"content": p}), None));
    }
    for (i, call) in calls.iter().enumerate() {
        events.push(ctx.chunk(
            json!({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                "function": {"name": call.function.name, "arguments": ""}}]}),
            None,
        ));
        for piece in split_even(&call.function.arguments, 3) {
            events.push(ctx.chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    if !complete {
        return sse(events, false);
    }
    events.push(ctx.chunk(json!({}), Some(finish)));
    if ctx.include_usage {
        for e in &mut events {
            e["usage"] = Value::Null;
        }
        events.push(json!({
            "id": ctx.id, "object": "chat.completion.chunk", "created": ctx.created, "model": ctx.model,
            "system_fingerprint": "fp_mock", "choices": [], "usage": ctx.usage(completion, exact),
        }));
    }
    sse(events, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(stream: bool, include_usage: bool) -> Value {
        let mut body = json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        });
        if stream {
            body["stream"] = json!(true);
        }
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    async fn post(mock: &HttpMockLlm, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(mock.completions_url())
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The `data:` payloads of an SSE body, and whether it ended with `[DONE]`.
    fn events(text: &str) -> (Vec<Value>, bool) {
        let mut out = Vec::new();
        let mut done = false;
        for block in text.split("\n\n").filter(|b| !b.is_empty()) {
            let data = block.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                done = true;
            } else {
                assert!(!done, "event after [DONE]");
                out.push(serde_json::from_str(data).unwrap());
            }
        }
        (out, done)
    }

    #[tokio::test]
    async fn json_reply_has_openai_shape() {
        let mock = HttpMockLlm::start().await;
        mock.respond_with_text("Buy ten shares.");
        let resp = post(&mock, &chat(false, false)).await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let v: Value = resp.json().await.unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["choices"][0]["index"], 0);
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "Buy ten shares.");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let u = &v["usage"];
        let (p, c) = (
            u["prompt_tokens"].as_u64().unwrap(),
            u["completion_tokens"].as_u64().unwrap(),
        );
        assert!(p > 0 && c > 0);
        assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c);
        // The body parses as the core's Usage too.
        let usage: mantissa_core::Usage = serde_json::from_value(u.clone()).unwrap();
        assert_eq!(usage.total(), p + c);
    }

    #[tokio::test]
    async fn tool_call_reply_has_openai_shape() {
        let mock = HttpMockLlm::start().await;
        let call = ToolCall::new("call_abc", "get_market_price", &json!({"symbol": "ACME"}));
        mock.respond_with_tool_calls(vec![call.clone()]);
        let v: Value = post(&mock, &chat(false, false)).await.json().await.unwrap();
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], Value::Null);
        assert_eq!(msg["tool_calls"][0]["id"], "call_abc");
        assert_eq!(msg["tool_calls"][0]["type"], "function");
        assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_market_price");
        assert_eq!(
            msg["tool_calls"][0]["function"]["arguments"],
            r#"{"symbol":"ACME"}"#
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let parsed: Message = serde_json::from_value(msg.clone()).unwrap();
        assert_eq!(parsed.tool_calls, vec![call]);
    }

    #[tokio::test]
    async fn streams_sse_with_usage_and_done() {
        let mock = HttpMockLlm::start().await;
        mock.stream_text(["He", "llo", "!"]);
        let resp = post(&mock, &chat(true, true)).await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let (evs, done) = events(&resp.text().await.unwrap());
        assert!(done);
        let text: String = evs
            .iter()
            .filter_map(|e| {
                e["choices"].get(0)?["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "Hello!");
        assert_eq!(evs[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(evs.iter().all(|e| e["object"] == "chat.completion.chunk"));
        let finish = &evs[evs.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["usage"], Value::Null);
        let last = evs.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);

        // Without include_usage there is no usage chunk at all.
        let (evs, done) = events(&post(&mock, &chat(true, false)).await.text().await.unwrap());
        assert!(done);
        assert!(evs.iter().all(|e| e.get("usage").is_none()));
        assert_eq!(evs.last().unwrap()["choices"][0]["finish_reason"], "stop");

        // Not streamed: the pieces are joined.
        let v: Value = post(&mock, &chat(false, false)).await.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    }

    #[tokio::test]
    async fn streams_tool_call_deltas() {
        let mock = HttpMockLlm::start().await;
        let args = json!({"symbol": "ACME", "side": "buy", "quantity": 10});
        mock.respond_with_tool_calls(vec![ToolCall::new("call_1", "place_order", &args)]);
        let (evs, done) = events(&post(&mock, &chat(true, true)).await.text().await.unwrap());
        assert!(done);
        let (mut id, mut name, mut arguments) = (String::new(), String::new(), String::new());
        let mut pieces = 0;
        for e in &evs {
            for tc in e["choices"]
                .get(0)
                .and_then(|c| c["delta"]["tool_calls"].as_array())
                .into_iter()
                .flatten()
            {
                assert_eq!(tc["index"], 0);
                id.push_str(tc["id"].as_str().unwrap_or(""));
                name.push_str(tc["function"]["name"].as_str().unwrap_or(""));
                arguments.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
                pieces += 1;
            }
        }
        assert_eq!((id.as_str(), name.as_str()), ("call_1", "place_order"));
        assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), args);
        assert!(pieces >= 3);
        assert_eq!(evs[evs.len() - 2]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[tokio::test]
    async fn failures_are_real_http() {
        let mock = HttpMockLlm::start().await;
        mock.rate_limit(Duration::from_secs(7));
        let resp = post(&mock, &chat(false, false)).await;
        assert_eq!(resp.status(), 429);
        let h = resp.headers();
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "7s");
        assert_eq!(h["x-ratelimit-reset-tokens"], "7s");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");

        for (status, kind) in [
            (500, "server_error"),
            (503, "server_error"),
            (400, "invalid_request_error"),
        ] {
            mock.fail_with_status(status);
            let resp = post(&mock, &chat(false, false)).await;
            assert_eq!(resp.status(), status);
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["type"], kind);
            assert!(v["error"]["message"].as_str().unwrap().len() > 5);
        }

        mock.set_default(HttpReply::context_length_exceeded());
        let resp = post(&mock, &chat(true, true)).await;
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v["error"],
            json!({
                "message": v["error"]["message"], "type": "invalid_request_error",
                "param": "messages", "code": "context_length_exceeded"
            })
        );
    }

    #[tokio::test]
    async fn unusable_bodies() {
        let mock = HttpMockLlm::start().await;
        mock.enqueue(HttpReply::malformed_json());
        mock.enqueue(HttpReply::empty_choices());
        mock.enqueue(HttpReply::truncated_stream("one two three four", 2));
        let resp = post(&mock, &chat(false, false)).await;
        assert_eq!(resp.status(), 200);
        assert!(serde_json::from_str::<Value>(&resp.text().await.unwrap()).is_err());
        let v: Value = post(&mock, &chat(false, false)).await.json().await.unwrap();
        assert_eq!(v["choices"], json!([]));
        let (evs, done) = events(&post(&mock, &chat(true, true)).await.text().await.unwrap());
        assert!(!done);
        assert!(evs.iter().all(|e| e["choices"][0]["finish_reason"].is_null()));
        assert_eq!(evs.len(), 3, "role chunk plus two content chunks");
        // The queue is drained; the default echo answers again.
        let v: Value = post(&mock, &chat(false, false)).await.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "mock reply to: hello there"
        );
    }

    #[tokio::test]
    async fn delayed_reply_trips_a_client_timeout() {
        let mock = HttpMockLlm::start().await;
        mock.enqueue(HttpReply::text("late").with_delay(Duration::from_secs(30)));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let err = client
            .post(mock.completions_url())
            .json(&chat(false, false))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout());
    }

    #[tokio::test]
    async fn records_requests_and_lets_custom_mocks_win() {
        let mock = HttpMockLlm::start().await;
        assert!(mock.base_url().starts_with("http://127.0.0.1:"));
        assert!(mock.base_url().ends_with("/v1"));
        let _ = post(&mock, &chat(false, false)).await;
        assert_eq!(mock.calls(), 1);
        assert_eq!(mock.request_bodies()[0]["model"], "gpt-4o-mini");
        assert_eq!(mock.requests()[0].method, "POST");

        Mock::given(method("POST"))
            .and(path(COMPLETIONS_PATH))
            .respond_with(ResponseTemplate::new(418))
            .mount(mock.server())
            .await;
        assert_eq!(post(&mock, &chat(false, false)).await.status(), 418);
        assert_eq!(mock.calls(), 1, "served by the custom mock");
        assert_eq!(mock.server().received_requests().await.unwrap().len(), 2);

        let other = reqwest::get(format!("{}/models", mock.base_url())).await.unwrap();
        assert_eq!(other.status(), 404);
    }

    #[tokio::test]
    async fn exact_usage_and_garbage_requests() {
        let mock = HttpMockLlm::start().await;
        mock.set_default(HttpReply::text("ok").with_usage(1000, 20));
        let v: Value = post(&mock, &chat(false, false)).await.json().await.unwrap();
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020})
        );
        // A body that is not JSON still gets an answer (no panic in the responder).
        let resp = reqwest::Client::new()
            .post(mock.completions_url())
            .body("not json at all")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["model"], HTTP_DEFAULT_MODEL);
    }
}
