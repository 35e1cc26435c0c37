//! A fast OpenAI-compatible mock upstream for `scripts/bench-gateway`: every
//! `POST /v1/chat/completions` gets the same small `chat.completion` at once,
//! so what a benchmark measures is what sits in front of it.
//! (The test mock, `mantissa::mock::HttpMockLlm`, records every request and
//! is built for assertions, not load.)
//!
//! Run: `cargo run --release -p mantissa-gateway --example bench_upstream -- 127.0.0.1:0`
//! (prints `listening on http://ADDR`).

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gw-small","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}"#;

async fn completions(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], COMPLETION)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let app = Router::new().route("/v1/chat/completions", post(completions));
        axum::serve(listener, app).await?;
        Ok(())
    })
}
