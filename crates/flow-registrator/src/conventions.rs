//! From one container's inspect to the registrations it stands for, by Registrator's
//! conventions. Pure: no engine, no registry, so every rule is tested on hand-made inspects.
//!
//! # Settings
//!
//! A container's settings are its environment (`KEY=value`) and its labels; a label wins over
//! an environment variable of the same name (Registrator reads the labels last). Every
//! setting `SERVICE_<KEY>` may be given for one port as `SERVICE_<port>_<KEY>`, which wins for
//! that port. An empty value counts as not given, as in Registrator.
//!
//! | setting | meaning |
//! |---|---|
//! | `SERVICE_IGNORE` | any non-empty value: the port (or, container-wide, every port) is not registered |
//! | label `io.docker-flow.service` | a docker-flow release instance: never registered here, because the release registers it itself once it is healthy |
//! | `SERVICE_NAME` | the service name; default: the image's base name without tag (`reg:5000/team/web:2` → `web`) |
//! | `SERVICE_TAGS` | comma-separated tags |
//! | `SERVICE_ID` | the registration id; default `<hostname>:<container-name>:<port>` (`:udp` appended for UDP ports) |
//! | `SERVICE_CHECK_HTTP` | a path (`/health`): an HTTP check of `http://<address>:<port><path>` |
//! | `SERVICE_CHECK_INTERVAL`, `SERVICE_CHECK_TIMEOUT` | the check's interval (default 10s) and timeout (default 5s), as Go/Compose durations |
//!
//! When a container yields several ports, a name that is not port-specific gets `-<port>`
//! appended (`web-8080`, `web-9090`), and so does a container-wide `SERVICE_ID` (`<id>:<port>`),
//! so that two ports never overwrite each other's registration. `SERVICE_CHECK_TCP` is not
//! supported: a [`HealthCheck`] describes HTTP checks only.
//!
//! # Which ports, at which address
//!
//! * **Published ports** (`-p`): the address is the `--ip` option when given, else the
//!   binding's host IP when it is a specific one (`127.0.0.1::8080` → `127.0.0.1`), with the
//!   published host port. A port published on every interface (`0.0.0.0` / `::`) without
//!   `--ip` is registered at the container's IP with the *container* port: the host port is
//!   not reachable at the container's IP, and no single host address is right for every
//!   client, so give `--ip` to register the host port instead. When a port has several
//!   bindings (Docker 20.10 lists an IPv4 and an IPv6 one), the first IPv4 one is used.
//! * **Internal mode**: a container that publishes nothing but exposes ports (`EXPOSE`,
//!   `expose:`) is registered at its container IP with each exposed port, because
//!   docker-flow's own instances only expose theirs and are reached over the container
//!   network (by the proxy). `--ip` does not apply: an unpublished port cannot be reached at a
//!   host address.
//!
//! The container IP is the one on its first network by name; a container without one
//! (`--network none`, `host`) has nothing to register in those cases.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use flow_core::{HealthCheck, Registration};

/// Meta key marking a registration as written by a registrator.
pub const REGISTERED_BY_KEY: &str = "registered-by";
/// The value of [`REGISTERED_BY_KEY`] this registrator writes.
pub const REGISTERED_BY: &str = "docker-flow-registrator";
/// Meta key naming the Docker host whose containers the registration stands for; a
/// registrator only ever removes registrations of its own host.
pub const HOST_KEY: &str = "registrator-host";
/// Meta key holding the full id of the container a registration stands for.
pub const CONTAINER_KEY: &str = "container-id";

/// The check interval when `SERVICE_CHECK_INTERVAL` is not given.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// The check timeout when `SERVICE_CHECK_TIMEOUT` is not given.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a registration is derived with, besides the container itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// The Docker host's name: part of default ids and of the [`HOST_KEY`] meta.
    pub hostname: String,
    /// The address registered for published ports (`--ip`); `None`: each binding's own.
    pub ip: Option<IpAddr>,
}

/// A container setting that cannot be used; the container is left unregistered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// `SERVICE_CHECK_INTERVAL` or `SERVICE_CHECK_TIMEOUT` (or a port-specific one) is not a
    /// duration.
    #[error("container {container}: {key}={value:?} is not a duration; write it like 10s, 1m30s or 500ms")]
    InvalidDuration {
        /// The container's name.
        container: String,
        /// The setting.
        key: String,
        /// Its value.
        value: String,
    },
    /// `SERVICE_CHECK_HTTP` (or a port-specific one) is not a URL path.
    #[error("container {container}: {key}={value:?} is not a URL path; write it like /health")]
    InvalidCheckPath {
        /// The container's name.
        container: String,
        /// The setting.
        key: String,
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

/// The container's settings: environment, overridden by labels.
struct Settings(HashMap<String, String>);

impl Settings {
    fn of(container: &ContainerInspectResponse) -> Settings {
        let mut settings = HashMap::new();
        if let Some(config) = &container.config {
            for entry in config.env.iter().flatten() {
                if let Some((key, value)) = entry.split_once('=') {
                    settings.insert(key.to_string(), value.to_string());
                }
            }
            for (key, value) in config.labels.iter().flatten() {
                settings.insert(key.clone(), value.clone());
            }
        }
        Settings(settings)
    }

    /// `SERVICE_<port>_<key>`, else `SERVICE_<key>`: the setting's full name, its value, and
    /// whether it was port-specific. Empty values count as absent.
    fn get(&self, port: u16, key: &str) -> Option<(String, &str, bool)> {
        let specific = format!("SERVICE_{port}_{key}");
        let general = format!("SERVICE_{key}");
        [(specific, true), (general, false)]
            .into_iter()
            .find_map(|(name, is_specific)| {
                let value = self.0.get(&name).filter(|v| !v.is_empty())?;
                Some((name, value.as_str(), is_specific))
            })
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
/// release instance, or has no port), sorted
/// by id. Does not look at whether it runs: the caller decides that.
pub fn registrations(
    container: &ContainerInspectResponse,
    host: &HostIdentity,
) -> Result<Vec<Registration>, SettingError> {
    if released_by_docker_flow(container) {
        return Ok(Vec::new());
    }
    let settings = Settings::of(container);
    let name = container_name(container);
    let endpoints = endpoints(container, host);
    let several = endpoints.len() > 1;
    let default_name = container
        .config
        .as_ref()
        .and_then(|c| c.image.as_deref())
        .map(image_base_name)
        .unwrap_or(&name)
        .to_string();
    let mut result = Vec::new();
    for endpoint in endpoints {
        let port = endpoint.container_port;
        if settings.get(port, "IGNORE").is_some() {
            continue;
        }
        let service = match settings.get(port, "NAME") {
            Some((_, value, true)) => value.to_string(),
            Some((_, value, false)) if several => format!("{value}-{port}"),
            Some((_, value, false)) => value.to_string(),
            None if several => format!("{default_name}-{port}"),
            None => default_name.clone(),
        };
        let id = match settings.get(port, "ID") {
            Some((_, value, true)) => value.to_string(),
            Some((_, value, false)) if several => format!("{value}:{port}"),
            Some((_, value, false)) => value.to_string(),
            None if endpoint.protocol == "udp" => format!("{}:{name}:{port}:udp", host.hostname),
            None => format!("{}:{name}:{port}", host.hostname),
        };
        let tags = settings
            .get(port, "TAGS")
            .map(|(_, value, _)| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let check = check(&settings, &name, &endpoint)?;
        let meta = BTreeMap::from([
            (REGISTERED_BY_KEY.to_string(), REGISTERED_BY.to_string()),
            (HOST_KEY.to_string(), host.hostname.clone()),
            (
                CONTAINER_KEY.to_string(),
                container.id.clone().unwrap_or_default(),
            ),
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

/// The HTTP check of one endpoint, from `SERVICE_CHECK_HTTP` and its interval and timeout.
fn check(
    settings: &Settings,
    container: &str,
    endpoint: &Endpoint,
) -> Result<Option<HealthCheck>, SettingError> {
    let port = endpoint.container_port;
    let Some((key, path, _)) = settings.get(port, "CHECK_HTTP") else {
        return Ok(None);
    };
    if !path.starts_with('/') {
        return Err(SettingError::InvalidCheckPath {
            container: container.to_string(),
            key,
            value: path.to_string(),
        });
    }
    let duration = |setting: &str, default: Duration| match settings.get(port, setting) {
        None => Ok(default),
        Some((key, value, _)) => flow_docker::compose::parse_duration(value).ok_or_else(|| {
            SettingError::InvalidDuration {
                container: container.to_string(),
                key,
                value: value.to_string(),
            }
        }),
    };
    let interval = duration("CHECK_INTERVAL", DEFAULT_CHECK_INTERVAL)?;
    let timeout = duration("CHECK_TIMEOUT", DEFAULT_CHECK_TIMEOUT)?;
    let host = match endpoint.address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => endpoint.address.clone(),
    };
    Ok(Some(HealthCheck::http(
        format!("http://{host}:{}{path}", endpoint.port),
        interval,
        Some(timeout),
    )))
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

/// The ports to register with their address: the published ones, or, when none is
/// published, the exposed ones at the container IP (internal mode). Sorted by port.
fn endpoints(container: &ContainerInspectResponse, host: &HostIdentity) -> Vec<Endpoint> {
    let own_ip = container_ip(container);
    let mut published = Vec::new();
    let ports = container
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref());
    for (key, bindings) in ports.into_iter().flatten() {
        let Some((container_port, protocol)) = parse_port_key(key) else {
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
        let Some(&(host_ip, host_port)) = bindings
            .iter()
            .find(|(ip, _)| ip.is_none_or(|ip| ip.is_ipv4()))
            .or_else(|| bindings.first())
        else {
            continue;
        };
        let (address, port) = match (host.ip, host_ip) {
            (Some(ip), _) => (ip.to_string(), host_port),
            (None, Some(ip)) if !ip.is_unspecified() => (ip.to_string(), host_port),
            _ => match &own_ip {
                Some(ip) => (ip.clone(), container_port),
                None => continue,
            },
        };
        published.push(Endpoint {
            container_port,
            protocol,
            address,
            port,
        });
    }
    if !published.is_empty() {
        published.sort();
        return published;
    }
    let Some(own_ip) = own_ip else {
        return Vec::new();
    };
    let exposed = container
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref());
    let mut internal: Vec<Endpoint> = exposed
        .into_iter()
        .flatten()
        .filter_map(|key| parse_port_key(key))
        .map(|(container_port, protocol)| Endpoint {
            container_port,
            protocol,
            address: own_ip.clone(),
            port: container_port,
        })
        .collect();
    internal.sort();
    internal
}

#[cfg(test)]
mod tests;
