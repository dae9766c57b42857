//! The `Orchestrator` port: the container engine that runs a service's instances.
//!
//! # Contract
//!
//! Instances belong to a [`Group`]: one colour of a target in blue-green mode, or the target
//! itself otherwise. Within a group an instance is identified by its `number` (1, 2, …).
//!
//! * [`Orchestrator::describe`] reads what is configured for a target, changing nothing. An
//!   unknown target is [`OrchestratorError::UnknownTarget`].
//! * [`Orchestrator::prepare`] makes a target startable: its image is present (pulled
//!   according to the adapter's pull policy) and its network exists, and returns the
//!   [`ReleaseSpec`] its instances would run: the image's content id and the configuration as
//!   it resolves now. A failed pull changes nothing else.
//! * [`Orchestrator::start_side_targets`] starts each side target that is absent or stopped,
//!   and never recreates or restarts one that is running.
//! * [`Orchestrator::list`] returns every instance of the group, running or stopped, sorted by
//!   number.
//! * [`Orchestrator::start`] creates and starts one instance per number from the spec given
//!   (never from the configuration as it resolves now), concurrently where the engine allows.
//!   It either returns all of them started, or fails having removed the ones it created: a
//!   failed `start` leaves nothing behind.
//! * [`Orchestrator::resume`] starts stopped instances again, the same containers; a failed
//!   `resume` stops again what it started.
//! * [`Orchestrator::recover_spec`] reads back the spec an instance runs:
//!   [`RecoveredSpec::Exact`] when the instance carries it, [`RecoveredSpec::ImageOnly`] when
//!   only its image id is known (instances started by Docker Flow 1.x).
//! * [`Orchestrator::health`] reports one instance's health now; it does not wait. An instance
//!   with no health check is `Healthy` once it has kept running for the adapter's grace period.
//!   [`Orchestrator::diagnose`] gathers what a person needs to see why an instance failed.
//! * [`Orchestrator::stop`] stops instances and keeps them (they can be restarted by hand);
//!   [`Orchestrator::remove`] removes them, running or not. Both are idempotent: an instance
//!   that is already stopped or gone is not an error.
//! * Errors name the engine endpoint ([`OrchestratorError::Unreachable`]) or the instance.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{Color, ReleaseSpec};

/// A set of instances released together: one colour of a target, or the whole target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Group {
    /// The Compose service (target) the instances run.
    pub target: String,
    /// The colour in blue-green mode; `None` otherwise.
    pub color: Option<Color>,
}

impl Group {
    /// The group of `target` in `color` (or uncoloured).
    pub fn new(target: impl Into<String>, color: Option<Color>) -> Self {
        Group {
            target: target.into(),
            color,
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.color {
            Some(color) => write!(f, "{}-{}", self.target, color),
            None => f.write_str(&self.target),
        }
    }
}

/// One running or stopped instance (container) of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The engine's id (container id).
    pub id: String,
    /// The engine's name (`<project>-<target>-<color>-<n>`).
    pub name: String,
    /// The group it belongs to.
    pub group: Group,
    /// Its number within the group, from 1.
    pub number: u32,
    /// Whether it is running.
    pub running: bool,
    /// Where a proxy or a health probe reaches it; `None` when it is not running or has no
    /// service port.
    pub address: Option<SocketAddr>,
    /// The image it runs.
    pub image: String,
}

/// What is configured for a target now (the Compose file as it resolves today).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The image reference the target runs.
    pub image: String,
    /// The resolved configuration, by key, as a [`ReleaseSpec`] would hold it.
    pub config: BTreeMap<String, serde_json::Value>,
}

/// The spec of a running instance, read back when the stored release has none (state written
/// by Docker Flow 1.x or an older docker-flow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "origin", content = "spec", rename_all = "kebab-case")]
pub enum RecoveredSpec {
    /// The instance carries the spec it was started from: exact.
    Exact(ReleaseSpec),
    /// Only the instance's image id could be read; the rest of the configuration is the
    /// target's as it resolves now.
    ImageOnly(ReleaseSpec),
}

impl RecoveredSpec {
    /// The spec, however it was found.
    pub fn spec(&self) -> &ReleaseSpec {
        match self {
            RecoveredSpec::Exact(spec) | RecoveredSpec::ImageOnly(spec) => spec,
        }
    }
}

/// One instance's health at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Not decided yet (health check pending, grace period running).
    Starting {
        /// The latest check output, when there is one.
        detail: Option<String>,
    },
    /// Ready for traffic.
    Healthy,
    /// The health check has failed for good.
    Unhealthy {
        /// The latest check output.
        detail: String,
    },
    /// The instance stopped running.
    Exited {
        /// Its exit code.
        code: i64,
    },
}

/// What a person needs to see to understand why an instance failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The last health check output, when there was a check.
    pub last_health_output: Option<String>,
    /// The last lines of the instance's log.
    pub log_tail: String,
}

/// Everything an orchestrator operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// The engine could not be reached at all.
    #[error("the container engine at {endpoint} cannot be reached: {}; check that Docker is running and --host / DOCKER_HOST point at it", crate::error_chain(source.as_ref()))]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A target or side target that the Compose file does not define.
    #[error("the Compose file defines no service {target:?} (it defines: {known}); check --target / --side-target")]
    UnknownTarget {
        /// The name asked for.
        target: String,
        /// The services that exist, comma separated.
        known: String,
    },
    /// The image could not be pulled (or is absent with pull policy `never`).
    #[error("image {image} is not available: {message}")]
    Image {
        /// The image reference.
        image: String,
        /// Why.
        message: String,
    },
    /// An operation on one instance failed.
    #[error("{operation} {instance} failed: {message}")]
    Instance {
        /// What was attempted (`create`, `start`, `stop`, `remove`, `inspect`).
        operation: &'static str,
        /// The instance (container name).
        instance: String,
        /// The engine's message.
        message: String,
    },
    /// A service the one being started depends on (Compose `depends_on`) is not there or did
    /// not meet its condition; nothing of the dependent service was started. Boxed: the
    /// other variants are smaller, and every release error carries this enum.
    #[error(transparent)]
    Dependency(Box<DependencyFailure>),
    /// Any other answer of the engine.
    #[error("the container engine refused {operation}: {message}")]
    Engine {
        /// What was attempted.
        operation: String,
        /// The engine's message.
        message: String,
    },
}

/// A dependency (Compose `depends_on`) that is not there or did not meet its condition
/// ([`OrchestratorError::Dependency`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service} depends on {dependency}: {message}")]
pub struct DependencyFailure {
    /// The service that was to start.
    pub service: String,
    /// The service it depends on.
    pub dependency: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl From<DependencyFailure> for OrchestratorError {
    fn from(failure: DependencyFailure) -> Self {
        OrchestratorError::Dependency(Box::new(failure))
    }
}

/// The container engine that runs a service's instances. See the [module docs](self) for
/// the contract every implementation keeps.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Orchestrator: fmt::Debug + fmt::Display + Send + Sync {
    /// What is configured for `target`.
    async fn describe(&self, target: &str) -> Result<TargetInfo, OrchestratorError>;

    /// Makes `target` startable (image present, network created) and returns the spec its
    /// instances run when started from the configuration as it resolves now.
    async fn prepare(&self, target: &str) -> Result<ReleaseSpec, OrchestratorError>;

    /// Starts the side targets that are absent or stopped; never recreates running ones.
    async fn start_side_targets(&self, side_targets: &[String]) -> Result<(), OrchestratorError>;

    /// Every instance of `group`, running or stopped, sorted by number.
    async fn list(&self, group: &Group) -> Result<Vec<Instance>, OrchestratorError>;

    /// Creates and starts instances `numbers` of `group` from `spec` (its image id and
    /// configuration, whatever the target's configuration is now); all or nothing.
    async fn start(
        &self,
        group: &Group,
        numbers: &[u32],
        spec: &ReleaseSpec,
    ) -> Result<Vec<Instance>, OrchestratorError>;

    /// Starts stopped instances again (the same containers, not new ones) and returns them as
    /// they run now; all or nothing (on failure the ones it started are stopped again).
    /// Running ones are returned unchanged.
    async fn resume(&self, instances: &[Instance]) -> Result<Vec<Instance>, OrchestratorError>;

    /// The spec `instance` runs, read from the instance itself.
    async fn recover_spec(&self, instance: &Instance) -> Result<RecoveredSpec, OrchestratorError>;

    /// The health of one instance now.
    async fn health(&self, instance: &Instance) -> Result<Health, OrchestratorError>;

    /// Last health output and log tail of one instance.
    async fn diagnose(&self, instance: &Instance) -> Result<Diagnosis, OrchestratorError>;

    /// Stops instances, keeping them for a manual restart.
    async fn stop(&self, instances: &[Instance]) -> Result<(), OrchestratorError>;

    /// Removes instances, running or not.
    async fn remove(&self, instances: &[Instance]) -> Result<(), OrchestratorError>;
}

/// A shared, dynamically dispatched orchestrator.
pub type DynOrchestrator = std::sync::Arc<dyn Orchestrator>;

#[cfg(any(test, feature = "mocks"))]
impl fmt::Display for MockOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock orchestrator")
    }
}
