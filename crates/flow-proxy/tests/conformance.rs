//! The Proxy conformance suite against `HttpProxy` driving a real `proxy serve` (real
//! HAProxy, real loopback backends), as a release drives it.

mod common;

use common::{free_addr, Backend, TestProxy};
use flow_core::conformance::proxy::{run_all, Subject};
use flow_proxy::HttpProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_passes_the_conformance_suite() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let adapter = HttpProxy::new("127.0.0.1", proxy.api.port(), None);
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    run_all(&Subject::new(
        &adapter,
        [blue.addr, green.addr],
        free_addr(),
    ))
    .await;
}
