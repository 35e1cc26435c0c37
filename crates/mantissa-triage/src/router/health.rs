//! Per-model cooldown: a circuit breaker (healthy → cooled down → half-open
//! probe → healthy) shared by every request through the router.

use std::sync::Mutex;
use std::time::Duration;

use metrics::Gauge;
use rand::Rng;
use tokio::time::Instant;

/// When a model is taken out of rotation and how it comes back.
///
/// Defaults, and where they come from:
///
/// * `consecutive_failures = 5` — Envoy outlier detection's
///   `consecutive_5xx` default: five failures in a row is past what one bad
///   request or a blip explains.
/// * `failure_rate_threshold = 0.5` over `window = 60 s` with
///   `minimum_calls = 10` — resilience4j's `failureRateThreshold` default
///   (50 %), over LiteLLM's one-minute failure window (`allowed_fails` are
///   counted per minute). resilience4j's `minimumNumberOfCalls` defaults to
///   100, sized for RPC traffic; one model behind an agent sees a few calls
///   per second at most, so 10 calls keep the rate meaningful without
///   waiting minutes to act.
/// * `base_cooldown = 30 s` — Envoy's `base_ejection_time`. LiteLLM's
///   `cooldown_time` defaults to 5 s, but a provider outage rarely clears in
///   5 s and each failed attempt costs a full LLM timeout, so we follow Envoy.
/// * `max_cooldown = 300 s` — Envoy's `max_ejection_time`.
/// * Each failed half-open probe doubles the next cooldown (Envoy multiplies
///   the base by the ejection count; doubling backs off faster from a model
///   that stays down), with `jitter = 0.2` (±20 %) so replicas do not probe
///   in lockstep.
///
/// Only failures whose [`FailureClass::counts_toward_cooldown`](mantissa_core::FailureClass::counts_toward_cooldown)
/// (5xx, timeouts, transport) count. A 429 with a Retry-After cools the model
/// for exactly that long, without backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CooldownPolicy {
    /// Failures in a row that cool a model down. Defaults to 5.
    pub consecutive_failures: u32,
    /// Failure rate in `(0, 1]` over `window` that cools a model down.
    /// Defaults to 0.5.
    pub failure_rate_threshold: f64,
    /// Calls in the window before the failure rate is trusted. Defaults to 10.
    pub minimum_calls: u32,
    /// The failure-rate window. Defaults to 60 s.
    pub window: Duration,
    /// First cooldown. Defaults to 30 s.
    pub base_cooldown: Duration,
    /// Longest cooldown. Defaults to 300 s.
    pub max_cooldown: Duration,
    /// Relative jitter in `[0, 1)` applied to computed cooldowns. Defaults to 0.2.
    pub jitter: f64,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate_threshold: 0.5,
            minimum_calls: 10,
            window: Duration::from_secs(60),
            base_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl CooldownPolicy {
    pub(crate) fn validate(&self) -> Result<(), mantissa_core::ConfigError> {
        use mantissa_core::ConfigError;
        if self.consecutive_failures == 0 {
            return Err(ConfigError::new(
                "cooldown.consecutive_failures",
                "must be at least 1",
            ));
        }
        if !(self.failure_rate_threshold > 0.0 && self.failure_rate_threshold <= 1.0) {
            return Err(ConfigError::new(
                "cooldown.failure_rate_threshold",
                format!("must be in (0, 1], got {}", self.failure_rate_threshold),
            ));
        }
        if self.window < Duration::from_millis(BUCKETS as u64) {
            return Err(ConfigError::new("cooldown.window", "must be at least 10 ms"));
        }
        if self.base_cooldown.is_zero() || self.max_cooldown < self.base_cooldown {
            return Err(ConfigError::new(
                "cooldown.max_cooldown",
                "base_cooldown must be non-zero and max_cooldown at least base_cooldown",
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                "cooldown.jitter",
                format!("must be in [0, 1), got {}", self.jitter),
            ));
        }
        Ok(())
    }

    /// The cooldown after the `ejections`-th ejection in a row (1-based).
    pub(crate) fn cooldown(&self, ejections: u32) -> Duration {
        let factor = 2u32.saturating_pow(ejections.saturating_sub(1).min(16));
        let d = self.base_cooldown.saturating_mul(factor).min(self.max_cooldown);
        if self.jitter > 0.0 {
            let j = rand::rng().random_range(-self.jitter..=self.jitter);
            d.mul_f64(1.0 + j)
        } else {
            d
        }
    }
}

/// A model's state as reported by [`TierRouter::snapshot`](super::TierRouter::snapshot)
/// and the `mantissa_model_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelState {
    /// Taking traffic, no recent failure (gauge 0).
    Healthy,
    /// Taking traffic, but failing recently or re-admitted on probation
    /// (half-open) (gauge 1).
    Degraded,
    /// Out of rotation until its cooldown ends (gauge 2).
    CooledDown,
}

impl ModelState {
    /// The gauge value: 0, 1 or 2.
    pub fn as_gauge(&self) -> f64 {
        match self {
            ModelState::Healthy => 0.0,
            ModelState::Degraded => 1.0,
            ModelState::CooledDown => 2.0,
        }
    }

    /// `healthy`, `degraded` or `cooled_down`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ModelState::Healthy => "healthy",
            ModelState::Degraded => "degraded",
            ModelState::CooledDown => "cooled_down",
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Healthy,
    CooledDown { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive: u32,
    ejections: u32,
    buckets: [Bucket; BUCKETS],
    reported: ModelState,
}

/// What admission decided for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send the call.
    Yes,
    /// Send the call as the single half-open probe.
    Probe,
    /// Skip: cooled down (or a probe is already in flight).
    No,
}

/// One model's health, behind a short-held mutex.
#[derive(Debug)]
pub(crate) struct ModelHealth {
    policy: CooldownPolicy,
    origin: Instant,
    bucket_len: Duration,
    inner: Mutex<Inner>,
    gauge: Gauge,
}

/// A point-in-time view of one model's health, from
/// [`TierRouter::snapshot`](super::TierRouter::snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSnapshot {
    /// The model.
    pub model: mantissa_core::ModelId,
    /// Its tier.
    pub tier: mantissa_core::Tier,
    /// The state.
    pub state: ModelState,
    /// Countable failures in a row.
    pub consecutive_failures: u32,
    /// Failure rate over the window (0 when no calls).
    pub failure_rate: f64,
    /// Calls in the window.
    pub window_calls: u32,
    /// When the cooldown ends, if cooled down.
    pub cooled_until: Option<Instant>,
}

impl ModelHealth {
    pub(crate) fn new(policy: CooldownPolicy, gauge: Gauge) -> Self {
        gauge.set(0.0);
        Self {
            policy,
            origin: Instant::now(),
            bucket_len: policy.window / BUCKETS as u32,
            inner: Mutex::new(Inner {
                phase: Phase::Healthy,
                consecutive: 0,
                ejections: 0,
                buckets: [Bucket::default(); BUCKETS],
                reported: ModelState::Healthy,
            }),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent under every early exit, so a poisoned
        // lock (a panic elsewhere while held) is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn epoch(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        (nanos / self.bucket_len.as_nanos().max(1)) as u64
    }

    pub(crate) fn admit(&self) -> Admission {
        let mut g = self.lock();
        match g.phase {
            Phase::Healthy => Admission::Yes,
            Phase::HalfOpen { probing: true } => Admission::No,
            Phase::HalfOpen { probing: false } => {
                g.phase = Phase::HalfOpen { probing: true };
                Admission::Probe
            }
            Phase::CooledDown { until } => {
                if Instant::now() >= until {
                    g.phase = Phase::HalfOpen { probing: true };
                    self.report(&mut g);
                    Admission::Probe
                } else {
                    Admission::No
                }
            }
        }
    }

    /// The model answered (success, or an answer that says nothing about its
    /// health being bad).
    pub(crate) fn on_success(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        self.count(&mut g, now, false);
        g.consecutive = 0;
        if matches!(g.phase, Phase::HalfOpen { .. }) {
            // The probe (or a call admitted before the cooldown) succeeded.
            g.phase = Phase::Healthy;
            g.ejections = 0;
        }
        self.report(&mut g);
    }

    /// A failure that counts toward cooldown.
    pub(crate) fn on_failure(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        self.count(&mut g, now, true);
        g.consecutive = g.consecutive.saturating_add(1);
        let eject = match g.phase {
            // A failed probe: cool down again, for longer.
            Phase::HalfOpen { .. } => true,
            Phase::CooledDown { .. } => false,
            Phase::Healthy => {
                let (calls, failures) = self.window(&g, now);
                g.consecutive >= self.policy.consecutive_failures
                    || (calls >= self.policy.minimum_calls
                        && f64::from(failures) / f64::from(calls.max(1))
                            >= self.policy.failure_rate_threshold)
            }
        };
        if eject {
            g.ejections = g.ejections.saturating_add(1);
            let d = self.policy.cooldown(g.ejections);
            g.phase = Phase::CooledDown { until: now + d };
            g.consecutive = 0;
            g.buckets = [Bucket::default(); BUCKETS];
        }
        self.report(&mut g);
    }

    /// Cools down for exactly `d` (a 429's Retry-After, or the monitor),
    /// unless already cooled down for longer.
    pub(crate) fn cool_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut g = self.lock();
        g.phase = match g.phase {
            Phase::CooledDown { until: u } if u > until => Phase::CooledDown { until: u },
            _ => Phase::CooledDown { until },
        };
        self.report(&mut g);
    }

    /// Back to healthy with a clean slate.
    pub(crate) fn restore(&self) {
        let mut g = self.lock();
        g.phase = Phase::Healthy;
        g.consecutive = 0;
        g.ejections = 0;
        g.buckets = [Bucket::default(); BUCKETS];
        self.report(&mut g);
    }

    /// Frees the half-open probe slot without a verdict (the probe was
    /// cancelled or ended with an error that says nothing about health).
    pub(crate) fn release_probe(&self) {
        let mut g = self.lock();
        if let Phase::HalfOpen { probing: true } = g.phase {
            g.phase = Phase::HalfOpen { probing: false };
        }
    }

    pub(crate) fn snapshot(&self, model: mantissa_core::ModelId, tier: mantissa_core::Tier) -> ModelSnapshot {
        let now = Instant::now();
        let g = self.lock();
        let (calls, failures) = self.window(&g, now);
        ModelSnapshot {
            model,
            tier,
            state: Self::state_of(&g, now),
            consecutive_failures: g.consecutive,
            failure_rate: if calls == 0 {
                0.0
            } else {
                f64::from(failures) / f64::from(calls)
            },
            window_calls: calls,
            cooled_until: match g.phase {
                Phase::CooledDown { until } if until > now => Some(until),
                _ => None,
            },
        }
    }

    fn state_of(g: &Inner, now: Instant) -> ModelState {
        match g.phase {
            Phase::CooledDown { until } if until > now => ModelState::CooledDown,
            Phase::CooledDown { .. } | Phase::HalfOpen { .. } => ModelState::Degraded,
            Phase::Healthy if g.consecutive > 0 => ModelState::Degraded,
            Phase::Healthy => ModelState::Healthy,
        }
    }

    fn report(&self, g: &mut Inner) {
        let state = Self::state_of(g, Instant::now());
        if state != g.reported {
            g.reported = state;
            self.gauge.set(state.as_gauge());
        }
    }

    fn count(&self, g: &mut Inner, now: Instant, failure: bool) {
        let epoch = self.epoch(now);
        let b = &mut g.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                calls: 0,
                failures: 0,
            };
        }
        b.calls = b.calls.saturating_add(1);
        if failure {
            b.failures = b.failures.saturating_add(1);
        }
    }

    fn window(&self, g: &Inner, now: Instant) -> (u32, u32) {
        let epoch = self.epoch(now);
        g.buckets
            .iter()
            .filter(|b| b.calls > 0 && epoch.saturating_sub(b.epoch) < BUCKETS as u64)
            .fold((0, 0), |(c, f), b| (c + b.calls, f + b.failures))
    }
}
