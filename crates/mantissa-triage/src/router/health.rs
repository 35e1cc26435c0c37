//! Per-model cooldown: a circuit breaker (healthy → cooled down → half-open
//! probe → healthy) shared by every request through the router.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Gauge;
use rand::Rng;
use tokio::time::Instant;

use super::shared::{PROBE_ANSWER_WAIT, SharedModelState, to_wall};

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
/// for that long, without backoff, but never longer than `max_cooldown`.
///
/// A failure streak ends at a success, or once its last failure is older
/// than `window`. Results of calls admitted before the model's latest move
/// into cooldown or back into rotation are ignored, and a model re-admitted
/// by its probe starts with an empty window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CooldownPolicy {
    /// Failures in a row that cool a model down. Defaults to 5.
    pub consecutive_failures: u32,
    /// Failure rate in `(0, 1]` over `window` that cools a model down.
    /// Defaults to 0.5.
    pub failure_rate_threshold: f64,
    /// Calls in the window before the failure rate is trusted. Defaults to 10.
    pub minimum_calls: u32,
    /// The failure-rate window; also how long a failure streak lasts
    /// without a new failure. Defaults to 60 s.
    pub window: Duration,
    /// First cooldown. Defaults to 30 s.
    pub base_cooldown: Duration,
    /// Longest cooldown: caps the doubled (and jittered) backoff and a 429's
    /// Retry-After. Defaults to 300 s.
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

    /// The cooldown after the `ejections`-th ejection in a row (1-based):
    /// doubled per ejection and jittered, never longer than `max_cooldown`.
    pub(crate) fn cooldown(&self, ejections: u32) -> Duration {
        let factor = 2u32.saturating_pow(ejections.saturating_sub(1).min(16));
        let d = self.base_cooldown.saturating_mul(factor).min(self.max_cooldown);
        let d = if self.jitter > 0.0 {
            let j = rand::rng().random_range(-self.jitter..=self.jitter);
            d.mul_f64(1.0 + j)
        } else {
            d
        };
        d.min(self.max_cooldown)
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
    CooledDown {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
    /// Shared state only: the cooldown ended and the backend was asked for
    /// the probe lease at `since`; out of rotation until it answers.
    AwaitingProbe {
        since: Instant,
    },
}

/// What this replica decided that its shared backend must hear, sent after
/// the lock is released.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Note {
    Cooled(Instant),
    Restored,
    WantProbe,
}

/// The streak and window of a model when it was last taken out of rotation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AtCooldown {
    consecutive: u32,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every move into cooldown and back into rotation; a result
    /// is counted only if its call was admitted in the current round.
    round: u64,
    consecutive: u32,
    /// When the current streak's last failure arrived.
    last_failure: Option<Instant>,
    ejections: u32,
    buckets: [Bucket; BUCKETS],
    /// Shown by snapshots while the model is out of rotation.
    at_cooldown: Option<AtCooldown>,
    reported: ModelState,
    /// For the shared backend, taken after the lock is released.
    note: Option<Note>,
}

/// What admission decided for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send the call; report its result with this round.
    Yes(u64),
    /// Send the call as the single half-open probe of this round.
    Probe(u64),
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
    /// The backend that shares this model's state with other replicas.
    shared: Option<(Arc<dyn SharedModelState>, mantissa_core::ModelId)>,
}

/// A point-in-time view of one model's health, from
/// [`TierRouter::snapshot`](super::TierRouter::snapshot).
///
/// While a model is out of rotation (cooled down, or half-open until its
/// probe succeeds), `consecutive_failures`, `failure_rate` and
/// `window_calls` are the values it had when it was last cooled down.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSnapshot {
    /// The model.
    pub model: mantissa_core::ModelId,
    /// Its tier.
    pub tier: mantissa_core::Tier,
    /// The state.
    pub state: ModelState,
    /// Countable failures in a row. A streak ends at a success, or once its
    /// last failure is older than the policy's window.
    pub consecutive_failures: u32,
    /// Failure rate over the window (0 when no calls).
    pub failure_rate: f64,
    /// Calls in the window.
    pub window_calls: u32,
    /// When the cooldown ends, if cooled down.
    pub cooled_until: Option<Instant>,
}

impl ModelHealth {
    pub(crate) fn new(
        policy: CooldownPolicy,
        gauge: Gauge,
        shared: Option<(Arc<dyn SharedModelState>, mantissa_core::ModelId)>,
    ) -> Self {
        gauge.set(0.0);
        Self {
            policy,
            origin: Instant::now(),
            bucket_len: policy.window / BUCKETS as u32,
            inner: Mutex::new(Inner {
                phase: Phase::Healthy,
                round: 0,
                consecutive: 0,
                last_failure: None,
                ejections: 0,
                buckets: [Bucket::default(); BUCKETS],
                at_cooldown: None,
                reported: ModelState::Healthy,
                note: None,
            }),
            gauge,
            shared,
        }
    }

    /// Tells the shared backend (if any) what `g` noted, after unlocking.
    fn send(&self, mut g: std::sync::MutexGuard<'_, Inner>) {
        let note = g.note.take();
        drop(g);
        let (Some(note), Some((backend, model))) = (note, &self.shared) else {
            return;
        };
        match note {
            Note::Cooled(until) => backend.cooled_down(model, to_wall(until)),
            Note::Restored => backend.restored(model),
            Note::WantProbe => backend.request_probe(model, self.policy.base_cooldown),
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
            Phase::Healthy => Admission::Yes(g.round),
            Phase::HalfOpen { probing: true } => Admission::No,
            Phase::HalfOpen { probing: false } => {
                g.phase = Phase::HalfOpen { probing: true };
                Admission::Probe(g.round)
            }
            Phase::CooledDown { until } => {
                let now = Instant::now();
                if now < until {
                    Admission::No
                } else if self.shared.is_some() {
                    // Replicas share one probe: ask for the lease, and keep
                    // the model out until the answer.
                    g.phase = Phase::AwaitingProbe { since: now };
                    g.note = Some(Note::WantProbe);
                    self.report(&mut g);
                    self.send(g);
                    Admission::No
                } else {
                    g.phase = Phase::HalfOpen { probing: true };
                    self.report(&mut g);
                    Admission::Probe(g.round)
                }
            }
            Phase::AwaitingProbe { since } => {
                if Instant::now().saturating_duration_since(since) >= PROBE_ANSWER_WAIT {
                    // The backend never answered: probe on our own.
                    g.phase = Phase::HalfOpen { probing: true };
                    Admission::Probe(g.round)
                } else {
                    Admission::No
                }
            }
        }
    }

    /// The backend answered this replica's probe request: granted (`None`),
    /// or held elsewhere for `Some(retry_in)` more.
    pub(crate) fn probe_answer(&self, denied: Option<Duration>) {
        let mut g = self.lock();
        if let Phase::AwaitingProbe { .. } = g.phase {
            g.phase = match denied {
                None => Phase::HalfOpen { probing: false },
                Some(d) => Phase::CooledDown {
                    until: Self::deadline(Instant::now(), d),
                },
            };
            self.report(&mut g);
        }
    }

    /// The end of the cooldown in force, if the model is cooled down now.
    pub(crate) fn cooled_until(&self) -> Option<Instant> {
        match self.lock().phase {
            Phase::CooledDown { until } if until > Instant::now() => Some(until),
            _ => None,
        }
    }

    /// Another replica cooled the model down until `until`.
    pub(crate) fn remote_cooled_down(&self, until: Instant) {
        let now = Instant::now();
        let mut g = self.lock();
        match g.phase {
            Phase::CooledDown { until: u } if u >= until => {}
            Phase::CooledDown { .. } => g.phase = Phase::CooledDown { until },
            Phase::Healthy | Phase::HalfOpen { .. } | Phase::AwaitingProbe { .. } => {
                if until > now {
                    self.enter_cooldown(&mut g, now, until);
                }
            }
        }
        self.report(&mut g);
    }

    /// Another replica put the model back into rotation.
    pub(crate) fn remote_restored(&self) {
        let mut g = self.lock();
        if g.phase != Phase::Healthy {
            Self::readmit(&mut g);
            g.ejections = 0;
            self.report(&mut g);
        }
    }

    /// A call admitted in `round` answered (success, or an answer that says
    /// nothing about its health being bad). A successful probe puts the
    /// model back into rotation with a fresh window and no streak.
    pub(crate) fn on_success(&self, round: u64) {
        self.on_success_at(round, Instant::now());
    }

    /// [`on_success`](Self::on_success) with the clock already read (when
    /// the answer was seen, [`LlmResponse::answered_at`](mantissa_core::LlmResponse::answered_at)).
    pub(crate) fn on_success_at(&self, round: u64, now: Instant) {
        let mut g = self.lock();
        if g.round != round {
            return;
        }
        match g.phase {
            Phase::Healthy => {
                self.count(&mut g, now, false);
                g.consecutive = 0;
                g.last_failure = None;
            }
            Phase::HalfOpen { .. } => {
                Self::readmit(&mut g);
                g.ejections = 0;
                g.note = Some(Note::Restored);
            }
            // Every call of this round is the probe, admitted half-open.
            Phase::CooledDown { .. } | Phase::AwaitingProbe { .. } => {}
        }
        self.report_at(&mut g, now);
        self.send(g);
    }

    /// A call admitted in `round` failed in a way that counts toward cooldown.
    pub(crate) fn on_failure(&self, round: u64) {
        let now = Instant::now();
        let mut g = self.lock();
        if g.round != round {
            return;
        }
        if g.phase == Phase::Healthy && !self.streak_live(&g, now) {
            g.consecutive = 0;
        }
        self.count(&mut g, now, true);
        g.consecutive = g.consecutive.saturating_add(1);
        g.last_failure = Some(now);
        let eject = match g.phase {
            // A failed probe: cool down again, for longer.
            Phase::HalfOpen { .. } => true,
            Phase::CooledDown { .. } | Phase::AwaitingProbe { .. } => false,
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
            let until = Self::deadline(now, self.policy.cooldown(g.ejections));
            self.enter_cooldown(&mut g, now, until);
            g.note = Some(Note::Cooled(until));
        }
        self.report(&mut g);
        self.send(g);
    }

    /// A call admitted in `round` was rate limited: with a Retry-After the
    /// model cools down for that long, capped at the policy's
    /// `max_cooldown` (the provider's statement is about now, so it is
    /// honoured whatever the round); without, a probe's slot is freed.
    pub(crate) fn on_rate_limited(&self, round: u64, retry_after: Option<Duration>) {
        match retry_after {
            Some(d) => self.cool_for(d.min(self.policy.max_cooldown)),
            None => self.release_probe(round),
        }
    }

    /// Cools down for exactly `d` (the monitor, or a capped Retry-After),
    /// unless already cooled down for longer.
    pub(crate) fn cool_for(&self, d: Duration) {
        let now = Instant::now();
        let until = Self::deadline(now, d);
        let mut g = self.lock();
        match g.phase {
            Phase::CooledDown { until: u } if u > until => {}
            Phase::CooledDown { .. } => {
                g.phase = Phase::CooledDown { until };
                g.note = Some(Note::Cooled(until));
            }
            Phase::Healthy | Phase::HalfOpen { .. } | Phase::AwaitingProbe { .. } => {
                self.enter_cooldown(&mut g, now, until);
                g.note = Some(Note::Cooled(until));
            }
        }
        self.report(&mut g);
        self.send(g);
    }

    /// Back to healthy with a clean slate.
    pub(crate) fn restore(&self) {
        let mut g = self.lock();
        Self::readmit(&mut g);
        g.ejections = 0;
        g.note = Some(Note::Restored);
        self.report(&mut g);
        self.send(g);
    }

    /// Frees the half-open probe slot of `round` without a verdict (the
    /// probe was cancelled or ended with an error that says nothing about
    /// health).
    pub(crate) fn release_probe(&self, round: u64) {
        let mut g = self.lock();
        if g.round == round && g.phase == (Phase::HalfOpen { probing: true }) {
            g.phase = Phase::HalfOpen { probing: false };
        }
    }

    /// Takes the model out of rotation until `until`: a new round, and the
    /// streak and window as they are now kept for snapshots.
    fn enter_cooldown(&self, g: &mut Inner, now: Instant, until: Instant) {
        let (calls, failures) = self.window(g, now);
        let consecutive = if self.streak_live(g, now) || g.phase != Phase::Healthy {
            g.consecutive
        } else {
            0
        };
        g.consecutive = consecutive;
        g.at_cooldown = Some(AtCooldown {
            consecutive,
            calls,
            failures,
        });
        g.phase = Phase::CooledDown { until };
        g.round = g.round.wrapping_add(1);
    }

    /// Puts the model back into rotation: a new round with a fresh window
    /// and no streak.
    fn readmit(g: &mut Inner) {
        g.phase = Phase::Healthy;
        g.round = g.round.wrapping_add(1);
        g.consecutive = 0;
        g.last_failure = None;
        g.buckets = [Bucket::default(); BUCKETS];
        g.at_cooldown = None;
    }

    /// `now + d`, saturating instead of overflowing the clock.
    fn deadline(now: Instant, d: Duration) -> Instant {
        now.checked_add(d)
            .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
            .unwrap_or(now)
    }

    /// Whether the streak's last failure is still inside the window.
    fn streak_live(&self, g: &Inner, now: Instant) -> bool {
        g.consecutive > 0
            && g.last_failure
                .is_some_and(|t| now.saturating_duration_since(t) < self.policy.window)
    }

    pub(crate) fn snapshot(&self, model: mantissa_core::ModelId, tier: mantissa_core::Tier) -> ModelSnapshot {
        let now = Instant::now();
        let g = self.lock();
        let (consecutive, calls, failures) = match (g.phase, g.at_cooldown) {
            (Phase::CooledDown { .. } | Phase::HalfOpen { .. } | Phase::AwaitingProbe { .. }, Some(at)) => {
                (at.consecutive, at.calls, at.failures)
            }
            _ => {
                let (calls, failures) = self.window(&g, now);
                let streak = if self.streak_live(&g, now) {
                    g.consecutive
                } else {
                    0
                };
                (streak, calls, failures)
            }
        };
        ModelSnapshot {
            model,
            tier,
            state: self.state_of(&g, now),
            consecutive_failures: consecutive,
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

    fn state_of(&self, g: &Inner, now: Instant) -> ModelState {
        match g.phase {
            Phase::CooledDown { until } if until > now => ModelState::CooledDown,
            Phase::CooledDown { .. } | Phase::HalfOpen { .. } | Phase::AwaitingProbe { .. } => {
                ModelState::Degraded
            }
            Phase::Healthy if self.streak_live(g, now) => ModelState::Degraded,
            Phase::Healthy => ModelState::Healthy,
        }
    }

    fn report(&self, g: &mut Inner) {
        self.report_at(g, Instant::now());
    }

    /// [`report`](Self::report) with the clock already read.
    fn report_at(&self, g: &mut Inner, now: Instant) {
        let state = self.state_of(g, now);
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
