//! Proof under load: releases and scaling behind the real HAProxy-backed proxy, with a bounded
//! load running the whole time, and zero failed requests allowed.
//!
//! The proxy runs in-process through `flow_proxy::start` (the same code `docker-flow proxy
//! serve` runs); every release is the real `docker-flow` binary against the real engine.

use std::time::{Duration, Instant};

use crate::load::{assert_only, Load, LoadShape, Sample};
use crate::support::{
    demo_compose, demo_images, free_port, release, start_proxy, ProxiedSite, Site,
};

/// At least this many requests make the run count.
const MIN_REQUESTS: usize = 5_000;

/// How long after the new colour was healthy the old one still answered.
fn switch_latency(samples: &[Sample], healthy_at: Instant, old: &str) -> Duration {
    samples
        .iter()
        .filter(|s| s.outcome.as_deref() == Ok(old))
        .map(|s| s.finished)
        .max()
        .map(|last| last.saturating_duration_since(healthy_at))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_and_scaling_under_load_fail_no_request() {
    demo_images().await;
    let site = Site::new("load", &demo_compose("")).await;
    let state_dir = tempfile::tempdir().expect("a proxy state directory");
    let (proxy, bind) = start_proxy(state_dir.path()).await;
    let api_port = proxy.api_addr().port().to_string();
    let proxy_args = |more: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-t".into(),
            "app".into(),
            "-b".into(),
            "--json".into(),
            "--proxy-host".into(),
            "127.0.0.1".into(),
            "--proxy-reconf-port".into(),
            api_port.clone(),
            "--service-path".into(),
            "/".into(),
            "--drain-timeout".into(),
            "20s".into(),
        ];
        args.extend(more.iter().map(|s| s.to_string()));
        args
    };
    let run = |more: &'static [&'static str], tag: &'static str| {
        let args = proxy_args(more);
        let site = &site;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            release(site, &args, &[("DEMO_TAG", tag)]).await
        }
    };

    // v1: two instances behind the proxy, before any load.
    run(&["-s", "2", "-F", "deploy", "-F", "proxy"], "v1").await;
    let _exclusive = crate::load::exclusive().await;
    let load = Load::start(format!("http://{bind}/"), LoadShape::RELEASES);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!load.snapshot().is_empty(), "the load reaches the proxy");

    let (healthy_v2, switched_v2) =
        run(&["-F", "deploy", "-F", "proxy", "-F", "stop-old"], "v2").await;
    assert_only(&load.snapshot(), switched_v2, "v2", "the v2 release");
    let (_, scaled_up) = run(&["-s", "+2", "-F", "scale"], "v2").await;
    assert_only(&load.snapshot(), scaled_up, "v2", "scale +2");
    assert_eq!(
        site.running("green").await.len(),
        4,
        "scale +2 runs four green instances"
    );
    let (_, scaled_down) = run(&["-s", "-2", "-F", "scale"], "v2").await;
    assert_only(&load.snapshot(), scaled_down, "v2", "scale -2");
    assert_eq!(site.running("green").await.len(), 2, "scale -2 leaves two");
    let (healthy_v3, switched_v3) =
        run(&["-F", "deploy", "-F", "proxy", "-F", "stop-old"], "v3").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    assert_only(&samples, switched_v3, "v3", "the v3 release");

    let failures: Vec<&Sample> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    let by_version = |v: &str| {
        samples
            .iter()
            .filter(|s| s.outcome.as_deref() == Ok(v))
            .count()
    };
    let latency_v2 = switch_latency(
        &samples,
        healthy_v2.expect("the v2 deploy reported healthy"),
        "v1",
    );
    let latency_v3 = switch_latency(
        &samples,
        healthy_v3.expect("the v3 deploy reported healthy"),
        "v2",
    );
    let elapsed = samples
        .last()
        .map(|s| s.finished)
        .unwrap_or_else(Instant::now)
        - samples
            .first()
            .map(|s| s.started)
            .unwrap_or_else(Instant::now);
    println!(
        "load: {} requests in {:.1}s ({:.0}/s; v1 {}, v2 {}, v3 {}), {} failed; healthy→last old response: v2 {} ms, v3 {} ms",
        samples.len(),
        elapsed.as_secs_f64(),
        samples.len() as f64 / elapsed.as_secs_f64(),
        by_version("v1"),
        by_version("v2"),
        by_version("v3"),
        failures.len(),
        latency_v2.as_millis(),
        latency_v3.as_millis()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first ones: {:?}",
        failures.len(),
        samples.len(),
        failures
            .iter()
            .take(5)
            .map(|s| &s.outcome)
            .collect::<Vec<_>>()
    );
    assert!(
        samples.len() >= MIN_REQUESTS,
        "only {} requests were made",
        samples.len()
    );
    assert!(
        by_version("v1") > 0 && by_version("v2") > 0 && by_version("v3") > 0,
        "every version served"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_aborts_the_release_before_the_switch_and_rolls_back() {
    demo_images().await;
    let site = Site::new("proxy-down", &demo_compose("")).await;
    site.flow(&["-t", "app", "-b", "-F", "deploy"], &[("DEMO_TAG", "v1")])
        .await
        .assert_code(0);
    let state_before = site.state_bytes();
    let blue_before = site.running("blue").await;
    let closed = free_port().to_string();
    let outcome = site
        .flow(
            &[
                "-t",
                "app",
                "-b",
                "-F",
                "deploy",
                "--proxy-host",
                "127.0.0.1",
                "--proxy-reconf-port",
                &closed,
                "--service-path",
                "/",
            ],
            &[("DEMO_TAG", "v2")],
        )
        .await;
    outcome
        .assert_code(3)
        .assert_stderr_names(&["the proxy at", &closed, "rolled back"]);
    assert!(
        site.colour("green").await.is_empty(),
        "the new colour was removed"
    );
    assert_eq!(
        site.running("blue").await,
        blue_before,
        "blue keeps running"
    );
    assert_eq!(site.state_bytes(), state_before, "the state is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_keeps_the_users_an_operator_put_on_the_route() {
    let proxied = ProxiedSite::new("keep-users").await;
    let bind = proxied.bind;
    let api = format!("http://{}/v1/docker-flow-proxy", proxied.proxy.api_addr());
    let deploy = |tag: &'static str| {
        proxied.release(
            &["-F", "deploy", "-F", "proxy", "-F", "stop-old"],
            Some(tag),
        )
    };
    deploy("v1").await;

    // The operator protects the live route by hand, as with 1.x: the same servers and colour,
    // plus `users`.
    let http = reqwest::Client::new();
    let routes: serde_json::Value = http
        .get(format!("{api}/routes"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("the routes")
        .json()
        .await
        .expect("the routes are JSON");
    // The only route: the service, named after the project.
    let app = &routes["Routes"][0];
    let service = app["ServiceName"]
        .as_str()
        .unwrap_or_else(|| panic!("v1 is routed: {routes}"));
    let servers: Vec<&str> = app["Servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["Active"] == true)
        .filter_map(|s| s["Address"].as_str())
        .collect();
    let color = app["ServiceColor"]
        .as_str()
        .expect("the route has a colour");
    let password = "e2e-0perator";
    let answer = http
        .get(format!(
            "{api}/reconfigure?serviceName={service}&serviceColor={color}&servicePath=/&servers={}&users=alice:{password}",
            servers.join(",")
        ))
        .send()
        .await
        .expect("the proxy answers");
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
    let get = |credentials: bool| {
        let mut request = http.get(format!("http://{bind}/"));
        if credentials {
            request = request.basic_auth("alice", Some(password));
        }
        async move {
            let response = request.send().await.expect("the proxy answers");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get(false).await.0, 401, "users protect v1");

    // The next release switches to v2 and keeps the operator's users.
    deploy("v2").await;
    assert_eq!(get(false).await.0, 401, "the release opened the service");
    let (status, body) = get(true).await;
    assert_eq!((status, body.trim()), (200, "v2"));
    proxied.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_warm_and_after_stop_old_and_scale_without_version_fail_no_request() {
    let proxied = ProxiedSite::new("rollback-load").await;
    let (site, bind) = (&proxied.site, proxied.bind);
    let run = |more: &'static [&'static str], tag: Option<&'static str>| proxied.release(more, tag);
    let status = || proxied.status();

    run(&["-s", "2", "-F", "deploy,proxy"], Some("v1")).await;
    let load = Load::start(format!("http://{bind}/"), LoadShape::RELEASES);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!load.snapshot().is_empty(), "the load reaches the proxy");

    // v2 goes live in green; blue (v1) keeps running: a warm rollback.
    let (_, v2_live) = run(&["-F", "deploy"], Some("v2")).await;
    assert_only(&load.snapshot(), v2_live, "v2", "the v2 release");
    let blue_before: Vec<String> = site
        .colour("blue")
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    let warm_began = Instant::now();
    // The word after the options, and no VERSION: the rollback needs no Compose version.
    let (_, warm_done) = run(&["rollback"], None).await;
    let warm = warm_done - warm_began;
    assert_only(&load.snapshot(), warm_done, "v1", "the warm rollback");
    let blue_after: Vec<String> = site
        .colour("blue")
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        blue_after, blue_before,
        "a warm rollback reuses the running containers"
    );
    assert_eq!(
        site.running("green").await.len(),
        2,
        "v2 keeps running until stop-old"
    );
    let state = site.state();
    assert_eq!(state["color"], "blue");
    assert_eq!(state["last_release"]["image"], "docker-flow-e2e-demo:v1");
    assert_eq!(
        state["previous_release"]["image"],
        "docker-flow-e2e-demo:v2"
    );

    let seen = status().await;
    assert_eq!(seen["live_color"], "blue");
    assert_eq!(seen["release"]["image"], "docker-flow-e2e-demo:v1");
    assert_eq!(seen["instances"].as_array().map(Vec::len), Some(2));
    assert!(
        seen["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["health"] == "healthy"),
        "{seen}"
    );
    assert_eq!(seen["idle"]["color"], "green");
    assert_eq!(seen["idle"]["state"], "running");
    assert_eq!(seen["lock"]["lock"], "free");
    assert!(seen["proxy"]["route"].is_string(), "{seen}");

    // v2 again, with stop-old: blue (v1) is stopped, then rolled back from stopped.
    let (_, v2_again) = run(&["-F", "deploy,stop-old"], Some("v2")).await;
    assert_only(&load.snapshot(), v2_again, "v2", "the second v2 release");
    assert!(site.running("blue").await.is_empty(), "stop-old stopped v1");
    let stopped: Vec<String> = site
        .colour("blue")
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(stopped.len(), 2);
    let stopped_began = Instant::now();
    let (_, stopped_done) = run(&["-F", "rollback,stop-old"], None).await;
    let cold = stopped_done - stopped_began;
    assert_only(
        &load.snapshot(),
        stopped_done,
        "v1",
        "the rollback after stop-old",
    );
    let resumed: Vec<String> = site
        .colour("blue")
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(resumed, stopped, "the same containers started again");
    assert_eq!(site.running("blue").await.len(), 2);
    assert!(
        site.running("green").await.is_empty(),
        "-F stop-old stopped v2"
    );
    let seen = status().await;
    assert_eq!(seen["idle"]["state"], "stopped");

    // The scale scenario: v2 live, then scale +2 without VERSION (the Compose file
    // now resolves to v1): every instance stays on v2.
    let (_, v2_third) = run(&["-F", "deploy,stop-old"], Some("v2")).await;
    assert_only(&load.snapshot(), v2_third, "v2", "the third v2 release");
    let (_, scaled) = run(&["-s", "+2", "-F", "scale"], None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    assert_only(&samples, scaled, "v2", "scale +2 without a version");
    let green = site.running("green").await;
    assert_eq!(green.len(), 4, "{green:?}");
    for name in &green {
        assert_eq!(
            crate::support::get_root(site.docker(), name).await,
            "v2",
            "{name}"
        );
    }

    let failures: Vec<&Sample> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    let v1_after_scale = samples
        .iter()
        .filter(|s| s.started >= v2_third && s.outcome.as_deref() == Ok("v1"))
        .count();
    println!(
        "rollback load: {} requests, {} failed; warm rollback {} ms, rollback after stop-old {} ms (command to exit); v1 answers after v2 was live again and scaled: {v1_after_scale}",
        samples.len(),
        failures.len(),
        warm.as_millis(),
        cold.as_millis()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first ones: {:?}",
        failures.len(),
        samples.len(),
        failures
            .iter()
            .take(5)
            .map(|s| &s.outcome)
            .collect::<Vec<_>>()
    );
    assert_eq!(v1_after_scale, 0, "no v1 answer once v2 was live again");
    assert!(
        samples.len() >= MIN_REQUESTS,
        "only {} requests were made",
        samples.len()
    );
    proxied.proxy.shutdown().await;
}
