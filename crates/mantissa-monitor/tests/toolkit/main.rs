//! The health toolkit: its tool schemas, argument validation, what it
//! reports from the registry, and `log_agent_action`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::{FailureClass, HealthEvent, Outcome, SessionId, ToolRequest};
use mantissa_health::{HealthLayer, HealthRegistry};
use mantissa_monitor::{Condition, HealthToolkit, Rule, Selector, Severity, SystemMonitor};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tower::{Layer, ServiceExt};

#[path = "../support/mod.rs"]
mod support;
use support::*;

/// A small validator for the JSON Schema subset the toolkit uses: object
/// with typed properties, `enum`, `required`, `additionalProperties: false`.
fn validate(schema: &Value, args: &Value) -> Result<(), String> {
    let obj = args.as_object().ok_or("not an object")?;
    let props = schema["properties"].as_object().unwrap();
    for r in schema["required"].as_array().unwrap() {
        if !obj.contains_key(r.as_str().unwrap()) {
            return Err(format!("missing {r}"));
        }
    }
    for (k, v) in obj {
        let p = props.get(k).ok_or(format!("unknown {k}"))?;
        if p["type"] == "string" && !v.is_string() {
            return Err(format!("{k} not a string"));
        }
        if let Some(e) = p.get("enum")
            && !e.as_array().unwrap().contains(v)
        {
            return Err(format!("{k} not in enum"));
        }
    }
    Ok(())
}

#[test]
fn tool_schemas_are_structurally_valid_json_schema() {
    let specs = HealthToolkit::tool_specs();
    let names: Vec<&str> = specs.iter().map(|s| s.function.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "get_agent_health_summary",
            "list_active_alerts",
            "get_session_health",
            "log_agent_action"
        ]
    );
    let types = [
        "string", "number", "integer", "boolean", "object", "array", "null",
    ];
    for spec in &specs {
        let json = serde_json::to_value(spec).unwrap();
        assert_eq!(json["type"], "function");
        assert!(!json["function"]["description"].as_str().unwrap().is_empty());
        let p = &spec.function.parameters;
        assert_eq!(p["type"], "object");
        assert_eq!(p["additionalProperties"], false);
        let props = p["properties"].as_object().unwrap();
        for (name, prop) in props {
            assert!(types.contains(&prop["type"].as_str().unwrap()), "{name}");
            assert!(prop["description"].is_string(), "{name} is described");
            if let Some(e) = prop.get("enum") {
                assert!(e.as_array().unwrap().iter().all(Value::is_string));
            }
        }
        for r in p["required"].as_array().unwrap() {
            assert!(
                props.contains_key(r.as_str().unwrap()),
                "required {r} is a property"
            );
        }
    }
    let schema = |i: usize| &specs[i].function.parameters;
    assert!(validate(schema(0), &json!({"agent": "trader", "window": "15m"})).is_ok());
    assert!(validate(schema(0), &json!({"window": "1y"})).is_err());
    assert!(validate(schema(1), &json!({"severity": "critical"})).is_ok());
    assert!(validate(schema(2), &json!({})).is_err());
    assert!(
        validate(
            schema(3),
            &json!({"agent": "m", "action": "a", "outcome": "ok", "details": "d"})
        )
        .is_ok()
    );
    assert!(validate(schema(3), &json!({"agent": "m", "action": "a", "outcome": 1})).is_err());
}

#[tokio::test(start_paused = true)]
async fn toolkit_validates_arguments_and_reflects_the_registry() {
    let reg = HealthRegistry::new();
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(
            Rule::new("streak", Selector::models(), Condition::consecutive_failures(2))
                .severity(Severity::Critical),
        )
        .rule(
            Rule::new(
                "agent_streak",
                Selector::agents(),
                Condition::consecutive_failures(2),
            )
            .severity(Severity::Info),
        )
        .build()
        .unwrap();
    let toolkit = HealthToolkit::new(reg.clone())
        .with_monitor(monitor.clone())
        .with_session_health(|s: &SessionId| (s.as_str() == "s1").then(|| json!({"turns": 3})))
        .action_log_capacity(2);
    // Through a HealthLayer: the toolkit's own calls are measured as tools.
    let layer = HealthLayer::with_registry(reg.clone());
    let tools = layer.layer(toolkit.clone());
    let call = |name: &str, args: Value| {
        let req = ToolRequest::new("mon-1", "monitor", "c", name, args);
        let tools = tools.clone();
        async move { tools.oneshot(req).await.unwrap() }
    };

    ok(&reg, "m", 3, 200);
    fail(&reg, "m", 2);
    monitor.tick();

    let r = call(
        "get_agent_health_summary",
        json!({"agent": "trader", "window": "15m"}),
    )
    .await;
    assert!(!r.is_error, "{}", r.content);
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["window"], "15m");
    assert_eq!(v["agent"]["calls"], 5);
    assert_eq!(v["agent"]["failures"], 2);
    assert_eq!(v["agent"]["consecutive_failures"], 2);
    assert_eq!(v["agent"]["errors"]["upstream_server_error"], 2);
    assert_eq!(v["agent"]["active_alerts"][0]["rule"], "agent_streak");

    let r = call("get_agent_health_summary", Value::Null).await;
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["window"], "1m");
    let agents: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        agents.contains(&"trader") && agents.contains(&"monitor"),
        "{agents:?}"
    );
    assert_eq!(v["models"][0]["name"], "m");
    assert_eq!(v["models"][0]["active_alerts"][0]["severity"], "critical");

    let r = call("list_active_alerts", json!({"severity": "critical"})).await;
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(v["alerts"][0]["subject"]["name"], "m");
    assert_eq!(v["alerts"][0]["state"], "firing");
    let r = call("list_active_alerts", json!("{}")).await;
    assert_eq!(serde_json::from_str::<Value>(&r.content).unwrap()["count"], 2);

    let r = call("get_session_health", json!({"session": "s1"})).await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.content).unwrap()["health"]["turns"],
        3
    );

    for i in 0..3 {
        let r = call(
            "log_agent_action",
            json!({"agent": "manager", "action": format!("a{i}"), "outcome": "success", "details": "x"}),
        )
        .await;
        assert!(!r.is_error);
    }
    let log = toolkit.action_log();
    assert_eq!(
        log.iter().map(|l| l.action.as_str()).collect::<Vec<_>>(),
        ["a1", "a2"],
        "bounded"
    );

    let bad = [
        (
            "get_agent_health_summary",
            json!({"agent": 7}),
            "`agent` must be a string, got a number",
        ),
        (
            "get_agent_health_summary",
            json!({"window": "1y"}),
            "unknown window `1y`",
        ),
        (
            "get_agent_health_summary",
            json!({"agent": "nobody"}),
            "unknown agent `nobody` (known: monitor, trader)",
        ),
        (
            "get_agent_health_summary",
            json!({"agnet": "x"}),
            "unknown argument `agnet`",
        ),
        (
            "get_agent_health_summary",
            json!([1]),
            "arguments must be a JSON object, got an array",
        ),
        (
            "list_active_alerts",
            json!({"severity": "fatal"}),
            "unknown severity `fatal`",
        ),
        (
            "get_session_health",
            json!({}),
            "missing required argument `session`",
        ),
        (
            "get_session_health",
            json!({"session": "s2"}),
            "unknown session `s2`",
        ),
        (
            "log_agent_action",
            json!({"agent": "m", "action": "a"}),
            "missing required argument `outcome`",
        ),
        (
            "log_agent_action",
            json!({"agent": "m", "action": "", "outcome": "ok"}),
            "`action` must not be empty",
        ),
        (
            "log_agent_action",
            json!({"agent": "m", "action": "a", "outcome": "x".repeat(3000)}),
            "too long",
        ),
        ("delete_everything", json!({}), "unknown tool `delete_everything`"),
    ];
    for (tool, args, want) in bad {
        let r = call(tool, args.clone()).await;
        assert!(r.is_error, "{tool} {args}");
        assert!(r.content.contains(want), "{tool} {args}: {}", r.content);
    }
    // Every toolkit call went through the health layer as a tool call.
    let measured = reg.tool("get_agent_health_summary").unwrap();
    assert_eq!(measured.last_1m.calls, 7);
    assert_eq!(measured.last_1m.errors_of(FailureClass::ToolError), 5);

    // Without a monitor or a provider the tools say so.
    let bare = HealthToolkit::new(reg);
    assert!(
        bare.call("list_active_alerts", &json!({}))
            .content
            .contains("no monitor")
    );
    assert!(
        bare.call("get_session_health", &json!({"session": "s1"}))
            .content
            .contains("no session-health provider")
    );
}

#[tokio::test(start_paused = true)]
async fn log_agent_action_records_a_health_event_in_the_journal_summary_and_sinks() {
    let reg = HealthRegistry::new();
    let seen: Arc<Mutex<Vec<HealthEvent>>> = Arc::default();
    let toolkit = HealthToolkit::new(reg.clone()).event_sink({
        let seen = seen.clone();
        move |e: &HealthEvent| seen.lock().unwrap().push(e.clone())
    });
    ok(&reg, "m", 1, 10);
    let req = ToolRequest::new(
        "mgr-1",
        "manager",
        "c1",
        "log_agent_action",
        json!({"agent": "manager", "action": "cool_down m", "outcome": "success", "details": "error rate 80 %"}),
    );
    let r = toolkit.clone().oneshot(req).await.unwrap();
    assert!(!r.is_error, "{}", r.content);
    let failed = toolkit.call(
        "log_agent_action",
        &json!({"agent": "manager", "action": "reset s1", "outcome": "failed"}),
    );
    assert!(!failed.is_error, "{}", failed.content);

    // The registry's journal holds the action as a health event…
    let journal = reg.recent(10);
    let actions: Vec<&HealthEvent> = journal
        .iter()
        .filter(|e| e.kind.as_str() == "agent_action")
        .collect();
    assert_eq!(actions.len(), 2, "{journal:?}");
    let e = actions[0];
    assert_eq!(
        (e.agent.as_str(), e.session.as_str(), &*e.subject),
        ("manager", "mgr-1", "cool_down m")
    );
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(e.detail.as_deref(), Some("outcome: success; error rate 80 %"));
    assert_eq!(
        actions[1].outcome,
        Outcome::Failure(FailureClass::Other),
        "a failed action is not a success"
    );
    // …that counts as no call of any agent.
    assert_eq!(reg.agent_names(), ["trader"]);
    assert_eq!(reg.agent("trader").unwrap().total_calls, 1);

    // get_agent_health_summary shows it, with or without `agent`.
    let v: Value =
        serde_json::from_str(&toolkit.call("get_agent_health_summary", &Value::Null).content).unwrap();
    let listed: Vec<(&str, &str)> = v["recent_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("cool_down m", "success"), ("reset s1", "error")]);
    let r = toolkit.call("get_agent_health_summary", &json!({"agent": "manager"}));
    assert!(!r.is_error, "{}", r.content);
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["agent"], Value::Null, "no calls, no windows");
    assert_eq!(v["recent_actions"][1]["detail"], "outcome: failed");
    let v: Value = serde_json::from_str(
        &toolkit
            .call("get_agent_health_summary", &json!({"agent": "trader"}))
            .content,
    )
    .unwrap();
    assert_eq!(v["recent_actions"], json!([]));

    // The attached sink got the same events.
    let got = seen.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], *actions[0]);
    assert_eq!(got[1], *actions[1]);
}
