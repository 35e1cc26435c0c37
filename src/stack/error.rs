//! [`BuildError`]: why an [`AgentStack`](super::AgentStack) could not be built.

use mantissa_core::{BoxError, ConfigError};

/// Why an [`AgentStack`](super::AgentStack) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration value is wrong (names the field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The router could not be built.
    #[error("router: {0}")]
    Router(#[from] mantissa_triage::RouterBuildError),
    /// The upstream service of a model could not be built.
    #[error("upstream for model `{model}`: {source}")]
    Upstream {
        /// The model (`*` when the upstream itself could not be set up).
        model: String,
        /// Why.
        source: BoxError,
    },
    /// The monitor needs a tokio runtime to run its background task.
    #[error("the monitor needs a tokio runtime: build the stack inside one, or call `without_monitor`")]
    NoRuntime,
    /// The configuration file could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}
