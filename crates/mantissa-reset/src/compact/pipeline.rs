//! The compaction pipeline the layer runs on a reset: from the policy's
//! stage upward — clear old tool results → summarize (falling back to
//! trimming) → clear older tool results of the current turn — or the respawn
//! stage. Each stage returns a [`Compacted`]; the pipeline only sequences
//! them.

use std::sync::Arc;

use mantissa_core::{LlmRequest, Message, SessionId, TokenEstimator, classify};
use tower::ServiceExt;

use super::Cut;
use crate::config::{Config, Summarizer};
use crate::policy::{Stage, Strategy};

/// The result of a compaction stage.
#[derive(Debug)]
pub(crate) struct Compacted {
    pub(crate) messages: Vec<Message>,
    pub(crate) strategy: Strategy,
    pub(crate) note: Option<String>,
    pub(crate) new_session: Option<SessionId>,
    /// Whether a stage changed the history (`messages` differs from the
    /// effective history the stages started from).
    pub(crate) changed: bool,
}

impl Compacted {
    /// A stage that changed the history.
    fn done(messages: Vec<Message>, strategy: Strategy, note: Option<String>) -> Self {
        Self {
            messages,
            strategy,
            note,
            new_session: None,
            changed: true,
        }
    }
}

/// Runs the stages from `stage` upward until the target is met (clear old
/// tool results → summarize → trim → clear older tool results of the current
/// turn), or the respawn stage. `resets` is the session's resets so far.
pub(crate) async fn compact_stages<St>(
    cfg: &Config<St>,
    req: &LlmRequest,
    effective: &Arc<Vec<Message>>,
    stage: Stage,
    target: u64,
    resets: u32,
) -> Compacted {
    let est: &dyn TokenEstimator = &*cfg.estimator;
    let current: Vec<Message> = effective.to_vec();
    if stage == Stage::Respawn {
        let new_session = cfg.respawner.respawn(&req.session, resets.saturating_add(1));
        let mut out = summarize_or_trim(cfg, req, current, 1, target).await;
        escalate_within_turn(cfg, &mut out, target);
        out.strategy = Strategy::Respawn;
        out.new_session = Some(new_session);
        return out;
    }
    let (current, cleared_old) = match stage {
        Stage::ClearToolResults => match cfg.clearer.clear(&current, est) {
            Some(cleared) if super::tokens(est, &cleared) <= target => {
                return Compacted::done(cleared, Strategy::ClearToolResults, None);
            }
            Some(cleared) => (cleared, true),
            None => (current, false),
        },
        _ => (current, false),
    };
    let mut out = summarize_or_trim(cfg, req, current, cfg.summary.keep_turns, target).await;
    if cleared_old && !out.changed {
        // Older turns could not be summarized or trimmed: what was done is
        // the clearing.
        out.strategy = Strategy::ClearToolResults;
        out.changed = true;
    }
    escalate_within_turn(cfg, &mut out, target);
    out
}

/// The last resort when the stages left the history over the target: clear
/// older tool results of the current turn too (a long tool loop under one
/// user message has no older turn to summarize or trim). Placeholders
/// replace contents only, so every tool call keeps its result.
fn escalate_within_turn<St>(cfg: &Config<St>, out: &mut Compacted, target: u64) {
    let est: &dyn TokenEstimator = &*cfg.estimator;
    if super::tokens(est, &out.messages) <= target {
        return;
    }
    let Some(cleared) = cfg.clearer.clear_current_turn(&out.messages, est) else {
        return;
    };
    out.messages = cleared;
    if out.changed {
        let also = "older tool results of the current turn cleared too";
        out.note = Some(match out.note.take() {
            Some(n) => format!("{n}; {also}"),
            None => also.to_owned(),
        });
    } else {
        out.strategy = Strategy::ClearToolResults;
        out.note = Some(
            "no older turn to summarize or trim; older tool results of the current turn cleared".to_owned(),
        );
        out.changed = true;
    }
}

/// Summarizes the turns older than the kept ones; when that is not possible
/// (no summarizer, nothing to summarize, the summarizer failed), trims them
/// instead and says why in the note.
async fn summarize_or_trim<St>(
    cfg: &Config<St>,
    req: &LlmRequest,
    current: Vec<Message>,
    keep_turns: usize,
    target: u64,
) -> Compacted {
    let fallback_reason = match &cfg.summarizer {
        None => "no summarizer configured".to_owned(),
        Some(svc) => match summarize(cfg, svc, req, &current, keep_turns, target).await {
            Ok(done) => return done,
            Err(why) => why,
        },
    };
    trim(cfg, current, keep_turns, target, &fallback_reason)
}

/// The summarize stage: one summary message in place of the turns before the
/// cut, trimmed further if the summary alone does not fit. `Err` says why
/// there is no summary.
async fn summarize<St>(
    cfg: &Config<St>,
    svc: &Summarizer,
    req: &LlmRequest,
    current: &[Message],
    keep_turns: usize,
    target: u64,
) -> Result<Compacted, String> {
    let est: &dyn TokenEstimator = &*cfg.estimator;
    let removable = |m: &Message| !super::is_pinned(m);
    let reserve = u64::from(cfg.summary.max_tokens);
    let cut = super::choose_cut(current, est, keep_turns, target, reserve, removable)
        .ok_or_else(|| "nothing older than the kept turns to summarize".to_owned())?;
    let (summary, count) = ask_summarizer(cfg, svc, req, current, cut).await?;
    let summary = super::summary_message(format!(
        "Summary of the earlier conversation ({count} messages):\n{summary}"
    ));
    let (mut messages, _) = super::apply_cut(current, cut, summary, removable);
    let mut note = None;
    if super::tokens(est, &messages) > target
        && let Some((trimmed, _)) =
            super::trim(&messages, est, target, keep_turns, "summary alone did not fit")
    {
        messages = trimmed;
        note = Some("the summary did not fit the target; older turns trimmed".to_owned());
    }
    Ok(Compacted::done(messages, Strategy::Summarize, note))
}

/// Sends the transcript before `cut` to the summarizer (low tier, bounded
/// tokens, under the summary timeout). Returns the summary text and how many
/// messages it covers, or why there is none.
async fn ask_summarizer<St>(
    cfg: &Config<St>,
    svc: &Summarizer,
    req: &LlmRequest,
    current: &[Message],
    cut: Cut,
) -> Result<(String, usize), String> {
    let removable = |m: &Message| !super::is_pinned(m);
    let region = || current[..cut.cut].iter().filter(|m| removable(m));
    let count = region().count();
    let text = super::transcript(region(), cfg.summary.max_message_chars);
    let mut sreq = LlmRequest::new(
        req.session.clone(),
        req.agent.clone(),
        vec![
            Message::system(cfg.summary.instruction_text()),
            Message::user(text),
        ],
    );
    sreq.tier = cfg.summary.tier.clone();
    sreq.params.max_tokens = Some(cfg.summary.max_tokens);
    sreq.metadata
        .insert("mantissa_purpose".to_owned(), "summary".to_owned());
    let call = svc.clone().oneshot(sreq);
    match tokio::time::timeout(cfg.summary.timeout, call).await {
        Ok(Ok(resp)) if !resp.message.text().trim().is_empty() => {
            Ok((resp.message.text().trim().to_owned(), count))
        }
        Ok(Ok(_)) => Err("summarizer returned an empty summary".to_owned()),
        Ok(Err(e)) => Err(format!("summarizer failed ({})", classify(&*e))),
        Err(_) => Err(format!("summarizer timed out after {:?}", cfg.summary.timeout)),
    }
}

/// The trim stage: drops the oldest turns to fit; `why` (the reason there is
/// no summary) goes into the note.
fn trim<St>(cfg: &Config<St>, current: Vec<Message>, keep_turns: usize, target: u64, why: &str) -> Compacted {
    let est: &dyn TokenEstimator = &*cfg.estimator;
    match super::trim(&current, est, target, keep_turns, why) {
        Some((messages, _)) => {
            Compacted::done(messages, Strategy::Trim, Some(format!("{why}; trimmed instead")))
        }
        None => Compacted {
            messages: current,
            strategy: Strategy::Trim,
            note: Some(format!(
                "{why}; nothing could be trimmed without cutting the latest turn"
            )),
            new_session: None,
            changed: false,
        },
    }
}
