//! The per-session state machine: [`SessionState`] (what the tracker keeps
//! about one session and how each call, outcome and reset changes it), its
//! point-in-time [`SessionSnapshot`], and the [`RememberedReset`] a session
//! carries after a compaction.
//!
//! Every operation here is synchronous and O(1); a [`SessionStore`](crate::SessionStore)
//! runs them inside its atomic `update`.

use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{FailureClass, Message};
use tokio::time::Instant;

use crate::fingerprint::PrefixFingerprint;
use crate::policy::{Strategy, Trigger, TriggerSet};

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
/// Size: 136 bytes on 64-bit targets (see the crate docs for the per-session
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
    /// Session stickiness, packed into four bytes so the state stays
    /// compact: the rank + 1 of the session's highest tier so far in the top
    /// [`STICKY_RANK_BITS`] (0: none) and when it was last chosen
    /// ([`epoch_secs`]) below.
    sticky: u32,
    /// The version of the shared copy this state was last written as (0:
    /// never; used only with a shared backend, see `store::shared`). Not
    /// part of the wire form: the backend keeps the version beside it.
    pub(crate) shared_version: u32,
}

/// Bits of [`SessionState::sticky`] holding the rank + 1 (ladders of up to
/// 15 tiers; stickiness ignores higher ranks).
const STICKY_RANK_BITS: u32 = 4;
const STICKY_SECS_MASK: u32 = (1 << (32 - STICKY_RANK_BITS)) - 1;

/// Whole seconds on a process-wide scale anchored at the first call: a
/// compact, ordered clock for state that only needs second resolution.
/// The anchor sits mid-range, so an instant before it (a clock another
/// runtime started earlier, as paused test clocks are) still orders
/// correctly; it saturates 2^27 s (4.25 years) either side.
fn epoch_secs(now: Instant) -> u32 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    compact_secs(*EPOCH.get_or_init(|| now), now)
}

/// [`epoch_secs`] against the anchor `epoch`.
fn compact_secs(epoch: Instant, now: Instant) -> u32 {
    const MID: u64 = (STICKY_SECS_MASK as u64).div_ceil(2);
    let secs = if now >= epoch {
        MID.saturating_add(now.duration_since(epoch).as_secs())
    } else {
        // floor(MID - d) = MID - ceil(d): one floor on both sides of the
        // anchor, so instants 601 s apart are 601 whole seconds apart.
        let d = epoch.duration_since(now);
        MID.saturating_sub(d.as_secs() + u64::from(d.subsec_nanos() > 0))
    };
    u32::try_from(secs.min(u64::from(STICKY_SECS_MASK))).unwrap_or(STICKY_SECS_MASK)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingTrigger {
    Requested,
    Overflow,
}

/// The wire form that sessions cross replicas in (`store::shared`). Every
/// field of [`SessionState`] must appear here: a field left out is not
/// shared.
impl SessionState {
    pub(crate) fn to_wire(&self, clock: crate::store::shared::Clock) -> crate::store::shared::SessionWire {
        use crate::store::shared::{RememberedWire, SessionWire};
        SessionWire {
            v: SessionWire::VERSION,
            last_activity_ms: clock.to_ms(self.last_activity),
            last_reset_ms: self.last_reset.map(|t| clock.to_ms(t)),
            base_tokens: self.base_tokens,
            context_tokens: self.context_tokens,
            error_ring: self.error_ring,
            pending_reset: self.pending_reset.as_deref().map(str::to_owned),
            remembered: self.remembered.as_ref().map(|r| RememberedWire {
                covered: r.covered.parts(),
                replacement_fp: r.replacement_fp.parts(),
                replacement: r.replacement.as_ref().clone(),
                replacement_tokens: r.replacement_tokens,
                reason: r.reason.as_str().to_owned(),
                strategy: r.strategy.as_str().to_owned(),
            }),
            turns: self.turns,
            turns_since_reset: self.turns_since_reset,
            llm_calls: self.llm_calls,
            last_user: self.last_user,
            accounted_messages: self.accounted_messages,
            resets: self.resets,
            latency_baseline_ms: self.latency_baseline_ms,
            latency_recent_ms: self.latency_recent_ms,
            brittleness: self.brittleness,
            latency_samples: self.latency_samples,
            consecutive_llm_errors: self.consecutive_llm_errors,
            consecutive_tool_errors: self.consecutive_tool_errors,
            warned: self.warned,
            ring_len: self.ring_len,
            pending_trigger: self.pending_trigger.map(|p| {
                match p {
                    PendingTrigger::Requested => "requested",
                    PendingTrigger::Overflow => "overflow",
                }
                .to_owned()
            }),
            sticky_rank: self.sticky_rank().and_then(|r| u32::try_from(r).ok()),
            // The process-local seconds of the sticky tier's last choice, as
            // wall-clock milliseconds.
            sticky_at_ms: {
                let age = epoch_secs(clock.instant()).saturating_sub(self.sticky & STICKY_SECS_MASK);
                clock.now_ms().saturating_sub(u64::from(age) * 1000)
            },
        }
    }

    pub(crate) fn from_wire(
        w: crate::store::shared::SessionWire,
        clock: crate::store::shared::Clock,
    ) -> Option<Self> {
        let remembered = match w.remembered {
            None => None,
            Some(r) => Some(Arc::new(RememberedReset {
                covered: PrefixFingerprint::from_parts(r.covered),
                replacement_fp: PrefixFingerprint::from_parts(r.replacement_fp),
                replacement: Arc::new(r.replacement),
                replacement_tokens: r.replacement_tokens,
                reason: Trigger::ALL.into_iter().find(|t| t.as_str() == r.reason)?,
                strategy: match r.strategy.as_str() {
                    "clear_tool_results" => Strategy::ClearToolResults,
                    "summarize" => Strategy::Summarize,
                    "trim" => Strategy::Trim,
                    "respawn" => Strategy::Respawn,
                    _ => return None,
                },
            })),
        };
        Some(Self {
            last_activity: clock.to_instant(w.last_activity_ms),
            last_reset: w.last_reset_ms.map(|ms| clock.to_instant(ms)),
            base_tokens: w.base_tokens,
            context_tokens: w.context_tokens,
            error_ring: w.error_ring,
            pending_reset: w.pending_reset.map(Arc::from),
            remembered,
            turns: w.turns,
            turns_since_reset: w.turns_since_reset,
            llm_calls: w.llm_calls,
            last_user: w.last_user,
            accounted_messages: w.accounted_messages,
            resets: w.resets,
            latency_baseline_ms: w.latency_baseline_ms,
            latency_recent_ms: w.latency_recent_ms,
            brittleness: w.brittleness,
            latency_samples: w.latency_samples,
            consecutive_llm_errors: w.consecutive_llm_errors,
            consecutive_tool_errors: w.consecutive_tool_errors,
            warned: w.warned,
            ring_len: w.ring_len,
            pending_trigger: match w.pending_trigger.as_deref() {
                None => None,
                Some("requested") => Some(PendingTrigger::Requested),
                Some("overflow") => Some(PendingTrigger::Overflow),
                Some(_) => return None,
            },
            sticky: match w.sticky_rank {
                Some(r) if r + 1 < (1 << STICKY_RANK_BITS) => {
                    ((r + 1) << (32 - STICKY_RANK_BITS)) | epoch_secs(clock.to_instant(w.sticky_at_ms))
                }
                _ => 0,
            },
            shared_version: 0,
        })
    }
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
pub(crate) const LATENCY_DRIFT_FLOOR_MS: f32 = 50.0;
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
            sticky: 0,
            shared_version: 0,
        }
    }

    /// Session stickiness: the rank a call triaged to rank `decided` gets —
    /// the session's remembered rank if it is higher and was chosen within
    /// `idle_ttl`, else `decided` — which is then remembered. A tier may
    /// rise within a session but not fall, until the session has been idle
    /// at its high tier for `idle_ttl`. Ranks count from the lowest tier.
    pub fn stick(&mut self, decided: usize, now: Instant, idle_ttl: Duration) -> usize {
        let at = epoch_secs(now);
        let since = self.sticky & STICKY_SECS_MASK;
        let live = u64::from(at.saturating_sub(since)) <= idle_ttl.as_secs();
        let served = match self.sticky_rank() {
            Some(r) if live && r > decided => r,
            _ => decided,
        };
        let packed = u32::try_from(served + 1)
            .ok()
            .filter(|r| *r < (1 << STICKY_RANK_BITS));
        // A rank past what the bits hold is not remembered.
        self.sticky = packed.map_or(0, |r| (r << (32 - STICKY_RANK_BITS)) | at);
        served
    }

    /// The rank of the session's remembered tier (stickiness), if any.
    pub fn sticky_rank(&self) -> Option<usize> {
        let r = self.sticky >> (32 - STICKY_RANK_BITS);
        r.checked_sub(1).map(|r| r as usize)
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
            sticky_rank: self.sticky_rank(),
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
pub(crate) fn counts_against_session(class: FailureClass) -> bool {
    !matches!(
        class,
        FailureClass::Cancelled
            | FailureClass::RateLimited { .. }
            | FailureClass::UpstreamServer
            | FailureClass::Transport
    )
}

/// A point-in-time copy of a session's tracked state.
///
/// It serializes (for a status page or an admin endpoint) with the two
/// instants rendered as seconds elapsed since them
/// (`last_reset_secs_ago`, `last_activity_secs_ago`: a `tokio` `Instant` is
/// process-local and has no absolute meaning), and the remembered reset as
/// `{"reason": …, "strategy": …}` with the metric label values.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
    #[serde(rename = "last_reset_secs_ago", serialize_with = "ser::secs_ago_opt")]
    pub last_reset: Option<Instant>,
    /// When the session was last active.
    #[serde(rename = "last_activity_secs_ago", serialize_with = "ser::secs_ago")]
    pub last_activity: Instant,
    /// Brittleness score of the last call, in [0, 1].
    pub brittleness: f64,
    /// Reason of a requested reset not yet carried out.
    pub pending_reset: Option<String>,
    /// Reason and strategy of the remembered reset, if any.
    #[serde(serialize_with = "ser::remembered")]
    pub remembered_reset: Option<(Trigger, Strategy)>,
    /// The rank of the session's remembered tier (stickiness; 0 = the
    /// lowest tier), if any.
    pub sticky_rank: Option<usize>,
}

/// Serde helpers for [`SessionSnapshot`].
mod ser {
    use serde::Serializer;
    use serde::ser::SerializeStruct;
    use tokio::time::Instant;

    use crate::policy::{Strategy, Trigger};

    pub(super) fn secs_ago<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(Instant::now().saturating_duration_since(*at).as_secs_f64())
    }

    pub(super) fn secs_ago_opt<S: Serializer>(at: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => secs_ago(at, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn remembered<S: Serializer>(
        r: &Option<(Trigger, Strategy)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match r {
            None => s.serialize_none(),
            Some((reason, strategy)) => {
                let mut st = s.serialize_struct("RememberedReset", 2)?;
                st.serialize_field("reason", reason.as_str())?;
                st.serialize_field("strategy", strategy.as_str())?;
                st.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_compact() {
        assert!(
            std::mem::size_of::<SessionState>() <= 136,
            "{}",
            std::mem::size_of::<SessionState>()
        );
        let bytes = crate::MemorySessionStore::bytes_per_session_lower_bound();
        assert!(bytes <= 192, "{bytes}");
    }

    /// Instants on either side of the anchor keep their order and distance
    /// (each paused test runtime has its own clock base, so the process-wide
    /// anchor may lie after a session's first call).
    #[test]
    fn the_compact_clock_orders_instants_on_both_sides_of_its_anchor() {
        let anchor = Instant::now();
        let before = anchor.checked_sub(Duration::from_millis(500)).unwrap();
        let after = before + Duration::from_secs(601);
        assert_eq!(compact_secs(anchor, after) - compact_secs(anchor, before), 601);
        let long_before = anchor.checked_sub(Duration::from_secs(100)).unwrap();
        assert!(compact_secs(anchor, long_before) < compact_secs(anchor, before));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sticky_tier_rises_never_falls_until_idle() {
        let ttl = Duration::from_secs(60);
        let mut s = SessionState::new(Instant::now());
        assert_eq!(s.sticky_rank(), None);
        assert_eq!(s.stick(1, Instant::now(), ttl), 1);
        assert_eq!(s.stick(0, Instant::now(), ttl), 1);
        assert_eq!(s.stick(2, Instant::now(), ttl), 2);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(s.stick(0, Instant::now(), ttl), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(s.stick(0, Instant::now(), ttl), 0);
        assert_eq!(s.sticky_rank(), Some(0));
        // Ranks beyond what the state holds are served but not remembered.
        assert_eq!(s.stick(40, Instant::now(), ttl), 40);
        assert_eq!(s.sticky_rank(), None);
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
    async fn a_snapshot_serializes_with_ages_and_label_values() {
        let start = Instant::now();
        let mut s = SessionState::new(start);
        s.request_reset("operator");
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        let json = serde_json::to_value(s.snapshot(20)).unwrap();
        assert_eq!(json["last_activity_secs_ago"], 3.0);
        assert!(json["last_reset_secs_ago"].is_null());
        assert_eq!(json["pending_reset"], "operator");
        assert!(json["remembered_reset"].is_null());
        let snap = SessionSnapshot {
            remembered_reset: Some((Trigger::Requested, Strategy::Trim)),
            ..s.snapshot(20)
        };
        let json = serde_json::to_value(snap).unwrap();
        assert_eq!(json["remembered_reset"]["reason"], "requested");
        assert_eq!(json["remembered_reset"]["strategy"], "trim");
    }
}
