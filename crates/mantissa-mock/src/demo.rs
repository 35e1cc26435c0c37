//! A ready-made scripted agent for examples: a trader that looks up a price,
//! assesses risk and places an order through the demo tools of
//! [`MockTools::demo`](crate::MockTools::demo).
//!
//! [`trader`] is a responder (`Fn(&LlmRequest) -> MockReply`) that reads the
//! turn so far and answers with the next step, so an agent loop over
//! [`MockLlm`](crate::MockLlm) and [`MockTools`](crate::MockTools) runs like a
//! real tool-using agent, deterministically:
//!
//! 1. no tool result yet this turn → call `get_market_price {symbol}`;
//! 2. one result → call `assess_risk {symbol, quantity: 10}`;
//! 3. two results → call `place_order {symbol, side: "buy", quantity: 10}`,
//!    unless the risk came back `high` (then answer in text);
//! 4. otherwise → a final text answer quoting the last tool result.
//!
//! Only offered tools are called (`req.tools`); with none offered, or when a
//! tool reported an error, the trader answers in text. The symbol is the first
//! all-capitals word of 2–5 letters in the latest user message (`ACME` if none).
//!
//! ```
//! use mantissa_core::{LlmRequest, Message, ToolRequest};
//! use mantissa_mock::{demo, MockLlm, MockTools};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mantissa_core::BoxError> {
//! let llm = MockLlm::builder().responder(demo::trader).build();
//! let tools = MockTools::demo();
//! let mut history = vec![Message::user("Should we buy TSLA?")];
//! loop {
//!     let req = LlmRequest::new("s1", "trader", history.clone()).with_tools(MockTools::demo_specs());
//!     let reply = llm.clone().oneshot(req).await?.message;
//!     history.push(reply.clone());
//!     if reply.tool_calls.is_empty() {
//!         break;
//!     }
//!     for call in &reply.tool_calls {
//!         let out = tools.clone().oneshot(ToolRequest::from_call("s1", "trader", call)?).await?;
//!         history.push(Message::tool(call.id.clone(), out.content));
//!     }
//! }
//! assert_eq!(tools.calls("get_market_price"), 1);
//! assert_eq!(tools.calls("assess_risk"), 1);
//! assert!(history.last().unwrap().text().contains("TSLA"));
//! # Ok(()) }
//! ```

use mantissa_core::{LlmRequest, Message, Role, ToolCall};
use serde_json::json;

use crate::reply::MockReply;

/// Quantity the demo trader trades.
pub const DEMO_QUANTITY: u64 = 10;

fn symbol_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| (2..=5).contains(&w.len()) && w.chars().all(|c| c.is_ascii_uppercase()))
        .unwrap_or("ACME")
        .to_owned()
}

fn looks_like_error(m: &Message) -> bool {
    let t = m.text();
    t.starts_with("invalid argument")
        || t.starts_with("missing argument")
        || t.starts_with("unknown tool")
        || t.starts_with("tool `")
}

/// The demo trader's next step for `req` (see the [module docs](self)).
pub fn trader(req: &LlmRequest) -> MockReply {
    let msgs = req.messages();
    let turn_start = msgs.iter().rposition(|m| m.role == Role::User);
    let Some(start) = turn_start else {
        return MockReply::text("I trade on request; ask me about a symbol.");
    };
    let symbol = symbol_in(msgs[start].text());
    let results: Vec<&Message> = msgs[start..].iter().filter(|m| m.role == Role::Tool).collect();
    let offered = |name: &str| req.tools.iter().any(|t| t.function.name == name);
    let call = |name: &str, args: serde_json::Value| {
        let id = format!("call_{}_{}", name, msgs.len());
        MockReply::tool_calls(vec![ToolCall::new(id, name, &args)])
    };
    if let Some(last) = results.last() {
        if looks_like_error(last) {
            return MockReply::text(format!(
                "I could not complete the {symbol} trade: {}",
                last.text()
            ));
        }
    }
    match results.len() {
        0 if offered("get_market_price") => call("get_market_price", json!({"symbol": symbol})),
        1 if offered("assess_risk") => call(
            "assess_risk",
            json!({"symbol": symbol, "quantity": DEMO_QUANTITY}),
        ),
        2 if results[1].text().contains("\"high\"") => MockReply::text(format!(
            "Risk for {DEMO_QUANTITY} {symbol} is high; I will not trade."
        )),
        2 if offered("place_order") => call(
            "place_order",
            json!({"symbol": symbol, "side": "buy", "quantity": DEMO_QUANTITY}),
        ),
        0 => MockReply::text(format!("Without market data I cannot judge {symbol}.")),
        _ => {
            let last = results.last().map_or("", |m| m.text());
            MockReply::text(format!("Done with {symbol}: {last}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockTools;

    #[test]
    fn walks_the_steps_and_respects_offered_tools() {
        let specs = MockTools::demo_specs();
        let base = vec![Message::system("trade"), Message::user("Buy NVDA now")];
        let req = LlmRequest::new("s", "t", base.clone()).with_tools(specs.clone());
        let r = trader(&req);
        let ReplyKindView::Calls(name, args) = view(&r) else {
            panic!("{r:?}")
        };
        assert_eq!(
            (name.as_str(), args["symbol"].as_str()),
            ("get_market_price", Some("NVDA"))
        );

        let mut h = base.clone();
        h.push(Message::assistant_tool_calls(vec![]));
        h.push(Message::tool("c1", "{\"price\":1}"));
        let r = trader(&LlmRequest::new("s", "t", h.clone()).with_tools(specs.clone()));
        assert!(matches!(view(&r), ReplyKindView::Calls(n, _) if n == "assess_risk"));

        h.push(Message::tool("c2", "{\"risk_level\":\"high\"}"));
        let r = trader(&LlmRequest::new("s", "t", h.clone()).with_tools(specs.clone()));
        assert!(matches!(view(&r), ReplyKindView::Text(t) if t.contains("high")));

        let r = trader(&LlmRequest::new("s", "t", base.clone()));
        assert!(matches!(view(&r), ReplyKindView::Text(t) if t.contains("NVDA")));

        let mut h = base;
        h.push(Message::tool("c1", "invalid argument `symbol`: bad"));
        let r = trader(&LlmRequest::new("s", "t", h).with_tools(specs));
        assert!(matches!(view(&r), ReplyKindView::Text(t) if t.contains("could not")));

        let r = trader(&LlmRequest::new("s", "t", vec![]));
        assert!(matches!(view(&r), ReplyKindView::Text(_)));
        assert_eq!(symbol_in("what about it?"), "ACME");
    }

    enum ReplyKindView {
        Text(String),
        Calls(String, serde_json::Value),
    }

    fn view(r: &MockReply) -> ReplyKindView {
        match &r.kind {
            crate::reply::ReplyKind::Message { text, calls } if calls.is_empty() => {
                ReplyKindView::Text(text.clone().unwrap_or_default())
            }
            crate::reply::ReplyKind::Message { calls, .. } => ReplyKindView::Calls(
                calls[0].function.name.clone(),
                calls[0].parse_arguments().unwrap(),
            ),
            crate::reply::ReplyKind::Fail(f) => panic!("unexpected failure {f:?}"),
        }
    }
}
