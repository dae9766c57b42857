//! `ConsulRegistry` against the Consul double, or against a real Consul agent when
//! `FLOW_TEST_CONSUL_ADDR` is set (then `CONSUL_HTTP_TOKEN`, when set, is its ACL token).
//!
//! Every test uses service names unique to the run, so a shared real agent is safe to use,
//! and removes what it wrote.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flow_consul::ConsulRegistry;
use flow_consul_double::ConsulDouble;
use flow_core::{
    Color, Registry, RegistryError, ReleaseRecord, ReleaseState, Revision, ServiceName,
};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The Consul a test talks to: a real agent or a double started for the test.
struct Consul {
    address: String,
    token: Option<String>,
    double: Option<ConsulDouble>,
}

impl Consul {
    /// A real agent at `FLOW_TEST_CONSUL_ADDR`, else a fresh double.
    async fn start() -> Consul {
        Self::start_with_token(None).await
    }

    /// Like [`Consul::start`]; a double is started requiring `double_token` when given.
    async fn start_with_token(double_token: Option<&str>) -> Consul {
        match std::env::var("FLOW_TEST_CONSUL_ADDR") {
            Ok(address) if !address.is_empty() => Consul {
                address,
                token: std::env::var("CONSUL_HTTP_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
                double: None,
            },
            _ => {
                let double = match double_token {
                    Some(token) => ConsulDouble::start_with_token(token).await,
                    None => ConsulDouble::start().await,
                }
                .expect("the Consul double starts");
                Consul {
                    address: double.address().to_string(),
                    token: double_token.map(str::to_string),
                    double: Some(double),
                }
            }
        }
    }

    fn registry(&self) -> ConsulRegistry {
        ConsulRegistry::new(&self.address, self.token.clone()).expect("a valid address")
    }

    fn request(&self, method: reqwest::Method, path_and_query: &str) -> reqwest::RequestBuilder {
        let request =
            reqwest::Client::new().request(method, format!("{}{path_and_query}", self.address));
        match &self.token {
            Some(token) => request.header("X-Consul-Token", token),
            None => request,
        }
    }

    /// Writes a KV value the way Docker Flow 1.x (or a person with `consul kv put`) does.
    async fn put_raw(&self, key: &str, value: &str) {
        let response = self
            .request(reqwest::Method::PUT, &format!("/v1/kv/{key}"))
            .body(value.to_string())
            .send()
            .await
            .expect("KV put");
        assert!(
            response.status().is_success(),
            "KV put of {key}: {}",
            response.status()
        );
        assert_eq!(response.text().await.unwrap(), "true");
    }

    /// The plain-text value at `key` (`?raw`), as 1.x and `consul kv get` read it.
    async fn get_raw(&self, key: &str) -> Option<String> {
        let response = self
            .request(reqwest::Method::GET, &format!("/v1/kv/{key}?raw"))
            .send()
            .await
            .expect("KV get");
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => None,
            status if status.is_success() => Some(response.text().await.unwrap()),
            status => panic!("KV get of {key}: {status}"),
        }
    }

    async fn remove_service_keys(&self, service: &ServiceName) {
        self.request(
            reqwest::Method::DELETE,
            &format!("/v1/kv/docker-flow/{service}/?recurse"),
        )
        .send()
        .await
        .expect("KV delete");
    }
}

fn unique_service(label: &str) -> ServiceName {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    ServiceName::new(format!(
        "consul-test-{}-{nanos:x}-{label}",
        std::process::id()
    ))
    .unwrap()
}

fn sample_state() -> ReleaseState {
    ReleaseState {
        color: Some(Color::Blue),
        scale: Some(4),
        last_release: Some(ReleaseRecord {
            color: Some(Color::Blue),
            image: "registry.local/app:1.2.3".to_string(),
            scale: 4,
            released_at: UNIX_EPOCH + Duration::from_secs(1_795_841_331),
            released_by: "docker-flow pid 7 on host-a".to_string(),
            spec: None,
        }),
        previous_release: None,
    }
}

/// A front that forwards to `upstream`, answers `500` to the requests `fails` picks, and
/// records the `X-Consul-Token` of every request it sees: fault injection and observation
/// that work in front of the double and of a real agent alike.
struct Front {
    address: String,
    tokens_seen: Arc<Mutex<Vec<Option<String>>>>,
    server: JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start_front(upstream: &str, fails: fn(&Method, &str) -> bool) -> Front {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let tokens_seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = upstream.to_string();
    let seen = Arc::clone(&tokens_seen);
    let server = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (client, upstream, seen) = (client.clone(), upstream.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (client, upstream, seen) =
                            (client.clone(), upstream.clone(), Arc::clone(&seen));
                        async move {
                            let token = request
                                .headers()
                                .get("X-Consul-Token")
                                .map(|v| v.to_str().unwrap().to_string());
                            seen.lock().unwrap().push(token.clone());
                            if fails(request.method(), request.uri().path()) {
                                return Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(StatusCode::INTERNAL_SERVER_ERROR)
                                        .body(Full::new(Bytes::from(
                                            "<html>Internal Server Error: boom</html>",
                                        )))
                                        .unwrap(),
                                );
                            }
                            let method =
                                reqwest::Method::from_bytes(request.method().as_str().as_bytes())
                                    .unwrap();
                            let url =
                                format!("{upstream}{}", request.uri().path_and_query().unwrap());
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let mut forwarded = client.request(method, url).body(body);
                            if let Some(token) = token {
                                forwarded = forwarded.header("X-Consul-Token", token);
                            }
                            let answer = forwarded.send().await.unwrap();
                            let status = answer.status().as_u16();
                            let body = answer.bytes().await.unwrap();
                            Ok(Response::builder()
                                .status(status)
                                .body(Full::new(body))
                                .unwrap())
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Front {
        address,
        tokens_seen,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let consul = Consul::start().await;
    let registry = consul.registry();
    // The lock value carries the lease's own deadline, so short TTLs hold as the contract
    // says even though Consul sessions live at least 10 s.
    flow_core::conformance::run_all(&registry).await;
}

#[tokio::test]
async fn takes_over_state_written_by_docker_flow_1() {
    let consul = Consul::start().await;
    let registry = consul.registry();
    let service = unique_service("takeover");
    consul
        .put_raw(&format!("docker-flow/{service}/color"), "green")
        .await;
    consul
        .put_raw(&format!("docker-flow/{service}/scale"), "3")
        .await;

    let loaded = registry.load(&service).await.expect("1.x state loads");
    assert_eq!(loaded.value.color, Some(Color::Green));
    assert_eq!(loaded.value.scale, Some(3));
    assert_eq!(loaded.value.last_release, None);
    assert_eq!(loaded.revision, Revision::NONE);

    let state = sample_state();
    let revision = registry
        .store(&service, &state, loaded.revision)
        .await
        .expect("the first store takes 1.x state over");
    assert_ne!(revision, Revision::NONE);
    // 1.x (and `consul kv get`) still read plain text.
    assert_eq!(
        consul
            .get_raw(&format!("docker-flow/{service}/color"))
            .await
            .as_deref(),
        Some("blue")
    );
    assert_eq!(
        consul
            .get_raw(&format!("docker-flow/{service}/scale"))
            .await
            .as_deref(),
        Some("4")
    );
    let reloaded = registry.load(&service).await.unwrap();
    assert_eq!(reloaded.value, state);
    assert_eq!(reloaded.revision, revision);
    // A 1.x writer racing us is not locked out, but the next store of ours sees our revision.
    assert!(matches!(
        registry.store(&service, &state, Revision::NONE).await,
        Err(RegistryError::Conflict { .. })
    ));
    consul.remove_service_keys(&service).await;
}

#[tokio::test]
async fn registrations_are_readable_as_soon_as_register_returns() {
    let consul = Consul::start().await;
    if let Some(double) = &consul.double {
        // A real agent syncs to the catalog asynchronously; make the double as slow as a
        // busy one.
        double.set_catalog_sync_delay(Duration::from_millis(300));
    }
    let registry = consul.registry();
    let name = unique_service("sync").to_string();
    let registration = flow_core::Registration {
        id: format!("{name}:1"),
        name: name.clone(),
        address: "10.0.0.1".to_string(),
        port: 8080,
        tags: vec!["blue".to_string()],
        meta: [("version".to_string(), "1".to_string())].into(),
        check: Some(flow_core::HealthCheck::http(
            "http://10.0.0.1:8080/health",
            Duration::from_secs(5),
            Some(Duration::from_millis(1500)),
        )),
    };
    registry.register(&registration).await.unwrap();
    let found = registry.instances(&name).await.unwrap();
    assert_eq!(
        found,
        std::slice::from_ref(&registration),
        "read back as written, check included"
    );
    registry.deregister(&registration.id).await.unwrap();
    assert!(registry.instances(&name).await.unwrap().is_empty());
}

#[tokio::test]
async fn unreadable_values_are_corrupt_and_name_the_key() {
    let consul = Consul::start().await;
    let registry = consul.registry();
    for (field, value) in [
        ("color", "purple"),
        ("scale", "three"),
        ("scale", "-1"),
        ("release", "{not json"),
    ] {
        let service = unique_service(field);
        let key = format!("docker-flow/{service}/{field}");
        consul.put_raw(&key, value).await;
        match registry.load(&service).await {
            Err(RegistryError::Corrupt {
                key: named,
                value: found,
                ..
            }) => {
                assert_eq!(named, key);
                assert_eq!(found, value);
            }
            other => panic!("{key}={value:?} must be Corrupt, got {other:?}"),
        }
        // Nothing was reset.
        assert_eq!(consul.get_raw(&key).await.as_deref(), Some(value));
        consul.remove_service_keys(&service).await;
    }
}

#[tokio::test]
async fn error_answers_are_backend_errors_and_store_nothing() {
    let consul = Consul::start().await;
    let service = unique_service("failing");
    let direct = consul.registry();
    let before = sample_state();
    let revision = direct
        .store(&service, &before, Revision::NONE)
        .await
        .unwrap();

    // Writes fail: the store is an error naming the front and the status; nothing changes.
    let front = start_front(&consul.address, |method, path| {
        method == Method::PUT && path == "/v1/txn"
    })
    .await;
    let through_front = ConsulRegistry::new(&front.address, consul.token.clone()).unwrap();
    let mut changed = before.clone();
    changed.color = Some(Color::Green);
    match through_front.store(&service, &changed, revision).await {
        Err(RegistryError::Backend { address, message }) => {
            assert_eq!(address, front.address);
            assert!(message.contains("500"), "{message}");
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("a 500 must be a Backend error, got {other:?}"),
    }
    let after = direct.load(&service).await.unwrap();
    assert_eq!(after.value, before);
    assert_eq!(after.revision, revision);

    // Every request fails: the error page is never parsed as state (not even as "nothing
    // stored"), and no operation reports success.
    let front = start_front(&consul.address, |_, _| true).await;
    let through_front = ConsulRegistry::new(&front.address, consul.token.clone()).unwrap();
    let results = [
        through_front.load(&service).await.map(drop),
        through_front.instances("anything").await.map(drop),
        through_front.all_instances().await.map(drop),
        through_front
            .lock(&service, "holder", Duration::from_secs(30))
            .await
            .map(drop),
        through_front.deregister("anything").await.map(drop),
    ];
    for result in results {
        assert!(
            matches!(result, Err(RegistryError::Backend { .. })),
            "{result:?}"
        );
    }
    consul.remove_service_keys(&service).await;
}

#[tokio::test]
async fn unreachable_agent_is_unavailable_naming_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let registry = ConsulRegistry::new(&address, None).unwrap();
    let service = unique_service("unreachable");
    for result in [
        registry.load(&service).await.map(drop),
        registry
            .store(&service, &sample_state(), Revision::NONE)
            .await
            .map(drop),
        registry
            .lock(&service, "holder", Duration::from_secs(30))
            .await
            .map(drop),
        registry.all_instances().await.map(drop),
    ] {
        match result {
            Err(error @ RegistryError::Unavailable { .. }) => {
                let RegistryError::Unavailable { address: named, .. } = &error else {
                    unreachable!()
                };
                assert_eq!(named, &address);
                assert!(error.to_string().contains(&address), "{error}");
            }
            other => panic!("an unreachable agent must be Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn token_is_sent_and_never_shown() {
    let consul = Consul::start_with_token(Some("s3cr3t-double-token")).await;
    let token = consul
        .token
        .clone()
        .unwrap_or_else(|| "s3cr3t-unused-token".to_string());
    let front = start_front(&consul.address, |_, _| false).await;
    let registry = ConsulRegistry::new(&front.address, Some(token.clone())).unwrap();
    let service = unique_service("token");

    registry
        .store(&service, &sample_state(), Revision::NONE)
        .await
        .expect("store with the token");
    assert_eq!(registry.load(&service).await.unwrap().value, sample_state());
    let seen = front.tokens_seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|t| t.as_deref() == Some(token.as_str())),
        "{seen:?}"
    );

    for shown in [
        format!("{registry}"),
        format!("{registry:?}"),
        format!("{registry:#?}"),
    ] {
        assert!(!shown.contains(&token), "the token leaks in {shown}");
        assert!(shown.contains(&front.address), "{shown}");
    }

    if consul.token.is_some() {
        // The agent enforces ACLs: without the token it refuses, and the refusal is an
        // error naming the agent, never an empty state.
        let anonymous = ConsulRegistry::new(&consul.address, None).unwrap();
        match anonymous.load(&service).await {
            Err(error @ RegistryError::Backend { .. }) => {
                assert!(error.to_string().contains("403"), "{error}");
                assert!(!error.to_string().contains(&token));
            }
            other => panic!("a 403 must be a Backend error, got {other:?}"),
        }
    }
    consul.remove_service_keys(&service).await;
}

#[test]
fn addresses_are_validated() {
    assert_eq!(
        ConsulRegistry::new("127.0.0.1:8500", None)
            .unwrap()
            .address(),
        "http://127.0.0.1:8500"
    );
    assert_eq!(
        ConsulRegistry::new("http://localhost:8500/", None)
            .unwrap()
            .address(),
        "http://localhost:8500"
    );
    for bad in [
        "https://127.0.0.1:8501",
        "http://127.0.0.1:8500/v1",
        "http://",
        "ftp://x:1",
    ] {
        let error = ConsulRegistry::new(bad, None).expect_err(bad);
        assert!(error.to_string().contains(bad), "{error}");
        assert!(error.to_string().contains("http://host:port"), "{error}");
    }
}
