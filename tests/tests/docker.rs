//! The fixtures themselves: the static demo server's behaviour, the demo image on the real
//! engine, and the project guard's clean-up.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HealthStatusEnum, NetworkCreateRequest};
use bollard::query_parameters::{CreateContainerOptions, StartContainerOptions};
use flow_tests::fixtures::{
    build_demo_image, demo_server_binary, docker, unique_project, ProjectGuard, PROJECT_LABEL,
};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status line, headers, body).
fn read_response(reader: &mut impl BufRead) -> (String, Vec<String>, String) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = value.parse().unwrap();
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (
        status.trim_end().to_string(),
        headers,
        String::from_utf8(body).unwrap(),
    )
}

#[test]
fn demo_server_keeps_connections_alive_reports_health_and_exits_on_sigterm() {
    let binary = demo_server_binary();
    let port = free_port();
    let mut server = Command::new(&binary)
        .env("PORT", port.to_string())
        .env("DEMO_VERSION", "t1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "demo-server never listened: {error}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // Three requests on one connection: keep-alive works, bodies are framed.
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\nPOST /health/fail HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    let (status, headers, body) = read_response(&mut reader);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains(&"X-Version: t1".to_string()),
        "{headers:?}"
    );
    assert_eq!(body, "t1\n");
    let (status, _, body) = read_response(&mut reader);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    let (status, _, _) = read_response(&mut reader);
    assert_eq!(status, "HTTP/1.1 200 OK");
    writer
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (status, _, body) = read_response(&mut reader);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 500 Internal Server Error", "unhealthy\n")
    );

    let check = Command::new(&binary)
        .arg("--check")
        .env("PORT", port.to_string())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "--check fails once unhealthy");
    assert!(String::from_utf8_lossy(&check.stdout).contains("500"));

    // SIGTERM (what `docker stop` sends) ends it promptly with status 0.
    let kill = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo-server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let mut output = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert!(
        output.contains("demo-server t1 listening on 0.0.0.0:"),
        "{output}"
    );
    assert!(output.contains("demo-server t1 stopping"), "{output}");
}

#[test]
fn demo_server_binary_is_static() {
    let output = Command::new("ldd")
        .arg(demo_server_binary())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("statically linked") || text.contains("not a dynamic executable"),
        "{text}"
    );
}

#[tokio::test]
async fn demo_image_becomes_healthy_and_the_guard_removes_the_project() {
    let docker = docker().await;
    build_demo_image(&docker, "docker-flow-test-demo:fixture", "fx")
        .await
        .unwrap();
    let guard = ProjectGuard::new(unique_project("dft-fixture"));
    let project = guard.project().to_string();
    let labels = HashMap::from([(PROJECT_LABEL.to_string(), project.clone())]);
    let network = format!("{project}_default");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let name = format!("{project}-demo-1");
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some("docker-flow-test-demo:fixture".into()),
                labels: Some(labels),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some(network.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker
        .start_container(&name, None::<StartContainerOptions>)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = docker
            .inspect_container(&name, None)
            .await
            .unwrap()
            .state
            .unwrap();
        let health = state.health.and_then(|h| h.status);
        if health == Some(HealthStatusEnum::HEALTHY) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the image's HEALTHCHECK never passed: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let config = docker
        .inspect_container(&name, None)
        .await
        .unwrap()
        .config
        .unwrap();
    assert!(config.env.unwrap().contains(&"DEMO_VERSION=fx".to_string()));
    assert_eq!(config.exposed_ports.unwrap(), vec!["8080/tcp".to_string()]);

    drop(guard);
    assert!(
        docker.inspect_container(&name, None).await.is_err(),
        "container removed"
    );
    assert!(
        docker.inspect_network(&network, None).await.is_err(),
        "network removed"
    );
}
