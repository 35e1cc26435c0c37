//! Session stickiness: within a session the tier may rise but not fall.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mantissa_core::SessionId;
use tokio::time::Instant;

/// Bounded memory of each session's highest tier rank.
///
/// Memory is bounded twice: at most `capacity` sessions (when full, the
/// session first seen longest ago is forgotten), and an entry idle for more
/// than `ttl` no longer raises anything (it is treated as absent and is
/// reclaimed as it reaches the front of the insertion queue).
#[derive(Debug)]
pub(crate) struct StickyStore {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<SessionId, Entry>,
    /// Sessions in insertion order; the same set of keys as `map`.
    order: VecDeque<SessionId>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    rank: usize,
    last_seen: Instant,
}

/// How many expired entries one insertion reclaims at most.
const RECLAIM_PER_INSERT: usize = 8;

impl StickyStore {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records `rank` for `session` and returns the rank to use: the larger
    /// of `rank` and the session's remembered rank.
    pub(crate) fn apply(&self, session: &SessionId, rank: usize, now: Instant) -> usize {
        let Ok(mut inner) = self.inner.lock() else {
            // A poisoned lock only means another thread panicked mid-update;
            // stickiness is an optimisation, so skip it rather than fail.
            return rank;
        };
        if let Some(e) = inner.map.get_mut(session) {
            let live = now.saturating_duration_since(e.last_seen) <= self.ttl;
            let effective = if live { e.rank.max(rank) } else { rank };
            e.rank = effective;
            e.last_seen = now;
            return effective;
        }
        let Inner { map, order } = &mut *inner;
        for _ in 0..RECLAIM_PER_INSERT {
            let expired = order
                .front()
                .and_then(|front| map.get(front))
                .is_some_and(|e| now.saturating_duration_since(e.last_seen) > self.ttl);
            if !expired {
                break;
            }
            if let Some(front) = order.pop_front() {
                map.remove(&front);
            }
        }
        while map.len() >= self.capacity {
            match order.pop_front() {
                Some(front) => {
                    map.remove(&front);
                }
                None => break,
            }
        }
        map.insert(session.clone(), Entry { rank, last_seen: now });
        order.push_back(session.clone());
        rank
    }

    /// Number of sessions remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rises_never_falls_until_idle() {
        let store = StickyStore::new(10, Duration::from_secs(60));
        let s = SessionId::new("s");
        assert_eq!(store.apply(&s, 1, Instant::now()), 1);
        assert_eq!(store.apply(&s, 0, Instant::now()), 1);
        assert_eq!(store.apply(&s, 2, Instant::now()), 2);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(store.apply(&s, 0, Instant::now()), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(store.apply(&s, 0, Instant::now()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let store = StickyStore::new(3, Duration::from_secs(60));
        for i in 0..10 {
            store.apply(&SessionId::new(format!("s{i}")), 2, Instant::now());
        }
        assert_eq!(store.len(), 3);
        // The oldest sessions were forgotten; the newest are remembered.
        assert_eq!(store.apply(&SessionId::new("s9"), 0, Instant::now()), 2);
        assert_eq!(store.apply(&SessionId::new("s0"), 0, Instant::now()), 0);
        // Idle entries are reclaimed on later inserts.
        tokio::time::advance(Duration::from_secs(120)).await;
        store.apply(&SessionId::new("new"), 0, Instant::now());
        assert_eq!(store.len(), 1);
    }
}
