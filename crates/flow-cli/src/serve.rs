//! The long-running commands: `docker-flow proxy serve` and `docker-flow registrator`.

use flow_proxy::ServeConfig;

use crate::config::{ProxyServeConfig, RegistratorConfig};
use crate::exit::Exit;
use crate::release::registry;

/// Runs the proxy service until SIGINT or SIGTERM.
pub async fn proxy(config: ProxyServeConfig) -> Exit {
    let registry = match config.registry.as_ref().map(registry).transpose() {
        Ok(registry) => registry,
        Err(message) => {
            eprintln!("docker-flow: {message}");
            return Exit::BadInput;
        }
    };
    let serve_config = ServeConfig {
        api_addr: config.api_addr,
        token: config.api_token.clone(),
        haproxy: config.haproxy.clone(),
        registry,
        ..ServeConfig::new(config.state_dir.clone(), config.binds.clone())
    };
    let binds: Vec<String> = config.binds.iter().map(ToString::to_string).collect();
    eprintln!(
        "docker-flow proxy: API on http://{}, traffic on {}, state in {}{}",
        config.api_addr,
        binds.join(", "),
        config.state_dir.display(),
        if config.api_token.is_some() { " (token required)" } else { "" }
    );
    match flow_proxy::serve(serve_config).await {
        Ok(()) => {
            eprintln!("docker-flow proxy: stopped");
            Exit::Success
        }
        Err(error) => {
            eprintln!("docker-flow proxy: {error}");
            Exit::NothingChanged
        }
    }
}

/// Runs the registrator until it is stopped.
pub async fn registrator(_config: RegistratorConfig) -> Exit {
    eprintln!("docker-flow: registrator is not available in this build");
    Exit::BadInput
}
