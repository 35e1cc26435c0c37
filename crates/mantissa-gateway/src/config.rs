//! The `[gateway]` table of the stack's TOML file, and its client keys.

use std::net::SocketAddr;
use std::time::Duration;

use mantissa::StackConfig;
use mantissa::core::{AgentName, ConfigError};
use serde::Deserialize;

use crate::error::GatewayError;
use crate::keys::{ClientKey, ClientKeys, KeyDigest};

/// Where the gateway listens unless `listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";

/// `[gateway]`: every field is optional.
///
/// ```toml
/// [gateway]
/// listen = "127.0.0.1:4000"
/// max_body_bytes = 4194304        # 413 above this
/// header_timeout_secs = 10        # time to read a request's headers
/// total_timeout_secs = 600        # a whole call, to the last byte of a stream
/// max_concurrency = 1024          # calls in flight; more are shed
/// retry_after_secs = 1            # Retry-After of a shed call's 503
/// shutdown_grace_secs = 30        # how long open streams may finish
///
/// [[gateway.keys]]
/// name = "trading-desk"           # shown in logs instead of the key
/// hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
/// agents = ["trader", "manager"]  # the key may only act as these agents
/// default_agent = "trader"        # when no x-mantissa-agent header
///
/// [[gateway.keys]]
/// env = "MANTISSA_KEY_RESEARCH"   # the key is read from this variable
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// The listen address. Defaults to [`DEFAULT_LISTEN`].
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The largest request body in bytes. Defaults to 4 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Time allowed to read a request's headers. Defaults to 10 s.
    #[serde(default)]
    pub header_timeout_secs: Option<f64>,
    /// Time allowed for a whole call, to the last chunk of a stream.
    /// Defaults to 600 s.
    #[serde(default)]
    pub total_timeout_secs: Option<f64>,
    /// Calls served at once; more are shed with 503. Defaults to 1024.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// The `Retry-After` of a shed call, in seconds. Defaults to 1.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// How long open calls may finish at shutdown. Defaults to 30 s.
    #[serde(default)]
    pub shutdown_grace_secs: Option<f64>,
    /// Client keys. None: no authentication, and loopback addresses only.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// `[[gateway.keys]]`: one client bearer key, given by its hash or by the
/// environment variable that holds it (never in plain text in the file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for logs. Defaults to `key-N` (its position, from 1).
    #[serde(default)]
    pub name: Option<String>,
    /// `sha256:` and the 64 hex digits of the key's SHA-256.
    #[serde(default)]
    pub hash: Option<String>,
    /// The environment variable holding the key.
    #[serde(default, alias = "key_env")]
    pub env: Option<String>,
    /// The agents the key may act as. Empty: any agent.
    #[serde(default)]
    pub agents: Vec<AgentName>,
    /// The agent of calls without an `x-mantissa-agent` header.
    #[serde(default)]
    pub default_agent: Option<AgentName>,
}

/// The gateway's settings, resolved with their defaults.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The listen address.
    pub listen: SocketAddr,
    /// The largest request body in bytes.
    pub max_body_bytes: usize,
    /// Time allowed to read a request's headers.
    pub header_timeout: Duration,
    /// Time allowed for a whole call.
    pub total_timeout: Duration,
    /// Calls served at once.
    pub max_concurrency: usize,
    /// The `Retry-After` of a shed call.
    pub retry_after: Duration,
    /// How long open calls may finish at shutdown.
    pub shutdown_grace: Duration,
    /// The client keys.
    pub keys: ClientKeys,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            max_body_bytes: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(600),
            max_concurrency: 1024,
            retry_after: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            keys: ClientKeys::default(),
        }
    }
}

fn secs(field: &str, v: f64) -> Result<Duration, ConfigError> {
    match Duration::try_from_secs_f64(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::new(
            field,
            format!("must be a positive number of seconds, got {v}"),
        )),
    }
}

impl GatewaySection {
    /// Resolves defaults and reads key variables with `lookup`
    /// (`std::env::var` in [`Gateway::from_toml`](crate::Gateway::from_toml)).
    pub fn resolve(self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<GatewayConfig, ConfigError> {
        let mut c = GatewayConfig::default();
        if let Some(addr) = self.listen {
            c.listen = addr;
        }
        if let Some(n) = self.max_body_bytes {
            if n == 0 {
                return Err(ConfigError::new("gateway.max_body_bytes", "must be more than 0"));
            }
            c.max_body_bytes = n;
        }
        if let Some(s) = self.header_timeout_secs {
            c.header_timeout = secs("gateway.header_timeout_secs", s)?;
        }
        if let Some(s) = self.total_timeout_secs {
            c.total_timeout = secs("gateway.total_timeout_secs", s)?;
        }
        if let Some(s) = self.shutdown_grace_secs {
            c.shutdown_grace = secs("gateway.shutdown_grace_secs", s)?;
        }
        if let Some(n) = self.max_concurrency {
            if n == 0 {
                return Err(ConfigError::new("gateway.max_concurrency", "must be more than 0"));
            }
            c.max_concurrency = n;
        }
        if let Some(s) = self.retry_after_secs {
            c.retry_after = Duration::from_secs(s);
        }
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.into_iter().enumerate() {
            let field = format!("gateway.keys[{i}]");
            let digest = match (&k.hash, &k.env) {
                (Some(hash), None) => KeyDigest::parse(hash)
                    .map_err(|reason| ConfigError::new(format!("{field}.hash"), reason))?,
                (None, Some(var)) => {
                    let key = lookup(var).map(|v| v.trim().to_owned()).unwrap_or_default();
                    if key.is_empty() {
                        return Err(ConfigError::new(
                            format!("{field}.env"),
                            format!("the environment variable `{var}` is not set or empty"),
                        ));
                    }
                    KeyDigest::of(&key)
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(field, "give `hash` or `env`, not both"));
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        field,
                        "give `hash = \"sha256:…\"` or `env = \"VARIABLE\"` (keys are never written in plain text)",
                    ));
                }
            };
            if let (Some(default), false) = (&k.default_agent, k.agents.is_empty()) {
                if !k.agents.contains(default) {
                    return Err(ConfigError::new(
                        format!("{field}.default_agent"),
                        format!("`{default}` is not one of the key's `agents`"),
                    ));
                }
            }
            keys.push(ClientKey {
                name: k.name.unwrap_or_else(|| format!("key-{}", i + 1)),
                digest,
                agents: k.agents,
                default_agent: k.default_agent,
            });
        }
        c.keys = ClientKeys::new(keys);
        Ok(c)
    }
}

/// The file: the `[gateway]` table and the stack's own configuration.
#[derive(Debug, Clone)]
pub struct GatewayFile {
    /// `[gateway]`.
    pub gateway: GatewaySection,
    /// Everything else: [`AgentStack`](mantissa::AgentStack)'s configuration.
    pub stack: StackConfig,
}

impl GatewayFile {
    /// Splits the `[gateway]` table off the text and parses both parts; errors
    /// name the field.
    pub fn from_toml(text: &str) -> Result<Self, GatewayError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|s| format!("at byte {}", s.start))
                .unwrap_or_else(|| "config".to_owned());
            ConfigError::new(field, e.message().to_owned())
        })?;
        let gateway = match table.remove("gateway") {
            Some(value) => value
                .try_into::<GatewaySection>()
                .map_err(|e| ConfigError::new("gateway", e.message().to_owned()))?,
            None => GatewaySection::default(),
        };
        let stack = toml::Value::Table(table)
            .try_into::<StackConfig>()
            .map_err(|e| ConfigError::new("config", e.message().to_owned()))?;
        Ok(Self { gateway, stack })
    }
}
