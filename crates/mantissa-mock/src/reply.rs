//! Scripted outcomes: what the mock answers to one call.

use std::time::Duration;

use mantissa_core::{BoxError, Cancelled, FailureClass, FinishReason, LlmError, ToolCall, Usage};

/// A failure the mock returns, as a [`LlmError`] with a realistic HTTP status.
///
/// Built from a [`FailureClass`] (`MockFailure::from(FailureClass::UpstreamServer)`)
/// it gets the status a real provider would send: 429 for rate limits (with
/// `retry_after` kept in the class), 500 for server errors, 400 for client
/// errors and context-length errors, none for timeouts, transport failures and
/// invalid responses. Use [`MockFailure::with_status`] for others (503, 502, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockFailure {
    class: FailureClass,
    status: Option<u16>,
    message: String,
}

impl MockFailure {
    /// A failure of `class` with the default status and message of that class.
    pub fn new(class: FailureClass) -> Self {
        let (status, message) = match class {
            FailureClass::Timeout => (None, "mock: request timed out"),
            FailureClass::RateLimited { .. } => (
                Some(429),
                "mock: rate limit reached for requests, please retry later",
            ),
            FailureClass::UpstreamServer => {
                (Some(500), "mock: the server had an error processing the request")
            }
            FailureClass::Transport => (None, "mock: connection reset by peer"),
            FailureClass::InvalidResponse => (None, "mock: response had no choices"),
            FailureClass::ContextLengthExceeded => (
                Some(400),
                "mock: this model's maximum context length was exceeded by the messages",
            ),
            FailureClass::ClientError => (Some(400), "mock: invalid request"),
            FailureClass::ToolError => (None, "mock: tool failed"),
            FailureClass::Cancelled => (None, "mock: call cancelled"),
            FailureClass::Other => (None, "mock: unclassified failure"),
        };
        Self {
            class,
            status,
            message: message.to_owned(),
        }
    }

    /// A failure for an HTTP `status`, classified the way an OpenAI-compatible
    /// client would: 429 → rate limited, 5xx → upstream server error, 408 →
    /// timeout, other 4xx → client error, anything else → other.
    pub fn http(status: u16) -> Self {
        let class = match status {
            429 => FailureClass::RateLimited { retry_after: None },
            408 => FailureClass::Timeout,
            500..=599 => FailureClass::UpstreamServer,
            400..=499 => FailureClass::ClientError,
            _ => FailureClass::Other,
        };
        Self::new(class).with_status(status)
    }

    /// Replaces the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// The failure class.
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// The HTTP status, if the failure has one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The error the mock returns: a [`LlmError`] (a transport failure carries
    /// an `io::Error` of kind `ConnectionReset` as its source), or
    /// [`Cancelled`] for [`FailureClass::Cancelled`].
    pub fn to_error(&self) -> BoxError {
        if self.class == FailureClass::Cancelled {
            return Box::new(Cancelled);
        }
        let mut err = LlmError::new(self.class, self.message.clone());
        if let Some(status) = self.status {
            err = err.with_status(status);
        }
        if self.class == FailureClass::Transport {
            err = err.with_source(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            ));
        }
        Box::new(err)
    }
}

impl From<FailureClass> for MockFailure {
    fn from(class: FailureClass) -> Self {
        Self::new(class)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    Message {
        text: Option<String>,
        calls: Vec<ToolCall>,
    },
    Fail(MockFailure),
}

/// One scripted outcome of an LLM call: a text reply, a tool-call reply or a
/// failure, with optional exact usage, latency and stream cut.
///
/// ```
/// use std::time::Duration;
/// use mantissa_core::{FailureClass, Usage};
/// use mantissa_mock::MockReply;
///
/// let hello = MockReply::text("hello").with_usage(Usage::new(12, 1));
/// let call = MockReply::tool_call("call_1", "get_market_price", serde_json::json!({"symbol": "ACME"}));
/// let limited = MockReply::rate_limited(Some(Duration::from_secs(2)));
/// let unavailable = MockReply::http_error(503);
/// assert!(limited.is_failure() && !hello.is_failure() && !call.is_failure());
/// assert_eq!(unavailable.as_failure().unwrap().class(), FailureClass::UpstreamServer);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReply {
    pub(crate) kind: ReplyKind,
    pub(crate) usage: Option<Usage>,
    pub(crate) latency: Option<Duration>,
    pub(crate) cut_stream_after: Option<usize>,
    pub(crate) finish_reason: Option<FinishReason>,
}

impl MockReply {
    fn of(kind: ReplyKind) -> Self {
        Self {
            kind,
            usage: None,
            latency: None,
            cut_stream_after: None,
            finish_reason: None,
        }
    }

    /// An assistant text reply.
    pub fn text(text: impl Into<String>) -> Self {
        Self::of(ReplyKind::Message {
            text: Some(text.into()),
            calls: Vec::new(),
        })
    }

    /// An assistant reply calling one tool, with arguments given as JSON.
    pub fn tool_call(id: impl Into<String>, name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self::tool_calls(vec![ToolCall::new(id, name, &arguments)])
    }

    /// An assistant reply calling several tools.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        Self::of(ReplyKind::Message { text: None, calls })
    }

    /// Adds (or replaces) text content alongside tool calls or text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        if let ReplyKind::Message { text: t, .. } = &mut self.kind {
            *t = Some(text.into());
        }
        self
    }

    /// A failure (see [`MockFailure`] for the statuses each class gets).
    pub fn failure(failure: impl Into<MockFailure>) -> Self {
        Self::of(ReplyKind::Fail(failure.into()))
    }

    /// A failure for an HTTP status (see [`MockFailure::http`]).
    pub fn http_error(status: u16) -> Self {
        Self::failure(MockFailure::http(status))
    }

    /// HTTP 429 with an optional Retry-After.
    pub fn rate_limited(retry_after: Option<Duration>) -> Self {
        Self::failure(FailureClass::RateLimited { retry_after })
    }

    /// HTTP 500.
    pub fn server_error() -> Self {
        Self::failure(FailureClass::UpstreamServer)
    }

    /// HTTP 400, `context_length_exceeded`.
    pub fn context_length_exceeded() -> Self {
        Self::failure(FailureClass::ContextLengthExceeded)
    }

    /// HTTP 400, an invalid request.
    pub fn client_error(message: impl Into<String>) -> Self {
        Self::failure(MockFailure::new(FailureClass::ClientError).with_message(message))
    }

    /// A timeout (no status).
    pub fn timeout() -> Self {
        Self::failure(FailureClass::Timeout)
    }

    /// A transport failure (connection reset).
    pub fn transport() -> Self {
        Self::failure(FailureClass::Transport)
    }

    /// An invalid (unusable) response.
    pub fn invalid_response() -> Self {
        Self::failure(FailureClass::InvalidResponse)
    }

    /// Reports exactly this usage instead of estimating it.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Answers after this latency instead of the model's configured latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    /// When streamed, yields `chunks` chunks and then a transport error
    /// (a connection dropped mid-stream).
    pub fn cut_stream_after(mut self, chunks: usize) -> Self {
        self.cut_stream_after = Some(chunks);
        self
    }

    /// Overrides the finish reason (defaults to `stop`, or `tool_calls` when
    /// the reply calls tools).
    pub fn with_finish_reason(mut self, reason: FinishReason) -> Self {
        self.finish_reason = Some(reason);
        self
    }

    /// Whether this reply is a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self.kind, ReplyKind::Fail(_))
    }

    /// The failure, if this reply is one.
    pub fn as_failure(&self) -> Option<&MockFailure> {
        match &self.kind {
            ReplyKind::Fail(f) => Some(f),
            ReplyKind::Message { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::classify_box;

    #[test]
    fn failures_carry_realistic_statuses() {
        let cases = [
            (MockReply::rate_limited(Some(Duration::from_secs(3))), Some(429)),
            (MockReply::server_error(), Some(500)),
            (MockReply::http_error(503), Some(503)),
            (MockReply::context_length_exceeded(), Some(400)),
            (MockReply::client_error("bad"), Some(400)),
            (MockReply::timeout(), None),
            (MockReply::transport(), None),
            (MockReply::invalid_response(), None),
        ];
        for (reply, status) in cases {
            let failure = reply.as_failure().unwrap();
            let err = failure.to_error();
            let llm = err.downcast_ref::<LlmError>().unwrap();
            assert_eq!(llm.status(), status, "{failure:?}");
            assert_eq!(classify_box(&err), failure.class());
        }
        let err = MockFailure::new(FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
        })
        .to_error();
        assert_eq!(
            classify_box(&err),
            FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            classify_box(&MockFailure::new(FailureClass::Cancelled).to_error()),
            FailureClass::Cancelled
        );
    }

    #[test]
    fn http_statuses_classify() {
        assert_eq!(
            MockFailure::http(429).class(),
            FailureClass::RateLimited { retry_after: None }
        );
        assert_eq!(MockFailure::http(502).class(), FailureClass::UpstreamServer);
        assert_eq!(MockFailure::http(404).class(), FailureClass::ClientError);
        assert_eq!(MockFailure::http(408).class(), FailureClass::Timeout);
        assert_eq!(MockFailure::http(302).class(), FailureClass::Other);
    }
}
