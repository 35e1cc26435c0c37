//! [`BoundedLabels`]: the one rule that bounds a label whose values come
//! from code — the `agent` label of every metric family, and the `tool` and
//! `tier` labels of the health layer.
//!
//! Agent names come from code (`AgentStack::llm(name)`, a request's `agent`
//! field), so nothing stops a program from passing a new one per user or per
//! request. Every layer that labels a metric with the agent (health, triage,
//! reset) folds the name through the same `BoundedLabels` value, so one agent
//! is labelled the same way in every family and the number of series stays
//! bounded (models are bounded by the model catalogue the same way: unknown
//! ids are `other`):
//!
//! - with a list of agents ([`BoundedLabels::new`], what `AgentStack` uses when
//!   agents are configured), a listed name is its own label and every other
//!   name is [`OTHER_LABEL`];
//! - without one ([`BoundedLabels::capped`], the default), the first `max`
//!   distinct names seen are their own labels, later new names are
//!   [`OTHER_LABEL`].
//!
//! ```
//! use mantissa_core::{BoundedLabels, AgentName};
//!
//! let labels = BoundedLabels::new(["trader", "manager"]);
//! assert_eq!(labels.fold(&AgentName::new("trader")).as_str(), "trader");
//! assert_eq!(labels.fold(&AgentName::new("user-8812")).as_str(), "other");
//!
//! let capped = BoundedLabels::capped(1);
//! assert_eq!(capped.fold(&AgentName::new("a")).as_str(), "a");
//! assert_eq!(capped.fold(&AgentName::new("b")).as_str(), "other");
//! assert_eq!(capped.fold(&AgentName::new("a")).as_str(), "a");
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::{AgentName, OTHER_LABEL};

/// Distinct label values admitted by [`BoundedLabels::default`].
pub const DEFAULT_MAX_LABELS: usize = 64;

/// The rule that folds names (agents, tools, tiers) into bounded label
/// values; a cheap `Clone` handle, shared by every layer of a stack.
#[derive(Clone)]
pub struct BoundedLabels {
    inner: Arc<Inner>,
}

enum Inner {
    Listed(HashSet<Arc<str>>),
    Capped {
        max: usize,
        seen: RwLock<HashSet<Arc<str>>>,
    },
}

impl fmt::Debug for BoundedLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Listed(names) => f
                .debug_struct("BoundedLabels")
                .field("listed", &names.len())
                .finish(),
            Inner::Capped { max, .. } => f.debug_struct("BoundedLabels").field("max", max).finish(),
        }
    }
}

impl Default for BoundedLabels {
    /// [`BoundedLabels::capped`] at [`DEFAULT_MAX_LABELS`].
    fn default() -> Self {
        Self::capped(DEFAULT_MAX_LABELS)
    }
}

impl BoundedLabels {
    /// Listed names are their own label; every other name is `other`.
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

    /// Whether `name` is its own label (admitting it if there is room).
    pub fn admits(&self, name: &str) -> bool {
        if name == OTHER_LABEL {
            return true;
        }
        match &*self.inner {
            Inner::Listed(names) => names.contains(name),
            Inner::Capped { max, seen } => {
                if let Ok(seen) = seen.read() {
                    if seen.contains(name) {
                        return true;
                    }
                    if seen.len() >= *max {
                        return false;
                    }
                }
                match seen.write() {
                    Ok(mut seen) if seen.len() < *max || seen.contains(name) => {
                        seen.insert(Arc::from(name));
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

    /// The label value of `name` as a string slice: itself, or `other`.
    pub fn fold_str<'a>(&self, name: &'a str) -> &'a str {
        if self.admits(name) { name } else { OTHER_LABEL }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_bounds_distinct_labels_and_keeps_admitted_ones() {
        let labels = BoundedLabels::capped(3);
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
        let a = BoundedLabels::capped(1);
        let b = a.clone();
        assert!(a.admits("x"));
        assert!(!b.admits("y"));
        assert!(b.admits("x"));
    }
}
