//! Start-to-registered latency of the registrator on the real engine, against a baseline
//! measured in the same run: how long the engine takes to deliver the same `start` event to
//! a bare event subscriber. The ratio (start → registered over start → event) shows what the
//! registrator adds (inspect, derive, write, and the reader's 1 ms poll) on top of the
//! engine's own start and event delivery; the event → registered median is that addition in
//! time.
//!
//! `cargo bench -p flow-registrator --bench registration_latency` (no criterion: each sample
//! starts a container, so a handful of samples is all a shared engine should take).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, EventsOptions};
use flow_core::DynRegistry;
use flow_registrator::{run, Activity, RegistratorOptions};
use flow_tests::fixtures::{
    build_demo_image, docker, unique_project, EtcdNode, ProjectGuard, PROJECT_LABEL,
};
use futures::StreamExt;

#[path = "../tests/image_guard/mod.rs"]
mod image_guard;

/// Containers started per registry.
const SAMPLES: usize = 10;
/// The longest any one wait may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(10);

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The medians one registry gives.
struct Figures {
    /// Start call → the start event reaches a bare subscriber (the baseline).
    event: Duration,
    /// Start call → the registration is readable from the registry.
    registered: Duration,
    /// Event seen by the bare subscriber → registration readable (per container).
    event_to_registered: Duration,
}

/// Starts [`SAMPLES`] containers with a registrator writing to `registry`.
async fn measure(label: &str, registry: DynRegistry) -> Figures {
    let docker = docker().await;
    let project = unique_project(&format!("reg-bench-{label}"));
    let image = format!("docker-flow-registrator-demo:{project}");
    build_demo_image(&docker, &image, "v1")
        .await
        .expect("building the demo image");
    let _image = image_guard::ImageGuard(image.clone());
    let _guard = ProjectGuard::new(&project);
    let hostname = docker.info().await.expect("info").name.expect("name");

    let (resynced_tx, mut resynced) = tokio::sync::mpsc::unbounded_channel();
    let options = RegistratorOptions {
        reporter: Arc::new(move |activity: &Activity| {
            if let Activity::Resynced(_) = activity {
                let _ = resynced_tx.send(());
            }
        }),
        ..RegistratorOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let registrator = tokio::spawn(run(docker.clone(), registry.clone(), options, async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(DEADLINE, resynced.recv())
        .await
        .expect("the first resync")
        .expect("the registrator runs");

    // The baseline: a bare subscriber to this project's container start events. The stream
    // only connects when first polled, so it asks for events since now: none is missed.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let mut events = docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        filters: Some(HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["start".to_string()]),
            (
                "label".to_string(),
                vec![format!("{PROJECT_LABEL}={project}")],
            ),
        ])),
        ..Default::default()
    }));
    let (mut event_latencies, mut registered_latencies) = (Vec::new(), Vec::new());
    let mut gaps = Vec::new();
    for n in 0..SAMPLES {
        let name = format!("{project}-{n}");
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: Some(vec![format!("SERVICE_NAME={project}")]),
            labels: Some(HashMap::from([(
                PROJECT_LABEL.to_string(),
                project.clone(),
            )])),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    "8080/tcp".to_string(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_string()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .expect("create");
        let id = format!("{hostname}:{name}:8080");
        let started = Instant::now();
        docker
            .start_container(&created.id, None)
            .await
            .expect("start");
        let event_seen = async {
            loop {
                let event = events.next().await.expect("event stream").expect("event");
                if event.actor.and_then(|a| a.id).as_deref() == Some(created.id.as_str()) {
                    return started.elapsed();
                }
            }
        };
        let registered = async {
            loop {
                let all = registry.all_instances().await.expect("list");
                if all.iter().any(|r| r.id == id) {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let (event_latency, registered_latency) =
            tokio::time::timeout(DEADLINE, futures::future::join(event_seen, registered))
                .await
                .expect("event and registration within the deadline");
        gaps.push(registered_latency.saturating_sub(event_latency));
        event_latencies.push(event_latency);
        registered_latencies.push(registered_latency);
    }
    let _ = stop.send(());
    registrator.await.expect("no panic").expect("a clean stop");
    println!(
        "{label}: event → registered per container: {}",
        gaps.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    Figures {
        event: median(&mut event_latencies),
        registered: median(&mut registered_latencies),
        event_to_registered: median(&mut gaps),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let consul = flow_consul_double::ConsulDouble::start()
        .await
        .expect("the Consul double");
    let etcd = EtcdNode::start().await;
    let registries: Vec<(&str, DynRegistry)> = vec![
        (
            "etcd",
            Arc::new(flow_etcd::EtcdRegistry::new(&etcd.endpoints()).expect("endpoints")),
        ),
        (
            "file",
            Arc::new(flow_store::FileRegistry::new(dir.path().join("store"))),
        ),
        (
            "consul-double",
            Arc::new(flow_consul::ConsulRegistry::new(consul.address(), None).expect("address")),
        ),
    ];
    for (label, registry) in registries {
        let figures = measure(label, registry).await;
        println!(
            "{label}: start call → event (baseline) median {}, start call → registered median {}, \
             ratio {:.2}; event → registered median {} ({SAMPLES} containers)",
            ms(figures.event),
            ms(figures.registered),
            figures.registered.as_secs_f64() / figures.event.as_secs_f64(),
            ms(figures.event_to_registered)
        );
    }
}
