//! Tool calls as requests to a tool service.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, SessionId};
use crate::message::ToolCall;

/// One tool invocation by an agent.
#[derive(Debug, Clone)]
pub struct ToolRequest {
    /// The conversation the call belongs to. Never a metric label.
    pub session: SessionId,
    /// The agent calling the tool.
    pub agent: AgentName,
    /// The tool-call id from the assistant message.
    pub call_id: String,
    /// The tool name (a bounded metric label).
    pub name: String,
    /// The arguments as JSON.
    pub arguments: serde_json::Value,
    /// The agent and session resolved once by the stack (see
    /// [`CallContext`](crate::CallContext)); empty until then.
    pub ctx: crate::CallContext,
    /// Typed values attached by layers.
    pub extensions: http::Extensions,
}

impl ToolRequest {
    /// A tool request.
    pub fn new(
        session: impl Into<SessionId>,
        agent: impl Into<AgentName>,
        call_id: impl Into<String>,
        name: impl Into<String>,
        arguments: serde_json::Value,
    ) -> Self {
        Self {
            session: session.into(),
            agent: agent.into(),
            call_id: call_id.into(),
            name: name.into(),
            arguments,
            ctx: crate::CallContext::default(),
            extensions: http::Extensions::new(),
        }
    }

    /// Builds a request from an assistant's [`ToolCall`]. Arguments that are
    /// not valid JSON are an error for the caller to report as a tool error.
    pub fn from_call(
        session: impl Into<SessionId>,
        agent: impl Into<AgentName>,
        call: &ToolCall,
    ) -> Result<Self, serde_json::Error> {
        let arguments = call.parse_arguments()?;
        Ok(Self::new(
            session,
            agent,
            call.id.clone(),
            call.function.name.clone(),
            arguments,
        ))
    }
}

/// The result of a tool invocation.
///
/// A tool that ran but reports failure returns `is_error: true` (the model sees
/// the content); a tool that could not run at all returns `Err`. The health
/// layer counts both as `tool_error`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolResponse {
    /// What the model will read.
    pub content: String,
    /// Whether the tool reports failure.
    pub is_error: bool,
    /// Typed values attached by layers.
    #[serde(skip)]
    pub extensions: http::Extensions,
}

impl ToolResponse {
    /// A successful result.
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
            extensions: http::Extensions::new(),
        }
    }

    /// A failed result the model should see.
    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
            extensions: http::Extensions::new(),
        }
    }
}
