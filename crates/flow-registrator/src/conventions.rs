//! From one container's inspect to the registrations it stands for, by Registrator's
//! conventions (gliderlabs/registrator, `docs/user/services.md` and `backends.md`). Pure: no
//! engine, no registry, so every rule is tested on hand-made inspects.
//!
//! # Settings
//!
//! A container's settings are its environment variables and labels named `SERVICE_<KEY>`; a
//! label wins over an environment variable of the same name (Registrator reads the labels
//! last). `<KEY>` is read without regard to case (`SERVICE_name` is `SERVICE_NAME`), as
//! Registrator lowercases it. Every setting may be given for one port as
//! `SERVICE_<port>_<KEY>`, which wins for that port. An empty value counts as not given.
//!
//! | setting | meaning |
//! |---|---|
//! | `SERVICE_IGNORE` | any non-empty value: the port (or, container-wide, every port) is not registered |
//! | label `io.docker-flow.service` | a docker-flow release instance: never registered here, because the release registers it itself once it is healthy |
//! | `SERVICE_NAME` | the service name; default: the image's base name without tag (`reg:5000/team/web:2` → `web`); with [`Conventions::explicit`], ports without one are not registered |
//! | `SERVICE_TAGS` | comma-separated tags; `\,` is a comma inside a tag; [`Conventions::tags`] are added, and `udp` for UDP ports |
//! | `SERVICE_ID` | the registration id; default `<hostname>:<container-name>:<port>` (`:udp` appended for UDP ports) |
//! | `SERVICE_CHECK_HTTP`, `_HTTPS` | a path: an HTTP(S) check of `http(s)://<address>:<port><path>` (`_HTTP_METHOD`, `_HTTPS_METHOD`: its method) |
//! | `SERVICE_CHECK_TCP` | `true`: a TCP check of `<address>:<port>` |
//! | `SERVICE_CHECK_GRPC` | `true`: a gRPC health check of `<address>:<port>` (`_GRPC_USE_TLS`, `_TLS_SKIP_VERIFY`) |
//! | `SERVICE_CHECK_SCRIPT` | a shell command (`$SERVICE_IP`, `$SERVICE_PORT` replaced), run as `sh -c` |
//! | `SERVICE_CHECK_CMD` | a command for the `check-cmd` helper of Registrator's Consul image: `check-cmd <container> <port> <cmd>` |
//! | `SERVICE_CHECK_TTL` | a duration: a TTL check the service reports to itself |
//! | `SERVICE_CHECK_INTERVAL`, `_TIMEOUT` | the check's interval (default 10s) and timeout (default: the registry's) |
//! | `SERVICE_CHECK_INITIAL_STATUS` | `passing`, `warning` or `critical`: the check's status before its first run |
//! | `SERVICE_CHECK_DEREGISTER_AFTER` | a duration: the registry removes the instance once its check has been critical this long |
//! | any other `SERVICE_<KEY>` | the registration's meta `<key>` (lowercase), as Registrator's attributes |
//!
//! Only one check is registered per port; when several kinds are given, the first of HTTP,
//! HTTPS, CMD, SCRIPT, TTL, TCP, gRPC wins, as in Registrator.
//!
//! When a container yields several ports, a name that is not port-specific gets `-<port>`
//! appended (`web-8080`, `web-9090`), and so does a container-wide `SERVICE_ID` (`<id>:<port>`),
//! so that two ports never overwrite each other's registration (Registrator gives them the
//! same id, and the last one written wins).
//!
//! # Which ports, at which address
//!
//! * **Published ports** (`-p`), by default: the address is [`Conventions::ip`] when given,
//!   else the binding's host IP when it is a specific one (`127.0.0.1::8080` → `127.0.0.1`),
//!   else (published on every interface, `0.0.0.0` / `::`) [`Conventions::host_address`], the
//!   host's name resolved; always with the published host port. When a port has several
//!   bindings (Docker 20.10 lists an IPv4 and an IPv6 one), the first IPv4 one is used.
//!   Exposed ports that are not published are not registered.
//! * **`--net=host` containers** publish nothing (their ports *are* the host's): each exposed
//!   port counts as published on every interface with the same port number.
//! * **Internal** ([`Conventions::internal`]): every exposed port, published or not, at the
//!   container's IP with the exposed port (host-network containers: at the host's address).
//!   The container IP is the one on its first network by name.
//! * [`Conventions::ip_label`] names a label holding the address to register instead
//!   (`10.0.0.5` or `10.0.0.5/24`); a container without that label keeps the address above.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use flow_core::{CheckStatus, CheckTarget, HealthCheck, Registration};

/// Meta key marking a registration as written by a registrator.
pub const REGISTERED_BY_KEY: &str = "registered-by";
/// The value of [`REGISTERED_BY_KEY`] this registrator writes.
pub const REGISTERED_BY: &str = "docker-flow-registrator";
/// Meta key naming the Docker host whose containers the registration stands for; a
/// registrator only ever removes registrations of its own host.
pub const HOST_KEY: &str = "registrator-host";
/// Meta key holding the full id of the container a registration stands for.
pub const CONTAINER_KEY: &str = "container-id";

/// The check interval when `SERVICE_CHECK_INTERVAL` is not given (Registrator's default).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The longest meta key and value Consul accepts, and the characters of a key; a setting
/// outside them would make the registry refuse the registration, so it is refused here,
/// by name, for every backend alike.
const MAX_META_KEY: usize = 128;
const MAX_META_VALUE: usize = 512;

/// Settings that name the registration rather than becoming its meta.
const NOT_META: [&str; 3] = ["name", "id", "tags"];

/// How registrations are derived, besides the container itself: the registrator's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conventions {
    /// The Docker host's name: part of default ids and of the [`HOST_KEY`] meta.
    pub hostname: String,
    /// The address registered for every published port (`--ip`); `None`: each binding's own.
    pub ip: Option<IpAddr>,
    /// The host's own address, for ports published on every interface when [`Self::ip`] is
    /// not given (Registrator resolves the host name); `None`: such ports cannot be
    /// registered and the container is reported.
    pub host_address: Option<IpAddr>,
    /// Register exposed ports at the container's IP instead of published ones (`--internal`).
    pub internal: bool,
    /// Register only ports with a `SERVICE_NAME` (`--explicit`).
    pub explicit: bool,
    /// Tags added to every registration (`--tags`).
    pub tags: Vec<String>,
    /// A label holding the address to register (`--use-ip-from-label`).
    pub ip_label: Option<String>,
}

impl Conventions {
    /// The defaults for the host `hostname`: published ports, no forced address or tags.
    pub fn new(hostname: impl Into<String>) -> Conventions {
        Conventions {
            hostname: hostname.into(),
            ip: None,
            host_address: None,
            internal: false,
            explicit: false,
            tags: Vec::new(),
            ip_label: None,
        }
    }
}

/// A container setting that cannot be used; the container is left as it is and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A setting's value cannot be read (a duration that is not one, a boolean that is not
    /// one, a path with spaces, a meta key the registry would refuse…).
    #[error("container {container}: {variable}={value:?} cannot be used: {expected}")]
    Invalid {
        /// The container's name.
        container: String,
        /// The environment variable or label.
        variable: String,
        /// Its value.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// `SERVICE_<port>_NAME` for a port the container neither exposes nor publishes.
    #[error("container {container}: {variable} names port {port}, which the container does not expose; expose the port or remove the setting")]
    UnknownPort {
        /// The container's name.
        container: String,
        /// The environment variable or label.
        variable: String,
        /// The port it names.
        port: u16,
    },
    /// A port is published on every interface, and neither `--ip` is given nor the host's
    /// name resolves.
    #[error("container {container}: port {port} is published on every interface and the address of host {hostname:?} is unknown (its name does not resolve); give the registrator --ip ADDRESS")]
    NoHostAddress {
        /// The container's name.
        container: String,
        /// The container port.
        port: u16,
        /// The host name that did not resolve.
        hostname: String,
    },
    /// `--internal` and the container has no IP address of its own (network mode `none` or
    /// `container:<other>`).
    #[error("container {container}: --internal registers the container's own IP address, and it has none (network mode {network_mode:?}); publish its ports and run without --internal, or set SERVICE_IGNORE")]
    NoContainerAddress {
        /// The container's name.
        container: String,
        /// Its network mode.
        network_mode: String,
    },
    /// The `--use-ip-from-label` label does not hold an IP address.
    #[error("container {container}: label {label}={value:?} is not an IP address (as 10.0.0.5 or 10.0.0.5/24)")]
    InvalidLabelAddress {
        /// The container's name.
        container: String,
        /// The label.
        label: String,
        /// Its value.
        value: String,
    },
}

/// One port of a container as it will be registered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    container_port: u16,
    protocol: String,
    address: String,
    port: u16,
}

/// A container's ports by (port, protocol), each with its bindings (host IP, host port);
/// an empty list: exposed, not published.
type Ports = BTreeMap<(u16, String), Vec<(Option<IpAddr>, u16)>>;

/// One `SERVICE_…` setting found.
#[derive(Debug, Clone)]
struct Setting {
    /// The variable or label as written, for messages.
    variable: String,
    value: String,
}

/// A setting looked up for one port.
struct Found<'a> {
    variable: &'a str,
    value: &'a str,
    port_specific: bool,
}

/// The container's `SERVICE_…` settings: environment, overridden by labels.
struct Settings {
    /// `SERVICE_<KEY>` by lowercase key.
    general: BTreeMap<String, Setting>,
    /// `SERVICE_<port>_<KEY>` by port, then lowercase key.
    by_port: BTreeMap<u16, BTreeMap<String, Setting>>,
}

impl Settings {
    fn of(container: &ContainerInspectResponse) -> Settings {
        let mut settings = Settings {
            general: BTreeMap::new(),
            by_port: BTreeMap::new(),
        };
        let Some(config) = &container.config else {
            return settings;
        };
        let env = config
            .env
            .iter()
            .flatten()
            .filter_map(|entry| entry.split_once('='));
        let labels = config
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        for (variable, value) in env.chain(labels) {
            let Some(key) = variable.strip_prefix("SERVICE_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let setting = Setting {
                variable: variable.to_string(),
                value: value.to_string(),
            };
            let port_key = key
                .split_once('_')
                .and_then(|(port, rest)| Some((port.parse::<u16>().ok()?, rest)));
            match port_key {
                Some((port, rest)) => {
                    settings
                        .by_port
                        .entry(port)
                        .or_default()
                        .insert(rest.to_string(), setting);
                }
                None => {
                    settings.general.insert(key, setting);
                }
            }
        }
        settings
    }

    /// `SERVICE_<port>_<key>`, else `SERVICE_<key>` (`key` lowercase). Empty values count as
    /// absent.
    fn get(&self, port: u16, key: &str) -> Option<Found<'_>> {
        let specific = self.by_port.get(&port).and_then(|s| s.get(key));
        [(specific, true), (self.general.get(key), false)]
            .into_iter()
            .find_map(|(setting, port_specific)| {
                let setting = setting.filter(|s| !s.value.is_empty())?;
                Some(Found {
                    variable: &setting.variable,
                    value: &setting.value,
                    port_specific,
                })
            })
    }

    /// The attributes of `port`: every non-empty setting but name, id and tags, port-specific
    /// ones winning.
    fn attributes(&self, port: u16) -> BTreeMap<&str, &Setting> {
        let specific = self.by_port.get(&port).into_iter().flatten();
        let mut attributes = BTreeMap::new();
        for (key, setting) in self.general.iter().chain(specific) {
            if !NOT_META.contains(&key.as_str()) && !setting.value.is_empty() {
                attributes.insert(key.as_str(), setting);
            }
        }
        attributes
    }
}

/// The name of `container` without Docker's leading `/`.
pub fn container_name(container: &ContainerInspectResponse) -> String {
    container
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// The image's base name without registry, path, tag or digest: `reg:5000/team/web:2` → `web`.
pub fn image_base_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let base = without_digest.rsplit('/').next().unwrap_or(without_digest);
    base.split(':').next().unwrap_or(base)
}

/// Splits a tag list at commas not escaped by a backslash (`a,b\,c` → `a`, `b,c`), trims each
/// tag and drops empty ones.
pub fn split_tags(text: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => tags.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    tags.push(current);
    tags.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether `container` is an instance of a docker-flow release (it carries the
/// `io.docker-flow.service` label). Releases register their instances themselves, once they
/// are healthy, under the release's own ids; registering them here as well would list every
/// instance twice.
fn released_by_docker_flow(container: &ContainerInspectResponse) -> bool {
    container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .is_some_and(|labels| labels.contains_key(flow_docker::LABEL_SERVICE))
}

/// The registrations `container` stands for (none when it is ignored, is a docker-flow
/// release instance, or has no port to register), sorted by id. Does not look at whether it
/// runs: the caller decides that.
pub fn registrations(
    container: &ContainerInspectResponse,
    conventions: &Conventions,
) -> Result<Vec<Registration>, SettingError> {
    if released_by_docker_flow(container) {
        return Ok(Vec::new());
    }
    let settings = Settings::of(container);
    let name = container_name(container);
    let ports = ports(container);
    check_named_ports(&settings, &ports, &name)?;
    let endpoints = endpoints(container, &ports, conventions, &name)?;
    let several = endpoints.len() > 1;
    let default_name = container
        .config
        .as_ref()
        .and_then(|c| c.image.as_deref())
        .map(image_base_name)
        .unwrap_or(&name)
        .to_string();
    let container_id = container.id.clone().unwrap_or_default();
    let mut result = Vec::new();
    for endpoint in endpoints {
        let port = endpoint.container_port;
        if settings.get(port, "ignore").is_some() {
            continue;
        }
        let given_name = settings.get(port, "name");
        if conventions.explicit && given_name.is_none() {
            continue;
        }
        let service = match given_name {
            Some(found) if found.port_specific || !several => found.value.to_string(),
            Some(found) => format!("{}-{port}", found.value),
            None if several => format!("{default_name}-{port}"),
            None => default_name.clone(),
        };
        let udp = endpoint.protocol == "udp";
        let id = match settings.get(port, "id") {
            Some(found) if found.port_specific || !several => found.value.to_string(),
            Some(found) => format!("{}:{port}", found.value),
            None if udp => format!("{}:{name}:{port}:udp", conventions.hostname),
            None => format!("{}:{name}:{port}", conventions.hostname),
        };
        let mut tags: Vec<String> = settings
            .get(port, "tags")
            .map(|found| split_tags(found.value))
            .unwrap_or_default();
        tags.extend(conventions.tags.iter().cloned());
        if udp {
            tags.push("udp".to_string());
        }
        let mut seen = BTreeSet::new();
        tags.retain(|tag| seen.insert(tag.clone()));
        let endpoint = Endpoint {
            address: address_from_label(container, conventions, &name)?.unwrap_or(endpoint.address),
            ..endpoint
        };
        let check = check(&settings, &name, &container_id, &endpoint)?;
        let mut meta = BTreeMap::new();
        for (key, setting) in settings.attributes(port) {
            meta.insert(meta_key(key, setting, &name)?, setting.value.clone());
        }
        meta.extend([
            (REGISTERED_BY_KEY.to_string(), REGISTERED_BY.to_string()),
            (HOST_KEY.to_string(), conventions.hostname.clone()),
            (CONTAINER_KEY.to_string(), container_id.clone()),
        ]);
        result.push(Registration {
            id,
            name: service,
            address: endpoint.address,
            port: endpoint.port,
            tags,
            meta,
            check,
        });
    }
    result.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(result)
}

/// `key` as a meta key, when every registry accepts it (Consul's rules, the strictest:
/// letters, digits, `-` and `_`, at most 128 characters, values at most 512) and it is not
/// one of the registrator's own.
fn meta_key(key: &str, setting: &Setting, container: &str) -> Result<String, SettingError> {
    let invalid = |expected| SettingError::Invalid {
        container: container.to_string(),
        variable: setting.variable.clone(),
        value: setting.value.clone(),
        expected,
    };
    let key_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !key_chars || key.len() > MAX_META_KEY {
        return Err(invalid("it becomes the meta key of the registration, which may hold only letters, digits, '-' and '_' (at most 128); rename the variable or label"));
    }
    if [REGISTERED_BY_KEY, HOST_KEY, CONTAINER_KEY].contains(&key) {
        return Err(invalid(
            "the registrator writes this meta key itself; rename the variable or label",
        ));
    }
    if setting.value.len() > MAX_META_VALUE {
        return Err(invalid(
            "it becomes a meta value of the registration, which may be at most 512 bytes long",
        ));
    }
    Ok(key.to_string())
}

/// The address in the `--use-ip-from-label` label, when that label is given and present.
fn address_from_label(
    container: &ContainerInspectResponse,
    conventions: &Conventions,
    name: &str,
) -> Result<Option<String>, SettingError> {
    let Some(label) = &conventions.ip_label else {
        return Ok(None);
    };
    let value = container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|labels| labels.get(label))
        .filter(|v| !v.is_empty());
    let Some(value) = value else {
        return Ok(None);
    };
    // Registrator cuts a prefix length (`10.0.0.5/24`), as IPAM tools write addresses.
    let address = value.rsplit_once('/').map_or(value.as_str(), |(ip, _)| ip);
    match address.trim().parse::<IpAddr>() {
        Ok(ip) => Ok(Some(ip.to_string())),
        Err(_) => Err(SettingError::InvalidLabelAddress {
            container: name.to_string(),
            label: label.clone(),
            value: value.clone(),
        }),
    }
}

/// `SERVICE_<port>_NAME` must name a port of the container: a name that reaches no port is
/// a mistake the user wants to hear about, not a registration that silently never appears.
fn check_named_ports(
    settings: &Settings,
    ports: &Ports,
    container: &str,
) -> Result<(), SettingError> {
    for (port, keys) in &settings.by_port {
        let Some(setting) = keys.get("name").filter(|s| !s.value.is_empty()) else {
            continue;
        };
        if !ports.keys().any(|(p, _)| p == port) {
            return Err(SettingError::UnknownPort {
                container: container.to_string(),
                variable: setting.variable.clone(),
                port: *port,
            });
        }
    }
    Ok(())
}

fn invalid(found: &Found<'_>, container: &str, expected: &'static str) -> SettingError {
    SettingError::Invalid {
        container: container.to_string(),
        variable: found.variable.to_string(),
        value: found.value.to_string(),
        expected,
    }
}

/// A boolean setting as Go's `strconv.ParseBool` reads it; `false` when not given.
fn flag(settings: &Settings, port: u16, key: &str, container: &str) -> Result<bool, SettingError> {
    let Some(found) = settings.get(port, key) else {
        return Ok(false);
    };
    match found.value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(&found, container, "write true or false")),
    }
}

fn duration(
    settings: &Settings,
    port: u16,
    key: &str,
    container: &str,
) -> Result<Option<Duration>, SettingError> {
    let Some(found) = settings.get(port, key) else {
        return Ok(None);
    };
    match flow_docker::compose::parse_duration(found.value) {
        Some(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(invalid(
            &found,
            container,
            "write a duration such as 10s, 1m30s or 500ms",
        )),
    }
}

/// A URL path from `SERVICE_CHECK_HTTP(S)`: `health` is taken as `/health` (Registrator
/// would glue it to the port, `:8080health`, a URL no check can use).
fn check_path(found: &Found<'_>, container: &str) -> Result<String, SettingError> {
    let path = found.value.trim();
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            found,
            container,
            "write a URL path such as /health (without spaces)",
        ));
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// The health check of one endpoint, from its `SERVICE_CHECK_*` settings.
fn check(
    settings: &Settings,
    container: &str,
    container_id: &str,
    endpoint: &Endpoint,
) -> Result<Option<HealthCheck>, SettingError> {
    let port = endpoint.container_port;
    let host = match endpoint.address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => endpoint.address.clone(),
    };
    let socket = format!("{host}:{}", endpoint.port);
    let method = |key: &str| -> Result<Option<String>, SettingError> {
        let Some(found) = settings.get(port, key) else {
            return Ok(None);
        };
        if found.value.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Some(found.value.to_ascii_uppercase()))
        } else {
            Err(invalid(
                &found,
                container,
                "write an HTTP method such as GET or HEAD",
            ))
        }
    };
    let mut method_of_check = None;
    let mut tls_skip_verify = false;
    let mut grpc_use_tls = false;
    let target = if let Some(found) = settings.get(port, "check_http") {
        method_of_check = method("check_http_method")?;
        CheckTarget::Http(format!("http://{socket}{}", check_path(&found, container)?))
    } else if let Some(found) = settings.get(port, "check_https") {
        method_of_check = method("check_https_method")?;
        tls_skip_verify = flag(settings, port, "check_tls_skip_verify", container)?;
        CheckTarget::Http(format!(
            "https://{socket}{}",
            check_path(&found, container)?
        ))
    } else if let Some(found) = settings.get(port, "check_cmd") {
        let short_id: String = container_id.chars().take(12).collect();
        CheckTarget::Script(vec![
            "check-cmd".to_string(),
            short_id,
            port.to_string(),
            found.value.to_string(),
        ])
    } else if let Some(found) = settings.get(port, "check_script") {
        let script = found
            .value
            .replace("$SERVICE_IP", &endpoint.address)
            .replace("$SERVICE_PORT", &endpoint.port.to_string());
        CheckTarget::Script(vec!["sh".to_string(), "-c".to_string(), script])
    } else if let Some(ttl) = duration(settings, port, "check_ttl", container)? {
        CheckTarget::Ttl(ttl)
    } else if flag(settings, port, "check_tcp", container)? {
        CheckTarget::Tcp(socket)
    } else if flag(settings, port, "check_grpc", container)? {
        grpc_use_tls = flag(settings, port, "check_grpc_use_tls", container)?;
        tls_skip_verify = grpc_use_tls && flag(settings, port, "check_tls_skip_verify", container)?;
        CheckTarget::Grpc(socket)
    } else {
        return Ok(None);
    };
    let reported = matches!(target, CheckTarget::Ttl(_));
    let (interval, timeout) = if reported {
        (None, None)
    } else {
        let interval = duration(settings, port, "check_interval", container)?;
        (
            Some(interval.unwrap_or(DEFAULT_CHECK_INTERVAL)),
            duration(settings, port, "check_timeout", container)?,
        )
    };
    let initial_status = match settings.get(port, "check_initial_status") {
        None => None,
        Some(found) => Some(match found.value.trim().to_ascii_lowercase().as_str() {
            "passing" => CheckStatus::Passing,
            "warning" => CheckStatus::Warning,
            "critical" => CheckStatus::Critical,
            _ => {
                return Err(invalid(
                    &found,
                    container,
                    "write passing, warning or critical",
                ))
            }
        }),
    };
    Ok(Some(HealthCheck {
        target,
        interval,
        timeout,
        method: method_of_check,
        grpc_use_tls,
        tls_skip_verify,
        initial_status,
        deregister_after: duration(settings, port, "check_deregister_after", container)?,
    }))
}

/// `8080/tcp` → `(8080, "tcp")`; a key without a protocol is TCP.
fn parse_port_key(key: &str) -> Option<(u16, String)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    Some((port.parse().ok()?, protocol.to_string()))
}

/// The container's IP on its first network (by name) that gives it one.
fn container_ip(container: &ContainerInspectResponse) -> Option<String> {
    let networks = container.network_settings.as_ref()?.networks.as_ref()?;
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names.into_iter().find_map(|name| {
        networks[name]
            .ip_address
            .clone()
            .filter(|ip| !ip.is_empty())
    })
}

fn network_mode(container: &ContainerInspectResponse) -> &str {
    container
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        .unwrap_or_default()
}

/// Every port the container exposes or publishes, with its bindings (host IP, host port).
/// A `--net=host` container's exposed ports are bound on every interface at their own port.
fn ports(container: &ContainerInspectResponse) -> Ports {
    let host_network = network_mode(container) == "host";
    let mut ports = BTreeMap::new();
    let exposed = container
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref());
    for (port, protocol) in exposed
        .into_iter()
        .flatten()
        .filter_map(|k| parse_port_key(k))
    {
        let bindings = if host_network {
            vec![(None, port)]
        } else {
            Vec::new()
        };
        ports.insert((port, protocol), bindings);
    }
    let published: HashMap<String, Option<Vec<bollard::models::PortBinding>>> = container
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .unwrap_or_default();
    for (key, bindings) in published {
        let Some(port_key) = parse_port_key(&key) else {
            continue;
        };
        let bindings: Vec<(Option<IpAddr>, u16)> = bindings
            .iter()
            .flatten()
            .filter_map(|b| {
                let port = b.host_port.as_deref()?.parse().ok()?;
                let ip = b.host_ip.as_deref().and_then(|ip| ip.parse().ok());
                Some((ip, port))
            })
            .collect();
        let entry = ports.entry(port_key).or_default();
        if !bindings.is_empty() {
            *entry = bindings;
        }
    }
    ports
}

/// The ports to register with their address (see the module docs), sorted by port.
fn endpoints(
    container: &ContainerInspectResponse,
    ports: &Ports,
    conventions: &Conventions,
    name: &str,
) -> Result<Vec<Endpoint>, SettingError> {
    let host_network = network_mode(container) == "host";
    let host_address = conventions.ip.or(conventions.host_address);
    let mut endpoints = Vec::new();
    for ((container_port, protocol), bindings) in ports {
        let (address, port) = if conventions.internal {
            let own = if host_network {
                host_address.map(|ip| ip.to_string())
            } else {
                container_ip(container)
            };
            let Some(own) = own else {
                if host_network {
                    return Err(no_host_address(conventions, name, *container_port));
                }
                return Err(SettingError::NoContainerAddress {
                    container: name.to_string(),
                    network_mode: network_mode(container).to_string(),
                });
            };
            (own, *container_port)
        } else {
            let Some(&(host_ip, host_port)) = bindings
                .iter()
                .find(|(ip, _)| ip.is_none_or(|ip| ip.is_ipv4()))
                .or_else(|| bindings.first())
            else {
                continue;
            };
            let address = match (conventions.ip, host_ip) {
                (Some(ip), _) => ip,
                (None, Some(ip)) if !ip.is_unspecified() => ip,
                _ => conventions
                    .host_address
                    .ok_or_else(|| no_host_address(conventions, name, *container_port))?,
            };
            (address.to_string(), host_port)
        };
        endpoints.push(Endpoint {
            container_port: *container_port,
            protocol: protocol.clone(),
            address,
            port,
        });
    }
    Ok(endpoints)
}

fn no_host_address(conventions: &Conventions, name: &str, port: u16) -> SettingError {
    SettingError::NoHostAddress {
        container: name.to_string(),
        port,
        hostname: conventions.hostname.clone(),
    }
}

#[cfg(test)]
mod tests;
