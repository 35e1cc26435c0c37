//! Loading a [`TierSet`] from TOML.
//!
//! The file lists tiers cheapest first; each tier lists its models in order
//! of preference. Unset model fields come from the built-in catalogue for
//! the models it knows ([`mantissa_core::models`]), else take
//! [`ModelSpec`](mantissa_core::ModelSpec)'s defaults (`provider = "openai"`,
//! `context_window = 128000`, no price).
//!
//! ```
//! let set = mantissa_triage::tier_set_from_toml(r#"
//!     [[tiers]]
//!     name = "low"
//!     [[tiers.models]]
//!     id = "gpt-4o-mini"
//!     provider = "openai"
//!     context_window = 128000
//!     input_per_mtok = 0.15
//!     output_per_mtok = 0.60
//!
//!     [[tiers]]
//!     name = "high"
//!     [[tiers.models]]
//!     id = "gpt-4o"
//!     input_per_mtok = 2.50
//!     output_per_mtok = 10.0
//! "#).unwrap();
//! assert_eq!(set.tiers.len(), 2);
//! assert_eq!(set.tiers[1].models[0].pricing.output_per_mtok, 10.0);
//!
//! // Errors name the field and the reason.
//! let err = mantissa_triage::tier_set_from_toml(r#"
//!     [[tiers]]
//!     name = "low"
//!     [[tiers.models]]
//!     id = "m"
//!     context_window = 0
//! "#).unwrap_err();
//! assert_eq!(err.field, "tiers[0].models[0].context_window");
//! ```

use std::collections::HashMap;
use std::path::Path;

use mantissa_core::{ConfigError, ModelId, TierSet};

/// Parses and validates a tier ladder from a TOML string.
///
/// Besides [`TierSet::validate`] (at least one tier, unique non-empty tier
/// names, at least one model per tier, sane windows and prices), a model id
/// may appear only once in the whole ladder: the router keeps one inner
/// service and one cooldown state per model.
pub fn tier_set_from_toml(text: &str) -> Result<TierSet, ConfigError> {
    parse(text, "<toml>")
}

/// Reads, parses and validates a tier ladder from a TOML file. Parse errors
/// carry the file's path as their field.
pub fn tier_set_from_toml_file(path: impl AsRef<Path>) -> Result<TierSet, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read file: {e}")))?;
    parse(&text, &path.display().to_string())
}

fn parse(text: &str, origin: &str) -> Result<TierSet, ConfigError> {
    let set: TierSet = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{col}")
            })
            .unwrap_or_default();
        ConfigError::new(format!("{origin}{at}"), e.message().trim().to_owned())
    })?;
    validate(&set)?;
    Ok(set)
}

/// [`TierSet::validate`] plus the uniqueness of model ids across tiers.
pub(crate) fn validate(set: &TierSet) -> Result<(), ConfigError> {
    set.validate()?;
    let mut seen: HashMap<&ModelId, (usize, usize)> = HashMap::new();
    for (i, t) in set.iter().enumerate() {
        for (j, m) in t.models.iter().enumerate() {
            if let Some((pi, pj)) = seen.insert(&m.id, (i, j)) {
                return Err(ConfigError::new(
                    format!("tiers[{i}].models[{j}].id"),
                    format!("model `{}` is already listed at tiers[{pi}].models[{pj}]", m.id),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[tiers]]
name = "low"
[[tiers.models]]
id = "small"
provider = "mock"
context_window = 16384
input_per_mtok = 0.15
output_per_mtok = 0.6

[[tiers]]
name = "high"
[[tiers.models]]
id = "large"
context_window = 200000
"#;

    #[test]
    fn parses_a_ladder() {
        let set = tier_set_from_toml(GOOD).unwrap();
        assert_eq!(set.tiers[0].name.as_str(), "low");
        assert_eq!(set.tiers[0].models[0].provider, "mock");
        assert_eq!(set.tiers[1].models[0].provider, "openai");
        assert_eq!(set.tiers[1].models[0].context_window, 200_000);
    }

    #[test]
    fn errors_name_field_and_reason() {
        let err = tier_set_from_toml("tiers = []").unwrap_err();
        assert_eq!(err.field, "tiers");
        let dup = GOOD.replace("id = \"large\"", "id = \"small\"");
        let err = tier_set_from_toml(&dup).unwrap_err();
        assert_eq!(err.field, "tiers[1].models[0].id");
        assert!(err.reason.contains("already listed"), "{err}");
        let neg = GOOD.replace("input_per_mtok = 0.15", "input_per_mtok = -1.0");
        let err = tier_set_from_toml(&neg).unwrap_err();
        assert_eq!(err.field, "tiers[0].models[0].input_per_mtok");
    }

    #[test]
    fn parse_errors_carry_the_path() {
        let err = tier_set_from_toml("[[tiers]]\nname = 3\n").unwrap_err();
        assert!(err.field.starts_with("<toml>:"), "{err}");
        let dir = std::env::temp_dir().join(format!("mantissa-triage-{}.toml", std::process::id()));
        std::fs::write(&dir, "[[tiers]\n").unwrap();
        let err = tier_set_from_toml_file(&dir).unwrap_err();
        assert!(err.field.starts_with(&dir.display().to_string()), "{err}");
        std::fs::write(&dir, GOOD).unwrap();
        assert_eq!(tier_set_from_toml_file(&dir).unwrap().tiers.len(), 2);
        let _ = std::fs::remove_file(&dir);
        let err = tier_set_from_toml_file("/nonexistent/tiers.toml").unwrap_err();
        assert!(err.reason.starts_with("cannot read file"), "{err}");
    }
}
