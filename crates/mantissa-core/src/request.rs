//! The LLM request that moves inward through the layers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, ModelId, SessionId, Tier};
use crate::message::{Message, Role, ToolSpec};

/// Sampling and output settings of one chat completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Seed for providers that support deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Ask for a streamed (server-sent events) response.
    #[serde(default)]
    pub stream: bool,
    /// Provider-specific fields passed through verbatim.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Metadata key whose value (`low`, `medium`, `high`, `critical`) is an explicit
/// stakes hint for triage.
pub const METADATA_STAKES: &str = "stakes";

/// One chat-completion call of one agent in one session.
///
/// The message history and the offered tools are shared (`Arc`), so
/// cloning a request — which the router does to be able to fall back —
/// costs the same for 10 or 10,000 messages and for any tool schemas. Layers that change the history go through
/// [`LlmRequest::messages_mut`], which copies only when the history is shared.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The conversation this call belongs to. Never a metric label.
    pub session: SessionId,
    /// The agent making the call.
    pub agent: AgentName,
    /// The full history the caller sent (after reset: the effective history).
    pub messages: Arc<Vec<Message>>,
    /// Tools offered to the model (shared, like the history: set it from a
    /// `Vec` with `.into()`).
    pub tools: Arc<[ToolSpec]>,
    /// Sampling settings.
    pub params: GenerationParams,
    /// The precision tier, when decided (by the caller or by triage).
    pub tier: Option<Tier>,
    /// The model, when decided (by the caller or by the router).
    pub model: Option<ModelId>,
    /// Free-form string metadata (for example the [`METADATA_STAKES`] hint).
    pub metadata: BTreeMap<String, String>,
    /// What the layers resolved about this call — agent, session hash, tier
    /// and model as dense indices of the stack's [`Catalog`](crate::Catalog)
    /// — so no layer looks the names up again. Empty until a stack (or
    /// [`Catalog::resolve`](crate::Catalog::resolve)) fills it in.
    pub ctx: crate::CallContext,
    /// What triage decided for this call, once it has (the triage layer sets
    /// it before calling inward). A typed field rather than an extension, so
    /// the decision and the router's copy of the request for a fallback
    /// allocate nothing. Read it with [`LlmRequest::tier_decision`].
    pub decision: Option<crate::TierDecision>,
    /// Typed values attached by the caller or by layers (notices, per-call
    /// settings such as a client's timeouts); the layers pass them through.
    pub extensions: http::Extensions,
}

impl LlmRequest {
    /// A request with the given history and default everything else.
    pub fn new(session: impl Into<SessionId>, agent: impl Into<AgentName>, messages: Vec<Message>) -> Self {
        Self {
            session: session.into(),
            agent: agent.into(),
            messages: Arc::new(messages),
            tools: Arc::default(),
            params: GenerationParams::default(),
            tier: None,
            model: None,
            metadata: BTreeMap::new(),
            ctx: crate::CallContext::default(),
            decision: None,
            extensions: http::Extensions::new(),
        }
    }

    /// Sets the tier (builder style).
    pub fn with_tier(mut self, tier: impl Into<Tier>) -> Self {
        self.tier = Some(tier.into());
        self
    }

    /// Sets the model (builder style).
    pub fn with_model(mut self, model: impl Into<ModelId>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the offered tools (builder style).
    pub fn with_tools(mut self, tools: impl Into<Arc<[ToolSpec]>>) -> Self {
        self.tools = tools.into();
        self
    }

    /// Adds a metadata entry (builder style).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// What triage decided for this call, if a triage layer has run.
    pub fn tier_decision(&self) -> Option<&crate::TierDecision> {
        self.decision.as_ref()
    }

    /// The history as a slice.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Mutable access to the history, copying it first if it is shared.
    pub fn messages_mut(&mut self) -> &mut Vec<Message> {
        Arc::make_mut(&mut self.messages)
    }

    /// The latest user message, found by scanning backwards (stops at the
    /// first user message, so the cost does not depend on history length).
    pub fn latest_user_message(&self) -> Option<&Message> {
        self.messages.iter().rev().find(|m| m.role == Role::User)
    }
}
