//! The Registry conformance suite against the in-memory registry.

use flow_core::memory::MemoryRegistry;

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
