//! A small HTTP/1.1 load generator for `scripts/bench-gateway`: POSTs one
//! JSON body over keep-alive connections, closed-loop (each connection sends
//! its next request when the previous one is answered) or open-loop at a
//! fixed rate, and prints one JSON line with the achieved rate and the
//! latency percentiles.
//!
//! At a fixed rate each request has an intended send time. When a connection
//! is behind schedule (its previous answer came late), latency is measured
//! from the intended time, so a server that falls behind is charged for the
//! queue it causes (no coordinated omission); on schedule, from the send.
//!
//! Run: `cargo run --release -p mantissa-gateway --example loadgen -- \
//!   URL BODY_JSON CONNECTIONS SECONDS [RATE_PER_SECOND]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Stats {
    latencies_ns: Vec<u64>,
    errors: u64,
    missed: u64,
}

async fn connection(
    url: http::Uri,
    body: Bytes,
    start: Instant,
    end: Instant,
    schedule: Option<(Duration, Duration)>,
) -> Result<Stats, BoxError> {
    let host = url.host().ok_or("the URL has no host")?.to_owned();
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake::<_, http_body_util_full::Full>(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = format!("{host}:{port}");
    // The origin form (`/v1/...`) as the request target, as browsers and
    // SDKs send it.
    let path: http::Uri = url.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    let mut stats = Stats {
        latencies_ns: Vec::with_capacity(1 << 16),
        errors: 0,
        missed: 0,
    };
    let mut k: u32 = 0;
    loop {
        let intended = match schedule {
            Some((offset, period)) => {
                let at = start + offset + period * k;
                if at >= end {
                    break;
                }
                // A server far behind the rate: stop a second after the
                // end, counting what was never sent.
                if Instant::now() > end + Duration::from_secs(1) {
                    let left = (end - at).as_secs_f64() / period.as_secs_f64();
                    stats.missed += left.ceil() as u64;
                    break;
                }
                if at > Instant::now() {
                    // On time: measure from the actual send (the timer's
                    // own lateness is not the server's).
                    tokio::time::sleep_until(at.into()).await;
                    Instant::now()
                } else {
                    // Behind schedule: the server's queue is charged.
                    at
                }
            }
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        k += 1;
        let req = Request::post(path.clone())
            .header(header::HOST, &authority)
            .header(header::CONTENT_TYPE, "application/json")
            .body(http_body_util_full::Full(Some(body.clone())))?;
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let ok = resp.status().is_success();
        let mut incoming = resp.into_body();
        use http_body::Body as _;
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut incoming).poll_frame(cx)).await
        {
            frame?;
        }
        let latency = intended.elapsed();
        if ok {
            stats
                .latencies_ns
                .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        } else {
            stats.errors += 1;
        }
    }
    Ok(stats)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e6
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: loadgen URL BODY_JSON CONNECTIONS SECONDS [RATE]".into());
    }
    let url: http::Uri = args[1].parse()?;
    let body = Bytes::from(args[2].clone());
    let connections: u32 = args[3].parse()?;
    let seconds: f64 = args[4].parse()?;
    let rate: Option<f64> = args.get(5).map(|r| r.parse()).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Warm up: one connection, a few requests.
        let warm = Instant::now();
        connection(url.clone(), body.clone(), warm, warm + Duration::from_millis(300), None).await?;
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for i in 0..connections {
            let schedule = rate.map(|r| {
                let period = Duration::from_secs_f64(f64::from(connections) / r);
                (Duration::from_secs_f64(f64::from(i) / r), period)
            });
            let (url, body) = (url.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                if schedule.is_none() {
                    tokio::time::sleep_until(start.into()).await;
                }
                connection(url, body, start, end, schedule).await
            }));
        }
        let mut all = Vec::new();
        let (mut errors, mut missed) = (0, 0);
        for t in tasks {
            let s = t.await??;
            all.extend(s.latencies_ns);
            errors += s.errors;
            missed += s.missed;
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        println!(
            "{{\"requests\":{},\"errors\":{},\"missed\":{},\"rps\":{:.1},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"max_ms\":{:.3}}}",
            all.len(),
            errors,
            missed,
            all.len() as f64 / elapsed,
            percentile(&all, 50.0),
            percentile(&all, 99.0),
            all.last().map_or(f64::NAN, |&m| m as f64 / 1e6),
        );
        Ok(())
    })
}

/// A one-frame request body.
mod http_body_util_full {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame, SizeHint};

    pub(crate) struct Full(pub(crate) Option<Bytes>);

    impl Body for Full {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
        }
    }
}
