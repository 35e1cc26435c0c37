//! What the health layer needs to know about the calls it wraps: the request
//! types it accepts ([`ObservedRequest`]) and how their errors are classified
//! ([`Classify`]).

use std::convert::Infallible;

use tokio::time::Instant;

use mantissa_core::{
    AgentName, BoxError, CallContext, Cancelled, ChunkStream, EventKind, FailureClass, LlmError, LlmRequest,
    LlmResponse, ModelId, SessionId, Tier, ToolRequest, ToolResponse, Usage, classify,
};

mod sealed {
    /// Seals [`ObservedRequest`](super::ObservedRequest): only the two request
    /// types of `mantissa-core` implement it.
    #[allow(unreachable_pub)] // the sealed-trait pattern: public but unnameable
    pub trait Sealed {}

    impl Sealed for mantissa_core::LlmRequest {}
    impl Sealed for mantissa_core::ToolRequest {}
}

/// A request type the [`Health`](crate::Health) service can observe:
/// [`LlmRequest`] (with [`LlmResponse`]) and [`ToolRequest`] (with
/// [`ToolResponse`]). Sealed; the methods are the layer's internal view of a call.
pub trait ObservedRequest: sealed::Sealed + Send + 'static {
    /// The response type of services that take this request.
    type Response: Send + 'static;

    /// `Llm` or `Tool`.
    #[doc(hidden)]
    const KIND: EventKind;

    /// The calling agent.
    #[doc(hidden)]
    fn agent(&self) -> &AgentName;

    /// The session (never a label).
    #[doc(hidden)]
    fn session(&self) -> &SessionId;

    /// The requested model (LLM) or the tool name (tool).
    #[doc(hidden)]
    fn subject(&self) -> Option<&str>;

    /// The requested tier, if decided.
    #[doc(hidden)]
    fn tier(&self) -> Option<&Tier>;

    /// The call context a catalog resolved (LLM calls; `None` for tools,
    /// whose series are found by name).
    #[doc(hidden)]
    fn context(&self) -> Option<&CallContext>;

    #[doc(hidden)]
    /// When the stack began timing the call ([`CallContext::started`]).
    fn started(&self) -> Option<Instant> {
        self.context().and_then(|c| c.started)
    }

    #[doc(hidden)]
    /// When an inner layer saw the answer ([`LlmResponse::answered_at`]).
    fn answered_at(_resp: &Self::Response) -> Option<Instant> {
        None
    }

    #[doc(hidden)]
    /// Stamps when the answer was seen, for the layers outside.
    fn set_answered_at(_resp: &mut Self::Response, _at: Option<Instant>) {}

    /// A failure the response reports although the call returned `Ok`.
    #[doc(hidden)]
    fn response_failure(resp: &Self::Response) -> Option<FailureClass>;

    /// Usage reported by a complete response.
    #[doc(hidden)]
    fn usage(resp: &Self::Response) -> Usage;

    /// The model that served the call, for LLM responses.
    #[doc(hidden)]
    fn response_model(resp: &Self::Response) -> Option<&ModelId>;

    /// Takes the streaming body out of the response, if any.
    #[doc(hidden)]
    fn take_stream(resp: &mut Self::Response) -> Option<ChunkStream>;

    /// Puts a (wrapped) streaming body back.
    #[doc(hidden)]
    fn put_stream(resp: &mut Self::Response, stream: ChunkStream);
}

impl ObservedRequest for LlmRequest {
    type Response = LlmResponse;
    const KIND: EventKind = EventKind::Llm;

    fn agent(&self) -> &AgentName {
        &self.agent
    }

    fn session(&self) -> &SessionId {
        &self.session
    }

    fn subject(&self) -> Option<&str> {
        self.model.as_ref().map(ModelId::as_str)
    }

    fn tier(&self) -> Option<&Tier> {
        self.tier.as_ref()
    }

    fn context(&self) -> Option<&CallContext> {
        Some(&self.ctx)
    }

    fn response_failure(_: &LlmResponse) -> Option<FailureClass> {
        None
    }

    fn usage(resp: &LlmResponse) -> Usage {
        resp.usage
    }

    fn response_model(resp: &LlmResponse) -> Option<&ModelId> {
        Some(&resp.model)
    }

    fn answered_at(resp: &LlmResponse) -> Option<Instant> {
        resp.answered_at
    }

    fn set_answered_at(resp: &mut LlmResponse, at: Option<Instant>) {
        resp.answered_at = at;
    }

    fn take_stream(resp: &mut LlmResponse) -> Option<ChunkStream> {
        resp.stream.take()
    }

    fn put_stream(resp: &mut LlmResponse, stream: ChunkStream) {
        resp.stream = Some(stream);
    }
}

impl ObservedRequest for ToolRequest {
    type Response = ToolResponse;
    const KIND: EventKind = EventKind::Tool;

    fn agent(&self) -> &AgentName {
        &self.agent
    }

    fn session(&self) -> &SessionId {
        &self.session
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn tier(&self) -> Option<&Tier> {
        None
    }

    fn context(&self) -> Option<&CallContext> {
        None
    }

    fn response_failure(resp: &ToolResponse) -> Option<FailureClass> {
        resp.is_error.then_some(FailureClass::ToolError)
    }

    fn usage(_: &ToolResponse) -> Usage {
        Usage::default()
    }

    fn response_model(_: &ToolResponse) -> Option<&ModelId> {
        None
    }

    fn take_stream(_: &mut ToolResponse) -> Option<ChunkStream> {
        None
    }

    fn put_stream(_: &mut ToolResponse, _: ChunkStream) {}
}

/// Errors the health layer can put into a [`FailureClass`].
///
/// Implemented for [`BoxError`] (classified by walking its `source()` chain
/// with [`mantissa_core::classify`]) and for the concrete error types that
/// `classify` knows. A service with its own error type implements this in one
/// line, usually by calling [`classify`].
///
/// A failing *tool* service (`Err`) is counted as
/// [`FailureClass::ToolError`] unless its error classifies as a timeout or a
/// cancellation, just like a [`ToolResponse`] with `is_error: true`.
pub trait Classify {
    /// The failure class of this error.
    fn failure_class(&self) -> FailureClass;
}

impl Classify for BoxError {
    fn failure_class(&self) -> FailureClass {
        classify(&**self)
    }
}

impl Classify for Box<dyn std::error::Error + Send + 'static> {
    fn failure_class(&self) -> FailureClass {
        classify(&**self)
    }
}

impl Classify for LlmError {
    fn failure_class(&self) -> FailureClass {
        self.class()
    }
}

impl Classify for Cancelled {
    fn failure_class(&self) -> FailureClass {
        FailureClass::Cancelled
    }
}

impl Classify for std::io::Error {
    fn failure_class(&self) -> FailureClass {
        classify(self)
    }
}

impl Classify for Infallible {
    fn failure_class(&self) -> FailureClass {
        match *self {}
    }
}

/// The class of a failed call of `kind`: tool services' own errors are tool
/// errors unless they are timeouts or cancellations.
pub(crate) fn class_for(kind: EventKind, class: FailureClass) -> FailureClass {
    match (kind, class) {
        (EventKind::Tool, FailureClass::Timeout | FailureClass::Cancelled) => class,
        (EventKind::Tool, _) => FailureClass::ToolError,
        _ => class,
    }
}
