//! Where sessions live: the [`SessionStore`] trait, its contract for shared
//! backends, [`StoreError`], and the in-memory [`MemorySessionStore`].
//!
//! The per-session state machine itself is [`SessionState`] (in the
//! [`session`](crate::session) module, re-exported here because the trait
//! hands it to every update).
//!
//! # The store contract
//!
//! A store keeps one [`SessionState`] per session id and offers a single
//! read-modify-write operation, [`SessionStore::update`]: it runs a closure on
//! the session's state *atomically* (no other update of that session
//! interleaves) and returns the closure's result through a future. The reset
//! layer never holds state across an `.await`: it reads and decides in one
//! update before the call, and commits the outcome in another update after it,
//! so a dropped call leaves either the first update or both, never half of one.
//!
//! # A shared (Redis) backend
//!
//! The layer only sees the trait, so several replicas can share sessions by
//! implementing it over Redis, without touching the layer:
//!
//! * `update`: `WATCH mantissa:session:{id}`, `GET` the serialized state (or
//!   start from [`SessionState::new`]), run the closure, then
//!   `MULTI; SET … PX <idle ttl>; EXEC`. If `EXEC` aborts because another
//!   replica wrote the key in between, reload and run the closure again —
//!   which is why the closure is `FnMut` and must only compute from the state
//!   it is given. (Alternatively a Lua script could apply a fixed set of
//!   operations server-side, but a closure keeps policy code in Rust.)
//! * Idle TTL is Redis's own key expiry (`PX`, refreshed by every `SET`), and
//!   the capacity bound is Redis's `maxmemory-policy allkeys-lru` — both are
//!   then evictions of the least recently active sessions.
//! * Times: `tokio::time::Instant` is process-local, so the backend stores
//!   them as milliseconds since the Unix epoch and converts on load.
//! * The remembered reset's replacement history is the only large part of a
//!   state; a backend would store it under its own key, written once per reset
//!   and cached locally by fingerprint, so per-call traffic stays small.
//!
//! The in-memory store never fails; a shared backend returns [`StoreError`],
//! and the layer then lets the call through untracked (fail-open) and logs it.
//!
//! # Layout
//!
//! * `memory`: [`MemorySessionStore`] and its builder, and its
//!   `SessionControl` / `EventSink` adapters;
//! * `shard`: the memory store's sharded slab map (keys hashed once, the
//!   clock-hand idle sweep, sampled capacity eviction).

use std::future::Future;

use mantissa_core::SessionId;
use tokio::time::Instant;

mod memory;
mod shard;

#[doc(no_inline)]
pub use crate::session::{RememberedReset, SessionSnapshot, SessionState};
pub use memory::{MemorySessionStore, MemorySessionStoreBuilder};

/// A store operation failed (only shared backends can fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session store unavailable: {reason}")]
pub struct StoreError {
    /// What went wrong.
    pub reason: String,
}

impl StoreError {
    /// A store error with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// Where sessions live. See the [module docs](self) for the contract and how
/// a Redis backend implements it.
pub trait SessionStore: Send + Sync + 'static {
    /// Runs `f` atomically on the state of `session` (created fresh if
    /// absent), marks the session active at `now`, and returns `f`'s result.
    /// `f` may run more than once in backends with optimistic concurrency;
    /// only the last run's changes and result count.
    fn update<F, R>(
        &self,
        session: &SessionId,
        now: Instant,
        f: F,
    ) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        F: FnMut(&mut SessionState) -> R + Send,
        R: Send;

    /// Like [`update`](SessionStore::update) but only for a session that
    /// exists (returns `None` otherwise, creating nothing).
    fn update_existing<F, R>(
        &self,
        session: &SessionId,
        now: Instant,
        f: F,
    ) -> impl Future<Output = Result<Option<R>, StoreError>> + Send
    where
        F: FnMut(&mut SessionState) -> R + Send,
        R: Send;

    /// A copy of the session's state, without marking it active.
    fn get(
        &self,
        session: &SessionId,
    ) -> impl Future<Output = Result<Option<SessionState>, StoreError>> + Send;

    /// Removes a session. Returns whether it existed.
    fn remove(&self, session: &SessionId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Sessions currently held (may be approximate for shared backends).
    fn len(&self) -> usize;

    /// Whether no session is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
