//! Export the call spans with OpenTelemetry (feature `otel`, off by default).
//!
//! The health layer opens a `chat {model}` / `execute_tool {tool}` span per
//! call and the router a `route {tier}` span per request (see the
//! `mantissa-health` crate docs, "Traces", and docs/operations.md). This
//! module sends them to an OTLP collector over HTTP/protobuf through
//! [`tracing-opentelemetry`](tracing_opentelemetry), configured by the
//! standard environment variables:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` | collector URL (`/v1/traces` is appended to the latter) | `http://localhost:4318` |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` | extra headers, export timeout | none, 10 s |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | resource | `mantissa` |
//! | `OTEL_BSP_*` | batch span processor (queue size, delay, batch size) | SDK defaults |
//!
//! [`init`] installs a global subscriber (a `fmt` log layer filtered by
//! `RUST_LOG`, default `warn`, plus the OpenTelemetry layer filtered by
//! [`default_filter`]) and returns a guard that flushes and shuts the
//! exporter down when dropped. To compose your own subscriber, build the
//! provider with [`tracer_provider`] and add [`layer`] to it:
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! # fn main() -> Result<(), mantissa::otel::OtelError> {
//! let provider = mantissa::otel::tracer_provider()?;
//! tracing_subscriber::registry()
//!     .with(mantissa::otel::layer(&provider).with_filter(mantissa::otel::default_filter()))
//!     .init();
//! // ... run the service ...
//! let _ = provider.shutdown(); // flushes the spans still queued
//! # Ok(())
//! # }
//! ```
//!
//! Or, in a binary that has no subscriber yet:
//!
//! ```no_run
//! # fn main() -> Result<(), mantissa::otel::OtelError> {
//! let _otel = mantissa::otel::init()?; // flushes on drop
//! # Ok(())
//! # }
//! ```

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The instrumentation scope name of the exported spans.
pub const SCOPE: &str = "mantissa";

/// The service name used when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "mantissa";

/// Why OpenTelemetry export could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The OTLP exporter could not be built (for example a bad endpoint).
    #[error("cannot build the otlp exporter")]
    Exporter(#[source] ExporterBuildError),
    /// A global `tracing` subscriber is already installed.
    #[error("cannot install the tracing subscriber")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
}

/// A tracer provider exporting spans in batches to the OTLP/HTTP endpoint
/// named by the `OTEL_*` environment variables, with the resource from
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (service name
/// [`DEFAULT_SERVICE_NAME`] unless set). Call
/// [`SdkTracerProvider::shutdown`] before exiting to flush it.
pub fn tracer_provider() -> Result<SdkTracerProvider, OtelError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(OtelError::Exporter)?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

/// The resource of the exported spans.
fn resource() -> Resource {
    let builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(DEFAULT_SERVICE_NAME).build()
    }
}

/// The `tracing-opentelemetry` layer sending spans to `provider`'s tracer
/// (scope [`SCOPE`]). Unfiltered: add a filter such as [`default_filter`],
/// or every `tracing` span of the process is exported.
pub fn layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_tracked_inactivity(false)
}

/// The spans mantissa opens, at `INFO`: targets `mantissa_health` (call
/// spans), `mantissa_triage` (route spans and attempt events),
/// `mantissa_reset` (reset events) and `mantissa`. Everything else is off.
pub fn default_filter() -> Targets {
    Targets::new()
        .with_target("mantissa_health", LevelFilter::INFO)
        .with_target("mantissa_triage", LevelFilter::INFO)
        .with_target("mantissa_reset", LevelFilter::INFO)
        .with_target("mantissa", LevelFilter::INFO)
}

/// Flushes and shuts the tracer provider down when dropped. Returned by [`init`].
#[must_use = "dropping the guard shuts the exporter down"]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelGuard").finish_non_exhaustive()
    }
}

impl OtelGuard {
    /// The tracer provider (for example to `force_flush` it).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("mantissa: opentelemetry shutdown: {e}");
        }
    }
}

/// Installs the global `tracing` subscriber: a `fmt` layer on stderr filtered
/// by `RUST_LOG` (default `warn`) and the OpenTelemetry layer of
/// [`tracer_provider`] filtered by [`default_filter`]. Keep the guard alive
/// until the end of `main`: dropping it flushes the queued spans.
pub fn init() -> Result<OtelGuard, OtelError> {
    let provider = tracer_provider()?;
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(logs),
        )
        .with(layer(&provider).with_filter(default_filter()))
        .try_init()
        .map_err(OtelError::Subscriber)?;
    Ok(OtelGuard { provider })
}
