//! Shared pieces of the proxy tests: loopback backends that answer their own name, a
//! started proxy on free loopback ports with its state in a temporary directory, and small
//! HTTP helpers. Everything stops when dropped (the proxy kills HAProxy).

#![allow(dead_code)] // Each test binary uses its own subset.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use flow_proxy::{RunningProxy, ServeConfig};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The HAProxy the tests drive; a missing one fails the tests with the install hint.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// A loopback HTTP server answering every request with its name; a path ending in `/slow` waits 4 s first, one ending in `/fail` is answered 500.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_on(name, "127.0.0.1:0").await
    }

    /// A backend listening on `address` (e.g. `[::1]:0`).
    pub async fn start_on(name: &str, address: &str) -> Backend {
        let listener = TcpListener::bind(address).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Bytes::from(name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            if request.uri().path().ends_with("/slow") {
                                tokio::time::sleep(Duration::from_secs(4)).await;
                            }
                            let mut response = hyper::Response::new(Full::new(body));
                            if request.uri().path().ends_with("/fail") {
                                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            task,
        }
    }
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// An address for a listener that opens only later (HTTPS listens once it has a
/// certificate): a loopback IP of its own (127.0.0.N, N from 10 up, one per call) and a port
/// free there. A port merely free on 127.0.0.1 could be taken by another test's listener in
/// the meantime; nothing else binds these IPs.
pub fn reserved_addr() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(10);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert!(
        n < 255,
        "more reserved addresses than loopback IPs set aside"
    );
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::new(127, 0, 0, n), 0)).unwrap();
    listener.local_addr().unwrap()
}

/// A proxy on free loopback ports, its state in `state`.
pub struct TestProxy {
    pub running: Option<RunningProxy>,
    pub bind: SocketAddr,
    pub api: SocketAddr,
    pub token: Option<String>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

pub fn config(state: &Path, bind: SocketAddr) -> ServeConfig {
    assert!(
        Path::new(HAPROXY).exists(),
        "HAProxy is missing at {HAPROXY}: install the Debian package `haproxy` (apt-get install haproxy)"
    );
    let mut config = ServeConfig::new(state, vec![bind]);
    config.api_addr = "127.0.0.1:0".parse().unwrap();
    config.up_timeout = Duration::from_secs(4);
    config
}

impl TestProxy {
    pub async fn start(state: &Path) -> TestProxy {
        TestProxy::start_with(config(state, free_addr())).await
    }

    pub async fn start_with(config: ServeConfig) -> TestProxy {
        let bind = config.binds[0];
        let token = config.token.clone();
        let running = flow_proxy::start(config).await.expect("the proxy starts");
        TestProxy {
            api: running.api_addr(),
            running: Some(running),
            bind,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// GETs an API path (with the token when set); returns status, content type and JSON.
    pub async fn api(&self, path_and_query: &str) -> (StatusCode, String, serde_json::Value) {
        let mut request = Request::get(format!("http://{}{path_and_query}", self.api));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.api_request(request.body(Empty::new()).unwrap()).await
    }

    pub async fn api_request(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> (StatusCode, String, serde_json::Value) {
        let response = self.client.request(request).await.expect("the API answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (status, content_type, json)
    }

    /// Sends `method path_and_query` to the API (with the token when set); returns status,
    /// content type and the body as text.
    pub async fn api_text(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> (StatusCode, String, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path_and_query}", self.api));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = self
            .client
            .request(request.body(Empty::new()).unwrap())
            .await
            .expect("the API answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Reconfigures `service` to `servers` with paths (and extra raw query text).
    pub async fn reconfigure(
        &self,
        service: &str,
        paths: &str,
        servers: &[SocketAddr],
        extra: &str,
    ) -> (StatusCode, serde_json::Value) {
        let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
        let (status, _, json) = self
            .api(&format!(
                "/v1/docker-flow-proxy/reconfigure?serviceName={service}&servicePath={paths}&servers={}{extra}",
                list.join(",")
            ))
            .await;
        (status, json)
    }

    /// GETs `path` through the proxy's frontend (with an optional Host header) on a new
    /// connection: after a reload, a request on an older keep-alive connection is answered
    /// once more by the previous worker (see the crate docs).
    pub async fn get(&self, path: &str, host: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(format!("http://{}{path}", self.bind));
        if let Some(host) = host {
            request = request.header("Host", host);
        }
        let response = client(false)
            .request(request.body(Empty::new()).unwrap())
            .await
            .expect("the proxy's frontend answers");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub fn config_text(&self, state: &Path) -> String {
        std::fs::read_to_string(state.join("haproxy.cfg")).unwrap()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        // RunningProxy's own Drop kills HAProxy.
        self.running.take();
    }
}

/// A keep-alive client (pooled connections) or one opening a new connection per request.
pub fn client(keep_alive: bool) -> Client<HttpConnector, Empty<Bytes>> {
    let mut builder = Client::builder(TokioExecutor::new());
    if !keep_alive {
        builder.pool_max_idle_per_host(0);
    }
    builder.build_http()
}

/// `show proc` on the master socket of `state`: (master pid, current worker pid).
pub async fn processes(state: &std::path::Path) -> (i32, i32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(state.join("master.sock"))
        .await
        .unwrap();
    stream.write_all(b"show proc\n").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let pid_of = |kind: &str| {
        reply
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(kind))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} in {reply}"))
    };
    (pid_of("master"), pid_of("worker"))
}
