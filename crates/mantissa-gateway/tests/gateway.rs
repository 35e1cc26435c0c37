//! The gateway over real loopback HTTP, in front of the in-repo HTTP mock
//! upstream: request mapping, headers, JSON and SSE bodies, tool calls,
//! errors and their statuses, keys, limits, shutdown, and secrets.
//!
//! Every gateway in this process shares one Prometheus recorder, so each test
//! uses its own agent names.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{UPSTREAM_KEY, key, start, sum_for_agent};
use mantissa::core::ToolCall;
use mantissa::mock::{HttpMockLlm, HttpReply};
use mantissa_gateway::{Gateway, GatewayError, GatewayFile};
use serde_json::{Value, json};

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The `data:` payloads of an SSE body.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn plain_calls_map_agent_session_model_and_headers() {
    let mock = HttpMockLlm::start().await;
    let gw = start(&mock, &["map-a"], vec![], |_| {}).await;
    let url = gw.url("/v1/chat/completions");

    // auto: triage sends chit-chat to the low tier.
    let resp = post(
        &url,
        &[("x-mantissa-agent", "map-a"), ("x-mantissa-session", "s-1")],
        &hi("auto"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-mantissa-tier"), "low");
    assert_eq!(header(&resp, "x-mantissa-model"), "gw-small");
    assert_eq!(header(&resp, "x-mantissa-reset"), "none");
    assert_eq!(header(&resp, "x-mantissa-session"), "s-1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gw-small");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "mock reply to: hi");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));

    // A tier name pins the tier; a model id pins the model.
    let resp = post(&url, &[("x-mantissa-agent", "map-a")], &hi("high")).await;
    assert_eq!(
        (
            header(&resp, "x-mantissa-tier"),
            header(&resp, "x-mantissa-model")
        ),
        ("high".to_owned(), "gw-large".to_owned())
    );
    let resp = post(&url, &[("x-mantissa-agent", "map-a")], &hi("gw-medium")).await;
    assert_eq!(
        (
            header(&resp, "x-mantissa-tier"),
            header(&resp, "x-mantissa-model")
        ),
        ("medium".to_owned(), "gw-medium".to_owned())
    );
    let models: Vec<String> = mock
        .request_bodies()
        .iter()
        .map(|b| b["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["gw-small", "gw-large", "gw-medium"]);

    // Session: the `user` field, else a fresh id per request.
    let mut with_user = hi("auto");
    with_user["user"] = json!("end-user-9");
    let resp = post(&url, &[("x-mantissa-agent", "map-a")], &with_user).await;
    assert_eq!(header(&resp, "x-mantissa-session"), "end-user-9");
    let a = header(
        &post(&url, &[("x-mantissa-agent", "map-a")], &hi("auto")).await,
        "x-mantissa-session",
    );
    let b = header(
        &post(&url, &[("x-mantissa-agent", "map-a")], &hi("auto")).await,
        "x-mantissa-session",
    );
    assert!(a.starts_with("gw-") && b.starts_with("gw-") && a != b);

    // Parameters mantissa has no field for reach the upstream verbatim.
    let mut extra = hi("auto");
    extra["response_format"] = json!({"type": "json_object"});
    extra["temperature"] = json!(0.5);
    post(&url, &[("x-mantissa-agent", "map-a")], &extra).await;
    let last = mock.request_bodies().pop().unwrap();
    assert_eq!(last["response_format"], json!({"type": "json_object"}));
    assert_eq!(last["temperature"], json!(0.5));

    // The calls are in the stack's registry and the exposition, under the agent.
    assert_eq!(
        gw.gateway
            .stack()
            .registry()
            .agent("map-a")
            .unwrap()
            .last_1m
            .calls,
        7
    );
    let metrics = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sum_for_agent(&metrics, "mantissa_calls_total", "map-a"), 7.0);
}

#[tokio::test]
async fn streams_are_openai_chunks_with_usage_when_asked() {
    let mock = HttpMockLlm::start().await;
    mock.stream_text(["Hel", "lo ", "there"]);
    let gw = start(&mock, &["sse-a"], vec![], |_| {}).await;
    let url = gw.url("/v1/chat/completions");

    let mut req = hi("auto");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = post(&url, &[("x-mantissa-agent", "sse-a")], &req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    assert_eq!(header(&resp, "x-mantissa-model"), "gw-small");
    let body = resp.text().await.unwrap();
    let events = events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello there");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // The upstream was asked to stream.
    assert_eq!(mock.request_bodies()[0]["stream"], json!(true));

    // Without include_usage: no usage chunk.
    req["stream_options"] = json!({"include_usage": false});
    let body = post(&url, &[("x-mantissa-agent", "sse-a")], &req)
        .await
        .text()
        .await
        .unwrap();
    assert!(!body.contains("\"usage\""));
    assert!(body.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn tool_calls_go_out_and_come_back_plain_and_streamed() {
    let mock = HttpMockLlm::start().await;
    mock.respond_with_tool_calls(vec![ToolCall::new(
        "call_1",
        "get_weather",
        &json!({"city": "Paris"}),
    )]);
    let gw = start(&mock, &["tool-a"], vec![], |_| {}).await;
    let url = gw.url("/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let mut req = hi("auto");
    req["tools"] = tools.clone();
    req["tool_choice"] = json!("auto");

    let body: Value = post(&url, &[("x-mantissa-agent", "tool-a")], &req)
        .await
        .json()
        .await
        .unwrap();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let sent = &mock.request_bodies()[0];
    assert_eq!(sent["tools"], tools);
    assert_eq!(sent["tool_choice"], "auto");

    // The tool result goes back in the history.
    let mut follow = req.clone();
    follow["messages"] = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]);
    mock.respond_with_text("It is sunny.");
    let body: Value = post(&url, &[("x-mantissa-agent", "tool-a")], &follow)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "It is sunny.");
    let sent = mock.request_bodies().pop().unwrap();
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_1");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_1");

    // Streamed tool calls.
    mock.respond_with_tool_calls(vec![ToolCall::new(
        "call_2",
        "get_weather",
        &json!({"city": "Oslo"}),
    )]);
    req["stream"] = json!(true);
    let body = post(&url, &[("x-mantissa-agent", "tool-a")], &req)
        .await
        .text()
        .await
        .unwrap();
    let chunks: Vec<Value> = events(&body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas[0]["id"], "call_2");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    let args: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Oslo"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
}

async fn error_of(resp: reqwest::Response) -> (u16, Value, String) {
    let status = resp.status().as_u16();
    let retry = header(&resp, "retry-after");
    let body: Value = resp.json().await.unwrap();
    (status, body["error"].clone(), retry)
}

#[tokio::test]
async fn request_errors_name_the_field_and_have_openai_shape() {
    let mock = HttpMockLlm::start().await;
    let gw = start(&mock, &["err-a"], vec![], |c| c.max_body_bytes = 2048).await;
    let url = gw.url("/v1/chat/completions");
    let h = [("x-mantissa-agent", "err-a")];

    let (status, e, _) = error_of(post(&url, &h, &json!({"messages": []})).await).await;
    assert_eq!(
        (status, e["param"].as_str(), e["type"].as_str()),
        (400, Some("model"), Some("invalid_request_error"))
    );
    let bad_role = json!({"model": "auto", "messages": [{"role": "robot", "content": "x"}]});
    let (status, e, _) = error_of(post(&url, &h, &bad_role).await).await;
    assert_eq!((status, e["param"].as_str()), (400, Some("messages[0].role")));
    let mut bad_temp = hi("auto");
    bad_temp["temperature"] = json!("hot");
    let (status, e, _) = error_of(post(&url, &h, &bad_temp).await).await;
    assert_eq!((status, e["param"].as_str()), (400, Some("temperature")));
    let (status, e, _) = error_of(post(&url, &[("x-mantissa-agent", "bad agent!")], &hi("auto")).await).await;
    assert_eq!((status, e["param"].as_str()), (400, Some("x-mantissa-agent")));

    // Unknown model or tier: 404.
    let (status, e, _) = error_of(post(&url, &h, &hi("gpt-9")).await).await;
    assert_eq!(
        (status, e["code"].as_str(), e["param"].as_str()),
        (404, Some("model_not_found"), Some("model"))
    );

    // Too large: 413.
    let big = json!({"model": "auto", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, e, _) = error_of(post(&url, &h, &big).await).await;
    assert_eq!((status, e["code"].as_str()), (413, Some("request_too_large")));

    // Unknown path: 404 in the same shape.
    let resp = reqwest::get(gw.url("/v1/nope")).await.unwrap();
    let (status, e, _) = error_of(resp).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("not_found")));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn upstream_failures_map_to_429_502_503_504_and_400() {
    // 429 from every model: 429 with Retry-After; then every model is cooled
    // down by its Retry-After: 503.
    let mock = HttpMockLlm::start().await;
    mock.rate_limit(Duration::from_secs(7));
    let gw = start(&mock, &["up-429"], vec![], |_| {}).await;
    let url = gw.url("/v1/chat/completions");
    let (status, e, retry) = error_of(post(&url, &[("x-mantissa-agent", "up-429")], &hi("auto")).await).await;
    assert_eq!(
        (status, e["type"].as_str(), e["code"].as_str()),
        (429, Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );
    assert_eq!(retry, "7");
    let (status, e, _) = error_of(post(&url, &[("x-mantissa-agent", "up-429")], &hi("auto")).await).await;
    assert_eq!((status, e["code"].as_str()), (503, Some("tier_unavailable")));
    let ready = reqwest::get(gw.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);

    // 5xx: 502.
    let mock = HttpMockLlm::start().await;
    mock.fail_with_status(500);
    let gw = start(&mock, &["up-502"], vec![], |_| {}).await;
    let (status, e, _) = error_of(
        post(
            &gw.url("/v1/chat/completions"),
            &[("x-mantissa-agent", "up-502")],
            &hi("auto"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, e["type"].as_str(), e["code"].as_str()),
        (502, Some("server_error"), Some("upstream_error"))
    );

    // Context too long: 400 context_length_exceeded.
    let mock = HttpMockLlm::start().await;
    mock.set_default(HttpReply::context_length_exceeded());
    let gw = start(&mock, &["up-ctx"], vec![], |_| {}).await;
    let (status, e, _) = error_of(
        post(
            &gw.url("/v1/chat/completions"),
            &[("x-mantissa-agent", "up-ctx")],
            &hi("auto"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );

    // Slower than the total timeout: 504.
    let mock = HttpMockLlm::start().await;
    mock.set_default(HttpReply::echo().with_delay(Duration::from_secs(3)));
    let gw = start(&mock, &["up-504"], vec![], |c| {
        c.total_timeout = Duration::from_millis(200)
    })
    .await;
    let (status, e, _) = error_of(
        post(
            &gw.url("/v1/chat/completions"),
            &[("x-mantissa-agent", "up-504")],
            &hi("auto"),
        )
        .await,
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (504, Some("timeout")));
}

#[tokio::test]
async fn keys_authenticate_pick_the_default_agent_and_bind_agents() {
    let mock = HttpMockLlm::start().await;
    let keys = vec![
        key("desk", "mk-desk-1", &["key-a1", "key-a2"], Some("key-a1")),
        key("any", "mk-any-2", &[], None),
    ];
    let gw = start(&mock, &["key-a1", "key-a2"], keys, |_| {}).await;
    let url = gw.url("/v1/chat/completions");

    let (status, e, _) = error_of(post(&url, &[], &hi("auto")).await).await;
    assert_eq!((status, e["type"].as_str()), (401, Some("authentication_error")));
    let (status, _, _) =
        error_of(post(&url, &[("authorization", "Bearer mk-wrong")], &hi("auto")).await).await;
    assert_eq!(status, 401);
    let models = reqwest::get(gw.url("/v1/models")).await.unwrap();
    assert_eq!(models.status(), 401);

    // The key's default agent, then an allowed one, then a forbidden one.
    let desk = ("authorization", "Bearer mk-desk-1");
    assert_eq!(post(&url, &[desk], &hi("auto")).await.status(), 200);
    assert_eq!(
        post(&url, &[desk, ("x-mantissa-agent", "key-a2")], &hi("auto"))
            .await
            .status(),
        200
    );
    let (status, e, _) =
        error_of(post(&url, &[desk, ("x-mantissa-agent", "key-a3")], &hi("auto")).await).await;
    assert_eq!((status, e["type"].as_str()), (403, Some("permission_error")));
    // A key bound to no agent: any agent; none named is `other`.
    let any = ("authorization", "Bearer mk-any-2");
    assert_eq!(
        post(&url, &[any, ("x-mantissa-agent", "key-a2")], &hi("auto"))
            .await
            .status(),
        200
    );
    let registry = gw.gateway.stack().registry();
    assert_eq!(registry.agent("key-a1").unwrap().last_1m.calls, 1);
    assert_eq!(registry.agent("key-a2").unwrap().last_1m.calls, 2);
    assert!(registry.agent("key-a3").is_none());

    let models: Value = reqwest::Client::new()
        .get(gw.url("/v1/models"))
        .bearer_auth("mk-any-2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "auto",
            "low",
            "medium",
            "high",
            "gw-small",
            "gw-medium",
            "gw-large"
        ]
    );
}

#[tokio::test]
async fn over_the_concurrency_limit_calls_are_shed_with_503_and_retry_after() {
    let mock = HttpMockLlm::start().await;
    mock.set_default(HttpReply::echo().with_delay(Duration::from_millis(600)));
    let gw = start(&mock, &["shed-a"], vec![], |c| {
        c.max_concurrency = 1;
        c.retry_after = Duration::from_secs(2);
    })
    .await;
    let url = gw.url("/v1/chat/completions");
    let slow = tokio::spawn({
        let url = url.clone();
        async move {
            post(&url, &[("x-mantissa-agent", "shed-a")], &hi("auto"))
                .await
                .status()
        }
    });
    while mock.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, e, retry) = error_of(post(&url, &[("x-mantissa-agent", "shed-a")], &hi("auto")).await).await;
    assert_eq!(
        (status, e["code"].as_str(), retry.as_str()),
        (503, Some("overloaded"), "2")
    );
    assert_eq!(slow.await.unwrap(), 200);
    // Health endpoints are never shed.
    assert_eq!(reqwest::get(gw.url("/healthz")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn shutdown_lets_open_streams_finish_then_stops_accepting() {
    let mock = HttpMockLlm::start().await;
    mock.set_default(HttpReply::text_pieces(["slow ", "stream"]).with_delay(Duration::from_millis(400)));
    let gw = start(&mock, &["stop-a"], vec![], |_| {}).await;
    let url = gw.url("/v1/chat/completions");
    let mut req = hi("auto");
    req["stream"] = json!(true);
    let open = tokio::spawn({
        let url = url.clone();
        async move {
            post(&url, &[("x-mantissa-agent", "stop-a")], &req)
                .await
                .text()
                .await
                .unwrap()
        }
    });
    while mock.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), gw.server.wait())
        .await
        .unwrap()
        .unwrap();
    let body = open.await.unwrap();
    assert!(
        body.contains("slow ") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    assert!(reqwest::get(format!("http://{}/healthz", gw.addr)).await.is_err());
}

#[tokio::test]
async fn refuses_a_non_loopback_address_without_keys() {
    let mock = HttpMockLlm::start().await;
    let gateway = Gateway::new(common::stack(&mock, &["bind-a"]), Default::default());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    match gateway.serve(listener, std::future::pending()) {
        Err(GatewayError::Unauthenticated(addr)) => assert!(addr.ip().is_unspecified()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // With a key it serves.
    let config = mantissa_gateway::GatewayConfig {
        keys: mantissa_gateway::ClientKeys::new(vec![key("k", "mk-bind", &[], None)]),
        ..Default::default()
    };
    let gateway = Gateway::new(common::stack(&mock, &["bind-a"]), config);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    assert!(gateway.serve(listener, async {}).is_ok());
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
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

#[tokio::test(flavor = "current_thread")]
async fn keys_never_appear_in_logs_errors_or_metrics() {
    const CLIENT_KEY: &str = "mk-client-SECRET-4b2e99";
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = HttpMockLlm::start().await;
    let gw = start(
        &mock,
        &["secret-a"],
        vec![key("secret", CLIENT_KEY, &[], None)],
        |_| {},
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    let auth = format!("Bearer {CLIENT_KEY}");
    let h = [("authorization", auth.as_str()), ("x-mantissa-agent", "secret-a")];
    let mut seen = String::new();
    let record = |resp: reqwest::Response| async move {
        let mut s = format!("{:?}", resp.headers());
        s.push_str(&resp.text().await.unwrap());
        s
    };
    seen += &record(post(&url, &h, &hi("auto")).await).await;
    // The upstream got the upstream key; nothing else shows it.
    let upstream_auth = mock.requests()[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(upstream_auth, format!("Bearer {UPSTREAM_KEY}"));
    seen += &record(
        post(
            &url,
            &[("authorization", "Bearer mk-client-SECRET-wrong")],
            &hi("auto"),
        )
        .await,
    )
    .await;
    mock.set_default(HttpReply::error(
        401,
        "invalid_request_error",
        json!("invalid_api_key"),
        &format!("Incorrect API key provided: {UPSTREAM_KEY}"),
    ));
    seen += &record(post(&url, &h, &hi("auto")).await).await;
    mock.fail_with_status(503);
    seen += &record(post(&url, &h, &hi("gw-large")).await).await;
    let mut sse = hi("auto");
    sse["stream"] = json!(true);
    seen += &record(post(&url, &h, &sse).await).await;
    seen += &reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    seen += &format!("{:?}", gw.gateway);

    assert!(
        seen.contains("upstream refused the gateway's credentials"),
        "{seen}"
    );
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty());
    for secret in [UPSTREAM_KEY, CLIENT_KEY, "SECRET"] {
        assert!(!seen.contains(secret), "`{secret}` in a response or /metrics");
        assert!(!logs.contains(secret), "`{secret}` in the logs");
    }
}

#[test]
fn the_gateway_table_is_split_off_the_stack_configuration() {
    let file = GatewayFile::from_toml(
        r#"
        [[agents]]
        name = "trader"

        [gateway]
        listen = "127.0.0.1:0"
        max_body_bytes = 1000
        total_timeout_secs = 5

        [[gateway.keys]]
        hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        agents = ["trader"]
        default_agent = "trader"

        [[gateway.keys]]
        key_env = "DESK_KEY"

        [metrics]
        install = false
        "#,
    )
    .unwrap();
    assert_eq!(file.stack.agents.len(), 1);
    assert!(!file.stack.metrics.install);
    let lookup = |var: &str| (var == "DESK_KEY").then(|| "mk-desk".to_owned());
    let config = file.gateway.resolve(&lookup).unwrap();
    assert_eq!(config.listen.port(), 0);
    assert_eq!(config.max_body_bytes, 1000);
    assert_eq!(config.total_timeout, Duration::from_secs(5));
    assert_eq!(
        config
            .keys
            .find("test")
            .unwrap()
            .default_agent
            .as_ref()
            .unwrap()
            .as_str(),
        "trader"
    );
    assert_eq!(config.keys.find("mk-desk").unwrap().name, "key-2");

    // Errors name the field; plain-text keys are refused.
    let err = |text: &str| {
        GatewayFile::from_toml(text)
            .and_then(|f| Ok(f.gateway.resolve(&|_| None)?))
            .unwrap_err()
            .to_string()
    };
    assert!(err("[[gateway.keys]]\nkey = \"mk-plain\"\n").contains("unknown field `key`"));
    assert!(err("[[gateway.keys]]\nagents = []\n").contains("gateway.keys[0]"));
    assert!(err("[[gateway.keys]]\nenv = \"NOPE_UNSET\"\n").contains("gateway.keys[0].env"));
    assert!(err("[[gateway.keys]]\nhash = \"sha256:00\"\n").contains("gateway.keys[0].hash"));
    assert!(err("[gateway]\nmax_concurrency = 0\n").contains("gateway.max_concurrency"));
    assert!(err("[gateway]\nlisten = \"nowhere\"\n").contains("gateway"));
    assert!(err("[nonsense]\n").contains("unknown field `nonsense`"));
}

#[tokio::test]
async fn health_readiness_and_models_endpoints() {
    let mock = HttpMockLlm::start().await;
    let gw = start(&mock, &["ep-a"], vec![], |_| {}).await;
    let healthz = reqwest::get(gw.url("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz: Value = reqwest::get(gw.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["status"], "ready");
    let models: Value = reqwest::get(gw.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "auto");
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(header(&metrics, "content-type").starts_with("text/plain"));
}

#[tokio::test]
async fn a_stream_cut_upstream_ends_with_an_error_event_and_no_done() {
    let mock = HttpMockLlm::start().await;
    mock.set_default(HttpReply::truncated_stream("one two three four", 2));
    let gw = start(&mock, &["cut-a"], vec![], |_| {}).await;
    let mut req = hi("auto");
    req["stream"] = json!(true);
    let resp = post(
        &gw.url("/v1/chat/completions"),
        &[("x-mantissa-agent", "cut-a")],
        &req,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let events = events(&body);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{body}");
    assert!(!body.contains("[DONE]"));
    assert!(body.contains("\"content\":\"one"), "{body}");
}

#[tokio::test]
async fn a_context_reset_is_reported_in_the_reset_header() {
    let mock = HttpMockLlm::start().await;
    let stack = common::stack_with(&mock, &["reset-a"], common::tiers_with_window(400));
    let gateway = Gateway::new(stack, mantissa_gateway::GatewayConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = gateway.serve(listener, std::future::pending()).unwrap();
    let url = format!("http://{}/v1/chat/completions", server.local_addr());
    // A history far past 85 % of a 400-token window: the reset layer compacts.
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for i in 0..12 {
        messages.push(json!({"role": "user", "content": format!("question {i}: {}", "words ".repeat(40))}));
        messages.push(json!({"role": "assistant", "content": format!("answer {i}: {}", "more ".repeat(40))}));
    }
    messages.push(json!({"role": "user", "content": "and now?"}));
    let req = json!({"model": "auto", "messages": messages});
    let resp = post(
        &url,
        &[("x-mantissa-agent", "reset-a"), ("x-mantissa-session", "long-1")],
        &req,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let reset = header(&resp, "x-mantissa-reset");
    assert!(reset.starts_with("context_tokens; strategy="), "{reset}");
}

#[tokio::test]
async fn a_client_slower_than_the_header_timeout_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = HttpMockLlm::start().await;
    let gw = start(&mock, &["slow-a"], vec![], |c| {
        c.header_timeout = Duration::from_millis(200)
    })
    .await;
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Half the headers, then nothing.
    socket
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open past the header timeout");
    assert!(started.elapsed() >= Duration::from_millis(150));
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(mock.calls(), 0);
}
