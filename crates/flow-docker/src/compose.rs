//! The subset of the Compose file format docker-flow releases from.
//!
//! The file is read as a YAML tree first (so that syntax errors carry a line and column),
//! interpolated (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `$$`), then
//! walked key by key into [`ComposeProject`]. Walking by hand rather than deriving lets every
//! field accept all of its Compose spellings (lists or maps, short or long port syntax, a
//! command as a string or a list) and lets an unknown key become a warning instead of an
//! error: a file written for `docker compose` keeps working, and the person running the
//! release is told what is ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_core::OrchestratorError;
use serde_norway::Value;

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
    /// A service has no `image` (docker-flow runs images, it does not build them).
    #[error("service {service:?} has no `image`: docker-flow starts images and does not build them; build and tag the image first and set `image: <name>:<tag>`")]
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
    #[error("interpolation failed: {message}")]
    Interpolation {
        /// What is wrong.
        message: String,
    },
    /// A `--target` or `--side-target` names a service the file does not define.
    #[error("the Compose file defines no service {service:?} (it defines: {known}); check --target / --side-target")]
    UnknownService {
        /// The name asked for.
        service: String,
        /// The services that exist, comma separated.
        known: String,
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

/// A parsed Compose file.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeProject {
    /// The file it was read from.
    pub path: PathBuf,
    /// The top-level `name`, when given.
    pub name: Option<String>,
    /// The services by name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Top-level `networks` declarations by Compose name.
    pub networks: BTreeMap<String, ResourceSpec>,
    /// Top-level `volumes` declarations by Compose name.
    pub volumes: BTreeMap<String, ResourceSpec>,
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
}

/// One service of the Compose file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSpec {
    /// The image reference.
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
    /// `volumes`.
    pub volumes: Vec<VolumeMount>,
    /// The Compose network names the service joins (`default` when none given).
    pub networks: Vec<String>,
    /// `healthcheck`, when given.
    pub healthcheck: Option<HealthcheckSpec>,
    /// `restart` (`no`, `always`, `on-failure[:N]`, `unless-stopped`).
    pub restart: Option<String>,
    /// `depends_on` service names.
    pub depends_on: Vec<String>,
    /// `container_name`.
    pub container_name: Option<String>,
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

/// One `volumes` entry of a service.
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
}

const TOP_LEVEL_KEYS: &[&str] = &["version", "name", "services", "networks", "volumes"];

impl ComposeProject {
    /// Reads and parses the Compose file at `path`, interpolating from the process
    /// environment and the `.env` file beside it (the process environment wins).
    pub fn load(path: &Path) -> Result<ComposeProject, ComposeError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(ComposeError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ComposeError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut variables: HashMap<String, String> = HashMap::new();
        let dot_env = dir.join(".env");
        if dot_env.is_file() {
            variables.extend(read_env_file(&dot_env)?);
        }
        variables.extend(std::env::vars());
        Self::parse(&text, path, &variables)
    }

    /// Parses Compose `text` as if read from `path` (relative paths resolve against its
    /// directory), interpolating from `variables` only.
    pub fn parse(
        text: &str,
        path: &Path,
        variables: &HashMap<String, String>,
    ) -> Result<ComposeProject, ComposeError> {
        let mut tree: Value =
            serde_norway::from_str(text).map_err(|error| yaml_error(path, &error))?;
        interpolate_tree(&mut tree, variables)?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut warnings = Vec::new();
        let empty = serde_norway::Mapping::new();
        let top = match &tree {
            Value::Mapping(map) => map,
            Value::Null => &empty,
            _ => {
                return Err(ComposeError::InvalidValue {
                    service: "(top level)".into(),
                    field: "file".into(),
                    message: "the file must be a map with a `services` key".into(),
                })
            }
        };
        for key in top.keys() {
            let key = key_text(key);
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) && !key.starts_with("x-") {
                warnings.push(format!(
                    "top-level key {key:?} is not supported and is ignored"
                ));
            }
        }
        let name = top.get("name").and_then(scalar_text);
        let networks = resources(top.get("networks"), "networks")?;
        let volumes = resources(top.get("volumes"), "volumes")?;
        let services_value = top.get("services");
        let services_map = match services_value {
            Some(Value::Mapping(map)) if !map.is_empty() => map,
            _ => {
                return Err(ComposeError::NoServices {
                    path: path.to_path_buf(),
                })
            }
        };
        let mut services = BTreeMap::new();
        for (name, body) in services_map {
            let name = key_text(name);
            let spec = parse_service(&name, body, &dir, &mut warnings)?;
            services.insert(name, spec);
        }
        Ok(ComposeProject {
            path: path.to_path_buf(),
            name,
            services,
            networks,
            volumes,
            warnings,
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

    /// The service `name`, or [`OrchestratorError::UnknownTarget`] listing the known ones.
    pub fn service(&self, name: &str) -> Result<&ServiceSpec, OrchestratorError> {
        self.services
            .get(name)
            .ok_or_else(|| OrchestratorError::UnknownTarget {
                target: name.to_string(),
                known: self.services.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Checks, before any change, that `target` exists and can be released: in blue-green
    /// mode two colours run side by side, so the target must not publish a fixed host port
    /// nor set `container_name`.
    pub fn validate_target(&self, target: &str, blue_green: bool) -> Result<(), ComposeError> {
        let service = self
            .services
            .get(target)
            .ok_or_else(|| ComposeError::UnknownService {
                service: target.to_string(),
                known: self.services.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        if !blue_green {
            return Ok(());
        }
        if let Some(port) = service.ports.iter().find(|p| p.fixes_host_port()) {
            return Err(ComposeError::NotBlueGreenReady {
                service: target.to_string(),
                reason: format!(
                    "it publishes the fixed host port {} (for container port {}), which the new colour cannot bind while the old one runs; let the engine pick the host port with `ports: [\"{}\"]`, or use `expose: [\"{}\"]` and reach it through the proxy",
                    port.host_port.unwrap_or_default(),
                    port.container_port,
                    port.container_port,
                    port.container_port
                ),
            });
        }
        if let Some(name) = &service.container_name {
            return Err(ComposeError::NotBlueGreenReady {
                service: target.to_string(),
                reason: format!(
                    "it sets `container_name: {name}`, but each colour and instance needs a container of its own; remove `container_name` (docker-flow names containers <project>-<target>-<color>-<n>)"
                ),
            });
        }
        Ok(())
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

/// Reads a `KEY=VALUE` file (`.env`, `env_file`): blank lines and `#` comments are skipped,
/// a value may be quoted.
fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, ComposeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ComposeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.trim().to_string(), unquoted.to_string()))
        })
        .collect())
}

/// Interpolates every string in the tree (keys are left alone, as in Compose).
fn interpolate_tree(
    value: &mut Value,
    variables: &HashMap<String, String>,
) -> Result<(), ComposeError> {
    match value {
        Value::String(text) => *text = interpolate(text, variables)?,
        Value::Sequence(items) => {
            for item in items {
                interpolate_tree(item, variables)?;
            }
        }
        Value::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                interpolate_tree(item, variables)?;
            }
        }
        Value::Tagged(tagged) => interpolate_tree(&mut tagged.value, variables)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
/// `${VAR?message}` and `$$` in `text`.
pub fn interpolate(
    text: &str,
    variables: &HashMap<String, String>,
) -> Result<String, ComposeError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        out.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| ComposeError::Interpolation {
                message: format!(
                    "unterminated ${{ in {text:?}; close it with }} or write $$ for a literal $"
                ),
            })?;
            out.push_str(&expand_braced(&body[..end], variables)?);
            rest = &body[end + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
            } else {
                out.push_str(variables.get(&after[..name_len]).map_or("", String::as_str));
            }
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_braced(
    expression: &str,
    variables: &HashMap<String, String>,
) -> Result<String, ComposeError> {
    let name_len = expression
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expression.len());
    let (name, operator) = expression.split_at(name_len);
    if name.is_empty() {
        return Err(ComposeError::Interpolation {
            message: format!("${{{expression}}} has no variable name"),
        });
    }
    let value = variables.get(name);
    let set_and_non_empty = value.is_some_and(|v| !v.is_empty());
    let result = if operator.is_empty() {
        value.cloned().unwrap_or_default()
    } else if let Some(default) = operator.strip_prefix(":-") {
        if set_and_non_empty {
            value.cloned().unwrap_or_default()
        } else {
            default.to_string()
        }
    } else if let Some(default) = operator.strip_prefix('-') {
        value.cloned().unwrap_or_else(|| default.to_string())
    } else if let Some(message) = operator.strip_prefix(":?") {
        if !set_and_non_empty {
            return Err(ComposeError::Interpolation {
                message: format!("{name} is required: {message}"),
            });
        }
        value.cloned().unwrap_or_default()
    } else if let Some(message) = operator.strip_prefix('?') {
        match value {
            Some(v) => v.clone(),
            None => {
                return Err(ComposeError::Interpolation {
                    message: format!("{name} is required: {message}"),
                })
            }
        }
    } else {
        return Err(ComposeError::Interpolation {
            message: format!(
                "${{{expression}}} is not supported; use ${{VAR}}, ${{VAR:-default}} or ${{VAR-default}}"
            ),
        });
    };
    Ok(result)
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

fn resources(
    value: Option<&Value>,
    section: &str,
) -> Result<BTreeMap<String, ResourceSpec>, ComposeError> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(map)) = value else {
        return Ok(out);
    };
    for (key, body) in map {
        let mut spec = ResourceSpec::default();
        if let Value::Mapping(body) = body {
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
        } else if !body.is_null() {
            return Err(ComposeError::InvalidValue {
                service: "(top level)".into(),
                field: format!("{section}.{}", key_text(key)),
                message: "expected a map (or nothing)".into(),
            });
        }
        out.insert(key_text(key), spec);
    }
    Ok(out)
}

const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "ports",
    "expose",
    "volumes",
    "networks",
    "healthcheck",
    "restart",
    "depends_on",
    "container_name",
];

fn parse_service(
    name: &str,
    body: &Value,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<ServiceSpec, ComposeError> {
    let invalid = |field: &str, message: String| ComposeError::InvalidValue {
        service: name.to_string(),
        field: field.to_string(),
        message,
    };
    let Value::Mapping(map) = body else {
        return Err(invalid("", "a service must be a map of keys".into()));
    };
    for key in map.keys() {
        let key = key_text(key);
        if !SERVICE_KEYS.contains(&key.as_str()) && !key.starts_with("x-") {
            warnings.push(format!(
                "service {name:?}: key {key:?} is not supported by docker-flow and is ignored"
            ));
        }
    }
    let image = map
        .get("image")
        .and_then(scalar_text)
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| ComposeError::NoImage {
            service: name.to_string(),
        })?;
    let mut spec = ServiceSpec {
        image,
        ..Default::default()
    };
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
        let files: Vec<String> = match files {
            Value::Sequence(items) => items.iter().filter_map(scalar_text).collect(),
            other => scalar_text(other).into_iter().collect(),
        };
        for file in files {
            spec.environment.extend(read_env_file(&dir.join(file))?);
        }
    }
    if let Some(environment) = map.get("environment") {
        for (key, value) in key_values(environment, "environment", name)? {
            match value {
                Some(value) => {
                    spec.environment.insert(key, value);
                }
                // `- KEY` with no value takes it from the environment docker-flow runs in.
                None => {
                    if let Ok(value) = std::env::var(&key) {
                        spec.environment.insert(key, value);
                    }
                }
            }
        }
    }
    if let Some(labels) = map.get("labels") {
        for (key, value) in key_values(labels, "labels", name)? {
            spec.labels.insert(key, value.unwrap_or_default());
        }
    }
    if let Some(ports) = map.get("ports") {
        let Value::Sequence(items) = ports else {
            return Err(invalid("ports", "expected a list".into()));
        };
        for item in items {
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
                    format!("{text:?} is not a port number; write e.g. \"8080\""),
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
                .push(parse_volume(item, dir).map_err(|m| invalid("volumes", m))?);
        }
    }
    spec.networks = match map.get("networks") {
        None | Some(Value::Null) => vec!["default".to_string()],
        Some(Value::Sequence(items)) => items.iter().filter_map(scalar_text).collect(),
        Some(Value::Mapping(m)) => m.keys().map(key_text).collect(),
        Some(_) => return Err(invalid("networks", "expected a list or a map".into())),
    };
    if spec.networks.is_empty() {
        spec.networks.push("default".to_string());
    }
    if let Some(check) = map.get("healthcheck") {
        spec.healthcheck = Some(parse_healthcheck(name, check)?);
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
    spec.depends_on = match map.get("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().filter_map(scalar_text).collect(),
        Some(Value::Mapping(m)) => m.keys().map(key_text).collect(),
        Some(_) => return Err(invalid("depends_on", "expected a list or a map".into())),
    };
    spec.container_name = map.get("container_name").and_then(scalar_text);
    Ok(spec)
}

/// `KEY=VALUE` list items or a map; a list item without `=` (or a null map value) is `None`.
fn key_values(
    value: &Value,
    field: &str,
    service: &str,
) -> Result<Vec<(String, Option<String>)>, ComposeError> {
    match value {
        Value::Sequence(items) => Ok(items
            .iter()
            .filter_map(scalar_text)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (item, None),
            })
            .collect()),
        Value::Mapping(map) => Ok(map
            .iter()
            .map(|(k, v)| (key_text(k), scalar_text(v)))
            .collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(ComposeError::InvalidValue {
            service: service.to_string(),
            field: field.to_string(),
            message: "expected a list of KEY=VALUE or a map".into(),
        }),
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
        host_ip: host_ip.filter(|ip| !ip.is_empty()),
        host_port: host_port
            .filter(|h| !h.is_empty())
            .map(|h| parse_port_number(h, "host port"))
            .transpose()?,
        container_port: parse_port_number(container, "container port")?,
        protocol,
    })
}

/// Short (`"./data:/data:ro"`, `"cache:/cache"`, `"/data"`) or long
/// (`{type, source, target, read_only}`) volume syntax.
fn parse_volume(value: &Value, dir: &Path) -> Result<VolumeMount, String> {
    let source_of = |source: &str, kind: Option<&str>| -> VolumeSource {
        let is_path = source.starts_with('/')
            || source.starts_with('.')
            || source.starts_with('~')
            || kind == Some("bind");
        if is_path {
            VolumeSource::Bind(dir.join(source))
        } else {
            VolumeSource::Named(source.to_string())
        }
    };
    if let Value::Mapping(map) = value {
        let target = map
            .get("target")
            .and_then(scalar_text)
            .ok_or("the long volume syntax needs `target: <path in the container>`")?;
        let kind = map.get("type").and_then(scalar_text);
        let source = match map.get("source").and_then(scalar_text) {
            Some(source) => source_of(&source, kind.as_deref()),
            None => VolumeSource::Anonymous,
        };
        return Ok(VolumeMount {
            source,
            target,
            read_only: matches!(map.get("read_only"), Some(Value::Bool(true))),
        });
    }
    let text = scalar_text(value).ok_or("expected a string like \"./data:/data:ro\" or a map")?;
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        [target] => Ok(VolumeMount {
            source: VolumeSource::Anonymous,
            target: target.to_string(),
            read_only: false,
        }),
        [source, target] => Ok(VolumeMount {
            source: source_of(source, None),
            target: target.to_string(),
            read_only: false,
        }),
        [source, target, mode] => Ok(VolumeMount {
            source: source_of(source, None),
            target: target.to_string(),
            read_only: mode.split(',').any(|m| m == "ro"),
        }),
        _ => Err(format!("{text:?} is not SOURCE:TARGET[:ro]")),
    }
}

fn parse_healthcheck(service: &str, value: &Value) -> Result<HealthcheckSpec, ComposeError> {
    let invalid = |message: &str| ComposeError::InvalidValue {
        service: service.to_string(),
        field: "healthcheck".into(),
        message: message.to_string(),
    };
    let Value::Mapping(map) = value else {
        return Err(invalid(
            "expected a map with test, interval, timeout, retries, start_period",
        ));
    };
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
    })
}

/// Parses Compose durations, which the specification defines as Go's (`1m30s`, `500ms`,
/// `1.5s`; units `h`, `m`, `s`, `ms`, `us`, `ns`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    flow_core::time::go_duration::parse(text.trim()).ok()
}
