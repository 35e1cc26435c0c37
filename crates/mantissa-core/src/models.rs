//! The built-in model catalogue: list prices and context windows of the
//! models teams use today, so a tier ladder that names real models prices
//! its calls without writing prices into the configuration.
//!
//! [`ModelSpec::new`](crate::ModelSpec::new) and a configured model without
//! prices take them from here; explicit prices and windows always win.
//!
//! ```
//! use mantissa_core::models::KnownModels;
//!
//! let m = KnownModels::lookup("openai/gpt-4o-2024-08-06").unwrap();
//! assert_eq!(m.id, "gpt-4o");
//! assert_eq!((m.input_per_mtok, m.output_per_mtok), (2.50, 10.00));
//! assert!(KnownModels::lookup("my-finetune").is_none());
//! ```
//!
//! # Source and date
//!
//! Prices are the providers' published list prices in US dollars per million
//! tokens, standard (non-batch) tier, from their pricing pages:
//! <https://openai.com/api/pricing/>, <https://www.anthropic.com/pricing#api>,
//! <https://ai.google.dev/gemini-api/docs/pricing>,
//! <https://mistral.ai/pricing#api-pricing>,
//! <https://api-docs.deepseek.com/quick_start/pricing>,
//! <https://groq.com/pricing/> and <https://www.together.ai/pricing>.
//! They are the prices as the author last confirmed them, published in late
//! 2025 ([`PRICES_AS_OF`]); the table was written on [`WRITTEN_ON`]. Prices
//! change: check the pages above and override in configuration where it
//! matters. Where a provider's price depends on the prompt length (Gemini
//! 2.5 Pro above 200k tokens), the table holds the short-prompt price.
//! Cache *writes* (Anthropic) are not priced; cached *reads* are, where the
//! provider lists them.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// When the prices of the table were last confirmed against the providers'
/// pages (see the [module docs](self)).
pub const PRICES_AS_OF: &str = "2025-11";

/// When the table was written.
pub const WRITTEN_ON: &str = "2026-12-03";

/// One model of the built-in catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownModel {
    /// The canonical id (without provider prefix or snapshot date).
    pub id: &'static str,
    /// Other ids the same model is served under (hosts' names, aliases).
    pub aliases: &'static [&'static str],
    /// The provider, as an OpenTelemetry `gen_ai.provider.name` value
    /// (`openai`, `anthropic`, `gcp.gemini`, `mistral_ai`, `deepseek`,
    /// `groq`) or the host that sets the price (`together`).
    pub provider: &'static str,
    /// Context window in tokens.
    pub context_window: u32,
    /// Dollars per million input tokens.
    pub input_per_mtok: f64,
    /// Dollars per million cached input tokens, where the provider lists a
    /// separate price.
    pub cached_input_per_mtok: Option<f64>,
    /// Dollars per million output tokens.
    pub output_per_mtok: f64,
}

const fn m(
    id: &'static str,
    provider: &'static str,
    context_window: u32,
    input: f64,
    cached: Option<f64>,
    output: f64,
) -> KnownModel {
    KnownModel {
        id,
        aliases: &[],
        provider,
        context_window,
        input_per_mtok: input,
        cached_input_per_mtok: cached,
        output_per_mtok: output,
    }
}

const fn aka(mut model: KnownModel, aliases: &'static [&'static str]) -> KnownModel {
    model.aliases = aliases;
    model
}

const K128: u32 = 128_000;
const K200: u32 = 200_000;
const M1: u32 = 1_047_576;
const GEMINI_1M: u32 = 1_048_576;
const K131: u32 = 131_072;

/// The table. Ids are lower case; lookups are case-insensitive.
static TABLE: &[KnownModel] = &[
    // ---- OpenAI (openai.com/api/pricing) ----
    m("gpt-5", "openai", 400_000, 1.25, Some(0.125), 10.00),
    m("gpt-5-mini", "openai", 400_000, 0.25, Some(0.025), 2.00),
    m("gpt-5-nano", "openai", 400_000, 0.05, Some(0.005), 0.40),
    m("gpt-4.1", "openai", M1, 2.00, Some(0.50), 8.00),
    m("gpt-4.1-mini", "openai", M1, 0.40, Some(0.10), 1.60),
    m("gpt-4.1-nano", "openai", M1, 0.10, Some(0.025), 0.40),
    m("gpt-4o", "openai", K128, 2.50, Some(1.25), 10.00),
    // The first gpt-4o snapshot kept its launch price.
    m("gpt-4o-2024-05-13", "openai", K128, 5.00, None, 15.00),
    m("chatgpt-4o-latest", "openai", K128, 5.00, None, 15.00),
    m("gpt-4o-mini", "openai", K128, 0.15, Some(0.075), 0.60),
    m("o1", "openai", K200, 15.00, Some(7.50), 60.00),
    m("o3", "openai", K200, 2.00, Some(0.50), 8.00),
    m("o3-mini", "openai", K200, 1.10, Some(0.55), 4.40),
    m("o4-mini", "openai", K200, 1.10, Some(0.275), 4.40),
    m("gpt-4-turbo", "openai", K128, 10.00, None, 30.00),
    m("gpt-3.5-turbo", "openai", 16_385, 0.50, None, 1.50),
    // ---- Anthropic (anthropic.com/pricing); cached = cache read ----
    aka(
        m("claude-opus-4-5", "anthropic", K200, 5.00, Some(0.50), 25.00),
        &["claude-opus-4.5"],
    ),
    aka(
        m("claude-opus-4-1", "anthropic", K200, 15.00, Some(1.50), 75.00),
        &["claude-opus-4.1"],
    ),
    aka(
        m("claude-opus-4", "anthropic", K200, 15.00, Some(1.50), 75.00),
        &["claude-opus-4-0"],
    ),
    aka(
        m("claude-sonnet-4-5", "anthropic", K200, 3.00, Some(0.30), 15.00),
        &["claude-sonnet-4.5"],
    ),
    aka(
        m("claude-sonnet-4", "anthropic", K200, 3.00, Some(0.30), 15.00),
        &["claude-sonnet-4-0"],
    ),
    aka(
        m("claude-haiku-4-5", "anthropic", K200, 1.00, Some(0.10), 5.00),
        &["claude-haiku-4.5"],
    ),
    aka(
        m("claude-3-7-sonnet", "anthropic", K200, 3.00, Some(0.30), 15.00),
        &["claude-3.7-sonnet"],
    ),
    aka(
        m("claude-3-5-sonnet", "anthropic", K200, 3.00, Some(0.30), 15.00),
        &["claude-3.5-sonnet"],
    ),
    aka(
        m("claude-3-5-haiku", "anthropic", K200, 0.80, Some(0.08), 4.00),
        &["claude-3.5-haiku"],
    ),
    m("claude-3-haiku", "anthropic", K200, 0.25, Some(0.03), 1.25),
    // ---- Google Gemini (ai.google.dev/gemini-api/docs/pricing), paid tier ----
    m("gemini-2.5-pro", "gcp.gemini", GEMINI_1M, 1.25, None, 10.00),
    m("gemini-2.5-flash", "gcp.gemini", GEMINI_1M, 0.30, None, 2.50),
    m("gemini-2.5-flash-lite", "gcp.gemini", GEMINI_1M, 0.10, None, 0.40),
    m("gemini-2.0-flash", "gcp.gemini", GEMINI_1M, 0.10, None, 0.40),
    m(
        "gemini-2.0-flash-lite",
        "gcp.gemini",
        GEMINI_1M,
        0.075,
        None,
        0.30,
    ),
    // ---- Mistral (mistral.ai/pricing) ----
    m("mistral-large", "mistral_ai", K131, 2.00, None, 6.00),
    m("mistral-medium", "mistral_ai", K131, 0.40, None, 2.00),
    m("mistral-small", "mistral_ai", K131, 0.10, None, 0.30),
    m("codestral", "mistral_ai", 256_000, 0.30, None, 0.90),
    aka(
        m("open-mistral-nemo", "mistral_ai", K131, 0.15, None, 0.15),
        &["mistral-nemo"],
    ),
    // ---- DeepSeek (api-docs.deepseek.com/quick_start/pricing), V3.2 prices ----
    m("deepseek-chat", "deepseek", K128, 0.28, Some(0.028), 0.42),
    m("deepseek-reasoner", "deepseek", K128, 0.28, Some(0.028), 0.42),
    // ---- open models, priced as the named host serves them ----
    // Groq (groq.com/pricing)
    aka(
        m("llama-3.3-70b-versatile", "groq", K131, 0.59, None, 0.79),
        &["llama-3.3-70b-instruct", "llama-3.3-70b"],
    ),
    aka(
        m("llama-3.1-8b-instant", "groq", K131, 0.05, None, 0.08),
        &["llama-3.1-8b-instruct", "llama-3.1-8b"],
    ),
    // Together AI (together.ai/pricing)
    m("llama-3.3-70b-instruct-turbo", "together", K131, 0.88, None, 0.88),
    aka(
        m("qwen2.5-72b-instruct-turbo", "together", 32_768, 1.20, None, 1.20),
        &["qwen2.5-72b-instruct", "qwen-2.5-72b-instruct"],
    ),
    aka(
        m("qwen2.5-7b-instruct-turbo", "together", 32_768, 0.30, None, 0.30),
        &["qwen2.5-7b-instruct", "qwen-2.5-7b-instruct"],
    ),
];

/// The built-in catalogue (see the [module docs](self) for its source).
#[derive(Debug, Clone, Copy)]
pub struct KnownModels;

impl KnownModels {
    /// The entry of `id`, case-insensitively. A provider prefix
    /// (`openai/gpt-4o`, `models/gemini-2.5-pro`, `meta-llama/…`) is
    /// dropped, and so are snapshot suffixes: `-2024-08-06`, `-20250514`,
    /// `@20240620`, `-latest`, and a 4-digit `-0613` / `-2411`. An exact
    /// entry for a snapshot (`gpt-4o-2024-05-13`) wins over its family.
    pub fn lookup(id: &str) -> Option<&'static KnownModel> {
        let index = index();
        let base = match id.rsplit_once('/') {
            Some((_, name)) => name,
            None => id,
        };
        let mut name = base.trim().to_ascii_lowercase();
        loop {
            if let Some(&i) = index.get(name.as_str()) {
                return TABLE.get(i);
            }
            let shorter = strip_snapshot(&name)?;
            name.truncate(shorter);
        }
    }

    /// Every entry of the table.
    pub fn all() -> &'static [KnownModel] {
        TABLE
    }
}

fn index() -> &'static HashMap<&'static str, usize> {
    static INDEX: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map = HashMap::new();
        for (i, model) in TABLE.iter().enumerate() {
            map.insert(model.id, i);
            for alias in model.aliases {
                map.insert(*alias, i);
            }
        }
        map
    })
}

/// The length of `name` without its last snapshot suffix, if it has one.
fn strip_snapshot(name: &str) -> Option<usize> {
    if let Some((head, _)) = name.rsplit_once('@') {
        return Some(head.len());
    }
    if let Some(head) = name.strip_suffix("-latest") {
        return Some(head.len());
    }
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let b = name.as_bytes();
    // -YYYY-MM-DD
    if let Some(tail) = b.len().checked_sub(11).and_then(|at| b.get(at..)) {
        if b.len() > 11
            && tail[0] == b'-'
            && tail[5] == b'-'
            && tail[8] == b'-'
            && digits(&tail[1..5])
            && digits(&tail[6..8])
            && digits(&tail[9..11])
        {
            return Some(b.len() - 11);
        }
    }
    // -YYYYMMDD or -MMDD / -YYMM
    let (head, tail) = name.rsplit_once('-')?;
    let t = tail.as_bytes();
    (!head.is_empty() && (t.len() == 8 || t.len() == 4) && digits(t)).then_some(head.len())
}

/// The most model ids [`warn_unpriced`] remembers; ids past it warn no more.
const MAX_WARNED: usize = 1024;

/// Logs once per model id (a `tracing` warning) that calls to `model` cost
/// nothing because its price is unknown. Returns whether it warned.
pub fn warn_unpriced(model: &str) -> bool {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let set = WARNED.get_or_init(|| Mutex::new(HashSet::new()));
    let Ok(mut set) = set.lock() else {
        return false;
    };
    if set.len() >= MAX_WARNED || set.contains(model) {
        return false;
    }
    set.insert(model.to_owned());
    drop(set);
    tracing::warn!(
        model,
        "no price known for this model: its calls cost 0 and are counted in \
         mantissa_unknown_cost_calls_total; set input_per_mtok/output_per_mtok in the configuration"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_aliases_are_unique_lower_case_and_priced() {
        let mut seen = HashSet::new();
        for m in TABLE {
            for id in std::iter::once(&m.id).chain(m.aliases) {
                assert_eq!(*id, id.to_ascii_lowercase(), "{id}");
                assert!(seen.insert(*id), "duplicate id {id}");
            }
            assert!(m.input_per_mtok > 0.0 && m.output_per_mtok > 0.0, "{}", m.id);
            assert!(
                m.cached_input_per_mtok.is_none_or(|c| c < m.input_per_mtok),
                "{}",
                m.id
            );
            assert!(m.context_window >= 16_000, "{}", m.id);
        }
    }

    #[test]
    fn prefixes_and_snapshots_resolve_to_their_entry() {
        for (id, want) in [
            ("gpt-4o", "gpt-4o"),
            ("GPT-4o", "gpt-4o"),
            ("openai/gpt-4o", "gpt-4o"),
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
            ("o3-2025-04-16", "o3"),
            ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
            ("claude-sonnet-4-20250514", "claude-sonnet-4"),
            ("anthropic/claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
            ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
            ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
            ("models/gemini-2.5-pro", "gemini-2.5-pro"),
            ("mistral-large-2411", "mistral-large"),
            ("mistral-small-latest", "mistral-small"),
            ("deepseek/deepseek-chat", "deepseek-chat"),
            (
                "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                "llama-3.3-70b-instruct-turbo",
            ),
            ("Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b-instruct-turbo"),
        ] {
            assert_eq!(KnownModels::lookup(id).map(|m| m.id), Some(want), "{id}");
        }
    }

    #[test]
    fn unknown_and_near_miss_ids_are_unknown() {
        for id in [
            "",
            "mock-small",
            "gpt-4o-mini-x",
            "o3-pro-2025",
            "my/own/model",
            "-2024",
            "2024-08-06",
        ] {
            assert_eq!(KnownModels::lookup(id), None, "{id}");
        }
    }

    #[test]
    fn warns_once_per_model() {
        assert!(warn_unpriced("models-rs-test-unpriced"));
        assert!(!warn_unpriced("models-rs-test-unpriced"));
    }

    #[test]
    fn model_specs_take_catalogue_defaults_and_configuration_wins() {
        use crate::{ModelSpec, PriceSource, Usage};
        let spec = ModelSpec::new("openai/gpt-4o-mini-2024-07-18");
        assert_eq!(spec.price_source, PriceSource::Catalogue);
        assert_eq!(spec.context_window, 128_000);
        assert_eq!(spec.provider, "openai");
        assert_eq!(
            spec.id.as_str(),
            "openai/gpt-4o-mini-2024-07-18",
            "the id sent upstream is kept"
        );
        // 1M input of which 400k cached, 100k output: 0.6*0.15 + 0.4*0.075 + 0.1*0.60.
        let usage = Usage::new(1_000_000, 100_000).with_cached_input(400_000);
        assert!((spec.pricing.cost(&usage) - 0.18).abs() < 1e-9);

        let claude = ModelSpec::new("claude-sonnet-4-20250514");
        assert_eq!(
            (claude.provider.as_str(), claude.context_window),
            ("anthropic", 200_000)
        );

        let unknown = ModelSpec::new("my-finetune");
        assert_eq!(unknown.price_source, PriceSource::Unknown);
        assert!(!unknown.is_priced());
        assert_eq!(unknown.pricing.cost(&Usage::new(1_000, 1_000)), 0.0);

        let explicit = ModelSpec::new("gpt-4o").pricing(1.0, 2.0);
        assert_eq!(explicit.price_source, PriceSource::Configured);
        assert_eq!(explicit.pricing.cached_input_per_mtok, None);

        // Configuration: fields left out come from the catalogue.
        let cfg: ModelSpec =
            serde_json::from_value(serde_json::json!({"id": "gpt-4o", "output_per_mtok": 12.0})).unwrap();
        assert_eq!(cfg.price_source, PriceSource::Configured);
        assert_eq!(
            (cfg.pricing.input_per_mtok, cfg.pricing.output_per_mtok),
            (2.5, 12.0)
        );
        assert_eq!(cfg.context_window, 128_000);
        let cfg: ModelSpec =
            serde_json::from_value(serde_json::json!({"id": "o3", "context_window": 50_000})).unwrap();
        assert_eq!(
            (cfg.price_source, cfg.context_window),
            (PriceSource::Catalogue, 50_000)
        );
        let free: ModelSpec = serde_json::from_value(
            serde_json::json!({"id": "local", "input_per_mtok": 0.0, "output_per_mtok": 0.0}),
        )
        .unwrap();
        assert!(free.is_priced(), "explicitly free is a known price");
        let typo = serde_json::from_value::<ModelSpec>(serde_json::json!({"id": "x", "input_per_mtk": 1.0}));
        assert!(
            typo.is_err(),
            "unknown fields are errors, not silently catalogue prices"
        );
    }
}
