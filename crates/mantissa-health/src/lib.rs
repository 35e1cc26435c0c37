//! # mantissa-health
//!
//! [`HealthLayer`] observes every LLM call and every tool call of an agent
//! service — duration, outcome and [`FailureClass`](mantissa_core::FailureClass),
//! tokens, cost, the cost the call would have had on the top tier, calls in
//! flight, time to first chunk of streamed responses — and feeds three
//! consumers: Prometheus metrics (through the [`metrics`] facade), a
//! [`HealthRegistry`] of rolling windows and health scores (read by the
//! monitor and the health toolkit), and [`HealthEvent`](mantissa_core::HealthEvent)s
//! (a journal of recent events plus any [`EventSink`](mantissa_core::EventSink),
//! for example [`JsonLinesSink`]).
//!
//! One layer type wraps both kinds of service: `Service<LlmRequest, Response =
//! LlmResponse>` and `Service<ToolRequest, Response = ToolResponse>` (see
//! [`ObservedRequest`]). Errors pass through unchanged; they only need to be
//! [`Classify`] (every `BoxError` is).
//!
//! ## Defaults
//!
//! ```
//! use mantissa_core::{LlmRequest, LlmResponse, Message, Usage, BoxError};
//! use mantissa_health::HealthLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = HealthLayer::new();
//! let registry = layer.registry().clone();
//! let llm = layer.layer(service_fn(|req: LlmRequest| async move {
//!     Ok::<_, BoxError>(LlmResponse::new("gpt-4o-mini", Message::assistant("hi"), Usage::new(12, 3)))
//! }));
//!
//! llm.oneshot(LlmRequest::new("session-1", "trader", vec![Message::user("hello")])).await?;
//!
//! let trader = registry.agent("trader").expect("seen");
//! assert_eq!(trader.last_1m.calls, 1);
//! assert_eq!(trader.last_1m.input_tokens, 12);
//! // Without a catalog the model label is folded into `other`.
//! assert!(registry.model("other").is_some());
//! # Ok(())
//! # }
//! ```
//!
//! ## Customised: tiers and prices, bounded agents, an event sink, tools
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use mantissa_core::{
//!     BoxError, HealthEvent, LlmRequest, LlmResponse, Message, TierSet, ToolRequest, ToolResponse, Usage,
//! };
//! use mantissa_health::{HealthLayer, HealthRegistry};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let registry = HealthRegistry::new();
//! let events = Arc::new(Mutex::new(Vec::new()));
//! let sink = {
//!     let events = events.clone();
//!     move |e: &HealthEvent| events.lock().unwrap().push(e.clone())
//! };
//! // TierSet::default(): mock-small (low) / mock-medium / mock-large (high, $5 + $15 per Mtok).
//! let layer = HealthLayer::with_registry(registry.clone())
//!     .tiers(TierSet::default())
//!     .agents(["trader", "analyst"])
//!     .tools(["get_price"])
//!     .sink(sink);
//!
//! let llm = layer.layer(service_fn(|req: LlmRequest| async move {
//!     Ok::<_, BoxError>(LlmResponse::new("mock-small", Message::assistant("ok"), Usage::new(1_000_000, 0)))
//! }));
//! let req = LlmRequest::new("s1", "intern", vec![Message::user("hi")]).with_model("mock-small");
//! llm.oneshot(req).await?;
//!
//! let tool = layer.layer(service_fn(|req: ToolRequest| async move {
//!     Ok::<_, BoxError>(ToolResponse::error(format!("no price for {}", req.arguments)))
//! }));
//! tool.oneshot(ToolRequest::new("s1", "trader", "call-1", "get_price", serde_json::json!("XYZ"))).await?;
//!
//! // `intern` is not allow-listed: recorded as `other`.
//! let other = registry.agent("other").expect("folded");
//! assert!((other.last_15m.cost_usd - 0.15).abs() < 1e-9);
//! assert!((other.last_15m.counterfactual_cost_usd - 5.0).abs() < 1e-9);
//! let get_price = registry.tool("get_price").expect("seen");
//! assert_eq!(get_price.last_1m.errors_of(mantissa_core::FailureClass::ToolError), 1);
//! assert_eq!(events.lock().unwrap().len(), 2);
//! assert_eq!(registry.recent(10).len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! ## Labels
//!
//! The label sets, exactly (names from [`mantissa_core::catalog`]). Label
//! values are bounded: `model` and `gen_ai_request_model` are configured ids or
//! `other`; `agent`/`gen_ai_agent_name` and `tool`/`gen_ai_tool_name` are
//! allow-listed or `other` when an allow-list is set ([`HealthLayer::agents`],
//! [`HealthLayer::tools`]); `tier` is the request's tier (folded to `other`
//! when a [`TierSet`](mantissa_core::TierSet) is configured and does not name
//! it), else the catalog's tier of the model, else `none`; `error_type` is a
//! [`FailureClass`](mantissa_core::FailureClass) name. Session ids are never labels.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gen_ai_client_operation_duration_seconds` (LLM) | histogram | `gen_ai_operation_name="chat"`, `gen_ai_provider_name`, `gen_ai_request_model`, `gen_ai_agent_name`, `error_type` (failures only) |
//! | `gen_ai_client_operation_duration_seconds` (tool) | histogram | `gen_ai_operation_name="execute_tool"`, `gen_ai_tool_name`, `gen_ai_agent_name`, `error_type` (failures only) |
//! | `gen_ai_client_token_usage` | histogram | `gen_ai_operation_name="chat"`, `gen_ai_provider_name`, `gen_ai_request_model`, `gen_ai_agent_name`, `gen_ai_token_type` (`input`/`output`) |
//! | `gen_ai_client_operation_time_to_first_chunk_seconds` | histogram | `gen_ai_operation_name="chat"`, `gen_ai_provider_name`, `gen_ai_request_model`, `gen_ai_agent_name` |
//! | `mantissa_calls_total` (LLM) | counter | `kind="llm"`, `agent`, `model`, `outcome`, `error_type` (failures only) |
//! | `mantissa_calls_total` (tool) | counter | `kind="tool"`, `agent`, `tool`, `outcome`, `error_type` (failures only) |
//! | `mantissa_calls_in_flight` | gauge | `kind` (`llm`/`tool`), `agent` |
//! | `mantissa_tokens_total` | counter | `agent`, `model`, `token_type` (`input`/`output`) |
//! | `mantissa_cost_usd_total` | gauge, only increases | `agent`, `tier`, `model` |
//! | `mantissa_counterfactual_cost_usd_total` | gauge, only increases | `agent` |
//! | `mantissa_middleware_overhead_seconds` | histogram | `layer="health"` |
//! | `mantissa_agent_health_score` | gauge | `agent` (set by [`HealthRegistry::publish_scores`]) |
//!
//! `outcome` is `success`, `error` or `cancelled` (then `error_type="cancelled"`).
//! The two dollar metrics are gauges that only ever increase, because the
//! `metrics` facade's counters are integers; `rate()` and `increase()` work on
//! them as on counters. Provider (`gen_ai_provider_name`) is the catalog's
//! provider of the model, `other` for unknown models.
//!
//! Tokens and cost are recorded when the call reports usage (non-streamed:
//! `LlmResponse::usage`; streamed: the last chunk that carries `usage`). A
//! streamed response keeps its call in flight until the body ends: duration
//! and outcome are recorded then (an error chunk is a failure classified by
//! [`classify`](mantissa_core::classify); dropping the body early records
//! `cancelled`). The overhead histogram measures the layer's own work (before
//! the inner call, and when recording), not the inner service, on one call
//! in 16 per thread (the first of each 16).
//!
//! ## Failure classes
//!
//! `Err` values are classified by [`Classify`] (for `BoxError`: by walking the
//! `source()` chain with [`classify`](mantissa_core::classify)). A
//! `ToolResponse` with `is_error: true` is `tool_error`; so is a tool service's
//! own `Err`, unless it classifies as `timeout` or `cancelled`. A future or
//! stream dropped before the end is `cancelled`: it lowers the in-flight gauge,
//! counts in `mantissa_calls_total{outcome="cancelled"}` and the windows'
//! `cancelled`, but neither counts as a failure nor breaks a failure streak.
//!
//! ## Traces
//!
//! Every call also opens a [`tracing`] span (target `mantissa_health`, level
//! `INFO`) named and attributed after the OpenTelemetry GenAI semantic
//! conventions; `tracing-opentelemetry` exports `otel.name` as the span name
//! and `otel.kind` as its kind. The span is a child of the caller's current
//! span (or of the router's `route` span), the inner future and a streamed
//! body are polled inside it, and it closes when the call is recorded: for a
//! stream, when the body ends or is dropped.
//!
//! | span | `otel.name` | attributes |
//! |---|---|---|
//! | `chat` (kind client) | `chat {model}` | `gen_ai.operation.name="chat"`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.agent.name`, `gen_ai.conversation.id` (the session), `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `gen_ai.response.finish_reasons`, `mantissa.tier`, `error.type` |
//! | `execute_tool` (kind internal) | `execute_tool {tool}` | `gen_ai.operation.name="execute_tool"`, `gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.agent.name`, `gen_ai.conversation.id`, `error.type` |
//!
//! `error.type` is the [`FailureClass`](mantissa_core::FailureClass) name,
//! with `otel.status_code="ERROR"` for failures; a cancelled call (future or
//! stream dropped early) records `error.type="cancelled"` without the error
//! status. Unlike metric labels, span attributes carry the raw model id and
//! the session id. Message content is not recorded unless enabled with
//! [`HealthLayer::record_content`] (then `gen_ai.prompt`, the latest user
//! message, and `gen_ai.completion`, each truncated on a char boundary);
//! tool arguments and results, headers and client configuration never are.
//!
//! With no subscriber interested, the span is a disabled no-op: nothing is
//! formatted or allocated (every record checks `Span::is_disabled` first).
//!
//! ## Count once: cells, and where the metrics go
//!
//! Each call is recorded once, into the cells of its series (one per bounded
//! label tuple: kind, agent, model or tool, tier), with relaxed atomics and
//! no lock: the duration histogram of its outcome (whose count is the call
//! counter), the token histograms (whose sums are the token totals), cost,
//! counterfactual cost and a fine latency histogram. The [`HealthRegistry`]'s
//! windows read those cells; so does the Prometheus exporter, when the
//! layer's [`MetricsMode`] is [`MetricsMode::Cells`]:
//!
//! ```
//! use mantissa_core::TierSet;
//! use mantissa_health::{HealthLayer, HealthRegistry, MetricsMode};
//!
//! let registry = HealthRegistry::new();
//! // With mantissa-prometheus: `exporter.register_collector(registry.collector())`,
//! // before the layer is built.
//! let collector = registry.collector();
//! let layer = HealthLayer::with_registry(registry).tiers(TierSet::default());
//! assert_eq!(layer.mode(), MetricsMode::Cells);
//! # drop(collector);
//! ```
//!
//! Without a collector (an application with its own `metrics` recorder:
//! OpenTelemetry, StatsD, …) the layer is in [`MetricsMode::Recorder`] and
//! also sends every metric through handles held per label tuple. The mode is
//! decided when the layer builds its first service, never per call. The
//! handles bind to the recorder current at the first call of each tuple, so
//! install the recorder first; a layer used under
//! [`metrics::with_local_recorder`] should be built and first called inside it.
//!
//! ## The registry and the health score
//!
//! [`HealthRegistry`] keeps, per agent, model and tool, a 1-minute window (12
//! slots of 5 s) and a 15-minute window (15 slots of 60 s) on
//! [`tokio::time::Instant`] (each the subject's running totals minus a base
//! taken at the start of its first slot, see [`registry`]) with: calls, failures by class, cancellations,
//! latency quantiles, tokens, cost, counterfactual cost, context warnings and
//! resets; plus consecutive failures, the latest failure class, the end of the
//! latest call, and a latency baseline. Latencies go to a log-linear histogram
//! per slot (8 sub-buckets per power of two from 1 µs to 18 min); a quantile
//! is interpolated linearly inside its bucket, so its relative error is at
//! most 12.5 %. The baseline is an EWMA over successful calls, α = 0.01.
//!
//! The health score of a subject (the agent's "precision") is
//!
//! ```text
//! score = success × latency × streak, in [0, 1]
//! success = (successes + 1) / (successes + failures + 1)          over 15 minutes
//! latency = 1                         if slowness ≤ 1.5
//!         = max(0.25, 1.5 / slowness)  otherwise
//! streak  = 0.8 ^ consecutive_failures  (0 once the last call left the 15-minute window)
//!
//! slowness, model or tool = p50(1 min) / baseline
//! slowness, agent         = Σ latency / Σ expected    over the successful calls of 1 minute,
//!                           expected = the agent's baseline at the tier that served the call
//! ```
//!
//! Model and tool windows hold every upstream attempt. An agent's window
//! holds what the agent experienced: under a router (as `AgentStack`
//! composes it, see [`Scope`]) one final outcome per call — an attempt the
//! router recovered from is the model's failure, not the agent's — and its
//! latency is judged against its own baseline at the serving tier (an EWMA
//! per tier, α = 0.01), so moving the agent to a slower tier does not make
//! it "slow". Cancellations count in neither successes nor failures. A
//! subject never seen, or idle for 15 minutes, scores 1.
//!
//! Context warnings and resets arrive as events:
//! [`HealthRegistry`] implements [`EventSink`](mantissa_core::EventSink), so
//! the reset layer can report to it directly.
//!
//! ## Cost on the hot path
//!
//! Per call ([`MetricsMode::Cells`]): two clock reads (four on the one call
//! in 16 per thread that samples `mantissa_middleware_overhead_seconds`);
//! one cache lookup of the label tuple (an `ArcSwap` load and a hash); about
//! a dozen relaxed atomic additions into the series' cells (one of them a
//! compare-and-swap per dollar sum and latency baseline); one load per
//! registry subject to see whether its window slot turned over (the first
//! call of each 5-second slot copies the totals, under a lock taken once per
//! slot); the journal (one atomic add and a lock of its own slot); and the
//! sinks. [`MetricsMode::Recorder`] adds about nine handle operations. No
//! global lock, no allocation (except for an error's message).
//! `benches/health.rs` at the workspace root measures it against a no-op
//! inner service beside the floor layer.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cache;
mod cells;
pub mod events;
pub mod future;
mod layer;
mod mode;
mod record;
pub mod registry;
mod request;
mod service;
mod trace;

pub use events::JsonLinesSink;
pub use layer::HealthLayer;
pub use mode::MetricsMode;
pub use record::Scope;
pub use registry::{HealthRegistry, HealthSnapshot, SubjectHealth, WindowStats};
pub use request::{Classify, ObservedRequest};
pub use service::Health;
