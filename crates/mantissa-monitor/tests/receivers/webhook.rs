//! The webhook sink against a mock HTTP server: the Alertmanager JSON,
//! retries and backoff, the bounded queue, re-sends of firing alerts.

use super::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn sink(server: &MockServer) -> mantissa_monitor::sink::WebhookSinkBuilder {
    WebhookSink::builder(format!("{}/api/v2/alerts", server.uri()))
        .backoff(Duration::from_millis(1), Duration::from_millis(4))
        .timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn posts_alertmanager_json() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/alerts"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let sink = sink(&server).build().unwrap();
    use mantissa_monitor::HealthAlertReceiver;
    sink.receive_health_alert(&sample_alert(AlertState::Pending)); // ignored
    sink.receive_health_alert(&sample_alert(AlertState::Firing));
    sink.close().await;
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].headers.get("content-type").unwrap().to_str().unwrap(),
        "application/json"
    );
    let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    // A firing alert is valid for 4 × max(re-send 1 min, evaluation 15 s).
    let firing = sample_alert(AlertState::Firing);
    let until = firing.firing_since_ms.unwrap() + 4 * 60_000;
    assert_eq!(
        body,
        json!([mantissa_monitor::sink::alertmanager_alert(
            &firing,
            Some(until),
            None
        )])
    );
    assert_eq!(body[0]["endsAt"], "2025-11-25T22:39:26.000Z");
    assert_eq!(sink.stats().sent, 1);
    assert_eq!(sink.stats().dropped, 0);
}

#[tokio::test]
async fn retries_5xx_then_delivers_but_not_4xx() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let s = sink(&server).build().unwrap();
    use mantissa_monitor::HealthAlertReceiver;
    s.receive_health_alert(&sample_alert(AlertState::Firing));
    s.close().await;
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    let st = s.stats();
    assert_eq!((st.sent, st.retries, st.dropped), (1, 2, 0));

    let bad = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&bad)
        .await;
    let s = sink(&bad).build().unwrap();
    s.receive_health_alert(&sample_alert(AlertState::Firing));
    s.close().await;
    assert_eq!(
        bad.received_requests().await.unwrap().len(),
        1,
        "a 4xx is not retried"
    );
    assert_eq!(s.stats().dropped, 1);
}

#[tokio::test]
async fn retries_transport_errors_with_backoff_then_gives_up() {
    // A port nobody listens on: connection refused, a transport error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = WebhookSink::builder(format!("http://127.0.0.1:{port}/alerts"))
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .max_attempts(3)
        .build()
        .unwrap();
    use mantissa_monitor::HealthAlertReceiver;
    s.receive_health_alert(&sample_alert(AlertState::Resolved));
    s.close().await;
    let st = s.stats();
    assert_eq!((st.queued, st.sent, st.retries, st.dropped), (1, 0, 2, 1));
}

#[test]
fn building_needs_a_valid_url_and_a_runtime() {
    let err = WebhookSink::builder("not a url").build().unwrap_err();
    assert!(
        err.to_string().starts_with("invalid webhook url `not a url`"),
        "{err}"
    );
    let err = WebhookSink::builder("http://127.0.0.1:9/").build().unwrap_err();
    assert_eq!(err.to_string(), "webhook sink needs a tokio runtime");
}

#[tokio::test]
async fn bounded_queue_drops_and_counts_while_the_webhook_is_down() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let capture = MetricsCapture::new();
    let s = sink(&server)
        .queue_capacity(3)
        .max_attempts(3)
        .max_batch(10)
        .build()
        .unwrap();
    use mantissa_monitor::HealthAlertReceiver;
    capture.in_scope(|| {
        for _ in 0..10 {
            s.receive_health_alert(&sample_alert(AlertState::Firing));
        }
    });
    // The worker has not run yet: 3 queued, 7 dropped at once.
    assert_eq!(s.stats().queued, 3);
    assert_eq!(s.stats().dropped, 7);
    let dropped = capture
        .snapshot()
        .counter(catalog::ALERT_SINK_DROPPED_TOTAL, &[("sink", "webhook")]);
    assert_eq!(dropped, Some(7));
    s.close().await;
    // One batch of 3, three attempts, then given up.
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    let st = s.stats();
    assert_eq!((st.sent, st.dropped, st.retries), (0, 10, 2));
    s.receive_health_alert(&sample_alert(AlertState::Firing));
    assert_eq!(s.stats().dropped, 11, "closed sinks drop");
}

/// The alerts of every POST the server received, in order.
async fn posted(server: &MockServer) -> Vec<Value> {
    let mut out = Vec::new();
    for r in server.received_requests().await.unwrap() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        out.extend(body.as_array().unwrap().iter().cloned());
    }
    out
}

#[tokio::test]
async fn firing_alerts_are_resent_with_ends_at_ahead_and_resolved_at_resolution() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    // No client timeout: on paused time it would fire while the request
    // waits for the (real-time) server.
    let s = sink(&server).client(reqwest::Client::new()).build().unwrap();
    let reg = HealthRegistry::new();
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(Rule::new("streak", Selector::models(), Condition::consecutive_failures(1)).hysteresis(0.0))
        .receiver(s.clone())
        .build()
        .unwrap();
    assert_eq!(monitor.interval(), S(15));
    tokio::time::pause();

    fail(&reg, "m", 1);
    let t = monitor.tick();
    assert_eq!(t[0].state, AlertState::Firing);
    let t0 = t[0].firing_since_ms.unwrap();
    // Evaluations within the re-send interval (1 min) send nothing more.
    for _ in 0..3 {
        advance(S(15)).await;
        assert!(monitor.tick().is_empty());
    }
    // 1 min after it was first sent: re-sent (not a transition).
    advance(S(15)).await;
    assert!(monitor.tick().is_empty());
    ok(&reg, "m", 1, 10);
    advance(S(1)).await;
    let t = monitor.tick();
    assert_eq!(t[0].state, AlertState::Resolved);
    let resolved_at = t[0].resolved_at_ms.unwrap();
    tokio::time::resume();
    s.close().await;

    let alerts = posted(&server).await;
    let summary: Vec<(String, u64)> = alerts
        .iter()
        .map(|a| {
            (
                a["annotations"]["description"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .nth(1)
                    .unwrap()
                    .to_owned(),
                parse_rfc3339(a["endsAt"].as_str().expect("every alert has endsAt")),
            )
        })
        .collect();
    // endsAt of a firing alert: 4 × max(1 min re-send, 15 s evaluation) ahead.
    assert_eq!(
        summary,
        [
            ("firing".to_owned(), t0 + 4 * 60_000),
            ("firing".to_owned(), t0 + 60_000 + 4 * 60_000),
            ("resolved".to_owned(), resolved_at),
        ]
    );
    assert_eq!(resolved_at, t0 + 61_000);
    for a in &alerts {
        assert_eq!(parse_rfc3339(a["startsAt"].as_str().unwrap()), t0);
    }
    assert_eq!(s.stats().sent, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_block_the_monitor() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let s = sink(&server)
        .timeout(Duration::from_millis(300))
        .max_attempts(1)
        .queue_capacity(4)
        .build()
        .unwrap();
    let reg = HealthRegistry::new();
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(Rule::new(
            "streak",
            Selector::models(),
            Condition::consecutive_failures(1),
        ))
        .receiver(s.clone())
        .build()
        .unwrap();
    fail(&reg, "a", 1);
    assert_eq!(monitor.tick().len(), 1);
    // Wait until the worker's POST is in flight (the server has it).
    while server.received_requests().await.unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    // The webhook hangs; ticks still complete and alerts queue up.
    for m in ["b", "c", "d"] {
        fail(&reg, m, 1);
        assert_eq!(monitor.tick().len(), 1);
    }
    let st = s.stats();
    assert_eq!((st.queued, st.sent), (4, 0));
    s.close().await;
    assert_eq!(s.stats().dropped, 4, "timed out (no retries configured)");
}
