//! `docker-flow rollback` and `docker-flow status` without a proxy: what status prints, and
//! the input both refuse (exit 2, nothing changed). Rollback under load behind the proxy is in
//! `proxy.rs`.

use crate::support::{demo_compose, demo_images, Site};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_runs_and_rollback_refuses_what_it_cannot_do() {
    demo_images().await;
    let site = Site::new("status", &demo_compose("")).await;

    // Before any release: status answers, rollback has nothing to return to.
    let empty = site.flow(&["status", "-t", "app", "-b"], &[]).await;
    empty.assert_code(0);
    assert!(
        empty.stdout.contains("live: nothing released yet"),
        "{}",
        empty.stdout
    );

    site.flow(&["-t", "app", "-b", "-s", "2"], &[("DEMO_TAG", "v1")])
        .await
        .assert_code(0);
    let refused = site.flow(&["rollback", "-t", "app", "-b"], &[]).await;
    refused
        .assert_code(2)
        .assert_stderr_names(&["nothing to roll back to", "-F deploy"]);
    let state = site.state_bytes();
    let blue: Vec<String> = site.running("blue").await;
    assert_eq!(blue.len(), 2);

    // Refused combinations change nothing either.
    site.flow(
        &["-t", "app", "-b", "-F", "deploy,rollback"],
        &[("DEMO_TAG", "v2")],
    )
    .await
    .assert_code(2)
    .assert_stderr_names(&["-F rollback and -F deploy"]);
    site.flow(&["rollback", "-t", "app", "-b", "-F", "deploy"], &[])
        .await
        .assert_code(2)
        .assert_stderr_names(&["-F rollback and -F deploy"]);
    site.flow(&["status", "-t", "nope"], &[])
        .await
        .assert_code(2)
        .assert_stderr_names(&["\"nope\"", "app"]);
    site.flow(&["-t", "app", "status", "-s", "3"], &[])
        .await
        .assert_code(2)
        .assert_stderr_names(&["status does not use --scale"]);
    assert_eq!(site.state_bytes(), state, "nothing was stored");
    assert!(site.colour("green").await.is_empty(), "nothing was started");

    site.flow(&["-t", "app", "-b", "-F", "deploy"], &[("DEMO_TAG", "v2")])
        .await
        .assert_code(0);
    let dry = site
        .flow(
            &["-t", "app", "-b", "rollback", "--dry-run", "-F", "stop-old"],
            &[],
        )
        .await;
    dry.assert_code(0);
    assert!(
        dry.stdout.contains(&format!(
            "rollback: check that the running {}",
            site.instance("blue", 1)
        )),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!(
            "stop-old: drain and stop (keep) {}",
            site.instance("green", 1)
        )),
        "{}",
        dry.stdout
    );
    assert_eq!(
        site.running("green").await.len(),
        2,
        "a dry run changes nothing"
    );

    // The options come from the environment and docker-flow.yml too.
    site.write("docker-flow.yml", "target: app\nblue_green: true\n");
    let shown = site.flow(&["status"], &[]).await;
    shown.assert_code(0);
    let text = &shown.stdout;
    for part in [
        format!("{} (target app)", site.service()),
        "live: green, docker-flow-e2e-demo:v2 (sha256:".to_string(),
        "stored scale: 2".to_string(),
        format!("{} ", site.instance("green", 2)),
        "healthy".to_string(),
        "idle: blue running (2 instance(s))".to_string(),
        "previous release: docker-flow-e2e-demo:v1".to_string(),
        "lock: free".to_string(),
    ] {
        assert!(
            text.contains(&part),
            "status does not show {part:?}:\n{text}"
        );
    }
    assert!(!text.contains("proxy:"), "no proxy is configured:\n{text}");

    let back = site.flow(&["-F", "rollback", "--json"], &[]).await;
    back.assert_code(0);
    assert!(
        back.stdout.contains("\"event\":\"done\""),
        "{}",
        back.stdout
    );
    let json = site
        .flow(&["status", "--json"], &[("FLOW_TARGET", "app")])
        .await;
    json.assert_code(0);
    let seen: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("one JSON line");
    assert_eq!(seen["event"], "status");
    assert_eq!(seen["live_color"], "blue");
    assert_eq!(seen["release"]["image"], "docker-flow-e2e-demo:v1");
    assert_eq!(seen["previous_release"]["image"], "docker-flow-e2e-demo:v2");
    assert_eq!(seen["idle"]["state"], "running");
}
