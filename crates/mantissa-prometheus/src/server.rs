//! The `/metrics` endpoint: an axum router and a small server with graceful
//! shutdown.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ExporterHandle;
use crate::error::ServeError;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The path the router serves.
pub const METRICS_PATH: &str = "/metrics";

/// An axum [`Router`] with `GET /metrics` rendering `handle`, to merge into
/// your own router.
///
/// ```
/// use mantissa_prometheus::{build_recorder, metrics_router};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (_recorder, handle) = build_recorder()?;
/// let app: axum::Router = axum::Router::new().merge(metrics_router(handle));
/// # let _ = app;
/// # Ok(()) }
/// ```
pub fn metrics_router(handle: ExporterHandle) -> Router {
    Router::new().route(
        METRICS_PATH,
        get(move || {
            let handle = handle.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()).into_response() }
        }),
    )
}

/// A running `/metrics` server. Shuts down gracefully on
/// [`MetricsServer::shutdown`], or when dropped (without waiting).
///
/// ```
/// use mantissa_prometheus::PrometheusConfig;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (_recorder, handle) = PrometheusConfig::new()
///     .listen_addr("127.0.0.1:0".parse()?)
///     .build_recorder()?;
/// let server = handle.serve().await?;
/// assert!(server.local_addr().port() != 0);
/// server.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "the server shuts down when this value is dropped"]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<std::io::Result<()>>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `/metrics` from `handle` on the current tokio
    /// runtime.
    pub async fn bind(handle: ExporterHandle, addr: SocketAddr) -> Result<Self, ServeError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ServeError::NoRuntime)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = metrics_router(handle);
        let join = rt.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // A sent value or a dropped sender both mean stop.
                    let _ = rx.await;
                })
                .await
        });
        tracing::debug!(addr = %local, "serving prometheus metrics");
        Ok(Self {
            addr: local,
            stop: Some(tx),
            join: Some(join),
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets in-flight scrapes finish, and waits
    /// for the server to end.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.join.take() {
            Some(join) => match join.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServeError::Io(e)),
                Err(e) => Err(ServeError::Task(e)),
            },
            None => Ok(()),
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrometheusConfig;
    use mantissa_core::catalog;

    #[tokio::test]
    async fn scrapes_over_http_and_shuts_down() {
        let (recorder, handle) = PrometheusConfig::new().build_recorder().unwrap();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(catalog::GEN_AI_CLIENT_OPERATION_DURATION, "gen_ai_operation_name" => "chat")
                .record(1.0);
            metrics::counter!(catalog::FALLBACKS_TOTAL, "from_tier" => "high", "to_tier" => "medium")
                .increment(1);
        });
        let server = handle.serve_on("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let url = format!("http://{addr}/metrics");
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(
            "gen_ai_client_operation_duration_seconds_bucket{gen_ai_operation_name=\"chat\",le=\"1.28\"} 1"
        ));
        assert!(body.contains("mantissa_fallbacks_total{from_tier=\"high\",to_tier=\"medium\"} 1"));
        assert!(!body.contains("quantile="));

        let missing = reqwest::get(format!("http://{addr}/nope")).await.unwrap();
        assert_eq!(missing.status(), 404);

        server.shutdown().await.unwrap();
        assert!(
            reqwest::get(&url).await.is_err(),
            "server still accepting after shutdown"
        );
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        let (_rec, handle) = PrometheusConfig::new().build_recorder().unwrap();
        let first = handle.serve_on("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let taken = first.local_addr();
        match handle.serve_on(taken).await {
            Err(ServeError::Bind { addr, .. }) => assert_eq!(addr, taken),
            other => panic!("expected a bind error, got {other:?}"),
        }
        first.shutdown().await.unwrap();
    }
}
