//! Sessions shared between replicas: the [`SharedSessions`] hook of
//! [`MemorySessionStore`](super::MemorySessionStore), and the wire form of a
//! [`SessionState`].
//!
//! The local store stays the state that serves every call; a shared backend
//! (for example `mantissa-redis`'s `RedisSessions`) is where replicas meet.
//! Each local session carries the *version* of the shared copy it was last
//! written as. An update runs on the local state, then:
//!
//! * **the update that begins a call** (the reset layer's pre-call update:
//!   it counts an LLM call) swaps the new state in with one awaited round
//!   trip, [`SharedSessions::swap`]: written if the shared copy is not newer
//!   than the local base version; otherwise the shared copy comes back, the
//!   local state is replaced by it and the closure runs again on it (the
//!   closure is `FnMut` for exactly this), and that result is written
//!   behind. So a call decides on the newest state any replica wrote —
//!   a remembered reset crosses replicas — at one round trip per call;
//! * **every other update** (the post-call commit, a reset's commit, tool
//!   events, the monitor's reset requests) is written behind,
//!   [`SharedSessions::swap_behind`], off the call's path.
//!
//! A newer version always wins: a write based on an older version than the
//! shared copy is refused (and a refused write-behind is dropped: two calls
//! of one session in flight on two replicas at once may lose the earlier
//! one's outcome, never the newer state). When the backend fails (Redis
//! down, slow, flushed) the local state serves as it is; a flushed copy is
//! simply written again.
//!
//! Times cross replicas as Unix milliseconds: a `tokio::time::Instant`
//! means nothing in another process.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mantissa_core::{Message, SessionId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::StoreError;
use crate::session::SessionState;

/// The answer of a [`SharedSessions::swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swapped {
    /// The state was written (as the base version + 1, or higher).
    Written,
    /// The shared copy is newer than the base: it was left as it is and
    /// comes back, with its version, for the caller to adopt.
    Newer {
        /// The shared copy's version.
        version: u64,
        /// The shared copy, in the wire form.
        state: Vec<u8>,
    },
}

/// The boxed future of [`SharedSessions::swap`].
pub type SwapFuture = Pin<Box<dyn Future<Output = Result<Swapped, StoreError>> + Send + 'static>>;

/// A backend where several replicas' [`MemorySessionStore`](super::MemorySessionStore)s
/// share sessions (see the [module docs](self)). States travel in their
/// wire form (bytes); the backend stores them, with a version, under the
/// session id.
///
/// Object safe: the store holds an `Arc<dyn SharedSessions>`.
pub trait SharedSessions: Send + Sync + fmt::Debug + 'static {
    /// Writes `state` as version `base + 1` (or one above the shared copy's
    /// version, when the shared copy is older, e.g. after a failed write)
    /// unless the shared copy's version is above `base`; then answers
    /// [`Swapped::Newer`] with it. Must be atomic per session and bounded
    /// by a short timeout (an `Err` lets the call go on with local state).
    fn swap(&self, session: &SessionId, base: u64, state: Vec<u8>) -> SwapFuture;

    /// The same write, off the call's path: queued or spawned, nobody waits
    /// for it; a refused one is dropped. Must not block.
    fn swap_behind(&self, session: &SessionId, base: u64, state: Vec<u8>);

    /// Forgets the shared copy of `session`. Must not block.
    fn remove(&self, session: &SessionId);
}

/// The wire form's format version; a state of another version is not
/// adopted (the local state serves).
const WIRE_VERSION: u32 = 1;

/// A [`SessionState`] as it crosses replicas (JSON). Times are Unix
/// milliseconds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionWire {
    pub(crate) v: u32,
    pub(crate) last_activity_ms: u64,
    pub(crate) last_reset_ms: Option<u64>,
    pub(crate) base_tokens: u64,
    pub(crate) context_tokens: u64,
    pub(crate) error_ring: u64,
    pub(crate) pending_reset: Option<String>,
    pub(crate) remembered: Option<RememberedWire>,
    pub(crate) turns: u32,
    pub(crate) turns_since_reset: u32,
    pub(crate) llm_calls: u32,
    pub(crate) last_user: u32,
    pub(crate) accounted_messages: u32,
    pub(crate) resets: u32,
    pub(crate) latency_baseline_ms: f32,
    pub(crate) latency_recent_ms: f32,
    pub(crate) brittleness: f32,
    pub(crate) latency_samples: u16,
    pub(crate) consecutive_llm_errors: u16,
    pub(crate) consecutive_tool_errors: u16,
    pub(crate) warned: u16,
    pub(crate) ring_len: u8,
    /// `requested` or `overflow`.
    pub(crate) pending_trigger: Option<String>,
    /// The session's sticky tier rank (stickiness), if any.
    #[serde(default)]
    pub(crate) sticky_rank: Option<u32>,
    /// When the sticky tier was last chosen.
    #[serde(default)]
    pub(crate) sticky_at_ms: u64,
}

/// A remembered reset as it crosses replicas.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RememberedWire {
    pub(crate) covered: (u32, [(u32, u64); 4]),
    pub(crate) replacement_fp: (u32, [(u32, u64); 4]),
    pub(crate) replacement: Vec<Message>,
    pub(crate) replacement_tokens: u64,
    pub(crate) reason: String,
    pub(crate) strategy: String,
}

/// Converts between a local clock and Unix milliseconds, at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    now: Instant,
    now_ms: u64,
}

impl Clock {
    pub(crate) fn now() -> Self {
        Self {
            now: Instant::now(),
            now_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// The local moment of the conversion.
    pub(crate) fn instant(self) -> Instant {
        self.now
    }

    /// The same moment, as Unix milliseconds.
    pub(crate) fn now_ms(self) -> u64 {
        self.now_ms
    }

    pub(crate) fn to_ms(self, t: Instant) -> u64 {
        let ago = self.now.saturating_duration_since(t);
        self.now_ms
            .saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn to_instant(self, ms: u64) -> Instant {
        let ago = std::time::Duration::from_millis(self.now_ms.saturating_sub(ms));
        self.now.checked_sub(ago).unwrap_or(self.now)
    }
}

/// The wire form of `state` (JSON bytes).
pub(crate) fn encode(state: &SessionState, clock: Clock) -> Vec<u8> {
    serde_json::to_vec(&state.to_wire(clock)).unwrap_or_default()
}

/// A state from its wire form; `None` for bytes this build cannot read.
pub(crate) fn decode(bytes: &[u8], clock: Clock) -> Option<SessionState> {
    let wire: SessionWire = serde_json::from_slice(bytes).ok()?;
    if wire.v != WIRE_VERSION {
        return None;
    }
    SessionState::from_wire(wire, clock)
}

impl SessionWire {
    pub(crate) const VERSION: u32 = WIRE_VERSION;
}

/// Shared in `Arc`s like the local remembered reset.
pub(crate) type SharedBackend = Arc<dyn SharedSessions>;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::fingerprint::PrefixFingerprint;
    use crate::policy::{Strategy, Trigger};
    use crate::session::RememberedReset;
    use crate::store::{MemorySessionStore, SessionStore};

    /// An in-process backend with the Redis script's semantics.
    #[derive(Debug, Default)]
    struct Map(Mutex<HashMap<String, (u64, Vec<u8>)>>);

    impl Map {
        fn swap_now(&self, session: &SessionId, base: u64, state: Vec<u8>) -> Swapped {
            let mut g = self.0.lock().unwrap();
            let cur = g.get(session.as_str()).map(|(v, _)| *v).unwrap_or(0);
            if cur > base {
                let (version, state) = g[session.as_str()].clone();
                return Swapped::Newer { version, state };
            }
            g.insert(session.as_str().to_owned(), (cur.max(base) + 1, state));
            Swapped::Written
        }
    }

    impl SharedSessions for Arc<Map> {
        fn swap(&self, session: &SessionId, base: u64, state: Vec<u8>) -> SwapFuture {
            let out = self.swap_now(session, base, state);
            Box::pin(std::future::ready(Ok(out)))
        }

        fn swap_behind(&self, session: &SessionId, base: u64, state: Vec<u8>) {
            self.swap_now(session, base, state);
        }

        fn remove(&self, session: &SessionId) {
            self.0.lock().unwrap().remove(session.as_str());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_wire_form_round_trips_every_field_and_the_remembered_reset() {
        let mut s = SessionState::new(Instant::now());
        s.begin_call();
        s.add_turns(3, 42);
        s.record_latency(120.0, 5);
        s.request_reset("operator");
        s.stick(2, Instant::now(), std::time::Duration::from_secs(600));
        let history = vec![Message::system("sys"), Message::user("q")];
        let remembered = Arc::new(RememberedReset {
            covered: PrefixFingerprint::of(&history, 1),
            replacement_fp: PrefixFingerprint::of(&history[..1], 0),
            replacement: Arc::new(history[..1].to_vec()),
            replacement_tokens: 7,
            reason: Trigger::Turns,
            strategy: Strategy::Summarize,
        });
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        s.commit_reset(Instant::now(), Some(remembered), 7, 1);
        let clock = Clock::now();
        let back = decode(&encode(&s, clock), clock).unwrap();
        assert_eq!(
            format!("{:?}", back.snapshot(20)),
            format!("{:?}", s.snapshot(20))
        );
        let r = back.remembered().unwrap();
        assert_eq!(r.covered_len(), 2);
        assert_eq!(r.replacement().as_slice(), &history[..1]);
        assert_eq!((r.reason(), r.strategy()), (Trigger::Turns, Strategy::Summarize));
        assert_eq!(back.sticky_rank(), Some(2));
        assert!(decode(b"{\"v\":99}", clock).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_begun_call_decides_on_the_newest_shared_state() {
        let map = Arc::new(Map::default());
        let a = MemorySessionStore::builder()
            .shared(Arc::new(map.clone()))
            .build();
        let b = MemorySessionStore::builder()
            .shared(Arc::new(map.clone()))
            .build();
        let id = SessionId::new("s");
        // Two calls on A, one on B, one on A: the count follows the session.
        for (store, expect) in [(&a, 1), (&a, 2), (&b, 3), (&a, 4)] {
            let calls = store
                .update(&id, Instant::now(), |s| {
                    s.begin_call();
                    s.llm_calls()
                })
                .await
                .unwrap();
            assert_eq!(calls, expect);
            // A post-call commit is written behind.
            store
                .update(&id, Instant::now(), |s| s.record_llm(None))
                .await
                .unwrap();
        }
        assert_eq!(
            b.get(&id).await.unwrap().unwrap().llm_calls(),
            3,
            "B's local copy is B's"
        );
        // The hashed update (the stack's call context carries the hash) shares too.
        let hash = mantissa_core::session_hash(id.as_str());
        let calls = b
            .update_hashed(&id, hash, Instant::now(), |s| {
                s.begin_call();
                s.llm_calls()
            })
            .await
            .unwrap();
        assert_eq!(calls, 5);
        assert!(b.remove(&id).await.unwrap());
        assert!(map.0.lock().unwrap().is_empty());
    }
}
