//! The client service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use mantissa_core::{
    BoxError, Chunk, ChunkStream, FailureClass, FinishReason, LlmError, LlmRequest, LlmResponse, ModelId,
    ToolCallDelta,
};
use tokio::time::Instant;
use tower_service::Service;
use tracing::Instrument;

use crate::config::{ApiKey, OpenAiConfig, Timeouts};
use crate::error::{
    ApiError, BuildError, InvalidResponse, InvalidResponseKind, TimeoutError, TimeoutKind, TransportError,
};
use crate::ratelimit::RateLimit;
use crate::redact::Redactor;
use crate::stream::{Deadline, SseChunks, into_chunk_stream, read_body, within};
use crate::wire::{ChatBody, Completion, class_for_status, embedded_api_error, parse_error_body};

/// What the provider said about a response besides the completion itself;
/// found in [`LlmResponse::extensions`].
///
/// `LlmResponse::model` is the model name the caller asked for (a bounded
/// label); the name the provider reports — often a dated snapshot such as
/// `gpt-4o-mini-2024-07-18` — is kept here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseMeta {
    /// The model name the provider reported.
    pub upstream_model: Option<String>,
    /// The completion id (`chatcmpl-…`), for non-streaming responses.
    pub completion_id: Option<String>,
    /// The provider's request id header (`x-request-id`).
    pub request_id: Option<String>,
    /// `system_fingerprint`, for non-streaming responses.
    pub system_fingerprint: Option<String>,
    /// The `x-ratelimit-*` headers, when the provider sent any: how much of
    /// the quota is left after this call.
    pub rate_limit: Option<RateLimit>,
}

/// An OpenAI-compatible chat-completions client as a tower
/// `Service<LlmRequest>`. See the [crate docs](crate) for the contract.
///
/// Cloning is cheap (one `Arc`); clones share one connection pool.
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: reqwest::Url,
    hide_url: bool,
    headers: HeaderMap,
    config: OpenAiConfig,
    redactor: Redactor,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("endpoint", &self.endpoint())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// A client for `config`, with its own connection pool. Redirects are not
    /// followed (a 3xx is an invalid response), and the user agent is
    /// `mantissa-openai/<version>`.
    pub fn new(config: OpenAiConfig) -> Result<Self, BuildError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mantissa-openai/", env!("CARGO_PKG_VERSION")));
        if let Some(connect) = config.timeouts.connect {
            builder = builder.connect_timeout(connect);
        }
        let http = builder.build().map_err(BuildError::Http)?;
        Self::with_http_client(config, http)
    }

    /// A client for `config` that sends through `http` (to share a pool or
    /// TLS settings). The connect timeout is then `http`'s own; redirects are
    /// followed as `http` is configured to.
    pub fn with_http_client(config: OpenAiConfig, http: reqwest::Client) -> Result<Self, BuildError> {
        config.validate()?;
        let invalid = |reason: &str| BuildError::InvalidBaseUrl {
            url: config.base_url.clone(),
            reason: reason.to_owned(),
        };
        let base = config.base_url.trim_end_matches('/');
        let url =
            reqwest::Url::parse(&format!("{base}/chat/completions")).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        let hide_url = url.password().is_some() || url.query().is_some();
        let mut headers = config.headers.clone();
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| BuildError::InvalidApiKey)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in [
            ("openai-organization", &config.organization),
            ("openai-project", &config.project),
        ] {
            if let Some(value) = value {
                let value = HeaderValue::from_str(value).map_err(|e| BuildError::InvalidHeader {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?;
                headers.insert(name, value);
            }
        }
        let redactor = Redactor::new(config.api_key.as_ref().map(ApiKey::expose_secret));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                url,
                hide_url,
                headers,
                config,
                redactor,
            }),
        })
    }

    /// A client like this one but with `model` as its default model, sharing
    /// this client's connection pool and settings: one pool for all the models
    /// a server hosts.
    ///
    /// ```
    /// use mantissa_openai::{OpenAiClient, OpenAiConfig};
    /// let base = OpenAiClient::new(OpenAiConfig::new("http://127.0.0.1:8000/v1"))?;
    /// let small = base.with_default_model("small");
    /// let large = base.with_default_model("large");
    /// assert_eq!(small.endpoint(), large.endpoint());
    /// # Ok::<(), mantissa_openai::BuildError>(())
    /// ```
    pub fn with_default_model(&self, model: impl Into<ModelId>) -> Self {
        let inner = &*self.inner;
        Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                url: inner.url.clone(),
                hide_url: inner.hide_url,
                headers: inner.headers.clone(),
                config: inner.config.clone().default_model(model),
                redactor: inner.redactor.clone(),
            }),
        }
    }

    /// A client configured by [`OpenAiConfig::from_env`].
    pub fn from_env() -> Result<Self, BuildError> {
        Self::new(OpenAiConfig::from_env())
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.inner.config
    }

    /// The chat-completions URL requests are sent to.
    pub fn endpoint(&self) -> &str {
        if self.inner.hide_url {
            return "[hidden: the base url has credentials or a query]";
        }
        self.inner.url.as_str()
    }

    /// Sends one request. This is what the service's `call` runs, with a
    /// typed error.
    ///
    /// Every error the client hands out passes through here: the `Err` of the
    /// call and every `Err` item of the response's chunk stream have the API
    /// key scrubbed from their message and whole `source()` chain, whatever
    /// part of the provider's answer echoed it.
    pub async fn send(&self, req: LlmRequest) -> Result<LlmResponse, LlmError> {
        let redactor = &self.inner.redactor;
        match self.send_unredacted(req).await {
            Ok(mut response) => {
                if let Some(stream) = response.stream.take() {
                    let redactor = redactor.clone();
                    response.stream = Some(ChunkStream::new(stream.map(move |item| {
                        item.map_err(|e| {
                            let e = redactor.boxed(e);
                            tracing::debug!(error = %e, "chat completion stream failed");
                            e
                        })
                    })));
                }
                Ok(response)
            }
            Err(e) => {
                let e = redactor.llm_error(e);
                tracing::debug!(
                    status = e.status(),
                    class = e.class().as_str(),
                    message = e.message(),
                    "chat completion failed"
                );
                Err(e)
            }
        }
    }

    /// [`send`](Self::send) before the key is scrubbed from its errors.
    async fn send_unredacted(&self, req: LlmRequest) -> Result<LlmResponse, LlmError> {
        let inner = &*self.inner;
        let config = &inner.config;
        let start = Instant::now();
        let model: ModelId = req
            .model
            .clone()
            .or_else(|| config.default_model.clone())
            .ok_or_else(|| {
                LlmError::new(
                    FailureClass::ClientError,
                    "no model: the request names none and the client has no default model",
                )
            })?;
        let (upstream, settings) = config.resolve(model.as_str());
        let stream = req.params.stream;
        let body = serde_json::to_vec(&ChatBody {
            model: upstream,
            messages: req.messages(),
            tools: &req.tools,
            params: &req.params,
            settings,
        })
        .map_err(|e| {
            LlmError::new(
                FailureClass::ClientError,
                format!("cannot encode the request: {e}"),
            )
            .with_source(e)
        })?;
        tracing::debug!(model = %model, upstream, stream, bytes = body.len(), "sending chat completion");

        // A `Timeouts` in the request's extensions overrides the client's for
        // this call (its `connect` is ignored: that belongs to the pool).
        let timeouts = req
            .extensions
            .get::<Timeouts>()
            .copied()
            .unwrap_or(config.timeouts);
        let total = Deadline::starting(start, TimeoutKind::Total, timeouts.total);
        let first = if stream {
            Deadline::starting(start, TimeoutKind::FirstChunk, timeouts.first_chunk)
        } else {
            None
        };
        let request = inner
            .http
            .post(inner.url.clone())
            .headers(inner.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(body);
        let response = within(Deadline::earliest(first, total), request.send())
            .await?
            .map_err(|e| self.send_error(e))?;

        let status = response.status();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !status.is_success() {
            return Err(self.status_error(response, request_id, total).await);
        }
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        let has_rate_limit = response
            .headers()
            .keys()
            .any(|k| k.as_str().starts_with("x-ratelimit-"));
        let mut meta = ResponseMeta {
            request_id,
            rate_limit: has_rate_limit
                .then(|| RateLimit::from_headers(response.headers(), SystemTime::now())),
            ..ResponseMeta::default()
        };
        let body = body_stream(response);

        if stream && is_sse {
            let mut chunks = SseChunks::new(body, config.max_line_bytes, timeouts.idle, total, first);
            let Some(first_chunk) = chunks.next_chunk().await? else {
                let inv = InvalidResponse::new(
                    InvalidResponseKind::StreamIncomplete,
                    "stream ended before its first chunk",
                );
                return Err(LlmError::new(FailureClass::InvalidResponse, inv.to_string()).with_source(inv));
            };
            meta.upstream_model = chunks.facts.upstream_model.clone();
            let mut response = LlmResponse::streaming(model, into_chunk_stream(first_chunk, chunks));
            response.extensions.insert(meta);
            return Ok(response);
        }

        let bytes = read_body(body, config.max_body_bytes, false, timeouts.idle, total).await?;
        let mut response = parse_completion(&bytes, model, meta)?;
        if stream {
            // The server ignored `stream: true` and answered in one piece:
            // hand it out as a one-chunk stream so the caller's contract holds.
            let chunk = completion_chunk(&response);
            response.stream = Some(ChunkStream::new(futures_util::stream::iter([Ok(chunk)])));
        }
        Ok(response)
    }

    fn send_error(&self, e: reqwest::Error) -> LlmError {
        let e = if self.inner.hide_url { e.without_url() } else { e };
        if e.is_timeout() {
            let (kind, after) = match self.inner.config.timeouts.connect {
                Some(after) if e.is_connect() => (TimeoutKind::Connect, after),
                _ => (
                    TimeoutKind::Total,
                    self.inner.config.timeouts.total.unwrap_or_default(),
                ),
            };
            let err = TimeoutError::new(kind, after);
            return LlmError::new(FailureClass::Timeout, err.to_string()).with_source(err.with_source(e));
        }
        let (class, what) = if e.is_connect() {
            (FailureClass::Transport, "connection failed")
        } else if e.is_builder() {
            (FailureClass::ClientError, "cannot build the request")
        } else if e.is_decode() {
            (FailureClass::InvalidResponse, "cannot decode the response")
        } else {
            (FailureClass::Transport, "request failed")
        };
        let message = format!("{what}: {}", ErrorChain(&e));
        match class {
            FailureClass::Transport => {
                LlmError::new(class, message).with_source(TransportError::new(what).with_source(e))
            }
            _ => LlmError::new(class, message).with_source(e),
        }
    }

    async fn status_error(
        &self,
        response: reqwest::Response,
        request_id: Option<String>,
        total: Option<Deadline>,
    ) -> LlmError {
        let config = &self.inner.config;
        let status = response.status();
        let rate_limit =
            (status.as_u16() == 429).then(|| RateLimit::from_headers(response.headers(), SystemTime::now()));
        let body = read_body(
            body_stream(response),
            config.max_error_body_bytes,
            true,
            config.timeouts.idle,
            total,
        )
        .await
        .unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        let info = parse_error_body(&body);
        let retry_after = rate_limit.as_ref().and_then(|r| r.retry_after);
        let class = class_for_status(status.as_u16(), &info, retry_after);
        let message = info.message.clone().unwrap_or_else(|| {
            let text = mantissa_core::truncate_str(body.trim(), 512);
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                text.to_owned()
            }
        });
        let api = ApiError {
            status: status.as_u16(),
            message: message.clone(),
            error_type: info.error_type,
            code: info.code,
            param: info.param,
            body,
            request_id,
            rate_limit,
        };
        LlmError::new(class, message)
            .with_status(status.as_u16())
            .with_source(api)
    }
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

fn body_stream(response: reqwest::Response) -> BodyStream {
    Box::pin(response.bytes_stream())
}

/// Displays an error and its sources, `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

fn malformed(e: serde_json::Error) -> LlmError {
    let inv = InvalidResponse::new(InvalidResponseKind::MalformedJson, "malformed response body");
    LlmError::new(
        FailureClass::InvalidResponse,
        format!("malformed response body: {e}"),
    )
    .with_source(inv.with_source(e))
}

pub(crate) fn parse_completion(
    bytes: &[u8],
    model: ModelId,
    mut meta: ResponseMeta,
) -> Result<LlmResponse, LlmError> {
    let mut completion: Completion = serde_json::from_slice(bytes).map_err(malformed)?;
    if let Some(error) = completion.error.take().filter(|e| !e.is_null()) {
        let (class, api) = embedded_api_error(&serde_json::json!({ "error": error }), 200);
        return Err(LlmError::new(class, api.message().to_owned()).with_source(api));
    }
    let parts = completion.take_first().map_err(InvalidResponse::into_llm_error)?;
    meta.upstream_model = completion.model.take();
    meta.completion_id = completion.id.take();
    meta.system_fingerprint = completion.system_fingerprint.take();
    let mut response = LlmResponse::new(model, parts.message, parts.usage);
    if parts.finish_reason.is_some() {
        response.finish_reason = parts.finish_reason;
    }
    response.extensions.insert(meta);
    Ok(response)
}

/// A complete response as one chunk.
fn completion_chunk(response: &LlmResponse) -> Chunk {
    Chunk {
        content: response.message.content.clone().filter(|c| !c.is_empty()),
        tool_calls: response
            .message
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, call)| ToolCallDelta {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                id: Some(call.id.clone()),
                name: Some(call.function.name.clone()),
                arguments: Some(call.function.arguments.clone()),
            })
            .collect(),
        finish_reason: response.finish_reason.clone().or(Some(FinishReason::Stop)),
        usage: Some(response.usage),
    }
}

/// The future of [`OpenAiClient`]'s `call`.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<LlmResponse, BoxError>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<LlmResponse, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl Service<LlmRequest> for OpenAiClient {
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: the connection pool queues internally.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let client = self.clone();
        let span = tracing::debug_span!(
            "chat_completion",
            agent = %req.agent,
            model = req.model.as_ref().map(ModelId::as_str),
            stream = req.params.stream,
        );
        ResponseFuture {
            inner: Box::pin(async move { client.send(req).await.map_err(BoxError::from) }.instrument(span)),
        }
    }
}
