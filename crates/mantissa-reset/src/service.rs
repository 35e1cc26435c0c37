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
    AgentName, BoxError, EventKind, HealthEvent, LlmRequest, LlmResponse, Message, Outcome, Role, SessionId,
    TokenEstimator, classify,
};
use parking_lot::RwLock;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use crate::compact;
use crate::config::Config;
use crate::fingerprint::{PrefixFingerprint, first_difference, message_hash};
use crate::notice::{ContextReset, ContextWarning};
use crate::policy::{Assessment, BrittlenessPolicy, Signals, Stage, Strategy, Trigger, TriggerSet};
use crate::session::{Match, RememberedReset, SessionState};
use crate::store::SessionStore;

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

    /// The bounded label of `agent` (the stack's one rule).
    pub(crate) fn agent_label(&self, agent: &AgentName) -> AgentName {
        self.cfg.labels.fold(agent)
    }

    fn record_brittleness(&self, agent: &AgentName, score: f64) {
        // Keyed by the name the caller passed, labelled with its bounded
        // label: the label rule runs once per name, not per call.
        if let Some(h) = self.histograms.read().get(agent.as_str()) {
            h.record(score);
            return;
        }
        let label = self.agent_label(agent);
        let h = metrics::histogram!(catalog::SESSION_BRITTLENESS, labels::AGENT => label.as_str().to_owned());
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
    /// Conversation turns of the session.
    turns: u32,
    /// Conversation turns since the last reset.
    turns_since_reset: u32,
    /// LLM calls of the session.
    llm_calls: u32,
    resets: u32,
    requested_reason: Option<String>,
    /// An earlier compaction of this episode already could remove nothing
    /// (and warned).
    stuck: bool,
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
fn pre_call(
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

/// The result of the compaction stages.
struct Compacted {
    messages: Vec<Message>,
    strategy: Strategy,
    note: Option<String>,
    new_session: Option<SessionId>,
    /// Whether a stage changed the history (`messages` differs from the
    /// effective history the stages started from).
    changed: bool,
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
/// the commit of a reset. A compaction that removes nothing is not a reset:
/// the call goes out unchanged and the compaction trigger warns instead
/// (once per episode).
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
    let mut warn_triggers = pre.warnings;
    let mut warn_note = None;

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
        // A reset must remove something: fewer messages, or fewer tokens on
        // the same (estimated) basis.
        let reduced = compacted.changed
            && (compacted.messages.len() < effective.len()
                || tokens_after < compact::tokens(est, &effective));
        if reduced {
            let notice = commit_reset(
                shared,
                &req,
                raw,
                &pre,
                Reduced {
                    trigger,
                    started,
                    effective: &effective,
                    compacted: Compacted { note, ..compacted },
                    tokens_after,
                    target,
                    fits,
                },
            )
            .await;
            caller_len = Some(notice.history.len());
            req.messages = notice.history.clone();
            if let Some(new) = &notice.new_session {
                req.session = new.clone();
            }
            reset_notice = Some(notice);
        } else {
            let why = note.unwrap_or_else(|| "no stage changed the history".to_owned());
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
                warn_triggers.insert(trigger);
                warn_note = Some(format!(
                    "{trigger} asked for a compaction but nothing could be removed, so no reset was done ({why})"
                ));
            }
        }
    }

    // Warn stage.
    let mut warning = None;
    if !warn_triggers.is_empty() {
        if warn_triggers.contains(Trigger::Turns) {
            let turns_note = format!(
                "{} user turns since the last reset ({} LLM calls in the session); consider a reset: start a new \
                 session or request one (SessionControl::request_reset)",
                pre.turns_since_reset, pre.llm_calls
            );
            warn_note = Some(match warn_note {
                Some(n) => format!("{n}; {turns_note}"),
                None => turns_note,
            });
        }
        let w = ContextWarning {
            session: req.session.clone(),
            triggers: warn_triggers,
            score: pre.assessment.score,
            context_tokens: pre.tokens,
            window,
            turns: pre.turns,
            llm_calls: pre.llm_calls,
            note: warn_note,
        };
        emit_warning(shared, &req, &w);
        warning = Some(w);
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

/// Metrics, events and log lines of a warning.
fn emit_warning<St>(shared: &Shared<St>, req: &LlmRequest, w: &ContextWarning) {
    for t in w.triggers.iter() {
        metrics::counter!(
            catalog::CONTEXT_WARNINGS_TOTAL,
            labels::AGENT => shared.agent_label(&req.agent).as_str().to_owned(),
            labels::REASON => t.as_str()
        )
        .increment(1);
        let mut ev = HealthEvent::now(
            shared.agent_label(&req.agent),
            req.session.clone(),
            EventKind::ContextWarning,
            t.as_str(),
            Outcome::Success,
            Duration::ZERO,
        );
        let mut detail = format!(
            "score {:.2}, context {} of {} tokens, turn {}, {} LLM calls",
            w.score, w.context_tokens, w.window, w.turns, w.llm_calls
        );
        if let Some(n) = &w.note {
            detail.push_str("; ");
            detail.push_str(n);
        }
        ev.detail = Some(detail);
        shared.emit(&ev);
    }
    // A span event on the caller's current span (exported by `mantissa::otel`).
    tracing::event!(
        target: "mantissa_reset",
        tracing::Level::INFO,
        mantissa.warning.score = w.score,
        mantissa.warning.context_tokens = w.context_tokens,
        mantissa.warning.turns = w.turns,
        mantissa.warning.llm_calls = w.llm_calls,
        "{w}"
    );
    if let Some(n) = &w.note {
        // Operators' log: what the layer could not do, or suggests.
        tracing::warn!(target: "mantissa_reset", session = %w.session, "{n}");
    }
}

/// A compaction that removed something.
struct Reduced<'a> {
    trigger: Trigger,
    started: Instant,
    effective: &'a Arc<Vec<Message>>,
    compacted: Compacted,
    tokens_after: u64,
    target: u64,
    fits: bool,
}

/// Records a reset: the store commit (and the respawned session's seed),
/// metrics, the event, the span event, and the notice.
async fn commit_reset<St: SessionStore>(
    shared: &Shared<St>,
    req: &LlmRequest,
    raw: &Arc<Vec<Message>>,
    pre: &Pre,
    r: Reduced<'_>,
) -> ContextReset {
    let cfg = &shared.cfg;
    let Reduced {
        trigger,
        started,
        effective,
        compacted,
        tokens_after,
        target,
        fits,
    } = r;
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
    let agent = shared.agent_label(&req.agent).as_str().to_owned();
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
        new_session: compacted.new_session,
        reason: trigger,
        requested_reason: pre.requested_reason.clone(),
        strategy: compacted.strategy,
        turns: pre.turns,
        llm_calls: pre.llm_calls,
        tokens_before: pre.tokens,
        tokens_after,
        messages_before: effective.len(),
        messages_after: history.len(),
        target_tokens: target,
        fits,
        note: compacted.note,
        history,
    };
    let mut ev = HealthEvent::now(
        shared.agent_label(&req.agent),
        req.session.clone(),
        EventKind::ContextReset,
        notice.strategy.as_str(),
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
        mantissa.reset.llm_calls = notice.llm_calls,
        "{notice}"
    );
    notice
}

/// Runs the stages from `stage` upward until the target is met (clear old
/// tool results → summarize → trim → clear older tool results of the current
/// turn), or the respawn stage.
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
        escalate_within_turn(shared, &mut out, target);
        out.strategy = Strategy::Respawn;
        out.new_session = Some(new_session);
        return out;
    }
    let mut cleared_old = false;
    if stage == Stage::ClearToolResults
        && let Some(cleared) = cfg.clearer.clear(&current, est)
    {
        current = cleared;
        cleared_old = true;
        if compact::tokens(est, &current) <= target {
            return Compacted {
                messages: current,
                strategy: Strategy::ClearToolResults,
                note: None,
                new_session: None,
                changed: true,
            };
        }
    }
    let mut out = summarize_or_trim(shared, req, current, cfg.summary.keep_turns, target).await;
    if cleared_old && !out.changed {
        // Older turns could not be summarized or trimmed: what was done is
        // the clearing.
        out.strategy = Strategy::ClearToolResults;
        out.changed = true;
    }
    escalate_within_turn(shared, &mut out, target);
    out
}

/// The last resort when the stages left the history over the target: clear
/// older tool results of the current turn too (a long tool loop under one
/// user message has no older turn to summarize or trim). Placeholders
/// replace contents only, so every tool call keeps its result.
fn escalate_within_turn<St>(shared: &Shared<St>, out: &mut Compacted, target: u64) {
    let est: &dyn TokenEstimator = &*shared.cfg.estimator;
    if compact::tokens(est, &out.messages) <= target {
        return;
    }
    let Some(cleared) = shared.cfg.clearer.clear_current_turn(&out.messages, est) else {
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
                                changed: true,
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
            changed: true,
        },
        None => Compacted {
            messages: current,
            strategy: Strategy::Trim,
            note: Some(format!(
                "{fallback_reason}; nothing could be trimmed without cutting the latest turn"
            )),
            new_session: None,
            changed: false,
        },
    }
}
