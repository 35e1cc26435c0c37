//! [`RedisModelState`]: the router's cooldowns, re-admissions and half-open
//! probe lease shared between replicas through Redis.
//!
//! * A cooldown is a key `{prefix}:model:{id}:cooldown` holding its end
//!   (Unix milliseconds) with a `PX` expiry at that end, and a message on the
//!   channel `{prefix}:models`. Every replica subscribes to the channel and
//!   applies what others publish to its router at once; on (re)connecting it
//!   first reads the cooldown keys of its models, so a replica that starts,
//!   or comes back after Redis was away, skips what is cooled down now.
//! * A re-admission deletes the key and is published the same way.
//! * The probe lease is `SET {prefix}:model:{id}:probe {replica} NX PX
//!   {lease}` in a small script that first checks the cooldown key (a
//!   replica that missed a message learns the cooldown instead of probing).
//!
//! Nothing here is on a call's path: the router calls the
//! [`SharedModelState`] methods, which queue a command for a background task
//! and return. When Redis fails, the router keeps its own state, probe
//! requests are granted locally (each replica probes for itself, as without
//! Redis), the failure is counted (`mantissa_redis_errors_total{component="models"}`)
//! and logged once, and the background tasks reconnect with backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mantissa_core::ModelId;
use mantissa_triage::{RemoteModelState, SharedModelState};
use metrics::Counter;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::catalog;
use crate::config::RedisConfig;
use crate::error::Error;
use crate::link::{Failure, Link};

/// Commands queued for the background writer.
#[derive(Debug)]
enum Command {
    Cooled { model: ModelId, until_ms: u64 },
    Restored { model: ModelId },
    Probe { model: ModelId, lease: Duration },
}

/// Queued commands before new ones are dropped (and counted).
const QUEUE: usize = 1024;

/// The probe-lease script: 0 and the cooldown left when the model is still
/// cooled down in Redis, 1 when the lease is ours, 2 and the lease left when
/// another replica holds it.
const PROBE_SCRIPT: &str = r"
local cd = redis.call('PTTL', KEYS[1])
if cd > 0 then return {0, cd} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, 0} end
return {2, redis.call('PTTL', KEYS[2])}
";

/// What the background tasks share.
#[derive(Debug)]
struct Core {
    link: Link,
    prefix: String,
    replica: String,
    remotes: Mutex<Vec<(Vec<ModelId>, RemoteModelState)>>,
    probe: redis::Script,
    runtime: tokio::runtime::Handle,
}

impl Core {
    fn cooldown_key(&self, model: &str) -> String {
        format!("{}:model:{model}:cooldown", self.prefix)
    }

    fn lease_key(&self, model: &str) -> String {
        format!("{}:model:{model}:probe", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:models", self.prefix)
    }

    fn remotes(&self) -> Vec<RemoteModelState> {
        let mut g = self.remotes.lock();
        g.retain(|(_, r)| !r.is_closed());
        g.iter().map(|(_, r)| r.clone()).collect()
    }

    fn models(&self) -> Vec<ModelId> {
        let g = self.remotes.lock();
        let mut all: Vec<ModelId> = g.iter().flat_map(|(m, _)| m.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    fn apply_cooled(&self, model: &str, until: SystemTime) {
        for r in self.remotes() {
            r.cooled_down(model, until);
        }
    }

    fn grant(&self, model: &str) {
        for r in self.remotes() {
            r.probe_granted(model);
        }
    }

    async fn execute(&self, cmd: Command) {
        match cmd {
            Command::Cooled { model, until_ms } => {
                let left = until_ms.saturating_sub(now_ms());
                let msg = format!("c {until_ms} {} {model}", self.replica);
                let (key, lease, chan) = (
                    self.cooldown_key(model.as_str()),
                    self.lease_key(model.as_str()),
                    self.channel(),
                );
                let _ = self
                    .link
                    .run(|mut c| async move {
                        let mut pipe = redis::pipe();
                        if left > 0 {
                            pipe.cmd("SET")
                                .arg(&key)
                                .arg(until_ms)
                                .arg("PX")
                                .arg(left)
                                .ignore();
                        }
                        pipe.cmd("DEL").arg(&lease).ignore();
                        pipe.cmd("PUBLISH").arg(&chan).arg(&msg).ignore();
                        pipe.query_async::<()>(&mut c).await
                    })
                    .await;
            }
            Command::Restored { model } => {
                let msg = format!("r 0 {} {model}", self.replica);
                let (key, lease, chan) = (
                    self.cooldown_key(model.as_str()),
                    self.lease_key(model.as_str()),
                    self.channel(),
                );
                let _ = self
                    .link
                    .run(|mut c| async move {
                        redis::pipe()
                            .cmd("DEL")
                            .arg(&key)
                            .arg(&lease)
                            .ignore()
                            .cmd("PUBLISH")
                            .arg(&chan)
                            .arg(&msg)
                            .ignore()
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await;
            }
            Command::Probe { model, lease } => {
                let (key, lease_key) = (self.cooldown_key(model.as_str()), self.lease_key(model.as_str()));
                let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
                let replica = self.replica.clone();
                let script = self.probe.clone();
                let answer = self
                    .link
                    .run(|mut c| async move {
                        script
                            .key(&key)
                            .key(&lease_key)
                            .arg(&replica)
                            .arg(lease_ms)
                            .invoke_async::<(i64, i64)>(&mut c)
                            .await
                    })
                    .await;
                match answer {
                    Ok((0, left)) => {
                        let until = SystemTime::now() + Duration::from_millis(left.max(0) as u64);
                        self.apply_cooled(model.as_str(), until);
                    }
                    Ok((2, left)) => {
                        let left = Duration::from_millis(left.max(1) as u64);
                        for r in self.remotes() {
                            r.probe_denied(model.as_str(), left);
                        }
                    }
                    // Ours, or Redis cannot say: probe (as one replica alone would).
                    _ => self.grant(model.as_str()),
                }
            }
        }
    }

    /// Applies one message from the channel (ours are skipped).
    fn on_message(&self, payload: &str) {
        let mut parts = payload.splitn(4, ' ');
        let (Some(kind), Some(until), Some(replica), Some(model)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if replica == self.replica {
            return;
        }
        match kind {
            "c" => {
                let Ok(ms) = until.parse::<u64>() else {
                    return;
                };
                self.apply_cooled(model, UNIX_EPOCH + Duration::from_millis(ms));
            }
            "r" => {
                for r in self.remotes() {
                    r.restored(model);
                }
            }
            _ => {}
        }
    }

    /// Reads the cooldowns in force for every attached model.
    async fn load(&self) -> Result<(), Failure> {
        let models = self.models();
        if models.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = models.iter().map(|m| self.cooldown_key(m.as_str())).collect();
        let left: Vec<i64> = self
            .link
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("PTTL").arg(k);
                }
                pipe.query_async(&mut c).await
            })
            .await?;
        let now = SystemTime::now();
        for (m, ms) in models.iter().zip(left) {
            if ms > 0 {
                self.apply_cooled(m.as_str(), now + Duration::from_millis(ms as u64));
            }
        }
        Ok(())
    }

    /// One subscription: connect, subscribe, load, then apply messages until
    /// the connection ends.
    async fn subscribe_once(&self) -> Result<(), Failure> {
        let connect = self.link.timeout().max(Duration::from_millis(250));
        let mut pubsub = match tokio::time::timeout(connect, self.link.client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                self.link.failed(Failure::Unavailable, &e.kind());
                return Err(Failure::Unavailable);
            }
            Err(_) => {
                self.link.failed(Failure::Timeout, &"pubsub connect timed out");
                return Err(Failure::Timeout);
            }
        };
        match tokio::time::timeout(connect, pubsub.subscribe(self.channel())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.link.failed(Failure::Unavailable, &e.kind());
                return Err(Failure::Unavailable);
            }
            Err(_) => {
                self.link.failed(Failure::Timeout, &"subscribe timed out");
                return Err(Failure::Timeout);
            }
        }
        self.load().await?;
        self.link.succeeded();
        // What this replica cooled down while Redis was away reaches the
        // others now (a cooldown adopted from another replica is simply
        // published again, with the same end).
        for r in self.remotes() {
            for (model, until) in r.cooled_down_now() {
                self.execute(Command::Cooled {
                    until_ms: unix_ms(until),
                    model,
                })
                .await;
            }
        }
        let mut stream = pubsub.on_message();
        while let Some(msg) = stream.next().await {
            if let Ok(payload) = msg.get_payload::<String>() {
                self.on_message(&payload);
            }
        }
        self.link.failed(Failure::Unavailable, &"subscription closed");
        Err(Failure::Unavailable)
    }
}

/// Shares a [`TierRouter`](mantissa_triage::TierRouter)'s model state
/// between replicas through Redis (see the [module docs](self)).
///
/// ```no_run
/// use std::sync::Arc;
/// use mantissa_core::TierSet;
/// use mantissa_redis::{RedisConfig, RedisModelState};
/// use mantissa_triage::TierRouter;
///
/// # async fn run(small: mantissa_triage::ModelService, medium: mantissa_triage::ModelService,
/// #     large: mantissa_triage::ModelService) -> Result<(), Box<dyn std::error::Error>> {
/// let shared = RedisModelState::new(&RedisConfig::new("redis://127.0.0.1:6379/"))?;
/// let router = TierRouter::builder(TierSet::default())
///     .model("mock-small", small)
///     .model("mock-medium", medium)
///     .model("mock-large", large)
///     .shared_state(Arc::new(shared))
///     .build()?;
/// # let _ = router; Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisModelState {
    core: Arc<Core>,
    tx: mpsc::Sender<Command>,
    queue_full: Counter,
    /// Dropped with the backend: stops the subscriber.
    _stop: oneshot::Sender<()>,
}

impl RedisModelState {
    /// Connects lazily to Redis and starts the background writer and
    /// subscriber. Redis being down is not an error (the backend starts
    /// degraded). Must be called inside a tokio runtime.
    pub fn new(config: &RedisConfig) -> Result<Self, Error> {
        let link = Link::new(config, "models")?;
        let core = Arc::new(Core {
            link,
            prefix: config.prefix.clone(),
            replica: replica_id(),
            remotes: Mutex::new(Vec::new()),
            probe: redis::Script::new(PROBE_SCRIPT),
            runtime: tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?,
        });
        let (tx, mut rx) = mpsc::channel::<Command>(QUEUE);
        let writer = core.clone();
        core.runtime.spawn(async move {
            while let Some(cmd) = rx.recv().await {
                writer.execute(cmd).await;
            }
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        let sub = core.clone();
        core.runtime.spawn(async move {
            let mut failures = 0u32;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    r = sub.subscribe_once() => {
                        if r.is_ok() { failures = 0; } else { failures = failures.saturating_add(1); }
                    }
                }
                let exp = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
                let pause = sub.link.backoff(exp);
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        });
        let queue_full = metrics::counter!(catalog::REDIS_ERRORS_TOTAL,
            catalog::COMPONENT => "models", catalog::ERROR_TYPE => "queue_full");
        Ok(Self {
            core,
            tx,
            queue_full,
            _stop: stop,
        })
    }

    /// This replica's id in Redis (random per backend; written as the probe
    /// lease's holder).
    pub fn replica_id(&self) -> &str {
        &self.core.replica
    }

    fn queue(&self, cmd: Command) {
        if let Err(e) = self.tx.try_send(cmd) {
            self.queue_full.increment(1);
            // A probe request must be answered: probe locally.
            if let mpsc::error::TrySendError::Full(Command::Probe { model, .. })
            | mpsc::error::TrySendError::Closed(Command::Probe { model, .. }) = e
            {
                self.core.grant(model.as_str());
            }
        }
    }
}

impl SharedModelState for RedisModelState {
    fn attach(&self, models: &[ModelId], remote: RemoteModelState) {
        self.core.remotes.lock().push((models.to_vec(), remote));
        // Load the cooldowns in force now (the subscriber also loads on
        // every reconnect).
        let core = self.core.clone();
        self.core.runtime.spawn(async move {
            let _ = core.load().await;
        });
    }

    fn cooled_down(&self, model: &ModelId, until: SystemTime) {
        self.queue(Command::Cooled {
            model: model.clone(),
            until_ms: unix_ms(until),
        });
    }

    fn restored(&self, model: &ModelId) {
        self.queue(Command::Restored { model: model.clone() });
    }

    fn request_probe(&self, model: &ModelId, lease: Duration) {
        self.queue(Command::Probe {
            model: model.clone(),
            lease,
        });
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `at` as milliseconds since the Unix epoch (0 before it).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A random replica id (16 hex digits).
pub(crate) fn replica_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
