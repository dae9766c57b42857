//! A throwaway etcd node on free loopback ports, killed (and its data removed) on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flow_core::Registry;

/// A running etcd node.
pub struct EtcdNode {
    client: String,
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for EtcdNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl EtcdNode {
    /// Starts a single-member node and waits until it answers a registry read.
    pub async fn start() -> EtcdNode {
        let data = tempfile::tempdir().expect("a temporary data directory");
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `etcd` ({e}): these tests need a real etcd 3.4+ node; \
                     install Debian's `etcd-server` package (apt-get install etcd-server)"
                )
            });
        let mut node = EtcdNode {
            client: format!("127.0.0.1:{client_port}"),
            child,
            _data: data,
        };
        let registry = flow_etcd::EtcdRegistry::new(&node.endpoints()).expect("endpoints");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if registry.all_instances().await.is_ok() {
                return node;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("etcd exited before serving ({status}); is the port taken?");
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not serve within 20 s on {client_url}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `etcd://127.0.0.1:<port>`.
    pub fn endpoints(&self) -> String {
        format!("etcd://{}", self.client)
    }
}
