//! Health events: the bounded in-memory journal behind
//! [`HealthRegistry::recent`](crate::HealthRegistry::recent), and
//! [`JsonLinesSink`], an [`EventSink`](mantissa_core::EventSink) that appends
//! one JSON object per line to a file from a background thread.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use mantissa_core::{EventSink, HealthEvent};
//!
//! // Any `Fn(&HealthEvent)` is a sink; it must be cheap and never block.
//! let seen = Arc::new(Mutex::new(Vec::<String>::new()));
//! let sink = {
//!     let seen = seen.clone();
//!     move |e: &HealthEvent| seen.lock().unwrap().push(e.subject.to_string())
//! };
//! let layer = mantissa_health::HealthLayer::new().sink(sink);
//! # let _ = layer;
//! ```

mod jsonl;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mantissa_core::{AgentName, EventKind, HealthEvent, Outcome, SessionId, Tier, Usage};
use parking_lot::Mutex;

pub use jsonl::JsonLinesSink;

/// The labels of one series' calls, shared by all its journal entries (a
/// call's entry clones one `Arc`, not three names).
#[derive(Debug)]
pub(crate) struct CallLabels {
    pub(crate) agent: AgentName,
    pub(crate) kind: EventKind,
    pub(crate) subject: Arc<str>,
    pub(crate) tier: Option<Tier>,
}

/// A call as the journal keeps it: its series' labels and what happened.
/// Turned into a [`HealthEvent`] only when read.
#[derive(Debug)]
pub(crate) struct CallRecord {
    pub(crate) labels: Arc<CallLabels>,
    pub(crate) session: SessionId,
    pub(crate) timestamp_ms: u64,
    pub(crate) outcome: Outcome,
    pub(crate) duration: Duration,
    pub(crate) usage: Usage,
    pub(crate) cost_usd: f64,
    pub(crate) detail: Option<String>,
}

/// What a journal slot holds: a call of a layer, or an event given to the
/// registry from outside (rare: boxed, so a slot stays small).
enum Entry {
    Call(CallRecord),
    Event(Box<HealthEvent>),
}

impl Entry {
    fn to_event(&self) -> HealthEvent {
        match self {
            Entry::Event(e) => HealthEvent::clone(e),
            Entry::Call(c) => HealthEvent {
                timestamp_ms: c.timestamp_ms,
                agent: c.labels.agent.clone(),
                session: c.session.clone(),
                kind: c.labels.kind,
                subject: c.labels.subject.clone(),
                tier: c.labels.tier.clone(),
                outcome: c.outcome,
                duration: c.duration,
                usage: c.usage,
                cost_usd: c.cost_usd,
                detail: c.detail.clone(),
                reason: None,
            },
        }
    }
}

/// One journal slot: the sequence number of its entry, and the entry.
type Slot = Mutex<Option<(u64, Entry)>>;

/// A fixed ring of the latest events. Writers claim a sequence number with one
/// atomic add and lock only their own slot, so concurrent calls do not
/// contend unless the ring wraps between them. A call's entry is compact
/// ([`CallRecord`]); readers build the [`HealthEvent`]s.
pub(crate) struct EventJournal {
    next: AtomicU64,
    slots: Box<[Slot]>,
}

impl fmt::Debug for EventJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventJournal")
            .field("capacity", &self.slots.len())
            .field("written", &self.next.load(Ordering::Relaxed))
            .finish()
    }
}

impl EventJournal {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            next: AtomicU64::new(0),
            slots: (0..capacity.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn push(&self, event: HealthEvent) {
        self.push_entry(Entry::Event(Box::new(event)));
    }

    pub(crate) fn push_call(&self, call: CallRecord) {
        self.push_entry(Entry::Call(call));
    }

    fn push_entry(&self, entry: Entry) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let idx = (seq % self.slots.len() as u64) as usize;
        let old = self.slots[idx].lock().replace((seq, entry));
        drop(old);
    }

    /// The latest `n` events, oldest first. An event whose slot is being
    /// rewritten concurrently is skipped.
    pub(crate) fn recent(&self, n: usize) -> Vec<HealthEvent> {
        let end = self.next.load(Ordering::Relaxed);
        let n = n.min(self.slots.len()) as u64;
        let start = end.saturating_sub(n);
        let mut out = Vec::with_capacity(n as usize);
        for seq in start..end {
            let idx = (seq % self.slots.len() as u64) as usize;
            match &*self.slots[idx].lock() {
                Some((s, e)) if *s == seq => out.push(e.to_event()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::{EventKind, Outcome};
    use std::time::Duration;

    fn ev(subject: &str) -> HealthEvent {
        HealthEvent::now(
            "a".into(),
            "s".into(),
            EventKind::Tool,
            subject,
            Outcome::Success,
            Duration::ZERO,
        )
    }

    #[test]
    fn journal_keeps_the_latest_in_order() {
        let j = EventJournal::new(3);
        assert!(j.recent(5).is_empty());
        for s in ["a", "b", "c", "d", "e"] {
            j.push(ev(s));
        }
        let got: Vec<_> = j.recent(10).iter().map(|e| e.subject.to_string()).collect();
        assert_eq!(got, ["c", "d", "e"]);
        let got: Vec<_> = j.recent(2).iter().map(|e| e.subject.to_string()).collect();
        assert_eq!(got, ["d", "e"]);
    }
}
