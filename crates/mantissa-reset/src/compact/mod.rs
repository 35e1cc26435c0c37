//! Compaction of a message history that never breaks the conversation.
//!
//! Every function here keeps these invariants (property-tested):
//!
//! * system messages stay, in their places (earlier summaries — system
//!   messages named [`SUMMARY_NAME`] — may be folded into a new summary);
//! * cuts fall on user-turn boundaries: the kept tail starts at a user message;
//! * an assistant's tool calls and their tool results stay together: a cut is
//!   never placed between a call and a result that answers it, and clearing
//!   replaces result *contents* with placeholders instead of deleting results;
//! * the latest user message and everything after it always stay; only the
//!   last-resort clearing ([`clear_current_turn_tool_results`]) replaces the
//!   contents of older tool results of the current turn, and it keeps the
//!   latest batch of results (those answering the last assistant tool call).
//!
//! Costs are linear in the history, but compaction only runs on a reset.
//!
//! The functions here are the building blocks; the `pipeline` submodule
//! sequences them into the layer's stages.

use std::collections::HashMap;
use std::fmt::Write as _;

use mantissa_core::{Message, Role, TokenEstimator};

mod pipeline;

pub(crate) use pipeline::{Compacted, compact_stages};

/// The `name` of the system message that carries a summary or a trim notice.
pub const SUMMARY_NAME: &str = "mantissa_summary";

/// The prefix of a cleared tool result's placeholder.
pub const CLEARED_PREFIX: &str = "[cleared:";

/// Whether `m` is a pinned system message (a system message that is not a
/// mantissa summary).
pub(crate) fn is_pinned(m: &Message) -> bool {
    m.role == Role::System && m.name.as_deref() != Some(SUMMARY_NAME)
}

pub(crate) fn is_summary(m: &Message) -> bool {
    m.role == Role::System && m.name.as_deref() == Some(SUMMARY_NAME)
}

/// Estimated tokens of a history (linear; used once per compaction).
pub(crate) fn tokens(est: &dyn TokenEstimator, msgs: &[Message]) -> u64 {
    msgs.iter().map(|m| u64::from(est.estimate_message(m))).sum()
}

/// The valid cut points of a history: indices of user messages such that no
/// tool result at or after the index answers a call made before it. Sorted.
pub(crate) fn cut_points(msgs: &[Message]) -> Vec<usize> {
    // Where each tool call id was made.
    let mut call_at: HashMap<&str, usize> = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        for c in &m.tool_calls {
            call_at.insert(c.id.as_str(), i);
        }
    }
    // Suffix minimum of "index of the call answered by a result at or after i".
    let mut min_call_after = vec![usize::MAX; msgs.len() + 1];
    for i in (0..msgs.len()).rev() {
        let here = msgs[i]
            .tool_call_id
            .as_deref()
            .and_then(|id| call_at.get(id).copied())
            .unwrap_or(usize::MAX);
        min_call_after[i] = min_call_after[i + 1].min(here);
    }
    msgs.iter()
        .enumerate()
        .filter(|(i, m)| m.role == Role::User && min_call_after[*i] >= *i)
        .map(|(i, _)| i)
        .collect()
}

/// Index of the latest user message.
pub(crate) fn last_user(msgs: &[Message]) -> Option<usize> {
    msgs.iter().rposition(|m| m.role == Role::User)
}

/// A chosen cut: the kept tail starts at `cut`; before it, pinned messages
/// stay and the rest is summarized or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) cut: usize,
}

/// Picks the earliest cut that keeps at most `keep_turns` user turns and whose
/// kept part (pinned messages before the cut, `reserve` tokens for the summary,
/// the tail) fits `target`; if none fits, the latest valid cut. `None` when no
/// valid cut leaves anything to remove.
pub(crate) fn choose_cut(
    msgs: &[Message],
    est: &dyn TokenEstimator,
    keep_turns: usize,
    target: u64,
    reserve: u64,
    removable: impl Fn(&Message) -> bool,
) -> Option<Cut> {
    let cuts = cut_points(msgs);
    let last = last_user(msgs)?;
    let per: Vec<u64> = msgs.iter().map(|m| u64::from(est.estimate_message(m))).collect();
    // kept(c) = sum of non-removable before c + sum from c on.
    let mut prefix_kept = vec![0u64; msgs.len() + 1];
    let mut prefix_removable = vec![0usize; msgs.len() + 1];
    for i in 0..msgs.len() {
        let r = removable(&msgs[i]);
        prefix_kept[i + 1] = prefix_kept[i] + if r { 0 } else { per[i] };
        prefix_removable[i + 1] = prefix_removable[i] + usize::from(r);
    }
    let mut suffix = vec![0u64; msgs.len() + 1];
    for i in (0..msgs.len()).rev() {
        suffix[i] = suffix[i + 1] + per[i];
    }
    let users: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::User)
        .map(|(i, _)| i)
        .collect();
    let earliest_allowed = users
        .len()
        .checked_sub(keep_turns.max(1))
        .map(|k| users[k])
        .unwrap_or(0);
    let valid: Vec<usize> = cuts
        .into_iter()
        .filter(|&c| c <= last && c >= earliest_allowed && prefix_removable[c] > 0)
        .collect();
    let fits = valid
        .iter()
        .copied()
        .find(|&c| prefix_kept[c] + reserve + suffix[c] <= target);
    fits.or_else(|| valid.last().copied()).map(|cut| Cut { cut })
}

/// Applies a cut: keeps non-removable messages before it, then `insert`
/// (a summary or a notice), then the tail.
pub(crate) fn apply_cut(
    msgs: &[Message],
    cut: Cut,
    insert: Message,
    removable: impl Fn(&Message) -> bool,
) -> (Vec<Message>, usize) {
    let mut out = Vec::with_capacity(msgs.len() - cut.cut + 8);
    let mut removed = 0;
    for m in &msgs[..cut.cut] {
        if removable(m) {
            removed += 1;
        } else {
            out.push(m.clone());
        }
    }
    out.push(insert);
    out.extend_from_slice(&msgs[cut.cut..]);
    (out, removed)
}

/// A system message carrying a summary or notice.
pub(crate) fn summary_message(text: String) -> Message {
    let mut m = Message::system(text);
    m.name = Some(SUMMARY_NAME.to_owned());
    m
}

/// Trims the oldest turns (dropping them, keeping system messages and earlier
/// summaries) to fit `target`. Returns `None` when nothing can be removed.
pub(crate) fn trim(
    msgs: &[Message],
    est: &dyn TokenEstimator,
    target: u64,
    keep_turns: usize,
    why: &str,
) -> Option<(Vec<Message>, usize)> {
    let removable = |m: &Message| m.role != Role::System;
    let reserve = 40;
    let cut = choose_cut(msgs, est, keep_turns, target, reserve, removable)?;
    let dropped = msgs[..cut.cut].iter().filter(|m| removable(m)).count();
    let notice = summary_message(format!(
        "[{dropped} earlier messages were removed to fit the context window ({why}).]"
    ));
    Some(apply_cut(msgs, cut, notice, removable))
}

/// Replaces the contents of old tool results with placeholders: every result
/// except the last `keep_last` and except those after the latest user
/// message. Does nothing (returns `None`) unless at least `at_least` tokens
/// are freed. Returns the new history and the tokens freed.
pub fn clear_tool_results(
    msgs: &[Message],
    est: &dyn TokenEstimator,
    keep_last: usize,
    at_least: u64,
) -> Option<(Vec<Message>, u64)> {
    let spared_from = last_user(msgs).unwrap_or(0);
    clear_before(msgs, est, keep_last, at_least, spared_from)
}

/// Like [`clear_tool_results`], but also clears tool results of the current
/// turn (after the latest user message): the escalation for a long tool loop
/// under one user message, where no older turn is left to compact. Keeps the
/// last `keep_last` results and always the latest batch (the results after
/// the last assistant message with tool calls), so the model still sees what
/// its last tool calls returned.
pub fn clear_current_turn_tool_results(
    msgs: &[Message],
    est: &dyn TokenEstimator,
    keep_last: usize,
    at_least: u64,
) -> Option<(Vec<Message>, u64)> {
    let spared_from = msgs
        .iter()
        .rposition(|m| !m.tool_calls.is_empty())
        .map(|i| i + 1)
        .unwrap_or(0);
    clear_before(msgs, est, keep_last, at_least, spared_from)
}

/// Clears tool results before index `spared_from`, except the last `keep_last`.
fn clear_before(
    msgs: &[Message],
    est: &dyn TokenEstimator,
    keep_last: usize,
    at_least: u64,
    spared_from: usize,
) -> Option<(Vec<Message>, u64)> {
    let candidates: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::Tool)
        .map(|(i, _)| i)
        .collect();
    let keep_from = candidates.len().saturating_sub(keep_last);
    let mut out: Option<Vec<Message>> = None;
    let mut freed = 0u64;
    for &i in &candidates[..keep_from] {
        let m = &msgs[i];
        if i >= spared_from || m.text().starts_with(CLEARED_PREFIX) {
            continue;
        }
        let before = u64::from(est.estimate_text(m.text()));
        let placeholder =
            format!("{CLEARED_PREFIX} old tool result of ~{before} tokens removed to save context]");
        let after = u64::from(est.estimate_text(&placeholder));
        if after >= before {
            continue;
        }
        freed += before - after;
        let v = out.get_or_insert_with(|| msgs.to_vec());
        v[i].content = Some(placeholder);
    }
    match out {
        Some(v) if freed >= at_least.max(1) => Some((v, freed)),
        _ => None,
    }
}

/// Renders messages as a plain-text transcript for the summarizer (tool calls
/// as text, so any model can read them), each message capped at
/// `max_chars` characters.
pub(crate) fn transcript<'a>(msgs: impl Iterator<Item = &'a Message>, max_chars: usize) -> String {
    let mut out = String::new();
    for m in msgs {
        let _ = write!(out, "[{}", m.role.as_str());
        if let Some(id) = &m.tool_call_id {
            let _ = write!(out, " result of {id}");
        }
        if is_summary(m) {
            out.push_str(" (earlier summary)");
        }
        out.push_str("] ");
        push_capped(&mut out, m.text(), max_chars);
        for c in &m.tool_calls {
            let _ = write!(out, "\n  -> calls {} ({}): ", c.function.name, c.id);
            push_capped(&mut out, &c.function.arguments, max_chars);
        }
        out.push('\n');
    }
    out
}

fn push_capped(out: &mut String, s: &str, max_chars: usize) {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => {
            out.push_str(&s[..end]);
            out.push_str(" …");
        }
        None => out.push_str(s),
    }
}

#[cfg(test)]
mod tests {
    use mantissa_core::{CharEstimator, ToolCall};

    use super::*;

    fn call(id: &str) -> Message {
        Message::assistant_tool_calls(vec![ToolCall::new(id, "lookup", &serde_json::json!({"q": id}))])
    }

    fn history() -> Vec<Message> {
        vec![
            Message::system("sys"),
            Message::user("u1"),
            call("c1"),
            Message::tool("c1", "r".repeat(400)),
            Message::assistant("a1"),
            Message::user("u2"),
            call("c2"),
            Message::tool("c2", "s".repeat(400)),
            Message::user("u3"),
        ]
    }

    #[test]
    fn cut_points_skip_positions_inside_a_tool_exchange() {
        let mut h = history();
        // A malformed history: the result of c2 arrives after u3.
        h.swap(7, 8);
        assert_eq!(cut_points(&h), vec![1, 5]);
        assert_eq!(cut_points(&history()), vec![1, 5, 8]);
    }

    #[test]
    fn trim_keeps_system_and_latest_turn() {
        let (out, removed) = trim(&history(), &CharEstimator, 30, usize::MAX, "test").unwrap();
        assert_eq!(out[0], Message::system("sys"));
        assert!(is_summary(&out[1]));
        assert_eq!(out.last(), Some(&Message::user("u3")));
        assert_eq!(removed, 7);
    }

    #[test]
    fn clearing_needs_a_minimum_and_spares_recent_results() {
        let h = history();
        assert!(clear_tool_results(&h, &CharEstimator, 1, 1000).is_none());
        let (out, freed) = clear_tool_results(&h, &CharEstimator, 1, 50).unwrap();
        assert!(out[3].text().starts_with(CLEARED_PREFIX));
        assert_eq!(out[7], h[7]);
        assert!(freed > 50);
        // Idempotent: nothing more to clear.
        assert!(clear_tool_results(&out, &CharEstimator, 1, 1).is_none());
    }

    #[test]
    fn current_turn_clearing_keeps_the_latest_batch_and_the_pairs() {
        // One user message, then a tool loop of four round trips.
        let mut h = vec![Message::system("sys"), Message::user("go")];
        for k in 0..4 {
            let id = format!("t{k}");
            h.push(call(&id));
            h.push(Message::tool(&id, "r".repeat(400)));
        }
        // Everything is in the current turn: the ordinary clearing spares it.
        assert!(clear_tool_results(&h, &CharEstimator, 0, 1).is_none());
        let (out, freed) = clear_current_turn_tool_results(&h, &CharEstimator, 0, 1).unwrap();
        assert!(freed > 200);
        assert_eq!(out.len(), h.len());
        for (a, b) in h.iter().zip(&out) {
            assert_eq!(
                (a.role, &a.tool_call_id, &a.tool_calls),
                (b.role, &b.tool_call_id, &b.tool_calls)
            );
        }
        let cleared: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].text().starts_with(CLEARED_PREFIX))
            .collect();
        assert_eq!(cleared, vec![3, 5, 7], "the latest batch (index 9) stays");
        assert_eq!(out[..2], h[..2]);
    }
}
