//! `/metrics` and the 1.x endpoints (`config`, `reload`, `ping`, `metrics`, `certs`, `cert`)
//! through the real HAProxy. The Prometheus exposition is read with the Prometheus project's
//! own parser (the `prometheus-client` Python package), not with code of ours.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{processes, Backend, TestProxy};
use http::StatusCode;

/// The samples of a Prometheus text exposition as `prometheus_client.parser` reads them:
/// `name{label=value,…}` (labels sorted) → value. Fails the test when the parser rejects it.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(samples))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (tests/requirements.txt lists prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "Prometheus' parser rejected the exposition (is prometheus-client installed? see tests/requirements.txt): {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn scrape(proxy: &TestProxy) -> BTreeMap<String, f64> {
    let (status, content_type, body) = proxy.api_text("GET", "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    parse_exposition(&body)
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_per_service_and_colour_come_from_haproxy() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let blue = [Backend::start("blue").await, Backend::start("blue").await];
    let green = [Backend::start("green").await, Backend::start("green").await];
    let addrs = |b: &[Backend; 2]| [b[0].addr, b[1].addr];
    let (status, answer) = proxy
        .reconfigure("web", "/web", &addrs(&blue), "&serviceColor=blue")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for _ in 0..10 {
        assert_eq!(proxy.get("/web", None).await.0, StatusCode::OK);
    }
    for _ in 0..3 {
        assert_eq!(
            proxy.get("/web/fail", None).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let samples = scrape(&proxy).await;
    let web_blue = "color=blue,service=web";
    assert_eq!(
        value(
            &samples,
            &format!("docker_flow_proxy_requests_total{{{web_blue}}}")
        ),
        13.0
    );
    assert_eq!(
        value(
            &samples,
            &format!("docker_flow_proxy_responses_5xx_total{{{web_blue}}}")
        ),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            &format!("docker_flow_proxy_servers{{{web_blue},state=up}}")
        ),
        2.0
    );
    assert_eq!(
        value(&samples, "docker_flow_proxy_switches_total{service=web}"),
        1.0
    );
    let first_switch = value(
        &samples,
        &format!("docker_flow_proxy_last_switch_seconds{{{web_blue}}}"),
    );
    assert!(first_switch > 0.0 && first_switch < 10.0, "{first_switch}");
    assert_eq!(
        value(&samples, "docker_flow_proxy_haproxy_restarts_total{}"),
        0.0
    );

    // A request held open on a blue server keeps it draining after the switch to green.
    let slow = tokio::spawn({
        let bind = proxy.bind;
        async move {
            let response = common::client(false)
                .request(
                    http::Request::get(format!("http://{bind}/web/slow"))
                        .body(http_body_util::Empty::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            response.status()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, answer) = proxy
        .reconfigure("web", "/web", &addrs(&green), "&serviceColor=green")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Sent again: not a switch.
    let (status, _) = proxy
        .reconfigure("web", "/web", &addrs(&green), "&serviceColor=green")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "green".into())
    );
    // The idle blue server is deleted once its drain task sees it without sessions.
    let draining = format!("docker_flow_proxy_servers{{{web_blue},state=draining}}");
    let maint = format!("docker_flow_proxy_servers{{{web_blue},state=maint}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let samples = loop {
        let samples = scrape(&proxy).await;
        if (value(&samples, &draining), value(&samples, &maint)) == (1.0, 0.0)
            || std::time::Instant::now() >= deadline
        {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let web_green = "color=green,service=web";
    assert_eq!(
        value(
            &samples,
            &format!("docker_flow_proxy_servers{{{web_green},state=up}}")
        ),
        2.0
    );
    assert_eq!(
        value(&samples, &draining),
        1.0,
        "the blue server with the slow request drains: {samples:#?}"
    );
    assert_eq!(
        value(
            &samples,
            &format!("docker_flow_proxy_sessions{{{web_blue}}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            &format!("docker_flow_proxy_requests_total{{{web_green}}}")
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "docker_flow_proxy_switches_total{service=web}"),
        2.0
    );
    assert!(value(
        &samples,
        &format!("docker_flow_proxy_last_switch_seconds{{{web_green}}}")
    )
    .is_finite());
    assert!(
        !samples.contains_key(&format!(
            "docker_flow_proxy_last_switch_seconds{{{web_blue}}}"
        )),
        "only the last switch is reported"
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1x_endpoints_answer_as_documented_for_any_method() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let web = Backend::start("web").await;
    let (status, answer) = proxy.reconfigure("web", "/web", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    for method in ["GET", "POST", "PUT", "DELETE"] {
        let (status, content_type, body) =
            proxy.api_text(method, "/v1/docker-flow-proxy/ping").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "application/json"),
            "{method} ping: {body}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["Status"], "OK");
    }
    // reconfigure by POST, as 1.x took it.
    let other = Backend::start("other").await;
    let (status, _, body) = proxy
        .api_text(
            "POST",
            &format!(
                "/v1/docker-flow-proxy/reconfigure?serviceName=other&servicePath=/other&servers={}",
                other.addr
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        proxy.get("/other", None).await,
        (StatusCode::OK, "other".into())
    );

    let (status, content_type, config) =
        proxy.api_text("GET", "/v1/docker-flow-proxy/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(
        config,
        proxy.config_text(state.path()),
        "the running configuration"
    );
    assert!(config.contains("backend be_other"), "{config}");
    let (status, _, json) = proxy.api("/v1/docker-flow-proxy/config?type=json").await;
    assert_eq!(status, StatusCode::OK);
    let services: Vec<&str> = json["Routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ServiceName"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["other", "web"]);

    let (_, worker_before) = processes(state.path()).await;
    for query in ["", "?recreate=true", "?recreate=false"] {
        let (status, _, json) = proxy
            .api(&format!("/v1/docker-flow-proxy/reload{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }
    let (_, worker_after) = processes(state.path()).await;
    assert_ne!(worker_before, worker_after, "reload started a new worker");
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "web".into())
    );
    for (query, named) in [
        ("reload?fromListener=true", "fromListener is not supported"),
        ("reload?recreate=maybe", "recreate"),
        ("config?format=json", "unknown parameter format"),
        ("ping?x=1", "unknown parameter x"),
    ] {
        let (status, _, json) = proxy.api(&format!("/v1/docker-flow-proxy/{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {json}");
        assert!(
            json["Message"].as_str().unwrap().contains(named),
            "{query}: {json}"
        );
    }

    let (status, content_type, csv) = proxy.api_text("GET", "/v1/docker-flow-proxy/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert!(csv.starts_with("# pxname,svname,"), "{csv}");
    assert!(csv.contains("\nbe_web,"), "{csv}");

    let (status, _, json) = proxy.api("/v1/docker-flow-proxy/certs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["Certs"], serde_json::json!([]));
    assert!(json["Message"].as_str().unwrap().contains("--bind-https"));
    // The certificate is checked before anything else: an empty body is no PEM.
    let (status, _, body) = proxy
        .api_text("PUT", "/v1/docker-flow-proxy/cert?certName=my.pem")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("holds no certificate"), "{body}");
    let (status, _, body) = proxy
        .api_text("GET", "/v1/docker-flow-proxy/cert?certName=my.pem")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("cert takes PUT"), "{body}");

    let (status, _, json) = proxy.api("/v1/docker-flow-proxy/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    let (status, _, _) = proxy.api("/reconfigure?serviceName=web").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only under the 1.x prefix");
}
