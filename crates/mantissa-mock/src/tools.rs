//! [`MockTools`]: a scriptable tool service with ready-made demo tools.
//!
//! Tools are registered by name as closures over the JSON arguments
//! (`Ok(output)` or `Err(message)`, the latter becoming an `is_error`
//! response the model reads) or as fixed outputs. An unknown tool gets an
//! `is_error` response naming it. Per-tool latency and failure injection
//! (reported `is_error` results, or hard `Err`s classified as
//! [`FailureClass::ToolError`]) make tool health observable in tests.
//!
//! # Examples
//!
//! Defaults: the demo trading tools.
//!
//! ```
//! use mantissa_core::ToolRequest;
//! use mantissa_mock::MockTools;
//! use serde_json::json;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mantissa_core::BoxError> {
//! let tools = MockTools::demo();
//! let req = ToolRequest::new("s1", "trader", "call_1", "get_market_price", json!({"symbol": "ACME"}));
//! let resp = tools.clone().oneshot(req).await?;
//! assert!(!resp.is_error);
//! let quote: serde_json::Value = serde_json::from_str(&resp.content)?;
//! assert_eq!(quote["symbol"], "ACME");
//!
//! let bad = ToolRequest::new("s1", "trader", "call_2", "place_order", json!({"symbol": "ACME", "side": "hold", "quantity": 1}));
//! let resp = tools.clone().oneshot(bad).await?;
//! assert!(resp.is_error && resp.content.contains("`side`"));
//! # Ok(()) }
//! ```
//!
//! Customised: own tools, latency and injected failures.
//!
//! ```
//! use mantissa_core::{classify_box, FailureClass, ToolRequest};
//! use mantissa_mock::{Latency, MockTools, ToolFault};
//! use serde_json::json;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), mantissa_core::BoxError> {
//! let tools = MockTools::new()
//!     .with_tool("add", |args| {
//!         let a = args["a"].as_i64().ok_or("`a` must be an integer")?;
//!         let b = args["b"].as_i64().ok_or("`b` must be an integer")?;
//!         Ok((a + b).to_string())
//!     })
//!     .with_fixed("ping", "pong")
//!     .with_latency("add", Latency::millis(40));
//! let call = |name: &str| ToolRequest::new("s", "a", "c", name, json!({"a": 2, "b": 3}));
//! assert_eq!(tools.clone().oneshot(call("add")).await?.content, "5");
//!
//! tools.fail_tool("ping", ToolFault::Hard);
//! let err = tools.clone().oneshot(call("ping")).await.unwrap_err();
//! assert_eq!(classify_box(&err), FailureClass::ToolError);
//! assert_eq!(tools.calls("add"), 1);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use mantissa_core::{BoxError, FailureClass, LlmError, ToolRequest, ToolResponse, ToolSpec};
use pin_project_lite::pin_project;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Sleep;
use tower_service::Service;

use crate::latency::{FailNext, Latency};
use crate::llm::DEFAULT_SEED;

type ToolFn = Arc<dyn Fn(&Value) -> Result<String, String> + Send + Sync>;

/// An injected tool failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolFault {
    /// The tool runs but reports failure: an `is_error` response with this
    /// text (a generic one when empty).
    Reported(String),
    /// The tool cannot run: the call returns `Err`, a [`LlmError`] of class
    /// [`FailureClass::ToolError`].
    Hard,
}

impl ToolFault {
    /// A reported failure with a generic message.
    pub fn reported() -> Self {
        ToolFault::Reported(String::new())
    }

    fn apply(&self, name: &str) -> Result<ToolResponse, BoxError> {
        match self {
            ToolFault::Reported(msg) if msg.is_empty() => Ok(ToolResponse::error(format!(
                "tool `{name}` failed: service unavailable (injected)"
            ))),
            ToolFault::Reported(msg) => Ok(ToolResponse::error(msg.clone())),
            ToolFault::Hard => Err(Box::new(LlmError::new(
                FailureClass::ToolError,
                format!("tool `{name}` could not run (injected)"),
            ))),
        }
    }
}

#[derive(Clone)]
enum Handler {
    Fixed(String),
    Func(ToolFn),
}

struct State {
    tools: HashMap<String, Handler>,
    latencies: HashMap<String, Latency>,
    failing: HashMap<String, ToolFault>,
    failure_rates: HashMap<String, (f64, ToolFault)>,
    fail_next: FailNext<ToolFault>,
    calls: HashMap<String, u64>,
    requests: VecDeque<ToolRequest>,
    rng: StdRng,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const RECORD_LIMIT: usize = 256;

/// A mock tool service: `tower::Service<ToolRequest, Response = ToolResponse>`.
///
/// Cheap to clone; clones share their tools, faults and counters. The `with_*`
/// methods register at build time; the `&self` methods steer a running mock.
#[derive(Clone)]
pub struct MockTools {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        let mut names: Vec<_> = st.tools.keys().collect();
        names.sort();
        f.debug_struct("MockTools")
            .field("tools", &names)
            .finish_non_exhaustive()
    }
}

impl Default for MockTools {
    fn default() -> Self {
        Self::new()
    }
}

impl MockTools {
    /// A tool service with no tools (every call gets "unknown tool").
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    tools: HashMap::new(),
                    latencies: HashMap::new(),
                    failing: HashMap::new(),
                    failure_rates: HashMap::new(),
                    fail_next: FailNext::default(),
                    calls: HashMap::new(),
                    requests: VecDeque::new(),
                    rng: StdRng::seed_from_u64(DEFAULT_SEED),
                }),
            }),
        }
    }

    /// The demo trading tools: `get_market_price {symbol}`,
    /// `assess_risk {symbol, quantity}` and `place_order {symbol, side, quantity}`,
    /// with deterministic outputs (see [`MockTools::demo_specs`] for their schemas).
    pub fn demo() -> Self {
        Self::new()
            .with_tool("get_market_price", get_market_price)
            .with_tool("assess_risk", assess_risk)
            .with_tool("place_order", place_order)
    }

    /// The [`ToolSpec`]s of the demo tools, to offer to a model.
    pub fn demo_specs() -> Vec<ToolSpec> {
        vec![
            ToolSpec::function(
                "get_market_price",
                "Current market price of a stock symbol.",
                json!({"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}),
            ),
            ToolSpec::function(
                "assess_risk",
                "Risk assessment of buying a quantity of a symbol.",
                json!({"type": "object", "properties": {
                    "symbol": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}
                }, "required": ["symbol", "quantity"]}),
            ),
            ToolSpec::function(
                "place_order",
                "Places a market order.",
                json!({"type": "object", "properties": {
                    "symbol": {"type": "string"},
                    "side": {"type": "string", "enum": ["buy", "sell"]},
                    "quantity": {"type": "integer", "minimum": 1}
                }, "required": ["symbol", "side", "quantity"]}),
            ),
        ]
    }

    /// Seeds the generator behind latency ranges and failure rates.
    /// Defaults to [`DEFAULT_SEED`].
    pub fn with_seed(self, seed: u64) -> Self {
        self.shared.lock().rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Registers a tool implemented by a closure over its JSON arguments.
    /// `Err(message)` becomes an `is_error` response.
    pub fn with_tool<F>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(&Value) -> Result<String, String> + Send + Sync + 'static,
    {
        self.register(name, f);
        self
    }

    /// Registers a tool that always answers `output`.
    pub fn with_fixed(self, name: impl Into<String>, output: impl Into<String>) -> Self {
        self.shared
            .lock()
            .tools
            .insert(name.into(), Handler::Fixed(output.into()));
        self
    }

    /// Sets a tool's latency. Defaults to none.
    pub fn with_latency(self, name: impl Into<String>, latency: Latency) -> Self {
        self.shared.lock().latencies.insert(name.into(), latency);
        self
    }

    /// Makes a fraction `rate` (clamped to `0..=1`) of a tool's calls fail
    /// with `fault`, drawn from the seeded generator. Defaults to none.
    pub fn with_failure_rate(self, name: impl Into<String>, rate: f64, fault: ToolFault) -> Self {
        self.shared
            .lock()
            .failure_rates
            .insert(name.into(), (rate, fault));
        self
    }

    /// Registers (or replaces) a tool on a running mock.
    pub fn register<F>(&self, name: impl Into<String>, f: F)
    where
        F: Fn(&Value) -> Result<String, String> + Send + Sync + 'static,
    {
        self.shared
            .lock()
            .tools
            .insert(name.into(), Handler::Func(Arc::new(f)));
    }

    /// Every call of `name` fails with `fault` until [`recover_tool`](Self::recover_tool).
    pub fn fail_tool(&self, name: impl Into<String>, fault: ToolFault) {
        self.shared.lock().failing.insert(name.into(), fault);
    }

    /// Ends a tool's failing mode.
    pub fn recover_tool(&self, name: &str) {
        self.shared.lock().failing.remove(name);
    }

    /// The next `n` calls (of any tool) fail with `fault`.
    pub fn fail_next(&self, n: usize, fault: ToolFault) {
        self.shared.lock().fail_next.push(n, fault);
    }

    /// Calls received for tool `name` (known or not).
    pub fn calls(&self, name: &str) -> u64 {
        self.shared.lock().calls.get(name).copied().unwrap_or(0)
    }

    /// Calls received per tool.
    pub fn calls_by_tool(&self) -> BTreeMap<String, u64> {
        self.shared
            .lock()
            .calls
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// The kept requests (the latest 256), oldest first.
    pub fn requests(&self) -> Vec<ToolRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<ToolRequest> {
        self.shared.lock().requests.back().cloned()
    }
}

impl Service<ToolRequest> for MockTools {
    type Response = ToolResponse;
    type Error = BoxError;
    type Future = ToolFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        let (fault, handler, latency) = {
            let mut st = self.shared.lock();
            *st.calls.entry(req.name.clone()).or_insert(0) += 1;
            if st.requests.len() >= RECORD_LIMIT {
                st.requests.pop_front();
            }
            st.requests.push_back(req.clone());
            let mut fault = st.fail_next.pop();
            if fault.is_none() {
                fault = st.failing.get(&req.name).cloned();
            }
            if fault.is_none() {
                if let Some((rate, f)) = st.failure_rates.get(&req.name).cloned() {
                    if rate > 0.0 && st.rng.random::<f64>() < rate {
                        fault = Some(f);
                    }
                }
            }
            let handler = st.tools.get(&req.name).cloned();
            let latency = st.latencies.get(&req.name).copied().unwrap_or_default();
            let latency = latency.sample(&mut st.rng);
            (fault, handler, latency)
        };
        // Tool closures run outside the lock.
        let result = match (fault, handler) {
            (Some(f), _) => f.apply(&req.name),
            (None, None) => Ok(ToolResponse::error(format!("unknown tool `{}`", req.name))),
            (None, Some(Handler::Fixed(out))) => Ok(ToolResponse::ok(out)),
            (None, Some(Handler::Func(f))) => Ok(match f(&req.arguments) {
                Ok(out) => ToolResponse::ok(out),
                Err(msg) => ToolResponse::error(msg),
            }),
        };
        ToolFuture {
            sleep: (!latency.is_zero()).then(|| tokio::time::sleep(latency)),
            result: Some(result),
        }
    }
}

pin_project! {
    /// The future of a [`MockTools`] call.
    pub struct ToolFuture {
        #[pin]
        sleep: Option<Sleep>,
        result: Option<Result<ToolResponse, BoxError>>,
    }
}

impl fmt::Debug for ToolFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolFuture")
            .field("waiting", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}

impl Future for ToolFuture {
    type Output = Result<ToolResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(sleep) = this.sleep.as_pin_mut() {
            if sleep.poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(this.result.take().unwrap_or_else(|| {
            Err(Box::new(LlmError::new(
                FailureClass::Other,
                "mock tool future polled after completion",
            )))
        }))
    }
}

// ---- demo tools ----

fn symbol_arg(args: &Value) -> Result<String, String> {
    let s = match args.get("symbol") {
        Some(Value::String(s)) => s.trim().to_ascii_uppercase(),
        Some(_) => return Err("invalid argument `symbol`: must be a string".to_owned()),
        None => return Err("missing argument `symbol`".to_owned()),
    };
    if s.is_empty() || s.len() > 10 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return Err("invalid argument `symbol`: expected 1-10 letters or digits, like \"ACME\"".to_owned());
    }
    Ok(s)
}

fn quantity_arg(args: &Value) -> Result<u64, String> {
    match args.get("quantity") {
        None => Err("missing argument `quantity`".to_owned()),
        Some(v) => match v.as_u64() {
            Some(q) if (1..=1_000_000).contains(&q) => Ok(q),
            _ => Err("invalid argument `quantity`: must be an integer from 1 to 1000000".to_owned()),
        },
    }
}

/// A deterministic price in cents, 10.00 … 909.99, from the symbol's bytes.
fn price_cents(symbol: &str) -> u64 {
    let h = symbol.bytes().fold(1_469_598_103_934_665_603_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
    });
    1_000 + h % 90_000
}

fn dollars(cents: u64) -> f64 {
    // Prices stay below 2^53 cents, so the conversion is exact enough.
    (cents as f64) / 100.0
}

fn get_market_price(args: &Value) -> Result<String, String> {
    let symbol = symbol_arg(args)?;
    let cents = price_cents(&symbol);
    Ok(json!({"symbol": symbol, "price": dollars(cents), "currency": "USD"}).to_string())
}

fn assess_risk(args: &Value) -> Result<String, String> {
    let symbol = symbol_arg(args)?;
    let quantity = quantity_arg(args)?;
    let notional = price_cents(&symbol).saturating_mul(quantity);
    let (level, score) = match notional {
        n if n < 1_000_000 => ("low", 0.2),
        n if n < 10_000_000 => ("medium", 0.5),
        _ => ("high", 0.85),
    };
    Ok(json!({
        "symbol": symbol,
        "quantity": quantity,
        "notional_usd": dollars(notional),
        "risk_level": level,
        "risk_score": score,
    })
    .to_string())
}

fn place_order(args: &Value) -> Result<String, String> {
    let symbol = symbol_arg(args)?;
    let side = match args.get("side").map(|s| s.as_str()) {
        None => return Err("missing argument `side`".to_owned()),
        Some(Some(s)) if s.eq_ignore_ascii_case("buy") => "buy",
        Some(Some(s)) if s.eq_ignore_ascii_case("sell") => "sell",
        Some(_) => return Err("invalid argument `side`: must be \"buy\" or \"sell\"".to_owned()),
    };
    let quantity = quantity_arg(args)?;
    let cents = price_cents(&symbol);
    let id = price_cents(&format!("{symbol}/{side}/{quantity}"));
    Ok(json!({
        "order_id": format!("ord-{id:05}"),
        "status": "filled",
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "fill_price": dollars(cents),
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::classify_box;
    use std::time::Duration;
    use tokio::time::Instant;
    use tower::ServiceExt;

    fn call(name: &str, args: Value) -> ToolRequest {
        ToolRequest::new("s", "trader", "call_1", name, args)
    }

    async fn run(tools: &MockTools, name: &str, args: Value) -> ToolResponse {
        tools.clone().oneshot(call(name, args)).await.unwrap()
    }

    #[tokio::test]
    async fn demo_tools_are_deterministic_and_validate() {
        let t = MockTools::demo();
        let a = run(&t, "get_market_price", json!({"symbol": "acme"})).await;
        let b = run(&t, "get_market_price", json!({"symbol": "ACME"})).await;
        assert_eq!(a.content, b.content);
        let quote: Value = serde_json::from_str(&a.content).unwrap();
        let price = quote["price"].as_f64().unwrap();
        assert!((10.0..1000.0).contains(&price));

        let risk = run(&t, "assess_risk", json!({"symbol": "ACME", "quantity": 10})).await;
        assert!(!risk.is_error);
        let risk: Value = serde_json::from_str(&risk.content).unwrap();
        assert!(["low", "medium", "high"].contains(&risk["risk_level"].as_str().unwrap()));

        let order = run(
            &t,
            "place_order",
            json!({"symbol": "ACME", "side": "BUY", "quantity": 3}),
        )
        .await;
        let order: Value = serde_json::from_str(&order.content).unwrap();
        assert_eq!(order["side"], "buy");
        assert_eq!(order["fill_price"].as_f64().unwrap(), price);
        assert!(order["order_id"].as_str().unwrap().starts_with("ord-"));

        let cases = [
            ("get_market_price", json!({}), "`symbol`"),
            ("get_market_price", json!({"symbol": 5}), "`symbol`"),
            ("get_market_price", json!({"symbol": "DROP TABLE"}), "`symbol`"),
            (
                "assess_risk",
                json!({"symbol": "ACME", "quantity": 0}),
                "`quantity`",
            ),
            (
                "assess_risk",
                json!({"symbol": "ACME", "quantity": -2}),
                "`quantity`",
            ),
            ("assess_risk", json!({"symbol": "ACME"}), "`quantity`"),
            (
                "place_order",
                json!({"symbol": "ACME", "side": 1, "quantity": 1}),
                "`side`",
            ),
            ("place_order", json!({"symbol": "ACME", "quantity": 1}), "`side`"),
            ("place_order", json!(null), "`symbol`"),
        ];
        for (name, args, field) in cases {
            let r = run(&t, name, args.clone()).await;
            assert!(r.is_error, "{name} {args}");
            assert!(r.content.contains(field), "{name} {args}: {}", r.content);
        }
        assert_eq!(MockTools::demo_specs().len(), 3);
    }

    #[tokio::test]
    async fn unknown_tool_is_a_reported_error_naming_it() {
        let t = MockTools::new();
        let r = run(&t, "launch_rocket", json!({})).await;
        assert!(r.is_error);
        assert_eq!(r.content, "unknown tool `launch_rocket`");
        assert_eq!(t.calls("launch_rocket"), 1);
    }

    #[tokio::test]
    async fn faults_reported_and_hard() {
        let t = MockTools::new().with_fixed("ping", "pong");
        t.fail_tool("ping", ToolFault::reported());
        let r = run(&t, "ping", json!({})).await;
        assert!(r.is_error && r.content.contains("`ping`"));
        t.fail_tool("ping", ToolFault::Reported("down for maintenance".into()));
        assert_eq!(run(&t, "ping", json!({})).await.content, "down for maintenance");
        t.fail_tool("ping", ToolFault::Hard);
        let e = t.clone().oneshot(call("ping", json!({}))).await.unwrap_err();
        assert_eq!(classify_box(&e), FailureClass::ToolError);
        t.recover_tool("ping");
        assert_eq!(run(&t, "ping", json!({})).await.content, "pong");
        t.fail_next(1, ToolFault::Hard);
        assert!(t.clone().oneshot(call("ping", json!({}))).await.is_err());
        assert_eq!(run(&t, "ping", json!({})).await.content, "pong");
        assert_eq!(t.calls("ping"), 6);
        assert_eq!(t.requests().len(), 6);
        assert_eq!(t.last_request().unwrap().name, "ping");
    }

    #[tokio::test]
    async fn failure_rate_is_seeded() {
        async fn pattern(seed: u64) -> Vec<bool> {
            let t = MockTools::new()
                .with_seed(seed)
                .with_fixed("x", "ok")
                .with_failure_rate("x", 0.5, ToolFault::reported());
            let mut v = Vec::new();
            for _ in 0..64 {
                v.push(run(&t, "x", json!({})).await.is_error);
            }
            v
        }
        let a = pattern(3).await;
        assert_eq!(a, pattern(3).await);
        let n = a.iter().filter(|e| **e).count();
        assert!((16..=48).contains(&n), "{n}");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_uses_the_tokio_clock() {
        let t = MockTools::demo().with_latency("get_market_price", Latency::millis(750));
        let start = Instant::now();
        run(&t, "get_market_price", json!({"symbol": "ACME"})).await;
        assert_eq!(start.elapsed(), Duration::from_millis(750));
        let start = Instant::now();
        run(&t, "assess_risk", json!({"symbol": "ACME", "quantity": 1})).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
