use std::time::Duration;

use mantissa_core::catalog;
use mantissa_core::control::TierControl;
use mantissa_core::{
    BoxError, FailureClass, LlmRequest, LlmResponse, Message, Tier, TierRaised, TierSet, TierSource,
    ToolSpec, Usage,
};
use metrics_util::debugging::DebugValue;
use tower::{Layer, Service, ServiceExt};

use crate::router::CooldownPolicy;
use crate::router::tests::{Mode, Script, fixture, metric, with_metrics};
use crate::{LlmTriage, RuleTriage, TierDecision, TriageLayer, TriageReason};

fn user(session: &str, agent: &str, text: &str) -> LlmRequest {
    LlmRequest::new(
        session,
        agent,
        vec![Message::system("You are an agent."), Message::user(text)],
    )
}

/// A caller's own extension.
#[derive(Debug, Clone, PartialEq)]
struct Marker(u32);

#[tokio::test]
async fn decisions_are_typed_fields_and_extensions_stay_the_callers() {
    let f = fixture(CooldownPolicy::default());
    let tiers = TierSet::default();
    let svc = TriageLayer::new(&tiers, RuleTriage::new(&tiers)).layer(f.router.clone());

    // Nothing on the normal path inserts into extensions.
    let resp = svc
        .clone()
        .oneshot(user("s1", "helper", "hi there!"))
        .await
        .unwrap();
    let seen = f.small.last_request().unwrap();
    assert!(seen.extensions.is_empty());
    assert!(seen.tier_decision().is_some());
    assert!(resp.extensions.is_empty());
    assert_eq!(resp.tier_decision(), seen.tier_decision());
    assert_eq!(resp.routed().unwrap().model.as_str(), "mock-small");

    // A caller's extensions reach the upstream untouched.
    let mut req = user("s2", "helper", "hi there!");
    req.extensions.insert(Marker(7));
    svc.clone().oneshot(req).await.unwrap();
    let seen = f.small.last_request().unwrap();
    assert_eq!(seen.extensions.len(), 1);
    assert_eq!(seen.extensions.get::<Marker>(), Some(&Marker(7)));
}

const CODE: &str = "Why does this panic?\n```rust\nfn main() { let v: Vec<u8> = vec![]; v[0]; }\n```";

#[test]
fn decisions_reach_the_inner_service_the_response_and_the_metrics() {
    let snap = with_metrics(|| async {
        let f = fixture(CooldownPolicy::default());
        let tiers = TierSet::default();
        let svc = TriageLayer::new(&tiers, RuleTriage::new(&tiers)).layer(f.router.clone());

        let resp = svc
            .clone()
            .oneshot(user("s1", "helper", "hi there!"))
            .await
            .unwrap();
        assert_eq!(resp.model.as_str(), "mock-small");
        let d = resp.tier_decision().unwrap();
        assert_eq!((d.tier.as_str(), d.reason), ("low", TriageReason::Rules));
        // The inner service saw the tier and the decision in the request.
        let seen = f.small.last_request().unwrap();
        assert_eq!(seen.tier.as_ref().unwrap().as_str(), "low");
        assert_eq!(seen.tier_decision().unwrap(), d);

        let resp = svc.clone().oneshot(user("s2", "helper", CODE)).await.unwrap();
        assert_eq!(resp.model.as_str(), "mock-large");
        assert_eq!(resp.routed().unwrap().requested_tier.as_str(), "high");

        // Explicit tiers and models are kept.
        let r = user("s3", "helper", CODE).with_tier("medium");
        let resp = svc.clone().oneshot(r).await.unwrap();
        assert_eq!(resp.model.as_str(), "mock-medium");
        assert_eq!(resp.tier_decision().unwrap().reason, TriageReason::Explicit);
        let r = user("s3", "helper", "hi").with_model("mock-large");
        let resp = svc.clone().oneshot(r).await.unwrap();
        assert_eq!(resp.model.as_str(), "mock-large");
        let d = resp.tier_decision().unwrap();
        assert_eq!((d.tier.as_str(), d.reason), ("high", TriageReason::Explicit));
    })
    .snapshot()
    .into_vec();
    let decisions = |tier: &str, reason: &str| {
        metric(
            &snap,
            catalog::TRIAGE_DECISIONS_TOTAL,
            &[("agent", "helper"), ("tier", tier), ("reason", reason)],
        )
    };
    assert_eq!(decisions("low", "rules"), Some(&DebugValue::Counter(1)));
    assert_eq!(decisions("high", "rules"), Some(&DebugValue::Counter(1)));
    assert_eq!(decisions("medium", "explicit"), Some(&DebugValue::Counter(1)));
    assert_eq!(decisions("high", "explicit"), Some(&DebugValue::Counter(1)));
    // Scores are recorded for strategy decisions only.
    match metric(&snap, catalog::TRIAGE_SCORE, &[("agent", "helper")]) {
        Some(DebugValue::Histogram(v)) => {
            assert_eq!(v.len(), 2);
            assert!(v[0].into_inner() < 0.25 && v[1].into_inner() >= 0.6, "{v:?}");
        }
        other => panic!("no score histogram: {other:?}"),
    }
}

/// Stickiness lives in the session layer inside triage: triage says who
/// chose the tier, and reports the tier that served when the session layer
/// raised it (reason `sticky`), in the response and in the metrics.
#[test]
fn a_decision_raised_by_the_session_layer_is_reported_as_sticky() {
    let snap = with_metrics(|| async {
        let tiers = TierSet::default();
        let catalog = mantissa_core::Catalog::new(&tiers);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // The session layer: raises a strategy decision to `high`.
        let session = {
            let seen = seen.clone();
            tower::service_fn(move |req: LlmRequest| {
                seen.lock().unwrap().push(req.ctx);
                let mut resp = LlmResponse::new("m", Message::assistant("ok"), Usage::default());
                if req.ctx.tier_source == TierSource::Triage {
                    resp.extensions.insert(TierRaised {
                        from: req.tier.clone().unwrap(),
                        to: Tier::high(),
                    });
                }
                std::future::ready(Ok::<_, BoxError>(resp))
            })
        };
        let svc = TriageLayer::new(&tiers, RuleTriage::new(&tiers))
            .catalog(catalog.clone())
            .layer(session);
        let mut req = user("s1", "helper", "thanks!");
        catalog.resolve(&mut req);
        let resp = svc.clone().oneshot(req).await.unwrap();
        let d = resp.tier_decision().unwrap();
        assert_eq!((d.tier.as_str(), d.reason), ("high", TriageReason::Sticky));
        // The tier triage chose reached the session layer as an index.
        let ctx = seen.lock().unwrap()[0];
        assert_eq!(
            (ctx.tier, ctx.tier_source),
            (catalog.tier_index("low"), TierSource::Triage)
        );

        // An explicit tier is the caller's: never raised.
        let mut req = user("s1", "helper", "thanks!").with_tier("medium");
        catalog.resolve(&mut req);
        let resp = svc.clone().oneshot(req).await.unwrap();
        let d = resp.tier_decision().unwrap();
        assert_eq!((d.tier.as_str(), d.reason), ("medium", TriageReason::Explicit));
        assert_eq!(seen.lock().unwrap()[1].tier_source, TierSource::Caller);
    })
    .snapshot()
    .into_vec();
    assert_eq!(
        metric(
            &snap,
            catalog::TRIAGE_DECISIONS_TOTAL,
            &[("agent", "helper"), ("tier", "high"), ("reason", "sticky")]
        ),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        metric(
            &snap,
            catalog::TRIAGE_DECISIONS_TOTAL,
            &[("agent", "helper"), ("tier", "low"), ("reason", "rules")]
        ),
        None,
        "the raised decision is counted once, as the tier that served"
    );
}

#[tokio::test(start_paused = true)]
async fn agents_can_be_pinned_to_a_tier() {
    let f = fixture(CooldownPolicy::default());
    let tiers = TierSet::default();
    let layer = TriageLayer::new(&tiers, RuleTriage::new(&tiers));
    let control = layer.control();
    let svc = layer.layer(f.router.clone());
    control.set_agent_tier(&"trader".into(), Some(Tier::high()));
    control.set_agent_tier(&"other".into(), Some(Tier::new("ultra"))); // ignored
    assert_eq!(control.agent_tier(&"other".into()), None);
    let r = svc.clone().oneshot(user("s", "trader", "hi")).await.unwrap();
    assert_eq!(r.model.as_str(), "mock-large");
    assert_eq!(r.tier_decision().unwrap().reason, TriageReason::Override);
    let r = svc.clone().oneshot(user("s", "helper", "hi")).await.unwrap();
    assert_eq!(r.model.as_str(), "mock-small");
    control.set_agent_tier(&"trader".into(), None);
    let r = svc.clone().oneshot(user("s2", "trader", "hi")).await.unwrap();
    assert_eq!(r.model.as_str(), "mock-small");
}

/// A control handle taken before a setter still pins agents for the
/// services the layer builds afterwards: no setter invalidates it.
#[tokio::test(start_paused = true)]
async fn a_control_taken_before_a_setter_stays_valid() {
    let f = fixture(CooldownPolicy::default());
    let tiers = TierSet::default();
    let layer = TriageLayer::new(&tiers, RuleTriage::new(&tiers));
    let control = layer.control();
    let layer = layer
        .catalog(mantissa_core::Catalog::new(&tiers))
        .agent_labels(mantissa_core::BoundedLabels::new(["trader"]));
    let svc = layer.layer(f.router.clone());
    control.set_agent_tier(&"trader".into(), Some(Tier::high()));
    let r = svc.clone().oneshot(user("s", "trader", "hi")).await.unwrap();
    assert_eq!(r.model.as_str(), "mock-large");
    assert_eq!(layer.control().agent_tier(&"trader".into()), Some(Tier::high()));
}

fn answering(
    mode: Mode,
    answer: &'static str,
) -> impl tower::Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let script = Script::new(mode);
    tower::service_fn(move |req: LlmRequest| {
        let script = script.clone();
        async move {
            let mut svc = script.service();
            let resp = svc.ready().await?.call(req).await?;
            Ok::<_, BoxError>(LlmResponse::new(
                resp.model,
                Message::assistant(answer),
                Usage::default(),
            ))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn llm_triage_uses_the_answer_or_falls_back() {
    use crate::AsyncTriage;
    let tiers = TierSet::default();
    let code = user("s", "a", CODE);
    let chat = user("s", "a", "hello");
    let cases: Vec<(Mode, &'static str, &LlmRequest, &str, TriageReason)> = vec![
        (Mode::Ok, "Medium.", &chat, "medium", TriageReason::Model),
        (Mode::Ok, "  HIGH", &chat, "high", TriageReason::Model),
        (Mode::Ok, "0.9", &chat, "high", TriageReason::Model),
        (
            Mode::Ok,
            "0.1 because it is easy",
            &code,
            "low",
            TriageReason::Model,
        ),
        // Garbled, out of range, failed, late: the rule fallback decides.
        (Mode::Ok, "banana", &code, "high", TriageReason::ModelFallback),
        (Mode::Ok, "7", &chat, "low", TriageReason::ModelFallback),
        (Mode::Ok, "", &code, "high", TriageReason::ModelFallback),
        (
            Mode::Fail(FailureClass::UpstreamServer, 500),
            "high",
            &chat,
            "low",
            TriageReason::ModelFallback,
        ),
        (
            Mode::Sleep(Duration::from_secs(5)),
            "high",
            &chat,
            "low",
            TriageReason::ModelFallback,
        ),
    ];
    for (mode, answer, req, tier, reason) in cases {
        let triage = LlmTriage::new(answering(mode, answer), &tiers);
        let d = triage.decide(req).await;
        assert_eq!((d.tier.as_str(), d.reason), (tier, reason), "answer {answer:?}");
    }
    // The late answer was abandoned at the timeout.
    let start = tokio::time::Instant::now();
    let triage = LlmTriage::new(answering(Mode::Sleep(Duration::from_secs(5)), "high"), &tiers)
        .timeout(Duration::from_millis(500));
    triage.decide(&chat).await;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn llm_triage_sends_a_small_prompt_to_the_classifier_tier() {
    let tiers = TierSet::default();
    let f = fixture(CooldownPolicy::default());
    // The router itself is the classifier: the ask goes to the lowest tier.
    let triage = LlmTriage::new(f.router.clone(), &tiers).max_request_bytes(9);
    let svc = TriageLayer::new(&tiers, triage).layer(f.router.clone());
    let resp = svc.oneshot(user("s", "a", "ééééééééé tell me")).await.unwrap();
    // The mock answers "ok": unparseable, so the rule fallback decided.
    let d = resp.tier_decision().unwrap();
    assert_eq!(d.reason, TriageReason::ModelFallback);
    let ask = f.small.first_request().unwrap();
    let prompt = ask.messages()[0].text().to_owned();
    assert!(prompt.contains("low, medium or high"), "{prompt}");
    assert!(
        prompt.contains("<<<\néééé\n>>>"),
        "truncated on a char boundary: {prompt}"
    );
    assert_eq!(ask.params.max_tokens, Some(8));
    assert!(
        LlmTriage::new(f.router.clone(), &tiers)
            .prompt("no placeholder")
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn closures_are_strategies_and_tools_alone_stay_low() {
    let f = fixture(CooldownPolicy::default());
    let tiers = TierSet::default();
    let by_tools = |req: &LlmRequest| {
        let tier = if req.tools.is_empty() {
            Tier::low()
        } else {
            Tier::medium()
        };
        TierDecision::new(tier, 0.5, TriageReason::Custom("tools"))
    };
    let svc = TriageLayer::new(&tiers, by_tools).layer(f.router.clone());
    let r = user("s", "a", "x").with_tools(vec![ToolSpec::function("t", "d", serde_json::json!({}))]);
    let resp = svc.oneshot(r).await.unwrap();
    assert_eq!(resp.model.as_str(), "mock-medium");
    assert_eq!(resp.tier_decision().unwrap().reason.as_str(), "tools");
}
