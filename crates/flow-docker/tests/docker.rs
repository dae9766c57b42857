//! `DockerOrchestrator` against the real Docker engine, with the `FROM scratch` demo image.
//!
//! Each test runs in a Compose project of its own, removed by a [`ProjectGuard`] at the end
//! (also when the test fails).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_core::{Color, Group, Health, Instance, Orchestrator, OrchestratorError};
use flow_docker::compose::ComposeProject;
use flow_docker::{ConnectSettings, DockerOptions, DockerOrchestrator, PullPolicy};
use flow_tests::fixtures::{build_demo_image, docker, unique_project, ProjectGuard};

/// The demo image every test runs; built once per test binary run (Docker caches layers).
const DEMO_IMAGE: &str = "docker-flow-test-demo:v1";

/// How long a test waits for an instance to reach a health state before failing.
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

async fn demo_image() {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let docker = docker().await;
    // Each #[tokio::test] has its own runtime; the OnceCell only avoids repeated builds.
    if BUILT.get().is_none() {
        build_demo_image(&docker, DEMO_IMAGE, "v1")
            .await
            .expect("building the demo image");
        let _ = BUILT.set(());
    }
}

async fn orchestrator(
    project: &str,
    compose: &str,
    configure: impl FnOnce(&mut DockerOptions),
) -> DockerOrchestrator {
    demo_image().await;
    let compose = ComposeProject::parse(
        compose,
        Path::new("/tmp/docker-compose.yml"),
        &HashMap::new(),
    )
    .expect("a valid test Compose file");
    let mut options = DockerOptions::new(project);
    options.stop_timeout = Duration::from_secs(5);
    configure(&mut options);
    DockerOrchestrator::connect(&ConnectSettings::from_env(), Arc::new(compose), options)
        .await
        .expect("the Docker engine must be reachable for these tests")
}

fn demo_compose(extra: &str) -> String {
    format!("services:\n  web:\n    image: {DEMO_IMAGE}\n{extra}  side:\n    image: {DEMO_IMAGE}\n")
}

async fn wait_for(
    orchestrator: &DockerOrchestrator,
    instance: &Instance,
    accept: impl Fn(&Health) -> bool,
) -> Health {
    let deadline = Instant::now() + HEALTH_DEADLINE;
    loop {
        let health = orchestrator.health(instance).await.expect("health");
        if accept(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not reach the expected health within {HEALTH_DEADLINE:?}; last: {health:?}",
            instance.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn docker_orchestrator_passes_the_conformance_suite() {
    use flow_core::conformance::orchestrator::{run_all, Subject};
    let guard = ProjectGuard::new(unique_project("dft-conformance"));
    let orchestrator = orchestrator(guard.project(), &demo_compose(""), |_| {}).await;
    run_all(&Subject::new(&orchestrator, "web", "side")).await;
}

#[tokio::test]
async fn starts_lists_checks_health_stops_and_removes_three_instances() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    let orchestrator = orchestrator(guard.project(), &demo_compose(""), |_| {}).await;
    let group = Group::new("web", Some(Color::Blue));
    let spec = orchestrator.prepare("web").await.unwrap();

    let started = orchestrator.start(&group, &[1, 2, 3], &spec).await.unwrap();
    assert_eq!(
        started.iter().map(|i| i.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let prefix = format!("{}-web-blue-", guard.project());
    for instance in &started {
        assert_eq!(instance.name, format!("{prefix}{}", instance.number));
        assert!(instance.running);
        assert_eq!(instance.image, DEMO_IMAGE);
        assert_eq!(
            instance.address.map(|a| a.port()),
            Some(8080),
            "the image's only EXPOSEd port"
        );
    }

    let listed = orchestrator.list(&group).await.unwrap();
    assert_eq!(listed, started);
    assert!(orchestrator
        .list(&Group::new("web", Some(Color::Green)))
        .await
        .unwrap()
        .is_empty());

    // The image's HEALTHCHECK decides.
    for instance in &started {
        wait_for(&orchestrator, instance, |h| *h == Health::Healthy).await;
    }
    let answer = http_get(started[0].address.unwrap(), "/").await;
    assert!(answer.contains("X-Version: v1"), "{answer}");

    orchestrator.stop(&started).await.unwrap();
    let stopped = orchestrator.list(&group).await.unwrap();
    assert_eq!(stopped.len(), 3, "stop keeps the containers");
    assert!(stopped.iter().all(|i| !i.running && i.address.is_none()));
    assert_eq!(
        orchestrator.health(&stopped[0]).await.unwrap(),
        Health::Exited { code: 0 },
        "the demo server exits 0 on SIGTERM"
    );
    orchestrator.stop(&stopped).await.unwrap();

    orchestrator.remove(&stopped).await.unwrap();
    assert!(orchestrator.list(&group).await.unwrap().is_empty());
    orchestrator.remove(&stopped).await.unwrap();
}

#[tokio::test]
async fn health_path_probes_over_http() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    // The image's HEALTHCHECK is disabled so only the HTTP probe can make it healthy.
    let compose = demo_compose("    healthcheck:\n      disable: true\n");
    let orchestrator = orchestrator(guard.project(), &compose, |o| {
        o.health_path = Some("/health".into());
        o.port = Some(8080);
    })
    .await;
    let group = Group::new("web", None);
    let spec = orchestrator.prepare("web").await.unwrap();
    let started = orchestrator.start(&group, &[1], &spec).await.unwrap();
    assert_eq!(started[0].name, format!("{}-web-1", guard.project()));
    wait_for(&orchestrator, &started[0], |h| *h == Health::Healthy).await;

    // Once the server says it is unhealthy, the probe reports it with the answer as detail.
    http_get(started[0].address.unwrap(), "/health/fail").await;
    let health = orchestrator.health(&started[0]).await.unwrap();
    match health {
        Health::Starting {
            detail: Some(detail),
        } => assert!(detail.contains("500"), "{detail}"),
        other => panic!("expected Starting with the 500 answer, got {other:?}"),
    }
}

#[tokio::test]
async fn without_health_check_the_grace_period_decides() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    let compose = demo_compose("    healthcheck:\n      disable: true\n");
    let orchestrator = orchestrator(guard.project(), &compose, |o| {
        o.grace_period = Duration::from_secs(1);
    })
    .await;
    let group = Group::new("web", None);
    let spec = orchestrator.prepare("web").await.unwrap();
    let started = orchestrator.start(&group, &[1], &spec).await.unwrap();
    let first = orchestrator.health(&started[0]).await.unwrap();
    assert!(
        matches!(&first, Health::Starting { detail: Some(d) } if d.contains("grace period")),
        "{first:?}"
    );
    wait_for(&orchestrator, &started[0], |h| *h == Health::Healthy).await;
}

#[tokio::test]
async fn an_unhealthy_instance_is_reported_and_diagnosed() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    let compose = demo_compose("    environment:\n      DEMO_UNHEALTHY: \"1\"\n");
    let orchestrator = orchestrator(guard.project(), &compose, |_| {}).await;
    let group = Group::new("web", Some(Color::Green));
    let spec = orchestrator.prepare("web").await.unwrap();
    let started = orchestrator.start(&group, &[1], &spec).await.unwrap();
    let health = wait_for(&orchestrator, &started[0], |h| {
        matches!(h, Health::Unhealthy { .. })
    })
    .await;
    let Health::Unhealthy { detail } = health else {
        unreachable!()
    };
    assert!(detail.contains("500"), "{detail}");

    let diagnosis = orchestrator.diagnose(&started[0]).await.unwrap();
    assert!(diagnosis.last_health_output.unwrap().contains("unhealthy"));
    assert!(
        diagnosis
            .log_tail
            .contains("listening on 0.0.0.0:8080 (unhealthy)"),
        "{}",
        diagnosis.log_tail
    );
}

#[tokio::test]
async fn side_targets_start_once_and_are_never_recreated() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    let orchestrator = orchestrator(guard.project(), &demo_compose(""), |_| {}).await;
    let docker = docker().await;
    let name = format!("{}-side-1", guard.project());
    orchestrator
        .start_side_targets(&["side".to_string()])
        .await
        .unwrap();
    let first = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(first.state.as_ref().unwrap().running, Some(true));

    orchestrator
        .start_side_targets(&["side".to_string()])
        .await
        .unwrap();
    let second = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(first.id, second.id, "not recreated");
    assert_eq!(
        first.state.unwrap().started_at,
        second.state.unwrap().started_at,
        "not restarted"
    );

    // A stopped side target is started again (same container).
    docker.stop_container(&name, None).await.unwrap();
    orchestrator
        .start_side_targets(&["side".to_string()])
        .await
        .unwrap();
    let third = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(first.id, third.id);
    assert_eq!(third.state.unwrap().running, Some(true));

    // Reachable by its service name on the project network: the alias is set.
    let network = third.network_settings.unwrap().networks.unwrap();
    let endpoint = &network[&format!("{}_default", guard.project())];
    assert!(endpoint
        .aliases
        .as_ref()
        .unwrap()
        .contains(&"side".to_string()));

    // An unknown side target is refused before anything starts.
    let error = orchestrator
        .start_side_targets(&["nope".to_string()])
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::UnknownTarget { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_failed_start_leaves_nothing_behind() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    let orchestrator = orchestrator(guard.project(), &demo_compose(""), |_| {}).await;
    let group = Group::new("web", Some(Color::Blue));
    let spec = orchestrator.prepare("web").await.unwrap();
    let existing = orchestrator.start(&group, &[2], &spec).await.unwrap();

    // Number 2 exists already: its create fails, and 1 and 3 must be removed again.
    let error = orchestrator
        .start(&group, &[1, 2, 3], &spec)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OrchestratorError::Instance { operation: "create", instance, .. } if instance.ends_with("-web-blue-2")),
        "{error}"
    );
    let left = orchestrator.list(&group).await.unwrap();
    assert_eq!(
        left, existing,
        "only the instance that existed before remains"
    );
}

#[tokio::test]
async fn pull_policy_never_with_a_missing_image_changes_nothing() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    let compose = "services:\n  web:\n    image: docker-flow-test-absent:never-built\n";
    let orchestrator = orchestrator(guard.project(), compose, |o| o.pull = PullPolicy::Never).await;
    let error = orchestrator.prepare("web").await.unwrap_err();
    assert!(
        matches!(&error, OrchestratorError::Image { image, message } if image == "docker-flow-test-absent:never-built" && message.contains("never")),
        "{error}"
    );
    let docker = docker().await;
    let networks = docker
        .inspect_network(&format!("{}_default", guard.project()), None)
        .await;
    assert!(networks.is_err(), "no network was created");
    assert!(orchestrator
        .list(&Group::new("web", None))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn unreachable_engine_names_the_endpoint() {
    let settings = ConnectSettings {
        host: Some("unix:///nonexistent/docker.sock".into()),
        ..Default::default()
    };
    let error = flow_docker::connect(&settings).await.unwrap_err();
    assert!(
        matches!(&error, OrchestratorError::Unreachable { endpoint, .. } if endpoint == "unix:///nonexistent/docker.sock"),
        "{error}"
    );
}

#[tokio::test]
async fn compose_ports_volumes_networks_labels_and_environment_are_applied() {
    let guard = ProjectGuard::new(unique_project("dft-docker"));
    let project = guard.project().to_string();
    let compose = demo_compose(
        "    ports: [\"127.0.0.1::8080\"]\n    volumes: [\"cache:/cache\"]\n    networks: [default, back]\n    labels:\n      team: core\n    environment:\n      - GREETING=hi\n",
    );
    let compose = format!("{compose}volumes:\n  cache: {{}}\nnetworks:\n  back: {{}}\n");
    let orchestrator = orchestrator(&project, &compose, |_| {}).await;
    let spec = orchestrator.prepare("web").await.unwrap();
    let started = orchestrator
        .start(&Group::new("web", None), &[1], &spec)
        .await
        .unwrap();
    let docker = docker().await;
    let inspected = docker
        .inspect_container(&started[0].id, None)
        .await
        .unwrap();

    let volume = docker
        .inspect_volume(&format!("{project}_cache"))
        .await
        .unwrap();
    assert_eq!(
        volume.labels.get("com.docker.compose.project"),
        Some(&project)
    );
    let mounts = inspected.mounts.clone().unwrap();
    assert!(mounts.iter().any(
        |m| m.name.as_deref() == Some(&format!("{project}_cache")[..])
            && m.destination.as_deref() == Some("/cache")
    ));

    let networks = inspected
        .network_settings
        .clone()
        .unwrap()
        .networks
        .unwrap();
    assert!(
        networks.contains_key(&format!("{project}_default")),
        "{networks:?}"
    );
    assert!(
        networks.contains_key(&format!("{project}_back")),
        "{networks:?}"
    );

    let config = inspected.config.clone().unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels["team"], "core");
    assert_eq!(labels["io.docker-flow.service"], format!("{project}-web"));
    assert_eq!(labels["io.docker-flow.target"], "web");
    assert_eq!(labels["io.docker-flow.number"], "1");
    assert_eq!(labels["com.docker.compose.service"], "web");
    assert_eq!(labels["com.docker.compose.container-number"], "1");
    assert!(!labels.contains_key("io.docker-flow.color"));
    let env = config.env.unwrap();
    assert!(env.contains(&"GREETING=hi".to_string()), "{env:?}");
    assert!(
        env.contains(&format!("SERVICE_NAME={project}-web")),
        "{env:?}"
    );

    // Published on a host port the engine picked, on loopback only.
    let bindings = inspected.network_settings.unwrap().ports.unwrap();
    let binding = &bindings["8080/tcp"].as_ref().unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    let host_port: u16 = binding.host_port.as_deref().unwrap().parse().unwrap();
    wait_for(&orchestrator, &started[0], |h| *h == Health::Healthy).await;
    let answer = http_get(([127, 0, 0, 1], host_port).into(), "/").await;
    assert!(answer.ends_with("v1\n"), "{answer}");
    assert_eq!(started[0].address.unwrap().port(), 8080);
}
