//! The official OpenAI Python SDK (PyPI `openai`) as the client of a gateway
//! in front of the in-repo HTTP mock upstream: plain and streamed calls with
//! `model="auto"`, a tier name and a model id, for two agents; a tool call;
//! `models.list()`; errors. Then `/metrics` counts the calls per agent.
//!
//! Needs a Python with `openai`: `MANTISSA_PYTHON`, else `target/pyenv`
//! (both prepared by `scripts/test`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{key, start, sum_for_agent};
use mantissa::mock::HttpMockLlm;
use serde_json::{Value, json};
use wiremock::{Match, Mock, Request, ResponseTemplate};

const INSTALL_HINT: &str = "run `scripts/test` (it creates target/pyenv and runs `pip install openai` into it), \
     or point MANTISSA_PYTHON at a Python that has the `openai` package";

fn python() -> PathBuf {
    let python = match std::env::var_os("MANTISSA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            root.join("target/pyenv/bin/python")
        }
    };
    let check = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output();
    match check {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} cannot import openai ({}): {INSTALL_HINT}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("no Python at {} ({e}): {INSTALL_HINT}", python.display()),
    }
}

/// Requests that offer tools.
struct OffersTools;

impl Match for OffersTools {
    fn matches(&self, request: &Request) -> bool {
        serde_json::from_slice::<Value>(&request.body).is_ok_and(|b| b.get("tools").is_some())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_gets_answers_through_the_gateway() {
    let python = python();
    let mock = HttpMockLlm::start().await;
    // The model asks for a tool call whenever tools are offered.
    Mock::given(wiremock::matchers::method("POST"))
        .and(OffersTools)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-tool", "object": "chat.completion", "created": 0, "model": "any",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_sdk", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
        })))
        .mount(mock.server())
        .await;
    let keys = vec![
        key(
            "both",
            "mk-sdk-both",
            &["sdk-alpha", "sdk-beta"],
            Some("sdk-alpha"),
        ),
        key("beta", "mk-sdk-beta", &["sdk-beta"], Some("sdk-beta")),
    ];
    let gw = start(&mock, &["sdk-alpha", "sdk-beta"], keys, |_| {}).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(gw.url("/v1"))
        .args(["mk-sdk-both", "mk-sdk-beta"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the SDK script finishes in time")
        .expect("the SDK script starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sdk_client.py failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let results = report["results"].as_array().unwrap();
    let find = |case: &str, agent: &str, requested: &str| -> &Value {
        results
            .iter()
            .find(|r| r["case"] == case && r["agent"] == agent && r["requested"] == requested)
            .unwrap_or_else(|| panic!("no {case} result for {agent} {requested}"))
    };

    for agent in ["sdk-alpha", "sdk-beta"] {
        // Plain: auto (triage: low), a tier name, a model id.
        for (requested, tier, model) in [
            ("auto", "low", "gw-small"),
            ("high", "high", "gw-large"),
            ("gw-medium", "medium", "gw-medium"),
        ] {
            let r = find("plain", agent, requested);
            assert_eq!(
                (r["tier"].as_str(), r["model"].as_str()),
                (Some(tier), Some(model)),
                "{r}"
            );
            assert_eq!(r["header_model"], model);
            assert_eq!(r["reset"], "none");
            assert_eq!(r["content"], format!("mock reply to: hello from {agent}"));
            assert_eq!(r["finish_reason"], "stop");
            assert!(r["total_tokens"].as_u64().unwrap() > 0);
        }
        // Streamed, with include_usage.
        for (requested, tier, model) in [
            ("auto", "low", "gw-small"),
            ("medium", "medium", "gw-medium"),
            ("gw-large", "high", "gw-large"),
        ] {
            let r = find("streamed", agent, requested);
            assert_eq!(
                (r["tier"].as_str(), r["header_model"].as_str()),
                (Some(tier), Some(model)),
                "{r}"
            );
            assert_eq!(r["content"], format!("mock reply to: stream to {agent}"));
            assert_eq!(r["finish_reason"], "stop");
            assert!(r["total_tokens"].as_u64().unwrap() > 0, "{r}");
            assert!(r["chunks"].as_u64().unwrap() >= 3);
        }
    }
    let tools = results.iter().find(|r| r["case"] == "tools").unwrap();
    assert_eq!(tools["finish_reason"], "tool_calls");
    assert_eq!(
        tools["tool_calls"],
        json!([{"id": "call_sdk", "name": "get_weather", "arguments": {"city": "Paris"}}])
    );
    let models = results.iter().find(|r| r["case"] == "models").unwrap();
    assert_eq!(
        models["ids"],
        json!([
            "auto",
            "low",
            "medium",
            "high",
            "gw-small",
            "gw-medium",
            "gw-large"
        ])
    );
    let error = |case: &str| results.iter().find(|r| r["case"] == case).unwrap();
    assert_eq!(
        (
            error("unknown_model")["status"].as_u64(),
            error("unknown_model")["exception"].as_str()
        ),
        (Some(404), Some("NotFoundError"))
    );
    assert_eq!(error("unknown_model")["code"], "model_not_found");
    assert_eq!(
        (
            error("bad_request")["status"].as_u64(),
            error("bad_request")["param"].as_str()
        ),
        (Some(400), Some("messages"))
    );
    assert_eq!(
        (
            error("bad_key")["status"].as_u64(),
            error("bad_key")["exception"].as_str()
        ),
        (Some(401), Some("AuthenticationError"))
    );
    assert_eq!(
        (
            error("agent_not_allowed")["status"].as_u64(),
            error("agent_not_allowed")["exception"].as_str()
        ),
        (Some(403), Some("PermissionDeniedError"))
    );

    // /metrics counts the calls under the two agents: alpha 3 plain + 3
    // streamed + 1 tool call, beta 3 + 3; refused calls never reach the stack.
    let metrics = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sum_for_agent(&metrics, "mantissa_calls_total", "sdk-alpha"), 7.0);
    assert_eq!(sum_for_agent(&metrics, "mantissa_calls_total", "sdk-beta"), 6.0);
    assert_eq!(
        sum_for_agent(&metrics, "mantissa_calls_in_flight", "sdk-alpha"),
        0.0
    );
    eprintln!("openai SDK {}", report["openai_version"]);
}
