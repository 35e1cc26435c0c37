//! [`MemorySessionStore`], the embedded [`SessionStore`], its builder, and its
//! [`SessionControl`] and [`EventSink`] adapters (the monitor's reset requests
//! and the tool stack's events reach the sessions through them).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mantissa_core::control::SessionControl;
use mantissa_core::{EventKind, EventSink, HealthEvent, Outcome, SessionId};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::shard::{Key, Shard};
use super::shared::{self, Clock, SharedBackend, SharedSessions, Swapped};
use super::{SessionStore, StoreError};
use crate::session::{SessionSnapshot, SessionState};

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    idle_ttl: Option<Duration>,
    shard_capacity: usize,
    len: AtomicUsize,
    idle_evictions: AtomicU64,
    capacity_evictions: AtomicU64,
    /// Where replicas share sessions, if anywhere.
    shared: Option<SharedBackend>,
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
        self.locate_key(Key::new(session))
    }

    fn locate_key(&self, key: Key) -> (&Mutex<Shard>, Key) {
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
        let evicted = shard.sweep(steps, |s| self.expired(s, now));
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
        self.with_key(Key::new(session), now, create, f)
    }

    fn with_key<R>(
        &self,
        key: Key,
        now: Instant,
        create: bool,
        f: impl FnOnce(&mut SessionState) -> R,
    ) -> Option<R> {
        let (shard, key) = self.locate_key(key);
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
                    shard.remove_slot(i);
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

    /// Runs `f` on the local state and writes the result to the shared
    /// backend: awaited (one round trip) when `f` began a call, behind
    /// otherwise. See [`shared`](super::shared).
    async fn update_shared<F, R>(
        &self,
        backend: &dyn SharedSessions,
        session: &SessionId,
        now: Instant,
        create: bool,
        mut f: F,
    ) -> Option<R>
    where
        F: FnMut(&mut SessionState) -> R,
    {
        let (r, began, base, state) = self.with_state(session, now, create, |st| {
            let calls = st.llm_calls();
            let r = f(st);
            let base = st.shared_version;
            st.shared_version = base.saturating_add(1);
            (r, st.llm_calls() != calls, u64::from(base), st.clone())
        })?;
        let bytes = shared::encode(&state, Clock::now());
        if !began {
            backend.swap_behind(session, base, bytes);
            return Some(r);
        }
        // A failed swap (the backend counts and logs it) leaves the local
        // state serving.
        let Ok(Swapped::Newer { version, state }) = backend.swap(session, base, bytes).await else {
            return Some(r);
        };
        let clock = Clock::now();
        let Some(newer) = shared::decode(&state, clock) else {
            return Some(r);
        };
        // Another replica wrote a newer state: decide again on it.
        let again = self.with_state(session, now, true, |st| {
            *st = newer;
            st.touch(now);
            let r = f(st);
            st.shared_version = u32::try_from(version.saturating_add(1)).unwrap_or(u32::MAX);
            (r, st.clone())
        });
        match again {
            Some((r, state)) => {
                backend.swap_behind(session, version, shared::encode(&state, clock));
                Some(r)
            }
            None => Some(r),
        }
    }

    /// Writes the local state of `session` behind, if shared.
    fn share_behind(&self, session: &SessionId) {
        let Some(backend) = &self.inner.shared else {
            return;
        };
        let taken = self.with_state(session, Instant::now(), false, |st| {
            let base = st.shared_version;
            st.shared_version = base.saturating_add(1);
            (base, st.clone())
        });
        if let Some((base, state)) = taken {
            backend.swap_behind(session, u64::from(base), shared::encode(&state, Clock::now()));
        }
    }

    fn insert(&self, shard: &mut Shard, key: Key, now: Instant) -> u32 {
        if shard.len() >= self.inner.shard_capacity
            && let Some(victim) = shard.victim(key.hash.rotate_left(17))
        {
            let idle = shard.state(victim).is_some_and(|s| self.expired(s, now));
            if shard.remove_slot(victim).is_some() {
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
        let r = self.with_state(session, Instant::now(), false, f);
        if r.is_some() {
            self.share_behind(session);
        }
        r
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
        use futures_util::future::Either;
        let missing = || StoreError::new("session slot missing");
        match &self.inner.shared {
            None => Either::Left(std::future::ready(
                self.with_state(session, now, true, f).ok_or_else(missing),
            )),
            Some(backend) => Either::Right(async move {
                self.update_shared(&**backend, session, now, true, f)
                    .await
                    .ok_or_else(missing)
            }),
        }
    }

    fn update_hashed<F, R>(
        &self,
        session: &SessionId,
        hash: u64,
        now: Instant,
        f: F,
    ) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        F: FnMut(&mut SessionState) -> R + Send,
        R: Send,
    {
        use futures_util::future::Either;
        debug_assert_eq!(hash, mantissa_core::session_hash(session.as_str()));
        if self.inner.shared.is_some() {
            // Shared: the round trip dominates; the shared path re-hashes.
            return Either::Left(self.update(session, now, f));
        }
        let key = Key::with_hash(hash, session);
        let out = self
            .with_key(key, now, true, f)
            .ok_or_else(|| StoreError::new("session slot missing"));
        Either::Right(std::future::ready(out))
    }

    fn update_now<F, R>(
        &self,
        session: &SessionId,
        hash: Option<u64>,
        now: Instant,
        f: F,
    ) -> Option<Result<R, StoreError>>
    where
        F: FnMut(&mut SessionState) -> R + Send,
        R: Send,
    {
        if self.inner.shared.is_some() {
            // A call's first update may wait for the shared backend.
            return None;
        }
        let key = match hash {
            Some(h) => {
                debug_assert_eq!(h, mantissa_core::session_hash(session.as_str()));
                Key::with_hash(h, session)
            }
            None => Key::new(session),
        };
        let out = self.with_key(key, now, true, f);
        Some(out.ok_or_else(|| StoreError::new("session slot missing")))
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
        use futures_util::future::Either;
        match &self.inner.shared {
            None => Either::Left(std::future::ready(Ok(self.with_state(session, now, false, f)))),
            Some(backend) => {
                Either::Right(async move { Ok(self.update_shared(&**backend, session, now, false, f).await) })
            }
        }
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
            Some(i) => shard.remove_slot(i).is_some(),
            None => false,
        };
        drop(shard);
        if removed {
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(backend) = &self.inner.shared {
            backend.remove(session);
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
    shared: Option<SharedBackend>,
}

impl Default for MemorySessionStoreBuilder {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            idle_ttl: Some(Duration::from_secs(3600)),
            shards: None,
            shared: None,
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

    /// Shares the sessions with other replicas' stores through `backend`
    /// (for example `mantissa_redis::RedisSessions`): the local state still
    /// serves every call; the update that begins a call waits for one
    /// round trip to the backend, every other update is written behind.
    /// See [`shared`](super::shared). Defaults to none: the sessions are
    /// this process's alone.
    pub fn shared(mut self, backend: Arc<dyn SharedSessions>) -> Self {
        self.shared = Some(backend);
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemorySessionStore {
        let shards = self
            .shards
            .unwrap_or_else(|| (self.capacity / 1024).clamp(1, 64))
            .next_power_of_two();
        let shard_capacity = self.capacity.div_ceil(shards).max(1);
        MemorySessionStore {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::new(Shard::new())).collect(),
                idle_ttl: self.idle_ttl,
                shard_capacity,
                len: AtomicUsize::new(0),
                idle_evictions: AtomicU64::new(0),
                capacity_evictions: AtomicU64::new(0),
                shared: self.shared,
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
