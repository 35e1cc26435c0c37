//! Where alerts go: the [`HealthAlertReceiver`] trait and its implementations.
//!
//! A receiver is notified synchronously, from the monitor's tick, of every
//! alert that starts **firing** and every alert that **resolves** (as
//! Alertmanager is; `pending` alerts stay inside the monitor, visible through
//! [`SystemMonitor::active_alerts`](crate::SystemMonitor::active_alerts) and
//! the timeline). `receive_health_alert` must not block: a receiver that does
//! I/O hands the alert to a queue and returns — [`ChannelSink`] (a bounded
//! tokio channel) and [`WebhookSink`] (a bounded queue and a background
//! worker) do exactly that, and count what they drop in
//! `mantissa_alert_sink_dropped_total{sink}`.
//!
//! After each evaluation the monitor also hands every receiver the alerts
//! still firing ([`HealthAlertReceiver::receive_firing_alerts`], a no-op by
//! default): [`WebhookSink`] re-sends them, as Prometheus does, so that
//! Alertmanager does not resolve an alert that still fires.
//!
//! The trait is a plain `fn` rather than an `async fn` on purpose: the monitor
//! never waits for a sink, so a slow sink cannot delay evaluation, and a
//! closure is a receiver.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use mantissa_monitor::{Alert, HealthAlertReceiver};
//!
//! let seen = Arc::new(Mutex::new(Vec::<String>::new()));
//! let receiver = {
//!     let seen = seen.clone();
//!     move |alert: &Alert| seen.lock().unwrap().push(alert.rule.clone())
//! };
//! fn takes(_: impl HealthAlertReceiver) {}
//! takes(receiver);
//! ```

pub mod webhook;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mantissa_core::catalog::{self, labels};
use tokio::sync::mpsc;

use crate::alert::{Alert, AlertState};
use crate::rule::Severity;

pub use webhook::{
    WebhookError, WebhookSink, WebhookSinkBuilder, WebhookStats, alertmanager_alert, alertmanager_payload,
};

/// Receives firing and resolved alerts — the manager agent's
/// `receive_health_alert`. Called on the monitor's task: must return quickly
/// and never block (queue the work instead). See the [module docs](self).
pub trait HealthAlertReceiver: Send + Sync + 'static {
    /// Handles one alert transition.
    fn receive_health_alert(&self, alert: &Alert);

    /// Called after every evaluation (after the transitions of that
    /// evaluation were handed to
    /// [`receive_health_alert`](Self::receive_health_alert)) with every alert
    /// firing at that point, newly firing ones included. Receivers that need
    /// to refresh firing alerts — Alertmanager resolves an alert that is not
    /// re-sent — do it here; the default does nothing. Must not block either.
    fn receive_firing_alerts(&self, firing: &[Alert], evaluation: &Evaluation) {
        let _ = (firing, evaluation);
    }
}

/// When an evaluation ran and how often the monitor evaluates, given to
/// [`HealthAlertReceiver::receive_firing_alerts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evaluation {
    /// The evaluation's wall-clock time (the registry snapshot's), in
    /// milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The monitor's evaluation interval: the next evaluation is due this
    /// long after this one.
    pub interval: Duration,
}

impl Evaluation {
    /// An evaluation at `at_ms` of a monitor that evaluates every `interval`.
    pub fn new(at_ms: u64, interval: Duration) -> Self {
        Self { at_ms, interval }
    }
}

impl<F> HealthAlertReceiver for F
where
    F: Fn(&Alert) + Send + Sync + 'static,
{
    fn receive_health_alert(&self, alert: &Alert) {
        self(alert)
    }
}

impl<T: HealthAlertReceiver + ?Sized> HealthAlertReceiver for Arc<T> {
    fn receive_health_alert(&self, alert: &Alert) {
        (**self).receive_health_alert(alert)
    }

    fn receive_firing_alerts(&self, firing: &[Alert], evaluation: &Evaluation) {
        (**self).receive_firing_alerts(firing, evaluation)
    }
}

pub(crate) fn count_drop(sink: &str, n: u64) {
    metrics::counter!(catalog::ALERT_SINK_DROPPED_TOTAL, labels::SINK => sink.to_owned()).increment(n);
}

/// Logs alerts through `tracing` (target `mantissa::alert`): firing critical
/// alerts at `ERROR`, firing warnings at `WARN`, everything else at `INFO`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl TracingSink {
    /// The sink.
    pub fn new() -> Self {
        Self
    }
}

impl HealthAlertReceiver for TracingSink {
    fn receive_health_alert(&self, a: &Alert) {
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    target: "mantissa::alert",
                    rule = %a.rule,
                    subject_kind = a.subject.kind.as_str(),
                    subject = %a.subject.name,
                    severity = a.severity.as_str(),
                    state = a.state.as_str(),
                    value = a.value,
                    threshold = a.threshold,
                    "{}",
                    a.summary
                )
            };
        }
        match (a.state, a.severity) {
            (AlertState::Firing, Severity::Critical) => log!(error),
            (AlertState::Firing, Severity::Warning) => log!(warn),
            _ => log!(info),
        }
    }
}

/// Sends alerts into a bounded tokio channel, for an in-process consumer
/// (for example a manager agent's task). Never waits: when the channel is
/// full or closed the alert is dropped and counted.
#[derive(Clone)]
pub struct ChannelSink {
    tx: mpsc::Sender<Alert>,
    name: Arc<str>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for ChannelSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSink")
            .field("name", &self.name)
            .field("capacity", &self.tx.max_capacity())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl ChannelSink {
    /// A sink named `channel` with room for `capacity` alerts (at least 1),
    /// and the receiving end.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Alert>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                name: Arc::from("channel"),
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Sets the `sink` label of the drop counter. Defaults to `channel`.
    pub fn named(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Alerts dropped so far (channel full or closed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl HealthAlertReceiver for ChannelSink {
    fn receive_health_alert(&self, alert: &Alert) {
        if self.tx.try_send(alert.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            count_drop(&self.name, 1);
        }
    }
}
