//! The `async-openai` adapter: conversions both ways (property-tested round
//! trips, and clear errors for what cannot be carried), and the upstream
//! over an `async_openai::Client` against the loopback HTTP mock.
#![cfg(feature = "async-openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};
use futures_util::StreamExt;
use mantissa::HealthLayer;
use mantissa::adapters::async_openai::{
    AsyncOpenAiUpstream, OpenAiEnvelope, chunk_from_openai, chunk_to_openai, request_from_openai,
    request_to_openai, response_from_openai, response_to_openai,
};
use mantissa::core::{
    BoxError, Chunk, FailureClass, FinishReason, FunctionCall, LlmRequest, Message, ModelSpec, Role,
    ToolCall, ToolCallDelta, ToolSpec, Usage, classify_box,
};
use mantissa::mock::http::{HttpMockLlm, HttpReply};
use proptest::prelude::*;
use serde_json::json;
use tower::{Layer, ServiceExt};

// ---- generators ----

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?{}\":é€]{0,24}"
}

fn tool_call() -> impl Strategy<Value = ToolCall> {
    ("[a-z0-9_]{1,8}", "[a-z_]{1,10}", text()).prop_map(|(id, name, arguments)| ToolCall {
        id,
        kind: "function".to_owned(),
        function: FunctionCall { name, arguments },
    })
}

fn message() -> impl Strategy<Value = Message> {
    let named = proptest::option::of("[a-z_]{1,8}");
    prop_oneof![
        (text(), named.clone()).prop_map(|(t, name)| Message {
            name,
            ..Message::system(t)
        }),
        (text(), named.clone()).prop_map(|(t, name)| Message {
            name,
            ..Message::user(t)
        }),
        (
            proptest::option::of(text()),
            named,
            proptest::collection::vec(tool_call(), 0..3)
        )
            .prop_map(|(content, name, tool_calls)| Message {
                role: Role::Assistant,
                content,
                name,
                tool_calls,
                tool_call_id: None,
            }),
        ("[a-z0-9_]{1,8}", text()).prop_map(|(id, t)| Message::tool(id, t)),
    ]
}

fn tool() -> impl Strategy<Value = ToolSpec> {
    ("[a-z_]{1,10}", text(), "[a-z]{1,6}").prop_map(|(name, description, prop)| {
        ToolSpec::function(
            name,
            description,
            json!({"type": "object", "properties": {prop: {"type": "string"}}}),
        )
    })
}

fn request() -> impl Strategy<Value = LlmRequest> {
    (
        proptest::collection::vec(message(), 1..6),
        proptest::collection::vec(tool(), 0..3),
        proptest::option::of(0.0f32..2.0),
        proptest::option::of(1u32..4096),
        proptest::collection::vec("[a-z]{1,4}", 0..3),
        proptest::option::of(any::<i64>()),
        any::<bool>(),
        proptest::option::of(1u32..100),
    )
        .prop_map(
            |(messages, tools, temperature, max_tokens, stop, seed, stream, n)| {
                let mut req = LlmRequest::new("s", "a", messages)
                    .with_model("gpt-4o-mini")
                    .with_tools(tools);
                req.params.temperature = temperature;
                req.params.max_tokens = max_tokens;
                req.params.stop = stop;
                req.params.seed = seed;
                req.params.stream = stream;
                if let Some(n) = n {
                    req.params.extra.insert("max_completion_tokens".into(), json!(n));
                }
                req
            },
        )
}

fn usage() -> impl Strategy<Value = Usage> {
    (0u64..1_000_000, 0u64..100_000, 0u64..1_000)
        .prop_map(|(i, o, c)| Usage::new(i, o).with_cached_input(c.min(i)))
}

fn finish() -> impl Strategy<Value = Option<FinishReason>> {
    prop_oneof![
        Just(None),
        Just(Some(FinishReason::Stop)),
        Just(Some(FinishReason::Length)),
        Just(Some(FinishReason::ToolCalls)),
        Just(Some(FinishReason::ContentFilter)),
    ]
}

proptest! {
    /// mantissa -> async-openai -> mantissa keeps messages, tools, settings.
    #[test]
    fn requests_round_trip(req in request()) {
        let theirs = request_to_openai(&req).unwrap();
        let back = request_from_openai(theirs.clone(), "s", "a").unwrap();
        prop_assert_eq!(back.messages(), req.messages());
        prop_assert_eq!(&back.tools, &req.tools);
        prop_assert_eq!(&back.params, &req.params);
        prop_assert_eq!(&back.model, &req.model);
        // and async-openai -> mantissa -> async-openai is the identity.
        prop_assert_eq!(request_to_openai(&back).unwrap(), theirs);
    }

    /// Responses keep the message, tool calls, usage and finish reason.
    #[test]
    fn responses_round_trip(
        content in proptest::option::of(text()),
        calls in proptest::collection::vec(tool_call(), 0..3),
        usage in usage(),
        finish in finish(),
    ) {
        let mut resp = mantissa::core::LlmResponse::new(
            "gpt-4o",
            Message { role: Role::Assistant, content, name: None, tool_calls: calls, tool_call_id: None },
            usage,
        );
        resp.finish_reason = finish;
        let theirs = response_to_openai(&resp).unwrap();
        let back = response_from_openai(theirs.clone()).unwrap();
        prop_assert_eq!(&back.message, &resp.message);
        prop_assert_eq!(back.usage, resp.usage);
        prop_assert_eq!(&back.finish_reason, &resp.finish_reason);
        prop_assert_eq!(&back.model, &resp.model);
        prop_assert_eq!(response_to_openai(&back).unwrap(), theirs);
    }

    /// Stream chunks keep deltas, tool-call fragments, finish and usage.
    #[test]
    fn chunks_round_trip(
        content in proptest::option::of(text()),
        deltas in proptest::collection::vec(
            (0u32..4, proptest::option::of("[a-z0-9]{1,6}"), proptest::option::of("[a-z_]{1,6}"), proptest::option::of(text())),
            0..3,
        ),
        finish in finish(),
        usage in proptest::option::of(usage()),
    ) {
        let chunk = Chunk {
            content,
            tool_calls: deltas
                .into_iter()
                .map(|(index, id, name, arguments)| ToolCallDelta { index, id, name, arguments })
                .collect(),
            finish_reason: finish,
            usage,
        };
        let theirs = chunk_to_openai(&chunk, "chatcmpl-1", "gpt-4o", 1_700_000_000).unwrap();
        prop_assert_eq!(chunk_from_openai(theirs).unwrap(), chunk);
    }
}

#[test]
fn openai_responses_keep_their_envelope() {
    let theirs: CreateChatCompletionResponse = serde_json::from_value(json!({
        "id": "chatcmpl-42", "object": "chat.completion", "created": 1_700_000_000u32,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_price", "arguments": "{\"s\":\"ACME\"}"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 10}}
    }))
    .unwrap();
    let ours = response_from_openai(theirs.clone()).unwrap();
    assert_eq!(ours.usage, Usage::new(100, 20).with_cached_input(64));
    assert_eq!(ours.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(ours.message.tool_calls[0].function.name, "get_price");
    assert_eq!(
        ours.extensions.get::<OpenAiEnvelope>().unwrap().response["id"],
        "chatcmpl-42"
    );
    assert_eq!(response_to_openai(&ours).unwrap(), theirs);
}

#[test]
fn what_cannot_be_carried_is_an_error_naming_it() {
    let req = |messages: serde_json::Value| -> CreateChatCompletionRequest {
        serde_json::from_value(json!({"model": "gpt-4o", "messages": messages})).unwrap()
    };
    let cases = [
        (
            req(json!([{"role": "developer", "content": "be brief"}])),
            "developer",
        ),
        (
            req(json!([{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://x.invalid/a.png"}}]}])),
            "content",
        ),
        (
            req(json!([{"role": "assistant", "content": "no", "refusal": "I can't"}])),
            "refusal",
        ),
    ];
    for (theirs, named) in cases {
        let err = request_from_openai(theirs, "s", "a").unwrap_err();
        assert!(err.to_string().contains(named), "{err}");
    }
    let strict: CreateChatCompletionRequest = serde_json::from_value(json!({
        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}, "strict": true}}]
    }))
    .unwrap();
    assert!(
        request_from_openai(strict, "s", "a")
            .unwrap_err()
            .to_string()
            .contains("strict")
    );
    let multi: CreateChatCompletionResponse = serde_json::from_value(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "stop"}]
    }))
    .unwrap();
    assert!(
        response_from_openai(multi)
            .unwrap_err()
            .to_string()
            .contains("2 choices")
    );
    // mantissa -> async-openai: a tool message has no name there.
    let named_tool = LlmRequest::new(
        "s",
        "a",
        vec![Message {
            name: Some("n".into()),
            ..Message::tool("c1", "42")
        }],
    )
    .with_model("gpt-4o");
    let err = request_to_openai(&named_tool).unwrap_err();
    assert!(err.to_string().contains("messages[0]"), "{err}");
    let no_model = LlmRequest::new("s", "a", vec![Message::user("hi")]);
    assert!(
        request_to_openai(&no_model)
            .unwrap_err()
            .to_string()
            .contains("no model")
    );
    // One text part is plain text.
    let one_part = req(json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]));
    assert_eq!(
        request_from_openai(one_part, "s", "a").unwrap().messages()[0].text(),
        "hi"
    );
}

fn client(mock: &HttpMockLlm) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(mock.base_url())
            .with_api_key("sk-test"),
    )
}

#[tokio::test]
async fn the_upstream_calls_through_the_users_client_and_is_measured() {
    let mock = HttpMockLlm::start().await;
    let layer = HealthLayer::new().model(ModelSpec::new("gpt-4o-mini"));
    let llm = layer.layer(AsyncOpenAiUpstream::new(client(&mock)).default_model("gpt-4o-mini"));

    mock.enqueue(HttpReply::text("Buy.").with_usage(1_000, 100));
    let resp = llm
        .clone()
        .oneshot(LlmRequest::new("s", "trader", vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(resp.message.text(), "Buy.");
    assert_eq!(resp.usage, Usage::new(1_000, 100));
    let body = &mock.request_bodies()[0];
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["messages"][0]["content"], "hi");

    // Tool calls.
    let call = ToolCall::new("call_1", "get_price", &json!({"s": "ACME"}));
    mock.enqueue(HttpReply::tool_calls(vec![call.clone()]));
    let resp = llm
        .clone()
        .oneshot(LlmRequest::new("s", "trader", vec![Message::user("price?")]))
        .await
        .unwrap();
    assert_eq!(resp.message.tool_calls, vec![call]);
    assert_eq!(resp.finish_reason, Some(FinishReason::ToolCalls));

    // Streaming.
    mock.enqueue(HttpReply::text_pieces(["Hel", "lo"]));
    let mut req = LlmRequest::new("s", "trader", vec![Message::user("stream")]);
    req.params.stream = true;
    let mut resp = llm.clone().oneshot(req).await.unwrap();
    let mut text = String::new();
    let mut stream = resp.stream.take().unwrap();
    while let Some(chunk) = stream.next().await {
        text.push_str(chunk.unwrap().content.as_deref().unwrap_or(""));
    }
    drop(stream);
    assert_eq!(text, "Hello");

    // Failures are classified.
    for (reply, class) in [
        (HttpReply::status(400), FailureClass::ClientError),
        (
            HttpReply::context_length_exceeded(),
            FailureClass::ContextLengthExceeded,
        ),
    ] {
        mock.enqueue(reply);
        let err: BoxError = llm
            .clone()
            .oneshot(LlmRequest::new("s", "trader", vec![Message::user("x")]))
            .await
            .unwrap_err();
        assert_eq!(classify_box(&err), class, "{err}");
    }
    // The client's own policies stay in force: async-openai retries a
    // rate-limited or failed call itself, so mantissa sees one successful call.
    for reply in [
        HttpReply::rate_limited(std::time::Duration::from_millis(10)),
        HttpReply::status(503),
    ] {
        let before = mock.calls();
        mock.enqueue(reply);
        llm.clone()
            .oneshot(LlmRequest::new("s", "trader", vec![Message::user("x")]))
            .await
            .unwrap();
        assert_eq!(mock.calls() - before, 2, "one failure, one retry");
    }

    let snap = layer.registry().snapshot();
    let model = &snap.models["gpt-4o-mini"];
    assert_eq!((model.last_1m.calls, model.last_1m.failures), (7, 2));
    assert!(
        model.last_1m.cost_usd > 0.0,
        "catalogue price: {}",
        model.last_1m.cost_usd
    );
}
