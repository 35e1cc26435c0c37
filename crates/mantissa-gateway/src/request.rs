//! The chat-completions request body, read into mantissa's
//! [`LlmRequest`](mantissa::core::LlmRequest).
//!
//! Messages and tools are read straight into mantissa-core's own serde types
//! (which follow OpenAI's shape); only `content` given as an array of parts is
//! read by hand. Parameters mantissa has no field for go to
//! [`GenerationParams::extra`] verbatim, so the upstream still receives them.

use mantissa::core::{GenerationParams, Message, Role, ToolCall, ToolSpec};
use serde::Deserialize;

use crate::error::ApiError;

/// A message as clients send it: `content` a string or an array of parts.
#[derive(Debug, Deserialize)]
struct WireMessage {
    role: Role,
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Debug, Deserialize)]
struct WirePart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
struct WireRequest {
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    tools: Option<Vec<ToolSpec>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// A parsed request, before its agent, session and tier are decided.
#[derive(Debug)]
pub struct ChatRequest {
    /// `model`: `auto`, a tier or a model id.
    pub model: String,
    /// The history.
    pub messages: Vec<Message>,
    /// The tools offered.
    pub tools: Vec<ToolSpec>,
    /// Generation parameters (`stream` included).
    pub params: GenerationParams,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// OpenAI's `user` field.
    pub user: Option<String>,
}

/// Parses a body; a 400 names the field at fault (its serde path).
pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let wire: WireRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let param = if path == "." {
            // A missing field is reported at the root: name it.
            missing_field(&inner.to_string()).unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        ApiError::bad_request(param.clone(), format!("invalid `{param}`: {inner}"))
    })?;
    if wire.messages.is_empty() {
        return Err(ApiError::bad_request("messages", "`messages` must not be empty"));
    }
    if wire.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("n", "only `n = 1` is supported"));
    }
    let mut messages = Vec::with_capacity(wire.messages.len());
    for (i, m) in wire.messages.into_iter().enumerate() {
        let content = match m.content {
            None => None,
            Some(WireContent::Text(t)) => Some(t),
            Some(WireContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                format!("messages[{i}].content[{j}]"),
                                format!("content parts of type `{kind}` are not supported (only `text`)"),
                            ));
                        }
                    }
                }
                Some(text)
            }
        };
        messages.push(Message {
            role: m.role,
            content,
            name: m.name,
            tool_calls: m.tool_calls.unwrap_or_default(),
            tool_call_id: m.tool_call_id,
        });
    }
    let stream = wire.stream.unwrap_or(false);
    let params = GenerationParams {
        temperature: wire.temperature,
        top_p: wire.top_p,
        max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
        stop: match wire.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        seed: wire.seed,
        stream,
        extra: wire.extra,
    };
    Ok(ChatRequest {
        model: wire.model,
        messages,
        tools: wire.tools.unwrap_or_default(),
        params,
        include_usage: stream && wire.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        user: wire.user.filter(|u| !u.is_empty()),
    })
}

/// `missing field `model`` → `model`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_bodies() -> Result<(), ApiError> {
        let r = parse(
            br#"{"model":"auto","messages":[{"role":"system","content":[{"type":"text","text":"be brief"}]},
                {"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},
                "user":"u1","stop":"END","max_completion_tokens":7,"tool_choice":"auto",
                "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#,
        )?;
        assert_eq!(r.model, "auto");
        assert_eq!(r.messages[0].text(), "be brief");
        assert!(r.params.stream && r.include_usage);
        assert_eq!(r.params.stop, vec!["END".to_owned()]);
        assert_eq!(r.params.max_tokens, Some(7));
        assert_eq!(r.params.extra["tool_choice"], "auto");
        assert_eq!(r.tools[0].function.name, "f");
        assert_eq!(r.user.as_deref(), Some("u1"));
        Ok(())
    }

    #[test]
    fn bad_fields_are_named() {
        let e = |b: &str| parse(b.as_bytes()).err().map(|e| (e.status.as_u16(), e.param));
        assert_eq!(e(r#"{"messages":[]}"#), Some((400, Some("model".into()))));
        assert_eq!(
            e(r#"{"model":"auto","messages":[{"role":"robot","content":"x"}]}"#),
            Some((400, Some("messages[0].role".into())))
        );
        assert_eq!(
            e(r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#),
            Some((400, Some("temperature".into())))
        );
        assert_eq!(
            e(r#"{"model":"auto","messages":[]}"#),
            Some((400, Some("messages".into())))
        );
        assert_eq!(e("not json"), Some((400, Some("body".into()))));
    }
}
