//! Model state shared between replicas: the hook a backend (for example
//! `mantissa-redis`) plugs into a [`TierRouter`](super::TierRouter).
//!
//! Every replica keeps its own cooldown state machine, and every call is
//! decided on that local state: sharing never adds a round trip to a call.
//! A backend carries three things between replicas:
//!
//! * **cooldowns**: when this replica takes a model out of rotation it calls
//!   [`SharedModelState::cooled_down`]; the backend tells the other replicas,
//!   which call [`RemoteModelState::cooled_down`] and skip the model from
//!   their next call on;
//! * **re-admissions**: a successful probe (or the monitor's `restore`)
//!   calls [`SharedModelState::restored`]; the others re-admit the model;
//! * **the half-open probe**: when a replica's cooldown of a model ends it
//!   does not probe at once but asks the backend for the model's single
//!   probe lease ([`SharedModelState::request_probe`]). Until the answer the
//!   model stays out of rotation on this replica; with the lease
//!   ([`RemoteModelState::probe_granted`]) its next call is the probe;
//!   without ([`RemoteModelState::probe_denied`]) it waits for the holder's
//!   verdict, which arrives as a cooldown or a re-admission, or for the lease
//!   to run out. A backend that cannot answer (its store is down) grants the
//!   lease itself; a router that hears nothing for [`PROBE_ANSWER_WAIT`]
//!   probes on its own. So a failing backend degrades to per-replica
//!   probing, never to a model left out for good.
//!
//! Times cross replicas as wall-clock [`SystemTime`]s: a replica's
//! `tokio::time::Instant` means nothing to another process.
//!
//! The trait's methods are called on the call path, sometimes while the
//! model's state is being changed: they must not block or wait (queue the
//! work for a background task).

use std::fmt;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use mantissa_core::ModelId;
use tokio::time::Instant;

use super::RouterInner;

/// How long a router waits for its backend's answer to a probe request
/// before probing on its own: 1 s.
pub const PROBE_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// A backend that shares model state (cooldowns, re-admissions, the probe
/// lease) between the routers of several replicas. See the
/// [module docs](self).
///
/// Object safe: the router holds an `Arc<dyn SharedModelState>`. None of the
/// methods may block.
pub trait SharedModelState: Send + Sync + fmt::Debug + 'static {
    /// Called once by [`TierRouterBuilder::build`](super::TierRouterBuilder::build):
    /// the models the router routes (ladder order), and the handle through
    /// which the backend reports what other replicas decided. The backend
    /// should load the cooldowns in force now and report them through
    /// `remote`.
    fn attach(&self, models: &[ModelId], remote: RemoteModelState);

    /// This replica took `model` out of rotation until `until`.
    fn cooled_down(&self, model: &ModelId, until: SystemTime);

    /// This replica put `model` back into rotation (a successful probe, or
    /// the monitor's `restore`).
    fn restored(&self, model: &ModelId);

    /// This replica's cooldown of `model` ended: it asks for the model's
    /// probe lease, to be held for at most `lease`. Answer through
    /// [`RemoteModelState::probe_granted`] or
    /// [`RemoteModelState::probe_denied`].
    fn request_probe(&self, model: &ModelId, lease: Duration);
}

/// The handle through which a [`SharedModelState`] backend applies other
/// replicas' decisions to one router. Cheap to clone; holds the router
/// weakly, so a dropped router is not kept alive by its backend.
#[derive(Clone)]
pub struct RemoteModelState {
    pub(super) router: Weak<RouterInner>,
}

impl fmt::Debug for RemoteModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteModelState")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl RemoteModelState {
    /// Whether the router is gone (every clone dropped): a backend can stop
    /// its work for it.
    pub fn is_closed(&self) -> bool {
        self.router.strong_count() == 0
    }

    fn with<R>(&self, model: &str, f: impl FnOnce(&super::health::ModelHealth) -> R) -> Option<R> {
        let router = self.router.upgrade()?;
        let &i = router.index.get(model)?;
        Some(f(&router.slots[i].health))
    }

    /// Another replica cooled `model` down until `until`: this router skips
    /// it from its next call on (an earlier end is ignored when already
    /// cooled down for longer). `false` when the model is unknown or the
    /// router gone.
    pub fn cooled_down(&self, model: &str, until: SystemTime) -> bool {
        let until = to_instant(until);
        self.with(model, |h| h.remote_cooled_down(until)).is_some()
    }

    /// Another replica put `model` back into rotation: re-admitted here with
    /// an empty window and no streak.
    pub fn restored(&self, model: &str) -> bool {
        self.with(model, |h| h.remote_restored()).is_some()
    }

    /// This replica holds `model`'s probe lease: its next call is the probe.
    pub fn probe_granted(&self, model: &str) -> bool {
        self.with(model, |h| h.probe_answer(None)).is_some()
    }

    /// Another replica holds `model`'s probe lease for `retry_in` more:
    /// this replica keeps the model out until the holder's verdict arrives
    /// or the lease runs out, then asks again.
    pub fn probe_denied(&self, model: &str, retry_in: Duration) -> bool {
        self.with(model, |h| h.probe_answer(Some(retry_in))).is_some()
    }
}

/// A local deadline as a wall-clock time.
pub(crate) fn to_wall(until: Instant) -> SystemTime {
    let left = until.saturating_duration_since(Instant::now());
    SystemTime::now()
        .checked_add(left)
        .unwrap_or_else(SystemTime::now)
}

/// A wall-clock time as a local deadline (now, if it has passed).
pub(crate) fn to_instant(at: SystemTime) -> Instant {
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    let now = Instant::now();
    now.checked_add(left.min(Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(now)
}
