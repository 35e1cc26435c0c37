//! The stack's TOML configuration file.

use std::net::SocketAddr;
use std::time::Duration;

use mantissa_core::{ConfigError, TierConfig, TierSet};
use mantissa_mock::MockLlm;
use mantissa_prometheus::{ExporterHandle, InstallError, PrometheusConfig};
use mantissa_reset::BrittlenessPolicy;
use mantissa_triage::{Boundaries, CooldownPolicy, FeedbackLog, LearnedTriage, RuleTriage};
use serde::Deserialize;

use super::{AgentSpec, AgentStackBuilder, BuildError, Upstream};

/// The whole stack in one TOML file. Every section is optional.
///
/// A file without `[upstream]` runs on the embedded mock LLM
/// (`kind = "mock"`, with the mock's tier ladder when `tiers` is left out):
/// a configuration can be tried without a provider. A production file names
/// `kind = "openai"`, and then `tiers` is required. The stack gets no tool
/// service from a file: tool calls through [`AgentStack::tools`](super::AgentStack::tools)
/// fail with [`ToolsNotConfigured`](super::ToolsNotConfigured) unless the
/// returned builder is given one.
///
/// `[metrics]` is read by the application, not by [`into_builder`](Self::into_builder):
/// the stack installs no recorder. [`MetricsConfig::install`] installs
/// mantissa's Prometheus recorder as configured (the gateway does this) and
/// returns the handle for [`AgentStackBuilder::exporter`].
///
/// ```toml
/// [[agents]]
/// name = "trader"
/// role = "Trades on request"
///
/// [[agents]]
/// name = "manager"
/// tier = "high"              # pinned: skips triage
///
/// [[tiers]]
/// name = "low"
/// [[tiers.models]]
/// id = "mock-small"
/// provider = "mock"
/// context_window = 16384
/// input_per_mtok = 0.15
/// output_per_mtok = 0.60
/// # … more tiers, cheapest first
///
/// [upstream]
/// kind = "mock"              # or "openai"
/// # base_url = "http://127.0.0.1:8000/v1"
/// # api_key_env = "OPENAI_API_KEY"
///
/// [triage]
/// kind = "rules"             # or "learned"
/// boundaries = [0.3, 0.6]    # score cut points between tiers
/// sticky = true
/// # model = "triage.mtm"     # learned: a model file (default: the built-in model)
/// # shares = [0.5, 0.3, 0.2] # learned: target share of calls per tier
/// # exploration = 0.01       # learned: share of calls sent to a random tier
/// # feedback_log = "outcomes.jsonl"  # write outcomes reported with `AgentStack::feedback`
/// # online_step = 0.01       # learned + feedback_log: online updates, step bound
///
/// [reset]
/// max_turns = 50
/// context_warn = 0.75
/// context_compact = 0.85
/// max_consecutive_errors = 3
/// summarize_on_low_tier = true
///
/// [cooldown]
/// consecutive_failures = 5
/// base_cooldown_secs = 30
///
/// [metrics]
/// install = true
/// listen = "127.0.0.1:9464"
///
/// [monitor]
/// enabled = true
/// interval_secs = 15
/// # webhook = "http://127.0.0.1:9093/api/v2/alerts"
/// # [[monitor.rules]] … (see mantissa_monitor::Rule)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// The agents.
    #[serde(default)]
    pub agents: Vec<AgentSpec>,
    /// The tier ladder, cheapest first. Left out, it defaults to
    /// [`TierSet::default`] (the embedded mock's models) with the mock
    /// upstream, and is an error with any other upstream; present, it must
    /// hold at least one tier.
    #[serde(default)]
    pub tiers: Option<Vec<TierConfig>>,
    /// Where the models live.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Triage settings.
    #[serde(default)]
    pub triage: TriageConfig,
    /// Reset policy.
    #[serde(default)]
    pub reset: ResetConfig,
    /// Router cooldown.
    #[serde(default)]
    pub cooldown: CooldownConfig,
    /// Metrics exporter, for the application to install
    /// ([`MetricsConfig::install`]).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Monitor.
    #[serde(default)]
    pub monitor: MonitorConfig,
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `mock` (default: the embedded mock LLM) or `openai`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Base URL of an OpenAI-compatible server (with `/v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

fn default_kind() -> String {
    "mock".to_owned()
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            base_url: None,
            api_key_env: None,
        }
    }
}

/// `[triage]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageConfig {
    /// `rules` (default: [`RuleTriage`]) or `learned` ([`LearnedTriage`]).
    #[serde(default)]
    pub kind: Option<String>,
    /// `learned`: the model file. Defaults to the built-in model.
    #[serde(default)]
    pub model: Option<std::path::PathBuf>,
    /// `learned`: the share of calls per tier, cheapest first. Defaults to
    /// 20 % on the top tier, the rest split equally. Exclusive with `boundaries`.
    #[serde(default)]
    pub shares: Option<Vec<f64>>,
    /// `learned`: the share of calls sent to a random tier. Defaults to 0.
    #[serde(default)]
    pub exploration: Option<f64>,
    /// A JSON-lines file that outcomes reported with
    /// [`AgentStack::feedback`](super::AgentStack::feedback) are appended to.
    /// Defaults to none (feedback disabled).
    #[serde(default)]
    pub feedback_log: Option<std::path::PathBuf>,
    /// `learned` with a `feedback_log`: learn online from the reported
    /// outcomes with steps of at most this size. Defaults to none (off).
    #[serde(default)]
    pub online_step: Option<f32>,
    /// Score cut points between tiers (one fewer than tiers).
    #[serde(default)]
    pub boundaries: Option<Vec<f64>>,
    /// Session stickiness (tier may rise, not fall). Defaults to `true`.
    #[serde(default)]
    pub sticky: Option<bool>,
}

/// `[reset]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetConfig {
    /// User turns since the last reset that raise a warning suggesting a
    /// reset (0 disables). Defaults to 50.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// Context fraction that warns. Defaults to 0.75.
    #[serde(default)]
    pub context_warn: Option<f64>,
    /// Context fraction that compacts. Defaults to 0.85.
    #[serde(default)]
    pub context_compact: Option<f64>,
    /// Consecutive errors that trigger a reset (0 disables). Defaults to 3.
    #[serde(default)]
    pub max_consecutive_errors: Option<u32>,
    /// Summarize with the lowest tier. Defaults to `true`.
    #[serde(default)]
    pub summarize_on_low_tier: Option<bool>,
}

/// `[cooldown]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooldownConfig {
    /// Failures in a row that cool a model down. Defaults to 5.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Failure rate over the window that cools a model down. Defaults to 0.5.
    #[serde(default)]
    pub failure_rate_threshold: Option<f64>,
    /// First cooldown in seconds. Defaults to 30.
    #[serde(default)]
    pub base_cooldown_secs: Option<f64>,
    /// Longest cooldown in seconds. Defaults to 300.
    #[serde(default)]
    pub max_cooldown_secs: Option<f64>,
}

/// `[metrics]`: how the application installs mantissa's Prometheus recorder
/// ([`MetricsConfig::install`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether [`MetricsConfig::install`] installs the recorder. Defaults to `true`.
    #[serde(default = "yes")]
    pub install: bool,
    /// Where `/metrics` is served. Defaults to `127.0.0.1:9464`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    /// The exporter settings, or `None` with `install = false`.
    pub fn prometheus(&self) -> Option<PrometheusConfig> {
        if !self.install {
            return None;
        }
        let mut config = PrometheusConfig::new();
        if let Some(addr) = self.listen {
            config = config.listen_addr(addr);
        }
        Some(config)
    }

    /// Installs mantissa's Prometheus recorder process-wide as configured
    /// and returns its handle (for [`AgentStackBuilder::exporter`]), or
    /// `None` with `install = false`. Call it once per process, inside a
    /// tokio runtime (for upkeep); a second install is
    /// [`InstallError::AlreadyInstalled`].
    pub fn install(&self) -> Result<Option<ExporterHandle>, InstallError> {
        self.prometheus().map(PrometheusConfig::install).transpose()
    }
}

fn yes() -> bool {
    true
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            install: true,
            listen: None,
        }
    }
}

/// `[monitor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Run the monitor. Defaults to `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Evaluation interval in seconds.
    #[serde(default)]
    pub interval_secs: Option<f64>,
    /// Alertmanager-compatible webhook URL.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Alert rules (defaults to the monitor's default rules).
    #[serde(default)]
    pub rules: Vec<mantissa_monitor::Rule>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: None,
            webhook: None,
            rules: Vec::new(),
        }
    }
}

/// The `[triage]` strategy and feedback log.
fn triage_from_config(
    mut b: AgentStackBuilder,
    t: &TriageConfig,
    tiers: &TierSet,
) -> Result<AgentStackBuilder, BuildError> {
    let boundaries = match &t.boundaries {
        Some(cuts) => {
            Some(Boundaries::new(cuts.clone()).map_err(|e| ConfigError::new("triage.boundaries", e.reason))?)
        }
        None => None,
    };
    let kind = t.kind.as_deref().unwrap_or("rules");
    let learned_only = [
        ("triage.model", t.model.is_some()),
        ("triage.shares", t.shares.is_some()),
        ("triage.exploration", t.exploration.is_some()),
        ("triage.online_step", t.online_step.is_some()),
    ];
    let mut learner = None;
    match kind {
        "rules" => {
            if let Some((field, _)) = learned_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(*field, "only applies to `kind = \"learned\"`").into());
            }
            if let Some(boundaries) = boundaries {
                b = b.triage(RuleTriage::new(tiers).boundaries(boundaries)?);
            }
        }
        "learned" => {
            let mut learned = match &t.model {
                Some(path) => LearnedTriage::from_file(tiers, path)?,
                None => LearnedTriage::builtin(tiers)?,
            };
            match (boundaries, &t.shares) {
                (Some(_), Some(_)) => {
                    return Err(
                        ConfigError::new("triage.shares", "give `shares` or `boundaries`, not both").into(),
                    );
                }
                (Some(bounds), None) => learned = learned.with_boundaries(bounds)?,
                (None, Some(shares)) => {
                    learned = learned
                        .shares(shares)
                        .map_err(|e| ConfigError::new("triage.shares", e.reason))?;
                }
                (None, None) => {}
            }
            if let Some(rate) = t.exploration {
                learned = learned.exploration(rate)?;
            }
            if let Some(step) = t.online_step {
                if !(step.is_finite() && step > 0.0 && step <= 1.0) {
                    return Err(ConfigError::new(
                        "triage.online_step",
                        format!("must be in (0, 1], got {step}"),
                    )
                    .into());
                }
                if t.feedback_log.is_none() {
                    return Err(ConfigError::new(
                        "triage.online_step",
                        "online learning needs a `feedback_log` to learn from",
                    )
                    .into());
                }
                learner = Some(learned.online(step));
            }
            b = b.triage(learned);
        }
        other => {
            return Err(ConfigError::new(
                "triage.kind",
                format!("unknown triage `{other}` (expected `rules` or `learned`)"),
            )
            .into());
        }
    }
    if let Some(path) = &t.feedback_log {
        let mut log = FeedbackLog::open(path).map_err(|source| BuildError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if let Some(l) = learner {
            log = log.learner(l);
        }
        b = b.feedback_log(log);
    }
    Ok(b)
}

fn secs(field: &str, v: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v).map_err(|_| {
        ConfigError::new(
            field,
            format!("must be a non-negative number of seconds, got {v}"),
        )
    })
}

impl StackConfig {
    /// Parses TOML; errors name the field.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|s| format!("at byte {}", s.start))
                .unwrap_or_else(|| "config".to_owned());
            ConfigError::new(field, e.message().to_owned())
        })
    }

    /// Turns the configuration into a builder (which can still be customised).
    /// Installs no recorder: see [`MetricsConfig::install`].
    pub fn into_builder(self) -> Result<AgentStackBuilder, BuildError> {
        let tiers = match self.tiers {
            Some(t) if t.is_empty() => {
                return Err(ConfigError::new(
                    "tiers",
                    "the tier ladder is empty: give at least one [[tiers]] with a [[tiers.models]] \
                     (or leave `tiers` out to use the embedded mock's ladder)",
                )
                .into());
            }
            Some(t) => TierSet::new(t)?,
            None if self.upstream.kind == "openai" => {
                return Err(ConfigError::new(
                    "tiers",
                    format!(
                        "required with upstream kind `{}`: the default ladder names the embedded \
                         mock's models, which a real provider does not serve",
                        self.upstream.kind
                    ),
                )
                .into());
            }
            None => TierSet::default(),
        };
        let upstream = match self.upstream.kind.as_str() {
            "mock" => Upstream::Mock(MockLlm::new()),
            #[cfg(feature = "openai")]
            "openai" => {
                let mut cfg = mantissa_openai::OpenAiConfig::from_env();
                if let Some(url) = &self.upstream.base_url {
                    cfg = cfg.with_base_url(url.clone());
                }
                if let Some(var) = &self.upstream.api_key_env {
                    cfg = cfg
                        .api_key_from_env(var)
                        .map_err(|e| ConfigError::new("upstream.api_key_env", e.to_string()))?;
                }
                Upstream::OpenAi(Box::new(cfg))
            }
            other => {
                return Err(ConfigError::new(
                    "upstream.kind",
                    format!("unknown upstream `{other}` (expected `mock` or `openai`)"),
                )
                .into());
            }
        };
        let mut b = AgentStackBuilder::new(upstream);
        for a in self.agents {
            if let Some(t) = &a.tier {
                if tiers.rank(t).is_none() {
                    return Err(ConfigError::new(
                        format!("agents.{}.tier", a.name),
                        format!("unknown tier `{t}`"),
                    )
                    .into());
                }
            }
            b = b.agent(a);
        }
        b = triage_from_config(b, &self.triage, &tiers)?;
        if let Some(sticky) = self.triage.sticky {
            b = b.sticky_tiers(sticky);
        }
        let r = self.reset;
        let mut policy = BrittlenessPolicy::default();
        if let Some(t) = r.max_turns {
            policy = policy.max_turns((t > 0).then_some(t));
        }
        if r.context_warn.is_some() || r.context_compact.is_some() {
            policy = policy
                .context_thresholds(r.context_warn.or(Some(0.75)), r.context_compact.or(Some(0.85)))
                .map_err(|e| ConfigError::new("reset.context_warn, reset.context_compact", e.to_string()))?;
        }
        if let Some(e) = r.max_consecutive_errors {
            policy = policy.max_consecutive_errors((e > 0).then_some(e));
        }
        b = b.reset_policy(policy);
        if let Some(s) = r.summarize_on_low_tier {
            b = b.summarize_on_low_tier(s);
        }
        let c = self.cooldown;
        let mut cooldown = CooldownPolicy::default();
        if let Some(n) = c.consecutive_failures {
            if n == 0 {
                return Err(ConfigError::new(
                    "cooldown.consecutive_failures",
                    "must be at least 1 (0 would cool every model down before its first call)",
                )
                .into());
            }
            cooldown.consecutive_failures = n;
        }
        if let Some(f) = c.failure_rate_threshold {
            if !(f > 0.0 && f <= 1.0) {
                return Err(ConfigError::new(
                    "cooldown.failure_rate_threshold",
                    format!("must be in (0, 1], got {f}"),
                )
                .into());
            }
            cooldown.failure_rate_threshold = f;
        }
        if let Some(s) = c.base_cooldown_secs {
            cooldown.base_cooldown = secs("cooldown.base_cooldown_secs", s)?;
        }
        if let Some(s) = c.max_cooldown_secs {
            cooldown.max_cooldown = secs("cooldown.max_cooldown_secs", s)?;
        }
        b = b.cooldown(cooldown);
        if self.monitor.enabled {
            if let Some(s) = self.monitor.interval_secs {
                let interval = secs("monitor.interval_secs", s)?;
                if interval.is_zero() {
                    return Err(
                        ConfigError::new("monitor.interval_secs", "must be more than 0 seconds").into(),
                    );
                }
                b = b.monitor_interval(interval);
            }
            if let Some(url) = self.monitor.webhook {
                b = b.alert_webhook(url);
            }
            for rule in self.monitor.rules {
                b = b.monitor_rule(rule);
            }
        } else {
            b = b.without_monitor();
        }
        Ok(b.tiers(tiers))
    }
}
