//! Error types of the client.
//!
//! Every error the client returns (from the service call or through a chunk
//! stream) is a [`LlmError`](mantissa_core::LlmError) that carries its
//! [`FailureClass`](mantissa_core::FailureClass), the HTTP status when there was
//! one, and the provider's message. Its `source()` is one of the small types in
//! this module, whose own `source()` is the transport error when there was one,
//! so `mantissa_core::classify` and `err.downcast_ref` both work. The API key
//! never appears in any of them: a provider that echoes it gets it replaced
//! with `[REDACTED]` in the message and in every source.
//!
//! | source type | class |
//! |---|---|
//! | [`ApiError`] (429) | `RateLimited { retry_after }`, with [`ApiError::rate_limit`] |
//! | [`ApiError`] (5xx) | `UpstreamServer` |
//! | [`ApiError`] (4xx, context length) | `ContextLengthExceeded` |
//! | [`ApiError`] (other 4xx) | `ClientError` (408 is `Timeout`) |
//! | [`TimeoutError`] | `Timeout`, with its [`TimeoutKind`] |
//! | [`TransportError`] | `Transport` |
//! | [`InvalidResponse`] | `InvalidResponse` |

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use mantissa_core::BoxError;

use crate::ratelimit::RateLimit;

/// Why building a client or its configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL does not parse or is not `http`/`https`.
    #[error("invalid base url `{url}`: {reason}")]
    InvalidBaseUrl {
        /// The rejected URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An extra header has an invalid name or value.
    #[error("invalid header `{name}`: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The API key cannot be sent in an HTTP header (the key itself is never shown).
    #[error("invalid api key: it contains characters not allowed in an http header")]
    InvalidApiKey,
    /// A required environment variable is not set (or not unicode).
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// A size or duration that must be positive is zero.
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    /// The HTTP client could not be built (for example the TLS backend failed).
    #[error("cannot build the http client")]
    Http(#[source] reqwest::Error),
}

/// Which of the client's timeouts elapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Establishing the TCP (and TLS) connection took too long.
    Connect,
    /// The whole call, including reading a streamed body to its end, took too long.
    Total,
    /// A streamed response produced no chunk in time after the request was sent.
    FirstChunk,
    /// A response body went silent for too long between two reads.
    Idle,
}

impl TimeoutKind {
    /// A stable snake_case name: `connect`, `total`, `first_chunk`, `idle`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Total => "total",
            TimeoutKind::FirstChunk => "first_chunk",
            TimeoutKind::Idle => "idle",
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Total => "total",
            TimeoutKind::FirstChunk => "first chunk",
            TimeoutKind::Idle => "idle",
        })
    }
}

/// One of the client's timeouts elapsed. Classified as `FailureClass::Timeout`.
#[derive(Debug)]
pub struct TimeoutError {
    kind: TimeoutKind,
    after: Duration,
    pub(crate) source: Option<BoxError>,
}

impl TimeoutError {
    pub(crate) fn new(kind: TimeoutKind, after: Duration) -> Self {
        Self {
            kind,
            after,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Which timeout elapsed.
    pub fn kind(&self) -> TimeoutKind {
        self.kind
    }

    /// The configured duration that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} timeout elapsed after {:?}", self.kind, self.after)
    }
}

impl StdError for TimeoutError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The connection failed, was refused or dropped. Classified as
/// `FailureClass::Transport`; the underlying `reqwest`/`hyper`/`io` error is
/// its source.
#[derive(Debug)]
pub struct TransportError {
    what: &'static str,
    pub(crate) source: Option<BoxError>,
}

impl TransportError {
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, source: None }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// What was wrong with a response the client could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidResponseKind {
    /// The body is not the JSON the API specifies.
    MalformedJson,
    /// The completion has no choices (`choices` missing, `null` or empty).
    NoChoices,
    /// The first choice has no message (`message` missing or `null`).
    NoMessage,
    /// The usage holds a token count that is not a non-negative integer of at
    /// most [`MAX_USAGE_TOKENS`](crate::MAX_USAGE_TOKENS).
    InvalidUsage,
    /// The body is larger than the configured cap.
    BodyTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// An SSE line or event is larger than the configured cap.
    LineTooLong {
        /// The cap in bytes.
        limit: usize,
    },
    /// A stream ended (cleanly) without `data: [DONE]` or a finish reason.
    StreamIncomplete,
    /// The status code is not one the API uses for a completion (for example a redirect).
    UnexpectedStatus,
}

/// The provider answered with something the client cannot use. Classified as
/// `FailureClass::InvalidResponse`.
#[derive(Debug)]
pub struct InvalidResponse {
    kind: InvalidResponseKind,
    pub(crate) detail: String,
    pub(crate) source: Option<BoxError>,
}

impl InvalidResponse {
    pub(crate) fn new(kind: InvalidResponseKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What was wrong.
    pub fn kind(&self) -> &InvalidResponseKind {
        &self.kind
    }

    /// This error as the `LlmError` the client returns, classified
    /// `InvalidResponse`, with its detail as the message.
    pub(crate) fn into_llm_error(self) -> mantissa_core::LlmError {
        mantissa_core::LlmError::new(mantissa_core::FailureClass::InvalidResponse, self.detail.clone())
            .with_source(self)
    }
}

impl fmt::Display for InvalidResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl StdError for InvalidResponse {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// An error response from the provider: its status, its own message, and the
/// parts of its error object and headers a caller may act on.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub(crate) status: u16,
    pub(crate) message: String,
    pub(crate) error_type: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) param: Option<String>,
    pub(crate) body: String,
    pub(crate) request_id: Option<String>,
    pub(crate) rate_limit: Option<RateLimit>,
}

impl ApiError {
    /// The HTTP status (200 for an error object inside a successful response or a stream).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The provider's message (`error.message`), or the start of the body when
    /// the body is not an error object.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `error.type`, if the provider sent one.
    pub fn error_type(&self) -> Option<&str> {
        self.error_type.as_deref()
    }

    /// `error.code`, if the provider sent one (numbers are rendered as strings).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// `error.param`, if the provider sent one.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The raw error body (at most the configured error-body cap, lossily
    /// decoded), with the API key replaced by `[REDACTED]`.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The provider's request id (`x-request-id`), if it sent one.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// `Retry-After` and `x-ratelimit-*` headers, on a 429 response.
    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.rate_limit.as_ref()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "provider error (status {}): {}", self.status, self.message)
    }
}

impl StdError for ApiError {}

fn walk<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Finds the provider's [`ApiError`] in an error's `source()` chain.
///
/// ```
/// use mantissa_core::{FailureClass, LlmError};
/// let err = LlmError::new(FailureClass::Other, "not from the provider");
/// assert!(mantissa_openai::api_error(&err).is_none());
/// ```
pub fn api_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a ApiError> {
    walk::<ApiError>(err)
}

/// Finds the rate-limit headers of a 429 in an error's `source()` chain.
pub fn rate_limit<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a RateLimit> {
    api_error(err).and_then(ApiError::rate_limit)
}

/// Finds the [`TimeoutError`] (and so which timeout elapsed) in an error's `source()` chain.
pub fn timeout_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a TimeoutError> {
    walk::<TimeoutError>(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::{FailureClass, LlmError, classify};

    #[test]
    fn chain_accessors_find_typed_errors() {
        let api = ApiError {
            status: 429,
            message: "slow down".into(),
            error_type: None,
            code: None,
            param: None,
            body: String::new(),
            request_id: Some("req-1".into()),
            rate_limit: Some(RateLimit::default()),
        };
        let err: BoxError = Box::new(
            LlmError::new(FailureClass::RateLimited { retry_after: None }, "slow down")
                .with_status(429)
                .with_source(api),
        );
        assert!(rate_limit(&*err).is_some());
        assert_eq!(api_error(&*err).map(ApiError::status), Some(429));
        assert_eq!(classify(&*err), FailureClass::RateLimited { retry_after: None });

        let t = LlmError::new(FailureClass::Timeout, "idle")
            .with_source(TimeoutError::new(TimeoutKind::Idle, Duration::from_millis(5)));
        let found = timeout_error(&t).map(TimeoutError::kind);
        assert_eq!(found, Some(TimeoutKind::Idle));
        assert_eq!(
            TimeoutError::new(TimeoutKind::FirstChunk, Duration::from_secs(2)).to_string(),
            "first chunk timeout elapsed after 2s"
        );
    }
}
