//! # mantissa-reset
//!
//! Brittleness detection and context reset: the outermost layer of a mantissa
//! LLM stack. Long, specific history makes an agent brittle ("contextual
//! overtraining"); this layer tracks every session and, when it turns brittle,
//! compacts the context *before* the call goes out.
//!
//! On each call [`Reset`]:
//!
//! 1. updates the session's tracker ([`SessionState`] in a [`SessionStore`]):
//!    conversation turns (user messages — an agent's tool round trips are
//!    LLM calls, counted apart), LLM calls, context tokens (the provider's reported prompt tokens of the last
//!    response plus an estimate of the messages added since — never a rescan
//!    of the whole history), LLM and tool error streaks, an error ring over
//!    the last calls, a latency baseline and the recent latency;
//! 2. recognises a remembered reset: a caller that resends its full history
//!    gets the compacted history again (O(1) sampled fingerprint check, see
//!    below); a caller that adopted the compacted history is left alone;
//! 3. evaluates the [`BrittlenessPolicy`] (turns, context fraction of the
//!    serving model's window, error streak, error rate, latency drift,
//!    requested resets) into a score in [0, 1] and an action;
//! 4. runs the staged response: warn → clear old tool results → summarize
//!    (falling back to trimming) → clear older tool results of the current
//!    turn → respawn, each stage pluggable. A compaction that removes nothing
//!    is not a reset (no reset metric, event or notice): the call goes out
//!    unchanged with a warning instead, once per episode;
//! 5. sends the (possibly compacted) request inward, records latency, usage
//!    and the classified outcome, and attaches a [`ContextReset`] and/or
//!    [`ContextWarning`] notice to the response's extensions.
//!
//! Tool failures reach the tracker through [`mantissa_core::EventSink`]: the
//! health layer on the tool stack calls the store's `record`. The monitor asks
//! for resets through [`mantissa_core::control::SessionControl`], also
//! implemented by the store.
//!
//! ## Defaults
//!
//! | setting | default |
//! |---|---|
//! | turns trigger | 50 user turns since the last reset → warn (event, metric, log line suggesting a reset); never compacts unless its stage is changed |
//! | context warning / compaction | 0.75 / 0.85 of the window → warn / clear tool results |
//! | compaction target | 0.6 of the window |
//! | consecutive errors | 3 → summarize |
//! | error rate | ≥ 50 % of the last 20 calls (≥ 10 seen) → warn |
//! | latency drift | recent ≥ 2 × baseline (and ≥ 50 ms above it) after 5 samples → warn |
//! | combination | any |
//! | window | request's model, else smallest of its tier's models, else smallest configured, else 128k |
//! | clear stage | keep last 3 tool results and the current turn's; act only if ≥ 1,024 tokens freed; last resort: clear older results of the current turn too (keeping the last 3 and the latest batch) |
//! | summarize stage | no summarizer → trim; with one: low tier, 30 s timeout, 1,024 tokens, keep 2 turns |
//! | respawn | never by default (`respawn_after_resets`, or a stage plan entry) |
//! | store | in memory, 100,000 sessions, 1 h idle TTL |
//! | over budget | the call goes out anyway, with a note in the notice |
//!
//! ## Example: defaults
//!
//! ```
//! use mantissa_core::{LlmRequest, LlmResponse, Message, Usage, BoxError};
//! use mantissa_reset::{ContextReset, ContextWarning, ResetLayer, Trigger};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let model = service_fn(|req: LlmRequest| async move {
//!     let n = req.messages().len() as u64;
//!     Ok::<_, BoxError>(LlmResponse::new("m", Message::assistant("ok"), Usage::new(n * 10, 2)))
//! });
//! let layer = ResetLayer::new();
//! let mut svc = layer.layer(model);
//!
//! let mut history = vec![Message::system("You are a trader.")];
//! for turn in 1..=50 {
//!     history.push(Message::user(format!("turn {turn}")));
//!     let req = LlmRequest::new("s1", "trader", history.clone());
//!     let resp = svc.ready().await?.call(req).await?;
//!     // A short context is never compacted for its length in turns alone.
//!     assert!(ContextReset::of(&resp).is_none());
//!     if let Some(warning) = ContextWarning::of(&resp) {
//!         // User turn 50 hits the default turns trigger: a warning that
//!         // suggests a reset (also an event, a metric and a log line).
//!         assert_eq!(turn, 50);
//!         assert!(warning.triggers.contains(Trigger::Turns));
//!         println!("{warning}");
//!     }
//!     history.push(resp.message);
//! }
//! let session = layer.store().snapshot(&"s1".into(), 20).unwrap();
//! assert_eq!((session.turns, session.llm_calls, session.resets), (50, 50, 0));
//! # Ok(()) }
//! ```
//!
//! ## Example: customised
//!
//! ```
//! use std::time::Duration;
//! use mantissa_core::{LlmRequest, LlmResponse, Message, Usage, BoxError, TierSet, EventSink, HealthEvent};
//! use mantissa_reset::{
//!     BrittlenessPolicy, ContextReset, MemorySessionStore, ResetLayer, Stage, StagePlan, SummaryConfig, Trigger,
//! };
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let store = MemorySessionStore::builder().capacity(10_000).idle_ttl(Some(Duration::from_secs(600))).build();
//! let summarizer = service_fn(|req: LlmRequest| async move {
//!     assert_eq!(req.tier.as_ref().map(|t| t.as_str()), Some("low"));
//!     Ok::<_, BoxError>(LlmResponse::new("mock-small", Message::assistant("The user trades ACME."), Usage::default()))
//! });
//! let policy = BrittlenessPolicy::default()
//!     .max_turns(Some(10))
//!     // Compact (rather than only warn) after 10 user turns and on a high error rate.
//!     .stages(
//!         StagePlan::default()
//!             .with(Trigger::Turns, Stage::Summarize)
//!             .with(Trigger::ErrorRate, Stage::Summarize),
//!     );
//! let layer = ResetLayer::with_store(store.clone())
//!     .policy(policy)
//!     .tiers(&TierSet::default())
//!     .summarizer(summarizer)
//!     .summary(SummaryConfig::new().keep_turns(1).timeout(Duration::from_secs(5)))
//!     .event_sink(|e: &HealthEvent| println!("{} {}", e.kind.as_str(), e.subject));
//! let model = service_fn(|_req: LlmRequest| async move {
//!     Ok::<_, BoxError>(LlmResponse::new("mock-small", Message::assistant("ok"), Usage::new(100, 2)))
//! });
//! let mut svc = layer.layer(model);
//!
//! let mut history = vec![Message::system("You are a trader.")];
//! let mut resets = Vec::new();
//! for turn in 1..=10 {
//!     history.push(Message::user(format!("turn {turn}")));
//!     let resp = svc.ready().await?.call(LlmRequest::new("s1", "trader", history.clone()).with_tier("low")).await?;
//!     resets.extend(mantissa_reset::notice_lines(&resp));
//!     if let Some(reset) = ContextReset::of(&resp) {
//!         assert_eq!(reset.strategy.as_str(), "summarize");
//!         // Adopt the compacted history from now on.
//!         history = reset.history.to_vec();
//!     }
//!     history.push(resp.message);
//! }
//! assert_eq!(resets.len(), 1);
//! # Ok(()) }
//! ```
//!
//! ## Remembered resets and their cost
//!
//! A reset records a fingerprint of the raw history it compacted (its length
//! and the bounded-cost hashes of four sampled messages: first, middle, last,
//! and the first position where the compacted history differs), and the
//! compacted history. Later calls are checked against it with at most eight
//! message hashes, each reading at most ~0.5 KB of the message, so the check
//! is O(1) in the history length. The trade-off (an unsampled edit goes
//! unnoticed) is described in the `fingerprint` module; callers that edit
//! old messages should adopt the compacted history instead, which is
//! recognised exactly. Rebuilding the effective history for a resending
//! caller copies the compacted history plus the new messages: bounded by the
//! compaction budget, not by how long the caller's history grew.
//!
//! ## Streaming responses
//!
//! For a streamed response the provider's usage arrives with the end of the
//! stream, after this layer's future has completed; the tracker then keeps
//! its estimate (earlier count plus estimated new messages) until a
//! non-streaming response reports usage again. Latency is measured to the
//! response (for a stream: to its first byte of headers).
//!
//! ## Cost and memory (figures from `benches/reset.rs`)
//!
//! `cargo bench --bench reset -- --warm-up-time 1 --measurement-time 3`, on a
//! shared 2-core VM (medians of one run; the bare service is measured in the
//! same run; expect ±20 % between runs):
//!
//! * added cost per call without a reset, 1 session: +0.41 µs (10 messages)
//!   and +0.44 µs (1,000 messages) — nothing on the per-call path depends on
//!   the history length;
//! * 10,000 sessions: +0.63 µs and +0.84 µs;
//! * 1,000,000 sessions: +1.51 µs and +1.43 µs — the session's slot and index
//!   entry are cache and TLB misses at that size (the target of ≤ 1 µs is not
//!   met there on this machine);
//! * one compaction of a 1,000-message history: ~0.16 ms (trim) and
//!   ~0.3–0.5 ms (summarize, with an immediate summarizer) including the
//!   first-call token estimate of the whole history;
//! * memory per idle session: [`SessionState`] is 136 bytes (8 more since it holds the
//!   session's sticky tier, 4 bytes plus alignment, which moved here from the triage layer); with its slot
//!   and index entry [`MemorySessionStore::bytes_per_session_lower_bound`] is 185 bytes; measured
//!   with 1,000,000 idle sessions (when the state was 16 bytes smaller, before
//!   it counted LLM calls apart from turns and held the sticky tier), the store's structures took 211
//!   bytes per session and the resident set grew by 253 bytes per session including
//!   the 15-character session-id strings.
//!
//! The per-call path does two store updates (one sharded lock and one keyed
//! hash each), reads two clocks, evaluates the policy (a few comparisons),
//! and allocates one future; the compaction path is boxed separately.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod compact;
mod config;
mod emit;
mod error;
mod fingerprint;
mod future;
mod layer;
mod notice;
pub mod policy;
mod pre_call;
mod rare;
mod service;
pub mod session;
mod stage;
pub mod store;

pub use compact::{CLEARED_PREFIX, SUMMARY_NAME, clear_current_turn_tool_results, clear_tool_results};
pub use config::{DEFAULT_STICKY_IDLE, FALLBACK_WINDOW, Summarizer};
pub use error::ContextBudgetExceeded;
pub use future::ResponseFuture;
pub use layer::ResetLayer;
pub use notice::{ContextReset, ContextWarning, notice_lines};
pub use policy::{
    Assessment, BrittlenessPolicy, Combine, ErrorRateRule, REARM_RATIO, Signals, Stage, StagePlan, Strategy,
    Trigger, TriggerSet,
};
pub use service::Reset;
pub use session::{RememberedReset, SessionSnapshot, SessionState};
pub use stage::{
    DEFAULT_SUMMARY_INSTRUCTION, NoNote, PlaceholderClearer, Respawner, StandardNote, SuffixRespawner,
    SummaryConfig, ToolResultClearer, WarningNote,
};
pub use store::{
    MemorySessionStore, MemorySessionStoreBuilder, SessionStore, SharedSessions, StoreError, Swapped,
};
