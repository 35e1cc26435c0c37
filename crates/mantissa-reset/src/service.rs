//! The [`Reset`] service: it sequences one call as pre-call update → rare
//! path (warnings, compaction) → inner call → commit of the outcome.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use mantissa_core::{
    BoxError, FailureClass, LlmRequest, LlmResponse, SessionId, TokenEstimator, Usage, classify,
};
use tokio::time::Instant;
use tower_service::Service;

use crate::config::Config;
use crate::emit::Emitter;
use crate::future::ResponseFuture;
use crate::pre_call::pre_call;
use crate::rare::warn_and_compact;
use crate::store::SessionStore;

/// What every [`Reset`] built by one layer shares: the configuration and
/// the emitter with its metric handles.
pub(crate) struct Shared<St> {
    pub(crate) cfg: Config<St>,
    pub(crate) emit: Emitter,
}

impl<St> Shared<St> {
    pub(crate) fn new(cfg: Config<St>) -> Self {
        let emit = Emitter::new(cfg.sinks.clone(), cfg.labels.clone());
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
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(run(self.shared.clone(), inner, req))
    }
}

/// One call: pre-call update → rare path → inner call → commit.
async fn run<S, St>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    mut req: LlmRequest,
) -> Result<LlmResponse, BoxError>
where
    S: Service<LlmRequest, Response = LlmResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: SessionStore,
{
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
    shared
        .emit
        .call(&req.agent, cfg.store.len(), pre.assessment.score);

    // The effective history: the remembered replacement plus what came after.
    if let Some(rem) = &pre.resent {
        let tail = raw.get(rem.covered_len()..).unwrap_or(&[]);
        let mut v = Vec::with_capacity(rem.replacement().len() + tail.len());
        v.extend_from_slice(rem.replacement());
        v.extend_from_slice(tail);
        req.messages = Arc::new(v);
    }
    let mut caller_len = pre.caller_len;

    // Warnings and compaction are rare: they run in their own boxed future so
    // that the common path's future stays small.
    let mut started = now;
    let mut notices = None;
    if !pre.warnings.is_empty() || pre.action.is_some() {
        let rare = Box::pin(warn_and_compact(cfg, &shared.emit, req, &raw, pre, window)).await?;
        req = rare.req;
        caller_len = rare.caller_len.unwrap_or(caller_len);
        notices = Some(rare.notices);
        started = Instant::now();
    }

    let session = req.session.clone();
    let result = inner.call(req).await.map_err(Into::into);
    let outcome = match &result {
        Ok(resp) => Ok((resp.usage, resp.is_streaming())),
        Err(e) => Err(classify(&**e)),
    };
    commit_outcome(cfg, &session, outcome, started, caller_len).await;
    let mut resp = result?;
    if let Some(n) = notices {
        n.attach(&mut resp);
    }
    Ok(resp)
}

/// The post-call update: the outcome (the usage of a response and whether
/// it streams, or the failure class), the latency and, for a non-streamed
/// response, the provider's token count.
async fn commit_outcome<St: SessionStore>(
    cfg: &Config<St>,
    session: &SessionId,
    outcome: Result<(Usage, bool), FailureClass>,
    started: Instant,
    caller_len: usize,
) {
    let done = Instant::now();
    let latency_ms = done.saturating_duration_since(started).as_secs_f64() as f32 * 1000.0;
    let warmup = cfg.policy.min_latency_samples();
    let committed = match outcome {
        Ok((usage, streaming)) => {
            cfg.store
                .update(session, done, |st| {
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
        Err(class) => {
            cfg.store
                .update(session, done, |st| st.record_llm(Some(class)))
                .await
        }
    };
    if let Err(e) = committed {
        tracing::warn!(error = %e, "session store failed to record a call outcome");
    }
}
