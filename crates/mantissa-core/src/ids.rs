//! Cheap, clonable identifiers: sessions, agents, models and precision tiers.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Creates the identifier from any string.
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(Arc::from(s.as_ref()))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                Self::new(s)
            }
        }
    };
}

string_id!(
    /// Identifies one conversation of one agent. Never used as a metric label.
    SessionId
);
string_id!(
    /// The name of an agent (for example `trader`). A bounded metric label.
    AgentName
);
string_id!(
    /// A model identifier as the provider knows it (for example `gpt-4o-mini`).
    ModelId
);
string_id!(
    /// A named precision tier (for example `low`, `medium`, `high`).
    ///
    /// A tier is only a name; its position in the ladder comes from a
    /// [`TierSet`](crate::TierSet).
    Tier
);

impl Tier {
    /// The default cheapest tier, `low`.
    pub fn low() -> Self {
        Self::new("low")
    }

    /// The default middle tier, `medium`.
    pub fn medium() -> Self {
        Self::new("medium")
    }

    /// The default most capable tier, `high`.
    pub fn high() -> Self {
        Self::new("high")
    }
}

impl Default for AgentName {
    fn default() -> Self {
        Self::new("default")
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new("default")
    }
}
