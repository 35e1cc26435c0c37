//! The call spans of the health layer, captured with a recording `tracing`
//! subscriber: names and OpenTelemetry GenAI attributes, usage recorded at
//! the end (also for streams), `error.type` on failure and on cancellation,
//! nesting under the caller's span, and message content only when opted in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use mantissa_core::{
    BoxError, Chunk, ChunkStream, FailureClass, FinishReason, LlmError, LlmRequest, LlmResponse, Message,
    TierSet, ToolRequest, ToolResponse, Usage,
};
use mantissa_health::HealthLayer;
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing::Instrument;

use mantissa_mock::trace::SpanCapture as Capture;

fn ok_llm() -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future = impl Send> + Clone
{
    service_fn(|_req: LlmRequest| async move {
        tracing::info!(step = "inner", "calling upstream");
        Ok::<_, BoxError>(LlmResponse::new(
            "mock-small",
            Message::assistant("bonjour, ça va très bien"),
            Usage::new(12, 3),
        ))
    })
}

fn request() -> LlmRequest {
    LlmRequest::new(
        "session-42",
        "trader",
        vec![Message::system("be brief"), Message::user("héllo world")],
    )
    .with_model("mock-small")
    .with_tier("low")
}

#[test]
fn llm_span_has_genai_attributes_and_nests_under_the_caller() {
    let cap = Capture::default();
    cap.run(async {
        let svc = HealthLayer::with_tiers(TierSet::default()).layer(ok_llm());
        svc.oneshot(request())
            .instrument(tracing::info_span!("caller"))
            .await
            .unwrap();
    });
    let caller = cap.span("caller");
    let chat = cap.span("chat");
    assert_eq!(chat.parent, Some(caller.id));
    assert!(chat.closed);
    assert_eq!(chat.get("otel.name"), Some("chat mock-small"));
    assert_eq!(chat.get("otel.kind"), Some("client"));
    assert_eq!(chat.get("gen_ai.operation.name"), Some("chat"));
    assert_eq!(chat.get("gen_ai.provider.name"), Some("mock"));
    assert_eq!(chat.get("gen_ai.request.model"), Some("mock-small"));
    assert_eq!(chat.get("gen_ai.response.model"), Some("mock-small"));
    assert_eq!(chat.get("gen_ai.agent.name"), Some("trader"));
    assert_eq!(chat.get("gen_ai.conversation.id"), Some("session-42"));
    assert_eq!(chat.get("gen_ai.usage.input_tokens"), Some("12"));
    assert_eq!(chat.get("gen_ai.usage.output_tokens"), Some("3"));
    assert_eq!(chat.get("gen_ai.response.finish_reasons"), Some("stop"));
    assert_eq!(chat.get("mantissa.tier"), Some("low"));
    assert_eq!(chat.get("error.type"), None);
    assert_eq!(chat.get("otel.status_code"), None);
    // Content is off by default.
    assert_eq!(chat.get("gen_ai.prompt"), None);
    assert_eq!(chat.get("gen_ai.completion"), None);
    // The inner future runs inside the span.
    let inner = cap
        .events()
        .into_iter()
        .find(|e| e.fields.get("step").map(String::as_str) == Some("inner"));
    assert_eq!(inner.unwrap().parent, Some(chat.id));
}

#[test]
fn content_is_recorded_truncated_only_when_opted_in() {
    let cap = Capture::default();
    cap.run(async {
        let svc = HealthLayer::new().record_content(5).layer(ok_llm());
        svc.oneshot(request()).await.unwrap();
    });
    let chat = cap.span("chat");
    // "héllo world": 'é' is two bytes, so five bytes end after the first 'l's.
    assert_eq!(chat.get("gen_ai.prompt"), Some("héll"));
    // "bonjour, ..." cut at five bytes.
    assert_eq!(chat.get("gen_ai.completion"), Some("bonjo"));
    // Without a catalog the provider is `other`.
    assert_eq!(chat.get("gen_ai.provider.name"), Some("other"));
}

#[test]
fn failure_records_error_type_and_error_status() {
    let cap = Capture::default();
    cap.run(async {
        let svc = HealthLayer::new().layer(service_fn(|_req: LlmRequest| async move {
            Err::<LlmResponse, BoxError>(
                LlmError::new(FailureClass::UpstreamServer, "down")
                    .with_status(503)
                    .into(),
            )
        }));
        assert!(svc.oneshot(request()).await.is_err());
    });
    let chat = cap.span("chat");
    assert!(chat.closed);
    assert_eq!(chat.get("error.type"), Some("upstream_server_error"));
    assert_eq!(chat.get("otel.status_code"), Some("ERROR"));
    assert_eq!(chat.get("gen_ai.usage.input_tokens"), None);
}

#[test]
fn dropped_call_records_cancelled() {
    let cap = Capture::default();
    cap.run(async {
        let mut svc = HealthLayer::new().layer(service_fn(|_req: LlmRequest| async move {
            std::future::pending::<Result<LlmResponse, BoxError>>().await
        }));
        let fut = svc.ready().await.unwrap().call(request());
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(1), fut).await;
        assert!(timed_out.is_err());
    });
    let chat = cap.span("chat");
    assert!(chat.closed);
    assert_eq!(chat.get("error.type"), Some("cancelled"));
    assert_eq!(chat.get("otel.status_code"), None);
}

fn streaming_llm()
-> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|_req: LlmRequest| async move {
        let chunks = vec![
            Ok(Chunk {
                content: Some("strea".into()),
                ..Chunk::default()
            }),
            Ok(Chunk {
                content: Some("med answer".into()),
                ..Chunk::default()
            }),
            Ok(Chunk {
                finish_reason: Some(FinishReason::Length),
                usage: Some(Usage::new(40, 7)),
                ..Chunk::default()
            }),
        ];
        Ok::<_, BoxError>(LlmResponse::streaming(
            "mock-medium",
            ChunkStream::new(futures_util::stream::iter(chunks)),
        ))
    })
}

#[test]
fn stream_keeps_the_span_open_until_the_body_ends() {
    let cap = Capture::default();
    let check = cap.clone();
    cap.run(async move {
        let svc = HealthLayer::new().record_content(8).layer(streaming_llm());
        let mut resp = svc.oneshot(request()).await.unwrap();
        // The response is back, the body is not read: the span is still open.
        let chat = check.span("chat");
        assert!(!chat.closed);
        assert_eq!(chat.get("gen_ai.usage.input_tokens"), None);
        let mut stream = resp.stream.take().unwrap();
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
    });
    let chat = cap.span("chat");
    assert!(chat.closed);
    assert_eq!(chat.get("gen_ai.response.model"), Some("mock-medium"));
    assert_eq!(chat.get("gen_ai.usage.input_tokens"), Some("40"));
    assert_eq!(chat.get("gen_ai.usage.output_tokens"), Some("7"));
    assert_eq!(chat.get("gen_ai.response.finish_reasons"), Some("length"));
    assert_eq!(chat.get("gen_ai.completion"), Some("streamed"));
    assert_eq!(chat.get("error.type"), None);
}

#[test]
fn stream_dropped_early_records_cancelled() {
    let cap = Capture::default();
    cap.run(async {
        let svc = HealthLayer::new().layer(streaming_llm());
        let mut resp = svc.oneshot(request()).await.unwrap();
        let mut stream = resp.stream.take().unwrap();
        stream.next().await.unwrap().unwrap();
        drop(stream);
    });
    let chat = cap.span("chat");
    assert!(chat.closed);
    assert_eq!(chat.get("error.type"), Some("cancelled"));
    assert_eq!(chat.get("gen_ai.completion"), None);
}

#[test]
fn tool_span_names_the_tool_and_its_failure() {
    let cap = Capture::default();
    cap.run(async {
        let layer = HealthLayer::new().record_content(100);
        let tool = layer.layer(service_fn(|req: ToolRequest| async move {
            Ok::<_, BoxError>(ToolResponse::error(format!("no price for {}", req.arguments)))
        }));
        tool.oneshot(ToolRequest::new(
            "s1",
            "trader",
            "call-7",
            "get_price",
            serde_json::json!("XYZ"),
        ))
        .instrument(tracing::info_span!("agent_turn"))
        .await
        .unwrap();
    });
    let turn = cap.span("agent_turn");
    let tool = cap.span("execute_tool");
    assert_eq!(tool.parent, Some(turn.id));
    assert_eq!(tool.get("otel.name"), Some("execute_tool get_price"));
    assert_eq!(tool.get("gen_ai.operation.name"), Some("execute_tool"));
    assert_eq!(tool.get("gen_ai.tool.name"), Some("get_price"));
    assert_eq!(tool.get("gen_ai.tool.call.id"), Some("call-7"));
    assert_eq!(tool.get("gen_ai.agent.name"), Some("trader"));
    assert_eq!(tool.get("gen_ai.conversation.id"), Some("s1"));
    assert_eq!(tool.get("error.type"), Some("tool_error"));
    // Tool arguments and results are never recorded.
    assert!(tool.fields.values().all(|v| !v.contains("XYZ")));
}

/// A subscriber that wants no span: it counts every span, record, enter and
/// event it is handed.
#[derive(Default, Clone)]
struct Uninterested {
    handed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Uninterested {
    fn hand(&self) {
        self.handed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl tracing::Subscriber for Uninterested {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::never()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.hand();
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {
        self.hand();
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {
        self.hand();
    }
    fn event(&self, _: &tracing::Event<'_>) {
        self.hand();
    }
    fn enter(&self, _: &tracing::span::Id) {
        self.hand();
    }
    fn exit(&self, _: &tracing::span::Id) {
        self.hand();
    }
}

/// When no subscriber wants the spans, the layer creates, enters and records
/// none (content recording on, a plain call and a streamed one), and the
/// call is still measured.
#[test]
fn no_subscriber_means_no_span_work() {
    let sub = Uninterested::default();
    let handed = sub.handed.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = HealthLayer::with_tiers(TierSet::default()).record_content(10);
    let registry = layer.registry().clone();
    tracing::subscriber::with_default(sub, || {
        rt.block_on(async {
            let resp = layer.layer(ok_llm()).oneshot(request()).await.unwrap();
            assert_eq!(resp.usage, Usage::new(12, 3));
            let mut resp = layer.layer(streaming_llm()).oneshot(request()).await.unwrap();
            let mut stream = resp.stream.take().unwrap();
            while stream.next().await.is_some() {}
        })
    });
    assert_eq!(
        handed.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "span work reached the subscriber"
    );
    assert_eq!(registry.model("mock-small").unwrap().last_1m.calls, 2);
}
