//! The registries behind the real `docker-flow` binary: releases on etcd (a real node started
//! per test) and on the Consul double, what they leave readable the way Docker Flow 1.x tools
//! read it, how registry faults stop a release before it changes anything, a lock lost in the
//! middle of a release, the proxy looking servers up in (and restoring routes from) the
//! registry, and `docker-flow registrator` keeping a registry in step with the engine.
//!
//! Every release is the binary cargo builds, run against the real engine in a Compose project
//! of its own; every etcd node (`flow_tests::fixtures::EtcdNode`) and registrator process is a
//! child killed when dropped.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use flow_core::{Registration, Registry, ServiceName};
use flow_etcd::EtcdRegistry;
use flow_tests::fixtures::{
    docker_flow_binary, unique_project, EtcdNode, ProjectGuard, PROJECT_LABEL,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{demo_compose, demo_images, finish, get_root, Site, DEMO_REPOSITORY, TARGET};

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// What these tests read from an etcd node besides the fixture's own helpers.
trait EtcdNodeExt {
    /// The adapter on this node, for reading registrations and taking locks.
    fn registry(&self) -> EtcdRegistry;
    /// The value of `key` as `etcdctl get --print-value-only` prints it, trimmed.
    fn get(&self, key: &str) -> String;
    /// Every key under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String>;
}

impl EtcdNodeExt for EtcdNode {
    fn registry(&self) -> EtcdRegistry {
        EtcdRegistry::new(&self.endpoints()).expect("a valid endpoint")
    }

    fn get(&self, key: &str) -> String {
        self.etcdctl(&["get", key, "--print-value-only"])
            .trim()
            .to_string()
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .etcdctl(&["get", prefix, "--prefix", "--keys-only"])
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }
}

/// `-t app -b` followed by `more`.
fn release(more: &[&str]) -> Vec<String> {
    ["-t", TARGET, "-b"]
        .iter()
        .chain(more)
        .map(|s| s.to_string())
        .collect()
}

/// Runs `docker-flow` with `args` (owned) and `env`.
async fn flow(site: &Site, args: &[String], env: &[(&str, &str)]) -> crate::support::Outcome {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    site.flow(&args, env).await
}

/// The IP address of `container` on its (only) network.
async fn container_ip(docker: &Docker, container: &str) -> String {
    docker
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .unwrap_or_else(|error| panic!("inspecting {container}: {error}"))
        .network_settings
        .and_then(|settings| settings.networks)
        .and_then(|networks| {
            networks
                .into_values()
                .find_map(|network| network.ip_address.filter(|ip| !ip.is_empty()))
        })
        .unwrap_or_else(|| panic!("{container} has no IP address"))
}

/// The ids of the registrations named `name`, sorted.
async fn registered(registry: &dyn Registry, name: &str) -> Vec<Registration> {
    let mut found = registry
        .instances(name)
        .await
        .unwrap_or_else(|error| panic!("listing the instances of {name}: {error}"));
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// Panics unless exactly instance 1 of `colour` is registered as `<service>-<colour>`, at its
/// container's IP and port 8080.
async fn assert_registered(site: &Site, registry: &dyn Registry, colour: &str) {
    let name = format!("{}-{colour}", site.service());
    let found = registered(registry, &name).await;
    let instance = site.instance(colour, 1);
    assert_eq!(
        found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [instance.as_str()],
        "the registrations named {name}"
    );
    assert_eq!(found[0].name, name);
    assert_eq!(found[0].port, 8080);
    assert_eq!(
        found[0].address,
        container_ip(site.docker(), &instance).await,
        "{instance} is registered at its container IP"
    );
}

/// Panics unless nothing is registered as `<service>-<colour>`.
async fn assert_not_registered(site: &Site, registry: &dyn Registry, colour: &str) {
    let name = format!("{}-{colour}", site.service());
    let found = registered(registry, &name).await;
    assert!(
        found.is_empty(),
        "{name} must have no registration left: {:?}",
        found.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
}

/// Runs the v1 release (blue) and the v2 release (green) of a fresh site with `registry_args`
/// and returns how long both took together.
async fn timed_releases(site: &Site, registry_args: &[&str]) -> Duration {
    let began = Instant::now();
    for tag in ["v1", "v2"] {
        let mut args = release(registry_args);
        args.extend(["-F".to_string(), "deploy".to_string()]);
        flow(site, &args, &[("DEMO_TAG", tag)]).await.assert_code(0);
    }
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_release_stores_1x_keys_and_registers_its_instances() {
    demo_images().await;
    let node = EtcdNode::start().await;
    let registry = node.registry();
    let url = node.endpoints();
    let site = Site::new("etcd", &demo_compose("")).await;
    let service = site.service();
    let key = |field: &str| format!("docker-flow/{service}/{field}");

    let v1 = flow(
        &site,
        &release(&["--registry", &url, "-F", "deploy"]),
        &[("DEMO_TAG", "v1")],
    )
    .await;
    v1.assert_code(0);
    assert!(
        v1.stdout
            .contains(&format!("{service}: blue live, scale 1")),
        "{}",
        v1.stdout
    );
    assert_eq!(node.get(&key("color")), "blue");
    assert_eq!(node.get(&key("scale")), "1");
    assert_registered(&site, &registry, "blue").await;
    assert!(
        !site.store_dir().exists(),
        "with --registry etcd://… nothing goes to the file store"
    );

    let v2 = flow(
        &site,
        &release(&["--registry", &url, "-F", "deploy"]),
        &[("DEMO_TAG", "v2")],
    )
    .await;
    v2.assert_code(0);
    assert_eq!(node.get(&key("color")), "green");
    assert_eq!(node.get(&key("scale")), "1");
    assert_registered(&site, &registry, "green").await;
    assert_registered(&site, &registry, "blue").await;
    assert_eq!(
        get_root(site.docker(), &site.instance("green", 1)).await,
        "v2"
    );

    flow(
        &site,
        &release(&["--registry", &url, "-F", "stop-old"]),
        &[("DEMO_TAG", "v2")],
    )
    .await
    .assert_code(0);
    assert_not_registered(&site, &registry, "blue").await;
    assert_registered(&site, &registry, "green").await;
    assert_eq!(
        node.get(&key("color")),
        "green",
        "stop-old keeps the colour"
    );
    assert!(site.running("blue").await.is_empty(), "blue is stopped");

    // The registry's overhead: the same two releases on etcd and on the file store, in this
    // run, on fresh sites (the images are cached by now), in alternating order so that a
    // busy moment of the shared machine does not weigh on one side only.
    let (mut etcd_took, mut file_took) = (Duration::ZERO, Duration::ZERO);
    for round in 0..OVERHEAD_ROUNDS {
        for on_etcd in [round % 2 == 0, round % 2 == 1] {
            if on_etcd {
                let timed = Site::new("etcd-timed", &demo_compose("")).await;
                etcd_took += timed_releases(&timed, &["--registry", &url]).await;
                assert!(!timed.store_dir().exists());
            } else {
                let timed = Site::new("file-timed", &demo_compose("")).await;
                file_took += timed_releases(&timed, &[]).await;
                assert_eq!(timed.state()["color"], "green");
            }
        }
    }
    println!(
        "registry overhead: {OVERHEAD_ROUNDS} rounds of v1+v2 releases took {} ms on etcd, {} ms on the file store (etcd/file ratio {:.2})",
        etcd_took.as_millis(),
        file_took.as_millis(),
        etcd_took.as_secs_f64() / file_took.as_secs_f64()
    );
}

/// How many times the overhead comparison releases v1 and v2 on each store.
const OVERHEAD_ROUNDS: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_release_is_readable_through_plain_kv_and_catalog_requests() {
    demo_images().await;
    let consul = flow_consul_double::ConsulDouble::start()
        .await
        .expect("the Consul double starts");
    let host_port = consul.address().trim_start_matches("http://").to_string();
    let site = Site::new("consul", &demo_compose("")).await;
    let service = site.service();
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", consul.address());
        async move {
            let response = http.get(&url).send().await.expect("the double answers");
            assert!(response.status().is_success(), "GET {url}: {response:?}");
            response.text().await.expect("a body")
        }
    };
    let catalog = |colour: &str| {
        let path = format!("/v1/catalog/service/{service}-{colour}");
        let get = &get;
        async move {
            let body: serde_json::Value =
                serde_json::from_str(&get(path).await).expect("the catalog answers JSON");
            let mut ids: Vec<String> = body
                .as_array()
                .expect("the catalog answers a list")
                .iter()
                .map(|entry| {
                    assert_eq!(entry["ServicePort"], 8080);
                    entry["ServiceID"]
                        .as_str()
                        .expect("a ServiceID")
                        .to_string()
                })
                .collect();
            ids.sort();
            ids
        }
    };

    flow(
        &site,
        &release(&["--consul-address", &host_port, "-F", "deploy"]),
        &[("DEMO_TAG", "v1")],
    )
    .await
    .assert_code(0);
    assert_eq!(
        get(format!("/v1/kv/docker-flow/{service}/color?raw")).await,
        "blue"
    );
    assert_eq!(
        get(format!("/v1/kv/docker-flow/{service}/scale?raw")).await,
        "1"
    );
    assert_eq!(catalog("blue").await, [site.instance("blue", 1)]);
    assert!(!site.store_dir().exists(), "nothing goes to the file store");

    flow(
        &site,
        &release(&["--consul-address", &host_port, "-F", "deploy,stop-old"]),
        &[("DEMO_TAG", "v2")],
    )
    .await
    .assert_code(0);
    assert_eq!(
        get(format!("/v1/kv/docker-flow/{service}/color?raw")).await,
        "green"
    );
    assert_eq!(catalog("green").await, [site.instance("green", 1)]);
    assert!(
        catalog("blue").await.is_empty(),
        "stop-old deregisters blue"
    );
}

/// Runs a release that must fail before changing anything: exit 1, `mentions` on stderr, no
/// container started, nothing in the file store.
async fn assert_refused(site: &Site, args: &[String], mentions: &[&str]) {
    let outcome = flow(site, args, &[("DEMO_TAG", "v1")]).await;
    outcome.assert_code(1).assert_stderr_names(mentions);
    println!("refused: {}", outcome.stderr.trim());
    site.assert_no_containers().await;
    site.assert_nothing_stored();
}

#[tokio::test]
async fn an_unreachable_etcd_fails_naming_it_and_changes_nothing() {
    let port = free_port();
    let site = Site::new("noetcd", &demo_compose("")).await;
    let url = format!("etcd://127.0.0.1:{port}");
    assert_refused(
        &site,
        &release(&["--registry", &url, "-F", "deploy"]),
        &[&format!("127.0.0.1:{port}")],
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_consul_fails_naming_it_and_changes_nothing() {
    let port = free_port();
    let site = Site::new("noconsul", &demo_compose("")).await;
    let address = format!("127.0.0.1:{port}");
    assert_refused(
        &site,
        &release(&["--consul-address", &address, "-F", "deploy"]),
        &[&address],
    )
    .await;
}

#[tokio::test]
async fn a_stored_colour_that_is_no_colour_is_named_and_never_reset() {
    let node = EtcdNode::start().await;
    let site = Site::new("purple", &demo_compose("")).await;
    let key = format!("docker-flow/{}/color", site.service());
    node.etcdctl(&["put", &key, "purple"]);

    assert_refused(
        &site,
        &release(&["--registry", &node.endpoints(), "-F", "deploy"]),
        &[&key, "purple"],
    )
    .await;
    assert_eq!(node.get(&key), "purple", "a corrupt value is never reset");
    assert_eq!(node.keys("docker-flow/"), [key], "nothing else was written");
}

#[tokio::test]
async fn a_lock_held_in_etcd_stops_the_release_naming_the_holder() {
    let node = EtcdNode::start().await;
    let site = Site::new("etcdlock", &demo_compose("")).await;
    let service = ServiceName::new(site.service()).expect("a valid service name");
    let holder = "docker-flow pid 4242 on another-host";
    let lease = node
        .registry()
        .lock(&service, holder, Duration::from_secs(60))
        .await
        .expect("the test takes the lock");
    let keys_before = node.keys("docker-flow/");

    assert_refused(
        &site,
        &release(&["--registry", &node.endpoints(), "-F", "deploy"]),
        &[
            &format!("is being released by {holder}"),
            &format!(
                "locked since {}",
                flow_core::time::rfc3339(lease.acquired_at)
            ),
        ],
    )
    .await;
    assert_eq!(
        node.keys("docker-flow/"),
        keys_before,
        "nothing was written"
    );
    node.registry()
        .unlock(&lease)
        .await
        .expect("the lock is still the test's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_lost_during_a_release_aborts_it_and_keeps_the_live_colour() {
    demo_images().await;
    let node = EtcdNode::start().await;
    let registry = node.registry();
    let url = node.endpoints();
    let compose = demo_compose(
        "    healthcheck:\n      \
           test: [\"CMD\", \"/demo-server\", \"--check\"]\n      \
           interval: ${HEALTH_INTERVAL:-1s}\n      \
           timeout: 1s\n      \
           retries: 3\n",
    );
    let site = Site::new("leaselost", &compose).await;
    let service = site.service();
    flow(
        &site,
        &release(&["--registry", &url, "-F", "deploy"]),
        &[("DEMO_TAG", "v1")],
    )
    .await
    .assert_code(0);
    let stored: Vec<(String, String)> = ["color", "scale", "release"]
        .iter()
        .map(|field| {
            let key = format!("docker-flow/{service}/{field}");
            let value = node.get(&key);
            (key, value)
        })
        .collect();

    // The green instance's first health check runs 20 s after its start, long after the
    // release's first lease renewal (every 10 s).
    let args = release(&["--registry", &url, "-F", "deploy"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = site.spawn_flow(&args, &[("DEMO_TAG", "v2"), ("HEALTH_INTERVAL", "20s")]);
    let began = Instant::now();
    while site.colour("green").await.is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the release started no green instance within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leases: Vec<String> = node
        .etcdctl(&["lease", "list"])
        .lines()
        .skip(1) // "found N leases"
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(
        leases.len(),
        1,
        "the release's lock is the only lease (registrations are plain keys): {leases:?}"
    );
    node.etcdctl(&["lease", "revoke", &leases[0]]);

    let outcome = finish(child).await;
    println!(
        "lease lost: the release aborted {} ms after it started: {}",
        began.elapsed().as_millis(),
        outcome
            .stderr
            .lines()
            .filter(|line| line.contains("was lost"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    outcome.assert_code(3).assert_stderr_names(&[
        &format!("the deploy lock of {service} was lost"),
        "rolling back",
    ]);
    assert!(
        site.colour("green").await.is_empty(),
        "the aborted release's containers are removed: {:?}",
        site.colour("green").await
    );
    assert_eq!(site.running("blue").await, [site.instance("blue", 1)]);
    for (key, value) in &stored {
        assert_eq!(&node.get(key), value, "{key} is unchanged");
    }
    assert_registered(&site, &registry, "blue").await;
    assert_not_registered(&site, &registry, "green").await;
}

/// A `docker-flow registrator` child process whose stderr lines are collected; killed when
/// dropped.
struct RegistratorProcess {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl RegistratorProcess {
    /// Starts `docker-flow registrator --registry <url>` and waits for its first resync.
    async fn start(url: &str) -> RegistratorProcess {
        let mut child = tokio::process::Command::new(docker_flow_binary())
            .args(["registrator", "--registry", url])
            .env_remove("FLOW_REGISTRY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start docker-flow registrator: {error}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        let process = RegistratorProcess { child, lines };
        process.wait_for("resynced:").await;
        process
    }

    /// Waits (at most 20 s) until a line containing `text` was printed.
    async fn wait_for(&self, text: &str) {
        let began = Instant::now();
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(text)) {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "the registrator printed no {text:?} within 20 s:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    async fn terminate(mut self) {
        let pid = self.child.id().expect("the registrator runs");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let exited = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the registrator stops within 10 s of SIGTERM")
            .expect("waiting for the registrator");
        assert!(
            exited.success(),
            "the registrator exits 0 on SIGTERM ({exited}):\n{}",
            self.lines.lock().unwrap().join("\n")
        );
        self.wait_for("registrator: stopped").await;
    }
}

/// Creates and starts a demo container named `name` in `project` with `SERVICE_NAME=<service>`
/// and 8080 published on `127.0.0.1::8080`; returns when the start call returned.
async fn start_registrator_container(
    docker: &Docker,
    project: &str,
    name: &str,
    service: &str,
) -> Instant {
    let body = ContainerCreateBody {
        image: Some(format!("{DEMO_REPOSITORY}:v1")),
        env: Some(vec![format!("SERVICE_NAME={service}")]),
        labels: Some(HashMap::from([(
            PROJECT_LABEL.to_string(),
            project.to_string(),
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
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    docker
        .start_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Instant::now()
}

/// Polls (every 5 ms, at most 10 s) until `service` has `count` registrations; returns when.
async fn await_registrations(registry: &dyn Registry, service: &str, count: usize) -> Instant {
    let began = Instant::now();
    loop {
        let found = registered(registry, service).await;
        if found.len() == count {
            return Instant::now();
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{service} has {} registrations after 10 s, expected {count}: {found:?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrator_binary_follows_the_engine_and_resyncs_after_a_restart() {
    demo_images().await;
    let node = EtcdNode::start().await;
    let registry = node.registry();
    let guard = ProjectGuard::new(unique_project("e2e-registrator"));
    let project = guard.project().to_string();
    let docker = flow_tests::fixtures::docker().await;
    let (first, second) = (format!("{project}-first"), format!("{project}-second"));
    let (first_service, second_service) = (format!("{project}-one"), format!("{project}-two"));

    let registrator = RegistratorProcess::start(&node.endpoints()).await;
    let started = start_registrator_container(&docker, &project, &first, &first_service).await;
    let registered_at = await_registrations(&registry, &first_service, 1).await;
    let found = registered(&registry, &first_service).await;
    assert_eq!(
        found[0].address, "127.0.0.1",
        "the published port's host IP"
    );
    assert_ne!(found[0].port, 8080, "the published (random) host port");
    println!(
        "registrator: {first} registered {} ms after its start returned",
        registered_at.duration_since(started).as_millis()
    );

    docker
        .stop_container(
            &first,
            Some(StopContainerOptions {
                t: Some(5),
                signal: None,
            }),
        )
        .await
        .expect("stopping the first container");
    let stopped = Instant::now();
    let deregistered_at = await_registrations(&registry, &first_service, 0).await;
    println!(
        "registrator: {first} deregistered {} ms after its stop returned",
        deregistered_at.duration_since(stopped).as_millis()
    );

    // Running again, then the registrator goes down while one container goes away and
    // another comes.
    docker
        .start_container(&first, None)
        .await
        .expect("restarting the first container");
    await_registrations(&registry, &first_service, 1).await;
    registrator.terminate().await;
    start_registrator_container(&docker, &project, &second, &second_service).await;
    docker
        .remove_container(
            &first,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("removing the first container");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        registered(&registry, &first_service).await.len(),
        1,
        "while the registrator is down, nothing changes in the registry"
    );
    assert!(registered(&registry, &second_service).await.is_empty());

    let restarted = RegistratorProcess::start(&node.endpoints()).await;
    assert_eq!(registered(&registry, &second_service).await.len(), 1);
    assert!(
        registered(&registry, &first_service).await.is_empty(),
        "the resync removes the registration of the removed container"
    );
    // The engine is shared: other containers with published ports are registered too, so
    // only this test's names are looked at.
    let all = registry.all_instances().await.expect("listing everything");
    let ours: Vec<&str> = all
        .iter()
        .map(|r| r.name.as_str())
        .filter(|name| name.starts_with(&project))
        .collect();
    assert_eq!(ours, [second_service.as_str()], "nothing dangling remains");
    restarted.terminate().await;
    drop(guard);
}

/// Starts the proxy in-process on `state_dir`, serving traffic on `bind` and looking servers
/// up in `registry`.
async fn start_proxy(
    state_dir: &std::path::Path,
    bind: SocketAddr,
    registry: flow_core::DynRegistry,
) -> flow_proxy::RunningProxy {
    let config = flow_proxy::ServeConfig {
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        registry: Some(registry),
        ..flow_proxy::ServeConfig::new(state_dir, vec![bind])
    };
    flow_proxy::start(config)
        .await
        .unwrap_or_else(|e| panic!("the proxy did not start (is Debian's haproxy installed?): {e}"))
}

/// The body of `GET /` through the proxy's frontend.
async fn through_proxy(bind: SocketAddr) -> String {
    let response = reqwest::Client::new()
        .get(format!("http://{bind}/"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET / through the proxy at {bind}: {e}"));
    assert!(
        response.status().is_success(),
        "GET / through the proxy: {response:?}"
    );
    response.text().await.expect("a body").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_routes_registered_instances_and_rebuilds_them_from_the_registry_on_start() {
    demo_images().await;
    let node = EtcdNode::start().await;
    let url = node.endpoints();
    let registry: flow_core::DynRegistry = Arc::new(node.registry());
    let site = Site::new("proxyreg", &demo_compose("")).await;
    let service = site.service();
    let state_dir = tempfile::tempdir().expect("a proxy state directory");
    let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));

    let proxy = start_proxy(state_dir.path(), bind, registry.clone()).await;
    flow(
        &site,
        &release(&["--registry", &url, "-F", "deploy"]),
        &[("DEMO_TAG", "v1")],
    )
    .await
    .assert_code(0);
    let reconfigure = format!(
        "http://{}/v1/docker-flow-proxy/reconfigure?serviceName={service}&serviceColor=blue&servicePath=/",
        proxy.api_addr()
    );
    let answer = reqwest::get(&reconfigure)
        .await
        .expect("the proxy's API answers");
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.expect("a JSON answer");
    assert_eq!(status, 200, "{body}");
    let blue_server = format!(
        "{}:8080",
        container_ip(site.docker(), &site.instance("blue", 1)).await
    );
    assert_eq!(body["Servers"], serde_json::json!([blue_server]), "{body}");
    assert_eq!(through_proxy(bind).await, "v1");
    proxy.shutdown().await;

    // While the proxy is down, v2 goes green and blue is stopped (and deregistered).
    flow(
        &site,
        &release(&["--registry", &url, "-F", "deploy,stop-old"]),
        &[("DEMO_TAG", "v2")],
    )
    .await
    .assert_code(0);
    assert_eq!(node.get(&format!("docker-flow/{service}/color")), "green");

    let proxy = start_proxy(state_dir.path(), bind, registry.clone()).await;
    assert!(
        proxy.restore_warnings().is_empty(),
        "the route was rebuilt from the registry: {:?}",
        proxy.restore_warnings()
    );
    for _ in 0..5 {
        assert_eq!(
            through_proxy(bind).await,
            "v2",
            "the restarted proxy routes to green, as the registry says, without a reconfigure"
        );
    }
    let routes: serde_json::Value = reqwest::get(format!(
        "http://{}/v1/docker-flow-proxy/routes",
        proxy.api_addr()
    ))
    .await
    .expect("the proxy's API answers")
    .json()
    .await
    .expect("a JSON answer");
    let route = &routes["Routes"][0];
    assert_eq!(route["ServiceColor"], "green", "{routes}");
    let green_server = format!(
        "{}:8080",
        container_ip(site.docker(), &site.instance("green", 1)).await
    );
    assert_eq!(
        route["Servers"]
            .as_array()
            .expect("a server list")
            .iter()
            .filter(|s| s["Active"] == true)
            .map(|s| s["Address"].as_str().expect("an address"))
            .collect::<Vec<_>>(),
        [green_server.as_str()],
        "{routes}"
    );
    proxy.shutdown().await;
}
