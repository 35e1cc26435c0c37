//! The session tracker: per-session state, the [`SessionStore`] trait and the
//! in-memory [`MemorySessionStore`].
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

use std::collections::HashMap;
use std::collections::hash_map::RandomState;

use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mantissa_core::control::SessionControl;
use mantissa_core::{EventKind, EventSink, FailureClass, HealthEvent, Message, Outcome, SessionId};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::fingerprint::PrefixFingerprint;
use crate::policy::{Strategy, Trigger, TriggerSet};

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

/// What a past reset of a session replaced, so that it can be applied again
/// to a caller that resends its full history, and recognised in a caller that
/// adopted the compacted history.
#[derive(Debug)]
pub struct RememberedReset {
    /// Fingerprint of the raw history (as the caller sent it) that was compacted.
    pub(crate) covered: PrefixFingerprint,
    /// Fingerprint of the compacted history.
    pub(crate) replacement_fp: PrefixFingerprint,
    /// The compacted history that replaces the covered prefix.
    pub(crate) replacement: Arc<Vec<Message>>,
    /// Estimated tokens of the replacement.
    pub(crate) replacement_tokens: u64,
    /// Why the reset happened.
    pub(crate) reason: Trigger,
    /// What it did.
    pub(crate) strategy: Strategy,
}

impl RememberedReset {
    /// Number of raw messages the reset covers.
    pub fn covered_len(&self) -> usize {
        self.covered.len()
    }

    /// The compacted history that replaces them.
    pub fn replacement(&self) -> &Arc<Vec<Message>> {
        &self.replacement
    }

    /// Estimated tokens of the replacement.
    pub fn replacement_tokens(&self) -> u64 {
        self.replacement_tokens
    }

    /// Why the reset happened.
    pub fn reason(&self) -> Trigger {
        self.reason
    }

    /// What it did.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
}

/// How a request's history relates to the session's remembered reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// No remembered reset, or the history matches neither side of it.
    None,
    /// The caller resent the original history: apply the replacement.
    Resent,
    /// The caller adopted the compacted history: leave it as it is.
    Adopted,
}

impl RememberedReset {
    /// Classifies `raw` (O(1): at most eight sampled message hashes).
    pub(crate) fn classify(&self, raw: &[Message]) -> Match {
        // Resent first: if the compacted and the original history are
        // indistinguishable by the samples, replacing is still correct
        // (the replacement of the replacement is itself).
        if self.covered.is_prefix_of(raw) {
            Match::Resent
        } else if self.replacement_fp.is_prefix_of(raw) {
            Match::Adopted
        } else {
            Match::None
        }
    }
}

/// Everything the tracker keeps about one session. All operations are O(1).
///
/// Size: 128 bytes on 64-bit targets (see the crate docs for the per-session
/// memory including the store's index).
#[derive(Debug, Clone)]
pub struct SessionState {
    last_activity: Instant,
    last_reset: Option<Instant>,
    base_tokens: u64,
    context_tokens: u64,
    error_ring: u64,
    pending_reset: Option<Arc<str>>,
    remembered: Option<Arc<RememberedReset>>,
    turns: u32,
    turns_since_reset: u32,
    llm_calls: u32,
    last_user: u32,
    accounted_messages: u32,
    resets: u32,
    latency_baseline_ms: f32,
    latency_recent_ms: f32,
    brittleness: f32,
    latency_samples: u16,
    consecutive_llm_errors: u16,
    consecutive_tool_errors: u16,
    warned: u16,
    ring_len: u8,
    pending_trigger: Option<PendingTrigger>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingTrigger {
    Requested,
    Overflow,
}

/// The bit of `warned` (above the trigger bits) marking a compaction that
/// could remove nothing, so that its warning is given once per episode.
const STUCK: u16 = 1 << 15;

/// Weight of a new sample in the recent latency (a fast EWMA).
const RECENT_ALPHA: f32 = 0.5;
/// Weight of a new sample in the baseline after warm-up (a slow EWMA).
const BASELINE_ALPHA: f32 = 0.05;
/// The smallest absolute increase of the recent latency over the baseline
/// that counts as drift, in milliseconds.
pub const LATENCY_DRIFT_FLOOR_MS: f32 = 50.0;
/// Samples above this multiple of the baseline do not move the baseline, so
/// a sustained drift is not absorbed into it.
const BASELINE_GATE: f32 = 1.5;

impl SessionState {
    /// A fresh session, active at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            last_activity: now,
            last_reset: None,
            base_tokens: 0,
            context_tokens: 0,
            error_ring: 0,
            pending_reset: None,
            remembered: None,
            turns: 0,
            turns_since_reset: 0,
            llm_calls: 0,
            last_user: 0,
            accounted_messages: 0,
            resets: 0,
            latency_baseline_ms: 0.0,
            latency_recent_ms: 0.0,
            brittleness: 0.0,
            latency_samples: 0,
            consecutive_llm_errors: 0,
            consecutive_tool_errors: 0,
            warned: 0,
            ring_len: 0,
            pending_trigger: None,
        }
    }

    /// Conversation turns of the session: user messages, however many LLM
    /// calls (tool round trips) each one takes.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// Conversation turns since the last reset.
    pub fn turns_since_reset(&self) -> u32 {
        self.turns_since_reset
    }

    /// LLM calls of the session (every call through the layer, including
    /// each round trip of a tool loop).
    pub fn llm_calls(&self) -> u32 {
        self.llm_calls
    }

    /// Context tokens of the last call's effective history.
    pub fn context_tokens(&self) -> u64 {
        self.context_tokens
    }

    /// LLM errors in a row.
    pub fn consecutive_llm_errors(&self) -> u32 {
        u32::from(self.consecutive_llm_errors)
    }

    /// Tool errors in a row.
    pub fn consecutive_tool_errors(&self) -> u32 {
        u32::from(self.consecutive_tool_errors)
    }

    /// Failed calls and calls seen among the last `window` (≤ 64) LLM and
    /// tool calls.
    pub fn recent_errors(&self, window: u32) -> (u32, u32) {
        let seen = u32::from(self.ring_len).min(window).min(64);
        let mask = if seen >= 64 { u64::MAX } else { (1u64 << seen) - 1 };
        ((self.error_ring & mask).count_ones(), seen)
    }

    /// The session's latency baseline and recent latency, in milliseconds.
    pub fn latency_ms(&self) -> (f32, f32) {
        (self.latency_baseline_ms, self.latency_recent_ms)
    }

    /// Resets so far.
    pub fn resets(&self) -> u32 {
        self.resets
    }

    /// When the last reset happened.
    pub fn last_reset(&self) -> Option<Instant> {
        self.last_reset
    }

    /// When the session was last active.
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// The brittleness score of the last call, in [0, 1].
    pub fn brittleness(&self) -> f64 {
        f64::from(self.brittleness)
    }

    /// The reason of a requested reset not yet carried out.
    pub fn pending_reset(&self) -> Option<&str> {
        self.pending_reset.as_deref()
    }

    /// The remembered reset, if any.
    pub fn remembered(&self) -> Option<&Arc<RememberedReset>> {
        self.remembered.as_ref()
    }

    pub(crate) fn remembered_arc(&self) -> Option<Arc<RememberedReset>> {
        self.remembered.clone()
    }

    // ---- updates used by the layer ----

    pub(crate) fn touch(&mut self, now: Instant) {
        if now > self.last_activity {
            self.last_activity = now;
        }
    }

    /// Counts an LLM call.
    pub(crate) fn begin_call(&mut self) {
        self.llm_calls = self.llm_calls.saturating_add(1);
    }

    /// Counts `n` new user messages; `latest` is the fingerprint of the last
    /// of them.
    pub(crate) fn add_turns(&mut self, n: u32, latest: u32) {
        if n > 0 {
            self.turns = self.turns.saturating_add(n);
            self.turns_since_reset = self.turns_since_reset.saturating_add(n);
            self.last_user = latest;
        }
    }

    /// Counts a turn when the latest user message (by fingerprint) is not the
    /// one seen last, for histories that did not grow (a caller sliding a
    /// window or trimming its history itself). Returns whether it counted.
    pub(crate) fn observe_latest_user(&mut self, latest: u32) -> bool {
        let new = latest != self.last_user;
        self.add_turns(u32::from(new), latest);
        new
    }

    pub(crate) fn consecutive_errors(&self) -> u32 {
        u32::from(self.consecutive_llm_errors.max(self.consecutive_tool_errors))
    }

    /// Token accounting: (tokens already counted, messages they cover).
    pub(crate) fn accounting(&self) -> (u64, usize) {
        (self.base_tokens, self.accounted_messages as usize)
    }

    pub(crate) fn set_accounting(&mut self, base_tokens: u64, messages: usize) {
        self.base_tokens = base_tokens;
        self.accounted_messages = u32::try_from(messages).unwrap_or(u32::MAX);
    }

    pub(crate) fn set_context_tokens(&mut self, tokens: u64) {
        self.context_tokens = tokens;
    }

    pub(crate) fn set_brittleness(&mut self, score: f64) {
        self.brittleness = score as f32;
    }

    pub(crate) fn forced_trigger(&self) -> Option<Trigger> {
        match self.pending_trigger {
            Some(PendingTrigger::Requested) => Some(Trigger::Requested),
            Some(PendingTrigger::Overflow) => Some(Trigger::ContextLengthExceeded),
            None => None,
        }
    }

    pub(crate) fn request_reset(&mut self, reason: &str) {
        self.pending_trigger = Some(PendingTrigger::Requested);
        self.pending_reset = Some(Arc::from(reason));
    }

    /// Whether the last compaction attempt of the session could remove
    /// nothing (its warning was already given).
    pub(crate) fn compaction_stuck(&self) -> bool {
        self.warned & STUCK != 0
    }

    /// Records whether compaction is stuck (cleared by a reset, and when no
    /// compaction trigger is active).
    pub(crate) fn set_compaction_stuck(&mut self, stuck: bool) {
        if stuck {
            self.warned |= STUCK;
        } else {
            self.warned &= !STUCK;
        }
    }

    /// Warning triggers that just became active (rising edge, with
    /// hysteresis: a trigger re-arms only once it was `calm`).
    pub(crate) fn rising_warnings(&mut self, active: TriggerSet, calm: TriggerSet) -> TriggerSet {
        let new = active.bits() & !self.warned;
        self.warned = (self.warned | active.bits()) & !calm.bits();
        TriggerSet::from_bits(new)
    }

    fn push_ring(&mut self, error: bool) {
        self.error_ring = (self.error_ring << 1) | u64::from(error);
        self.ring_len = self.ring_len.saturating_add(1).min(64);
    }

    /// Records the outcome of an LLM call (`None` = success). Provider-side
    /// failures that say nothing about the session are ignored (see
    /// [`counts_against_session`]).
    pub(crate) fn record_llm(&mut self, failure: Option<FailureClass>) {
        match failure {
            None => {
                self.consecutive_llm_errors = 0;
                self.push_ring(false);
            }
            Some(class) => {
                if class == FailureClass::ContextLengthExceeded {
                    self.pending_trigger.get_or_insert(PendingTrigger::Overflow);
                }
                if counts_against_session(class) {
                    self.consecutive_llm_errors = self.consecutive_llm_errors.saturating_add(1);
                    self.push_ring(true);
                }
            }
        }
    }

    /// Records the outcome of a tool call.
    pub(crate) fn record_tool(&mut self, failure: Option<FailureClass>) {
        match failure {
            None => {
                self.consecutive_tool_errors = 0;
                self.push_ring(false);
            }
            Some(FailureClass::Cancelled) => {}
            Some(_) => {
                self.consecutive_tool_errors = self.consecutive_tool_errors.saturating_add(1);
                self.push_ring(true);
            }
        }
    }

    /// Records one latency sample: the first `warmup` samples set the
    /// baseline (their mean); later ones move it slowly, and only when they
    /// are not themselves drifted.
    pub(crate) fn record_latency(&mut self, ms: f32, warmup: u32) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let n = u32::from(self.latency_samples);
        if n == 0 {
            self.latency_baseline_ms = ms;
            self.latency_recent_ms = ms;
        } else {
            self.latency_recent_ms += RECENT_ALPHA * (ms - self.latency_recent_ms);
            if n < warmup {
                self.latency_baseline_ms += (ms - self.latency_baseline_ms) / (n as f32 + 1.0);
            } else if ms <= self.latency_baseline_ms * BASELINE_GATE {
                self.latency_baseline_ms += BASELINE_ALPHA * (ms - self.latency_baseline_ms);
            }
        }
        self.latency_samples = self.latency_samples.saturating_add(1);
    }

    /// Recent latency over the baseline, once more than `warmup` samples exist.
    /// Drifts smaller than [`LATENCY_DRIFT_FLOOR_MS`] in absolute terms do not
    /// count (a 0.2 ms call taking 0.5 ms is noise, not brittleness).
    pub(crate) fn latency_drift(&self, warmup: u32) -> Option<f64> {
        let (base, recent) = (self.latency_baseline_ms, self.latency_recent_ms);
        if u32::from(self.latency_samples) <= warmup || base <= 0.0 {
            return None;
        }
        if recent - base < LATENCY_DRIFT_FLOOR_MS {
            return Some(f64::from(recent.min(base)) / f64::from(base));
        }
        Some(f64::from(recent) / f64::from(base))
    }

    /// Commits a reset: remembers it, rebases token accounting on the
    /// compacted history and clears the brittleness signals it answers.
    pub(crate) fn commit_reset(
        &mut self,
        now: Instant,
        remembered: Option<Arc<RememberedReset>>,
        tokens_after: u64,
        messages_after: usize,
    ) {
        if remembered.is_some() {
            self.remembered = remembered;
        }
        self.resets = self.resets.saturating_add(1);
        self.last_reset = Some(now);
        self.turns_since_reset = 0;
        self.consecutive_llm_errors = 0;
        self.consecutive_tool_errors = 0;
        self.error_ring = 0;
        self.ring_len = 0;
        self.latency_recent_ms = self.latency_baseline_ms;
        self.pending_trigger = None;
        self.pending_reset = None;
        self.warned = 0;
        self.context_tokens = tokens_after;
        self.set_accounting(tokens_after, messages_after);
    }

    /// Forgets a remembered reset whose prefix the caller no longer sends.
    pub(crate) fn forget_remembered(&mut self) {
        self.remembered = None;
    }

    /// A copy of the observable fields.
    pub fn snapshot(&self, window: u32) -> SessionSnapshot {
        let (recent_errors, calls_seen) = self.recent_errors(window);
        SessionSnapshot {
            turns: self.turns,
            turns_since_reset: self.turns_since_reset,
            llm_calls: self.llm_calls,
            context_tokens: self.context_tokens,
            consecutive_llm_errors: self.consecutive_llm_errors(),
            consecutive_tool_errors: self.consecutive_tool_errors(),
            recent_errors,
            calls_seen,
            latency_baseline_ms: self.latency_baseline_ms,
            latency_recent_ms: self.latency_recent_ms,
            resets: self.resets,
            last_reset: self.last_reset,
            last_activity: self.last_activity,
            brittleness: self.brittleness(),
            pending_reset: self.pending_reset.as_deref().map(str::to_owned),
            remembered_reset: self.remembered.as_ref().map(|r| (r.reason, r.strategy)),
        }
    }
}

/// Whether an LLM failure counts toward the session's error streak and rate.
///
/// Counted: timeouts, invalid responses, context overflows, client errors,
/// tool errors and unclassified errors — failures a confused or overloaded
/// context can cause. Not counted: cancellations (the caller gave up), rate
/// limits, 5xx and transport errors (the provider's health, which the router
/// handles; resetting a context cannot fix an outage).
pub fn counts_against_session(class: FailureClass) -> bool {
    !matches!(
        class,
        FailureClass::Cancelled
            | FailureClass::RateLimited { .. }
            | FailureClass::UpstreamServer
            | FailureClass::Transport
    )
}

/// A point-in-time copy of a session's tracked state.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSnapshot {
    /// Conversation turns (user messages) of the session.
    pub turns: u32,
    /// Conversation turns since the last reset.
    pub turns_since_reset: u32,
    /// LLM calls of the session (a tool loop makes several per turn).
    pub llm_calls: u32,
    /// Context tokens of the last call.
    pub context_tokens: u64,
    /// LLM errors in a row.
    pub consecutive_llm_errors: u32,
    /// Tool errors in a row.
    pub consecutive_tool_errors: u32,
    /// Failed calls among the last `calls_seen`.
    pub recent_errors: u32,
    /// Calls in the error window.
    pub calls_seen: u32,
    /// Latency baseline (ms).
    pub latency_baseline_ms: f32,
    /// Recent latency (ms).
    pub latency_recent_ms: f32,
    /// Resets so far.
    pub resets: u32,
    /// When the last reset happened.
    pub last_reset: Option<Instant>,
    /// When the session was last active.
    pub last_activity: Instant,
    /// Brittleness score of the last call, in [0, 1].
    pub brittleness: f64,
    /// Reason of a requested reset not yet carried out.
    pub pending_reset: Option<String>,
    /// Reason and strategy of the remembered reset, if any.
    pub remembered_reset: Option<(Trigger, Strategy)>,
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

/// A session id with its (keyed, DoS-resistant) hash computed once: the same
/// hash picks the shard and probes the shard's index.
#[derive(Debug, Clone)]
struct Key {
    hash: u64,
    id: SessionId,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a precomputed hash through.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

/// A session in its slot. The id is kept without its hash (8 bytes less per
/// session); the rare removals recompute the hash.
#[derive(Debug)]
struct Node {
    id: SessionId,
    state: SessionState,
}

/// Shard accesses per step of the idle-sweeping clock hand.
const SWEEP_EVERY: u32 = 4;

/// Sessions examined to choose a capacity victim (the least recently active
/// of the sample; all of them when the shard holds no more).
const EVICTION_SAMPLE: usize = 16;

/// One shard: an index from id to slot and the sessions in a slab. There is
/// no recency list to maintain on each access (that would touch two more
/// sessions' memory per call): idle sessions are found by a clock hand that
/// advances one slot per access, and a capacity victim is the least recently
/// active of a sample.
#[derive(Debug)]
struct Shard {
    index: HashMap<Key, u32, BuildHasherDefault<PassThrough>>,
    slots: Vec<Option<Node>>,
    free: Vec<u32>,
    hand: usize,
    ticks: u32,
}

impl Shard {
    fn new() -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            ticks: 0,
        }
    }

    fn node(&mut self, i: u32) -> Option<&mut Node> {
        self.slots.get_mut(i as usize).and_then(Option::as_mut)
    }

    fn remove_slot(&mut self, i: u32, hasher: &RandomState) -> Option<Node> {
        let node = self.slots.get_mut(i as usize).and_then(Option::take)?;
        let key = Key {
            hash: hasher.hash_one(node.id.as_str()),
            id: node.id.clone(),
        };
        self.index.remove(&key);
        self.free.push(i);
        Some(node)
    }

    fn insert(&mut self, key: Key, state: SessionState) -> u32 {
        let node = Node {
            id: key.id.clone(),
            state,
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.slots.get_mut(i as usize) {
                    *slot = Some(node);
                }
                i
            }
            None => {
                self.slots.push(Some(node));
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(key, i);
        i
    }

    /// The least recently active of up to [`EVICTION_SAMPLE`] sessions,
    /// starting at a position derived from `seed`.
    fn victim(&self, seed: u64) -> Option<u32> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let start = (seed as usize) % n;
        let mut best: Option<(Instant, u32)> = None;
        let mut seen = 0;
        let exact = self.len() <= EVICTION_SAMPLE;
        let limit = if exact { n } else { n.min(4 * EVICTION_SAMPLE) };
        for k in 0..limit {
            let i = (start + k) % n;
            if let Some(node) = &self.slots[i] {
                if best.is_none_or(|(t, _)| node.state.last_activity < t) {
                    best = Some((node.state.last_activity, u32::try_from(i).unwrap_or(u32::MAX)));
                }
                seen += 1;
                if seen == EVICTION_SAMPLE && !exact {
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one control byte per bucket; buckets = capacity rounded
        // up to a power of two at 7/8 load.
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two();
        buckets * (size_of::<(Key, u32)>() + 1)
            + self.slots.capacity() * size_of::<Option<Node>>()
            + self.free.capacity() * size_of::<u32>()
    }
}

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

    fn locate(&self, session: &SessionId) -> (&Mutex<Shard>, Key) {
        let hash = self.inner.hasher.hash_one(session.as_str());
        let n = self.inner.shards.len();
        // n is a power of two; the index uses the low bits, the shard the high ones.
        let i = ((hash >> 40) as usize) & (n - 1);
        (
            &self.inner.shards[i],
            Key {
                hash,
                id: session.clone(),
            },
        )
    }

    fn expired(&self, node: &Node, now: Instant) -> bool {
        self.inner
            .idle_ttl
            .is_some_and(|ttl| now.saturating_duration_since(node.state.last_activity) >= ttl)
    }

    /// Advances the shard's clock hand by `steps` slots, evicting expired
    /// sessions it passes. Returns how many were evicted.
    fn sweep(&self, shard: &mut Shard, now: Instant, steps: usize) -> usize {
        if self.inner.idle_ttl.is_none() || shard.slots.is_empty() {
            return 0;
        }
        let mut evicted = 0;
        for _ in 0..steps.min(shard.slots.len()) {
            shard.hand = (shard.hand + 1) % shard.slots.len();
            let i = shard.hand;
            let expired = shard.slots[i].as_ref().is_some_and(|n| self.expired(n, now));
            if expired
                && shard
                    .remove_slot(u32::try_from(i).unwrap_or(u32::MAX), &self.inner.hasher)
                    .is_some()
            {
                evicted += 1;
            }
        }
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
        // The clock hand moves one slot every SWEEP_EVERY accesses: a slot it
        // checks is usually not in cache, so checking on every access would
        // add a cache miss to every call.
        shard.ticks = shard.ticks.wrapping_add(1);
        if shard.ticks % SWEEP_EVERY == 0 {
            self.sweep(&mut shard, now, 1);
        }
        let i = match shard.index.get(&key) {
            Some(&i) => {
                // A session idle past its TTL that the hand has not reached
                // yet starts afresh.
                let stale = shard.slots[i as usize]
                    .as_ref()
                    .is_some_and(|n| self.expired(n, now));
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
            let idle = shard.slots[victim as usize]
                .as_ref()
                .is_some_and(|n| self.expired(n, now));
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
                let steps = shard.slots.len();
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
        let i = *shard.index.get(&key)?;
        shard
            .slots
            .get(i as usize)?
            .as_ref()
            .map(|n| n.state.snapshot(window))
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
        let state = shard
            .index
            .get(&key)
            .and_then(|&i| shard.slots.get(i as usize))
            .and_then(|n| n.as_ref().map(|n| n.state.clone()));
        drop(shard);
        std::future::ready(Ok(state))
    }

    fn remove(&self, session: &SessionId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (shard, key) = self.locate(session);
        let mut shard = shard.lock();
        let removed = match shard.index.get(&key) {
            Some(&i) => shard.remove_slot(i, &self.inner.hasher).is_some(),
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

/// Per-session memory of the in-memory store, computed from type sizes:
/// the session state, its slot (state + id + list links, as an `Option`) and
/// its index entry (id + slot number + one control byte), before hash-table
/// and vector slack. The crate docs and the `reset` bench report it.
pub fn bytes_per_session_lower_bound() -> usize {
    use std::mem::size_of;
    size_of::<Option<Node>>() + size_of::<(Key, u32)>() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_compact() {
        assert!(
            std::mem::size_of::<SessionState>() <= 128,
            "{}",
            std::mem::size_of::<SessionState>()
        );
        assert!(
            bytes_per_session_lower_bound() <= 192,
            "{}",
            bytes_per_session_lower_bound()
        );
    }

    #[test]
    fn error_ring_counts_the_last_window() {
        let mut s = SessionState::new(Instant::now());
        for i in 0..30 {
            s.record_llm((i % 3 == 0).then_some(FailureClass::InvalidResponse));
        }
        assert_eq!(s.recent_errors(64), (10, 30));
        let (errs, seen) = s.recent_errors(6);
        assert_eq!((errs, seen), (2, 6));
        // Provider-side failures do not count against the session.
        s.record_llm(Some(FailureClass::UpstreamServer));
        assert_eq!(s.recent_errors(64), (10, 30));
    }

    #[test]
    fn latency_baseline_resists_drift() {
        let mut s = SessionState::new(Instant::now());
        for _ in 0..5 {
            s.record_latency(100.0, 5);
        }
        assert_eq!(s.latency_drift(5), None);
        assert_eq!(s.latency_ms().0, 100.0);
        // A sustained drift: without the gate the slow EWMA would follow it
        // (40 samples at 3x move an ungated baseline to ~270 ms and the drift
        // ratio under 1.2); with the gate the baseline does not move at all.
        for _ in 0..40 {
            s.record_latency(300.0, 5);
        }
        assert_eq!(s.latency_ms(), (100.0, 300.0));
        let d = s.latency_drift(5).unwrap();
        assert!((d - 3.0).abs() < 1e-6, "{d}");
        // Samples within the gate still move the baseline slowly.
        s.record_latency(140.0, 5);
        let base = s.latency_ms().0;
        assert!((base - 102.0).abs() < 1e-3, "{base}");
    }

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
