//! `docker-flow status`: what runs for a service, read through the ports and changing
//! nothing.
//!
//! It takes no lock: a status must answer while a release runs (that is when people ask),
//! and it reports the release's lock holder instead. Each part is read on its own, so one
//! that cannot be read (an instance's health, the proxy, the lock of a registry that cannot
//! tell) is reported as unknown with the reason rather than failing the whole status; only
//! the stored state and the instance lists, without which nothing can be said, fail it.

use std::net::SocketAddr;
use std::time::SystemTime;

use futures::future::join_all;
use serde::Serialize;

use crate::domain::{Color, ReleaseRecord, ServiceName};
use crate::orchestrator::{Group, Health, Instance, OrchestratorError};
use crate::proxy::ServedServer;
use crate::registry::{LockHolder, RegistryError};
use crate::release::Ports;

/// What status is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    /// The registry/proxy name of the service.
    pub service: ServiceName,
    /// The Compose service.
    pub target: String,
    /// Whether the service is released in colours (`--blue-green`); a stored colour says so
    /// too.
    pub blue_green: bool,
}

/// What runs for a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The service.
    pub service: ServiceName,
    /// The Compose service.
    pub target: String,
    /// The live colour (`None` without blue-green, or before the first release).
    pub live_color: Option<Color>,
    /// The stored scale.
    pub stored_scale: Option<u32>,
    /// The live release, when one was recorded by docker-flow.
    pub release: Option<ReleaseSummary>,
    /// The release a rollback makes live again.
    pub previous_release: Option<ReleaseSummary>,
    /// The live group's instances.
    pub instances: Vec<InstanceStatus>,
    /// The other colour (blue-green only, once a colour is live).
    pub idle: Option<IdleStatus>,
    /// The proxy's route (`None`: no proxy is configured).
    pub proxy: Option<ProxyStatus>,
    /// Who holds the deploy lock.
    pub lock: LockStatus,
}

/// A release record, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseSummary {
    /// The colour it went into.
    pub color: Option<Color>,
    /// The image reference.
    pub image: String,
    /// The image's content id, when the record has a spec.
    pub image_id: Option<String>,
    /// The spec's digest, when the record has a spec.
    pub digest: Option<String>,
    /// How many instances it left running.
    pub scale: u32,
    /// When it was committed.
    #[serde(with = "crate::time::rfc3339_serde")]
    pub released_at: SystemTime,
    /// Who committed it.
    pub released_by: String,
}

impl From<&ReleaseRecord> for ReleaseSummary {
    fn from(record: &ReleaseRecord) -> Self {
        ReleaseSummary {
            color: record.color,
            image: record.image.clone(),
            image_id: record.spec.as_ref().map(|s| s.image_id.clone()),
            digest: record.spec.as_ref().map(|s| s.digest.clone()),
            scale: record.scale,
            released_at: record.released_at,
            released_by: record.released_by.clone(),
        }
    }
}

/// One instance and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// The container name.
    pub name: String,
    /// Its number in its group.
    pub number: u32,
    /// The image it runs.
    pub image: String,
    /// Where the proxy reaches it (`None` when stopped).
    pub address: Option<SocketAddr>,
    /// `healthy`, `starting`, `unhealthy`, `exited`, `stopped` or `unknown`.
    pub health: &'static str,
    /// The health check's output, an exit code, or why the health is unknown.
    pub detail: Option<String>,
}

/// The idle colour of a blue-green service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdleStatus {
    /// The colour.
    pub color: Color,
    /// `running` (all its instances), `stopped` (all), `partly-running` or `gone` (none).
    pub state: &'static str,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
}

/// The proxy's route for the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "route", rename_all = "kebab-case")]
pub enum ProxyStatus {
    /// The proxy routes the service.
    Routed {
        /// The colour it routes to.
        color: Option<Color>,
        /// The paths.
        paths: Vec<String>,
        /// The domain, when one is set.
        domain: Option<String>,
        /// Its servers.
        servers: Vec<ServedServer>,
    },
    /// The proxy has no route for the service.
    None,
    /// The proxy could not be asked.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Who holds the deploy lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "lock", rename_all = "kebab-case")]
pub enum LockStatus {
    /// No release runs.
    Free,
    /// A release runs.
    Held {
        /// Who runs it.
        holder: String,
        /// Since when.
        #[serde(with = "crate::time::rfc3339_serde")]
        since: SystemTime,
    },
    /// The registry could not tell.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Why a status could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The stored state could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The instances could not be listed.
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
}

/// Reads what runs for `query.service`. Calls only `load`, `lock_holder`, `list`, `health`
/// and `served_route`: nothing is changed and no lock is taken.
pub async fn status(ports: &Ports, query: &StatusQuery) -> Result<Status, StatusError> {
    let state = ports.registry.load(&query.service).await?.value;
    let orchestrator = &ports.orchestrator;
    let coloured = query.blue_green || state.color.is_some();
    let live_group = match (coloured, state.color) {
        (false, _) => Some(Group::new(query.target.clone(), None)),
        (true, color) => color.map(|c| Group::new(query.target.clone(), Some(c))),
    };
    let instances = match &live_group {
        Some(group) => describe(ports, orchestrator.list(group).await?).await,
        None => Vec::new(),
    };
    let idle = match (coloured, state.color) {
        (true, Some(live)) => {
            let color = live.other();
            let found = orchestrator
                .list(&Group::new(query.target.clone(), Some(color)))
                .await?;
            let running = found.iter().filter(|i| i.running).count();
            let state = match (running, found.len()) {
                (_, 0) => "gone",
                (0, _) => "stopped",
                (r, n) if r == n => "running",
                _ => "partly-running",
            };
            Some(IdleStatus {
                color,
                state,
                instances: describe(ports, found).await,
            })
        }
        _ => None,
    };
    let proxy = match &ports.proxy {
        None => None,
        Some(proxy) => Some(match proxy.served_route(&query.service).await {
            Ok(Some(served)) => ProxyStatus::Routed {
                color: served.route.color,
                paths: served.route.paths,
                domain: served.route.domain,
                servers: served.servers,
            },
            Ok(None) => ProxyStatus::None,
            Err(error) => ProxyStatus::Unknown {
                reason: error.to_string(),
            },
        }),
    };
    let lock = match ports.registry.lock_holder(&query.service).await {
        Ok(None) => LockStatus::Free,
        Ok(Some(LockHolder { holder, since })) => LockStatus::Held { holder, since },
        Err(error) => LockStatus::Unknown {
            reason: error.to_string(),
        },
    };
    Ok(Status {
        service: query.service.clone(),
        target: query.target.clone(),
        live_color: state.color,
        stored_scale: state.scale,
        release: state.last_release.as_ref().map(ReleaseSummary::from),
        previous_release: state.previous_release.as_ref().map(ReleaseSummary::from),
        instances,
        idle,
        proxy,
        lock,
    })
}

/// The instances with their health, asked concurrently (stopped ones are not asked).
async fn describe(ports: &Ports, instances: Vec<Instance>) -> Vec<InstanceStatus> {
    let healths = join_all(instances.iter().map(|instance| async move {
        if !instance.running {
            return ("stopped", None);
        }
        match ports.orchestrator.health(instance).await {
            Ok(Health::Healthy) => ("healthy", None),
            Ok(Health::Starting { detail }) => ("starting", detail),
            Ok(Health::Unhealthy { detail }) => ("unhealthy", Some(detail)),
            Ok(Health::Exited { code }) => ("exited", Some(format!("exit code {code}"))),
            Err(error) => ("unknown", Some(error.to_string())),
        }
    }))
    .await;
    instances
        .into_iter()
        .zip(healths)
        .map(|(instance, (health, detail))| InstanceStatus {
            name: instance.name,
            number: instance.number,
            image: instance.image,
            address: instance.address,
            health,
            detail: detail.map(|d| d.trim().to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::memory::{MemoryOrchestrator, MemoryProxy, MemoryRegistry};
    use crate::proxy::PathType;
    use crate::registry::Registry;
    use crate::release::{Engine, Event, ReleaseOptions, RouteSettings, Step, Timeouts};

    fn options(steps: &[Step]) -> ReleaseOptions {
        ReleaseOptions {
            service: ServiceName::new("demo-web").unwrap(),
            target: "web".into(),
            side_targets: Vec::new(),
            blue_green: true,
            steps: steps.to_vec(),
            scale: None,
            route: Some(RouteSettings {
                paths: vec!["/web".into()],
                domain: None,
                path_type: PathType::Prefix,
            }),
            timeouts: Timeouts {
                health_poll: Duration::from_millis(10),
                ..Timeouts::default()
            },
            health_fail_fast: false,
            holder: "tester".into(),
        }
    }

    fn query() -> StatusQuery {
        StatusQuery {
            service: ServiceName::new("demo-web").unwrap(),
            target: "web".into(),
            blue_green: true,
        }
    }

    #[tokio::test]
    async fn status_shows_both_colours_the_route_and_the_lock_holder_and_changes_nothing() {
        let orchestrator = MemoryOrchestrator::new().with_target("web", "web:v1");
        let registry = MemoryRegistry::new();
        let ports = Ports {
            orchestrator: Arc::new(orchestrator.clone()),
            registry: Arc::new(registry.clone()),
            proxy: Some(Arc::new(MemoryProxy::new())),
        };
        let ignore = |_: &Event| {};
        let empty = status(&ports, &query()).await.unwrap();
        assert_eq!(empty.live_color, None);
        assert!(empty.instances.is_empty() && empty.idle.is_none());
        assert_eq!(empty.proxy, Some(ProxyStatus::None));
        assert_eq!(empty.lock, LockStatus::Free);

        for image in ["web:v1", "web:v2"] {
            orchestrator.add_target("web", image);
            Engine::new(ports.clone(), options(&[Step::Deploy]))
                .unwrap()
                .run(&ignore)
                .await
                .unwrap();
        }
        let lease = registry
            .lock(
                &query().service,
                "docker-flow pid 7 on ci",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        let stored = registry.state(&query().service);
        let calls = orchestrator.operations().len();

        let seen = status(&ports, &query()).await.unwrap();

        assert_eq!(seen.live_color, Some(Color::Green));
        let release = seen.release.as_ref().unwrap();
        assert_eq!(release.image, "web:v2");
        assert_eq!(release.released_by, "tester");
        assert_eq!(seen.previous_release.as_ref().unwrap().image, "web:v1");
        assert_eq!(seen.instances.len(), 1);
        assert_eq!(seen.instances[0].health, "healthy");
        let idle = seen.idle.as_ref().unwrap();
        assert_eq!((idle.color, idle.state), (Color::Blue, "running"));
        let Some(ProxyStatus::Routed { color, servers, .. }) = &seen.proxy else {
            panic!("routed: {:?}", seen.proxy);
        };
        assert_eq!(*color, Some(Color::Green));
        assert_eq!(Some(servers[0].address), seen.instances[0].address);
        assert!(
            matches!(&seen.lock, LockStatus::Held { holder, .. } if holder == "docker-flow pid 7 on ci")
        );
        assert_eq!(registry.state(&query().service), stored);
        assert!(orchestrator.operations()[calls..].iter().all(|r| matches!(
            r.operation,
            crate::memory::OrchestratorOperation::List(_)
                | crate::memory::OrchestratorOperation::Health(_)
        )));
        registry.unlock(&lease).await.unwrap();

        Engine::new(ports.clone(), options(&[Step::StopOld]))
            .unwrap()
            .run(&ignore)
            .await
            .unwrap();
        let seen = status(&ports, &query()).await.unwrap();
        let idle = seen.idle.unwrap();
        assert_eq!(idle.state, "stopped");
        assert_eq!(idle.instances[0].health, "stopped");
        assert_eq!(seen.lock, LockStatus::Free);
    }

    #[tokio::test]
    async fn a_proxy_that_cannot_be_asked_is_reported_not_fatal() {
        let registry = MemoryRegistry::new();
        let mut proxy = crate::proxy::MockProxy::new();
        proxy.expect_served_route().returning(|_| {
            Err(crate::ProxyError::Unreachable {
                address: "127.0.0.1:1".to_string(),
                source: "connection refused".into(),
            })
        });
        let ports = Ports {
            orchestrator: Arc::new(MemoryOrchestrator::new().with_target("web", "web:v1")),
            registry: Arc::new(registry),
            proxy: Some(Arc::new(proxy)),
        };
        let seen = status(&ports, &query()).await.unwrap();
        assert!(
            matches!(&seen.proxy, Some(ProxyStatus::Unknown { reason }) if reason.contains("127.0.0.1:1 cannot be reached")),
            "{:?}",
            seen.proxy
        );
    }
}
