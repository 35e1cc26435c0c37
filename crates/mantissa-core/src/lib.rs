//! # mantissa-core
//!
//! The vocabulary every mantissa layer shares: LLM and tool requests and
//! responses (in OpenAI chat-completions' shape), identifiers, precision tiers
//! and model prices, failure classes and their classifier, token estimation,
//! and the metric name catalogue.
//!
//! ```
//! use mantissa_core::{LlmRequest, Message, FailureClass, LlmError, classify};
//!
//! let req = LlmRequest::new("session-1", "trader", vec![
//!     Message::system("You are a trader."),
//!     Message::user("Should we buy?"),
//! ]);
//! assert_eq!(req.latest_user_message().unwrap().text(), "Should we buy?");
//!
//! let err = LlmError::new(FailureClass::UpstreamServer, "bad gateway").with_status(502);
//! assert_eq!(classify(&err).as_str(), "upstream_server_error");
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod catalog;
pub mod context;
pub mod control;
mod decision;
mod error;
pub mod estimate;
mod event;
mod failure;
mod ids;
mod labels;
mod message;
pub mod models;
mod request;
mod response;
mod text;
mod tier;
mod tool;

pub use context::{
    CallContext, Catalog, CatalogBuilder, ModelEntry, ModelIdx, TierEntry, TierIdx, TierRaised, TierSource,
    session_hash,
};
pub use decision::{Routed, TierDecision, TriageReason};
pub use error::{BoxError, ConfigError};
pub use estimate::{CharEstimator, TokenEstimator};
pub use event::{EventKind, EventSink, HealthEvent, unix_millis};
pub use failure::{Cancelled, FailureClass, LlmError, Outcome, classify, classify_box};
pub use ids::{AgentName, ModelId, SessionId, Tier};
pub use labels::{BoundedLabels, DEFAULT_MAX_LABELS, LabelIdx};
pub use message::{FunctionCall, FunctionSpec, Message, Role, ToolCall, ToolSpec};
pub use request::{GenerationParams, LlmRequest, METADATA_STAKES};
pub use response::{Chunk, ChunkStream, FinishReason, LlmResponse, StreamAssembler, ToolCallDelta, Usage};
pub use text::truncate_str;
pub use tier::{ModelCatalog, ModelSpec, OTHER_LABEL, PriceSource, Pricing, TierConfig, TierSet};
pub use tool::{ToolRequest, ToolResponse};
