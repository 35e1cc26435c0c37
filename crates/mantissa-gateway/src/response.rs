//! mantissa's [`LlmResponse`] written back in OpenAI's shapes: a
//! `chat.completion` object, or `chat.completion.chunk` server-sent events
//! ending with `data: [DONE]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mantissa::core::{
    Chunk, ChunkStream, FinishReason, LlmResponse, Message, StreamAssembler, ToolCall, ToolCallDelta, Usage,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::ApiError;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh `chatcmpl-…` id: unique in this process.
pub(crate) fn completion_id() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("chatcmpl-mantissa-{:x}-{n:x}", process_epoch())
}

/// The process's start second, to tell ids of two gateway runs apart.
fn process_epoch() -> u64 {
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(unix_secs)
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Serialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: (u.cached_input_tokens > 0).then_some(PromptDetails {
                cached_tokens: u.cached_input_tokens,
            }),
        }
    }
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: &'a Message,
    finish_reason: &'a str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: WireUsage,
    system_fingerprint: Option<()>,
}

/// The `chat.completion` body of a whole response (a streamed one is
/// collected first).
pub(crate) async fn completion_body(mut resp: LlmResponse) -> Result<Vec<u8>, ApiError> {
    let (message, usage, finish) = match resp.stream.take() {
        Some(mut stream) => {
            let mut asm = StreamAssembler::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ApiError::from_stack(&e))?;
                asm.push(&chunk);
            }
            let message = asm.message();
            let finish = asm.finish_reason().cloned();
            (message, asm.usage().unwrap_or_default(), finish)
        }
        None => (resp.message, resp.usage, resp.finish_reason),
    };
    let finish = finish.unwrap_or(if message.tool_calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    });
    let id = completion_id();
    let body = Completion {
        id: &id,
        object: "chat.completion",
        created: unix_secs(),
        model: resp.model.as_str(),
        choices: [Choice {
            index: 0,
            message: &message,
            finish_reason: finish.as_str(),
            logprobs: None,
        }],
        usage: usage.into(),
        system_fingerprint: None,
    };
    serde_json::to_vec(&body)
        .map_err(|_| ApiError::from_stack(&"the response could not be written as JSON".into()))
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<DeltaCall<'a>>,
}

#[derive(Serialize)]
struct DeltaCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: DeltaFunction<'a>,
}

#[derive(Serialize)]
struct DeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct WireChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<WireUsage>,
}

/// Writes the SSE events of one response.
struct Writer {
    id: String,
    created: u64,
    model: String,
}

impl Writer {
    fn event(&self, choices: Vec<ChunkChoice<'_>>, usage: Option<Usage>) -> Bytes {
        let chunk = WireChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: usage.map(WireUsage::from),
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"data: ");
        // Serializing these plain structs cannot fail.
        let _ = serde_json::to_writer(&mut out, &chunk);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    fn role(&self) -> Bytes {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
            ..Delta::default()
        };
        self.event(vec![choice(delta, None)], None)
    }

    fn chunk(&self, chunk: &Chunk) -> Option<Bytes> {
        if chunk.content.is_none() && chunk.tool_calls.is_empty() && chunk.finish_reason.is_none() {
            return None;
        }
        let delta = Delta {
            role: None,
            content: chunk.content.as_deref(),
            tool_calls: chunk.tool_calls.iter().map(delta_call).collect(),
        };
        Some(self.event(
            vec![choice(
                delta,
                chunk.finish_reason.as_ref().map(FinishReason::as_str),
            )],
            None,
        ))
    }

    fn usage(&self, usage: Usage) -> Bytes {
        self.event(Vec::new(), Some(usage))
    }
}

fn choice<'a>(delta: Delta<'a>, finish_reason: Option<&'a str>) -> ChunkChoice<'a> {
    ChunkChoice {
        index: 0,
        delta,
        finish_reason,
        logprobs: None,
    }
}

fn delta_call(d: &ToolCallDelta) -> DeltaCall<'_> {
    DeltaCall {
        index: d.index,
        id: d.id.as_deref(),
        kind: d.id.as_ref().map(|_| "function"),
        function: DeltaFunction {
            name: d.name.as_deref(),
            arguments: d.arguments.as_deref(),
        },
    }
}

fn error_event(e: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", e.body()))
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// The chunks of a response that was not streamed, as a stream.
fn whole_as_chunks(resp: &mut LlmResponse) -> ChunkStream {
    let message = std::mem::replace(&mut resp.message, Message::assistant(""));
    let finish = resp
        .finish_reason
        .take()
        .unwrap_or(if message.tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        });
    let tool_calls = message
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c): (usize, &ToolCall)| ToolCallDelta {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            id: Some(c.id.clone()),
            name: Some(c.function.name.clone()),
            arguments: Some(c.function.arguments.clone()),
        })
        .collect();
    let chunks = vec![Ok(Chunk {
        content: message.content.clone().filter(|c| !c.is_empty()),
        tool_calls,
        finish_reason: Some(finish),
        usage: Some(resp.usage),
    })];
    ChunkStream::new(futures_util::stream::iter(chunks))
}

struct SseState {
    writer: Writer,
    stream: ChunkStream,
    include_usage: bool,
    usage: Option<Usage>,
    deadline: Instant,
    phase: Phase,
}

#[derive(PartialEq)]
enum Phase {
    Start,
    Chunks,
    Done,
}

/// The SSE body of a response: a role chunk, one event per chunk, the usage
/// chunk when `include_usage`, then `data: [DONE]`. A failure mid-stream (or
/// the total timeout) ends it with an error event and no `[DONE]`.
pub(crate) fn sse_body(
    mut resp: LlmResponse,
    include_usage: bool,
    deadline: Instant,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
    let stream = match resp.stream.take() {
        Some(s) => s,
        None => whole_as_chunks(&mut resp),
    };
    let state = SseState {
        writer: Writer {
            id: completion_id(),
            created: unix_secs(),
            model: resp.model.as_str().to_owned(),
        },
        stream,
        include_usage,
        usage: None,
        deadline,
        phase: Phase::Start,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            match s.phase {
                Phase::Done => return None,
                Phase::Start => {
                    s.phase = Phase::Chunks;
                    let role = s.writer.role();
                    return Some((Ok(role), s));
                }
                Phase::Chunks => {}
            }
            match tokio::time::timeout_at(s.deadline, s.stream.next()).await {
                Err(_) => {
                    s.phase = Phase::Done;
                    return Some((Ok(error_event(&ApiError::gateway_timeout())), s));
                }
                Ok(Some(Err(e))) => {
                    s.phase = Phase::Done;
                    return Some((Ok(error_event(&ApiError::from_stack(&e))), s));
                }
                Ok(Some(Ok(chunk))) => {
                    if let Some(u) = chunk.usage {
                        s.usage = Some(u);
                    }
                    if let Some(bytes) = s.writer.chunk(&chunk) {
                        return Some((Ok(bytes), s));
                    }
                }
                Ok(None) => {
                    s.phase = Phase::Done;
                    let mut out = Vec::with_capacity(256);
                    if s.include_usage {
                        out.extend_from_slice(&s.writer.usage(s.usage.unwrap_or_default()));
                    }
                    out.extend_from_slice(DONE);
                    return Some((Ok(Bytes::from(out)), s));
                }
            }
        }
    })
}
