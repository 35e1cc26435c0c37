//! Resolve once, carry a context: the [`Catalog`] compiled once from the
//! configuration, and the [`CallContext`] each request carries through the
//! layers.
//!
//! Every layer of a stack needs the same facts about a call: which agent
//! (and its bounded label), which tier and model (and their labels, context
//! windows and prices). Looking them up by name in each layer costs a map
//! probe or a linear scan per layer per call, and lets the layers disagree
//! (three label-bounding rules once lived in three layers). So:
//!
//! - the [`Catalog`] is built once from the tiers, models, agents and tools:
//!   dense indices ([`TierIdx`], [`ModelIdx`], [`LabelIdx`] for agents and
//!   tools), label strings, windows and prices. Unknown agents and tools fold
//!   into `other` in exactly one place, [`BoundedLabels::index`]; unknown
//!   models have no index and are labelled `other`.
//! - the [`CallContext`] travels in the request ([`LlmRequest::ctx`]): the
//!   agent is resolved where a service is bound to it (`AgentStack::llm`,
//!   as linkerd binds per-target state in its `NewService<T>`), the session
//!   is hashed once, and the tier and model are filled in as triage and the
//!   router decide them. A layer holds handles indexed by these numbers,
//!   bound when the layer is built.
//!
//! A context belongs to the catalog that resolved it ([`Catalog::owns`]); a
//! layer built on another catalog (or used on its own, with an empty
//! context) falls back to resolving names, so every layer still works alone.
//!
//! ```
//! use mantissa_core::{Catalog, LlmRequest, Message, TierSet};
//!
//! let catalog = Catalog::builder(&TierSet::default()).agents(["planner"]).build();
//! let mut req = LlmRequest::new("s1", "planner", vec![Message::user("hi")]);
//! catalog.resolve(&mut req);
//! assert!(catalog.owns(&req.ctx));
//! assert_eq!(&*catalog.agent_label(req.ctx.agent), "planner");
//!
//! let high = catalog.tier_index("high").unwrap();
//! req.ctx.tier = Some(high);
//! let model = catalog.tier(high).models[0];
//! assert_eq!(catalog.model(model).spec.id.as_str(), "mock-large");
//! assert_eq!(catalog.tier(high).min_context_window, 200_000);
//! ```
//!
//! [`LlmRequest::ctx`]: crate::LlmRequest::ctx

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::labels::{BoundedLabels, LabelIdx};
use crate::{LlmRequest, ModelId, ModelSpec, SessionId, Tier, TierSet, ToolRequest};

/// A tier's dense index in its [`Catalog`]: its rank, `0` = the lowest tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierIdx(u16);

impl TierIdx {
    /// The index as a `usize` (the tier's rank).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A model's dense index in its [`Catalog`]: models are numbered in tier
/// order, then in the order a tier lists them; a model listed in two tiers
/// keeps its first index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelIdx(u16);

impl ModelIdx {
    /// The index as a `usize`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One tier of a [`Catalog`].
#[derive(Debug, Clone)]
pub struct TierEntry {
    /// The tier's name (also its label).
    pub name: Tier,
    /// The models serving it, in configuration order.
    pub models: Box<[ModelIdx]>,
    /// The smallest context window of its models: what a request routed to
    /// this tier can safely hold, whichever of its models serves.
    pub min_context_window: u32,
}

/// One model of a [`Catalog`].
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// The model's configuration (id, provider, context window, prices).
    pub spec: ModelSpec,
    /// The first tier that lists it.
    pub tier: TierIdx,
}

/// The configuration compiled once: tiers, models, agents and tools, each
/// with a dense index, label, window and price. Cheap to clone (shared).
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    id: u32,
    tiers: Box<[TierEntry]>,
    models: Box<[ModelEntry]>,
    model_index: foldhash::HashMap<ModelId, ModelIdx>,
    agents: BoundedLabels,
    tools: BoundedLabels,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field(
                "tiers",
                &self
                    .inner
                    .tiers
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("models", &self.inner.models.len())
            .field("agents", &self.inner.agents)
            .field("tools", &self.inner.tools)
            .finish()
    }
}

/// Builder of a [`Catalog`].
#[derive(Debug)]
pub struct CatalogBuilder {
    tiers: TierSet,
    agents: Option<BoundedLabels>,
    tools: Option<BoundedLabels>,
}

impl CatalogBuilder {
    /// The configured agents: each is its own label, every other name folds
    /// into `other`. Defaults to none, which admits the first
    /// [`DEFAULT_MAX_LABELS`](crate::DEFAULT_MAX_LABELS) names seen.
    pub fn agents<I, S>(mut self, agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let agents: Vec<S> = agents.into_iter().collect();
        self.agents = (!agents.is_empty()).then(|| BoundedLabels::new(agents));
        self
    }

    /// The rule bounding agent labels, when it is shared with code built
    /// before the catalog. Defaults to [`agents`](Self::agents)' rule.
    pub fn agent_labels(mut self, labels: BoundedLabels) -> Self {
        self.agents = Some(labels);
        self
    }

    /// The tools that are their own label; every other tool is `other`.
    /// Defaults to the first names seen, capped like agents.
    pub fn tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.tools = Some(BoundedLabels::new(tools));
        self
    }

    /// Compiles the catalog.
    pub fn build(self) -> Catalog {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        let mut tiers = Vec::with_capacity(self.tiers.tiers.len());
        let mut models: Vec<ModelEntry> = Vec::new();
        let mut model_index: foldhash::HashMap<ModelId, ModelIdx> = foldhash::HashMap::default();
        for (rank, t) in self.tiers.iter().enumerate() {
            let tier = TierIdx(u16::try_from(rank).unwrap_or(u16::MAX));
            let mut ids = Vec::with_capacity(t.models.len());
            for spec in &t.models {
                let idx = *model_index.entry(spec.id.clone()).or_insert_with(|| {
                    let idx = ModelIdx(u16::try_from(models.len()).unwrap_or(u16::MAX));
                    models.push(ModelEntry {
                        spec: spec.clone(),
                        tier,
                    });
                    idx
                });
                ids.push(idx);
            }
            let min_context_window = t.models.iter().map(|m| m.context_window).min().unwrap_or(0);
            tiers.push(TierEntry {
                name: t.name.clone(),
                models: ids.into_boxed_slice(),
                min_context_window,
            });
        }
        Catalog {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed).max(1),
                tiers: tiers.into_boxed_slice(),
                models: models.into_boxed_slice(),
                model_index,
                agents: self.agents.unwrap_or_default(),
                tools: self.tools.unwrap_or_default(),
            }),
        }
    }
}

impl Catalog {
    /// A catalog of `tiers` with default agent and tool rules.
    pub fn new(tiers: &TierSet) -> Self {
        Self::builder(tiers).build()
    }

    /// A builder for a catalog of `tiers`.
    pub fn builder(tiers: &TierSet) -> CatalogBuilder {
        CatalogBuilder {
            tiers: tiers.clone(),
            agents: None,
            tools: None,
        }
    }

    /// The tiers, lowest first (indexed by [`TierIdx`]).
    pub fn tiers(&self) -> &[TierEntry] {
        &self.inner.tiers
    }

    /// The tier at `idx`.
    ///
    /// # Panics
    ///
    /// If `idx` is not from this catalog (check with [`owns`](Self::owns)).
    pub fn tier(&self, idx: TierIdx) -> &TierEntry {
        &self.inner.tiers[idx.index()]
    }

    /// The index of the tier at `rank` (0 = the lowest), if the ladder has one.
    pub fn tier_at(&self, rank: usize) -> Option<TierIdx> {
        (rank < self.inner.tiers.len()).then(|| TierIdx(u16::try_from(rank).unwrap_or(u16::MAX)))
    }

    /// The index of the tier named `name` (a linear scan over a handful of
    /// tiers: resolve it once, where the name comes in).
    pub fn tier_index(&self, name: &str) -> Option<TierIdx> {
        self.inner
            .tiers
            .iter()
            .position(|t| t.name.as_str() == name)
            .map(|i| TierIdx(u16::try_from(i).unwrap_or(u16::MAX)))
    }

    /// The models (indexed by [`ModelIdx`]).
    pub fn models(&self) -> &[ModelEntry] {
        &self.inner.models
    }

    /// The model at `idx`.
    ///
    /// # Panics
    ///
    /// If `idx` is not from this catalog (check with [`owns`](Self::owns)).
    pub fn model(&self, idx: ModelIdx) -> &ModelEntry {
        &self.inner.models[idx.index()]
    }

    /// The index of the model `id`, if configured (an unknown model is
    /// labelled `other`).
    pub fn model_index(&self, id: &str) -> Option<ModelIdx> {
        self.inner.model_index.get(id).copied()
    }

    /// The rule bounding agent labels (shared with every layer of a stack).
    pub fn agent_labels(&self) -> &BoundedLabels {
        &self.inner.agents
    }

    /// The index of `agent`'s label (folds unknown agents into `other`).
    pub fn agent_index(&self, agent: &str) -> LabelIdx {
        self.inner.agents.index(agent)
    }

    /// The label of the agent at `idx`.
    pub fn agent_label(&self, idx: LabelIdx) -> Arc<str> {
        self.inner.agents.name(idx)
    }

    /// The rule bounding tool labels.
    pub fn tool_labels(&self) -> &BoundedLabels {
        &self.inner.tools
    }

    /// The session's hash ([`session_hash`]), computed once per call.
    pub fn session_hash(&self, session: &SessionId) -> u64 {
        session_hash(session.as_str())
    }

    /// Whether `ctx` was resolved by this catalog (so its indices are valid here).
    pub fn owns(&self, ctx: &CallContext) -> bool {
        ctx.catalog == self.inner.id
    }

    /// Resolves `req`'s context: agent, session hash, and the tier and model
    /// the request names (if any). The one place a request's names become
    /// indices; a stack does it once, at its entry.
    pub fn resolve(&self, req: &mut LlmRequest) {
        req.ctx = CallContext {
            catalog: self.inner.id,
            agent: self.agent_index(req.agent.as_str()),
            session_hash: self.session_hash(&req.session),
            tier: req.tier.as_ref().and_then(|t| self.tier_index(t.as_str())),
            model: req.model.as_ref().and_then(|m| self.model_index(m.as_str())),
            tier_source: caller_source(req),
            started: None,
        };
    }

    /// Resolves `req`'s context for an agent already resolved to `agent`
    /// (the index [`agent_index`](Self::agent_index) gave when the agent's
    /// service was built): no label lookup per call.
    pub fn resolve_for(&self, agent: LabelIdx, req: &mut LlmRequest) {
        req.ctx = CallContext {
            catalog: self.inner.id,
            agent,
            session_hash: self.session_hash(&req.session),
            tier: req.tier.as_ref().and_then(|t| self.tier_index(t.as_str())),
            model: req.model.as_ref().and_then(|m| self.model_index(m.as_str())),
            tier_source: caller_source(req),
            started: None,
        };
    }

    /// Resolves a tool call's context (agent and session).
    pub fn resolve_tool(&self, agent: LabelIdx, req: &mut ToolRequest) {
        req.ctx = CallContext {
            catalog: self.inner.id,
            agent,
            session_hash: self.session_hash(&req.session),
            tier: None,
            model: None,
            tier_source: TierSource::Unset,
            started: None,
        };
    }

    /// The tier `req` is headed for: its context's tier when this catalog
    /// resolved it, else its `tier` name.
    pub fn tier_of(&self, req: &LlmRequest) -> Option<TierIdx> {
        if self.owns(&req.ctx) {
            req.ctx.tier
        } else {
            req.tier.as_ref().and_then(|t| self.tier_index(t.as_str()))
        }
    }

    /// The model `req` names: its context's model when this catalog
    /// resolved it, else its `model` id.
    pub fn model_of(&self, req: &LlmRequest) -> Option<ModelIdx> {
        if self.owns(&req.ctx) {
            req.ctx.model
        } else {
            req.model.as_ref().and_then(|m| self.model_index(m.as_str()))
        }
    }
}

/// The hash of a session id: the one hash every per-session structure of the
/// process uses (the call context, the session store's index), so a session
/// is hashed once per call. Keyed once per process (session ids come from
/// users, so the hash must not be predictable: no hash flooding).
pub fn session_hash(session: &str) -> u64 {
    static KEY: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(foldhash::quality::RandomState::default)
        .hash_one(session)
}

/// A request that names its tier or model chose it itself.
fn caller_source(req: &LlmRequest) -> TierSource {
    if req.tier.is_some() || req.model.is_some() {
        TierSource::Caller
    } else {
        TierSource::Unset
    }
}

/// What the layers know about a call, resolved once against a [`Catalog`]
/// and carried in the request ([`LlmRequest::ctx`](crate::LlmRequest::ctx),
/// [`ToolRequest::ctx`](crate::ToolRequest::ctx)).
///
/// The default (empty) context belongs to no catalog: layers then resolve
/// the request's names themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallContext {
    catalog: u32,
    /// The agent's label index (`other` for an unknown agent).
    pub agent: LabelIdx,
    /// The session id's hash, computed once ([`Catalog::session_hash`]).
    pub session_hash: u64,
    /// The tier, once decided (by the caller, the agent's pin or triage).
    pub tier: Option<TierIdx>,
    /// The model, once decided (by the caller or the router).
    pub model: Option<ModelIdx>,
    /// Who chose the tier: session stickiness may raise only a tier that
    /// triage chose.
    pub tier_source: TierSource,
    /// When the stack began timing the call, so the layers that time the
    /// whole call share one clock read: the reset layer stamps it (with the
    /// clock read it makes anyway) just before its inner call, and an
    /// outcome-scope health layer (what the agent experienced) times from it
    /// when it is set. The timing of one upstream attempt never uses it.
    /// `None` until a layer stamps it.
    pub started: Option<tokio::time::Instant>,
}

/// Who chose a call's tier ([`CallContext::tier_source`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TierSource {
    /// Nobody yet.
    #[default]
    Unset,
    /// The caller: an explicit tier or model, an agent's pin or an operator's
    /// override. Kept as is.
    Caller,
    /// A triage strategy, from the request's content. The session layer may
    /// raise it to the session's earlier tier (stickiness).
    Triage,
}

/// Response extension: session stickiness raised the call's tier from the
/// one triage chose (`from`) to the session's earlier tier (`to`). Triage
/// reads it to count the decision that served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRaised {
    /// The tier triage chose.
    pub from: Tier,
    /// The tier that served (the session's remembered tier).
    pub to: Tier,
}

impl CallContext {
    /// Whether a catalog resolved this context.
    pub fn is_resolved(&self) -> bool {
        self.catalog != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, TierConfig};

    fn two_tier() -> TierSet {
        TierSet {
            tiers: vec![
                TierConfig::new(
                    "low",
                    vec![
                        ModelSpec::new("a").context_window(8_000),
                        ModelSpec::new("b").context_window(4_000),
                    ],
                ),
                TierConfig::new(
                    "high",
                    vec![ModelSpec::new("c").context_window(100_000), ModelSpec::new("a")],
                ),
            ],
        }
    }

    #[test]
    fn models_are_numbered_in_tier_order_first_occurrence_wins() {
        let c = Catalog::new(&two_tier());
        let ids: Vec<_> = c.models().iter().map(|m| m.spec.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let high = c.tier_index("high").unwrap();
        assert_eq!(high.index(), 1);
        assert_eq!(
            c.tier(high).models.iter().map(|m| m.index()).collect::<Vec<_>>(),
            [2, 0]
        );
        assert_eq!(c.model(c.model_index("a").unwrap()).tier.index(), 0);
        assert_eq!(c.tier(TierIdx(0)).min_context_window, 4_000);
        assert_eq!(c.model_index("zzz"), None);
    }

    #[test]
    fn a_context_is_valid_only_in_its_catalog() {
        let a = Catalog::builder(&two_tier()).agents(["x"]).build();
        let b = Catalog::new(&two_tier());
        let mut req = LlmRequest::new("s", "x", vec![Message::user("hi")]).with_tier("high");
        assert!(!a.owns(&req.ctx));
        assert_eq!(a.tier_of(&req), a.tier_index("high"));
        a.resolve(&mut req);
        assert!(a.owns(&req.ctx) && !b.owns(&req.ctx));
        assert_eq!(req.ctx.agent.index(), 1);
        assert_eq!(req.ctx.tier, a.tier_index("high"));
        assert_eq!(req.ctx.session_hash, a.session_hash(&SessionId::new("s")));
        // Unknown agents fold into `other` here, once.
        let mut other = LlmRequest::new("s", "user-1234", vec![]);
        a.resolve(&mut other);
        assert!(other.ctx.agent.is_other());
        assert_eq!(&*a.agent_label(other.ctx.agent), crate::OTHER_LABEL);
    }
}
