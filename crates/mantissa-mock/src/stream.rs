//! Streaming bodies: a reply cut into chunks, with simulated pacing.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream;
use mantissa_core::{
    BoxError, Chunk, ChunkStream, FailureClass, FinishReason, ToolCall, ToolCallDelta, Usage,
};

use crate::reply::MockFailure;

/// How the mock paces and cuts streamed replies.
///
/// ```
/// use std::time::Duration;
/// use mantissa_mock::StreamOptions;
///
/// let opts = StreamOptions::default()
///     .first_chunk_delay(Duration::from_millis(300))
///     .chunk_delay(Duration::from_millis(20))
///     .words_per_chunk(2);
/// assert_eq!(opts.get_first_chunk_delay(), Duration::from_millis(300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    first_chunk_delay: Duration,
    chunk_delay: Duration,
    words_per_chunk: usize,
    cut_after: Option<usize>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            first_chunk_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            words_per_chunk: 1,
            cut_after: None,
        }
    }
}

impl StreamOptions {
    /// Wait before the first chunk (time to first chunk). Defaults to zero.
    pub fn first_chunk_delay(mut self, d: Duration) -> Self {
        self.first_chunk_delay = d;
        self
    }

    /// Wait between chunks. Defaults to zero.
    pub fn chunk_delay(mut self, d: Duration) -> Self {
        self.chunk_delay = d;
        self
    }

    /// Words of text per chunk (at least 1). Defaults to 1.
    pub fn words_per_chunk(mut self, n: usize) -> Self {
        self.words_per_chunk = n.max(1);
        self
    }

    /// Cut every stream after `chunks` chunks with a transport error.
    /// Defaults to never (a single reply can still ask with
    /// [`MockReply::cut_stream_after`](crate::MockReply::cut_stream_after)).
    pub fn cut_after(mut self, chunks: Option<usize>) -> Self {
        self.cut_after = chunks;
        self
    }

    pub(crate) fn words_per_chunk_value(&self) -> usize {
        self.words_per_chunk
    }

    pub(crate) fn cut_after_value(&self) -> Option<usize> {
        self.cut_after
    }

    /// The configured delay before the first chunk.
    pub fn get_first_chunk_delay(&self) -> Duration {
        self.first_chunk_delay
    }

    /// The configured delay between chunks.
    pub fn get_chunk_delay(&self) -> Duration {
        self.chunk_delay
    }
}

/// Splits `text` into pieces of `words` words each (whitespace kept with the
/// word before it), so the pieces concatenate back to `text`.
pub(crate) fn split_words(text: &str, words: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for piece in text.split_inclusive(char::is_whitespace) {
        current.push_str(piece);
        count += 1;
        if count >= words {
            out.push(std::mem::take(&mut current));
            count = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits `s` into at most `parts` pieces on char boundaries.
pub(crate) fn split_even(s: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(parts.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The chunks of a reply: text pieces, then tool-call deltas (id and name
/// first, arguments in pieces), then a final chunk with the finish reason and
/// the usage.
pub(crate) fn chunks_for(
    text: Option<&str>,
    calls: &[ToolCall],
    finish: FinishReason,
    usage: Usage,
    words_per_chunk: usize,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    if let Some(text) = text {
        for piece in split_words(text, words_per_chunk) {
            chunks.push(Chunk {
                content: Some(piece),
                ..Chunk::default()
            });
        }
    }
    for (i, call) in calls.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        chunks.push(Chunk {
            tool_calls: vec![ToolCallDelta {
                index,
                id: Some(call.id.clone()),
                name: Some(call.function.name.clone()),
                arguments: None,
            }],
            ..Chunk::default()
        });
        for piece in split_even(&call.function.arguments, 3) {
            chunks.push(Chunk {
                tool_calls: vec![ToolCallDelta {
                    index,
                    arguments: Some(piece),
                    ..ToolCallDelta::default()
                }],
                ..Chunk::default()
            });
        }
    }
    chunks.push(Chunk {
        finish_reason: Some(finish),
        usage: Some(usage),
        ..Chunk::default()
    });
    chunks
}

/// A paced stream over `chunks`, cut with a transport error after `cut_after`
/// chunks if set.
pub(crate) fn paced(chunks: Vec<Chunk>, opts: StreamOptions, cut_after: Option<usize>) -> ChunkStream {
    let mut items: VecDeque<Result<Chunk, BoxError>> = chunks.into_iter().map(Ok).collect();
    if let Some(n) = cut_after {
        items.truncate(n);
        let cut = MockFailure::new(FailureClass::Transport)
            .with_message("mock: stream cut, connection reset mid-stream")
            .to_error();
        items.push_back(Err(cut));
    }
    let state = (items, true, opts);
    ChunkStream::new(stream::unfold(state, |(mut items, first, opts)| async move {
        let item = items.pop_front()?;
        let delay = if first {
            opts.first_chunk_delay
        } else {
            opts.chunk_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((item, (items, false, opts)))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_round_trips() {
        let text = "The quick  brown fox\njumps";
        for n in 1..5 {
            let parts = split_words(text, n);
            assert_eq!(parts.concat(), text);
        }
        assert!(split_words("", 1).is_empty());
        assert_eq!(split_even("héllo wörld", 3).concat(), "héllo wörld");
        assert_eq!(split_even("", 3), vec![String::new()]);
    }
}
