//! Stage 2: the one place where raw inputs become a validated [`Command`].
//!
//! [`load`] layers every release option as *built-in default < `./docker-flow.yml` <
//! environment `FLOW_<KEY>` < flag*, parses it with one parser per type whatever its source,
//! and checks the combinations. It either returns a [`Command`] the rest of the binary can
//! run without re-checking anything, or a [`ConfigError`] that names the offending option by
//! where it came from (`--scale`, `environment variable FLOW_SCALE`, `docker-flow.yml line 3,
//! key scale`) and says how to fix it. The binary maps every `ConfigError` to exit code 2.
//!
//! Decisions worth knowing:
//!
//! * Lists (`flow`, `side_targets`, `service_path`): the flags, when any is given, replace the
//!   yml/env list (which is "the first occurrence replaces, later ones append"); environment
//!   lists are comma-separated. `-F` and `-T` also split on commas; `--service-path` does
//!   not, as a `path_reg` expression may contain one.
//! * An empty `--flow` list (e.g. `FLOW=`) means the default, `[deploy]`.
//! * The `--flow` environment variable is `FLOW`, as 1.x documented; `FLOW_FLOW`, the name
//!   every other option's pattern gives, is accepted too and wins when both are set.
//! * An empty environment variable counts as unset for single values (shells make it hard
//!   to unset a variable inherited from a wrapper); for lists it is an empty list.
//! * Unknown yml keys are warnings, returned in [`ReleaseConfig::warnings`]: 1.x ignored them,
//!   and failing on a key a newer version added would break shared files.
//! * `DOCKER_HOST`, `DOCKER_CERT_PATH`, `DOCKER_CONTEXT` and the Docker config's current
//!   context are not layers here: they are read when connecting, by
//!   [`flow_docker::context::resolve`], in the docker CLI's order (an explicit `--context`
//!   beats `DOCKER_HOST`, and `--host` with `--context` is refused there).
//! * Options 1.x had that cannot work here (`--proxy-docker-host`, `--consul-template-*`) are
//!   refused rather than ignored, so nobody believes they took effect.
//! * `--registry` and `--consul-address` both choose the registry; giving both with
//!   different stores is an error instead of a silent precedence rule.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use flow_core::release::{ReleaseOptions, RouteSettings, Step, Timeouts, UnknownStep};
use flow_core::{InvalidScale, InvalidServiceName, PathType, ScaleSpec, ServiceName};
use flow_docker::compose::ComposeError;
use flow_docker::{BuildPolicy, PullPolicy};

use crate::args::{
    Cli, CommandArgs, ComposeConfigFlags, ParsedFile, ProxyCommandArgs, ProxyServeFlags,
    RegistratorFlags, ReleaseFlags,
};
use crate::output::Verbosity;

/// The name of the options file read from the working directory.
pub const CONFIG_FILE_NAME: &str = "docker-flow.yml";

/// Looks up an environment variable by name (`None` when unset).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// What the process runs with, passed in so that [`load`] never reads the real process
/// environment or working directory itself (tests build their own).
pub struct Context {
    /// The absolute working directory; relative paths are resolved against it.
    pub cwd: PathBuf,
    /// Looks up an environment variable.
    pub env: EnvLookup,
    /// `./docker-flow.yml`, when it exists.
    pub config_file: Option<ConfigFileText>,
    /// This process's id, for the lock holder.
    pub pid: u32,
    /// This machine's name, for the lock holder.
    pub hostname: String,
}

/// The text of an options file and where it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileText {
    /// The file's path, as shown in error messages.
    pub path: PathBuf,
    /// Its contents.
    pub text: String,
}

impl Context {
    /// The real process: its working directory, environment, `./docker-flow.yml` (a missing
    /// file is fine), pid and host name (`/etc/hostname`, else `HOSTNAME`).
    pub fn from_process() -> Result<Context, ConfigError> {
        let cwd =
            std::env::current_dir().map_err(|source| ConfigError::WorkingDirectory { source })?;
        let path = cwd.join(CONFIG_FILE_NAME);
        let config_file = match flow_docker::compose::read_limited(&path) {
            Ok(text) => Some(ConfigFileText { path, text }),
            Err(ComposeError::NotFound { .. }) => None,
            Err(ComposeError::Read { source, .. }) => {
                return Err(ConfigError::ReadFile { path, source })
            }
            Err(error) => return Err(ConfigError::TooLarge(error)),
        };
        let hostname = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown-host".to_string());
        Ok(Context {
            cwd,
            env: Box::new(|name| std::env::var(name).ok()),
            config_file,
            pid: std::process::id(),
            hostname,
        })
    }

    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }
}

/// A validated invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `docker-flow [options]`: release a Compose service.
    Release(Box<ReleaseConfig>),
    /// `docker-flow proxy serve`: run the proxy.
    ProxyServe(ProxyServeConfig),
    /// `docker-flow registrator`: keep the registry in sync with running containers.
    Registrator(RegistratorConfig),
    /// `docker-flow status`: show what runs. It reads the same options as a release (its
    /// steps, scale and route are not used: given as flags they are refused).
    Status(Box<ReleaseConfig>),
    /// `docker-flow completions SHELL`: print a completion script.
    Completions(clap_complete::Shell),
    /// `docker-flow man`: print the man page.
    Manual,
    /// `docker-flow config`: print the resolved Compose model.
    ComposeConfig(ComposeConfigRequest),
}

/// What `docker-flow config` prints, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeConfigRequest {
    /// The Compose file, absolute.
    pub compose_path: PathBuf,
    /// The Compose project name.
    pub project: String,
    /// Only this service.
    pub target: Option<String>,
    /// `--profile` values.
    pub profiles: Vec<String>,
    /// JSON instead of YAML.
    pub json: bool,
}

/// Everything a release needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseConfig {
    /// What the engine does: service, target, steps, scale, route, timeouts, holder.
    pub release: ReleaseOptions,
    /// The Compose file, absolute.
    pub compose_path: PathBuf,
    /// The Compose project name.
    pub project: String,
    /// The Docker engine to talk to.
    pub docker: DockerEndpoint,
    /// Where release state lives.
    pub registry: RegistryLocation,
    /// The proxy's API, when `--proxy-host` is given.
    pub proxy: Option<ProxyEndpoint>,
    /// When to pull the target's image.
    pub pull: PullPolicy,
    /// Also pull the side targets' images.
    pub pull_side_targets: bool,
    /// When to build services that have `build:`.
    pub build: BuildPolicy,
    /// HTTP path probed for health (`None`: the container's own health check, else running).
    pub health_path: Option<String>,
    /// The service's container port (`None`: the single port the target exposes).
    pub port: Option<u16>,
    /// The address the proxy reaches instances at (`None`: the published ports' host IP).
    pub advertise_addr: Option<IpAddr>,
    /// Show what would happen without changing anything.
    pub dry_run: bool,
    /// JSON event lines on stdout instead of progress text.
    pub json: bool,
    /// How much is printed besides the summary and errors.
    pub verbosity: Verbosity,
    /// Things worth telling the user that do not stop the release (unknown yml keys).
    pub warnings: Vec<String>,
}

/// The Docker engine endpoint, as chosen explicitly; `DOCKER_HOST`, `DOCKER_CERT_PATH`,
/// `DOCKER_CONTEXT` and the Docker config's current context are applied when connecting
/// ([`flow_docker::context::resolve`]), so that a context chosen here can beat `DOCKER_HOST`
/// as in the docker CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerEndpoint {
    /// `unix:///…`, `tcp://host:port`…; `None`: the environment or a context decides.
    pub host: Option<String>,
    /// Directory with `ca.pem`, `cert.pem` and `key.pem` for TLS, absolute.
    pub cert_path: Option<PathBuf>,
    /// A Docker context by name, and where the name came from (`--context`).
    pub context: Option<(String, String)>,
}

impl DockerEndpoint {
    /// What [`flow_docker::context::resolve`] takes.
    pub fn selection(&self) -> flow_docker::context::Selection {
        flow_docker::context::Selection {
            context: self.context.clone(),
            host: self.host.clone(),
            cert_path: self.cert_path.clone(),
        }
    }
}

/// Where release state, the deploy lock and registrations are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// The embedded file store in this directory (absolute).
    File(PathBuf),
    /// Consul's HTTP API at `address`, written `host:port` (plain HTTP).
    Consul {
        /// `host:port`.
        address: String,
    },
    /// An etcd cluster.
    Etcd {
        /// Each member's `host:port`, at least one.
        endpoints: Vec<String>,
    },
}

/// The proxy's reconfigure API.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// Its host name or IP.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The token it expects, if any (never printed).
    pub token: Option<String>,
}

impl fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .finish()
    }
}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `docker-flow proxy serve`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyServeConfig {
    /// Where the reconfigure API listens.
    pub api_addr: SocketAddr,
    /// Where HAProxy serves traffic, at least one.
    pub binds: Vec<SocketAddr>,
    /// Where HAProxy serves HTTPS (none: plain HTTP only).
    pub https_binds: Vec<SocketAddr>,
    /// `--certs-dir`: certificates served on the HTTPS addresses (absolute).
    pub certs_dir: Option<PathBuf>,
    /// Routes and the rendered configuration live here (absolute).
    pub state_dir: PathBuf,
    /// The HAProxy binary.
    pub haproxy: PathBuf,
    /// The token API callers must present (never printed); `None` only with `--no-auth` or
    /// when no token is set at all.
    pub api_token: Option<String>,
    /// `--stop-haproxy`: how long open connections may take to finish when HAProxy is
    /// stopped with the API; `None`: HAProxy keeps serving.
    pub stop_haproxy: Option<Duration>,
    /// Where instances are read from, when given.
    pub registry: Option<RegistryLocation>,
    /// Where `usersSecret=NAME` reads `dfp_users_NAME` (absolute).
    pub secrets_dir: PathBuf,
}

impl fmt::Debug for ProxyServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyServeConfig")
            .field("api_addr", &self.api_addr)
            .field("binds", &self.binds)
            .field("https_binds", &self.https_binds)
            .field("certs_dir", &self.certs_dir)
            .field("state_dir", &self.state_dir)
            .field("haproxy", &self.haproxy)
            .field("api_token", &self.api_token.as_ref().map(|_| Redacted))
            .field("stop_haproxy", &self.stop_haproxy)
            .field("registry", &self.registry)
            .field("secrets_dir", &self.secrets_dir)
            .finish()
    }
}

/// `docker-flow registrator`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistratorConfig {
    /// Where registrations are written.
    pub registry: RegistryLocation,
    /// The address registered for published ports (`None`: each port's host IP).
    pub ip: Option<IpAddr>,
    /// Re-sync all running containers this often (`None`: only at start-up and on events).
    pub resync: Option<Duration>,
    /// How containers become registrations (`--internal`, `--explicit`, `--tags`,
    /// `--use-ip-from-label`).
    pub rules: RegistratorRules,
    /// `--ttl` and `--ttl-refresh`: registrations expire unless written again.
    pub ttl: Option<RegistrationTtl>,
    /// `--deregister`.
    pub deregister: flow_registrator::Deregister,
    /// `--cleanup`.
    pub cleanup: bool,
    /// `--retry-attempts`: `None` without end.
    pub retry_attempts: Option<u32>,
    /// `--retry-interval`.
    pub retry_interval: Duration,
    /// The Docker engine watched.
    pub docker: DockerEndpoint,
}

/// The registrator's options that change what a container is registered as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistratorRules {
    /// `--internal`.
    pub internal: bool,
    /// `--explicit`.
    pub explicit: bool,
    /// `--tags`, split.
    pub tags: Vec<String>,
    /// `--use-ip-from-label`.
    pub ip_label: Option<String>,
}

/// `--ttl` with `--ttl-refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationTtl {
    /// How long a registration lives without being written again.
    pub ttl: Duration,
    /// How often every registration is written again.
    pub refresh: Duration,
}

/// Where an option's value came from; error messages name it so the user knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--scale`.
    Flag(&'static str),
    /// An environment variable, e.g. `FLOW_SCALE`.
    Env(&'static str),
    /// A key of `docker-flow.yml`.
    File {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// The key's 1-based line, when found.
        line: Option<usize>,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::File {
                path,
                key,
                line: Some(line),
            } => write!(f, "{} line {line}, key {key}", path.display()),
            Origin::File {
                path,
                key,
                line: None,
            } => write!(f, "{}, key {key}", path.display()),
        }
    }
}

/// Everything that makes an invocation unusable. Each message names the problem and the fix;
/// the binary exits with code 2 for all of them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The working directory cannot be determined (it was deleted, or is not readable).
    #[error("cannot determine the current directory ({source}): run docker-flow from an existing directory")]
    WorkingDirectory {
        /// The I/O error.
        source: io::Error,
    },
    /// `--build` and `--no-build` together.
    #[error("{build} and {no_build} are both set: give only one")]
    BuildAndNoBuild {
        /// Where build came from.
        build: Origin,
        /// Where no-build came from.
        no_build: Origin,
    },
    /// `--quiet` and `--verbose` together.
    #[error("{quiet} and {verbose} are both set: give only one")]
    QuietAndVerbose {
        /// Where quiet came from.
        quiet: Origin,
        /// Where verbose came from.
        verbose: Origin,
    },
    /// `docker-flow.yml` is larger than a configuration can be.
    #[error("{0}")]
    TooLarge(ComposeError),
    /// `docker-flow.yml` exists but cannot be read.
    #[error("cannot read {}: {source}; make it readable or remove it", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// `docker-flow.yml` is not valid YAML, is not a mapping, or gives a key a value of the
    /// wrong type (a list where one value is expected); the message names the key and line.
    #[error("{} is invalid: {message}; it must map option names (target, flow, scale, …) to values", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// The parser's message, with key and line.
        message: String,
    },
    /// A value does not parse as its type (boolean, port, duration, IP address, policy…).
    #[error("{origin} has the invalid value {value:?}: {expected}")]
    InvalidValue {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is accepted, with an example.
        expected: &'static str,
    },
    /// The API token is set but empty, which would turn authentication off unnoticed.
    #[error("{origin} is empty: set a token, or run the API without authentication explicitly with --no-auth")]
    EmptyApiToken {
        /// Where the empty token came from.
        origin: Origin,
    },
    /// `--no-auth` together with a token.
    #[error("--no-auth conflicts with the token of {origin}: remove one of them")]
    NoAuthWithToken {
        /// Where the token came from.
        origin: Origin,
    },
    /// No target is given anywhere.
    #[error("no target given: name the Compose service to release with --target/-t (or FLOW_TARGET, or `target:` in docker-flow.yml)")]
    MissingTarget,
    /// `--scale` is not `N`, `+N` or `-N`.
    #[error("{origin}: {source}")]
    InvalidScale {
        /// Where the value came from.
        origin: Origin,
        /// The parse error.
        source: InvalidScale,
    },
    /// `--flow` names a step that does not exist (1.x ignored it; we refuse).
    #[error("{origin}: {source}")]
    UnknownStep {
        /// Where the list came from.
        origin: Origin,
        /// The parse error.
        source: UnknownStep,
    },
    /// `--flow` names a step twice.
    #[error(
        "{origin} lists the step {step} twice: give each step once, in the order they should run"
    )]
    DuplicateStep {
        /// Where the list came from.
        origin: Origin,
        /// The repeated step.
        step: Step,
    },
    /// `-F proxy` without a route.
    #[error("--service-path is required with -F proxy: give the URL paths the proxy routes to the service, e.g. --service-path=/api")]
    ProxyStepWithoutServicePath,
    /// `-F proxy` without a proxy to talk to.
    #[error("-F proxy needs --proxy-host: give the host of the proxy's API (run by `docker-flow proxy serve`)")]
    ProxyStepWithoutProxyHost,
    /// A proxy is configured but no route for it.
    #[error("{origin} configures a proxy, which needs a route: give --service-path too, e.g. --service-path=/api")]
    ProxyHostWithoutServicePath {
        /// Where the proxy host came from.
        origin: Origin,
    },
    /// A domain is given without paths; routes are made of paths, so it would be ignored.
    #[error("{origin} needs --service-path: a route is a set of paths, optionally restricted to a domain")]
    ServiceDomainWithoutServicePath {
        /// Where the domain came from.
        origin: Origin,
    },
    /// `--proxy-docker-host` / `--proxy-docker-cert-path` (1.x started the proxy container).
    #[error("{origin} is not supported: docker-flow does not start the proxy container itself; run `docker-flow proxy serve` where the proxy should run (README, section \"Running the proxy\") and point --proxy-host at it")]
    ProxyDockerHostUnsupported {
        /// Where the option came from.
        origin: Origin,
    },
    /// `--consul-template-fe-path` / `--consul-template-be-path` (1.x custom proxy templates).
    #[error("{origin} is not supported: the proxy renders its own HAProxy configuration from the routes docker-flow sends it (paths, domain, path type), so custom Consul templates would have no effect; remove the option")]
    ConsulTemplateUnsupported {
        /// Where the option came from.
        origin: Origin,
    },
    /// `-F stop-old` without blue-green: there is no old colour.
    #[error(
        "-F stop-old needs --blue-green/-b: without blue-green there is no old colour to stop"
    )]
    StopOldWithoutBlueGreen,
    /// A registry URL in none of the accepted forms.
    #[error("{origin} has the invalid registry {value:?} ({reason}): use file:PATH, consul://HOST:PORT or etcd://HOST:PORT[,HOST:PORT…]")]
    InvalidRegistry {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--registry` and `--consul-address` name different stores.
    #[error("{registry} and {consul_address} choose different registries: give only one (--registry=consul://HOST:PORT is the same as --consul-address=HOST:PORT)")]
    ConflictingRegistry {
        /// Where the registry URL came from.
        registry: Origin,
        /// Where the Consul address came from.
        consul_address: Origin,
    },
    /// `--ttl` without `--ttl-refresh`, or the other way round.
    #[error("{given} needs {missing} as well: registrations that expire must be written again before they do (Registrator's -ttl and -ttl-refresh go together too)")]
    TtlWithoutRefresh {
        /// The one given.
        given: Origin,
        /// The flag missing.
        missing: &'static str,
    },
    /// `--ttl` not longer than `--ttl-refresh`.
    #[error("{ttl} must be longer than {refresh}, or registrations expire between two refreshes")]
    TtlNotAboveRefresh {
        /// Where the TTL came from.
        ttl: Origin,
        /// Where the refresh period came from.
        refresh: Origin,
    },
    /// `--ttl` with a registry whose registrations do not expire.
    #[error("{origin} needs a registry that expires registrations, and {registry} does not (Consul has no TTL for services; Registrator ignores -ttl there); use an etcd registry, or on Consul SERVICE_CHECK_TTL with SERVICE_CHECK_DEREGISTER_AFTER")]
    TtlUnsupported {
        /// Where the TTL came from.
        origin: Origin,
        /// The registry, as given.
        registry: String,
    },
    /// `--tags` with a Go template (Registrator renders them against the container).
    #[error("{origin} has {value:?}, a Go template: docker-flow does not render templates in --tags; give plain comma-separated tags (per-container tags belong in SERVICE_TAGS)")]
    TagTemplate {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
    },
    /// `docker-flow registrator` without a registry.
    #[error("docker-flow registrator needs a registry: give --registry (or FLOW_REGISTRY), e.g. --registry=consul://127.0.0.1:8500")]
    MissingRegistry,
    /// A word after release flags that is not `rollback` or `status`.
    #[error("unexpected argument {word:?}: the subcommands are rollback, status, proxy, registrator, completions and man; only rollback and status may follow release options (docker-flow -t app rollback), the others come first (docker-flow --help)")]
    UnexpectedWord {
        /// The word.
        word: String,
    },
    /// A release flag given to `status`, which reads only.
    #[error("docker-flow status does not use {flag}: it only reads what runs; remove it")]
    NotForStatus {
        /// The flag.
        flag: &'static str,
    },
    /// An explicit project name Compose would not accept.
    #[error("{origin} has the invalid project name {value:?}: use lowercase letters, digits, '-' and '_', starting with a letter or digit")]
    InvalidProject {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
    },
    /// The Compose file's directory name gives no usable project name.
    #[error("cannot derive a project name from the directory {}: give one with --project/-p", dir.display())]
    NoProjectName {
        /// The Compose file's directory.
        dir: PathBuf,
    },
    /// The service name (`<project>-<target>` or the override) is not a valid name.
    #[error("{source} (the service name {derivation}); choose a valid one with --service-name (FLOW_SERVICENAME, `servicename:` in docker-flow.yml)")]
    InvalidServiceName {
        /// How the name was formed.
        derivation: String,
        /// The validation error.
        source: InvalidServiceName,
    },
}

/// Turns the parsed command line and the process context into a validated [`Command`].
///
/// A release also reads `context.config_file` (`./docker-flow.yml`); the subcommands read
/// only their flags and the environment variables their help names.
pub fn load(cli: Cli, context: &Context) -> Result<Command, ConfigError> {
    match cli.word {
        // Clap takes no subcommand after a flag, so a word there comes without one.
        Some(word) => load_word(&word, cli.release, context),
        None => load_command(cli.command, cli.release, context),
    }
}

/// `rollback` or `status`, with the release flags given before or after the word.
fn load_word(
    word: &str,
    mut flags: ReleaseFlags,
    context: &Context,
) -> Result<Command, ConfigError> {
    match word {
        "rollback" => {
            // The word names the first step; `-F` adds the ones after it (`-F stop-old`).
            // The `flow` of docker-flow.yml and FLOW describe releases, not this command.
            let rollback = Step::Rollback.as_str().to_string();
            flags
                .flow
                .retain(|step| !step.trim().eq_ignore_ascii_case(&rollback));
            flags.flow.insert(0, rollback);
            load_release(flags, context, Purpose::Release)
                .map(|config| Command::Release(Box::new(config)))
        }
        "status" => {
            let given = [
                (FLOW.flag, !flags.flow.is_empty()),
                (SCALE.flag, flags.scale.is_some()),
                (SIDE_TARGETS.flag, !flags.side_targets.is_empty()),
                (PULL.flag, flags.pull.is_some()),
                (PULL_SIDE_TARGETS.flag, flags.pull_side_targets.is_some()),
                (HEALTH_TIMEOUT.flag, flags.health_timeout.is_some()),
                (HEALTH_FAIL_FAST.flag, flags.health_fail_fast.is_some()),
                (DRAIN_TIMEOUT.flag, flags.drain_timeout.is_some()),
                (DRY_RUN.flag, flags.dry_run.is_some()),
                (SERVICE_PATH.flag, !flags.service_path.is_empty()),
                (SERVICE_DOMAIN.flag, flags.service_domain.is_some()),
                (PATH_TYPE.flag, flags.path_type.is_some()),
            ];
            if let Some((flag, _)) = given.into_iter().find(|(_, given)| *given) {
                return Err(ConfigError::NotForStatus { flag });
            }
            load_release(flags, context, Purpose::Status)
                .map(|config| Command::Status(Box::new(config)))
        }
        other => Err(ConfigError::UnexpectedWord {
            word: other.to_string(),
        }),
    }
}

fn load_command(
    command: Option<CommandArgs>,
    release: ReleaseFlags,
    context: &Context,
) -> Result<Command, ConfigError> {
    match command {
        None => load_release(release, context, Purpose::Release)
            .map(|config| Command::Release(Box::new(config))),
        Some(CommandArgs::Rollback(flags)) => load_word("rollback", flags, context),
        Some(CommandArgs::Status(flags)) => load_word("status", flags, context),
        Some(CommandArgs::Proxy {
            command: ProxyCommandArgs::Serve(flags),
        }) => load_proxy_serve(flags, context).map(Command::ProxyServe),
        Some(CommandArgs::Registrator(flags)) => {
            load_registrator(*flags, context).map(Command::Registrator)
        }
        Some(CommandArgs::Completions { shell }) => Ok(Command::Completions(shell)),
        Some(CommandArgs::Man) => Ok(Command::Manual),
        Some(CommandArgs::Config(flags)) => {
            load_compose_config(flags, context).map(Command::ComposeConfig)
        }
    }
}

/// `docker-flow config` reads `docker-flow.yml` and the environment for the Compose file and
/// the project name as a release does, so that it shows what a release would run.
fn load_compose_config(
    flags: ComposeConfigFlags,
    context: &Context,
) -> Result<ComposeConfigRequest, ConfigError> {
    let file = parsed_file(context)?;
    let layers = Layers { context, file };
    let (compose_path, project) = compose_location(&layers, flags.compose_path, flags.project)?;
    Ok(ComposeConfigRequest {
        compose_path,
        project,
        target: flags.target,
        profiles: flags.profiles,
        json: flags.json,
    })
}

/// `docker-flow.yml`, parsed, when there is one.
fn parsed_file(context: &Context) -> Result<Option<(&Path, ParsedFile)>, ConfigError> {
    let Some(config) = &context.config_file else {
        return Ok(None);
    };
    let parsed = ParsedFile::parse(&config.text).map_err(|error| ConfigError::InvalidFile {
        path: config.path.clone(),
        message: error.to_string(),
    })?;
    Ok(Some((config.path.as_path(), parsed)))
}

/// The Compose file (absolute) and the project name: the layered options, else
/// `docker-compose.yml` and the file's directory name.
fn compose_location(
    layers: &Layers,
    compose_path: Option<String>,
    project: Option<String>,
) -> Result<(PathBuf, String), ConfigError> {
    let context = layers.context;
    let compose_path = absolute(
        &context.cwd,
        &layers
            .scalar(&COMPOSE_PATH, compose_path)
            .map(|value| value.text)
            .unwrap_or_else(|| "docker-compose.yml".to_string()),
    );
    let compose_dir = compose_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| context.cwd.clone());
    let project = match layers.scalar(&PROJECT, project) {
        Some(value) if valid_project(&value.text) => value.text,
        Some(value) => {
            return Err(ConfigError::InvalidProject {
                origin: value.origin,
                value: value.text,
            })
        }
        None => project_from_dir(&compose_dir).ok_or_else(|| ConfigError::NoProjectName {
            dir: compose_dir.clone(),
        })?,
    };
    Ok((compose_path, project))
}

/// How one option is spelled in each layer.
struct Key {
    flag: &'static str,
    yml: &'static str,
    env: &'static [&'static str],
}

macro_rules! keys {
    ($($name:ident = $flag:literal, $yml:literal, [$($env:literal),*];)*) => {
        $(const $name: Key = Key { flag: $flag, yml: $yml, env: &[$($env),*] };)*
    };
}

keys! {
    TARGET = "--target", "target", ["FLOW_TARGET"];
    SIDE_TARGETS = "--side-target", "side_targets", ["FLOW_SIDE_TARGETS"];
    BLUE_GREEN = "--blue-green", "blue_green", ["FLOW_BLUE_GREEN"];
    FLOW = "--flow", "flow", ["FLOW_FLOW", "FLOW"];
    SCALE = "--scale", "scale", ["FLOW_SCALE"];
    COMPOSE_PATH = "--compose-path", "compose_path", ["FLOW_COMPOSE_PATH"];
    PROJECT = "--project", "project", ["FLOW_PROJECT"];
    HOST = "--host", "host", ["FLOW_HOST"];
    CONTEXT = "--context", "context", ["FLOW_CONTEXT"];
    QUIET = "--quiet", "quiet", ["FLOW_QUIET"];
    VERBOSE = "--verbose", "verbose", ["FLOW_VERBOSE"];
    CERT_PATH = "--cert-path", "cert_path", ["FLOW_CERT_PATH"];
    CONSUL_ADDRESS = "--consul-address", "consul_address", ["FLOW_CONSUL_ADDRESS"];
    PROXY_HOST = "--proxy-host", "proxy_host", ["FLOW_PROXY_HOST"];
    PROXY_RECONF_PORT = "--proxy-reconf-port", "proxy_reconf_port", ["FLOW_PROXY_RECONF_PORT"];
    PROXY_DOCKER_HOST = "--proxy-docker-host", "proxy_docker_host", ["FLOW_PROXY_DOCKER_HOST"];
    PROXY_DOCKER_CERT_PATH = "--proxy-docker-cert-path", "proxy_docker_cert_path", ["FLOW_PROXY_DOCKER_CERT_PATH"];
    SERVICE_PATH = "--service-path", "service_path", ["FLOW_SERVICE_PATH"];
    PULL_SIDE_TARGETS = "--pull-side-targets", "pull_side_targets", ["FLOW_PULL_SIDE_TARGETS"];
    CONSUL_TEMPLATE_FE_PATH = "--consul-template-fe-path", "consul_template_fe_path", ["FLOW_CONSUL_TEMPLATE_FE_PATH"];
    CONSUL_TEMPLATE_BE_PATH = "--consul-template-be-path", "consul_template_be_path", ["FLOW_CONSUL_TEMPLATE_BE_PATH"];
    SERVICE_NAME = "--service-name", "servicename", ["FLOW_SERVICENAME"];
    HEALTH_PATH = "--health-path", "health_path", ["FLOW_HEALTH_PATH"];
    PORT = "--port", "port", ["FLOW_PORT"];
    HEALTH_TIMEOUT = "--health-timeout", "health_timeout", ["FLOW_HEALTH_TIMEOUT"];
    HEALTH_FAIL_FAST = "--health-fail-fast", "health_fail_fast", ["FLOW_HEALTH_FAIL_FAST"];
    DRAIN_TIMEOUT = "--drain-timeout", "drain_timeout", ["FLOW_DRAIN_TIMEOUT"];
    PULL = "--pull", "pull", ["FLOW_PULL"];
    BUILD = "--build", "build", ["FLOW_BUILD"];
    NO_BUILD = "--no-build", "no_build", ["FLOW_NO_BUILD"];
    SERVICE_DOMAIN = "--service-domain", "service_domain", ["FLOW_SERVICE_DOMAIN"];
    PATH_TYPE = "--path-type", "path_type", ["FLOW_PATH_TYPE"];
    PROXY_TOKEN = "--proxy-token", "proxy_token", ["FLOW_PROXY_TOKEN"];
    ADVERTISE_ADDR = "--advertise-addr", "advertise_addr", ["FLOW_ADVERTISE_ADDR"];
    REGISTRY = "--registry", "registry", ["FLOW_REGISTRY"];
    DRY_RUN = "--dry-run", "dry_run", ["FLOW_DRY_RUN"];
    JSON = "--json", "json", ["FLOW_JSON"];
    API_TOKEN = "--api-token", "", ["FLOW_PROXY_TOKEN"];
    IP = "--ip", "", ["FLOW_IP"];
    RESYNC = "--resync", "", ["FLOW_RESYNC"];
    INTERNAL = "--internal", "", ["FLOW_INTERNAL"];
    EXPLICIT = "--explicit", "", ["FLOW_EXPLICIT"];
    TAGS = "--tags", "", ["FLOW_TAGS"];
    USE_IP_FROM_LABEL = "--use-ip-from-label", "", ["FLOW_USE_IP_FROM_LABEL"];
    TTL = "--ttl", "", ["FLOW_TTL"];
    TTL_REFRESH = "--ttl-refresh", "", ["FLOW_TTL_REFRESH"];
    DEREGISTER = "--deregister", "", ["FLOW_DEREGISTER"];
    CLEANUP = "--cleanup", "", ["FLOW_CLEANUP"];
    RETRY_ATTEMPTS = "--retry-attempts", "", ["FLOW_RETRY_ATTEMPTS"];
    RETRY_INTERVAL = "--retry-interval", "", ["FLOW_RETRY_INTERVAL"];
    API_ADDR = "--api-addr", "", [];
    BIND = "--bind", "", [];
    BIND_HTTPS = "--bind-https", "", [];
    STOP_TIMEOUT = "--stop-timeout", "", [];
}

/// One layered value and where it came from.
struct Value {
    text: String,
    origin: Origin,
}

/// The layers below the flags: environment, then the yml file.
struct Layers<'a> {
    context: &'a Context,
    file: Option<(&'a Path, ParsedFile)>,
}

impl Layers<'_> {
    /// The value of a single-valued option: flag, else env, else yml.
    fn scalar(&self, key: &Key, flag: Option<String>) -> Option<Value> {
        if let Some(text) = flag {
            return Some(Value {
                text,
                origin: Origin::Flag(key.flag),
            });
        }
        for &name in key.env {
            if let Some(text) = self.context.env(name).filter(|text| !text.is_empty()) {
                return Some(Value {
                    text,
                    origin: Origin::Env(name),
                });
            }
        }
        let (path, file) = self.file.as_ref()?;
        let text = file.options.scalar(key.yml)?.to_string();
        Some(Value {
            text,
            origin: self.file_origin(path, file, key),
        })
    }

    /// The value of a list option: the flags when any is given, else the env list
    /// (comma-separated), else the yml list.
    fn list(&self, key: &Key, flags: Vec<String>) -> Option<(Vec<String>, Origin)> {
        if !flags.is_empty() {
            return Some((flags, Origin::Flag(key.flag)));
        }
        for &name in key.env {
            if let Some(text) = self.context.env(name) {
                let items = text
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect();
                return Some((items, Origin::Env(name)));
            }
        }
        let (path, file) = self.file.as_ref()?;
        let items = file.options.list(key.yml)?.to_vec();
        Some((items, self.file_origin(path, file, key)))
    }

    fn file_origin(&self, path: &Path, file: &ParsedFile, key: &Key) -> Origin {
        Origin::File {
            path: path.to_path_buf(),
            key: key.yml,
            line: file.lines.get(key.yml).copied(),
        }
    }

    fn bool(&self, key: &Key, flag: Option<String>) -> Result<bool, ConfigError> {
        self.scalar(key, flag)
            .map(|value| parse_bool(&value))
            .transpose()
            .map(|value| value.unwrap_or(false))
    }
}

fn invalid(value: Value, expected: &'static str) -> ConfigError {
    ConfigError::InvalidValue {
        origin: value.origin,
        value: value.text,
        expected,
    }
}

/// `true/false`, `yes/no`, `1/0`, any case.
fn parse_bool(value: &Value) -> Result<bool, ConfigError> {
    match value.text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(invalid(
            Value {
                text: value.text.clone(),
                origin: value.origin.clone(),
            },
            "use true or false (also accepted: yes/no, 1/0)",
        )),
    }
}

/// A Go duration (`500ms`, `90s`, `2m`, `1m30s`) or a plain number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => flow_core::time::go_duration::parse(text).ok(),
    }
}

const DURATION_EXPECTED: &str = "use a duration such as 90s, 2m, 500ms or a number of seconds";

fn duration(value: Option<Value>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) => match parse_duration(&value.text) {
            Some(duration) if !duration.is_zero() => Ok(duration),
            _ => Err(invalid(value, DURATION_EXPECTED)),
        },
    }
}

fn port(value: Value) -> Result<u16, ConfigError> {
    match value.text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(invalid(value, "use a port number from 1 to 65535")),
    }
}

/// Removes `.` and `..` components without touching the file system (the file may not
/// exist yet, and symlinks are the user's business).
fn normalize(path: &Path) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    normalized
}

fn absolute(base: &Path, path: &str) -> PathBuf {
    normalize(&base.join(path))
}

/// Compose's rule for a directory name as a project name: lowercase, keep `[a-z0-9_-]`,
/// then drop leading `_` and `-`.
fn project_from_dir(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_string_lossy().to_lowercase();
    let kept: String = name
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        .collect();
    let trimmed = kept.trim_start_matches(['_', '-']);
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn valid_project(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// Parses a registry URL; relative `file:` paths are resolved against `base`.
fn parse_registry(text: &str, base: &Path) -> Result<RegistryLocation, String> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix("file:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("the path is empty".into());
        }
        Ok(RegistryLocation::File(absolute(base, path)))
    } else if let Some(rest) = text.strip_prefix("consul://") {
        Ok(RegistryLocation::Consul {
            address: flow_core::address::authority(rest, 8500)?,
        })
    } else if let Some(rest) = text.strip_prefix("etcd://") {
        Ok(RegistryLocation::Etcd {
            endpoints: flow_core::address::authority_list(rest, 2379)?,
        })
    } else {
        Err("unknown form".into())
    }
}

fn registry(value: Value, base: &Path) -> Result<RegistryLocation, ConfigError> {
    parse_registry(&value.text, base).map_err(|reason| ConfigError::InvalidRegistry {
        origin: value.origin,
        value: value.text,
        reason,
    })
}

/// `--consul-address`: `http://host:port` or `host:port` (1.x took the URL form).
fn consul_address(value: Value) -> Result<RegistryLocation, ConfigError> {
    let text = value.text.trim();
    let rest = text.strip_prefix("http://").unwrap_or(text);
    let result = if rest.contains("://") {
        Err("only http:// is supported".to_string())
    } else {
        flow_core::address::authority(rest, 8500)
    };
    match result {
        Ok(address) => Ok(RegistryLocation::Consul { address }),
        Err(reason) => Err(ConfigError::InvalidRegistry {
            origin: value.origin,
            value: value.text,
            reason,
        }),
    }
}

fn docker_endpoint(
    layers: &Layers<'_>,
    host: Option<Value>,
    cert_path: Option<Value>,
    context: Option<Value>,
) -> DockerEndpoint {
    DockerEndpoint {
        host: host.map(|value| value.text),
        cert_path: cert_path.map(|value| absolute(&layers.context.cwd, &value.text)),
        context: context.map(|value| (value.text.trim().to_string(), value.origin.to_string())),
    }
}

/// What the release options are loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A release or rollback: a configured proxy needs a route to switch.
    Release,
    /// `status`: a proxy is only asked for the route it has.
    Status,
}

fn load_release(
    flags: ReleaseFlags,
    context: &Context,
    purpose: Purpose,
) -> Result<ReleaseConfig, ConfigError> {
    let file = parsed_file(context)?;
    let warnings = file
        .as_ref()
        .map(|(path, parsed)| {
            parsed
                .unknown_keys
                .iter()
                .map(|key| match parsed.lines.get(key) {
                    Some(line) => format!(
                        "{} line {line}: unknown key {key:?} is ignored",
                        path.display()
                    ),
                    None => format!("{}: unknown key {key:?} is ignored", path.display()),
                })
                .collect()
        })
        .unwrap_or_default();
    let layers = Layers { context, file };

    // Options that cannot work here come first: they are the most surprising to a 1.x user.
    for (key, flag) in [
        (&PROXY_DOCKER_HOST, flags.proxy_docker_host),
        (&PROXY_DOCKER_CERT_PATH, flags.proxy_docker_cert_path),
    ] {
        if let Some(value) = layers.scalar(key, flag) {
            return Err(ConfigError::ProxyDockerHostUnsupported {
                origin: value.origin,
            });
        }
    }
    for (key, flag) in [
        (&CONSUL_TEMPLATE_FE_PATH, flags.consul_template_fe_path),
        (&CONSUL_TEMPLATE_BE_PATH, flags.consul_template_be_path),
    ] {
        if let Some(value) = layers.scalar(key, flag) {
            return Err(ConfigError::ConsulTemplateUnsupported {
                origin: value.origin,
            });
        }
    }

    let target = layers
        .scalar(&TARGET, flags.target)
        .map(|value| value.text.trim().to_string())
        .filter(|target| !target.is_empty())
        .ok_or(ConfigError::MissingTarget)?;
    let side_targets = layers
        .list(&SIDE_TARGETS, flags.side_targets)
        .map(|(items, _)| items)
        .unwrap_or_default();
    let blue_green = layers.bool(&BLUE_GREEN, flags.blue_green)?;

    let steps = match layers.list(&FLOW, flags.flow) {
        Some((items, origin)) if !items.is_empty() => parse_steps(&items, origin)?,
        _ => vec![Step::Deploy],
    };
    let scale = layers
        .scalar(&SCALE, flags.scale)
        .map(|value| {
            ScaleSpec::from_str(value.text.trim()).map_err(|source| ConfigError::InvalidScale {
                origin: value.origin,
                source,
            })
        })
        .transpose()?;
    if steps.contains(&Step::StopOld) && !blue_green {
        return Err(ConfigError::StopOldWithoutBlueGreen);
    }

    let path_type = match layers.scalar(&PATH_TYPE, flags.path_type) {
        None => PathType::default(),
        Some(value) => PathType::from_haproxy_matcher(value.text.trim()).ok_or_else(|| {
            invalid(
                value,
                "use path_beg (prefix), path (exact), path_end or path_reg",
            )
        })?,
    };
    let service_paths = match layers.list(&SERVICE_PATH, flags.service_path) {
        None => Vec::new(),
        Some((paths, origin)) => {
            for path in &paths {
                let shaped = !path.chars().any(char::is_whitespace)
                    && (path_type == PathType::Regex || path.starts_with('/'));
                if !shaped {
                    return Err(ConfigError::InvalidValue {
                        origin,
                        value: path.clone(),
                        expected: "use a URL path starting with '/' and without spaces, e.g. /api",
                    });
                }
                // The proxy's own rules, checked here so that a path it would refuse stops the
                // run before anything is started.
                if let Err(flow_proxy_client::validate::InvalidInput::Path { reason, .. }) =
                    flow_proxy_client::validate::check_path(path, path_type)
                {
                    return Err(ConfigError::InvalidValue {
                        origin,
                        value: path.clone(),
                        expected: reason,
                    });
                }
            }
            paths
        }
    };
    let domain = layers
        .scalar(&SERVICE_DOMAIN, flags.service_domain)
        .map(|value| {
            let text = value.text.trim();
            if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '/') {
                Err(invalid(value, "use a host name such as app.example.com"))
            } else if let Err(flow_proxy_client::validate::InvalidInput::Domain {
                reason, ..
            }) = flow_proxy_client::validate::check_domain(text)
            {
                Err(invalid(value, reason))
            } else {
                Ok((text.to_string(), value.origin))
            }
        })
        .transpose()?;
    let proxy_host = layers.scalar(&PROXY_HOST, flags.proxy_host);

    if steps.contains(&Step::Proxy) {
        if service_paths.is_empty() {
            return Err(ConfigError::ProxyStepWithoutServicePath);
        }
        if proxy_host.is_none() {
            return Err(ConfigError::ProxyStepWithoutProxyHost);
        }
    }
    if let (Some(host), Purpose::Release) = (&proxy_host, purpose) {
        if service_paths.is_empty() {
            return Err(ConfigError::ProxyHostWithoutServicePath {
                origin: host.origin.clone(),
            });
        }
    }
    if let (Some((_, origin)), true) = (&domain, service_paths.is_empty()) {
        return Err(ConfigError::ServiceDomainWithoutServicePath {
            origin: origin.clone(),
        });
    }
    let route = (!service_paths.is_empty()).then(|| RouteSettings {
        paths: service_paths,
        domain: domain.map(|(domain, _)| domain),
        path_type,
    });

    let proxy_token = layers
        .scalar(&PROXY_TOKEN, flags.proxy_token)
        .map(|value| value.text);
    let proxy = match proxy_host {
        None => None,
        Some(host) => {
            let port = match layers.scalar(&PROXY_RECONF_PORT, flags.proxy_reconf_port) {
                None => 8080,
                Some(value) => port(value)?,
            };
            let text = host.text.trim();
            let name = text
                .strip_prefix("http://")
                .unwrap_or(text)
                .trim_end_matches('/');
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/' || c == ':')
            {
                return Err(invalid(
                    host,
                    "use the proxy's host name or IP address, e.g. 127.0.0.1 (its port goes in --proxy-reconf-port)",
                ));
            }
            Some(ProxyEndpoint {
                host: name.to_string(),
                port,
                token: proxy_token,
            })
        }
    };

    let (compose_path, project) = compose_location(&layers, flags.compose_path, flags.project)?;
    let compose_dir = compose_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| context.cwd.clone());
    let service = match layers.scalar(&SERVICE_NAME, flags.service_name) {
        Some(value) => ServiceName::new(value.text.trim()).map_err(|source| {
            ConfigError::InvalidServiceName {
                derivation: format!("comes from {}", value.origin),
                source,
            }
        })?,
        None => ServiceName::new(format!("{project}-{target}")).map_err(|source| {
            ConfigError::InvalidServiceName {
                derivation: "is <project>-<target>".to_string(),
                source,
            }
        })?,
    };

    let registry_value = layers.scalar(&REGISTRY, flags.registry);
    let consul_value = layers.scalar(&CONSUL_ADDRESS, flags.consul_address);
    let registry = match (registry_value, consul_value) {
        (None, None) => RegistryLocation::File(compose_dir.join(".docker-flow")),
        (Some(value), None) => registry(value, &compose_dir)?,
        (None, Some(value)) => consul_address(value)?,
        (Some(registry_value), Some(consul_value)) => {
            let registry_origin = registry_value.origin.clone();
            let consul_origin = consul_value.origin.clone();
            let from_registry = registry(registry_value, &compose_dir)?;
            if from_registry != consul_address(consul_value)? {
                return Err(ConfigError::ConflictingRegistry {
                    registry: registry_origin,
                    consul_address: consul_origin,
                });
            }
            from_registry
        }
    };

    let timeouts = Timeouts {
        health: duration(
            layers.scalar(&HEALTH_TIMEOUT, flags.health_timeout),
            Timeouts::default().health,
        )?,
        drain: match layers.scalar(&DRAIN_TIMEOUT, flags.drain_timeout) {
            None => Timeouts::default().drain,
            // Zero is a valid drain: stop without waiting for open requests.
            Some(value) => {
                parse_duration(&value.text).ok_or_else(|| invalid(value, DURATION_EXPECTED))?
            }
        },
        ..Timeouts::default()
    };

    let pull = match layers.scalar(&PULL, flags.pull) {
        None => PullPolicy::default(),
        // Any case is accepted (`--pull=Always`); flow-docker's names are lower case.
        Some(value) => value
            .text
            .trim()
            .to_ascii_lowercase()
            .parse::<PullPolicy>()
            .map_err(|_| invalid(value, "use always, missing or never"))?,
    };
    let health_path = layers
        .scalar(&HEALTH_PATH, flags.health_path)
        .map(|value| {
            if value.text.starts_with('/') && !value.text.contains(char::is_whitespace) {
                Ok(value.text)
            } else {
                Err(invalid(
                    value,
                    "use an HTTP path starting with '/', e.g. /health",
                ))
            }
        })
        .transpose()?;
    let service_port = layers.scalar(&PORT, flags.port).map(port).transpose()?;
    let advertise_addr = layers
        .scalar(&ADVERTISE_ADDR, flags.advertise_addr)
        .map(|value| {
            value
                .text
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| invalid(value, "use an IP address such as 192.0.2.10"))
        })
        .transpose()?;
    let docker = docker_endpoint(
        &layers,
        layers.scalar(&HOST, flags.host),
        layers.scalar(&CERT_PATH, flags.cert_path),
        layers.scalar(&CONTEXT, flags.context),
    );
    let quiet = layers.scalar(&QUIET, flags.quiet);
    let verbose = layers.scalar(&VERBOSE, flags.verbose);
    let quiet_origin = quiet.as_ref().map(|value| value.origin.clone());
    let verbose_origin = verbose.as_ref().map(|value| value.origin.clone());
    let verbosity = match (
        quiet.map(|value| parse_bool(&value)).transpose()?,
        verbose.map(|value| parse_bool(&value)).transpose()?,
    ) {
        (Some(true), Some(true)) => {
            return Err(ConfigError::QuietAndVerbose {
                quiet: quiet_origin.unwrap_or(Origin::Flag(QUIET.flag)),
                verbose: verbose_origin.unwrap_or(Origin::Flag(VERBOSE.flag)),
            })
        }
        (Some(true), _) => Verbosity::Quiet,
        (_, Some(true)) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    let build_value = layers.scalar(&BUILD, flags.build);
    let no_build_value = layers.scalar(&NO_BUILD, flags.no_build);
    let build_origin = build_value.as_ref().map(|value| value.origin.clone());
    let no_build_origin = no_build_value.as_ref().map(|value| value.origin.clone());
    let build = match (
        build_value.map(|value| parse_bool(&value)).transpose()?,
        no_build_value.map(|value| parse_bool(&value)).transpose()?,
    ) {
        (Some(true), Some(true)) => {
            return Err(ConfigError::BuildAndNoBuild {
                build: build_origin.unwrap_or(Origin::Flag(BUILD.flag)),
                no_build: no_build_origin.unwrap_or(Origin::Flag(NO_BUILD.flag)),
            })
        }
        (Some(true), _) => BuildPolicy::Always,
        (_, Some(true)) => BuildPolicy::Never,
        _ => BuildPolicy::Missing,
    };
    let pull_side_targets = layers.bool(&PULL_SIDE_TARGETS, flags.pull_side_targets)?;
    let health_fail_fast = layers.bool(&HEALTH_FAIL_FAST, flags.health_fail_fast)?;
    let dry_run = layers.bool(&DRY_RUN, flags.dry_run)?;
    let json = layers.bool(&JSON, flags.json)?;

    Ok(ReleaseConfig {
        release: ReleaseOptions {
            service,
            target,
            side_targets,
            blue_green,
            steps,
            scale,
            route,
            timeouts,
            health_fail_fast,
            holder: format!("docker-flow pid {} on {}", context.pid, context.hostname),
        },
        compose_path,
        project,
        docker,
        registry,
        proxy,
        pull,
        pull_side_targets,
        build,
        health_path,
        port: service_port,
        advertise_addr,
        dry_run,
        json,
        verbosity,
        warnings,
    })
}

fn parse_steps(items: &[String], origin: Origin) -> Result<Vec<Step>, ConfigError> {
    let mut steps = Vec::with_capacity(items.len());
    for item in items {
        let step = Step::from_str(item).map_err(|source| ConfigError::UnknownStep {
            origin: origin.clone(),
            source,
        })?;
        if steps.contains(&step) {
            return Err(ConfigError::DuplicateStep { origin, step });
        }
        steps.push(step);
    }
    Ok(steps)
}

fn socket_addr(value: Value) -> Result<SocketAddr, ConfigError> {
    value
        .text
        .trim()
        .parse()
        .map_err(|_| invalid(value, "use IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"))
}

fn load_proxy_serve(
    flags: ProxyServeFlags,
    context: &Context,
) -> Result<ProxyServeConfig, ConfigError> {
    let layers = Layers {
        context,
        file: None,
    };
    let api_addr = match layers.scalar(&API_ADDR, flags.api_addr) {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(value) => socket_addr(value)?,
    };
    let binds = if flags.bind.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 8081))]
    } else {
        flags
            .bind
            .into_iter()
            .map(|text| {
                socket_addr(Value {
                    text,
                    origin: Origin::Flag(BIND.flag),
                })
            })
            .collect::<Result<_, _>>()?
    };
    let https_binds = flags
        .bind_https
        .into_iter()
        .map(|text| {
            socket_addr(Value {
                text,
                origin: Origin::Flag(BIND_HTTPS.flag),
            })
        })
        .collect::<Result<_, _>>()?;
    let certs_dir = flags
        .certs_dir
        .as_deref()
        .map(|dir| absolute(&context.cwd, dir));
    let state_dir = absolute(
        &context.cwd,
        flags.state_dir.as_deref().unwrap_or(".docker-flow-proxy"),
    );
    let haproxy = match flags.haproxy {
        Some(path) => absolute(&context.cwd, &path),
        None => {
            find_on_path(context, "haproxy").unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy"))
        }
    };
    // `scalar` skips empty environment values, which here would switch authentication off
    // without a word: an empty token, from the flag or the environment, is refused.
    let empty_token = match &flags.api_token {
        Some(token) if token.trim().is_empty() => Some(Origin::Flag(API_TOKEN.flag)),
        Some(_) => None,
        None => API_TOKEN
            .env
            .iter()
            .find(|name| context.env(name).is_some_and(|text| text.trim().is_empty()))
            .map(|name| Origin::Env(name)),
    };
    let api_token = layers.scalar(&API_TOKEN, flags.api_token);
    let api_token = match (flags.no_auth, empty_token, api_token) {
        (true, _, Some(value)) if !value.text.trim().is_empty() => {
            return Err(ConfigError::NoAuthWithToken {
                origin: value.origin,
            })
        }
        (true, _, _) => None,
        (false, Some(origin), _) => return Err(ConfigError::EmptyApiToken { origin }),
        (false, None, value) => value.map(|value| value.text),
    };
    let stop_haproxy = if flags.stop_haproxy {
        let value = flags.stop_timeout.map(|text| Value {
            text,
            origin: Origin::Flag(STOP_TIMEOUT.flag),
        });
        Some(duration(value, Duration::from_secs(30))?)
    } else {
        None
    };
    let registry = layers
        .scalar(&REGISTRY, flags.registry)
        .map(|value| registry(value, &context.cwd))
        .transpose()?;
    let secrets_dir = absolute(
        &context.cwd,
        flags.secrets_dir.as_deref().unwrap_or("/run/secrets"),
    );
    Ok(ProxyServeConfig {
        api_addr,
        binds,
        https_binds,
        certs_dir,
        state_dir,
        haproxy,
        api_token,
        stop_haproxy,
        registry,
        secrets_dir,
    })
}

/// The first `name` file in the directories of `PATH`.
fn find_on_path(context: &Context, name: &str) -> Option<PathBuf> {
    let path = context.env("PATH")?;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

fn load_registrator(
    flags: RegistratorFlags,
    context: &Context,
) -> Result<RegistratorConfig, ConfigError> {
    let layers = Layers {
        context,
        file: None,
    };
    let registry = layers
        .scalar(&REGISTRY, flags.registry)
        .map(|value| registry(value, &context.cwd))
        .transpose()?
        .ok_or(ConfigError::MissingRegistry)?;
    let ip = layers
        .scalar(&IP, flags.ip)
        .map(|value| {
            value
                .text
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| invalid(value, "use an IP address such as 192.0.2.10"))
        })
        .transpose()?;
    let resync = match layers.scalar(&RESYNC, flags.resync) {
        None => None,
        Some(value) => Some(duration(Some(value), Duration::ZERO)?),
    };
    let tags = match layers.scalar(&TAGS, flags.tags) {
        Some(value) if value.text.contains("{{") => {
            return Err(ConfigError::TagTemplate {
                origin: value.origin,
                value: value.text,
            })
        }
        Some(value) => flow_registrator::split_tags(&value.text),
        None => Vec::new(),
    };
    let rules = RegistratorRules {
        internal: layers.bool(&INTERNAL, flags.internal)?,
        explicit: layers.bool(&EXPLICIT, flags.explicit)?,
        tags,
        ip_label: layers
            .scalar(&USE_IP_FROM_LABEL, flags.use_ip_from_label)
            .map(|value| value.text.trim().to_string()),
    };
    let ttl = registration_ttl(
        layers.scalar(&TTL, flags.ttl),
        layers.scalar(&TTL_REFRESH, flags.ttl_refresh),
        &registry,
    )?;
    let deregister = match layers.scalar(&DEREGISTER, flags.deregister) {
        None => flow_registrator::Deregister::Always,
        Some(value) => match value.text.trim() {
            "always" => flow_registrator::Deregister::Always,
            "on-success" => flow_registrator::Deregister::OnSuccess,
            _ => return Err(invalid(value, "use always or on-success")),
        },
    };
    let cleanup = match layers.scalar(&CLEANUP, flags.cleanup) {
        None => true,
        Some(value) => parse_bool(&value)?,
    };
    let retry_attempts = match layers.scalar(&RETRY_ATTEMPTS, flags.retry_attempts) {
        None => Some(0),
        Some(value) => match value.text.trim() {
            "-1" => None,
            text => Some(
                text.parse::<u32>()
                    .map_err(|_| invalid(value, "use a number of attempts, or -1 for no limit"))?,
            ),
        },
    };
    let retry_interval = match layers.scalar(&RETRY_INTERVAL, flags.retry_interval) {
        None => flow_registrator::DEFAULT_RETRY_INTERVAL,
        // A plain number is milliseconds, as Registrator's -retry-interval.
        Some(value) => match value.text.trim().parse::<u64>() {
            Ok(0) => return Err(invalid(value, RETRY_INTERVAL_EXPECTED)),
            Ok(millis) => Duration::from_millis(millis),
            Err(_) => match parse_duration(&value.text) {
                Some(interval) if !interval.is_zero() => interval,
                _ => return Err(invalid(value, RETRY_INTERVAL_EXPECTED)),
            },
        },
    };
    let docker = docker_endpoint(
        &layers,
        layers.scalar(&HOST, flags.host),
        layers.scalar(&CERT_PATH, flags.cert_path),
        layers.scalar(&CONTEXT, flags.context),
    );
    Ok(RegistratorConfig {
        registry,
        ip,
        resync,
        rules,
        ttl,
        deregister,
        cleanup,
        retry_attempts,
        retry_interval,
        docker,
    })
}

const RETRY_INTERVAL_EXPECTED: &str =
    "use a duration such as 500ms or 2s, or a number of milliseconds";

/// `--ttl` and `--ttl-refresh`: both or neither, the TTL the longer, on a registry that
/// expires registrations (etcd, through a lease).
fn registration_ttl(
    ttl: Option<Value>,
    refresh: Option<Value>,
    registry: &RegistryLocation,
) -> Result<Option<RegistrationTtl>, ConfigError> {
    let (ttl, refresh) = match (ttl, refresh) {
        (None, None) => return Ok(None),
        (Some(given), None) => {
            return Err(ConfigError::TtlWithoutRefresh {
                given: given.origin,
                missing: "--ttl-refresh",
            })
        }
        (None, Some(given)) => {
            return Err(ConfigError::TtlWithoutRefresh {
                given: given.origin,
                missing: "--ttl",
            })
        }
        (Some(ttl), Some(refresh)) => (ttl, refresh),
    };
    let (ttl_origin, refresh_origin) = (ttl.origin.clone(), refresh.origin.clone());
    let ttl_duration = duration(Some(ttl), Duration::ZERO)?;
    let refresh_duration = duration(Some(refresh), Duration::ZERO)?;
    if ttl_duration <= refresh_duration {
        return Err(ConfigError::TtlNotAboveRefresh {
            ttl: ttl_origin,
            refresh: refresh_origin,
        });
    }
    match registry {
        RegistryLocation::Etcd { .. } => Ok(Some(RegistrationTtl {
            ttl: ttl_duration,
            refresh: refresh_duration,
        })),
        RegistryLocation::File(dir) => Err(ConfigError::TtlUnsupported {
            origin: ttl_origin,
            registry: format!("file:{}", dir.display()),
        }),
        RegistryLocation::Consul { address } => Err(ConfigError::TtlUnsupported {
            origin: ttl_origin,
            registry: format!("consul://{address}"),
        }),
    }
}

#[cfg(test)]
mod tests;
