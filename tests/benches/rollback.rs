//! Rollback against a fresh deploy of the same version, in the same run:
//! `cargo bench -p flow-tests --bench rollback`.
//!
//! Each round, behind the real proxy (`flow_proxy::start`, HAProxy) and against the real
//! engine, with the real `docker-flow` binary, two instances:
//!
//! * **fresh deploy** (the baseline): v1 deployed into an empty idle colour while v2 is live;
//! * **warm rollback**: v2 deployed over v1 (v1 still running), then `docker-flow rollback`;
//! * **stopped rollback**: v2 deployed with `-F stop-old`, then `docker-flow rollback`.
//!
//! Times are from starting the command to its exit (the proxy answers a switch once the
//! servers are UP, so the old version serves every request by then). Medians of the rounds
//! and their ratios are printed; docs/benchmarks.md keeps the figures.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use flow_tests::fixtures::{
    build_demo_image, docker, docker_flow_binary, unique_project, ProjectGuard,
};

const ROUNDS: usize = 3;
const REPOSITORY: &str = "docker-flow-bench-rollback";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs `docker-flow` in `dir` and returns how long it took; panics when it fails.
fn flow(dir: &Path, project: &str, args: &[&str], tag: Option<&str>) -> Duration {
    let mut command = std::process::Command::new(docker_flow_binary());
    command.current_dir(dir).args(["-p", project]).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FLOW") {
            command.env_remove(name);
        }
    }
    if let Some(tag) = tag {
        command.env("DEMO_TAG", tag);
    }
    let began = Instant::now();
    let output = command.output().expect("docker-flow runs");
    let took = began.elapsed();
    assert!(
        output.status.success(),
        "docker-flow {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let engine = docker().await;
    for version in ["v1", "v2"] {
        build_demo_image(&engine, &format!("{REPOSITORY}:{version}"), version)
            .await
            .expect("building the demo image");
    }
    let proxy_dir = tempfile::tempdir().expect("a proxy state directory");
    let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = flow_proxy::start(flow_proxy::ServeConfig {
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..flow_proxy::ServeConfig::new(proxy_dir.path(), vec![bind])
    })
    .await
    .expect("the proxy starts (HAProxy installed?)");
    let api_port = proxy.api_addr().port().to_string();

    let (mut fresh, mut warm, mut stopped) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let guard = ProjectGuard::new(unique_project(&format!("bench-rollback-{round}")));
        let project = guard.project().to_string();
        let dir = tempfile::tempdir().expect("a site directory");
        std::fs::write(
            dir.path().join("docker-compose.yml"),
            format!(
                "services:\n  app:\n    image: {REPOSITORY}:${{DEMO_TAG:-v1}}\n    expose:\n      - \"8080\"\n"
            ),
        )
        .expect("writing the Compose file");
        let base = [
            "-t",
            "app",
            "-b",
            "-q",
            "--proxy-host",
            "127.0.0.1",
            "--proxy-reconf-port",
            &api_port,
            "--service-path",
            "/",
        ];
        let with = |more: &[&'static str]| -> Vec<String> {
            base.iter().chain(more).map(|s| s.to_string()).collect()
        };
        let run = |more: &[&'static str], tag: Option<&str>| {
            let args = with(more);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            flow(dir.path(), &project, &args, tag)
        };
        run(&["-s", "2", "-F", "deploy"], Some("v1")); // blue v1
        run(&["-F", "deploy,stop-old"], Some("v2")); // green v2, blue stopped
                                                     // Baseline: v1 into blue, whose stopped leftovers the deploy removes first (as a
                                                     // rollback of gone instances would find nothing).
        fresh.push(run(&["-F", "deploy,stop-old"], Some("v1")));
        run(&["-F", "deploy"], Some("v2")); // green v2, blue v1 still running
        warm.push(run(&["-F", "rollback"], None));
        run(&["-F", "deploy,stop-old"], Some("v2")); // green v2 again, blue v1 stopped
        stopped.push(run(&["-F", "rollback"], None));
        drop(guard);
    }
    let (fresh, warm, stopped) = (median(fresh), median(warm), median(stopped));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("rollback bench, {ROUNDS} rounds, medians, 2 instances behind the proxy:");
    println!("  fresh deploy of v1:   {:8.1} ms", ms(fresh));
    println!(
        "  warm rollback to v1:  {:8.1} ms  ratio {:.2}",
        ms(warm),
        ms(warm) / ms(fresh)
    );
    println!(
        "  stopped rollback:     {:8.1} ms  ratio {:.2}",
        ms(stopped),
        ms(stopped) / ms(fresh)
    );
    proxy.shutdown().await;
}
