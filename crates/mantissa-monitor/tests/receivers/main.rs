//! Receivers of alerts: the channel sink, the Alertmanager payload, and the
//! webhook sink (in `webhook`) against a mock HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::catalog;
use mantissa_health::HealthRegistry;
use mantissa_mock::metrics::MetricsCapture;
use mantissa_monitor::sink::alertmanager_payload;
use mantissa_monitor::{AlertState, ChannelSink, Condition, Rule, Selector, SystemMonitor, WebhookSink};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::advance;

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[tokio::test(start_paused = true)]
async fn channel_sink_is_bounded_and_counts_drops() {
    let reg = HealthRegistry::new();
    let (sink, mut rx) = ChannelSink::new(2);
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(Rule::new(
            "streak",
            Selector::models(),
            Condition::consecutive_failures(1),
        ))
        .receiver(sink.clone())
        .build()
        .unwrap();
    for m in ["a", "b", "c", "d"] {
        fail(&reg, m, 1);
    }
    assert_eq!(monitor.tick().len(), 4);
    assert_eq!(sink.dropped(), 2);
    assert_eq!(rx.recv().await.unwrap().state, AlertState::Firing);
    assert_eq!(rx.try_recv().unwrap().state, AlertState::Firing);
    assert!(rx.try_recv().is_err());
}

#[test]
fn alertmanager_payload_shape() {
    let body = alertmanager_payload(
        &[
            sample_alert(AlertState::Firing),
            sample_alert(AlertState::Resolved),
        ],
        Some("http://monitor/alerts"),
    );
    let arr = body.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let a = &arr[0];
    assert_eq!(a["labels"]["alertname"], "model_errors");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["subject_kind"], "model");
    assert_eq!(a["labels"]["subject"], "mock-small");
    assert_eq!(a["labels"]["team"], "trading");
    assert!(a["annotations"]["summary"].as_str().unwrap().contains("80.0 %"));
    assert!(
        a["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("threshold 0.5")
    );
    assert_eq!(a["startsAt"], "2025-11-25T22:35:26.000Z");
    assert!(a.get("endsAt").is_none(), "firing alerts have no end");
    assert_eq!(a["generatorURL"], "http://monitor/alerts");
    assert_eq!(arr[1]["endsAt"], "2025-11-25T22:36:26.000Z");
}

mod webhook;
