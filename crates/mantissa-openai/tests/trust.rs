//! What the client must never say or do, against a loopback wiremock server:
//! accept absurd token counts, call an empty choice a success, or let the API
//! key echoed by a provider reach an error (Display, Debug, or any source).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error as StdError;

use mantissa_core::{BoxError, FailureClass, LlmRequest, LlmResponse, Message, Usage, classify};
use mantissa_openai::{InvalidResponse, InvalidResponseKind, OpenAiClient, OpenAiConfig, collect_response};
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
