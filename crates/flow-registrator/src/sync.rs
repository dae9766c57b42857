//! Bringing the registry in step with the engine: all at once ([`Syncer::resync`]) or for
//! one container after one of its events ([`Syncer::reconcile`]).

use std::collections::{BTreeMap, HashMap};

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use flow_core::{DynRegistry, HealthCheck, Registration};
use futures::StreamExt;

use crate::conventions::{self, Conventions, HOST_KEY, REGISTERED_BY, REGISTERED_BY_KEY};
use crate::{Activity, Deregister, RegistratorError, Reporter};

/// How many containers are inspected at once during a resync.
const INSPECT_CONCURRENCY: usize = 8;
/// The bit the engine sets in the exit code of a process ended by a signal (128 + n).
const SIGNALLED: i64 = 128;

/// What one resync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResyncSummary {
    /// Running containers seen.
    pub containers: usize,
    /// Registrations of this registrator in place afterwards.
    pub registrations: usize,
    /// Registrations written (new or changed).
    pub registered: usize,
    /// Registrations removed (their container is gone or no longer registrable).
    pub removed: usize,
}

/// Which registrations of stopped or vanished containers are removed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Of a stopped container: always, or only when it succeeded.
    pub(crate) deregister: Deregister,
    /// Whether a resync removes those whose container is no longer running.
    pub(crate) cleanup: bool,
}

/// Whether `stored`, read back from the registry, is what writing `written` left there.
/// A check's timeout left to the registry may read back as the registry's default, and
/// registries report a check's current status rather than the one it started with (Consul
/// does both), so neither alone makes a registration worth writing again at every resync.
fn reads_back_as(stored: &Registration, written: &Registration) -> bool {
    let Some(check) = &written.check else {
        return stored == written;
    };
    let check = HealthCheck {
        timeout: check
            .timeout
            .or_else(|| stored.check.as_ref().and_then(|c| c.timeout)),
        initial_status: stored.check.as_ref().and_then(|c| c.initial_status),
        ..check.clone()
    };
    *stored
        == Registration {
            check: Some(check),
            ..written.clone()
        }
}

/// The registrator's working state: its registrations as last written, by container.
pub(crate) struct Syncer {
    docker: Docker,
    /// How messages name the engine.
    endpoint: String,
    registry: DynRegistry,
    conventions: Conventions,
    policy: Policy,
    reporter: Reporter,
    /// Our registrations by container id, then by registration id, as the registry holds
    /// them after our last successful write.
    known: HashMap<String, BTreeMap<String, Registration>>,
}

impl Syncer {
    pub(crate) fn new(
        docker: Docker,
        endpoint: String,
        registry: DynRegistry,
        conventions: Conventions,
        policy: Policy,
        reporter: Reporter,
    ) -> Syncer {
        Syncer {
            docker,
            endpoint,
            registry,
            conventions,
            policy,
            reporter,
            known: HashMap::new(),
        }
    }

    fn is_ours(&self, registration: &Registration) -> bool {
        registration.meta.get(REGISTERED_BY_KEY).map(String::as_str) == Some(REGISTERED_BY)
            && registration.meta.get(HOST_KEY) == Some(&self.conventions.hostname)
    }

    /// Inspects a container; `None` when it no longer exists.
    async fn inspect(
        &self,
        container_id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RegistratorError> {
        match self
            .docker
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => Ok(Some(inspect)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(RegistratorError::Docker {
                endpoint: self.endpoint.clone(),
                action: format!("inspect container {container_id}"),
                source,
            }),
        }
    }

    /// Whether a container that is not running keeps its registrations: with
    /// `--deregister=on-success`, one that exited with a failure (an exit code that is
    /// neither 0 nor a signal's, 128 + n) does, as in Registrator.
    fn keeps_after_exit(&self, inspect: &ContainerInspectResponse) -> bool {
        let exit_code = inspect
            .state
            .as_ref()
            .and_then(|s| s.exit_code)
            .unwrap_or(0);
        self.policy.deregister == Deregister::OnSuccess
            && exit_code != 0
            && exit_code & SIGNALLED == 0
    }

    /// The registrations `container_id` stands for now: none when it is gone or not running.
    /// `None` (leave its registrations as they are) for a container whose settings cannot
    /// be used (reported) and for one that keeps its registrations after exiting.
    async fn desired(
        &self,
        container_id: &str,
    ) -> Result<Option<BTreeMap<String, Registration>>, RegistratorError> {
        let Some(inspect) = self.inspect(container_id).await? else {
            return Ok(Some(BTreeMap::new()));
        };
        let running = inspect
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            if self.keeps_after_exit(&inspect) {
                return Ok(None);
            }
            return Ok(Some(BTreeMap::new()));
        }
        match conventions::registrations(&inspect, &self.conventions) {
            Ok(registrations) => Ok(Some(
                registrations
                    .into_iter()
                    .map(|r| (r.id.clone(), r))
                    .collect(),
            )),
            Err(error) => {
                (self.reporter)(&Activity::Skipped(error));
                Ok(None)
            }
        }
    }

    /// Whether a resync keeps a registration of ours whose container does not run: without
    /// `--cleanup`, always; with `--deregister=on-success`, when its container failed.
    async fn kept_while_stopped(
        &self,
        container_id: Option<&String>,
    ) -> Result<bool, RegistratorError> {
        if !self.policy.cleanup {
            return Ok(true);
        }
        let Some(container_id) = container_id else {
            return Ok(false);
        };
        if self.policy.deregister == Deregister::Always {
            return Ok(false);
        }
        Ok(self
            .inspect(container_id)
            .await?
            .is_some_and(|inspect| self.keeps_after_exit(&inspect)))
    }

    /// Writes every registration again (`--ttl-refresh`): registries that expire them
    /// (`--ttl`) keep them as long as the registrator runs.
    pub(crate) async fn refresh(&mut self) -> Result<(), RegistratorError> {
        for registration in self.known.values().flat_map(BTreeMap::values) {
            self.registry
                .register(registration)
                .await
                .map_err(|source| RegistratorError::Registry {
                    action: format!("refresh {}", registration.id),
                    source,
                })?;
        }
        Ok(())
    }

    async fn register(&self, registration: &Registration) -> Result<(), RegistratorError> {
        self.registry
            .register(registration)
            .await
            .map_err(|source| RegistratorError::Registry {
                action: format!("register {}", registration.id),
                source,
            })?;
        (self.reporter)(&Activity::Registered(registration.clone()));
        Ok(())
    }

    async fn deregister(&self, registration: &Registration) -> Result<(), RegistratorError> {
        self.registry
            .deregister(&registration.id)
            .await
            .map_err(|source| RegistratorError::Registry {
                action: format!("deregister {}", registration.id),
                source,
            })?;
        (self.reporter)(&Activity::Deregistered(registration.clone()));
        Ok(())
    }

    /// Brings the registrations of one container in step with it (after any of its events).
    pub(crate) async fn reconcile(&mut self, container_id: &str) -> Result<(), RegistratorError> {
        let Some(desired) = self.desired(container_id).await? else {
            return Ok(());
        };
        let mut current = self.known.remove(container_id).unwrap_or_default();
        let mut outcome = Ok(());
        for (id, registration) in &desired {
            if current.get(id) == Some(registration) {
                continue;
            }
            if let Err(error) = self.register(registration).await {
                outcome = Err(error);
                break;
            }
            current.insert(id.clone(), registration.clone());
        }
        if outcome.is_ok() {
            let stale: Vec<Registration> = current
                .values()
                .filter(|r| !desired.contains_key(&r.id))
                .cloned()
                .collect();
            for registration in stale {
                if let Err(error) = self.deregister(&registration).await {
                    outcome = Err(error);
                    break;
                }
                current.remove(&registration.id);
            }
        }
        if !current.is_empty() {
            self.known.insert(container_id.to_string(), current);
        }
        outcome
    }

    /// Registers every running container and removes every registration of ours whose
    /// container is gone; afterwards the registry holds exactly what the engine runs.
    pub(crate) async fn resync(&mut self) -> Result<ResyncSummary, RegistratorError> {
        let running = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(|source| RegistratorError::Docker {
                endpoint: self.endpoint.clone(),
                action: "list the running containers".to_string(),
                source,
            })?;
        let ids: Vec<String> = running.into_iter().filter_map(|c| c.id).collect();
        let this = &*self;
        // Collected first: a stream holding the mapping closure is not `Send` for every
        // lifetime, which `tokio::spawn` of `run` requires.
        let inspections: Vec<_> = ids
            .iter()
            .map(|id| async move { (id.clone(), this.desired(id).await) })
            .collect();
        let mut inspected =
            futures::stream::iter(inspections).buffer_unordered(INSPECT_CONCURRENCY);
        let mut desired: HashMap<String, BTreeMap<String, Registration>> = HashMap::new();
        let mut unusable = Vec::new();
        while let Some((id, result)) = inspected.next().await {
            match result? {
                Some(registrations) => {
                    desired.insert(id, registrations);
                }
                None => unusable.push(id),
            }
        }
        drop(inspected);
        let stored: BTreeMap<String, Registration> = self
            .registry
            .all_instances()
            .await
            .map_err(|source| RegistratorError::Registry {
                action: "list registrations".to_string(),
                source,
            })?
            .into_iter()
            .filter(|r| self.is_ours(r))
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut summary = ResyncSummary {
            containers: ids.len(),
            ..Default::default()
        };
        let mut known: HashMap<String, BTreeMap<String, Registration>> = HashMap::new();
        let mut wanted_ids = std::collections::HashSet::new();
        for (container, registrations) in &desired {
            for (id, registration) in registrations {
                wanted_ids.insert(id.clone());
                if !stored
                    .get(id)
                    .is_some_and(|s| reads_back_as(s, registration))
                {
                    self.register(registration).await?;
                    summary.registered += 1;
                }
                known
                    .entry(container.clone())
                    .or_default()
                    .insert(id.clone(), registration.clone());
            }
        }
        for (id, registration) in &stored {
            if wanted_ids.contains(id) {
                continue;
            }
            let container = registration.meta.get(conventions::CONTAINER_KEY);
            // A container with unusable settings keeps what it had, and so does one the
            // policy leaves registered while it does not run; its later events still
            // reach these registrations through `known`.
            let unusable = container.is_some_and(|c| unusable.contains(c));
            if unusable || self.kept_while_stopped(container).await? {
                known
                    .entry(container.cloned().unwrap_or_default())
                    .or_default()
                    .insert(id.clone(), registration.clone());
                continue;
            }
            self.deregister(registration).await?;
            summary.removed += 1;
        }
        summary.registrations = known.values().map(BTreeMap::len).sum();
        self.known = known;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flow_core::{CheckStatus, HealthCheck, Registration};

    use super::reads_back_as;

    #[test]
    fn defaults_the_registry_fills_in_do_not_count_as_changes() {
        let written = Registration {
            id: "host-a:web-1:8080".to_string(),
            name: "web".to_string(),
            address: "127.0.0.1".to_string(),
            port: 49153,
            tags: Vec::new(),
            meta: Default::default(),
            check: Some(HealthCheck {
                initial_status: Some(CheckStatus::Passing),
                ..HealthCheck::http("http://127.0.0.1:49153/", Duration::from_secs(10), None)
            }),
        };
        let as_consul_reports_it = Registration {
            check: Some(HealthCheck::http(
                "http://127.0.0.1:49153/",
                Duration::from_secs(10),
                Some(Duration::from_secs(10)),
            )),
            ..written.clone()
        };
        assert!(reads_back_as(&as_consul_reports_it, &written));
        assert!(reads_back_as(&written, &written));
        let moved = Registration {
            port: 49154,
            ..as_consul_reports_it.clone()
        };
        assert!(!reads_back_as(&moved, &written));
        let other_interval = Registration {
            check: Some(HealthCheck::http(
                "http://127.0.0.1:49153/",
                Duration::from_secs(30),
                None,
            )),
            ..written.clone()
        };
        assert!(!reads_back_as(&other_interval, &written));
    }
}
