//! Per-series cells: what one call records, written once with relaxed
//! atomics and read by both consumers — the [`HealthRegistry`](crate::HealthRegistry)'s
//! windows (as differences of these totals, see `registry::window`) and,
//! when the layer's metrics are rendered by the exporter
//! ([`MetricsMode::Cells`](crate::MetricsMode::Cells)), the Prometheus
//! exposition ([`HealthRegistry::collect`](crate::HealthRegistry::collect)).
//!
//! Every cell is a running total since the series was created, so a write is
//! one `fetch_add` (or one compare-and-swap for the dollar sums) and never
//! takes a lock. A histogram keeps one cell per bucket of exactly the
//! catalogue's layout ([`catalog::DURATION_BUCKETS`],
//! [`catalog::TOKEN_BUCKETS`]) plus the overflow bucket and its sum; its
//! count is the sum of its buckets. The duration histogram of an outcome is
//! also the call counter of that outcome (`mantissa_calls_total` is its count).

mod collect;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mantissa_core::{EventKind, FailureClass, catalog};

pub(crate) use collect::{AgentCells, Exported, collect};

use crate::registry::window::{LATENCY_BUCKETS, bucket_of};

/// Outcomes counted apart: success, then one per failure class.
pub(crate) const OUTCOMES: usize = 1 + FailureClass::ALL.len();

/// The index of an outcome in [`Cells::duration`]: 0 for success, 1 + the class index.
#[inline]
pub(crate) fn outcome_index(failure: Option<FailureClass>) -> usize {
    failure.map_or(0, |c| 1 + c.index())
}

/// Cells of a histogram: the catalogue's 14 bounds plus the overflow bucket.
const HIST_CELLS: usize = 15;

/// Nanoseconds of the first duration bound (0.01 s); every bound doubles it.
const FIRST_DURATION_BOUND_NS: u64 = 10_000_000;

/// The duration bucket of `ns`: the first bound `0.01 s × 2^k` at or above
/// it, computed on integer nanoseconds (exact at the bounds).
#[inline]
pub(crate) fn duration_bucket(ns: u64) -> usize {
    if ns <= FIRST_DURATION_BOUND_NS {
        return 0;
    }
    // (ns - 1) / 0.01 s lies in [2^(k-1), 2^k) exactly when ns is in
    // (0.01 × 2^(k-1), 0.01 × 2^k]: k is its bit length.
    let q = (ns - 1) / FIRST_DURATION_BOUND_NS;
    ((64 - q.leading_zeros()) as usize).min(HIST_CELLS - 1)
}

/// The token bucket of `n`: the first bound `4^k` at or above it.
#[inline]
pub(crate) fn token_bucket(n: u64) -> usize {
    if n <= 1 {
        return 0;
    }
    let bits = 64 - (n - 1).leading_zeros();
    (bits.div_ceil(2) as usize).min(HIST_CELLS - 1)
}

/// Adds `v` to the `f64` held (as bits) in `cell`.
#[inline]
pub(crate) fn add_f64(cell: &AtomicU64, v: f64) {
    let _ = cell.fetch_update(Relaxed, Relaxed, |b| Some((f64::from_bits(b) + v).to_bits()));
}

#[inline]
pub(crate) fn load_f64(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Relaxed))
}

/// A fixed-bucket histogram: non-cumulative bucket counts and the sum of
/// the samples in integer units (nanoseconds or tokens).
#[derive(Default)]
pub(crate) struct Hist {
    buckets: [AtomicU64; HIST_CELLS],
    sum: AtomicU64,
}

impl Hist {
    #[inline]
    pub(crate) fn record(&self, bucket: usize, value: u64) {
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(value, Relaxed);
    }

    /// Samples recorded.
    pub(crate) fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |n, b| n.wrapping_add(b.load(Relaxed)))
    }

    /// Sum of the samples, in the unit recorded.
    pub(crate) fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    /// Cumulative counts for the catalogue's bounds (the `+Inf` count is
    /// [`count`](Self::count)), added into `out`; returns the count.
    pub(crate) fn cumulative_into(&self, out: &mut [u64; HIST_CELLS - 1]) -> u64 {
        let mut seen = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            seen = seen.wrapping_add(b.load(Relaxed));
            if let Some(o) = out.get_mut(i) {
                *o = o.wrapping_add(seen);
            }
        }
        seen
    }
}

/// What one call adds to its cells.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recorded {
    pub(crate) failure: Option<FailureClass>,
    pub(crate) duration_ns: u64,
    /// Input and output tokens, when the call reported usage.
    pub(crate) tokens: Option<(u64, u64)>,
    pub(crate) cost_usd: f64,
    pub(crate) counterfactual_usd: f64,
    /// The latency expected of a successful call (an agent's baseline at
    /// the serving tier), when the series feeds an agent's window.
    pub(crate) expected_secs: Option<f64>,
}

/// The cells of one series (kind, agent, model or tool, tier), or the
/// registry's own cells of one subject for events recorded from outside.
pub(crate) struct Cells {
    pub(crate) kind: EventKind,
    /// Call durations by outcome; the count of each is its call count.
    pub(crate) duration: [Hist; OUTCOMES],
    /// Latency of every call that was not cancelled, in the registry's
    /// log-linear buckets (for window quantiles).
    pub(crate) latency: Box<[AtomicU64; LATENCY_BUCKETS]>,
    pub(crate) input: Hist,
    pub(crate) output: Hist,
    pub(crate) time_to_first_chunk: Hist,
    pub(crate) cost_usd: AtomicU64,
    pub(crate) counterfactual_usd: AtomicU64,
    pub(crate) compared_secs: AtomicU64,
    pub(crate) expected_secs: AtomicU64,
}

impl Cells {
    pub(crate) fn new(kind: EventKind) -> Arc<Self> {
        Arc::new(Self {
            kind,
            duration: Default::default(),
            latency: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            input: Hist::default(),
            output: Hist::default(),
            time_to_first_chunk: Hist::default(),
            cost_usd: AtomicU64::new(0f64.to_bits()),
            counterfactual_usd: AtomicU64::new(0f64.to_bits()),
            compared_secs: AtomicU64::new(0f64.to_bits()),
            expected_secs: AtomicU64::new(0f64.to_bits()),
        })
    }

    /// Records one finished call.
    #[inline]
    pub(crate) fn record(&self, r: &Recorded) {
        let o = outcome_index(r.failure);
        self.duration[o].record(duration_bucket(r.duration_ns), r.duration_ns);
        if r.failure != Some(FailureClass::Cancelled) {
            let b = bucket_of(r.duration_ns);
            self.latency[b].fetch_add(1, Relaxed);
        }
        if let Some((input, output)) = r.tokens {
            // Reported counts are at most 2^32 - 1 (the client refuses more);
            // clamping here keeps a sum from wrapping within any process's life.
            let (input, output) = (input.min(u64::from(u32::MAX)), output.min(u64::from(u32::MAX)));
            self.input.record(token_bucket(input), input);
            self.output.record(token_bucket(output), output);
        }
        if r.cost_usd > 0.0 {
            add_f64(&self.cost_usd, r.cost_usd);
        }
        if r.counterfactual_usd > 0.0 {
            add_f64(&self.counterfactual_usd, r.counterfactual_usd);
        }
        if let (None, Some(expected)) = (r.failure, r.expected_secs) {
            add_f64(&self.compared_secs, r.duration_ns as f64 * 1e-9);
            add_f64(&self.expected_secs, expected);
        }
    }

    /// Records the time to the first chunk of a streamed response.
    #[inline]
    pub(crate) fn first_chunk(&self, ns: u64) {
        self.time_to_first_chunk.record(duration_bucket(ns), ns);
    }
}

/// The catalogue's duration bounds, as the histogram cells use them.
pub(crate) const DURATION_BOUNDS: &[f64] = catalog::DURATION_BUCKETS;
/// The catalogue's token bounds, as the histogram cells use them.
pub(crate) const TOKEN_BOUNDS: &[f64] = catalog::TOKEN_BUCKETS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_buckets_follow_the_catalogue_exactly() {
        assert_eq!(DURATION_BOUNDS.len(), HIST_CELLS - 1);
        for (k, bound) in DURATION_BOUNDS.iter().enumerate() {
            let ns = FIRST_DURATION_BOUND_NS << k;
            assert!((ns as f64 * 1e-9 - bound).abs() < 1e-12);
            assert_eq!(duration_bucket(ns), k, "at {bound}");
            assert_eq!(duration_bucket(ns + 1), k + 1, "above {bound}");
        }
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(u64::MAX), HIST_CELLS - 1);
    }

    #[test]
    fn token_buckets_follow_the_catalogue_exactly() {
        assert_eq!(TOKEN_BOUNDS.len(), HIST_CELLS - 1);
        for (k, bound) in TOKEN_BOUNDS.iter().enumerate() {
            let n = *bound as u64;
            assert_eq!(token_bucket(n), k, "at {bound}");
            assert_eq!(token_bucket(n + 1), k + 1, "above {bound}");
        }
        assert_eq!(token_bucket(0), 0);
        assert_eq!(token_bucket(u64::MAX), HIST_CELLS - 1);
    }

    #[test]
    fn histogram_counts_are_cumulative() {
        let h = Hist::default();
        h.record(0, 1);
        h.record(2, 10);
        h.record(14, 100);
        let mut c = [0; HIST_CELLS - 1];
        assert_eq!(h.cumulative_into(&mut c), 3);
        assert_eq!(&c[..4], &[1, 1, 2, 2]);
        assert_eq!(c[13], 2);
        assert_eq!(h.sum(), 111);
    }
}
