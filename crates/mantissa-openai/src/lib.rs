//! # mantissa-openai
//!
//! A client for any OpenAI-compatible chat-completions endpoint — OpenAI,
//! vLLM, Ollama, llama.cpp's server, LiteLLM — as a tower
//! `Service<LlmRequest, Response = LlmResponse, Error = BoxError>`: the leaf
//! that the rest of the mantissa stack wraps.
//!
//! - One [`reqwest::Client`] per [`OpenAiClient`] (clones share it), so
//!   connections are reused.
//! - The body is `model` (the request's, else the default; an alias is mapped
//!   to its upstream name), `messages`, `tools`, the request's
//!   [`GenerationParams`](mantissa_core::GenerationParams) and extra parameters
//!   (the request's, then the model's; fixed fields are never duplicated).
//! - `params.stream = true` sends `stream: true` with
//!   `stream_options: {include_usage: true}` and returns a
//!   [`LlmResponse::streaming`](mantissa_core::LlmResponse::streaming) whose
//!   chunks carry content deltas, tool-call pieces, the finish reason and, last,
//!   the usage. [`collect_response`] folds a stream back into a complete response.
//! - Four timeouts ([`Timeouts`]): connect, total, first chunk and idle, each
//!   reported as its own [`TimeoutKind`]. A `Timeouts` in a request's
//!   extensions overrides the client's for that call.
//! - Response bodies are capped (16 MiB by default, a larger one is an invalid
//!   response), as are SSE lines and error bodies: no unbounded buffering.
//! - [`ResponseMeta`] in the response's extensions keeps what the provider
//!   said besides the completion: its own model name, request id, and the
//!   `x-ratelimit-*` headers.
//! - A response is checked before it is a success: no choices, a first choice
//!   without a message (`null` or missing), or a token count that is not an
//!   integer from 0 to [`MAX_USAGE_TOKENS`] (2^32 − 1) — in a body or in a
//!   streamed usage chunk — is an
//!   [`InvalidResponse`](mantissa_core::FailureClass::InvalidResponse) the
//!   router can fall back on (mid-stream, an error item).
//! - Every failure is a [`LlmError`](mantissa_core::LlmError) with its
//!   [`FailureClass`](mantissa_core::FailureClass); see [`error`] for the table,
//!   and [`api_error`] / [`rate_limit`] / [`timeout_error`] to reach the details.
//! - The API key is an [`ApiKey`] (redacted `Debug`/`Display`), sent in an
//!   `Authorization` header marked sensitive, and never logged. A provider
//!   that echoes it back (in a message, `error.param`/`code`/`type`, a 200
//!   error body, an SSE error event, or text a parse error quotes) never gets
//!   it into an error: every error of a call and of its stream passes through
//!   one scrubber that replaces the key with `[REDACTED]` in the message and
//!   the whole `source()` chain.
//!
//! ## Contract with the router: errors before the first chunk are `Err`
//!
//! A router may fall back to another model only while nothing of the answer has
//! reached the caller. So the client resolves the future of `call` only when it
//! knows how the call starts:
//!
//! - every HTTP status error (429, 4xx, 5xx), connect failure, and timeout
//!   before the response headers is returned as `Err` from the call;
//! - for a stream, the client also reads up to the **first chunk with content**
//!   (text, a tool-call piece, a finish reason or usage — a bare role delta does
//!   not count) before resolving. Failures up to that point (first-chunk
//!   timeout, an error event, malformed data, a body that ends empty) are also
//!   `Err` from the call, so the router can still fall back;
//! - once the call has resolved `Ok`, failures (idle timeout, total timeout, a
//!   cut connection, malformed data, an error event mid-stream, a stream that
//!   ends without `[DONE]` or a finish reason) arrive as an `Err` item of the
//!   [`ChunkStream`](mantissa_core::ChunkStream), after which it ends. By then
//!   the caller has seen output; retrying elsewhere would duplicate it.
//!
//! The health layer's time-to-first-chunk therefore equals the time the call
//! resolved, and no stream is ever handed out that fails before producing
//! anything.
//!
//! ## Examples
//!
//! A client configured from the environment (`OPENAI_API_KEY`,
//! `OPENAI_BASE_URL`, `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID`) and used as a
//! tower service. Building it sends nothing:
//!
//! ```
//! use mantissa_openai::OpenAiClient;
//!
//! let client = OpenAiClient::from_env()?;
//! assert!(client.endpoint().ends_with("/chat/completions"));
//! # Ok::<(), mantissa_openai::BuildError>(())
//! ```
//!
//! A customised client for a local vLLM server, with an alias, extra sampling
//! parameters and tighter timeouts:
//!
//! ```
//! use std::time::Duration;
//! use mantissa_openai::{ModelSettings, OpenAiClient, OpenAiConfig};
//!
//! let config = OpenAiConfig::new("http://127.0.0.1:8000/v1")
//!     .api_key("token-abc123")
//!     .default_model("small")
//!     .model("small", ModelSettings::new().upstream("Qwen/Qwen2.5-7B-Instruct").extra("top_k", 20))
//!     .header("x-team", "research")?
//!     .connect_timeout(Duration::from_secs(2))
//!     .first_chunk_timeout(Duration::from_secs(15))
//!     .idle_timeout(Duration::from_secs(10))
//!     .total_timeout(Duration::from_secs(120))
//!     .max_body_bytes(4 << 20);
//! let client = OpenAiClient::new(config)?;
//! assert_eq!(client.endpoint(), "http://127.0.0.1:8000/v1/chat/completions");
//! assert!(!format!("{client:?}").contains("token-abc123"));
//! # Ok::<(), mantissa_openai::BuildError>(())
//! ```
//!
//! Sending (not run here, as it needs a server), streamed and collected:
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use mantissa_core::{LlmRequest, Message};
//! use mantissa_openai::OpenAiClient;
//! use tower::ServiceExt;
//!
//! # async fn run() -> Result<(), mantissa_core::BoxError> {
//! let client = OpenAiClient::from_env()?;
//! let mut req = LlmRequest::new("s1", "writer", vec![Message::user("Write a haiku.")])
//!     .with_model("gpt-4o-mini");
//! req.params.stream = true;
//! let mut response = client.clone().oneshot(req.clone()).await?;
//! if let Some(stream) = response.stream.as_mut() {
//!     while let Some(chunk) = stream.next().await {
//!         print!("{}", chunk?.content.unwrap_or_default());
//!     }
//! }
//! // Or get the whole answer at once:
//! let whole = mantissa_openai::collect_response(client.oneshot(req).await?).await?;
//! println!("{} ({} tokens)", whole.message.text(), whole.usage.total());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod config;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod ratelimit;
mod redact;
pub mod sse;
mod stream;
mod wire;

pub use client::{OpenAiClient, ResponseFuture, ResponseMeta};
pub use config::{
    ApiKey, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ERROR_BODY_BYTES, ModelSettings, OPENAI_BASE_URL,
    OpenAiConfig, Timeouts,
};
pub use error::{
    ApiError, BuildError, InvalidResponse, InvalidResponseKind, TimeoutError, TimeoutKind, TransportError,
    api_error, rate_limit, timeout_error,
};
pub use ratelimit::RateLimit;
pub use stream::collect_response;
pub use wire::MAX_USAGE_TOKENS;
