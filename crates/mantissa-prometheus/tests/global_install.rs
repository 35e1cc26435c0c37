//! The one test that installs the recorder globally (its own process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mantissa_core::catalog;
use mantissa_prometheus::{InstallError, PrometheusConfig};

#[tokio::test]
async fn install_serve_scrape_and_stop() {
    let exporter = PrometheusConfig::new()
        .upkeep_interval(Duration::from_secs(1))
        .unwrap()
        .listen_addr("127.0.0.1:0".parse().unwrap())
        .install()
        .unwrap();
    assert!(exporter.upkeep_running());

    // A second install fails by variant and leaves the first in place.
    assert!(matches!(
        PrometheusConfig::new().install(),
        Err(InstallError::AlreadyInstalled)
    ));

    metrics::histogram!(catalog::GEN_AI_CLIENT_OPERATION_DURATION, "gen_ai_operation_name" => "chat")
        .record(0.05);
    metrics::counter!(catalog::CALLS_TOTAL, "kind" => "llm", "outcome" => "success").increment(3);
    metrics::gauge!(catalog::ACTIVE_SESSIONS).set(4.0);

    let server = exporter.serve().await.unwrap();
    let body = reqwest::get(format!("http://{}/metrics", server.local_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("# HELP gen_ai_client_operation_duration_seconds GenAI operation duration."));
    assert!(body.contains(
        "gen_ai_client_operation_duration_seconds_bucket{gen_ai_operation_name=\"chat\",le=\"0.08\"} 1"
    ));
    assert!(body.contains("mantissa_calls_total{kind=\"llm\",outcome=\"success\"} 3"));
    assert!(body.contains("mantissa_active_sessions 4"));
    assert!(!body.contains("quantile="));
    assert_eq!(
        mantissa_prometheus::render().map(|t| t.contains("mantissa_active_sessions 4")),
        Some(true)
    );

    server.shutdown().await.unwrap();
    exporter.stop_upkeep().await;
    assert!(!exporter.upkeep_running());
}
