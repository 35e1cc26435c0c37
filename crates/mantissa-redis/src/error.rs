//! Errors of building a Redis backend.

/// A Redis backend could not be built.
///
/// Running into an unreachable Redis is not an error: the backends start
/// degraded and connect when Redis is there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The URL is not a Redis URL (the URL itself is not repeated: it may
    /// carry a password).
    #[error("redis url is invalid ({kind})")]
    InvalidUrl {
        /// The client's classification of the problem.
        kind: String,
    },
    /// Built outside a tokio runtime: the backends run background tasks.
    #[error("a redis backend must be built inside a tokio runtime")]
    NoRuntime,
}
