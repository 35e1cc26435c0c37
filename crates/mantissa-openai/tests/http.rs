//! The client against loopback HTTP servers: wiremock for whole responses, a
//! raw `TcpListener` for streams that pause, drip or break.
//!
//! Real sockets mean real time: waits are tens of milliseconds, and the tests
//! assert only how outcomes are classified, never how long they took.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use mantissa_core::{
    BoxError, FailureClass, FinishReason, LlmError, LlmRequest, LlmResponse, Message, ToolSpec, Usage,
    classify,
};
use mantissa_openai::{
    InvalidResponseKind, ModelSettings, OpenAiClient, OpenAiConfig, ResponseMeta, TimeoutKind, Timeouts,
    api_error, collect_response, rate_limit, timeout_error,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-SECRET-0123456789";
const PATH: &str = "/v1/chat/completions";

fn config(base: &str) -> OpenAiConfig {
    OpenAiConfig::new(format!("{base}/v1"))
        .api_key(KEY)
        .default_model("small")
        .model(
            "small",
            ModelSettings::new().upstream("upstream-small").extra("top_k", 20),
        )
}

fn client(base: &str) -> OpenAiClient {
    OpenAiClient::new(config(base)).unwrap()
}

fn request() -> LlmRequest {
    LlmRequest::new(
        "s1",
        "tester",
        vec![Message::system("be brief"), Message::user("hi")],
    )
}

fn stream_request() -> LlmRequest {
    let mut req = request();
    req.params.stream = true;
    req
}

async fn call(client: &OpenAiClient, req: LlmRequest) -> Result<LlmResponse, BoxError> {
    client.clone().oneshot(req).await
}

fn llm_error(err: &BoxError) -> &LlmError {
    err.downcast_ref::<LlmError>().expect("an LlmError")
}

async fn mount(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(response)
        .mount(server)
        .await;
}

fn sse(events: &[Value]) -> String {
    let mut body = String::from(": openai-style stream\n\n");
    for e in events {
        body.push_str(&format!("data: {e}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

fn sse_response(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

async fn received_body(server: &MockServer) -> Value {
    let requests = server.received_requests().await.unwrap();
    serde_json::from_slice(&requests.last().unwrap().body).unwrap()
}

// ---------------------------------------------------------------- successes

#[tokio::test]
async fn plain_text_completion_and_request_shape() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "upstream-small-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        }))
        .insert_header("x-request-id", "req-42")
        .insert_header("x-ratelimit-remaining-tokens", "149000"),
    )
    .await;
    let mut req = request();
    req.params.temperature = Some(0.25);
    req.params.max_tokens = Some(100);
    req.params.seed = Some(9);
    req.params.stop = vec!["###".into()];
    req.params.extra.insert("user".into(), json!("u-1"));
    req.tools = vec![ToolSpec::function("lookup", "look up", json!({"type": "object"}))].into();

    let response = call(&client(&server.uri()), req).await.unwrap();
    assert!(!response.is_streaming());
    assert_eq!(response.message.text(), "Hello!");
    assert_eq!(response.usage, Usage::new(12, 3));
    assert_eq!(response.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        response.model.as_str(),
        "small",
        "the caller's model name is the label"
    );
    let meta = response.extensions.get::<ResponseMeta>().unwrap();
    assert_eq!(meta.upstream_model.as_deref(), Some("upstream-small-2024-07-18"));
    assert_eq!(meta.completion_id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(meta.request_id.as_deref(), Some("req-42"));
    assert_eq!(meta.rate_limit.as_ref().unwrap().remaining_tokens, Some(149_000));

    let body = received_body(&server).await;
    assert_eq!(
        body,
        json!({
            "model": "upstream-small",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "look up", "parameters": {"type": "object"}}}],
            "temperature": 0.25,
            "max_tokens": 100,
            "stop": ["###"],
            "seed": 9,
            "user": "u-1",
            "top_k": 20
        })
    );
    let received = &server.received_requests().await.unwrap()[0];
    assert_eq!(received.headers.get("content-type").unwrap(), "application/json");
    let agent = received.headers.get("user-agent").unwrap().to_str().unwrap();
    assert!(agent.starts_with("mantissa-openai/"), "{agent}");
}

#[tokio::test]
async fn tool_call_completion() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_price", "arguments": "{\"ticker\":\"ACME\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_news", "arguments": "{}"}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9}
        })),
    )
    .await;
    let response = call(&client(&server.uri()), request().with_model("other-model"))
        .await
        .unwrap();
    assert_eq!(response.message.content, None);
    assert_eq!(response.message.tool_calls.len(), 2);
    assert_eq!(response.message.tool_calls[0].id, "call_1");
    assert_eq!(
        response.message.tool_calls[0].parse_arguments().unwrap(),
        json!({"ticker": "ACME"})
    );
    assert_eq!(response.message.tool_calls[1].function.name, "get_news");
    assert_eq!(response.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(response.model.as_str(), "other-model");
    // A model without settings is sent as named, with no extras.
    let body = received_body(&server).await;
    assert_eq!(body["model"], "other-model");
    assert!(body.get("top_k").is_none());
}

#[tokio::test]
async fn streamed_text() {
    let server = MockServer::start().await;
    let body = sse(&[
        json!({"model": "upstream-small-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}),
    ]);
    mount(&server, sse_response(body)).await;

    let mut response = call(&client(&server.uri()), stream_request()).await.unwrap();
    assert!(response.is_streaming());
    let meta = response.extensions.get::<ResponseMeta>().unwrap();
    assert_eq!(meta.upstream_model.as_deref(), Some("upstream-small-1"));
    let chunks: Vec<_> = response
        .stream
        .take()
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
        .await;
    let texts: Vec<_> = chunks.iter().filter_map(|c| c.content.as_deref()).collect();
    assert_eq!(texts, ["Hel", "lo"], "the empty role delta is not a chunk");
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks[2].finish_reason, Some(FinishReason::Stop));
    assert_eq!(chunks[3].usage, Some(Usage::new(7, 2)));

    let body = received_body(&server).await;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    let received = &server.received_requests().await.unwrap()[0];
    assert_eq!(received.headers.get("accept").unwrap(), "text/event-stream");
}

#[tokio::test]
async fn streamed_tool_calls_with_usage_collect_into_a_complete_response() {
    let server = MockServer::start().await;
    let body = sse(&[
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_price", "arguments": ""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"tick"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "er\":\"ACME\"}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_news", "arguments": "{}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 11}}),
    ]);
    mount(&server, sse_response(body)).await;

    let response = call(&client(&server.uri()), stream_request()).await.unwrap();
    let complete = collect_response(response).await.unwrap();
    assert!(!complete.is_streaming());
    assert_eq!(complete.message.content, None);
    let calls = &complete.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_str(), calls[0].function.name.as_str()),
        ("call_a", "get_price")
    );
    assert_eq!(calls[0].parse_arguments().unwrap(), json!({"ticker": "ACME"}));
    assert_eq!(
        (calls[1].id.as_str(), calls[1].function.name.as_str()),
        ("call_b", "get_news")
    );
    assert_eq!(complete.usage, Usage::new(30, 11));
    assert_eq!(complete.finish_reason, Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn a_server_that_ignores_stream_true_still_yields_a_stream() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1}
        })),
    )
    .await;
    let response = call(&client(&server.uri()), stream_request()).await.unwrap();
    assert!(response.is_streaming());
    let complete = collect_response(response).await.unwrap();
    assert_eq!(complete.message.text(), "whole");
    assert_eq!(complete.usage, Usage::new(2, 1));
}

// ------------------------------------------------------------------ errors

#[tokio::test]
async fn rate_limited_with_retry_after_and_rate_limit_headers() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "2")
            .insert_header("x-ratelimit-limit-requests", "60")
            .insert_header("x-ratelimit-remaining-requests", "0")
            .insert_header("x-ratelimit-reset-requests", "1s")
            .insert_header("x-ratelimit-remaining-tokens", "1000")
            .insert_header("x-ratelimit-reset-tokens", "6m0s")
            .set_body_json(json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}})),
    )
    .await;
    let err = call(&client(&server.uri()), request()).await.unwrap_err();
    assert_eq!(
        classify(&*err),
        FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    let e = llm_error(&err);
    assert_eq!(e.status(), Some(429));
    assert_eq!(e.message(), "Rate limit reached for requests");
    let rl = rate_limit(&*err).unwrap();
    assert_eq!(rl.limit_requests, Some(60));
    assert_eq!(rl.remaining_requests, Some(0));
    assert_eq!(rl.remaining_tokens, Some(1000));
    assert_eq!(rl.reset_requests, Some(Duration::from_secs(1)));
    assert_eq!(rl.reset_tokens, Some(Duration::from_secs(360)));
    assert_eq!(rl.headers.len(), 5);
    assert_eq!(api_error(&*err).unwrap().code(), Some("rate_limit_exceeded"));
}

#[tokio::test]
async fn rate_limited_with_an_http_date() {
    let server = MockServer::start().await;
    // A date far in the past: wait zero. (A future date depends on the wall clock.)
    mount(
        &server,
        ResponseTemplate::new(429).insert_header("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"),
    )
    .await;
    let err = call(&client(&server.uri()), request()).await.unwrap_err();
    assert_eq!(
        classify(&*err),
        FailureClass::RateLimited {
            retry_after: Some(Duration::ZERO)
        }
    );
    assert_eq!(llm_error(&err).message(), "Too Many Requests");
}

#[tokio::test]
async fn server_errors_are_upstream_errors_with_status_and_message() {
    for status in [500, 503] {
        let server = MockServer::start().await;
        mount(
            &server,
            ResponseTemplate::new(status).set_body_json(
                json!({"error": {"message": "The server is overloaded", "type": "server_error"}}),
            ),
        )
        .await;
        let err = call(&client(&server.uri()), request()).await.unwrap_err();
        assert_eq!(classify(&*err), FailureClass::UpstreamServer);
        let e = llm_error(&err);
        assert_eq!(e.status(), Some(status));
        assert_eq!(e.message(), "The server is overloaded");
        assert!(e.to_string().contains(&status.to_string()), "{e}");
    }
    // A non-JSON body is kept as the message.
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"),
    )
    .await;
    let err = call(&client(&server.uri()), request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::UpstreamServer);
    assert_eq!(llm_error(&err).message(), "<html>Bad Gateway</html>");
}

#[tokio::test]
async fn client_errors_keep_the_provider_error_body() {
    let server = MockServer::start().await;
    let body = json!({"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}});
    mount(&server, ResponseTemplate::new(400).set_body_json(body.clone())).await;
    let err = call(&client(&server.uri()), request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::ClientError);
    let api = api_error(&*err).unwrap();
    assert_eq!(api.status(), 400);
    assert_eq!(api.message(), "Invalid value for 'temperature'");
    assert_eq!(api.param(), Some("temperature"));
    assert_eq!(api.code(), Some("invalid_value"));
    assert_eq!(api.error_type(), Some("invalid_request_error"));
    assert_eq!(serde_json::from_str::<Value>(api.body()).unwrap(), body);
}

#[tokio::test]
async fn context_length_errors_are_recognised() {
    let bodies = [
        json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
        json!({"object": "error", "message": "This model's maximum context length is 4096 tokens.", "type": "BadRequestError", "code": 400}),
    ];
    for body in bodies {
        let server = MockServer::start().await;
        mount(&server, ResponseTemplate::new(400).set_body_json(body)).await;
        let err = call(&client(&server.uri()), request()).await.unwrap_err();
        assert_eq!(classify(&*err), FailureClass::ContextLengthExceeded);
        assert!(llm_error(&err).message().contains("maximum context length"));
    }
}

#[tokio::test]
async fn malformed_json_and_empty_choices_are_invalid_responses() {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(200).set_body_raw("{\"choices\": [", "application/json"),
    )
    .await;
    let err = call(&client(&server.uri()), request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse);
    assert!(err.to_string().contains("malformed"), "{err}");

    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({"id": "x", "choices": []})),
    )
    .await;
    let err = call(&client(&server.uri()), request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse);
    let inv = std::error::Error::source(llm_error(&err))
        .and_then(|s| s.downcast_ref::<mantissa_openai::InvalidResponse>())
        .unwrap();
    assert_eq!(inv.kind(), &InvalidResponseKind::NoChoices);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = MockServer::start().await;
    let big = format!(
        "{{\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}]}}",
        "x".repeat(64 * 1024)
    );
    mount(
        &server,
        ResponseTemplate::new(200).set_body_raw(big, "application/json"),
    )
    .await;
    let client = OpenAiClient::new(config(&server.uri()).max_body_bytes(16 * 1024)).unwrap();
    let err = call(&client, request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse);
    assert!(err.to_string().contains("exceeds 16384 bytes"), "{err}");

    // An SSE line over the cap.
    let server = MockServer::start().await;
    let line = format!("data: {{\"pad\":\"{}\"}}\n\n", "y".repeat(8 * 1024));
    mount(&server, sse_response(line)).await;
    let client = OpenAiClient::new(config(&server.uri()).max_line_bytes(1024)).unwrap();
    let err = call(&client, stream_request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse);
}

#[tokio::test]
async fn connection_refused_is_transport() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = call(&client(&format!("http://{addr}")), request())
        .await
        .unwrap_err();
    assert_eq!(classify(&*err), FailureClass::Transport);
    assert!(err.to_string().contains("connection failed"), "{err}");
    // The reqwest error (and its io cause) stay in the chain.
    let mut source = std::error::Error::source(&*err);
    let mut saw_reqwest = false;
    while let Some(s) = source {
        saw_reqwest |= s.is::<reqwest::Error>();
        source = s.source();
    }
    assert!(saw_reqwest);
}

#[tokio::test]
async fn status_errors_of_streamed_calls_are_returned_before_any_stream() {
    let server = MockServer::start().await;
    mount(&server, ResponseTemplate::new(503).set_body_string("busy")).await;
    let err = call(&client(&server.uri()), stream_request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::UpstreamServer);

    // An error event before any content is also an Err from the call.
    let server = MockServer::start().await;
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}\n\n";
    mount(&server, sse_response(body.to_owned())).await;
    let err = call(&client(&server.uri()), stream_request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::UpstreamServer);
    assert_eq!(llm_error(&err).message(), "model overloaded");
}

// ---------------------------------------------------------------- timeouts

#[tokio::test]
async fn first_byte_delays_trip_the_first_chunk_and_total_timeouts() {
    let server = MockServer::start().await;
    mount(
        &server,
        sse_response(sse(&[
            json!({"choices": [{"index": 0, "delta": {"content": "late"}}]}),
        ]))
        .set_delay(Duration::from_millis(300)),
    )
    .await;
    // A per-request override of the client's (default, long) timeouts.
    let mut req = stream_request();
    req.extensions.insert(Timeouts {
        first_chunk: Some(Duration::from_millis(30)),
        ..Timeouts::default()
    });
    let err = call(&client(&server.uri()), req).await.unwrap_err();
    assert_eq!(timeout_error(&*err).unwrap().kind(), TimeoutKind::FirstChunk);

    let client =
        OpenAiClient::new(config(&server.uri()).first_chunk_timeout(Duration::from_millis(30))).unwrap();
    let err = call(&client, stream_request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::Timeout);
    assert_eq!(timeout_error(&*err).unwrap().kind(), TimeoutKind::FirstChunk);
    assert!(err.to_string().contains("first chunk timeout"), "{err}");

    let client = OpenAiClient::new(config(&server.uri()).total_timeout(Duration::from_millis(30))).unwrap();
    let err = call(&client, request()).await.unwrap_err();
    assert_eq!(timeout_error(&*err).unwrap().kind(), TimeoutKind::Total);
}

#[tokio::test]
async fn a_connect_that_hangs_trips_the_connect_timeout() {
    // A listener that never accepts, with a full accept queue: the kernel
    // drops further SYNs, so a connect hangs (loopback only, no blackhole host).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(30), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let client =
        OpenAiClient::new(config(&format!("http://{addr}")).connect_timeout(Duration::from_millis(40)))
            .unwrap();
    let err = call(&client, request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::Timeout, "{err}");
    assert_eq!(timeout_error(&*err).unwrap().kind(), TimeoutKind::Connect);
    assert!(err.to_string().contains("connect timeout"), "{err}");
}

/// A one-connection HTTP/1.1 server that reads the request and then runs `script`.
async fn raw_server<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_request(&mut socket).await;
        script(socket).await;
    });
    addr
}

async fn read_request(socket: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = socket.read(&mut tmp).await.unwrap();
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = socket.read(&mut tmp).await.unwrap();
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return;
        }
    }
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

async fn write_chunk(socket: &mut TcpStream, data: &str) {
    let mut frame = Vec::new();
    write!(frame, "{:x}\r\n{data}\r\n", data.len()).unwrap();
    socket.write_all(&frame).await.unwrap();
}

fn delta(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}}]})
    )
}

#[tokio::test]
async fn a_stream_cut_mid_way_is_a_transport_error_through_the_stream() {
    let addr = raw_server(|mut socket| async move {
        socket.write_all(SSE_HEAD).await.unwrap();
        // The first event arrives split across two network writes.
        let first = delta("partial");
        write_chunk(&mut socket, &first[..10]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        write_chunk(&mut socket, &first[10..]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Drop the connection without the terminating chunk.
    })
    .await;
    let mut response = call(&client(&format!("http://{addr}")), stream_request())
        .await
        .unwrap();
    let mut stream = response.stream.take().unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap().content.as_deref(),
        Some("partial")
    );
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(classify(&*err), FailureClass::Transport, "{err}");
    assert!(stream.next().await.is_none(), "the stream ends after its error");
}

#[tokio::test]
async fn a_reset_before_the_response_is_transport() {
    let addr = raw_server(|socket| async move {
        socket.set_zero_linger().unwrap();
        drop(socket); // RST instead of FIN
    })
    .await;
    let err = call(&client(&format!("http://{addr}")), request())
        .await
        .unwrap_err();
    assert_eq!(classify(&*err), FailureClass::Transport, "{err}");
}

#[tokio::test]
async fn headers_then_silence_is_a_first_chunk_timeout_returned_from_the_call() {
    let addr = raw_server(|mut socket| async move {
        socket.write_all(SSE_HEAD).await.unwrap();
        // A role-only delta is not a chunk with content.
        write_chunk(
            &mut socket,
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let client =
        OpenAiClient::new(config(&format!("http://{addr}")).first_chunk_timeout(Duration::from_millis(50)))
            .unwrap();
    let err = call(&client, stream_request()).await.unwrap_err();
    assert_eq!(timeout_error(&*err).unwrap().kind(), TimeoutKind::FirstChunk);
}

#[tokio::test]
async fn a_stream_closed_cleanly_before_done_is_an_invalid_response() {
    let addr = raw_server(|mut socket| async move {
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        socket.write_all(delta("only").as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
    })
    .await;
    let mut response = call(&client(&format!("http://{addr}")), stream_request())
        .await
        .unwrap();
    let mut stream = response.stream.take().unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap().content.as_deref(),
        Some("only")
    );
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{err}");
}

#[tokio::test]
async fn a_slow_drip_trips_the_idle_timeout() {
    let addr = raw_server(|mut socket| async move {
        socket.write_all(SSE_HEAD).await.unwrap();
        write_chunk(&mut socket, &delta("a")).await;
        write_chunk(&mut socket, &delta("b")).await;
        // Then silence, longer than the idle timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
        write_chunk(&mut socket, &delta("too late")).await;
    })
    .await;
    let client = OpenAiClient::new(
        config(&format!("http://{addr}"))
            .idle_timeout(Duration::from_millis(60))
            .first_chunk_timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let mut response = call(&client, stream_request()).await.unwrap();
    let mut stream = response.stream.take().unwrap();
    let mut texts = Vec::new();
    let err = loop {
        match stream.next().await.unwrap() {
            Ok(chunk) => texts.extend(chunk.content),
            Err(e) => break e,
        }
    };
    assert_eq!(texts, ["a", "b"]);
    assert_eq!(classify(&*err), FailureClass::Timeout);
    assert_eq!(timeout_error(&*err).unwrap().kind(), TimeoutKind::Idle);
    assert!(err.to_string().contains("idle timeout"), "{err}");
}

#[tokio::test]
async fn connections_are_reused_across_calls_and_clones() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(Mutex::new(0usize));
    let counter = accepts.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            *counter.lock().unwrap() += 1;
            tokio::spawn(async move {
                let body =
                    json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}).to_string();
                loop {
                    read_request(&mut socket).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if socket.write_all(head.as_bytes()).await.is_err()
                        || socket.write_all(body.as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let client = client(&format!("http://{addr}"));
    for _ in 0..3 {
        let response = call(&client.clone(), request()).await.unwrap();
        assert_eq!(response.message.text(), "ok");
    }
    // A sibling client for another model shares the pool.
    let large = client.with_default_model("large");
    let response = call(&large, request()).await.unwrap();
    assert_eq!(response.model.as_str(), "large");
    assert_eq!(*accepts.lock().unwrap(), 1);
}

// --------------------------------------------------------------- redaction

/// A `MakeWriter` that appends everything to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs (once) a global subscriber that captures every log line of this
/// test binary at TRACE. Global rather than scoped: a thread-local subscriber
/// races with callsite interest caching when other tests run in parallel.
fn capture_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        tracing::callsite::rebuild_interest_cache();
        captured
    })
    .clone()
}

#[tokio::test]
async fn the_key_never_shows_in_debug_errors_or_logs() {
    let captured = capture_logs();

    let server = MockServer::start().await;
    // A provider that echoes the key back in its error message.
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"message": format!("Incorrect API key provided: {KEY}."), "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ))
        .mount(&server)
        .await;
    let client = client(&server.uri());
    assert!(!format!("{client:?}").contains(KEY));
    assert!(!format!("{:?}", client.config()).contains(KEY));

    let err = call(&client, request()).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::ClientError);
    let mut shown = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&*err);
    while let Some(s) = source {
        shown.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!shown.contains(KEY), "{shown}");
    assert!(
        shown.contains("Incorrect API key provided: [REDACTED]"),
        "{shown}"
    );
    // The key did reach the server.
    let received = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        received.headers.get("authorization").unwrap(),
        &format!("Bearer {KEY}")
    );

    // A successful streamed call too.
    let server = MockServer::start().await;
    mount(
        &server,
        sse_response(sse(&[
            json!({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}),
        ])),
    )
    .await;
    let response = call(&client_for(&server), stream_request()).await.unwrap();
    let _ = collect_response(response).await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("sending chat completion"), "{logs}");
    assert!(!logs.contains(KEY), "{logs}");
    assert!(!logs.contains("SECRET"), "{logs}");
}

fn client_for(server: &MockServer) -> OpenAiClient {
    client(&server.uri())
}
