//! Round-trip costs of the file store: state read, compare-and-swap write, lock + unlock.
//!
//! A plain `main` (no harness), bounded at 2,000 iterations per measure. Each measure is
//! shown as mean microseconds and as a ratio to a baseline of the same kind measured in the
//! same run on the same disk — a bare `std::fs::read` of the state file for reads, and a
//! bare write + fsync + rename for writes — so the figures say what the store adds on top of
//! the file system rather than how fast this machine is.
//!
//! Run with `cargo bench -p flow-store --bench roundtrip`. The store lives in a temporary
//! directory under Cargo's target directory (a real disk, unlike a tmpfs `/tmp`).

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use flow_core::{Color, Registry, ReleaseState, Revision, ServiceName};
use flow_store::FileRegistry;

const ITERATIONS: u32 = 2_000;

fn mean_micros(total: Duration) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(ITERATIONS)
}

fn report(what: &str, measured: Duration, baseline_name: &str, baseline: Duration) {
    println!(
        "{what:<28} {:>9.1} µs/op   {:>5.1}× {baseline_name} ({:.1} µs)",
        mean_micros(measured),
        measured.as_secs_f64() / baseline.as_secs_f64(),
        mean_micros(baseline),
    );
}

async fn time<F, Fut>(mut operation: F) -> Duration
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    for i in 0..ITERATIONS {
        operation(i).await;
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let registry = FileRegistry::new(dir.path().join(".docker-flow"));
    let app = ServiceName::new("bench-app").expect("valid name");
    let state = ReleaseState {
        color: Some(Color::Blue),
        scale: Some(3),
        last_release: None,
        previous_release: None,
    };
    let mut revision = registry
        .store(&app, &state, Revision::NONE)
        .await
        .expect("first store");
    let state_file = registry.dir().join("bench-app/state.json");

    let read_baseline = time(|_| {
        let path = state_file.clone();
        async move {
            std::hint::black_box(std::fs::read(&path).expect("read"));
        }
    })
    .await;
    let load = time(|_| async {
        std::hint::black_box(registry.load(&app).await.expect("load"));
    })
    .await;

    let raw_dir = dir.path().join("raw");
    std::fs::create_dir_all(&raw_dir).expect("raw directory");
    let write_baseline = time(|_| {
        let raw_dir = raw_dir.clone();
        async move {
            let temporary = raw_dir.join(".state.tmp");
            let mut file = File::create(&temporary).expect("create");
            file.write_all(b"{\"revision\": 1, \"color\": \"blue\", \"scale\": 3}\n")
                .expect("write");
            file.sync_all().expect("fsync");
            std::fs::rename(&temporary, raw_dir.join("state.json")).expect("rename");
        }
    })
    .await;
    let started = Instant::now();
    for i in 0..ITERATIONS {
        let next = ReleaseState {
            scale: Some(i % 10 + 1),
            ..state.clone()
        };
        revision = registry
            .store(&app, &next, revision)
            .await
            .expect("CAS store");
    }
    let store = started.elapsed();

    let lock_unlock = time(|_| async {
        let lease = registry
            .lock(&app, "bench", Duration::from_secs(60))
            .await
            .expect("lock");
        registry.unlock(&lease).await.expect("unlock");
    })
    .await;

    println!(
        "file store round trips, {ITERATIONS} iterations each, in {}",
        dir.path().display()
    );
    report("load", load, "fs::read", read_baseline);
    report(
        "CAS store (state+color+scale)",
        store,
        "one atomic write",
        write_baseline,
    );
    report(
        "lock + unlock",
        lock_unlock,
        "one atomic write",
        write_baseline,
    );
}
