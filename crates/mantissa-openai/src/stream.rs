//! Reading response bodies under the client's timeouts and size caps: whole
//! bodies for plain responses, SSE chunk streams for streamed ones.

use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use mantissa_core::{BoxError, Chunk, ChunkStream, FailureClass, LlmError, LlmResponse, StreamAssembler};
use tokio::time::Instant;

use crate::error::{InvalidResponse, InvalidResponseKind, TimeoutError, TimeoutKind, TransportError};
use crate::sse::{SseDecoder, SseError, SseEvent};
use crate::wire::{StreamChunk, embedded_api_error};

/// A deadline and what to call it when it passes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) kind: TimeoutKind,
    pub(crate) after: Duration,
}

impl Deadline {
    pub(crate) fn starting(start: Instant, kind: TimeoutKind, after: Option<Duration>) -> Option<Self> {
        after.map(|after| Self {
            at: start + after,
            kind,
            after,
        })
    }

    /// The earlier of two optional deadlines.
    pub(crate) fn earliest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn error(&self) -> LlmError {
        let err = TimeoutError::new(self.kind, self.after);
        LlmError::new(FailureClass::Timeout, err.to_string()).with_source(err)
    }
}

/// Runs `fut` until `deadline`, turning a pass into the deadline's timeout error.
pub(crate) async fn within<F: Future>(deadline: Option<Deadline>, fut: F) -> Result<F::Output, LlmError> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d.at, fut).await.map_err(|_| d.error()),
        None => Ok(fut.await),
    }
}

/// Error for a body read that failed mid-way. reqwest reports these as
/// "decode" errors whatever the cause; with no content-encoding enabled the
/// cause is the connection (hyper's incomplete message, a reset), so they are
/// transport failures.
pub(crate) fn body_read_error(e: BoxError) -> LlmError {
    let message = format!("connection lost while reading the response: {e}");
    LlmError::new(FailureClass::Transport, message)
        .with_source(TransportError::new("connection lost while reading the response").with_source(e))
}

pub(crate) fn too_large(limit: usize) -> LlmError {
    let inv = InvalidResponse::new(
        InvalidResponseKind::BodyTooLarge { limit },
        format!("response body exceeds {limit} bytes"),
    );
    LlmError::new(FailureClass::InvalidResponse, inv.to_string()).with_source(inv)
}

/// Reads a whole body, at most `limit` bytes. With `truncate`, stops at the
/// limit and returns what it has; otherwise exceeding it is an error.
pub(crate) async fn read_body<B, E>(
    mut body: B,
    limit: usize,
    truncate: bool,
    idle: Option<Duration>,
    total: Option<Deadline>,
) -> Result<Vec<u8>, LlmError>
where
    B: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    let mut out = Vec::new();
    loop {
        let idle_deadline = Deadline::starting(Instant::now(), TimeoutKind::Idle, idle);
        let next = within(Deadline::earliest(idle_deadline, total), body.next()).await?;
        match next {
            None => return Ok(out),
            Some(Err(e)) => return Err(body_read_error(e.into())),
            Some(Ok(bytes)) => {
                if out.len() + bytes.len() > limit {
                    if truncate {
                        let room = limit - out.len();
                        out.extend_from_slice(&bytes[..room]);
                        return Ok(out);
                    }
                    return Err(too_large(limit));
                }
                out.extend_from_slice(&bytes);
            }
        }
    }
}

/// What a stream has told us besides chunks.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamFacts {
    pub(crate) upstream_model: Option<String>,
}

/// The state of one SSE response body being turned into chunks.
pub(crate) struct SseChunks<B> {
    body: B,
    decoder: SseDecoder,
    idle: Option<Duration>,
    total: Option<Deadline>,
    /// Until the first chunk: the first-chunk deadline (replaces idle).
    first: Option<Deadline>,
    started: bool,
    done: bool,
    saw_finish: bool,
    pub(crate) facts: StreamFacts,
}

impl<B, E> SseChunks<B>
where
    B: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    pub(crate) fn new(
        body: B,
        max_line: usize,
        idle: Option<Duration>,
        total: Option<Deadline>,
        first: Option<Deadline>,
    ) -> Self {
        Self {
            body,
            decoder: SseDecoder::with_limits(max_line, max_line),
            idle,
            total,
            first,
            started: false,
            done: false,
            saw_finish: false,
            facts: StreamFacts::default(),
        }
    }

    /// The next chunk; `Ok(None)` at the end. After an error, always `Ok(None)`.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Chunk>, LlmError> {
        let result = self.advance().await;
        match &result {
            Ok(Some(_)) => self.started = true,
            Ok(None) | Err(_) => self.done = true,
        }
        result
    }

    async fn advance(&mut self) -> Result<Option<Chunk>, LlmError> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.decoder.next_event() {
                Err(e) => return Err(line_error(e)),
                Ok(Some(event)) => {
                    if let Some(chunk) = self.on_event(event)? {
                        return Ok(Some(chunk));
                    }
                    continue;
                }
                Ok(None) => {}
            }
            let wait = if self.started {
                Deadline::starting(Instant::now(), TimeoutKind::Idle, self.idle)
            } else {
                self.first
                    .or_else(|| Deadline::starting(Instant::now(), TimeoutKind::Idle, self.idle))
            };
            match within(Deadline::earliest(wait, self.total), self.body.next()).await? {
                Some(Ok(bytes)) => self.decoder.push(&bytes),
                Some(Err(e)) => return Err(body_read_error(e.into())),
                None => {
                    if let Some(event) = self.decoder.finish() {
                        if let Some(chunk) = self.on_event(event)? {
                            return Ok(Some(chunk));
                        }
                    }
                    if self.done || self.saw_finish {
                        self.done = true;
                        return Ok(None);
                    }
                    let inv = InvalidResponse::new(
                        InvalidResponseKind::StreamIncomplete,
                        "stream ended before [DONE] or a finish reason",
                    );
                    return Err(
                        LlmError::new(FailureClass::InvalidResponse, inv.to_string()).with_source(inv)
                    );
                }
            }
        }
    }

    /// Handles one event: a chunk, nothing (an empty delta, a foreign event
    /// type), the end (`[DONE]`), or an error.
    fn on_event(&mut self, event: SseEvent) -> Result<Option<Chunk>, LlmError> {
        match decode_event(&event)? {
            StreamEvent::Done => {
                self.done = true;
                Ok(None)
            }
            StreamEvent::Ignored => Ok(None),
            StreamEvent::Chunk { model, chunk } => {
                if self.facts.upstream_model.is_none() {
                    self.facts.upstream_model = model;
                }
                if chunk.as_ref().is_some_and(|c| c.finish_reason.is_some()) {
                    self.saw_finish = true;
                }
                Ok(chunk)
            }
        }
    }
}

/// What one event of a chat-completions stream says.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// `data: [DONE]`.
    Done,
    /// An event type other than `message` or `error`.
    Ignored,
    /// A payload: the model it names, and its chunk (`None` when it carries
    /// nothing for the caller, such as a bare role delta).
    Chunk {
        model: Option<String>,
        chunk: Option<Chunk>,
    },
}

/// Decodes one SSE event of a chat-completions stream. An error object (in
/// the data, or an `error` event) is the provider's error; data that is not a
/// chunk, or holds an absurd usage, is an invalid response.
pub(crate) fn decode_event(event: &SseEvent) -> Result<StreamEvent, LlmError> {
    if event.data.trim() == "[DONE]" {
        return Ok(StreamEvent::Done);
    }
    if event.event != "message" && event.event != "error" {
        return Ok(StreamEvent::Ignored);
    }
    let mut chunk: StreamChunk = serde_json::from_str(&event.data).map_err(|e| {
        let inv = InvalidResponse::new(InvalidResponseKind::MalformedJson, "malformed stream chunk");
        LlmError::new(
            FailureClass::InvalidResponse,
            format!("malformed stream chunk: {e}"),
        )
        .with_source(inv.with_source(e))
    })?;
    if let Some(error) = chunk.error.take().filter(|e| !e.is_null()) {
        let (class, api) = embedded_api_error(&serde_json::json!({ "error": error }), 200);
        return Err(LlmError::new(class, api.message().to_owned()).with_source(api));
    }
    if event.event == "error" {
        let (class, api) = embedded_api_error(&serde_json::from_str(&event.data).unwrap_or_default(), 200);
        return Err(LlmError::new(class, api.message().to_owned()).with_source(api));
    }
    let model = chunk.model.take();
    let chunk = chunk.into_chunk().map_err(InvalidResponse::into_llm_error)?;
    Ok(StreamEvent::Chunk { model, chunk })
}

fn line_error(e: SseError) -> LlmError {
    let limit = match e {
        SseError::LineTooLong { limit } | SseError::EventTooLarge { limit } => limit,
    };
    let inv = InvalidResponse::new(InvalidResponseKind::LineTooLong { limit }, e.to_string());
    LlmError::new(FailureClass::InvalidResponse, e.to_string()).with_source(inv.with_source(e))
}

/// Turns the rest of an SSE body into a [`ChunkStream`], starting with the
/// already-read `first` chunk.
pub(crate) fn into_chunk_stream<B, E>(first: Chunk, state: SseChunks<B>) -> ChunkStream
where
    B: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: Into<BoxError> + 'static,
{
    let rest = futures_util::stream::unfold(state, |mut state| async move {
        match state.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), state)),
            Ok(None) => None,
            Err(e) => Some((Err(BoxError::from(e)), state)),
        }
    });
    ChunkStream::new(futures_util::stream::once(std::future::ready(Ok(first))).chain(rest))
}

/// Reads a streaming response to its end and returns the complete response
/// (message assembled from the deltas, usage and finish reason from the last
/// chunks). A non-streaming response is returned unchanged.
///
/// ```
/// use futures_util::stream;
/// use mantissa_core::{Chunk, ChunkStream, FinishReason, LlmResponse, Usage};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let chunks = vec![
///     Ok(Chunk { content: Some("Hel".into()), ..Chunk::default() }),
///     Ok(Chunk { content: Some("lo".into()), finish_reason: Some(FinishReason::Stop), ..Chunk::default() }),
///     Ok(Chunk { usage: Some(Usage::new(3, 2)), ..Chunk::default() }),
/// ];
/// let streaming = LlmResponse::streaming("m", ChunkStream::new(stream::iter(chunks)));
/// let complete = mantissa_openai::collect_response(streaming).await?;
/// assert_eq!(complete.message.text(), "Hello");
/// assert_eq!(complete.usage, Usage::new(3, 2));
/// assert_eq!(complete.finish_reason, Some(FinishReason::Stop));
/// assert!(!complete.is_streaming());
/// # Ok::<(), mantissa_core::BoxError>(())
/// # }).unwrap();
/// ```
pub async fn collect_response(mut response: LlmResponse) -> Result<LlmResponse, BoxError> {
    let Some(mut stream) = response.stream.take() else {
        return Ok(response);
    };
    let mut assembler = StreamAssembler::new();
    while let Some(chunk) = stream.next().await {
        assembler.push(&chunk?);
    }
    response.message = assembler.message();
    response.usage = assembler.usage().unwrap_or_default();
    response.finish_reason = assembler.finish_reason().cloned();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::timeout_error;
    use mantissa_core::{FinishReason, Usage, classify};
    use tokio::sync::mpsc;

    type Body = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

    /// A body fed by the test through a channel.
    fn channel_body() -> (mpsc::UnboundedSender<Result<Bytes, std::io::Error>>, Body) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, Box::pin(body))
    }

    fn data(json: &str) -> Result<Bytes, std::io::Error> {
        Ok(Bytes::from(format!("data: {json}\n\n")))
    }

    fn state(body: Body, idle_ms: u64, first_ms: u64, total_ms: u64) -> SseChunks<Body> {
        let now = Instant::now();
        SseChunks::new(
            body,
            1024,
            Some(Duration::from_millis(idle_ms)),
            Deadline::starting(now, TimeoutKind::Total, Some(Duration::from_millis(total_ms))),
            Deadline::starting(
                now,
                TimeoutKind::FirstChunk,
                Some(Duration::from_millis(first_ms)),
            ),
        )
    }

    fn kind_of(e: &LlmError) -> Option<TimeoutKind> {
        timeout_error(e).map(TimeoutError::kind)
    }

    #[tokio::test(start_paused = true)]
    async fn first_chunk_timeout_then_idle_timeout() {
        let (_tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        let err = s.next_chunk().await.unwrap_err();
        assert_eq!(kind_of(&err), Some(TimeoutKind::FirstChunk));
        assert_eq!(classify(&err), FailureClass::Timeout);
        assert!(s.next_chunk().await.unwrap().is_none(), "ends after an error");

        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        tx.send(data(r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#))
            .unwrap();
        assert_eq!(
            s.next_chunk().await.unwrap().unwrap().content.as_deref(),
            Some("a")
        );
        // Keep-alive comments count as life.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            tx.send(Ok(Bytes::from_static(b": ping\n"))).unwrap();
        }
        tx.send(data(r#"{"choices":[{"index":0,"delta":{"content":"b"}}]}"#))
            .unwrap();
        assert_eq!(
            s.next_chunk().await.unwrap().unwrap().content.as_deref(),
            Some("b")
        );
        let err = s.next_chunk().await.unwrap_err();
        assert_eq!(kind_of(&err), Some(TimeoutKind::Idle));
        assert!(err.to_string().contains("idle timeout"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn total_deadline_bounds_a_steady_drip() {
        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 300);
        tokio::spawn(async move {
            loop {
                if tx
                    .send(data(r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#))
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let err = loop {
            match s.next_chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended"),
                Err(e) => break e,
            }
        };
        assert_eq!(kind_of(&err), Some(TimeoutKind::Total));
    }

    #[tokio::test(start_paused = true)]
    async fn ends_at_done_and_classifies_cuts_and_garbage() {
        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        tx.send(data(
            r#"{"model":"up-1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
        ))
        .unwrap();
        tx.send(data(
            r#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
        ))
        .unwrap();
        tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\ndata: ignored\n\n")))
            .unwrap();
        let c = s.next_chunk().await.unwrap().unwrap();
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            s.next_chunk().await.unwrap().unwrap().usage,
            Some(Usage::new(4, 1))
        );
        assert!(s.next_chunk().await.unwrap().is_none());
        assert_eq!(s.facts.upstream_model.as_deref(), Some("up-1"));

        // Clean end of body without [DONE] or finish: invalid response.
        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        tx.send(data(r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#))
            .unwrap();
        drop(tx);
        assert!(s.next_chunk().await.unwrap().is_some());
        let err = s.next_chunk().await.unwrap_err();
        assert_eq!(classify(&err), FailureClass::InvalidResponse);

        // The connection failing mid-body: transport.
        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        tx.send(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )))
        .unwrap();
        assert_eq!(
            classify(&s.next_chunk().await.unwrap_err()),
            FailureClass::Transport
        );

        // Not JSON.
        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        tx.send(data("{not json")).unwrap();
        assert_eq!(
            classify(&s.next_chunk().await.unwrap_err()),
            FailureClass::InvalidResponse
        );

        // An error object inside the stream.
        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        tx.send(data(
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        ))
        .unwrap();
        let err = s.next_chunk().await.unwrap_err();
        assert_eq!(classify(&err), FailureClass::UpstreamServer);
        assert_eq!(err.message(), "overloaded");

        // An over-long line.
        let (tx, body) = channel_body();
        let mut s = state(body, 50, 200, 10_000);
        tx.send(Ok(Bytes::from(vec![b'a'; 4096]))).unwrap();
        assert_eq!(
            classify(&s.next_chunk().await.unwrap_err()),
            FailureClass::InvalidResponse
        );
    }

    #[tokio::test(start_paused = true)]
    async fn read_body_caps_and_times_out() {
        let (tx, body) = channel_body();
        tx.send(Ok(Bytes::from_static(b"0123456789"))).unwrap();
        tx.send(Ok(Bytes::from_static(b"0123456789"))).unwrap();
        let err = read_body(body, 15, false, None, None).await.unwrap_err();
        assert_eq!(classify(&err), FailureClass::InvalidResponse);

        let (tx, body) = channel_body();
        tx.send(Ok(Bytes::from_static(b"0123456789"))).unwrap();
        tx.send(Ok(Bytes::from_static(b"0123456789"))).unwrap();
        assert_eq!(read_body(body, 15, true, None, None).await.unwrap().len(), 15);

        let (tx, body) = channel_body();
        tx.send(Ok(Bytes::from_static(b"{"))).unwrap();
        let err = read_body(body, 15, false, Some(Duration::from_millis(30)), None)
            .await
            .unwrap_err();
        assert_eq!(kind_of(&err), Some(TimeoutKind::Idle));
        drop(tx);
    }
}
