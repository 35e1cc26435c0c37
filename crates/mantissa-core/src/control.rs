//! Small control interfaces through which the monitor acts on the stack
//! (cool a model down, reset a session's context, move an agent's tier).
//!
//! The router implements [`ModelControl`], the reset layer's session store
//! implements [`SessionControl`], and the triage layer implements
//! [`TierControl`]; the monitor only sees these traits, so the crates do not
//! depend on each other.

use std::time::Duration;

use crate::ids::{AgentName, ModelId, SessionId, Tier};

/// Takes a model out of (or back into) rotation.
pub trait ModelControl: Send + Sync + 'static {
    /// Cools `model` down for `duration`: the router sends it no traffic
    /// (other than half-open probes after the cooldown). Returns `false` if the
    /// model is unknown.
    fn cool_down(&self, model: &ModelId, duration: Duration) -> bool;

    /// Ends a cooldown early. Returns `false` if the model is unknown.
    fn restore(&self, model: &ModelId) -> bool;
}

/// Asks the reset layer to compact a session's context on its next call.
pub trait SessionControl: Send + Sync + 'static {
    /// Marks `session` for a reset with the given reason. Returns `false` if
    /// the session is unknown.
    fn request_reset(&self, session: &SessionId, reason: &str) -> bool;
}

/// Overrides the tier an agent's calls are triaged to.
pub trait TierControl: Send + Sync + 'static {
    /// Pins `agent` to `tier` (`None` lifts the override).
    fn set_agent_tier(&self, agent: &AgentName, tier: Option<Tier>);
}
