//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending its next request as
//! soon as the previous answer is read, for a fixed time after a warm-up; every latency goes into an HDR histogram.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What one load run measured (warm-up excluded).
pub struct Load {
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Other answers and failed requests.
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of the 2xx answers, in microseconds.
    pub latency: Histogram<u64>,
}

impl Load {
    /// 2xx answers per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.latency.value_at_quantile(p) as f64 / 1000.0
    }
}

/// Sends requests made by `make(n)` (n unique across the run) to `addr` over `connections` connections for
/// `warmup + measure`, counting only what completes after the warm-up.
pub async fn run<F>(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    make: F,
) -> anyhow::Result<Load>
where
    F: Fn(u64) -> http::Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let sequence = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + measure;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (make, sequence) = (make.clone(), sequence.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            while Instant::now() < deadline {
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                let request = make(sequence.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                let answer = sender.send_request(request).await;
                let good = match answer {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.into_body().collect().await;
                        status.is_success() && body.is_ok()
                    }
                    Err(_) => false,
                };
                let done = Instant::now();
                if done < measure_from || done > deadline {
                    continue;
                }
                if good {
                    ok += 1;
                    let _ = latency.record(done.duration_since(sent).as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
            }
            anyhow::Ok((ok, errors, latency))
        }));
    }
    let mut load = Load {
        ok: 0,
        errors: 0,
        elapsed: measure,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
    };
    for task in tasks {
        let (ok, errors, latency) = task.await??;
        load.ok += ok;
        load.errors += errors;
        load.latency.add(latency)?;
    }
    Ok(load)
}
