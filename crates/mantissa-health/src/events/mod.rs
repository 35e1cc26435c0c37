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
use std::sync::atomic::{AtomicU64, Ordering};

use mantissa_core::HealthEvent;
use parking_lot::Mutex;

pub use jsonl::JsonLinesSink;

/// A journal entry: its sequence number and the event.
type Entry = (u64, HealthEvent);

/// A fixed ring of the latest events. Writers claim a sequence number with one
/// atomic add and lock only their own slot, so concurrent calls do not
/// contend unless the ring wraps between them.
pub(crate) struct EventJournal {
    next: AtomicU64,
    slots: Box<[Mutex<Option<Entry>>]>,
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
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let idx = (seq % self.slots.len() as u64) as usize;
        let old = self.slots[idx].lock().replace((seq, event));
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
                Some((s, e)) if *s == seq => out.push(e.clone()),
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
