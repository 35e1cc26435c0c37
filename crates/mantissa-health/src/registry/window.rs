//! Rolling windows without a lock per call.
//!
//! A subject's calls are counted once, in running totals (the per-series
//! [`Cells`](crate::cells::Cells) it reads, plus its own marks). A window is
//! a difference of totals: the totals now minus the totals as they were when
//! the window's first slot began. So a ring of time slots does not hold
//! counts; it holds a *base*, a copy of the totals taken by the first call of
//! each slot before it records, tagged with the slot's id (its epoch). The
//! call that finds the current slot newer than the last one seen takes the
//! base (a compare-and-swap elects one writer, then a lock held only for the
//! copy, once per slot); every other call only loads the last slot id.
//!
//! Reading the window `[s0, now]`: the base of the oldest slot id `>= s0`
//! still in the ring is the total at the start of the window (no call of the
//! subject happened between `s0` and that slot, or it would have taken an
//! earlier base). No such slot means no call in the window.

use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use mantissa_core::FailureClass;

use crate::cells::{Cells, load_f64};

/// Latency histogram layout: 8 linear sub-buckets per power of two of
/// nanoseconds, from 2^10 ns (~1 µs) to 2^40 ns (~18 min). A value is off by at
/// most one sub-bucket, 1/8 of its octave: relative error ≤ 12.5 %.
const SUB_BITS: u32 = 3;
const SUBS: usize = 1 << SUB_BITS;
const MIN_EXP: u32 = 10;
const MAX_EXP: u32 = 40;
pub(crate) const LATENCY_BUCKETS: usize = (MAX_EXP - MIN_EXP) as usize * SUBS;

/// The latency bucket of a duration of `ns` nanoseconds.
#[inline]
pub(crate) fn bucket_of(ns: u64) -> usize {
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

/// Totals of a subject (running, or a window's difference of two).
#[derive(Clone)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: [u64; 10],
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cost_usd: f64,
    pub(crate) counterfactual_usd: f64,
    pub(crate) context_warnings: u64,
    pub(crate) context_resets: u64,
    pub(crate) error_driven_resets: u64,
    /// Seconds of the successful calls that had an expected latency, and the
    /// sum of those expectations: their ratio is the slowness of an agent
    /// against the baselines of the tiers that served it.
    pub(crate) compared_secs: f64,
    pub(crate) expected_secs: f64,
    pub(crate) successes: u64,
    pub(crate) latency: [u64; LATENCY_BUCKETS],
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            calls: 0,
            failures: [0; 10],
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            counterfactual_usd: 0.0,
            context_warnings: 0,
            context_resets: 0,
            error_driven_resets: 0,
            compared_secs: 0.0,
            expected_secs: 0.0,
            successes: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

impl Counts {
    pub(crate) fn clear(&mut self) {
        self.calls = 0;
        self.failures = [0; 10];
        self.input_tokens = 0;
        self.output_tokens = 0;
        self.cost_usd = 0.0;
        self.counterfactual_usd = 0.0;
        self.context_warnings = 0;
        self.context_resets = 0;
        self.error_driven_resets = 0;
        self.compared_secs = 0.0;
        self.expected_secs = 0.0;
        self.successes = 0;
        self.latency.fill(0);
    }

    /// Adds the running totals of `cells`.
    pub(crate) fn add_cells(&mut self, cells: &Cells) {
        for (o, h) in cells.duration.iter().enumerate() {
            let n = h.count();
            self.calls = self.calls.wrapping_add(n);
            match o.checked_sub(1) {
                None => self.successes = self.successes.wrapping_add(n),
                Some(i) => {
                    if let Some(f) = self.failures.get_mut(i) {
                        *f = f.wrapping_add(n);
                    }
                }
            }
        }
        for (a, c) in self.latency.iter_mut().zip(cells.latency.iter()) {
            *a = a.wrapping_add(c.load(Relaxed));
        }
        self.input_tokens = self.input_tokens.wrapping_add(cells.input.sum());
        self.output_tokens = self.output_tokens.wrapping_add(cells.output.sum());
        self.cost_usd += load_f64(&cells.cost_usd);
        self.counterfactual_usd += load_f64(&cells.counterfactual_usd);
        self.compared_secs += load_f64(&cells.compared_secs);
        self.expected_secs += load_f64(&cells.expected_secs);
    }

    /// `self - base`, field by field. Totals only grow, so the difference is
    /// what happened in between (wrapping, so even a wrapped total is right).
    pub(crate) fn minus(&mut self, base: &Counts) {
        let sub = |a: &mut u64, b: u64| *a = a.wrapping_sub(b);
        sub(&mut self.calls, base.calls);
        sub(&mut self.successes, base.successes);
        for (a, b) in self.failures.iter_mut().zip(base.failures) {
            sub(a, b);
        }
        sub(&mut self.input_tokens, base.input_tokens);
        sub(&mut self.output_tokens, base.output_tokens);
        sub(&mut self.context_warnings, base.context_warnings);
        sub(&mut self.context_resets, base.context_resets);
        sub(&mut self.error_driven_resets, base.error_driven_resets);
        for (a, b) in self.latency.iter_mut().zip(base.latency.iter()) {
            sub(a, *b);
        }
        // Float sums can lose the last bits of a difference: never below 0.
        self.cost_usd = (self.cost_usd - base.cost_usd).max(0.0);
        self.counterfactual_usd = (self.counterfactual_usd - base.counterfactual_usd).max(0.0);
        self.compared_secs = (self.compared_secs - base.compared_secs).max(0.0);
        self.expected_secs = (self.expected_secs - base.expected_secs).max(0.0);
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
        let total = self.latency.iter().fold(0u64, |n, c| n.saturating_add(*c));
        if total == 0 || K == 0 {
            return out;
        }
        let ranks = qs.map(|q| q.clamp(0.0, 1.0) * total as f64);
        // `seen + c >= rank` on integers: the smallest count that reaches each rank.
        let reach = ranks.map(|r| r.ceil() as u64);
        let mut k = 0;
        let mut seen = 0u64;
        for (i, &c) in self.latency.iter().enumerate() {
            let next = seen.saturating_add(c);
            if c > 0 && next >= reach[k] {
                loop {
                    out[k] = Some(interpolate(i, ranks[k], seen, c));
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
fn interpolate(i: usize, rank: f64, seen: u64, c: u64) -> f64 {
    let (lo, hi) = bucket_bounds(i);
    let frac = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
    lo + frac * (hi - lo)
}

/// One sample recorded from outside a layer (a [`HealthEvent`](mantissa_core::HealthEvent)
/// given to the registry, or a test): what a finished call adds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) failure: Option<FailureClass>,
    pub(crate) duration: Duration,
    pub(crate) usage: mantissa_core::Usage,
    pub(crate) cost_usd: f64,
    pub(crate) counterfactual_usd: f64,
}

impl Sample {
    pub(crate) fn new(
        failure: Option<FailureClass>,
        duration: Duration,
        usage: mantissa_core::Usage,
        cost_usd: f64,
        counterfactual_usd: f64,
    ) -> Self {
        Self {
            failure,
            duration,
            usage,
            cost_usd,
            counterfactual_usd,
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

/// A ring of `N` bases of `W`-second slots: the window covers the last
/// `N * W` seconds (the current slot is partial, so between `(N - 1) * W`
/// and `N * W`). Times are whole seconds since the registry's epoch.
pub(crate) struct BaseRing<const W: u64, const N: usize> {
    /// The slot id (`secs / W`) each base belongs to, `u64::MAX` for none.
    ids: [u64; N],
    bases: Box<[Counts]>,
}

impl<const W: u64, const N: usize> BaseRing<W, N> {
    pub(crate) fn new() -> Self {
        Self {
            ids: [u64::MAX; N],
            bases: vec![Counts::default(); N].into_boxed_slice(),
        }
    }

    pub(crate) fn span(&self) -> Duration {
        Duration::from_secs(W * N as u64)
    }

    /// Whether the slot of `secs` has no base yet.
    pub(crate) fn needs_base(&self, secs: u64) -> bool {
        let id = secs / W;
        self.ids[(id % N as u64) as usize] != id
    }

    /// Stores `totals` as the base of the slot of `secs`, unless it has one.
    pub(crate) fn put(&mut self, secs: u64, totals: &Counts) {
        let id = secs / W;
        let i = (id % N as u64) as usize;
        if self.ids[i] != id {
            self.ids[i] = id;
            self.bases[i].clone_from(totals);
        }
    }

    /// The base at the start of the window that ends at `secs`, if any call
    /// happened in it.
    pub(crate) fn base(&self, secs: u64) -> Option<&Counts> {
        let now = secs / W;
        let first = now.saturating_sub(N as u64 - 1);
        self.ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id != u64::MAX && **id >= first && **id <= now)
            .min_by_key(|(_, id)| **id)
            .and_then(|(i, _)| self.bases.get(i))
    }

    /// The window ending at `secs`: `totals` minus its base (zero when no
    /// call happened in it), written into `out`.
    pub(crate) fn window(&self, secs: u64, totals: &Counts, out: &mut Counts) {
        match self.base(secs) {
            Some(base) => {
                out.clone_from(totals);
                out.minus(base);
            }
            None => out.clear(),
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
            let b = bucket_of(d.as_nanos() as u64);
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
        assert_eq!(bucket_of(100_000 * 1_000_000_000), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_of(0), 0);
    }

    #[test]
    fn quantiles_of_uniform_latencies_are_within_the_stated_error() {
        let mut c = Counts::default();
        for i in 1..=1000u64 {
            c.latency[bucket_of(i * 1_000_000)] += 1;
        }
        for (q, want) in [(0.5, 0.5), (0.95, 0.95), (0.99, 0.99)] {
            let got = c.quantile(q).unwrap();
            assert!((got - want).abs() / want < 0.125, "q{q}: {got} vs {want}");
        }
    }

    #[test]
    fn a_window_is_the_totals_minus_the_base_of_its_first_slot() {
        let mut ring: BaseRing<5, 12> = BaseRing::new();
        let mut totals = Counts::default();
        let mut out = Counts::default();
        ring.window(0, &totals, &mut out);
        assert_eq!(out.calls, 0);
        // A call at 0 s, then one at 30 s.
        ring.put(0, &totals);
        totals.calls += 1;
        ring.put(30, &totals);
        totals.calls += 1;
        ring.window(59, &totals, &mut out);
        assert_eq!(out.calls, 2);
        ring.window(61, &totals, &mut out);
        assert_eq!(out.calls, 1);
        ring.window(200, &totals, &mut out);
        assert_eq!(out.calls, 0);
        assert!(!ring.needs_base(31) && ring.needs_base(35));
    }
}
