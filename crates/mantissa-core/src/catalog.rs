//! The metric catalogue: every metric name, label key and histogram bucket
//! layout of mantissa, in one place. Documented for operators in
//! `docs/metrics.md`.
//!
//! Standard signals use the OpenTelemetry GenAI semantic-convention names,
//! translated to Prometheus (dots to underscores, unit suffix); everything else
//! is `mantissa_*`. Label values are bounded: agents, tiers and models come from
//! configuration (unknown models fold into `other`), tools are named by code,
//! outcomes and error types are enums. Session ids are never labels.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Label keys.
pub mod labels {
    /// OTel `gen_ai.operation.name`: `chat` or `execute_tool`.
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai_operation_name";
    /// OTel `gen_ai.provider.name`, for example `openai`.
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai_provider_name";
    /// OTel `gen_ai.request.model` (bounded by configuration).
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai_request_model";
    /// OTel `gen_ai.token.type`: `input` or `output`.
    pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai_token_type";
    /// OTel `gen_ai.tool.name`.
    pub const GEN_AI_TOOL_NAME: &str = "gen_ai_tool_name";
    /// OTel `gen_ai.agent.name`.
    pub const GEN_AI_AGENT_NAME: &str = "gen_ai_agent_name";
    /// OTel `error.type`: a [`FailureClass`](crate::FailureClass) name; absent on success.
    pub const ERROR_TYPE: &str = "error_type";
    /// Agent name on `mantissa_*` metrics.
    pub const AGENT: &str = "agent";
    /// Model id on `mantissa_*` metrics.
    pub const MODEL: &str = "model";
    /// Tier name.
    pub const TIER: &str = "tier";
    /// Tool name on `mantissa_*` metrics.
    pub const TOOL: &str = "tool";
    /// `llm` or `tool`.
    pub const KIND: &str = "kind";
    /// `success`, `error` or `cancelled`.
    pub const OUTCOME: &str = "outcome";
    /// `input` or `output` on `mantissa_tokens_total`.
    pub const TOKEN_TYPE: &str = "token_type";
    /// A reason (triage, fallback, reset), from a fixed set.
    pub const REASON: &str = "reason";
    /// A compaction strategy.
    pub const STRATEGY: &str = "strategy";
    /// Fallback origin tier.
    pub const FROM_TIER: &str = "from_tier";
    /// Fallback destination tier.
    pub const TO_TIER: &str = "to_tier";
    /// The layer whose overhead is measured.
    pub const LAYER: &str = "layer";
    /// Alert rule name.
    pub const RULE: &str = "rule";
    /// Alert severity.
    pub const SEVERITY: &str = "severity";
    /// Alert sink name.
    pub const SINK: &str = "sink";
    /// Alert transition (`pending`, `firing`, `resolved`).
    pub const STATE: &str = "state";
}

/// OTel operation name for chat completions.
pub const OPERATION_CHAT: &str = "chat";
/// OTel operation name for tool execution.
pub const OPERATION_EXECUTE_TOOL: &str = "execute_tool";

// ---- OpenTelemetry GenAI (Prometheus-translated) ----

/// Histogram, seconds: duration of each LLM or tool call.
pub const GEN_AI_CLIENT_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
/// Histogram, tokens: input and output tokens per call.
pub const GEN_AI_CLIENT_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
/// Histogram, seconds: time from request to the first chunk of a streamed response.
pub const GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: &str = "gen_ai_client_operation_time_to_first_chunk_seconds";

// ---- health ----

/// Counter: calls by kind, agent, model or tool, outcome and error type.
pub const CALLS_TOTAL: &str = "mantissa_calls_total";
/// Gauge: calls in flight by kind and agent.
pub const CALLS_IN_FLIGHT: &str = "mantissa_calls_in_flight";
/// Counter: tokens by agent, model and token type.
pub const TOKENS_TOTAL: &str = "mantissa_tokens_total";
/// Counter, dollars: cost by agent, tier and model.
pub const COST_USD_TOTAL: &str = "mantissa_cost_usd_total";
/// Counter, dollars: what the same calls would have cost on the top tier.
pub const COUNTERFACTUAL_COST_USD_TOTAL: &str = "mantissa_counterfactual_cost_usd_total";
/// Counter: LLM calls with tokens whose cost is unknown (the model has no
/// configured or catalogued price, or is not configured: `other`), by model.
pub const UNKNOWN_COST_CALLS_TOTAL: &str = "mantissa_unknown_cost_calls_total";
/// Histogram, seconds: time the middleware itself adds per call, by layer.
pub const MIDDLEWARE_OVERHEAD: &str = "mantissa_middleware_overhead_seconds";
/// Gauge: agent health score in [0, 1] (the agent's "precision").
pub const AGENT_HEALTH_SCORE: &str = "mantissa_agent_health_score";

// ---- triage and routing ----

/// Counter: triage decisions by agent, tier and reason.
pub const TRIAGE_DECISIONS_TOTAL: &str = "mantissa_triage_decisions_total";
/// Histogram: triage scores in [0, 1] by agent.
pub const TRIAGE_SCORE: &str = "mantissa_triage_score";
/// Counter: fallbacks by origin tier, destination tier and reason.
pub const FALLBACKS_TOTAL: &str = "mantissa_fallbacks_total";
/// Gauge: model state (0 healthy, 1 degraded, 2 cooled down).
pub const MODEL_STATE: &str = "mantissa_model_state";

// ---- reset ----

/// Counter: context resets by agent, reason and strategy.
pub const CONTEXT_RESETS_TOTAL: &str = "mantissa_context_resets_total";
/// The `reason`s of [`CONTEXT_RESETS_TOTAL`] that make a reset error-driven:
/// an error streak (`consecutive_errors`) or a high error rate
/// (`error_rate`). Routine resets (turn and token limits, the provider's
/// context-length rejection), latency drift and requested resets are not.
///
/// The one definition of a reset spike: the monitor's `reset_spike`
/// condition counts these (the registry's `error_driven_resets`), and so does
/// the Prometheus alert `MantissaContextResetSpike`
/// (`deploy/prometheus/alert_rules.yml`; a test keeps the two equal).
pub const ERROR_DRIVEN_RESET_REASONS: [&str; 2] = ["consecutive_errors", "error_rate"];

/// Whether a context reset with this `reason` is error-driven (see
/// [`ERROR_DRIVEN_RESET_REASONS`]).
pub fn is_error_driven_reset(reason: &str) -> bool {
    ERROR_DRIVEN_RESET_REASONS.contains(&reason)
}
/// Counter: brittleness warnings by agent and reason.
pub const CONTEXT_WARNINGS_TOTAL: &str = "mantissa_context_warnings_total";
/// Gauge: sessions held by the session store.
pub const ACTIVE_SESSIONS: &str = "mantissa_active_sessions";
/// Histogram: session turns at the moment of a reset.
pub const SESSION_TURNS_AT_RESET: &str = "mantissa_session_turns_at_reset";
/// Histogram, tokens: context tokens before a reset.
pub const SESSION_CONTEXT_TOKENS_AT_RESET: &str = "mantissa_session_context_tokens_at_reset";
/// Histogram: brittleness score in [0, 1] observed per call.
pub const SESSION_BRITTLENESS: &str = "mantissa_session_brittleness";

// ---- monitor ----

/// Gauge: alerts currently firing by rule and severity.
pub const ALERTS_FIRING: &str = "mantissa_alerts_firing";
/// Counter: alert transitions by rule, severity and state.
pub const ALERTS_TOTAL: &str = "mantissa_alerts_total";
/// Counter: alert notifications a sink dropped, by sink.
pub const ALERT_SINK_DROPPED_TOTAL: &str = "mantissa_alert_sink_dropped_total";

/// OTel GenAI explicit bucket boundaries for `gen_ai.client.operation.duration`
/// (seconds): 0.01 … 81.92, doubling.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// OTel GenAI explicit bucket boundaries for `gen_ai.client.token.usage`:
/// 1 … 67,108,864, ×4.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Buckets for the middleware's own overhead (seconds): 100 ns … ~1.6 ms, ×2.
pub const OVERHEAD_BUCKETS: &[f64] = &[
    1e-7, 2e-7, 4e-7, 8e-7, 1.6e-6, 3.2e-6, 6.4e-6, 1.28e-5, 2.56e-5, 5.12e-5, 1.024e-4, 2.048e-4, 4.096e-4,
    8.192e-4, 1.6384e-3,
];

/// Buckets for scores in [0, 1] (triage score, brittleness).
pub const SCORE_BUCKETS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];

/// Buckets for session turn counts.
pub const TURN_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 200.0, 500.0, 1000.0];

/// Every histogram of the catalogue with its bucket boundaries. The exporter
/// installs these so no histogram is rendered as a summary.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (GEN_AI_CLIENT_OPERATION_DURATION, DURATION_BUCKETS),
    (GEN_AI_CLIENT_TOKEN_USAGE, TOKEN_BUCKETS),
    (GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, DURATION_BUCKETS),
    (MIDDLEWARE_OVERHEAD, OVERHEAD_BUCKETS),
    (TRIAGE_SCORE, SCORE_BUCKETS),
    (SESSION_TURNS_AT_RESET, TURN_BUCKETS),
    (SESSION_CONTEXT_TOKENS_AT_RESET, TOKEN_BUCKETS),
    (SESSION_BRITTLENESS, SCORE_BUCKETS),
];

/// Every counter name of the catalogue.
pub const COUNTERS: &[&str] = &[
    CALLS_TOTAL,
    TOKENS_TOTAL,
    COST_USD_TOTAL,
    COUNTERFACTUAL_COST_USD_TOTAL,
    UNKNOWN_COST_CALLS_TOTAL,
    TRIAGE_DECISIONS_TOTAL,
    FALLBACKS_TOTAL,
    CONTEXT_RESETS_TOTAL,
    CONTEXT_WARNINGS_TOTAL,
    ALERTS_TOTAL,
    ALERT_SINK_DROPPED_TOTAL,
];

/// Counters whose values are fractional (dollars). The `metrics` facade's
/// counters are integers, so these are recorded through gauge handles that
/// only ever increase, and the exporter renders them with
/// `# TYPE … counter` (Prometheus counters may hold any non-negative float).
pub const FLOAT_COUNTERS: &[&str] = &[COST_USD_TOTAL, COUNTERFACTUAL_COST_USD_TOTAL];

/// Every gauge name of the catalogue.
pub const GAUGES: &[&str] = &[
    CALLS_IN_FLIGHT,
    AGENT_HEALTH_SCORE,
    MODEL_STATE,
    ACTIVE_SESSIONS,
    ALERTS_FIRING,
];

/// Describes every metric of the catalogue (unit and help text) to the
/// installed recorder. The exporter calls this once at install time.
pub fn describe_all() {
    describe_histogram!(
        GEN_AI_CLIENT_OPERATION_DURATION,
        Unit::Seconds,
        "GenAI operation duration."
    );
    describe_histogram!(
        GEN_AI_CLIENT_TOKEN_USAGE,
        Unit::Count,
        "Number of input and output tokens used."
    );
    describe_histogram!(
        GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
        Unit::Seconds,
        "Time from request to the first chunk of a streamed response."
    );
    describe_counter!(
        CALLS_TOTAL,
        Unit::Count,
        "LLM and tool calls by outcome and error type."
    );
    describe_gauge!(
        CALLS_IN_FLIGHT,
        Unit::Count,
        "LLM and tool calls currently in flight."
    );
    describe_counter!(
        TOKENS_TOTAL,
        Unit::Count,
        "Tokens consumed by agent, model and token type."
    );
    describe_counter!(COST_USD_TOTAL, "Cost in US dollars by agent, tier and model.");
    describe_counter!(
        COUNTERFACTUAL_COST_USD_TOTAL,
        "What the same calls would have cost in US dollars on the top tier's model."
    );
    describe_counter!(
        UNKNOWN_COST_CALLS_TOTAL,
        Unit::Count,
        "LLM calls whose cost is unknown (no configured or catalogued price), by model; counted at cost 0."
    );
    describe_histogram!(
        MIDDLEWARE_OVERHEAD,
        Unit::Seconds,
        "Time added by mantissa's layers per call."
    );
    describe_gauge!(
        AGENT_HEALTH_SCORE,
        "Agent health score in [0, 1] (1 = fully healthy)."
    );
    describe_counter!(
        TRIAGE_DECISIONS_TOTAL,
        Unit::Count,
        "Triage decisions by agent, tier and reason."
    );
    describe_histogram!(TRIAGE_SCORE, "Triage complexity scores in [0, 1].");
    describe_counter!(
        FALLBACKS_TOTAL,
        Unit::Count,
        "Router fallbacks by origin tier, destination tier and reason."
    );
    describe_gauge!(MODEL_STATE, "Model state: 0 healthy, 1 degraded, 2 cooled down.");
    describe_counter!(
        CONTEXT_RESETS_TOTAL,
        Unit::Count,
        "Context resets by agent, reason and strategy."
    );
    describe_counter!(
        CONTEXT_WARNINGS_TOTAL,
        Unit::Count,
        "Brittleness warnings by agent and reason."
    );
    describe_gauge!(
        ACTIVE_SESSIONS,
        Unit::Count,
        "Sessions held by the session store."
    );
    describe_histogram!(
        SESSION_TURNS_AT_RESET,
        Unit::Count,
        "Session turns when a context reset happened."
    );
    describe_histogram!(
        SESSION_CONTEXT_TOKENS_AT_RESET,
        Unit::Count,
        "Context tokens before a context reset."
    );
    describe_histogram!(
        SESSION_BRITTLENESS,
        "Session brittleness score in [0, 1] per call."
    );
    describe_gauge!(ALERTS_FIRING, Unit::Count, "Health alerts currently firing.");
    describe_counter!(
        ALERTS_TOTAL,
        Unit::Count,
        "Health alert transitions by rule, severity and state."
    );
    describe_counter!(
        ALERT_SINK_DROPPED_TOTAL,
        Unit::Count,
        "Alert notifications dropped by a sink."
    );
}

/// Receives metric values that a collector reads at scrape time, rather than
/// through the `metrics` recorder: the health registry's per-series cells
/// (`mantissa_health::HealthRegistry::collect`), rendered by
/// `mantissa_prometheus::ExporterHandle::register_collector`. Names and label
/// keys are the catalogue's; label order is kept as given. A value reported
/// twice for the same name and labels (two registries behind one exporter)
/// is summed, as one recorder would have counted both.
pub trait MetricVisitor {
    /// A counter (integer or float): its total since the process started.
    fn counter(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64);
    /// A gauge: its current value.
    fn gauge(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64);
    /// A histogram with the explicit upper `bounds` of [`HISTOGRAMS`]:
    /// `counts[i]` is the number of samples `<= bounds[i]` (cumulative, one
    /// entry per bound; the `+Inf` bucket is `count`), `sum` their sum.
    fn histogram(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &str)],
        bounds: &'static [f64],
        counts: &[u64],
        sum: f64,
        count: u64,
    );
}
