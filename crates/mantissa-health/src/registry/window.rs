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

/// The scalar counts of one slot or of a whole window, with the range of
/// latency buckets that may be non-zero, `lat_lo..lat_hi`, and how many
/// latency samples the histogram holds. Every bucket outside the range is
/// zero, so clearing, adding and quantiles touch only that range (a handful
/// of buckets for a subject with steady latency).
#[derive(Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: [u64; 10],
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cost_usd: f64,
    pub(crate) counterfactual_usd: f64,
    pub(crate) context_warnings: u64,
    pub(crate) context_resets: u64,
    /// Seconds of the successful calls that had an expected latency, and the
    /// sum of those expectations: their ratio is the slowness of an agent
    /// against the baselines of the tiers that served it.
    pub(crate) compared_secs: f64,
    pub(crate) expected_secs: f64,
    pub(crate) error_driven_resets: u64,
    lat_lo: usize,
    lat_hi: usize,
    lat_count: u64,
}

impl Totals {
    const EMPTY: Totals = Totals {
        calls: 0,
        failures: [0; 10],
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
        counterfactual_usd: 0.0,
        context_warnings: 0,
        context_resets: 0,
        compared_secs: 0.0,
        expected_secs: 0.0,
        error_driven_resets: 0,
        lat_lo: LATENCY_BUCKETS,
        lat_hi: 0,
        lat_count: 0,
    };

    fn add(&mut self, o: &Totals) {
        // Every sum saturates: a provider may report absurd usage, and a
        // registry read must never panic on what a call recorded.
        self.calls = self.calls.saturating_add(o.calls);
        for (a, b) in self.failures.iter_mut().zip(o.failures.iter()) {
            *a = a.saturating_add(*b);
        }
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.cost_usd += o.cost_usd;
        self.counterfactual_usd += o.counterfactual_usd;
        self.context_warnings = self.context_warnings.saturating_add(o.context_warnings);
        self.context_resets = self.context_resets.saturating_add(o.context_resets);
        self.compared_secs += o.compared_secs;
        self.expected_secs += o.expected_secs;
        self.error_driven_resets = self.error_driven_resets.saturating_add(o.error_driven_resets);
        if o.lat_lo < o.lat_hi {
            self.lat_lo = self.lat_lo.min(o.lat_lo);
            self.lat_hi = self.lat_hi.max(o.lat_hi);
            self.lat_count = self.lat_count.saturating_add(o.lat_count);
        }
    }
}

type Histogram = [u32; LATENCY_BUCKETS];

/// Counts one latency sample in bucket `b` of `hist`.
fn add_latency(t: &mut Totals, hist: &mut Histogram, b: usize) {
    if let Some(c) = hist.get_mut(b).filter(|c| **c < u32::MAX) {
        *c += 1;
        t.lat_count += 1;
        t.lat_lo = t.lat_lo.min(b);
        t.lat_hi = t.lat_hi.max(b + 1);
    }
}

/// Zeroes the live range of `hist`.
fn clear_latency(t: &Totals, hist: &mut Histogram) {
    if t.lat_lo < t.lat_hi {
        hist[t.lat_lo..t.lat_hi].fill(0);
    }
}

/// The counts of a whole window: totals and a latency histogram in a fixed
/// array (summing windows allocates nothing).
#[derive(Clone)]
pub(crate) struct Counts {
    totals: Totals,
    latency: Histogram,
}

impl std::ops::Deref for Counts {
    type Target = Totals;

    fn deref(&self) -> &Totals {
        &self.totals
    }
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            totals: Totals::EMPTY,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

impl Counts {
    pub(crate) fn clear(&mut self) {
        clear_latency(&self.totals, &mut self.latency);
        self.totals = Totals::EMPTY;
    }

    /// Adds one slot.
    fn add(&mut self, t: &Totals, hist: &Histogram) {
        let (lo, hi) = (t.lat_lo, t.lat_hi);
        if lo < hi {
            for (a, b) in self.latency[lo..hi].iter_mut().zip(&hist[lo..hi]) {
                *a = a.saturating_add(*b);
            }
        }
        self.totals.add(t);
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
        let total = self.totals.lat_count;
        if total == 0 || K == 0 {
            return out;
        }
        let ranks = qs.map(|q| q.clamp(0.0, 1.0) * total as f64);
        // `seen + c >= rank` on integers: the smallest count that reaches each rank.
        let reach = ranks.map(|r| r.ceil() as u64);
        let (base, hi) = (self.totals.lat_lo, self.totals.lat_hi);
        let buckets = self.latency.get(base..hi).unwrap_or(&[]);
        let mut k = 0;
        let mut seen = 0u64;
        for (i, &c) in buckets.iter().enumerate() {
            let next = seen.saturating_add(u64::from(c));
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
    /// What the call's latency was expected to be (an agent's baseline at
    /// the serving tier), for successful agent calls.
    pub(crate) expected_secs: Option<f64>,
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
            expected_secs: None,
            bucket: bucket_of(duration),
        }
    }
}

/// Something other than a call to count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    Warning,
    Reset,
    /// An error-driven reset (also a reset).
    ErrorDrivenReset,
}

/// A ring of `N` slots of `W` seconds each: covers the last `N * W` seconds
/// (the current slot is partial, so between `(N - 1) * W` and `N * W`).
/// Times are whole seconds since the registry's epoch.
///
/// Slot ids and totals sit together (one or two cache lines to find the live
/// slots); the histograms live apart and are read only over their live range.
pub(crate) struct Ring<const W: u64, const N: usize> {
    /// The time slot (`secs / W`) each entry holds, `u64::MAX` for none.
    ids: [u64; N],
    totals: [Totals; N],
    hists: Box<[Histogram]>,
}

impl<const W: u64, const N: usize> Ring<W, N> {
    pub(crate) fn new() -> Self {
        Self {
            ids: [u64::MAX; N],
            totals: [Totals::EMPTY; N],
            hists: vec![[0; LATENCY_BUCKETS]; N].into_boxed_slice(),
        }
    }

    pub(crate) fn span(&self) -> Duration {
        Duration::from_secs(W * N as u64)
    }

    /// The totals and histogram of the slot of `secs`, cleared if it held an older slot.
    fn slot_mut(&mut self, secs: u64) -> (&mut Totals, &mut Histogram) {
        let id = secs / W;
        let i = (id % N as u64) as usize;
        let (t, h) = (&mut self.totals[i], &mut self.hists[i]);
        if self.ids[i] != id {
            self.ids[i] = id;
            clear_latency(t, h);
            *t = Totals::EMPTY;
        }
        (t, h)
    }

    pub(crate) fn record(&mut self, secs: u64, s: &Sample) {
        let (c, hist) = self.slot_mut(secs);
        c.calls = c.calls.saturating_add(1);
        if let Some(f) = s.failure {
            let n = &mut c.failures[f.index()];
            *n = n.saturating_add(1);
        }
        if s.failure != Some(FailureClass::Cancelled) {
            add_latency(c, hist, s.bucket);
        }
        c.input_tokens = c.input_tokens.saturating_add(s.usage.input_tokens);
        c.output_tokens = c.output_tokens.saturating_add(s.usage.output_tokens);
        c.cost_usd += s.cost_usd;
        c.counterfactual_usd += s.counterfactual_usd;
        if let (None, Some(expected)) = (s.failure, s.expected_secs) {
            c.compared_secs += s.duration.as_secs_f64();
            c.expected_secs += expected;
        }
    }

    pub(crate) fn mark(&mut self, secs: u64, m: Mark) {
        let (c, _) = self.slot_mut(secs);
        match m {
            Mark::Warning => c.context_warnings = c.context_warnings.saturating_add(1),
            Mark::Reset => c.context_resets = c.context_resets.saturating_add(1),
            Mark::ErrorDrivenReset => {
                c.context_resets = c.context_resets.saturating_add(1);
                c.error_driven_resets = c.error_driven_resets.saturating_add(1);
            }
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
        for (i, &id) in self.ids.iter().enumerate() {
            if id != u64::MAX && id <= now_id && id + N as u64 > now_id {
                if let (Some(t), Some(h)) = (self.totals.get(i), self.hists.get(i)) {
                    out.add(t, h);
                }
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

    #[test]
    fn absurd_usage_saturates_every_sum() {
        let mut ring: Ring<5, 12> = Ring::new();
        let s = Sample::new(
            None,
            Duration::from_millis(10),
            Usage::new(u64::MAX, u64::MAX),
            0.0,
            0.0,
        );
        ring.record(1, &s);
        ring.record(1, &s);
        ring.record(6, &s);
        let c = ring.sum(7);
        assert_eq!(c.calls, 3);
        assert_eq!(c.input_tokens, u64::MAX);
        assert_eq!(c.output_tokens, u64::MAX);
    }
}
