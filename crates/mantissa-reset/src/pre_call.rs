//! The pre-call update: the one read-modify-write of a session before its
//! call goes out. It counts the call, recognises a remembered reset,
//! accounts tokens and user turns for the new messages only (O(new
//! messages)), and evaluates the policy into a [`Pre`].

use std::sync::Arc;

use mantissa_core::{Message, Role, TokenEstimator};

use crate::fingerprint::message_hash;
use crate::policy::{Assessment, BrittlenessPolicy, Signals, Stage, Trigger, TriggerSet};
use crate::session::{Match, RememberedReset, SessionState};

/// What the pre-call update decided.
pub(crate) struct Pre {
    pub(crate) resent: Option<Arc<RememberedReset>>,
    pub(crate) caller_len: usize,
    pub(crate) tokens: u64,
    pub(crate) assessment: Assessment,
    pub(crate) action: Option<(Trigger, Stage)>,
    pub(crate) warnings: TriggerSet,
    /// Conversation turns of the session.
    pub(crate) turns: u32,
    /// Conversation turns since the last reset.
    pub(crate) turns_since_reset: u32,
    /// LLM calls of the session.
    pub(crate) llm_calls: u32,
    pub(crate) resets: u32,
    pub(crate) requested_reason: Option<String>,
    /// An earlier compaction of this episode already could remove nothing
    /// (and warned).
    pub(crate) stuck: bool,
}

/// `effective[from..to]` as two slices, where the effective history is
/// `raw` with its covered prefix replaced by `rem`'s replacement.
fn view<'a>(
    raw: &'a [Message],
    rem: Option<&'a RememberedReset>,
    from: usize,
    to: usize,
) -> (&'a [Message], &'a [Message]) {
    let (head, tail): (&[Message], &[Message]) = match rem {
        None => (&[], raw),
        Some(r) => (&r.replacement, raw.get(r.covered_len()..).unwrap_or(&[])),
    };
    let hl = head.len();
    let to = to.max(from);
    (
        head.get(from.min(hl)..to.min(hl)).unwrap_or(&[]),
        tail.get(from.saturating_sub(hl)..to.saturating_sub(hl))
            .unwrap_or(&[]),
    )
}

/// What the new messages of a call add: estimated tokens, user messages
/// (conversation turns) and the fingerprint of the last user message.
struct Added {
    tokens: u64,
    user_turns: u32,
    latest_user: Option<u32>,
}

/// The 32-bit fingerprint of a user message that tells a new turn from a
/// repeated one.
fn user_fingerprint(m: &Message) -> u32 {
    let h = message_hash(m);
    (h ^ (h >> 32)) as u32
}

/// Scans `effective[from..to]` (the messages not yet accounted) once.
fn scan_added(
    est: &dyn TokenEstimator,
    raw: &[Message],
    rem: Option<&RememberedReset>,
    from: usize,
    to: usize,
) -> Added {
    let (a, b) = view(raw, rem, from, to);
    let mut added = Added {
        tokens: 0,
        user_turns: 0,
        latest_user: None,
    };
    let mut latest = None;
    for m in a.iter().chain(b) {
        added.tokens += u64::from(est.estimate_message(m));
        if m.role == Role::User {
            added.user_turns = added.user_turns.saturating_add(1);
            latest = Some(m);
        }
    }
    added.latest_user = latest.map(user_fingerprint);
    added
}

/// Estimated tokens of `effective[from..to]`.
fn estimate_view(
    est: &dyn TokenEstimator,
    raw: &[Message],
    rem: Option<&RememberedReset>,
    from: usize,
    to: usize,
) -> u64 {
    let (a, b) = view(raw, rem, from, to);
    a.iter()
        .chain(b)
        .map(|m| u64::from(est.estimate_message(m)))
        .sum()
}

/// The fingerprint of the latest user message of `effective[..to]`
/// (a backward scan to it: only on calls whose history did not grow).
fn latest_user_view(raw: &[Message], rem: Option<&RememberedReset>, to: usize) -> Option<u32> {
    let (a, b) = view(raw, rem, 0, to);
    a.iter()
        .chain(b)
        .rev()
        .find(|m| m.role == Role::User)
        .map(user_fingerprint)
}

/// The pre-call read-modify-write: count the call, recognise a remembered
/// reset, account tokens and count user turns for new messages only,
/// evaluate the policy. O(new messages); never rescans the history unless it
/// shrank (then once).
///
/// A conversation turn is a user message: a call whose new messages include
/// user messages adds that many turns, a call that only adds tool results or
/// retries adds none. When the history did not grow (a retry, a caller
/// sliding a window or trimming), a turn counts when the latest user message
/// differs from the last one seen.
pub(crate) fn pre_call(
    st: &mut SessionState,
    raw: &[Message],
    est: &dyn TokenEstimator,
    policy: &BrittlenessPolicy,
    window: u32,
) -> Pre {
    st.begin_call();
    let remembered = st.remembered_arc();
    let resent = match remembered.as_ref().map(|r| (r.classify(raw), r)) {
        Some((Match::Resent, r)) => Some(r.clone()),
        Some((Match::Adopted, _)) => None,
        Some((Match::None, _)) => {
            st.forget_remembered();
            None
        }
        None => None,
    };
    let caller_len = match &resent {
        Some(r) => r.replacement.len() + raw.len().saturating_sub(r.covered_len()),
        None => raw.len(),
    };
    let (base, accounted) = st.accounting();
    let tokens = if accounted < caller_len {
        let added = scan_added(est, raw, resent.as_deref(), accounted, caller_len);
        if let Some(latest) = added.latest_user {
            st.add_turns(added.user_turns, latest);
        }
        base + added.tokens
    } else if accounted == caller_len {
        // Nothing new since the last call went out: a retry after an error,
        // or concurrent calls of one session with histories of one length.
        if let Some(latest) = latest_user_view(raw, resent.as_deref(), caller_len) {
            st.observe_latest_user(latest);
        }
        base
    } else {
        if let Some(latest) = latest_user_view(raw, resent.as_deref(), caller_len) {
            st.observe_latest_user(latest);
        }
        if accounted - caller_len <= 1 {
            // The same history again (a retry), or a sliding window that
            // dropped as many messages as it added: the provider's last
            // count, which also covers its reply, is the best (slightly high)
            // figure. No rescan.
            base
        } else {
            // The history shrank (the caller trimmed it itself): recount once.
            estimate_view(est, raw, resent.as_deref(), 0, caller_len)
        }
    };
    st.set_accounting(tokens, caller_len);
    st.set_context_tokens(tokens);
    let (recent_errors, calls_seen) = st.recent_errors(policy.error_window());
    let signals = Signals {
        turns_since_reset: st.turns_since_reset(),
        context_tokens: tokens,
        window,
        consecutive_errors: st.consecutive_errors(),
        recent_errors,
        calls_seen,
        latency_drift: st.latency_drift(policy.min_latency_samples()),
        forced: st.forced_trigger(),
    };
    let assessment = policy.evaluate(&signals);
    st.set_brittleness(assessment.score);
    let action = assessment.action.map(|(t, stage)| {
        if policy.respawn_due(st.resets()) {
            (t, Stage::Respawn)
        } else {
            (t, stage)
        }
    });
    if action.is_none() {
        st.set_compaction_stuck(false);
    }
    let rising = st.rising_warnings(assessment.active, assessment.calm);
    let mut warnings = TriggerSet::EMPTY;
    for t in rising.iter() {
        if policy.plan().stage(t) == Stage::Warn {
            warnings.insert(t);
        }
    }
    Pre {
        resent,
        caller_len,
        tokens,
        assessment,
        action,
        warnings,
        turns: st.turns(),
        turns_since_reset: st.turns_since_reset(),
        llm_calls: st.llm_calls(),
        resets: st.resets(),
        requested_reason: st.pending_reset().map(str::to_owned),
        stuck: st.compaction_stuck(),
    }
}
