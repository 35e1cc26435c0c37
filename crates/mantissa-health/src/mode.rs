//! [`MetricsMode`]: where a layer's metrics go, decided when it is built.

/// Where a [`HealthLayer`](crate::HealthLayer) sends its metrics. Decided
/// once, when the layer builds its first service (never per call); see
/// [`HealthLayer::metrics_mode`](crate::HealthLayer::metrics_mode).
///
/// Either way every call is recorded once into per-series cells that the
/// [`HealthRegistry`](crate::HealthRegistry)'s windows read; the mode only
/// says who renders the Prometheus families of `docs/metrics.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsMode {
    /// Also emit every metric through the `metrics` crate's recorder, with
    /// handles held per label tuple: what an application with its own
    /// recorder (OpenTelemetry, StatsD, …) needs. About nine handle
    /// operations per call on top of the cells.
    Recorder,
    /// The cells are the metrics: an exporter renders them at scrape time
    /// through [`HealthRegistry::collector`](crate::HealthRegistry::collector)
    /// (`mantissa_prometheus::ExporterHandle::register_collector`). Nothing
    /// but the sampled overhead histogram goes to the recorder.
    Cells,
}
