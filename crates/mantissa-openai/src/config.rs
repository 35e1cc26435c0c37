//! Client configuration: endpoint, credentials, models, headers, timeouts, limits.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use mantissa_core::ModelId;

use crate::error::BuildError;

/// OpenAI's public endpoint, the default base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// An API key. Its `Debug` and `Display` print `[REDACTED]`; the only way to
/// read it is [`ApiKey::expose_secret`].
///
/// ```
/// use mantissa_openai::ApiKey;
/// let key = ApiKey::new("sk-secret");
/// assert_eq!(format!("{key:?} {key}"), "ApiKey([REDACTED]) [REDACTED]");
/// assert_eq!(key.expose_secret(), "sk-secret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(Arc::from(key.as_ref()))
    }

    /// The key itself. Do not log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<&str> for ApiKey {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for ApiKey {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

/// The client's timeouts. `None` disables one.
///
/// Besides configuring the client with them, a caller (or a router with a
/// latency budget) can put a `Timeouts` in
/// [`LlmRequest::extensions`](mantissa_core::LlmRequest::extensions) to
/// override `total`, `first_chunk` and `idle` for one call; `connect` belongs
/// to the connection pool and is not overridden.
///
/// ```
/// use std::time::Duration;
/// use mantissa_core::{LlmRequest, Message};
/// use mantissa_openai::Timeouts;
///
/// let mut req = LlmRequest::new("s1", "agent", vec![Message::user("hi")]);
/// req.extensions.insert(Timeouts { total: Some(Duration::from_secs(5)), ..Timeouts::default() });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the connection (TCP and TLS).
    pub connect: Option<Duration>,
    /// The whole call: sending, waiting, and reading the body — for a stream,
    /// to its last chunk.
    pub total: Option<Duration>,
    /// Streams only: from sending the request to the first chunk with content
    /// (text, a tool-call piece, a finish reason or usage).
    pub first_chunk: Option<Duration>,
    /// The longest silence between two reads of a response body (any bytes,
    /// SSE comments included, count as life).
    pub idle: Option<Duration>,
}

impl Default for Timeouts {
    /// Connect 10 s, total 10 min, first chunk 2 min, idle 1 min.
    fn default() -> Self {
        Self {
            connect: Some(Duration::from_secs(10)),
            total: Some(Duration::from_secs(600)),
            first_chunk: Some(Duration::from_secs(120)),
            idle: Some(Duration::from_secs(60)),
        }
    }
}

/// Settings for one model name as callers use it.
///
/// ```
/// use mantissa_openai::ModelSettings;
/// let settings = ModelSettings::new()
///     .upstream("meta-llama/Llama-3.1-8B-Instruct")
///     .extra("top_k", 40)
///     .max_tokens_field("max_completion_tokens");
/// assert_eq!(settings.upstream_name(), Some("meta-llama/Llama-3.1-8B-Instruct"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSettings {
    upstream: Option<String>,
    extra: serde_json::Map<String, serde_json::Value>,
    max_tokens_field: Option<String>,
}

impl ModelSettings {
    /// No alias, no extra parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model name sent upstream instead of the caller's name (an alias).
    /// Defaults to the caller's name.
    pub fn upstream(mut self, name: impl Into<String>) -> Self {
        self.upstream = Some(name.into());
        self
    }

    /// Adds a body parameter sent with every request for this model (for
    /// example `top_k` for vLLM, `reasoning_effort` for OpenAI). A request's own
    /// `params.extra` wins on a conflict. Defaults to none.
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The body field that carries `params.max_tokens`. Newer OpenAI models take
    /// `max_completion_tokens`. Defaults to `max_tokens`.
    pub fn max_tokens_field(mut self, field: impl Into<String>) -> Self {
        self.max_tokens_field = Some(field.into());
        self
    }

    /// The upstream name, if this is an alias.
    pub fn upstream_name(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    pub(crate) fn extra_params(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.extra
    }

    pub(crate) fn max_tokens_key(&self) -> Option<&str> {
        self.max_tokens_field.as_deref()
    }
}

/// Default cap on a response body (16 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default cap on the part of an error body that is read and kept (64 KiB).
pub const DEFAULT_MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Configuration of an [`OpenAiClient`](crate::OpenAiClient).
///
/// Setters take and return `self`; those that validate return
/// `Result<Self, BuildError>`. The key is kept as an [`ApiKey`], so the
/// configuration's `Debug` output does not show it.
///
/// ```
/// use std::time::Duration;
/// use mantissa_openai::{ModelSettings, OpenAiConfig};
///
/// let config = OpenAiConfig::new("http://localhost:8000/v1")
///     .api_key("sk-local")
///     .default_model("llama")
///     .model("llama", ModelSettings::new().upstream("meta-llama/Llama-3.1-8B-Instruct"))
///     .idle_timeout(Duration::from_secs(20))
///     .total_timeout(None)
///     .header("x-team", "research")?;
/// assert!(!format!("{config:?}").contains("sk-local"));
/// # Ok::<(), mantissa_openai::BuildError>(())
/// ```
#[derive(Clone)]
pub struct OpenAiConfig {
    pub(crate) base_url: String,
    pub(crate) api_key: Option<ApiKey>,
    pub(crate) organization: Option<String>,
    pub(crate) project: Option<String>,
    pub(crate) default_model: Option<ModelId>,
    pub(crate) models: HashMap<ModelId, ModelSettings>,
    pub(crate) headers: HeaderMap,
    pub(crate) timeouts: Timeouts,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_error_body_bytes: usize,
    pub(crate) max_line_bytes: usize,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Extra headers may carry credentials too: print their names only.
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("default_model", &self.default_model)
            .field("models", &self.models)
            .field("headers", &header_names)
            .field("timeouts", &self.timeouts)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_error_body_bytes", &self.max_error_body_bytes)
            .field("max_line_bytes", &self.max_line_bytes)
            .finish()
    }
}

impl Default for OpenAiConfig {
    /// [`OpenAiConfig::openai`].
    fn default() -> Self {
        Self::openai()
    }
}

impl OpenAiConfig {
    /// A configuration for any OpenAI-compatible server at `base_url` (the URL
    /// that `/chat/completions` is appended to, for example
    /// `http://localhost:11434/v1` for Ollama). No key, no default model,
    /// [`Timeouts::default`], a 16 MiB body cap and a 1 MiB SSE line cap.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            organization: None,
            project: None,
            default_model: None,
            models: HashMap::new(),
            headers: HeaderMap::new(),
            timeouts: Timeouts::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_error_body_bytes: DEFAULT_MAX_ERROR_BODY_BYTES,
            max_line_bytes: crate::sse::DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// OpenAI's public endpoint, [`OPENAI_BASE_URL`].
    pub fn openai() -> Self {
        Self::new(OPENAI_BASE_URL)
    }

    /// Reads `OPENAI_API_KEY`, `OPENAI_BASE_URL` (else [`OPENAI_BASE_URL`]),
    /// `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` from the environment. Unset or
    /// empty variables are skipped, so a keyless local server works too.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`OpenAiConfig::from_env`] with a custom variable lookup (for tests, or
    /// a secrets manager).
    ///
    /// ```
    /// use mantissa_openai::OpenAiConfig;
    /// let config = OpenAiConfig::from_lookup(|name| match name {
    ///     "OPENAI_BASE_URL" => Some("http://localhost:8000/v1".to_owned()),
    ///     _ => None,
    /// });
    /// assert_eq!(config.base_url(), "http://localhost:8000/v1");
    /// assert!(!config.has_api_key());
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut config = Self::new(get("OPENAI_BASE_URL").unwrap_or_else(|| OPENAI_BASE_URL.to_owned()));
        config.api_key = get("OPENAI_API_KEY").map(ApiKey::from);
        config.organization = get("OPENAI_ORG_ID");
        config.project = get("OPENAI_PROJECT_ID");
        config
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether a key is configured.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The timeouts.
    pub fn get_timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sets the base URL (validated when the client is built).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Sets the API key, sent as `Authorization: Bearer …`. Defaults to none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Reads the API key from the environment variable `var`.
    pub fn api_key_from_env(self, var: &str) -> Result<Self, BuildError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(self.api_key(v.trim())),
            _ => Err(BuildError::MissingEnv(var.to_owned())),
        }
    }

    /// Sets the `OpenAI-Organization` header. Defaults to none.
    pub fn organization(mut self, org: impl Into<String>) -> Self {
        self.organization = Some(org.into());
        self
    }

    /// Sets the `OpenAI-Project` header. Defaults to none.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The model used when a request names none. Defaults to none (a request
    /// without a model is then a client error).
    pub fn default_model(mut self, model: impl Into<ModelId>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Settings for the model a caller names `name`. Defaults to none.
    pub fn model(mut self, name: impl Into<ModelId>, settings: ModelSettings) -> Self {
        self.models.insert(name.into(), settings);
        self
    }

    /// Adds a header sent with every request. Defaults to none.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, BuildError> {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| BuildError::InvalidHeader {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|e| BuildError::InvalidHeader {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        // Extra headers often carry credentials (api-key, x-api-key): keep them
        // out of any Debug output of the request.
        value.set_sensitive(true);
        self.headers.append(header, value);
        Ok(self)
    }

    /// Connect timeout. Defaults to 10 s.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeouts.connect = timeout.into();
        self
    }

    /// Total timeout of a call (for a stream, to its end). Defaults to 10 min.
    pub fn total_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeouts.total = timeout.into();
        self
    }

    /// Time from sending a streamed request to its first chunk. Defaults to 2 min.
    pub fn first_chunk_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeouts.first_chunk = timeout.into();
        self
    }

    /// Longest silence between two body reads. Defaults to 1 min.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeouts.idle = timeout.into();
        self
    }

    /// Sets all timeouts at once. Defaults to [`Timeouts::default`].
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Cap on a response body; a larger one is an invalid response. Defaults to 16 MiB.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Cap on how much of an error body is read and kept. Defaults to 64 KiB.
    pub fn max_error_body_bytes(mut self, bytes: usize) -> Self {
        self.max_error_body_bytes = bytes;
        self
    }

    /// Cap on one SSE line and one event of a stream. Defaults to 1 MiB.
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// The model name to send upstream for `model`, and its settings.
    pub(crate) fn resolve<'a>(&'a self, model: &'a str) -> (&'a str, Option<&'a ModelSettings>) {
        match self.models.get(model) {
            Some(settings) => (settings.upstream_name().unwrap_or(model), Some(settings)),
            None => (model, None),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        for (name, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_error_body_bytes", self.max_error_body_bytes),
            ("max_line_bytes", self.max_line_bytes),
        ] {
            if value == 0 {
                return Err(BuildError::Zero(name));
            }
        }
        let t = &self.timeouts;
        for (name, value) in [
            ("connect_timeout", t.connect),
            ("total_timeout", t.total),
            ("first_chunk_timeout", t.first_chunk),
            ("idle_timeout", t.idle),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(BuildError::Zero(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lookup_reads_the_openai_variables() {
        let config = OpenAiConfig::from_lookup(|name| {
            Some(
                match name {
                    "OPENAI_API_KEY" => "sk-from-env",
                    "OPENAI_BASE_URL" => "http://127.0.0.1:9/v1",
                    "OPENAI_ORG_ID" => "org-1",
                    "OPENAI_PROJECT_ID" => " ",
                    _ => return None,
                }
                .to_owned(),
            )
        });
        assert_eq!(config.base_url(), "http://127.0.0.1:9/v1");
        assert_eq!(
            config.api_key.as_ref().map(ApiKey::expose_secret),
            Some("sk-from-env")
        );
        assert_eq!(config.organization.as_deref(), Some("org-1"));
        assert_eq!(config.project, None);
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-from-env"), "{debug}");
        assert!(debug.contains("[REDACTED]"));

        assert!(matches!(
            OpenAiConfig::openai().api_key_from_env("MANTISSA_OPENAI_SURELY_UNSET_VAR"),
            Err(BuildError::MissingEnv(v)) if v == "MANTISSA_OPENAI_SURELY_UNSET_VAR"
        ));
        let config = OpenAiConfig::from_lookup(|_| None);
        assert_eq!(config.base_url(), OPENAI_BASE_URL);
        assert!(!config.has_api_key());
    }

    #[test]
    fn header_values_are_validated_and_hidden() {
        assert!(matches!(
            OpenAiConfig::openai().header("bad name", "v"),
            Err(BuildError::InvalidHeader { .. })
        ));
        assert!(matches!(
            OpenAiConfig::openai().header("x-ok", "line\nbreak"),
            Err(BuildError::InvalidHeader { .. })
        ));
        let config = OpenAiConfig::openai()
            .header("x-api-key", "hidden-value")
            .unwrap();
        assert!(!format!("{config:?}").contains("hidden-value"));
    }

    #[test]
    fn aliases_resolve_and_zero_limits_are_rejected() {
        let config = OpenAiConfig::openai().model("fast", ModelSettings::new().upstream("gpt-4o-mini"));
        assert_eq!(config.resolve("fast").0, "gpt-4o-mini");
        assert_eq!(config.resolve("other").0, "other");
        assert!(matches!(
            OpenAiConfig::openai().max_body_bytes(0).validate(),
            Err(BuildError::Zero("max_body_bytes"))
        ));
        assert!(matches!(
            OpenAiConfig::openai().idle_timeout(Duration::ZERO).validate(),
            Err(BuildError::Zero("idle_timeout"))
        ));
        assert!(OpenAiConfig::openai().validate().is_ok());
    }
}
