//! Cost of `mantissa_openai::OpenAiClient` on top of plain `reqwest`, against
//! the same loopback HTTP/1.1 server in the same run:
//!
//! - `openai_call/*`: one non-streaming completion — reqwest posting a
//!   pre-encoded body and parsing the reply as a `serde_json::Value` (baseline)
//!   vs. the client (encode the request, send, cap-read, parse, classify);
//! - `openai_stream/*`: a 100-chunk SSE reply — reqwest with a minimal
//!   hand-written loop that splits events and parses each as a
//!   `serde_json::Value` (baseline) vs. the client yielding every chunk and
//!   assembling the message;
//! - `sse_decode/*`: `SseDecoder` over the same 100 events fed in 1 KiB pieces
//!   vs. splitting the whole buffer on `"\n\n"` (baseline, no field parsing).
//!
//! Run: `cargo bench --bench openai -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs)] // `criterion_group!` generates an undocumented public function.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use mantissa_core::{LlmRequest, Message};
use mantissa_openai::sse::SseDecoder;
use mantissa_openai::{OpenAiClient, OpenAiConfig, collect_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn completion_body() -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 11, "total_tokens": 53}
    })
    .to_string()
}

fn sse_body(events: usize) -> String {
    let mut body = String::new();
    for i in 0..events {
        let chunk = serde_json::json!({"id": "c", "model": "bench-model", "choices": [{"index": 0, "delta": {"content": format!("token{i} ")}}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    body.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":100}}\n\n");
    body.push_str("data: [DONE]\n\n");
    body
}

/// A keep-alive HTTP/1.1 server: JSON for non-streaming requests, SSE for
/// requests whose body asks for a stream.
async fn serve(json: String, sse: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (json, sse) = (json.clone(), sse.clone());
            tokio::spawn(async move { connection(socket, &json, &sse).await });
        }
    });
    addr
}

async fn connection(mut socket: TcpStream, json: &str, sse: &str) {
    socket.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    loop {
        // Read one request (head + content-length body).
        let (head_end, len) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                break (end + 4, len);
            }
            match socket.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        while buf.len() < head_end + len {
            match socket.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let stream =
            std::str::from_utf8(&buf[head_end..head_end + len]).is_ok_and(|b| b.contains("\"stream\":true"));
        buf.drain(..head_end + len);
        let (kind, body) = if stream {
            ("text/event-stream", sse)
        } else {
            ("application/json", json)
        };
        // One write per response, so Nagle's algorithm never waits for an ACK.
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn request(stream: bool) -> LlmRequest {
    let mut req = LlmRequest::new(
        "s1",
        "bench",
        vec![
            Message::system("You are terse."),
            Message::user("Say something about foxes."),
        ],
    )
    .with_model("bench-model");
    req.params.stream = stream;
    req
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sse = sse_body(100);
    let addr = rt.block_on(serve(completion_body(), sse.clone()));
    let base = format!("http://{addr}/v1");
    let url = format!("{base}/chat/completions");
    let client = OpenAiClient::new(OpenAiConfig::new(&base).api_key("sk-bench")).unwrap();
    let http = reqwest::Client::new();
    let plain_body = serde_json::to_vec(&serde_json::json!({
        "model": "bench-model", "messages": request(false).messages()
    }))
    .unwrap();
    let stream_body = serde_json::to_vec(&serde_json::json!({
        "model": "bench-model", "messages": request(true).messages(), "stream": true
    }))
    .unwrap();

    let mut group = c.benchmark_group("openai_call");
    group.bench_function("baseline_reqwest_json", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = http
                .post(&url)
                .header("authorization", "Bearer sk-bench")
                .header("content-type", "application/json")
                .body(plain_body.clone())
                .send()
                .await
                .unwrap();
            let bytes = resp.bytes().await.unwrap();
            black_box(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap())
        })
    });
    group.bench_function("openai_client", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(client.send(request(false)).await.unwrap()) })
    });
    group.finish();

    let mut group = c.benchmark_group("openai_stream");
    group.bench_function("baseline_reqwest_parse", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = http
                .post(&url)
                .header("authorization", "Bearer sk-bench")
                .header("content-type", "application/json")
                .body(stream_body.clone())
                .send()
                .await
                .unwrap();
            // A minimal hand-written client: buffer, split events, parse each.
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut text = String::new();
            while let Some(bytes) = body.next().await {
                buf.extend_from_slice(&bytes.unwrap());
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    let Some(data) = event.strip_prefix(b"data: ") else {
                        continue;
                    };
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data[..data.len() - 2]) {
                        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                            text.push_str(t);
                        }
                    }
                }
            }
            black_box(text)
        })
    });
    group.bench_function("openai_client_collect", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = client.send(request(true)).await.unwrap();
            black_box(collect_response(resp).await.unwrap())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("sse_decode");
    group.bench_function("baseline_split", |b| {
        b.iter(|| black_box(sse.split("\n\n").filter(|e| !e.is_empty()).count()))
    });
    group.bench_function("sse_decoder_1k_pieces", |b| {
        b.iter(|| {
            let mut decoder = SseDecoder::new();
            let mut n = 0;
            for piece in sse.as_bytes().chunks(1024) {
                decoder.push(piece);
                while let Some(event) = decoder.next_event().unwrap() {
                    n += event.data.len();
                }
            }
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
