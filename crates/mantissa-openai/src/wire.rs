//! The chat-completions wire format: the request body we send and the
//! responses, stream chunks and error objects we read.

use mantissa_core::{
    Chunk, FailureClass, FinishReason, FunctionCall, GenerationParams, Message, Role, ToolCall,
    ToolCallDelta, ToolSpec, Usage,
};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::config::ModelSettings;
use crate::error::{ApiError, InvalidResponse, InvalidResponseKind};

/// The request body. Serialized field by field so a large history is written
/// straight into the output buffer, and extra parameters never duplicate a key.
pub(crate) struct ChatBody<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: &'a [Message],
    pub(crate) tools: &'a [ToolSpec],
    pub(crate) params: &'a GenerationParams,
    pub(crate) settings: Option<&'a ModelSettings>,
}

impl Serialize for ChatBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.params;
        let mut written: Vec<&str> = Vec::with_capacity(12);
        let mut map = serializer.serialize_map(None)?;
        macro_rules! put {
            ($key:expr, $value:expr) => {{
                let key: &str = $key;
                written.push(key);
                map.serialize_entry(key, $value)?;
            }};
        }
        put!("model", self.model);
        put!("messages", self.messages);
        if !self.tools.is_empty() {
            put!("tools", self.tools);
        }
        if let Some(t) = p.temperature {
            put!("temperature", &t);
        }
        if let Some(t) = p.top_p {
            put!("top_p", &t);
        }
        if let Some(m) = p.max_tokens {
            put!(
                self.settings
                    .and_then(ModelSettings::max_tokens_key)
                    .unwrap_or("max_tokens"),
                &m
            );
        }
        if !p.stop.is_empty() {
            put!("stop", &p.stop);
        }
        if let Some(s) = p.seed {
            put!("seed", &s);
        }
        if p.stream {
            put!("stream", &true);
            put!("stream_options", &StreamOptions { include_usage: true });
        }
        // The request's own extras win over the model's; fixed fields win over both.
        let model_extra = self.settings.map(ModelSettings::extra_params);
        for (key, value) in p.extra.iter().chain(model_extra.into_iter().flatten()) {
            if !written.contains(&key.as_str()) {
                written.push(key);
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The largest token count the client accepts in a reported usage: 2^32 − 1
/// (about 4.3 billion, hundreds of times any context window). A count above
/// it, negative, fractional or not a number is an absurd report and the
/// response an [`InvalidResponseKind::InvalidUsage`](crate::InvalidResponseKind::InvalidUsage);
/// sums of accepted counts cannot overflow a `u64`.
pub const MAX_USAGE_TOKENS: u64 = u32::MAX as u64;

/// Token counts; providers disagree on names and sometimes send `null`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: TokenCount,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: TokenCount,
    #[serde(default)]
    total_tokens: TokenCount,
    /// OpenAI's `prompt_tokens_details.cached_tokens`.
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

/// The breakdown of the prompt tokens.
#[derive(Debug, Default, Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: TokenCount,
}

impl WireUsage {
    /// The usage, or why it is absurd (see [`MAX_USAGE_TOKENS`]). Missing
    /// and `null` counts are zero; `total_tokens` is only checked for sanity.
    pub(crate) fn into_usage(self) -> Result<Usage, InvalidResponse> {
        let prompt = self.prompt_tokens.get("prompt_tokens")?;
        let completion = self.completion_tokens.get("completion_tokens")?;
        self.total_tokens.get("total_tokens")?;
        let cached = match &self.prompt_tokens_details {
            Some(d) => d.cached_tokens.get("prompt_tokens_details.cached_tokens")?,
            None => 0,
        };
        Ok(Usage::new(prompt, completion).with_cached_input(cached))
    }
}

/// One reported token count, judged while it is read so that a bad value
/// names itself instead of failing the whole body as malformed JSON.
#[derive(Debug, Default, Clone, PartialEq)]
enum TokenCount {
    /// Absent or `null`.
    #[default]
    Missing,
    /// A count within [`MAX_USAGE_TOKENS`].
    Count(u64),
    /// Anything else, as shown in the error.
    Absurd(String),
}

impl TokenCount {
    fn get(&self, field: &str) -> Result<u64, InvalidResponse> {
        match self {
            TokenCount::Missing => Ok(0),
            TokenCount::Count(n) => Ok(*n),
            TokenCount::Absurd(what) => Err(InvalidResponse::new(
                InvalidResponseKind::InvalidUsage,
                format!("absurd usage: `{field}` is {what}, not an integer from 0 to {MAX_USAGE_TOKENS}"),
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TokenCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl<'de> serde::de::Visitor<'de> for CountVisitor {
            type Value = TokenCount;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token count")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TokenCount, E> {
                Ok(if v <= MAX_USAGE_TOKENS {
                    TokenCount::Count(v)
                } else {
                    TokenCount::Absurd(v.to_string())
                })
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TokenCount, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Ok(TokenCount::Absurd(v.to_string())),
                }
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TokenCount, E> {
                Ok(TokenCount::Absurd(format!("the non-integer {v}")))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<TokenCount, E> {
                Ok(TokenCount::Absurd("a boolean".to_owned()))
            }

            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<TokenCount, E> {
                // The text itself is not shown: it is the provider's, not a count.
                Ok(TokenCount::Absurd("a string".to_owned()))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<TokenCount, E> {
                Ok(TokenCount::Missing)
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<TokenCount, E> {
                Ok(TokenCount::Missing)
            }

            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<TokenCount, D::Error> {
                d.deserialize_any(self)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TokenCount, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(TokenCount::Absurd("an array".to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TokenCount, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(TokenCount::Absurd("an object".to_owned()))
            }
        }

        deserializer.deserialize_any(CountVisitor)
    }
}

/// Text content: a string, or (some servers) an array of `{type, text}` parts;
/// anything else is ignored. Deserialized by hand: an untagged enum would
/// buffer every content delta before trying its variants.
#[derive(Debug)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    Other,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> serde::de::Visitor<'de> for ContentVisitor {
            type Value = Content;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<serde_json::Value>()? {
                    let text = part
                        .get("text")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned);
                    parts.push(Part { text });
                }
                Ok(Content::Parts(parts))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Content::Other)
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Content, E> {
                Ok(Content::Other)
            }

            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Content, E> {
                Ok(Content::Other)
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Content, E> {
                Ok(Content::Other)
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Content, E> {
                Ok(Content::Other)
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Content, E> {
                Ok(Content::Other)
            }
        }

        deserializer.deserialize_any(ContentVisitor)
    }
}

impl Content {
    fn into_text(self) -> Option<String> {
        match self {
            Content::Text(s) => Some(s),
            Content::Parts(parts) => Some(parts.into_iter().filter_map(|p| p.text).collect()),
            Content::Other => None,
        }
    }
}

#[derive(Debug)]
struct Part {
    text: Option<String>,
}

/// Tool-call arguments: a JSON string per the API, an object from some servers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Arguments {
    Text(String),
    Json(serde_json::Value),
}

impl Arguments {
    fn into_string(self) -> String {
        match self {
            Arguments::Text(s) => s,
            Arguments::Json(serde_json::Value::Null) => String::new(),
            Arguments::Json(v) => v.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Arguments>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
}

/// A non-streaming chat completion.
#[derive(Debug, Deserialize)]
pub(crate) struct Completion {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<CompletionChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    pub(crate) system_fingerprint: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<serde_json::Value>,
}

/// The parts of a completion the response is built from.
pub(crate) struct CompletionParts {
    pub(crate) message: Message,
    pub(crate) usage: Usage,
    pub(crate) finish_reason: Option<FinishReason>,
}

impl Completion {
    /// The first choice as an assistant message, with the usage. A response
    /// without choices, whose first choice has no message (missing or
    /// `null`), or with an absurd usage is an invalid response, never an
    /// empty success.
    pub(crate) fn take_first(&mut self) -> Result<CompletionParts, InvalidResponse> {
        let Some(choice) = self.choices.take().and_then(|c| c.into_iter().next()) else {
            return Err(InvalidResponse::new(
                InvalidResponseKind::NoChoices,
                "response has no choices",
            ));
        };
        let Some(wire) = choice.message else {
            return Err(InvalidResponse::new(
                InvalidResponseKind::NoMessage,
                "the response's choice has no message",
            ));
        };
        let usage = match self.usage.take() {
            Some(usage) => usage.into_usage()?,
            None => Usage::default(),
        };
        let tool_calls: Vec<ToolCall> = wire
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|tc| {
                let function = tc.function.unwrap_or_default();
                ToolCall {
                    id: tc.id.unwrap_or_default(),
                    kind: tc.kind.unwrap_or_else(|| "function".to_owned()),
                    function: FunctionCall {
                        name: function.name.unwrap_or_default(),
                        arguments: function.arguments.map(Arguments::into_string).unwrap_or_default(),
                    },
                }
            })
            .collect();
        let content = wire.content.and_then(Content::into_text).or(wire.refusal);
        let message = Message {
            role: Role::Assistant,
            content,
            name: None,
            tool_calls,
            tool_call_id: None,
        };
        Ok(CompletionParts {
            message,
            usage,
            finish_reason: choice.finish_reason,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
}

/// One `data:` payload of a stream.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamChunk {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// An error object sent in place of a chunk (vLLM, LiteLLM, OpenRouter).
    #[serde(default)]
    pub(crate) error: Option<serde_json::Value>,
}

impl StreamChunk {
    /// The chunk of choice 0, or `None` when this payload carries nothing for
    /// the caller (a role-only delta, an empty string, another choice). An
    /// absurd usage is an invalid response.
    pub(crate) fn into_chunk(self) -> Result<Option<Chunk>, InvalidResponse> {
        let mut chunk = Chunk::default();
        if let Some(choice) = self
            .choices
            .into_iter()
            .flatten()
            .find(|c| c.index.unwrap_or(0) == 0)
        {
            if let Some(delta) = choice.delta {
                chunk.content = delta
                    .content
                    .and_then(Content::into_text)
                    .or(delta.refusal)
                    .filter(|s| !s.is_empty());
                chunk.tool_calls = delta
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(i, tc)| {
                        let function = tc.function.unwrap_or_default();
                        ToolCallDelta {
                            index: tc.index.unwrap_or(u32::try_from(i).unwrap_or(u32::MAX)),
                            id: tc.id,
                            name: function.name,
                            arguments: function.arguments.map(Arguments::into_string),
                        }
                    })
                    .collect();
            }
            chunk.finish_reason = choice.finish_reason;
        }
        chunk.usage = self.usage.map(WireUsage::into_usage).transpose()?;
        Ok((chunk != Chunk::default()).then_some(chunk))
    }
}

/// What an error body said.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ErrorInfo {
    pub(crate) message: Option<String>,
    pub(crate) error_type: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) param: Option<String>,
}

fn as_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads an error object: `{"error": {"message", "type", "code", "param"}}`
/// (OpenAI, LiteLLM), `{"error": "text"}` (Ollama), `{"object": "error",
/// "message", ...}` (vLLM), `{"detail": "text"}` (FastAPI servers).
///
/// A blank message counts as none, so callers fall back to something that
/// says what happened instead of an empty error.
pub(crate) fn error_info(value: &serde_json::Value) -> ErrorInfo {
    let obj = match value.get("error") {
        Some(serde_json::Value::String(s)) => {
            return ErrorInfo {
                message: Some(s.clone()).filter(|m| !m.trim().is_empty()),
                ..ErrorInfo::default()
            };
        }
        Some(inner @ serde_json::Value::Object(_)) => inner,
        _ => value,
    };
    ErrorInfo {
        message: as_text(obj.get("message"))
            .filter(|m| !m.trim().is_empty())
            .or_else(|| as_text(value.get("detail")).filter(|m| !m.trim().is_empty())),
        error_type: as_text(obj.get("type")),
        code: as_text(obj.get("code")),
        param: as_text(obj.get("param")),
    }
}

/// Parses an error body; a body that is not JSON gives an empty [`ErrorInfo`].
pub(crate) fn parse_error_body(body: &str) -> ErrorInfo {
    serde_json::from_str::<serde_json::Value>(body)
        .map(|v| error_info(&v))
        .unwrap_or_default()
}

/// Whether an error says the prompt does not fit the context window. Covers
/// OpenAI's code and the messages of vLLM, llama.cpp, Ollama, LiteLLM and
/// Anthropic-through-proxies.
pub(crate) fn is_context_length(info: &ErrorInfo) -> bool {
    const CODES: &[&str] = &[
        "context_length_exceeded",
        "exceed_context_size",
        "context_window_exceeded",
    ];
    const PHRASES: &[&str] = &[
        "context_length_exceeded",
        "maximum context length",
        "context length",
        "context window",
        "context size",
        "prompt is too long",
        "contextwindowexceeded",
    ];
    let code_hit = [&info.code, &info.error_type]
        .into_iter()
        .flatten()
        .any(|c| CODES.iter().any(|k| c.to_ascii_lowercase().contains(k)));
    code_hit
        || info
            .message
            .as_deref()
            .map(str::to_ascii_lowercase)
            .is_some_and(|m| PHRASES.iter().any(|p| m.contains(p)))
}

/// The failure class of an HTTP error status.
pub(crate) fn class_for_status(
    status: u16,
    info: &ErrorInfo,
    retry_after: Option<std::time::Duration>,
) -> FailureClass {
    match status {
        429 => FailureClass::RateLimited { retry_after },
        408 => FailureClass::Timeout,
        500..=599 => FailureClass::UpstreamServer,
        400..=499 if is_context_length(info) => FailureClass::ContextLengthExceeded,
        400..=499 => FailureClass::ClientError,
        _ => FailureClass::InvalidResponse,
    }
}

/// The failure class of an error object inside a 200 response or a stream.
pub(crate) fn class_for_embedded(info: &ErrorInfo) -> FailureClass {
    if is_context_length(info) {
        return FailureClass::ContextLengthExceeded;
    }
    let hint = [&info.code, &info.error_type]
        .into_iter()
        .flatten()
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>();
    if hint.iter().any(|h| h.contains("rate_limit") || h == "429") {
        FailureClass::RateLimited { retry_after: None }
    } else if hint
        .iter()
        .any(|h| h.contains("invalid_request") || h.starts_with('4'))
    {
        FailureClass::ClientError
    } else {
        FailureClass::UpstreamServer
    }
}

/// Builds the [`ApiError`] of an error object found where a completion was expected.
pub(crate) fn embedded_api_error(value: &serde_json::Value, status: u16) -> (FailureClass, ApiError) {
    let info = error_info(value);
    let class = class_for_embedded(&info);
    let api = ApiError {
        status,
        message: info
            .message
            .clone()
            .unwrap_or_else(|| "error without message".to_owned()),
        error_type: info.error_type,
        code: info.code,
        param: info.param,
        body: mantissa_core::truncate_str(&value.to_string(), 4096).to_owned(),
        request_id: None,
        rate_limit: None,
    };
    (class, api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(params: GenerationParams, settings: Option<&ModelSettings>) -> serde_json::Value {
        let messages = [Message::system("be brief"), Message::user("hi")];
        let tools = [ToolSpec::function("lookup", "find", json!({"type": "object"}))];
        let b = ChatBody {
            model: "m",
            messages: &messages,
            tools: &tools,
            params: &params,
            settings,
        };
        serde_json::to_value(&b).unwrap()
    }

    #[test]
    fn body_has_openai_shape_and_extras_never_duplicate() {
        let mut params = GenerationParams {
            temperature: Some(0.5),
            max_tokens: Some(64),
            stop: vec!["END".into()],
            seed: Some(7),
            stream: true,
            ..GenerationParams::default()
        };
        params.extra.insert("temperature".into(), json!(2.0));
        params.extra.insert("top_k".into(), json!(5));
        let settings = ModelSettings::new()
            .extra("top_k", 40)
            .extra("repetition_penalty", 1.1)
            .max_tokens_field("max_completion_tokens");
        let v = body(params, Some(&settings));
        assert_eq!(v["model"], "m");
        assert_eq!(v["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(v["tools"][0]["function"]["name"], "lookup");
        assert_eq!(v["temperature"], 0.5);
        assert_eq!(v["max_completion_tokens"], 64);
        assert!(v.get("max_tokens").is_none());
        assert_eq!(v["stop"], json!(["END"]));
        assert_eq!(v["seed"], 7);
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["top_k"], 5, "the request's extras win over the model's");
        assert_eq!(v["repetition_penalty"], 1.1);
        // Serialized text has no duplicate keys.
        let text = serde_json::to_string(&ChatBody {
            model: "m",
            messages: &[],
            tools: &[],
            params: &GenerationParams {
                temperature: Some(0.5),
                extra: [("temperature".to_owned(), json!(1))].into_iter().collect(),
                ..GenerationParams::default()
            },
            settings: None,
        })
        .unwrap();
        assert_eq!(text.matches("temperature").count(), 1, "{text}");
    }

    #[test]
    fn minimal_body_omits_unset_fields() {
        let v = body(GenerationParams::default(), None);
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
    }

    #[test]
    fn lenient_completion_parsing() {
        let mut c: Completion = serde_json::from_value(json!({
            "model": "x",
            "choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"q": 1}}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": null}
        }))
        .unwrap();
        let parts = c.take_first().unwrap();
        assert_eq!(parts.message.text(), "ab");
        assert_eq!(parts.message.tool_calls[0].function.arguments, r#"{"q":1}"#);
        assert_eq!(parts.message.tool_calls[0].kind, "function");
        assert_eq!(parts.usage, Usage::new(3, 0));
        assert_eq!(parts.finish_reason, Some(FinishReason::ToolCalls));

        let mut c: Completion =
            serde_json::from_value(json!({"choices": [{"message": {"content": null, "tool_calls": null}}]}))
                .unwrap();
        assert_eq!(c.take_first().unwrap().message.content, None);
        for odd in [json!(5), json!({"a": 1}), json!(true), json!([1, {"text": "t"}])] {
            let mut c: Completion =
                serde_json::from_value(json!({"choices": [{"message": {"content": odd.clone()}}]})).unwrap();
            let text = c.take_first().unwrap().message.content;
            assert_eq!(text.as_deref(), odd.is_array().then_some("t"), "{odd}");
        }
        for body in [json!({"choices": []}), json!({"choices": null}), json!({})] {
            let mut c: Completion = serde_json::from_value(body.clone()).unwrap();
            let err = c.take_first().err();
            assert_eq!(
                err.map(|e| e.kind().clone()),
                Some(InvalidResponseKind::NoChoices),
                "{body}"
            );
        }
        for body in [
            json!({"choices": [{"message": null}]}),
            json!({"choices": [{"finish_reason": "stop"}]}),
        ] {
            let mut c: Completion = serde_json::from_value(body.clone()).unwrap();
            let err = c.take_first().err();
            assert_eq!(
                err.map(|e| e.kind().clone()),
                Some(InvalidResponseKind::NoMessage),
                "{body}"
            );
        }
    }

    #[test]
    fn stream_chunks_skip_empty_deltas() {
        let chunk = |v: serde_json::Value| {
            serde_json::from_value::<StreamChunk>(v)
                .unwrap()
                .into_chunk()
                .unwrap()
        };
        assert_eq!(
            chunk(json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})),
            None
        );
        assert_eq!(
            chunk(json!({"choices": [{"index": 1, "delta": {"content": "other choice"}}]})),
            None
        );
        let c = chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}]}}]}))
        .unwrap();
        assert_eq!(c.tool_calls[0].index, 1);
        assert_eq!(c.tool_calls[0].name.as_deref(), Some("g"));
        let c = chunk(json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})).unwrap();
        assert_eq!(c.usage, Some(Usage::new(5, 2)));
        let c = chunk(
            json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 3}}}),
        )
        .unwrap();
        assert_eq!(c.usage, Some(Usage::new(5, 2).with_cached_input(3)));
        let c = chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})).unwrap();
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn error_bodies_of_several_servers() {
        let openai = parse_error_body(
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(openai.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(openai.param.as_deref(), Some("messages"));
        assert!(is_context_length(&openai));
        let vllm = parse_error_body(
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(vllm.code.as_deref(), Some("400"));
        assert!(is_context_length(&vllm));
        let llama = parse_error_body(
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
        );
        assert!(is_context_length(&llama));
        let ollama = parse_error_body(r#"{"error":"model 'x' not found"}"#);
        assert_eq!(ollama.message.as_deref(), Some("model 'x' not found"));
        assert!(!is_context_length(&ollama));
        assert_eq!(parse_error_body("<html>bad gateway</html>"), ErrorInfo::default());
        // A blank message is no message (found by the `completion` fuzz target).
        assert_eq!(parse_error_body(r#"{"error": ""}"#).message, None);
        assert_eq!(
            parse_error_body(r#"{"error": {"message": " "}, "detail": "d"}"#)
                .message
                .as_deref(),
            Some("d")
        );
        let (_, api) = embedded_api_error(&serde_json::json!({"error": ""}), 200);
        assert_eq!(api.message(), "error without message");
        assert_eq!(class_for_status(400, &ollama, None), FailureClass::ClientError);
        assert_eq!(
            class_for_status(400, &openai, None),
            FailureClass::ContextLengthExceeded
        );
        assert_eq!(class_for_status(503, &openai, None), FailureClass::UpstreamServer);
        assert_eq!(
            class_for_status(408, &ErrorInfo::default(), None),
            FailureClass::Timeout
        );
        assert_eq!(
            class_for_status(302, &ErrorInfo::default(), None),
            FailureClass::InvalidResponse
        );
    }

    fn usage_of(
        usage: serde_json::Value,
    ) -> (
        Result<Usage, InvalidResponse>,
        Result<Option<Usage>, InvalidResponse>,
    ) {
        let mut c: Completion = serde_json::from_value(json!({
            "choices": [{"message": {"content": "x"}}],
            "usage": usage.clone(),
        }))
        .unwrap();
        let whole = c.take_first().map(|p| p.usage);
        let streamed = serde_json::from_value::<StreamChunk>(json!({"choices": [], "usage": usage}))
            .unwrap()
            .into_chunk()
            .map(|c| c.and_then(|c| c.usage));
        (whole, streamed)
    }

    proptest::proptest! {
        /// A reported count is taken as is up to the cap; above it, negative
        /// or fractional, the whole response (or stream chunk) is an
        /// `InvalidUsage` error, in both decoders.
        #[test]
        fn usage_counts_are_accepted_exactly_up_to_the_cap(
            n in proptest::prop_oneof![
                -2_i64..=1000,
                proptest::num::i64::ANY,
                (i64::from(u32::MAX) - 2)..=(i64::from(u32::MAX) + 2),
            ],
            big in proptest::prop_oneof![
                proptest::num::u64::ANY,
                0..=MAX_USAGE_TOKENS,
                (MAX_USAGE_TOKENS - 2)..=(MAX_USAGE_TOKENS + 2),
            ],
            f in proptest::num::f64::NORMAL,
        ) {
            let cap = i64::try_from(MAX_USAGE_TOKENS).unwrap();
            let kind = |r: Result<Usage, InvalidResponse>| r.map_err(|e| e.kind().clone());
            let (whole, streamed) = usage_of(json!({"prompt_tokens": n, "completion_tokens": 1}));
            if (0..=cap).contains(&n) {
                let expected = Usage::new(n.unsigned_abs(), 1);
                proptest::prop_assert_eq!(kind(whole), Ok(expected));
                proptest::prop_assert_eq!(streamed.map_err(|e| e.kind().clone()), Ok(Some(expected)));
            } else {
                proptest::prop_assert_eq!(kind(whole), Err(InvalidResponseKind::InvalidUsage));
                proptest::prop_assert_eq!(streamed.err().map(|e| e.kind().clone()), Some(InvalidResponseKind::InvalidUsage));
            }
            let (whole, _) = usage_of(json!({"completion_tokens": big}));
            if big <= MAX_USAGE_TOKENS {
                proptest::prop_assert_eq!(kind(whole), Ok(Usage::new(0, big)));
            } else {
                proptest::prop_assert_eq!(kind(whole), Err(InvalidResponseKind::InvalidUsage));
            }
            let (whole, streamed) = usage_of(json!({"output_tokens": f}));
            proptest::prop_assert_eq!(kind(whole), Err(InvalidResponseKind::InvalidUsage));
            proptest::prop_assert!(streamed.is_err());
        }

        /// Only choice 0 of a stream chunk reaches the caller; an index that
        /// is not a `u32` makes the chunk malformed.
        #[test]
        fn stream_chunks_keep_only_choice_zero(n in proptest::prop_oneof![
            -2_i64..=3,
            0..=(i64::from(u32::MAX) + 2),
            proptest::num::i64::ANY,
        ]) {
            let parsed = serde_json::from_value::<StreamChunk>(json!({
                "choices": [{"index": n, "delta": {"content": "x", "tool_calls": [{"index": 3}]}}]
            }));
            proptest::prop_assert_eq!(parsed.is_ok(), u32::try_from(n).is_ok());
            if let Ok(parsed) = parsed {
                let chunk = parsed.into_chunk().unwrap();
                proptest::prop_assert_eq!(chunk.is_some(), n == 0);
                if let Some(chunk) = chunk {
                    proptest::prop_assert_eq!(chunk.content.as_deref(), Some("x"));
                    proptest::prop_assert_eq!(chunk.tool_calls[0].index, 3);
                }
            }
        }

        /// Any message survives an error object (a blank one is none); text
        /// that is not a JSON object carries no error information.
        #[test]
        fn error_bodies_keep_any_message_and_ignore_non_objects(s in "\\PC{0,200}") {
            let body = json!({"error": {"message": s.clone(), "param": s.clone()}}).to_string();
            let info = parse_error_body(&body);
            let message = Some(s.as_str()).filter(|m| !m.trim().is_empty());
            proptest::prop_assert_eq!(info.message.as_deref(), message);
            proptest::prop_assert_eq!(info.param.as_deref(), Some(s.as_str()));
            if !serde_json::from_str::<serde_json::Value>(&s).is_ok_and(|v| v.is_object()) {
                proptest::prop_assert_eq!(parse_error_body(&s), ErrorInfo::default());
            }
        }
    }
}
