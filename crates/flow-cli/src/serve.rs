//! The long-running commands: `docker-flow proxy serve` and `docker-flow registrator`.

use flow_registrator::RegistratorOptions;

use std::sync::Arc;

use flow_core::DynRegistry;

use crate::config::{ProxyServeConfig, RegistratorConfig, RegistryLocation};
use crate::exit::Exit;
use crate::release::{registry, resolve_endpoint, unreachable};

/// Runs the proxy service until SIGINT or SIGTERM.
#[cfg(feature = "proxy-server")]
pub async fn proxy(config: ProxyServeConfig) -> Exit {
    use flow_proxy::ServeConfig;

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
        stop_haproxy: config.stop_haproxy,
        secrets_dir: config.secrets_dir.clone(),
        https_binds: config.https_binds.clone(),
        certs_dir: config.certs_dir.clone(),
        ..ServeConfig::new(config.state_dir.clone(), config.binds.clone())
    };
    let binds: Vec<String> = config
        .binds
        .iter()
        .map(ToString::to_string)
        .chain(
            config
                .https_binds
                .iter()
                .map(|bind| format!("{bind} (HTTPS)")),
        )
        .collect();
    eprintln!(
        "docker-flow proxy: API on http://{}, traffic on {}, state in {}{}",
        config.api_addr,
        binds.join(", "),
        config.state_dir.display(),
        if config.api_token.is_some() {
            " (token required)"
        } else {
            " (no token: any process that reaches the API can change the routes)"
        }
    );
    match flow_proxy::serve(serve_config).await {
        // flow_proxy::serve says what it left running.
        Ok(()) => Exit::Success,
        Err(
            error @ (flow_proxy::ServeError::EmptyToken
            | flow_proxy::ServeError::Haproxy(flow_proxy::HaproxyError::SameAddress {
                ..
            })),
        ) => {
            eprintln!("docker-flow proxy: {error}");
            Exit::BadInput
        }
        Err(flow_proxy::ServeError::Haproxy(flow_proxy::HaproxyError::Certificate(error)))
            if error.is_bad_input() =>
        {
            eprintln!("docker-flow proxy: {error}");
            Exit::BadInput
        }
        Err(error) => {
            eprintln!("docker-flow proxy: {error}");
            Exit::NothingChanged
        }
    }
}

/// What `proxy serve` answers in a build without the proxy server.
#[cfg(not(feature = "proxy-server"))]
pub const WITHOUT_PROXY_SERVER: &str = "docker-flow proxy serve: this docker-flow was built without the proxy server (cargo feature `proxy-server`); build it with `--features proxy-server` (on by default), or run a docker-flow that has it";

/// Refuses: this build has no proxy server (see [`WITHOUT_PROXY_SERVER`]).
#[cfg(not(feature = "proxy-server"))]
pub async fn proxy(_config: ProxyServeConfig) -> Exit {
    eprintln!("{WITHOUT_PROXY_SERVER}");
    Exit::BadInput
}

/// Runs the registrator until SIGINT or SIGTERM.
pub async fn registrator(config: RegistratorConfig) -> Exit {
    let registry = match (&config.registry, config.ttl) {
        // Only etcd expires registrations; the configuration refuses --ttl elsewhere.
        (RegistryLocation::Etcd { endpoints }, Some(ttl)) => {
            flow_etcd::EtcdRegistry::new(&endpoints.join(","))
                .map(|etcd| Arc::new(etcd.with_registration_ttl(ttl.ttl)) as DynRegistry)
                .map_err(|e| e.to_string())
        }
        (location, _) => registry(location),
    };
    let registry = match registry {
        Ok(registry) => registry,
        Err(message) => {
            eprintln!("docker-flow: {message}");
            return Exit::BadInput;
        }
    };
    let endpoint = match resolve_endpoint(&config.docker) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            eprintln!("docker-flow: {error}");
            return Exit::BadInput;
        }
    };
    let settings = &endpoint.settings;
    let docker = match flow_docker::connect(settings).await {
        Ok(docker) => docker,
        Err(error) => {
            eprintln!("docker-flow: {}", unreachable(error, &endpoint));
            return Exit::NothingChanged;
        }
    };
    let rules = config.rules;
    let options = RegistratorOptions {
        ip: config.ip,
        internal: rules.internal,
        explicit: rules.explicit,
        tags: rules.tags,
        ip_label: rules.ip_label,
        deregister: config.deregister,
        cleanup: config.cleanup,
        refresh: config.ttl.map(|ttl| ttl.refresh),
        resync: config.resync,
        retry_attempts: config.retry_attempts,
        retry_interval: config.retry_interval,
        docker_endpoint: settings.endpoint(),
        ..RegistratorOptions::default()
    };
    eprintln!(
        "docker-flow registrator: watching {} and writing to {registry}",
        endpoint.describe()
    );
    match flow_registrator::run(docker, registry, options, stop_signal()).await {
        Ok(()) => {
            eprintln!("docker-flow registrator: stopped");
            Exit::Success
        }
        Err(error) => {
            eprintln!("docker-flow registrator: {error}");
            Exit::NothingChanged
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn stop_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(all(test, not(feature = "proxy-server")))]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[tokio::test]
    async fn proxy_serve_without_the_proxy_server_is_refused_as_bad_input() {
        let config = ProxyServeConfig {
            api_addr: "127.0.0.1:8080".parse().unwrap(),
            binds: vec!["127.0.0.1:80".parse().unwrap()],
            https_binds: Vec::new(),
            certs_dir: None,
            state_dir: PathBuf::from("/nonexistent/state"),
            haproxy: PathBuf::from("haproxy"),
            api_token: None,
            stop_haproxy: None,
            registry: None,
            secrets_dir: PathBuf::from("/nonexistent/secrets"),
        };
        assert_eq!(proxy(config).await, Exit::BadInput);
        assert!(WITHOUT_PROXY_SERVER.contains("proxy-server"));
    }
}
