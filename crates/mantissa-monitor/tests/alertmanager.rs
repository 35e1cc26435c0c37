//! The webhook sink against a real Alertmanager (the Debian package
//! `prometheus-alertmanager`): started on a free loopback port with a temporary
//! storage directory, it must keep a firing alert active while the monitor
//! re-sends it, and resolve it when the monitor resolves it.
//!
//! The test fails (never skips) when the binary is missing:
//! `apt-get install prometheus-alertmanager`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mantissa_core::{EventKind, FailureClass, HealthEvent, Outcome};
use mantissa_health::HealthRegistry;
use mantissa_monitor::{AlertState, Condition, Rule, Selector, SystemMonitor, WebhookSink};
use serde_json::Value;

#[path = "support/mod.rs"]
mod support;
use support::parse_rfc3339;

/// The binary names of Alertmanager (Debian's, then upstream's).
const BINARIES: [&str; 2] = ["prometheus-alertmanager", "alertmanager"];

fn find_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in BINARIES {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "Alertmanager is not installed (looked for {BINARIES:?} on PATH): \
         install it with `apt-get install prometheus-alertmanager`"
    );
}

/// A running Alertmanager, killed (and its directory removed) on drop.
struct Alertmanager {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(binary: &Path) -> Alertmanager {
    let dir = std::env::temp_dir().join(format!(
        "mantissa-alertmanager-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // A short resolve_timeout: an alert sent without `endsAt` would be
    // resolved a second after it arrives.
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "global:\n  resolve_timeout: 1s\nroute:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Alertmanager {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits (at most 30 s) until `check` holds; polling an external process.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The alerts Alertmanager reports as not resolved, of rule `rule`.
async fn alerts_of(client: &reqwest::Client, am: &Alertmanager, rule: &str) -> Vec<Value> {
    let body: Value = client
        .get(format!("{}/api/v2/alerts", am.url))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == rule)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_keeps_a_resent_alert_active_and_resolves_it() {
    let binary = find_binary();
    let am = start(&binary);
    let client = reqwest::Client::new();
    wait_until("Alertmanager to be ready", || async {
        matches!(
            client.get(format!("{}/-/ready", am.url)).send().await,
            Ok(r) if r.status().is_success()
        )
    })
    .await;

    let sink = WebhookSink::builder(format!("{}/api/v2/alerts", am.url))
        .resend_interval(Duration::ZERO) // at every evaluation
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build()
        .unwrap();
    let reg = HealthRegistry::new();
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(
            Rule::new(
                "model_streak",
                Selector::models(),
                Condition::consecutive_failures(1),
            )
            .hysteresis(0.0),
        )
        .receiver(sink.clone())
        .interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let event = |outcome| {
        HealthEvent::now(
            "trader".into(),
            "s1".into(),
            EventKind::Llm,
            "m",
            outcome,
            Duration::ZERO,
        )
    };

    // Firing: sent once.
    reg.record_event(&event(Outcome::Failure(FailureClass::UpstreamServer)));
    assert_eq!(monitor.tick()[0].state, AlertState::Firing);
    wait_until("the firing alert to be delivered", || async {
        sink.stats().sent == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await; // a later evaluation time than the first send

    // Still firing at the next evaluation: re-sent.
    assert!(monitor.tick().is_empty());
    wait_until("the re-sent alert to be delivered", || async {
        sink.stats().sent == 2
    })
    .await;
    let resent_at = now_ms();
    let active = alerts_of(&client, &am, "model_streak").await;
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["status"]["state"], "active", "{active:?}");
    assert_eq!(active[0]["labels"]["subject"], "m");
    // Valid for 4 × the 30 s evaluation interval, not Alertmanager's 1 s
    // resolve_timeout of an alert without `endsAt`.
    let ends_at = parse_rfc3339(active[0]["endsAt"].as_str().unwrap());
    assert!(
        ends_at > resent_at + 100_000,
        "endsAt {} is not ~2 min ahead",
        active[0]["endsAt"]
    );

    // Resolved: sent with endsAt at the resolution; Alertmanager lists only
    // unresolved alerts.
    reg.record_event(&event(Outcome::Success));
    assert_eq!(monitor.tick()[0].state, AlertState::Resolved);
    wait_until("the resolution to be delivered", || async {
        sink.stats().sent == 3
    })
    .await;
    let after = alerts_of(&client, &am, "model_streak").await;
    assert!(after.is_empty(), "resolved alert still active: {after:?}");
    assert_eq!(sink.stats().dropped, 0);
    sink.close().await;
}
