//! The tool service of a stack built without one: every call is an error
//! that says so ([`ToolsNotConfigured`]).

use std::fmt;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use mantissa_core::{BoxError, ToolRequest, ToolResponse};

/// A tool was called on a stack built without a tool service
/// ([`AgentStackBuilder::tools`](super::AgentStackBuilder::tools)).
///
/// The health layer counts it as a `tool_error`, like any failing tool, and
/// the caller can find it with `err.is::<ToolsNotConfigured>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolsNotConfigured {
    /// The tool that was called.
    pub tool: String,
}

impl fmt::Display for ToolsNotConfigured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no tool service configured: `{}` was called on a stack built without `AgentStackBuilder::tools`",
            self.tool
        )
    }
}

impl std::error::Error for ToolsNotConfigured {}

/// The tool service of a stack built without one.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NoTools;

impl tower::Service<ToolRequest> for NoTools {
    type Response = ToolResponse;
    type Error = BoxError;
    type Future = Ready<Result<ToolResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        ready(Err(ToolsNotConfigured { tool: req.name }.into()))
    }
}
