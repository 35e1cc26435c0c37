//! What the layer tells the caller: the [`ContextReset`] and [`ContextWarning`]
//! notices it puts into the response extensions.

use std::fmt;
use std::sync::Arc;

use mantissa_core::{LlmResponse, Message, SessionId};

use crate::policy::{Strategy, Trigger, TriggerSet};

/// A context reset done on this call, attached to the response's extensions.
///
/// The `history` is the effective history the call went out with. A caller
/// may adopt it (send it, plus the new turns, from now on); a caller that
/// keeps resending its full history gets the same effective context, because
/// the layer remembers the reset.
#[derive(Debug, Clone)]
pub struct ContextReset {
    /// The session that was reset.
    pub session: SessionId,
    /// Set by a respawn: the session id to continue under.
    pub new_session: Option<SessionId>,
    /// Why.
    pub reason: Trigger,
    /// The free-form reason of a requested reset.
    pub requested_reason: Option<String>,
    /// What was done.
    pub strategy: Strategy,
    /// Conversation turns (user messages) of the session at the reset.
    pub turns: u32,
    /// LLM calls of the session at the reset (tool loops make several per
    /// turn).
    pub llm_calls: u32,
    /// Context tokens before.
    pub tokens_before: u64,
    /// Context tokens after (estimated).
    pub tokens_after: u64,
    /// Messages before.
    pub messages_before: usize,
    /// Messages after.
    pub messages_after: usize,
    /// The target budget in tokens.
    pub target_tokens: u64,
    /// Whether the result fits the target budget.
    pub fits: bool,
    /// Why the result does not fit, or why a fallback was used.
    pub note: Option<String>,
    /// The effective (compacted) history.
    pub history: Arc<Vec<Message>>,
}

impl ContextReset {
    /// The notice of a response, if the call reset the context.
    pub fn of(response: &LlmResponse) -> Option<&ContextReset> {
        response.extensions.get::<ContextReset>()
    }
}

impl fmt::Display for ContextReset {
    /// One line for a trace, for example
    /// `context reset of session s1 at turn 50 (212 LLM calls): reason=context_tokens strategy=summarize tokens 9120 -> 1480 (target 9830) messages 101 -> 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "context reset of session {} at turn {} ({} LLM calls): reason={} strategy={} tokens {} -> {} (target {}) messages {} -> {}",
            self.session,
            self.turns,
            self.llm_calls,
            self.reason,
            self.strategy,
            self.tokens_before,
            self.tokens_after,
            self.target_tokens,
            self.messages_before,
            self.messages_after
        )?;
        if let Some(r) = &self.requested_reason {
            write!(f, " requested: {r:?}")?;
        }
        if let Some(s) = &self.new_session {
            write!(f, "; continue as session {s}")?;
        }
        if !self.fits {
            f.write_str("; does not fit the target")?;
        }
        if let Some(n) = &self.note {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// Brittleness warnings raised on this call, attached to the response's
/// extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextWarning {
    /// The session.
    pub session: SessionId,
    /// The triggers that just became active, and a compaction trigger whose
    /// compaction could remove nothing (see `note`).
    pub triggers: TriggerSet,
    /// The brittleness score of the call.
    pub score: f64,
    /// Context tokens of the call.
    pub context_tokens: u64,
    /// The serving model's window.
    pub window: u32,
    /// Conversation turns (user messages) of the session.
    pub turns: u32,
    /// LLM calls of the session.
    pub llm_calls: u32,
    /// Why a compaction trigger only warned (the compaction could remove
    /// nothing), or why a reset is suggested.
    pub note: Option<String>,
}

impl ContextWarning {
    /// The warning of a response, if the call raised one.
    pub fn of(response: &LlmResponse) -> Option<&ContextWarning> {
        response.extensions.get::<ContextWarning>()
    }
}

impl fmt::Display for ContextWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "brittleness warning for session {} at turn {} ({} LLM calls):",
            self.session, self.turns, self.llm_calls
        )?;
        for t in self.triggers.iter() {
            write!(f, " {t}")?;
        }
        write!(
            f,
            " (score {:.2}, context {} of {} tokens)",
            self.score, self.context_tokens, self.window
        )?;
        if let Some(n) = &self.note {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// One line per warning or reset notice carried by `response` (empty when the
/// call did neither). For examples and logs:
///
/// ```
/// # use mantissa_core::{LlmResponse, Message, Usage};
/// let response = LlmResponse::new("m", Message::assistant("hi"), Usage::default());
/// for line in mantissa_reset::notice_lines(&response) {
///     println!("{line}");
/// }
/// ```
pub fn notice_lines(response: &LlmResponse) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(w) = ContextWarning::of(response) {
        lines.push(w.to_string());
    }
    if let Some(r) = ContextReset::of(response) {
        lines.push(r.to_string());
    }
    lines
}
