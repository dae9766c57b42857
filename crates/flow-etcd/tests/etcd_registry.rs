//! `EtcdRegistry` against a real etcd node started by each test.

use std::time::{Duration, UNIX_EPOCH};

use flow_core::{
    Color, Registry, RegistryError, ReleaseRecord, ReleaseState, Revision, ServiceName,
};
use flow_etcd::EtcdRegistry;
use flow_tests::fixtures::EtcdNode;

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
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

/// A loopback address nothing listens on.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let node = EtcdNode::start().await;
    let registry = EtcdRegistry::new(&node.endpoints()).unwrap();
    flow_core::conformance::run_all(&registry).await;
}

#[tokio::test]
async fn values_are_plain_text_for_etcdctl_and_docker_flow_1() {
    let node = EtcdNode::start().await;
    let registry = EtcdRegistry::new(&node.endpoints()).unwrap();
    let app = service("go-demo");
    registry
        .store(&app, &sample_state(), Revision::NONE)
        .await
        .unwrap();
    let get = |key: &str| node.etcdctl(&["get", key, "--print-value-only"]);
    assert_eq!(get("docker-flow/go-demo/color").trim(), "blue");
    assert_eq!(get("docker-flow/go-demo/scale").trim(), "4");

    // State written with etcdctl the way 1.x wrote Consul loads, and a store takes it over.
    node.etcdctl(&["put", "docker-flow/legacy/color", "green"]);
    node.etcdctl(&["put", "docker-flow/legacy/scale", "3"]);
    let legacy = service("legacy");
    let loaded = registry.load(&legacy).await.unwrap();
    assert_eq!(loaded.value.color, Some(Color::Green));
    assert_eq!(loaded.value.scale, Some(3));
    assert_eq!(loaded.value.last_release, None);
    assert_eq!(loaded.revision, Revision::NONE);
    let revision = registry
        .store(&legacy, &sample_state(), loaded.revision)
        .await
        .unwrap();
    assert_eq!(
        get("docker-flow/legacy/color").trim(),
        "blue",
        "etcdctl reads the colour we stored"
    );
    assert_eq!(registry.load(&legacy).await.unwrap().revision, revision);
}

#[tokio::test]
async fn unreadable_values_are_corrupt_and_name_the_key() {
    let node = EtcdNode::start().await;
    let registry = EtcdRegistry::new(&node.endpoints()).unwrap();
    for (name, field, value) in [
        ("a", "color", "purple"),
        ("b", "scale", "three"),
        ("c", "release", "{not json"),
    ] {
        let key = format!("docker-flow/{name}/{field}");
        node.etcdctl(&["put", &key, value]);
        match registry.load(&service(name)).await {
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
        let still = node.etcdctl(&["get", &key, "--print-value-only"]);
        assert_eq!(still.trim(), value, "a corrupt value is never reset");
    }
    node.etcdctl(&["put", "docker-flow/.instances/broken", "nope"]);
    assert!(matches!(
        registry.all_instances().await,
        Err(RegistryError::Corrupt { key, .. }) if key == "docker-flow/.instances/broken"
    ));
}

#[tokio::test]
async fn unreachable_endpoints_are_unavailable_naming_them() {
    let dead = dead_endpoint();
    let registry = EtcdRegistry::new(&format!("etcd://{dead}")).unwrap();
    match registry.load(&service("app")).await {
        Err(error @ RegistryError::Unavailable { .. }) => {
            let text = error.to_string();
            assert!(text.contains(&dead), "{text}");
        }
        other => panic!("an unreachable endpoint must be Unavailable, got {other:?}"),
    }
    assert!(matches!(
        registry
            .lock(&service("app"), "holder", Duration::from_secs(5))
            .await,
        Err(RegistryError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_the_next_one() {
    let node = EtcdNode::start().await;
    let registry =
        EtcdRegistry::new(&format!("etcd://{},{}", dead_endpoint(), node.address())).unwrap();
    let app = service("app");
    let revision = registry
        .store(&app, &sample_state(), Revision::NONE)
        .await
        .expect("the second endpoint answers");
    assert_eq!(registry.load(&app).await.unwrap().revision, revision);
}

#[tokio::test]
async fn error_answers_are_backend_errors_and_store_nothing() {
    let node = EtcdNode::start().await;
    let registry = EtcdRegistry::new(&node.endpoints()).unwrap();
    // etcd refuses oversized requests with an error status.
    let huge = flow_core::Registration {
        id: "huge".to_string(),
        name: "app".to_string(),
        address: "10.0.0.1".to_string(),
        port: 80,
        tags: Vec::new(),
        meta: [("blob".to_string(), "x".repeat(2 * 1024 * 1024))].into(),
        check: None,
    };
    match registry.register(&huge).await {
        Err(RegistryError::Backend { address, message }) => {
            assert!(address.contains(&node.address()), "{address}");
            // etcd's own 1.5 MiB limit, or its gRPC layer's 2 MiB one once base64 is added.
            assert!(
                message.contains("too large") || message.contains("larger than max"),
                "{message}"
            );
        }
        other => panic!("an error answer must be a Backend error, got {other:?}"),
    }
    assert!(registry.all_instances().await.unwrap().is_empty());

    // A lease revoked behind the adapter's back: etcd answers "lease not found", and the
    // holder learns that it lost the lock.
    let lock = registry
        .lock(&service("app"), "holder", Duration::from_secs(30))
        .await
        .unwrap();
    let hex_id = format!("{:x}", lock.token.parse::<i64>().unwrap());
    node.etcdctl(&["lease", "revoke", &hex_id]);
    assert!(matches!(
        registry.renew(&lock).await,
        Err(RegistryError::LeaseLost { .. })
    ));
    assert!(matches!(
        registry.unlock(&lock).await,
        Err(RegistryError::LeaseLost { .. })
    ));
}

#[test]
fn endpoint_lists_are_validated() {
    let registry = EtcdRegistry::new("etcd://127.0.0.1:2379,127.0.0.2:2379").unwrap();
    assert_eq!(registry.address(), "etcd://127.0.0.1:2379,127.0.0.2:2379");
    assert_eq!(
        registry.to_string(),
        "etcd at etcd://127.0.0.1:2379,127.0.0.2:2379"
    );
    // A member without a port is at etcd's client port, as with --registry etcd://host.
    let defaulted = EtcdRegistry::new("etcd://host,[::1]").unwrap();
    assert_eq!(defaulted.address(), "etcd://host:2379,[::1]:2379");
    for bad in [
        "etcd://",
        "etcd://host:port",
        "etcd://a b:1",
        "https://127.0.0.1:2379",
        "etcd://h:1/x",
    ] {
        let error = EtcdRegistry::new(bad).expect_err(bad);
        assert!(error.to_string().contains("etcd://host:port"), "{error}");
    }
}

#[tokio::test]
async fn an_expired_lock_key_without_a_lease_is_taken_over_and_a_live_one_is_not() {
    let node = EtcdNode::start().await;
    let registry = EtcdRegistry::new(&node.endpoints()).unwrap();
    // Lock keys written by hand (no lease): one whose deadline passed, one still live.
    let expired = r#"{"holder":"old tool","since_ms":1000,"expires_ms":2000}"#;
    node.etcdctl(&["put", "docker-flow/stale/lock", expired]);
    let lease = registry
        .lock(&service("stale"), "new holder", Duration::from_secs(5))
        .await
        .expect("an expired lock without a lease is taken over");
    assert_eq!(lease.holder, "new holder");
    registry.unlock(&lease).await.unwrap();

    let far = UNIX_EPOCH.elapsed().unwrap().as_millis() as u64 + 3_600_000;
    let live = format!(r#"{{"holder":"other tool","since_ms":1000,"expires_ms":{far}}}"#);
    node.etcdctl(&["put", "docker-flow/busy/lock", &live]);
    match registry
        .lock(&service("busy"), "new holder", Duration::from_secs(5))
        .await
    {
        Err(flow_core::RegistryError::Locked { holder, .. }) => assert_eq!(holder, "other tool"),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(
        node.etcdctl(&["get", "docker-flow/busy/lock", "--print-value-only"])
            .trim(),
        live
    );
}
