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

/// Lower and upper bound of a bucket, in seconds.
fn bucket_bounds(i: usize) -> (f64, f64) {
    let exp = MIN_EXP as i32 + (i / SUBS) as i32;
    let base = 2f64.powi(exp);
    let sub = (i % SUBS) as f64;
    let lo = base * (1.0 + sub / SUBS as f64);
    let hi = base * (1.0 + (sub + 1.0) / SUBS as f64);
    (lo * 1e-9, hi * 1e-9)
}

/// Aggregated counts of one slot or of a whole window.
#[derive(Clone)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: [u64; 10],
    pub(crate) latency: Box<[u32; LATENCY_BUCKETS]>,
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
            latency: Box::new([0; LATENCY_BUCKETS]),
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
    fn clear(&mut self) {
        self.calls = 0;
        self.failures = [0; 10];
        self.latency.fill(0);
        self.input_tokens = 0;
        self.output_tokens = 0;
        self.cost_usd = 0.0;
        self.counterfactual_usd = 0.0;
        self.context_warnings = 0;
        self.context_resets = 0;
    }

    fn add(&mut self, other: &Counts) {
        self.calls += other.calls;
        for (a, b) in self.failures.iter_mut().zip(other.failures.iter()) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a = a.saturating_add(*b);
        }
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
        self.counterfactual_usd += other.counterfactual_usd;
        self.context_warnings += other.context_warnings;
        self.context_resets += other.context_resets;
    }

    /// Number of calls in the latency histogram.
    pub(crate) fn latency_count(&self) -> u64 {
        self.latency.iter().map(|&c| u64::from(c)).sum()
    }

    /// The `q` quantile (0..=1) of recorded latencies in seconds, by linear
    /// interpolation inside the bucket that holds the rank.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.latency_count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &c) in self.latency.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let c = u64::from(c);
            if (seen + c) as f64 >= rank {
                let (lo, hi) = bucket_bounds(i);
                let frac = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lo + frac * (hi - lo));
            }
            seen += c;
        }
        None
    }
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
            c.latency[s.bucket] = c.latency[s.bucket].saturating_add(1);
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
    pub(crate) fn sum(&self, secs: u64) -> Counts {
        let now_id = secs / W;
        let mut out = Counts::default();
        for slot in self.slots.iter() {
            if slot.id != u64::MAX && slot.id <= now_id && slot.id + N as u64 > now_id {
                out.add(&slot.counts);
            }
        }
        out
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
