//! A rig agent with mantissa in front: every model call of a
//! `rig::agent::Agent` goes through reset, triage, the tier router and the
//! per-model health layers of an `AgentStack`; its tool is measured too.
//! The models are real names (gpt-4o-mini / gpt-4o / o3, priced from the
//! built-in catalogue) served by a loopback OpenAI-compatible mock: no network.
//!
//! ```text
//! cargo run --example rig_agent --features rig
//! ```

use std::convert::Infallible;

use mantissa::adapters::rig::{MantissaModel, MeasuredTool};
use mantissa::core::{BoxError, ModelSpec, TierConfig, TierSet, ToolCall};
use mantissa::mock::http::{HttpMockLlm, HttpReply};
use mantissa::openai::OpenAiConfig;
use mantissa::{AgentSpec, AgentStack, Upstream};
use rig_core::agent::AgentBuilder;
use rig_core::completion::Prompt;
use rig_core::tool::Tool;
use serde::Deserialize;
use serde_json::{Value, json};

/// The tool's arguments.
#[derive(Debug, Deserialize)]
struct PriceArgs {
    symbol: String,
}

/// A rig tool: the market price of a symbol.
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
        json!({"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]})
    }

    async fn call(&self, args: PriceArgs) -> Result<f64, Infallible> {
        Ok(if args.symbol == "ACME" { 101.5 } else { 10.0 })
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The model first calls the tool, then answers.
    let mock = HttpMockLlm::start().await;
    let call = ToolCall::new("call_1", "get_market_price", &json!({"symbol": "ACME"}));
    mock.enqueue(HttpReply::tool_calls(vec![call]).with_usage(900, 20));
    mock.enqueue(HttpReply::text("ACME trades at 101.5: buy 10 shares.").with_usage(1_000, 15));

    let tiers = ["gpt-4o-mini", "gpt-4o", "o3"]
        .into_iter()
        .zip(["low", "medium", "high"])
        .map(|(id, tier)| TierConfig::new(tier, vec![ModelSpec::new(id)]))
        .collect();
    let stack = AgentStack::builder(Upstream::OpenAi(Box::new(
        OpenAiConfig::new(mock.base_url()).api_key("sk-local"),
    )))
    .agent(AgentSpec::new("trader"))
    .tiers(TierSet::new(tiers)?)
    .without_monitor()
    .build()?;

    // Identity: the agent is the stack's "trader"; the session is set on the model.
    let model = MantissaModel::new(stack.llm("trader"), "trader").session("session-1");
    let agent = AgentBuilder::new(model)
        .preamble("You are a careful trader.")
        .tool(MeasuredTool::new(GetMarketPrice, &stack, "trader").session("session-1"))
        .default_max_turns(4)
        .build();
    let answer = agent.prompt("What does ACME trade at? Should we buy?").await?;
    println!("agent: {answer}");

    let snapshot = stack.registry().snapshot();
    for (name, a) in &snapshot.agents {
        let w = &a.last_15m;
        println!(
            "agent {name}: {} calls, {} tokens, cost ${:.6}",
            w.calls,
            w.input_tokens + w.output_tokens,
            w.cost_usd
        );
    }
    for (name, m) in &snapshot.models {
        println!("model {name}: {} calls", m.last_15m.calls);
    }
    for (name, t) in &snapshot.tools {
        println!(
            "tool {name}: {} calls, {} failures",
            t.last_15m.calls, t.last_15m.failures
        );
    }
    Ok(())
}
