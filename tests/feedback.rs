//! The learned triage and outcome feedback through the composed stack:
//! `[triage] kind = "learned"` from TOML, a call id on every triaged
//! response, `AgentStack::feedback` writing outcome lines, online updates.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use mantissa::AgentStack;
use mantissa::core::{LlmRequest, Message, Tier};
use mantissa::triage::{CallId, FeedbackError, Outcome};
use tower::ServiceExt;

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mantissa-feedback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn config(log: &std::path::Path, extra: &str) -> String {
    format!(
        "[triage]\nkind = \"learned\"\nfeedback_log = {:?}\n{extra}\n[metrics]\ninstall = false\n[monitor]\nenabled = false\n",
        log.display().to_string()
    )
}

#[tokio::test]
async fn feedback_writes_an_outcome_line_per_reported_call() {
    let log = temp_path("outcomes.jsonl");
    let stack = AgentStack::from_toml(&config(&log, "")).unwrap().build().unwrap();
    let prompt = "Prove step by step that there are infinitely many primes.";
    let resp = stack
        .llm("solver")
        .oneshot(LlmRequest::new("s1", "solver", vec![Message::user(prompt)]))
        .await
        .unwrap();
    let id = *resp
        .extensions
        .get::<CallId>()
        .expect("a call id on the response");
    let decision = resp.tier_decision().unwrap();
    assert_eq!(decision.reason.as_str(), "learned");

    stack.feedback(id, 0.0).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1);
    let o: Outcome = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(o.prompt, prompt);
    assert_eq!(o.tier, decision.tier.as_str());
    assert_eq!(o.model, resp.model.as_str());
    assert_eq!(o.score, 0.0);

    // Reported once; unknown ids and bad scores are errors.
    assert!(matches!(stack.feedback(id, 1.0), Err(FeedbackError::UnknownCall(i)) if i == id));
    assert!(matches!(
        stack.feedback(CallId(999_999), 1.0),
        Err(FeedbackError::UnknownCall(_))
    ));
    let resp = stack
        .llm("solver")
        .oneshot(LlmRequest::new("s2", "solver", vec![Message::user("hi")]))
        .await
        .unwrap();
    let id = *resp.extensions.get::<CallId>().unwrap();
    let err = stack.feedback(id, 1.5).unwrap_err();
    assert_eq!(err.to_string(), "feedback score must be in [0, 1], got 1.5");
    stack.feedback(id, 1.0).unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
}

#[tokio::test]
async fn without_a_feedback_log_feedback_is_a_clear_error() {
    let stack = AgentStack::demo().without_monitor().build().unwrap();
    let resp = stack
        .llm("a")
        .oneshot(LlmRequest::new("s", "a", vec![Message::user("hello")]))
        .await
        .unwrap();
    assert!(resp.extensions.get::<CallId>().is_none());
    assert!(matches!(
        stack.feedback(CallId(1), 1.0),
        Err(FeedbackError::Disabled)
    ));
}

#[tokio::test]
async fn online_updates_move_the_served_model_and_roll_back() {
    let log = temp_path("online.jsonl");
    let stack = AgentStack::from_toml(&config(&log, "online_step = 0.5\nsticky = false"))
        .unwrap()
        .build()
        .unwrap();
    let learner = stack.feedback_log().unwrap().get_learner().unwrap().clone();
    let before = learner.snapshot();
    let prompt = "Summarise the meeting notes about the garden party.";
    let score_of = |m: &mantissa::triage::Model| m.score(prompt);
    for i in 0..10 {
        // Served by the cheap tier (the ladder's middle tier maps to no head
        // of a low/high model, so it would not be learned from).
        let mut req = LlmRequest::new(format!("s{i}"), "a", vec![Message::user(prompt)]);
        req.tier = Some(Tier::low());
        let resp = stack.llm("a").oneshot(req).await.unwrap();
        let id = *resp.extensions.get::<CallId>().unwrap();
        stack.feedback(id, 0.0).unwrap();
    }
    assert_eq!(learner.pending(), 10);
    assert_eq!(learner.apply_pending(), 10);
    let after = learner.snapshot();
    // The cheap tier failed every time: a stronger tier is needed more.
    assert!(
        score_of(&after) > score_of(&before) + 0.01,
        "{} -> {}",
        score_of(&before),
        score_of(&after)
    );
    assert!(learner.rollback());
    assert_eq!(score_of(&learner.snapshot()), score_of(&before));
}

#[test]
fn bad_triage_configs_name_the_field() {
    let err = AgentStack::from_toml("[triage]\nkind = \"oracle\"\n").unwrap_err();
    assert!(err.to_string().contains("triage.kind"), "{err}");
    let err = AgentStack::from_toml("[triage]\nexploration = 0.1\n").unwrap_err();
    assert!(err.to_string().contains("triage.exploration"), "{err}");
    let err = AgentStack::from_toml("[triage]\nkind = \"learned\"\nonline_step = 0.1\n").unwrap_err();
    assert!(err.to_string().contains("feedback_log"), "{err}");
    let err =
        AgentStack::from_toml("[triage]\nkind = \"learned\"\nmodel = \"/nonexistent/m.mtm\"\n").unwrap_err();
    assert!(err.to_string().contains("triage.model"), "{err}");
    let ok = AgentStack::from_toml("[triage]\nkind = \"learned\"\nshares = [0.5, 0.3, 0.2]\n");
    assert!(ok.is_ok());
}
