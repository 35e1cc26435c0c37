//! Traces across crates: the router's `route` span with one health `chat`
//! span per attempt (the fallback path), the OpenAI client under a health
//! layer never leaking its API key into any span or event, and (feature
//! `otel`) the spans as the OpenTelemetry SDK exports them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa::core::{BoxError, FailureClass, LlmError, LlmRequest, LlmResponse, Message, TierSet, Usage};
use mantissa::{HealthLayer, TierRouter};
use tower::{Layer, ServiceExt, service_fn};
use tracing::Instrument;

use mantissa_mock::trace::{EventRecord as EventRec, SpanCapture as Capture, SpanRecord as SpanRec};

fn model(
    ok: bool,
) -> impl tower::Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |req: LlmRequest| async move {
        let model = req.model.clone().unwrap();
        if ok {
            Ok(LlmResponse::new(
                model,
                Message::assistant("fine"),
                Usage::new(20, 5),
            ))
        } else {
            Err::<LlmResponse, BoxError>(
                LlmError::new(FailureClass::UpstreamServer, "down")
                    .with_status(503)
                    .into(),
            )
        }
    })
}

/// The router over health-wrapped models, the low tier failing.
fn stack() -> TierRouter {
    let tiers = TierSet::default();
    let health = HealthLayer::with_tiers(tiers.clone());
    TierRouter::builder(tiers)
        .model("mock-small", health.layer(model(false)))
        .model("mock-medium", health.layer(model(true)))
        .model("mock-large", health.layer(model(true)))
        .build()
        .unwrap()
}

#[test]
fn fallback_path_is_a_route_span_with_one_chat_span_per_attempt() {
    let cap = Capture::default();
    cap.run(async {
        let req = LlmRequest::new("sess-1", "trader", vec![Message::user("hi")]).with_tier("low");
        let resp = stack()
            .oneshot(req)
            .instrument(tracing::info_span!("turn"))
            .await
            .unwrap();
        assert_eq!(resp.model.as_str(), "mock-medium");
    });
    let turn = cap.span("turn");
    let route = cap.span("route");
    assert_eq!(route.parent, Some(turn.id));
    assert_eq!(route.get("otel.name"), Some("route low"));
    assert_eq!(route.get("mantissa.fallback.attempts"), Some("2"));
    assert_eq!(route.get("gen_ai.response.model"), Some("mock-medium"));

    let chats: Vec<SpanRec> = cap.spans().into_iter().filter(|s| s.name == "chat").collect();
    assert_eq!(chats.len(), 2);
    assert!(chats.iter().all(|c| c.parent == Some(route.id) && c.closed));
    assert_eq!(chats[0].get("otel.name"), Some("chat mock-small"));
    assert_eq!(chats[0].get("mantissa.tier"), Some("low"));
    assert_eq!(chats[0].get("error.type"), Some("upstream_server_error"));
    assert_eq!(chats[1].get("otel.name"), Some("chat mock-medium"));
    assert_eq!(chats[1].get("mantissa.tier"), Some("medium"));
    assert_eq!(chats[1].get("error.type"), None);
    assert_eq!(chats[1].get("gen_ai.usage.input_tokens"), Some("20"));
    assert_eq!(chats[1].get("gen_ai.conversation.id"), Some("sess-1"));
    let attempts: Vec<EventRec> = cap
        .events()
        .into_iter()
        .filter(|e| e.fields.contains_key("mantissa.fallback.attempt"))
        .collect();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|e| e.parent == Some(route.id)));
    assert_eq!(attempts[0].fields["error.type"], "upstream_server_error");
}

#[cfg(feature = "openai")]
#[test]
fn the_api_key_never_appears_in_a_span() {
    use mantissa::mock::http::{HttpMockLlm, HttpReply};
    use mantissa::openai::{OpenAiClient, OpenAiConfig};

    const KEY: &str = "sk-test-DO-NOT-LEAK-7f3a9c";
    let cap = Capture::default();
    cap.run(async {
        let server = HttpMockLlm::start().await;
        let config = OpenAiConfig::new(server.base_url())
            .api_key(KEY)
            .default_model("gpt-4o-mini");
        let client = OpenAiClient::new(config).unwrap();
        let llm = HealthLayer::new().record_content(1024).layer(client);
        let req = LlmRequest::new(
            "sess-2",
            "trader",
            vec![Message::user("what is the price of XYZ?")],
        );
        llm.clone().oneshot(req.clone()).await.unwrap();
        server.set_default(HttpReply::status(500));
        assert!(llm.oneshot(req).await.is_err());
    });
    let spans = cap.spans();
    let chats: Vec<&SpanRec> = spans.iter().filter(|s| s.name == "chat").collect();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0].get("gen_ai.prompt"), Some("what is the price of XYZ?"));
    assert_eq!(chats[1].get("error.type"), Some("upstream_server_error"));
    // The client's own span runs inside the health span.
    let client_span = spans.iter().find(|s| s.name == "chat_completion").unwrap();
    assert_eq!(client_span.parent, Some(chats[0].id));
    let mut seen = 0;
    for fields in spans
        .iter()
        .map(|s| &s.fields)
        .chain(cap.events().iter().map(|e| &e.fields))
    {
        for (name, value) in fields {
            seen += 1;
            assert!(!value.contains(KEY), "{name} = {value}");
            assert!(!value.contains("DO-NOT-LEAK"), "{name} = {value}");
        }
    }
    assert!(seen > 20, "only {seen} fields recorded");
}

#[cfg(feature = "otel")]
mod otel {
    use super::*;
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects exported spans in memory.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn spans_are_exported_with_genai_names_and_attributes() {
        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(mantissa::otel::layer(&provider).with_filter(mantissa::otel::default_filter()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            rt.block_on(async {
                let req = LlmRequest::new("sess-3", "trader", vec![Message::user("hi")]).with_tier("low");
                stack().oneshot(req).await.unwrap();
            })
        });
        provider.force_flush().unwrap();
        let spans = spans.0.lock().unwrap().clone();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["chat mock-small", "chat mock-medium", "route low"]);
        let attr = |s: &SpanData, key: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        let (failed, ok, route) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(ok.span_kind, SpanKind::Client);
        assert_eq!(ok.parent_span_id, route.span_context.span_id());
        assert_eq!(failed.parent_span_id, route.span_context.span_id());
        assert_eq!(attr(ok, "gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(attr(ok, "gen_ai.provider.name").as_deref(), Some("mock"));
        assert_eq!(attr(ok, "gen_ai.request.model").as_deref(), Some("mock-medium"));
        assert_eq!(attr(ok, "gen_ai.usage.input_tokens").as_deref(), Some("20"));
        assert_eq!(attr(ok, "gen_ai.usage.output_tokens").as_deref(), Some("5"));
        assert_eq!(attr(ok, "gen_ai.conversation.id").as_deref(), Some("sess-3"));
        assert_eq!(
            attr(failed, "error.type").as_deref(),
            Some("upstream_server_error")
        );
        assert!(matches!(
            failed.status,
            opentelemetry::trace::Status::Error { .. }
        ));
        assert_eq!(attr(route, "mantissa.fallback.attempts").as_deref(), Some("2"));
        // The attempts are span events of the route span.
        assert_eq!(route.events.len(), 2);
    }
}

#[test]
fn a_context_reset_is_an_event_on_the_callers_span() {
    use mantissa::reset::ContextReset;
    use tower::Service;

    let cap = Capture::default();
    cap.run(async {
        let model = service_fn(|req: LlmRequest| async move {
            let n = req.messages().len() as u64;
            Ok::<_, BoxError>(LlmResponse::new(
                "m",
                Message::assistant("ok"),
                Usage::new(n * 10, 2),
            ))
        });
        use mantissa::reset::{BrittlenessPolicy, Stage, StagePlan, Trigger};
        // Turns only warn by default: give them a compaction stage.
        let policy =
            BrittlenessPolicy::default().stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize));
        let mut svc = mantissa::ResetLayer::new().policy(policy).layer(model);
        let mut history = vec![Message::system("You are a trader.")];
        let mut resets = 0;
        for turn in 1..=50 {
            history.push(Message::user(format!("turn {turn}")));
            let req = LlmRequest::new("s1", "trader", history.clone());
            let span = tracing::info_span!("turn", n = turn);
            let resp = svc
                .ready()
                .await
                .unwrap()
                .call(req)
                .instrument(span)
                .await
                .unwrap();
            resets += usize::from(ContextReset::of(&resp).is_some());
            history.push(resp.message);
        }
        assert_eq!(resets, 1);
    });
    let reset = cap
        .events()
        .into_iter()
        .find(|e| e.fields.contains_key("mantissa.reset.reason"))
        .unwrap();
    let turn_50 = cap
        .spans()
        .into_iter()
        .find(|s| s.name == "turn" && s.get("n") == Some("50"))
        .unwrap();
    assert_eq!(reset.parent, Some(turn_50.id));
    assert_eq!(reset.fields["mantissa.reset.reason"], "turns");
    assert_eq!(reset.fields["mantissa.reset.strategy"], "trim");
    let before: u64 = reset.fields["mantissa.reset.tokens_before"].parse().unwrap();
    let after: u64 = reset.fields["mantissa.reset.tokens_after"].parse().unwrap();
    assert!(after < before, "{after} < {before}");
}
