//! [`Upstream`]: where the models of a stack live, and the [`ModelFactory`]
//! that makes each model's leaf service.

use std::fmt;
use std::sync::Arc;

use mantissa_core::{BoxError, ModelSpec};
use mantissa_mock::MockLlm;

use super::LlmService;

/// Builds the leaf service of one model.
pub type ModelFactory = Arc<dyn Fn(&ModelSpec) -> Result<LlmService, BoxError> + Send + Sync>;

/// Where the models live. A stack has exactly one, given to
/// [`AgentStack::builder`](super::AgentStack::builder) (there is no default:
/// a stack never answers from a mock unless asked to).
#[derive(Clone)]
pub enum Upstream {
    /// The embedded, scriptable mock LLM (tests, examples, the
    /// [`AgentStack::demo`](super::AgentStack::demo) preset).
    Mock(MockLlm),
    /// An OpenAI-compatible chat-completions server.
    #[cfg(feature = "openai")]
    OpenAi(Box<mantissa_openai::OpenAiConfig>),
    /// Any service per model.
    Custom(ModelFactory),
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Mock(_) => f.write_str("Upstream::Mock"),
            #[cfg(feature = "openai")]
            Upstream::OpenAi(c) => f.debug_tuple("Upstream::OpenAi").field(c).finish(),
            Upstream::Custom(_) => f.write_str("Upstream::Custom"),
        }
    }
}

/// The leaf services an [`Upstream`] makes, one per model. The built-in
/// upstreams stay unboxed so the router boxes each model's service once.
pub(super) enum Leaves {
    Mock(MockLlm),
    #[cfg(feature = "openai")]
    OpenAi(mantissa_openai::OpenAiClient),
    Custom(ModelFactory),
}

impl Upstream {
    /// The per-model leaves. An OpenAI-compatible upstream builds one client
    /// (one connection pool) shared by every model.
    pub(super) fn leaves(&self) -> Result<Leaves, BoxError> {
        Ok(match self {
            Upstream::Mock(mock) => Leaves::Mock(mock.clone()),
            #[cfg(feature = "openai")]
            Upstream::OpenAi(config) => {
                Leaves::OpenAi(mantissa_openai::OpenAiClient::new((**config).clone())?)
            }
            Upstream::Custom(factory) => Leaves::Custom(factory.clone()),
        })
    }
}
