//! The upkeep task: drains histogram samples on an interval so memory stays
//! bounded between scrapes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::error::InstallError;

/// The default upkeep interval: 5 seconds.
pub const DEFAULT_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A running upkeep task. Stops on [`UpkeepTask::stop`] or when dropped.
///
/// ```
/// use std::time::Duration;
/// use mantissa_prometheus::{PrometheusConfig, UpkeepTask};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (_recorder, handle) = PrometheusConfig::new().build_recorder()?;
/// let upkeep = UpkeepTask::spawn(handle.prometheus_handle().clone(), Duration::from_secs(5))?;
/// tokio::time::sleep(Duration::from_secs(11)).await;
/// assert_eq!(upkeep.runs(), 3); // at 0 s, 5 s and 10 s
/// upkeep.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "the upkeep task stops when this value is dropped"]
pub struct UpkeepTask {
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
    runs: Arc<AtomicU64>,
}

impl UpkeepTask {
    /// Spawns a task on the current tokio runtime that calls
    /// [`PrometheusHandle::run_upkeep`] every `interval` (the first run is
    /// immediate; missed ticks are delayed, not bunched).
    ///
    /// Fails with [`InstallError::NoRuntime`] outside a runtime, and with a
    /// [`BuildError::ZeroUpkeepInterval`](crate::BuildError::ZeroUpkeepInterval)
    /// for a zero interval.
    pub fn spawn(handle: PrometheusHandle, interval: Duration) -> Result<Self, InstallError> {
        if interval.is_zero() {
            return Err(crate::BuildError::ZeroUpkeepInterval.into());
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|_| InstallError::NoRuntime)?;
        let (tx, mut rx) = oneshot::channel::<()>();
        let runs = Arc::new(AtomicU64::new(0));
        let counter = runs.clone();
        let join = rt.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // A sent value or a dropped sender both mean stop.
                    _ = &mut rx => break,
                    _ = ticks.tick() => {
                        handle.run_upkeep();
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Self {
            stop: Some(tx),
            join: Some(join),
            runs,
        })
    }

    /// How many times upkeep has run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the task and waits for it to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            // The task only ends by our signal; a join error means it was
            // aborted with its runtime, which is an end too.
            let _ = join.await;
        }
    }
}

impl Drop for UpkeepTask {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrometheusConfig;

    #[tokio::test(start_paused = true)]
    async fn runs_on_interval_and_stops_on_drop() {
        let (_rec, handle) = PrometheusConfig::new().build_recorder().unwrap();
        let task = UpkeepTask::spawn(handle.prometheus_handle().clone(), Duration::from_secs(2)).unwrap();
        tokio::time::sleep(Duration::from_millis(6_500)).await;
        assert_eq!(task.runs(), 4);
        let runs = task.runs.clone();
        drop(task);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn needs_a_runtime_and_a_positive_interval() {
        let (_rec, handle) = PrometheusConfig::new().build_recorder().unwrap();
        let h = handle.prometheus_handle().clone();
        assert!(matches!(
            UpkeepTask::spawn(h.clone(), Duration::from_secs(1)),
            Err(InstallError::NoRuntime)
        ));
        assert!(matches!(
            UpkeepTask::spawn(h, Duration::ZERO),
            Err(InstallError::Build(crate::BuildError::ZeroUpkeepInterval))
        ));
    }
}
