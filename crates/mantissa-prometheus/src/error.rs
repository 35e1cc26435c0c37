//! Errors of building, installing and serving the exporter.

use std::net::SocketAddr;

/// The exporter configuration is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A histogram was given an empty bucket list.
    #[error("histogram `{metric}` has no buckets")]
    EmptyBuckets {
        /// The histogram name (`*` for the default buckets).
        metric: String,
    },
    /// A histogram's buckets are not finite and strictly increasing.
    #[error("histogram `{metric}` buckets must be finite and strictly increasing")]
    UnorderedBuckets {
        /// The histogram name (`*` for the default buckets).
        metric: String,
    },
    /// The upkeep interval is zero.
    #[error("upkeep interval must be greater than zero")]
    ZeroUpkeepInterval,
    /// The underlying exporter rejected the configuration.
    #[error("prometheus exporter rejected the configuration")]
    Exporter(#[source] metrics_exporter_prometheus::BuildError),
}

/// Installing the exporter failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The configuration is wrong.
    #[error("invalid exporter configuration")]
    Build(#[from] BuildError),
    /// A global metrics recorder was installed before.
    #[error("a global metrics recorder is already installed")]
    AlreadyInstalled,
    /// Upkeep is enabled but there is no tokio runtime to run it on.
    #[error("no tokio runtime to run the upkeep task on (call install inside a runtime or disable upkeep)")]
    NoRuntime,
}

/// Serving `/metrics` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// There is no tokio runtime to run the server on.
    #[error("no tokio runtime to run the metrics server on")]
    NoRuntime,
    /// The address could not be bound.
    #[error("failed to bind metrics server to {addr}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("metrics server failed")]
    Io(#[source] std::io::Error),
    /// The server task panicked or was aborted.
    #[error("metrics server task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}
