//! The start phase of a release: `Orchestrator::start` of 10 instances against the baseline
//! of the same 10 containers started by 10 sequential `docker run -d` calls (the way a
//! script around the docker CLI, as Docker Flow 1.x did, starts them).
//!
//! Same image, same engine, same network, same labels, in the same run; 3 rounds with the
//! order alternated, everything removed between rounds. Prints both medians and the ratio
//! (goal: `start` takes at most half the baseline's time).
//!
//! Run with `cargo bench -p flow-docker --bench start`. The docker CLI is used here only, as
//! the baseline.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_core::{Color, Group, Orchestrator};
use flow_docker::compose::ComposeProject;
use flow_docker::{ConnectSettings, DockerOptions, DockerOrchestrator};
use flow_tests::fixtures::{build_demo_image, docker, unique_project, ProjectGuard};

const IMAGE: &str = "docker-flow-bench-demo:v1";
const INSTANCES: u32 = 10;
const ROUNDS: usize = 3;

async fn orchestrator_for(project: &str) -> DockerOrchestrator {
    let compose = ComposeProject::parse(
        &format!("services:\n  web:\n    image: {IMAGE}\n"),
        Path::new("/tmp/docker-compose.yml"),
        &HashMap::new(),
    )
    .expect("bench Compose file");
    DockerOrchestrator::connect(
        &ConnectSettings::from_env(),
        Arc::new(compose),
        DockerOptions::new(project),
    )
    .await
    .expect("a reachable Docker engine")
}

/// Times `Orchestrator::start` of 10 instances (network and image prepared beforehand, as
/// the release's prepare phase does).
async fn time_orchestrator() -> Duration {
    let guard = ProjectGuard::new(unique_project("dfb-api"));
    let orchestrator = orchestrator_for(guard.project()).await;
    let spec = orchestrator.prepare("web").await.expect("prepare");
    let numbers: Vec<u32> = (1..=INSTANCES).collect();
    let group = Group::new("web", Some(Color::Blue));
    let started_at = Instant::now();
    let started = orchestrator
        .start(&group, &numbers, &spec)
        .await
        .expect("start");
    let elapsed = started_at.elapsed();
    assert_eq!(started.len(), INSTANCES as usize);
    elapsed
}

/// Times 10 sequential `docker run -d` of the same containers on the same kind of network.
async fn time_docker_cli() -> Duration {
    let guard = ProjectGuard::new(unique_project("dfb-cli"));
    let project = guard.project().to_string();
    // The network is made the same way, outside the timing.
    orchestrator_for(&project)
        .await
        .prepare("web")
        .await
        .expect("prepare");
    let started_at = Instant::now();
    for number in 1..=INSTANCES {
        let status = Command::new("docker")
            .args(["run", "-d", "--name"])
            .arg(format!("{project}-web-blue-{number}"))
            .arg("--network")
            .arg(format!("{project}_default"))
            .arg("--network-alias")
            .arg("web-blue")
            .arg("--label")
            .arg(format!("com.docker.compose.project={project}"))
            .arg("--label")
            .arg("com.docker.compose.service=web-blue")
            .arg("--label")
            .arg(format!("com.docker.compose.container-number={number}"))
            .arg("-e")
            .arg(format!("SERVICE_NAME={project}-web-blue"))
            .arg(IMAGE)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("the docker CLI (baseline only)");
        assert!(status.success(), "docker run failed: {status}");
    }
    started_at.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let docker = docker().await;
    build_demo_image(&docker, IMAGE, "v1")
        .await
        .expect("building the bench image");
    let mut api = Vec::new();
    let mut cli = Vec::new();
    for round in 0..ROUNDS {
        // Alternate the order so neither side always runs on a warmer engine.
        if round % 2 == 0 {
            api.push(time_orchestrator().await);
            cli.push(time_docker_cli().await);
        } else {
            cli.push(time_docker_cli().await);
            api.push(time_orchestrator().await);
        }
        println!(
            "round {}: Orchestrator::start {:>7.1} ms   docker run x{INSTANCES} {:>7.1} ms",
            round + 1,
            api[round].as_secs_f64() * 1e3,
            cli[round].as_secs_f64() * 1e3
        );
    }
    let api_median = median(api);
    let cli_median = median(cli);
    let ratio = api_median.as_secs_f64() / cli_median.as_secs_f64();
    println!(
        "start of {INSTANCES} instances, median of {ROUNDS}: Orchestrator::start {:.1} ms, sequential `docker run -d` {:.1} ms, ratio {ratio:.2} (goal <= 0.50)",
        api_median.as_secs_f64() * 1e3,
        cli_median.as_secs_f64() * 1e3,
    );
}
