//! A bounded HTTP load against one URL: half the clients keep their connection alive, half
//! open a new connection per request (`Connection: close`), and every request is recorded
//! with its start, its end and what answered, so that a test counts failed requests in any
//! window and sees which version served.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent.
    pub started: Instant,
    /// When it was answered or failed.
    pub finished: Instant,
    /// The body (trimmed: the version of the demo image), or the failure.
    pub outcome: Result<String, String>,
}

/// How many clients, how fast, and the bounds the load never passes whatever happens.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Clients of each kind (keep-alive and new-connection).
    pub clients_per_kind: usize,
    /// The pause of each client between two requests (`None`: as fast as answered).
    pub pause: Option<Duration>,
    /// The load stops by itself after this long.
    pub max_time: Duration,
    /// … or after this many requests.
    pub max_requests: u64,
}

impl LoadShape {
    /// Releases under load: 10 + 10 clients as fast as they are answered.
    pub const RELEASES: LoadShape = LoadShape {
        clients_per_kind: 10,
        pause: None,
        max_time: Duration::from_secs(240),
        max_requests: 400_000,
    };
}

/// Held by a test for as long as it runs a load: two loads at once on a 2-core machine would
/// measure each other (the test binary runs its tests in parallel).
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOADS.lock().await
}

/// A running load; [`Load::stop`] ends it and hands back every sample.
pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `shape` against `url`.
    pub fn start(url: String, shape: LoadShape) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let began = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..2 * shape.clients_per_kind {
            let keep_alive = n < shape.clients_per_kind;
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(if keep_alive { 1 } else { 0 })
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client");
            let (url, samples, stop, sent) =
                (url.clone(), samples.clone(), stop.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed)
                    && began.elapsed() < shape.max_time
                    && sent.fetch_add(1, Ordering::Relaxed) < shape.max_requests
                {
                    let started = Instant::now();
                    let mut request = client.get(&url);
                    if !keep_alive {
                        request = request.header("Connection", "close");
                    }
                    let outcome = match request.send().await {
                        Ok(response) if response.status().is_success() => response
                            .text()
                            .await
                            .map(|body| body.trim().to_string())
                            .map_err(|e| format!("reading the body: {e}")),
                        Ok(response) => Err(format!("HTTP {}", response.status())),
                        Err(error) => Err(format!("{error}")),
                    };
                    let sample = Sample {
                        started,
                        finished: Instant::now(),
                        outcome,
                    };
                    samples.lock().unwrap().push(sample);
                    if let Some(pause) = shape.pause {
                        tokio::time::sleep(pause).await;
                    }
                }
            }));
        }
        Load {
            samples,
            stop,
            tasks,
        }
    }

    /// Stops the clients and returns every sample.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a load client panicked");
        }
        let samples = self.samples.lock().unwrap().clone();
        samples
    }

    /// The samples so far.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }
}

/// Every request that started after `since` must have been answered by `version`.
pub fn assert_only(samples: &[Sample], since: Instant, version: &str, what: &str) {
    let later: Vec<&Sample> = samples.iter().filter(|s| s.started >= since).collect();
    let wrong: Vec<&String> = later
        .iter()
        .filter_map(|s| s.outcome.as_ref().ok())
        .filter(|v| v.as_str() != version)
        .collect();
    assert!(
        wrong.is_empty(),
        "after {what} returned, {} of {} requests were answered by another version: {:?}",
        wrong.len(),
        later.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
}
