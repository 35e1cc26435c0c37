//! Redis backends for mantissa: several replicas of an agent service share
//! one truth about sessions and models.
//!
//! Each replica keeps serving every call from its own in-memory state; Redis
//! is where the replicas share it:
//!
//! * [`RedisModelState`] plugs into a router
//!   ([`TierRouterBuilder::shared_state`](mantissa_triage::TierRouterBuilder::shared_state)):
//!   a model cooled down on one replica is skipped by every replica, and one
//!   replica at a time holds a recovering model's half-open probe.
//! * [`RedisSessions`] plugs into the reset layer's session store
//!   ([`MemorySessionStoreBuilder::shared`](mantissa_reset::MemorySessionStoreBuilder::shared)):
//!   a session's state (turns, error streaks, its remembered reset, …)
//!   follows it to whichever replica serves its next call, at one Redis
//!   round trip per call.
//!
//! Why a crate of its own: the `redis` client and its dependencies stay out
//! of every build that does not share state; the facade can add an optional
//! `redis` feature that wires these backends into `AgentStack`'s builder.
//!
//! # Faults
//!
//! Redis may be down at start or mid-run, slow, or flushed. The backends
//! start lazily (an unreachable Redis is a degraded state, not an error),
//! bound every operation by [`RedisConfig::timeout`] (default 50 ms), and
//! after a failure back off (doubling from 100 ms to 5 s, jittered) while
//! calls carry on with local state without waiting for Redis at all. Every
//! failure counts in `mantissa_redis_errors_total{component,error_type}`,
//! `mantissa_redis_up{component}` shows the state, and each change of state
//! is logged once (target `mantissa_redis`), never once per call.
//!
//! # Client
//!
//! The [`redis`] crate (redis-rs) with its tokio `ConnectionManager`
//! (multiplexed, reconnecting) and its script support (`EVALSHA`, reloaded
//! after a restart or `SCRIPT FLUSH`).

pub mod catalog;
mod config;
mod error;
mod link;
pub mod models;
pub mod sessions;

pub use config::RedisConfig;
pub use error::Error;
pub use models::RedisModelState;
pub use sessions::RedisSessions;
