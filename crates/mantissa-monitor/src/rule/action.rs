//! What the monitor does when an alert starts firing: an [`Action`].

use std::time::Duration;

use mantissa_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::selector::SubjectKind;
use crate::duration;

/// What the monitor does when an alert starts firing. Executed once per
/// firing, through the controls given to the monitor's builder; the outcome is
/// recorded in the alert's [`actions`](crate::Alert::actions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Cool the alert's model down (model rules only), through
    /// [`ModelControl`](mantissa_core::control::ModelControl).
    CoolDown {
        /// How long.
        #[serde(with = "duration")]
        duration: Duration,
        /// Also end the cooldown when the alert resolves. Defaults to `false`.
        #[serde(default)]
        restore_on_resolve: bool,
    },
    /// Ask the reset layer to compact sessions' context, through
    /// [`SessionControl`](mantissa_core::control::SessionControl).
    ResetSessions {
        /// These sessions, by id.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sessions: Vec<String>,
        /// Also the sessions of the alert's subject among the registry's
        /// latest `from_journal` events (for an agent: its sessions; for a
        /// model or tool: the sessions that called it). The registry keeps no
        /// per-session windows, so its event journal is where sessions are
        /// found. Defaults to 0: none.
        #[serde(default)]
        from_journal: usize,
    },
    /// Pin the alert's agent to a tier (agent rules only), through
    /// [`TierControl`](mantissa_core::control::TierControl): lower it to
    /// save cost, raise it to regain precision.
    SetTier {
        /// The tier.
        tier: String,
        /// Lift the override when the alert resolves. Defaults to `true`.
        #[serde(default = "yes")]
        restore_on_resolve: bool,
    },
}

fn yes() -> bool {
    true
}

impl Action {
    /// Cool the model down for `duration`.
    pub fn cool_down(duration: Duration) -> Self {
        Action::CoolDown {
            duration,
            restore_on_resolve: false,
        }
    }

    /// Reset the alert subject's sessions among the latest `events` journal events.
    pub fn reset_recent_sessions(events: usize) -> Self {
        Action::ResetSessions {
            sessions: Vec::new(),
            from_journal: events,
        }
    }

    /// Reset these sessions.
    pub fn reset_sessions<I, S>(sessions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Action::ResetSessions {
            sessions: sessions.into_iter().map(Into::into).collect(),
            from_journal: 0,
        }
    }

    /// Pin the agent to `tier` while the alert fires.
    pub fn set_tier(tier: impl Into<String>) -> Self {
        Action::SetTier {
            tier: tier.into(),
            restore_on_resolve: true,
        }
    }

    /// The snake_case name of the action type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::CoolDown { .. } => "cool_down",
            Action::ResetSessions { .. } => "reset_sessions",
            Action::SetTier { .. } => "set_tier",
        }
    }

    pub(super) fn validate(&self, field: &str, kind: SubjectKind) -> Result<(), ConfigError> {
        match self {
            Action::CoolDown { duration, .. } => {
                if kind != SubjectKind::Model {
                    return Err(ConfigError::new(
                        format!("{field}.type"),
                        format!("cool_down needs a model rule, this rule watches {kind}s"),
                    ));
                }
                if duration.is_zero() {
                    return Err(ConfigError::new(
                        format!("{field}.duration"),
                        "must be longer than zero",
                    ));
                }
                Ok(())
            }
            Action::ResetSessions {
                sessions,
                from_journal,
            } => {
                if sessions.is_empty() && *from_journal == 0 {
                    return Err(ConfigError::new(
                        field.to_owned(),
                        "reset_sessions needs `sessions` or `from_journal`",
                    ));
                }
                Ok(())
            }
            Action::SetTier { tier, .. } => {
                if kind != SubjectKind::Agent {
                    return Err(ConfigError::new(
                        format!("{field}.type"),
                        format!("set_tier needs an agent rule, this rule watches {kind}s"),
                    ));
                }
                if tier.is_empty() {
                    return Err(ConfigError::new(format!("{field}.tier"), "must not be empty"));
                }
                Ok(())
            }
        }
    }
}
