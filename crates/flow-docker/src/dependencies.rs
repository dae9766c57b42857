//! `depends_on` at run time: before a side target or the target's new instances start, each
//! service it depends on must meet its condition, as `docker compose up` waits for it.
//!
//! * A dependency is found by its labels in the project: the Compose service label (side
//!   targets, and containers `docker compose` started) or docker-flow's target label (a
//!   service released by docker-flow, in whichever colour runs). Only side targets are
//!   started by a release; any other dependency must already run, and the error says to add
//!   it with `--side-target`.
//! * `service_started` is met by a running container (or one that ran and exited 0: a one-shot
//!   job that was quicker than the first look); `service_healthy` by Docker's health status
//!   `healthy`, and a container without a healthcheck never gets one, so that is refused at
//!   once, as Compose does, as is `unhealthy`; `service_completed_successfully` by exit code
//!   0, and any other exit code is refused with the tail of the container's log.
//! * Each wait is bounded by [`DockerOptions::dependency_timeout`](crate::DockerOptions)
//!   (`--health-timeout`). A `required: false` dependency that is absent or fails is reported
//!   ([`DockerEvent::DependencySkipped`]) and the service starts without it.
//! * Waiting changes nothing: a failed wait fails the call before it creates a container.

use std::time::{Duration, Instant};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use flow_core::{DependencyFailure, OrchestratorError};

use crate::compose::{ComposeError, Condition, Dependency};
use crate::progress::DockerEvent;
use crate::{last_health_output, DockerOrchestrator, LABEL_COMPOSE_SERVICE, LABEL_TARGET};

/// How often a dependency's state is read while waiting for it.
const DEPENDENCY_POLL: Duration = Duration::from_millis(250);

/// Where a dependency stands at one look.
enum Readiness {
    /// Its condition is met.
    Ready,
    /// Not yet; what it is doing instead.
    Pending(String),
    /// It will not meet its condition; why, for a person.
    Failed(String),
}

impl DockerOrchestrator {
    /// `services` in the order their dependencies allow (see
    /// [`ComposeProject::start_order`](crate::compose::ComposeProject::start_order)).
    pub(crate) fn dependency_order(
        &self,
        services: &[String],
    ) -> Result<Vec<String>, OrchestratorError> {
        self.compose
            .start_order(services)
            .map_err(|error| match &error {
                ComposeError::DependencyCycle { cycle } => OrchestratorError::from(DependencyFailure {
                    service: cycle[0].clone(),
                    dependency: cycle.get(1).cloned().unwrap_or_default(),
                    message: error.to_string(),
                }),
                ComposeError::UnknownDependency {
                    service,
                    dependency,
                } => OrchestratorError::from(DependencyFailure {
                    service: service.clone(),
                    dependency: dependency.clone(),
                    message: "the Compose file does not define it; define it, or mark the dependency `required: false`".into(),
                }),
                _ => OrchestratorError::from(DependencyFailure {
                    service: services.join(", "),
                    dependency: String::new(),
                    message: error.to_string(),
                }),
            })
    }

    /// Waits until every dependency of `service` meets its condition, one after the other in
    /// the order written.
    pub(crate) async fn await_dependencies(&self, service: &str) -> Result<(), OrchestratorError> {
        self.dependency_order(&[service.to_string()])?;
        let Some(spec) = self.compose.services.get(service) else {
            return Ok(());
        };
        for dependency in &spec.depends_on {
            let settings = spec.dependency(dependency);
            match self.await_dependency(service, dependency, settings).await? {
                Ok(()) => {}
                Err(reason) if !settings.required => {
                    self.report(DockerEvent::DependencySkipped {
                        service: service.to_string(),
                        dependency: dependency.clone(),
                        reason,
                    });
                }
                Err(message) => {
                    return Err(OrchestratorError::from(DependencyFailure {
                        service: service.to_string(),
                        dependency: dependency.clone(),
                        message,
                    }))
                }
            }
        }
        Ok(())
    }

    /// Waits for one dependency: `Ok(Err(why))` when it will not get ready, `Err` when the
    /// engine fails.
    async fn await_dependency(
        &self,
        service: &str,
        dependency: &str,
        settings: Dependency,
    ) -> Result<Result<(), String>, OrchestratorError> {
        if !self.compose.services.contains_key(dependency) {
            return Ok(Err("the Compose file does not define it".into()));
        }
        let condition = settings.condition;
        let timeout = self.options.dependency_timeout;
        let began = Instant::now();
        let mut announced = false;
        loop {
            let containers = self.dependency_containers(dependency).await?;
            if containers.is_empty() {
                return Ok(Err(format!(
                    "it is not running, and a release starts only its side targets; add --side-target {dependency} so that the release starts it first, or start it before the release"
                )));
            }
            if !announced {
                announced = true;
                self.report(DockerEvent::DependencyWaiting {
                    service: service.to_string(),
                    dependency: dependency.to_string(),
                    condition,
                });
            }
            let detail = match self.readiness(dependency, &containers, condition).await? {
                Readiness::Ready => {
                    self.report(DockerEvent::DependencyReady {
                        service: service.to_string(),
                        dependency: dependency.to_string(),
                        condition,
                        took: began.elapsed(),
                    });
                    return Ok(Ok(()));
                }
                Readiness::Failed(reason) => return Ok(Err(reason)),
                Readiness::Pending(detail) => detail,
            };
            let waited = began.elapsed();
            if waited >= timeout {
                return Ok(Err(format!(
                    "it did not meet the condition {condition} within {} (--health-timeout); last: {detail}",
                    flow_core::time::human(timeout)
                )));
            }
            tokio::time::sleep(DEPENDENCY_POLL.min(timeout - waited)).await;
        }
    }

    /// The containers of `dependency` in the project, inspected.
    async fn dependency_containers(
        &self,
        dependency: &str,
    ) -> Result<Vec<ContainerInspectResponse>, OrchestratorError> {
        // Either label may name it, so the filter is applied here rather than by the engine.
        let summaries = self.project_containers(&[], dependency).await?;
        let ids: Vec<String> = summaries
            .into_iter()
            .filter(|summary| {
                summary.labels.as_ref().is_some_and(|labels| {
                    [LABEL_COMPOSE_SERVICE, LABEL_TARGET]
                        .iter()
                        .any(|label| labels.get(*label).map(String::as_str) == Some(dependency))
                })
            })
            .filter_map(|summary| summary.id)
            .collect();
        futures::future::try_join_all(ids.iter().map(|id| self.inspect(id, id))).await
    }

    /// How the containers of `dependency` stand against `condition`. For `service_started`
    /// and `service_healthy` the running containers decide when there are any (an older
    /// colour may be stopped); a job's every container must have completed.
    async fn readiness(
        &self,
        dependency: &str,
        containers: &[ContainerInspectResponse],
        condition: Condition,
    ) -> Result<Readiness, OrchestratorError> {
        let running: Vec<&ContainerInspectResponse> =
            containers.iter().filter(|c| is_running(c)).collect();
        let judged: Vec<&ContainerInspectResponse> =
            if condition == Condition::CompletedSuccessfully || running.is_empty() {
                containers.iter().collect()
            } else {
                running
            };
        let mut pending = None;
        for container in judged {
            match self.judge(dependency, container, condition).await? {
                Readiness::Ready => {}
                Readiness::Pending(detail) => {
                    pending.get_or_insert(detail);
                }
                failed @ Readiness::Failed(_) => return Ok(failed),
            }
        }
        Ok(pending.map_or(Readiness::Ready, Readiness::Pending))
    }

    /// One container against `condition`.
    async fn judge(
        &self,
        dependency: &str,
        container: &ContainerInspectResponse,
        condition: Condition,
    ) -> Result<Readiness, OrchestratorError> {
        let name = container
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/');
        let state = container.state.clone().unwrap_or_default();
        if matches!(
            state.status,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
        ) {
            let code = state.exit_code.unwrap_or(-1);
            if code == 0 && condition != Condition::Healthy {
                return Ok(Readiness::Ready);
            }
            let id = container.id.as_deref().unwrap_or(name);
            let tail = self.log_tail(id, name).await?;
            let expected = match condition {
                Condition::Healthy => " instead of becoming healthy",
                _ => "",
            };
            return Ok(Readiness::Failed(format!(
                "{name} exited with code {code}{expected}; the end of its log:\n{}",
                indent(&tail)
            )));
        }
        if !state.running.unwrap_or(false) {
            let status = state
                .status
                .map_or("created".to_string(), |s| s.to_string());
            return Ok(Readiness::Pending(format!("{name} is {status}")));
        }
        Ok(match condition {
            Condition::Started => Readiness::Ready,
            Condition::CompletedSuccessfully => Readiness::Pending(format!("{name} still runs")),
            Condition::Healthy => {
                let health = state.health.unwrap_or_default();
                let last_output = last_health_output(&health).filter(|output| !output.is_empty());
                match health.status {
                    Some(HealthStatusEnum::HEALTHY) => Readiness::Ready,
                    Some(HealthStatusEnum::UNHEALTHY) => Readiness::Failed(format!(
                        "{name} is unhealthy: {}",
                        last_output.unwrap_or_else(|| "no health check output".into())
                    )),
                    Some(HealthStatusEnum::STARTING) => Readiness::Pending(format!(
                        "{name} is starting{}",
                        last_output.map(|o| format!(": {o}")).unwrap_or_default()
                    )),
                    _ => Readiness::Failed(format!(
                        "{dependency} has no healthcheck, so it never becomes healthy; give it a `healthcheck:` (or its image a HEALTHCHECK), or depend on it with `condition: service_started`"
                    )),
                }
            }
        })
    }
}

fn is_running(container: &ContainerInspectResponse) -> bool {
    container
        .state
        .as_ref()
        .and_then(|state| state.running)
        .unwrap_or(false)
}

/// A log tail set off under the message it belongs to.
fn indent(text: &str) -> String {
    let lines: Vec<String> = text
        .trim_end()
        .lines()
        .map(|line| format!("    {line}"))
        .collect();
    if lines.is_empty() {
        "    (the log is empty)".into()
    } else {
        lines.join("\n")
    }
}
