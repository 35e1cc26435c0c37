//! [`Window`]: which rolling window of the health registry a signal reads.

use mantissa_health::{SubjectHealth, WindowStats};
use serde::{Deserialize, Serialize};

/// A rolling window of the health registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Window {
    /// The last minute (12 slots of 5 s).
    #[default]
    #[serde(rename = "1m")]
    OneMinute,
    /// The last 15 minutes (15 slots of 60 s).
    #[serde(rename = "15m")]
    FifteenMinutes,
}

impl Window {
    /// `1m` or `15m`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::FifteenMinutes => "15m",
        }
    }

    /// Parses `1m` or `15m`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1m" => Some(Window::OneMinute),
            "15m" => Some(Window::FifteenMinutes),
            _ => None,
        }
    }

    /// The window's statistics in `h`.
    pub fn of<'a>(&self, h: &'a SubjectHealth) -> &'a WindowStats {
        match self {
            Window::OneMinute => &h.last_1m,
            Window::FifteenMinutes => &h.last_15m,
        }
    }
}
