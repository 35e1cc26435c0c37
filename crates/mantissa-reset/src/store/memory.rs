//! [`MemorySessionStore`], the embedded [`SessionStore`], its builder, and its
//! [`SessionControl`] and [`EventSink`] adapters (the monitor's reset requests
//! and the tool stack's events reach the sessions through them).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mantissa_core::control::SessionControl;
use mantissa_core::{EventKind, EventSink, HealthEvent, Outcome, SessionId};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::shard::{Key, Shard};
use super::{SessionStore, StoreError};
use crate::session::{SessionSnapshot, SessionState};

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    idle_ttl: Option<Duration>,
    shard_capacity: usize,
    len: AtomicUsize,
    idle_evictions: AtomicU64,
    capacity_evictions: AtomicU64,
}

/// The in-memory [`SessionStore`]: sharded locks (no global lock per call),
/// O(1) per operation, idle-TTL and capacity eviction of the least recently
/// active sessions.
///
/// Eviction is per shard: each of the `shards` shards holds at most
/// `capacity / shards` sessions (rounded up), so eviction may begin a little
/// before the global count reaches `capacity`. A full shard evicts the least
/// recently active of a sample of 16 of its sessions (exact when the shard
/// holds 16 or fewer; approximate otherwise, as Redis's `allkeys-lru` is) —
/// keeping an exact recency list would touch two more sessions' memory on
/// every call. Idle sessions are evicted by a clock hand that checks one
/// slot of the shard every 4 accesses (so a busy shard is swept in four
/// times as many accesses as it holds sessions); a session found idle past
/// its TTL when accessed starts afresh; and [`MemorySessionStore::evict_idle`]
/// sweeps every shard (run it periodically, e.g. from a `tokio` interval, when
/// some shards may see no traffic).
///
/// Cloning is cheap and shares the sessions.
#[derive(Debug, Clone)]
pub struct MemorySessionStore {
    inner: Arc<Inner>,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySessionStore {
    /// A store holding up to 100,000 sessions with a 1-hour idle TTL.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a customised store.
    pub fn builder() -> MemorySessionStoreBuilder {
        MemorySessionStoreBuilder::default()
    }

    /// Per-session memory of the in-memory store, computed from type sizes:
    /// the session state, its slot (state + id, as an `Option`) and its index
    /// entry (id + slot number + one control byte), before hash-table and
    /// vector slack. The crate docs and the `reset` bench report it.
    pub fn bytes_per_session_lower_bound() -> usize {
        Shard::bytes_per_session_lower_bound()
    }

    fn locate(&self, session: &SessionId) -> (&Mutex<Shard>, Key) {
        let key = Key::new(&self.inner.hasher, session);
        let n = self.inner.shards.len();
        // n is a power of two; the index uses the low bits, the shard the high ones.
        let i = ((key.hash >> 40) as usize) & (n - 1);
        (&self.inner.shards[i], key)
    }

    fn expired(&self, state: &SessionState, now: Instant) -> bool {
        self.inner
            .idle_ttl
            .is_some_and(|ttl| now.saturating_duration_since(state.last_activity()) >= ttl)
    }

    /// Advances the shard's clock hand by `steps` slots, evicting expired
    /// sessions it passes. Returns how many were evicted.
    fn sweep(&self, shard: &mut Shard, now: Instant, steps: usize) -> usize {
        if self.inner.idle_ttl.is_none() {
            return 0;
        }
        let evicted = shard.sweep(steps, &self.inner.hasher, |s| self.expired(s, now));
        if evicted > 0 {
            self.inner.len.fetch_sub(evicted, Ordering::Relaxed);
            self.inner
                .idle_evictions
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
        evicted
    }

    /// The synchronous core of every update.
    fn with_state<R>(
        &self,
        session: &SessionId,
        now: Instant,
        create: bool,
        f: impl FnOnce(&mut SessionState) -> R,
    ) -> Option<R> {
        let (shard, key) = self.locate(session);
        let mut shard = shard.lock();
        if shard.tick() {
            self.sweep(&mut shard, now, 1);
        }
        let i = match shard.find(&key) {
            Some(i) => {
                // A session idle past its TTL that the hand has not reached
                // yet starts afresh.
                let stale = shard.state(i).is_some_and(|s| self.expired(s, now));
                if stale {
                    shard.remove_slot(i, &self.inner.hasher);
                    self.inner.len.fetch_sub(1, Ordering::Relaxed);
                    self.inner.idle_evictions.fetch_add(1, Ordering::Relaxed);
                    if !create {
                        return None;
                    }
                    self.insert(&mut shard, key, now)
                } else {
                    i
                }
            }
            None if create => self.insert(&mut shard, key, now),
            None => return None,
        };
        let node = shard.node(i)?;
        node.state.touch(now);
        Some(f(&mut node.state))
    }

    fn insert(&self, shard: &mut Shard, key: Key, now: Instant) -> u32 {
        if shard.len() >= self.inner.shard_capacity
            && let Some(victim) = shard.victim(key.hash.rotate_left(17))
        {
            let idle = shard.state(victim).is_some_and(|s| self.expired(s, now));
            if shard.remove_slot(victim, &self.inner.hasher).is_some() {
                self.inner.len.fetch_sub(1, Ordering::Relaxed);
                let counter = if idle {
                    &self.inner.idle_evictions
                } else {
                    &self.inner.capacity_evictions
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.inner.len.fetch_add(1, Ordering::Relaxed);
        shard.insert(key, SessionState::new(now))
    }

    /// Evicts every session idle for the TTL or longer, in every shard.
    /// Returns how many were evicted. Run it periodically when some shards
    /// may see no traffic (lazy eviction only cleans shards that are used).
    pub fn evict_idle(&self, now: Instant) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| {
                let mut shard = s.lock();
                let steps = shard.slot_count();
                self.sweep(&mut shard, now, steps)
            })
            .sum()
    }

    /// Sessions evicted for idleness and for capacity so far.
    pub fn evictions(&self) -> (u64, u64) {
        (
            self.inner.idle_evictions.load(Ordering::Relaxed),
            self.inner.capacity_evictions.load(Ordering::Relaxed),
        )
    }

    /// A snapshot of a session's tracked state (not marking it active);
    /// error counts over the last `window` calls.
    pub fn snapshot(&self, session: &SessionId, window: u32) -> Option<SessionSnapshot> {
        let (shard, key) = self.locate(session);
        let shard = shard.lock();
        let i = shard.find(&key)?;
        shard.state(i).map(|s| s.snapshot(window))
    }

    /// Bytes held by the store's own structures (index, slots, free lists),
    /// excluding the session-id strings (shared with requests) and
    /// remembered-reset histories (only present after a reset).
    pub fn approximate_bytes(&self) -> usize {
        std::mem::size_of::<Inner>()
            + self.inner.shards.len() * std::mem::size_of::<Mutex<Shard>>()
            + self.inner.shards.iter().map(|s| s.lock().bytes()).sum::<usize>()
    }

    /// Runs `f` on an existing session synchronously (for the `EventSink` and
    /// `SessionControl` implementations, which are synchronous traits).
    fn touch_existing<R>(&self, session: &SessionId, f: impl FnOnce(&mut SessionState) -> R) -> Option<R> {
        self.with_state(session, Instant::now(), false, f)
    }
}

impl SessionStore for MemorySessionStore {
    fn update<F, R>(
        &self,
        session: &SessionId,
        now: Instant,
        f: F,
    ) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        F: FnMut(&mut SessionState) -> R + Send,
        R: Send,
    {
        let out = self
            .with_state(session, now, true, f)
            .ok_or_else(|| StoreError::new("session slot missing"));
        std::future::ready(out)
    }

    fn update_existing<F, R>(
        &self,
        session: &SessionId,
        now: Instant,
        f: F,
    ) -> impl Future<Output = Result<Option<R>, StoreError>> + Send
    where
        F: FnMut(&mut SessionState) -> R + Send,
        R: Send,
    {
        std::future::ready(Ok(self.with_state(session, now, false, f)))
    }

    fn get(
        &self,
        session: &SessionId,
    ) -> impl Future<Output = Result<Option<SessionState>, StoreError>> + Send {
        let (shard, key) = self.locate(session);
        let shard = shard.lock();
        let state = shard.find(&key).and_then(|i| shard.state(i)).cloned();
        drop(shard);
        std::future::ready(Ok(state))
    }

    fn remove(&self, session: &SessionId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (shard, key) = self.locate(session);
        let mut shard = shard.lock();
        let removed = match shard.find(&key) {
            Some(i) => shard.remove_slot(i, &self.inner.hasher).is_some(),
            None => false,
        };
        drop(shard);
        if removed {
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
        }
        std::future::ready(Ok(removed))
    }

    fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }
}

impl SessionControl for MemorySessionStore {
    /// Marks a known session for a reset on its next call (reason label
    /// `requested`; the free-form reason goes into the notice and event).
    fn request_reset(&self, session: &SessionId, reason: &str) -> bool {
        self.touch_existing(session, |s| s.request_reset(reason))
            .is_some()
    }
}

impl EventSink for MemorySessionStore {
    /// Tool events update the session's tool error streak and error ring
    /// (creating nothing: events of sessions the layer never saw are ignored).
    /// Other kinds are ignored.
    fn record(&self, event: &HealthEvent) {
        if event.kind != EventKind::Tool {
            return;
        }
        let failure = match event.outcome {
            Outcome::Success => None,
            Outcome::Failure(c) => Some(c),
        };
        self.touch_existing(&event.session, |s| s.record_tool(failure));
    }
}

/// Builds a [`MemorySessionStore`].
#[derive(Debug, Clone)]
pub struct MemorySessionStoreBuilder {
    capacity: usize,
    idle_ttl: Option<Duration>,
    shards: Option<usize>,
}

impl Default for MemorySessionStoreBuilder {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            idle_ttl: Some(Duration::from_secs(3600)),
            shards: None,
        }
    }
}

impl MemorySessionStoreBuilder {
    /// Maximum sessions held. Defaults to 100,000.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sessions idle this long are evicted (`None` keeps them until capacity
    /// eviction). Defaults to 1 hour.
    pub fn idle_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// Number of lock shards, rounded up to a power of two. Defaults to
    /// `capacity / 1024` clamped to 1..=64 (so small stores evict in exact
    /// least-recently-active order).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.clamp(1, 1024));
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemorySessionStore {
        let shards = self
            .shards
            .unwrap_or_else(|| (self.capacity / 1024).clamp(1, 64))
            .next_power_of_two();
        let hasher = RandomState::new();
        let shard_capacity = self.capacity.div_ceil(shards).max(1);
        MemorySessionStore {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::new(Shard::new())).collect(),
                hasher,
                idle_ttl: self.idle_ttl,
                shard_capacity,
                len: AtomicUsize::new(0),
                idle_evictions: AtomicU64::new(0),
                capacity_evictions: AtomicU64::new(0),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn small_shards_evict_the_least_recently_active_exactly() {
        let store = MemorySessionStore::builder().capacity(3).idle_ttl(None).build();
        let t = Instant::now();
        for (k, id) in ["a", "b", "c", "a", "d", "e"].into_iter().enumerate() {
            let at = t + Duration::from_secs(k as u64);
            store
                .update(&SessionId::new(id), at, |s| s.begin_call())
                .await
                .unwrap();
        }
        // a was touched after b and c, then d evicted b, e evicted c.
        assert_eq!(store.len(), 3);
        assert!(store.snapshot(&"a".into(), 20).is_some());
        assert!(store.snapshot(&"b".into(), 20).is_none());
        assert!(store.snapshot(&"c".into(), 20).is_none());
        assert_eq!(store.evictions(), (0, 2));
        assert!(store.remove(&"d".into()).await.unwrap());
        assert!(!store.remove(&"d".into()).await.unwrap());
        assert_eq!(store.len(), 2);
    }
}
