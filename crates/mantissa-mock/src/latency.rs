//! Simulated latency: fixed or drawn from a range with a seeded generator.

use std::time::Duration;

use rand::Rng;

/// How long the mock waits before answering.
///
/// Waiting uses `tokio::time::sleep`, so tests on a paused clock
/// (`#[tokio::test(start_paused = true)]`) advance through it instantly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// Answer at once (no timer is created at all).
    #[default]
    Zero,
    /// Always wait this long.
    Fixed(Duration),
    /// Wait a uniformly drawn duration in `min..=max` (drawn from the mock's
    /// seeded generator, so a run is reproducible).
    Range {
        /// Shortest wait.
        min: Duration,
        /// Longest wait.
        max: Duration,
    },
}

impl Latency {
    /// A fixed latency.
    pub fn fixed(d: Duration) -> Self {
        if d.is_zero() {
            Latency::Zero
        } else {
            Latency::Fixed(d)
        }
    }

    /// A fixed latency in milliseconds.
    pub fn millis(ms: u64) -> Self {
        Self::fixed(Duration::from_millis(ms))
    }

    /// A latency drawn uniformly from `min..=max` (the bounds are swapped if
    /// given in the wrong order).
    pub fn range(min: Duration, max: Duration) -> Self {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        if max.is_zero() {
            Latency::Zero
        } else {
            Latency::Range { min, max }
        }
    }

    pub(crate) fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Latency::Zero => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Range { min, max } => {
                let lo = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
                let hi = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                if lo >= hi {
                    min
                } else {
                    Duration::from_nanos(rng.random_range(lo..=hi))
                }
            }
        }
    }
}

/// A queue of "fail the next N calls" entries, stored run-length encoded so
/// that a huge N costs no memory.
#[derive(Debug)]
pub(crate) struct FailNext<T> {
    runs: std::collections::VecDeque<(usize, T)>,
}

impl<T> Default for FailNext<T> {
    fn default() -> Self {
        Self {
            runs: std::collections::VecDeque::new(),
        }
    }
}

impl<T: Clone> FailNext<T> {
    pub(crate) fn push(&mut self, n: usize, item: T) {
        if n > 0 {
            self.runs.push_back((n, item));
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let (left, item) = self.runs.front_mut()?;
        let out = item.clone();
        *left -= 1;
        if *left == 0 {
            self.runs.pop_front();
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn range_samples_stay_in_bounds_and_are_reproducible() {
        let l = Latency::range(Duration::from_millis(50), Duration::from_millis(10));
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..100).map(|_| l.sample(&mut rng)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert!(
            a.iter()
                .all(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_millis(50))
        );
        assert_eq!(Latency::fixed(Duration::ZERO), Latency::Zero);
    }

    #[test]
    fn fail_next_is_run_length_encoded() {
        let mut q = FailNext::default();
        q.push(usize::MAX, 'a');
        q.push(0, 'z');
        assert_eq!(q.pop(), Some('a'));
        let mut q = FailNext::default();
        q.push(2, 'a');
        q.push(1, 'b');
        let seq: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(seq, vec!['a', 'a', 'b']);
    }
}
