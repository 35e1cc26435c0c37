//! The cache key of a series: owned in the map, borrowed (as `dyn AsKeyRef`)
//! for lookups, so a lookup builds no owned key.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use mantissa_core::{AgentName, EventKind};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct KeyRef<'a> {
    pub(super) kind: EventKind,
    pub(super) agent: &'a str,
    pub(super) subject: &'a str,
    pub(super) tier: &'a str,
}

pub(super) trait AsKeyRef {
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

#[derive(Clone)]
pub(super) struct SeriesKey {
    pub(super) kind: EventKind,
    pub(super) agent: AgentName,
    pub(super) subject: Arc<str>,
    pub(super) tier: Arc<str>,
}

impl AsKeyRef for SeriesKey {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            kind: self.kind,
            agent: self.agent.as_str(),
            subject: &self.subject,
            tier: &self.tier,
        }
    }
}

impl<'a> Borrow<dyn AsKeyRef + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl Hash for dyn AsKeyRef + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for SeriesKey {}
