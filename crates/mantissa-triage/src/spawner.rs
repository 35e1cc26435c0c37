//! [`AgentSpawner`]: one shared router, many agents bound to tiers.
//!
//! A manager that runs a cheap agent and an expensive one side by side
//! spawns each with its tier; every request of a spawned agent is stamped
//! with the agent's name and tier and goes to the shared router (so the
//! agents share model services and cooldown state).
//!
//! ```
//! use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, Tier, TierSet, Usage};
//! use mantissa_triage::{AgentSpawner, TierRouter};
//! use tower::{ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let echo = service_fn(|req: LlmRequest| async move {
//!     Ok::<_, BoxError>(LlmResponse::new(req.model.unwrap(), Message::assistant("ok"), Usage::default()))
//! });
//! let tiers = TierSet::default();
//! let router = TierRouter::builder(tiers.clone())
//!     .model("mock-small", echo.clone())
//!     .model("mock-medium", echo.clone())
//!     .model("mock-large", echo)
//!     .build()
//!     .unwrap();
//! let spawner = AgentSpawner::new(router, &tiers);
//! let scout = spawner.spawn("scout", Tier::low()).unwrap();
//! let analyst = spawner.spawn("analyst", Tier::high()).unwrap();
//! let ask = || LlmRequest::new("s", "anyone", vec![Message::user("go")]);
//! assert_eq!(scout.oneshot(ask()).await.unwrap().model.as_str(), "mock-small");
//! assert_eq!(analyst.oneshot(ask()).await.unwrap().model.as_str(), "mock-large");
//! assert!(spawner.spawn("x", "ultra").is_err());
//! # });
//! ```

use std::task::{Context, Poll};

use mantissa_core::{AgentName, LlmRequest, Tier, TierSet};
use tower_service::Service;

use crate::router::UnknownTier;

/// Spawns agent services bound to a tier over one shared service (usually
/// the [`TierRouter`](crate::TierRouter), possibly wrapped in more layers).
#[derive(Debug, Clone)]
pub struct AgentSpawner<S> {
    service: S,
    tiers: Vec<Tier>,
}

impl<S: Clone> AgentSpawner<S> {
    /// A spawner over `service`, for the tiers of `set`.
    pub fn new(service: S, set: &TierSet) -> Self {
        Self {
            service,
            tiers: set.iter().map(|t| t.name.clone()).collect(),
        }
    }

    /// An agent named `agent` whose requests all go to `tier` (unless a
    /// request names a model). Fails if `tier` is not in the ladder.
    pub fn spawn(
        &self,
        agent: impl Into<AgentName>,
        tier: impl Into<Tier>,
    ) -> Result<AgentService<S>, UnknownTier> {
        let tier = tier.into();
        if !self.tiers.contains(&tier) {
            return Err(UnknownTier { tier });
        }
        Ok(AgentService {
            inner: self.service.clone(),
            agent: agent.into(),
            tier,
        })
    }
}

/// One spawned agent's LLM service: stamps the agent and its tier on every
/// request, then calls the shared service.
#[derive(Debug, Clone)]
pub struct AgentService<S> {
    inner: S,
    agent: AgentName,
    tier: Tier,
}

impl<S> AgentService<S> {
    /// The agent's name.
    pub fn agent(&self) -> &AgentName {
        &self.agent
    }

    /// The agent's tier.
    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// The shared inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the agent service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Service<LlmRequest>> Service<LlmRequest> for AgentService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        req.agent = self.agent.clone();
        if req.model.is_none() {
            req.tier = Some(self.tier.clone());
        }
        self.inner.call(req)
    }
}
