//! The LLM response that moves back out, and its optional streaming body.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::error::BoxError;
use crate::ids::ModelId;
use crate::message::{FunctionCall, Message, Role, ToolCall};

/// Token usage as reported by the provider (or estimated by the mock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    #[serde(rename = "prompt_tokens", alias = "input_tokens", default)]
    pub input_tokens: u64,
    /// Completion (output) tokens.
    #[serde(rename = "completion_tokens", alias = "output_tokens", default)]
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a part of
    /// `input_tokens`, priced at the cached-input price where there is one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage with the given counts.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            cached_input_tokens: 0,
        }
    }

    /// Sets how many of the input tokens were served from the prompt cache.
    pub fn with_cached_input(mut self, tokens: u64) -> Self {
        self.cached_input_tokens = tokens;
        self
    }

    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Adds another usage record to this one.
    pub fn add(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self.cached_input_tokens.saturating_add(other.cached_input_tokens);
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// The `max_tokens` bound was hit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The provider filtered the content.
    ContentFilter,
    /// Anything else the provider said.
    #[serde(untagged)]
    Other(String),
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other(s) => s,
        }
    }
}

/// One piece of a tool call as it arrives in a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Position of the call in the assistant message.
    pub index: u32,
    /// The call id (usually only on the first delta of a call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function name (usually only on the first delta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the arguments string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// One chunk of a streamed response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// A fragment of the assistant's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Fragments of tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
    /// Set on the chunk that ends the choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// Usage, usually on the last chunk of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A boxed stream of chunks: the streaming body of an [`LlmResponse`].
pub struct ChunkStream {
    inner: Pin<Box<dyn Stream<Item = Result<Chunk, BoxError>> + Send + 'static>>,
}

impl ChunkStream {
    /// Boxes any stream of chunks.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Chunk, BoxError>> + Send + 'static,
    {
        Self {
            inner: Box::pin(stream),
        }
    }
}

impl fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkStream").finish_non_exhaustive()
    }
}

impl Stream for ChunkStream {
    type Item = Result<Chunk, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// The reply to an [`LlmRequest`](crate::LlmRequest).
///
/// A complete response carries the assistant `message`, `usage` and
/// `finish_reason`. A streaming response carries `stream: Some(..)`; its chunks
/// hold the deltas and, at the end, the usage. [`StreamAssembler`] turns chunks
/// back into a complete message.
#[derive(Debug)]
pub struct LlmResponse {
    /// The assistant message (empty until assembled for a streaming response).
    pub message: Message,
    /// Token usage (zero until the stream ends for a streaming response).
    pub usage: Usage,
    /// The model that actually served the call.
    pub model: ModelId,
    /// Why generation stopped.
    pub finish_reason: Option<FinishReason>,
    /// The streaming body, if the call was streamed.
    pub stream: Option<ChunkStream>,
    /// What triage decided for the call (set by the triage layer). Read it
    /// with [`LlmResponse::tier_decision`].
    pub decision: Option<crate::TierDecision>,
    /// Where the call was served from (set by the router). Read it with
    /// [`LlmResponse::routed`].
    pub routed: Option<crate::Routed>,
    /// Typed values attached by layers or the upstream (reset notices, a
    /// provider's response metadata, …).
    pub extensions: http::Extensions,
    /// When the answer was seen by the innermost layer that timed it (the
    /// per-attempt health layer, for a complete response), so the layers
    /// outside it (the router's model health, the outcome health layer, the
    /// reset layer) end their timing on the same clock read. `None` when no
    /// layer timed it yet, and for a streaming response (its call ends with
    /// its stream).
    pub answered_at: Option<tokio::time::Instant>,
}

impl LlmResponse {
    /// A complete (non-streaming) response.
    pub fn new(model: impl Into<ModelId>, message: Message, usage: Usage) -> Self {
        let finish_reason = if message.tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        Self {
            message,
            usage,
            model: model.into(),
            finish_reason: Some(finish_reason),
            stream: None,
            decision: None,
            routed: None,
            extensions: http::Extensions::new(),
            answered_at: None,
        }
    }

    /// A streaming response whose body is `stream`.
    pub fn streaming(model: impl Into<ModelId>, stream: ChunkStream) -> Self {
        Self {
            message: Message::assistant_tool_calls(Vec::new()),
            usage: Usage::default(),
            model: model.into(),
            finish_reason: None,
            stream: Some(stream),
            decision: None,
            routed: None,
            extensions: http::Extensions::new(),
            answered_at: None,
        }
    }

    /// What triage decided for the call, if a triage layer served it.
    pub fn tier_decision(&self) -> Option<&crate::TierDecision> {
        self.decision.as_ref()
    }

    /// Where the call was served from, if a router served it.
    pub fn routed(&self) -> Option<&crate::Routed> {
        self.routed.as_ref()
    }

    /// Whether the response has a streaming body.
    pub fn is_streaming(&self) -> bool {
        self.stream.is_some()
    }
}

/// Folds streamed chunks into a complete assistant message, assembling tool
/// calls from their deltas.
#[derive(Debug, Default, Clone)]
pub struct StreamAssembler {
    content: String,
    saw_content: bool,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
}

impl StreamAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: &Chunk) {
        if let Some(text) = &chunk.content {
            self.saw_content = true;
            self.content.push_str(text);
        }
        for delta in &chunk.tool_calls {
            let index = delta.index as usize;
            // Tool-call indexes are small and dense; refuse absurd ones rather
            // than allocating for them.
            if index > 1024 {
                continue;
            }
            while self.calls.len() <= index {
                self.calls.push(ToolCall {
                    id: String::new(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: String::new(),
                        arguments: String::new(),
                    },
                });
            }
            let call = &mut self.calls[index];
            if let Some(id) = &delta.id {
                call.id.push_str(id);
            }
            if let Some(name) = &delta.name {
                call.function.name.push_str(name);
            }
            if let Some(args) = &delta.arguments {
                call.function.arguments.push_str(args);
            }
        }
        if let Some(reason) = &chunk.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
    }

    /// The usage seen so far, if any chunk carried it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The finish reason seen so far.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref()
    }

    /// The assembled assistant message.
    pub fn message(&self) -> Message {
        Message {
            role: Role::Assistant,
            content: self.saw_content.then(|| self.content.clone()),
            name: None,
            tool_calls: self.calls.clone(),
            tool_call_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_arithmetic_saturates() {
        let mut u = Usage::new(u64::MAX, 1);
        assert_eq!(u.total(), u64::MAX);
        u.add(Usage::new(5, u64::MAX));
        assert_eq!(u, Usage::new(u64::MAX, u64::MAX));
    }
}
