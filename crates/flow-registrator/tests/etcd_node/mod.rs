//! A throwaway etcd node on free loopback ports, killed (and its data removed) on drop; it
//! can be killed and restarted in between, as a registry outage.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flow_core::Registry;

/// A running etcd node.
pub struct EtcdNode {
    client_port: u16,
    peer_port: u16,
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
        let child = spawn(data.path(), client_port, peer_port);
        let mut node = EtcdNode {
            client_port,
            peer_port,
            child,
            _data: data,
        };
        node.wait_ready().await;
        node
    }

    /// Kills the node (its data stays), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed node again on the same ports and data, and waits until it serves.
    pub async fn restart(&mut self) {
        self.child = spawn(self._data.path(), self.client_port, self.peer_port);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let registry = flow_etcd::EtcdRegistry::new(&self.endpoints()).expect("endpoints");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if registry.all_instances().await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited before serving ({status}); is the port taken?");
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not serve within 20 s on 127.0.0.1:{}",
                self.client_port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:<port>`.
    pub fn endpoints(&self) -> String {
        format!("etcd://{}", self.address())
    }
}

/// Runs `etcd` for a single-member cluster on the given ports and data directory.
fn spawn(data: &Path, client_port: u16, peer_port: u16) -> Child {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    Command::new("etcd")
        .arg("--name")
        .arg("default")
        .arg("--data-dir")
        .arg(data)
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
        })
}
