//! The conformance suites against the in-memory ports.

use flow_core::conformance::orchestrator::Subject;
use flow_core::memory::{MemoryOrchestrator, MemoryProxy, MemoryRegistry};

#[tokio::test(flavor = "multi_thread")]
async fn memory_registry_passes_the_conformance_suite() {
    flow_core::conformance::run_all(&MemoryRegistry::new()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_suite_runs_on_a_current_thread_runtime_too() {
    let registry = MemoryRegistry::new();
    flow_core::conformance::concurrent_writers_lose_no_update(&registry).await;
    flow_core::conformance::lock_is_exclusive(&registry).await;
}

#[tokio::test]
async fn memory_orchestrator_passes_the_conformance_suite() {
    let orchestrator = MemoryOrchestrator::new()
        .with_target("web", "web:v1")
        .with_target("db", "db:v1");
    flow_core::conformance::orchestrator::run_all(&Subject::new(&orchestrator, "web", "db")).await;
}

#[tokio::test]
async fn memory_proxy_passes_the_conformance_suite() {
    let proxy = MemoryProxy::new();
    let dead = "127.0.0.1:9".parse().unwrap();
    proxy.set_down(dead);
    let servers = [
        "127.0.0.1:8001".parse().unwrap(),
        "127.0.0.1:8002".parse().unwrap(),
    ];
    flow_core::conformance::proxy::run_all(&flow_core::conformance::proxy::Subject::new(
        &proxy, servers, dead,
    ))
    .await;
}
