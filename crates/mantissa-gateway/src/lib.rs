//! `mantissa-gateway`: a whole [`AgentStack`] behind an OpenAI-compatible HTTP
//! endpoint, so agents in any language get every mantissa layer by changing
//! one base URL.
//!
//! # Routes
//!
//! - `POST /v1/chat/completions`: JSON, or server-sent events with
//!   `"stream": true` (and a usage chunk with `stream_options.include_usage`);
//!   tools and tool calls.
//! - `GET /v1/models`: `auto`, the tiers and the configured model ids.
//! - `GET /metrics` (the stack's Prometheus exposition), `GET /healthz`,
//!   `GET /readyz` (503 while shutting down or when every model is cooled down).
//!
//! # Mapping
//!
//! - Agent: the `x-mantissa-agent` header, else the client key's
//!   `default_agent`, else `other`. A key bound to agents gets 403 for others.
//! - Session: `x-mantissa-session`, else OpenAI's `user`, else a fresh id
//!   (returned in the `x-mantissa-session` response header).
//! - `model`: `auto` lets triage decide; a tier name pins the tier; a
//!   configured model id pins the model; anything else is 404.
//! - Response headers `x-mantissa-tier`, `x-mantissa-model` and
//!   `x-mantissa-reset` (`none`, or the trigger and strategy) say what mantissa
//!   decided; the body stays OpenAI-shaped.
//!
//! # Errors
//!
//! Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`: 400
//! names the field; 401 (no or unknown key); 403; 404 (model or tier); 413; 429
//! when every model tried was rate limited (with `Retry-After` when known);
//! 502 (upstream 5xx, transport, invalid response), 503 (every model cooled
//! down, or the gateway at its concurrency limit, with `Retry-After`), 504
//! (upstream or total timeout). Messages are the gateway's own: no upstream
//! text, so no key, reaches a client.
//!
//! # Example
//!
//! ```
//! use mantissa_gateway::Gateway;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The embedded mock upstream, no metrics or monitor, no keys (loopback only).
//! let gateway = Gateway::from_toml("[metrics]\ninstall = false\n[monitor]\nenabled = false\n")?;
//! let request = http::Request::post("/v1/chat/completions")
//!     .header("x-mantissa-agent", "docs")
//!     .body(axum::body::Body::from(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#))?;
//! let response = gateway.router().oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-mantissa-tier"], "low");
//! # Ok(()) }
//! ```
//!
//! Serving, with a shutdown signal:
//!
//! ```no_run
//! # async fn run() -> Result<(), mantissa_gateway::GatewayError> {
//! let gateway = mantissa_gateway::Gateway::from_toml_file("mantissa.toml")?;
//! let listener = tokio::net::TcpListener::bind(gateway.config().listen).await?;
//! let server = gateway.serve(listener, async { let _ = tokio::signal::ctrl_c().await; })?;
//! println!("listening on {}", server.local_addr());
//! server.wait().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod keys;
pub mod request;
mod response;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use mantissa::core::{AgentName, LlmRequest, ModelId, SessionId, Tier};
use mantissa::reset::ContextReset;
use mantissa::triage::ModelState;
use mantissa::{AgentStack, LlmService};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub use config::{GatewayConfig, GatewayFile, GatewaySection, KeyConfig};
pub use error::{ApiError, GatewayError};
pub use keys::{ClientKey, ClientKeys, KeyDigest};

/// The agent header.
pub const AGENT_HEADER: &str = "x-mantissa-agent";
/// The session header (request and response).
pub const SESSION_HEADER: &str = "x-mantissa-session";
/// The serving tier (response).
pub const TIER_HEADER: &str = "x-mantissa-tier";
/// The serving model (response).
pub const MODEL_HEADER: &str = "x-mantissa-model";
/// The context reset of the call, or `none` (response).
pub const RESET_HEADER: &str = "x-mantissa-reset";
/// The agent of calls that name none and whose key has no default.
pub const DEFAULT_AGENT: &str = "other";
/// The `model` that lets triage choose the tier.
pub const AUTO_MODEL: &str = "auto";

/// What `model` names.
#[derive(Debug, Clone)]
enum Target {
    Auto,
    Tier(Tier),
    Model(ModelId),
}

struct Shared {
    stack: AgentStack,
    config: GatewayConfig,
    services: HashMap<AgentName, LlmService>,
    targets: HashMap<String, Target>,
    models_body: Bytes,
    limit: Arc<Semaphore>,
    draining: AtomicBool,
}

/// The gateway: an [`AgentStack`] and its [`GatewayConfig`]. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("stack", &self.shared.stack)
            .field("listen", &self.shared.config.listen)
            .field("keys", &self.shared.config.keys)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `stack` with `config`.
    pub fn new(stack: AgentStack, config: GatewayConfig) -> Self {
        let mut services = HashMap::new();
        let mut agents: Vec<AgentName> = stack.agents().map(|a| a.name.clone()).collect();
        agents.push(AgentName::new(DEFAULT_AGENT));
        for agent in agents {
            services.insert(agent.clone(), stack.llm(agent));
        }
        let mut targets = HashMap::new();
        let mut listed = vec![serde_json::json!({
            "id": AUTO_MODEL, "object": "model", "created": 0, "owned_by": "mantissa",
        })];
        targets.insert(AUTO_MODEL.to_owned(), Target::Auto);
        for tier in stack.tiers().iter() {
            targets.insert(tier.name.as_str().to_owned(), Target::Tier(tier.name.clone()));
            listed.push(serde_json::json!({
                "id": tier.name.as_str(), "object": "model", "created": 0, "owned_by": "mantissa",
            }));
        }
        for tier in stack.tiers().iter() {
            for m in &tier.models {
                if targets.contains_key(m.id.as_str()) {
                    continue;
                }
                targets.insert(m.id.as_str().to_owned(), Target::Model(m.id.clone()));
                listed.push(serde_json::json!({
                    "id": m.id.as_str(), "object": "model", "created": 0, "owned_by": m.provider,
                }));
            }
        }
        let models_body = Bytes::from(serde_json::json!({"object": "list", "data": listed}).to_string());
        let limit = Arc::new(Semaphore::new(config.max_concurrency));
        Self {
            shared: Arc::new(Shared {
                stack,
                config,
                services,
                targets,
                models_body,
                limit,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Builds the stack and the gateway from TOML text: [`AgentStack`]'s
    /// configuration plus a `[gateway]` table ([`GatewaySection`]). Key
    /// variables are read from the environment. Needs a tokio runtime when
    /// the monitor is enabled.
    ///
    /// This is an application's composition root: unless `[metrics]` says
    /// `install = false`, it installs mantissa's Prometheus recorder
    /// process-wide (once per process: a second gateway built from TOML in
    /// the same process is [`GatewayError::Metrics`]) and serves it on
    /// `/metrics`.
    pub fn from_toml(text: &str) -> Result<Self, GatewayError> {
        let file = GatewayFile::from_toml(text)?;
        let config = file.gateway.resolve(&|var| std::env::var(var).ok())?;
        let exporter = file.stack.metrics.install()?;
        let mut stack = file.stack.into_builder()?;
        if let Some(exporter) = exporter {
            stack = stack.exporter(exporter);
        }
        Ok(Self::new(stack.build()?, config))
    }

    /// [`Gateway::from_toml`] of a file.
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<Self, GatewayError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| GatewayError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The stack.
    pub fn stack(&self) -> &AgentStack {
        &self.shared.stack
    }

    /// The settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.shared.config
    }

    /// The axum router of every route (no header timeout or graceful
    /// shutdown: [`Gateway::serve`] adds those).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .fallback(fallback)
            .with_state(self.shared.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting
    /// and lets open calls (streams included) finish for up to the
    /// configured grace period. Refuses a non-loopback address when no
    /// client key is configured. Must be called inside a tokio runtime.
    pub fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Server, GatewayError> {
        let addr = listener.local_addr()?;
        if self.shared.config.keys.is_empty() && !addr.ip().is_loopback() {
            return Err(GatewayError::Unauthenticated(addr));
        }
        let task = tokio::spawn(accept_loop(self, listener, shutdown));
        Ok(Server { addr, task })
    }
}

/// A running gateway (see [`Gateway::serve`]).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the gateway has shut down.
    pub async fn wait(self) -> Result<(), GatewayError> {
        self.task
            .await
            .map_err(|e| GatewayError::Io(std::io::Error::other(e.to_string())))
    }
}

async fn accept_loop(gateway: Gateway, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let shared = gateway.shared.clone();
    let router = gateway.router();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off a little.
                        tracing::warn!(error = %e, "mantissa gateway: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "mantissa gateway: connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    shared.draining.store(true, Ordering::SeqCst);
    drop(listener);
    tracing::info!("mantissa gateway: shutting down, letting open calls finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(shared.config.shutdown_grace) => {
            tracing::warn!("mantissa gateway: grace period over, closing the calls still open");
        }
    }
}

type Shared2 = State<Arc<Shared>>;

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The key of a call, if keys are configured.
fn authenticate<'a>(shared: &'a Shared, headers: &HeaderMap) -> Result<Option<&'a ClientKey>, ApiError> {
    let keys = &shared.config.keys;
    if keys.is_empty() {
        return Ok(None);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("missing bearer key: send `Authorization: Bearer <key>`"))?;
    keys.find(presented)
        .map(Some)
        .ok_or_else(|| ApiError::unauthorized("unknown bearer key"))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if valid_name(s.trim()) => Ok(Some(s.trim())),
            _ => Err(ApiError::bad_request(
                name,
                format!("`{name}` must be 1 to 128 characters of letters, digits and `-_.:/`"),
            )),
        },
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Reads the body, up to the limit.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(1024).min(limit));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("body", "the request body could not be read"))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn chat(State(shared): Shared2, headers: HeaderMap, body: Body) -> Response {
    match chat_inner(&shared, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), code = ?e.code, message = %e.message, "mantissa gateway: call failed");
            } else {
                tracing::debug!(status = e.status.as_u16(), code = ?e.code, "mantissa gateway: call refused");
            }
            e.into_response()
        }
    }
}

async fn chat_inner(shared: &Arc<Shared>, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let permit = shared
        .limit
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded(shared.config.retry_after))?;
    let deadline = tokio::time::Instant::now() + shared.config.total_timeout;
    let key = authenticate(shared, headers)?;
    let body = read_body(body, headers, shared.config.max_body_bytes).await?;
    let chat = request::parse(&body)?;

    let agent = match header_str(headers, AGENT_HEADER)? {
        Some(a) => AgentName::new(a),
        None => key
            .and_then(|k| k.default_agent.clone())
            .unwrap_or_else(|| AgentName::new(DEFAULT_AGENT)),
    };
    if let Some(k) = key {
        if !k.allows(&agent) {
            return Err(ApiError::forbidden(format!(
                "the key `{}` may not act as the agent `{agent}`",
                k.name
            )));
        }
    }
    let session = match header_str(headers, SESSION_HEADER)? {
        Some(s) => SessionId::new(s),
        None => match &chat.user {
            Some(u) => SessionId::new(u),
            None => SessionId::new(format!(
                "gw-{:x}-{}",
                response::unix_secs(),
                NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
            )),
        },
    };
    let target = shared
        .targets
        .get(chat.model.as_str())
        .cloned()
        .ok_or_else(|| ApiError::model_not_found(&chat.model))?;

    let stream = chat.params.stream;
    let include_usage = chat.include_usage;
    let mut req = LlmRequest::new(session.clone(), agent.clone(), chat.messages);
    req.tools = chat.tools.into();
    req.params = chat.params;
    match target {
        Target::Auto => {}
        Target::Tier(t) => req.tier = Some(t),
        Target::Model(m) => req.model = Some(m),
    }
    let service = match shared.services.get(&agent) {
        Some(s) => s.clone(),
        None => shared.stack.llm(agent),
    };
    let resp = match tokio::time::timeout_at(deadline, service.oneshot(req)).await {
        Err(_) => return Err(ApiError::gateway_timeout()),
        Ok(Err(e)) => return Err(ApiError::from_stack(&e)),
        Ok(Ok(resp)) => resp,
    };

    let mut out_headers = HeaderMap::with_capacity(6);
    let tier = resp.routed().map(|r| r.tier.clone());
    if let Some(t) = tier.as_ref().and_then(|t| HeaderValue::from_str(t.as_str()).ok()) {
        out_headers.insert(TIER_HEADER, t);
    }
    if let Ok(m) = HeaderValue::from_str(resp.model.as_str()) {
        out_headers.insert(MODEL_HEADER, m);
    }
    let reset = match resp.extensions.get::<ContextReset>() {
        Some(r) => HeaderValue::from_str(&format!("{}; strategy={}", r.reason, r.strategy))
            .unwrap_or(HeaderValue::from_static("reset")),
        None => HeaderValue::from_static("none"),
    };
    out_headers.insert(RESET_HEADER, reset);
    if let Ok(s) = HeaderValue::from_str(session.as_str()) {
        out_headers.insert(SESSION_HEADER, s);
    }

    if stream {
        out_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        out_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let events = response::sse_body(resp, include_usage, deadline).map(move |item| {
            // The permit is held until the stream ends or the client leaves.
            let _held = &permit;
            item
        });
        Ok((StatusCode::OK, out_headers, Body::from_stream(events)).into_response())
    } else {
        let body = match tokio::time::timeout_at(deadline, response::completion_body(resp)).await {
            Err(_) => return Err(ApiError::gateway_timeout()),
            Ok(body) => body?,
        };
        drop(permit);
        out_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok((StatusCode::OK, out_headers, body).into_response())
    }
}

async fn models(State(shared): Shared2, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&shared, &headers) {
        return e.into_response();
    }
    json_response(StatusCode::OK, shared.models_body.clone())
}

async fn metrics(State(shared): Shared2) -> Response {
    match shared.stack.exporter() {
        Some(handle) => {
            let mut resp = handle.render().into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(mantissa::prometheus::CONTENT_TYPE),
            );
            resp
        }
        None => json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"metrics are not installed (no exporter: [metrics] install = false)","type":"invalid_request_error","param":null,"code":"metrics_disabled"}}"#,
        ),
    }
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

async fn readyz(State(shared): Shared2) -> Response {
    if shared.draining.load(Ordering::SeqCst) {
        return ApiError::shutting_down().into_response();
    }
    let snapshot = shared.stack.router().snapshot();
    let ready: HashSet<&str> = snapshot
        .iter()
        .filter(|m| m.state != ModelState::CooledDown)
        .map(|m| m.model.as_str())
        .collect();
    if ready.is_empty() && !snapshot.is_empty() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"unavailable","reason":"every model is cooled down"}"#,
        );
    }
    json_response(StatusCode::OK, r#"{"status":"ready"}"#)
}

async fn fallback(uri: http::Uri) -> Response {
    ApiError::not_found(uri.path()).into_response()
}
