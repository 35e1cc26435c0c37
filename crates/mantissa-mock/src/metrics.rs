//! A recording `metrics` recorder for tests: captures what the mantissa
//! layers record through the `metrics` macros and held handles, so a test can
//! assert a counter, a gauge or a histogram's samples by name and labels.
//! The `metrics` counterpart of [`SpanCapture`](crate::trace::SpanCapture).
//!
//! Built on `metrics_util`'s `DebuggingRecorder`, installed as the *local*
//! recorder of a scope (`metrics::with_local_recorder`), never globally, so
//! tests of one binary do not see each other's metrics. A local recorder is
//! per thread: record on a current-thread runtime inside
//! [`MetricsCapture::in_scope`] (`capture.in_scope(|| rt.block_on(test))`).
//! Metric handles bind to the recorder current when they are created, so
//! build the layer inside the scope too.
//!
//! [`MetricsCapture::snapshot`] reads and **resets** what was recorded since
//! the last snapshot (counters and gauges read 0, histograms empty until
//! recorded again), as `DebuggingRecorder`'s snapshots do.
//!
//! ```
//! use mantissa_mock::metrics::MetricsCapture;
//!
//! let capture = MetricsCapture::new();
//! capture.in_scope(|| {
//!     metrics::counter!("calls_total", "agent" => "trader", "outcome" => "ok").increment(2);
//!     metrics::counter!("calls_total", "agent" => "trader", "outcome" => "error").increment(1);
//!     metrics::gauge!("in_flight").set(3.0);
//!     metrics::histogram!("latency_seconds", "agent" => "trader").record(0.25);
//! });
//! let m = capture.snapshot();
//! assert_eq!(m.counter("calls_total", &[("agent", "trader")]), Some(3));
//! assert_eq!(m.counter("calls_total", &[("outcome", "error")]), Some(1));
//! assert_eq!(m.gauge("in_flight", &[]), Some(3.0));
//! assert_eq!(m.histogram("latency_seconds", &[("agent", "trader")]), vec![0.25]);
//! assert_eq!(m.histogram_count("latency_seconds", &[]), 1);
//! assert_eq!(m.counter("missing_total", &[]), None);
//! ```

use std::fmt;
use std::sync::Arc;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A `metrics` recorder that keeps everything recorded in its scopes. Cheap
/// to clone; clones share the record.
#[derive(Clone)]
pub struct MetricsCapture {
    recorder: Arc<DebuggingRecorder>,
    snapshotter: Snapshotter,
}

impl fmt::Debug for MetricsCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsCapture").finish_non_exhaustive()
    }
}

impl Default for MetricsCapture {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsCapture {
    /// An empty capture.
    pub fn new() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        Self {
            recorder: Arc::new(recorder),
            snapshotter,
        }
    }

    /// Runs `f` with this capture as the thread's `metrics` recorder.
    pub fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// What was recorded since the last snapshot (and resets it).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let series = self
            .snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let (kind, key) = key.into_parts();
                Series {
                    kind,
                    name: key.name().to_owned(),
                    labels: key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect(),
                    value: match value {
                        DebugValue::Counter(c) => Value::Counter(c),
                        DebugValue::Gauge(g) => Value::Gauge(g.into_inner()),
                        DebugValue::Histogram(h) => {
                            Value::Histogram(h.into_iter().map(|v| v.into_inner()).collect())
                        }
                    },
                }
            })
            .collect();
        MetricsSnapshot { series }
    }
}

/// One recorded series: a metric name with one set of labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    kind: MetricKind,
    /// The metric's name.
    pub name: String,
    /// Its labels, in the order they were given.
    pub labels: Vec<(String, String)>,
    /// What was recorded.
    pub value: Value,
}

impl Series {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the series has every `(key, value)` pair of `labels`.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A recorded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's increase.
    Counter(u64),
    /// A gauge's value.
    Gauge(f64),
    /// A histogram's samples, in recording order.
    Histogram(Vec<f64>),
}

/// What a [`MetricsCapture`] recorded, with readers by name and labels.
///
/// The readers match every series of the name that has *at least* the given
/// labels (`&[]` matches every series of the name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    series: Vec<Series>,
}

impl MetricsSnapshot {
    /// Every series of `name` that has the given labels.
    pub fn series<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Series> {
        self.series
            .iter()
            .filter(move |s| s.name == name && s.has_labels(labels))
    }

    /// Every recorded series.
    pub fn all(&self) -> &[Series] {
        &self.series
    }

    /// Whether anything was recorded under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.series.iter().any(|s| s.name == name)
    }

    /// The sum of the matching counters, or `None` when no counter matches.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.series(name, labels)
            .filter(|s| s.kind == MetricKind::Counter)
            .fold(None, |sum, s| match s.value {
                Value::Counter(c) => Some(sum.unwrap_or(0) + c),
                _ => sum,
            })
    }

    /// The value of the first matching gauge, or `None` when none matches.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series(name, labels).find_map(|s| match s.value {
            Value::Gauge(g) => Some(g),
            _ => None,
        })
    }

    /// The samples of the matching histograms, in series then recording
    /// order (empty when none matches).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.series(name, labels)
            .filter_map(|s| match &s.value {
                Value::Histogram(h) => Some(h.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// How many samples the matching histograms hold.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.histogram(name, labels).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_resets_what_it_read() {
        let capture = MetricsCapture::new();
        capture.in_scope(|| metrics::counter!("c").increment(1));
        assert_eq!(capture.snapshot().counter("c", &[]), Some(1));
        let again = capture.snapshot();
        assert_eq!(again.counter("c", &[]), Some(0));
        capture.in_scope(|| metrics::counter!("c").increment(2));
        assert_eq!(capture.snapshot().counter("c", &[]), Some(2));
    }

    #[test]
    fn nothing_is_recorded_outside_the_scope() {
        let capture = MetricsCapture::new();
        metrics::counter!("outside").increment(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        capture.in_scope(|| {
            rt.block_on(async {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                metrics::gauge!("inside", "k" => "v").set(2.5);
            })
        });
        let snap = capture.snapshot();
        assert!(!snap.contains("outside"));
        assert_eq!(snap.gauge("inside", &[("k", "v")]), Some(2.5));
        assert_eq!(snap.gauge("inside", &[("k", "w")]), None);
    }
}
