//! HAProxy's own faults and restarts of the driver, against the real HAProxy.

mod common;

use std::time::{Duration, Instant};

use common::{config, free_addr, processes, Backend, TestProxy};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn kill(pid: i32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_or_master_is_restarted_with_the_stored_routes_within_a_second() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let web = Backend::start("web").await;
    let (status, answer) = proxy.reconfigure("web", "/web", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    for victim in ["worker", "master"] {
        let (master, worker) = processes(state.path()).await;
        kill(if victim == "worker" { worker } else { master });
        let killed = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if raw_get(proxy.bind)
                .await
                .is_some_and(|body| body.ends_with("web"))
                && processes_differ(state.path(), master).await
                // The driver knows the new worker (the API answers with its state).
                && proxy.api("/v1/docker-flow-proxy/routes").await.0 == StatusCode::OK
            {
                eprintln!("killed {victim}: served again after {:?}", killed.elapsed());
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(1),
                "not served again within a second of killing the {victim}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_sent_right_after_haproxy_died_waits_for_its_restart_and_succeeds() {
    use flow_core::Proxy;
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let web = Backend::start("web").await;
    let other = Backend::start("other").await;
    let (status, answer) = proxy.reconfigure("web", "/web", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The adapter releases use, as a release's switch step calls it.
    let client = flow_proxy::HttpProxy::new("127.0.0.1", proxy.api.port(), None);
    let route = flow_core::Route {
        service: flow_core::ServiceName::new("web").unwrap(),
        color: None,
        paths: vec!["/web".into()],
        domain: None,
        path_type: flow_core::PathType::default(),
    };
    for (victim, target) in [("worker", &other), ("master", &web)] {
        let (master, worker) = processes(state.path()).await;
        kill(if victim == "worker" { worker } else { master });
        // At once: the supervisor has not noticed yet, the runtime API is gone.
        let killed = Instant::now();
        client
            .reconfigure(&route, &[target.addr])
            .await
            .unwrap_or_else(|e| panic!("the switch after killing the {victim} failed: {e}"));
        eprintln!(
            "killed {victim}: the switch to {} returned after {:?}",
            target.name,
            killed.elapsed()
        );
        assert_eq!(
            proxy.get("/web", None).await,
            (StatusCode::OK, target.name.clone())
        );
        assert_eq!(
            proxy.api("/v1/docker-flow-proxy/routes").await.0,
            StatusCode::OK
        );
    }
}

/// The response to `GET /web` on a new connection, `None` while nothing answers.
async fn raw_get(bind: std::net::SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(bind).await.ok()?;
        stream
            .write_all(b"GET /web HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        response.starts_with("HTTP/1.1 200").then_some(response)
    };
    tokio::time::timeout(Duration::from_millis(200), exchange)
        .await
        .ok()
        .flatten()
}

/// Whether a master other than `old` answers on the master socket.
async fn processes_differ(state: &std::path::Path, old: i32) -> bool {
    tokio::net::UnixStream::connect(state.join("master.sock"))
        .await
        .is_ok()
        && processes(state).await.0 != old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_haproxy_keeps_serving_and_the_next_start_adopts_it() {
    let state = tempfile::tempdir().unwrap();
    let bind = free_addr();
    let mut proxy = TestProxy::start_with(config(state.path(), bind)).await;
    let web = Backend::start("web").await;
    let (status, _) = proxy.reconfigure("web", "/web", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK);
    let (master, _) = processes(state.path()).await;

    // A second driver on the same state directory is refused while the first runs.
    let error = flow_proxy::start(config(state.path(), bind))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("proxy.lock"), "{error}");

    proxy.running.take().unwrap().detach().await;
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "web".into())
    );

    let adopted = TestProxy::start_with(config(state.path(), bind)).await;
    assert_eq!(
        adopted.running.as_ref().unwrap().adopted_master(),
        Some(u32::try_from(master).unwrap())
    );
    assert_eq!(processes(state.path()).await.0, master, "no second HAProxy");
    assert_eq!(
        adopted.get("/web", None).await,
        (StatusCode::OK, "web".into())
    );
    let other = Backend::start("other").await;
    let (status, _) = adopted.reconfigure("web", "/web", &[other.addr], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        adopted.get("/web", None).await,
        (StatusCode::OK, "other".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_parameter_has_its_effect_or_is_refused_by_name() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let web = Backend::start("web").await;
    let (status, _) = proxy.reconfigure("web", "/web", &[web.addr], "").await;
    assert_eq!(status, StatusCode::OK);
    let config_before = proxy.config_text(state.path());
    for parameter in flow_proxy::params::RECONFIGURE {
        let flow_proxy::params::Support::Refused(reason) = parameter.support else {
            continue;
        };
        let (status, answer) = proxy
            .reconfigure(
                "web",
                "/web",
                &[web.addr],
                &format!("&{}=1", parameter.name),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(
            answer["Message"],
            format!("{} is not supported: {reason}", parameter.name)
        );
    }
    for (extra, named) in [
        ("&servicePath.0=/x", "invalid servicePath.0"),
        (
            "&reqMode=tcp",
            "reqMode=tcp cannot be combined with servicePath",
        ),
        ("&servicepath=/x", "unknown parameter servicepath"),
        ("&serviceName=web", "serviceName is given twice"),
    ] {
        let (status, answer) = proxy.reconfigure("web", "/web", &[web.addr], extra).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["Message"].as_str().unwrap().starts_with(named),
            "{answer}"
        );
    }
    let (status, _, answer) = proxy
        .api("/v1/docker-flow-proxy/remove?serviceName=web&aclName=x")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        proxy.config_text(state.path()),
        config_before,
        "nothing changed"
    );
    assert_eq!(
        proxy.get("/web", None).await,
        (StatusCode::OK, "web".into())
    );

    let mut empty = config(state.path().join("other").as_path(), free_addr());
    empty.token = Some(String::new());
    assert!(matches!(
        flow_proxy::start(empty).await,
        Err(flow_proxy::ServeError::EmptyToken)
    ));
}
