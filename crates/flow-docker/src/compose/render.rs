//! The resolved model in Compose's canonical long form, as `docker compose config` prints it:
//! `environment` and `labels` as maps, `ports` and `volumes` in long syntax with host paths
//! resolved, commands as lists, durations as Go prints them (`1m30s`). Keys are sorted (the
//! JSON map is ordered), so the output is stable and can be compared.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{ComposeProject, HealthcheckSpec, ResourceSpec, ServiceSpec, VolumeSource};

/// A duration as Go's `time.Duration` prints it, which is how Compose writes durations:
/// `1m30s`, `500ms`, `1h0m0s`, `1.5s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = decimal(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// `value / unit` with the fraction's trailing zeros dropped.
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl ComposeProject {
    /// The model as `docker compose config` shows it, for `project` (the project name): the
    /// services enabled by the active profiles (with `only`, that service alone, enabled or
    /// not), the networks and volumes they use or the file declares.
    pub fn to_config(&self, project: &str, only: Option<&str>) -> Value {
        let services: Map<String, Value> = self
            .services
            .iter()
            .filter(|(name, _)| match only {
                Some(only) => name.as_str() == only,
                None => self.is_enabled(name),
            })
            .map(|(name, service)| (name.clone(), service_config(service)))
            .collect();
        let mut networks = Map::new();
        let mut volumes = Map::new();
        let used = |kind: &str, key: &str| {
            self.services
                .iter()
                .filter(|(name, _)| services.contains_key(name.as_str()))
                .any(|(_, service)| match kind {
                    "network" => service.networks.iter().any(|n| n == key),
                    _ => service
                        .volumes
                        .iter()
                        .any(|m| m.source == VolumeSource::Named(key.to_string())),
                })
        };
        let network_keys = self
            .networks
            .keys()
            .cloned()
            .chain(std::iter::once("default".to_string()));
        for key in network_keys {
            if self.networks.contains_key(&key) || used("network", &key) {
                let spec = self.networks.get(&key).cloned().unwrap_or_default();
                networks.insert(
                    key.clone(),
                    resource_config(&spec, self.network_name(project, &key)),
                );
            }
        }
        for (key, spec) in &self.volumes {
            volumes.insert(
                key.clone(),
                resource_config(spec, self.volume_name(project, key)),
            );
        }
        let mut top = Map::new();
        top.insert("name".into(), project.into());
        top.insert("services".into(), services.into());
        if !networks.is_empty() {
            top.insert("networks".into(), networks.into());
        }
        if !volumes.is_empty() {
            top.insert("volumes".into(), volumes.into());
        }
        Value::Object(top)
    }

    /// The engine name of the Compose network `key` in `project`: its `name`, its key when
    /// external, else `<project>_<key>`.
    pub fn network_name(&self, project: &str, key: &str) -> String {
        engine_name(self.networks.get(key), project, key)
    }

    /// The engine name of the Compose volume `key` in `project` (as [`Self::network_name`]).
    pub fn volume_name(&self, project: &str, key: &str) -> String {
        engine_name(self.volumes.get(key), project, key)
    }
}

fn engine_name(spec: Option<&ResourceSpec>, project: &str, key: &str) -> String {
    match spec {
        Some(ResourceSpec {
            name: Some(name), ..
        }) => name.clone(),
        Some(spec) if spec.external => key.to_string(),
        _ => format!("{project}_{key}"),
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    map.iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect::<Map<_, _>>()
        .into()
}

fn resource_config(spec: &ResourceSpec, engine_name: String) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), engine_name.into());
    if spec.external {
        out.insert("external".into(), true.into());
    }
    if let Some(driver) = &spec.driver {
        out.insert("driver".into(), driver.as_str().into());
    }
    if !spec.driver_opts.is_empty() {
        out.insert("driver_opts".into(), string_map(&spec.driver_opts));
    }
    if !spec.labels.is_empty() {
        out.insert("labels".into(), string_map(&spec.labels));
    }
    if spec.internal {
        out.insert("internal".into(), true.into());
    }
    if spec.attachable {
        out.insert("attachable".into(), true.into());
    }
    if let Some(ipam) = &spec.ipam {
        let mut block = Map::new();
        if let Some(driver) = &ipam.driver {
            block.insert("driver".into(), driver.as_str().into());
        }
        if !ipam.config.is_empty() {
            let pools: Vec<Value> = ipam
                .config
                .iter()
                .map(|pool| {
                    let mut entry = Map::new();
                    for (key, value) in [
                        ("subnet", &pool.subnet),
                        ("ip_range", &pool.ip_range),
                        ("gateway", &pool.gateway),
                    ] {
                        if let Some(value) = value {
                            entry.insert(key.into(), value.as_str().into());
                        }
                    }
                    if !pool.aux_addresses.is_empty() {
                        entry.insert("aux_addresses".into(), string_map(&pool.aux_addresses));
                    }
                    Value::Object(entry)
                })
                .collect();
            block.insert("config".into(), pools.into());
        }
        if !ipam.options.is_empty() {
            block.insert("options".into(), string_map(&ipam.options));
        }
        out.insert("ipam".into(), block.into());
    }
    Value::Object(out)
}

fn service_config(service: &ServiceSpec) -> Value {
    let mut out = Map::new();
    if !service.image.is_empty() {
        out.insert("image".into(), service.image.as_str().into());
    }
    if let Some(build) = &service.build {
        let mut block = Map::new();
        block.insert("context".into(), build.context.as_str().into());
        block.insert(
            "dockerfile".into(),
            build.dockerfile.as_deref().unwrap_or("Dockerfile").into(),
        );
        if !build.args.is_empty() {
            block.insert("args".into(), string_map(&build.args));
        }
        if let Some(target) = &build.target {
            block.insert("target".into(), target.as_str().into());
        }
        if !build.labels.is_empty() {
            block.insert("labels".into(), string_map(&build.labels));
        }
        out.insert("build".into(), block.into());
    }
    if let Some(command) = &service.command {
        out.insert("command".into(), json!(command));
    }
    if let Some(entrypoint) = &service.entrypoint {
        out.insert("entrypoint".into(), json!(entrypoint));
    }
    if !service.environment.is_empty() {
        out.insert("environment".into(), string_map(&service.environment));
    }
    if !service.labels.is_empty() {
        out.insert("labels".into(), string_map(&service.labels));
    }
    if !service.ports.is_empty() {
        let ports: Vec<Value> = service
            .ports
            .iter()
            .map(|port| {
                let mut entry = Map::new();
                entry.insert("mode".into(), "ingress".into());
                if let Some(ip) = &port.host_ip {
                    entry.insert("host_ip".into(), ip.as_str().into());
                }
                entry.insert("target".into(), port.container_port.into());
                if let Some(published) = port.host_port {
                    entry.insert("published".into(), published.to_string().into());
                }
                entry.insert("protocol".into(), port.protocol.as_str().into());
                Value::Object(entry)
            })
            .collect();
        out.insert("ports".into(), ports.into());
    }
    if !service.expose.is_empty() {
        let expose: Vec<String> = service.expose.iter().map(u16::to_string).collect();
        out.insert("expose".into(), json!(expose));
    }
    if !service.volumes.is_empty() {
        let volumes: Vec<Value> = service.volumes.iter().map(volume_config).collect();
        out.insert("volumes".into(), volumes.into());
    }
    let networks: Map<String, Value> = service
        .networks
        .iter()
        .map(|network| {
            let settings = service
                .network_settings
                .get(network)
                .map_or(Value::Null, |a| {
                    serde_json::to_value(a).expect("a network attachment serializes")
                });
            (network.clone(), settings)
        })
        .collect();
    out.insert("networks".into(), networks.into());
    if let Some(check) = &service.healthcheck {
        out.insert("healthcheck".into(), healthcheck_config(check));
    }
    if let Some(restart) = &service.restart {
        out.insert("restart".into(), restart.as_str().into());
    }
    if !service.depends_on.is_empty() {
        let dependencies: Map<String, Value> = service
            .depends_on
            .iter()
            .map(|name| {
                let dependency = service.dependency(name);
                let mut settings = json!({
                    "condition": dependency.condition.as_str(),
                    "required": dependency.required,
                });
                if dependency.restart {
                    settings["restart"] = true.into();
                }
                (name.clone(), settings)
            })
            .collect();
        out.insert("depends_on".into(), dependencies.into());
    }
    if let Some(name) = &service.container_name {
        out.insert("container_name".into(), name.as_str().into());
    }
    if let Some(replicas) = service.replicas {
        out.insert("deploy".into(), json!({ "replicas": replicas }));
    }
    if !service.profiles.is_empty() {
        out.insert("profiles".into(), json!(service.profiles));
    }
    Value::Object(out)
}

fn volume_config(mount: &super::VolumeMount) -> Value {
    let mut entry = Map::new();
    match &mount.source {
        VolumeSource::Bind(path) => {
            entry.insert("type".into(), "bind".into());
            entry.insert("source".into(), path.display().to_string().into());
        }
        VolumeSource::Named(name) => {
            entry.insert("type".into(), "volume".into());
            entry.insert("source".into(), name.as_str().into());
        }
        VolumeSource::Anonymous => {
            entry.insert("type".into(), "volume".into());
        }
        VolumeSource::Tmpfs(options) => {
            entry.insert("type".into(), "tmpfs".into());
            let settings: Map<String, Value> = options
                .split(',')
                .filter_map(|option| option.split_once('='))
                .map(|(key, value)| (key.to_string(), Value::from(value)))
                .collect();
            if !settings.is_empty() {
                entry.insert("tmpfs".into(), settings.into());
            }
        }
    }
    entry.insert("target".into(), mount.target.as_str().into());
    if mount.read_only {
        entry.insert("read_only".into(), true.into());
    }
    Value::Object(entry)
}

fn healthcheck_config(check: &HealthcheckSpec) -> Value {
    match check {
        HealthcheckSpec::Disabled => json!({ "disable": true }),
        HealthcheckSpec::Check {
            test,
            interval,
            timeout,
            retries,
            start_period,
            start_interval,
        } => {
            let mut out = Map::new();
            if let Some(test) = test {
                out.insert("test".into(), json!(test));
            }
            for (key, value) in [
                ("interval", interval),
                ("timeout", timeout),
                ("start_period", start_period),
                ("start_interval", start_interval),
            ] {
                if let Some(value) = value {
                    out.insert(key.into(), format_duration(*value).into());
                }
            }
            if let Some(retries) = retries {
                out.insert("retries".into(), (*retries).into());
            }
            Value::Object(out)
        }
    }
}
