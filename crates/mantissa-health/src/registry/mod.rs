//! [`HealthRegistry`]: rolling health windows per agent, model and tool.
//!
//! The registry is a cheap `Clone` handle. Each subject (an agent, a model, a
//! tool) is found through a copy-on-write map ([`arc_swap::ArcSwap`]); a
//! [`HealthLayer`](crate::HealthLayer) keeps the subjects it feeds in its
//! series cache. A call takes no lock: it adds into its series' cells (which
//! the subjects read) and updates the subjects' streak, latest call and
//! baseline with atomics.
//!
//! Windows are on [`tokio::time::Instant`]: the last minute in 12 slots of
//! 5 s, the last 15 minutes in 15 slots of 60 s (the current slot is partial,
//! so a window covers between `n - 1` and `n` slots). A window is the
//! subject's running totals now minus the totals when its first slot began:
//! the first call of each slot copies the totals into a ring of bases tagged
//! with the slot's id. *Accuracy*: a call that ends while another thread is
//! copying the base (the microseconds around a slot's first call) may be
//! counted in the neighbouring slot; nothing is lost or counted twice.
//! *Memory*: 27 bases of about 2 KB per subject (~55 KB; subjects are
//! bounded labels), and about 4 KB of cells per series.
//!
//! ```
//! use std::time::Duration;
//! use mantissa_core::{EventKind, EventSink, HealthEvent, Outcome};
//! use mantissa_health::HealthRegistry;
//!
//! let registry = HealthRegistry::new();
//! // The reset layer reports context resets as events.
//! registry.record(&HealthEvent::now(
//!     "trader".into(), "s1".into(), EventKind::ContextReset, "summarize", Outcome::Success,
//!     Duration::ZERO,
//! ));
//! let trader = registry.agent("trader").unwrap();
//! assert_eq!(trader.last_1m.context_resets, 1);
//! assert_eq!(trader.score, 1.0);
//! let json = serde_json::to_string(&registry.snapshot()).unwrap();
//! assert!(json.contains("\"context_resets\":1"));
//! ```

mod snapshot;
pub(crate) mod window;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use mantissa_core::catalog::{self, MetricVisitor, labels};
use mantissa_core::{EventKind, EventSink, FailureClass, HealthEvent, unix_millis};
use parking_lot::Mutex;
use tokio::time::Instant;

pub use snapshot::{HealthSnapshot, SubjectHealth, WindowStats};
pub(crate) use window::Sample;
use window::{BaseRing, Counts, Mark};

use crate::cells::{AgentCells, Cells, Exported, Recorded};

use crate::events::{CallRecord, EventJournal};

/// The 1-minute window: 12 slots of 5 s.
type MinuteRing = BaseRing<MINUTE_SLOT, 12>;
/// Seconds per slot of the 1-minute window.
const MINUTE_SLOT: u64 = 5;
/// Nanoseconds per second.
pub(crate) const NANOS: u64 = 1_000_000_000;
/// The 15-minute window: 15 slots of 60 s.
type QuarterRing = BaseRing<60, 15>;
/// EWMA weight of one successful call in the latency baseline.
const BASELINE_ALPHA: f64 = 0.01;
/// Recent median latency up to this multiple of the baseline costs no score.
const LATENCY_TOLERANCE: f64 = 1.5;
/// The latency factor of the score never goes below this.
const LATENCY_FLOOR: f64 = 0.25;
/// Each consecutive failure multiplies the score by this.
const STREAK_DECAY: f64 = 0.8;
/// Default capacity of the event journal.
pub(crate) const DEFAULT_JOURNAL: usize = 1024;

/// The bases of a subject's two windows.
struct Rings {
    minute: MinuteRing,
    quarter: QuarterRing,
}

/// No value yet, in an `f64` cell.
const NONE_F64: u64 = 0x7ff8_0000_0000_0000; // NaN

/// Folds `secs` into the EWMA held in `cell` and returns the value before
/// (the latency expected of this call); the first call sets it.
pub(crate) fn expect_latency(cell: &AtomicU64, secs: f64) -> f64 {
    let mut expected = secs;
    let _ = cell.fetch_update(Relaxed, Relaxed, |b| {
        let base = f64::from_bits(b);
        if base.is_nan() {
            expected = secs;
            Some(secs.to_bits())
        } else {
            expected = base;
            Some((base + BASELINE_ALPHA * (secs - base)).to_bits())
        }
    });
    expected
}

/// The health of one subject (an agent, a model, a tool): the cells that
/// feed it, its marks, its scalars and the bases of its windows. Nothing here
/// takes a lock per call (see `window`).
pub(crate) struct SubjectStats {
    name: Arc<str>,
    /// Whether latency is judged against per-tier baselines (agents) or
    /// against the subject's own baseline (models, tools).
    per_tier: bool,
    /// Every series whose calls count for this subject, and its own cells
    /// (events recorded from outside a layer).
    cells: ArcSwap<Vec<Arc<Cells>>>,
    own: Arc<Cells>,
    attach: Mutex<()>,
    context_warnings: AtomicU64,
    context_resets: AtomicU64,
    error_driven_resets: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Nanoseconds since the registry's epoch of the end of the latest call, plus one (0: none).
    last_call: AtomicU64,
    /// 1 + the class index of the latest failure (0: none).
    last_failure: AtomicU8,
    baseline: AtomicU64,
    /// Latency baselines per serving tier (agents only): an agent moved to
    /// a slower tier is not slower than expected. Locked only to find a
    /// tier's cell, when a series is created.
    tier_baselines: Mutex<Vec<(Arc<str>, Arc<AtomicU64>)>>,
    /// The 5-second slot of the latest base taken.
    last_slot: AtomicU64,
    rings: Mutex<Rings>,
}

impl fmt::Debug for SubjectStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectStats")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SubjectStats {
    fn new(name: Arc<str>, kind: EventKind, per_tier: bool) -> Self {
        let own = Cells::new(kind);
        Self {
            name,
            per_tier,
            cells: ArcSwap::from_pointee(vec![own.clone()]),
            own,
            attach: Mutex::new(()),
            context_warnings: AtomicU64::new(0),
            context_resets: AtomicU64::new(0),
            error_driven_resets: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_call: AtomicU64::new(0),
            last_failure: AtomicU8::new(0),
            baseline: AtomicU64::new(NONE_F64),
            tier_baselines: Mutex::new(Vec::new()),
            last_slot: AtomicU64::new(u64::MAX),
            rings: Mutex::new(Rings {
                minute: MinuteRing::new(),
                quarter: QuarterRing::new(),
            }),
        }
    }

    /// Counts the calls recorded in `cells` from now on.
    pub(crate) fn attach(&self, cells: Arc<Cells>) {
        let _w = self.attach.lock();
        let mut next = Vec::clone(&self.cells.load());
        next.push(cells);
        self.cells.store(Arc::new(next));
    }

    /// The baseline cell of `tier` (agents: the latency expected at it).
    pub(crate) fn tier_baseline(&self, tier: &str) -> Arc<AtomicU64> {
        let mut t = self.tier_baselines.lock();
        if let Some((_, cell)) = t.iter().find(|(name, _)| &**name == tier) {
            return cell.clone();
        }
        let cell = Arc::new(AtomicU64::new(NONE_F64));
        t.push((Arc::from(tier), cell.clone()));
        cell
    }

    /// Called before a call at `secs` (whole seconds since the registry's
    /// epoch) is recorded: the first call of a 5-second slot takes the base
    /// of the windows. One load on every other call.
    #[inline]
    pub(crate) fn roll(&self, secs: u64) {
        let slot = secs / MINUTE_SLOT;
        let last = self.last_slot.load(Relaxed);
        if last != slot {
            self.take_base(last, slot, secs);
        }
    }

    #[cold]
    fn take_base(&self, last: u64, slot: u64, secs: u64) {
        if self
            .last_slot
            .compare_exchange(last, slot, Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        let mut totals = Counts::default();
        self.totals_into(&mut totals);
        let mut rings = self.rings.lock();
        rings.minute.put(secs, &totals);
        if rings.quarter.needs_base(secs) {
            rings.quarter.put(secs, &totals);
        }
    }

    /// The running totals of the subject.
    fn totals_into(&self, out: &mut Counts) {
        out.clear();
        for cells in self.cells.load().iter() {
            out.add_cells(cells);
        }
        out.context_warnings = self.context_warnings.load(Relaxed);
        out.context_resets = self.context_resets.load(Relaxed);
        out.error_driven_resets = self.error_driven_resets.load(Relaxed);
    }

    /// Updates the streak, the latest call and the baseline after a call
    /// ending `now_ns` after the registry's epoch.
    #[inline]
    pub(crate) fn finish(&self, now_ns: u64, failure: Option<FailureClass>, secs: f64) {
        self.last_call.store(now_ns.saturating_add(1), Relaxed);
        match failure {
            None => {
                if self.consecutive_failures.load(Relaxed) != 0 {
                    self.consecutive_failures.store(0, Relaxed);
                }
                expect_latency(&self.baseline, secs);
            }
            Some(FailureClass::Cancelled) => {}
            Some(class) => {
                let _ = self
                    .consecutive_failures
                    .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_add(1)));
                self.last_failure.store(1 + class.index() as u8, Relaxed);
            }
        }
    }

    /// Records a call from outside a layer that ended `now_ns` after the
    /// registry's epoch (in the subject's own cells).
    pub(crate) fn record(&self, now_ns: u64, s: &Sample) {
        self.roll(now_ns / NANOS);
        let secs = s.duration.as_secs_f64();
        let expected = (self.per_tier && s.failure.is_none())
            .then(|| expect_latency(&self.tier_baseline(NO_TIER), secs));
        let tokens = s.usage.input_tokens.saturating_add(s.usage.output_tokens) > 0;
        self.own.record(&Recorded {
            failure: s.failure,
            duration_ns: u64::try_from(s.duration.as_nanos()).unwrap_or(u64::MAX),
            tokens: tokens.then_some((s.usage.input_tokens, s.usage.output_tokens)),
            cost_usd: s.cost_usd,
            counterfactual_usd: s.counterfactual_usd,
            expected_secs: expected,
        });
        self.finish(now_ns, s.failure, secs);
    }

    fn mark(&self, secs: u64, m: Mark) {
        self.roll(secs);
        match m {
            Mark::Warning => self.context_warnings.fetch_add(1, Relaxed),
            Mark::Reset => self.context_resets.fetch_add(1, Relaxed),
            Mark::ErrorDrivenReset => {
                self.error_driven_resets.fetch_add(1, Relaxed);
                self.context_resets.fetch_add(1, Relaxed)
            }
        };
    }

    fn health(&self, reg: &Inner, now: Instant) -> SubjectHealth {
        self.health_with(reg, now, &mut Scratch::default())
    }

    /// The health of the subject at `now`, summing windows into `scratch`
    /// (reused across subjects by a snapshot, so nothing is allocated for it).
    fn health_with(&self, reg: &Inner, now: Instant, scratch: &mut Scratch) -> SubjectHealth {
        let elapsed = now.saturating_duration_since(reg.epoch);
        let secs = elapsed.as_secs();
        self.totals_into(&mut scratch.totals);
        let total_calls = scratch.totals.calls;
        let cancelled = scratch.totals.failures[FailureClass::Cancelled.index()];
        let total_failures = scratch
            .totals
            .failures
            .iter()
            .sum::<u64>()
            .saturating_sub(cancelled);
        let (last_1m, last_15m, span) = {
            let rings = self.rings.lock();
            rings.minute.window(secs, &scratch.totals, &mut scratch.window);
            let last_1m = window_stats(&scratch.window, rings.minute.span(), elapsed);
            rings.quarter.window(secs, &scratch.totals, &mut scratch.window);
            let last_15m = window_stats(&scratch.window, rings.quarter.span(), elapsed);
            (last_1m, last_15m, rings.quarter.span())
        };
        let last_call = match self.last_call.load(Relaxed) {
            0 => None,
            ns => Some(reg.epoch + Duration::from_nanos(ns - 1)),
        };
        // A failure streak is as old as the call that ended it: once that call
        // has left the 15-minute window, the streak has expired with it (a
        // cooled-down model gets no traffic that could break it).
        let streak = match last_call {
            Some(t) if now.saturating_duration_since(t) < span => self.consecutive_failures.load(Relaxed),
            _ => 0,
        };
        let baseline = Some(f64::from_bits(self.baseline.load(Relaxed))).filter(|b| !b.is_nan());
        // Slowness: an agent against its baselines at the tiers that served
        // it (1-minute sums); a model or tool, its 1-minute median against
        // its own baseline.
        let slowness = if self.per_tier {
            (scratch_ratio(&last_1m)).filter(|r| r.is_finite())
        } else {
            match (last_1m.p50_secs, baseline) {
                (Some(p50), Some(b)) if b > 0.0 => Some(p50 / b),
                _ => None,
            }
        };
        let score = score(&last_15m, slowness, streak);
        let last_failure = match self.last_failure.load(Relaxed) {
            0 => None,
            i => FailureClass::ALL.get(usize::from(i) - 1).copied(),
        };
        SubjectHealth {
            name: self.name.to_string(),
            score,
            consecutive_failures: streak,
            last_failure,
            last_call_ms: last_call.map(|t| reg.wall_ms(t)),
            seconds_since_last_call: last_call.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            latency_baseline_secs: baseline,
            total_calls,
            total_failures,
            last_1m,
            last_15m,
        }
    }
}

/// Reusable buffers of a registry read.
#[derive(Default)]
struct Scratch {
    totals: Counts,
    window: Counts,
}

fn window_stats(c: &Counts, span: Duration, elapsed: Duration) -> WindowStats {
    let cancelled = c.failures[FailureClass::Cancelled.index()];
    let failures = c.failures.iter().sum::<u64>().saturating_sub(cancelled);
    let successes = c.successes;
    let errors = if failures + cancelled == 0 {
        BTreeMap::new()
    } else {
        FailureClass::ALL
            .iter()
            .filter(|f| c.failures[f.index()] > 0)
            .map(|f| (f.as_str(), c.failures[f.index()]))
            .collect()
    };
    let [p50_secs, p95_secs, p99_secs] = c.quantiles([0.50, 0.95, 0.99]);
    let covered = span.min(elapsed).max(Duration::from_secs(1)).as_secs_f64();
    let tokens = c.input_tokens.saturating_add(c.output_tokens) as f64;
    WindowStats {
        window_secs: span.as_secs_f64(),
        covered_secs: covered,
        calls: c.calls,
        successes,
        failures,
        cancelled,
        error_rate: snapshot::per(failures as f64, (successes + failures) as f64),
        errors,
        p50_secs,
        p95_secs,
        p99_secs,
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cost_usd: c.cost_usd,
        counterfactual_cost_usd: c.counterfactual_usd,
        // Without a counterfactual (no tier ladder) nothing is known to be
        // saved: 0, not minus the cost.
        savings_usd: if c.counterfactual_usd > 0.0 {
            c.counterfactual_usd - c.cost_usd
        } else {
            0.0
        },
        tokens_per_minute: snapshot::per(tokens, covered) * 60.0,
        cost_usd_per_hour: snapshot::per(c.cost_usd, covered) * 3600.0,
        context_warnings: c.context_warnings,
        context_resets: c.context_resets,
        error_driven_resets: c.error_driven_resets,
        compared_secs: c.compared_secs,
        expected_secs: c.expected_secs,
    }
}

/// The label of calls recorded without a tier.
const NO_TIER: &str = "none";

/// Seconds taken over seconds expected, for the successful calls of a window
/// that had an expectation.
fn scratch_ratio(w: &WindowStats) -> Option<f64> {
    (w.expected_secs > 0.0).then(|| w.compared_secs / w.expected_secs)
}

/// The health score; see the crate docs. `slowness` is recent latency over
/// the baseline it is judged against.
fn score(w15: &WindowStats, slowness: Option<f64>, streak: u32) -> f64 {
    let success = (w15.successes as f64 + 1.0) / ((w15.successes + w15.failures) as f64 + 1.0);
    let latency = match slowness {
        Some(r) if r > LATENCY_TOLERANCE => (LATENCY_TOLERANCE / r).max(LATENCY_FLOOR),
        _ => 1.0,
    };
    let streak = match streak {
        0 => 1.0,
        n => STREAK_DECAY.powi(i32::try_from(n).unwrap_or(i32::MAX)),
    };
    (success * latency * streak).clamp(0.0, 1.0)
}

/// The subjects of one kind: by label, and the same ones sorted by label (a
/// snapshot walks them in order, so building its sorted map is linear).
#[derive(Default)]
struct Subjects {
    by_name: HashMap<Arc<str>, Arc<SubjectStats>>,
    sorted: Vec<Arc<SubjectStats>>,
}

/// A copy-on-write map from label to subject: reads are a lock-free load;
/// inserts (once per new label) copy the map under a writer lock.
struct SubjectMap {
    map: ArcSwap<Subjects>,
    write: Mutex<()>,
    kind: EventKind,
    per_tier: bool,
}

impl SubjectMap {
    fn new(kind: EventKind, per_tier: bool) -> Self {
        Self {
            map: ArcSwap::from_pointee(Subjects::default()),
            write: Mutex::new(()),
            kind,
            per_tier,
        }
    }

    fn get(&self, name: &str) -> Option<Arc<SubjectStats>> {
        self.map.load().by_name.get(name).cloned()
    }

    fn get_or_insert(&self, name: &str) -> Arc<SubjectStats> {
        if let Some(s) = self.get(name) {
            return s;
        }
        let _w = self.write.lock();
        let current = self.map.load_full();
        if let Some(s) = current.by_name.get(name) {
            return s.clone();
        }
        let key: Arc<str> = Arc::from(name);
        let stats = Arc::new(SubjectStats::new(key.clone(), self.kind, self.per_tier));
        let mut by_name = current.by_name.clone();
        by_name.insert(key, stats.clone());
        let mut sorted = Vec::with_capacity(current.sorted.len() + 1);
        let at = current.sorted.partition_point(|s| *s.name < *name);
        sorted.extend_from_slice(&current.sorted[..at]);
        sorted.push(stats.clone());
        sorted.extend_from_slice(&current.sorted[at..]);
        self.map.store(Arc::new(Subjects { by_name, sorted }));
        stats
    }

    fn health(&self, reg: &Inner, now: Instant, scratch: &mut Scratch) -> BTreeMap<String, SubjectHealth> {
        self.map
            .load()
            .sorted
            .iter()
            .map(|s| {
                let h = s.health_with(reg, now, scratch);
                (h.name.clone(), h)
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.map.load().sorted.len()
    }
}

struct Inner {
    epoch: Instant,
    epoch_wall_ms: u64,
    agents: SubjectMap,
    models: SubjectMap,
    tools: SubjectMap,
    journal: EventJournal,
    exported: Mutex<ExportedSet>,
    rendered_by_exporter: AtomicBool,
}

/// The series and agents of layers in [`MetricsMode::Cells`](crate::MetricsMode::Cells).
#[derive(Default)]
struct ExportedSet {
    series: Vec<Arc<Exported>>,
    agents: Vec<Arc<AgentCells>>,
}

impl Inner {
    fn wall_ms(&self, t: Instant) -> u64 {
        let since = u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        self.epoch_wall_ms.saturating_add(since)
    }
}

/// Rolling health windows per agent, model and tool, a journal of recent
/// events, and health scores. See the [module docs](self).
#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthRegistry")
            .field("agents", &self.inner.agents.len())
            .field("models", &self.inner.models.len())
            .field("tools", &self.inner.tools.len())
            .field("journal_capacity", &self.inner.journal.capacity())
            .finish()
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthRegistry {
    /// An empty registry with a journal of the last 1024 events.
    pub fn new() -> Self {
        Self::with_journal_capacity(DEFAULT_JOURNAL)
    }

    /// An empty registry whose journal keeps the last `capacity` events
    /// (at least 1).
    pub fn with_journal_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                epoch_wall_ms: unix_millis(SystemTime::now()),
                agents: SubjectMap::new(EventKind::Llm, true),
                models: SubjectMap::new(EventKind::Llm, false),
                tools: SubjectMap::new(EventKind::Tool, false),
                exported: Mutex::new(ExportedSet::default()),
                rendered_by_exporter: AtomicBool::new(false),
                journal: EventJournal::new(capacity),
            }),
        }
    }

    /// Every agent, model and tool with both windows, scored now.
    pub fn snapshot(&self) -> HealthSnapshot {
        let now = Instant::now();
        let reg = &*self.inner;
        let mut scratch = Scratch::default();
        HealthSnapshot {
            taken_at_ms: reg.wall_ms(now),
            agents: reg.agents.health(reg, now, &mut scratch),
            models: reg.models.health(reg, now, &mut scratch),
            tools: reg.tools.health(reg, now, &mut scratch),
        }
    }

    /// The health of one agent (by its label value).
    pub fn agent(&self, agent: &str) -> Option<SubjectHealth> {
        let s = self.inner.agents.get(agent)?;
        Some(s.health(&self.inner, Instant::now()))
    }

    /// The health of one model (by its label value).
    pub fn model(&self, model: &str) -> Option<SubjectHealth> {
        let s = self.inner.models.get(model)?;
        Some(s.health(&self.inner, Instant::now()))
    }

    /// The health of one tool (by its label value).
    pub fn tool(&self, tool: &str) -> Option<SubjectHealth> {
        let s = self.inner.tools.get(tool)?;
        Some(s.health(&self.inner, Instant::now()))
    }

    /// The agents seen so far, sorted.
    pub fn agent_names(&self) -> Vec<String> {
        self.inner
            .agents
            .map
            .load()
            .sorted
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }

    /// The health score of `agent` (1.0 for an agent never seen).
    pub fn score(&self, agent: &str) -> f64 {
        self.agent(agent).map_or(1.0, |h| h.score)
    }

    /// The latest `n` events (calls, warnings, resets, agent actions), oldest first.
    pub fn recent(&self, n: usize) -> Vec<HealthEvent> {
        self.inner.journal.recent(n)
    }

    /// Sets the `mantissa_agent_health_score{agent}` gauge of every known
    /// agent on the current recorder. Call it periodically (the monitor and
    /// the exporter's upkeep do).
    pub fn publish_scores(&self) {
        let now = Instant::now();
        let reg = &*self.inner;
        let mut scratch = Scratch::default();
        for stats in reg.agents.map.load().sorted.iter() {
            let score = stats.health_with(reg, now, &mut scratch).score;
            metrics::gauge!(catalog::AGENT_HEALTH_SCORE, labels::AGENT => stats.name.to_string()).set(score);
        }
    }

    /// Reads the health metrics of every layer in
    /// [`MetricsMode::Cells`](crate::MetricsMode::Cells) that feeds this
    /// registry into `out`: the families of the health layer in
    /// `docs/metrics.md` (durations, token usage, time to first chunk,
    /// calls, calls in flight, tokens, cost, counterfactual cost, unknown-cost
    /// calls), with the same names, label keys and buckets as through the
    /// `metrics` recorder. The overhead histogram and the health score stay
    /// on the recorder.
    pub fn collect(&self, out: &mut dyn MetricVisitor) {
        let set = self.inner.exported.lock();
        crate::cells::collect(&set.series, &set.agents, out);
    }

    /// A collector for an exporter that renders the cells at scrape time
    /// (`mantissa_prometheus::ExporterHandle::register_collector`). Taking
    /// it marks the registry as rendered by an exporter: a
    /// [`HealthLayer`](crate::HealthLayer) built on this registry afterwards
    /// defaults to [`MetricsMode::Cells`](crate::MetricsMode::Cells) (its
    /// metrics are written once, into cells, and not sent to the recorder).
    /// Layers built before keep the mode they were built with.
    ///
    /// ```
    /// use mantissa_health::{HealthLayer, HealthRegistry, MetricsMode};
    ///
    /// let registry = HealthRegistry::new();
    /// let collector = registry.collector();
    /// // exporter.register_collector(collector);
    /// # let _ = collector;
    /// let layer = HealthLayer::with_registry(registry);
    /// assert_eq!(layer.mode(), MetricsMode::Cells);
    /// ```
    pub fn collector(&self) -> impl Fn(&mut dyn MetricVisitor) + Send + Sync + 'static {
        self.inner.rendered_by_exporter.store(true, Relaxed);
        let registry = self.clone();
        move |out: &mut dyn MetricVisitor| registry.collect(out)
    }

    /// Records an event from outside the health layer: context warnings and
    /// resets (counted per agent), or LLM and tool calls (counted per agent and
    /// per model or tool). Every event also goes to the journal; agent
    /// actions go only there (they are not calls, and their agent names come
    /// from an LLM's tool arguments, so they create no subject).
    ///
    /// A [`HealthLayer`](crate::HealthLayer) feeds its registry directly; do not
    /// also add the registry as one of the layer's sinks, or calls count twice.
    pub fn record_event(&self, event: &HealthEvent) {
        if event.kind == EventKind::AgentAction {
            self.inner.journal.push(event.clone());
            return;
        }
        let now = Instant::now();
        let secs = now.saturating_duration_since(self.inner.epoch).as_secs();
        let agent = self.inner.agents.get_or_insert(event.agent.as_str());
        match event.kind {
            EventKind::ContextWarning => agent.mark(secs, Mark::Warning),
            EventKind::ContextReset => {
                let error_driven = event
                    .reason
                    .as_deref()
                    .is_some_and(catalog::is_error_driven_reset);
                agent.mark(
                    secs,
                    if error_driven {
                        Mark::ErrorDrivenReset
                    } else {
                        Mark::Reset
                    },
                );
            }
            EventKind::AgentAction => {}
            EventKind::Llm | EventKind::Tool => {
                let subject = if event.kind == EventKind::Llm {
                    self.inner.models.get_or_insert(&event.subject)
                } else {
                    self.inner.tools.get_or_insert(&event.subject)
                };
                let sample = Sample::new(
                    event.outcome.failure(),
                    event.duration,
                    event.usage,
                    event.cost_usd,
                    0.0,
                );
                let now_ns = self.nanos(now);
                agent.record(now_ns, &sample);
                subject.record(now_ns, &sample);
            }
        }
        self.inner.journal.push(event.clone());
    }

    // ---- used by the layer ----

    pub(crate) fn agent_stats(&self, agent: &str) -> Arc<SubjectStats> {
        self.inner.agents.get_or_insert(agent)
    }

    pub(crate) fn subject_stats(&self, kind: EventKind, name: &str) -> Arc<SubjectStats> {
        match kind {
            EventKind::Tool => self.inner.tools.get_or_insert(name),
            _ => self.inner.models.get_or_insert(name),
        }
    }

    /// Nanoseconds since the registry's epoch.
    #[inline]
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.inner.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The wall-clock time of `nanos` after the epoch, in Unix milliseconds.
    pub(crate) fn wall_ms_of(&self, nanos: u64) -> u64 {
        self.inner.epoch_wall_ms.saturating_add(nanos / 1_000_000)
    }

    /// Adds a series to the ones [`collect`](Self::collect) reads.
    pub(crate) fn export(&self, series: Arc<Exported>) {
        self.inner.exported.lock().series.push(series);
    }

    /// Adds an agent's cells to the ones [`collect`](Self::collect) reads.
    pub(crate) fn export_agent(&self, agent: Arc<AgentCells>) {
        self.inner.exported.lock().agents.push(agent);
    }

    /// Whether a [`collector`](Self::collector) was taken: layers built
    /// from then on default to [`MetricsMode::Cells`](crate::MetricsMode::Cells).
    pub(crate) fn rendered_by_exporter(&self) -> bool {
        self.inner.rendered_by_exporter.load(Relaxed)
    }

    /// Journals one call of a layer.
    pub(crate) fn journal_call(&self, call: CallRecord) {
        self.inner.journal.push_call(call);
    }
}

impl EventSink for HealthRegistry {
    fn record(&self, event: &HealthEvent) {
        self.record_event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::Usage;

    fn sample(ms: u64, failure: Option<FailureClass>) -> Sample {
        Sample::new(
            failure,
            Duration::from_millis(ms),
            Usage::new(10, 5),
            0.001,
            0.004,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn windows_count_classes_and_expire() {
        let reg = HealthRegistry::new();
        let stats = reg.subject_stats(EventKind::Llm, "m");
        for i in 0..20 {
            let failure = match i % 5 {
                0 => Some(FailureClass::Timeout),
                1 => Some(FailureClass::Cancelled),
                _ => None,
            };
            stats.record(reg.nanos(Instant::now()), &sample(100, failure));
        }
        let h = reg.model("m").unwrap();
        assert_eq!(h.last_1m.calls, 20);
        assert_eq!(h.last_1m.failures, 4);
        assert_eq!(h.last_1m.cancelled, 4);
        assert_eq!(h.last_1m.successes, 12);
        assert_eq!(h.last_1m.errors_of(FailureClass::Timeout), 4);
        assert!((h.last_1m.error_rate - 0.25).abs() < 1e-9);
        assert!((h.last_1m.savings_usd - 0.06).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(120)).await;
        let h = reg.model("m").unwrap();
        assert_eq!(h.last_1m.calls, 0);
        assert_eq!(h.last_15m.calls, 20);
        assert!((h.seconds_since_last_call.unwrap() - 120.0).abs() < 1e-6);
        tokio::time::advance(Duration::from_secs(15 * 60)).await;
        assert_eq!(reg.model("m").unwrap().last_15m.calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_counterfactual_nothing_is_saved() {
        let reg = HealthRegistry::new();
        let stats = reg.subject_stats(EventKind::Llm, "m");
        let s = Sample::new(None, Duration::from_millis(5), Usage::new(10, 5), 0.002, 0.0);
        stats.record(reg.nanos(Instant::now()), &s);
        let h = reg.model("m").unwrap();
        assert!((h.last_1m.cost_usd - 0.002).abs() < 1e-12);
        assert_eq!(h.last_1m.savings_usd, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn score_falls_with_streaks_and_slowness() {
        let reg = HealthRegistry::new();
        let a = reg.agent_stats("a");
        let rec = |ms, f| {
            let now = Instant::now();
            a.record(reg.nanos(now), &sample(ms, f));
        };
        for _ in 0..50 {
            rec(100, None);
        }
        assert!(reg.score("a") > 0.99);
        for _ in 0..5 {
            rec(100, Some(FailureClass::UpstreamServer));
        }
        let h = reg.agent("a").unwrap();
        assert_eq!(h.consecutive_failures, 5);
        let want = (51.0 / 56.0) * 0.8f64.powi(5);
        assert!((h.score - want).abs() < 1e-9, "{} vs {want}", h.score);
        // Recovery, but slow: the 1-minute median rises far above the baseline.
        tokio::time::advance(Duration::from_secs(61)).await;
        for _ in 0..5 {
            rec(1000, None);
        }
        let h = reg.agent("a").unwrap();
        assert_eq!(h.consecutive_failures, 0);
        assert!(h.score < 0.5 && h.score >= 0.25 * (56.0 / 61.0), "{}", h.score);
        assert!(h.last_1m.p50_secs.unwrap() > 0.9);
        assert!(h.latency_baseline_secs.unwrap() < 0.2);
    }

    #[test]
    fn scores_are_published_as_gauges() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let reg = HealthRegistry::new();
            let a = reg.agent_stats("a");
            let now = Instant::now();
            a.record(reg.nanos(now), &sample(10, Some(FailureClass::Timeout)));
            metrics::with_local_recorder(&recorder, || reg.publish_scores());
        });
        let values: Vec<_> = snapshotter.snapshot().into_vec();
        assert_eq!(values.len(), 1);
        let (key, _, _, value) = &values[0];
        assert_eq!(key.key().name(), catalog::AGENT_HEALTH_SCORE);
        match value {
            metrics_util::debugging::DebugValue::Gauge(g) => {
                assert!((g.into_inner() - 0.5 * 0.8).abs() < 1e-9)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
