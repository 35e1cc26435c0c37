//! The router's `route` span, captured with a recording `tracing`
//! subscriber: triage attributes, the fallback path as attempt events, and
//! each attempt's inner spans as children of the route span.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mantissa_core::{BoxError, FailureClass, LlmError, LlmRequest, LlmResponse, Message, TierSet, Usage};
use tower::{ServiceExt, service_fn};
use tracing::Instrument;

use super::{ModelService, TierRouter};
use crate::{TierDecision, TriageReason};

/// A `tracing` subscriber that records spans (name, fields, parent, whether
/// closed) and events (fields, parent) for assertions. The current span is
/// tracked per thread: use it on a current-thread runtime.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
pub(crate) struct Captured {
    spans: Vec<SpanRec>,
    events: Vec<EventRec>,
    stack: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct SpanRec {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
    refs: usize,
    closed: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct EventRec {
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut c = self.0.lock().unwrap();
        let id = c.spans.len() as u64 + 1;
        let parent = if attrs.is_root() {
            None
        } else if let Some(p) = attrs.parent() {
            Some(p.into_u64())
        } else {
            c.stack.last().copied()
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        c.spans.push(SpanRec {
            id,
            name: attrs.metadata().name(),
            parent,
            fields,
            refs: 1,
            closed: false,
        });
        tracing::span::Id::from_u64(id)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut c = self.0.lock().unwrap();
        let s = &mut c.spans[span.into_u64() as usize - 1];
        values.record(&mut Fields(&mut s.fields));
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut c = self.0.lock().unwrap();
        let parent = if event.is_root() {
            None
        } else if let Some(p) = event.parent() {
            Some(p.into_u64())
        } else {
            c.stack.last().copied()
        };
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        c.events.push(EventRec { parent, fields });
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.0.lock().unwrap().stack.push(span.into_u64());
    }

    fn exit(&self, span: &tracing::span::Id) {
        let mut c = self.0.lock().unwrap();
        if let Some(pos) = c.stack.iter().rposition(|s| *s == span.into_u64()) {
            c.stack.remove(pos);
        }
    }

    fn clone_span(&self, span: &tracing::span::Id) -> tracing::span::Id {
        self.0.lock().unwrap().spans[span.into_u64() as usize - 1].refs += 1;
        span.clone()
    }

    fn try_close(&self, span: tracing::span::Id) -> bool {
        let mut c = self.0.lock().unwrap();
        let s = &mut c.spans[span.into_u64() as usize - 1];
        s.refs -= 1;
        s.closed = s.refs == 0;
        s.closed
    }
}

impl Capture {
    fn spans(&self) -> Vec<SpanRec> {
        self.0.lock().unwrap().spans.clone()
    }

    fn events(&self) -> Vec<EventRec> {
        self.0.lock().unwrap().events.clone()
    }

    /// The only span named `name`.
    fn span(&self, name: &str) -> SpanRec {
        let found: Vec<_> = self.spans().into_iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "spans named {name}: {found:?}");
        found.into_iter().next().unwrap()
    }

    /// Runs `f` on a current-thread runtime with this subscriber as the default.
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(self.clone(), || rt.block_on(f))
    }
}

impl SpanRec {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

/// A model that opens its own span (as a health layer would) and fails
/// with a 503 or answers.
fn model(ok: bool) -> ModelService {
    tower::util::BoxCloneSyncService::new(service_fn(move |req: LlmRequest| {
        let model = req.model.clone().unwrap();
        let span = tracing::info_span!("model_call", model = model.as_str());
        async move {
            if ok {
                Ok(LlmResponse::new(
                    model,
                    Message::assistant("ok"),
                    Usage::default(),
                ))
            } else {
                Err::<LlmResponse, BoxError>(
                    LlmError::new(FailureClass::UpstreamServer, "down")
                        .with_status(503)
                        .into(),
                )
            }
        }
        .instrument(span)
    }))
}

fn router(small_ok: bool) -> TierRouter {
    TierRouter::builder(TierSet::default())
        .model("mock-small", model(small_ok))
        .model("mock-medium", model(true))
        .model("mock-large", model(true))
        .build()
        .unwrap()
}

#[test]
fn route_span_shows_the_fallback_path() {
    let cap = Capture::default();
    cap.run(async {
        let mut req = LlmRequest::new("s-9", "trader", vec![Message::user("hi")]).with_tier("low");
        req.extensions
            .insert(TierDecision::new("low", 0.25, TriageReason::Rules));
        let resp = router(false)
            .oneshot(req)
            .instrument(tracing::info_span!("caller"))
            .await
            .unwrap();
        assert_eq!(resp.model.as_str(), "mock-medium");
    });
    let caller = cap.span("caller");
    let route = cap.span("route");
    assert_eq!(route.parent, Some(caller.id));
    assert!(route.closed);
    assert_eq!(route.get("otel.name"), Some("route low"));
    assert_eq!(route.get("mantissa.tier.requested"), Some("low"));
    assert_eq!(route.get("mantissa.triage.score"), Some("0.25"));
    assert_eq!(route.get("mantissa.triage.reason"), Some("rules"));
    assert_eq!(route.get("mantissa.fallback.attempts"), Some("2"));
    assert_eq!(route.get("mantissa.tier"), Some("medium"));
    assert_eq!(route.get("gen_ai.response.model"), Some("mock-medium"));
    assert_eq!(route.get("gen_ai.agent.name"), Some("trader"));
    assert_eq!(route.get("gen_ai.conversation.id"), Some("s-9"));
    assert_eq!(route.get("error.type"), None);

    // Each attempt's own span is a child of the route span, in order.
    let calls: Vec<SpanRec> = cap
        .spans()
        .into_iter()
        .filter(|s| s.name == "model_call")
        .collect();
    let models: Vec<_> = calls.iter().map(|s| s.get("model").unwrap().to_owned()).collect();
    assert_eq!(models, ["mock-small", "mock-medium"]);
    assert!(calls.iter().all(|s| s.parent == Some(route.id)));

    // One event per attempt, with the model and the outcome.
    let attempts: Vec<EventRec> = cap
        .events()
        .into_iter()
        .filter(|e| e.fields.contains_key("mantissa.fallback.attempt"))
        .collect();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|e| e.parent == Some(route.id)));
    let first = &attempts[0].fields;
    assert_eq!(first["mantissa.fallback.attempt"], "1");
    assert_eq!(first["gen_ai.request.model"], "mock-small");
    assert_eq!(first["outcome"], "error");
    assert_eq!(first["error.type"], "upstream_server_error");
    let second = &attempts[1].fields;
    assert_eq!(second["mantissa.fallback.attempt"], "2");
    assert_eq!(second["gen_ai.request.model"], "mock-medium");
    assert_eq!(second["outcome"], "success");
    assert!(!second.contains_key("error.type"));
}

#[test]
fn route_span_records_the_final_failure_and_cancellation() {
    let cap = Capture::default();
    cap.run(async {
        // Only the requested tier, which fails.
        let r = TierRouter::builder(TierSet::default())
            .model("mock-small", model(false))
            .model("mock-medium", model(true))
            .model("mock-large", model(true))
            .fallback_order(super::FallbackOrder::SameTier)
            .build()
            .unwrap();
        let err = r
            .oneshot(LlmRequest::new("s", "a", vec![Message::user("hi")]))
            .await
            .unwrap_err();
        assert_eq!(mantissa_core::classify_box(&err), FailureClass::UpstreamServer);

        // A hanging model, cancelled by the caller.
        let hang = tower::util::BoxCloneSyncService::new(service_fn(|_req: LlmRequest| {
            std::future::pending::<Result<LlmResponse, BoxError>>()
        }));
        let r = TierRouter::builder(TierSet::default())
            .model("mock-small", hang)
            .model("mock-medium", model(true))
            .model("mock-large", model(true))
            .build()
            .unwrap();
        let call = r.oneshot(LlmRequest::new("s", "a", vec![Message::user("hi")]));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(1), call)
                .await
                .is_err()
        );
    });
    let routes: Vec<SpanRec> = cap.spans().into_iter().filter(|s| s.name == "route").collect();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].get("error.type"), Some("upstream_server_error"));
    assert_eq!(routes[0].get("otel.status_code"), Some("ERROR"));
    assert_eq!(routes[0].get("mantissa.fallback.attempts"), Some("1"));
    assert_eq!(routes[1].get("error.type"), Some("cancelled"));
    assert_eq!(routes[1].get("otel.status_code"), None);
    assert!(routes.iter().all(|r| r.closed));
}
