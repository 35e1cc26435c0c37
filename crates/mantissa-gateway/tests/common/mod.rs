//! Shared by the gateway's integration tests: a stack over the in-repo HTTP
//! mock upstream, and a gateway serving it on `127.0.0.1:0`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::OnceLock;

use mantissa::core::{ModelSpec, TierConfig, TierSet};
use mantissa::mock::HttpMockLlm;
use mantissa::openai::OpenAiConfig;
use mantissa::{AgentSpec, AgentStack, ExporterHandle, PrometheusConfig, Upstream};
use mantissa_gateway::{ClientKey, ClientKeys, Gateway, GatewayConfig, KeyDigest, Server};
use tokio::sync::oneshot;

/// The upstream key the stack sends to the mock.
pub const UPSTREAM_KEY: &str = "sk-upstream-SECRET-7d1f0c";

/// One model per tier, so "every model of the tier" is one model.
pub fn tiers() -> TierSet {
    tiers_with_window(16384)
}

/// [`tiers`] with this context window for every model.
pub fn tiers_with_window(window: u32) -> TierSet {
    let model = |id: &str| {
        ModelSpec::new(id)
            .provider("mock")
            .context_window(window)
            .pricing(0.1, 0.2)
    };
    TierSet::new(vec![
        TierConfig::new("low", vec![model("gw-small")]),
        TierConfig::new("medium", vec![model("gw-medium")]),
        TierConfig::new("high", vec![model("gw-large")]),
    ])
    .expect("a valid ladder")
}

/// The process's Prometheus recorder, installed once by the first stack of
/// the test binary (as an application installs it once); every gateway of
/// the binary serves it. No upkeep task: every test has its own runtime.
pub fn exporter() -> ExporterHandle {
    static EXPORTER: OnceLock<ExporterHandle> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            PrometheusConfig::new()
                .without_upkeep()
                .install()
                .expect("the first recorder of this test binary")
        })
        .clone()
}

/// A stack with these agents over `mock`.
pub fn stack(mock: &HttpMockLlm, agents: &[&str]) -> AgentStack {
    stack_with(mock, agents, tiers())
}

/// A stack with these agents and tiers over `mock`.
pub fn stack_with(mock: &HttpMockLlm, agents: &[&str], tiers: TierSet) -> AgentStack {
    let upstream = OpenAiConfig::new(mock.base_url()).api_key(UPSTREAM_KEY);
    let mut b = AgentStack::builder(Upstream::OpenAi(Box::new(upstream)))
        .tiers(tiers)
        .exporter(exporter())
        .without_monitor();
    for a in agents {
        b = b.agent(AgentSpec::new(*a));
    }
    b.build().expect("the stack builds")
}

/// A key with its plain text (for the client) and its configuration.
pub fn key(name: &str, plain: &str, agents: &[&str], default_agent: Option<&str>) -> ClientKey {
    ClientKey {
        name: name.to_owned(),
        digest: KeyDigest::of(plain),
        agents: agents.iter().map(|a| (*a).into()).collect(),
        default_agent: default_agent.map(Into::into),
    }
}

/// A running gateway and what stops it.
pub struct Running {
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub server: Server,
    pub stop: oneshot::Sender<()>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Serves a gateway over `mock` on `127.0.0.1:0`.
pub async fn start(
    mock: &HttpMockLlm,
    agents: &[&str],
    keys: Vec<ClientKey>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Running {
    let mut config = GatewayConfig {
        keys: ClientKeys::new(keys),
        ..GatewayConfig::default()
    };
    tweak(&mut config);
    let gateway = Gateway::new(stack(mock, agents), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = gateway
        .clone()
        .serve(listener, async move {
            let _ = stopped.await;
        })
        .expect("serve");
    Running {
        gateway,
        addr: server.local_addr(),
        server,
        stop,
    }
}

/// Sums the samples of `family` labelled `agent="…"` in an exposition.
pub fn sum_for_agent(exposition: &str, family: &str, agent: &str) -> f64 {
    let label = format!("agent=\"{agent}\"");
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
