//! [`AgentSpec`]: one agent of the team, and the per-agent state an agent's
//! services are bound to.

use mantissa_core::{AgentName, Catalog, LabelIdx, LlmRequest, Tier, ToolRequest};

/// One agent of the team.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentSpec {
    /// The agent's name (a bounded metric label).
    pub name: AgentName,
    /// What the agent does (documentation; the examples put it in the system prompt).
    #[serde(default)]
    pub role: String,
    /// A tier the agent is pinned to. `None` (the default): triage decides per request.
    #[serde(default)]
    pub tier: Option<Tier>,
}

impl AgentSpec {
    /// An agent triaged per request.
    pub fn new(name: impl Into<AgentName>) -> Self {
        Self {
            name: name.into(),
            role: String::new(),
            tier: None,
        }
    }

    /// Sets the role description. Defaults to empty.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// Pins the agent to a tier (its requests skip triage). Defaults to none.
    pub fn tier(mut self, tier: impl Into<Tier>) -> Self {
        self.tier = Some(tier.into());
        self
    }
}

/// What an agent's services know about their agent, resolved once when
/// [`AgentStack::llm`](super::AgentStack::llm) (or `tools`) builds the
/// service, as linkerd binds per-target state in its `NewService<T>`: every
/// call then only stamps it on the request.
///
/// This is the one place per-agent call state lives: the agent's label
/// index is bound here, and per call only the session is hashed, once, into
/// the request's call context ([`Catalog::resolve_for`]).
#[derive(Debug, Clone)]
pub(super) struct AgentBinding {
    agent: AgentName,
    /// The agent's pinned tier, looked up once in the configured agents.
    tier: Option<Tier>,
    /// The catalog that resolves the call context, and the agent's label in it.
    catalog: Catalog,
    index: LabelIdx,
}

impl AgentBinding {
    /// Binds `agent` in `catalog`, with its configuration if it is a
    /// configured agent.
    pub(super) fn new(catalog: &Catalog, agent: AgentName, spec: Option<&AgentSpec>) -> Self {
        Self {
            tier: spec.and_then(|s| s.tier.clone()),
            index: catalog.agent_index(agent.as_str()),
            catalog: catalog.clone(),
            agent,
        }
    }

    /// Stamps an LLM request: the agent's name, its pinned tier unless the
    /// request already names a tier or a model, and the call context.
    pub(super) fn llm(&self, mut req: LlmRequest) -> LlmRequest {
        req.agent = self.agent.clone();
        if req.tier.is_none() && req.model.is_none() {
            req.tier.clone_from(&self.tier);
        }
        self.catalog.resolve_for(self.index, &mut req);
        req
    }

    /// Stamps a tool request with the agent's name.
    pub(super) fn tool(&self, mut req: ToolRequest) -> ToolRequest {
        req.agent = self.agent.clone();
        req
    }
}
