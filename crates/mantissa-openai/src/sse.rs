//! A small, incremental server-sent events decoder.
//!
//! It follows the WHATWG event-stream parsing rules: lines end in CRLF, LF or
//! CR (also when the CR and the LF arrive in different network chunks); a
//! blank line dispatches the event; `data` fields are joined with `\n`; lines
//! starting with `:` are comments; `event`, `id` and `retry` are recognised and
//! other fields ignored; a field without a colon has an empty value; one space
//! after the colon is dropped; a leading byte-order mark is skipped.
//!
//! Two limits keep a misbehaving server from exhausting memory: the length of
//! one line and the size of one event's data. Exceeding either is an
//! [`SseError`]; the decoder should then be dropped.
//!
//! One deliberate leniency: at end of input, an event whose lines were all
//! terminated but which lacks the final blank line is still returned by
//! [`SseDecoder::finish`] (some servers end with `data: [DONE]\n`). An
//! unterminated last line is discarded, as the standard says.
//!
//! ```
//! use mantissa_openai::sse::SseDecoder;
//!
//! let mut decoder = SseDecoder::new();
//! decoder.push(b": keep-alive\r\ndata: {\"a\":");
//! assert!(decoder.next_event().unwrap().is_none()); // the line is not complete yet
//! decoder.push(b"1}\r\n\r\nevent: done\ndata: [DONE]\n\n");
//! let first = decoder.next_event().unwrap().unwrap();
//! assert_eq!(first.data, "{\"a\":1}");
//! assert_eq!(first.event, "message");
//! let second = decoder.next_event().unwrap().unwrap();
//! assert_eq!((second.event.as_str(), second.data.as_str()), ("done", "[DONE]"));
//! assert!(decoder.next_event().unwrap().is_none());
//! ```

use std::time::Duration;

/// Default cap on one line, in bytes (1 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`event:` field), `message` when none was given.
    pub event: String,
    /// The data fields joined with `\n`.
    pub data: String,
    /// The last event id seen in the stream so far, if any.
    pub id: Option<String>,
    /// The reconnection time the server asked for, if it sent `retry:`.
    pub retry: Option<Duration>,
}

/// The stream broke a size limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line is longer than the limit.
    #[error("server-sent events line exceeds {limit} bytes")]
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// One event's data is larger than the limit.
    #[error("server-sent event exceeds {limit} bytes")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// Incremental decoder: [`push`](SseDecoder::push) bytes as they arrive, then
/// call [`next_event`](SseDecoder::next_event) until it returns `Ok(None)`.
#[derive(Debug, Clone)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// Bytes in `buf[pos..scanned]` hold no line terminator.
    scanned: usize,
    /// The previous line ended with a CR at the end of the input so far; a LF
    /// at the start of the next input belongs to it.
    skip_lf: bool,
    at_start: bool,
    data: String,
    event: Option<String>,
    last_id: Option<String>,
    retry: Option<Duration>,
    max_line: usize,
    max_event: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder with [`DEFAULT_MAX_LINE_BYTES`] as both the line and the event cap.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_LINE_BYTES)
    }

    /// A decoder with the given caps (bytes) on one line and on one event's data.
    pub fn with_limits(max_line: usize, max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            skip_lf: false,
            at_start: true,
            data: String::new(),
            event: None,
            last_id: None,
            retry: None,
            max_line,
            max_event,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            self.scanned = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, `Ok(None)` when more input is needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.skip_lf = false;
                self.scanned = self.scanned.max(self.pos);
            }
            let from = self.scanned.max(self.pos);
            let Some(rel) = self.buf[from..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.scanned = self.buf.len();
                if self.buf.len() - self.pos > self.max_line {
                    return Err(SseError::LineTooLong { limit: self.max_line });
                }
                self.compact();
                return Ok(None);
            };
            let end = from + rel;
            if end - self.pos > self.max_line {
                return Err(SseError::LineTooLong { limit: self.max_line });
            }
            let next = if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    None => {
                        self.skip_lf = true;
                        end + 1
                    }
                }
            } else {
                end + 1
            };
            let (start, line_end) = (self.pos, end);
            self.pos = next;
            self.scanned = next;
            let line = std::mem::take(&mut self.buf);
            let result = self.process_line(&line[start..line_end]);
            self.buf = line;
            if let Some(event) = result? {
                return Ok(Some(event));
            }
        }
    }

    /// Ends the input: returns a last event whose lines were terminated but
    /// which lacks its closing blank line. An unterminated last line is dropped.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let partial = self.buf.len() > self.pos;
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
        if partial {
            self.data.clear();
            self.event = None;
            return None;
        }
        self.dispatch()
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.scanned -= self.pos;
            self.pos = 0;
        }
    }

    fn process_line(&mut self, mut line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if self.at_start {
            self.at_start = false;
            if let Some(rest) = line.strip_prefix(b"\xEF\xBB\xBF") {
                line = rest;
            }
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event,
                    });
                }
                self.data.reserve(value.len() + 1);
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        Some(SseEvent {
            event: event.unwrap_or_else(|| "message".to_owned()),
            data,
            id: self.last_id.clone(),
            retry: self.retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(e) = d.next_event().unwrap() {
                out.push(e);
            }
        }
        out.extend(d.finish());
        out
    }

    const SAMPLE: &[u8] = b"\xEF\xBB\xBF: comment\r\nevent: add\r\nid: 7\r\nretry: 1500\r\ndata: first\r\ndata:second\r\n\r\ndata: {\"x\": \"\xC3\xA9\"}\r\r\n\ndata\n\nfield-only\nunknown: 1\n\n";

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let events = decode_all(&[SAMPLE]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event, "add");
        assert_eq!(events[0].data, "first\nsecond");
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].retry, Some(Duration::from_millis(1500)));
        // The event type does not carry over; the id does.
        assert_eq!(events[1].event, "message");
        assert_eq!(events[1].data, "{\"x\": \"é\"}");
        assert_eq!(events[1].id.as_deref(), Some("7"));
        // `data` with no colon is an empty data line.
        assert_eq!(events[2].data, "");
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = decode_all(&[SAMPLE]);
        for i in 0..=SAMPLE.len() {
            for j in i..=SAMPLE.len() {
                let parts = [&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]];
                assert_eq!(decode_all(&parts), whole, "split at {i}, {j}");
            }
        }
        let bytes: Vec<&[u8]> = SAMPLE.chunks(1).collect();
        assert_eq!(decode_all(&bytes), whole);
    }

    #[test]
    fn cr_only_line_endings() {
        let events = decode_all(&[b"data: a\r\rdata: b\r", b"\r"]);
        let data: Vec<_> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["a", "b"]);
    }

    #[test]
    fn finish_is_lenient_only_for_terminated_lines() {
        assert_eq!(decode_all(&[b"data: [DONE]\n"])[0].data, "[DONE]");
        assert!(decode_all(&[b"data: {\"trunc"]).is_empty());
        assert!(decode_all(&[b"data: a\n", b"data: b"]).is_empty());
    }

    #[test]
    fn long_lines_and_large_events_are_errors() {
        let mut d = SseDecoder::with_limits(16, 32);
        d.push(b"data: 0123456789");
        assert!(d.next_event().unwrap().is_none());
        d.push(b"0123456789");
        assert_eq!(d.next_event(), Err(SseError::LineTooLong { limit: 16 }));

        let mut d = SseDecoder::with_limits(16, 32);
        d.push(b"data: 01234567890123456789\n\n");
        assert_eq!(d.next_event(), Err(SseError::LineTooLong { limit: 16 }));

        let mut d = SseDecoder::with_limits(16, 20);
        d.push(b"data: 0123456789\ndata: 0123456789\n\n");
        assert_eq!(d.next_event(), Err(SseError::EventTooLarge { limit: 20 }));
    }

    proptest::proptest! {
        /// Any bytes, split anywhere: no panic, and the same events (or the
        /// same error) as feeding them whole.
        #[test]
        fn arbitrary_input_and_splits_agree(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"\r\n: adtiv".to_vec()),
                    proptest::num::u8::ANY,
                ],
                0..300,
            ),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            let run = |parts: &[&[u8]]| {
                let mut d = SseDecoder::with_limits(64, 128);
                let mut out = Vec::new();
                for p in parts {
                    d.push(p);
                    loop {
                        match d.next_event() {
                            Ok(Some(e)) => out.push(Ok(e)),
                            Ok(None) => break,
                            Err(e) => {
                                out.push(Err(e));
                                return out;
                            }
                        }
                    }
                }
                out.extend(d.finish().map(Ok));
                out
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut prev = 0;
            for c in cuts {
                parts.push(&bytes[prev..c]);
                prev = c;
            }
            parts.push(&bytes[prev..]);
            let whole = run(&[&bytes]);
            let split = run(&parts);
            // A line-length error may be detected earlier when split, never later;
            // events before it agree.
            let ok = |v: &Vec<Result<SseEvent, SseError>>| v.iter().take_while(|r| r.is_ok()).count();
            let n = ok(&whole).min(ok(&split));
            proptest::prop_assert_eq!(&whole[..n], &split[..n]);
            proptest::prop_assert_eq!(whole.iter().any(Result::is_err), split.iter().any(Result::is_err));
        }
    }

    #[test]
    fn many_small_pushes_do_not_rescan_or_grow() {
        let mut d = SseDecoder::new();
        for _ in 0..10_000 {
            d.push(b"data: x\n\n");
            assert_eq!(d.next_event().unwrap().unwrap().data, "x");
            assert!(d.next_event().unwrap().is_none());
        }
        assert!(d.buf.capacity() < 1024);
    }
}
