//! Entry points for the fuzz targets in the repository's `fuzz/` directory
//! (feature `fuzzing`; not a stable API).
//!
//! Each `check_*` function feeds arbitrary bytes to the same code the client
//! runs on a provider's answer and returns `Err` describing the first broken
//! invariant (beyond not panicking): an error that is not one of the classes a
//! provider's answer can produce, a usage above [`MAX_USAGE_TOKENS`], a stream
//! that does not end after an error, an SSE decoding that depends on how the
//! bytes were split. The fuzz targets panic on `Err`; the regression tests
//! run every kept input through the same functions.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::FutureExt;
use mantissa_core::{Chunk, FailureClass, LlmError, Role, Usage};

use crate::MAX_USAGE_TOKENS;
use crate::client::{ResponseMeta, parse_completion};
use crate::sse::{SseDecoder, SseError, SseEvent};
use crate::stream::SseChunks;

/// How an input ended, when no invariant broke.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A response, or a stream that ended cleanly.
    Decoded,
    /// An error of this class (one an answer can have).
    Failed(FailureClass),
}

/// Caps small enough that fuzz inputs reach them.
const MAX_LINE: usize = 512;

/// The classes an answer the client has received can be given: an invalid
/// response, or the provider's own error object classified.
fn answer_class(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::InvalidResponse
            | FailureClass::ClientError
            | FailureClass::RateLimited { retry_after: None }
            | FailureClass::UpstreamServer
            | FailureClass::ContextLengthExceeded
    )
}

fn check_error(what: &str, e: &LlmError) -> Result<Outcome, String> {
    if !answer_class(e.class()) {
        return Err(format!("{what}: unexpected class {:?}: {e}", e.class()));
    }
    if e.message().is_empty() {
        return Err(format!("{what}: an error without a message: {e:?}"));
    }
    Ok(Outcome::Failed(e.class()))
}

fn check_usage(what: &str, usage: &Usage) -> Result<(), String> {
    if usage.input_tokens > MAX_USAGE_TOKENS || usage.output_tokens > MAX_USAGE_TOKENS {
        return Err(format!("{what}: usage above the cap: {usage:?}"));
    }
    Ok(())
}

/// A non-streaming chat-completions body: decodes to an assistant message
/// with a usage within the cap, or to an error of an answer's class.
pub fn check_completion(body: &[u8]) -> Result<Outcome, String> {
    match parse_completion(body, "fuzz".into(), ResponseMeta::default()) {
        Ok(response) => {
            if response.message.role != Role::Assistant {
                return Err(format!("completion: role {:?}", response.message.role));
            }
            check_usage("completion", &response.usage)?;
            Ok(Outcome::Decoded)
        }
        Err(e) => check_error("completion", &e),
    }
}

/// Splits `input` at the cut points its first byte picks: the first byte
/// selects the stride, the rest is the body.
fn split(input: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&seed, body)) = input.split_first() else {
        return (Vec::new(), input);
    };
    let stride = usize::from(seed % 17) + 1;
    (body.chunks(stride).collect(), body)
}

fn decode(parts: &[&[u8]]) -> Vec<Result<SseEvent, SseError>> {
    let mut decoder = SseDecoder::with_limits(MAX_LINE, 2 * MAX_LINE);
    let mut out = Vec::new();
    for part in parts {
        decoder.push(part);
        loop {
            match decoder.next_event() {
                Ok(Some(event)) => out.push(Ok(event)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out.extend(decoder.finish().map(Ok));
    out
}

/// An SSE body of a streamed completion, `input[0]` choosing how it is split
/// into network reads:
///
/// - the SSE decoder gives the same events whether the body arrives whole or
///   split (a line-length error may come earlier when split, never later);
/// - the chunk stream built on it yields chunks with usage within the cap and
///   then ends, or fails once with an error of an answer's class and ends;
///   it never waits on a body that is all there.
pub fn check_sse(input: &[u8]) -> Result<Outcome, String> {
    let (parts, body) = split(input);
    let whole = decode(&[body]);
    let pieces = decode(&parts);
    let ok = |v: &[Result<SseEvent, SseError>]| v.iter().take_while(|r| r.is_ok()).count();
    let n = ok(&whole).min(ok(&pieces));
    if whole[..n] != pieces[..n] {
        return Err(format!("sse: split changes events: {whole:?} vs {pieces:?}"));
    }
    if whole.iter().any(Result::is_err) != pieces.iter().any(Result::is_err) {
        return Err(format!("sse: split changes the error: {whole:?} vs {pieces:?}"));
    }

    let reads: Vec<Result<Bytes, Infallible>> = parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect();
    let mut chunks = SseChunks::new(futures_util::stream::iter(reads), MAX_LINE, None, None, None);
    let mut seen: Vec<Chunk> = Vec::new();
    // An event takes at least six bytes (`data\n\n`) and gives at most one
    // chunk, so this bound is never reached by a stream that ends.
    for _ in 0..=body.len() + 2 {
        let Some(next) = chunks.next_chunk().now_or_never() else {
            return Err("stream: pending on a body that is all there".to_owned());
        };
        match next {
            Ok(Some(chunk)) => {
                if let Some(usage) = &chunk.usage {
                    check_usage("stream", usage)?;
                }
                seen.push(chunk);
            }
            Ok(None) => return Ok(Outcome::Decoded),
            Err(e) => {
                let outcome = check_error("stream", &e)?;
                return match chunks.next_chunk().now_or_never() {
                    Some(Ok(None)) => Ok(outcome),
                    other => Err(format!("stream: goes on after an error: {other:?}")),
                };
            }
        }
    }
    Err(format!("stream: did not end after {} chunks", seen.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file kept under `fuzz/regressions/<target>/`, by name.
    fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "{}: only {} inputs",
            dir.display(),
            files.len()
        );
        files
    }

    /// A kept input named `ok_*` must decode, `err_*` must fail (with a
    /// class an answer can have); any other name (one the fuzzer found) may
    /// do either. No input may break an invariant.
    fn expect(name: &str, outcome: Result<Outcome, String>) {
        let outcome = outcome.unwrap_or_else(|broken| panic!("{name}: {broken}"));
        if name.starts_with("ok_") {
            assert_eq!(outcome, Outcome::Decoded, "{name}");
        } else if name.starts_with("err_") {
            assert!(matches!(outcome, Outcome::Failed(_)), "{name}: {outcome:?}");
        }
    }

    #[test]
    fn completion_regressions_decode_or_fail_classified() {
        for (name, bytes) in regressions("completion") {
            expect(&name, check_completion(&bytes));
        }
    }

    #[test]
    fn sse_regressions_decode_or_fail_classified() {
        for (name, bytes) in regressions("sse") {
            expect(&name, check_sse(&bytes));
        }
    }

    #[test]
    fn the_checks_catch_what_they_claim() {
        let body = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(check_completion(body), Ok(Outcome::Decoded));
        assert_eq!(
            check_completion(br#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":1e3}}"#),
            Ok(Outcome::Failed(FailureClass::InvalidResponse)),
        );
        assert!(check_usage("t", &Usage::new(MAX_USAGE_TOKENS + 1, 0)).is_err());
        assert!(check_error("t", &LlmError::new(FailureClass::Transport, "x")).is_err());
        let stream = b"\x03data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(check_sse(stream), Ok(Outcome::Decoded));
        assert_eq!(
            check_sse(b"\x01data: {\"error\": \"x\"}\n\n"),
            Ok(Outcome::Failed(FailureClass::UpstreamServer))
        );
    }
}
