//! The metrics of this crate (documented in `docs/metrics.md`).
//!
//! They live here rather than in `mantissa_core::catalog` so that a build
//! without this crate carries no name it never emits; the names follow the
//! same conventions (`mantissa_` prefix, bounded labels).

/// Counter: Redis operations that failed, so the replica served on its local
/// state (or dropped a write). Labels: `component` (`sessions`, `models`),
/// `error_type` (`timeout`, `unavailable`, `backoff`, `conflict`,
/// `oversize`, `queue_full`).
pub const REDIS_ERRORS_TOTAL: &str = "mantissa_redis_errors_total";

/// Gauge: 1 while a component shares its state through Redis, 0 while it is
/// degraded to local state. Label: `component`.
pub const REDIS_UP: &str = "mantissa_redis_up";

/// Label: which backend (`sessions` or `models`).
pub const COMPONENT: &str = "component";

/// Label: what went wrong.
pub const ERROR_TYPE: &str = "error_type";

/// Describes this crate's metrics to the installed recorder (call once after
/// installing it; describing is optional).
pub fn describe() {
    metrics::describe_counter!(
        REDIS_ERRORS_TOTAL,
        metrics::Unit::Count,
        "Redis operations that failed; the replica served on its local state"
    );
    metrics::describe_gauge!(
        REDIS_UP,
        "1 while the component shares state through Redis, 0 while degraded to local state"
    );
}
