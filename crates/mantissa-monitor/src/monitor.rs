//! [`SystemMonitor`]: evaluates alert rules against [`HealthRegistry`]
//! snapshots, runs the alert lifecycle, executes actions and notifies sinks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mantissa_core::catalog::{self, labels};
use mantissa_core::control::{ModelControl, SessionControl, TierControl};
use mantissa_core::{AgentName, ConfigError, EventKind, ModelId, SessionId, Tier, unix_millis};
use mantissa_health::{HealthRegistry, HealthSnapshot};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::alert::{ActionRecord, Alert, AlertState, SubjectRef};
use crate::rule::{Action, Rule, RuleSet, Severity, Signal, SubjectKind, default_rules};
use crate::sink::{Evaluation, HealthAlertReceiver};

/// Default evaluation interval of the background task.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default number of transitions the timeline keeps.
pub const DEFAULT_TIMELINE_CAPACITY: usize = 256;

struct Entry {
    alert: Alert,
    pending_since: Instant,
    clear_since: Option<Instant>,
    seen: u64,
}

struct State {
    /// Per rule: active alerts by subject name (a rule watches one kind).
    active: Vec<HashMap<String, Entry>>,
    tick: u64,
    timeline: VecDeque<Alert>,
}

struct Inner {
    registry: HealthRegistry,
    rules: Vec<Rule>,
    receivers: Vec<Arc<dyn HealthAlertReceiver>>,
    models: Option<Arc<dyn ModelControl>>,
    sessions: Option<Arc<dyn SessionControl>>,
    tiers: Option<Arc<dyn TierControl>>,
    interval: Duration,
    timeline_capacity: usize,
    publish_scores: bool,
    started: Instant,
    state: Mutex<State>,
}

/// The SystemMonitor: turns health windows into alerts. A cheap `Clone`
/// handle; see the [crate docs](crate) for the lifecycle and an example.
#[derive(Clone)]
pub struct SystemMonitor {
    inner: Arc<Inner>,
}

impl fmt::Debug for SystemMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemMonitor")
            .field("rules", &self.inner.rules.len())
            .field("receivers", &self.inner.receivers.len())
            .field("interval", &self.inner.interval)
            .field("model_control", &self.inner.models.is_some())
            .field("session_control", &self.inner.sessions.is_some())
            .field("tier_control", &self.inner.tiers.is_some())
            .finish()
    }
}

/// Builds a [`SystemMonitor`]; see [`SystemMonitor::builder`].
pub struct SystemMonitorBuilder {
    registry: HealthRegistry,
    rules: Vec<Rule>,
    receivers: Vec<Arc<dyn HealthAlertReceiver>>,
    models: Option<Arc<dyn ModelControl>>,
    sessions: Option<Arc<dyn SessionControl>>,
    tiers: Option<Arc<dyn TierControl>>,
    interval: Duration,
    timeline_capacity: usize,
    publish_scores: bool,
}

impl fmt::Debug for SystemMonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemMonitorBuilder")
            .field("rules", &self.rules)
            .field("receivers", &self.receivers.len())
            .field("interval", &self.interval)
            .field("timeline_capacity", &self.timeline_capacity)
            .field("publish_scores", &self.publish_scores)
            .finish_non_exhaustive()
    }
}

impl SystemMonitorBuilder {
    /// Adds a rule. Defaults to no rules (see [`default_rules`](Self::default_rules)).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds rules.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// Adds the rules of a [`RuleSet`] (for example loaded from TOML).
    pub fn rule_set(self, set: RuleSet) -> Self {
        self.rules(set.rules)
    }

    /// Adds the built-in [`default_rules`](crate::rule::default_rules).
    pub fn default_rules(self) -> Self {
        self.rules(default_rules())
    }

    /// Sets how often the background task evaluates. Defaults to 15 s, a
    /// common Prometheus evaluation interval: finer than the registry's 5 s
    /// slots buys nothing, coarser delays alerts.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Adds a receiver of firing and resolved alerts. Defaults to none.
    pub fn receiver(mut self, receiver: impl HealthAlertReceiver) -> Self {
        self.receivers.push(Arc::new(receiver));
        self
    }

    /// Adds a shared receiver (for example the manager agent). Defaults to none.
    pub fn shared_receiver(mut self, receiver: Arc<dyn HealthAlertReceiver>) -> Self {
        self.receivers.push(receiver);
        self
    }

    /// Where `cool_down` actions go (the router). Defaults to none; a rule
    /// with a `cool_down` action then fails to build.
    pub fn model_control(mut self, control: Arc<dyn ModelControl>) -> Self {
        self.models = Some(control);
        self
    }

    /// Where `reset_sessions` actions go (the reset layer's session store).
    /// Defaults to none; a rule with a `reset_sessions` action then fails to build.
    pub fn session_control(mut self, control: Arc<dyn SessionControl>) -> Self {
        self.sessions = Some(control);
        self
    }

    /// Where `set_tier` actions go (the triage layer). Defaults to none; a
    /// rule with a `set_tier` action then fails to build.
    pub fn tier_control(mut self, control: Arc<dyn TierControl>) -> Self {
        self.tiers = Some(control);
        self
    }

    /// How many transitions [`SystemMonitor::timeline`] keeps. Defaults to 256.
    pub fn timeline_capacity(mut self, n: usize) -> Self {
        self.timeline_capacity = n;
        self
    }

    /// Whether each [`tick`](SystemMonitor::tick) also calls
    /// [`HealthRegistry::publish_scores`]. Defaults to `true`.
    pub fn publish_scores(mut self, on: bool) -> Self {
        self.publish_scores = on;
        self
    }

    /// Validates the rules (unique names, fields, and that each action has
    /// its control) and builds the monitor.
    pub fn build(self) -> Result<SystemMonitor, ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::new("interval", "must be longer than zero"));
        }
        let set = RuleSet { rules: self.rules };
        set.validate()?;
        for (i, rule) in set.rules.iter().enumerate() {
            let missing = match &rule.action {
                Some(Action::CoolDown { .. }) if self.models.is_none() => Some("model_control"),
                Some(Action::ResetSessions { .. }) if self.sessions.is_none() => Some("session_control"),
                Some(Action::SetTier { .. }) if self.tiers.is_none() => Some("tier_control"),
                _ => None,
            };
            if let Some(control) = missing {
                return Err(ConfigError::new(
                    format!("rule[{i}].action"),
                    format!("needs a control: call SystemMonitorBuilder::{control}"),
                ));
            }
        }
        let n = set.rules.len();
        Ok(SystemMonitor {
            inner: Arc::new(Inner {
                registry: self.registry,
                rules: set.rules,
                receivers: self.receivers,
                models: self.models,
                sessions: self.sessions,
                tiers: self.tiers,
                interval: self.interval,
                timeline_capacity: self.timeline_capacity,
                publish_scores: self.publish_scores,
                started: Instant::now(),
                state: Mutex::new(State {
                    active: (0..n).map(|_| HashMap::new()).collect(),
                    tick: 0,
                    timeline: VecDeque::new(),
                }),
            }),
        })
    }
}

/// Stops the monitor's background task: call [`shutdown`](Self::shutdown)
/// to stop and wait, or drop the handle to stop it without waiting.
#[derive(Debug)]
pub struct MonitorHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MonitorHandle {
    /// Stops the task and waits until it has finished its current tick.
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

/// What one rule evaluation does to an active alert.
enum Step {
    Keep,
    Remove,
}

impl SystemMonitor {
    /// A builder reading `registry`, with no rules, no receivers, no
    /// controls, a 15 s interval.
    pub fn builder(registry: HealthRegistry) -> SystemMonitorBuilder {
        SystemMonitorBuilder {
            registry,
            rules: Vec::new(),
            receivers: Vec::new(),
            models: None,
            sessions: None,
            tiers: None,
            interval: DEFAULT_INTERVAL,
            timeline_capacity: DEFAULT_TIMELINE_CAPACITY,
            publish_scores: true,
        }
    }

    /// The registry the monitor reads.
    pub fn registry(&self) -> &HealthRegistry {
        &self.inner.registry
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    /// The background task's interval.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// Starts the background task on the current tokio runtime: one
    /// [`tick`](Self::tick) right away, then one per interval (a late tick is
    /// delayed, not bunched). Stops when the handle is shut down or dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn(&self) -> MonitorHandle {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let monitor = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(monitor.inner.interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {
                        monitor.tick();
                    }
                }
            }
            tracing::debug!(target: "mantissa::monitor", "system monitor stopped");
        });
        MonitorHandle {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// One evaluation now: publishes the health scores (unless turned off),
    /// takes a registry snapshot and evaluates every rule. Returns the
    /// transitions (pending, firing, resolved, lapsed) of this tick.
    pub fn tick(&self) -> Vec<Alert> {
        if self.inner.publish_scores {
            self.inner.registry.publish_scores();
        }
        self.evaluate_once(Instant::now())
    }

    /// Takes a registry snapshot and evaluates every rule at `now` (the
    /// lifecycle clock). Returns the transitions.
    pub fn evaluate_once(&self, now: Instant) -> Vec<Alert> {
        let snapshot = self.inner.registry.snapshot();
        self.evaluate(&snapshot, now)
    }

    /// Evaluates every rule against `snapshot` at `now`: advances the alert
    /// lifecycle, executes the actions of alerts that start firing, records
    /// the transitions in the timeline and the metrics, notifies the
    /// receivers of firing and resolved alerts, then hands them every alert
    /// still firing ([`HealthAlertReceiver::receive_firing_alerts`]).
    /// Returns the transitions.
    pub fn evaluate(&self, snapshot: &HealthSnapshot, now: Instant) -> Vec<Alert> {
        let inner = &*self.inner;
        let wall = snapshot.taken_at_ms;
        let mut transitions = Vec::new();
        let mut firing_counts = Vec::with_capacity(inner.rules.len());
        {
            let mut st = inner.state.lock();
            st.tick += 1;
            let tick = st.tick;
            for (ri, rule) in inner.rules.iter().enumerate() {
                let active = &mut st.active[ri];
                let subjects = match rule.subject.kind {
                    SubjectKind::Agent => &snapshot.agents,
                    SubjectKind::Model => &snapshot.models,
                    SubjectKind::Tool => &snapshot.tools,
                };
                // Only subjects that meet the condition touch the alert map;
                // active alerts not met this tick are swept below.
                for (name, h) in subjects {
                    if !rule.subject.matches(name) {
                        continue;
                    }
                    let Some(value) = rule.condition.value(h) else {
                        continue;
                    };
                    if rule.condition.is_met(value) {
                        observe(rule, active, name, value, now, wall, tick, &mut transitions);
                    }
                }
                let quiet = now.saturating_duration_since(inner.started).as_secs_f64();
                let never_seen = |name: &str| -> Option<f64> {
                    match rule.condition.signal() {
                        Signal::Silence { expect }
                            if expect.iter().any(|e| e == name) && !subjects.contains_key(name) =>
                        {
                            Some(quiet)
                        }
                        _ => None,
                    }
                };
                if let Signal::Silence { expect } = rule.condition.signal()
                    && rule.condition.is_met(quiet)
                {
                    for name in expect {
                        if rule.subject.matches(name) && !subjects.contains_key(name) {
                            observe(rule, active, name, quiet, now, wall, tick, &mut transitions);
                        }
                    }
                }
                // Active alerts whose condition is not met this tick (or that
                // have no verdict): a pending alert lapses, a firing one
                // clears once back past the hysteresis bound.
                if active.values().any(|e| e.seen != tick) {
                    active.retain(|name, e| {
                        if e.seen == tick {
                            return true;
                        }
                        let value = match subjects.get(name) {
                            Some(h) if rule.subject.matches(name) => rule.condition.value(h),
                            Some(_) => None,
                            None => never_seen(name),
                        };
                        matches!(
                            advance(rule, e, value, false, now, wall, &mut transitions),
                            Step::Keep
                        )
                    });
                }
                firing_counts.push(
                    active
                        .values()
                        .filter(|e| e.alert.state == AlertState::Firing)
                        .count(),
                );
            }
        }

        for (rule, n) in inner.rules.iter().zip(&firing_counts) {
            metrics::gauge!(
                catalog::ALERTS_FIRING,
                labels::RULE => rule.name.clone(),
                labels::SEVERITY => rule.severity.as_str(),
            )
            .set(*n as f64);
        }
        if transitions.is_empty() {
            self.refresh_firing(wall);
            return transitions;
        }

        for alert in &mut transitions {
            let Some(rule) = inner.rules.iter().find(|r| r.name == alert.rule) else {
                continue;
            };
            let records = self.act(rule, alert);
            if !records.is_empty() {
                alert.actions.extend(records);
                if alert.state == AlertState::Firing
                    && let Some(ri) = inner.rules.iter().position(|r| r.name == alert.rule)
                    && let Some(e) = inner.state.lock().active[ri].get_mut(&alert.subject.name)
                {
                    e.alert.actions = alert.actions.clone();
                }
            }
            metrics::counter!(
                catalog::ALERTS_TOTAL,
                labels::RULE => alert.rule.clone(),
                labels::SEVERITY => alert.severity.as_str(),
                labels::STATE => alert.state.as_str(),
            )
            .increment(1);
            tracing::debug!(target: "mantissa::monitor", %alert, "alert transition");
        }
        {
            let mut st = inner.state.lock();
            for alert in &transitions {
                if inner.timeline_capacity == 0 {
                    break;
                }
                if st.timeline.len() >= inner.timeline_capacity {
                    st.timeline.pop_front();
                }
                st.timeline.push_back(alert.clone());
            }
        }
        for alert in transitions
            .iter()
            .filter(|a| matches!(a.state, AlertState::Firing | AlertState::Resolved))
        {
            for r in &inner.receivers {
                r.receive_health_alert(alert);
            }
        }
        self.refresh_firing(wall);
        transitions
    }

    /// Hands the receivers every alert firing after an evaluation at `wall`
    /// (so that a webhook can re-send them).
    fn refresh_firing(&self, wall: u64) {
        let inner = &*self.inner;
        if inner.receivers.is_empty() {
            return;
        }
        let firing = self.firing_alerts();
        let evaluation = Evaluation::new(wall, inner.interval);
        for r in &inner.receivers {
            r.receive_firing_alerts(&firing, &evaluation);
        }
    }

    /// Executes the rule's action for a transition to firing (or its undo on
    /// resolution).
    fn act(&self, rule: &Rule, alert: &Alert) -> Vec<ActionRecord> {
        let inner = &*self.inner;
        let Some(action) = &rule.action else {
            return Vec::new();
        };
        let at_ms = unix_millis(std::time::SystemTime::now());
        let record = |action: &str, target: String, ok: bool| ActionRecord {
            action: action.to_owned(),
            target,
            ok,
            at_ms,
        };
        let name = &alert.subject.name;
        match (alert.state, action) {
            (AlertState::Firing, Action::CoolDown { duration, .. }) => {
                let ok = inner
                    .models
                    .as_ref()
                    .is_some_and(|m| m.cool_down(&ModelId::new(name), *duration));
                vec![record("cool_down", name.clone(), ok)]
            }
            (
                AlertState::Resolved,
                Action::CoolDown {
                    restore_on_resolve: true,
                    ..
                },
            ) => {
                let ok = inner
                    .models
                    .as_ref()
                    .is_some_and(|m| m.restore(&ModelId::new(name)));
                vec![record("restore", name.clone(), ok)]
            }
            (
                AlertState::Firing,
                Action::ResetSessions {
                    sessions,
                    from_journal,
                },
            ) => {
                let mut targets: Vec<String> = sessions.clone();
                if *from_journal > 0 {
                    let mut seen: HashSet<String> = targets.iter().cloned().collect();
                    for e in inner.registry.recent(*from_journal).iter().rev() {
                        let relevant = match alert.subject.kind {
                            SubjectKind::Agent => e.agent.as_str() == name,
                            SubjectKind::Model => e.kind == EventKind::Llm && &*e.subject == name,
                            SubjectKind::Tool => e.kind == EventKind::Tool && &*e.subject == name,
                        };
                        if relevant && seen.insert(e.session.as_str().to_owned()) {
                            targets.push(e.session.as_str().to_owned());
                        }
                    }
                }
                let reason = format!("alert {}", rule.name);
                targets
                    .into_iter()
                    .map(|s| {
                        let ok = inner
                            .sessions
                            .as_ref()
                            .is_some_and(|c| c.request_reset(&SessionId::new(&s), &reason));
                        record("reset_session", s, ok)
                    })
                    .collect()
            }
            (AlertState::Firing, Action::SetTier { tier, .. }) => {
                let ok = match &inner.tiers {
                    Some(t) => {
                        t.set_agent_tier(&AgentName::new(name), Some(Tier::new(tier)));
                        true
                    }
                    None => false,
                };
                vec![record("set_tier", format!("{name}={tier}"), ok)]
            }
            (
                AlertState::Resolved,
                Action::SetTier {
                    restore_on_resolve: true,
                    ..
                },
            ) => {
                let ok = match &inner.tiers {
                    Some(t) => {
                        t.set_agent_tier(&AgentName::new(name), None);
                        true
                    }
                    None => false,
                };
                vec![record("clear_tier", name.clone(), ok)]
            }
            _ => Vec::new(),
        }
    }

    /// Pending and firing alerts, by rule order then subject.
    pub fn active_alerts(&self) -> Vec<Alert> {
        let st = self.inner.state.lock();
        let mut out = Vec::new();
        for (rule, map) in self.inner.rules.iter().zip(&st.active) {
            let mut v: Vec<Alert> = map
                .values()
                .map(|e| {
                    // Summaries are written on transitions; refresh the value.
                    let mut a = e.alert.clone();
                    a.summary = summary(rule, &a.subject, Some(a.value), a.state);
                    a
                })
                .collect();
            v.sort_by(|a, b| a.subject.cmp(&b.subject));
            out.extend(v);
        }
        out
    }

    /// Firing alerts.
    pub fn firing_alerts(&self) -> Vec<Alert> {
        let mut v = self.active_alerts();
        v.retain(Alert::is_firing);
        v
    }

    /// Active alerts of at least `severity`.
    pub fn alerts_at_least(&self, severity: Severity) -> Vec<Alert> {
        let mut v = self.active_alerts();
        v.retain(|a| a.severity >= severity);
        v
    }

    /// The latest transitions (pending, firing, resolved, lapsed), oldest first, with
    /// the actions executed for them.
    pub fn timeline(&self) -> Vec<Alert> {
        self.inner.state.lock().timeline.iter().cloned().collect()
    }
}

/// Applies an observation that meets the condition to the rule's active alerts.
#[allow(clippy::too_many_arguments)]
fn observe(
    rule: &Rule,
    active: &mut HashMap<String, Entry>,
    name: &str,
    value: f64,
    now: Instant,
    wall: u64,
    tick: u64,
    out: &mut Vec<Alert>,
) {
    if let Some(e) = active.get_mut(name) {
        e.seen = tick;
        if let Step::Remove = advance(rule, e, Some(value), true, now, wall, out) {
            active.remove(name);
        }
        return;
    }
    let subject = SubjectRef::new(rule.subject.kind, name);
    let mut alert = Alert {
        rule: rule.name.clone(),
        severity: rule.severity,
        state: AlertState::Pending,
        value,
        threshold: rule.condition.threshold(),
        active_since_ms: wall,
        firing_since_ms: None,
        resolved_at_ms: None,
        labels: rule.labels.clone(),
        summary: String::new(),
        subject,
        actions: Vec::new(),
    };
    if rule.for_duration.is_zero() {
        alert.state = AlertState::Firing;
        alert.firing_since_ms = Some(wall);
    }
    alert.summary = summary(rule, &alert.subject, Some(value), alert.state);
    out.push(alert.clone());
    active.insert(
        name.to_owned(),
        Entry {
            alert,
            pending_since: now,
            clear_since: None,
            seen: tick,
        },
    );
}

/// Advances one active alert given this tick's value (`None`: no verdict).
fn advance(
    rule: &Rule,
    e: &mut Entry,
    value: Option<f64>,
    met: bool,
    now: Instant,
    wall: u64,
    out: &mut Vec<Alert>,
) -> Step {
    match e.alert.state {
        AlertState::Pending => {
            if !met {
                // The condition must hold for the whole `for` duration. The
                // timeline gets a closing entry.
                if let Some(v) = value {
                    e.alert.value = v;
                }
                e.alert.state = AlertState::Lapsed;
                e.alert.resolved_at_ms = Some(wall);
                e.alert.summary = summary(rule, &e.alert.subject, value, AlertState::Lapsed);
                out.push(e.alert.clone());
                return Step::Remove;
            }
            if let Some(v) = value {
                e.alert.value = v;
            }
            if now.saturating_duration_since(e.pending_since) >= rule.for_duration {
                e.alert.state = AlertState::Firing;
                e.alert.firing_since_ms = Some(wall);
                e.alert.summary = summary(rule, &e.alert.subject, Some(e.alert.value), AlertState::Firing);
                out.push(e.alert.clone());
            }
            Step::Keep
        }
        AlertState::Firing => {
            if let Some(v) = value {
                e.alert.value = v;
            }
            let clear = value.is_none_or(|v| rule.condition.is_clear(v, rule.hysteresis));
            if !clear {
                e.clear_since = None;
                return Step::Keep;
            }
            let since = *e.clear_since.get_or_insert(now);
            if now.saturating_duration_since(since) < rule.keep_firing_for {
                return Step::Keep;
            }
            e.alert.state = AlertState::Resolved;
            e.alert.resolved_at_ms = Some(wall);
            // Described by the value at resolution (or its absence), not
            // the last value seen past the threshold.
            e.alert.summary = summary(rule, &e.alert.subject, value, AlertState::Resolved);
            out.push(e.alert.clone());
            Step::Remove
        }
        AlertState::Resolved | AlertState::Lapsed => Step::Remove,
    }
}

/// One line for humans: the condition described at `value` (`None`: no
/// verdict, described as such).
fn summary(rule: &Rule, subject: &SubjectRef, value: Option<f64>, state: AlertState) -> String {
    let c = &rule.condition;
    let what = match value {
        Some(v) if !v.is_nan() => c.describe(v),
        _ => c.describe_no_verdict(),
    };
    match state {
        AlertState::Resolved => format!(
            "{subject} recovered: {what} (fired at {})",
            c.describe_threshold()
        ),
        AlertState::Lapsed => format!(
            "{subject} no longer pending: {what} (pending at {})",
            c.describe_threshold()
        ),
        _ => format!("{subject}: {what} ({})", c.describe_threshold()),
    }
}
