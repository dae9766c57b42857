//! A Unix-socket relay in front of the Docker engine's socket that can be cut and restored,
//! to break the registrator's event stream as an engine restart would, without restarting
//! the shared engine.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

/// The engine's socket: `DOCKER_HOST` when it is a `unix://` one, else the default.
fn engine_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// A running relay; dropping it cuts every relayed connection and stops accepting.
pub struct Relay {
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Listens on `path` (replacing a stale socket file) and relays each connection to the
    /// engine's socket.
    pub fn start(path: &Path) -> Relay {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", path.display()));
        let engine = engine_socket();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the relay cuts them all.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let engine = engine.clone();
                connections.spawn(async move {
                    let Ok(mut outbound) = UnixStream::connect(&engine).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Relay { task }
    }

    /// Cuts every connection and stops listening, as an engine going down would.
    pub async fn cut(mut self, path: &Path) {
        self.task.abort();
        let _ = (&mut self.task).await;
        let _ = std::fs::remove_file(path);
    }
}
