//! Compose files as people write them, through the `docker-flow` binary: a release from a file
//! whose other services are build-only, `deploy.replicas`, network aliases and tmpfs reaching
//! the engine, `build:` with its progress, `depends_on` conditions waited for before a
//! release starts, and `docker-flow config` printing the resolved model (no engine involved).

use crate::support::{demo_images, Site, DEMO_REPOSITORY, TARGET};
use crate::tooling::{check_lines, documented_events};

/// The released service with the keys under test, beside a build-only service and a service
/// that only serves as the base of `extends`.
fn compose() -> String {
    format!(
        "x-base: &base\n  \
           environment:\n    \
             FROM_ANCHOR: \"yes\"\n\
         services:\n  \
           common:\n    \
             expose: [\"8080\"]\n  \
           {TARGET}:\n    \
             <<: *base\n    \
             extends: common\n    \
             image: {DEMO_REPOSITORY}:${{DEMO_TAG:-v1}}\n    \
             tmpfs: [\"/scratch:size=1m\"]\n    \
             networks:\n      \
               default:\n        \
                 aliases: [app-alias]\n    \
             deploy:\n      \
               replicas: 2\n  \
           worker:\n    \
             build: ./worker\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_an_image_is_released_beside_build_only_services() {
    demo_images().await;
    let site = Site::new("compose", &compose()).await;
    let outcome = site.flow(&["-t", TARGET, "-b", "-F", "deploy"], &[]).await;
    outcome.assert_code(0);
    assert_eq!(
        site.running("blue").await,
        [site.instance("blue", 1), site.instance("blue", 2)],
        "deploy.replicas is the first release's scale"
    );
    assert_eq!(site.state()["scale"], 2);
    let inspected = site
        .docker()
        .inspect_container(
            &site.instance("blue", 1),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("inspecting the first instance");
    let tmpfs = inspected
        .host_config
        .and_then(|host| host.tmpfs)
        .unwrap_or_default();
    assert_eq!(tmpfs.get("/scratch").map(String::as_str), Some("size=1m"));
    let env = inspected
        .config
        .and_then(|config| config.env)
        .unwrap_or_default();
    assert!(env.contains(&"FROM_ANCHOR=yes".to_string()), "{env:?}");
    let aliases: Vec<String> = inspected
        .network_settings
        .and_then(|settings| settings.networks)
        .unwrap_or_default()
        .into_values()
        .flat_map(|endpoint| endpoint.aliases.unwrap_or_default())
        .collect();
    assert!(aliases.iter().any(|a| a == "app-alias"), "{aliases:?}");

    // The build-only service's context does not exist: it is refused by name before anything
    // is started for it.
    let refused = site
        .flow(&["-t", "worker", "-b", "-F", "deploy"], &[])
        .await;
    refused
        .assert_code(2)
        .assert_stderr_names(&["\"worker\"", "build.context"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_prints_the_resolved_model_with_options_before_or_after_the_word() {
    let site = Site::new("config", &compose()).await;
    let after = site
        .flow(&["config", "-f", "docker-compose.yml", "--json"], &[])
        .await;
    after.assert_code(0);
    let before = site
        .flow(&["-f", "docker-compose.yml", "--json", "config"], &[])
        .await;
    before.assert_code(0);
    assert_eq!(after.stdout, before.stdout);
    let model: serde_json::Value = serde_json::from_str(&after.stdout).expect("JSON");
    let app = &model["services"][TARGET];
    assert_eq!(app["image"], format!("{DEMO_REPOSITORY}:v1"));
    assert_eq!(app["environment"]["FROM_ANCHOR"], "yes");
    assert_eq!(app["expose"], serde_json::json!(["8080"]));
    assert_eq!(app["deploy"]["replicas"], 2);
    assert_eq!(
        app["networks"]["default"]["aliases"],
        serde_json::json!(["app-alias"])
    );
    assert_eq!(
        model["services"]["worker"]["build"]["context"],
        site.dir().join("worker").display().to_string()
    );
    assert_eq!(model["name"], site.project());

    // YAML by default; -t keeps that service alone.
    let yaml = site.flow(&["config", "-t", "worker"], &[]).await;
    yaml.assert_code(0);
    let model: serde_json::Value = serde_norway::from_str(&yaml.stdout).expect("YAML");
    let services: Vec<&String> = model["services"].as_object().unwrap().keys().collect();
    assert_eq!(services, ["worker"]);

    // Bad input: exit 2, the message names the problem, and nothing is written.
    site.flow(&["config", "-t", "nope"], &[])
        .await
        .assert_code(2)
        .assert_stderr_names(&["nope", TARGET]);
    site.write(
        "docker-compose.yml",
        "secrets: {}\nservices:\n  web:\n    image: demo:${TAG:?set TAG to the release}\n",
    );
    site.flow(&["config"], &[])
        .await
        .assert_code(2)
        .assert_stderr_names(&[
            "set TAG to the release",
            "services.web.image",
            "\"secrets\"",
        ]);
    site.assert_nothing_stored();
}

/// Removes the image a test built, also when the test fails.
struct ImageGuard {
    docker: bollard::Docker,
    image: String,
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let image = self.image.clone();
        // Containers are removed by the site's guard first (declared before this one).
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to remove the test image");
            runtime.block_on(async {
                let _ = docker
                    .remove_image(
                        &image,
                        Some(bollard::query_parameters::RemoveImageOptions {
                            force: true,
                            ..Default::default()
                        }),
                        None,
                    )
                    .await;
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_only_build_is_built_from_a_local_image_and_released() {
    demo_images().await;
    let site = Site::new(
        "build",
        &format!(
            "services:\n  \
               {TARGET}:\n    \
                 build:\n      \
                   context: ./src\n      \
                   target: final\n      \
                   args:\n        \
                     MESSAGE: from-args\n      \
                   labels:\n        \
                     io.example.built: \"yes\"\n    \
                 expose: [\"8080\"]\n  \
               broken:\n    \
                 build:\n      \
                   context: ./src\n      \
                   dockerfile: Dockerfile.broken\n  \
               elsewhere:\n    \
                 build: ./does-not-exist\n"
        ),
    )
    .await;
    let image = format!("{}-{TARGET}:latest", site.project());
    let _image_guard = ImageGuard {
        docker: site.docker().clone(),
        image: image.clone(),
    };
    std::fs::create_dir(site.dir().join("src")).expect("the context directory");
    site.write(
        "src/Dockerfile",
        &format!(
            "FROM {DEMO_REPOSITORY}:v1 AS base\nFROM base AS final\nARG MESSAGE\nLABEL io.example.message=$MESSAGE\nCOPY kept.txt /kept.txt\n"
        ),
    );
    site.write(
        "src/Dockerfile.broken",
        &format!("FROM {DEMO_REPOSITORY}:v1\nCOPY secret.txt /secret.txt\n"),
    );
    site.write("src/kept.txt", "kept\n");
    site.write("src/secret.txt", "not sent\n");
    site.write(
        "src/.dockerignore",
        "# not part of the context\nsecret.txt\n",
    );

    let released = site.flow(&["-t", TARGET, "-b", "-F", "deploy"], &[]).await;
    released.assert_code(0);
    // Piped, the build's steps come as lines while it runs.
    for step in [
        format!(" : FROM {DEMO_REPOSITORY}:v1 AS base"),
        " : COPY kept.txt /kept.txt".to_string(),
    ] {
        assert!(
            released.stderr.lines().any(|line| line
                .starts_with(&format!("    build {TARGET}: Step "))
                && line.ends_with(&step)),
            "no build step {step:?}:\n{}",
            released.stderr
        );
    }
    assert_eq!(site.running("blue").await, [site.instance("blue", 1)]);
    let built = site
        .docker()
        .inspect_image(&image)
        .await
        .expect("the built image");
    let labels = built
        .config
        .and_then(|config| config.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get("io.example.message").map(String::as_str),
        Some("from-args")
    );
    assert_eq!(
        labels.get("io.example.built").map(String::as_str),
        Some("yes")
    );
    assert_eq!(site.state()["last_release"]["image"], image);

    // A build that fails (the file it copies is excluded by .dockerignore) prints the build's
    // error and starts nothing.
    let broken = site
        .flow(&["-t", "broken", "-b", "-F", "deploy"], &[])
        .await;
    broken.assert_stderr_names(&["\"broken\"", "secret.txt", ": COPY secret.txt /secret.txt"]);
    assert_ne!(broken.code, 0, "{}", broken.stderr);
    let containers = site.containers().await;
    assert!(
        containers.iter().all(|c| !c.name.contains("broken")),
        "{containers:?}"
    );

    // A context that does not exist is bad input, refused before anything is built.
    site.flow(&["-t", "elsewhere", "-b", "-F", "deploy"], &[])
        .await
        .assert_code(2)
        .assert_stderr_names(&["\"elsewhere\"", "build.context", "does-not-exist"]);
    // --no-build with a missing image refuses to build.
    site.flow(&["-t", "broken", "-b", "-F", "deploy", "--no-build"], &[])
        .await
        .assert_stderr_names(&["--no-build"]);

    // With --json the build's lines are events of their own, as the README documents them.
    let json = site
        .flow(
            &["-t", TARGET, "-b", "-F", "deploy", "--build", "--json"],
            &[],
        )
        .await;
    json.assert_code(0);
    let seen = check_lines(&json.stdout, &documented_events());
    assert!(seen.contains("build-output"), "{seen:?}");
}

/// The demo image under a tag of this test's own: it runs `--exit <code>` as a one-shot job.
const DEPENDS_IMAGE: &str = "docker-flow-e2e-depends:v1";

/// `app` depends on `db` being healthy and on `migrate` (exit code `${MIGRATE_EXIT}`)
/// completing; `loopa` and `loopb` depend on each other.
fn depends_compose() -> String {
    format!(
        "services:\n  \
           {TARGET}:\n    \
             image: {DEPENDS_IMAGE}\n    \
             expose: [\"8080\"]\n    \
             depends_on:\n      \
               db: {{condition: service_healthy}}\n      \
               migrate: {{condition: service_completed_successfully}}\n  \
           db:\n    \
             image: {DEPENDS_IMAGE}\n  \
           migrate:\n    \
             image: {DEPENDS_IMAGE}\n    \
             command: [\"--exit\", \"${{MIGRATE_EXIT:-0}}\"]\n    \
             healthcheck: {{disable: true}}\n  \
           loopa:\n    \
             image: {DEPENDS_IMAGE}\n    \
             depends_on: [loopb]\n  \
           loopb:\n    \
             image: {DEPENDS_IMAGE}\n    \
             depends_on: [loopa]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_conditions_are_waited_for_and_a_failed_one_changes_nothing() {
    let docker = flow_tests::fixtures::docker().await;
    flow_tests::fixtures::build_demo_image(&docker, DEPENDS_IMAGE, "v1")
        .await
        .expect("building the demo image");

    let site = Site::new("depends", &depends_compose()).await;
    let released = site
        .flow(&["-t", TARGET, "-T", "migrate", "-T", "db"], &[])
        .await;
    released.assert_code(0);
    for line in [
        format!("{TARGET} waits for db: service_healthy"),
        "db is healthy".to_string(),
        format!("{TARGET} waits for migrate: service_completed_successfully"),
        "migrate completed successfully".to_string(),
    ] {
        assert!(
            released.stderr.contains(&line),
            "{line:?} missing:\n{}",
            released.stderr
        );
    }
    let app = format!("{}-{TARGET}-1", site.project());
    assert!(
        site.containers()
            .await
            .iter()
            .any(|c| c.name == app && c.running()),
        "{app} runs"
    );
    let again = site
        .flow(&["-t", TARGET, "-T", "migrate", "-T", "db", "--json"], &[])
        .await;
    again.assert_code(0);
    let seen = check_lines(&again.stdout, &documented_events());
    for event in ["dependency-waiting", "dependency-ready"] {
        assert!(seen.contains(event), "no {event}: {seen:?}");
    }

    // A cycle is bad input, refused before the engine is asked anything.
    site.flow(&["-t", TARGET, "-T", "loopa"], &[])
        .await
        .assert_code(2)
        .assert_stderr_names(&["loopa -> loopb -> loopa"]);

    let failing = Site::new("depends-fail", &depends_compose()).await;
    // db is not a side target and does not run: the error says how to have it started.
    failing
        .flow(&["-t", TARGET, "-T", "migrate"], &[("MIGRATE_EXIT", "3")])
        .await
        .assert_code(1)
        .assert_stderr_names(&["depends on db", "--side-target db"]);
    // The job fails: its exit code and log end the release before app starts.
    failing
        .flow(
            &["-t", TARGET, "-T", "migrate", "-T", "db"],
            &[("MIGRATE_EXIT", "3")],
        )
        .await
        .assert_code(1)
        .assert_stderr_names(&[
            "depends on migrate",
            "exited with code 3",
            "job done, exiting with code 3",
        ]);
    let names: Vec<String> = failing
        .containers()
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(&format!("-{TARGET}-"))),
        "no instance of {TARGET} was created: {names:?}"
    );
    assert!(failing.state_bytes().is_none(), "nothing was stored");
}
