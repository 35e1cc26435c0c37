//! The [`Reset`] service: it sequences one call as pre-call update → rare
//! path (warnings, compaction) → inner call → commit of the outcome.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mantissa_core::{
    BoxError, FailureClass, LlmRequest, LlmResponse, Message, SessionId, Tier, TierRaised, TierSource,
    TokenEstimator, Usage, classify,
};
use tokio::time::Instant;
use tower_service::Service;

use crate::config::Config;
use crate::emit::Emitter;
use crate::future::ResponseFuture;
use crate::pre_call::{Pre, pre_call};
use crate::rare::warn_and_compact;
use crate::session::SessionState;
use crate::store::{SessionStore, StoreError};

/// What every [`Reset`] built by one layer shares: the configuration and
/// the emitter with its metric handles.
pub(crate) struct Shared<St> {
    pub(crate) cfg: Config<St>,
    pub(crate) emit: Emitter,
}

impl<St> Shared<St> {
    pub(crate) fn new(cfg: Config<St>) -> Self {
        let emit = Emitter::new(cfg.sinks.clone(), cfg.labels.clone(), cfg.windows.catalog.clone());
        Self { cfg, emit }
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

impl<S, St> Service<LlmRequest> for Reset<S, St>
where
    S: Service<LlmRequest, Response = LlmResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: SessionStore,
{
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S, St>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(self.shared.clone(), inner, req)
    }
}

/// What a call knows before its session's update: when it began, the
/// history the caller sent, the stickiness to apply and the session's hash.
pub(crate) struct Plan {
    now: Instant,
    /// The sticky tier's idle TTL and the rank of the tier triage chose.
    sticky: Option<(Duration, usize)>,
    hash: Option<u64>,
}

/// What the pre-call update decides: the tier rank stickiness serves (when
/// it applies), the pre-call verdict and the window it used.
pub(crate) type Decided = (Option<usize>, (Pre, u32));

impl Plan {
    pub(crate) fn new<St>(cfg: &Config<St>, req: &LlmRequest) -> Self {
        // Stickiness applies to a tier triage chose; it is decided in the same
        // update as the rest, so the window below is the serving tier's.
        let sticky = match (cfg.sticky, &req.tier) {
            (Some(ttl), Some(tier)) if req.ctx.tier_source == TierSource::Triage => {
                // The rank is the context's tier index when the stack's catalog
                // resolved it, else found by name.
                let indexed = cfg.windows.catalog.as_ref().filter(|c| c.owns(&req.ctx));
                let rank = match indexed {
                    Some(_) => req.ctx.tier.map(|t| t.index()),
                    None => cfg.rank(tier),
                };
                rank.map(|rank| (ttl, rank))
            }
            _ => None,
        };
        Self {
            now: Instant::now(),
            sticky,
            // The session was hashed once, at the stack's entry (the call context).
            hash: req.ctx.is_resolved().then_some(req.ctx.session_hash),
        }
    }

    /// The session's hash, when the call context carries it.
    pub(crate) fn hash(&self) -> Option<u64> {
        self.hash
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// The pre-call update of `req`'s session.
    pub(crate) fn decide<'a, St>(
        &'a self,
        cfg: &'a Config<St>,
        req: &'a LlmRequest,
    ) -> impl FnMut(&mut SessionState) -> Decided + Send + 'a
    where
        St: Sync,
    {
        let est: &dyn TokenEstimator = &*cfg.estimator;
        move |st| {
            let served = self
                .sticky
                .as_ref()
                .map(|(ttl, rank)| st.stick(*rank, self.now, *ttl));
            let window = match (served, &self.sticky) {
                (Some(s), Some((_, d))) if s != *d => cfg.window_of_rank(s),
                _ => None,
            };
            let window = window.unwrap_or_else(|| cfg.windows.resolve(req));
            (
                served,
                (pre_call(st, &req.messages, est, &cfg.policy, window), window),
            )
        }
    }
}

/// A call whose session is updated: what the rest of the call needs.
pub(crate) struct Begun {
    now: Instant,
    /// The history the caller sent, when the effective one replaced it in
    /// the request (else it is the request's).
    raw: Option<Arc<Vec<Message>>>,
    pre: Pre,
    window: u32,
    hash: Option<u64>,
    raised: Option<TierRaised>,
}

impl Begun {
    /// Applies the pre-call update to `req`: the tier stickiness raised it to,
    /// the brittleness score, and the effective history.
    pub(crate) fn new<St: SessionStore>(
        shared: &Shared<St>,
        req: &mut LlmRequest,
        plan: Plan,
        decided: Decided,
    ) -> Self {
        let cfg = &shared.cfg;
        let (served, (pre, window)) = decided;
        // Stickiness applies only to a tier triage chose: `req.tier` is it.
        let raised = match (served.and_then(|s| cfg.ladder.get(s)), plan.sticky, &req.tier) {
            (Some(to), Some((_, rank)), Some(from)) if served != Some(rank) => {
                let (from, to) = (from.clone(), to.clone());
                raise(cfg, req, &to);
                Some(TierRaised { from, to })
            }
            _ => None,
        };
        shared
            .emit
            .call(&req.agent, &req.ctx, cfg.store.len(), pre.assessment.score);

        // The effective history: the remembered replacement plus what came after.
        let mut raw = None;
        if let Some(rem) = &pre.resent {
            let tail = req.messages.get(rem.covered_len()..).unwrap_or(&[]);
            let mut v = Vec::with_capacity(rem.replacement().len() + tail.len());
            v.extend_from_slice(rem.replacement());
            v.extend_from_slice(tail);
            raw = Some(std::mem::replace(&mut req.messages, Arc::new(v)));
        }
        Self {
            now: plan.now,
            raw,
            pre,
            window,
            hash: plan.hash,
            raised,
        }
    }

    /// Whether the call takes the rare path (warnings or compaction).
    pub(crate) fn is_rare(&self) -> bool {
        !self.pre.warnings.is_empty() || self.pre.action.is_some()
    }

    /// The commit of a call that took no rare path: the session, its hash,
    /// the call's start and the caller's history length.
    pub(crate) fn into_commit(self, session: SessionId) -> (Commit, Option<TierRaised>) {
        let commit = Commit {
            session,
            hash: self.hash,
            started: self.now,
            caller_len: self.pre.caller_len,
        };
        (commit, self.raised)
    }
}

/// What the post-call update needs.
pub(crate) struct Commit {
    pub(crate) session: SessionId,
    pub(crate) hash: Option<u64>,
    pub(crate) started: Instant,
    pub(crate) caller_len: usize,
}

/// The outcome of a call as the session records it: the usage of a response
/// and whether it streams, or the failure class.
pub(crate) type CallOutcome = Result<(Usage, bool), FailureClass>;

/// The outcome of `result`.
pub(crate) fn outcome_of(result: &Result<LlmResponse, BoxError>) -> CallOutcome {
    match result {
        Ok(resp) => Ok((resp.usage, resp.is_streaming())),
        Err(e) => Err(classify(&**e)),
    }
}

/// One call through the store's asynchronous updates: pre-call update →
/// rare path → inner call → commit.
pub(crate) async fn run<S, St>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    mut req: LlmRequest,
    plan: Plan,
) -> Result<LlmResponse, BoxError>
where
    S: Service<LlmRequest, Response = LlmResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: SessionStore,
{
    let cfg = &shared.cfg;
    let decided = update(
        &cfg.store,
        &req.session,
        plan.hash,
        plan.now,
        plan.decide(cfg, &req),
    )
    .await;
    let decided = match decided {
        Ok(d) => d,
        Err(e) => {
            untracked(&e);
            return inner.call(req).await.map_err(Into::into);
        }
    };
    let begun = Begun::new(&shared, &mut req, plan, decided);
    proceed(shared, inner, req, begun).await
}

/// A failed pre-call update: the call goes out untracked.
pub(crate) fn untracked(e: &StoreError) {
    tracing::warn!(error = %e, "session store failed; call goes out untracked");
}

/// The rest of a call whose session is updated: rare path → inner call →
/// commit.
pub(crate) async fn proceed<S, St>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    mut req: LlmRequest,
    begun: Begun,
) -> Result<LlmResponse, BoxError>
where
    S: Service<LlmRequest, Response = LlmResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: SessionStore,
{
    let cfg = &shared.cfg;
    let pre_session = req.session.clone();
    let rare = begun.is_rare();
    let Begun {
        now,
        raw,
        pre,
        window,
        hash,
        raised,
    } = begun;
    let mut caller_len = pre.caller_len;

    // Warnings and compaction are rare: they run in their own boxed future so
    // that the common path's future stays small.
    let mut started = now;
    let mut notices = None;
    if rare {
        let raw = raw.unwrap_or_else(|| req.messages.clone());
        let rare = Box::pin(warn_and_compact(cfg, &shared.emit, req, &raw, pre, window)).await?;
        req = rare.req;
        caller_len = rare.caller_len.unwrap_or(caller_len);
        notices = Some(rare.notices);
        started = Instant::now();
    }

    let session = req.session.clone();
    // A respawn (on the rare path) moves the call to a new session id.
    let hash = hash.filter(|h| *h == req.ctx.session_hash && session == pre_session);
    let result = inner.call(req).await.map_err(Into::into);
    let commit = Commit {
        session,
        hash,
        started,
        caller_len,
    };
    commit_outcome(cfg, &commit, outcome_of(&result)).await;
    let mut resp = result?;
    if let Some(n) = notices {
        n.attach(&mut resp);
    }
    if let Some(r) = raised {
        resp.extensions.insert(r);
    }
    Ok(resp)
}

/// Moves `req` to the tier stickiness chose (name and context index).
fn raise<St>(cfg: &Config<St>, req: &mut LlmRequest, to: &Tier) {
    req.tier = Some(to.clone());
    if let Some(c) = cfg.windows.catalog.as_ref().filter(|c| c.owns(&req.ctx)) {
        req.ctx.tier = c.tier_index(to.as_str());
    }
}

/// One store update, by the session's hash when the call context has it.
async fn update<St, F, R>(
    store: &St,
    session: &SessionId,
    hash: Option<u64>,
    now: Instant,
    f: F,
) -> Result<R, StoreError>
where
    St: SessionStore,
    F: FnMut(&mut SessionState) -> R + Send,
    R: Send,
{
    match hash {
        Some(h) => store.update_hashed(session, h, now, f).await,
        None => store.update(session, now, f).await,
    }
}

/// The post-call update's function: the outcome (the usage of a response
/// and whether it streams, or the failure class), the latency and, for a
/// non-streamed response, the provider's token count.
fn record<St>(
    cfg: &Config<St>,
    commit: &Commit,
    outcome: CallOutcome,
    done: Instant,
) -> impl FnMut(&mut SessionState) + Send + use<St> {
    let latency_ms = done.saturating_duration_since(commit.started).as_secs_f64() as f32 * 1000.0;
    let warmup = cfg.policy.min_latency_samples();
    let caller_len = commit.caller_len;
    move |st| match outcome {
        Ok((usage, streaming)) => {
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
        }
        Err(class) => st.record_llm(Some(class)),
    }
}

fn committed(result: Result<(), StoreError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "session store failed to record a call outcome");
    }
}

/// The post-call update, at once when the store's update never waits:
/// `false` (nothing done) when it would.
pub(crate) fn commit_now<St: SessionStore>(
    cfg: &Config<St>,
    commit: &Commit,
    outcome: CallOutcome,
    answered: Option<Instant>,
) -> bool {
    // The clock read of the layer inside that saw the answer, if any.
    let done = answered.unwrap_or_else(Instant::now);
    let f = record(cfg, commit, outcome, done);
    match cfg.store.update_now(&commit.session, commit.hash, done, f) {
        Some(result) => {
            committed(result);
            true
        }
        None => false,
    }
}

/// The post-call update. One store update, by the session's hash when the
/// call context has it.
pub(crate) async fn commit_outcome<St: SessionStore>(
    cfg: &Config<St>,
    commit: &Commit,
    outcome: CallOutcome,
) {
    let done = Instant::now();
    let f = record(cfg, commit, outcome, done);
    committed(update(&cfg.store, &commit.session, commit.hash, done, f).await);
}
