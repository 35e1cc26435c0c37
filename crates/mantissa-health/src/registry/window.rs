//! Rolling windows: a ring of time slots, each holding counts, a log-scale
//! latency histogram, tokens and cost.

use std::time::Duration;

use mantissa_core::{FailureClass, Usage};

/// Latency histogram layout: 8 linear sub-buckets per power of two of
/// nanoseconds, from 2^10 ns (~1 µs) to 2^40 ns (~18 min). A value is off by at
/// most one sub-bucket, 1/8 of its octave: relative error ≤ 12.5 %.
const SUB_BITS: u32 = 3;
const SUBS: usize = 1 << SUB_BITS;
const MIN_EXP: u32 = 10;
const MAX_EXP: u32 = 40;
pub(crate) const LATENCY_BUCKETS: usize = (MAX_EXP - MIN_EXP) as usize * SUBS;

/// The bucket of a duration.
fn bucket_of(d: Duration) -> usize {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let v = ns.clamp(1 << MIN_EXP, (1 << MAX_EXP) - 1);
    let msb = 63 - v.leading_zeros();
    let sub = ((v >> (msb - SUB_BITS)) as usize) & (SUBS - 1);
    (msb - MIN_EXP) as usize * SUBS + sub
}

/// Lower and upper bound of a bucket, in seconds (exact: integer nanoseconds).
fn bucket_bounds(i: usize) -> (f64, f64) {
    let shift = MIN_EXP - SUB_BITS + (i / SUBS) as u32;
    let sub = (SUBS + i % SUBS) as u64;
    let lo = (sub << shift) as f64;
    let hi = ((sub + 1) << shift) as f64;
    (lo * 1e-9, hi * 1e-9)
}

/// Aggregated counts of one slot or of a whole window.
///
/// The latency histogram is a fixed array (no allocation to sum windows) and
/// remembers the range of buckets that may be non-zero, `lat_lo..lat_hi`, plus
/// how many samples it holds: clearing, adding and quantiles touch only that
/// range, which is a handful of buckets for a subject with steady latency.
/// Every bucket outside the range is zero.
#[derive(Clone)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: [u64; 10],
    latency: [u32; LATENCY_BUCKETS],
    lat_lo: usize,
    lat_hi: usize,
    lat_count: u64,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cost_usd: f64,
    pub(crate) counterfactual_usd: f64,
    pub(crate) context_warnings: u64,
    pub(crate) context_resets: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            calls: 0,
            failures: [0; 10],
            latency: [0; LATENCY_BUCKETS],
            lat_lo: LATENCY_BUCKETS,
            lat_hi: 0,
            lat_count: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            counterfactual_usd: 0.0,
            context_warnings: 0,
            context_resets: 0,
        }
    }
}

impl Counts {
    pub(crate) fn clear(&mut self) {
        self.calls = 0;
        self.failures = [0; 10];
        if self.lat_lo < self.lat_hi {
            self.latency[self.lat_lo..self.lat_hi].fill(0);
        }
        self.lat_lo = LATENCY_BUCKETS;
        self.lat_hi = 0;
        self.lat_count = 0;
        self.input_tokens = 0;
        self.output_tokens = 0;
        self.cost_usd = 0.0;
        self.counterfactual_usd = 0.0;
        self.context_warnings = 0;
        self.context_resets = 0;
    }

    /// Counts one latency sample in bucket `b`.
    fn add_latency(&mut self, b: usize) {
        if let Some(c) = self.latency.get_mut(b).filter(|c| **c < u32::MAX) {
            *c += 1;
            self.lat_count += 1;
            self.lat_lo = self.lat_lo.min(b);
            self.lat_hi = self.lat_hi.max(b + 1);
        }
    }

    fn add(&mut self, other: &Counts) {
        self.calls += other.calls;
        for (a, b) in self.failures.iter_mut().zip(other.failures.iter()) {
            *a += b;
        }
        let (lo, hi) = (other.lat_lo, other.lat_hi);
        if lo < hi {
            for (a, b) in self.latency[lo..hi].iter_mut().zip(&other.latency[lo..hi]) {
                *a = a.saturating_add(*b);
            }
            self.lat_lo = self.lat_lo.min(lo);
            self.lat_hi = self.lat_hi.max(hi);
            self.lat_count += other.lat_count;
        }
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
        self.counterfactual_usd += other.counterfactual_usd;
        self.context_warnings += other.context_warnings;
        self.context_resets += other.context_resets;
    }

    /// The `q` quantile (0..=1) of recorded latencies in seconds, by linear
    /// interpolation inside the bucket that holds the rank.
    #[cfg(test)]
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles([q])[0]
    }

    /// Several quantiles (each in 0..=1, in increasing order) of recorded
    /// latencies in seconds, in one pass over the histogram; each by linear
    /// interpolation inside the bucket that holds its rank.
    pub(crate) fn quantiles<const K: usize>(&self, qs: [f64; K]) -> [Option<f64>; K] {
        let mut out = [None; K];
        let total = self.lat_count;
        if total == 0 || K == 0 {
            return out;
        }
        let ranks = qs.map(|q| q.clamp(0.0, 1.0) * total as f64);
        // `seen + c >= rank` on integers: the smallest count that reaches each rank.
        let reach = ranks.map(|r| r.ceil() as u64);
        let (base, buckets) = (self.lat_lo, &self.latency[self.lat_lo..self.lat_hi]);
        let mut k = 0;
        let mut seen = 0u64;
        for (i, &c) in buckets.iter().enumerate() {
            let next = seen + u64::from(c);
            // Integer-only test per bucket; the interpolation runs K times in all.
            if c > 0 && next >= reach[k] {
                loop {
                    out[k] = Some(interpolate(base + i, ranks[k], seen, c));
                    k += 1;
                    if k == K {
                        return out;
                    }
                    if next < reach[k] {
                        break;
                    }
                }
            }
            seen = next;
        }
        out
    }
}

/// The value at `rank` in bucket `i`, which holds `c` samples above the
/// `seen` below it: linear interpolation between the bucket's bounds.
#[inline(never)]
fn interpolate(i: usize, rank: f64, seen: u64, c: u32) -> f64 {
    let (lo, hi) = bucket_bounds(i);
    let frac = ((rank - seen as f64) / f64::from(c)).clamp(0.0, 1.0);
    lo + frac * (hi - lo)
}

/// One sample: what a finished call adds to a window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) failure: Option<FailureClass>,
    pub(crate) duration: Duration,
    pub(crate) usage: Usage,
    pub(crate) cost_usd: f64,
    pub(crate) counterfactual_usd: f64,
    /// The latency bucket, computed once for every window the sample goes to.
    bucket: usize,
}

impl Sample {
    pub(crate) fn new(
        failure: Option<FailureClass>,
        duration: Duration,
        usage: Usage,
        cost_usd: f64,
        counterfactual_usd: f64,
    ) -> Self {
        Self {
            failure,
            duration,
            usage,
            cost_usd,
            counterfactual_usd,
            bucket: bucket_of(duration),
        }
    }
}

/// Something other than a call to count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    Warning,
    Reset,
}

struct Slot {
    id: u64,
    counts: Counts,
}

/// A ring of `N` slots of `W` seconds each: covers the last `N * W` seconds
/// (the current slot is partial, so between `(N - 1) * W` and `N * W`).
/// Times are whole seconds since the registry's epoch.
pub(crate) struct Ring<const W: u64, const N: usize> {
    slots: Box<[Slot]>,
}

impl<const W: u64, const N: usize> Ring<W, N> {
    pub(crate) fn new() -> Self {
        let slots = (0..N)
            .map(|_| Slot {
                id: u64::MAX,
                counts: Counts::default(),
            })
            .collect();
        Self { slots }
    }

    pub(crate) fn span(&self) -> Duration {
        Duration::from_secs(W * N as u64)
    }

    fn slot_mut(&mut self, secs: u64) -> &mut Counts {
        let id = secs / W;
        let slot = &mut self.slots[(id % N as u64) as usize];
        if slot.id != id {
            slot.id = id;
            slot.counts.clear();
        }
        &mut slot.counts
    }

    pub(crate) fn record(&mut self, secs: u64, s: &Sample) {
        let c = self.slot_mut(secs);
        c.calls += 1;
        if let Some(f) = s.failure {
            c.failures[f.index()] += 1;
        }
        if s.failure != Some(FailureClass::Cancelled) {
            c.add_latency(s.bucket);
        }
        c.input_tokens += s.usage.input_tokens;
        c.output_tokens += s.usage.output_tokens;
        c.cost_usd += s.cost_usd;
        c.counterfactual_usd += s.counterfactual_usd;
    }

    pub(crate) fn mark(&mut self, secs: u64, m: Mark) {
        let c = self.slot_mut(secs);
        match m {
            Mark::Warning => c.context_warnings += 1,
            Mark::Reset => c.context_resets += 1,
        }
    }

    /// Sum of the slots still inside the window at `secs`.
    #[cfg(test)]
    pub(crate) fn sum(&self, secs: u64) -> Counts {
        let mut out = Counts::default();
        self.sum_into(secs, &mut out);
        out
    }

    /// Writes the sum of the slots still inside the window at `secs` into
    /// `out` (cleared first), without allocating.
    pub(crate) fn sum_into(&self, secs: u64, out: &mut Counts) {
        out.clear();
        let now_id = secs / W;
        for slot in self.slots.iter() {
            if slot.id != u64::MAX && slot.id <= now_id && slot.id + N as u64 > now_id {
                out.add(&slot.counts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ms in [0.002, 0.01, 0.5, 1.0, 7.0, 100.0, 1000.0, 60_000.0] {
            let d = Duration::from_secs_f64(ms / 1000.0);
            let b = bucket_of(d);
            assert!(b >= last);
            last = b;
            let (lo, hi) = bucket_bounds(b);
            let s = d.as_secs_f64();
            assert!(
                lo <= s * 1.000_001 && s < hi * 1.000_001,
                "{s} not in [{lo}, {hi})"
            );
            assert!(hi / lo <= 1.125 + 1e-9);
        }
        assert_eq!(bucket_of(Duration::from_secs(100_000)), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_of(Duration::ZERO), 0);
    }

    #[test]
    fn quantiles_of_uniform_latencies_are_within_the_stated_error() {
        let mut ring: Ring<5, 12> = Ring::new();
        for i in 1..=1000u64 {
            let s = Sample::new(None, Duration::from_millis(i), Usage::default(), 0.0, 0.0);
            ring.record(1, &s);
        }
        let c = ring.sum(1);
        for (q, want) in [(0.5, 0.5), (0.95, 0.95), (0.99, 0.99)] {
            let got = c.quantile(q).unwrap();
            assert!((got - want).abs() / want < 0.125, "q{q}: {got} vs {want}");
        }
    }

    #[test]
    fn old_slots_leave_the_window() {
        let mut ring: Ring<5, 12> = Ring::new();
        let s = Sample::new(
            Some(FailureClass::Timeout),
            Duration::from_millis(10),
            Usage::new(3, 4),
            1.0,
            2.0,
        );
        ring.record(0, &s);
        ring.record(30, &s);
        assert_eq!(ring.sum(59).calls, 2);
        assert_eq!(ring.sum(61).calls, 1);
        assert_eq!(ring.sum(200).calls, 0);
        let c = ring.sum(31);
        assert_eq!(c.failures[FailureClass::Timeout.index()], 2);
        assert_eq!(c.input_tokens, 6);
        assert!((c.counterfactual_usd - 4.0).abs() < 1e-12);
    }
}
