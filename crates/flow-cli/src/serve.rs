//! The long-running commands: `docker-flow proxy serve` and `docker-flow registrator`.

use crate::config::{ProxyServeConfig, RegistratorConfig};
use crate::exit::Exit;

/// Runs the proxy service until it is stopped.
pub async fn proxy(_config: ProxyServeConfig) -> Exit {
    eprintln!("docker-flow: proxy serve is not available in this build");
    Exit::BadInput
}

/// Runs the registrator until it is stopped.
pub async fn registrator(_config: RegistratorConfig) -> Exit {
    eprintln!("docker-flow: registrator is not available in this build");
    Exit::BadInput
}
