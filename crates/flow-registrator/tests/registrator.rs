//! The registrator against the real Docker engine, with each registry backend: a throwaway
//! real etcd node, the Consul double, and the file store in a temporary directory.
//!
//! Every backend runs the same scenario (see [`scenario`]): start-up resync, registration
//! after a container starts (the latency is measured and printed), deregistration after it
//! stops, `SERVICE_IGNORE`, exposed-only ports, and a restart of the registrator during which one
//! container starts and another is removed. Then one test per group of Registrator's
//! conventions and options, on real containers. Containers carry a unique Compose project label
//! and are removed by [`ProjectGuard`], the per-test image by [`ImageGuard`], also on failure.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use flow_core::{CheckStatus, CheckTarget, DynRegistry, HealthCheck, Registration};
use flow_registrator::{
    run, Activity, Deregister, RegistratorError, RegistratorOptions, ResyncSummary, CONTAINER_KEY,
    HOST_KEY, REGISTERED_BY, REGISTERED_BY_KEY,
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
/// The check timeout Consul applies (and reports) when none is given.
const CONSUL_DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
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
    let consul = flow_consul_double::ConsulDouble::start()
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
    let options = RegistratorOptions {
        resync: Some(period),
        ..RegistratorOptions::default()
    };
    let mut registrator = Running::start_with(&docker, &registry, "periodic", options);
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
    skipped: mpsc::UnboundedReceiver<String>,
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
        let options = match docker_endpoint {
            Some(docker_endpoint) => RegistratorOptions {
                docker_endpoint,
                ..RegistratorOptions::default()
            },
            None => RegistratorOptions::default(),
        };
        Running::start_with(docker, registry, label, options)
    }

    /// [`Running::start`] with these options (their reporter is replaced by the test's).
    fn start_with(
        docker: &Docker,
        registry: &DynRegistry,
        label: &'static str,
        options: RegistratorOptions,
    ) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let (resync_tx, resynced) = mpsc::unbounded_channel();
        let (failure_tx, failures) = mpsc::unbounded_channel();
        let (skipped_tx, skipped) = mpsc::unbounded_channel();
        let options = RegistratorOptions {
            reporter: Arc::new(move |activity: &Activity| {
                match activity {
                    Activity::Resynced(summary) => {
                        let _ = resync_tx.send(*summary);
                    }
                    Activity::Failed { error, .. } => {
                        let _ = failure_tx.send(error.to_string());
                    }
                    Activity::Skipped(_) => {
                        let _ = skipped_tx.send(activity.to_string());
                    }
                    _ => {}
                }
                // Other tests' containers come and go on the shared engine: show only ours
                // and what matters.
                if !matches!(
                    activity,
                    Activity::Registered(_) | Activity::Deregistered(_) | Activity::Skipped(_)
                ) {
                    eprintln!("[{label}] {activity}");
                }
            }),
            ..options
        };
        let task = tokio::spawn(run(docker.clone(), Arc::clone(registry), options, async {
            let _ = stopped.await;
        }));
        Running {
            stop,
            task,
            resynced,
            failures,
            skipped,
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

    /// The first "not registered" report that contains `needle` (other containers of the
    /// shared engine may be reported too).
    async fn wait_skipped(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.skipped.recv())
                .await
                .unwrap_or_else(|_| panic!("no report naming {needle:?} within {DEADLINE:?}"))
                .expect("the registrator is running");
            if message.contains(needle) {
                return message;
            }
        }
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

/// How a test container is created besides its name and image.
#[derive(Default)]
struct Spec {
    env: Vec<String>,
    labels: Vec<(String, String)>,
    /// `(port/protocol, host IP)`: published on an ephemeral host port.
    publish: Vec<(&'static str, &'static str)>,
    /// Exposed on top of the image's `EXPOSE 8080`.
    expose: Vec<&'static str>,
    network_mode: Option<&'static str>,
}

impl Spec {
    fn env(env: &[&str]) -> Spec {
        Spec {
            env: env.iter().map(|e| e.to_string()).collect(),
            ..Spec::default()
        }
    }

    fn published(self, port: &'static str, host_ip: &'static str) -> Spec {
        let mut publish = self.publish;
        publish.push((port, host_ip));
        Spec { publish, ..self }
    }
}

/// Creates and starts `name` from `image` as `spec` says; returns the container id and
/// when the start call returned.
async fn start_spec(
    docker: &Docker,
    project: &str,
    image: &str,
    name: &str,
    spec: Spec,
) -> (String, Instant) {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for (port, host_ip) in &spec.publish {
        port_bindings
            .entry(port.to_string())
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(host_ip.to_string()),
                host_port: Some(String::new()),
            });
    }
    let mut labels: HashMap<String, String> = spec.labels.into_iter().collect();
    labels.insert(PROJECT_LABEL.to_string(), project.to_string());
    let exposed: Vec<String> = spec
        .publish
        .iter()
        .map(|(port, _)| port.to_string())
        .chain(spec.expose.iter().map(|p| p.to_string()))
        .collect();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(spec.env),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            network_mode: spec.network_mode.map(str::to_string),
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
    let spec = Spec {
        env: env.to_vec(),
        ..Spec::default()
    };
    let spec = if publish {
        spec.published("8080/tcp", "127.0.0.1")
    } else {
        spec
    };
    start_spec(docker, project, image, name, spec).await
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
            "SERVICE_REGION=eu-1".to_string(),
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
        // Every other SERVICE_<KEY> is an attribute: meta `<key>` (Consul's Meta), the
        // check's settings included, as Registrator writes them.
        let mut meta = our_meta(&hostname, &id);
        meta.insert("region".to_string(), "eu-1".to_string());
        meta.insert("check_http".to_string(), "/health".to_string());
        assert_eq!(found.meta, meta);
        let check = found.check.expect("an HTTP check");
        // No SERVICE_CHECK_TIMEOUT: none is written, so the registry's default applies;
        // Consul reports its default (10 s) when read back, the others nothing.
        assert!(
            matches!(check.timeout, None | Some(CONSUL_DEFAULT_TIMEOUT)),
            "{check:?}"
        );
        assert_eq!(
            HealthCheck {
                timeout: None,
                ..check
            },
            HealthCheck::http(
                format!("http://127.0.0.1:{host_port}/health"),
                Duration::from_secs(10),
                None
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

    // Exposed, not published: not registered without --internal (Registrator's default).
    let exposed_name = format!("{project}-exposed");
    start_container(
        &docker,
        &project,
        &image,
        &exposed_name,
        &[format!("SERVICE_NAME={project}-exposed")],
        false,
    )
    .await;

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
    let exposed = registry
        .instances(&format!("{project}-exposed"))
        .await
        .expect("list");
    assert!(
        exposed.is_empty(),
        "an exposed-only port registered without --internal: {exposed:?}"
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

/// What a test of one convention or option needs: the demo image, a project whose
/// containers are removed at the end, a file-store registry and the engine's host name.
struct Bench {
    docker: Docker,
    project: String,
    image: String,
    registry: DynRegistry,
    hostname: String,
    _image: ImageGuard,
    _guard: ProjectGuard,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn new(prefix: &str) -> Bench {
        let docker = docker().await;
        let project = unique_project(prefix);
        let image = format!("docker-flow-registrator-demo:{project}");
        build_demo_image(&docker, &image, "v1")
            .await
            .expect("building the demo image");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let registry: DynRegistry =
            Arc::new(flow_store::FileRegistry::new(dir.path().join("store")));
        let hostname = docker
            .info()
            .await
            .expect("docker info")
            .name
            .expect("the engine's name");
        Bench {
            _image: ImageGuard(image.clone()),
            _guard: ProjectGuard::new(&project),
            _dir: dir,
            docker,
            project,
            image,
            registry,
            hostname,
        }
    }

    /// `<project>-<suffix>`, a container (and service) name of this test.
    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.project)
    }

    /// The default registration id of `container`'s `port`.
    fn id(&self, container: &str, port: &str) -> String {
        format!("{}:{container}:{port}", self.hostname)
    }

    async fn start(&self, name: &str, spec: Spec) -> (String, Instant) {
        start_spec(&self.docker, &self.project, &self.image, name, spec).await
    }

    /// Waits until `id` is registered and returns the registration.
    async fn registered(&self, id: &str, since: Instant) -> Registration {
        wait_for(&self.registry, id, true, since)
            .await
            .0
            .expect("registered")
    }

    /// Starts a registrator on the bench's registry and waits for its first resync.
    async fn registrator(&self, label: &'static str, options: RegistratorOptions) -> Running {
        let mut running = Running::start_with(&self.docker, &self.registry, label, options);
        running.wait_resynced().await;
        running
    }

    /// Starts `name`, waits for the registration of its port `key` (`8080/tcp`,
    /// `5353/udp`) under the default id, and returns it with the port's published host port.
    async fn registered_at(&self, name: &str, spec: Spec, key: &str) -> (Registration, u16) {
        let (container_id, at) = self.start(name, spec).await;
        let (port, protocol) = key.split_once('/').expect("port/protocol");
        let id_port = match protocol {
            "udp" => format!("{port}:udp"),
            _ => port.to_string(),
        };
        let found = self.registered(&self.id(name, &id_port), at).await;
        (found, host_port(&self.docker, &container_id, key).await)
    }

    /// Whether anything is registered for `container` (by its full id in our meta).
    async fn has_registrations(&self, container_id: &str) -> bool {
        self.registry
            .all_instances()
            .await
            .expect("list")
            .iter()
            .any(|r| r.meta.get(CONTAINER_KEY).map(String::as_str) == Some(container_id))
    }

    /// Starts a plain published container and waits for its registration: every event
    /// before its start has been handled by then (the registrator handles them in order).
    async fn marker(&self, suffix: &str) {
        let name = self.name(suffix);
        let (_, at) = self
            .start(&name, Spec::default().published("8080/tcp", "127.0.0.1"))
            .await;
        self.registered(&self.id(&name, "8080"), at).await;
    }
}

/// The host port `key` (`8080/tcp`) is published on, as the engine reports it.
async fn host_port(docker: &Docker, id: &str, key: &str) -> u16 {
    let inspect = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|ports| ports.get(key).cloned().flatten())
        .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{key} of {id} is published"))
}

fn check(target: CheckTarget) -> HealthCheck {
    HealthCheck {
        target,
        interval: Some(Duration::from_secs(10)),
        timeout: None,
        method: None,
        grpc_use_tls: false,
        tls_skip_verify: false,
        initial_status: None,
        deregister_after: None,
    }
}

/// Registrator's conventions (docs/user/services.md, backends.md), each on a real container,
/// with the default options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrators_conventions_on_real_containers() {
    let bench = Bench::new("reg-conventions").await;
    // Without --ip, a port published on every interface is registered at the host's
    // address as the system resolver gives it for the host name.
    let host_address = (bench.hostname.as_str(), 0)
        .to_socket_addrs()
        .expect("the engine's host name resolves on this machine")
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .expect("an IPv4 address")
        .to_string();
    let mut registrator = bench
        .registrator("conventions", RegistratorOptions::default())
        .await;

    // Published on 0.0.0.0: host address and host port; attributes become meta; an escaped
    // comma stays in its tag; SERVICE_CHECK_TCP.
    let any = bench.name("any");
    let spec = Spec::env(&[
        "SERVICE_REGION=us-east",
        "SERVICE_TAGS=a\\,b,c",
        "SERVICE_CHECK_TCP=true",
    ])
    .published("8080/tcp", "0.0.0.0");
    let (found, port) = bench.registered_at(&any, spec, "8080/tcp").await;
    assert_eq!(
        (found.address.as_str(), found.port),
        (host_address.as_str(), port)
    );
    assert_eq!(found.tags, vec!["a,b", "c"]);
    assert_eq!(
        found.meta.get("region").map(String::as_str),
        Some("us-east")
    );
    assert_eq!(
        found.check,
        Some(check(CheckTarget::Tcp(format!("{host_address}:{port}"))))
    );

    // --net=host: the image's exposed 8080 at the host's address. The server listens on a
    // free port so that it disturbs nothing on the host.
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let host_net = bench.name("hostnet");
    let spec = Spec {
        network_mode: Some("host"),
        ..Spec::env(&[&format!("PORT={free_port}"), "SERVICE_CHECK_TTL=30s"])
    };
    let (_, at) = bench.start(&host_net, spec).await;
    let found = bench.registered(&bench.id(&host_net, "8080"), at).await;
    assert_eq!(
        (found.address.as_str(), found.port),
        (host_address.as_str(), 8080)
    );
    assert_eq!(
        found.check,
        Some(HealthCheck {
            interval: None,
            ..check(CheckTarget::Ttl(Duration::from_secs(30)))
        })
    );

    // A UDP port: `:udp` in the id and the tag `udp`.
    let udp = bench.name("udp");
    let spec = Spec::env(&["SERVICE_5353_NAME=dns"])
        .published("5353/udp", "127.0.0.1")
        .published("8080/tcp", "127.0.0.1");
    let (found, port) = bench.registered_at(&udp, spec, "5353/udp").await;
    assert_eq!((found.name.as_str(), found.port), ("dns", port));
    assert_eq!(found.tags, vec!["udp"]);

    // SERVICE_CHECK_HTTP without a leading slash, with method, initial status and
    // deregistration; no timeout given: none written (the registry's default).
    let http = bench.name("http");
    let spec = Spec::env(&[
        "SERVICE_CHECK_HTTP=health",
        "SERVICE_CHECK_HTTP_METHOD=HEAD",
        "SERVICE_CHECK_INITIAL_STATUS=passing",
        "SERVICE_CHECK_DEREGISTER_AFTER=1m",
    ])
    .published("8080/tcp", "127.0.0.1");
    let (found, port) = bench.registered_at(&http, spec, "8080/tcp").await;
    assert_eq!(
        found.check,
        Some(HealthCheck {
            method: Some("HEAD".to_string()),
            initial_status: Some(CheckStatus::Passing),
            deregister_after: Some(Duration::from_secs(60)),
            ..check(CheckTarget::Http(format!("http://127.0.0.1:{port}/health")))
        })
    );

    // Bad input: the container is reported by name with the variable and skipped; the
    // sync goes on (the marker started afterwards is registered).
    let bad_check = bench.name("bad-check");
    let spec = Spec::env(&["SERVICE_CHECK_TCP=true", "SERVICE_CHECK_INTERVAL=often"])
        .published("8080/tcp", "127.0.0.1");
    let (bad_check_id, _) = bench.start(&bad_check, spec).await;
    assert_eq!(
        registrator.wait_skipped(&bad_check).await,
        format!("not registered: container {bad_check}: SERVICE_CHECK_INTERVAL=\"often\" cannot be used: write a duration such as 10s, 1m30s or 500ms")
    );
    let bad_port = bench.name("bad-port");
    let spec = Spec::env(&["SERVICE_9999_NAME=ghost"]).published("8080/tcp", "127.0.0.1");
    let (bad_port_id, _) = bench.start(&bad_port, spec).await;
    assert_eq!(
        registrator.wait_skipped(&bad_port).await,
        format!("not registered: container {bad_port}: SERVICE_9999_NAME names port 9999, which the container does not expose; expose the port or remove the setting")
    );
    bench.marker("marker").await;
    assert!(!bench.has_registrations(&bad_check_id).await);
    assert!(!bench.has_registrations(&bad_port_id).await);
    registrator.stop().await;
}

/// `--ip`, `--tags`, `--explicit` and `--use-ip-from-label` on real containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_tags_explicit_and_the_ip_label_on_real_containers() {
    let bench = Bench::new("reg-options").await;
    let options = RegistratorOptions {
        ip: Some("192.0.2.10".parse().unwrap()),
        tags: flow_registrator::split_tags("edge,x\\,y"),
        explicit: true,
        ip_label: Some("ipam.address".to_string()),
        ..RegistratorOptions::default()
    };
    let registrator = bench.registrator("options", options).await;

    let named = bench.name("named");
    let spec = Spec::env(&[&format!("SERVICE_NAME={named}"), "SERVICE_TAGS=own"])
        .published("8080/tcp", "0.0.0.0");
    let (found, port) = bench.registered_at(&named, spec, "8080/tcp").await;
    assert_eq!((found.address.as_str(), found.port), ("192.0.2.10", port));
    assert_eq!(found.tags, vec!["own", "edge", "x,y"]);

    let unnamed = bench.name("unnamed");
    let (unnamed_id, _) = bench
        .start(&unnamed, Spec::default().published("8080/tcp", "127.0.0.1"))
        .await;

    let labelled = bench.name("labelled");
    let spec = Spec {
        labels: vec![("ipam.address".to_string(), "10.1.2.3/24".to_string())],
        ..Spec::env(&[&format!("SERVICE_NAME={labelled}")]).published("8080/tcp", "127.0.0.1")
    };
    let (found, port) = bench.registered_at(&labelled, spec, "8080/tcp").await;
    assert_eq!((found.address.as_str(), found.port), ("10.1.2.3", port));
    // Started before the labelled one, so handled before it: --explicit left it out.
    assert!(!bench.has_registrations(&unnamed_id).await);
    registrator.stop().await;
}

/// `--internal`: exposed ports, published or not, at the container's IP and exposed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_registers_exposed_ports_at_the_container_ip() {
    let bench = Bench::new("reg-internal").await;
    let options = RegistratorOptions {
        internal: true,
        ..RegistratorOptions::default()
    };
    let registrator = bench.registrator("internal", options).await;
    for (suffix, spec) in [
        ("exposed", Spec::default()),
        (
            "published",
            Spec::default().published("8080/tcp", "127.0.0.1"),
        ),
    ] {
        let name = bench.name(suffix);
        let (id, at) = bench.start(&name, spec).await;
        let found = bench.registered(&bench.id(&name, "8080"), at).await;
        let (_, ip) = addresses(&bench.docker, &id).await;
        assert_eq!(
            (found.address.as_str(), found.port),
            (ip.as_str(), 8080),
            "{suffix}"
        );
    }
    registrator.stop().await;
}

/// Waits until the engine reports `id` as not running and returns its exit code.
async fn exited(docker: &Docker, id: &str) -> i64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let state = docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .expect("inspect")
            .state
            .expect("a state");
        if state.running != Some(true) {
            return state.exit_code.expect("an exit code");
        }
        assert!(Instant::now() < deadline, "{id} did not exit");
        tokio::time::sleep(POLL).await;
    }
}

/// `--deregister=on-success`: a container that exited with a failure keeps its registration
/// (through a resync and through its own events); one that exited with 0 loses it.
/// `--cleanup=false`: a resync keeps registrations whose container is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_on_success_and_cleanup_off() {
    let bench = Bench::new("reg-on-success").await;
    // An invalid PORT makes the demo server exit at once with a failure.
    let failed = bench.name("failed");
    let (failed_id, _) = bench
        .start(
            &failed,
            Spec::env(&["PORT=none"]).published("8080/tcp", "127.0.0.1"),
        )
        .await;
    let code = exited(&bench.docker, &failed_id).await;
    assert!(
        code != 0 && code & 128 == 0,
        "a plain failure, not a signal: {code}"
    );
    let succeeded = bench.name("succeeded");
    let (succeeded_id, _) = bench
        .start(
            &succeeded,
            Spec::default().published("8080/tcp", "127.0.0.1"),
        )
        .await;
    stop_container(&bench.docker, &succeeded_id).await;
    assert_eq!(exited(&bench.docker, &succeeded_id).await, 0);
    // Both were registered before the registrator started (as by an earlier run).
    let earlier = |name: &str, id: &str| Registration {
        id: bench.id(name, "8080"),
        name: name.to_string(),
        address: "127.0.0.1".to_string(),
        port: 1,
        tags: Vec::new(),
        meta: our_meta(&bench.hostname, id),
        check: None,
    };
    let failed_registration = earlier(&failed, &failed_id);
    bench
        .registry
        .register(&failed_registration)
        .await
        .expect("register");
    bench
        .registry
        .register(&earlier(&succeeded, &succeeded_id))
        .await
        .expect("register");

    let options = RegistratorOptions {
        deregister: Deregister::OnSuccess,
        ..RegistratorOptions::default()
    };
    let registrator = bench.registrator("on-success", options).await;
    wait_for(
        &bench.registry,
        &bench.id(&succeeded, "8080"),
        false,
        Instant::now(),
    )
    .await;
    assert!(bench.has_registrations(&failed_id).await);
    // It fails again: its start and die events leave the registration too.
    bench
        .docker
        .start_container(&failed_id, None)
        .await
        .expect("start again");
    exited(&bench.docker, &failed_id).await;
    bench.marker("marker").await;
    assert!(bench.has_registrations(&failed_id).await);
    registrator.stop().await;

    // --cleanup=false: a registration of ours whose container is gone stays.
    let vanished = Registration {
        meta: our_meta(&bench.hostname, "feed"),
        ..earlier(&bench.name("vanished"), "feed")
    };
    bench.registry.register(&vanished).await.expect("register");
    let options = RegistratorOptions {
        cleanup: false,
        ..RegistratorOptions::default()
    };
    let registrator = bench.registrator("no-cleanup", options).await;
    let all = bench.registry.all_instances().await.expect("list");
    assert!(all.contains(&vanished), "kept without --cleanup");
    registrator.stop().await;
}

/// `--retry-attempts` and `--retry-interval`: an unreachable registry is tried again that
/// many times, that far apart, then the registrator fails naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_attempts_then_fail_naming_the_registry() {
    let docker = docker().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let address = format!("127.0.0.1:{}", closed.port());
    let registry: DynRegistry =
        Arc::new(flow_etcd::EtcdRegistry::new(&format!("etcd://{address}")).expect("endpoints"));
    let interval = Duration::from_millis(150);
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let options = RegistratorOptions {
        retry_attempts: Some(2),
        retry_interval: interval,
        reporter: Arc::new(move |activity: &Activity| {
            if let Activity::Failed { retry_in, .. } = activity {
                let _ = failures_tx.send(*retry_in);
            }
        }),
        ..RegistratorOptions::default()
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        DEADLINE,
        run(docker, registry, options, std::future::pending()),
    )
    .await
    .expect("gives up within the deadline");
    let elapsed = started.elapsed();
    let error = outcome
        .expect_err("the registry cannot be reached")
        .to_string();
    assert!(error.contains(&address), "{error}");
    let mut waits = Vec::new();
    while let Ok(wait) = failures.try_recv() {
        waits.push(wait);
    }
    assert_eq!(
        waits,
        vec![interval, interval],
        "two retries, each after the interval"
    );
    assert!(elapsed >= interval * 2, "{elapsed:?}");
    eprintln!("[retry] 1 + 2 attempts, failed after {}", ms(elapsed));
}

/// `--ttl` with `--ttl-refresh` on a real etcd node: registrations outlive their TTL while
/// the registrator refreshes them, and vanish once it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_registrations_expire_once_no_longer_refreshed() {
    let bench = Bench::new("reg-ttl").await;
    let node = EtcdNode::start().await;
    let ttl = Duration::from_secs(3);
    let registry: DynRegistry = Arc::new(
        flow_etcd::EtcdRegistry::new(&node.endpoints())
            .expect("etcd endpoints")
            .with_registration_ttl(ttl),
    );
    let options = RegistratorOptions {
        refresh: Some(Duration::from_secs(1)),
        ..RegistratorOptions::default()
    };
    let mut registrator = Running::start_with(&bench.docker, &registry, "ttl", options);
    registrator.wait_resynced().await;
    let name = bench.name("web");
    let (_, at) = bench
        .start(&name, Spec::default().published("8080/tcp", "127.0.0.1"))
        .await;
    let id = bench.id(&name, "8080");
    wait_for(&registry, &id, true, at).await;
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    let (still, _) = wait_for(&registry, &id, true, Instant::now()).await;
    assert!(still.is_some(), "refreshed past its TTL");
    registrator.stop().await;
    let stopped = Instant::now();
    let (_, expired) = wait_for(&registry, &id, false, stopped).await;
    eprintln!(
        "[ttl] registrator stopped → registration expired after {} (TTL {})",
        ms(expired),
        ms(ttl)
    );
}
