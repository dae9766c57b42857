//! Runs a release: builds the adapters the validated options name, then hands them to the
//! engine. Every check that can refuse bad input runs before the first adapter call that
//! could change anything.

use std::sync::Arc;
use std::time::Instant;

use flow_core::release::{Engine, Interrupt, Ports};
use flow_core::{DynProxy, DynRegistry};
use flow_docker::compose::ComposeProject;
use flow_docker::{ConnectSettings, DockerOptions, DockerOrchestrator};

use crate::config::{RegistryLocation, ReleaseConfig};
use crate::exit::Exit;
use crate::output::Printer;

/// Runs one release invocation to its end and says how it went.
pub async fn run(config: ReleaseConfig) -> Exit {
    for warning in &config.warnings {
        eprintln!("docker-flow: warning: {warning}");
    }
    let compose = match load_compose(&config) {
        Ok(compose) => Arc::new(compose),
        Err(message) => {
            eprintln!("docker-flow: {message}");
            return Exit::BadInput;
        }
    };
    let registry = match registry(&config.registry) {
        Ok(registry) => registry,
        Err(message) => {
            eprintln!("docker-flow: {message}");
            return Exit::BadInput;
        }
    };
    let settings = ConnectSettings {
        host: config.docker.host.clone(),
        cert_path: config.docker.cert_path.clone(),
        tls_verify: tls_verify(),
    };
    let orchestrator =
        match DockerOrchestrator::connect(&settings, compose, docker_options(&config)).await {
            Ok(orchestrator) => orchestrator,
            Err(error) => {
                eprintln!("docker-flow: {error}");
                return Exit::NothingChanged;
            }
        };
    let ports = Ports {
        orchestrator: Arc::new(orchestrator),
        registry,
        proxy: proxy(&config),
    };
    let engine = match Engine::new(ports, config.release) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("docker-flow: {error}");
            return Exit::of(&error);
        }
    };
    if config.dry_run {
        return match engine.plan().await {
            Ok(plan) => {
                if config.json {
                    println!("{}", serde_json::to_string(&plan).unwrap_or_default());
                } else {
                    print!("{plan}");
                }
                Exit::Success
            }
            Err(error) => {
                eprintln!("docker-flow: {error}");
                Exit::of(&error)
            }
        };
    }
    let interrupt = Interrupt::new();
    tokio::spawn(roll_back_on_signal(interrupt.clone()));
    let engine = engine.with_interrupt(interrupt);
    let printer = Printer::new(config.json);
    let started = Instant::now();
    match engine.run(&printer).await {
        Ok(report) => {
            printer.finish(&report, started.elapsed());
            Exit::Success
        }
        Err(error) => {
            eprintln!("docker-flow: {error}");
            Exit::of(&error)
        }
    }
}

/// The first Ctrl-C (or SIGTERM) asks the release to stop and roll back; a second one quits at
/// once (the next run removes whatever was left in the idle colour).
async fn roll_back_on_signal(interrupt: Interrupt) {
    wait_for_signal().await;
    eprintln!("docker-flow: interrupted: rolling back what this run started (interrupt again to quit at once)");
    interrupt.trigger();
    wait_for_signal().await;
    eprintln!("docker-flow: quitting without finishing the rollback");
    std::process::exit(130);
}

async fn wait_for_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(stream) => stream,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Docker's own switch for TLS: `DOCKER_TLS_VERIFY` set to anything but empty or `0`.
pub fn tls_verify() -> bool {
    std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reads the Compose file and checks the target and side targets against it.
fn load_compose(config: &ReleaseConfig) -> Result<ComposeProject, String> {
    let compose = ComposeProject::load(&config.compose_path).map_err(|e| e.to_string())?;
    for warning in &compose.warnings {
        eprintln!("docker-flow: warning: {warning}");
    }
    let release = &config.release;
    compose
        .service(&release.target)
        .map_err(|e| e.to_string())?;
    for side in &release.side_targets {
        compose
            .service(side)
            .map_err(|e| format!("side target: {e}"))?;
    }
    compose
        .validate_target(&release.target, release.blue_green)
        .map_err(|e| e.to_string())?;
    Ok(compose)
}

fn docker_options(config: &ReleaseConfig) -> DockerOptions {
    DockerOptions {
        service_name: Some(config.release.service.clone()),
        pull: config.pull,
        pull_side_targets: config.pull_side_targets,
        health_path: config.health_path.clone(),
        port: config.port,
        advertise_addr: config.advertise_addr,
        ..DockerOptions::new(config.project.clone())
    }
}

/// The registry the options name. Building one contacts nothing.
pub fn registry(location: &RegistryLocation) -> Result<DynRegistry, String> {
    Ok(match location {
        RegistryLocation::File(dir) => Arc::new(flow_store::FileRegistry::new(dir.clone())),
        RegistryLocation::Consul { address } => Arc::new(
            flow_consul::ConsulRegistry::from_env_with(Some(address)).map_err(|e| e.to_string())?,
        ),
        RegistryLocation::Etcd { endpoints } => {
            Arc::new(flow_etcd::EtcdRegistry::new(&endpoints.join(",")).map_err(|e| e.to_string())?)
        }
    })
}

/// The proxy the options name, when one is configured.
fn proxy(config: &ReleaseConfig) -> Option<DynProxy> {
    config.proxy.as_ref().map(|endpoint| {
        Arc::new(flow_proxy::HttpProxy::new(
            &endpoint.host,
            endpoint.port,
            endpoint.token.clone(),
        )) as DynProxy
    })
}
