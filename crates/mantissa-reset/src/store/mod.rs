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
//! Several replicas share sessions through [`MemorySessionStoreBuilder::shared`]
//! and a [`SharedSessions`] backend (`mantissa-redis` implements one on
//! Redis): the local store keeps serving every update, the update that
//! begins a call swaps its result into the shared copy with one round trip
//! (adopting and re-running on a newer copy), and every other update is
//! written behind. See [`shared`] for the protocol. A backend could also
//! implement this trait directly (`WATCH`/`MULTI` per update), at a round
//! trip per update rather than per call.
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
pub mod shared;

#[doc(no_inline)]
pub use crate::session::{RememberedReset, SessionSnapshot, SessionState};
pub use memory::{MemorySessionStore, MemorySessionStoreBuilder};
pub use shared::{SharedSessions, SwapFuture, Swapped};

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

    /// [`update`](SessionStore::update) for a session whose hash the caller
    /// already computed ([`session_hash`](mantissa_core::session_hash), which
    /// the stack's call context carries): a store indexed by that hash does
    /// not hash the id again. `hash` must be `session_hash(session)`.
    /// Defaults to [`update`](SessionStore::update).
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
        let _ = hash;
        self.update(session, now, f)
    }

    /// [`update_hashed`](SessionStore::update_hashed) (or, without a hash,
    /// [`update`](SessionStore::update)) done at once by a store whose update
    /// never waits, such as the in-memory store without a shared backend.
    /// Returns `None`, without running `f`, when the update would wait; the
    /// caller then uses the asynchronous methods. The reset layer's common
    /// path uses it to run without a boxed future. Defaults to `None`.
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
        let _ = (session, hash, now, f);
        None
    }

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
