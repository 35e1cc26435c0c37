//! [`AgentLabels`]: the one rule that bounds the `agent` label of every
//! metric family.
//!
//! Agent names come from code (`AgentStack::llm(name)`, a request's `agent`
//! field), so nothing stops a program from passing a new one per user or per
//! request. Every layer that labels a metric with the agent (health, triage,
//! reset) folds the name through the same `AgentLabels` value, so one agent
//! is labelled the same way in every family and the number of series stays
//! bounded:
//!
//! - with a list of agents ([`AgentLabels::new`], what `AgentStack` uses when
//!   agents are configured), a listed name is its own label and every other
//!   name is [`OTHER_LABEL`];
//! - without one ([`AgentLabels::capped`], the default), the first `max`
//!   distinct names seen are their own labels, later new names are
//!   [`OTHER_LABEL`].
//!
//! ```
//! use mantissa_core::{AgentLabels, AgentName};
//!
//! let labels = AgentLabels::new(["trader", "manager"]);
//! assert_eq!(labels.fold(&AgentName::new("trader")).as_str(), "trader");
//! assert_eq!(labels.fold(&AgentName::new("user-8812")).as_str(), "other");
//!
//! let capped = AgentLabels::capped(1);
//! assert_eq!(capped.fold(&AgentName::new("a")).as_str(), "a");
//! assert_eq!(capped.fold(&AgentName::new("b")).as_str(), "other");
//! assert_eq!(capped.fold(&AgentName::new("a")).as_str(), "a");
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::{AgentName, OTHER_LABEL};

/// Distinct agent labels admitted by [`AgentLabels::default`].
pub const DEFAULT_MAX_AGENT_LABELS: usize = 64;

/// The rule that folds agent names into bounded label values; a cheap
/// `Clone` handle, shared by every layer of a stack.
#[derive(Clone)]
pub struct AgentLabels {
    inner: Arc<Inner>,
}

enum Inner {
    Listed(HashSet<Arc<str>>),
    Capped {
        max: usize,
        seen: RwLock<HashSet<Arc<str>>>,
    },
}

impl fmt::Debug for AgentLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Listed(names) => f
                .debug_struct("AgentLabels")
                .field("listed", &names.len())
                .finish(),
            Inner::Capped { max, .. } => f.debug_struct("AgentLabels").field("max", max).finish(),
        }
    }
}

impl Default for AgentLabels {
    /// [`AgentLabels::capped`] at [`DEFAULT_MAX_AGENT_LABELS`].
    fn default() -> Self {
        Self::capped(DEFAULT_MAX_AGENT_LABELS)
    }
}

impl AgentLabels {
    /// Listed agents are their own label; every other name is `other`.
    pub fn new<I, S>(agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names = agents.into_iter().map(|a| Arc::from(a.as_ref())).collect();
        Self {
            inner: Arc::new(Inner::Listed(names)),
        }
    }

    /// The first `max` distinct names seen are their own label; later new
    /// names are `other`.
    pub fn capped(max: usize) -> Self {
        Self {
            inner: Arc::new(Inner::Capped {
                max,
                seen: RwLock::new(HashSet::new()),
            }),
        }
    }

    /// Whether `agent` is its own label (admitting it if there is room).
    pub fn admits(&self, agent: &str) -> bool {
        if agent == OTHER_LABEL {
            return true;
        }
        match &*self.inner {
            Inner::Listed(names) => names.contains(agent),
            Inner::Capped { max, seen } => {
                if let Ok(seen) = seen.read() {
                    if seen.contains(agent) {
                        return true;
                    }
                    if seen.len() >= *max {
                        return false;
                    }
                }
                match seen.write() {
                    Ok(mut seen) if seen.len() < *max || seen.contains(agent) => {
                        seen.insert(Arc::from(agent));
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    /// The label of `agent`: itself, or `other`.
    pub fn fold(&self, agent: &AgentName) -> AgentName {
        if self.admits(agent.as_str()) {
            agent.clone()
        } else {
            AgentName::new(OTHER_LABEL)
        }
    }

    /// The label value of `agent` as a string slice: itself, or `other`.
    pub fn fold_str<'a>(&self, agent: &'a str) -> &'a str {
        if self.admits(agent) { agent } else { OTHER_LABEL }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_bounds_distinct_labels_and_keeps_admitted_ones() {
        let labels = AgentLabels::capped(3);
        let folded: HashSet<String> = (0..1000)
            .map(|i| labels.fold_str(&format!("agent-{i}")).to_owned())
            .collect();
        assert_eq!(folded.len(), 4, "{folded:?}");
        assert!(folded.contains(OTHER_LABEL));
        assert_eq!(labels.fold_str("agent-2"), "agent-2");
        assert_eq!(labels.fold_str("agent-3"), OTHER_LABEL);
    }

    #[test]
    fn clones_share_one_rule() {
        let a = AgentLabels::capped(1);
        let b = a.clone();
        assert!(a.admits("x"));
        assert!(!b.admits("y"));
        assert!(b.admits("x"));
    }
}
