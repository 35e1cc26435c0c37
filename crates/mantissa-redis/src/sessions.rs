//! [`RedisSessions`]: the reset layer's sessions shared between replicas
//! through Redis, behind [`MemorySessionStore`](mantissa_reset::MemorySessionStore)'s
//! [`SharedSessions`] hook.
//!
//! A session is a hash `{prefix}:session:{id}` with its version `v` and its
//! wire form `s` (JSON, about 0.5 KB without a remembered reset; a
//! remembered reset adds its compacted history). Every write is one script
//! call (`EVALSHA`) that compares versions and writes `HSET` + `PEXPIRE`
//! atomically, so the key's TTL is refreshed by every write and an idle
//! session expires on its own; a state larger than
//! [`RedisConfig::max_session_bytes`] is not written (it stays on its
//! replica, counted as `oversize`).
//!
//! The awaited swap (the one round trip of a call) is bounded by
//! [`RedisConfig::timeout`]; writes behind are spawned tasks bounded the
//! same way. Failures are counted in
//! `mantissa_redis_errors_total{component="sessions"}` and logged once;
//! while the link backs off, nothing waits for Redis.

use std::sync::Arc;

use mantissa_core::SessionId;
use mantissa_reset::StoreError;
use mantissa_reset::store::{SharedSessions, SwapFuture, Swapped};
use metrics::Counter;

use crate::catalog;
use crate::config::RedisConfig;
use crate::error::Error;
use crate::link::Link;

/// The swap script: refuses (and returns the shared copy) when the stored
/// version is above the base; otherwise writes the state one above the
/// larger of the two, and refreshes the TTL.
const SWAP_SCRIPT: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local base = tonumber(ARGV[1])
if v > base then
  return {v, redis.call('HGET', KEYS[1], 's')}
end
local nv = math.max(v, base) + 1
redis.call('HSET', KEYS[1], 'v', nv, 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {nv, false}
";

#[derive(Debug)]
struct Core {
    link: Link,
    prefix: String,
    ttl_ms: u64,
    max_bytes: usize,
    script: redis::Script,
    oversize: Counter,
    conflicts: Counter,
    runtime: tokio::runtime::Handle,
}

impl Core {
    fn key(&self, session: &SessionId) -> String {
        format!("{}:session:{}", self.prefix, session.as_str())
    }

    async fn swap(&self, key: String, base: u64, state: Vec<u8>) -> Result<Swapped, StoreError> {
        if state.len() > self.max_bytes {
            self.oversize.increment(1);
            return Err(StoreError::new(
                "session state above the size shared through redis",
            ));
        }
        let script = self.script.clone();
        let ttl = self.ttl_ms;
        let answer = self
            .link
            .run(|mut c| async move {
                script
                    .key(&key)
                    .arg(base)
                    .arg(&state)
                    .arg(ttl)
                    .invoke_async::<(u64, Option<Vec<u8>>)>(&mut c)
                    .await
            })
            .await;
        match answer {
            Ok((_, None)) => Ok(Swapped::Written),
            Ok((version, Some(state))) => Ok(Swapped::Newer { version, state }),
            Err(f) => Err(StoreError::new(format!("redis {}", f.as_str()))),
        }
    }
}

/// Shares a [`MemorySessionStore`](mantissa_reset::MemorySessionStore)'s
/// sessions between replicas through Redis (see the [module docs](self)).
///
/// ```no_run
/// use std::sync::Arc;
/// use mantissa_redis::{RedisConfig, RedisSessions};
/// use mantissa_reset::MemorySessionStore;
///
/// # async fn run() -> Result<(), mantissa_redis::Error> {
/// let shared = RedisSessions::new(&RedisConfig::new("redis://127.0.0.1:6379/"))?;
/// let store = MemorySessionStore::builder().shared(Arc::new(shared)).build();
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisSessions {
    core: Arc<Core>,
}

impl RedisSessions {
    /// Connects lazily to Redis (a Redis that is down is a degraded state,
    /// not an error). Must be called inside a tokio runtime.
    pub fn new(config: &RedisConfig) -> Result<Self, Error> {
        let link = Link::new(config, "sessions")?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let counter = |kind: &'static str| {
            metrics::counter!(catalog::REDIS_ERRORS_TOTAL,
                catalog::COMPONENT => "sessions", catalog::ERROR_TYPE => kind)
        };
        Ok(Self {
            core: Arc::new(Core {
                link,
                prefix: config.prefix.clone(),
                ttl_ms: u64::try_from(config.session_ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
                max_bytes: config.max_session_bytes,
                script: redis::Script::new(SWAP_SCRIPT),
                oversize: counter("oversize"),
                conflicts: counter("conflict"),
                runtime,
            }),
        })
    }
}

impl SharedSessions for RedisSessions {
    fn swap(&self, session: &SessionId, base: u64, state: Vec<u8>) -> SwapFuture {
        let core = self.core.clone();
        let key = core.key(session);
        Box::pin(async move { core.swap(key, base, state).await })
    }

    fn swap_behind(&self, session: &SessionId, base: u64, state: Vec<u8>) {
        let core = self.core.clone();
        let key = core.key(session);
        self.core.runtime.spawn(async move {
            if let Ok(Swapped::Newer { .. }) = core.swap(key, base, state).await {
                // A newer state is there: ours is dropped (see the module docs).
                core.conflicts.increment(1);
            }
        });
    }

    fn remove(&self, session: &SessionId) {
        let core = self.core.clone();
        let key = core.key(session);
        self.core.runtime.spawn(async move {
            let _ = core
                .link
                .run(|mut c| async move { redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await })
                .await;
        });
    }
}
