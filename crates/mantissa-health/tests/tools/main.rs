//! Tool calls through the health layer: `is_error` responses and `Err`s are
//! both tool errors, tool names are bounded by the allow-list, and tools
//! record no tokens or cost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::catalog::{self, labels};
use mantissa_core::{BoxError, EventKind, FailureClass, ToolRequest, ToolResponse};
use mantissa_health::HealthLayer;
use mantissa_mock::metrics::MetricsCapture;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[test]
fn tool_calls_count_is_error_and_err_as_tool_errors() {
    let capture = MetricsCapture::new();
    recorded(&capture, async {
        let mut metrics = Metrics::new(&capture);
        let inner = service_fn(|req: ToolRequest| async move {
            match req.name.as_str() {
                "get_price" => Ok(ToolResponse::error("no such symbol")),
                "rm_rf" => Err::<ToolResponse, BoxError>("refused".into()),
                _ => Ok(ToolResponse::ok("42")),
            }
        });
        let layer = HealthLayer::new().tools(["get_price", "get_news"]);
        let registry = layer.registry().clone();
        let mut svc = layer.layer(inner);
        for name in ["get_price", "get_news", "rm_rf"] {
            let _ = svc
                .ready()
                .await
                .unwrap()
                .call(tool_req("s", "trader", name))
                .await;
        }

        let s = metrics.read();
        let calls = |tool, outcome, error: Option<&'static str>| {
            let mut l = vec![
                ("kind", "tool"),
                ("agent", "trader"),
                ("tool", tool),
                ("outcome", outcome),
            ];
            if let Some(e) = error {
                l.push(("error_type", e));
            }
            counter(s, catalog::CALLS_TOTAL, &l)
        };
        assert_eq!(calls("get_price", "error", Some("tool_error")), 1);
        assert_eq!(calls("get_news", "success", None), 1);
        // Not allow-listed: folded into `other`; an `Err` from a tool is a tool error too.
        assert_eq!(calls("other", "error", Some("tool_error")), 1);
        let duration = [
            (labels::GEN_AI_OPERATION_NAME, "execute_tool"),
            (labels::GEN_AI_TOOL_NAME, "get_price"),
            (labels::GEN_AI_AGENT_NAME, "trader"),
            (labels::ERROR_TYPE, "tool_error"),
        ];
        assert_eq!(
            hist(s, catalog::GEN_AI_CLIENT_OPERATION_DURATION, &duration).len(),
            1
        );
        assert_eq!(
            gauge(
                s,
                catalog::CALLS_IN_FLIGHT,
                &[("kind", "tool"), ("agent", "trader")]
            ),
            0.0
        );
        assert!(
            !s.iter()
                .any(|x| x.name == catalog::TOKENS_TOTAL || x.name == catalog::COST_USD_TOTAL)
        );

        let t = registry.tool("get_price").unwrap();
        assert_eq!(t.last_1m.errors_of(FailureClass::ToolError), 1);
        assert_eq!(registry.tool("other").unwrap().last_1m.failures, 1);
        assert_eq!(registry.agent("trader").unwrap().last_1m.calls, 3);
        let events = registry.recent(10);
        assert_eq!(events.len(), 3);
        assert!(
            events
                .iter()
                .all(|e| e.kind == EventKind::Tool && e.session.as_str() == "s")
        );
    });
}
