//! Event sinks: the JSON-lines sink writes one parseable event per call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{
    BoxError, EventKind, FailureClass, HealthEvent, Outcome, TierSet, ToolRequest, ToolResponse, Usage,
};
use mantissa_health::{HealthLayer, JsonLinesSink};
use tower::{Layer, ServiceExt, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[tokio::test(start_paused = true)]
async fn json_lines_sink_writes_one_parseable_event_per_call() {
    let dir = std::env::temp_dir().join(format!(
        "mantissa-health-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let sink = Arc::new(JsonLinesSink::create(&path).unwrap());

    let layer = HealthLayer::with_tiers(TierSet::default()).sink(sink.clone());
    let llm_svc = layer.layer(llm("mock-small", Usage::new(3, 4), Duration::from_millis(20)));
    for i in 0..3 {
        llm_svc
            .clone()
            .oneshot(chat(&format!("s{i}"), "trader", Some("mock-small")))
            .await
            .unwrap();
    }
    let tool = layer.layer(service_fn(|_r: ToolRequest| async {
        Ok::<_, BoxError>(ToolResponse::error("no"))
    }));
    tool.oneshot(tool_req("s9", "trader", "get_price")).await.unwrap();
    drop((layer, llm_svc));
    assert_eq!(sink.dropped(), 0);
    drop(Arc::try_unwrap(sink).unwrap()); // flushes and joins the writer

    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<HealthEvent> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].session.as_str(), "s0");
    assert_eq!(&*events[0].subject, "mock-small");
    assert_eq!(events[0].usage, Usage::new(3, 4));
    assert_eq!(events[0].duration, Duration::from_millis(20));
    assert_eq!(events[0].tier.as_ref().map(|t| t.as_str()), Some("low"));
    assert_eq!(events[3].kind, EventKind::Tool);
    assert_eq!(events[3].outcome, Outcome::Failure(FailureClass::ToolError));
    std::fs::remove_dir_all(&dir).unwrap();
}
