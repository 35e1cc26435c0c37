//! [`async-openai`](https://docs.rs/async-openai) in front of or behind
//! mantissa (feature `async-openai`).
//!
//! - **Conversions** between async-openai's chat-completion types and
//!   [`LlmRequest`] / [`LlmResponse`] / [`Chunk`]: [`request_from_openai`],
//!   [`request_to_openai`], [`response_from_openai`], [`response_to_openai`],
//!   [`chunk_from_openai`], [`chunk_to_openai`].
//! - **An upstream**, [`AsyncOpenAiUpstream`], that sends mantissa's calls
//!   through your own `async_openai::Client` (its base URL, key, headers and
//!   HTTP client stay yours); [`upstream`] makes it an [`Upstream`] of an
//!   [`AgentStack`](crate::AgentStack).
//!
//! # What is carried
//!
//! Messages (system, user, assistant, tool; text content, names, tool calls
//! and tool-call ids), tools, sampling settings, usage (with cached input
//! tokens) and finish reasons convert both ways without loss. Request
//! fields mantissa has no field for (`max_completion_tokens`, `n`,
//! `response_format`, `tool_choice`, `metadata`, …) ride in
//! [`GenerationParams::extra`](mantissa_core::GenerationParams::extra) and
//! are sent upstream verbatim. A response's envelope (`id`, `created`,
//! `system_fingerprint`, a choice's `logprobs`, usage breakdowns) rides in
//! the response's extensions as [`OpenAiEnvelope`] and comes back on the way
//! out. What a mantissa message cannot hold is a [`ConversionError`] naming
//! the field, never a silent drop: `developer` and `function` messages,
//! content parts other than one text part (images, audio, files), refusals,
//! audio replies, custom tools, `strict` function schemas, several choices.
//!
//! Not carried, by design: a stream chunk's own envelope (`id`, `created`,
//! `system_fingerprint` of each chunk; the delta's `role`, always
//! `assistant`) and the request's `stream_options` (mantissa always asks
//! for usage on streams).
//!
//! ```
//! use async_openai::types::chat::{
//!     ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
//! };
//! use mantissa::adapters::async_openai::{request_from_openai, request_to_openai};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let theirs = CreateChatCompletionRequestArgs::default()
//!     .model("gpt-4o-mini")
//!     .messages([ChatCompletionRequestUserMessageArgs::default().content("hi").build()?.into()])
//!     .temperature(0.2)
//!     .build()?;
//! let ours = request_from_openai(theirs.clone(), "session-1", "trader")?;
//! assert_eq!(ours.messages()[0].text(), "hi");
//! assert_eq!(request_to_openai(&ours)?, theirs);
//! # Ok(()) }
//! ```

use std::fmt;
use std::task::{Context, Poll};

use ::async_openai::Client;
use ::async_openai::config::Config;
use ::async_openai::error::OpenAIError;
use ::async_openai::types::chat::{
    ChatCompletionRequestMessage, CreateChatCompletionRequest, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use mantissa_core::{
    AgentName, BoxError, Chunk, ChunkStream, FailureClass, FinishReason, LlmError, LlmRequest, LlmResponse,
    Message, ModelId, ModelSpec, Role, SessionId, ToolCall, ToolCallDelta, ToolSpec, Usage,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::Upstream;

/// A value that async-openai's types and mantissa's cannot both hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot convert {what}: {reason}")]
pub struct ConversionError {
    what: String,
    reason: String,
}

impl ConversionError {
    fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// The field or value that could not be converted.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The parts of an OpenAI chat-completion response that [`LlmResponse`] has
/// no field for, kept in its extensions so a round trip is lossless.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenAiEnvelope {
    /// Top-level fields (`id`, `object`, `created`, `system_fingerprint`, …).
    pub response: Map<String, Value>,
    /// Fields of the choice other than its message and finish reason
    /// (`logprobs`, …).
    pub choice: Map<String, Value>,
    /// Usage fields other than the prompt, completion and cached-input
    /// counts (`completion_tokens_details`, …).
    pub usage: Map<String, Value>,
}

// ---- JSON helpers ----

fn to_json<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<Value, ConversionError> {
    serde_json::to_value(value).map_err(|e| ConversionError::new(what, e.to_string()))
}

fn from_json<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ConversionError> {
    serde_json::from_value(value).map_err(|e| ConversionError::new(what, e.to_string()))
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, ConversionError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ConversionError::new(
            what,
            format!("expected an object, got {other}"),
        )),
    }
}

/// Whether a field holds nothing (absent, `null`, `[]` or `{}`).
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Fails if `map` still holds a non-empty field: one mantissa cannot carry.
fn nothing_left(map: &Map<String, Value>, what: &str) -> Result<(), ConversionError> {
    match map.iter().find(|(_, v)| !is_empty(v)) {
        Some((k, _)) => Err(ConversionError::new(
            format!("field `{k}` of {what}"),
            "mantissa has no place for it",
        )),
        None => Ok(()),
    }
}

fn take_string(
    map: &mut Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<String>, ConversionError> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ConversionError::new(
            format!("field `{key}` of {what}"),
            format!("expected a string, got {other}"),
        )),
    }
}

fn take_u64(map: &mut Map<String, Value>, key: &str) -> u64 {
    map.remove(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

// ---- messages and tools ----

fn message_from_json(value: Value, what: &str) -> Result<Message, ConversionError> {
    let mut m = object(value, what)?;
    let role = match take_string(&mut m, "role", what)?.as_deref() {
        Some("system") => Role::System,
        Some("user") => Role::User,
        Some("assistant") | None => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => {
            return Err(ConversionError::new(
                format!("a `{other}` message"),
                "mantissa carries system, user, assistant and tool messages",
            ));
        }
    };
    let content = match m.remove("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(mut parts)) if parts.len() == 1 => {
            let mut part = object(parts.remove(0), "a content part")?;
            match (
                take_string(&mut part, "type", "a content part")?.as_deref(),
                part.remove("text"),
            ) {
                (Some("text"), Some(Value::String(text))) if part.is_empty() => Some(text),
                _ => {
                    return Err(ConversionError::new(
                        format!("the content of {what}"),
                        "only text content is carried (no images, audio or files)",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(ConversionError::new(
                format!("the content of {what}"),
                "only text content (a string or one text part) is carried",
            ));
        }
    };
    let name = take_string(&mut m, "name", what)?;
    let tool_call_id = take_string(&mut m, "tool_call_id", what)?;
    let tool_calls = match m.remove("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .into_iter()
            .map(tool_call_from_json)
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ConversionError::new(
                format!("the tool calls of {what}"),
                format!("expected an array, got {other}"),
            ));
        }
    };
    nothing_left(&m, what)?;
    Ok(Message {
        role,
        content,
        name,
        tool_calls,
        tool_call_id,
    })
}

fn tool_call_from_json(value: Value) -> Result<ToolCall, ConversionError> {
    let what = "a tool call";
    let mut c = object(value, what)?;
    let kind = take_string(&mut c, "type", what)?.unwrap_or_else(|| "function".to_owned());
    if kind != "function" {
        return Err(ConversionError::new(
            format!("a `{kind}` tool call"),
            "only function tool calls are carried",
        ));
    }
    let id = take_string(&mut c, "id", what)?.unwrap_or_default();
    let mut f = object(
        c.remove("function").unwrap_or(Value::Null),
        "a tool call's function",
    )?;
    let name = take_string(&mut f, "name", "a tool call's function")?.unwrap_or_default();
    let arguments = take_string(&mut f, "arguments", "a tool call's function")?.unwrap_or_default();
    nothing_left(&f, "a tool call's function")?;
    nothing_left(&c, what)?;
    Ok(ToolCall {
        id,
        kind,
        function: mantissa_core::FunctionCall { name, arguments },
    })
}

fn tool_from_json(value: Value) -> Result<ToolSpec, ConversionError> {
    let what = "a tool";
    let mut t = object(value, what)?;
    let kind = take_string(&mut t, "type", what)?.unwrap_or_else(|| "function".to_owned());
    if kind != "function" {
        return Err(ConversionError::new(
            format!("a `{kind}` tool"),
            "only function tools are carried",
        ));
    }
    let f = t.remove("function").unwrap_or(Value::Null);
    nothing_left(&t, what)?;
    let mut f = object(f, "a tool's function")?;
    if matches!(f.get("strict"), Some(Value::Bool(true))) {
        return Err(ConversionError::new(
            "field `strict` of a tool's function",
            "strict schemas are not carried",
        ));
    }
    f.remove("strict");
    let spec = from_json(Value::Object(f.clone()), "a tool's function")?;
    for k in ["name", "description", "parameters"] {
        f.remove(k);
    }
    nothing_left(&f, "a tool's function")?;
    Ok(ToolSpec { kind, function: spec })
}

// ---- requests ----

/// Keys of a chat-completion request with a field of their own in
/// [`LlmRequest`]; everything else goes to `params.extra`.
const REQUEST_FIELDS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "stream",
    "stream_options",
];

/// An async-openai request as a mantissa request of `agent` in `session`
/// (see the [module docs](self) for what is carried).
pub fn request_from_openai(
    req: CreateChatCompletionRequest,
    session: impl Into<SessionId>,
    agent: impl Into<AgentName>,
) -> Result<LlmRequest, ConversionError> {
    let mut r = object(to_json(&req, "the request")?, "the request")?;
    let messages = match r.remove("messages") {
        Some(Value::Array(ms)) => ms
            .into_iter()
            .enumerate()
            .map(|(i, m)| message_from_json(m, &format!("messages[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let mut out = LlmRequest::new(session, agent, messages);
    out.model = take_string(&mut r, "model", "the request")?.map(ModelId::from);
    if let Some(Value::Array(tools)) = r.remove("tools") {
        out.tools = tools.into_iter().map(tool_from_json).collect::<Result<_, _>>()?;
    }
    let p = &mut out.params;
    p.temperature = r.remove("temperature").and_then(|v| v.as_f64()).map(|v| v as f32);
    p.top_p = r.remove("top_p").and_then(|v| v.as_f64()).map(|v| v as f32);
    p.max_tokens = r
        .remove("max_tokens")
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok());
    p.seed = r.remove("seed").and_then(|v| v.as_i64());
    p.stream = r.remove("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    p.stop = match r.remove("stop") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    r.remove("stream_options");
    p.extra = r.into_iter().filter(|(_, v)| !v.is_null()).collect();
    Ok(out)
}

/// A mantissa request as an async-openai request. The request must name its
/// model (the router sets it; see [`AsyncOpenAiUpstream::default_model`]).
pub fn request_to_openai(req: &LlmRequest) -> Result<CreateChatCompletionRequest, ConversionError> {
    let model = req
        .model
        .as_ref()
        .ok_or_else(|| ConversionError::new("the request", "it names no model"))?;
    let mut r = Map::new();
    r.insert("model".into(), json!(model.as_str()));
    let mut messages = Vec::with_capacity(req.messages().len());
    for (i, m) in req.messages().iter().enumerate() {
        let what = format!("messages[{i}]");
        let theirs: ChatCompletionRequestMessage = from_json(to_json(m, &what)?, &what)?;
        let theirs = to_json(&theirs, &what)?;
        // async-openai's message types ignore fields they lack (a tool
        // message's name, a user message's tool calls): refuse the loss.
        if message_from_json(theirs.clone(), &what)? != *m {
            return Err(ConversionError::new(
                what,
                format!("async-openai's {} message cannot hold all of it", m.role.as_str()),
            ));
        }
        messages.push(theirs);
    }
    r.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        r.insert("tools".into(), to_json(&req.tools, "the tools")?);
    }
    let p = &req.params;
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            r.insert(k.into(), v);
        }
    };
    put("temperature", p.temperature.map(|v| json!(v)));
    put("top_p", p.top_p.map(|v| json!(v)));
    put("max_tokens", p.max_tokens.map(|v| json!(v)));
    put("seed", p.seed.map(|v| json!(v)));
    put("stream", p.stream.then_some(Value::Bool(true)));
    put("stop", (!p.stop.is_empty()).then(|| json!(p.stop)));
    for (k, v) in &p.extra {
        if REQUEST_FIELDS.contains(&k.as_str()) {
            return Err(ConversionError::new(
                format!("params.extra.{k}"),
                "it shadows a field of the request",
            ));
        }
        r.insert(k.clone(), v.clone());
    }
    from_json(Value::Object(r), "the request")
}

// ---- responses ----

fn usage_from_json(value: Value) -> Result<(Usage, Map<String, Value>), ConversionError> {
    let mut u = object(value, "the usage")?;
    let input = take_u64(&mut u, "prompt_tokens");
    let output = take_u64(&mut u, "completion_tokens");
    u.remove("total_tokens");
    let mut cached = 0;
    if let Some(Value::Object(details)) = u.get_mut("prompt_tokens_details") {
        cached = details
            .remove("cached_tokens")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
    }
    Ok((Usage::new(input, output).with_cached_input(cached), u))
}

fn usage_to_json(usage: &Usage, extra: &Map<String, Value>) -> Value {
    let mut u = extra.clone();
    u.insert("prompt_tokens".into(), json!(usage.input_tokens));
    u.insert("completion_tokens".into(), json!(usage.output_tokens));
    u.insert("total_tokens".into(), json!(usage.total()));
    if usage.cached_input_tokens > 0 {
        let details = u
            .entry("prompt_tokens_details")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(d) = details {
            d.insert("cached_tokens".into(), json!(usage.cached_input_tokens));
        }
    }
    Value::Object(u)
}

fn finish_from_json(value: Option<Value>) -> Result<Option<FinishReason>, ConversionError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => from_json(v, "the finish reason").map(Some),
    }
}

/// The single choice of a response or chunk (`None` for a chunk without one).
fn single_choice(
    r: &mut Map<String, Value>,
    what: &str,
) -> Result<Option<Map<String, Value>>, ConversionError> {
    match r.remove("choices") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(mut choices)) => match choices.len() {
            0 => Ok(None),
            1 => {
                let mut c = object(choices.remove(0), "the choice")?;
                if c.remove("index").and_then(|v| v.as_u64()).unwrap_or(0) != 0 {
                    return Err(ConversionError::new("the choice", "its index is not 0"));
                }
                Ok(Some(c))
            }
            n => Err(ConversionError::new(
                format!("{what} with {n} choices"),
                "mantissa carries one choice (n = 1)",
            )),
        },
        Some(other) => Err(ConversionError::new(
            format!("the choices of {what}"),
            format!("expected an array, got {other}"),
        )),
    }
}

/// An async-openai response as a mantissa response; its envelope goes to
/// the extensions as [`OpenAiEnvelope`].
pub fn response_from_openai(resp: CreateChatCompletionResponse) -> Result<LlmResponse, ConversionError> {
    let mut r = object(to_json(&resp, "the response")?, "the response")?;
    let mut choice = single_choice(&mut r, "a response")?
        .ok_or_else(|| ConversionError::new("the response", "it has no choice"))?;
    let message = message_from_json(
        choice.remove("message").unwrap_or(Value::Null),
        "the response message",
    )?;
    let finish_reason = finish_from_json(choice.remove("finish_reason"))?;
    let model = take_string(&mut r, "model", "the response")?.unwrap_or_default();
    let (usage, usage_extra) = match r.remove("usage") {
        None | Some(Value::Null) => (Usage::default(), Map::new()),
        Some(u) => usage_from_json(u)?,
    };
    let mut out = LlmResponse::new(model, message, usage);
    out.finish_reason = finish_reason;
    out.extensions.insert(OpenAiEnvelope {
        response: r,
        choice,
        usage: usage_extra,
    });
    Ok(out)
}

/// A complete mantissa response as an async-openai response. Its
/// [`OpenAiEnvelope`], if any, supplies the envelope; otherwise the id is
/// `chatcmpl-mantissa` and `created` is now. A streaming response is an
/// error: convert its chunks with [`chunk_to_openai`].
pub fn response_to_openai(resp: &LlmResponse) -> Result<CreateChatCompletionResponse, ConversionError> {
    if resp.is_streaming() {
        return Err(ConversionError::new(
            "a streaming response",
            "convert its chunks with chunk_to_openai",
        ));
    }
    let envelope = resp
        .extensions
        .get::<OpenAiEnvelope>()
        .cloned()
        .unwrap_or_default();
    let mut r = envelope.response;
    r.entry("id").or_insert_with(|| json!("chatcmpl-mantissa"));
    r.entry("object").or_insert_with(|| json!("chat.completion"));
    r.entry("created").or_insert_with(|| json!(unix_now()));
    r.insert("model".into(), json!(resp.model.as_str()));
    let mut choice = envelope.choice;
    choice.insert("index".into(), json!(0));
    if resp.message.role != Role::Assistant
        || resp.message.name.is_some()
        || resp.message.tool_call_id.is_some()
    {
        return Err(ConversionError::new(
            "the response message",
            "a chat-completion reply is an assistant message without name or tool-call id",
        ));
    }
    choice.insert("message".into(), to_json(&resp.message, "the message")?);
    if let Some(f) = &resp.finish_reason {
        choice.insert("finish_reason".into(), json!(f.as_str()));
    }
    r.insert("choices".into(), json!([choice]));
    r.insert("usage".into(), usage_to_json(&resp.usage, &envelope.usage));
    from_json(Value::Object(r), "the response")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- stream chunks ----

/// An async-openai stream chunk as a mantissa chunk (its delta, finish
/// reason and usage; see the [module docs](self) for the envelope).
pub fn chunk_from_openai(chunk: CreateChatCompletionStreamResponse) -> Result<Chunk, ConversionError> {
    let mut r = object(to_json(&chunk, "the chunk")?, "the chunk")?;
    let mut out = Chunk::default();
    if let Some(mut choice) = single_choice(&mut r, "a chunk")? {
        out.finish_reason = finish_from_json(choice.remove("finish_reason"))?;
        choice.remove("logprobs");
        let mut delta = object(choice.remove("delta").unwrap_or(json!({})), "the delta")?;
        nothing_left(&choice, "the chunk's choice")?;
        match take_string(&mut delta, "role", "the delta")?.as_deref() {
            None | Some("assistant") => {}
            Some(other) => {
                return Err(ConversionError::new(
                    format!("a `{other}` delta"),
                    "a streamed reply is the assistant's",
                ));
            }
        }
        out.content = take_string(&mut delta, "content", "the delta")?;
        if let Some(Value::Array(calls)) = delta.remove("tool_calls") {
            for call in calls {
                let mut c = object(call, "a tool-call delta")?;
                let index = c.remove("index").and_then(|v| v.as_u64()).unwrap_or(0);
                let index = u32::try_from(index)
                    .map_err(|_| ConversionError::new("a tool-call delta", "its index is out of range"))?;
                let id = take_string(&mut c, "id", "a tool-call delta")?;
                c.remove("type");
                let (name, arguments) = match c.remove("function") {
                    Some(Value::Object(mut f)) => {
                        let name = take_string(&mut f, "name", "a tool-call delta")?;
                        let args = take_string(&mut f, "arguments", "a tool-call delta")?;
                        nothing_left(&f, "a tool-call delta's function")?;
                        (name, args)
                    }
                    _ => (None, None),
                };
                nothing_left(&c, "a tool-call delta")?;
                out.tool_calls.push(ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments,
                });
            }
        }
        nothing_left(&delta, "the delta")?;
    }
    if let Some(u) = r.remove("usage").filter(|u| !u.is_null()) {
        out.usage = Some(usage_from_json(u)?.0);
    }
    Ok(out)
}

/// A mantissa chunk as an async-openai stream chunk of the stream `id` from
/// `model`, created at `created` (Unix seconds).
pub fn chunk_to_openai(
    chunk: &Chunk,
    id: &str,
    model: &str,
    created: u32,
) -> Result<CreateChatCompletionStreamResponse, ConversionError> {
    let mut delta = Map::new();
    if let Some(c) = &chunk.content {
        delta.insert("content".into(), json!(c));
    }
    if !chunk.tool_calls.is_empty() {
        let calls: Vec<Value> = chunk
            .tool_calls
            .iter()
            .map(|d| {
                let mut c = Map::new();
                c.insert("index".into(), json!(d.index));
                if let Some(id) = &d.id {
                    c.insert("id".into(), json!(id));
                    c.insert("type".into(), json!("function"));
                }
                let mut f = Map::new();
                if let Some(n) = &d.name {
                    f.insert("name".into(), json!(n));
                }
                if let Some(a) = &d.arguments {
                    f.insert("arguments".into(), json!(a));
                }
                if !f.is_empty() {
                    c.insert("function".into(), Value::Object(f));
                }
                Value::Object(c)
            })
            .collect();
        delta.insert("tool_calls".into(), json!(calls));
    }
    let has_choice = !delta.is_empty() || chunk.finish_reason.is_some() || chunk.usage.is_none();
    let choices = if has_choice {
        json!([{
            "index": 0,
            "delta": delta,
            "finish_reason": chunk.finish_reason.as_ref().map(FinishReason::as_str),
        }])
    } else {
        json!([])
    };
    let mut r = Map::new();
    r.insert("id".into(), json!(id));
    r.insert("object".into(), json!("chat.completion.chunk"));
    r.insert("created".into(), json!(created));
    r.insert("model".into(), json!(model));
    r.insert("choices".into(), choices);
    if let Some(u) = &chunk.usage {
        r.insert("usage".into(), usage_to_json(u, &Map::new()));
    }
    from_json(Value::Object(r), "the chunk")
}

// ---- the upstream ----

/// Sends mantissa's calls through your `async_openai::Client`: a
/// `Service<LlmRequest>` to put under mantissa's layers (or, through
/// [`upstream`], the upstream of an [`AgentStack`](crate::AgentStack):
/// `AgentStack::builder(upstream(client))`).
///
/// Errors are [`LlmError`]s classified from async-openai's: HTTP 429 is
/// rate limited, 5xx an upstream server error, a 400 with code
/// `context_length_exceeded` a context overflow, other 4xx client errors,
/// a timeout a timeout, other HTTP failures transport errors, and an
/// unreadable body an invalid response. The client's own policies run
/// inside: async-openai retries rate-limited (429) calls itself by default,
/// so mantissa sees such a call once, when that retrying gives up or succeeds.
///
/// ```no_run
/// use async_openai::{Client, config::OpenAIConfig};
/// use mantissa::HealthLayer;
/// use mantissa::adapters::async_openai::AsyncOpenAiUpstream;
/// use tower::Layer;
///
/// let client = Client::with_config(OpenAIConfig::new().with_api_base("http://127.0.0.1:8000/v1"));
/// let llm = HealthLayer::new().layer(AsyncOpenAiUpstream::new(client).default_model("gpt-4o-mini"));
/// ```
pub struct AsyncOpenAiUpstream<C: Config> {
    client: Client<C>,
    default_model: Option<ModelId>,
}

impl<C: Config + Clone> Clone for AsyncOpenAiUpstream<C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            default_model: self.default_model.clone(),
        }
    }
}

impl<C: Config> fmt::Debug for AsyncOpenAiUpstream<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncOpenAiUpstream")
            .field("api_base", &self.client.config().api_base())
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl<C: Config> AsyncOpenAiUpstream<C> {
    /// An upstream over `client`.
    pub fn new(client: Client<C>) -> Self {
        Self {
            client,
            default_model: None,
        }
    }

    /// The model of requests that name none. Defaults to none: such a
    /// request is a client error.
    pub fn default_model(mut self, model: impl Into<ModelId>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &Client<C> {
        &self.client
    }
}

impl<C> Service<LlmRequest> for AsyncOpenAiUpstream<C>
where
    C: Config + Clone + 'static,
{
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<LlmResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        let client = self.client.clone();
        if req.model.is_none() {
            req.model = self.default_model.clone();
        }
        Box::pin(async move {
            let body = request_to_openai(&req)
                .map_err(|e| LlmError::new(FailureClass::ClientError, e.to_string()).with_source(e))?;
            let model = body.model.clone();
            if !req.params.stream {
                let resp = client.chat().create(body).await.map_err(classify_openai)?;
                return response_from_openai(resp).map_err(|e| {
                    LlmError::new(FailureClass::InvalidResponse, e.to_string())
                        .with_source(e)
                        .into()
                });
            }
            let stream = client.chat().create_stream(body).await.map_err(classify_openai)?;
            let chunks = stream.map(|item| match item {
                Ok(chunk) => chunk_from_openai(chunk).map_err(|e| {
                    LlmError::new(FailureClass::InvalidResponse, e.to_string())
                        .with_source(e)
                        .into()
                }),
                Err(e) => Err(classify_openai(e)),
            });
            Ok(LlmResponse::streaming(model, ChunkStream::new(chunks)))
        })
    }
}

/// async-openai's error as a classified [`LlmError`].
fn classify_openai(e: OpenAIError) -> BoxError {
    let (class, status) = match &e {
        OpenAIError::ApiError(api) => {
            let status = api.status_code.as_u16();
            let class = match status {
                429 => FailureClass::RateLimited { retry_after: None },
                500..=599 => FailureClass::UpstreamServer,
                _ if api.api_error.code.as_deref() == Some("context_length_exceeded") => {
                    FailureClass::ContextLengthExceeded
                }
                _ => FailureClass::ClientError,
            };
            (class, Some(status))
        }
        OpenAIError::Reqwest(r) if r.is_timeout() => (FailureClass::Timeout, None),
        OpenAIError::Reqwest(r) => match r.status() {
            Some(s) if s.is_server_error() => (FailureClass::UpstreamServer, Some(s.as_u16())),
            Some(s) => (FailureClass::ClientError, Some(s.as_u16())),
            None if r.is_decode() => (FailureClass::InvalidResponse, None),
            None => (FailureClass::Transport, None),
        },
        OpenAIError::JSONDeserialize(..) => (FailureClass::InvalidResponse, None),
        OpenAIError::StreamError(_) => (FailureClass::Transport, None),
        OpenAIError::InvalidArgument(_) => (FailureClass::ClientError, None),
        _ => (FailureClass::Other, None),
    };
    let mut err = LlmError::new(class, e.to_string());
    if let Some(s) = status {
        err = err.with_status(s);
    }
    err.with_source(e).into()
}

/// An [`Upstream`] for an [`AgentStack`](crate::AgentStack) that sends every
/// model's calls through `client` (one client, one connection pool):
/// `AgentStack::builder(upstream(client)).tiers(tiers).build()?` (give the
/// ladder of the provider's model ids: the default ladder names the mock's).
pub fn upstream<C>(client: Client<C>) -> Upstream
where
    C: Config + Clone + 'static,
{
    let base = AsyncOpenAiUpstream::new(client);
    Upstream::Custom(std::sync::Arc::new(move |spec: &ModelSpec| {
        Ok(BoxCloneSyncService::new(
            base.clone().default_model(spec.id.clone()),
        ))
    }))
}
