//! Models, prices and the ordered ladder of precision tiers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::ids::{ModelId, Tier};
use crate::models::KnownModels;
use crate::response::Usage;

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// Dollars per million input (prompt) tokens.
    #[serde(default)]
    pub input_per_mtok: f64,
    /// Dollars per million output (completion) tokens.
    #[serde(default)]
    pub output_per_mtok: f64,
    /// Dollars per million cached input tokens, for providers that price
    /// them apart. `None`: cached input tokens cost the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
}

impl Pricing {
    /// Prices per million input and output tokens.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
            cached_input_per_mtok: None,
        }
    }

    /// Sets the price per million cached input tokens.
    pub fn with_cached_input(mut self, per_mtok: f64) -> Self {
        self.cached_input_per_mtok = Some(per_mtok);
        self
    }

    /// Cost in dollars of `usage`. Its cached input tokens (part of its
    /// input tokens) cost the cached-input price where there is one.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let (uncached, cached_price) = match self.cached_input_per_mtok {
            Some(price) => (usage.input_tokens - cached, cached as f64 * price),
            None => (usage.input_tokens, 0.0),
        };
        (uncached as f64 * self.input_per_mtok
            + cached_price
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Where a [`ModelSpec`]'s prices come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PriceSource {
    /// Set in configuration or code.
    Configured,
    /// Taken from the built-in catalogue ([`KnownModels`]).
    Catalogue,
    /// Not known: calls cost 0 and are counted as calls of unknown cost.
    #[default]
    Unknown,
}

fn default_provider() -> String {
    "openai".to_owned()
}

fn default_context_window() -> u32 {
    128_000
}

/// One model a tier can use.
///
/// A model the built-in catalogue knows ([`KnownModels::lookup`]) takes its
/// provider, context window and prices from there unless they are given,
/// in code ([`ModelSpec::new`] then the setters) or in configuration
/// (fields left out of a `[[tiers.models]]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ModelSpecFields")]
pub struct ModelSpec {
    /// The model id sent upstream and used as the `model` label.
    pub id: ModelId,
    /// The provider name (`gen_ai_provider_name`), for example `openai`.
    pub provider: String,
    /// Context window in tokens.
    pub context_window: u32,
    /// Token prices.
    #[serde(flatten)]
    pub pricing: Pricing,
    /// Where the prices come from.
    #[serde(skip)]
    pub price_source: PriceSource,
}

/// A `[[tiers.models]]` table as written: fields left out come from the
/// catalogue, then from the defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpecFields {
    id: ModelId,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    context_window: Option<u32>,
    #[serde(default)]
    input_per_mtok: Option<f64>,
    #[serde(default)]
    output_per_mtok: Option<f64>,
    #[serde(default)]
    cached_input_per_mtok: Option<f64>,
}

impl From<ModelSpecFields> for ModelSpec {
    fn from(f: ModelSpecFields) -> Self {
        let mut spec = ModelSpec::new(f.id);
        if let Some(p) = f.provider {
            spec.provider = p;
        }
        if let Some(w) = f.context_window {
            spec.context_window = w;
        }
        if f.input_per_mtok.is_some() || f.output_per_mtok.is_some() || f.cached_input_per_mtok.is_some() {
            let p = &mut spec.pricing;
            p.input_per_mtok = f.input_per_mtok.unwrap_or(p.input_per_mtok);
            p.output_per_mtok = f.output_per_mtok.unwrap_or(p.output_per_mtok);
            p.cached_input_per_mtok = f.cached_input_per_mtok.or(p.cached_input_per_mtok);
            spec.price_source = PriceSource::Configured;
        }
        spec
    }
}

impl ModelSpec {
    /// A model with the catalogue's provider, context window and prices if
    /// the catalogue knows `id` ([`KnownModels::lookup`]: provider prefixes
    /// and snapshot dates are ignored), otherwise a provider of `openai`, a
    /// 128k window and no price ([`PriceSource::Unknown`]).
    pub fn new(id: impl Into<ModelId>) -> Self {
        let id = id.into();
        match KnownModels::lookup(id.as_str()) {
            Some(known) => Self {
                id,
                provider: known.provider.to_owned(),
                context_window: known.context_window,
                pricing: Pricing {
                    input_per_mtok: known.input_per_mtok,
                    output_per_mtok: known.output_per_mtok,
                    cached_input_per_mtok: known.cached_input_per_mtok,
                },
                price_source: PriceSource::Catalogue,
            },
            None => Self {
                id,
                provider: default_provider(),
                context_window: default_context_window(),
                pricing: Pricing::default(),
                price_source: PriceSource::Unknown,
            },
        }
    }

    /// Whether calls to this model can be priced (configured or catalogued
    /// prices).
    pub fn is_priced(&self) -> bool {
        self.price_source != PriceSource::Unknown
    }

    /// Sets the provider name.
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = provider.into();
        self
    }

    /// Sets the context window in tokens.
    pub fn context_window(mut self, tokens: u32) -> Self {
        self.context_window = tokens;
        self
    }

    /// Sets prices per million input and output tokens (and drops any
    /// catalogued cached-input price).
    pub fn pricing(mut self, input_per_mtok: f64, output_per_mtok: f64) -> Self {
        self.pricing = Pricing::new(input_per_mtok, output_per_mtok);
        self.price_source = PriceSource::Configured;
        self
    }

    /// Sets the price per million cached input tokens.
    pub fn cached_input_pricing(mut self, per_mtok: f64) -> Self {
        self.pricing.cached_input_per_mtok = Some(per_mtok);
        self.price_source = PriceSource::Configured;
        self
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.id.as_str().trim().is_empty() {
            return Err(ConfigError::new(format!("{field}.id"), "must not be empty"));
        }
        if self.context_window == 0 {
            return Err(ConfigError::new(
                format!("{field}.context_window"),
                "must be greater than 0",
            ));
        }
        for (name, v) in [
            ("input_per_mtok", self.pricing.input_per_mtok),
            ("output_per_mtok", self.pricing.output_per_mtok),
            (
                "cached_input_per_mtok",
                self.pricing.cached_input_per_mtok.unwrap_or(0.0),
            ),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(ConfigError::new(
                    format!("{field}.{name}"),
                    format!("must be a finite, non-negative price, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// One tier and the models that serve it, in order of preference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierConfig {
    /// The tier name.
    pub name: Tier,
    /// Its models, preferred first.
    pub models: Vec<ModelSpec>,
}

impl TierConfig {
    /// A tier served by `models`.
    pub fn new(name: impl Into<Tier>, models: Vec<ModelSpec>) -> Self {
        Self {
            name: name.into(),
            models,
        }
    }
}

/// The ordered ladder of tiers, cheapest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierSet {
    /// Tiers from lowest to highest precision.
    pub tiers: Vec<TierConfig>,
}

impl TierSet {
    /// A validated ladder (see [`TierSet::validate`]).
    pub fn new(tiers: Vec<TierConfig>) -> Result<Self, ConfigError> {
        let set = Self { tiers };
        set.validate()?;
        Ok(set)
    }

    /// Checks that there is at least one tier, names are unique and non-empty,
    /// every tier has a model, and model settings are sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tiers.is_empty() {
            return Err(ConfigError::new("tiers", "at least one tier is required"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tiers.iter().enumerate() {
            let field = format!("tiers[{i}]");
            if t.name.as_str().trim().is_empty() {
                return Err(ConfigError::new(format!("{field}.name"), "must not be empty"));
            }
            if !seen.insert(t.name.clone()) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    format!("duplicate tier `{}`", t.name),
                ));
            }
            if t.models.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.models"),
                    "a tier needs at least one model",
                ));
            }
            for (j, m) in t.models.iter().enumerate() {
                m.validate(&format!("{field}.models[{j}]"))?;
            }
        }
        Ok(())
    }

    /// The tiers, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = &TierConfig> {
        self.tiers.iter()
    }

    /// Position of `tier` in the ladder (0 = lowest).
    pub fn rank(&self, tier: &Tier) -> Option<usize> {
        self.tiers.iter().position(|t| &t.name == tier)
    }

    /// The configuration of `tier`.
    pub fn get(&self, tier: &Tier) -> Option<&TierConfig> {
        self.tiers.iter().find(|t| &t.name == tier)
    }

    /// The highest tier.
    pub fn top(&self) -> Option<&TierConfig> {
        self.tiers.last()
    }

    /// The lowest tier.
    pub fn bottom(&self) -> Option<&TierConfig> {
        self.tiers.first()
    }

    /// A [`ModelCatalog`] of every model in the ladder, tagged with its tier.
    pub fn catalog(&self) -> ModelCatalog {
        let mut catalog = ModelCatalog::default();
        for t in &self.tiers {
            for m in &t.models {
                catalog.insert_with_tier(m.clone(), Some(t.name.clone()));
            }
        }
        catalog
    }
}

impl Default for TierSet {
    /// Three tiers, `low` / `medium` / `high`, served by the mock models
    /// `mock-small`, `mock-medium` and `mock-large` with illustrative prices
    /// (0.15/0.60, 1.00/4.00 and 5.00/15.00 dollars per million tokens).
    fn default() -> Self {
        Self {
            tiers: vec![
                TierConfig::new(
                    Tier::low(),
                    vec![
                        ModelSpec::new("mock-small")
                            .provider("mock")
                            .context_window(16_384)
                            .pricing(0.15, 0.60),
                    ],
                ),
                TierConfig::new(
                    Tier::medium(),
                    vec![
                        ModelSpec::new("mock-medium")
                            .provider("mock")
                            .context_window(65_536)
                            .pricing(1.0, 4.0),
                    ],
                ),
                TierConfig::new(
                    Tier::high(),
                    vec![
                        ModelSpec::new("mock-large")
                            .provider("mock")
                            .context_window(200_000)
                            .pricing(5.0, 15.0),
                    ],
                ),
            ],
        }
    }
}

/// The label used for models (and other label values) not in configuration.
pub const OTHER_LABEL: &str = "other";

#[derive(Debug, Clone)]
struct CatalogEntry {
    spec: ModelSpec,
    tier: Option<Tier>,
}

/// The set of configured models: bounds the `model` label and prices calls.
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    models: HashMap<ModelId, CatalogEntry>,
}

impl ModelCatalog {
    /// An empty catalog: every model label folds to `other` and costs nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a model.
    pub fn insert(&mut self, spec: ModelSpec) {
        self.insert_with_tier(spec, None);
    }

    /// Adds (or replaces) a model that belongs to `tier`.
    pub fn insert_with_tier(&mut self, spec: ModelSpec, tier: Option<Tier>) {
        self.models.insert(spec.id.clone(), CatalogEntry { spec, tier });
    }

    /// Adds a model (builder style).
    pub fn with(mut self, spec: ModelSpec) -> Self {
        self.insert(spec);
        self
    }

    /// The spec of a configured model.
    pub fn get(&self, model: &str) -> Option<&ModelSpec> {
        self.models.get(model).map(|e| &e.spec)
    }

    /// The tier a configured model belongs to.
    pub fn tier_of(&self, model: &str) -> Option<&Tier> {
        self.models.get(model).and_then(|e| e.tier.as_ref())
    }

    /// The model id if configured, otherwise [`OTHER_LABEL`].
    pub fn label<'a>(&'a self, model: &str) -> &'a str {
        match self.models.get_key_value(model) {
            Some((k, _)) => k.as_str(),
            None => OTHER_LABEL,
        }
    }

    /// Cost in dollars of `usage` on `model` (0 for unknown models).
    pub fn cost(&self, model: &str, usage: &Usage) -> f64 {
        self.get(model).map(|m| m.pricing.cost(usage)).unwrap_or(0.0)
    }

    /// Iterates over the configured models.
    pub fn iter(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.values().map(|e| &e.spec)
    }

    /// Number of configured models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether no model is configured.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}
