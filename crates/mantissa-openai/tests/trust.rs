//! What the client must never say or do, against a loopback wiremock server:
//! accept absurd token counts, call an empty choice a success, or let the API
//! key echoed by a provider reach an error (Display, Debug, or any source).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error as StdError;

use futures_util::StreamExt;
use mantissa_core::{BoxError, FailureClass, LlmRequest, LlmResponse, Message, Usage, classify};
use mantissa_openai::{
    InvalidResponse, InvalidResponseKind, OpenAiClient, OpenAiConfig, api_error, collect_response,
};
use serde_json::{Value, json};
use tower::ServiceExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-SECRET-0123456789";
const PATH: &str = "/v1/chat/completions";

fn client(server: &MockServer) -> OpenAiClient {
    OpenAiClient::new(
        OpenAiConfig::new(format!("{}/v1", server.uri()))
            .api_key(KEY)
            .default_model("small"),
    )
    .unwrap()
}

fn request(stream: bool) -> LlmRequest {
    let mut req = LlmRequest::new("s1", "tester", vec![Message::user("hi")]);
    req.params.stream = stream;
    req
}

async fn serve(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

async fn call(server: &MockServer, stream: bool) -> Result<LlmResponse, BoxError> {
    client(server).oneshot(request(stream)).await
}

fn sse_body(events: &[String]) -> ResponseTemplate {
    let mut body = String::new();
    for e in events {
        body.push_str(e);
        body.push_str("\n\n");
    }
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

fn data(v: &Value) -> String {
    format!("data: {v}")
}

fn text_delta(text: &str) -> String {
    data(&json!({"choices": [{"index": 0, "delta": {"content": text}}]}))
}

/// The `InvalidResponseKind` found in an error's source chain.
fn invalid_kind(err: &(dyn StdError + 'static)) -> Option<InvalidResponseKind> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(inv) = e.downcast_ref::<InvalidResponse>() {
            return Some(inv.kind().clone());
        }
        current = e.source();
    }
    None
}

// ------------------------------------------------------------- usage (item 3)

fn completion_with_usage(usage: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": usage,
    }))
}

#[tokio::test]
async fn absurd_usage_in_a_completion_is_an_invalid_response() {
    let absurd = [
        json!({"prompt_tokens": u64::MAX, "completion_tokens": 1}),
        json!({"prompt_tokens": 1, "completion_tokens": 1_u64 << 32}),
        json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": u64::MAX}),
        json!({"prompt_tokens": -1, "completion_tokens": 1}),
        json!({"prompt_tokens": 1.5, "completion_tokens": 1}),
        json!({"prompt_tokens": "12", "completion_tokens": 1}),
        json!({"input_tokens": [1], "output_tokens": 1}),
    ];
    for usage in absurd {
        let server = serve(completion_with_usage(usage.clone())).await;
        let err = call(&server, false).await.expect_err(&usage.to_string());
        assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{usage}: {err}");
        assert!(err.to_string().contains("usage"), "{usage}: {err}");
        assert_eq!(
            invalid_kind(&*err),
            Some(InvalidResponseKind::InvalidUsage),
            "{usage}: {err}"
        );
    }
    // The cap itself is accepted, as are nulls and missing counts.
    let max = u64::from(u32::MAX);
    for (usage, expected) in [
        (
            json!({"prompt_tokens": max, "completion_tokens": max}),
            Usage::new(max, max),
        ),
        (
            json!({"prompt_tokens": 7, "completion_tokens": null}),
            Usage::new(7, 0),
        ),
        (
            json!({"completion_tokens": 2, "total_tokens": 2}),
            Usage::new(0, 2),
        ),
    ] {
        let server = serve(completion_with_usage(usage.clone())).await;
        let response = call(&server, false).await.unwrap();
        assert_eq!(response.usage, expected, "{usage}");
    }
}

#[tokio::test]
async fn absurd_streamed_usage_is_an_invalid_response_item() {
    let server = serve(sse_body(&[
        text_delta("hi"),
        data(&json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
        data(&json!({"choices": [], "usage": {"prompt_tokens": u64::MAX, "completion_tokens": 2}})),
        "data: [DONE]".to_owned(),
    ]))
    .await;
    let response = call(&server, true).await.unwrap();
    let err = collect_response(response).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{err}");
    assert_eq!(
        invalid_kind(&*err),
        Some(InvalidResponseKind::InvalidUsage),
        "{err}"
    );

    // Usage as the first thing a stream says: the call itself fails.
    let server = serve(sse_body(&[
        data(&json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": -3}})),
        "data: [DONE]".to_owned(),
    ]))
    .await;
    let err = call(&server, true).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{err}");
    assert_eq!(
        invalid_kind(&*err),
        Some(InvalidResponseKind::InvalidUsage),
        "{err}"
    );
}

// ------------------------------------------------------- empty choice (5b)

#[tokio::test]
async fn a_choice_without_a_message_is_an_invalid_response() {
    for body in [
        json!({"choices": [{"index": 0, "message": null, "finish_reason": "stop"}]}),
        json!({"choices": [{"index": 0, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 0}}),
    ] {
        let server = serve(ResponseTemplate::new(200).set_body_json(body.clone())).await;
        let err = call(&server, false).await.expect_err(&body.to_string());
        assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{body}: {err}");
        assert_eq!(
            invalid_kind(&*err),
            Some(InvalidResponseKind::NoMessage),
            "{body}: {err}"
        );
    }
    for body in [
        json!({"id": "chatcmpl-1", "object": "chat.completion"}),
        json!({"choices": null}),
        json!({"choices": []}),
    ] {
        let server = serve(ResponseTemplate::new(200).set_body_json(body.clone())).await;
        let err = call(&server, false).await.expect_err(&body.to_string());
        assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{body}: {err}");
        assert_eq!(
            invalid_kind(&*err),
            Some(InvalidResponseKind::NoChoices),
            "{body}: {err}"
        );
    }
    // The same body asked for as a stream (a server that ignores `stream`).
    let server =
        serve(ResponseTemplate::new(200).set_body_json(json!({"choices": [{"message": null}]}))).await;
    let err = call(&server, true).await.unwrap_err();
    assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{err}");
}
// ------------------------------------------------------------ the key (4)

/// Display and Debug of every link of the chain.
fn everything_shown(err: &(dyn StdError + 'static)) -> String {
    let mut shown = String::new();
    let mut current = Some(err);
    while let Some(e) = current {
        shown.push_str(&format!("{e}\n{e:?}\n{e:#?}\n"));
        current = e.source();
    }
    shown
}

fn assert_no_key(err: &(dyn StdError + 'static)) {
    let shown = everything_shown(err);
    assert!(!shown.contains(KEY), "the key leaked:\n{shown}");
    assert!(!shown.contains("SECRET"), "part of the key leaked:\n{shown}");
}

fn echoing_error_object() -> Value {
    json!({
        "message": format!("Incorrect API key provided: {KEY}"),
        "type": format!("auth_error:{KEY}"),
        "code": KEY,
        "param": format!("Bearer {KEY}"),
    })
}

#[tokio::test]
async fn the_key_echoed_in_a_200_error_body_is_redacted() {
    let server =
        serve(ResponseTemplate::new(200).set_body_json(json!({"error": echoing_error_object()}))).await;
    for stream in [false, true] {
        let err = call(&server, stream).await.unwrap_err();
        assert_no_key(&*err);
        let api = api_error(&*err).expect("an ApiError");
        assert_eq!(api.message(), "Incorrect API key provided: [REDACTED]");
        assert_eq!(api.code(), Some("[REDACTED]"));
        assert_eq!(api.param(), Some("Bearer [REDACTED]"));
        assert!(err.to_string().contains("[REDACTED]"), "{err}");
    }
}

#[tokio::test]
async fn the_key_echoed_in_a_4xx_error_object_is_redacted() {
    // Only `param`, `code` and `type` hold the key; the message does not.
    let server = serve(ResponseTemplate::new(401).set_body_json(json!({"error": {
        "message": "invalid credentials",
        "type": format!("auth_error:{KEY}"),
        "code": KEY,
        "param": format!("Bearer {KEY}"),
    }})))
    .await;
    for stream in [false, true] {
        let err = call(&server, stream).await.unwrap_err();
        assert_eq!(classify(&*err), FailureClass::ClientError);
        assert_no_key(&*err);
        let api = api_error(&*err).expect("an ApiError");
        assert_eq!(api.code(), Some("[REDACTED]"));
        assert_eq!(api.error_type(), Some("auth_error:[REDACTED]"));
        assert!(api.body().contains("[REDACTED]"), "{}", api.body());
    }
}

#[tokio::test]
async fn the_key_echoed_in_a_stream_error_before_the_first_chunk_is_redacted() {
    for event in [
        data(&json!({"error": echoing_error_object()})),
        format!("event: error\n{}", data(&echoing_error_object())),
    ] {
        let server = serve(sse_body(std::slice::from_ref(&event))).await;
        let err = call(&server, true).await.unwrap_err();
        assert_no_key(&*err);
        assert!(api_error(&*err).is_some(), "{event}: {err}");
        assert!(err.to_string().contains("[REDACTED]"), "{err}");
    }
}

#[tokio::test]
async fn the_key_echoed_in_a_stream_error_after_the_first_chunk_is_redacted() {
    for event in [
        data(&json!({"error": echoing_error_object()})),
        format!("event: error\n{}", data(&echoing_error_object())),
        // Malformed data whose parse error quotes the key.
        data(&json!({"choices": KEY})),
    ] {
        let server = serve(sse_body(&[text_delta("partial "), event.clone()])).await;
        let mut response = call(&server, true).await.unwrap();
        let mut stream = response.stream.take().unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.content.as_deref(), Some("partial "));
        let err = stream.next().await.unwrap().unwrap_err();
        assert_no_key(&*err);
        assert!(err.to_string().contains("[REDACTED]"), "{event}: {err}");
        assert!(stream.next().await.is_none(), "the stream ends after its error");
    }
}

#[tokio::test]
async fn the_key_quoted_by_a_parse_error_is_redacted() {
    // serde's message quotes the offending string value.
    for body in [
        json!({"choices": KEY}),
        json!({"choices": [{"message": {"tool_calls": KEY}}]}),
    ] {
        let server = serve(ResponseTemplate::new(200).set_body_json(body.clone())).await;
        let err = call(&server, false).await.unwrap_err();
        assert_eq!(classify(&*err), FailureClass::InvalidResponse, "{body}: {err}");
        assert_no_key(&*err);
        assert!(err.to_string().contains("[REDACTED]"), "{body}: {err}");
        assert_eq!(invalid_kind(&*err), Some(InvalidResponseKind::MalformedJson));
    }
}

#[tokio::test]
async fn the_key_never_reaches_the_health_journal() {
    use mantissa_health::HealthLayer;
    use tower::Layer;

    let layer = HealthLayer::new();
    let registry = layer.registry().clone();
    let replies = [
        ResponseTemplate::new(401).set_body_json(json!({"error": echoing_error_object()})),
        ResponseTemplate::new(200).set_body_json(json!({"error": echoing_error_object()})),
        sse_body(&[
            text_delta("partial "),
            data(&json!({"error": echoing_error_object()})),
        ]),
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let server = serve(reply).await;
        let svc = layer.layer(client(&server));
        let outcome = match svc.oneshot(request(i == 2)).await {
            Ok(response) => collect_response(response).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = outcome.expect_err("every reply is a failure");
        assert_no_key(&*err);
    }
    let events = registry.recent(16);
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        let detail = event.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("[REDACTED]"), "{detail}");
        let shown = format!("{event:?} {}", serde_json::to_string(event).unwrap());
        assert!(!shown.contains(KEY), "{shown}");
    }
}
