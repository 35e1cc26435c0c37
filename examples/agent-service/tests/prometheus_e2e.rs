//! End to end against a real Prometheus server: the demo service runs
//! in-process and serves `/metrics` on loopback, the `prometheus` binary
//! scrapes it every second with the shipped recording and alert rules loaded,
//! and the test checks that
//!
//! - every catalogued metric the demo exports is stored by Prometheus,
//! - every PromQL expression of the Grafana dashboard
//!   (`deploy/grafana/mantissa.json`) returns data, and so does every
//!   recording rule of `deploy/prometheus/recording_rules.yml`,
//! - every rule (recording and alerting) is loaded and evaluates without error,
//! - the dashboard's template variables find values.
//!
//! It needs the `prometheus` server binary (Debian: `apt-get install
//! prometheus`; `.ci/run` installs it) on `PATH`, or its path in
//! `PROMETHEUS_BIN`. Without it the test fails: it never skips silently.
//!
//! ```text
//! cargo test -p example-agent-service --test prometheus_e2e -- --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use example_agent_service::{Demo, DemoConfig};
use mantissa_core::catalog;
use serde_json::Value;

/// Demo load. The demo's outage of `mock-small` runs from 30 %
/// to 60 % of it, so fallbacks and cooldowns happen well inside the run.
const LOAD: Duration = Duration::from_secs(14);
/// Upper bound for Prometheus to start and see the target up.
const STARTUP: Duration = Duration::from_secs(25);
/// Upper bound for all queries to return data once the load has finished.
const SETTLE: Duration = Duration::from_secs(15);

/// Values substituted for the dashboard's template variables.
const VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("${__rate_interval}", "1m"),
    ("$__interval", "15s"),
    ("${__interval}", "15s"),
    ("$__range", "5m"),
    ("${__range}", "5m"),
    ("${agent}", ".*"),
    ("$agent", ".*"),
    ("${model}", ".*"),
    ("$model", ".*"),
];

/// Catalogued series the demo must produce (the dashboard and the rules read them).
const REQUIRED: &[&str] = &[
    catalog::GEN_AI_CLIENT_OPERATION_DURATION,
    catalog::GEN_AI_CLIENT_TOKEN_USAGE,
    catalog::CALLS_TOTAL,
    catalog::CALLS_IN_FLIGHT,
    catalog::TOKENS_TOTAL,
    catalog::COST_USD_TOTAL,
    catalog::COUNTERFACTUAL_COST_USD_TOTAL,
    catalog::MIDDLEWARE_OVERHEAD,
    catalog::AGENT_HEALTH_SCORE,
    catalog::TRIAGE_DECISIONS_TOTAL,
    catalog::TRIAGE_SCORE,
    catalog::FALLBACKS_TOTAL,
    catalog::MODEL_STATE,
    catalog::CONTEXT_RESETS_TOTAL,
    catalog::ACTIVE_SESSIONS,
    catalog::SESSION_TURNS_AT_RESET,
    catalog::SESSION_CONTEXT_TOKENS_AT_RESET,
    catalog::SESSION_BRITTLENESS,
    catalog::GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
    catalog::CONTEXT_WARNINGS_TOTAL,
    catalog::ALERTS_FIRING,
    catalog::ALERTS_TOTAL,
];

/// A file of the repository (this package is `examples/agent-service`).
fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// The `prometheus` binary: `PROMETHEUS_BIN`, else the first on `PATH`.
fn prometheus_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("PROMETHEUS_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "PROMETHEUS_BIN={} is not a file", bin.display());
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` server binary is not installed (not on PATH, PROMETHEUS_BIN unset). \
                 Install it with `apt-get install prometheus` (Debian/Ubuntu; .ci/run does this) \
                 or point PROMETHEUS_BIN at a Prometheus 2.x binary."
            )
        })
}

/// `promtool` (shipped with Debian's `prometheus` package): `PROMTOOL_BIN`,
/// else the first on `PATH`.
fn promtool_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("PROMTOOL_BIN") {
        return PathBuf::from(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`promtool` is not installed (not on PATH, PROMTOOL_BIN unset). \
                 Install it with `apt-get install prometheus` (Debian/Ubuntu; scripts/test does this)."
            )
        })
}

/// `promtool check metrics` reports nothing on the exposition: names, types,
/// units and help text are all lint-clean.
fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool_binary())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics on the main job's scrape: {report}"
    );
}

fn free_loopback_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// A Prometheus server in a temporary directory; killed and cleaned up on drop
/// (also when an assertion fails).
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let bin = prometheus_binary();
        let dir = std::env::temp_dir().join(format!(
            "mantissa-prometheus-e2e-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("create the temporary directory");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {recording}\n  - {alerts}\n\
             scrape_configs:\n  - job_name: mantissa\n    static_configs:\n      - targets: ['{target}']\n",
            recording = repo_path("deploy/prometheus/recording_rules.yml").display(),
            alerts = repo_path("deploy/prometheus/alert_rules.yml").display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log file");
        let port = free_loopback_port();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The end of Prometheus's own log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("--- prometheus log (last 20 lines) ---\n{tail}")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /api/v1/query`: the result vector (empty on any error).
async fn instant_query(http: &reqwest::Client, prom: &Prometheus, expr: &str) -> Result<Vec<Value>, String> {
    let resp = http
        .get(format!("{}/api/v1/query", prom.url))
        .query(&[("query", expr)])
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let body: Value = resp.json().await.map_err(|e| format!("bad body: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("query error: {body}"));
    }
    match &body["data"]["result"] {
        Value::Array(v) => Ok(v.clone()),
        // Scalars and strings count as data.
        other if !other.is_null() => Ok(vec![other.clone()]),
        _ => Ok(Vec::new()),
    }
}

/// Runs each expression until it returns data or `deadline` passes; returns
/// the expressions that never did, with the last error if any.
async fn until_all_have_data(
    http: &reqwest::Client,
    prom: &Prometheus,
    exprs: &[Query],
    deadline: Instant,
) -> Vec<String> {
    let mut pending: Vec<&Query> = exprs.iter().collect();
    let mut last_err = std::collections::HashMap::new();
    loop {
        let mut still = Vec::new();
        for item in pending {
            match instant_query(http, prom, &item.1).await {
                Ok(v) if !v.is_empty() => {}
                Ok(_) => still.push(item),
                Err(e) => {
                    last_err.insert(item.0.clone(), e);
                    still.push(item);
                }
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pending
        .into_iter()
        .map(|(name, expr)| match last_err.get(name) {
            Some(e) => format!("{name}: {expr}\n    ({e})"),
            None => format!("{name}: {expr}\n    (empty result)"),
        })
        .collect()
}

/// The dashboard's queries: (panel title / refId, expr with variables substituted).
/// A named PromQL expression: (panel title and refId, expr).
type Query = (String, String);
/// A `label_values(metric, label)` template variable: (metric, label).
type LabelValues = (String, String);

fn dashboard_queries() -> (Vec<Query>, Vec<LabelValues>) {
    let text =
        std::fs::read_to_string(repo_path("deploy/grafana/mantissa.json")).expect("read the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    // Panels nested in collapsed rows.
    let nested: Vec<&Value> = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten()
        .collect();
    panels.extend(nested);
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let mut e = expr.to_owned();
            for (var, value) in VARIABLES {
                e = e.replace(var, value);
            }
            assert!(
                !e.contains('$'),
                "panel {:?} uses a template variable the test does not know: {expr}",
                panel["title"]
            );
            exprs.push((
                format!(
                    "{} [{}]",
                    panel["title"].as_str().unwrap_or("?"),
                    target["refId"].as_str().unwrap_or("?")
                ),
                e,
            ));
        }
    }
    // Template variables `label_values(metric, label)`.
    let mut vars = Vec::new();
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let def = var["definition"]
            .as_str()
            .expect("query variables have a definition");
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!(
                    "variable {} is not label_values(metric, label): {def}",
                    var["name"]
                )
            });
        let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
        vars.push((metric.trim().to_owned(), label.trim().to_owned()));
    }
    (exprs, vars)
}

/// Metric family names in a Prometheus text exposition.
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_metrics_rules_and_dashboard_work_in_prometheus() {
    let started = Instant::now();
    // Fails here, before any work, when the binary is missing.
    let _ = prometheus_binary();
    let (dashboard, variables) = dashboard_queries();
    assert!(
        dashboard.len() >= 20,
        "the dashboard has {} queries",
        dashboard.len()
    );

    let mut demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        duration: LOAD,
        progress: None,
        ..Default::default()
    })
    .await
    .expect("the demo starts");
    let target = demo.metrics_addr();
    let mut prom = Prometheus::start(target);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // 1. Prometheus is up and scrapes the demo.
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(status) = prom.exited() {
            panic!("prometheus exited early ({status})\n{}", prom.log_tail());
        }
        let up = instant_query(&http, &prom, r#"up{job="mantissa"}"#).await;
        if let Ok(v) = &up {
            if v.first().and_then(|s| s["value"][1].as_str()) == Some("1") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape {target} within {STARTUP:?} (last answer: {up:?})\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let up_after = started.elapsed();

    // 2. Let the load run to the end (outage, fallbacks, cooldown, resets).
    let report = tokio::time::timeout(LOAD + Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo finishes within 30 s of its load")
        .expect("the demo runs");
    assert!(report.llm_calls > 0 && report.resets > 0, "{}", report.text);
    let exposition = http
        .get(format!("http://{target}/metrics"))
        .send()
        .await
        .expect("scrape the demo")
        .text()
        .await
        .expect("exposition text");
    let exposed = exposed_names(&exposition);
    promtool_check_metrics(&exposition);

    // 3. Every catalogued metric the demo exports is stored by Prometheus.
    let mut produced = Vec::new();
    let mut not_produced = Vec::new();
    // (catalogued name, the series Prometheus stores for it)
    let names = catalog::COUNTERS
        .iter()
        .chain(catalog::GAUGES)
        .map(|n| (*n, n.to_string()))
        .chain(
            catalog::HISTOGRAMS
                .iter()
                .map(|(n, _)| (*n, format!("{n}_bucket"))),
        );
    for (name, series) in names {
        if exposed.contains(&series) {
            produced.push((name.to_owned(), format!("count({{__name__=\"{series}\"}})")));
        } else {
            not_produced.push(name);
        }
    }
    let missing: Vec<&&str> = REQUIRED.iter().filter(|n| not_produced.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "the demo does not export {missing:?} (the dashboard and the rules read them); it exports \
         {exposed:?}\n{}",
        report.text
    );
    let settle = Instant::now() + SETTLE;
    let absent = until_all_have_data(&http, &prom, &produced, settle).await;
    assert!(
        absent.is_empty(),
        "exported by the demo but not queryable in Prometheus:\n{}\n{}",
        absent.join("\n"),
        prom.log_tail()
    );

    // 4. Every query of the dashboard returns data.
    let empty = until_all_have_data(&http, &prom, &dashboard, settle).await;
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries return no data:\n{}\n{}",
        empty.len(),
        dashboard.len(),
        empty.join("\n"),
        prom.log_tail()
    );

    // 5. The dashboard's variables find values.
    for (metric, label) in &variables {
        let body: Value = http
            .get(format!("{}/api/v1/label/{label}/values", prom.url))
            .query(&[("match[]", metric.as_str())])
            .send()
            .await
            .expect("label values")
            .json()
            .await
            .expect("label values JSON");
        let values = body["data"].as_array().map(Vec::len).unwrap_or(0);
        assert!(values > 0, "label_values({metric}, {label}) is empty: {body}");
    }

    // 6. The rules loaded without errors and are evaluated.
    let rules: Value = http
        .get(format!("{}/api/v1/rules", prom.url))
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("rules JSON");
    let groups = rules["data"]["groups"].as_array().cloned().unwrap_or_default();
    assert!(groups.len() >= 2, "rule groups not loaded: {rules}");
    let mut recorded = Vec::new();
    for rule in groups.iter().filter_map(|g| g["rules"].as_array()).flatten() {
        assert_eq!(rule["health"], "ok", "rule {} is unhealthy: {rule}", rule["name"]);
        if rule["type"] == "recording" {
            let name = rule["name"].as_str().unwrap_or_default().to_owned();
            recorded.push((name.clone(), name));
        }
    }
    // Every recording rule has data on the demo's traffic.
    assert!(recorded.len() >= 20, "recording rules not loaded: {rules}");
    let empty = until_all_have_data(&http, &prom, &recorded, settle).await;
    assert!(
        empty.is_empty(),
        "{} of {} recording rules have no data:\n{}",
        empty.len(),
        recorded.len(),
        empty.join("\n")
    );

    eprintln!(
        "prometheus_e2e: target up after {up_after:?}; {} catalogued metrics stored, {} dashboard queries \
         and {} recording rules with data; not produced by the demo: {not_produced:?}; demo: {} LLM calls, \
         {} fallbacks, {} resets; total {:?}",
        produced.len(),
        dashboard.len(),
        recorded.len(),
        report.llm_calls,
        report.fallbacks,
        report.resets,
        started.elapsed()
    );
    drop(prom);
    demo.shutdown().await.expect("stop serving /metrics");
}
