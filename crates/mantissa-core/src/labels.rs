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

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::{AgentName, OTHER_LABEL};

/// Distinct label values admitted by [`BoundedLabels::default`].
pub const DEFAULT_MAX_LABELS: usize = 64;

/// The dense index of a label value in its [`BoundedLabels`]: `0` is
/// [`OTHER_LABEL`], admitted names count from `1` in the order they were
/// listed or first seen. Layers index their per-label handles by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LabelIdx(u16);

impl LabelIdx {
    /// The index of [`OTHER_LABEL`].
    pub const OTHER: LabelIdx = LabelIdx(0);

    /// The index as a `usize`, for indexing a table.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Whether this is [`OTHER_LABEL`].
    pub fn is_other(self) -> bool {
        self.0 == 0
    }
}

/// The rule that folds names (agents, tools, tiers) into bounded label
/// values; a cheap `Clone` handle, shared by every layer of a stack.
///
/// Every admitted name also gets a dense [`LabelIdx`], so a layer can keep
/// its handles in a table of [`capacity`](BoundedLabels::capacity) slots and
/// fold a name once (where a service is bound to it) rather than per call.
#[derive(Clone)]
pub struct BoundedLabels {
    inner: Arc<Inner>,
}

/// Names by index (`names[0]` is `other`) and the index of each name.
#[derive(Default)]
struct Table {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, LabelIdx>,
}

impl Table {
    fn with_other() -> Self {
        let mut t = Table::default();
        t.names.push(Arc::from(OTHER_LABEL));
        t
    }

    fn push(&mut self, name: &str) -> LabelIdx {
        if name == OTHER_LABEL {
            return LabelIdx::OTHER;
        }
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = LabelIdx(u16::try_from(self.names.len()).unwrap_or(u16::MAX));
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.index.insert(name, i);
        i
    }
}

enum Inner {
    Listed(Table),
    Capped { max: usize, seen: RwLock<Table> },
}

impl fmt::Debug for BoundedLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Listed(t) => f
                .debug_struct("BoundedLabels")
                .field("listed", &t.index.len())
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

/// The most names one rule admits (indices are `u16`, one is `other`).
const MAX_ADMITTED: usize = u16::MAX as usize - 1;

impl BoundedLabels {
    /// Listed names are their own label; every other name is `other`.
    pub fn new<I, S>(agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut table = Table::with_other();
        for name in agents.into_iter().take(MAX_ADMITTED) {
            table.push(name.as_ref());
        }
        Self {
            inner: Arc::new(Inner::Listed(table)),
        }
    }

    /// The first `max` distinct names seen are their own label; later new
    /// names are `other`.
    pub fn capped(max: usize) -> Self {
        Self {
            inner: Arc::new(Inner::Capped {
                max: max.min(MAX_ADMITTED),
                seen: RwLock::new(Table::with_other()),
            }),
        }
    }

    /// How many distinct indices this rule can hand out, `other` included:
    /// the size of a table indexed by [`LabelIdx`].
    pub fn capacity(&self) -> usize {
        match &*self.inner {
            Inner::Listed(t) => t.names.len(),
            Inner::Capped { max, .. } => max + 1,
        }
    }

    /// The index of `name`'s label, admitting it if there is room
    /// ([`LabelIdx::OTHER`] otherwise).
    pub fn index(&self, name: &str) -> LabelIdx {
        if name == OTHER_LABEL {
            return LabelIdx::OTHER;
        }
        match &*self.inner {
            Inner::Listed(t) => t.index.get(name).copied().unwrap_or(LabelIdx::OTHER),
            Inner::Capped { max, seen } => {
                if let Ok(seen) = seen.read() {
                    if let Some(i) = seen.index.get(name) {
                        return *i;
                    }
                    if seen.index.len() >= *max {
                        return LabelIdx::OTHER;
                    }
                }
                match seen.write() {
                    Ok(mut seen) if seen.index.len() < *max || seen.index.contains_key(name) => {
                        seen.push(name)
                    }
                    _ => LabelIdx::OTHER,
                }
            }
        }
    }

    /// The label value at `idx` (`other` for an index this rule never gave).
    pub fn name(&self, idx: LabelIdx) -> Arc<str> {
        let pick = |t: &Table| t.names.get(idx.index()).cloned();
        let found = match &*self.inner {
            Inner::Listed(t) => pick(t),
            Inner::Capped { seen, .. } => seen.read().ok().and_then(|t| pick(&t)),
        };
        found.unwrap_or_else(|| Arc::from(OTHER_LABEL))
    }

    /// Whether `name` is its own label (admitting it if there is room).
    pub fn admits(&self, name: &str) -> bool {
        name == OTHER_LABEL || !self.index(name).is_other()
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
        let folded: std::collections::HashSet<String> = (0..1000)
            .map(|i| labels.fold_str(&format!("agent-{i}")).to_owned())
            .collect();
        assert_eq!(folded.len(), 4, "{folded:?}");
        assert!(folded.contains(OTHER_LABEL));
        assert_eq!(labels.fold_str("agent-2"), "agent-2");
        assert_eq!(labels.fold_str("agent-3"), OTHER_LABEL);
    }

    #[test]
    fn indices_are_dense_stable_and_zero_is_other() {
        let listed = BoundedLabels::new(["a", "b", "a"]);
        assert_eq!(listed.capacity(), 3);
        assert_eq!(listed.index("a").index(), 1);
        assert_eq!(listed.index("b").index(), 2);
        assert_eq!(listed.index("zzz"), LabelIdx::OTHER);
        assert_eq!(&*listed.name(listed.index("b")), "b");
        assert_eq!(&*listed.name(LabelIdx::OTHER), OTHER_LABEL);

        let capped = BoundedLabels::capped(2);
        assert_eq!(capped.capacity(), 3);
        let x = capped.index("x");
        let y = capped.index("y");
        assert_eq!((x.index(), y.index()), (1, 2));
        assert_eq!(capped.index("z"), LabelIdx::OTHER);
        assert_eq!(capped.index("x"), x);
        assert!(capped.index("other").is_other());
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
