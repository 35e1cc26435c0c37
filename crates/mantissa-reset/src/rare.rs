//! The rare path of a call: the warn stage and the compaction stages, run
//! only when the pre-call update found a rising warning or an action. It
//! compacts (through `compact::compact_stages`), commits a reset to the store,
//! builds the notices and hands them to the [`Emitter`](crate::emit::Emitter).
//! A compaction that removes nothing is not a reset: the call goes out
//! unchanged and the compaction trigger warns instead, once per episode.

use std::sync::Arc;

use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, SessionId, TokenEstimator};
use tokio::time::Instant;

use crate::compact::{self, Compacted, compact_stages};
use crate::config::Config;
use crate::emit::Emitter;
use crate::error::ContextBudgetExceeded;
use crate::fingerprint::{PrefixFingerprint, first_difference};
use crate::notice::{ContextReset, ContextWarning};
use crate::policy::{Stage, Strategy, Trigger, TriggerSet};
use crate::pre_call::Pre;
use crate::session::{RememberedReset, SessionState};
use crate::store::SessionStore;

/// The notices of a call, attached to its response.
pub(crate) struct Notices {
    reset: Option<ContextReset>,
    warning: Option<ContextWarning>,
}

impl Notices {
    /// Puts the notices into the response's extensions.
    pub(crate) fn attach(self, resp: &mut LlmResponse) {
        if let Some(r) = self.reset {
            resp.extensions.insert(r);
        }
        if let Some(w) = self.warning {
            resp.extensions.insert(w);
        }
    }
}

/// What the rare path hands back to the call.
pub(crate) struct Rare {
    /// The request to send (compacted, perhaps with a note, perhaps for a
    /// respawned session).
    pub(crate) req: LlmRequest,
    /// The caller's history length after a reset (the compacted history).
    pub(crate) caller_len: Option<usize>,
    pub(crate) notices: Box<Notices>,
}

/// Runs the compaction stages for the pre-call `action`, then the warn
/// stage, with their metrics, events and the commit of a reset.
pub(crate) async fn warn_and_compact<St: SessionStore>(
    cfg: &Config<St>,
    emit: &Emitter,
    mut req: LlmRequest,
    raw: &Arc<Vec<Message>>,
    pre: Pre,
    window: u32,
) -> Result<Rare, BoxError> {
    let mut warn = Warn {
        triggers: pre.warnings,
        note: None,
    };
    let mut caller_len = None;
    let mut reset = None;
    if let Some((trigger, stage)) = pre.action {
        match compact(cfg, emit, &req, raw, &pre, (trigger, stage), window).await? {
            Compaction::Reset(notice) => {
                caller_len = Some(notice.history.len());
                req.messages = notice.history.clone();
                if let Some(new) = &notice.new_session {
                    req.session = new.clone();
                }
                reset = Some(notice);
            }
            Compaction::RemovedNothing(why) => stuck(cfg, &req, &pre, trigger, why, &mut warn).await,
        }
    }
    let warning = warning(&req, &pre, window, warn);
    if let Some(w) = &warning {
        emit.warning(&req.agent, w);
        if let Some(text) = cfg.note.note(w) {
            let mut m = Message::system(text);
            m.name = Some("mantissa_note".to_owned());
            req.messages_mut().push(m);
        }
    }
    Ok(Rare {
        req,
        caller_len,
        notices: Box::new(Notices { reset, warning }),
    })
}

/// The warning being assembled: its triggers and its note.
struct Warn {
    triggers: TriggerSet,
    note: Option<String>,
}

/// What the compaction stages came to.
enum Compaction {
    /// A reset, committed to the store.
    Reset(ContextReset),
    /// No stage removed anything (why).
    RemovedNothing(String),
}

/// Runs the stages, refuses an over-budget result when the layer is set to,
/// and commits the reset when something was removed.
async fn compact<St: SessionStore>(
    cfg: &Config<St>,
    emit: &Emitter,
    req: &LlmRequest,
    raw: &Arc<Vec<Message>>,
    pre: &Pre,
    (trigger, stage): (Trigger, Stage),
    window: u32,
) -> Result<Compaction, BoxError> {
    let est: &dyn TokenEstimator = &*cfg.estimator;
    let started = Instant::now();
    let target = cfg.policy.target_tokens(window);
    let effective = req.messages.clone();
    let mut compacted = compact_stages(cfg, req, &effective, stage, target, pre.resets).await;
    let tokens_after = compact::tokens(est, &compacted.messages);
    let fits = tokens_after <= target;
    if !fits && compacted.note.is_none() {
        compacted.note = Some(format!(
            "the system messages and the latest turn alone need about {tokens_after} tokens, above the target of \
             {target}"
        ));
    }
    if !fits && cfg.fail_over_budget {
        return Err(Box::new(ContextBudgetExceeded {
            tokens: tokens_after,
            target,
        }));
    }
    // A reset must remove something: fewer messages, or fewer tokens on the
    // same (estimated) basis.
    let reduced = compacted.changed
        && (compacted.messages.len() < effective.len() || tokens_after < compact::tokens(est, &effective));
    if !reduced {
        let why = compacted
            .note
            .unwrap_or_else(|| "no stage changed the history".to_owned());
        return Ok(Compaction::RemovedNothing(why));
    }
    let Compacted {
        messages,
        strategy,
        note,
        new_session,
        ..
    } = compacted;
    let history = Arc::new(messages);
    let remembered = remember(raw, &history, trigger, strategy, tokens_after);
    commit(
        cfg,
        &req.session,
        new_session.as_ref(),
        remembered,
        tokens_after,
        history.len(),
    )
    .await;
    let notice = ContextReset {
        session: req.session.clone(),
        new_session,
        reason: trigger,
        requested_reason: pre.requested_reason.clone(),
        strategy,
        turns: pre.turns,
        llm_calls: pre.llm_calls,
        tokens_before: pre.tokens,
        tokens_after,
        messages_before: effective.len(),
        messages_after: history.len(),
        target_tokens: target,
        fits,
        note,
        history,
    };
    emit.reset(&req.agent, &notice, started.elapsed());
    Ok(Compaction::Reset(notice))
}

/// What the session remembers of a reset, so that a caller that resends its
/// full history gets the compacted one again (`None` when the compacted
/// history is the raw one).
fn remember(
    raw: &[Message],
    history: &Arc<Vec<Message>>,
    reason: Trigger,
    strategy: Strategy,
    tokens_after: u64,
) -> Option<Arc<RememberedReset>> {
    let distinguish = first_difference(raw, history);
    (history.as_slice() != raw).then(|| {
        Arc::new(RememberedReset {
            covered: PrefixFingerprint::of(raw, distinguish),
            replacement_fp: PrefixFingerprint::of(history, distinguish),
            replacement: history.clone(),
            replacement_tokens: tokens_after,
            reason,
            strategy,
        })
    })
}

/// Commits a reset to the store, for the session and for a respawned one.
async fn commit<St: SessionStore>(
    cfg: &Config<St>,
    session: &SessionId,
    new_session: Option<&SessionId>,
    remembered: Option<Arc<RememberedReset>>,
    tokens_after: u64,
    messages_after: usize,
) {
    let store = &cfg.store;
    let at = Instant::now();
    let commit =
        |st: &mut SessionState| st.commit_reset(at, remembered.clone(), tokens_after, messages_after);
    if let Err(e) = store.update(session, at, commit).await {
        tracing::warn!(error = %e, "session store failed to record a reset");
    }
    if let Some(new) = new_session
        && let Err(e) = store.update(new, at, commit).await
    {
        tracing::warn!(error = %e, "session store failed to seed a respawned session");
    }
}

/// A compaction that removed nothing: marks the episode stuck and, the first
/// time, turns the compaction trigger into a warning saying why.
async fn stuck<St: SessionStore>(
    cfg: &Config<St>,
    req: &LlmRequest,
    pre: &Pre,
    trigger: Trigger,
    why: String,
    warn: &mut Warn,
) {
    let committed = cfg
        .store
        .update(&req.session, Instant::now(), |st| st.set_compaction_stuck(true))
        .await;
    if let Err(e) = committed {
        tracing::warn!(error = %e, "session store failed to record a compaction that removed nothing");
    }
    if pre.stuck {
        tracing::debug!(
            target: "mantissa_reset",
            session = %req.session,
            reason = trigger.as_str(),
            "compaction still removes nothing; no reset"
        );
    } else {
        warn.triggers.insert(trigger);
        warn.note = Some(format!(
            "{trigger} asked for a compaction but nothing could be removed, so no reset was done ({why})"
        ));
    }
}

/// The warning of the call, if any trigger warns; the turns trigger adds a
/// note suggesting a reset.
fn warning(req: &LlmRequest, pre: &Pre, window: u32, warn: Warn) -> Option<ContextWarning> {
    let Warn { triggers, mut note } = warn;
    if triggers.is_empty() {
        return None;
    }
    if triggers.contains(Trigger::Turns) {
        let turns_note = format!(
            "{} user turns since the last reset ({} LLM calls in the session); consider a reset: start a new \
             session or request one (SessionControl::request_reset)",
            pre.turns_since_reset, pre.llm_calls
        );
        note = Some(match note {
            Some(n) => format!("{n}; {turns_note}"),
            None => turns_note,
        });
    }
    Some(ContextWarning {
        session: req.session.clone(),
        triggers,
        score: pre.assessment.score,
        context_tokens: pre.tokens,
        window,
        turns: pre.turns,
        llm_calls: pre.llm_calls,
        note,
    })
}
