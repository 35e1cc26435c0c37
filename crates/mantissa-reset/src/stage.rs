//! Pluggable stages of the staged response. Each is a trait that closures also
//! implement; the summarize stage is any `Service<LlmRequest, Response =
//! LlmResponse>` (typically the low tier of the stack).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{Message, SessionId, Tier, TokenEstimator};

use crate::compact;
use crate::notice::ContextWarning;

/// The warn stage's optional note for the agent, injected into the outgoing
/// request as a system message (named `mantissa_note`; the caller's history is
/// not changed).
pub trait WarningNote: Send + Sync + 'static {
    /// The note to inject for `warning`, if any.
    fn note(&self, warning: &ContextWarning) -> Option<String>;
}

impl<F> WarningNote for F
where
    F: Fn(&ContextWarning) -> Option<String> + Send + Sync + 'static,
{
    fn note(&self, warning: &ContextWarning) -> Option<String> {
        self(warning)
    }
}

/// Injects no note (the default: a warning only emits an event and a metric).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNote;

impl WarningNote for NoNote {
    fn note(&self, _: &ContextWarning) -> Option<String> {
        None
    }
}

/// A short standard note telling the agent its context is getting long.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardNote;

impl WarningNote for StandardNote {
    fn note(&self, w: &ContextWarning) -> Option<String> {
        let mut reasons = String::new();
        for t in w.triggers.iter() {
            if !reasons.is_empty() {
                reasons.push_str(", ");
            }
            reasons.push_str(t.as_str());
        }
        Some(format!(
            "Note from the runtime: this session shows signs of strain ({reasons}). \
             Keep replies focused on the current task; older details may be summarized soon."
        ))
    }
}

/// The clear stage: replaces old tool results with placeholders. Must keep
/// every message (only contents change) so that tool calls and results stay
/// paired; returns `None` when clearing is not worth it.
pub trait ToolResultClearer: Send + Sync + 'static {
    /// The cleared history, or `None` to skip this stage.
    fn clear(&self, messages: &[Message], estimator: &dyn TokenEstimator) -> Option<Vec<Message>>;

    /// The last resort when the history is still over the target after every
    /// other stage: also clear tool results of the current turn (a long tool
    /// loop under one user message has no older turn to compact). Same
    /// contract as [`clear`](Self::clear). Defaults to `None` (no escalation).
    fn clear_current_turn(
        &self,
        messages: &[Message],
        estimator: &dyn TokenEstimator,
    ) -> Option<Vec<Message>> {
        let _ = (messages, estimator);
        None
    }
}

impl<F> ToolResultClearer for F
where
    F: Fn(&[Message]) -> Option<Vec<Message>> + Send + Sync + 'static,
{
    fn clear(&self, messages: &[Message], _: &dyn TokenEstimator) -> Option<Vec<Message>> {
        self(messages)
    }
}

/// The default clearer: keeps the last `keep_last` tool results (and every
/// result of the current turn), replaces older ones with placeholders, and
/// only acts when that frees at least `at_least` tokens at once (clearing a
/// little at a time would invalidate provider prompt caches for little gain).
/// As the last resort ([`ToolResultClearer::clear_current_turn`]) it clears
/// older results of the current turn too, keeping the last `keep_last` and
/// the latest batch ([`clear_current_turn_tool_results`](crate::clear_current_turn_tool_results)).
#[derive(Debug, Clone, Copy)]
pub struct PlaceholderClearer {
    /// Most recent tool results kept. Defaults to 3.
    pub keep_last: usize,
    /// Minimum tokens freed for the stage to act. Defaults to 1,024.
    pub at_least: u64,
}

impl Default for PlaceholderClearer {
    fn default() -> Self {
        Self {
            keep_last: 3,
            at_least: 1024,
        }
    }
}

impl ToolResultClearer for PlaceholderClearer {
    fn clear(&self, messages: &[Message], estimator: &dyn TokenEstimator) -> Option<Vec<Message>> {
        compact::clear_tool_results(messages, estimator, self.keep_last, self.at_least).map(|(m, _)| m)
    }

    fn clear_current_turn(
        &self,
        messages: &[Message],
        estimator: &dyn TokenEstimator,
    ) -> Option<Vec<Message>> {
        compact::clear_current_turn_tool_results(messages, estimator, self.keep_last, self.at_least)
            .map(|(m, _)| m)
    }
}

/// The respawn stage's new session id.
pub trait Respawner: Send + Sync + 'static {
    /// The id to continue `session` under; `resets` counts this reset.
    fn respawn(&self, session: &SessionId, resets: u32) -> SessionId;
}

impl<F> Respawner for F
where
    F: Fn(&SessionId, u32) -> SessionId + Send + Sync + 'static,
{
    fn respawn(&self, session: &SessionId, resets: u32) -> SessionId {
        self(session, resets)
    }
}

/// The default respawner: `{session}~r{resets}` (the base id without an
/// earlier `~r…` suffix), so the lineage stays readable.
#[derive(Debug, Clone, Copy, Default)]
pub struct SuffixRespawner;

impl Respawner for SuffixRespawner {
    fn respawn(&self, session: &SessionId, resets: u32) -> SessionId {
        let base = session.as_str().split("~r").next().unwrap_or(session.as_str());
        SessionId::new(format!("{base}~r{resets}"))
    }
}

/// The default instruction given to the summarizer.
pub const DEFAULT_SUMMARY_INSTRUCTION: &str = "You compress the earlier part of a conversation between a user, \
an AI agent and its tools, so that the agent can continue without it. Write a concise summary that keeps: the \
user's goals and constraints, decisions made and why, facts and figures established (including tool results that \
still matter), open questions and the next steps. Do not invent anything. Write plain text, at most {max_tokens} \
tokens.";

/// Settings of the summarize (and respawn) stage.
#[derive(Clone)]
pub struct SummaryConfig {
    pub(crate) instruction: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) tier: Option<Tier>,
    pub(crate) max_tokens: u32,
    pub(crate) keep_turns: usize,
    pub(crate) max_message_chars: usize,
}

impl fmt::Debug for SummaryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SummaryConfig")
            .field("timeout", &self.timeout)
            .field("tier", &self.tier)
            .field("max_tokens", &self.max_tokens)
            .field("keep_turns", &self.keep_turns)
            .field("max_message_chars", &self.max_message_chars)
            .finish_non_exhaustive()
    }
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self {
            instruction: Arc::from(DEFAULT_SUMMARY_INSTRUCTION),
            timeout: Duration::from_secs(30),
            tier: Some(Tier::low()),
            max_tokens: 1024,
            keep_turns: 2,
            max_message_chars: 2000,
        }
    }
}

impl SummaryConfig {
    /// The defaults: [`DEFAULT_SUMMARY_INSTRUCTION`], a 30 s timeout, the
    /// `low` tier, 1,024 summary tokens, the last 2 user turns kept verbatim,
    /// messages capped at 2,000 characters in the transcript.
    pub fn new() -> Self {
        Self::default()
    }

    /// The instruction (a system message); `{max_tokens}` is replaced.
    /// Defaults to [`DEFAULT_SUMMARY_INSTRUCTION`].
    pub fn instruction(mut self, template: impl Into<Arc<str>>) -> Self {
        self.instruction = template.into();
        self
    }

    /// How long the summarizer may take before the stage falls back to
    /// trimming. Defaults to 30 seconds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The tier set on summarizer requests. Defaults to `Some(low)`.
    pub fn tier(mut self, tier: Option<Tier>) -> Self {
        self.tier = tier;
        self
    }

    /// `max_tokens` of the summary. Defaults to 1,024.
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = tokens.max(16);
        self
    }

    /// User turns kept verbatim after the summary (at least 1). Defaults to 2.
    pub fn keep_turns(mut self, turns: usize) -> Self {
        self.keep_turns = turns.max(1);
        self
    }

    /// Characters of each message shown to the summarizer. Defaults to 2,000.
    pub fn max_message_chars(mut self, chars: usize) -> Self {
        self.max_message_chars = chars.max(16);
        self
    }

    pub(crate) fn instruction_text(&self) -> String {
        self.instruction
            .replace("{max_tokens}", &self.max_tokens.to_string())
    }
}
