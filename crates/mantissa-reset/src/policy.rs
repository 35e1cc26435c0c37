//! The brittleness policy: which signals of a session count as brittle, how
//! they combine, how brittle the session is overall, and which stage of the
//! staged response each trigger asks for.
//!
//! | trigger | fires when | default stage |
//! |---|---|---|
//! | `turns` | conversation turns (user messages) since the last reset ≥ 50 | warn (suggests a reset) |
//! | `context_warning` | context tokens ≥ 0.75 × the serving model's window | warn |
//! | `context_tokens` | context tokens ≥ 0.85 × the window | clear old tool results (escalating to summarize, then trim, then clearing older tool results of the current turn) |
//! | `consecutive_errors` | ≥ 3 LLM or tool errors in a row | summarize |
//! | `error_rate` | ≥ 50 % errors over the last 20 calls (at least 10 seen) | warn |
//! | `latency_drift` | recent latency ≥ 2 × the session's own baseline and ≥ 50 ms above it (after 5 samples) | warn |
//! | `requested` | [`SessionControl::request_reset`](mantissa_core::control::SessionControl) | summarize |
//! | `context_length_exceeded` | the provider rejected the previous call as too long | summarize |
//!
//! Warnings fire on the rising edge (once when a trigger becomes active, again
//! only after it was inactive). Compaction triggers combine with
//! [`Combine::Any`] (default) or [`Combine::All`]; `requested` and
//! `context_length_exceeded` always act.
//!
//! By default turns only warn: compaction is driven by the context fraction
//! and error streaks (and requests and provider overflows). A compaction
//! that can remove nothing is not a reset: it raises a warning (once per
//! episode) with the compaction trigger as its reason instead.

use std::fmt;

use mantissa_core::ConfigError;

/// A reason for a warning or a reset. Its [`as_str`](Trigger::as_str) name is
/// the bounded `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Too many conversation turns (user messages) since the last reset.
    Turns,
    /// The context passed the warning fraction of the model's window.
    ContextWarning,
    /// The context passed the compaction fraction of the model's window.
    ContextTokens,
    /// Too many LLM or tool errors in a row.
    ConsecutiveErrors,
    /// Too high an error rate over the last calls.
    ErrorRate,
    /// Latency drifted above the session's own baseline.
    LatencyDrift,
    /// A reset was requested through `SessionControl`.
    Requested,
    /// The provider rejected the previous call because the prompt was too long.
    ContextLengthExceeded,
}

impl Trigger {
    /// Every trigger, in a fixed order (also the priority order when several
    /// ask for the same stage).
    pub const ALL: [Trigger; 8] = [
        Trigger::Requested,
        Trigger::ContextLengthExceeded,
        Trigger::ContextTokens,
        Trigger::Turns,
        Trigger::ConsecutiveErrors,
        Trigger::ErrorRate,
        Trigger::LatencyDrift,
        Trigger::ContextWarning,
    ];

    /// The bounded `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Turns => "turns",
            Trigger::ContextWarning => "context_warning",
            Trigger::ContextTokens => "context_tokens",
            Trigger::ConsecutiveErrors => "consecutive_errors",
            Trigger::ErrorRate => "error_rate",
            Trigger::LatencyDrift => "latency_drift",
            Trigger::Requested => "requested",
            Trigger::ContextLengthExceeded => "context_length_exceeded",
        }
    }

    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of triggers (a small bit set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TriggerSet(u16);

impl TriggerSet {
    /// The empty set.
    pub const EMPTY: TriggerSet = TriggerSet(0);

    /// Whether `t` is in the set.
    pub fn contains(self, t: Trigger) -> bool {
        self.0 & t.bit() != 0
    }

    /// Adds `t`.
    pub fn insert(&mut self, t: Trigger) {
        self.0 |= t.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The triggers in the set, in [`Trigger::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Trigger> {
        Trigger::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    pub(crate) fn bits(self) -> u16 {
        self.0
    }

    pub(crate) fn from_bits(bits: u16) -> Self {
        Self(bits)
    }
}

/// A stage of the staged response, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Do nothing (the trigger only feeds the score).
    Ignore,
    /// Emit a warning (event, metric, optional note for the agent).
    Warn,
    /// Replace old tool results with placeholders; escalates to
    /// [`Stage::Summarize`] when that does not reach the target budget.
    ClearToolResults,
    /// Summarize the older turns (falls back to trimming).
    Summarize,
    /// Start a fresh session from a handoff summary.
    Respawn,
}

/// What a reset actually did. Its [`as_str`](Strategy::as_str) name is the
/// bounded `strategy` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Old tool results were replaced with placeholders.
    ClearToolResults,
    /// Older turns were replaced by a summary.
    Summarize,
    /// Older turns were dropped (the summarizer fallback).
    Trim,
    /// A fresh session was started from a handoff summary.
    Respawn,
}

impl Strategy {
    /// The bounded `strategy` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::ClearToolResults => "clear_tool_results",
            Strategy::Summarize => "summarize",
            Strategy::Trim => "trim",
            Strategy::Respawn => "respawn",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How compaction triggers combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Combine {
    /// Act when any enabled trigger fires (the default).
    #[default]
    Any,
    /// Act only when every enabled compaction trigger fires at once.
    All,
}

/// Which stage each trigger asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    stages: [Stage; 8],
}

impl Default for StagePlan {
    /// See the table in the [module docs](self).
    fn default() -> Self {
        let mut plan = Self {
            stages: [Stage::Ignore; 8],
        };
        plan.stages[Trigger::Turns.index()] = Stage::Warn;
        plan.stages[Trigger::ContextWarning.index()] = Stage::Warn;
        plan.stages[Trigger::ContextTokens.index()] = Stage::ClearToolResults;
        plan.stages[Trigger::ConsecutiveErrors.index()] = Stage::Summarize;
        plan.stages[Trigger::ErrorRate.index()] = Stage::Warn;
        plan.stages[Trigger::LatencyDrift.index()] = Stage::Warn;
        plan.stages[Trigger::Requested.index()] = Stage::Summarize;
        plan.stages[Trigger::ContextLengthExceeded.index()] = Stage::Summarize;
        plan
    }
}

impl StagePlan {
    /// The stage `trigger` asks for.
    pub fn stage(&self, trigger: Trigger) -> Stage {
        self.stages[trigger.index()]
    }

    /// Sets the stage of `trigger` (builder style).
    pub fn with(mut self, trigger: Trigger, stage: Stage) -> Self {
        self.stages[trigger.index()] = stage;
        self
    }
}

/// The error-rate trigger: fires when at least `threshold` of the last
/// `window` calls failed, once `min_calls` calls were seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRateRule {
    /// Fraction of failed calls in (0, 1].
    pub threshold: f64,
    /// Calls looked at, 1..=64.
    pub window: u8,
    /// Calls needed before the rule can fire.
    pub min_calls: u8,
}

/// What the policy looks at for one call (read from the session state).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Conversation turns (user messages, not LLM calls) since the last
    /// reset, including this call's.
    pub turns_since_reset: u32,
    /// Context tokens of the effective history of this call.
    pub context_tokens: u64,
    /// The serving model's context window in tokens.
    pub window: u32,
    /// The longer of the LLM and tool error streaks.
    pub consecutive_errors: u32,
    /// Failed calls among the last `calls_seen` (bounded by the rule's window).
    pub recent_errors: u32,
    /// Calls in the error window.
    pub calls_seen: u32,
    /// Recent latency divided by the baseline, when enough samples exist.
    pub latency_drift: Option<f64>,
    /// A forced trigger (requested reset, provider overflow).
    pub forced: Option<Trigger>,
}

/// The policy's verdict for one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// Brittleness in [0, 1]: the largest of the enabled signals, each divided
    /// by its threshold (1 means some compaction trigger is at its threshold).
    pub score: f64,
    /// Every trigger active on this call.
    pub active: TriggerSet,
    /// The compaction to run, if any: the trigger that decided and its stage
    /// (at least [`Stage::ClearToolResults`]).
    pub action: Option<(Trigger, Stage)>,
    /// Triggers clearly below their threshold (under [`REARM_RATIO`] of it).
    /// A warning re-arms only once its trigger was calm, so a signal hovering
    /// around its threshold warns once, not on every crossing.
    pub calm: TriggerSet,
}

/// The fraction of its threshold a signal must fall under before its warning
/// can fire again (hysteresis).
pub const REARM_RATIO: f64 = 0.8;

/// Thresholds and the stage plan. See the [module docs](self) for defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BrittlenessPolicy {
    max_turns: Option<u32>,
    warn_fraction: Option<f64>,
    compact_fraction: Option<f64>,
    target_fraction: f64,
    max_consecutive_errors: Option<u32>,
    error_rate: Option<ErrorRateRule>,
    latency_drift: Option<f64>,
    min_latency_samples: u32,
    combine: Combine,
    plan: StagePlan,
    respawn_after_resets: Option<u32>,
}

impl Default for BrittlenessPolicy {
    fn default() -> Self {
        Self {
            max_turns: Some(50),
            warn_fraction: Some(0.75),
            compact_fraction: Some(0.85),
            target_fraction: 0.6,
            max_consecutive_errors: Some(3),
            error_rate: Some(ErrorRateRule {
                threshold: 0.5,
                window: 20,
                min_calls: 10,
            }),
            latency_drift: Some(2.0),
            min_latency_samples: 5,
            combine: Combine::Any,
            plan: StagePlan::default(),
            respawn_after_resets: None,
        }
    }
}

fn fraction(field: &str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(ConfigError::new(field, format!("must be in (0, 1], got {v}")))
    }
}

impl BrittlenessPolicy {
    /// The default policy (see the [module docs](self)).
    pub fn new() -> Self {
        Self::default()
    }

    /// Conversation turns (user messages) since the last reset at which the
    /// `turns` trigger fires (`None` disables). An agent's tool round trips
    /// are LLM calls, not turns. The trigger's stage is [`Stage::Warn`] by
    /// default (a `context_warning` event, a metric and a log line suggesting
    /// a reset); to compact on turns, give it a compaction stage:
    /// `.stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize))`.
    /// Defaults to 50.
    pub fn max_turns(mut self, turns: Option<u32>) -> Self {
        self.max_turns = turns.filter(|t| *t > 0);
        self
    }

    /// Warning and compaction thresholds as fractions of the serving model's
    /// context window (`None` disables either). Defaults to 0.75 and 0.85.
    pub fn context_thresholds(
        mut self,
        warn: Option<f64>,
        compact: Option<f64>,
    ) -> Result<Self, ConfigError> {
        self.warn_fraction = warn.map(|w| fraction("context_thresholds.warn", w)).transpose()?;
        self.compact_fraction = compact
            .map(|c| fraction("context_thresholds.compact", c))
            .transpose()?;
        if let (Some(w), Some(c)) = (self.warn_fraction, self.compact_fraction) {
            if w > c {
                return Err(ConfigError::new(
                    "context_thresholds.warn",
                    format!(
                        "the warning fraction {w} is above the compaction fraction {c}: a warning comes first"
                    ),
                ));
            }
        }
        Ok(self)
    }

    /// The budget a compaction aims for, as a fraction of the window.
    /// Defaults to 0.6.
    pub fn target_fraction(mut self, target: f64) -> Result<Self, ConfigError> {
        self.target_fraction = fraction("target_fraction", target)?;
        Ok(self)
    }

    /// LLM or tool errors in a row that trigger (`None` disables). Defaults to 3.
    pub fn max_consecutive_errors(mut self, errors: Option<u32>) -> Self {
        self.max_consecutive_errors = errors.filter(|e| *e > 0);
        self
    }

    /// The error-rate trigger (`None` disables). Defaults to 0.5 over the
    /// last 20 calls, with at least 10 seen.
    pub fn error_rate(mut self, rule: Option<ErrorRateRule>) -> Result<Self, ConfigError> {
        if let Some(r) = rule {
            fraction("error_rate.threshold", r.threshold)?;
            if r.window == 0 || r.window > 64 {
                return Err(ConfigError::new("error_rate.window", "must be in 1..=64"));
            }
            if r.min_calls > r.window {
                return Err(ConfigError::new(
                    "error_rate.min_calls",
                    "must not exceed the window",
                ));
            }
        }
        self.error_rate = rule;
        Ok(self)
    }

    /// Ratio of recent latency to the session's baseline that triggers
    /// (`None` disables), and the latency samples needed first. Defaults to
    /// 2.0 after 5 samples.
    pub fn latency_drift(mut self, ratio: Option<f64>, min_samples: u32) -> Result<Self, ConfigError> {
        if let Some(r) = ratio
            && !(r.is_finite() && r > 1.0)
        {
            return Err(ConfigError::new(
                "latency_drift",
                format!("must be above 1, got {r}"),
            ));
        }
        self.latency_drift = ratio;
        self.min_latency_samples = min_samples.max(1);
        Ok(self)
    }

    /// How compaction triggers combine. Defaults to [`Combine::Any`].
    pub fn combine(mut self, combine: Combine) -> Self {
        self.combine = combine;
        self
    }

    /// Which stage each trigger asks for. Defaults to [`StagePlan::default`].
    pub fn stages(mut self, plan: StagePlan) -> Self {
        self.plan = plan;
        self
    }

    /// Escalate any compaction to [`Stage::Respawn`] once the session has
    /// been reset this many times (`None` never respawns by count).
    /// Defaults to `None`.
    pub fn respawn_after_resets(mut self, resets: Option<u32>) -> Self {
        self.respawn_after_resets = resets;
        self
    }

    /// The stage plan.
    pub fn plan(&self) -> &StagePlan {
        &self.plan
    }

    /// The compaction budget for a window of `window` tokens.
    pub fn target_tokens(&self, window: u32) -> u64 {
        (f64::from(window) * self.target_fraction) as u64
    }

    /// The window of the error ring the tracker must keep (at least 1).
    pub(crate) fn error_window(&self) -> u32 {
        self.error_rate.map(|r| u32::from(r.window)).unwrap_or(20)
    }

    pub(crate) fn min_latency_samples(&self) -> u32 {
        self.min_latency_samples
    }

    /// Whether a session reset `resets` times should respawn instead.
    pub(crate) fn respawn_due(&self, resets: u32) -> bool {
        self.respawn_after_resets.is_some_and(|n| resets >= n)
    }

    /// Evaluates the signals of one call. O(1).
    pub fn evaluate(&self, s: &Signals) -> Assessment {
        let frac = if s.window == 0 {
            0.0
        } else {
            s.context_tokens as f64 / f64::from(s.window)
        };
        let error_ratio = self.error_rate.map(|rule| {
            if s.calls_seen >= u32::from(rule.min_calls) && s.calls_seen > 0 {
                f64::from(s.recent_errors) / f64::from(s.calls_seen) / rule.threshold
            } else {
                0.0
            }
        });
        // Each enabled compaction signal as a ratio to its threshold.
        let ratios: [(Trigger, Option<f64>); 5] = [
            (
                Trigger::Turns,
                self.max_turns
                    .map(|m| f64::from(s.turns_since_reset) / f64::from(m)),
            ),
            (Trigger::ContextTokens, self.compact_fraction.map(|c| frac / c)),
            (
                Trigger::ConsecutiveErrors,
                self.max_consecutive_errors
                    .map(|m| f64::from(s.consecutive_errors) / f64::from(m)),
            ),
            (Trigger::ErrorRate, error_ratio),
            (
                Trigger::LatencyDrift,
                self.latency_drift
                    .map(|limit| s.latency_drift.map(|d| (d - 1.0) / (limit - 1.0)).unwrap_or(0.0)),
            ),
        ];
        let mut active = TriggerSet::EMPTY;
        let mut enabled = TriggerSet::EMPTY;
        let mut calm = TriggerSet::EMPTY;
        let mut score: f64 = 0.0;
        for (t, ratio) in ratios {
            match ratio {
                Some(r) => {
                    enabled.insert(t);
                    let r = if r.is_finite() { r.max(0.0) } else { 1.0 };
                    score = score.max(r.min(1.0));
                    if r >= 1.0 {
                        active.insert(t);
                    }
                    if r < REARM_RATIO {
                        calm.insert(t);
                    }
                }
                None => calm.insert(t),
            }
        }
        calm.insert(Trigger::Requested);
        calm.insert(Trigger::ContextLengthExceeded);
        match self.warn_fraction {
            None => calm.insert(Trigger::ContextWarning),
            Some(w) if frac < w * REARM_RATIO => calm.insert(Trigger::ContextWarning),
            Some(_) => {}
        }
        if let Some(w) = self.warn_fraction {
            if frac >= w {
                active.insert(Trigger::ContextWarning);
            }
            // The warning level feeds the score only when there is no
            // compaction threshold (then a warning alone reaches 1).
            if self.compact_fraction.is_none() {
                score = score.max((frac / w).clamp(0.0, 1.0));
            }
        }

        let mut action: Option<(Trigger, Stage)> = None;
        let mut pick = |t: Trigger| {
            let stage = self.plan.stage(t);
            if stage >= Stage::ClearToolResults && action.is_none_or(|(_, s)| stage > s) {
                action = Some((t, stage));
            }
        };
        if let Some(f) = s.forced {
            active.insert(f);
            score = 1.0;
            pick(f);
        }
        let combined = match self.combine {
            Combine::Any => true,
            Combine::All => !enabled.is_empty() && enabled.bits() & active.bits() == enabled.bits(),
        };
        if combined {
            for t in Trigger::ALL {
                if enabled.contains(t) && active.contains(t) {
                    pick(t);
                }
            }
        }
        Assessment {
            score: score.clamp(0.0, 1.0),
            active,
            action,
            calm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Signals {
        Signals {
            window: 1000,
            ..Signals::default()
        }
    }

    #[test]
    fn quiet_session_scores_zero_and_does_nothing() {
        let a = BrittlenessPolicy::default().evaluate(&quiet());
        assert_eq!(a.score, 0.0);
        assert!(a.active.is_empty());
        assert_eq!(a.action, None);
    }

    #[test]
    fn each_default_trigger_fires_at_its_threshold() {
        let p = BrittlenessPolicy::default();
        let turns = p.evaluate(&Signals {
            turns_since_reset: 50,
            ..quiet()
        });
        assert!(turns.active.contains(Trigger::Turns));
        assert_eq!(turns.action, None, "turns only warn by default");
        assert_eq!(p.plan().stage(Trigger::Turns), Stage::Warn);
        assert_eq!(turns.score, 1.0);
        let at49 = p.evaluate(&Signals {
            turns_since_reset: 49,
            ..quiet()
        });
        assert_eq!(at49.action, None);
        assert!((at49.score - 0.98).abs() < 1e-9);

        let warn = p.evaluate(&Signals {
            context_tokens: 760,
            ..quiet()
        });
        assert!(warn.active.contains(Trigger::ContextWarning));
        assert_eq!(warn.action, None);
        assert!(warn.score < 1.0);
        let compact = p.evaluate(&Signals {
            context_tokens: 850,
            ..quiet()
        });
        assert_eq!(
            compact.action,
            Some((Trigger::ContextTokens, Stage::ClearToolResults))
        );

        let errs = p.evaluate(&Signals {
            consecutive_errors: 3,
            ..quiet()
        });
        assert_eq!(errs.action, Some((Trigger::ConsecutiveErrors, Stage::Summarize)));

        let rate = p.evaluate(&Signals {
            recent_errors: 10,
            calls_seen: 20,
            ..quiet()
        });
        assert!(rate.active.contains(Trigger::ErrorRate));
        assert_eq!(rate.action, None, "error rate only warns by default");
        let too_few = p.evaluate(&Signals {
            recent_errors: 5,
            calls_seen: 5,
            ..quiet()
        });
        assert!(!too_few.active.contains(Trigger::ErrorRate));

        let drift = p.evaluate(&Signals {
            latency_drift: Some(2.5),
            ..quiet()
        });
        assert!(drift.active.contains(Trigger::LatencyDrift));
        assert_eq!(drift.action, None);
    }

    #[test]
    fn the_most_severe_stage_wins_and_forced_triggers_always_act() {
        let p = BrittlenessPolicy::default();
        let a = p.evaluate(&Signals {
            context_tokens: 900,
            consecutive_errors: 3,
            ..quiet()
        });
        assert_eq!(a.action, Some((Trigger::ConsecutiveErrors, Stage::Summarize)));
        let forced = p.evaluate(&Signals {
            forced: Some(Trigger::Requested),
            ..quiet()
        });
        assert_eq!(forced.action, Some((Trigger::Requested, Stage::Summarize)));
    }

    #[test]
    fn all_requires_every_enabled_trigger() {
        let p = BrittlenessPolicy::default()
            .combine(Combine::All)
            .error_rate(None)
            .unwrap()
            .latency_drift(None, 5)
            .unwrap()
            .max_consecutive_errors(None);
        let only_turns = p.evaluate(&Signals {
            turns_since_reset: 60,
            ..quiet()
        });
        assert_eq!(only_turns.action, None);
        let both = p.evaluate(&Signals {
            turns_since_reset: 60,
            context_tokens: 900,
            ..quiet()
        });
        assert_eq!(
            both.action,
            Some((Trigger::ContextTokens, Stage::ClearToolResults))
        );
        let on_turns = p
            .clone()
            .stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize))
            .evaluate(&Signals {
                turns_since_reset: 60,
                context_tokens: 900,
                ..quiet()
            });
        assert_eq!(on_turns.action, Some((Trigger::Turns, Stage::Summarize)));
    }

    #[test]
    fn invalid_configuration_is_rejected() {
        assert!(
            BrittlenessPolicy::default()
                .context_thresholds(Some(1.5), None)
                .is_err()
        );
        assert!(BrittlenessPolicy::default().target_fraction(0.0).is_err());
        assert!(
            BrittlenessPolicy::default()
                .error_rate(Some(ErrorRateRule {
                    threshold: 0.5,
                    window: 65,
                    min_calls: 1
                }))
                .is_err()
        );
        assert!(BrittlenessPolicy::default().latency_drift(Some(0.5), 1).is_err());
    }

    #[test]
    fn error_driven_reset_reasons_are_the_error_triggers() {
        for t in Trigger::ALL {
            assert_eq!(
                mantissa_core::catalog::is_error_driven_reset(t.as_str()),
                matches!(t, Trigger::ConsecutiveErrors | Trigger::ErrorRate),
                "{t}"
            );
        }
    }
}
