//! Runs a release: builds the adapters the validated options name, then hands them to the
//! engine. Every check that can refuse bad input runs before the first adapter call that
//! could change anything.

use std::sync::Arc;
use std::time::Instant;

use flow_core::release::{Engine, Interrupt, Ports};
use flow_core::{DynProxy, DynRegistry, OrchestratorError, ScaleSpec};
use flow_docker::compose::{ComposeProject, LoadOptions};
use flow_docker::context::Resolved;
use flow_docker::{DockerOptions, DockerOrchestrator};

use crate::config::{DockerEndpoint, RegistryLocation, ReleaseConfig};
use crate::exit::Exit;
use crate::output::Printer;
use crate::timed::{CallLog, TimedOrchestrator, TimedProxy, TimedRegistry};

/// Runs one release invocation to its end and says how it went.
pub async fn run(mut config: ReleaseConfig) -> Exit {
    let printer = Arc::new(Printer::new(config.json, config.verbosity));
    for warning in &config.warnings {
        printer.warn(warning);
    }
    let compose = match load_compose(&config, &printer) {
        Ok(compose) => compose,
        Err(message) => return printer.fail(message, Exit::BadInput),
    };
    // `deploy.replicas` is read before the Compose model moves into the orchestrator.
    let replicas = compose
        .services
        .get(&config.release.target)
        .and_then(|service| service.replicas);
    let ports = match ports(&config, compose, &printer).await {
        Ok(ports) => ports,
        Err(exit) => return exit,
    };
    if let Err(message) = first_release_scale(&mut config, replicas, &ports.registry).await {
        return printer.fail(message, Exit::NothingChanged);
    };
    let engine = match Engine::new(ports, config.release) {
        Ok(engine) => engine,
        Err(error) => {
            let exit = Exit::of(&error);
            return printer.fail(error, exit);
        }
    };
    if config.dry_run {
        return match engine.plan().await {
            Ok(plan) => {
                printer.plan(&plan);
                Exit::Success
            }
            Err(error) => {
                let exit = Exit::of(&error);
                printer.fail(error, exit)
            }
        };
    }
    let interrupt = Interrupt::new();
    tokio::spawn(roll_back_on_signal(interrupt.clone()));
    let engine = engine.with_interrupt(interrupt);
    let started = Instant::now();
    match engine.run(&*printer).await {
        Ok(report) => {
            printer.finish(&report, started.elapsed());
            Exit::Success
        }
        Err(error) => {
            let exit = Exit::of(&error);
            printer.fail(error, exit)
        }
    }
}

/// The ports the options name, each call reported to `printer` (`--verbose`). Connecting
/// reads the engine's version and changes nothing; a failure is printed and its exit code
/// returned.
pub async fn ports(
    config: &ReleaseConfig,
    compose: ComposeProject,
    printer: &Arc<Printer>,
) -> Result<Ports, Exit> {
    let registry = registry(&config.registry).map_err(|m| printer.fail(m, Exit::BadInput))?;
    let endpoint = resolve_endpoint(&config.docker).map_err(|e| printer.fail(e, Exit::BadInput))?;
    let orchestrator = DockerOrchestrator::connect(
        &endpoint.settings,
        Arc::new(compose),
        docker_options(config),
    )
    .await
    .map_err(|error| printer.fail(unreachable(error, &endpoint), Exit::NothingChanged))?
    .with_observer(printer.clone());
    let log: Arc<dyn CallLog> = printer.clone();
    Ok(Ports {
        orchestrator: Arc::new(TimedOrchestrator::new(Arc::new(orchestrator), log.clone())),
        registry: Arc::new(TimedRegistry::new(registry, log.clone())),
        proxy: proxy(config).map(|proxy| Arc::new(TimedProxy::new(proxy, log)) as DynProxy),
    })
}

/// Reads the Compose file, printing its warnings.
pub fn read_compose(config: &ReleaseConfig, printer: &Printer) -> Result<ComposeProject, String> {
    let mut warnings = Vec::new();
    let loaded = ComposeProject::load_with(
        &config.compose_path,
        &LoadOptions::from_process(),
        &mut warnings,
    );
    for warning in &warnings {
        printer.warn(warning);
    }
    let mut compose = loaded.map_err(|e| e.to_string())?;
    compose.assign_build_images(&config.project);
    Ok(compose)
}

/// The engine's endpoint: the explicit choice, else the environment and the Docker contexts.
pub fn resolve_endpoint(
    docker: &DockerEndpoint,
) -> Result<Resolved, flow_docker::context::ContextError> {
    let resolved =
        flow_docker::context::resolve(&docker.selection(), &|name| std::env::var(name).ok())?;
    tracing::debug!(endpoint = %resolved.describe(), "Docker endpoint");
    Ok(resolved)
}

/// An unreachable engine's error, naming the context it came from when it did.
pub fn unreachable(error: OrchestratorError, endpoint: &Resolved) -> String {
    match &endpoint.context {
        Some((name, origin)) => {
            format!("{error} (the endpoint of Docker context {name:?}, from {origin})")
        }
        None => error.to_string(),
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

/// Reads the Compose file (its warnings shown even when it is refused) and checks the target
/// and side targets against it, and the `depends_on` between them (no cycle, no required
/// dependency the file lacks).
fn load_compose(config: &ReleaseConfig, printer: &Printer) -> Result<ComposeProject, String> {
    let compose = read_compose(config, printer)?;
    let release = &config.release;
    compose
        .validate_target(&release.target, release.blue_green)
        .map_err(|e| e.to_string())?;
    for side in &release.side_targets {
        compose
            .runnable(side)
            .map_err(|e| format!("side target: {e}"))?;
    }
    let mut starting = release.side_targets.clone();
    starting.push(release.target.clone());
    compose.start_order(&starting).map_err(|e| e.to_string())?;
    Ok(compose)
}

/// `deploy.replicas` (or `scale`) of the target is the scale of its first release: when no
/// `--scale` is given and the registry holds no scale for the service yet.
async fn first_release_scale(
    config: &mut ReleaseConfig,
    replicas: Option<u32>,
    registry: &DynRegistry,
) -> Result<(), String> {
    let Some(replicas) = replicas else {
        return Ok(());
    };
    if config.release.scale.is_some() {
        return Ok(());
    }
    let state = registry
        .load(&config.release.service)
        .await
        .map_err(|e| e.to_string())?;
    if state.value.scale.is_none() {
        config.release.scale = Some(ScaleSpec::Absolute(replicas));
    }
    Ok(())
}

fn docker_options(config: &ReleaseConfig) -> DockerOptions {
    DockerOptions {
        service_name: Some(config.release.service.clone()),
        pull: config.pull,
        pull_side_targets: config.pull_side_targets,
        build: config.build,
        health_path: config.health_path.clone(),
        port: config.port,
        advertise_addr: config.advertise_addr,
        dependency_timeout: config.release.timeouts.health,
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
        Arc::new(flow_proxy_client::HttpProxy::new(
            &endpoint.host,
            endpoint.port,
            endpoint.token.clone(),
        )) as DynProxy
    })
}
