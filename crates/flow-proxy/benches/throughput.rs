//! Requests per second and p99 latency through the proxy, against the same backend reached
//! directly, in the same run; reported as ratios. Bounded: a fixed number of requests per
//! target, loopback only.
//!
//! `cargo bench -p flow-proxy --bench throughput`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{client, Backend, TestProxy};
use http::Request;
use http_body_util::{BodyExt, Empty};

const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 1500;
const WARMUP_PER_CLIENT: usize = 100;

/// Requests per second and the 50th/99th percentile latency of one load run.
struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(uri: String, per_client: usize) -> Figures {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let http = client(true);
            let mut latencies = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let sent = Instant::now();
                let response = http
                    .request(Request::get(&uri).body(Empty::new()).unwrap())
                    .await
                    .expect("request");
                assert!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await.expect("body");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(0.50),
        p99: percentile(0.99),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = tempfile::tempdir().unwrap();
        let backend = Backend::start("bench").await;
        let proxy = TestProxy::start(state.path()).await;
        let (status, answer) = proxy
            .reconfigure("bench", "/bench", &[backend.addr], "")
            .await;
        assert!(status.is_success(), "{answer}");

        let direct_uri = format!("http://{}/bench", backend.addr);
        let proxied_uri = format!("http://{}/bench", proxy.bind);
        load(direct_uri.clone(), WARMUP_PER_CLIENT).await;
        load(proxied_uri.clone(), WARMUP_PER_CLIENT).await;
        let direct = load(direct_uri, REQUESTS_PER_CLIENT).await;
        let proxied = load(proxied_uri, REQUESTS_PER_CLIENT).await;

        let total = CLIENTS * REQUESTS_PER_CLIENT;
        println!("{total} requests per target, {CLIENTS} keep-alive clients");
        for (label, figures) in [("direct ", &direct), ("proxied", &proxied)] {
            println!(
                "{label}: {:>8.0} req/s   p50 {:>8.3?}   p99 {:>8.3?}",
                figures.per_second, figures.p50, figures.p99
            );
        }
        println!(
            "ratio proxied/direct: throughput {:.2}, p99 latency {:.2}",
            proxied.per_second / direct.per_second,
            proxied.p99.as_secs_f64() / direct.p99.as_secs_f64()
        );
    });
}
