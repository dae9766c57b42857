//! The `docker-flow` binary against the real Docker engine: releases, stop-old, scaling, a
//! failed health check, refused input, the deploy lock and `--dry-run`.
//!
//! Every test runs the binary cargo builds, in a scratch directory with its own Compose file
//! and Compose project, and checks what a user would: the exit code, what was printed, the
//! containers the engine lists under the project's label, and the stored `state.json`.

use std::time::Duration;

use crate::support::{demo_compose, demo_images, finish, get_root, Container, Site, TARGET};

/// The flags every release in these tests uses: the `app` target, blue-green.
const RELEASE: [&str; 3] = ["-t", TARGET, "-b"];

/// `RELEASE` followed by `more`.
fn release(more: &[&'static str]) -> Vec<&'static str> {
    RELEASE.iter().chain(more).copied().collect()
}

/// The summary line a successful run prints last on stdout:
/// `<service>: <colour> live, scale <n> | <phase> <took>, … | total <took>`.
struct Summary {
    head: String,
    phases: Vec<String>,
    total: String,
}

impl Summary {
    #[track_caller]
    fn parse(stdout: &str) -> Summary {
        let line = stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no summary line on stdout: {stdout:?}"));
        let parts: Vec<&str> = line.split(" | ").collect();
        let [head, phases, total] = parts[..] else {
            panic!("the summary line is not `head | phases | total`: {line:?}");
        };
        Summary {
            head: head.to_string(),
            phases: phases
                .split(", ")
                .map(|phase| {
                    let (name, took) = phase
                        .split_once(' ')
                        .unwrap_or_else(|| panic!("phase without a time in {line:?}"));
                    assert!(
                        took.ends_with("ms") || took.ends_with('s'),
                        "phase {name} has no duration in {line:?}"
                    );
                    name.to_string()
                })
                .collect(),
            total: total.to_string(),
        }
    }

    #[track_caller]
    fn assert(&self, head: &str, phases: &[&str]) {
        assert_eq!(self.head, head);
        for phase in phases {
            assert!(
                self.phases.iter().any(|p| p == phase),
                "the summary names no {phase} phase: {:?}",
                self.phases
            );
        }
        assert!(self.total.starts_with("total "), "{:?}", self.total);
    }
}

fn names(containers: &[Container]) -> Vec<&str> {
    containers.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_released_blue_then_green_then_stopped_and_scaled() {
    demo_images().await;
    let site = Site::new("cycle", &demo_compose("")).await;
    let service = site.service();

    // v1 goes blue.
    let first = site
        .flow(&release(&["-F", "deploy"]), &[("DEMO_TAG", "v1")])
        .await;
    first.assert_code(0);
    Summary::parse(&first.stdout).assert(
        &format!("{service}: blue live, scale 1"),
        &["prepare", "start", "healthy", "commit"],
    );
    assert_eq!(site.running("blue").await, [site.instance("blue", 1)]);
    let state = site.state();
    assert_eq!(state["color"], "blue");
    assert_eq!(state["scale"], 1);
    assert_eq!(state["last_release"]["image"], "docker-flow-e2e-demo:v1");

    let blue = site.colour("blue").await.remove(0);
    for (label, value) in [
        ("com.docker.compose.project", site.project().to_string()),
        ("com.docker.compose.service", format!("{TARGET}-blue")),
        ("com.docker.compose.container-number", "1".to_string()),
    ] {
        assert_eq!(
            blue.labels.get(label),
            Some(&value),
            "label {label} of {}: {:?}",
            blue.name,
            blue.labels
        );
    }
    let env = site
        .docker()
        .inspect_container(
            &blue.id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("inspecting the blue instance")
        .config
        .and_then(|config| config.env)
        .unwrap_or_default();
    let service_name = format!("SERVICE_NAME={service}-blue");
    assert!(
        env.contains(&service_name),
        "{service_name} is not in the environment of {}: {env:?}",
        blue.name
    );

    // v2 goes green, next to blue.
    let second = site
        .flow(&release(&["-F", "deploy"]), &[("DEMO_TAG", "v2")])
        .await;
    second.assert_code(0);
    Summary::parse(&second.stdout).assert(
        &format!("{service}: green live, scale 1"),
        &["prepare", "start", "healthy", "commit"],
    );
    assert_eq!(site.running("green").await, [site.instance("green", 1)]);
    assert_eq!(
        site.running("blue").await,
        [site.instance("blue", 1)],
        "a blue-green deploy leaves the old colour running"
    );
    assert_eq!(site.state()["color"], "green");
    assert_eq!(
        get_root(site.docker(), &site.instance("green", 1)).await,
        "v2"
    );
    assert_eq!(
        get_root(site.docker(), &site.instance("blue", 1)).await,
        "v1"
    );

    // stop-old stops blue and keeps its container.
    let stop_old = site
        .flow(&release(&["-F", "stop-old"]), &[("DEMO_TAG", "v2")])
        .await;
    stop_old.assert_code(0);
    Summary::parse(&stop_old.stdout)
        .assert(&format!("{service}: green live, scale 1"), &["retire"]);
    let blue = site.colour("blue").await;
    assert_eq!(names(&blue), [site.instance("blue", 1)]);
    assert_eq!(
        blue[0].state, "exited",
        "stop-old stops, it does not remove"
    );
    assert_eq!(site.running("green").await, [site.instance("green", 1)]);

    // +2 adds two green instances.
    let up = site
        .flow(
            &release(&["-s", "+2", "-F", "scale"]),
            &[("DEMO_TAG", "v2")],
        )
        .await;
    up.assert_code(0);
    Summary::parse(&up.stdout).assert(
        &format!("{service}: green live, scale 3"),
        &["start", "healthy", "commit"],
    );
    assert_eq!(
        site.running("green").await,
        (1..=3)
            .map(|n| site.instance("green", n))
            .collect::<Vec<_>>()
    );
    assert_eq!(site.state()["scale"], 3);
    assert_eq!(site.state()["color"], "green");

    // -10 is bounded at one instance; the highest numbers go.
    let down = site
        .flow(
            &release(&["-s", "-10", "-F", "scale"]),
            &[("DEMO_TAG", "v2")],
        )
        .await;
    down.assert_code(0);
    Summary::parse(&down.stdout).assert(
        &format!("{service}: green live, scale 1"),
        &["commit", "retire"],
    );
    assert_eq!(
        names(&site.colour("green").await),
        [site.instance("green", 1)],
        "scaling down removes the highest-numbered instances"
    );
    assert_eq!(site.running("green").await, [site.instance("green", 1)]);
    assert_eq!(site.state()["scale"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_scale_given_with_deploy_and_scale_is_applied_once() {
    demo_images().await;
    let site = Site::new("once", &demo_compose("")).await;
    site.flow(&release(&["-F", "deploy"]), &[("DEMO_TAG", "v1")])
        .await
        .assert_code(0);

    let both = site
        .flow(
            &release(&["-F", "deploy", "-s", "+2", "-F", "scale"]),
            &[("DEMO_TAG", "v2")],
        )
        .await;
    both.assert_code(0);
    Summary::parse(&both.stdout).assert(&format!("{}: green live, scale 3", site.service()), &[]);
    assert_eq!(
        site.running("green").await,
        (1..=3)
            .map(|n| site.instance("green", n))
            .collect::<Vec<_>>(),
        "deploy applies +2 to the stored scale 1; the scale step must not add 2 more"
    );
    assert_eq!(site.running("blue").await, [site.instance("blue", 1)]);
    let state = site.state();
    assert_eq!(state["scale"], 3);
    assert_eq!(state["color"], "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_release_is_rolled_back_and_the_live_colour_kept() {
    demo_images().await;
    let site = Site::new("unhealthy", &demo_compose("")).await;
    site.flow(&release(&["-F", "deploy"]), &[("DEMO_TAG", "v1")])
        .await
        .assert_code(0);
    let stored = site.state_bytes();
    let blue_before = site.colour("blue").await;

    let failed = site
        .flow(
            &release(&["-F", "deploy", "--health-timeout", "10s"]),
            &[("DEMO_TAG", "v3"), ("DEMO_UNHEALTHY", "1")],
        )
        .await;
    failed.assert_code(3).assert_stderr_names(&[
        &site.instance("green", 1),
        "last health output: HTTP/1.1 500",
        "last log lines:",
        "demo-server v3",
        "rolled back",
    ]);

    assert!(
        site.colour("green").await.is_empty(),
        "the failed colour's containers must be removed: {:?}",
        names(&site.colour("green").await)
    );
    let blue_after = site.colour("blue").await;
    assert_eq!(names(&blue_after), names(&blue_before));
    assert_eq!(blue_after[0].id, blue_before[0].id);
    assert!(blue_after[0].running(), "the live colour keeps running");
    assert_eq!(
        get_root(site.docker(), &site.instance("blue", 1)).await,
        "v1"
    );
    assert_eq!(
        site.state_bytes(),
        stored,
        "a rolled-back release must not touch the stored state"
    );
}

/// Runs an invocation that must be refused as bad input: exit 2, `mentions` on stderr, no
/// container started, nothing stored.
async fn assert_bad_input(site: &Site, args: &[&str], env: &[(&str, &str)], mentions: &[&str]) {
    let outcome = site.flow(args, env).await;
    outcome.assert_code(2).assert_stderr_names(mentions);
    site.assert_no_containers().await;
    site.assert_nothing_stored();
}

#[tokio::test]
async fn a_missing_compose_file_is_bad_input() {
    let site = Site::new("nocompose", &demo_compose("")).await;
    std::fs::remove_file(site.dir().join("docker-compose.yml")).expect("removing the file");
    assert_bad_input(
        &site,
        &release(&["-F", "deploy"]),
        &[],
        &["docker-compose.yml", "does not exist"],
    )
    .await;
}

#[tokio::test]
async fn a_malformed_compose_file_is_bad_input() {
    let site = Site::new("badyaml", "services:\n  app:\n    image: [unclosed\n").await;
    assert_bad_input(
        &site,
        &release(&["-F", "deploy"]),
        &[],
        &["docker-compose.yml", "line"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_target_is_bad_input() {
    let site = Site::new("notarget", &demo_compose("")).await;
    assert_bad_input(
        &site,
        &["-t", "nope", "-b", "-F", "deploy"],
        &[],
        &["\"nope\"", "app"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_side_target_is_bad_input() {
    let site = Site::new("noside", &demo_compose("")).await;
    assert_bad_input(
        &site,
        &release(&["-T", "nope", "-F", "deploy"]),
        &[],
        &["side target", "\"nope\""],
    )
    .await;
}

#[tokio::test]
async fn a_scale_that_is_not_a_number_is_bad_input() {
    let site = Site::new("badscale", &demo_compose("")).await;
    assert_bad_input(
        &site,
        &release(&["--scale=abc", "-F", "scale"]),
        &[],
        &["--scale", "\"abc\""],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_step_is_bad_input() {
    let site = Site::new("badstep", &demo_compose("")).await;
    assert_bad_input(
        &site,
        &release(&["-F", "deploi"]),
        &[],
        &["\"deploi\"", "deploy, scale, stop-old, proxy or rollback"],
    )
    .await;
}

#[tokio::test]
async fn an_invalid_options_file_is_bad_input() {
    let site = Site::new("badyml", &demo_compose("")).await;
    site.write("docker-flow.yml", "target: app\nscale: [1, 2]\n");
    assert_bad_input(&site, &["-F", "deploy"], &[], &["docker-flow.yml", "scale"]).await;
}

#[tokio::test]
async fn a_blue_green_value_that_is_not_a_boolean_is_bad_input() {
    let site = Site::new("badbool", &demo_compose("")).await;
    assert_bad_input(
        &site,
        &["-t", TARGET, "-F", "deploy"],
        &[("FLOW_BLUE_GREEN", "maybe")],
        &["FLOW_BLUE_GREEN", "\"maybe\""],
    )
    .await;
}

#[tokio::test]
async fn a_blue_green_target_with_a_fixed_host_port_is_bad_input() {
    let compose = format!(
        "services:\n  {TARGET}:\n    image: docker-flow-e2e-demo:v1\n    ports:\n      - \"8080:8080\"\n"
    );
    let site = Site::new("fixedport", &compose).await;
    assert_bad_input(
        &site,
        &release(&["-F", "deploy"]),
        &[],
        &["blue-green", "8080"],
    )
    .await;
}

#[tokio::test]
async fn a_blue_green_target_with_a_container_name_is_bad_input() {
    let compose = format!(
        "services:\n  {TARGET}:\n    image: docker-flow-e2e-demo:v1\n    container_name: fixed\n"
    );
    let site = Site::new("fixedname", &compose).await;
    assert_bad_input(
        &site,
        &release(&["-F", "deploy"]),
        &[],
        &["blue-green", "container_name"],
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_engine_fails_before_changing_anything() {
    let site = Site::new("noengine", &demo_compose("")).await;
    let outcome = site
        .flow(
            &release(&["-H", "unix:///nonexistent.sock", "-F", "deploy"]),
            &[],
        )
        .await;
    outcome
        .assert_code(1)
        .assert_stderr_names(&["unix:///nonexistent.sock"]);
    site.assert_no_containers().await;
    site.assert_nothing_stored();
}

#[tokio::test]
async fn steps_that_need_a_live_release_fail_before_changing_anything() {
    let site = Site::new("nolive", &demo_compose("")).await;
    for args in [
        release(&["-F", "stop-old"]),
        release(&["-s", "2", "-F", "scale"]),
    ] {
        site.flow(&args, &[])
            .await
            .assert_code(1)
            .assert_stderr_names(&["has no live release yet", "nothing was changed"]);
        site.assert_no_containers().await;
        assert_eq!(site.state_bytes(), None, "{args:?} stored a state");
    }
}

#[tokio::test]
async fn an_absent_image_with_pull_never_fails_before_changing_anything() {
    let site = Site::new("noimage", &demo_compose("")).await;
    site.flow(
        &release(&["--pull", "never", "-F", "deploy"]),
        &[("DEMO_TAG", "absent")],
    )
    .await
    .assert_code(1)
    .assert_stderr_names(&[
        "docker-flow-e2e-demo:absent",
        "never",
        "nothing was changed",
    ]);
    site.assert_no_containers().await;
    assert_eq!(site.state_bytes(), None);
}

/// The host name docker-flow puts in a lock holder's description: `/etc/hostname`, else
/// `HOSTNAME`.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .expect("this machine has a host name")
}

/// How long the slow release's instances take to report healthy: their first health check
/// runs one interval after the start. Long enough that the second invocation runs well
/// inside it.
const SLOW_HEALTH_INTERVAL: &str = "8s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_release_of_a_locked_service_stops_at_once_and_changes_nothing() {
    demo_images().await;
    let compose = demo_compose(
        "    healthcheck:\n      \
           test: [\"CMD\", \"/demo-server\", \"--check\"]\n      \
           interval: ${HEALTH_INTERVAL:-1s}\n      \
           timeout: 1s\n      \
           retries: 3\n",
    );
    let site = Site::new("lock", &compose).await;
    site.flow(&release(&["-F", "deploy"]), &[("DEMO_TAG", "v1")])
        .await
        .assert_code(0);
    let stored = site.state_bytes();

    let mut first = site.spawn_flow(
        &release(&["-F", "deploy"]),
        &[
            ("DEMO_TAG", "v2"),
            ("HEALTH_INTERVAL", SLOW_HEALTH_INTERVAL),
        ],
    );
    let holder_pid = first.id().expect("the first release runs");
    // The lock is taken before anything is started: once the green instance exists, the
    // first release holds the lock and is waiting for health.
    let mut waited = 0;
    while site.colour("green").await.is_empty() {
        assert!(
            waited < 300,
            "the first release started no green instance within 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let containers_while_locked: Vec<(String, String)> = site
        .containers()
        .await
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();

    let second = site
        .flow(&release(&["-F", "deploy"]), &[("DEMO_TAG", "v2")])
        .await;
    second.assert_code(1).assert_stderr_names(&[
        &format!(
            "is being released by docker-flow pid {holder_pid} on {}",
            hostname()
        ),
        "nothing was changed",
    ]);
    assert!(
        first
            .try_wait()
            .expect("polling the first release")
            .is_none(),
        "the second invocation must not wait for the lock: the first is still releasing"
    );
    let containers_after: Vec<(String, String)> = site
        .containers()
        .await
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    assert_eq!(
        containers_after, containers_while_locked,
        "the refused release must not start or remove containers"
    );
    assert_eq!(site.state_bytes(), stored);

    let first = finish(first).await;
    first.assert_code(0);
    assert_eq!(site.state()["color"], "green");
    assert_eq!(site.running("green").await, [site.instance("green", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_plan_and_changes_nothing() {
    demo_images().await;
    let site = Site::new("dryrun", &demo_compose("")).await;

    let fresh = site
        .flow(&release(&["--dry-run"]), &[("DEMO_TAG", "v1")])
        .await;
    fresh.assert_code(0);
    assert!(
        fresh
            .stdout
            .contains(&format!("plan for {}", site.service()))
            && fresh.stdout.contains("app-blue"),
        "the plan of a first release names the blue colour:\n{}",
        fresh.stdout
    );
    site.assert_no_containers().await;
    site.assert_nothing_stored();

    site.flow(&release(&["-F", "deploy"]), &[("DEMO_TAG", "v1")])
        .await
        .assert_code(0);
    let stored = site.state_bytes();
    let before: Vec<(String, String)> = site
        .containers()
        .await
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();

    let planned = site
        .flow(
            &release(&["--dry-run", "-F", "deploy,stop-old"]),
            &[("DEMO_TAG", "v2")],
        )
        .await;
    planned.assert_code(0);
    for part in [
        "live colour: blue",
        "start 1 instance(s) of app-green",
        "docker-flow-e2e-demo:v2",
        "stop-old",
    ] {
        assert!(
            planned.stdout.contains(part),
            "the plan does not mention {part:?}:\n{}",
            planned.stdout
        );
    }
    let after: Vec<(String, String)> = site
        .containers()
        .await
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    assert_eq!(after, before, "a dry run must not start or stop anything");
    assert_eq!(site.state_bytes(), stored, "a dry run must not store state");
}
