//! Client bearer keys: kept as SHA-256 digests, compared in constant time.

use std::fmt;

use mantissa::core::AgentName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of a key. Its `Debug` shows no digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest([u8; 32]);

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

impl KeyDigest {
    /// The digest of `key`.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses `sha256:` followed by 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text
            .trim()
            .strip_prefix("sha256:")
            .ok_or_else(|| "must start with `sha256:`".to_owned())?;
        if hex.len() != 64 {
            return Err(format!(
                "expected 64 hex digits after `sha256:`, got {}",
                hex.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err("not a hex digit after `sha256:`".to_owned()),
            }
        }
        Ok(Self(out))
    }

    /// `sha256:` and the lowercase hex digest: what `hash = ` takes.
    pub fn to_config_string(&self) -> String {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// One client key.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// Its name in logs.
    pub name: String,
    /// Its digest.
    pub digest: KeyDigest,
    /// The agents it may act as (empty: any).
    pub agents: Vec<AgentName>,
    /// The agent of calls that name none.
    pub default_agent: Option<AgentName>,
}

impl ClientKey {
    /// Whether the key may act as `agent`.
    pub fn allows(&self, agent: &AgentName) -> bool {
        self.agents.is_empty() || self.agents.contains(agent)
    }
}

/// The configured client keys.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys {
    keys: Vec<ClientKey>,
}

impl ClientKeys {
    /// These keys.
    pub fn new(keys: Vec<ClientKey>) -> Self {
        Self { keys }
    }

    /// Whether no key is configured (no authentication).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose digest matches `presented`. Every configured digest is
    /// compared, in constant time, whatever matches.
    pub fn find(&self, presented: &str) -> Option<&ClientKey> {
        let digest = KeyDigest::of(presented);
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.0.ct_eq(&digest.0)) && found.is_none() {
                found = Some(key);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_and_match() {
        let d = KeyDigest::of("test");
        assert_eq!(
            d.to_config_string(),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(KeyDigest::parse(&d.to_config_string()), Ok(d));
        assert!(KeyDigest::parse("sha256:zz").is_err());
        assert!(KeyDigest::parse("md5:00").is_err());
        let keys = ClientKeys::new(vec![ClientKey {
            name: "k".into(),
            digest: d,
            agents: vec![],
            default_agent: None,
        }]);
        assert!(keys.find("test").is_some());
        assert!(keys.find("tes").is_none());
        assert_eq!(format!("{d:?}"), "KeyDigest(..)");
    }
}
