//! Errors of the router.

use std::error::Error as StdError;
use std::fmt;

use mantissa_core::{BoxError, ConfigError, FailureClass, ModelId, Tier};

/// Every eligible model was cooled down or failed.
///
/// `classify()` of this error returns the class of the last failure (its
/// [`source`](StdError::source) is the last model's error); when nothing
/// could be tried at all (every model cooled down) there is no source and
/// it classifies as [`FailureClass::Other`].
#[derive(Debug)]
pub struct AllModelsFailed {
    /// Models that were called, in order, with how each failed.
    pub tried: Vec<(ModelId, FailureClass)>,
    /// Models skipped because they were cooled down.
    pub cooled_down: Vec<ModelId>,
    pub(crate) last: Option<BoxError>,
}

impl AllModelsFailed {
    /// The class of the last failure, if a model was called.
    pub fn last_class(&self) -> Option<FailureClass> {
        self.tried.last().map(|(_, c)| *c)
    }
}

impl fmt::Display for AllModelsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("all models failed")?;
        if !self.tried.is_empty() {
            f.write_str(": tried ")?;
            for (i, (m, c)) in self.tried.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{m} ({c})")?;
            }
        }
        if !self.cooled_down.is_empty() {
            f.write_str(if self.tried.is_empty() { ": " } else { "; " })?;
            f.write_str("cooled down ")?;
            for (i, m) in self.cooled_down.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{m}")?;
            }
        }
        Ok(())
    }
}

impl StdError for AllModelsFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.last.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The request named a tier that is not in the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTier {
    /// The tier named.
    pub tier: Tier,
}

impl fmt::Display for UnknownTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown tier `{}`", self.tier)
    }
}

impl StdError for UnknownTier {}

/// The request named a model that is not in the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownModel {
    /// The model named.
    pub model: ModelId,
}

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown model `{}`", self.model)
    }
}

impl StdError for UnknownModel {}

/// Why a [`TierRouter`](super::TierRouter) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouterBuildError {
    /// The ladder or a setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A model of the ladder has no service.
    #[error("model `{0}` has no service")]
    MissingService(ModelId),
    /// A service was given for a model that is not in the ladder.
    #[error("model `{0}` is not in the tier set")]
    UnknownModel(ModelId),
    /// The default tier is not in the ladder.
    #[error("default tier `{0}` is not in the tier set")]
    UnknownTier(Tier),
}
