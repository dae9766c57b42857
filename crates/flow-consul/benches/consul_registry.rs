//! Mean latency of the registry's hot operations on the Consul double (loopback HTTP):
//! state read, compare-and-swap write, and a lock + unlock round trip.
//!
//! Plain `main` (harness = false), bounded: a fixed number of iterations per operation.
//! Run with `cargo bench -p flow-consul`.

use std::time::{Duration, Instant, UNIX_EPOCH};

use flow_consul::ConsulRegistry;
use flow_consul_double::ConsulDouble;
use flow_core::{Color, Registry, ReleaseRecord, ReleaseState, Revision, ServiceName};

const ITERATIONS: u32 = 300;
const WARM_UP: u32 = 30;

fn state(scale: u32) -> ReleaseState {
    ReleaseState {
        color: Some(Color::Blue),
        scale: Some(scale),
        last_release: Some(ReleaseRecord {
            color: Some(Color::Blue),
            image: "registry.local/app:1.2.3".to_string(),
            scale,
            released_at: UNIX_EPOCH + Duration::from_secs(1_795_841_331),
            released_by: "bench".to_string(),
            spec: None,
        }),
        previous_release: None,
    }
}

fn report(what: &str, total: Duration) {
    let mean = total.as_secs_f64() * 1e6 / f64::from(ITERATIONS);
    println!("consul double  {what:<22} mean {mean:>8.1} µs  ({ITERATIONS} iterations)");
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let double = ConsulDouble::start().await.expect("the double starts");
        let registry = ConsulRegistry::new(double.address(), None).expect("a valid address");
        let service = ServiceName::new("bench").expect("a valid name");
        let mut revision = registry
            .store(&service, &state(1), Revision::NONE)
            .await
            .expect("first store");

        // Warm-up: open the connection and fill caches before timing anything.
        for _ in 0..WARM_UP {
            registry.load(&service).await.expect("load");
        }

        let started = Instant::now();
        for _ in 0..ITERATIONS {
            registry.load(&service).await.expect("load");
        }
        report("state read", started.elapsed());

        let started = Instant::now();
        for i in 0..ITERATIONS {
            revision = registry
                .store(&service, &state(i + 2), revision)
                .await
                .expect("store");
        }
        report("CAS write", started.elapsed());

        let started = Instant::now();
        for _ in 0..ITERATIONS {
            let lease = registry
                .lock(&service, "bench", Duration::from_secs(30))
                .await
                .expect("lock");
            registry.unlock(&lease).await.expect("unlock");
        }
        report("lock+unlock round trip", started.elapsed());
    });
}
