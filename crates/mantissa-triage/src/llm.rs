//! [`LlmTriage`]: ask a cheap model how capable a model the request needs.
//!
//! # Design: asynchronous triage
//!
//! [`Triage`] is synchronous because rule triage runs on every call and must
//! cost nanoseconds. Asking a model is asynchronous, so [`TriageLayer`](crate::TriageLayer)
//! runs an [`AsyncTriage`] — a strategy that returns a future of a
//! [`TierDecision`]. Every [`Triage`] is an [`AsyncTriage`] with an
//! already-complete future, so one layer serves both kinds and synchronous
//! strategies pay nothing for the generality. `LlmTriage` implements
//! [`AsyncTriage`] directly, and always completes: a late, failed or
//! unparseable answer yields the [fallback](LlmTriage::fallback) triage's
//! decision (reason `model_fallback`), never an error.
//!
//! The classifier is any `Service<LlmRequest, Response = LlmResponse>`: a
//! client of a small model, or the [`TierRouter`](crate::TierRouter) itself
//! (the classification request asks for the lowest tier by default).
//!
//! The prompt template must contain `{request}` (replaced by the latest user
//! turn, truncated to 4,000 bytes by default) and may contain `{tiers}`
//! (replaced by the tier names, for example `low, medium or high`). The
//! answer may be a tier name or a score in `[0, 1]` (mapped through the
//! [boundaries](LlmTriage::boundaries)).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mantissa_core::{LlmRequest, LlmResponse, Message, Tier, TierSet, Usage};
//! use mantissa_triage::{AsyncTriage, LlmTriage, RuleTriage, TriageLayer, TriageReason};
//! use tower::service_fn;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let tiers = TierSet::default();
//! // A classifier that always answers "high".
//! let classifier = service_fn(|_req: LlmRequest| async {
//!     Ok::<_, std::convert::Infallible>(LlmResponse::new("cheap", Message::assistant(" High. "), Usage::default()))
//! });
//!
//! // Defaults: 2 s timeout, rule triage as the fallback.
//! let triage = LlmTriage::new(classifier.clone(), &tiers);
//! let req = LlmRequest::new("s", "a", vec![Message::user("hi")]);
//! let d = triage.decide(&req).await;
//! assert_eq!((d.tier, d.reason), (Tier::high(), TriageReason::Model));
//!
//! // Customised: a shorter timeout, a custom prompt, a fixed fallback.
//! let triage = LlmTriage::new(classifier, &tiers)
//!     .timeout(Duration::from_millis(300))
//!     .prompt("Answer low, medium or high. How hard is this?\n{request}").unwrap()
//!     .fallback(|_: &LlmRequest| mantissa_triage::TierDecision::new(Tier::medium(), 0.5, TriageReason::ModelFallback));
//! // Used in the stack through the triage layer.
//! let _layer = TriageLayer::new(&tiers, triage);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use mantissa_core::{BoxError, ConfigError, LlmRequest, LlmResponse, Message, Tier, TierSet};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_service::Service;

use crate::decision::{AsyncTriage, Boundaries, TierDecision, Triage, TriageReason, tier_names};
use crate::rule::RuleTriage;

/// The default prompt template.
pub const DEFAULT_PROMPT: &str = "You route requests to language models of different capability.\n\
Classify how capable a model must be to answer the request below well.\n\
Reply with exactly one word: {tiers}.\n\nRequest:\n<<<\n{request}\n>>>";

/// Triage by asking a (cheap) model. See the [module docs](self).
pub struct LlmTriage<S> {
    service: S,
    tiers: Vec<Tier>,
    boundaries: Boundaries,
    template: Arc<str>,
    tier_list: Arc<str>,
    timeout: Duration,
    max_request_bytes: usize,
    classifier_tier: Option<Tier>,
    fallback: Arc<dyn Triage>,
}

impl<S> fmt::Debug for LlmTriage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmTriage")
            .field("tiers", &self.tiers)
            .field("boundaries", &self.boundaries)
            .field("timeout", &self.timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("classifier_tier", &self.classifier_tier)
            .finish_non_exhaustive()
    }
}

impl<S> LlmTriage<S> {
    /// Asks `service` to classify requests into the tiers of `set`.
    pub fn new(service: S, set: &TierSet) -> Self {
        let tiers = tier_names(set);
        let tier_list = match tiers.as_slice() {
            [] => String::new(),
            [one] => one.to_string(),
            [rest @ .., last] => format!(
                "{} or {last}",
                rest.iter().map(Tier::as_str).collect::<Vec<_>>().join(", ")
            ),
        };
        Self {
            service,
            boundaries: Boundaries::default_for(tiers.len()),
            classifier_tier: tiers.first().cloned(),
            tiers,
            template: Arc::from(DEFAULT_PROMPT),
            tier_list: Arc::from(tier_list),
            timeout: Duration::from_secs(2),
            max_request_bytes: 4000,
            fallback: Arc::new(RuleTriage::new(set)),
        }
    }

    /// How long to wait for the answer. Defaults to 2 s: a small model
    /// answers a one-word classification well under a second; an answer
    /// later than that costs more latency than a misrouted call costs
    /// quality.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The prompt template; must contain `{request}`. Defaults to
    /// [`DEFAULT_PROMPT`].
    pub fn prompt(mut self, template: impl Into<String>) -> Result<Self, ConfigError> {
        let template = template.into();
        if !template.contains("{request}") {
            return Err(ConfigError::new(
                "prompt",
                "the template must contain `{request}`",
            ));
        }
        self.template = Arc::from(template);
        Ok(self)
    }

    /// The triage used when the classifier is late, fails or answers
    /// something unparseable. Defaults to [`RuleTriage`] with its defaults.
    pub fn fallback(mut self, fallback: impl Triage) -> Self {
        self.fallback = Arc::new(fallback);
        self
    }

    /// Cut points for answers given as scores. Defaults to
    /// [`Boundaries::default_for`] the number of tiers.
    pub fn boundaries(mut self, boundaries: Boundaries) -> Result<Self, ConfigError> {
        boundaries.check_len(self.tiers.len())?;
        self.boundaries = boundaries;
        Ok(self)
    }

    /// The tier the classification request asks for (useful when the
    /// classifier is the router). Defaults to the lowest tier.
    pub fn classifier_tier(mut self, tier: Option<Tier>) -> Self {
        self.classifier_tier = tier;
        self
    }

    /// How much of the user turn goes into the prompt. Defaults to 4,000 bytes.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    fn prompt_for(&self, req: &LlmRequest) -> String {
        let text = req.latest_user_message().map(|m| m.text()).unwrap_or("");
        self.template.replace("{tiers}", &self.tier_list).replace(
            "{request}",
            mantissa_core::truncate_str(text, self.max_request_bytes),
        )
    }

    /// Parses a classifier answer: a tier name or a score in `[0, 1]`.
    pub fn parse_answer(&self, answer: &str) -> Option<TierDecision> {
        parse_answer(&self.tiers, &self.boundaries, answer)
    }
}

fn parse_answer(tiers: &[Tier], boundaries: &Boundaries, answer: &str) -> Option<TierDecision> {
    let word = answer
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '.'))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| !w.is_empty())?;
    if let Some(rank) = tiers.iter().position(|t| t.as_str().eq_ignore_ascii_case(word)) {
        let score = match tiers.len() {
            0 | 1 => 0.0,
            n => rank as f64 / (n - 1) as f64,
        };
        return Some(TierDecision::new(tiers[rank].clone(), score, TriageReason::Model));
    }
    let score: f64 = word.parse().ok()?;
    if !(0.0..=1.0).contains(&score) {
        return None;
    }
    let rank = boundaries.rank(score).min(tiers.len().checked_sub(1)?);
    Some(TierDecision::new(tiers[rank].clone(), score, TriageReason::Model))
}

impl<S> AsyncTriage for LlmTriage<S>
where
    S: Service<LlmRequest, Response = LlmResponse> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Future = LlmTriageFuture<S>;

    fn decide(&self, req: &LlmRequest) -> Self::Future {
        let mut fallback = self.fallback.triage(req);
        fallback.reason = TriageReason::ModelFallback;
        let mut ask = LlmRequest::new(
            req.session.clone(),
            req.agent.clone(),
            vec![Message::user(self.prompt_for(req))],
        );
        ask.tier = self.classifier_tier.clone();
        ask.params.max_tokens = Some(8);
        ask.params.temperature = Some(0.0);
        LlmTriageFuture {
            call: tokio::time::timeout(self.timeout, Oneshot::new(self.service.clone(), ask)),
            parser: Parser {
                tiers: self.tiers.clone(),
                boundaries: self.boundaries.clone(),
            },
            fallback: Some(fallback),
        }
    }
}

/// The part of [`LlmTriage`] the future needs to parse the answer.
#[derive(Debug)]
struct Parser {
    tiers: Vec<Tier>,
    boundaries: Boundaries,
}

impl Parser {
    fn parse(&self, answer: &str) -> Option<TierDecision> {
        parse_answer(&self.tiers, &self.boundaries, answer)
    }
}

pin_project! {
    /// The future of an [`LlmTriage`] decision. Never fails: falls back.
    pub struct LlmTriageFuture<S>
    where
        S: Service<LlmRequest>,
    {
        #[pin]
        call: tokio::time::Timeout<Oneshot<S, LlmRequest>>,
        parser: Parser,
        fallback: Option<TierDecision>,
    }
}

impl<S: Service<LlmRequest>> fmt::Debug for LlmTriageFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmTriageFuture").finish_non_exhaustive()
    }
}

impl<S> Future for LlmTriageFuture<S>
where
    S: Service<LlmRequest, Response = LlmResponse>,
    S::Error: Into<BoxError>,
{
    type Output = TierDecision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.call.poll(cx));
        let parsed = match outcome {
            Ok(Ok(resp)) if resp.stream.is_none() => {
                let d = this.parser.parse(resp.message.text());
                if d.is_none() {
                    tracing::debug!(
                        answer = resp.message.text(),
                        "unparseable triage answer; falling back"
                    );
                }
                d
            }
            Ok(Ok(_)) => {
                tracing::debug!("streaming triage answer; falling back");
                None
            }
            Ok(Err(e)) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "triage model failed; falling back");
                None
            }
            Err(_) => {
                tracing::debug!("triage model timed out; falling back");
                None
            }
        };
        let decision = parsed
            .or_else(|| this.fallback.take())
            .unwrap_or_else(|| TierDecision::new(Tier::low(), 0.0, TriageReason::ModelFallback));
        Poll::Ready(decision)
    }
}
