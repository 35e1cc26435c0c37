//! One layer over your own client: a plain reqwest function becomes a
//! `Service<LlmRequest>`; `HealthLayer` measures it (latency, failures, tokens,
//! cost at the catalogue's gpt-4o-mini price). Loopback mock, no network.
//! Run: `cargo run --example wrap_client`

use mantissa::HealthLayer;
use mantissa::core::FailureClass::{ClientError, UpstreamServer};
use mantissa::core::{BoxError, LlmError, LlmRequest, LlmResponse, Message, ModelSpec, Usage};
use mantissa::mock::http::HttpMockLlm;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

/// Your existing client: one chat completion over plain reqwest.
async fn complete(http: reqwest::Client, url: String, req: LlmRequest) -> Result<LlmResponse, BoxError> {
    let body = json!({"model": "gpt-4o-mini", "messages": req.messages()});
    let resp = http.post(url).json(&body).send().await?;
    let status = resp.status();
    if !status.is_success() {
        // An `LlmError` names the failure class the layer counts.
        let class = [ClientError, UpstreamServer][usize::from(status.is_server_error())];
        return Err(LlmError::new(class, "refused")
            .with_status(status.as_u16())
            .into());
    }
    let reply: Value = resp.json().await?;
    let text = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let tokens = |k: &str| reply["usage"][k].as_u64().unwrap_or(0);
    let usage = Usage::new(tokens("prompt_tokens"), tokens("completion_tokens"));
    Ok(LlmResponse::new("gpt-4o-mini", Message::assistant(text), usage))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = HttpMockLlm::start().await;
    mock.respond_with_text("Buy 10 shares of ACME.");
    let (http, url) = (reqwest::Client::new(), mock.completions_url());

    // The one line that puts mantissa in front of your client.
    let layer = HealthLayer::new().model(ModelSpec::new("gpt-4o-mini"));
    let llm = layer.layer(service_fn(move |req| complete(http.clone(), url.clone(), req)));

    for turn in ["Price of ACME?", "Should we buy?", "How many shares?"] {
        let req = LlmRequest::new("session-1", "trader", vec![Message::user(turn)]);
        let reply = llm.clone().oneshot(req).await?;
        println!("{turn} -> {}", reply.message.text());
    }
    mock.fail_with_status(503); // one failed call, classified and counted
    let req = LlmRequest::new("session-1", "trader", vec![Message::user("Again?")]);
    if let Err(e) = llm.oneshot(req).await {
        println!("failed: {e}");
    }
    let snapshot = layer.registry().snapshot();
    println!("{}", serde_json::to_string_pretty(&snapshot)?);
    Ok(())
}
