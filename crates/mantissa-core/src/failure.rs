//! Failure classes: one vocabulary for what went wrong, shared by the health
//! layer (counts), the router (cooldown and fallback) and the monitor (alerts).
//!
//! Errors are classified by walking their [`source()`](std::error::Error::source)
//! chain with [`classify`]. Crates that produce errors either return an
//! [`LlmError`] (which carries its class), or a type the classifier already
//! knows (timeouts from tower and tokio, `std::io::Error`, `serde_json::Error`).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BoxError;

/// What kind of failure a call ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The call took longer than allowed (total, connect, first chunk or idle).
    Timeout,
    /// The provider asked us to slow down (HTTP 429).
    RateLimited {
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The provider failed (HTTP 5xx).
    UpstreamServer,
    /// The connection failed or dropped.
    Transport,
    /// The provider answered with something we cannot use (malformed JSON,
    /// no choices, a stream cut before its end).
    InvalidResponse,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// The request itself was wrong (HTTP 4xx other than 429).
    ClientError,
    /// A tool failed or reported an error.
    ToolError,
    /// The caller gave up (the future or stream was dropped).
    Cancelled,
    /// Anything unclassified.
    Other,
}

impl FailureClass {
    /// Every class, with `retry_after: None` for [`FailureClass::RateLimited`].
    pub const ALL: [FailureClass; 10] = [
        FailureClass::Timeout,
        FailureClass::RateLimited { retry_after: None },
        FailureClass::UpstreamServer,
        FailureClass::Transport,
        FailureClass::InvalidResponse,
        FailureClass::ContextLengthExceeded,
        FailureClass::ClientError,
        FailureClass::ToolError,
        FailureClass::Cancelled,
        FailureClass::Other,
    ];

    /// The stable snake_case name used as the `error_type` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::RateLimited { .. } => "rate_limited",
            FailureClass::UpstreamServer => "upstream_server_error",
            FailureClass::Transport => "transport",
            FailureClass::InvalidResponse => "invalid_response",
            FailureClass::ContextLengthExceeded => "context_length_exceeded",
            FailureClass::ClientError => "client_error",
            FailureClass::ToolError => "tool_error",
            FailureClass::Cancelled => "cancelled",
            FailureClass::Other => "other",
        }
    }

    /// A dense index in `0..10`, in the order of [`FailureClass::ALL`].
    pub fn index(&self) -> usize {
        match self {
            FailureClass::Timeout => 0,
            FailureClass::RateLimited { .. } => 1,
            FailureClass::UpstreamServer => 2,
            FailureClass::Transport => 3,
            FailureClass::InvalidResponse => 4,
            FailureClass::ContextLengthExceeded => 5,
            FailureClass::ClientError => 6,
            FailureClass::ToolError => 7,
            FailureClass::Cancelled => 8,
            FailureClass::Other => 9,
        }
    }

    /// Whether trying another model may help: server errors, timeouts and
    /// transport failures (and invalid responses). Never client errors or
    /// cancellations. Rate limits are retryable on *another* model.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            FailureClass::Timeout
                | FailureClass::UpstreamServer
                | FailureClass::Transport
                | FailureClass::InvalidResponse
                | FailureClass::RateLimited { .. }
        )
    }

    /// Whether the failure says the model itself is unhealthy and should count
    /// toward its cooldown: 5xx, timeouts and connection errors. Not 429s
    /// (those cool down by their Retry-After instead), not client errors, not
    /// cancellations.
    pub fn counts_toward_cooldown(&self) -> bool {
        matches!(
            self,
            FailureClass::Timeout | FailureClass::UpstreamServer | FailureClass::Transport
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended, for the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed with the given class.
    Failure(FailureClass),
}

impl Outcome {
    /// `success`, `error` or `cancelled`: the bounded `outcome` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(FailureClass::Cancelled) => "cancelled",
            Outcome::Failure(_) => "error",
        }
    }

    /// The failure class, if any.
    pub fn failure(&self) -> Option<FailureClass> {
        match self {
            Outcome::Success => None,
            Outcome::Failure(c) => Some(*c),
        }
    }

    /// Whether the call succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// An error that knows its failure class, with the upstream's status and
/// message kept for the caller.
#[derive(Debug)]
pub struct LlmError {
    class: FailureClass,
    message: String,
    status: Option<u16>,
    source: Option<BoxError>,
}

impl LlmError {
    /// An error of `class` with a human-readable message.
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            status: None,
            source: None,
        }
    }

    /// Attaches the upstream HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Attaches an underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The failure class.
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// The upstream HTTP status, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The message (for upstream errors, the provider's own message).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The underlying error, taken out (to rebuild an error around a
    /// rewritten source, as a client that scrubs secrets does).
    pub fn into_source(self) -> Option<BoxError> {
        self.source
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} (status {status}): {}", self.class, self.message),
            None => write!(f, "{}: {}", self.class, self.message),
        }
    }
}

impl StdError for LlmError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The error of a call whose caller gave up (its future or stream was dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("call cancelled")
    }
}

impl StdError for Cancelled {}

/// Classifies an error by walking its `source()` chain, outermost first; the
/// first link of a known type decides.
///
/// Known types: [`LlmError`] (its own class), [`Cancelled`], tower's and tokio's
/// timeout `Elapsed`, [`std::io::Error`] (timed-out kinds → timeout, connection
/// kinds → transport), and [`serde_json::Error`] (→ invalid response). Anything
/// else is [`FailureClass::Other`].
pub fn classify(err: &(dyn StdError + 'static)) -> FailureClass {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(class) = classify_one(e) {
            return class;
        }
        current = e.source();
    }
    FailureClass::Other
}

/// Classifies a boxed error (see [`classify`]).
pub fn classify_box(err: &BoxError) -> FailureClass {
    classify(&**err)
}

fn classify_one(e: &(dyn StdError + 'static)) -> Option<FailureClass> {
    if let Some(e) = e.downcast_ref::<LlmError>() {
        return Some(e.class());
    }
    if e.is::<Cancelled>() {
        return Some(FailureClass::Cancelled);
    }
    if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
        return Some(FailureClass::Timeout);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind as K;
        return match io.kind() {
            K::TimedOut => Some(FailureClass::Timeout),
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::AddrNotAvailable
            | K::AddrInUse => Some(FailureClass::Transport),
            // An io::Error may wrap a more specific error; keep walking.
            _ => None,
        };
    }
    if e.is::<serde_json::Error>() {
        return Some(FailureClass::InvalidResponse);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn names_are_stable_and_unique() {
        let names: std::collections::HashSet<_> = FailureClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), FailureClass::ALL.len());
        for (i, c) in FailureClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(FailureClass::UpstreamServer.as_str(), "upstream_server_error");
    }

    #[test]
    fn classifies_llm_error_through_wrappers() {
        let inner = LlmError::new(
            FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            },
            "slow down",
        )
        .with_status(429);
        let err: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(inner)))));
        assert_eq!(
            classify_box(&err),
            FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn classifies_real_error_values() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&io), FailureClass::Transport);
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(classify(&io), FailureClass::Timeout);
        let json = serde_json::from_str::<serde_json::Value>("{not json").unwrap_err();
        assert_eq!(classify(&json), FailureClass::InvalidResponse);
        assert_eq!(classify(&Cancelled), FailureClass::Cancelled);
        let other = std::fmt::Error;
        assert_eq!(classify(&other), FailureClass::Other);
    }

    #[tokio::test(start_paused = true)]
    async fn classifies_timeouts_from_tokio_and_tower() {
        let elapsed = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(classify(&elapsed), FailureClass::Timeout);
        let tower_elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        let wrapped: BoxError = Box::new(Wrapper(tower_elapsed));
        assert_eq!(classify_box(&wrapped), FailureClass::Timeout);
    }

    #[test]
    fn retry_and_cooldown_policy() {
        assert!(FailureClass::UpstreamServer.counts_toward_cooldown());
        assert!(FailureClass::Timeout.counts_toward_cooldown());
        assert!(FailureClass::Transport.counts_toward_cooldown());
        assert!(!FailureClass::RateLimited { retry_after: None }.counts_toward_cooldown());
        assert!(!FailureClass::Cancelled.counts_toward_cooldown());
        assert!(!FailureClass::ClientError.is_retryable());
        assert!(!FailureClass::Cancelled.is_retryable());
    }

    #[test]
    fn display_keeps_status_and_message() {
        let e = LlmError::new(FailureClass::ClientError, "bad field `x`").with_status(400);
        assert_eq!(e.to_string(), "client_error (status 400): bad field `x`");
        assert_eq!(e.status(), Some(400));
    }
}
