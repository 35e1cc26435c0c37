//! The `tracing` span of each observed call, named and attributed after the
//! OpenTelemetry GenAI semantic conventions (see the crate docs, "Traces").
//!
//! Everything here is cheap when no subscriber wants the span: the span is
//! created with the static fields only, and every later `record` first checks
//! [`Span::is_disabled`], so no field value is formatted and nothing is
//! allocated for a disabled span.

use std::any::Any;
use std::fmt;

use mantissa_core::{Chunk, FailureClass, LlmRequest, LlmResponse, Role, ToolRequest, Usage, truncate_str};
use tracing::Span;
use tracing::field::{Empty, display};

/// The `target` of the spans this crate opens (filter on it, e.g.
/// `RUST_LOG=mantissa_health=info`).
pub(crate) const TARGET: &str = "mantissa_health";

/// What the spans record beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TraceSettings {
    /// Record the latest user message and the completion, truncated to this
    /// many bytes (on a char boundary). `None`: no message content.
    pub(crate) content: Option<usize>,
}

/// Opens the span of one call. `model` is the model the call is known to
/// target before it goes out (the request's, else the layer's fixed model);
/// `provider` its catalog provider.
pub(crate) fn open<R: Any>(req: &R, model: Option<&str>, provider: &str, settings: TraceSettings) -> Span {
    let any = req as &dyn Any;
    if let Some(req) = any.downcast_ref::<LlmRequest>() {
        open_chat(req, model, provider, settings)
    } else if let Some(req) = any.downcast_ref::<ToolRequest>() {
        open_tool(req)
    } else {
        Span::none()
    }
}

fn open_chat(req: &LlmRequest, model: Option<&str>, provider: &str, settings: TraceSettings) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "chat",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.agent.name = Empty,
        gen_ai.conversation.id = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        error.type = Empty,
        mantissa.tier = Empty,
        gen_ai.prompt = Empty,
        gen_ai.completion = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    match model {
        Some(m) => {
            span.record("otel.name", display(format_args!("chat {m}")));
            span.record("gen_ai.request.model", m);
        }
        None => {
            span.record("otel.name", "chat");
        }
    }
    span.record("gen_ai.provider.name", provider);
    span.record("gen_ai.agent.name", req.agent.as_str());
    span.record("gen_ai.conversation.id", req.session.as_str());
    if let Some(tier) = &req.tier {
        span.record("mantissa.tier", tier.as_str());
    }
    if let Some(max) = settings.content {
        let prompt = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.text());
        span.record("gen_ai.prompt", truncate_str(prompt, max));
    }
    span
}

fn open_tool(req: &ToolRequest) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "execute_tool",
        otel.name = Empty,
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = Empty,
        gen_ai.tool.call.id = Empty,
        gen_ai.agent.name = Empty,
        gen_ai.conversation.id = Empty,
        error.type = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    span.record("otel.name", display(format_args!("execute_tool {}", req.name)));
    span.record("gen_ai.tool.name", req.name.as_str());
    span.record("gen_ai.tool.call.id", req.call_id.as_str());
    span.record("gen_ai.agent.name", req.agent.as_str());
    span.record("gen_ai.conversation.id", req.session.as_str());
    span
}

/// Records what a complete (or streaming) response says about itself: the
/// serving model, the finish reason and, when opted in, the completion.
pub(crate) fn record_response<T: Any>(span: &Span, resp: &T, settings: TraceSettings) {
    if span.is_disabled() {
        return;
    }
    let Some(resp) = (resp as &dyn Any).downcast_ref::<LlmResponse>() else {
        return;
    };
    span.record("gen_ai.response.model", resp.model.as_str());
    if let Some(reason) = &resp.finish_reason {
        span.record("gen_ai.response.finish_reasons", reason.as_str());
    }
    if let (Some(max), None) = (settings.content, &resp.stream) {
        span.record("gen_ai.completion", truncate_str(resp.message.text(), max));
    }
}

/// Records the end of a call: usage (LLM calls that report it) and the
/// failure class (`error.type`; an `ERROR` status unless cancelled).
pub(crate) fn record_end(span: &Span, failure: Option<FailureClass>, usage: Usage, llm: bool) {
    if span.is_disabled() {
        return;
    }
    if llm && usage.total() > 0 {
        span.record("gen_ai.usage.input_tokens", usage.input_tokens);
        span.record("gen_ai.usage.output_tokens", usage.output_tokens);
    }
    if let Some(class) = failure {
        span.record("error.type", class.as_str());
        if class != FailureClass::Cancelled {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// What a streamed body tells the span as it goes: the finish reason and,
/// when opted in, the completion text (up to the configured size).
#[derive(Default)]
pub(crate) struct StreamTrace {
    completion: Option<String>,
    max: usize,
}

impl fmt::Debug for StreamTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamTrace")
            .field("completion_bytes", &self.completion.as_ref().map(String::len))
            .finish()
    }
}

impl StreamTrace {
    pub(crate) fn new(span: &Span, settings: TraceSettings) -> Self {
        match settings.content {
            Some(max) if !span.is_disabled() => Self {
                completion: Some(String::new()),
                max,
            },
            _ => Self::default(),
        }
    }

    pub(crate) fn chunk(&mut self, span: &Span, chunk: &Chunk) {
        if span.is_disabled() {
            return;
        }
        if let Some(reason) = &chunk.finish_reason {
            span.record("gen_ai.response.finish_reasons", reason.as_str());
        }
        if let (Some(buf), Some(text)) = (&mut self.completion, &chunk.content) {
            let room = self.max.saturating_sub(buf.len());
            buf.push_str(truncate_str(text, room));
        }
    }

    pub(crate) fn end(&mut self, span: &Span) {
        if let Some(buf) = self.completion.take() {
            span.record("gen_ai.completion", buf.as_str());
        }
    }
}
