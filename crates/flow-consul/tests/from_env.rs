//! `ConsulRegistry::from_env*` read Consul's own environment variables. A test binary of its
//! own, because it changes the process environment.

use flow_consul::ConsulRegistry;
use flow_consul_double::ConsulDouble;
use flow_core::{Registry, ReleaseState, Revision, ServiceName};

#[tokio::test]
async fn address_and_token_come_from_consuls_environment() {
    let double = ConsulDouble::start_with_token("env-s3cr3t").await.unwrap();
    std::env::set_var("CONSUL_HTTP_ADDR", double.address());
    std::env::set_var("CONSUL_HTTP_TOKEN", "env-s3cr3t");

    let registry = ConsulRegistry::from_env().unwrap();
    assert_eq!(registry.address(), double.address());
    assert!(!format!("{registry:?} {registry}").contains("env-s3cr3t"));
    let service = ServiceName::new("from-env").unwrap();
    registry
        .store(&service, &ReleaseState::default(), Revision::NONE)
        .await
        .expect("the token from CONSUL_HTTP_TOKEN is accepted");

    // An explicit address (--consul-address) wins over CONSUL_HTTP_ADDR.
    let explicit = ConsulRegistry::from_env_with(Some("http://127.0.0.2:8500")).unwrap();
    assert_eq!(explicit.address(), "http://127.0.0.2:8500");

    std::env::remove_var("CONSUL_HTTP_ADDR");
    std::env::remove_var("CONSUL_HTTP_TOKEN");
    assert_eq!(
        ConsulRegistry::from_env().unwrap().address(),
        flow_consul::DEFAULT_ADDRESS
    );
}
