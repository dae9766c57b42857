//! The Compose file, read as `docker compose` reads it, into the model docker-flow releases
//! from.
//!
//! # How a file is read
//!
//! 1. The file (at most [`MAX_FILE_BYTES`], as every `.env` and `env_file`) is parsed into a
//!    YAML tree, so that syntax errors carry a line and column, and YAML merge keys
//!    (`<<: *anchor`) are applied.
//! 2. Every value (never a key) is interpolated ([`interpolate`]) from the process
//!    environment over the `.env` beside the file; an unset variable without a default is a
//!    warning, as in Compose.
//! 3. Relative paths (`build`, `env_file`, bind mounts, `extends.file`) are resolved against
//!    the file's directory and `~` against `HOME`, file by file, so that a service taken
//!    from another file by `extends` or `include` keeps paths relative to where it was
//!    written.
//! 4. `extends` chains are merged by the specification's rules (see `merge`), and `include`d
//!    files are read as projects of their own and their services, networks and volumes added.
//! 5. The tree is walked key by key into [`ComposeProject`]. Walking by hand rather than
//!    deriving lets every field accept all of its Compose spellings (lists or maps, short or
//!    long syntax, a command as a string or a list) and lets an unknown key become a warning
//!    naming it instead of an error: a file written for `docker compose` keeps working, and
//!    the person running the release is told what is ignored.
//!
//! A service that cannot run as read (only `build:`, no `image:`, until
//! [`ComposeProject::assign_build_images`] names its image) is kept in the model and refused
//! only when it is asked for, so the other services of the file can still be released.
//! Warnings are collected into the caller's list as they are found, so that they can be shown
//! even when the load then fails ([`ComposeProject::load_with`]).
//!
//! Reading is linear in the file's size: one pass per step, maps are hashed, and no step
//! searches the text or the tree again for each service.

mod depends;
mod merge;
mod render;
mod variables;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flow_core::OrchestratorError;
use serde_norway::{Mapping, Value};

pub use depends::{Condition, Dependency};
pub use render::format_duration;
pub use variables::interpolate;
use variables::{EnvFormat, Lookup};

/// The largest Compose file, `.env` or `env_file` read (10 MiB): larger ones are refused
/// before being parsed, as they are certainly not a hand-written configuration.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// Everything reading a Compose file can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// The Compose file does not exist.
    #[error("the Compose file {path} does not exist; point -f/--compose-path at your docker-compose.yml")]
    NotFound {
        /// The path tried.
        path: PathBuf,
    },
    /// The Compose file or an `env_file` exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is {size} bytes, more than the {limit} bytes docker-flow reads; a Compose, .env or docker-flow.yml file that large is not a configuration — split it or remove what is generated into it", limit = MAX_FILE_BYTES)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The file is not valid YAML.
    #[error("{path} is not valid YAML at line {line}, column {column}: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (0 when the parser gave none).
        line: usize,
        /// 1-based column of the problem (0 when the parser gave none).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The file has no `services` map, or it is empty.
    #[error(
        "{path} defines no services: add a top-level `services:` map with at least one service"
    )]
    NoServices {
        /// The file.
        path: PathBuf,
    },
    /// The service asked for has neither `image` nor `build`.
    #[error("service {service:?} has neither `image` nor `build`: set `image: <name>:<tag>`, or `build:` with the directory of its Dockerfile")]
    NoImage {
        /// The service.
        service: String,
    },
    /// A duration (healthcheck interval, timeout, start_period) is not like `1s` or `1m30s`.
    #[error("service {service:?}: {field} {value:?} is not a duration; write it like 500ms, 10s or 1m30s")]
    InvalidDuration {
        /// The service.
        service: String,
        /// The key (`healthcheck.interval`…).
        field: String,
        /// The rejected text.
        value: String,
    },
    /// A value has the wrong shape (a port that is not a number, a volume without target…).
    #[error("service {service:?}: {field}: {message}")]
    InvalidValue {
        /// The service (or `(top level)`).
        service: String,
        /// The key.
        field: String,
        /// What is wrong and how to write it.
        message: String,
    },
    /// `${VAR:?message}` / `${VAR?message}` with `VAR` unset, or an unterminated `${`.
    #[error("{location}interpolation failed: {message}")]
    Interpolation {
        /// The file and key (`docker-compose.yml: services.web.image: `), empty for a bare
        /// string.
        location: String,
        /// What is wrong (the `message` of `${VAR:?message}` included).
        message: String,
    },
    /// A line of a `.env` or `env_file` is not `VAR=VALUE`.
    #[error("{path} line {line}: {message}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An `env_file` entry with `required: true` (the default) names a missing file.
    #[error("service {service:?}: env_file {path} does not exist; create it, fix the path, or mark the entry `required: false`")]
    MissingEnvFile {
        /// The service.
        service: String,
        /// The file.
        path: PathBuf,
    },
    /// An `extends` that cannot be followed: unknown service or file, a cycle, a bad shape.
    #[error("{path}: service {service:?}: extends: {message}")]
    Extends {
        /// The file the service is in.
        path: PathBuf,
        /// The extending service.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// An `include` that cannot be followed: a missing file, a cycle, a bad shape.
    #[error("{path}: include: {message}")]
    Include {
        /// The including file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A problem in one file of several (`include`, `extends`): the file, then the problem.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The problem.
        #[source]
        source: Box<ComposeError>,
    },
    /// A `--target` or `--side-target` names a service the file does not define.
    #[error("the Compose file defines no service {service:?} (it defines: {known}); check --target / --side-target")]
    UnknownService {
        /// The name asked for.
        service: String,
        /// The services that exist, comma separated.
        known: String,
    },
    /// Services depend on each other in a circle, so none of them can start first.
    #[error("the services depend on each other in a cycle: {}; remove one of these depends_on entries", cycle.join(" -> "))]
    DependencyCycle {
        /// The services around the cycle, the first one repeated at the end.
        cycle: Vec<String>,
    },
    /// A required `depends_on` entry names a service the file does not define.
    #[error("service {service:?} depends on {dependency:?}, which the Compose file does not define; define it, or mark the dependency `required: false`")]
    UnknownDependency {
        /// The dependent service.
        service: String,
        /// The missing dependency.
        dependency: String,
    },
    /// The target cannot take part in a blue-green release as written.
    #[error("service {service:?} cannot be released blue-green: {reason}")]
    NotBlueGreenReady {
        /// The target.
        service: String,
        /// Why, and what to write instead.
        reason: String,
    },
}

/// What a load takes from outside the file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The environment interpolation reads (over the `.env` beside the file).
    pub environment: HashMap<String, String>,
    /// Profiles activated by `--profile`, added to those of `COMPOSE_PROFILES`.
    pub profiles: Vec<String>,
}

impl LoadOptions {
    /// The process environment, no `--profile`.
    pub fn from_process() -> Self {
        LoadOptions {
            environment: std::env::vars().collect(),
            profiles: Vec::new(),
        }
    }
}

/// A parsed Compose file.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeProject {
    /// The file it was read from.
    pub path: PathBuf,
    /// The top-level `name`, when given.
    pub name: Option<String>,
    /// The services by name (those of included files too, and those not enabled by the
    /// active profiles: see [`ComposeProject::is_enabled`]).
    pub services: BTreeMap<String, ServiceSpec>,
    /// Top-level `networks` declarations by Compose name.
    pub networks: BTreeMap<String, ResourceSpec>,
    /// Top-level `volumes` declarations by Compose name.
    pub volumes: BTreeMap<String, ResourceSpec>,
    /// The active profiles (`--profile` and `COMPOSE_PROFILES`).
    pub active_profiles: BTreeSet<String>,
    /// Keys that were ignored, one sentence each, for the CLI to print.
    pub warnings: Vec<String>,
}

/// A top-level network or volume declaration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSpec {
    /// `external: true`: it must exist already and is never created.
    pub external: bool,
    /// `name:`: the engine name, instead of `<project>_<key>`.
    pub name: Option<String>,
    /// `driver:` (the engine's default when `None`).
    pub driver: Option<String>,
    /// `driver_opts:`.
    pub driver_opts: BTreeMap<String, String>,
    /// `labels:`.
    pub labels: BTreeMap<String, String>,
    /// Networks only: `internal: true`.
    pub internal: bool,
    /// Networks only: `attachable: true`.
    pub attachable: bool,
    /// Networks only: `ipam:`.
    pub ipam: Option<IpamSpec>,
}

/// A network's `ipam` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamSpec {
    /// `driver:`.
    pub driver: Option<String>,
    /// `config:` pools.
    pub config: Vec<IpamPool>,
    /// `options:`.
    pub options: BTreeMap<String, String>,
}

/// One `ipam.config` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamPool {
    /// `subnet` in CIDR form.
    pub subnet: Option<String>,
    /// `ip_range`.
    pub ip_range: Option<String>,
    /// `gateway`.
    pub gateway: Option<String>,
    /// `aux_addresses`.
    pub aux_addresses: BTreeMap<String, String>,
}

/// One service of the Compose file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSpec {
    /// The image reference; empty when the service has none (it then cannot run, see
    /// [`ComposeProject::runnable`]).
    pub image: String,
    /// `command`, split into arguments.
    pub command: Option<Vec<String>>,
    /// `entrypoint`, split into arguments.
    pub entrypoint: Option<Vec<String>>,
    /// `env_file` contents overridden by `environment`.
    pub environment: BTreeMap<String, String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `ports`.
    pub ports: Vec<PortSpec>,
    /// `expose`: container ports reachable on the network only.
    pub expose: Vec<u16>,
    /// `volumes` and `tmpfs`.
    pub volumes: Vec<VolumeMount>,
    /// The Compose network names the service joins (`default` when none given).
    pub networks: Vec<String>,
    /// Per network: `aliases`, `ipv4_address`, `ipv6_address` (only networks that set one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_settings: BTreeMap<String, NetworkAttachment>,
    /// `healthcheck`, when given.
    pub healthcheck: Option<HealthcheckSpec>,
    /// `restart` (`no`, `always`, `on-failure[:N]`, `unless-stopped`).
    pub restart: Option<String>,
    /// `depends_on` service names, in the order written.
    pub depends_on: Vec<String>,
    /// `depends_on.<service>`'s settings, when given in the long form (see
    /// [`ServiceSpec::dependency`]).
    #[serde(skip)]
    pub dependency_settings: BTreeMap<String, Dependency>,
    /// `container_name`.
    pub container_name: Option<String>,
    /// `build`, when given (the image is built through the engine, see
    /// [`ComposeProject::assign_build_images`]).
    #[serde(skip)]
    pub build: Option<BuildSpec>,
    /// `deploy.replicas` (or `scale`): the number of instances of a first release.
    #[serde(skip)]
    pub replicas: Option<u32>,
    /// `profiles`: the service is enabled only when one of them is active.
    #[serde(skip)]
    pub profiles: Vec<String>,
}

/// A service's `build` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSpec {
    /// `context`, resolved (a URL is kept as written).
    pub context: String,
    /// `dockerfile`.
    pub dockerfile: Option<String>,
    /// `args` (an arg without a value takes it from the environment).
    pub args: BTreeMap<String, String>,
    /// `target`.
    pub target: Option<String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
}

/// A service's settings on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkAttachment {
    /// `aliases`: further names of the service on that network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// `ipv4_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// `ipv6_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// One `ports` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortSpec {
    /// The host address to bind, when given.
    pub host_ip: Option<String>,
    /// The host port; `None` lets the engine pick one.
    pub host_port: Option<u16>,
    /// The container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One `volumes` (or `tmpfs`) entry of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeMount {
    /// Where it comes from.
    pub source: VolumeSource,
    /// The path in the container.
    pub target: String,
    /// `:ro` / `read_only: true`.
    pub read_only: bool,
}

/// What a volume mount mounts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VolumeSource {
    /// A host path (relative paths are resolved against the Compose file's directory).
    Bind(PathBuf),
    /// A named volume (created as `<project>_<name>` if missing).
    Named(String),
    /// An anonymous volume (`- /data`).
    Anonymous,
    /// A tmpfs (`type: tmpfs` or `tmpfs:`), with the engine's mount options
    /// (`size=…,mode=…`, possibly empty).
    Tmpfs(String),
}

/// A service's `healthcheck`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HealthcheckSpec {
    /// `disable: true` or `test: ["NONE"]`: the image's check is turned off.
    Disabled,
    /// A check; unset fields keep the image's values.
    Check {
        /// The test in Docker's form (`["CMD", …]`, `["CMD-SHELL", "…"]`); `None` keeps the
        /// image's.
        test: Option<Vec<String>>,
        /// `interval`.
        interval: Option<Duration>,
        /// `timeout`.
        timeout: Option<Duration>,
        /// `retries`.
        retries: Option<u32>,
        /// `start_period`.
        start_period: Option<Duration>,
        /// `start_interval` (engines before API 1.44 ignore it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_interval: Option<Duration>,
    },
}

impl PortSpec {
    /// Whether the host port is fixed (two instances could not both bind it).
    pub fn fixes_host_port(&self) -> bool {
        self.host_port.is_some_and(|port| port != 0)
    }
}

impl ServiceSpec {
    /// Every container port the service declares (`ports` and `expose`), without duplicates.
    pub fn container_ports(&self) -> BTreeSet<u16> {
        self.ports
            .iter()
            .map(|p| p.container_port)
            .chain(self.expose.iter().copied())
            .collect()
    }

    /// The settings of the `depends_on` entry `dependency` (the short form's defaults when it
    /// was written short, or the service was read back from a release spec).
    pub fn dependency(&self, dependency: &str) -> Dependency {
        self.dependency_settings
            .get(dependency)
            .copied()
            .unwrap_or_default()
    }
}

/// Reads `path` whole, refusing a file larger than [`MAX_FILE_BYTES`] before reading it (and
/// one that grows past it while being read).
pub fn read_limited(path: &Path) -> Result<String, ComposeError> {
    let read_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ComposeError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ComposeError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ComposeError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut text = String::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ComposeError::TooLarge {
            path: path.to_path_buf(),
            size: text.len() as u64,
        });
    }
    Ok(text)
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "include",
];

impl ComposeProject {
    /// Reads and parses the Compose file at `path`, interpolating from the process
    /// environment and the `.env` file beside it (the process environment wins).
    pub fn load(path: &Path) -> Result<ComposeProject, ComposeError> {
        Self::load_with(path, &LoadOptions::from_process(), &mut Vec::new())
    }

    /// Reads and parses the Compose file at `path` with `options`. Warnings are pushed to
    /// `warnings` as they are found (and copied into the project), so that a caller can show
    /// them when the load fails too.
    pub fn load_with(
        path: &Path,
        options: &LoadOptions,
        warnings: &mut Vec<String>,
    ) -> Result<ComposeProject, ComposeError> {
        let text = read_limited(path)?;
        let dir = parent_dir(path);
        let mut variables = HashMap::new();
        let dot_env = dir.join(".env");
        if dot_env.is_file() {
            variables.extend(read_env_file(
                &dot_env,
                EnvFormat::Compose,
                &options.environment,
                warnings,
            )?);
        }
        variables.extend(options.environment.clone());
        Reader::new(warnings).project(path, &text, &dir, &variables, &options.profiles)
    }

    /// Parses Compose `text` as if read from `path` (relative paths resolve against its
    /// directory, `~` against the `HOME` of `variables`), interpolating from `variables`
    /// only; `COMPOSE_PROFILES` among them activates profiles.
    pub fn parse(
        text: &str,
        path: &Path,
        variables: &HashMap<String, String>,
    ) -> Result<ComposeProject, ComposeError> {
        Reader::new(&mut Vec::new()).project(path, text, &parent_dir(path), variables, &[])
    }

    /// Whether the service is enabled by the active profiles (a service without `profiles`
    /// always is). A service named explicitly (a target) runs whatever its profiles.
    pub fn is_enabled(&self, service: &str) -> bool {
        self.services.get(service).is_some_and(|spec| {
            spec.profiles.is_empty()
                || spec
                    .profiles
                    .iter()
                    .any(|profile| self.active_profiles.contains(profile))
        })
    }

    /// The project name used when none is given: the top-level `name`, else the Compose
    /// file's directory name, lower-cased and reduced to letters, digits, `-` and `_` (as
    /// `docker compose` does).
    pub fn default_project_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let dir = std::fs::canonicalize(&self.path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .or_else(|| self.path.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let raw = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let cleaned: String = raw
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if cleaned.is_empty() {
            "default".to_string()
        } else {
            cleaned
        }
    }

    /// The service `name`, or [`OrchestratorError::UnknownTarget`] listing the known ones
    /// (an [`OrchestratorError::Image`] error when it has no image to run).
    pub fn service(&self, name: &str) -> Result<&ServiceSpec, OrchestratorError> {
        let service = self
            .services
            .get(name)
            .ok_or_else(|| OrchestratorError::UnknownTarget {
                target: name.to_string(),
                known: self.known_services(),
            })?;
        if service.image.is_empty() {
            return Err(OrchestratorError::Image {
                image: format!("(none for service {name})"),
                message: ComposeError::NoImage {
                    service: name.to_string(),
                }
                .to_string(),
            });
        }
        Ok(service)
    }

    /// The service `name` if it exists and has an image to run.
    pub fn runnable(&self, name: &str) -> Result<&ServiceSpec, ComposeError> {
        let service = self
            .services
            .get(name)
            .ok_or_else(|| ComposeError::UnknownService {
                service: name.to_string(),
                known: self.known_services(),
            })?;
        if service.image.is_empty() {
            return Err(ComposeError::NoImage {
                service: name.to_string(),
            });
        }
        if let Some(build) = &service.build {
            let is_remote = build.context.contains("://") || build.context.starts_with("git@");
            if is_remote {
                return Err(ComposeError::InvalidValue {
                    service: name.to_string(),
                    field: "build.context".into(),
                    message: format!("{:?} is a remote context, which docker-flow does not build; clone it and point `context` at the directory", build.context),
                });
            }
            if !Path::new(&build.context).is_dir() {
                return Err(ComposeError::InvalidValue {
                    service: name.to_string(),
                    field: "build.context".into(),
                    message: format!("{} is not a directory; fix the path (relative paths start from the Compose file's directory)", build.context),
                });
            }
        }
        Ok(service)
    }

    /// Gives each service that is built and names no `image` the tag Compose gives it,
    /// `<project>-<service>:latest`, so that it can be built and run.
    pub fn assign_build_images(&mut self, project: &str) {
        for (name, service) in &mut self.services {
            if service.image.is_empty() && service.build.is_some() {
                service.image = format!("{project}-{name}:latest");
            }
        }
    }

    fn known_services(&self) -> String {
        self.services.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Checks, before any change, that `target` exists and can be released: it has an image,
    /// and in blue-green mode (two colours run side by side) it publishes no fixed host port
    /// and sets neither `container_name` nor a fixed network address.
    pub fn validate_target(&self, target: &str, blue_green: bool) -> Result<(), ComposeError> {
        let service = self.runnable(target)?;
        if !blue_green {
            return Ok(());
        }
        let refuse = |reason: String| ComposeError::NotBlueGreenReady {
            service: target.to_string(),
            reason,
        };
        if let Some(port) = service.ports.iter().find(|p| p.fixes_host_port()) {
            return Err(refuse(format!(
                "it publishes the fixed host port {} (for container port {}), which the new colour cannot bind while the old one runs; let the engine pick the host port with `ports: [\"{}\"]`, or use `expose: [\"{}\"]` and reach it through the proxy",
                port.host_port.unwrap_or_default(),
                port.container_port,
                port.container_port,
                port.container_port
            )));
        }
        if let Some(name) = &service.container_name {
            return Err(refuse(format!(
                "it sets `container_name: {name}`, but each colour and instance needs a container of its own; remove `container_name` (docker-flow names containers <project>-<target>-<color>-<n>)"
            )));
        }
        if let Some((network, attachment)) = service
            .network_settings
            .iter()
            .find(|(_, a)| a.ipv4_address.is_some() || a.ipv6_address.is_some())
        {
            let address = attachment
                .ipv4_address
                .as_ref()
                .or(attachment.ipv6_address.as_ref())
                .cloned()
                .unwrap_or_default();
            return Err(refuse(format!(
                "it sets the fixed address {address} on network {network:?}, which only one container can hold; remove `ipv4_address` / `ipv6_address` and reach it by its service name or aliases"
            )));
        }
        Ok(())
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn yaml_error(path: &Path, error: &serde_norway::Error) -> ComposeError {
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    ComposeError::Yaml {
        path: path.to_path_buf(),
        line,
        column,
        message: error.to_string(),
    }
}

/// Reads a `.env` or `env_file` (see [`variables::parse_env_text`]); a `VAR` line without
/// `=` is left out (the variable is unset).
fn read_env_file(
    path: &Path,
    format: EnvFormat,
    outer: &dyn Lookup,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, String)>, ComposeError> {
    let text = read_limited(path)?;
    let mut unset = BTreeSet::new();
    let entries = variables::parse_env_text(&text, path, format, outer, &mut unset)?;
    warn_unset(&unset, &path.display().to_string(), warnings);
    Ok(entries
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect())
}

fn warn_unset(unset: &BTreeSet<String>, place: &str, warnings: &mut Vec<String>) {
    for name in unset {
        warnings.push(format!(
            "{place}: the variable {name} is not set; an empty string is used (set it, or give a default with ${{{name}:-default}})"
        ));
    }
}

/// One file read: interpolated, paths resolved, merge keys applied.
struct FileModel {
    name: Option<String>,
    services: Mapping,
    networks: Option<Value>,
    volumes: Option<Value>,
    include: Option<Value>,
}

/// The services, networks and volumes of a project, with `extends` resolved and includes
/// added.
struct Resolved {
    name: Option<String>,
    services: Mapping,
    networks: Mapping,
    volumes: Mapping,
}

struct Reader<'w> {
    warnings: &'w mut Vec<String>,
    /// Files read for `extends`, by path, so that a file is parsed once however many
    /// services extend it.
    files: HashMap<PathBuf, FileModel>,
    /// The files being included, outermost first (an include cycle is an error).
    including: Vec<PathBuf>,
}

impl<'w> Reader<'w> {
    fn new(warnings: &'w mut Vec<String>) -> Self {
        Reader {
            warnings,
            files: HashMap::new(),
            including: Vec::new(),
        }
    }

    fn project(
        mut self,
        path: &Path,
        text: &str,
        dir: &Path,
        variables: &HashMap<String, String>,
        profiles: &[String],
    ) -> Result<ComposeProject, ComposeError> {
        let resolved = self.resolve(path, text, dir, variables)?;
        if resolved.services.is_empty() {
            return Err(ComposeError::NoServices {
                path: path.to_path_buf(),
            });
        }
        let mut services = BTreeMap::new();
        for (name, body) in &resolved.services {
            let name = key_text(name);
            let spec = parse_service(&name, body, variables, self.warnings)?;
            services.insert(name, spec);
        }
        let networks = resources(&resolved.networks, "networks", self.warnings)?;
        let volumes = resources(&resolved.volumes, "volumes", self.warnings)?;
        let mut active_profiles: BTreeSet<String> = profiles.iter().cloned().collect();
        if let Some(listed) = variables.get("COMPOSE_PROFILES") {
            active_profiles.extend(
                listed
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
        }
        Ok(ComposeProject {
            path: path.to_path_buf(),
            name: resolved.name,
            services,
            networks,
            volumes,
            active_profiles,
            warnings: self.warnings.clone(),
        })
    }

    /// Reads one file: YAML, merge keys, interpolation, top-level keys, paths.
    fn read(
        &mut self,
        path: &Path,
        text: &str,
        dir: &Path,
        variables: &HashMap<String, String>,
    ) -> Result<FileModel, ComposeError> {
        let mut tree: Value =
            serde_norway::from_str(text).map_err(|error| yaml_error(path, &error))?;
        tree.apply_merge()
            .map_err(|error| ComposeError::InvalidValue {
                service: "(top level)".into(),
                field: "<<".into(),
                message: format!(
                    "{}: a merge key takes a map or a list of maps ({error})",
                    path.display()
                ),
            })?;
        // Keys are never interpolated: they are warned about before a value can fail.
        if let Value::Mapping(top) = &tree {
            for key in top.keys() {
                let key = key_text(key);
                if !TOP_LEVEL_KEYS.contains(&key.as_str()) && !key.starts_with("x-") {
                    self.warnings.push(format!(
                        "{}: top-level key {key:?} is not supported by docker-flow and is ignored",
                        path.display()
                    ));
                }
            }
        }
        let mut unset = BTreeSet::new();
        let mut key_path = Vec::new();
        interpolate_tree(&mut tree, variables, &mut key_path, &mut unset).map_err(
            |(key, message)| ComposeError::Interpolation {
                location: format!("{}: {key}: ", path.display()),
                message,
            },
        )?;
        warn_unset(&unset, &path.display().to_string(), self.warnings);
        let mut top = match tree {
            Value::Mapping(map) => map,
            Value::Null => Mapping::new(),
            _ => {
                return Err(ComposeError::InvalidValue {
                    service: "(top level)".into(),
                    field: "file".into(),
                    message: format!("{} must be a map with a `services` key", path.display()),
                })
            }
        };
        let home = variables.get("HOME").map(PathBuf::from);
        let services = match top.remove("services") {
            Some(Value::Mapping(mut services)) => {
                for (name, body) in services.iter_mut() {
                    if let Value::Mapping(body) = body {
                        resolve_paths(body, dir, home.as_deref());
                    } else if !body.is_null() {
                        return Err(ComposeError::InvalidValue {
                            service: key_text(name),
                            field: "(service)".into(),
                            message: format!("{}: a service must be a map of keys", path.display()),
                        });
                    }
                }
                services
            }
            None | Some(Value::Null) => Mapping::new(),
            Some(_) => {
                return Err(ComposeError::InvalidValue {
                    service: "(top level)".into(),
                    field: "services".into(),
                    message: format!("{}: `services` must be a map of services", path.display()),
                })
            }
        };
        Ok(FileModel {
            name: top.get("name").and_then(scalar_text),
            services,
            networks: top.remove("networks"),
            volumes: top.remove("volumes"),
            include: top.remove("include"),
        })
    }

    /// One project: its file read, `extends` resolved, includes added.
    fn resolve(
        &mut self,
        path: &Path,
        text: &str,
        dir: &Path,
        variables: &HashMap<String, String>,
    ) -> Result<Resolved, ComposeError> {
        let model = self.read(path, text, dir, variables)?;
        let names: Vec<Value> = model.services.keys().cloned().collect();
        let include = model.include.clone();
        let mut resolved = Resolved {
            name: model.name.clone(),
            services: Mapping::new(),
            networks: mapping_of(model.networks.clone()),
            volumes: mapping_of(model.volumes.clone()),
        };
        self.files.insert(path.to_path_buf(), model);
        for name in names {
            let mut chain = Vec::new();
            let service = self.extended(path, &key_text(&name), variables, &mut chain)?;
            resolved.services.insert(name, Value::Mapping(service));
        }
        if let Some(include) = include {
            self.include(path, dir, &include, variables, &mut resolved)?;
        }
        Ok(resolved)
    }

    /// The service `name` of `file` with its `extends` chain merged in.
    fn extended(
        &mut self,
        file: &Path,
        name: &str,
        variables: &HashMap<String, String>,
        chain: &mut Vec<(PathBuf, String)>,
    ) -> Result<Mapping, ComposeError> {
        let extends_error = |message: String| ComposeError::Extends {
            path: chain
                .last()
                .map(|(f, _)| f.clone())
                .unwrap_or_else(|| file.to_path_buf()),
            service: chain
                .last()
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| name.to_string()),
            message,
        };
        if !self.files.contains_key(file) {
            let text = read_limited(file).map_err(|e| extends_error(e.to_string()))?;
            let model = self.read(file, &text, &parent_dir(file), variables)?;
            self.files.insert(file.to_path_buf(), model);
        }
        let model = &self.files[file];
        let mut body = match model.services.get(name) {
            Some(Value::Mapping(body)) => body.clone(),
            Some(_) => Mapping::new(),
            None => {
                return Err(extends_error(format!(
                    "{} defines no service {name:?}",
                    file.display()
                )))
            }
        };
        let Some(extends) = body.remove("extends") else {
            merge::strip_tags(&mut body);
            return Ok(body);
        };
        let (base_name, base_file) = match &extends {
            Value::String(service) => (service.clone(), file.to_path_buf()),
            Value::Mapping(map) => {
                let service = map.get("service").and_then(scalar_text).ok_or_else(|| {
                    ComposeError::Extends {
                        path: file.to_path_buf(),
                        service: name.to_string(),
                        message: "needs `service: <name>` (and optionally `file: <path>`)".into(),
                    }
                })?;
                let base_file = map
                    .get("file")
                    .and_then(scalar_text)
                    .map_or_else(|| file.to_path_buf(), PathBuf::from);
                (service, base_file)
            }
            _ => {
                return Err(ComposeError::Extends {
                    path: file.to_path_buf(),
                    service: name.to_string(),
                    message: "expected a service name or a map with `service` and `file`".into(),
                })
            }
        };
        chain.push((file.to_path_buf(), name.to_string()));
        if chain
            .iter()
            .any(|(f, s)| *f == base_file && *s == base_name)
        {
            let cycle: Vec<String> = chain
                .iter()
                .map(|(_, s)| s.clone())
                .chain(std::iter::once(base_name.clone()))
                .collect();
            return Err(ComposeError::Extends {
                path: file.to_path_buf(),
                service: name.to_string(),
                message: format!("the chain {} is a cycle", cycle.join(" -> ")),
            });
        }
        let base = self.extended(&base_file, &base_name, variables, chain)?;
        chain.pop();
        Ok(merge::merge_service(base, body))
    }

    /// Adds the services, networks and volumes of each `include` entry.
    fn include(
        &mut self,
        path: &Path,
        dir: &Path,
        include: &Value,
        variables: &HashMap<String, String>,
        into: &mut Resolved,
    ) -> Result<(), ComposeError> {
        let include_error = |message: String| ComposeError::Include {
            path: path.to_path_buf(),
            message,
        };
        let Value::Sequence(entries) = include else {
            return Err(include_error(
                "expected a list of paths or of maps with `path`".into(),
            ));
        };
        self.including.push(path.to_path_buf());
        for entry in entries {
            let (paths, project_dir, env_files) = match entry {
                Value::String(file) => (vec![file.clone()], None, Vec::new()),
                Value::Mapping(map) => {
                    let paths = match map.get("path") {
                        Some(Value::Sequence(items)) => {
                            items.iter().filter_map(scalar_text).collect()
                        }
                        Some(other) => scalar_text(other).into_iter().collect(),
                        None => Vec::new(),
                    };
                    let env_files = match map.get("env_file") {
                        Some(Value::Sequence(items)) => {
                            items.iter().filter_map(scalar_text).collect()
                        }
                        Some(other) => scalar_text(other).into_iter().collect(),
                        None => Vec::new(),
                    };
                    (
                        paths,
                        map.get("project_directory").and_then(scalar_text),
                        env_files,
                    )
                }
                _ => {
                    return Err(include_error(
                        "each entry must be a path or a map with `path`".into(),
                    ))
                }
            };
            let Some(first) = paths.first() else {
                return Err(include_error(
                    "each entry needs a path (`- other/compose.yaml` or `- path: other/compose.yaml`)".into(),
                ));
            };
            let files: Vec<PathBuf> = paths.iter().map(|p| clean_join(dir, p)).collect();
            let project_dir = project_dir
                .map(|d| clean_join(dir, &d))
                .unwrap_or_else(|| parent_dir(&files[0]));
            if let Some(file) = files.iter().find(|f| self.including.contains(f)) {
                let chain: Vec<String> = self
                    .including
                    .iter()
                    .chain(std::iter::once(file))
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(include_error(format!(
                    "{first} is already being included: the chain {} is a cycle",
                    chain.join(" -> ")
                )));
            }
            // The included project's own .env (or env_file) gives defaults; the including
            // project's environment wins.
            let env_paths: Vec<PathBuf> = if env_files.is_empty() {
                vec![project_dir.join(".env")]
                    .into_iter()
                    .filter(|p| p.is_file())
                    .collect()
            } else {
                env_files.iter().map(|p| clean_join(dir, p)).collect()
            };
            let mut included_variables = HashMap::new();
            for env_path in &env_paths {
                included_variables.extend(read_env_file(
                    env_path,
                    EnvFormat::Compose,
                    variables,
                    self.warnings,
                )?);
            }
            included_variables.extend(variables.clone());
            let mut sub: Option<Resolved> = None;
            for file in &files {
                let text = read_limited(file).map_err(|e| include_error(e.to_string()))?;
                let mut reader = Reader::new(self.warnings);
                reader.including = self.including.clone();
                let next = reader
                    .resolve(file, &text, &project_dir, &included_variables)
                    .map_err(|source| ComposeError::InFile {
                        path: path.to_path_buf(),
                        source: Box::new(source),
                    })?;
                sub = Some(match sub {
                    None => next,
                    Some(mut earlier) => {
                        for (name, service) in next.services {
                            let merged = match earlier.services.remove(&name) {
                                Some(Value::Mapping(base)) => Value::Mapping(merge::merge_service(
                                    base,
                                    mapping_of(Some(service)),
                                )),
                                _ => service,
                            };
                            earlier.services.insert(name, merged);
                        }
                        earlier.networks.extend(next.networks);
                        earlier.volumes.extend(next.volumes);
                        earlier
                    }
                });
            }
            let Some(sub) = sub else { continue };
            let origin = files[0].display().to_string();
            for (section, ours, theirs) in [
                ("service", &mut into.services, sub.services),
                ("network", &mut into.networks, sub.networks),
                ("volume", &mut into.volumes, sub.volumes),
            ] {
                for (name, value) in theirs {
                    if ours.contains_key(&name) {
                        self.warnings.push(format!(
                            "{}: {section} {:?} is also defined by the included {origin}; the definition of {} is kept",
                            path.display(),
                            key_text(&name),
                            path.display()
                        ));
                    } else {
                        ours.insert(name, value);
                    }
                }
            }
        }
        self.including.pop();
        Ok(())
    }
}

fn mapping_of(value: Option<Value>) -> Mapping {
    match value {
        Some(Value::Mapping(map)) => map,
        _ => Mapping::new(),
    }
}

/// `path` joined to `dir` unless absolute, `~` expanded, and cleaned lexically (`.` dropped,
/// `..` applied) as Compose prints it.
fn clean_join(dir: &Path, path: &str) -> PathBuf {
    clean_join_home(dir, path, None)
}

fn clean_join_home(dir: &Path, path: &str, home: Option<&Path>) -> PathBuf {
    let joined = match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => dir.join(path),
    };
    let mut cleaned = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !cleaned.pop() {
                    cleaned.push("..");
                }
            }
            other => cleaned.push(other.as_os_str()),
        }
    }
    cleaned
}

/// Whether a volume source is a host path rather than a volume name.
fn is_host_path(source: &str) -> bool {
    source.starts_with('/') || source.starts_with('.') || source.starts_with('~')
}

/// Resolves a service's relative paths against `dir` (and `~` against `home`): `build`,
/// `env_file`, bind mount sources and `extends.file`.
fn resolve_paths(service: &mut Mapping, dir: &Path, home: Option<&Path>) {
    let resolve = |text: &str| clean_join_home(dir, text, home).display().to_string();
    let is_remote = |text: &str| text.contains("://") || text.starts_with("git@");
    match service.get_mut("build") {
        Some(Value::String(context)) if !is_remote(context) => *context = resolve(context),
        Some(Value::Mapping(build)) => {
            if let Some(Value::String(context)) = build.get_mut("context") {
                if !is_remote(context) {
                    *context = resolve(context);
                }
            }
        }
        _ => {}
    }
    match service.get_mut("env_file") {
        Some(Value::String(file)) => *file = resolve(file),
        Some(Value::Sequence(items)) => {
            for item in items {
                match item {
                    Value::String(file) => *file = resolve(file),
                    Value::Mapping(entry) => {
                        if let Some(Value::String(file)) = entry.get_mut("path") {
                            *file = resolve(file);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Sequence(items)) = service.get_mut("volumes") {
        for item in items {
            match item {
                Value::String(text) => {
                    if let Some((source, rest)) = text.split_once(':') {
                        if is_host_path(source) {
                            *text = format!("{}:{rest}", resolve(source));
                        }
                    }
                }
                Value::Mapping(entry) => {
                    let is_bind = entry.get("type").and_then(Value::as_str) == Some("bind");
                    if let Some(Value::String(source)) = entry.get_mut("source") {
                        if is_bind || is_host_path(source) {
                            *source = resolve(source);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(Value::Mapping(extends)) = service.get_mut("extends") {
        if let Some(Value::String(file)) = extends.get_mut("file") {
            *file = resolve(file);
        }
    }
}

/// Interpolates every string in the tree (keys are left alone, as in Compose); the error
/// carries the dotted key of the value.
fn interpolate_tree(
    value: &mut Value,
    variables: &HashMap<String, String>,
    key_path: &mut Vec<String>,
    unset: &mut BTreeSet<String>,
) -> Result<(), (String, String)> {
    match value {
        Value::String(text) => {
            *text = variables::expand(text, variables, unset)
                .map_err(|message| (key_path.join("."), message))?
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                key_path.push(format!("[{index}]"));
                interpolate_tree(item, variables, key_path, unset)?;
                key_path.pop();
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                key_path.push(key_text(key));
                interpolate_tree(item, variables, key_path, unset)?;
                key_path.pop();
            }
        }
        Value::Tagged(tagged) => interpolate_tree(&mut tagged.value, variables, key_path, unset)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn key_text(key: &Value) -> String {
    scalar_text(key).unwrap_or_else(|| format!("{key:?}"))
}

/// A scalar as text (numbers and booleans included, as Compose accepts `PORT: 8080`).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Warns about each key of `map` not in `known` (`x-` extensions aside), naming it under
/// `context` (`service "web": healthcheck`).
fn warn_unknown(map: &Mapping, known: &[&str], context: &str, warnings: &mut Vec<String>) {
    for key in map.keys() {
        let key = key_text(key);
        if !known.contains(&key.as_str()) && !key.starts_with("x-") {
            warnings.push(format!(
                "{context}: key {key:?} is not supported by docker-flow and is ignored"
            ));
        }
    }
}

/// A map of strings (`driver_opts`, `labels` of a resource, `ipam.options`).
fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    match value {
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| (key_text(k), scalar_text(v).unwrap_or_default()))
            .collect(),
        Some(Value::Sequence(_)) => merge::as_map(value.cloned().unwrap_or_default())
            .iter()
            .map(|(k, v)| (key_text(k), scalar_text(v).unwrap_or_default()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

const NETWORK_KEYS: &[&str] = &[
    "external",
    "name",
    "driver",
    "driver_opts",
    "labels",
    "internal",
    "attachable",
    "ipam",
];
const VOLUME_KEYS: &[&str] = &["external", "name", "driver", "driver_opts", "labels"];

fn resources(
    map: &Mapping,
    section: &str,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, ResourceSpec>, ComposeError> {
    let mut out = BTreeMap::new();
    let known = if section == "networks" {
        NETWORK_KEYS
    } else {
        VOLUME_KEYS
    };
    for (key, body) in map {
        let name = key_text(key);
        let mut spec = ResourceSpec::default();
        let invalid = |message: &str| ComposeError::InvalidValue {
            service: "(top level)".into(),
            field: format!("{section}.{name}"),
            message: message.to_string(),
        };
        if let Value::Mapping(body) = body {
            warn_unknown(body, known, &format!("{section}.{name}"), warnings);
            spec.external = match body.get("external") {
                Some(Value::Bool(b)) => *b,
                Some(Value::Mapping(m)) => {
                    spec.name = m.get("name").and_then(scalar_text);
                    true
                }
                _ => false,
            };
            if let Some(name) = body.get("name").and_then(scalar_text) {
                spec.name = Some(name);
            }
            spec.driver = body.get("driver").and_then(scalar_text);
            spec.driver_opts = string_map(body.get("driver_opts"));
            spec.labels = string_map(body.get("labels"));
            spec.internal = matches!(body.get("internal"), Some(Value::Bool(true)));
            spec.attachable = matches!(body.get("attachable"), Some(Value::Bool(true)));
            if let Some(ipam) = body.get("ipam") {
                let Value::Mapping(ipam) = ipam else {
                    return Err(invalid("ipam must be a map with driver, config, options"));
                };
                warn_unknown(
                    ipam,
                    &["driver", "config", "options"],
                    &format!("{section}.{name}.ipam"),
                    warnings,
                );
                let mut pools = Vec::new();
                if let Some(config) = ipam.get("config") {
                    let Value::Sequence(items) = config else {
                        return Err(invalid("ipam.config must be a list of pools"));
                    };
                    for item in items {
                        let Value::Mapping(pool) = item else {
                            return Err(invalid("each ipam.config entry must be a map (subnet, ip_range, gateway, aux_addresses)"));
                        };
                        warn_unknown(
                            pool,
                            &["subnet", "ip_range", "gateway", "aux_addresses"],
                            &format!("{section}.{name}.ipam.config"),
                            warnings,
                        );
                        pools.push(IpamPool {
                            subnet: pool.get("subnet").and_then(scalar_text),
                            ip_range: pool.get("ip_range").and_then(scalar_text),
                            gateway: pool.get("gateway").and_then(scalar_text),
                            aux_addresses: string_map(pool.get("aux_addresses")),
                        });
                    }
                }
                spec.ipam = Some(IpamSpec {
                    driver: ipam.get("driver").and_then(scalar_text),
                    config: pools,
                    options: string_map(ipam.get("options")),
                });
            }
        } else if !body.is_null() {
            return Err(invalid("expected a map (or nothing)"));
        }
        out.insert(name, spec);
    }
    Ok(out)
}

const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "networks",
    "healthcheck",
    "restart",
    "depends_on",
    "container_name",
    "deploy",
    "scale",
    "profiles",
];

fn parse_service(
    name: &str,
    body: &Value,
    variables: &HashMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<ServiceSpec, ComposeError> {
    let invalid = |field: &str, message: String| ComposeError::InvalidValue {
        service: name.to_string(),
        field: field.to_string(),
        message,
    };
    let empty = Mapping::new();
    let map = match body {
        Value::Mapping(map) => map,
        _ => &empty,
    };
    let context = format!("service {name:?}");
    warn_unknown(map, SERVICE_KEYS, &context, warnings);
    let image = map
        .get("image")
        .and_then(scalar_text)
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_default();
    let mut spec = ServiceSpec {
        image,
        ..Default::default()
    };
    if let Some(build) = map.get("build") {
        spec.build = Some(parse_build(name, build, variables, warnings)?);
    }
    spec.command = map
        .get("command")
        .map(|v| {
            command_words(v)
                .ok_or_else(|| invalid("command", "expected a string or a list of strings".into()))
        })
        .transpose()?;
    spec.entrypoint = map
        .get("entrypoint")
        .map(|v| {
            command_words(v).ok_or_else(|| {
                invalid(
                    "entrypoint",
                    "expected a string or a list of strings".into(),
                )
            })
        })
        .transpose()?;
    if let Some(files) = map.get("env_file") {
        let entries = match files {
            Value::Sequence(items) => items.clone(),
            other => vec![other.clone()],
        };
        for entry in entries {
            let (file, required, format) = match &entry {
                Value::Mapping(long) => {
                    warn_unknown(
                        long,
                        &["path", "required", "format"],
                        &format!("{context}: env_file"),
                        warnings,
                    );
                    let file = long.get("path").and_then(scalar_text).ok_or_else(|| {
                        invalid("env_file", "a long-form entry needs `path: <file>`".into())
                    })?;
                    let required = !matches!(long.get("required"), Some(Value::Bool(false)));
                    let format = match long.get("format").and_then(scalar_text).as_deref() {
                        None => EnvFormat::Compose,
                        Some("raw") => EnvFormat::Raw,
                        Some(other) => {
                            return Err(invalid(
                                "env_file.format",
                                format!(
                                "{other:?} is not an env_file format; leave it out or write `raw`"
                            ),
                            ))
                        }
                    };
                    (file, required, format)
                }
                other => (
                    scalar_text(other).ok_or_else(|| {
                        invalid("env_file", "expected a path or a list of paths".into())
                    })?,
                    true,
                    EnvFormat::Compose,
                ),
            };
            let path = PathBuf::from(&file);
            if !path.exists() {
                if required {
                    return Err(ComposeError::MissingEnvFile {
                        service: name.to_string(),
                        path,
                    });
                }
                continue;
            }
            spec.environment
                .extend(read_env_file(&path, format, variables, warnings)?);
        }
    }
    if let Some(environment) = map.get("environment") {
        for (key, value) in key_values(environment, "environment", name)? {
            match value {
                Some(value) => {
                    spec.environment.insert(key, value);
                }
                // `- KEY` with no value takes it from the environment docker-flow runs in;
                // unresolved, the variable is unset (and overrides an env_file's value).
                None => match variables.get(&key) {
                    Some(value) => {
                        spec.environment.insert(key, value.clone());
                    }
                    None => {
                        spec.environment.remove(&key);
                    }
                },
            }
        }
    }
    if let Some(labels) = map.get("labels") {
        for (key, value) in key_values(labels, "labels", name)? {
            if key.starts_with("com.docker.compose.") {
                return Err(invalid(
                    "labels",
                    format!("{key:?} uses the com.docker.compose prefix, which Compose reserves for its own labels; rename the label"),
                ));
            }
            spec.labels.insert(key, value.unwrap_or_default());
        }
    }
    if let Some(ports) = map.get("ports") {
        let Value::Sequence(items) = ports else {
            return Err(invalid("ports", "expected a list".into()));
        };
        for item in items {
            if let Value::Mapping(long) = item {
                warn_unknown(
                    long,
                    &[
                        "target",
                        "published",
                        "host_ip",
                        "protocol",
                        "mode",
                        "name",
                        "app_protocol",
                    ],
                    &format!("{context}: ports"),
                    warnings,
                );
            }
            spec.ports
                .push(parse_port(item).map_err(|m| invalid("ports", m))?);
        }
    }
    if let Some(expose) = map.get("expose") {
        let Value::Sequence(items) = expose else {
            return Err(invalid("expose", "expected a list of ports".into()));
        };
        for item in items {
            let text = scalar_text(item).unwrap_or_default();
            let port = text.split('/').next().unwrap_or("");
            spec.expose.push(port.parse().map_err(|_| {
                invalid(
                    "expose",
                    format!("{text:?} is not a port number; write e.g. \"8080\" (ranges are not supported)"),
                )
            })?);
        }
    }
    if let Some(volumes) = map.get("volumes") {
        let Value::Sequence(items) = volumes else {
            return Err(invalid("volumes", "expected a list".into()));
        };
        for item in items {
            spec.volumes
                .push(parse_volume(item, &context, warnings).map_err(|m| invalid("volumes", m))?);
        }
    }
    if let Some(tmpfs) = map.get("tmpfs") {
        let items = match tmpfs {
            Value::Sequence(items) => items.clone(),
            other => vec![other.clone()],
        };
        for item in items {
            let text = scalar_text(&item)
                .ok_or_else(|| invalid("tmpfs", "expected a path or a list of paths".into()))?;
            let (target, options) = text.split_once(':').unwrap_or((&text, ""));
            spec.volumes.push(VolumeMount {
                source: VolumeSource::Tmpfs(options.to_string()),
                target: target.to_string(),
                read_only: false,
            });
        }
    }
    match map.get("networks") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            spec.networks = items.iter().filter_map(scalar_text).collect();
        }
        Some(Value::Mapping(networks)) => {
            for (network, settings) in networks {
                let network = key_text(network);
                if let Value::Mapping(settings) = settings {
                    warn_unknown(
                        settings,
                        &["aliases", "ipv4_address", "ipv6_address"],
                        &format!("{context}: networks.{network}"),
                        warnings,
                    );
                    let aliases = match settings.get("aliases") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Sequence(items)) => {
                            items.iter().filter_map(scalar_text).collect()
                        }
                        Some(_) => {
                            return Err(invalid(
                                &format!("networks.{network}.aliases"),
                                "expected a list of names".into(),
                            ))
                        }
                    };
                    let attachment = NetworkAttachment {
                        aliases,
                        ipv4_address: settings.get("ipv4_address").and_then(scalar_text),
                        ipv6_address: settings.get("ipv6_address").and_then(scalar_text),
                    };
                    if attachment != NetworkAttachment::default() {
                        spec.network_settings.insert(network.clone(), attachment);
                    }
                }
                spec.networks.push(network);
            }
        }
        Some(_) => return Err(invalid("networks", "expected a list or a map".into())),
    }
    if spec.networks.is_empty() {
        spec.networks.push("default".to_string());
    }
    if let Some(check) = map.get("healthcheck") {
        spec.healthcheck = Some(parse_healthcheck(name, check, warnings)?);
    }
    spec.restart = match map.get("restart") {
        // `restart: no` unquoted is a YAML 1.1 boolean to some writers; it means "no".
        Some(Value::Bool(false)) => Some("no".to_string()),
        other => other.and_then(scalar_text),
    };
    if let Some(restart) = &spec.restart {
        let kind = restart.split(':').next().unwrap_or("");
        if !matches!(kind, "no" | "always" | "on-failure" | "unless-stopped") {
            return Err(invalid(
                "restart",
                format!("{restart:?} is not a restart policy; use no, always, on-failure[:N] or unless-stopped"),
            ));
        }
    }
    (spec.depends_on, spec.dependency_settings) =
        depends::parse(name, &context, map.get("depends_on"), warnings)?;
    spec.container_name = map.get("container_name").and_then(scalar_text);
    let whole_number = |field: &str, value: &Value| {
        scalar_text(value)
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(|| invalid(field, "expected a whole number of instances".into()))
    };
    if let Some(deploy) = map.get("deploy") {
        if let Value::Mapping(deploy) = deploy {
            warn_unknown(
                deploy,
                &["replicas"],
                &format!("{context}: deploy"),
                warnings,
            );
            if let Some(replicas) = deploy.get("replicas") {
                spec.replicas = Some(whole_number("deploy.replicas", replicas)?);
            }
        } else if !deploy.is_null() {
            return Err(invalid("deploy", "expected a map".into()));
        }
    }
    if let Some(scale) = map.get("scale") {
        let scale = whole_number("scale", scale)?;
        if spec.replicas.is_some_and(|replicas| replicas != scale) {
            return Err(invalid(
                "scale",
                format!("{scale} differs from deploy.replicas {}; the specification requires them to agree, keep one", spec.replicas.unwrap_or_default()),
            ));
        }
        spec.replicas = Some(scale);
    }
    spec.profiles = match map.get("profiles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().filter_map(scalar_text).collect(),
        Some(_) => {
            return Err(invalid(
                "profiles",
                "expected a list of profile names".into(),
            ))
        }
    };
    Ok(spec)
}

fn parse_build(
    service: &str,
    value: &Value,
    variables: &HashMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<BuildSpec, ComposeError> {
    let invalid = |field: &str, message: &str| ComposeError::InvalidValue {
        service: service.to_string(),
        field: format!("build.{field}"),
        message: message.to_string(),
    };
    let map = match value {
        Value::Mapping(map) => map.clone(),
        other => {
            let context =
                scalar_text(other).ok_or_else(|| invalid("context", "expected a path or a map"))?;
            return Ok(BuildSpec {
                context,
                ..Default::default()
            });
        }
    };
    warn_unknown(
        &map,
        &["context", "dockerfile", "args", "target", "labels"],
        &format!("service {service:?}: build"),
        warnings,
    );
    let mut args = BTreeMap::new();
    if let Some(listed) = map.get("args") {
        for (key, value) in key_values(listed, "build.args", service)? {
            if let Some(value) = value.or_else(|| variables.get(&key).cloned()) {
                args.insert(key, value);
            }
        }
    }
    let mut labels = BTreeMap::new();
    if let Some(listed) = map.get("labels") {
        for (key, value) in key_values(listed, "build.labels", service)? {
            labels.insert(key, value.unwrap_or_default());
        }
    }
    Ok(BuildSpec {
        context: map
            .get("context")
            .and_then(scalar_text)
            .unwrap_or_else(|| ".".into()),
        dockerfile: map.get("dockerfile").and_then(scalar_text),
        args,
        target: map.get("target").and_then(scalar_text),
        labels,
    })
}

/// `KEY=VALUE` list items or a map; a list item without `=` (or a null map value) is `None`.
/// A list or map as a value is refused, as Compose refuses it.
fn key_values(
    value: &Value,
    field: &str,
    service: &str,
) -> Result<Vec<(String, Option<String>)>, ComposeError> {
    let invalid = |message: String| ComposeError::InvalidValue {
        service: service.to_string(),
        field: field.to_string(),
        message,
    };
    match value {
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let item = scalar_text(item).ok_or_else(|| {
                    invalid("each list item must be a string KEY=VALUE".into())
                })?;
                Ok(match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item, None),
                })
            })
            .collect(),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let key = key_text(k);
                match v {
                    Value::Null => Ok((key, None)),
                    Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => Err(invalid(format!(
                        "the value of {key:?} must be a string, a number or a boolean, not a list or a map"
                    ))),
                    scalar => Ok((key, scalar_text(scalar))),
                }
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(invalid("expected a list of KEY=VALUE or a map".into())),
    }
}

/// A command given as a list, or as a string split like a shell would (quotes respected).
fn command_words(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Sequence(items) => items.iter().map(scalar_text).collect(),
        Value::Null => Some(Vec::new()),
        other => scalar_text(other).map(|text| split_words(&text)),
    }
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

fn parse_port_number(text: &str, what: &str) -> Result<u16, String> {
    text.trim().parse().map_err(|_| {
        format!("{what} {text:?} is not a port number (1-65535); write e.g. \"8080\", \"8080:80\" or \"127.0.0.1::80\" (ranges are not supported)")
    })
}

/// Short (`"80"`, `"8080:80"`, `"127.0.0.1::80"`, `"127.0.0.1:8080:80"`, `"80/udp"`) or long
/// (`{target, published, host_ip, protocol}`) port syntax.
fn parse_port(value: &Value) -> Result<PortSpec, String> {
    if let Value::Mapping(map) = value {
        let target = map
            .get("target")
            .and_then(scalar_text)
            .ok_or("the long port syntax needs `target: <container port>`")?;
        let published = map
            .get("published")
            .and_then(scalar_text)
            .filter(|p| !p.is_empty());
        return Ok(PortSpec {
            host_ip: map.get("host_ip").and_then(scalar_text),
            host_port: published
                .map(|p| parse_port_number(&p, "published port"))
                .transpose()?,
            container_port: parse_port_number(&target, "target port")?,
            protocol: map
                .get("protocol")
                .and_then(scalar_text)
                .unwrap_or_else(|| "tcp".into()),
        });
    }
    let text = scalar_text(value).ok_or("expected a string like \"8080:80\" or a map")?;
    let (spec, protocol) = match text.split_once('/') {
        Some((spec, protocol)) => (spec, protocol.to_string()),
        None => (text.as_str(), "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (host_ip, host_port, container) = match parts.as_slice() {
        [container] => (None, None, *container),
        [container, host] => (None, Some(*host), *container),
        [container, host, ip] => (Some(ip.to_string()), Some(*host), *container),
        _ => return Err(format!("{text:?} is not a port mapping")),
    };
    Ok(PortSpec {
        // `[::1]:6001:6001`: the brackets only delimit the IPv6 address.
        host_ip: host_ip
            .map(|ip| ip.trim_start_matches('[').trim_end_matches(']').to_string())
            .filter(|ip| !ip.is_empty()),
        host_port: host_port
            .filter(|h| !h.is_empty())
            .map(|h| parse_port_number(h, "host port"))
            .transpose()?,
        container_port: parse_port_number(container, "container port")?,
        protocol,
    })
}

/// Short (`"./data:/data:ro"`, `"cache:/cache"`, `"/data"`) or long
/// (`{type, source, target, read_only, tmpfs}`) volume syntax. Host paths were resolved when
/// the file was read.
fn parse_volume(
    value: &Value,
    context: &str,
    warnings: &mut Vec<String>,
) -> Result<VolumeMount, String> {
    let source_of = |source: &str, bind: bool| -> VolumeSource {
        if bind || is_host_path(source) {
            VolumeSource::Bind(PathBuf::from(source))
        } else {
            VolumeSource::Named(source.to_string())
        }
    };
    if let Value::Mapping(map) = value {
        warn_unknown(
            map,
            &[
                "type",
                "source",
                "target",
                "read_only",
                "tmpfs",
                "consistency",
            ],
            &format!("{context}: volumes"),
            warnings,
        );
        let target = map
            .get("target")
            .and_then(scalar_text)
            .ok_or("the long volume syntax needs `target: <path in the container>`")?;
        let kind = map.get("type").and_then(scalar_text);
        let source = match kind.as_deref() {
            Some("tmpfs") => {
                let mut options = Vec::new();
                if let Some(Value::Mapping(tmpfs)) = map.get("tmpfs") {
                    warn_unknown(
                        tmpfs,
                        &["size", "mode"],
                        &format!("{context}: volumes.tmpfs"),
                        warnings,
                    );
                    if let Some(size) = tmpfs.get("size").and_then(scalar_text) {
                        options.push(format!("size={size}"));
                    }
                    if let Some(mode) = tmpfs.get("mode") {
                        // `mode: 0o1777` / `01777` reach us as a number; the engine wants octal.
                        let mode = match mode {
                            Value::Number(n) => n.as_u64().map(|m| format!("{m:o}")),
                            other => scalar_text(other),
                        };
                        options.extend(mode.map(|m| format!("mode={m}")));
                    }
                }
                VolumeSource::Tmpfs(options.join(","))
            }
            None | Some("bind") | Some("volume") => match map.get("source").and_then(scalar_text) {
                Some(source) => source_of(&source, kind.as_deref() == Some("bind")),
                None if kind.as_deref() == Some("bind") => {
                    return Err("a `type: bind` volume needs `source: <host path>`".into())
                }
                None => VolumeSource::Anonymous,
            },
            Some(other) => {
                return Err(format!(
                    "volume type {other:?} is not supported; use bind, volume or tmpfs"
                ))
            }
        };
        for (key, wanted) in [
            ("bind", "propagation, selinux"),
            ("volume", "nocopy, subpath"),
        ] {
            if map.contains_key(key) {
                warnings.push(format!(
                    "{context}: volumes: key \"{key}\" ({wanted}) is not supported by docker-flow and is ignored"
                ));
            }
        }
        return Ok(VolumeMount {
            source,
            target,
            read_only: matches!(map.get("read_only"), Some(Value::Bool(true))),
        });
    }
    let text = scalar_text(value).ok_or("expected a string like \"./data:/data:ro\" or a map")?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode] => (Some(*source), *target, *mode),
        _ => return Err(format!("{text:?} is not SOURCE:TARGET[:MODE]")),
    };
    let mut read_only = false;
    for flag in mode.split(',').filter(|m| !m.is_empty()) {
        match flag {
            "ro" => read_only = true,
            "rw" => {}
            other => warnings.push(format!(
                "{context}: volumes: mode {other:?} of {text:?} is not supported by docker-flow and is ignored"
            )),
        }
    }
    Ok(VolumeMount {
        source: source.map_or(VolumeSource::Anonymous, |s| source_of(s, false)),
        target: target.to_string(),
        read_only,
    })
}

fn parse_healthcheck(
    service: &str,
    value: &Value,
    warnings: &mut Vec<String>,
) -> Result<HealthcheckSpec, ComposeError> {
    let invalid = |message: &str| ComposeError::InvalidValue {
        service: service.to_string(),
        field: "healthcheck".into(),
        message: message.to_string(),
    };
    let Value::Mapping(map) = value else {
        return Err(invalid(
            "expected a map with test, interval, timeout, retries, start_period, start_interval",
        ));
    };
    warn_unknown(
        map,
        &[
            "disable",
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
        ],
        &format!("service {service:?}: healthcheck"),
        warnings,
    );
    if matches!(map.get("disable"), Some(Value::Bool(true))) {
        return Ok(HealthcheckSpec::Disabled);
    }
    let test = match map.get("test") {
        None => None,
        Some(Value::Sequence(items)) => {
            let words: Vec<String> = items.iter().filter_map(scalar_text).collect();
            if words.first().map(String::as_str) == Some("NONE") {
                return Ok(HealthcheckSpec::Disabled);
            }
            Some(words)
        }
        Some(other) => {
            let text =
                scalar_text(other).ok_or_else(|| invalid("test must be a string or a list"))?;
            Some(vec!["CMD-SHELL".to_string(), text])
        }
    };
    let duration = |key: &str| -> Result<Option<Duration>, ComposeError> {
        map.get(key)
            .map(|v| {
                let text = scalar_text(v).unwrap_or_default();
                parse_duration(&text).ok_or_else(|| ComposeError::InvalidDuration {
                    service: service.to_string(),
                    field: format!("healthcheck.{key}"),
                    value: text,
                })
            })
            .transpose()
    };
    let retries = map
        .get("retries")
        .map(|v| {
            scalar_text(v)
                .and_then(|t| t.parse::<u32>().ok())
                .ok_or_else(|| invalid("retries must be a whole number"))
        })
        .transpose()?;
    Ok(HealthcheckSpec::Check {
        test,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        retries,
        start_period: duration("start_period")?,
        start_interval: duration("start_interval")?,
    })
}

/// Parses Compose durations, which the specification defines as Go's (`1m30s`, `500ms`,
/// `1.5s`; units `h`, `m`, `s`, `ms`, `us`, `ns`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    flow_core::time::go_duration::parse(text.trim()).ok()
}
