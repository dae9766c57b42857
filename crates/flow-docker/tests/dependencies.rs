//! `depends_on` conditions against the real Docker engine, and a build's progress: what
//! `DockerOrchestrator` waits for before a side target or the target's instances start, and
//! what it refuses.
//!
//! The images are the `FROM scratch` demo server built locally: it serves with a HEALTHCHECK,
//! or, with `--exit <code>`, is a one-shot job. Each test runs in a project of its own,
//! removed by a [`ProjectGuard`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_core::{Group, Orchestrator, OrchestratorError};
use flow_docker::compose::{ComposeProject, Condition};
use flow_docker::progress::DockerEvent;
use flow_docker::{ConnectSettings, DockerOptions, DockerOrchestrator, LABEL_PROJECT};
use flow_tests::fixtures::{build_demo_image, docker, unique_project, ProjectGuard};

/// The demo image under a tag of these tests' own, so that another run rebuilding the shared
/// demo tag cannot swap the binary under them.
const IMAGE: &str = "docker-flow-test-depends:v1";

async fn image() {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            build_demo_image(&docker().await, IMAGE, "v1")
                .await
                .expect("building the demo image");
        })
        .await;
}

/// An orchestrator for `compose` (with `{IMAGE}` replaced) whose events are collected.
async fn orchestrator(
    project: &str,
    compose: &str,
    dir: &Path,
    timeout: Duration,
) -> (DockerOrchestrator, Arc<Mutex<Vec<DockerEvent>>>) {
    image().await;
    let compose = ComposeProject::parse(
        &compose.replace("{IMAGE}", IMAGE),
        &dir.join("docker-compose.yml"),
        &HashMap::new(),
    )
    .expect("a valid test Compose file");
    let mut options = DockerOptions::new(project);
    options.stop_timeout = Duration::from_secs(2);
    options.dependency_timeout = timeout;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let orchestrator =
        DockerOrchestrator::connect(&ConnectSettings::from_env(), Arc::new(compose), options)
            .await
            .expect("the Docker engine must be reachable for these tests")
            .with_observer(Arc::new(move |event: &DockerEvent| {
                seen.lock().unwrap().push(event.clone())
            }));
    (orchestrator, events)
}

/// A project of its own for `compose`, and its orchestrator (see [`orchestrator`]).
async fn setup(
    prefix: &str,
    compose: &str,
    timeout: Duration,
) -> (
    ProjectGuard,
    DockerOrchestrator,
    Arc<Mutex<Vec<DockerEvent>>>,
) {
    let guard = ProjectGuard::new(unique_project(prefix));
    let (orchestrator, events) =
        orchestrator(guard.project(), compose, &std::env::temp_dir(), timeout).await;
    (guard, orchestrator, events)
}

fn sides(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// Starts one instance of `web` (after the side targets), as a release does.
async fn release_web(
    orchestrator: &DockerOrchestrator,
    side_targets: &[&str],
) -> Result<(), OrchestratorError> {
    orchestrator
        .start_side_targets(&sides(side_targets))
        .await?;
    let spec = orchestrator.prepare("web").await?;
    orchestrator
        .start(&Group::new("web", None), &[1], &spec)
        .await
        .map(|_| ())
}

/// The waits reported, as (service, dependency, condition, met).
fn waits(events: &Mutex<Vec<DockerEvent>>) -> Vec<(String, String, Condition, bool)> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            DockerEvent::DependencyWaiting {
                service,
                dependency,
                condition,
            } => Some((service.clone(), dependency.clone(), *condition, false)),
            DockerEvent::DependencyReady {
                service,
                dependency,
                condition,
                ..
            } => Some((service.clone(), dependency.clone(), *condition, true)),
            _ => None,
        })
        .collect()
}

fn wait(
    service: &str,
    dependency: &str,
    condition: Condition,
    met: bool,
) -> (String, String, Condition, bool) {
    (service.into(), dependency.into(), condition, met)
}

/// The names of the project's containers and their state (`running`, `exited`).
async fn containers(project: &str) -> Vec<(String, String)> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_PROJECT}={project}")],
    )]);
    let mut listed: Vec<(String, String)> = docker()
        .await
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.names
                    .unwrap_or_default()
                    .join("")
                    .trim_start_matches('/')
                    .to_string(),
                c.state.map(|s| s.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    listed.sort();
    listed
}

/// The time the engine started container `name`.
async fn started_at(name: &str) -> String {
    docker()
        .await
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
        .state
        .and_then(|s| s.started_at)
        .unwrap_or_default()
}

fn dependency_error(result: Result<(), OrchestratorError>) -> (String, String, String) {
    match result {
        Err(OrchestratorError::Dependency(failure)) => {
            (failure.service, failure.dependency, failure.message)
        }
        other => panic!("expected a dependency error, got {other:?}"),
    }
}

#[tokio::test]
async fn service_started_and_healthy_start_side_targets_in_dependency_order() {
    // `cache` (listed first) waits for `db` to be healthy; `web` for both.
    let compose = "services:\n  web:\n    image: {IMAGE}\n    depends_on:\n      cache: {condition: service_started}\n      db: {condition: service_healthy}\n  cache:\n    image: {IMAGE}\n    depends_on:\n      db: {condition: service_healthy}\n  db:\n    image: {IMAGE}\n";
    let (guard, orchestrator, events) =
        setup("dft-dep-order", compose, Duration::from_secs(30)).await;
    release_web(&orchestrator, &["cache", "db"]).await.unwrap();

    assert_eq!(
        waits(&events),
        [
            wait("cache", "db", Condition::Healthy, false),
            wait("cache", "db", Condition::Healthy, true),
            wait("web", "cache", Condition::Started, false),
            wait("web", "cache", Condition::Started, true),
            wait("web", "db", Condition::Healthy, false),
            wait("web", "db", Condition::Healthy, true),
        ]
    );
    let project = guard.project();
    let db = format!("{project}-db-1");
    let cache = format!("{project}-cache-1");
    assert!(
        started_at(&db).await < started_at(&cache).await,
        "db starts before cache, which depends on it"
    );
    let health = docker()
        .await
        .inspect_container(
            &db,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
        .state
        .and_then(|s| s.health)
        .and_then(|h| h.status);
    assert_eq!(health, Some(bollard::models::HealthStatusEnum::HEALTHY));
    assert!(containers(project)
        .await
        .contains(&(format!("{project}-web-1"), "running".into())));
}

#[tokio::test]
async fn service_completed_successfully_waits_for_the_job_to_exit_zero() {
    let compose = "services:\n  web:\n    image: {IMAGE}\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n  migrate:\n    image: {IMAGE}\n    command: [\"--exit\", \"0\"]\n    healthcheck: {disable: true}\n";
    let (guard, orchestrator, events) =
        setup("dft-dep-job", compose, Duration::from_secs(30)).await;
    release_web(&orchestrator, &["migrate"]).await.unwrap();
    assert_eq!(
        waits(&events),
        [
            wait("web", "migrate", Condition::CompletedSuccessfully, false),
            wait("web", "migrate", Condition::CompletedSuccessfully, true),
        ]
    );
    let project = guard.project();
    assert_eq!(
        containers(project).await,
        [
            (format!("{project}-migrate-1"), "exited".to_string()),
            (format!("{project}-web-1"), "running".to_string()),
        ]
    );
}

#[tokio::test]
async fn a_failed_job_stops_the_release_with_its_exit_code_and_log() {
    let compose = "services:\n  web:\n    image: {IMAGE}\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n  migrate:\n    image: {IMAGE}\n    command: [\"--exit\", \"3\"]\n    healthcheck: {disable: true}\n";
    let (guard, orchestrator, _) = setup("dft-dep-fail", compose, Duration::from_secs(30)).await;
    let (service, dependency, message) =
        dependency_error(release_web(&orchestrator, &["migrate"]).await);
    assert_eq!((service.as_str(), dependency.as_str()), ("web", "migrate"));
    assert!(
        message.contains("exited with code 3") && message.contains("job done, exiting with code 3"),
        "the exit code and the log's tail: {message}"
    );
    let project = guard.project();
    assert_eq!(
        containers(project).await,
        [(format!("{project}-migrate-1"), "exited".to_string())],
        "no instance of web was created"
    );
}

#[tokio::test]
async fn service_healthy_refuses_a_dependency_without_a_healthcheck_and_an_unhealthy_one() {
    let compose = "services:\n  web:\n    image: {IMAGE}\n    depends_on:\n      db: {condition: service_healthy}\n  db:\n    image: {IMAGE}\n    healthcheck: {disable: true}\n  sick:\n    image: {IMAGE}\n    environment: {DEMO_UNHEALTHY: \"1\"}\n  api:\n    image: {IMAGE}\n    depends_on:\n      sick: {condition: service_healthy}\n";
    let (guard, orchestrator, _) = setup("dft-dep-nocheck", compose, Duration::from_secs(30)).await;
    let (_, dependency, message) = dependency_error(release_web(&orchestrator, &["db"]).await);
    assert_eq!(dependency, "db");
    assert!(
        message.contains("no healthcheck") && message.contains("service_started"),
        "{message}"
    );

    orchestrator
        .start_side_targets(&sides(&["sick"]))
        .await
        .unwrap();
    let spec = orchestrator.prepare("api").await.unwrap();
    let result = orchestrator
        .start(&Group::new("api", None), &[1], &spec)
        .await
        .map(|_| ());
    let (service, dependency, message) = dependency_error(result);
    assert_eq!((service.as_str(), dependency.as_str()), ("api", "sick"));
    assert!(message.contains("is unhealthy"), "{message}");
    let names: Vec<String> = containers(guard.project())
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("-web-") || n.contains("-api-")),
        "nothing of the dependent services was created: {names:?}"
    );
}

#[tokio::test]
async fn a_wait_is_bounded_by_the_health_timeout() {
    // A server never completes.
    let compose = "services:\n  web:\n    image: {IMAGE}\n    depends_on:\n      server: {condition: service_completed_successfully}\n  server:\n    image: {IMAGE}\n";
    let (_guard, orchestrator, _) = setup("dft-dep-timeout", compose, Duration::from_secs(2)).await;
    let began = std::time::Instant::now();
    let (_, dependency, message) = dependency_error(release_web(&orchestrator, &["server"]).await);
    assert_eq!(dependency, "server");
    assert!(
        message.contains("within 2.0s") && message.contains("--health-timeout"),
        "{message}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn dependencies_that_are_not_started_are_named_or_skipped_when_optional() {
    let compose = "services:\n  web:\n    image: {IMAGE}\n    depends_on:\n      db: {condition: service_started}\n  api:\n    image: {IMAGE}\n    depends_on:\n      cache: {condition: service_healthy, required: false}\n      metrics: {required: false}\n  cache:\n    image: {IMAGE}\n  a:\n    image: {IMAGE}\n    depends_on: [b]\n  b:\n    image: {IMAGE}\n    depends_on: [a]\n  db:\n    image: {IMAGE}\n";
    let (guard, orchestrator, events) =
        setup("dft-dep-absent", compose, Duration::from_secs(30)).await;

    // Not a side target and not running: the error says how to have it started.
    let (_, dependency, message) = dependency_error(release_web(&orchestrator, &[]).await);
    assert_eq!(dependency, "db");
    assert!(message.contains("--side-target db"), "{message}");

    // Optional ones that are absent (not running, or not defined at all) are skipped, by name.
    let spec = orchestrator.prepare("api").await.unwrap();
    orchestrator
        .start(&Group::new("api", None), &[1], &spec)
        .await
        .unwrap();
    let skipped: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            DockerEvent::DependencySkipped {
                service,
                dependency,
                reason,
            } if service == "api" && !reason.is_empty() => Some(dependency.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, ["cache", "metrics"]);

    // A cycle is refused before anything starts, naming it.
    let result = orchestrator.start_side_targets(&sides(&["a", "b"])).await;
    let (_, _, message) = dependency_error(result);
    assert!(message.contains("a -> b -> a"), "{message}");
    let project = guard.project();
    assert_eq!(
        containers(project).await,
        [(format!("{project}-api-1"), "running".to_string())]
    );
}

#[tokio::test]
async fn a_build_reports_its_steps_and_a_failed_one_its_error_lines() {
    let guard = ProjectGuard::new(unique_project("dft-build-progress"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\nLABEL io.example.purpose=progress\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Dockerfile.broken"),
        "FROM scratch\nCOPY missing.txt /missing.txt\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    let project = guard.project().to_string();
    let compose = format!(
        "services:\n  web:\n    build: .\n    image: {project}-built:v1\n  broken:\n    build: {{context: ., dockerfile: Dockerfile.broken}}\n    image: {project}-broken:v1\n"
    );
    let (orchestrator, events) =
        orchestrator(&project, &compose, dir.path(), Duration::from_secs(30)).await;
    let built = orchestrator.prepare("web").await;
    let docker = docker().await;
    let _ = docker
        .remove_image(
            &format!("{project}-built:v1"),
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    built.unwrap();
    let lines: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            DockerEvent::BuildOutput { service, line } if service == "web" => Some(line.clone()),
            _ => None,
        })
        .collect();
    for step in [
        "Step 1/3 : FROM scratch",
        "Step 2/3 : COPY hello.txt /hello.txt",
        "Step 3/3 : LABEL io.example.purpose=progress",
    ] {
        assert!(
            lines.iter().any(|line| line == step),
            "{step:?} not among {lines:?}"
        );
    }

    let error = orchestrator.prepare("broken").await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, OrchestratorError::Image { .. })
            && message.contains("missing.txt")
            && message.contains("Step 2/2 : COPY missing.txt /missing.txt"),
        "the engine's error and the build's last lines: {message}"
    );
}
