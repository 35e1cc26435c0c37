//! The [`Reset`] service and its response future.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use mantissa_core::catalog::{self, labels};
use mantissa_core::{
    AgentName, BoxError, EventKind, HealthEvent, LlmRequest, LlmResponse, Message, Outcome, SessionId,
    TokenEstimator, classify,
};
use parking_lot::RwLock;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use crate::compact;
use crate::fingerprint::{PrefixFingerprint, first_difference};
use crate::layer::Config;
use crate::notice::{ContextReset, ContextWarning};
use crate::policy::{Assessment, BrittlenessPolicy, Signals, Stage, Strategy, Trigger, TriggerSet};
use crate::store::{Match, RememberedReset, SessionState, SessionStore};

/// The error of a call whose context could not be compacted to the target
/// budget, when the layer is configured to fail rather than send it anyway
/// ([`ResetLayer::fail_when_over_budget`](crate::ResetLayer::fail_when_over_budget)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("context over budget after compaction: {tokens} tokens, target {target}")]
pub struct ContextBudgetExceeded {
    /// Tokens after compaction.
    pub tokens: u64,
    /// The target budget.
    pub target: u64,
}

/// Agents whose brittleness histogram handle is cached (beyond this, handles
/// are looked up per call).
const HISTOGRAM_CACHE_LIMIT: usize = 1024;

pub(crate) struct Shared<St> {
    pub(crate) cfg: Config<St>,
    // Agent names come from the application's configuration, not from end
    // users, so a fast unkeyed hash is fine here.
    histograms: RwLock<HashMap<AgentName, metrics::Histogram, foldhash::fast::FixedState>>,
    published_sessions: AtomicUsize,
}

impl<St> Shared<St> {
    pub(crate) fn new(cfg: Config<St>) -> Self {
        Self {
            cfg,
            histograms: RwLock::new(HashMap::default()),
            published_sessions: AtomicUsize::new(usize::MAX),
        }
    }

    fn record_brittleness(&self, agent: &AgentName, score: f64) {
        if let Some(h) = self.histograms.read().get(agent.as_str()) {
            h.record(score);
            return;
        }
        let h = metrics::histogram!(catalog::SESSION_BRITTLENESS, labels::AGENT => agent.as_str().to_owned());
        h.record(score);
        let mut map = self.histograms.write();
        if map.len() < HISTOGRAM_CACHE_LIMIT {
            map.insert(agent.clone(), h);
        }
    }

    fn emit(&self, event: &HealthEvent) {
        for sink in &self.cfg.sinks {
            sink.record(event);
        }
    }
}

/// Brittleness detection and context reset for an LLM service. Built by
/// [`ResetLayer`](crate::ResetLayer); see the [crate docs](crate).
pub struct Reset<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: fmt::Debug, St> fmt::Debug for Reset<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reset")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, St> Clone for Reset<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, St> Reset<S, St> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self { inner, shared }
    }

    /// The session store.
    pub fn store(&self) -> &St {
        &self.shared.cfg.store
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The response future of [`Reset`].
///
/// A call has up to four asynchronous phases whose types depend on the store
/// and the summarizer (read-and-decide in the store, summarize, the inner
/// call, commit in the store); they run in one boxed state machine (one
/// allocation per call, measured in the `reset` bench).
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<LlmResponse, BoxError>> + Send + 'static>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<LlmResponse, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, St> Service<LlmRequest> for Reset<S, St>
where
    S: Service<LlmRequest, Response = LlmResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: SessionStore,
{
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            inner: Box::pin(run(self.shared.clone(), inner, req)),
        }
    }
}

/// What the pre-call update decided.
struct Pre {
    resent: Option<Arc<RememberedReset>>,
    caller_len: usize,
    tokens: u64,
    assessment: Assessment,
    action: Option<(Trigger, Stage)>,
    warnings: TriggerSet,
    turns: u32,
    resets: u32,
    requested_reason: Option<String>,
}

/// Estimated tokens of `effective[from..to]`, where the effective history is
/// `raw` with its covered prefix replaced by `rem`'s replacement.
fn estimate_view(
    est: &dyn TokenEstimator,
    raw: &[Message],
    rem: Option<&RememberedReset>,
    from: usize,
    to: usize,
) -> u64 {
    let sum = |msgs: &[Message]| -> u64 { msgs.iter().map(|m| u64::from(est.estimate_message(m))).sum() };
    match rem {
        None => raw.get(from..to).map(sum).unwrap_or(0),
        Some(r) => {
            let rl = r.replacement.len();
            let mut total = 0;
            if from < rl {
                total += r.replacement.get(from..rl.min(to)).map(sum).unwrap_or(0);
            }
            if to > rl {
                let a = from.max(rl) - rl + r.covered_len();
                let b = to - rl + r.covered_len();
                total += raw.get(a..b).map(sum).unwrap_or(0);
            }
            total
        }
    }
}

/// The pre-call read-modify-write: count the turn, recognise a remembered
/// reset, account tokens for new messages only, evaluate the policy. O(new
/// messages); never rescans the history unless it shrank (then once).
fn pre_call(
    st: &mut SessionState,
    raw: &[Message],
    est: &dyn TokenEstimator,
    policy: &BrittlenessPolicy,
    window: u32,
) -> Pre {
    st.begin_turn();
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
    let tokens = if accounted <= caller_len {
        base + estimate_view(est, raw, resent.as_deref(), accounted, caller_len)
    } else if accounted - caller_len <= 1 {
        // The same history again (a retry), or a sliding window that dropped
        // as many messages as it added: the provider's last count, which also
        // covers its reply, is the best (slightly high) figure. No rescan.
        base
    } else {
        // The history shrank (the caller trimmed it itself): recount once.
        estimate_view(est, raw, resent.as_deref(), 0, caller_len)
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
        resets: st.resets(),
        requested_reason: st.pending_reset().map(str::to_owned),
    }
}

/// The result of the compaction stages.
struct Compacted {
    messages: Vec<Message>,
    strategy: Strategy,
    note: Option<String>,
    new_session: Option<SessionId>,
}

async fn run<S, St>(shared: Arc<Shared<St>>, inner: S, mut req: LlmRequest) -> Result<LlmResponse, BoxError>
where
    S: Service<LlmRequest, Response = LlmResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: SessionStore,
{
    let mut inner = inner;
    let cfg = &shared.cfg;
    let now = Instant::now();
    let window = cfg.windows.resolve(&req);
    let raw = req.messages.clone();
    let est: &dyn TokenEstimator = &*cfg.estimator;
    let pre = cfg
        .store
        .update(&req.session, now, |st| {
            pre_call(st, &raw, est, &cfg.policy, window)
        })
        .await;
    let pre = match pre {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "session store failed; call goes out untracked");
            return inner.call(req).await.map_err(Into::into);
        }
    };
    let len = cfg.store.len();
    if shared.published_sessions.swap(len, Ordering::Relaxed) != len {
        metrics::gauge!(catalog::ACTIVE_SESSIONS).set(len as f64);
    }
    shared.record_brittleness(&req.agent, pre.assessment.score);

    // The effective history: the remembered replacement plus what came after.
    if let Some(rem) = &pre.resent {
        let tail = raw.get(rem.covered_len()..).unwrap_or(&[]);
        let mut v = Vec::with_capacity(rem.replacement.len() + tail.len());
        v.extend_from_slice(&rem.replacement);
        v.extend_from_slice(tail);
        req.messages = Arc::new(v);
    }
    let mut caller_len = pre.caller_len;

    // Warnings and compaction are rare: they run in their own boxed future so
    // that the common path's future stays small.
    let mut started = now;
    let mut notices = None;
    if !pre.warnings.is_empty() || pre.action.is_some() {
        let rare = Box::pin(warn_and_compact(&shared, req, &raw, pre, window)).await?;
        req = rare.req;
        caller_len = rare.caller_len.unwrap_or(caller_len);
        notices = Some(rare.notices);
        started = Instant::now();
    }

    let session = req.session.clone();
    let result = inner.call(req).await.map_err(Into::into);
    let done = Instant::now();
    let latency_ms = done.saturating_duration_since(started).as_secs_f64() as f32 * 1000.0;
    let warmup = cfg.policy.min_latency_samples();
    let committed = match &result {
        Ok(resp) => {
            let usage = resp.usage;
            let streaming = resp.is_streaming();
            cfg.store
                .update(&session, done, |st| {
                    st.record_llm(None);
                    st.record_latency(latency_ms, warmup);
                    if !streaming && usage.input_tokens > 0 {
                        // The provider's count covers what was sent; the reply
                        // is the next message the caller will send back.
                        st.set_accounting(
                            usage.input_tokens.saturating_add(usage.output_tokens),
                            caller_len + 1,
                        );
                    }
                })
                .await
        }
        Err(e) => {
            let class = classify(&**e);
            cfg.store
                .update(&session, done, |st| st.record_llm(Some(class)))
                .await
        }
    };
    if let Err(e) = committed {
        tracing::warn!(error = %e, "session store failed to record a call outcome");
    }
    let mut resp = result?;
    if let Some(n) = notices {
        let Notices { reset, warning } = *n;
        if let Some(r) = reset {
            resp.extensions.insert(r);
        }
        if let Some(w) = warning {
            resp.extensions.insert(w);
        }
    }
    Ok(resp)
}

struct Notices {
    reset: Option<ContextReset>,
    warning: Option<ContextWarning>,
}

struct Rare {
    req: LlmRequest,
    caller_len: Option<usize>,
    notices: Box<Notices>,
}

/// The warn stage and the compaction stages, with their metrics, events and
/// the commit of a reset.
async fn warn_and_compact<St: SessionStore>(
    shared: &Shared<St>,
    mut req: LlmRequest,
    raw: &Arc<Vec<Message>>,
    pre: Pre,
    window: u32,
) -> Result<Rare, BoxError> {
    let cfg = &shared.cfg;
    let est: &dyn TokenEstimator = &*cfg.estimator;
    let mut caller_len = None;

    // Warn stage.
    let mut warning = None;
    if !pre.warnings.is_empty() {
        let w = ContextWarning {
            session: req.session.clone(),
            triggers: pre.warnings,
            score: pre.assessment.score,
            context_tokens: pre.tokens,
            window,
            turns: pre.turns,
        };
        for t in pre.warnings.iter() {
            metrics::counter!(
                catalog::CONTEXT_WARNINGS_TOTAL,
                labels::AGENT => req.agent.as_str().to_owned(),
                labels::REASON => t.as_str()
            )
            .increment(1);
            let mut ev = HealthEvent::now(
                req.agent.clone(),
                req.session.clone(),
                EventKind::ContextWarning,
                t.as_str(),
                Outcome::Success,
                Duration::ZERO,
            );
            ev.detail = Some(format!(
                "score {:.2}, context {} of {} tokens, turn {}",
                w.score, w.context_tokens, window, w.turns
            ));
            shared.emit(&ev);
        }
        tracing::event!(
            target: "mantissa_reset",
            tracing::Level::INFO,
            mantissa.warning.score = w.score,
            mantissa.warning.context_tokens = w.context_tokens,
            mantissa.warning.turns = w.turns,
            "{w}"
        );
        warning = Some(w);
    }

    // Compaction stages.
    let mut reset_notice = None;
    if let Some((trigger, stage)) = pre.action {
        let started = Instant::now();
        let target = cfg.policy.target_tokens(window);
        let effective = req.messages.clone();
        let compacted = compact_stages(shared, &req, &effective, stage, target, pre.resets).await;
        let tokens_after = compact::tokens(est, &compacted.messages);
        let fits = tokens_after <= target;
        let mut note = compacted.note;
        if !fits && note.is_none() {
            note = Some(format!(
                "the system messages and the latest turn alone need about {tokens_after} tokens, above the \
                 target of {target}"
            ));
        }
        if !fits && cfg.fail_over_budget {
            return Err(Box::new(ContextBudgetExceeded {
                tokens: tokens_after,
                target,
            }));
        }
        let history = Arc::new(compacted.messages);
        let distinguish = first_difference(raw, &history);
        let remembered = (history.as_slice() != raw.as_slice()).then(|| {
            Arc::new(RememberedReset {
                covered: PrefixFingerprint::of(raw, distinguish),
                replacement_fp: PrefixFingerprint::of(&history, distinguish),
                replacement: history.clone(),
                replacement_tokens: tokens_after,
                reason: trigger,
                strategy: compacted.strategy,
            })
        });
        let commit_at = Instant::now();
        let committed = cfg
            .store
            .update(&req.session, commit_at, |st| {
                st.commit_reset(commit_at, remembered.clone(), tokens_after, history.len())
            })
            .await;
        if let Err(e) = committed {
            tracing::warn!(error = %e, "session store failed to record a reset");
        }
        if let Some(new) = &compacted.new_session {
            let seeded = cfg
                .store
                .update(new, commit_at, |st| {
                    st.commit_reset(commit_at, remembered.clone(), tokens_after, history.len())
                })
                .await;
            if let Err(e) = seeded {
                tracing::warn!(error = %e, "session store failed to seed a respawned session");
            }
        }
        let agent = req.agent.as_str().to_owned();
        metrics::counter!(
            catalog::CONTEXT_RESETS_TOTAL,
            labels::AGENT => agent.clone(),
            labels::REASON => trigger.as_str(),
            labels::STRATEGY => compacted.strategy.as_str()
        )
        .increment(1);
        metrics::histogram!(catalog::SESSION_TURNS_AT_RESET, labels::AGENT => agent.clone())
            .record(f64::from(pre.turns));
        metrics::histogram!(catalog::SESSION_CONTEXT_TOKENS_AT_RESET, labels::AGENT => agent)
            .record(pre.tokens as f64);
        let notice = ContextReset {
            session: req.session.clone(),
            new_session: compacted.new_session.clone(),
            reason: trigger,
            requested_reason: pre.requested_reason.clone(),
            strategy: compacted.strategy,
            turns: pre.turns,
            tokens_before: pre.tokens,
            tokens_after,
            messages_before: effective.len(),
            messages_after: history.len(),
            target_tokens: target,
            fits,
            note,
            history: history.clone(),
        };
        let mut ev = HealthEvent::now(
            req.agent.clone(),
            req.session.clone(),
            EventKind::ContextReset,
            compacted.strategy.as_str(),
            Outcome::Success,
            started.elapsed(),
        );
        ev.detail = Some(notice.to_string());
        ev.reason = Some(Arc::from(trigger.as_str()));
        shared.emit(&ev);
        // A span event on the caller's current span (exported by `mantissa::otel`).
        tracing::event!(
            target: "mantissa_reset",
            tracing::Level::INFO,
            mantissa.reset.reason = notice.reason.as_str(),
            mantissa.reset.strategy = notice.strategy.as_str(),
            mantissa.reset.tokens_before = notice.tokens_before,
            mantissa.reset.tokens_after = notice.tokens_after,
            mantissa.reset.turns = notice.turns,
            "{notice}"
        );
        caller_len = Some(history.len());
        req.messages = history;
        if let Some(new) = compacted.new_session {
            req.session = new;
        }
        reset_notice = Some(notice);
    }

    if let Some(w) = &warning
        && let Some(text) = cfg.note.note(w)
    {
        let mut m = Message::system(text);
        m.name = Some("mantissa_note".to_owned());
        req.messages_mut().push(m);
    }
    Ok(Rare {
        req,
        caller_len,
        notices: Box::new(Notices {
            reset: reset_notice,
            warning,
        }),
    })
}

/// Runs the stages from `stage` upward until the target is met (clear →
/// summarize → trim), or the respawn stage.
async fn compact_stages<St>(
    shared: &Shared<St>,
    req: &LlmRequest,
    effective: &Arc<Vec<Message>>,
    stage: Stage,
    target: u64,
    resets: u32,
) -> Compacted {
    let cfg = &shared.cfg;
    let est: &dyn TokenEstimator = &*cfg.estimator;
    let mut current: Vec<Message> = effective.to_vec();
    if stage == Stage::Respawn {
        let new_session = cfg.respawner.respawn(&req.session, resets.saturating_add(1));
        let mut out = summarize_or_trim(shared, req, current, 1, target).await;
        out.strategy = Strategy::Respawn;
        out.new_session = Some(new_session);
        return out;
    }
    if stage == Stage::ClearToolResults {
        if let Some(cleared) = cfg.clearer.clear(&current, est) {
            current = cleared;
            if compact::tokens(est, &current) <= target {
                return Compacted {
                    messages: current,
                    strategy: Strategy::ClearToolResults,
                    note: None,
                    new_session: None,
                };
            }
        }
    }
    summarize_or_trim(shared, req, current, cfg.summary.keep_turns, target).await
}

async fn summarize_or_trim<St>(
    shared: &Shared<St>,
    req: &LlmRequest,
    current: Vec<Message>,
    keep_turns: usize,
    target: u64,
) -> Compacted {
    let cfg = &shared.cfg;
    let est: &dyn TokenEstimator = &*cfg.estimator;
    let fallback_reason = match &cfg.summarizer {
        None => "no summarizer configured".to_owned(),
        Some(svc) => {
            let removable = |m: &Message| !compact::is_pinned(m);
            let reserve = u64::from(cfg.summary.max_tokens);
            match compact::choose_cut(&current, est, keep_turns, target, reserve, removable) {
                None => "nothing older than the kept turns to summarize".to_owned(),
                Some(cut) => {
                    let region = current[..cut.cut].iter().filter(|m| removable(m));
                    let count = current[..cut.cut].iter().filter(|m| removable(m)).count();
                    let text = compact::transcript(region, cfg.summary.max_message_chars);
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
                            let summary = compact::summary_message(format!(
                                "Summary of the earlier conversation ({count} messages):\n{}",
                                resp.message.text().trim()
                            ));
                            let (messages, _) = compact::apply_cut(&current, cut, summary, removable);
                            let mut note = None;
                            let mut messages = messages;
                            if compact::tokens(est, &messages) > target {
                                if let Some((trimmed, _)) = compact::trim(
                                    &messages,
                                    est,
                                    target,
                                    keep_turns,
                                    "summary alone did not fit",
                                ) {
                                    messages = trimmed;
                                    note = Some(
                                        "the summary did not fit the target; older turns trimmed".to_owned(),
                                    );
                                }
                            }
                            return Compacted {
                                messages,
                                strategy: Strategy::Summarize,
                                note,
                                new_session: None,
                            };
                        }
                        Ok(Ok(_)) => "summarizer returned an empty summary".to_owned(),
                        Ok(Err(e)) => format!("summarizer failed ({})", classify(&*e)),
                        Err(_) => format!("summarizer timed out after {:?}", cfg.summary.timeout),
                    }
                }
            }
        }
    };
    match compact::trim(&current, est, target, keep_turns, &fallback_reason) {
        Some((messages, _)) => Compacted {
            messages,
            strategy: Strategy::Trim,
            note: Some(format!("{fallback_reason}; trimmed instead")),
            new_session: None,
        },
        None => Compacted {
            messages: current,
            strategy: Strategy::Trim,
            note: Some(format!(
                "{fallback_reason}; nothing could be trimmed without cutting the latest turn"
            )),
            new_session: None,
        },
    }
}
