//! One component's connection to Redis, and what happens when Redis fails:
//! every operation is bounded by the configured timeout; after a failure
//! the link backs off (calls do not wait for Redis at all meanwhile), counts
//! the failure and logs the change of state once.

use std::future::Future;
use std::time::Duration;

use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::catalog;
use crate::config::RedisConfig;
use crate::error::Error;

/// Why an operation did not reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No answer within the timeout.
    Timeout,
    /// Redis refused or the connection failed.
    Unavailable,
    /// The link is backing off after an earlier failure: not tried.
    Backoff,
}

impl Failure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unavailable => "unavailable",
            Failure::Backoff => "backoff",
        }
    }
}

#[derive(Debug)]
struct State {
    up: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// A component's Redis connection with its failure handling.
pub(crate) struct Link {
    pub(crate) client: redis::Client,
    conn: ConnectionManager,
    component: &'static str,
    timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    state: Mutex<State>,
    up_gauge: Gauge,
    timeouts: Counter,
    unavailable: Counter,
    backoffs: Counter,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("component", &self.component)
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A lazy link: nothing is sent before the first operation, so a Redis
    /// that is down at start is a degraded state, not an error. Must be
    /// called inside a tokio runtime.
    pub(crate) fn new(config: &RedisConfig, component: &'static str) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let client = redis::Client::open(config.url.as_str()).map_err(|e| Error::InvalidUrl {
            kind: format!("{:?}", e.kind()),
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(1))))
            .set_response_timeout(Some(config.timeout.max(Duration::from_millis(1))))
            .set_number_of_retries(1)
            .set_min_delay(config.backoff_min)
            .set_max_delay(config.backoff_max);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config).map_err(|e| {
            Error::InvalidUrl {
                kind: format!("{:?}", e.kind()),
            }
        })?;
        let counter = |kind: &'static str| {
            metrics::counter!(catalog::REDIS_ERRORS_TOTAL,
                catalog::COMPONENT => component, catalog::ERROR_TYPE => kind)
        };
        let up_gauge = metrics::gauge!(catalog::REDIS_UP, catalog::COMPONENT => component);
        up_gauge.set(1.0);
        Ok(Self {
            client,
            conn,
            component,
            timeout: config.timeout,
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max,
            state: Mutex::new(State {
                up: true,
                failures: 0,
                retry_at: None,
            }),
            up_gauge,
            timeouts: counter("timeout"),
            unavailable: counter("unavailable"),
            backoffs: counter("backoff"),
        })
    }

    /// The per-operation timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one operation on the shared connection, bounded by the timeout;
    /// while backing off it is not tried at all.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.may_try() {
            self.backoffs.increment(1);
            return Err(Failure::Backoff);
        }
        match tokio::time::timeout(self.timeout, op(self.conn.clone())).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(Failure::Unavailable, &e.kind());
                Err(Failure::Unavailable)
            }
            Err(_) => {
                self.failed(Failure::Timeout, &"no answer within the timeout");
                Err(Failure::Timeout)
            }
        }
    }

    /// The pause after a failure: the minimum times `factor`, capped at the
    /// maximum, jittered down by up to half (so replicas do not retry in
    /// lockstep).
    pub(crate) fn backoff(&self, factor: u32) -> Duration {
        let pause = self.backoff_min.saturating_mul(factor).min(self.backoff_max);
        pause.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Whether an operation may be sent now (not backing off).
    pub(crate) fn may_try(&self) -> bool {
        let s = self.state.lock();
        s.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Records a success: the first after failures logs the recovery once.
    pub(crate) fn succeeded(&self) {
        let mut s = self.state.lock();
        s.failures = 0;
        s.retry_at = None;
        if !s.up {
            s.up = true;
            drop(s);
            self.up_gauge.set(1.0);
            tracing::info!(
                target: "mantissa_redis",
                component = self.component,
                "redis reachable again; sharing resumed"
            );
        }
    }

    /// Records a failure: counted, the next try backed off, and the first
    /// failure after a success logged once (no per-call logs).
    pub(crate) fn failed(&self, failure: Failure, detail: &dyn std::fmt::Debug) {
        match failure {
            Failure::Timeout => self.timeouts.increment(1),
            Failure::Unavailable => self.unavailable.increment(1),
            Failure::Backoff => self.backoffs.increment(1),
        }
        let mut s = self.state.lock();
        s.failures = s.failures.saturating_add(1);
        let exp = 2u32.saturating_pow(s.failures.saturating_sub(1).min(16));
        let pause = self.backoff(exp);
        s.retry_at = Some(Instant::now() + pause);
        if s.up {
            s.up = false;
            drop(s);
            self.up_gauge.set(0.0);
            tracing::warn!(
                target: "mantissa_redis",
                component = self.component,
                error.type = failure.as_str(),
                detail = ?detail,
                "redis unavailable; serving on local state until it is back"
            );
        }
    }
}
