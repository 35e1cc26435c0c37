//! [`PrometheusConfig`]: builds the recorder with explicit buckets for every
//! catalogued histogram, and installs it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mantissa_core::catalog;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::collector::{Collector, Collectors};
use crate::error::{BuildError, InstallError, ServeError};
use crate::server::{MetricsServer, metrics_router};
use crate::upkeep::{DEFAULT_UPKEEP_INTERVAL, UpkeepTask};

/// The default address of the `/metrics` server: `127.0.0.1:9464` (the port
/// OpenTelemetry's Prometheus exporter uses).
pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

static GLOBAL: OnceLock<(PrometheusHandle, Arc<Collectors>)> = OnceLock::new();

/// Renders the globally installed exporter (see [`install`]), for users who
/// serve metrics from another framework. `None` if nothing was installed by
/// this crate.
pub fn render() -> Option<String> {
    GLOBAL.get().map(|(h, c)| render_with(h, c))
}

/// The recorder's exposition, then the collectors' families.
fn render_with(prom: &PrometheusHandle, collectors: &Collectors) -> String {
    let mut text = exposition(prom.render());
    collectors.render_into(&mut text);
    text
}

/// The exposition as served: the catalogue's float counters
/// ([`catalog::FLOAT_COUNTERS`], recorded through increase-only gauge
/// handles because the `metrics` facade's counters are integers) are typed
/// `counter`, so the scrape is `promtool check metrics`-clean and `rate()`
/// applies as to any counter.
pub(crate) fn exposition(mut text: String) -> String {
    for name in catalog::FLOAT_COUNTERS {
        let gauge = format!("# TYPE {name} gauge\n");
        if let Some(at) = text.find(&gauge) {
            let counter = format!("# TYPE {name} counter\n");
            text.replace_range(at..at + gauge.len(), &counter);
        }
    }
    text
}

/// Installs the exporter with the default configuration: catalogue buckets,
/// upkeep every 5 s. Must be called inside a tokio runtime (for upkeep).
///
/// ```rust,standalone_crate
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let exporter = mantissa_prometheus::install()?;
/// metrics::counter!(mantissa_core::catalog::CALLS_TOTAL, "kind" => "llm").increment(1);
/// let text = exporter.render();
/// assert!(text.contains("# TYPE mantissa_calls_total counter"));
/// assert_eq!(mantissa_prometheus::render().as_deref().map(|t| t.contains("mantissa_calls_total")), Some(true));
/// # Ok(()) }
/// ```
pub fn install() -> Result<ExporterHandle, InstallError> {
    PrometheusConfig::new().install()
}

/// Builds the recorder with the default configuration without installing it
/// (see [`PrometheusConfig::build_recorder`]).
pub fn build_recorder() -> Result<(PrometheusRecorder, ExporterHandle), BuildError> {
    PrometheusConfig::new().build_recorder()
}

/// Configuration of the exporter.
///
/// Every histogram of [`catalog::HISTOGRAMS`] gets its explicit buckets (the
/// OpenTelemetry GenAI boundaries for durations and tokens), so none is ever
/// rendered as a summary.
///
/// ```
/// use std::time::Duration;
/// use mantissa_prometheus::PrometheusConfig;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (recorder, handle) = PrometheusConfig::new()
///     .buckets_for("myapp_queue_wait_seconds", &[0.001, 0.01, 0.1, 1.0])?
///     .global_label("service", "trading-desk")
///     .upkeep_interval(Duration::from_secs(10))?
///     .build_recorder()?;
/// metrics::with_local_recorder(&recorder, || {
///     metrics::histogram!("myapp_queue_wait_seconds").record(0.05);
/// });
/// let text = handle.render();
/// assert!(text.contains(r#"myapp_queue_wait_seconds_bucket{service="trading-desk",le="0.1"} 1"#));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    buckets: BTreeMap<String, Vec<f64>>,
    default_buckets: Option<Vec<f64>>,
    global_labels: Vec<(String, String)>,
    upkeep: Option<Duration>,
    listen_addr: SocketAddr,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self::new()
    }
}

fn validate(metric: &str, buckets: &[f64]) -> Result<(), BuildError> {
    if buckets.is_empty() {
        return Err(BuildError::EmptyBuckets {
            metric: metric.to_owned(),
        });
    }
    let finite = buckets.iter().all(|b| b.is_finite());
    let increasing = buckets.windows(2).all(|w| w[0] < w[1]);
    if !finite || !increasing {
        return Err(BuildError::UnorderedBuckets {
            metric: metric.to_owned(),
        });
    }
    Ok(())
}

impl PrometheusConfig {
    /// The catalogue's buckets, 5 s upkeep, listening on [`DEFAULT_LISTEN_ADDR`].
    pub fn new() -> Self {
        let buckets = catalog::HISTOGRAMS
            .iter()
            .map(|(name, b)| ((*name).to_owned(), b.to_vec()))
            .collect();
        Self {
            buckets,
            default_buckets: None,
            global_labels: Vec::new(),
            upkeep: Some(DEFAULT_UPKEEP_INTERVAL),
            listen_addr: DEFAULT_LISTEN_ADDR,
        }
    }

    /// Explicit buckets for one histogram (yours, or to override a catalogued
    /// one). Fails if `buckets` is empty, not finite or not strictly increasing.
    /// Defaults to [`catalog::HISTOGRAMS`] for the catalogued histograms.
    pub fn buckets_for(mut self, metric: impl Into<String>, buckets: &[f64]) -> Result<Self, BuildError> {
        let metric = metric.into();
        validate(&metric, buckets)?;
        self.buckets.insert(metric, buckets.to_vec());
        Ok(self)
    }

    /// Buckets for every histogram without its own, so that no histogram is
    /// rendered as a summary. Defaults to none: uncatalogued histograms
    /// without [`buckets_for`](Self::buckets_for) render as summaries.
    pub fn default_buckets(mut self, buckets: &[f64]) -> Result<Self, BuildError> {
        validate("*", buckets)?;
        self.default_buckets = Some(buckets.to_vec());
        Ok(self)
    }

    /// A label added to every metric (for example the replica name).
    /// Defaults to none.
    pub fn global_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.global_labels.push((key.into(), value.into()));
        self
    }

    /// How often [`install`](Self::install) runs upkeep. Fails on zero.
    /// Defaults to [`DEFAULT_UPKEEP_INTERVAL`] (5 s).
    pub fn upkeep_interval(mut self, interval: Duration) -> Result<Self, BuildError> {
        if interval.is_zero() {
            return Err(BuildError::ZeroUpkeepInterval);
        }
        self.upkeep = Some(interval);
        Ok(self)
    }

    /// Do not spawn an upkeep task on install (you call
    /// [`ExporterHandle::run_upkeep`] yourself, or scrape often enough).
    /// Defaults to upkeep every 5 s.
    pub fn without_upkeep(mut self) -> Self {
        self.upkeep = None;
        self
    }

    /// The address [`ExporterHandle::serve`] binds. Defaults to [`DEFAULT_LISTEN_ADDR`].
    pub fn listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen_addr = addr;
        self
    }

    fn builder(&self) -> Result<PrometheusBuilder, BuildError> {
        let mut builder = PrometheusBuilder::new();
        if let Some(default) = &self.default_buckets {
            // The global setting applies only to histograms without an
            // override, so the per-metric buckets below still win.
            builder = builder.set_buckets(default).map_err(BuildError::Exporter)?;
        }
        for (name, buckets) in &self.buckets {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.clone()), buckets)
                .map_err(BuildError::Exporter)?;
        }
        for (k, v) in &self.global_labels {
            builder = builder.add_global_label(k.clone(), v.clone());
        }
        Ok(builder)
    }

    /// Builds the recorder and its handle without installing it globally, for
    /// tests (`metrics::with_local_recorder`) and for users who compose
    /// recorders. The catalogue's descriptions are already registered with it.
    /// No upkeep task is spawned.
    pub fn build_recorder(self) -> Result<(PrometheusRecorder, ExporterHandle), BuildError> {
        let recorder = self.builder()?.build_recorder();
        metrics::with_local_recorder(&recorder, catalog::describe_all);
        let collectors = Arc::new(Collectors::new(self.global_labels.clone()));
        let handle = ExporterHandle::new(recorder.handle(), collectors, None, self.listen_addr);
        Ok((recorder, handle))
    }

    /// Installs the recorder globally, describes the catalogue, and (unless
    /// disabled) spawns the upkeep task on the current tokio runtime. The task
    /// stops when the last clone of the returned handle is dropped, or on
    /// [`ExporterHandle::stop_upkeep`].
    pub fn install(self) -> Result<ExporterHandle, InstallError> {
        // Check for a runtime before touching global state.
        if self.upkeep.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return Err(InstallError::NoRuntime);
        }
        let recorder = self.builder()?.build_recorder();
        let prom = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| InstallError::AlreadyInstalled)?;
        catalog::describe_all();
        let collectors = Arc::new(Collectors::new(self.global_labels.clone()));
        let _ = GLOBAL.set((prom.clone(), collectors.clone()));
        let upkeep = match self.upkeep {
            Some(interval) => Some(UpkeepTask::spawn(prom.clone(), interval)?),
            None => None,
        };
        Ok(ExporterHandle::new(prom, collectors, upkeep, self.listen_addr))
    }
}

struct Inner {
    prom: PrometheusHandle,
    collectors: Arc<Collectors>,
    upkeep: Mutex<Option<UpkeepTask>>,
    listen_addr: SocketAddr,
}

/// A handle to the exporter: renders the exposition text, runs upkeep, and
/// serves `/metrics`. Cheap to clone; the upkeep task spawned by
/// [`PrometheusConfig::install`] lives until the last clone is dropped.
#[derive(Clone)]
pub struct ExporterHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for ExporterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExporterHandle")
            .field("upkeep_running", &self.upkeep_running())
            .field("listen_addr", &self.inner.listen_addr)
            .finish_non_exhaustive()
    }
}

impl ExporterHandle {
    fn new(
        prom: PrometheusHandle,
        collectors: Arc<Collectors>,
        upkeep: Option<UpkeepTask>,
        listen_addr: SocketAddr,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                prom,
                collectors,
                upkeep: Mutex::new(upkeep),
                listen_addr,
            }),
        }
    }

    /// The Prometheus text exposition of every metric: the recorder's,
    /// then the families of the registered [`Collector`]s.
    pub fn render(&self) -> String {
        render_with(&self.inner.prom, &self.inner.collectors)
    }

    /// Adds a collector whose metrics are read at every render, after the
    /// recorder's, with this exporter's global labels and the catalogue's
    /// help texts: for example the health layer's cells
    /// (`mantissa_health::HealthRegistry::collector`), so the layer records
    /// each call once instead of through about nine recorder handles.
    /// A family must come from either the recorder or collectors, not both.
    /// Values that several collectors report for the same name and labels
    /// are summed.
    ///
    /// ```
    /// use mantissa_core::catalog::{self, MetricVisitor, labels};
    /// use mantissa_prometheus::PrometheusConfig;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (_recorder, handle) = PrometheusConfig::new().global_label("replica", "a").build_recorder()?;
    /// handle.register_collector(|out: &mut dyn MetricVisitor| {
    ///     out.counter(catalog::CALLS_TOTAL, &[(labels::KIND, "llm")], 3.0);
    /// });
    /// let text = handle.render();
    /// assert!(text.contains("# TYPE mantissa_calls_total counter\n"));
    /// assert!(text.contains(r#"mantissa_calls_total{replica="a",kind="llm"} 3"#));
    /// # Ok(()) }
    /// ```
    pub fn register_collector(&self, collector: impl Collector) {
        self.inner.collectors.register(Arc::new(collector));
    }

    /// Runs upkeep once (drains histogram samples).
    pub fn run_upkeep(&self) {
        self.inner.prom.run_upkeep();
    }

    /// The wrapped exporter handle.
    pub fn prometheus_handle(&self) -> &PrometheusHandle {
        &self.inner.prom
    }

    /// Whether an upkeep task is running.
    pub fn upkeep_running(&self) -> bool {
        let guard = self.inner.upkeep.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the upkeep task (if any) and waits for it to end.
    pub async fn stop_upkeep(&self) {
        let task = self.inner.upkeep.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.stop().await;
        }
    }

    /// An axum [`Router`](axum::Router) serving `GET /metrics` from this handle.
    pub fn router(&self) -> axum::Router {
        metrics_router(self.clone())
    }

    /// Serves `/metrics` on the configured address
    /// ([`PrometheusConfig::listen_addr`], default [`DEFAULT_LISTEN_ADDR`]).
    pub async fn serve(&self) -> Result<MetricsServer, ServeError> {
        MetricsServer::bind(self.clone(), self.inner.listen_addr).await
    }

    /// Serves `/metrics` on `addr` (use port 0 for any free port; the bound
    /// address is [`MetricsServer::local_addr`]).
    pub async fn serve_on(&self, addr: SocketAddr) -> Result<MetricsServer, ServeError> {
        MetricsServer::bind(self.clone(), addr).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::catalog::labels as l;

    /// Emits every catalogued metric once with representative labels.
    fn emit_everything() {
        for (name, _) in catalog::HISTOGRAMS {
            let value = if name.contains("token") {
                300.0
            } else if name.contains("seconds") {
                0.3
            } else if *name == catalog::SESSION_TURNS_AT_RESET {
                30.0
            } else {
                0.5
            };
            metrics::histogram!(*name, l::AGENT => "trader", l::GEN_AI_REQUEST_MODEL => "mock-medium")
                .record(value);
        }
        for name in catalog::COUNTERS {
            if catalog::FLOAT_COUNTERS.contains(name) {
                // Dollars: recorded as the layers record them, through an
                // increase-only gauge handle.
                metrics::gauge!(*name, l::AGENT => "trader", l::OUTCOME => "success").increment(2.0);
            } else {
                metrics::counter!(*name, l::AGENT => "trader", l::OUTCOME => "success").increment(2);
            }
        }
        for name in catalog::GAUGES {
            metrics::gauge!(*name, l::AGENT => "trader").set(1.0);
        }
    }

    fn fmt_bound(b: f64) -> String {
        // The exporter prints bounds with Rust's shortest float formatting.
        format!("{b}")
    }

    #[test]
    fn every_histogram_renders_with_catalogue_buckets_and_every_metric_is_described() {
        let (recorder, handle) = build_recorder().unwrap();
        metrics::with_local_recorder(&recorder, emit_everything);
        let text = handle.render();
        assert!(!text.contains("quantile="), "no summaries expected:\n{text}");
        for (name, buckets) in catalog::HISTOGRAMS {
            assert!(text.contains(&format!("# TYPE {name} histogram")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            for b in *buckets {
                let needle = format!(
                    "{name}_bucket{{agent=\"trader\",gen_ai_request_model=\"mock-medium\",le=\"{}\"}}",
                    fmt_bound(*b)
                );
                assert!(text.contains(&needle), "missing {needle}\n{text}");
            }
            assert!(text.contains(&format!(
                "{name}_bucket{{agent=\"trader\",gen_ai_request_model=\"mock-medium\",le=\"+Inf\"}} 1"
            )));
            assert!(text.contains(&format!("{name}_count{{")), "{name}");
            assert!(text.contains(&format!("{name}_sum{{")), "{name}");
        }
        for name in catalog::COUNTERS {
            assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(
                text.contains(&format!("{name}{{agent=\"trader\",outcome=\"success\"}} 2")),
                "{name}"
            );
        }
        for name in catalog::GAUGES {
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        // The OTel boundaries named in the design, spelled as Prometheus sees them.
        for le in ["le=\"0.01\"", "le=\"81.92\"", "le=\"67108864\""] {
            assert!(text.contains(le), "{le}");
        }
        // A 0.3 s duration lands in the 0.32 bucket, not the 0.16 one.
        let d = catalog::GEN_AI_CLIENT_OPERATION_DURATION;
        assert!(text.contains(&format!(
            "{d}_bucket{{agent=\"trader\",gen_ai_request_model=\"mock-medium\",le=\"0.32\"}} 1"
        )));
        assert!(text.contains(&format!(
            "{d}_bucket{{agent=\"trader\",gen_ai_request_model=\"mock-medium\",le=\"0.16\"}} 0"
        )));
    }

    #[test]
    fn default_buckets_turn_unknown_histograms_into_histograms() {
        let (recorder, handle) = PrometheusConfig::new().build_recorder().unwrap();
        metrics::with_local_recorder(&recorder, || metrics::histogram!("custom_latency").record(1.0));
        assert!(handle.render().contains("quantile="), "unconfigured: a summary");

        let (recorder, handle) = PrometheusConfig::new()
            .default_buckets(&[0.5, 1.0, 2.0])
            .unwrap()
            .build_recorder()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("custom_latency").record(1.0);
            metrics::histogram!(catalog::GEN_AI_CLIENT_TOKEN_USAGE).record(10.0);
        });
        let text = handle.render();
        assert!(!text.contains("quantile="));
        assert!(text.contains("custom_latency_bucket{le=\"2\"} 1"));
        // Catalogued histograms keep their own buckets.
        assert!(text.contains("gen_ai_client_token_usage_bucket{le=\"67108864\"} 1"));
        assert!(!text.contains("gen_ai_client_token_usage_bucket{le=\"0.5\"}"));
    }

    #[test]
    fn invalid_configuration_is_rejected_by_variant() {
        assert!(matches!(
            PrometheusConfig::new().buckets_for("x", &[]),
            Err(BuildError::EmptyBuckets { metric }) if metric == "x"
        ));
        assert!(matches!(
            PrometheusConfig::new().buckets_for("x", &[1.0, 1.0]),
            Err(BuildError::UnorderedBuckets { .. })
        ));
        assert!(matches!(
            PrometheusConfig::new().default_buckets(&[f64::NAN]),
            Err(BuildError::UnorderedBuckets { metric }) if metric == "*"
        ));
        assert!(matches!(
            PrometheusConfig::new().upkeep_interval(Duration::ZERO),
            Err(BuildError::ZeroUpkeepInterval)
        ));
        assert_eq!(
            BuildError::ZeroUpkeepInterval.to_string(),
            "upkeep interval must be greater than zero"
        );
    }

    #[test]
    fn install_outside_a_runtime_fails_before_touching_global_state() {
        assert!(matches!(
            PrometheusConfig::new().install(),
            Err(InstallError::NoRuntime)
        ));
        assert!(render().is_none());
    }
}
