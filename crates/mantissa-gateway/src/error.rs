//! Errors: the gateway's own ([`GatewayError`]) and those it answers with, in
//! OpenAI's error JSON ([`ApiError`]).

use std::error::Error as StdError;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use mantissa::core::{BoxError, ConfigError, FailureClass, LlmError, classify_box};
use mantissa::reset::ContextBudgetExceeded;
use mantissa::triage::{AllModelsFailed, UnknownModel, UnknownTier};

/// Why a gateway could not be built or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A configuration value is wrong (names the field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stack could not be built.
    #[error("stack: {0}")]
    Stack(#[from] mantissa::BuildError),
    /// The metrics recorder could not be installed (`[metrics]`).
    #[error("metrics: {0}")]
    Metrics(#[from] mantissa::prometheus::InstallError),
    /// The configuration file could not be read.
    #[error("reading `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No client key is configured and the address is not loopback.
    #[error(
        "refusing to listen on {0} without client keys: configure [[gateway.keys]] or listen on a loopback address"
    )]
    Unauthenticated(std::net::SocketAddr),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// An error answered to the client: a status and OpenAI's
/// `{"error": {"message", "type", "param", "code"}}`.
///
/// Messages are written by the gateway (never copied from the upstream), so
/// they carry no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `error.message`.
    pub message: String,
    /// `error.type`.
    pub kind: &'static str,
    /// `error.param`: the request field at fault.
    pub param: Option<String>,
    /// `error.code`.
    pub code: Option<&'static str>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl StdError for ApiError {}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400 naming the field `param`.
    pub fn bad_request(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = Some(param.into());
        e
    }

    /// 401: no key, or an unknown one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message).code("invalid_api_key")
    }

    /// 403: the key may not act as this agent.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", message).code("agent_not_allowed")
    }

    /// 404: an unknown model or tier.
    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model `{model}` does not exist: use `auto`, a tier name or a configured model id (GET /v1/models)"
            ),
        )
        .code("model_not_found");
        e.param = Some("model".to_owned());
        e
    }

    /// 404: an unknown path.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("unknown path `{path}`"),
        )
        .code("not_found")
    }

    /// 413: the body is larger than the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than {limit} bytes"),
        )
        .code("request_too_large")
    }

    /// 503 with `Retry-After`: too many calls in flight.
    pub fn overloaded(retry_after: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the gateway is at its concurrency limit; retry later",
        )
        .code("overloaded");
        e.retry_after = Some(retry_after.as_secs().max(1));
        e
    }

    /// 504: the gateway's total timeout passed.
    pub fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "the call took longer than the gateway's total timeout",
        )
        .code("timeout")
    }

    /// 503: the gateway is shutting down.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the gateway is shutting down",
        )
        .code("shutting_down")
    }

    /// Maps an error of the stack by its failure class.
    pub fn from_stack(err: &BoxError) -> Self {
        let mut current: Option<&(dyn StdError + 'static)> = Some(&**err);
        let mut all_failed = None;
        let mut status = None;
        while let Some(e) = current {
            if let Some(t) = e.downcast_ref::<UnknownTier>() {
                return Self::model_not_found(t.tier.as_str());
            }
            if let Some(m) = e.downcast_ref::<UnknownModel>() {
                return Self::model_not_found(m.model.as_str());
            }
            if e.is::<ContextBudgetExceeded>() {
                return Self::context_length();
            }
            if let Some(a) = e.downcast_ref::<AllModelsFailed>() {
                all_failed.get_or_insert(a);
            }
            if let Some(l) = e.downcast_ref::<LlmError>() {
                status = status.or(l.status());
            }
            current = e.source();
        }
        let summary = all_failed.map(|a| a.to_string());
        if let Some(a) = all_failed {
            if a.tried.is_empty() {
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    format!("no model can serve the tier now: {}", summary.unwrap_or_default()),
                )
                .code("tier_unavailable");
            }
        }
        let detail = |what: &str| match &summary {
            Some(s) => format!("{what}: {s}"),
            None => what.to_owned(),
        };
        match classify_box(err) {
            FailureClass::RateLimited { retry_after } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    detail("every model of the tier is rate limited"),
                )
                .code("rate_limit_exceeded");
                e.retry_after = retry_after.map(|d| d.as_secs_f64().ceil() as u64);
                e
            }
            FailureClass::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                detail("the upstream timed out"),
            )
            .code("upstream_timeout"),
            FailureClass::UpstreamServer | FailureClass::Transport | FailureClass::InvalidResponse => {
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    detail("the upstream failed"),
                )
                .code("upstream_error")
            }
            FailureClass::ContextLengthExceeded => Self::context_length(),
            FailureClass::ClientError => match status {
                Some(401 | 403) => Self::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    "the upstream refused the gateway's credentials",
                )
                .code("upstream_auth"),
                Some(s) => Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("the upstream rejected the request (status {s})"),
                )
                .code("upstream_rejected"),
                None => Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "the upstream rejected the request",
                ),
            },
            FailureClass::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the call was cancelled",
            )
            .code("cancelled"),
            FailureClass::ToolError | FailureClass::Other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                detail("the stack failed"),
            )
            .code("internal_error"),
        }
    }

    fn context_length() -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the messages do not fit the model's context window",
        )
        .code("context_length_exceeded");
        e.param = Some("messages".to_owned());
        e
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
