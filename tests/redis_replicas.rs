//! Two `AgentStack`s as two replicas behind a load balancer, sharing state
//! through a real `redis-server` started by the test (see the Redis crate's
//! `tests/common`): stickiness and cooldowns follow the session and the
//! model across replicas, and a Redis outage loses no call. Fails (never
//! skips) when the binary is missing: `apt-get install redis-server`
//! (`scripts/test` installs it).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../crates/mantissa-redis/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use mantissa::core::control::ModelControl;
use mantissa::core::{BoxError, LlmRequest, LlmResponse, METADATA_STAKES, Message, ModelSpec, Usage};
use mantissa::redis::RedisConfig;
use mantissa::triage::{ModelState, TierDecision, TriageReason};
use mantissa::{AgentStack, LlmService, Upstream};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// Every model answers at once with its own id.
fn upstream() -> Upstream {
    Upstream::Custom(Arc::new(|spec: &ModelSpec| -> Result<LlmService, BoxError> {
        let id = spec.id.clone();
        Ok(BoxCloneSyncService::new(tower::service_fn(
            move |_req: LlmRequest| {
                std::future::ready(Ok::<_, BoxError>(LlmResponse::new(
                    id.clone(),
                    Message::assistant("ok"),
                    Usage::new(10, 2),
                )))
            },
        )))
    }))
}

/// A triage that reads the tier off the request's `stakes` metadata.
fn by_stakes(req: &LlmRequest) -> TierDecision {
    let tier = match req.metadata.get(METADATA_STAKES).map(String::as_str) {
        Some("high") => "high",
        _ => "low",
    };
    TierDecision::new(tier, 0.5, TriageReason::Custom("stakes_test"))
}

fn replica(server: &RedisServer, prefix: &str) -> AgentStack {
    AgentStack::builder(upstream())
        .triage(by_stakes)
        .redis(
            RedisConfig::new(server.url())
                .prefix(prefix)
                .timeout(Duration::from_millis(50)),
        )
        .without_monitor()
        .build()
        .unwrap()
}

fn turn(session: &str, stakes: &str) -> LlmRequest {
    LlmRequest::new(session, "trader", vec![Message::user("go")]).with_metadata(METADATA_STAKES, stakes)
}

/// Subscribers of the replicas' model-state channel.
fn subscribers(server: &RedisServer, prefix: &str) -> usize {
    let reply = server.command(&["PUBSUB", "NUMSUB", &format!("{prefix}:models")]);
    reply
        .lines()
        .last()
        .and_then(|l| l.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stickiness_follows_the_session_across_replicas() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, "st"), replica(&server, "st"));
    let first = a.llm("trader").oneshot(turn("s1", "high")).await.unwrap();
    assert_eq!(first.model.as_str(), "mock-large");
    // The next turn of the session lands on the other replica: it is raised
    // to the session's tier there (once A's write has reached Redis).
    eventually("B raises the session's cheap turn to high", async || {
        let r = b.llm("trader").oneshot(turn("s1", "low")).await.unwrap();
        r.model.as_str() == "mock-large"
    })
    .await;
    let other = b.llm("trader").oneshot(turn("s2", "low")).await.unwrap();
    assert_eq!(other.model.as_str(), "mock-small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_cooldown_on_one_replica_is_honoured_by_the_other() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, "cd"), replica(&server, "cd"));
    // Both replicas are connected before the cooldown is published.
    for r in [&a, &b] {
        r.llm("trader").oneshot(turn("warm", "low")).await.unwrap();
    }
    eventually("both replicas subscribed", async || {
        subscribers(&server, "cd") == 2
    })
    .await;
    assert!(
        a.router()
            .cool_down(&"mock-small".into(), Duration::from_secs(60))
    );
    eventually("B sees mock-small cooled down", async || {
        b.router().model_snapshot("mock-small").unwrap().state != ModelState::Healthy
    })
    .await;
    // B skips the cooled model from its next call.
    let r = b.llm("trader").oneshot(turn("s3", "low")).await.unwrap();
    assert_ne!(r.model.as_str(), "mock-small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_no_call_and_sharing_resumes() {
    let mut server = RedisServer::start();
    let (a, b) = (replica(&server, "kr"), replica(&server, "kr"));
    a.llm("trader").oneshot(turn("s1", "low")).await.unwrap();
    server.kill();
    // Redis is gone: every call on both replicas still succeeds, on local state.
    for i in 0..20 {
        let r = if i % 2 == 0 { &a } else { &b };
        let resp = r.llm("trader").oneshot(turn(&format!("k{i}"), "low")).await;
        assert!(resp.is_ok(), "call {i} failed while Redis was down: {resp:?}");
    }
    server.restart();
    // Back: a session's tier chosen on A reaches B again.
    a.llm("trader").oneshot(turn("after", "high")).await.unwrap();
    eventually("sharing resumes after the restart", async || {
        a.llm("trader").oneshot(turn("after", "high")).await.unwrap();
        let r = b.llm("trader").oneshot(turn("after", "low")).await.unwrap();
        r.model.as_str() == "mock-large"
    })
    .await;
}
