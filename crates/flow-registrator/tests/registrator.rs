//! The registrator against the real Docker engine, with each registry backend: a throwaway
//! real etcd node, the Consul double, and the file store in a temporary directory.
//!
//! Every test runs the same scenario (see [`scenario`]): start-up resync, registration after
//! a container starts (the latency is measured and printed), deregistration after it stops,
//! `SERVICE_IGNORE`, internal mode, and a restart of the registrator during which one
//! container starts and another is removed. Containers carry a unique Compose project label
//! and are removed by [`ProjectGuard`], the per-test image by [`ImageGuard`], also on failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use flow_core::{DynRegistry, Registration};
use flow_registrator::{
    run, Activity, RegistratorError, RegistratorOptions, ResyncSummary, CONTAINER_KEY, HOST_KEY,
    REGISTERED_BY, REGISTERED_BY_KEY,
};
use flow_tests::fixtures::{
    build_demo_image, docker, unique_project, EtcdNode, ProjectGuard, PROJECT_LABEL,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

mod image_guard;
mod relay;

use image_guard::ImageGuard;

/// How long a functional wait (registered, deregistered, resynced) may take before the test
/// fails. Generous on purpose: the machine is shared; the measured latencies are printed.
const DEADLINE: Duration = Duration::from_secs(10);
/// How often the registry is polled while waiting.
const POLL: Duration = Duration::from_millis(2);
/// Containers started to measure the start-to-registered latency.
const MEASURED_STARTS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_real_etcd_node() {
    let node = EtcdNode::start().await;
    let registry = flow_etcd::EtcdRegistry::new(&node.endpoints()).expect("etcd endpoints");
    scenario("etcd", Arc::new(registry)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_consul_double() {
    let consul = flow_consul::double::ConsulDouble::start()
        .await
        .expect("start the Consul double");
    let registry =
        flow_consul::ConsulRegistry::new(consul.address(), None).expect("the double's address");
    scenario("consul", Arc::new(registry)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_file_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let registry = flow_store::FileRegistry::new(dir.path().join("store"));
    scenario("file", Arc::new(registry)).await;
}

/// The event stream breaks (the engine's connection is cut, as in an engine restart): the
/// registrator reports it, reconnects with backoff once the engine is back, and its resync
/// catches up with what happened meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_event_stream_reconnects_and_resyncs() {
    let docker = docker().await;
    let project = unique_project("reg-relay");
    let image = format!("docker-flow-registrator-demo:{project}");
    build_demo_image(&docker, &image, "v1")
        .await
        .expect("building the demo image");
    let _image = ImageGuard(image.clone());
    let _guard = ProjectGuard::new(&project);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("docker.sock");
    let relay = relay::Relay::start(&socket);
    let relayed = Docker::connect_with_unix(
        socket.to_str().expect("a UTF-8 path"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("a client of the relay")
    .negotiate_version()
    .await
    .expect("the engine answers through the relay");
    let registry: DynRegistry = Arc::new(flow_store::FileRegistry::new(dir.path().join("store")));
    let hostname = docker
        .info()
        .await
        .expect("docker info")
        .name
        .expect("name");
    let id_of = |container: &str| format!("{hostname}:{container}:8080");
    let service = format!("{project}-web");
    let env = [format!("SERVICE_NAME={service}")];

    let mut registrator = Running::start(
        &relayed,
        &registry,
        "relay",
        Some(format!("unix://{}", socket.display())),
    );
    registrator.wait_resynced().await;
    let before = format!("{project}-before");
    let (before_id, at) = start_container(&docker, &project, &image, &before, &env, true).await;
    wait_for(&registry, &id_of(&before), true, at).await;

    relay.cut(&socket).await;
    let failure = registrator.wait_failed().await;
    eprintln!("[relay] reported: {failure}");
    assert!(
        failure.contains(&format!("the Docker engine at unix://{}", socket.display())),
        "{failure}"
    );
    // While the engine cannot be reached: one container goes, another comes.
    docker
        .remove_container(
            &before_id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("remove");
    let during = format!("{project}-during");
    start_container(&docker, &project, &image, &during, &env, true).await;
    // Let a few reconnection attempts fail (backoff 0.2 s, 0.4 s, 0.8 s…).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        registry
            .all_instances()
            .await
            .expect("list")
            .iter()
            .any(|r| r.id == id_of(&before)),
        "nothing changes while the engine cannot be reached"
    );

    let restored = Instant::now();
    let _relay = relay::Relay::start(&socket);
    registrator.wait_resynced().await;
    let (_, caught_up) = wait_for(&registry, &id_of(&during), true, restored).await;
    wait_for(&registry, &id_of(&before), false, restored).await;
    eprintln!(
        "[relay] engine back → registry caught up: {}",
        ms(caught_up)
    );
    // The new event stream works: a container started now is registered.
    let after = format!("{project}-after");
    let (_, at) = start_container(&docker, &project, &image, &after, &env, true).await;
    wait_for(&registry, &id_of(&after), true, at).await;
    registrator.stop().await;
}

/// The registry goes down (the etcd node is killed) while containers start and stop: the
/// registrator reports failures naming the registry's address, and once the node is back
/// its resync registers what started and removes what stopped meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_caught_up_by_a_resync() {
    let docker = docker().await;
    let project = unique_project("reg-outage");
    let image = format!("docker-flow-registrator-demo:{project}");
    build_demo_image(&docker, &image, "v1")
        .await
        .expect("building the demo image");
    let _image = ImageGuard(image.clone());
    let _guard = ProjectGuard::new(&project);
    let mut node = EtcdNode::start().await;
    let registry: DynRegistry =
        Arc::new(flow_etcd::EtcdRegistry::new(&node.endpoints()).expect("etcd endpoints"));
    let hostname = docker
        .info()
        .await
        .expect("docker info")
        .name
        .expect("name");
    let id_of = |container: &str| format!("{hostname}:{container}:8080");
    let env = [format!("SERVICE_NAME={project}-web")];

    let mut registrator = Running::start(&docker, &registry, "outage", None);
    registrator.wait_resynced().await;
    let before = format!("{project}-before");
    let (before_id, at) = start_container(&docker, &project, &image, &before, &env, true).await;
    wait_for(&registry, &id_of(&before), true, at).await;

    node.kill();
    stop_container(&docker, &before_id).await;
    let during = format!("{project}-during");
    start_container(&docker, &project, &image, &during, &env, true).await;
    let failure = registrator.wait_failed().await;
    eprintln!("[outage] reported: {failure}");
    assert!(failure.contains(&node.address()), "{failure}");

    let restored = Instant::now();
    node.restart().await;
    let (_, caught_up) = wait_for(&registry, &id_of(&during), true, restored).await;
    wait_for(&registry, &id_of(&before), false, restored).await;
    eprintln!("[outage] registry back → caught up: {}", ms(caught_up));
    registrator.stop().await;
}

/// `--resync`: a registration deleted behind the registrator's back (no event announces it)
/// is written again by the next periodic resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_resync_restores_a_registration_deleted_by_hand() {
    let docker = docker().await;
    let project = unique_project("reg-periodic");
    let image = format!("docker-flow-registrator-demo:{project}");
    build_demo_image(&docker, &image, "v1")
        .await
        .expect("building the demo image");
    let _image = ImageGuard(image.clone());
    let _guard = ProjectGuard::new(&project);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let registry: DynRegistry = Arc::new(flow_store::FileRegistry::new(dir.path().join("store")));
    let hostname = docker
        .info()
        .await
        .expect("docker info")
        .name
        .expect("name");
    let name = format!("{project}-web");
    let id = format!("{hostname}:{name}:8080");

    let period = Duration::from_millis(500);
    let mut registrator = Running::start_with(&docker, &registry, "periodic", None, Some(period));
    registrator.wait_resynced().await;
    let env = [format!("SERVICE_NAME={name}")];
    let (_, at) = start_container(&docker, &project, &image, &name, &env, true).await;
    wait_for(&registry, &id, true, at).await;

    registry.deregister(&id).await.expect("deregister by hand");
    let deleted = Instant::now();
    // The container emits no event meanwhile: only a periodic resync can write it again.
    let (_, restored) = wait_for(&registry, &id, true, deleted).await;
    eprintln!(
        "[periodic] deleted by hand → restored after {} (period {})",
        ms(restored),
        ms(period)
    );
    registrator.stop().await;
}

/// A registrator running as a task of this test.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RegistratorError>>,
    resynced: mpsc::UnboundedReceiver<ResyncSummary>,
    failures: mpsc::UnboundedReceiver<String>,
}

impl Running {
    /// Starts a registrator; `docker_endpoint` names the engine in messages (default: the
    /// local one).
    fn start(
        docker: &Docker,
        registry: &DynRegistry,
        label: &'static str,
        docker_endpoint: Option<String>,
    ) -> Running {
        Running::start_with(docker, registry, label, docker_endpoint, None)
    }

    /// [`Running::start`] with a periodic resync.
    fn start_with(
        docker: &Docker,
        registry: &DynRegistry,
        label: &'static str,
        docker_endpoint: Option<String>,
        resync: Option<Duration>,
    ) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let (resync_tx, resynced) = mpsc::unbounded_channel();
        let (failure_tx, failures) = mpsc::unbounded_channel();
        let options = RegistratorOptions {
            reporter: Arc::new(move |activity: &Activity| {
                if let Activity::Resynced(summary) = activity {
                    let _ = resync_tx.send(*summary);
                }
                if let Activity::Failed { error, .. } = activity {
                    let _ = failure_tx.send(error.to_string());
                }
                // Other tests' containers come and go on the shared engine: show only ours
                // and what matters.
                if !matches!(
                    activity,
                    Activity::Registered(_) | Activity::Deregistered(_)
                ) {
                    eprintln!("[{label}] {activity}");
                }
            }),
            resync,
            ..RegistratorOptions::default()
        };
        let options = match docker_endpoint {
            Some(docker_endpoint) => RegistratorOptions {
                docker_endpoint,
                ..options
            },
            None => options,
        };
        let task = tokio::spawn(run(docker.clone(), Arc::clone(registry), options, async {
            let _ = stopped.await;
        }));
        Running {
            stop,
            task,
            resynced,
            failures,
        }
    }

    async fn wait_failed(&mut self) -> String {
        tokio::time::timeout(DEADLINE, self.failures.recv())
            .await
            .expect("the registrator reports the failure within the deadline")
            .expect("the registrator is running")
    }

    async fn wait_resynced(&mut self) -> ResyncSummary {
        tokio::time::timeout(DEADLINE, self.resynced.recv())
            .await
            .expect("the registrator resyncs within the deadline")
            .expect("the registrator is running")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the registrator stops within the deadline")
            .expect("the registrator task does not panic")
            .expect("the registrator stops cleanly");
    }
}

/// Creates and starts `name` from `image`; `publish` publishes 8080 on `127.0.0.1::8080`.
/// Returns the container id and when the start call returned.
async fn start_container(
    docker: &Docker,
    project: &str,
    image: &str,
    name: &str,
    env: &[String],
    publish: bool,
) -> (String, Instant) {
    let port_bindings = publish.then(|| {
        HashMap::from([(
            "8080/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_string()),
                host_port: Some(String::new()),
            }]),
        )])
    });
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env.to_vec()),
        labels: Some(HashMap::from([(
            PROJECT_LABEL.to_string(),
            project.to_string(),
        )])),
        host_config: Some(HostConfig {
            port_bindings,
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    docker
        .start_container(&created.id, None)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    (created.id, Instant::now())
}

async fn stop_container(docker: &Docker, id: &str) -> Instant {
    docker
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(5),
                signal: None,
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("stop {id}: {e}"));
    Instant::now()
}

/// The published host port of 8080, and the container's IP, as the engine reports them.
async fn addresses(docker: &Docker, id: &str) -> (Option<u16>, String) {
    let inspect = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let settings = inspect.network_settings.expect("network settings");
    let host_port = settings
        .ports
        .unwrap_or_default()
        .get("8080/tcp")
        .cloned()
        .flatten()
        .and_then(|b| b.first().cloned())
        .and_then(|b| b.host_port)
        .and_then(|p| p.parse().ok());
    let ip = settings
        .networks
        .unwrap_or_default()
        .into_values()
        .find_map(|n| n.ip_address.filter(|ip| !ip.is_empty()))
        .expect("a container IP");
    (host_port, ip)
}

/// Polls until `id` is registered (`true`) or gone (`false`); returns the registration (if
/// any) and how long it took since `since`.
async fn wait_for(
    registry: &DynRegistry,
    id: &str,
    registered: bool,
    since: Instant,
) -> (Option<Registration>, Duration) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = registry.all_instances().await.expect("list registrations");
        let found = all.into_iter().find(|r| r.id == id);
        if found.is_some() == registered {
            return (found, since.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "{id} was not {} within {DEADLINE:?}",
            if registered {
                "registered"
            } else {
                "deregistered"
            }
        );
        tokio::time::sleep(POLL).await;
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn our_meta(hostname: &str, container: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (REGISTERED_BY_KEY.to_string(), REGISTERED_BY.to_string()),
        (HOST_KEY.to_string(), hostname.to_string()),
        (CONTAINER_KEY.to_string(), container.to_string()),
    ])
}

/// The scenario every backend runs; `label` names the backend in the printed figures.
async fn scenario(label: &'static str, registry: DynRegistry) {
    let docker = docker().await;
    let project = unique_project(&format!("reg-{label}"));
    let image = format!("docker-flow-registrator-demo:{project}");
    build_demo_image(&docker, &image, "v1")
        .await
        .expect("building the demo image");
    let _image = ImageGuard(image.clone());
    let _guard = ProjectGuard::new(&project);
    let hostname = docker
        .info()
        .await
        .expect("docker info")
        .name
        .expect("the engine's name");
    let id_of = |container: &str, port: u16| format!("{hostname}:{container}:{port}");

    // Registrations the registrator must leave alone: a release's (no meta), another host's
    // registrator's; and one that is ours but whose container no longer exists (dangling).
    let release = Registration {
        id: format!("{project}-release-1"),
        name: format!("{project}-app-blue"),
        address: "10.0.0.1".to_string(),
        port: 8080,
        tags: vec!["blue".to_string()],
        meta: BTreeMap::new(),
        check: None,
    };
    let other_host = Registration {
        id: format!("other-host:{project}-x:8080"),
        meta: our_meta("other-host", "0123"),
        ..release.clone()
    };
    let dangling_before = Registration {
        id: id_of(&format!("{project}-vanished"), 8080),
        meta: our_meta(&hostname, "feed"),
        ..release.clone()
    };
    for r in [&release, &other_host, &dangling_before] {
        registry.register(r).await.expect("pre-register");
    }

    let mut registrator = Running::start(&docker, &registry, label, None);
    let first = registrator.wait_resynced().await;
    assert!(first.removed >= 1, "the dangling registration is removed");
    let (gone, _) = wait_for(&registry, &dangling_before.id, false, Instant::now()).await;
    assert!(gone.is_none());

    // Start-to-registered latency, over several containers.
    let service = format!("{project}-web");
    let mut started = Vec::new();
    let mut latencies = Vec::new();
    for n in 0..MEASURED_STARTS {
        let name = format!("{project}-web-{n}");
        let env = [
            format!("SERVICE_NAME={service}"),
            "SERVICE_TAGS=v1,demo".to_string(),
            "SERVICE_CHECK_HTTP=/health".to_string(),
        ];
        let (id, at) = start_container(&docker, &project, &image, &name, &env, true).await;
        let (found, latency) = wait_for(&registry, &id_of(&name, 8080), true, at).await;
        let found = found.expect("registered");
        let (host_port, _) = addresses(&docker, &id).await;
        let host_port = host_port.expect("8080 is published");
        assert_eq!(found.name, service);
        assert_eq!(
            (found.address.as_str(), found.port),
            ("127.0.0.1", host_port)
        );
        assert_eq!(found.tags, vec!["v1", "demo"]);
        assert_eq!(found.meta, our_meta(&hostname, &id));
        let check = found.check.expect("an HTTP check");
        assert_eq!(
            check,
            flow_core::HealthCheck::http(
                format!("http://127.0.0.1:{host_port}/health"),
                Duration::from_secs(10),
                Some(Duration::from_secs(5))
            )
        );
        latencies.push(latency);
        started.push((name, id));
    }
    eprintln!(
        "[{label}] start-to-registered latency: median {} (all: {})",
        ms(median(&mut latencies.clone())),
        latencies
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Internal mode: exposed, not published → the container IP and the exposed port.
    let internal_name = format!("{project}-internal");
    let (internal_id, at) = start_container(
        &docker,
        &project,
        &image,
        &internal_name,
        &[format!("SERVICE_NAME={project}-internal")],
        false,
    )
    .await;
    let (found, _) = wait_for(&registry, &id_of(&internal_name, 8080), true, at).await;
    let (_, ip) = addresses(&docker, &internal_id).await;
    let found = found.expect("registered");
    assert_eq!((found.address.as_str(), found.port), (ip.as_str(), 8080));

    // SERVICE_IGNORE: never registered. Events are handled in order, so once a container
    // started after it is registered, the ignored one has been handled.
    let ignored_name = format!("{project}-ignored");
    start_container(
        &docker,
        &project,
        &image,
        &ignored_name,
        &[
            format!("SERVICE_NAME={project}-ignored"),
            "SERVICE_IGNORE=true".to_string(),
        ],
        true,
    )
    .await;
    let marker_name = format!("{project}-marker");
    let (_, at) = start_container(
        &docker,
        &project,
        &image,
        &marker_name,
        &[format!("SERVICE_NAME={project}-marker")],
        true,
    )
    .await;
    wait_for(&registry, &id_of(&marker_name, 8080), true, at).await;
    let ignored = registry
        .instances(&format!("{project}-ignored"))
        .await
        .expect("list");
    assert!(
        ignored.is_empty(),
        "ignored container registered: {ignored:?}"
    );

    // Stop → deregistered.
    let (stopped_name, stopped_id) = &started[0];
    let at = stop_container(&docker, stopped_id).await;
    let (_, latency) = wait_for(&registry, &id_of(stopped_name, 8080), false, at).await;
    eprintln!("[{label}] stop-to-deregistered latency: {}", ms(latency));

    // The registrator is down while one container starts and another is removed.
    registrator.stop().await;
    let late_name = format!("{project}-late");
    start_container(
        &docker,
        &project,
        &image,
        &late_name,
        &[format!("SERVICE_NAME={service}")],
        true,
    )
    .await;
    let (removed_name, removed_id) = &started[1];
    docker
        .remove_container(
            removed_id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("remove a container while the registrator is down");
    let down = registry.instances(&service).await.expect("list");
    assert!(
        down.iter().any(|r| r.id == id_of(removed_name, 8080)),
        "a stopped registrator leaves registrations in place"
    );

    let mut registrator = Running::start(&docker, &registry, label, None);
    let resync_started = Instant::now();
    let summary = registrator.wait_resynced().await;
    eprintln!(
        "[{label}] restart resync: {} ({summary:?})",
        ms(resync_started.elapsed())
    );
    let ids: Vec<String> = registry
        .instances(&service)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut expected: Vec<String> = started[2..]
        .iter()
        .map(|(name, _)| id_of(name, 8080))
        .chain([id_of(&late_name, 8080)])
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "the resync adds the new one, removes the gone ones"
    );
    let all = registry.all_instances().await.expect("list");
    assert!(
        all.contains(&release),
        "a release's registration is left alone"
    );
    assert!(
        all.contains(&other_host),
        "another host's registration is left alone"
    );
    registrator.stop().await;
}
