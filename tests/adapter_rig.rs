//! The `rig` adapter: a `rig::agent::Agent` on `MantissaModel` against the
//! loopback HTTP mock, its calls (model and tool) visible in the registry.
#![cfg(feature = "rig")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;

use futures_util::StreamExt;
use mantissa::adapters::rig::{MantissaModel, MeasuredTool, SESSION_PARAM};
use mantissa::core::{EventKind, ModelSpec, TierConfig, TierSet, ToolCall};
use mantissa::mock::http::{HttpMockLlm, HttpReply};
use mantissa::openai::OpenAiConfig;
use mantissa::{AgentSpec, AgentStack, Upstream};
use rig_core::agent::AgentBuilder;
use rig_core::completion::{CompletionModel, Prompt};
use rig_core::streaming::StreamedAssistantContent;
use rig_core::tool::Tool;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct PriceArgs {
    symbol: String,
}

struct GetMarketPrice;

impl Tool for GetMarketPrice {
    const NAME: &'static str = "get_market_price";
    type Error = Infallible;
    type Args = PriceArgs;
    type Output = f64;

    fn description(&self) -> String {
        "The last traded price of a symbol.".to_owned()
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"symbol": {"type": "string"}}})
    }

    async fn call(&self, args: PriceArgs) -> Result<f64, Infallible> {
        Ok(if args.symbol == "ACME" { 101.5 } else { 0.0 })
    }
}

fn stack(mock: &HttpMockLlm) -> AgentStack {
    let tiers = ["gpt-4o-mini", "gpt-4o", "o3"]
        .into_iter()
        .zip(["low", "medium", "high"])
        .map(|(id, tier)| TierConfig::new(tier, vec![ModelSpec::new(id)]))
        .collect();
    AgentStack::builder(Upstream::OpenAi(Box::new(
        OpenAiConfig::new(mock.base_url()).api_key("sk-test"),
    )))
    .agent(AgentSpec::new("trader"))
    .tiers(TierSet::new(tiers).unwrap())
    .without_monitor()
    .build()
    .unwrap()
}

#[tokio::test]
async fn a_rig_agent_calls_through_the_stack_and_its_tool_is_measured() {
    let mock = HttpMockLlm::start().await;
    let call = ToolCall::new("call_1", "get_market_price", &json!({"symbol": "ACME"}));
    mock.enqueue(HttpReply::tool_calls(vec![call]).with_usage(900, 20));
    mock.enqueue(HttpReply::text("ACME trades at 101.5: buy.").with_usage(1_000, 15));
    let stack = stack(&mock);

    let model = MantissaModel::new(stack.llm("trader"), "trader").session("s-1");
    let agent = AgentBuilder::new(model)
        .preamble("You are a trader.")
        .tool(MeasuredTool::new(GetMarketPrice, &stack, "trader").session("s-1"))
        .default_max_turns(4)
        .build();
    let answer = agent.prompt("What does ACME trade at?").await.unwrap();
    assert_eq!(answer, "ACME trades at 101.5: buy.");

    // What reached the server: the preamble, the tool, then the tool's result.
    let bodies = mock.request_bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0]["messages"][0],
        json!({"role": "system", "content": "You are a trader."})
    );
    assert_eq!(bodies[0]["tools"][0]["function"]["name"], "get_market_price");
    let second = bodies[1]["messages"].as_array().unwrap();
    assert!(
        second
            .iter()
            .any(|m| m["role"] == "assistant" && m["tool_calls"][0]["id"] == "call_1")
    );
    assert!(
        second
            .iter()
            .any(|m| m["role"] == "tool" && m["tool_call_id"] == "call_1" && m["content"] == "101.5"),
        "{second:?}"
    );

    // The registry: the agent's two model calls at catalogue prices, the tool call.
    let snap = stack.registry().snapshot();
    let served: u64 = snap.models.values().map(|m| m.last_1m.calls).sum();
    assert_eq!(served, 2);
    let trader = &snap.agents["trader"].last_1m;
    assert_eq!(trader.input_tokens + trader.output_tokens, 1_935);
    assert!(trader.cost_usd > 0.0);
    assert_eq!(snap.tools["get_market_price"].last_1m.calls, 1);
    let events = stack.registry().recent(16);
    assert!(
        events
            .iter()
            .all(|e| e.session.as_str() == "s-1" && e.agent.as_str() == "trader")
    );
    assert!(events.iter().any(|e| e.kind == EventKind::Tool));
}

#[tokio::test]
async fn the_model_streams_and_a_call_can_name_its_session() {
    let mock = HttpMockLlm::start().await;
    mock.stream_text(["Hel", "lo"]);
    let stack = stack(&mock);
    let model = MantissaModel::new(stack.llm("trader"), "trader");
    let req = model
        .completion_request("stream please")
        .additional_params(json!({SESSION_PARAM: "s-stream", "user": "u-1"}))
        .build();
    let mut stream = model.stream(req).await.unwrap();
    let mut text = String::new();
    let mut final_usage = None;
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            StreamedAssistantContent::Text(t) => text.push_str(&t.text),
            StreamedAssistantContent::Final(r) => final_usage = Some(r.usage),
            _ => {}
        }
    }
    assert_eq!(text, "Hello");
    assert!(
        final_usage.is_some_and(|u| u.output_tokens > 0),
        "{final_usage:?}"
    );
    let body = &mock.request_bodies()[0];
    assert_eq!(body["stream"], true);
    assert_eq!(body["user"], "u-1", "additional params go upstream verbatim");
    assert!(body.get(SESSION_PARAM).is_none(), "the session key does not");
    let events = stack.registry().recent(4);
    assert!(
        events.iter().any(|e| e.session.as_str() == "s-stream"),
        "{events:?}"
    );
}
