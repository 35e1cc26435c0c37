//! [`WebhookSink`]: posts alerts as Alertmanager-compatible JSON, and its defaults.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Evaluation, HealthAlertReceiver, count_drop};
use crate::alert::{Alert, AlertState, SubjectRef};
use crate::monitor::DEFAULT_INTERVAL;

/// Default capacity of the queue between the monitor and the worker.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Default number of alerts per POST.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Default number of attempts per batch (the first try and 4 retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default delay before the first retry; it doubles per retry.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Default longest delay between retries.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Default timeout of one POST.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between re-sends of a firing alert (Prometheus'
/// `--rules.alert.resend-delay`).
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// A firing alert's `endsAt` is this many re-send intervals (or evaluation
/// intervals, if longer) after it is sent, as Prometheus sets it.
const VALIDITY_FACTOR: u32 = 4;

/// Why a [`WebhookSink`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse.
    #[error("invalid webhook url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// The parser's reason.
        reason: String,
    },
    /// `build` was called outside a tokio runtime.
    #[error("webhook sink needs a tokio runtime")]
    NoRuntime,
    /// The default HTTP client could not be built.
    #[error("cannot build http client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Counters of a [`WebhookSink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Alerts accepted into the queue.
    pub queued: u64,
    /// Alerts delivered (a 2xx answer).
    pub sent: u64,
    /// Alerts dropped: queue full, sink closed, a 4xx answer, or every
    /// attempt failed.
    pub dropped: u64,
    /// POSTs retried after a 5xx, a 429 or a transport error.
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
}

struct Config {
    url: reqwest::Url,
    client: reqwest::Client,
    max_batch: usize,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    generator_url: Option<String>,
    name: Arc<str>,
}

/// One alert on its way out, with the `endsAt` it is sent with.
struct Outgoing {
    alert: Alert,
    ends_at_ms: Option<u64>,
}

/// When a firing alert was last sent, and the `endsAt` it was sent with.
#[derive(Clone, Copy)]
struct Sent {
    at_ms: u64,
    valid_until_ms: u64,
}

/// Builds a [`WebhookSink`]; see [`WebhookSink::builder`].
pub struct WebhookSinkBuilder {
    url: String,
    client: Option<reqwest::Client>,
    queue_capacity: usize,
    max_batch: usize,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
    resend_interval: Duration,
    generator_url: Option<String>,
    name: Arc<str>,
}

impl fmt::Debug for WebhookSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSinkBuilder")
            .field("url", &self.url)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch", &self.max_batch)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .field("resend_interval", &self.resend_interval)
            .field("generator_url", &self.generator_url)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WebhookSinkBuilder {
    /// Room for this many alerts between the monitor and the worker (at
    /// least 1); more are dropped and counted. Defaults to 256.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// At most this many alerts per POST (at least 1). Defaults to 64.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Attempts per batch, the first included (at least 1). Defaults to 5.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Delay before the first retry (doubling per retry) and the longest
    /// delay. Default to 500 ms and 8 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Timeout of one POST, when the sink builds its own client. Defaults to 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often an alert that keeps firing is sent again (checked at each
    /// evaluation of the monitor; zero: at every evaluation). Alertmanager
    /// resolves an alert once its `endsAt` has passed, so a firing alert is
    /// sent with `endsAt` = now + 4 × the longer of this interval and the
    /// monitor's evaluation interval, and re-sent before that. Defaults to
    /// 1 min (as Prometheus).
    pub fn resend_interval(mut self, interval: Duration) -> Self {
        self.resend_interval = interval;
        self
    }

    /// Uses this HTTP client (its own timeouts apply). Defaults to a client
    /// with [`timeout`](Self::timeout).
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The `generatorURL` of every alert (for example the monitor's status
    /// page). Defaults to none.
    pub fn generator_url(mut self, url: impl Into<String>) -> Self {
        self.generator_url = Some(url.into());
        self
    }

    /// The `sink` label of `mantissa_alert_sink_dropped_total`. Defaults to `webhook`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the URL and starts the worker task on the current tokio runtime.
    pub fn build(self) -> Result<WebhookSink, WebhookError> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| WebhookError::InvalidUrl {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .build()
                .map_err(WebhookError::Client)?,
        };
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let counters = Arc::new(Counters::default());
        let cfg = Config {
            url,
            client,
            max_batch: self.max_batch,
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            generator_url: self.generator_url,
            name: self.name.clone(),
        };
        let worker = runtime.spawn(run(rx, cfg, counters.clone()));
        Ok(WebhookSink {
            shared: Arc::new(Shared {
                tx: Mutex::new(Some(tx)),
                worker: Mutex::new(Some(worker)),
                counters,
                name: self.name,
                resend_ms: millis(self.resend_interval),
                firing: Mutex::new(Firing {
                    eval_interval_ms: millis(DEFAULT_INTERVAL),
                    sent: HashMap::new(),
                }),
            }),
        })
    }
}

struct Shared {
    tx: Mutex<Option<mpsc::Sender<Outgoing>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    name: Arc<str>,
    resend_ms: u64,
    firing: Mutex<Firing>,
}

/// The firing alerts the sink has sent, by rule and subject.
struct Firing {
    /// The monitor's evaluation interval, as last reported (the monitor's
    /// default until the first report).
    eval_interval_ms: u64,
    sent: HashMap<(String, SubjectRef), Sent>,
}

impl Firing {
    /// How long a firing alert sent now stays valid at Alertmanager.
    fn validity_ms(&self, resend_ms: u64) -> u64 {
        resend_ms
            .max(self.eval_interval_ms)
            .saturating_mul(u64::from(VALIDITY_FACTOR))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn key(a: &Alert) -> (String, SubjectRef) {
    (a.rule.clone(), a.subject.clone())
}

/// Posts firing and resolved alerts to an Alertmanager-compatible webhook
/// (`POST /api/v2/alerts` of Alertmanager itself, or any receiver of that
/// JSON): an array of `{labels, annotations, startsAt, endsAt, generatorURL?}`
/// (see [`alertmanager_alert`]).
///
/// As Prometheus does, a firing alert is sent with `endsAt` in the future
/// (now + 4 × the longer of the [re-send
/// interval](WebhookSinkBuilder::resend_interval) and the monitor's
/// evaluation interval) and re-sent, at the monitor's evaluations
/// ([`receive_firing_alerts`](HealthAlertReceiver::receive_firing_alerts)),
/// once a re-send interval has passed; a resolved alert is sent with `endsAt`
/// at its resolution. Alertmanager thus keeps an alert active exactly while
/// it fires here, and resolves it on its own if the monitor stops.
///
/// [`receive_health_alert`](HealthAlertReceiver::receive_health_alert) only
/// pushes onto a bounded queue, never waiting: when the queue is full the
/// alert is dropped and counted (`mantissa_alert_sink_dropped_total{sink}`
/// and [`stats`](Self::stats)). A background worker posts batches and retries
/// 5xx, 429 and transport errors with exponential backoff; a 4xx other than
/// 429 drops the batch (the receiver rejected it; retrying would not help).
///
/// ```
/// use std::time::Duration;
/// use mantissa_monitor::WebhookSink;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Defaults: queue 256, batches of 64, 5 attempts, backoff 500 ms doubling to 8 s, 10 s timeout.
/// let sink = WebhookSink::builder("http://127.0.0.1:9093/api/v2/alerts").build()?;
/// // Customised.
/// let custom = WebhookSink::builder("http://127.0.0.1:9093/api/v2/alerts")
///     .queue_capacity(32)
///     .max_attempts(3)
///     .backoff(Duration::from_millis(100), Duration::from_secs(2))
///     .generator_url("http://monitor.local/alerts")
///     .build()?;
/// assert_eq!(custom.stats().queued, 0);
/// sink.close().await;
/// custom.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WebhookSink {
    shared: Arc<Shared>,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl WebhookSink {
    /// A builder for a sink posting to `url`.
    pub fn builder(url: impl Into<String>) -> WebhookSinkBuilder {
        WebhookSinkBuilder {
            url: url.into(),
            client: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch: DEFAULT_MAX_BATCH,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            timeout: DEFAULT_TIMEOUT,
            resend_interval: DEFAULT_RESEND_INTERVAL,
            generator_url: None,
            name: Arc::from("webhook"),
        }
    }

    /// The sink's counters.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.shared.counters;
        WebhookStats {
            queued: c.queued.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting alerts (later ones are dropped and counted), lets the
    /// worker deliver what is queued (with its retries), and waits for it.
    pub async fn close(&self) {
        drop(self.shared.tx.lock().take());
        let worker = self.shared.worker.lock().take();
        if let Some(w) = worker {
            let _ = w.await;
        }
    }

    fn drop_one(&self) {
        self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        count_drop(&self.shared.name, 1);
    }

    fn push(&self, alert: &Alert, ends_at_ms: Option<u64>) {
        let out = Outgoing {
            alert: alert.clone(),
            ends_at_ms,
        };
        let pushed = match &*self.shared.tx.lock() {
            Some(tx) => tx.try_send(out).is_ok(),
            None => false,
        };
        if pushed {
            self.shared.counters.queued.fetch_add(1, Ordering::Relaxed);
        } else {
            self.drop_one();
        }
    }
}

impl HealthAlertReceiver for WebhookSink {
    fn receive_health_alert(&self, alert: &Alert) {
        match alert.state {
            AlertState::Firing => {
                let at_ms = alert.firing_since_ms.unwrap_or(alert.active_since_ms);
                let valid_until_ms = {
                    let mut firing = self.shared.firing.lock();
                    let valid_until_ms = at_ms.saturating_add(firing.validity_ms(self.shared.resend_ms));
                    firing.sent.insert(
                        key(alert),
                        Sent {
                            at_ms,
                            valid_until_ms,
                        },
                    );
                    valid_until_ms
                };
                self.push(alert, Some(valid_until_ms));
            }
            AlertState::Resolved => {
                self.shared.firing.lock().sent.remove(&key(alert));
                self.push(alert, alert.resolved_at_ms);
            }
            _ => {}
        }
    }

    fn receive_firing_alerts(&self, alerts: &[Alert], evaluation: &Evaluation) {
        let now = evaluation.at_ms;
        let due: Vec<(&Alert, u64)> = {
            let mut firing = self.shared.firing.lock();
            firing.eval_interval_ms = millis(evaluation.interval);
            let validity = firing.validity_ms(self.shared.resend_ms);
            let next_eval = now.saturating_add(firing.eval_interval_ms);
            let resend_ms = self.shared.resend_ms.max(1);
            let mut due = Vec::new();
            let mut still = HashMap::with_capacity(alerts.len());
            for a in alerts.iter().filter(|a| a.is_firing()) {
                let k = key(a);
                let mut sent = firing.sent.get(&k).copied();
                // Re-send once a re-send interval has passed, or sooner if
                // the last `endsAt` would pass before the next evaluation
                // (sent before the evaluation interval was known).
                let is_due = sent.is_none_or(|s| {
                    now.saturating_sub(s.at_ms) >= resend_ms
                        || (now > s.at_ms
                            && s.valid_until_ms <= next_eval.saturating_add(firing.eval_interval_ms))
                });
                if is_due {
                    let s = Sent {
                        at_ms: now,
                        valid_until_ms: now.saturating_add(validity),
                    };
                    due.push((a, s.valid_until_ms));
                    sent = Some(s);
                }
                if let Some(s) = sent {
                    still.insert(k, s);
                }
            }
            // Alerts no longer firing are forgotten (their resolution was sent).
            firing.sent = still;
            due
        };
        for (a, valid_until_ms) in due {
            self.push(a, Some(valid_until_ms));
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Outgoing>, cfg: Config, counters: Arc<Counters>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < cfg.max_batch {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let body = Value::Array(
            batch
                .iter()
                .map(|o| alertmanager_alert(&o.alert, o.ends_at_ms, cfg.generator_url.as_deref()))
                .collect(),
        );
        let mut delay = cfg.initial_backoff;
        let mut attempt = 1;
        loop {
            let retryable = match cfg.client.post(cfg.url.clone()).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    counters.sent.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Ok(resp) => {
                    let status = resp.status();
                    tracing::warn!(target: "mantissa::alert", sink = %cfg.name, %status, attempt, "webhook answered with an error");
                    status.is_server_error() || status.as_u16() == 429
                }
                Err(error) => {
                    tracing::warn!(target: "mantissa::alert", sink = %cfg.name, %error, attempt, "webhook post failed");
                    true
                }
            };
            if !retryable || attempt >= cfg.max_attempts {
                counters.dropped.fetch_add(n, Ordering::Relaxed);
                count_drop(&cfg.name, n);
                break;
            }
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(cfg.max_backoff);
            attempt += 1;
        }
    }
}

/// The Alertmanager JSON for `alerts`: an array of [`alertmanager_alert`]s,
/// resolved alerts with `endsAt` at their resolution, firing ones without
/// `endsAt` (Alertmanager then resolves them after its `resolve_timeout`
/// unless they are re-sent; [`WebhookSink`] sends firing alerts with an
/// `endsAt` in the future instead).
pub fn alertmanager_payload(alerts: &[Alert], generator_url: Option<&str>) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                alertmanager_alert(
                    a,
                    a.resolved_at_ms.filter(|_| a.state == AlertState::Resolved),
                    generator_url,
                )
            })
            .collect(),
    )
}

/// The Alertmanager JSON of one alert: `{"labels": {"alertname", "severity",
/// "subject_kind", "subject", …rule labels}, "annotations": {"summary",
/// "description"}, "startsAt", "endsAt" (when `ends_at_ms` is given),
/// "generatorURL" (when given)}`, times in RFC 3339.
pub fn alertmanager_alert(a: &Alert, ends_at_ms: Option<u64>, generator_url: Option<&str>) -> Value {
    let mut labels: BTreeMap<&str, &str> = a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    labels.insert("alertname", &a.rule);
    labels.insert("severity", a.severity.as_str());
    labels.insert("subject_kind", a.subject.kind.as_str());
    labels.insert("subject", &a.subject.name);
    let mut description = format!(
        "{} {} on {}: value {} (threshold {})",
        a.rule,
        a.state,
        a.subject,
        fmt_num(a.value),
        fmt_num(a.threshold)
    );
    for act in &a.actions {
        description.push_str(&format!(
            "; {} {} {}",
            act.action,
            act.target,
            if act.ok { "done" } else { "failed" }
        ));
    }
    let mut obj = json!({
        "labels": labels,
        "annotations": {"summary": a.summary, "description": description},
        "startsAt": rfc3339(a.firing_since_ms.unwrap_or(a.active_since_ms)),
    });
    if let Some(end) = ends_at_ms {
        obj["endsAt"] = Value::String(rfc3339(end));
    }
    if let Some(g) = generator_url {
        obj["generatorURL"] = Value::String(g.to_owned());
    }
    obj
}

fn fmt_num(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_764_110_096_000), "2025-11-25T22:34:56.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn numbers_are_trimmed() {
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.123_456), "0.1235");
    }
}
