//! docker-flow's [`Orchestrator`] on the Docker Engine API, and its Compose file reader.
//!
//! # Design
//!
//! * **The API, never the CLI.** Everything goes through [bollard] (the Engine HTTP API), so
//!   there is no `docker`/`docker-compose` binary to install, parse or wait for, and
//!   independent calls run concurrently: [`Orchestrator::start`] creates and starts up to
//!   [`START_CONCURRENCY`] containers at once, which is what makes a release's start phase
//!   faster than a `docker run` loop.
//! * **Compose is read, not run.** [`compose`] reads the Compose file as the specification
//!   describes it into our own types; keys docker-flow does not run are warnings naming them.
//!   Containers are created as Compose would label them, so `docker compose ps` and other
//!   tools still see them.
//! * **Builds through the engine.** A service with `build:` is built by the engine's `/build`
//!   endpoint from a tar of its context ([`build`], `.dockerignore` honoured) according to
//!   [`BuildPolicy`], before anything of the release starts; a failed build has created
//!   nothing.
//! * **`depends_on` is waited for.** Side targets start in dependency order, and before a side
//!   target or the target's instances are created each service they depend on must meet its
//!   condition (`dependencies`); a failed wait fails the call before any container of the
//!   dependent service exists. [`Orchestrator::start`] and [`Orchestrator::resume`] wait
//!   for the target's dependencies, as they are what starts it.
//! * **Progress is reported.** A build's output lines and the dependency waits go to the
//!   [`progress::DockerObserver`] given with [`DockerOrchestrator::with_observer`], as they
//!   happen inside one port call.
//! * **Labels are the state.** Instances are found by label, never by parsing names, so an
//!   instance renamed or started by an earlier run is still found, and nothing outside the
//!   project is ever touched.
//! * **API version.** bollard asks for a newer API than Docker 20.10 speaks; [`connect`]
//!   negotiates the version down, and only API 1.41 features are used (for example one
//!   network endpoint at create time, further networks connected before start). An engine
//!   older than [`MIN_API_VERSION`] is refused when connecting, by name, rather than failing
//!   later on a call it does not know; [`api_versions`] gives the range for `--version`.
//! * **Contexts.** [`context`] resolves the endpoint from Docker contexts as the docker CLI
//!   does (`--context`, `DOCKER_CONTEXT`, the current context of `config.json`), with
//!   `DOCKER_HOST` and an explicit host taking precedence as there.
//!
//! # Names and labels
//!
//! Instances of a target are named `<project>-<target>-<color>-<n>` in blue-green mode and
//! `<project>-<target>-<n>` otherwise; side targets `<project>-<side>-1` (or their
//! `container_name`). Every container carries the Compose labels
//! `com.docker.compose.project`, `com.docker.compose.service` (`<target>-<color>` in
//! blue-green mode, `<target>` otherwise) and `com.docker.compose.container-number`, and
//! docker-flow's own:
//!
//! | label | value |
//! |---|---|
//! | [`LABEL_SERVICE`] `io.docker-flow.service` | the service name `S` (`<project>-<target>` unless overridden) |
//! | [`LABEL_TARGET`] `io.docker-flow.target` | the Compose service released |
//! | [`LABEL_COLOR`] `io.docker-flow.color` | `blue` / `green` (blue-green mode only) |
//! | [`LABEL_NUMBER`] `io.docker-flow.number` | the instance number, from 1 |
//! | [`LABEL_SIDE_TARGET`] `io.docker-flow.side-target` | the side target's name (side targets only) |
//! | [`LABEL_IMAGE`] `io.docker-flow.image` | the image reference the instance was released as |
//! | [`LABEL_SPEC`] `io.docker-flow.spec` | the JSON of the [`ReleaseSpec`] it was started from |
//!
//! # Release specs
//!
//! A target's spec is its Compose service after interpolation, serialized key by key
//! ([`ServiceSpec`] without its image), with the image's content id. Instances are started
//! from a spec, never from the Compose file directly: by the image reference while it still
//! names the spec's image id, by the id itself once the tag has moved, so a scale or a
//! rollback runs exactly what the release ran. Each instance carries its spec in a label, which
//! is how [`Orchestrator::recover_spec`] reads it back; an instance without that label (started
//! by Docker Flow 1.x) yields its image id and the Compose file's configuration as it is now.
//!
//! Instances also get `SERVICE_NAME=<S>-<color>` (or `<S>`) in their environment, as Docker
//! Flow 1.x set it for registrators. Networks and volumes created for a project carry
//! `com.docker.compose.project` too.
//!
//! # Health
//!
//! [`Orchestrator::health`] answers, in this order: an exited container is `Exited`; with a
//! `health_path` option, an HTTP GET of `http://<ip>:<port><path>` decides (2xx is healthy —
//! the flag is explicit, so it wins over an image's HEALTHCHECK); with a Docker healthcheck,
//! Docker's status is mapped; otherwise the container is healthy once it has run for the
//! grace period.

#![deny(missing_docs)]

pub mod build;
pub mod compose;
pub mod context;
mod dependencies;
pub mod progress;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointIpamConfig, EndpointSettings,
    HealthConfig, HealthStatusEnum, HostConfig, Ipam, IpamConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, CreateImageOptions, InspectContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use flow_core::{
    Diagnosis, Group, Health, Instance, Orchestrator, OrchestratorError, RecoveredSpec,
    ReleaseSpec, ServiceName, TargetInfo,
};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use compose::{ComposeProject, HealthcheckSpec, ServiceSpec, VolumeSource};
use progress::{DockerEvent, DockerObserver};

/// The endpoint of `service` on its Compose network `network`: the release's `alias` and the
/// service's own `aliases`, and its fixed addresses if it sets any.
fn endpoint(service: &ServiceSpec, network: &str, alias: &str) -> EndpointSettings {
    let attachment = service.network_settings.get(network);
    let mut aliases = vec![alias.to_string()];
    aliases.extend(attachment.iter().flat_map(|a| a.aliases.iter().cloned()));
    let addresses = attachment.filter(|a| a.ipv4_address.is_some() || a.ipv6_address.is_some());
    EndpointSettings {
        aliases: Some(aliases),
        ipam_config: addresses.map(|a| EndpointIpamConfig {
            ipv4_address: a.ipv4_address.clone(),
            ipv6_address: a.ipv6_address.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Compose's project label.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
/// Compose's service label.
pub const LABEL_COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Compose's container-number label.
pub const LABEL_CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
/// The docker-flow service name `S` of an instance.
pub const LABEL_SERVICE: &str = "io.docker-flow.service";
/// The Compose service (target) an instance runs.
pub const LABEL_TARGET: &str = "io.docker-flow.target";
/// The colour of an instance in blue-green mode.
pub const LABEL_COLOR: &str = "io.docker-flow.color";
/// The instance number within its group.
pub const LABEL_NUMBER: &str = "io.docker-flow.number";
/// Marks a side target's container, with the side target's name.
pub const LABEL_SIDE_TARGET: &str = "io.docker-flow.side-target";
/// The image reference an instance was released as (it may be created from the image id).
pub const LABEL_IMAGE: &str = "io.docker-flow.image";
/// The JSON of the [`ReleaseSpec`] an instance was started from.
pub const LABEL_SPEC: &str = "io.docker-flow.spec";

/// How many containers [`Orchestrator::start`] creates and starts at once. Enough to hide
/// the engine's per-call latency; more only queues inside the engine.
pub const START_CONCURRENCY: usize = 16;

/// How many of a build's last output lines its error repeats.
const BUILD_ERROR_LINES: usize = 10;

/// How many log lines [`Orchestrator::diagnose`] returns.
const LOG_TAIL_LINES: &str = "20";

/// The socket the engine listens on when neither `--host` nor `DOCKER_HOST` say otherwise.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds bollard waits for one engine answer.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// The oldest Docker Engine API docker-flow speaks (Docker 20.10): major, minor.
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

/// The Engine API versions docker-flow works with: from [`MIN_API_VERSION`] to the one it
/// asks for first, which [`connect`] negotiates down to what the engine speaks.
pub fn api_versions() -> String {
    let newest = bollard::API_DEFAULT_VERSION;
    format!(
        "{}.{} to {}.{}",
        MIN_API_VERSION.0, MIN_API_VERSION.1, newest.major_version, newest.minor_version
    )
}

/// Where and how to reach the engine: `--host`, `--cert-path` and `DOCKER_TLS_VERIFY`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectSettings {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; `None` is the local socket.
    pub host: Option<String>,
    /// The directory with `ca.pem`, `cert.pem` and `key.pem` for TLS (default `~/.docker`).
    pub cert_path: Option<PathBuf>,
    /// Whether to speak TLS to a `tcp://` host and verify it.
    pub tls_verify: bool,
}

impl ConnectSettings {
    /// The settings Docker's own tools read: `DOCKER_HOST`, `DOCKER_CERT_PATH`,
    /// `DOCKER_TLS_VERIFY` (any value but empty or `0` turns it on).
    pub fn from_env() -> Self {
        ConnectSettings {
            host: std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
            cert_path: std::env::var_os("DOCKER_CERT_PATH").map(PathBuf::from),
            tls_verify: std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0"),
        }
    }

    /// The endpoint these settings point at, as shown in messages.
    pub fn endpoint(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| DEFAULT_HOST.to_string())
    }
}

/// Connects to the engine and negotiates the API version. Fails with
/// [`OrchestratorError::Unreachable`] naming the endpoint when nothing answers there.
///
/// TLS (`tls_verify` with a `tcp://` or `https://` host) uses rustls through bollard's `ssl`
/// feature, with the client certificate and CA from `cert_path`.
pub async fn connect(settings: &ConnectSettings) -> Result<Docker, OrchestratorError> {
    let endpoint = settings.endpoint();
    let unreachable =
        |source: Box<dyn std::error::Error + Send + Sync>| OrchestratorError::Unreachable {
            endpoint: endpoint.clone(),
            source,
        };
    let version = bollard::API_DEFAULT_VERSION;
    let client = if endpoint.starts_with("unix://") {
        Docker::connect_with_unix(&endpoint, REQUEST_TIMEOUT_SECS, version)
    } else if endpoint.starts_with("https://")
        || (settings.tls_verify && endpoint.starts_with("tcp://"))
    {
        let cert_dir = settings.cert_path.clone().unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker")
        });
        Docker::connect_with_ssl(
            &endpoint,
            &cert_dir.join("key.pem"),
            &cert_dir.join("cert.pem"),
            &cert_dir.join("ca.pem"),
            REQUEST_TIMEOUT_SECS,
            version,
        )
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(&endpoint, REQUEST_TIMEOUT_SECS, version)
    } else {
        return Err(unreachable(
            format!("unsupported address {endpoint:?}: use unix:///path, tcp://host:port or http://host:port").into(),
        ));
    };
    let client = client.map_err(|error| unreachable(Box::new(error)))?;
    let client = client
        .negotiate_version()
        .await
        .map_err(|error| unreachable(Box::new(error)))?;
    let spoken = client.client_version();
    if (spoken.major_version, spoken.minor_version) < MIN_API_VERSION {
        return Err(unreachable(
            format!(
                "the engine speaks Docker API {}.{}; docker-flow needs {}.{} (Docker 20.10) or newer: upgrade the engine",
                spoken.major_version, spoken.minor_version, MIN_API_VERSION.0, MIN_API_VERSION.1
            )
            .into(),
        ));
    }
    Ok(client)
}

/// When to pull a target's image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull before every release.
    Always,
    /// Pull only when the image is not present locally (the default).
    #[default]
    Missing,
    /// Never pull: an image that is not present is an error.
    Never,
}

/// When to build a service that has a `build:` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuildPolicy {
    /// Build before every release (`--build`).
    Always,
    /// Build only when the image is not present locally (the default, as `docker compose up`).
    #[default]
    Missing,
    /// Never build (`--no-build`): an image that is not present is an error.
    Never,
}

/// A `--pull` value that is not `always`, `missing` or `never`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a pull policy: use always, missing or never")]
pub struct InvalidPullPolicy {
    /// The rejected text.
    pub value: String,
}

impl FromStr for PullPolicy {
    type Err = InvalidPullPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            _ => Err(InvalidPullPolicy {
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "always",
            PullPolicy::Missing => "missing",
            PullPolicy::Never => "never",
        })
    }
}

/// How [`DockerOrchestrator`] runs a project's targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerOptions {
    /// The Compose project name (container, network and volume name prefix).
    pub project: String,
    /// The service name `S` of the target; `None` is `<project>-<target>`.
    pub service_name: Option<ServiceName>,
    /// When to pull the target's image.
    pub pull: PullPolicy,
    /// Also pull side targets' images before creating them (`--pull-side-targets`); without
    /// it a side target's image is pulled only when it is missing (never with
    /// [`PullPolicy::Never`]). A running side target is never recreated either way.
    pub pull_side_targets: bool,
    /// A path to GET on each instance to decide its health, instead of Docker's healthcheck.
    pub health_path: Option<String>,
    /// The container port the service answers on; `None` takes the target's only exposed
    /// or published port.
    pub port: Option<u16>,
    /// How long an instance without a health check must run to count as healthy.
    pub grace_period: Duration,
    /// How long a stop waits for the container to exit before killing it.
    pub stop_timeout: Duration,
    /// The IP a proxy on another machine reaches instances at (`--advertise-addr`). When set,
    /// an instance's address is this IP and the host port its service port is published on
    /// (`ports: ["8080"]` publishes to a random host port, so both colours can run at once);
    /// when unset, it is the container's IP on the project network and the service port.
    pub advertise_addr: Option<IpAddr>,
    /// When to build services that have a `build:` section.
    pub build: BuildPolicy,
    /// How long a service waits for one `depends_on` condition before its start fails
    /// (`--health-timeout`).
    pub dependency_timeout: Duration,
}

impl DockerOptions {
    /// Options for `project` with the defaults: pull `missing`, no health path, a 2 s grace
    /// period, a 10 s stop timeout and 60 s for a dependency's condition.
    pub fn new(project: impl Into<String>) -> Self {
        DockerOptions {
            project: project.into(),
            service_name: None,
            pull: PullPolicy::Missing,
            pull_side_targets: false,
            health_path: None,
            port: None,
            grace_period: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(10),
            advertise_addr: None,
            build: BuildPolicy::Missing,
            dependency_timeout: Duration::from_secs(60),
        }
    }
}

/// The [`Orchestrator`] on a Docker engine, for the services of one Compose project.
#[derive(Clone)]
pub struct DockerOrchestrator {
    docker: Docker,
    endpoint: String,
    compose: Arc<ComposeProject>,
    options: DockerOptions,
    observer: Option<Arc<dyn DockerObserver>>,
}

impl fmt::Debug for DockerOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerOrchestrator")
            .field("endpoint", &self.endpoint)
            .field("compose", &self.compose.path)
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Display for DockerOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Docker engine at {} (project {})",
            self.endpoint, self.options.project
        )
    }
}

impl DockerOrchestrator {
    /// An orchestrator on an already connected client (see [`connect`]); `endpoint` is what
    /// messages name.
    pub fn new(
        docker: Docker,
        endpoint: impl Into<String>,
        compose: Arc<ComposeProject>,
        options: DockerOptions,
    ) -> Self {
        DockerOrchestrator {
            docker,
            endpoint: endpoint.into(),
            compose,
            options,
            observer: None,
        }
    }

    /// Reports builds and dependency waits to `observer` as they happen (see [`progress`]).
    pub fn with_observer(mut self, observer: Arc<dyn DockerObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn report(&self, event: DockerEvent) {
        if let Some(observer) = &self.observer {
            observer.on_docker_event(&event);
        }
    }

    /// Connects with `settings` (see [`connect`]) and builds the orchestrator.
    pub async fn connect(
        settings: &ConnectSettings,
        compose: Arc<ComposeProject>,
        options: DockerOptions,
    ) -> Result<Self, OrchestratorError> {
        let docker = connect(settings).await?;
        Ok(Self::new(docker, settings.endpoint(), compose, options))
    }

    /// The Compose project it runs.
    pub fn compose(&self) -> &ComposeProject {
        &self.compose
    }

    /// Its options.
    pub fn options(&self) -> &DockerOptions {
        &self.options
    }

    /// The service name `S` of `target`: the override, else `<project>-<target>`.
    pub fn service_name(&self, target: &str) -> String {
        match &self.options.service_name {
            Some(name) => name.to_string(),
            None => format!("{}-{}", self.options.project, target),
        }
    }

    /// The container name of instance `number` of `group`.
    pub fn container_name(&self, group: &Group, number: u32) -> String {
        format!("{}-{}-{}", self.options.project, group, number)
    }

    /// The engine name of the Compose network `network`.
    fn network_name(&self, network: &str) -> String {
        self.compose.network_name(&self.options.project, network)
    }

    /// The engine name of the Compose named volume `volume`.
    fn volume_name(&self, volume: &str) -> String {
        self.compose.volume_name(&self.options.project, volume)
    }

    /// The configuration part of a spec: `service` key by key, without its image.
    fn config_of(service: &ServiceSpec) -> BTreeMap<String, serde_json::Value> {
        let serde_json::Value::Object(mut fields) =
            serde_json::to_value(service).expect("a Compose service serializes")
        else {
            unreachable!("a struct serializes to an object")
        };
        fields.remove("image");
        fields.into_iter().collect()
    }

    /// The Compose service a spec describes, with its image reference.
    fn service_of(spec: &ReleaseSpec) -> Result<ServiceSpec, OrchestratorError> {
        let mut fields: serde_json::Map<String, serde_json::Value> =
            spec.config.clone().into_iter().collect();
        fields.insert("image".into(), spec.image.clone().into());
        serde_json::from_value(serde_json::Value::Object(fields)).map_err(|error| {
            OrchestratorError::Engine {
                operation: format!("start from the release spec {}", spec.digest),
                message: format!("the spec is not a configuration this version can start: {error}; deploy again to store a new one"),
            }
        })
    }

    /// The content id of a local image, `None` when it is absent.
    async fn image_id(&self, image: &str) -> Result<Option<String>, OrchestratorError> {
        match self.docker.inspect_image(image).await {
            Ok(inspected) => Ok(inspected.id),
            Err(error) if status_of(&error) == Some(404) => Ok(None),
            Err(error) => Err(self.engine_error(format!("inspect image {image}"), error)),
        }
    }

    fn project_labels(&self) -> HashMap<String, String> {
        HashMap::from([(LABEL_PROJECT.to_string(), self.options.project.clone())])
    }

    /// Makes sure the service's image is present: built according to the build policy when it
    /// has a `build:` section, else pulled according to `pull`.
    async fn provide_image(
        &self,
        name: &str,
        service: &ServiceSpec,
        pull: PullPolicy,
    ) -> Result<(), OrchestratorError> {
        let Some(build) = &service.build else {
            return self.ensure_image(&service.image, pull).await;
        };
        match self.options.build {
            BuildPolicy::Always => self.build(name, &service.image, build).await,
            BuildPolicy::Missing if self.image_id(&service.image).await?.is_none() => {
                self.build(name, &service.image, build).await
            }
            BuildPolicy::Missing => Ok(()),
            BuildPolicy::Never => match self.image_id(&service.image).await? {
                Some(_) => Ok(()),
                None => Err(OrchestratorError::Image {
                    image: service.image.clone(),
                    message: format!("service {name:?} is built, the image is not present and --no-build forbids building it; build it or drop --no-build"),
                }),
            },
        }
    }

    /// Builds `image` from `build` through the engine (a tar of the context). A failed build
    /// creates nothing; its error carries the build's last output lines.
    async fn build(
        &self,
        name: &str,
        image: &str,
        build: &compose::BuildSpec,
    ) -> Result<(), OrchestratorError> {
        let failed = |message: String| OrchestratorError::Image {
            image: image.to_string(),
            message,
        };
        let dockerfile = build
            .dockerfile
            .clone()
            .unwrap_or_else(|| "Dockerfile".into());
        let context = PathBuf::from(&build.context);
        let tar = {
            let dockerfile = dockerfile.clone();
            tokio::task::spawn_blocking(move || build::context_tar(&context, &dockerfile))
                .await
                .map_err(|error| failed(format!("preparing the build context failed: {error}")))?
                .map_err(|error| failed(format!("service {name:?}: {error}")))?
        };
        let options = BuildImageOptions {
            dockerfile,
            t: Some(image.to_string()),
            buildargs: Some(build.args.clone().into_iter().collect()),
            labels: Some(build.labels.clone().into_iter().collect()),
            target: build.target.clone().unwrap_or_default(),
            rm: true,
            forcerm: true,
            ..Default::default()
        };
        tracing::info!(service = name, image, "building");
        // The last lines, for the error: a live display shows only the newest line.
        let mut output: std::collections::VecDeque<String> = Default::default();
        let mut progress =
            self.docker
                .build_image(options, None, Some(bollard::body_full(tar.into())));
        while let Some(step) = progress.next().await {
            let info = match step {
                Ok(info) => info,
                // bollard turns the engine's `errorDetail` into this error.
                Err(DockerError::DockerStreamError { error }) => {
                    return Err(failed(build_failure(name, &error, &output)))
                }
                Err(error) => return Err(failed(build_failure(name, &error.to_string(), &output))),
            };
            let text = info.stream.unwrap_or_default();
            for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                tracing::info!(service = name, "{line}");
                if output.len() == BUILD_ERROR_LINES {
                    output.pop_front();
                }
                output.push_back(line.to_string());
                self.report(DockerEvent::BuildOutput {
                    service: name.to_string(),
                    line: line.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Makes sure the image is present according to the pull policy.
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), OrchestratorError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(error) if status_of(&error) == Some(404) => false,
            Err(error) => return Err(self.engine_error(format!("inspect image {image}"), error)),
        };
        match (policy, present) {
            (PullPolicy::Missing, true) | (PullPolicy::Never, true) => Ok(()),
            (PullPolicy::Never, false) => Err(OrchestratorError::Image {
                image: image.to_string(),
                message: "it is not present locally and the pull policy is `never`; build or load it first, or use --pull missing".into(),
            }),
            (PullPolicy::Always, _) | (PullPolicy::Missing, false) => self.pull(image).await,
        }
    }

    async fn pull(&self, image: &str) -> Result<(), OrchestratorError> {
        let (repository, tag) = split_image_reference(image);
        let options = CreateImageOptions {
            from_image: Some(repository),
            tag,
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            let failure = match step {
                Ok(info) => info.error_detail.and_then(|d| d.message),
                Err(error) => Some(error.to_string()),
            };
            if let Some(message) = failure {
                return Err(OrchestratorError::Image {
                    image: image.to_string(),
                    message: format!("pulling it failed: {message}"),
                });
            }
        }
        Ok(())
    }

    /// Creates the service's networks and named volumes that do not exist yet.
    async fn ensure_resources(&self, service: &ServiceSpec) -> Result<(), OrchestratorError> {
        for network in &service.networks {
            self.ensure_network(network).await?;
        }
        for mount in &service.volumes {
            if let VolumeSource::Named(volume) = &mount.source {
                self.ensure_volume(volume).await?;
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, network: &str) -> Result<(), OrchestratorError> {
        let name = self.network_name(network);
        match self.docker.inspect_network(&name, None).await {
            Ok(_) => return Ok(()),
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => return Err(self.engine_error(format!("inspect network {name}"), error)),
        }
        if self
            .compose
            .networks
            .get(network)
            .is_some_and(|n| n.external)
        {
            return Err(OrchestratorError::Engine {
                operation: format!("use network {name}"),
                message: "it is declared `external` but does not exist; create it first".into(),
            });
        }
        let declared = self
            .compose
            .networks
            .get(network)
            .cloned()
            .unwrap_or_default();
        let mut labels: HashMap<String, String> = declared.labels.clone().into_iter().collect();
        labels.extend(self.project_labels());
        labels.insert("com.docker.compose.network".into(), network.to_string());
        let ipam = declared.ipam.as_ref().map(|ipam| Ipam {
            driver: ipam.driver.clone(),
            config: Some(
                ipam.config
                    .iter()
                    .map(|pool| IpamConfig {
                        subnet: pool.subnet.clone(),
                        ip_range: pool.ip_range.clone(),
                        gateway: pool.gateway.clone(),
                        auxiliary_addresses: (!pool.aux_addresses.is_empty())
                            .then(|| pool.aux_addresses.clone().into_iter().collect()),
                    })
                    .collect(),
            ),
            options: (!ipam.options.is_empty()).then(|| ipam.options.clone().into_iter().collect()),
        });
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some(declared.driver.clone().unwrap_or_else(|| "bridge".into())),
            options: (!declared.driver_opts.is_empty())
                .then(|| declared.driver_opts.clone().into_iter().collect()),
            internal: declared.internal.then_some(true),
            attachable: declared.attachable.then_some(true),
            ipam,
            labels: Some(labels),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Another release created it meanwhile.
            Err(error) if status_of(&error) == Some(409) => Ok(()),
            Err(error) => Err(self.engine_error(format!("create network {name}"), error)),
        }
    }

    async fn ensure_volume(&self, volume: &str) -> Result<(), OrchestratorError> {
        let name = self.volume_name(volume);
        match self.docker.inspect_volume(&name).await {
            Ok(_) => return Ok(()),
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => return Err(self.engine_error(format!("inspect volume {name}"), error)),
        }
        let declared = self
            .compose
            .volumes
            .get(volume)
            .cloned()
            .unwrap_or_default();
        let mut labels: HashMap<String, String> = declared.labels.clone().into_iter().collect();
        labels.extend(self.project_labels());
        labels.insert("com.docker.compose.volume".into(), volume.to_string());
        let request = VolumeCreateRequest {
            name: Some(name.clone()),
            driver: declared.driver.clone(),
            driver_opts: (!declared.driver_opts.is_empty())
                .then(|| declared.driver_opts.clone().into_iter().collect()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|error| self.engine_error(format!("create volume {name}"), error))
    }

    /// The engine's container configuration for `service`.
    fn container_body(
        &self,
        service: &ServiceSpec,
        labels: HashMap<String, String>,
        service_name_env: &str,
        alias: &str,
    ) -> ContainerCreateBody {
        let mut env: Vec<String> = service
            .environment
            .iter()
            .filter(|(key, _)| key.as_str() != "SERVICE_NAME")
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        env.push(format!("SERVICE_NAME={service_name_env}"));
        let mut all_labels: HashMap<String, String> = service
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all_labels.extend(labels);
        let exposed: Vec<String> = service
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.protocol))
            .chain(service.expose.iter().map(|p| format!("{p}/tcp")))
            .collect();
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for port in &service.ports {
            if port.host_port.is_none() && port.host_ip.is_none() {
                // `ports: ["8080"]` publishes on a port the engine picks.
                port_bindings
                    .entry(format!("{}/{}", port.container_port, port.protocol))
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: None,
                        host_port: Some(String::new()),
                    });
                continue;
            }
            port_bindings
                .entry(format!("{}/{}", port.container_port, port.protocol))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: port.host_ip.clone(),
                    host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
                });
        }
        let binds: Vec<String> = service
            .volumes
            .iter()
            .filter_map(|mount| {
                let source = match &mount.source {
                    VolumeSource::Bind(path) => path.display().to_string(),
                    VolumeSource::Named(name) => self.volume_name(name),
                    VolumeSource::Anonymous | VolumeSource::Tmpfs(_) => return None,
                };
                let mode = if mount.read_only { ":ro" } else { "" };
                Some(format!("{source}:{}{mode}", mount.target))
            })
            .collect();
        let anonymous_volumes: Vec<String> = service
            .volumes
            .iter()
            .filter(|m| m.source == VolumeSource::Anonymous)
            .map(|m| m.target.clone())
            .collect();
        let tmpfs: HashMap<String, String> = service
            .volumes
            .iter()
            .filter_map(|mount| match &mount.source {
                VolumeSource::Tmpfs(options) => Some((mount.target.clone(), options.clone())),
                _ => None,
            })
            .collect();
        let primary = service
            .networks
            .first()
            .map(String::as_str)
            .unwrap_or("default");
        let primary_network = self.network_name(primary);
        let healthcheck = service.healthcheck.as_ref().map(|check| match check {
            HealthcheckSpec::Disabled => HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            },
            HealthcheckSpec::Check {
                test,
                interval,
                timeout,
                retries,
                start_period,
                start_interval,
            } => HealthConfig {
                test: test.clone(),
                interval: interval.map(nanos),
                timeout: timeout.map(nanos),
                retries: retries.map(i64::from),
                start_period: start_period.map(nanos),
                start_interval: start_interval.map(nanos),
            },
        });
        ContainerCreateBody {
            image: Some(service.image.clone()),
            cmd: service.command.clone(),
            entrypoint: service.entrypoint.clone(),
            env: Some(env),
            labels: Some(all_labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            volumes: (!anonymous_volumes.is_empty()).then_some(anonymous_volumes),
            healthcheck,
            host_config: Some(HostConfig {
                binds: (!binds.is_empty()).then_some(binds),
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                restart_policy: service.restart.as_deref().map(restart_policy),
                tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
                network_mode: Some(primary_network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    primary_network,
                    endpoint(service, primary, alias),
                )])),
            }),
            ..Default::default()
        }
    }

    /// Creates `name` from `body`, joins the service's further networks and starts it.
    /// Returns the id, or the id (if it was created) with the error.
    async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
        service: &ServiceSpec,
        alias: &str,
    ) -> Result<String, (Option<String>, OrchestratorError)> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|error| (None, instance_error("create", name, error)))?;
        let id = created.id;
        // API 1.41 accepts one endpoint at create time; the others are joined before start.
        for network in service.networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(endpoint(service, network, alias)),
            };
            if let Err(error) = self
                .docker
                .connect_network(&self.network_name(network), request)
                .await
            {
                return Err((Some(id), instance_error("connect network of", name, error)));
            }
        }
        if let Err(error) = self
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            return Err((Some(id), instance_error("start", name, error)));
        }
        Ok(id)
    }

    async fn inspect(
        &self,
        id: &str,
        name: &str,
    ) -> Result<ContainerInspectResponse, OrchestratorError> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|error| instance_error("inspect", name, error))
    }

    /// Builds the [`Instance`] of an inspected container of `group`.
    fn instance_of(&self, group: &Group, inspected: &ContainerInspectResponse) -> Instance {
        let config = inspected.config.as_ref();
        let labels = config.and_then(|c| c.labels.as_ref());
        let number = labels
            .and_then(|l| l.get(LABEL_NUMBER))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let running = inspected
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false);
        let address = if running {
            self.address_of(&group.target, inspected)
        } else {
            None
        };
        Instance {
            id: inspected.id.clone().unwrap_or_default(),
            name: inspected
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            group: group.clone(),
            number,
            running,
            address,
            image: labels
                .and_then(|l| l.get(LABEL_IMAGE).cloned())
                .or_else(|| config.and_then(|c| c.image.clone()))
                .unwrap_or_default(),
        }
    }

    /// Where an instance is reached: the container's IP on the target's first network and the
    /// service port, or, with an advertised address, that address and the service port's
    /// published host port.
    fn address_of(&self, target: &str, inspected: &ContainerInspectResponse) -> Option<SocketAddr> {
        let port = self.service_port(inspected)?;
        if let Some(advertised) = self.options.advertise_addr {
            let published = inspected
                .network_settings
                .as_ref()?
                .ports
                .as_ref()?
                .get(&format!("{port}/tcp"))?
                .as_ref()?
                .iter()
                .find_map(|binding| binding.host_port.as_deref()?.parse::<u16>().ok())?;
            return Some(SocketAddr::new(advertised, published));
        }
        let service = self.compose.services.get(target)?;
        let network = self.network_name(service.networks.first()?);
        let ip: IpAddr = inspected
            .network_settings
            .as_ref()?
            .networks
            .as_ref()?
            .get(&network)?
            .ip_address
            .as_deref()?
            .parse()
            .ok()?;
        Some(SocketAddr::new(ip, port))
    }

    /// The container port the service answers on: `--port`, else the only TCP port the
    /// container exposes.
    fn service_port(&self, inspected: &ContainerInspectResponse) -> Option<u16> {
        match self.options.port {
            Some(port) => Some(port),
            None => {
                // The container's exposed ports include the image's EXPOSE and Compose's
                // `ports`/`expose`; the service port is the only TCP one.
                let exposed = inspected.config.as_ref()?.exposed_ports.as_ref()?;
                let mut tcp = exposed
                    .iter()
                    .filter_map(|p| p.strip_suffix("/tcp").and_then(|n| n.parse::<u16>().ok()));
                let first = tcp.next()?;
                if tcp.next().is_some() {
                    return None;
                }
                Some(first)
            }
        }
    }

    fn engine_error(&self, operation: String, error: DockerError) -> OrchestratorError {
        match error {
            DockerError::DockerResponseServerError { message, .. } => {
                OrchestratorError::Engine { operation, message }
            }
            other => OrchestratorError::Unreachable {
                endpoint: self.endpoint.clone(),
                source: Box::new(other),
            },
        }
    }

    /// The project's containers, running or not, that carry every one of `labels`
    /// (`key=value`); `of` names them in an error.
    async fn project_containers(
        &self,
        labels: &[String],
        of: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, OrchestratorError> {
        let mut filter = vec![format!("{LABEL_PROJECT}={}", self.options.project)];
        filter.extend(labels.iter().cloned());
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), filter)])),
                ..Default::default()
            }))
            .await
            .map_err(|error| self.engine_error(format!("list containers of {of}"), error))
    }

    /// The last [`LOG_TAIL_LINES`] lines of a container's log (stdout and stderr).
    async fn log_tail(&self, id: &str, name: &str) -> Result<String, OrchestratorError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: LOG_TAIL_LINES.to_string(),
            ..Default::default()
        };
        let chunks: Vec<_> = self
            .docker
            .logs(id, Some(options))
            .try_collect()
            .await
            .map_err(|error| instance_error("read logs of", name, error))?;
        Ok(chunks.iter().map(ToString::to_string).collect())
    }

    /// Removes containers by id, force, ignoring those already gone.
    async fn force_remove(&self, ids: &[(String, String)]) -> Result<(), OrchestratorError> {
        let removals = ids.iter().map(|(id, name)| async move {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            match self.docker.remove_container(id, Some(options)).await {
                Ok(()) => Ok(()),
                // Gone already, or its removal is already in progress.
                Err(error) if matches!(status_of(&error), Some(404 | 409)) => Ok(()),
                Err(error) => Err(instance_error("remove", name, error)),
            }
        });
        futures::stream::iter(removals.collect::<Vec<_>>())
            .buffer_unordered(START_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// How a side target's image is pulled: see [`DockerOptions::pull_side_targets`].
    fn side_target_pull_policy(&self) -> PullPolicy {
        match (self.options.pull, self.options.pull_side_targets) {
            (PullPolicy::Never, _) => PullPolicy::Never,
            (_, true) => PullPolicy::Always,
            (_, false) => PullPolicy::Missing,
        }
    }

    /// Starts one side target if it is absent or stopped, once its own dependencies are
    /// ready.
    async fn ensure_side_target(&self, side: &str) -> Result<(), OrchestratorError> {
        let service = self.compose.service(side)?;
        let name = service
            .container_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}-1", self.options.project, side));
        match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => {
                let running = inspected.state.and_then(|s| s.running).unwrap_or(false);
                if running {
                    return Ok(());
                }
                self.await_dependencies(side).await?;
                return self
                    .docker
                    .start_container(&name, None::<StartContainerOptions>)
                    .await
                    .map_err(|error| instance_error("start", &name, error));
            }
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => return Err(instance_error("inspect", &name, error)),
        }
        self.provide_image(side, service, self.side_target_pull_policy())
            .await?;
        self.ensure_resources(service).await?;
        self.await_dependencies(side).await?;
        let mut labels = self.project_labels();
        labels.insert(LABEL_COMPOSE_SERVICE.into(), side.to_string());
        labels.insert(LABEL_CONTAINER_NUMBER.into(), "1".into());
        labels.insert(LABEL_SIDE_TARGET.into(), side.to_string());
        let service_name = format!("{}-{}", self.options.project, side);
        let body = self.container_body(service, labels, &service_name, side);
        match self.create_and_start(&name, body, service, side).await {
            Ok(_) => Ok(()),
            Err((created, error)) => {
                if let Some(id) = created {
                    self.force_remove(&[(id, name.clone())]).await?;
                }
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Orchestrator for DockerOrchestrator {
    async fn describe(&self, target: &str) -> Result<TargetInfo, OrchestratorError> {
        let service = self.compose.service(target)?;
        Ok(TargetInfo {
            image: service.image.clone(),
            config: Self::config_of(service),
        })
    }

    async fn prepare(&self, target: &str) -> Result<ReleaseSpec, OrchestratorError> {
        let service = self.compose.service(target)?;
        self.provide_image(target, service, self.options.pull)
            .await?;
        self.ensure_resources(service).await?;
        let image_id =
            self.image_id(&service.image)
                .await?
                .ok_or_else(|| OrchestratorError::Image {
                    image: service.image.clone(),
                    message: "it was removed right after it was made present; run again".into(),
                })?;
        Ok(ReleaseSpec::new(
            service.image.clone(),
            image_id,
            Self::config_of(service),
        ))
    }

    async fn start_side_targets(&self, side_targets: &[String]) -> Result<(), OrchestratorError> {
        // Every name and the dependencies between them are checked before anything starts.
        for side in side_targets {
            self.compose.service(side)?;
        }
        for side in self.dependency_order(side_targets)? {
            self.ensure_side_target(&side).await?;
        }
        Ok(())
    }

    async fn list(&self, group: &Group) -> Result<Vec<Instance>, OrchestratorError> {
        let summaries = self
            .project_containers(
                &[
                    format!("{LABEL_COMPOSE_SERVICE}={group}"),
                    format!("{LABEL_TARGET}={}", group.target),
                ],
                &group.to_string(),
            )
            .await?;
        let inspections = summaries
            .into_iter()
            .filter_map(|s| s.id)
            .map(|id| async move {
                match self.inspect(&id, &id).await {
                    Ok(inspected) => Ok(Some(self.instance_of(group, &inspected))),
                    // Removed between the list and the inspect: not an instance any more.
                    Err(OrchestratorError::Instance { message, .. })
                        if message.contains("No such container") =>
                    {
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            });
        let mut instances: Vec<Instance> = futures::stream::iter(inspections.collect::<Vec<_>>())
            .buffer_unordered(START_CONCURRENCY)
            .try_filter_map(|instance| async move { Ok(instance) })
            .try_collect()
            .await?;
        instances.sort_by_key(|instance| instance.number);
        Ok(instances)
    }

    async fn start(
        &self,
        group: &Group,
        numbers: &[u32],
        spec: &ReleaseSpec,
    ) -> Result<Vec<Instance>, OrchestratorError> {
        self.compose.service(&group.target)?;
        let mut service = Self::service_of(spec)?;
        self.await_dependencies(&group.target).await?;
        // The reference while it still names the spec's image (so the engine shows the tag),
        // the id once the tag has moved on: what runs is the spec's image either way.
        let image = match self.image_id(&spec.image).await? {
            Some(id) if id == spec.image_id => spec.image.clone(),
            _ => spec.image_id.clone(),
        };
        self.ensure_resources(&service).await?;
        service.image = image;
        let service = &service;
        let spec_label = serde_json::to_string(spec).expect("a spec serializes");
        let service_name = self.service_name(&group.target);
        let instance_service_name = match group.color {
            Some(color) => format!("{service_name}-{color}"),
            None => service_name.clone(),
        };
        let alias = group.to_string();
        let attempts = numbers.iter().map(|&number| {
            let name = self.container_name(group, number);
            let mut labels = self.project_labels();
            labels.insert(LABEL_COMPOSE_SERVICE.into(), group.to_string());
            labels.insert(LABEL_CONTAINER_NUMBER.into(), number.to_string());
            labels.insert(LABEL_SERVICE.into(), service_name.clone());
            labels.insert(LABEL_TARGET.into(), group.target.clone());
            labels.insert(LABEL_NUMBER.into(), number.to_string());
            if let Some(color) = group.color {
                labels.insert(LABEL_COLOR.into(), color.to_string());
            }
            labels.insert(LABEL_IMAGE.into(), spec.image.clone());
            labels.insert(LABEL_SPEC.into(), spec_label.clone());
            let body = self.container_body(service, labels, &instance_service_name, &alias);
            let alias = alias.clone();
            async move {
                // Inspecting in the same task overlaps it with the other creates.
                let outcome = match self.create_and_start(&name, body, service, &alias).await {
                    Ok(id) => match self.inspect(&id, &name).await {
                        Ok(inspected) => Ok(self.instance_of(group, &inspected)),
                        Err(error) => Err((Some(id), error)),
                    },
                    Err(failure) => Err(failure),
                };
                (number, name, outcome)
            }
        });
        let outcomes: Vec<_> = futures::stream::iter(attempts.collect::<Vec<_>>())
            .buffer_unordered(START_CONCURRENCY)
            .collect()
            .await;
        let mut instances = Vec::new();
        let mut created = Vec::new();
        let mut failures = Vec::new();
        for (number, name, outcome) in outcomes {
            match outcome {
                Ok(instance) => {
                    created.push((instance.id.clone(), name));
                    instances.push(instance);
                }
                Err((created_id, error)) => {
                    if let Some(id) = created_id {
                        created.push((id, name));
                    }
                    failures.push((number, error));
                }
            }
        }
        if !failures.is_empty() {
            // All or nothing: remove what this call created before reporting the first
            // failure (by number, so the message does not depend on timing).
            self.force_remove(&created).await?;
            failures.sort_by_key(|(number, _)| *number);
            let (_, error) = failures.remove(0);
            return Err(error);
        }
        instances.sort_by_key(|instance| instance.number);
        Ok(instances)
    }

    async fn health(&self, instance: &Instance) -> Result<Health, OrchestratorError> {
        let inspected = self.inspect(&instance.id, &instance.name).await?;
        let state = inspected.state.clone().unwrap_or_default();
        if !state.running.unwrap_or(false) {
            use bollard::models::ContainerStateStatusEnum as Status;
            return Ok(match state.status {
                Some(Status::CREATED | Status::RESTARTING) => Health::Starting {
                    detail: Some("the container is not running yet".into()),
                },
                _ => Health::Exited {
                    code: state.exit_code.unwrap_or(-1),
                },
            });
        }
        if let Some(path) = &self.options.health_path {
            let Some(address) = self.address_of(&instance.group.target, &inspected) else {
                return Ok(Health::Starting {
                    detail: Some(format!(
                        "no address to GET {path} on: the container has no IP on the project network or no single service port (set --port)"
                    )),
                });
            };
            return Ok(http_health(address, path).await);
        }
        if let Some(docker_health) = &state.health {
            let last_output = last_health_output(docker_health);
            match docker_health.status {
                Some(HealthStatusEnum::HEALTHY) => return Ok(Health::Healthy),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    return Ok(Health::Unhealthy {
                        detail: last_output.unwrap_or_else(|| "no health check output".into()),
                    })
                }
                Some(HealthStatusEnum::STARTING) => {
                    return Ok(Health::Starting {
                        detail: last_output,
                    })
                }
                // `none` / empty: no healthcheck configured, fall through to the grace period.
                _ => {}
            }
        }
        let running_for = state
            .started_at
            .as_deref()
            .and_then(flow_core::time::parse_rfc3339)
            .and_then(|started| SystemTime::now().duration_since(started).ok())
            .unwrap_or(Duration::ZERO);
        if running_for >= self.options.grace_period {
            Ok(Health::Healthy)
        } else {
            Ok(Health::Starting {
                detail: Some(format!(
                    "no health check: running for {:.1}s of the {:.1}s grace period",
                    running_for.as_secs_f64(),
                    self.options.grace_period.as_secs_f64()
                )),
            })
        }
    }

    async fn diagnose(&self, instance: &Instance) -> Result<Diagnosis, OrchestratorError> {
        let inspected = self.inspect(&instance.id, &instance.name).await?;
        let last_health_output = inspected
            .state
            .and_then(|s| s.health)
            .as_ref()
            .and_then(last_health_output);
        let log_tail = self.log_tail(&instance.id, &instance.name).await?;
        Ok(Diagnosis {
            last_health_output,
            log_tail,
        })
    }

    async fn stop(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        let timeout = i32::try_from(self.options.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let stops = instances.iter().map(|instance| async move {
            let options = StopContainerOptions {
                t: Some(timeout),
                signal: None,
            };
            match self
                .docker
                .stop_container(&instance.id, Some(options))
                .await
            {
                Ok(()) => Ok(()),
                // 304: already stopped; 404: already gone.
                Err(error) if matches!(status_of(&error), Some(304 | 404)) => Ok(()),
                Err(error) => Err(instance_error("stop", &instance.name, error)),
            }
        });
        futures::stream::iter(stops.collect::<Vec<_>>())
            .buffer_unordered(START_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    async fn remove(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        let ids: Vec<(String, String)> = instances
            .iter()
            .map(|i| (i.id.clone(), i.name.clone()))
            .collect();
        self.force_remove(&ids).await
    }

    async fn resume(&self, instances: &[Instance]) -> Result<Vec<Instance>, OrchestratorError> {
        let mut targets: Vec<&str> = instances
            .iter()
            .filter(|instance| !instance.running)
            .map(|instance| instance.group.target.as_str())
            .collect();
        targets.dedup();
        for target in targets {
            self.await_dependencies(target).await?;
        }
        let starts = instances.iter().map(|instance| async move {
            match self
                .docker
                .start_container(&instance.id, None::<StartContainerOptions>)
                .await
            {
                // 304: running already.
                Ok(()) => Ok(instance),
                Err(error) if status_of(&error) == Some(304) => Ok(instance),
                Err(error) => Err((instance, instance_error("start", &instance.name, error))),
            }
        });
        let outcomes: Vec<_> = futures::stream::iter(starts.collect::<Vec<_>>())
            .buffer_unordered(START_CONCURRENCY)
            .collect()
            .await;
        let (started, failed): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
        if let Some(Err((_, error))) = failed.into_iter().next() {
            // All or nothing: what this call started is stopped again (kept, as before).
            let started: Vec<Instance> = started
                .into_iter()
                .filter_map(Result::ok)
                .filter(|instance| !instance.running)
                .cloned()
                .collect();
            self.stop(&started).await?;
            return Err(error);
        }
        let mut resumed = Vec::with_capacity(instances.len());
        for instance in instances {
            let inspected = self.inspect(&instance.id, &instance.name).await?;
            resumed.push(self.instance_of(&instance.group, &inspected));
        }
        Ok(resumed)
    }

    async fn recover_spec(&self, instance: &Instance) -> Result<RecoveredSpec, OrchestratorError> {
        let inspected = self.inspect(&instance.id, &instance.name).await?;
        let config = inspected.config.as_ref();
        if let Some(text) = config
            .and_then(|c| c.labels.as_ref())
            .and_then(|labels| labels.get(LABEL_SPEC))
        {
            let spec: ReleaseSpec =
                serde_json::from_str(text).map_err(|error| OrchestratorError::Instance {
                    operation: "read the release spec of",
                    instance: instance.name.clone(),
                    message: format!("its {LABEL_SPEC} label is not a spec: {error}"),
                })?;
            return Ok(RecoveredSpec::Exact(spec));
        }
        let image_id = inspected.image.clone().unwrap_or_default();
        let image = config
            .and_then(|c| c.image.clone())
            .unwrap_or_else(|| image_id.clone());
        let service = self.compose.service(&instance.group.target)?;
        Ok(RecoveredSpec::ImageOnly(ReleaseSpec::new(
            image,
            image_id,
            Self::config_of(service),
        )))
    }
}

/// The HTTP status of an engine answer, when it was one.
/// The message of a failed build: the engine's error, then the build's last lines.
fn build_failure(
    service: &str,
    error: &str,
    output: &std::collections::VecDeque<String>,
) -> String {
    let mut message = format!("the build of service {service:?} failed: {}", error.trim());
    if !output.is_empty() {
        message.push_str("; its last output:");
        for line in output {
            message.push_str("\n    ");
            message.push_str(line);
        }
    }
    message
}

/// The output of the latest health check Docker kept, trimmed.
pub(crate) fn last_health_output(health: &bollard::models::Health) -> Option<String> {
    health
        .log
        .as_ref()
        .and_then(|log| log.last())
        .and_then(|result| result.output.as_deref())
        .map(|output| output.trim().to_string())
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn instance_error(operation: &'static str, name: &str, error: DockerError) -> OrchestratorError {
    let message = match error {
        DockerError::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    };
    OrchestratorError::Instance {
        operation,
        instance: name.to_string(),
        message,
    }
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn restart_policy(text: &str) -> RestartPolicy {
    let (name, retries) = match text.split_once(':') {
        Some((name, retries)) => (name, retries.parse().ok()),
        None => (text, None),
    };
    RestartPolicy {
        name: Some(match name {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            _ => RestartPolicyNameEnum::NO,
        }),
        maximum_retry_count: retries,
    }
}

/// Splits `repo[:tag]` (a registry port is not a tag); digests are pulled whole.
fn split_image_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    let last_segment_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_segment_start..].rfind(':') {
        Some(colon) => {
            let split = last_segment_start + colon;
            (
                image[..split].to_string(),
                Some(image[split + 1..].to_string()),
            )
        }
        None => (image.to_string(), Some("latest".to_string())),
    }
}

/// GETs `path` on `address`: 2xx is healthy, anything else (or no answer) is still starting
/// with the reason as detail. The release engine applies the overall timeout.
async fn http_health(address: SocketAddr, path: &str) -> Health {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: docker-flow\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        let mut buffer = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        Ok::<String, std::io::Error>(
            String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        )
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(status_line)) => {
            let code = status_line.split_whitespace().nth(1).unwrap_or("");
            if code.starts_with('2') {
                Health::Healthy
            } else {
                Health::Starting {
                    detail: Some(format!(
                        "GET http://{address}{path} answered {status_line:?}"
                    )),
                }
            }
        }
        Ok(Err(error)) => Health::Starting {
            detail: Some(format!("GET http://{address}{path} failed: {error}")),
        },
        Err(_) => Health::Starting {
            detail: Some(format!(
                "GET http://{address}{path} did not answer within 5s"
            )),
        },
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use flow_core::Color;

    #[test]
    fn splits_image_references() {
        assert_eq!(
            split_image_reference("demo:v1"),
            ("demo".into(), Some("v1".into()))
        );
        assert_eq!(
            split_image_reference("registry:5000/team/demo"),
            ("registry:5000/team/demo".into(), Some("latest".into()))
        );
        assert_eq!(
            split_image_reference("demo@sha256:abc"),
            ("demo@sha256:abc".into(), None)
        );
    }

    #[test]
    fn pull_policy_round_trips_and_rejects_typos() {
        for policy in [PullPolicy::Always, PullPolicy::Missing, PullPolicy::Never] {
            assert_eq!(policy.to_string().parse::<PullPolicy>(), Ok(policy));
        }
        assert!("sometimes"
            .parse::<PullPolicy>()
            .unwrap_err()
            .to_string()
            .contains("always, missing or never"));
    }

    #[test]
    fn colors_name_containers() {
        let group = Group::new("web", Some(Color::Blue));
        assert_eq!(group.to_string(), "web-blue");
    }
}
