//! [`RedisConfig`]: where Redis is and how long a call may wait for it.

use std::time::Duration;

/// Where the shared state lives and how the backends treat Redis.
///
/// ```
/// use std::time::Duration;
/// use mantissa_redis::RedisConfig;
///
/// // Defaults: 50 ms per Redis operation, keys under `mantissa:`.
/// let config = RedisConfig::new("redis://127.0.0.1:6379/");
/// assert_eq!(config.get_timeout(), Duration::from_millis(50));
///
/// // Customised: a tighter timeout and a prefix per deployment.
/// let config = RedisConfig::new("redis://10.0.0.5:6379/2")
///     .timeout(Duration::from_millis(20))
///     .prefix("mantissa-prod");
/// assert_eq!(config.key_prefix(), "mantissa-prod");
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) session_ttl: Duration,
    pub(crate) max_session_bytes: usize,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("session_ttl", &self.session_ttl)
            .field("max_session_bytes", &self.max_session_bytes)
            .finish()
    }
}

impl RedisConfig {
    /// A configuration for the Redis server at `url`
    /// (`redis://[:password@]host:port[/db]`), with the defaults below.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "mantissa".to_owned(),
            timeout: Duration::from_millis(50),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            session_ttl: Duration::from_secs(3600),
            max_session_bytes: 1 << 20,
        }
    }

    /// The prefix of every key and channel (`{prefix}:session:{id}`, …), so
    /// several deployments can share one Redis. Defaults to `mantissa`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest a call waits for one Redis operation; past it the call
    /// goes on with local state and the backend backs off. Defaults to 50 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The first and the longest pause before Redis is tried again after a
    /// failure (doubled per failure in a row, jittered). While paused, calls
    /// do not wait for Redis at all. Defaults to 100 ms and 5 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// How long an idle session's key lives (`PX`, refreshed by every
    /// write). Defaults to 1 hour, the in-memory store's idle TTL.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// The largest serialized session written to Redis; a larger one stays
    /// on its replica (counted as `oversize`). Defaults to 1 MiB.
    pub fn max_session_bytes(mut self, bytes: usize) -> Self {
        self.max_session_bytes = bytes;
        self
    }

    /// The configured timeout per operation.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }
}
