//! What a release can fail with, sorted by what it left behind.
//!
//! The sorting is the point: a caller (the CLI maps it to exit codes) must be able to tell
//! "nothing changed" from "rolled back" from "the new version is live but a later step failed"
//! without parsing messages.

use std::time::Duration;

use crate::domain::ServiceName;
use crate::orchestrator::{Diagnosis, Health, OrchestratorError};
use crate::proxy::ProxyError;
use crate::registry::RegistryError;
use crate::release::Step;
use crate::time::human;

/// Why a step could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The container engine failed or refused.
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
    /// The registry failed, refused a compare-and-swap, or the lock was held or lost.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The proxy failed or refused.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A new instance reported unhealthy or exited while the release waited for it.
    #[error(
        "{instance} failed: {}{}",
        describe_health(health, diagnosis),
        describe_diagnosis(diagnosis)
    )]
    Unhealthy {
        /// The instance (container name).
        instance: String,
        /// What it reported.
        health: Health,
        /// Its last health output and log tail.
        diagnosis: Box<Diagnosis>,
    },
    /// New instances were still not healthy when `--health-timeout` ran out.
    #[error("{} did not become healthy within {} (raise --health-timeout if it is just slow){}", instances.join(", "), human(*after), describe_diagnosis(diagnosis))]
    HealthTimeout {
        /// The instances still not healthy.
        instances: Vec<String>,
        /// The timeout that ran out.
        after: Duration,
        /// Last health output and log tail of the first of them.
        diagnosis: Box<Diagnosis>,
    },
    /// A step needs a live release, and there is none.
    #[error("{service} has no live release yet: run a deploy first (-F deploy)")]
    NothingLive {
        /// The service.
        service: ServiceName,
    },
    /// Scaling up needs what the live release runs, and neither the stored release records
    /// a spec nor does an instance run to read it back from.
    #[error("cannot tell what the live release of {service} runs: the stored release records no spec and no instance of it is running; run a deploy (-F deploy)")]
    NoLiveSpec {
        /// The service.
        service: ServiceName,
    },
    /// `rollback` found no release to make live again (bad input: nothing was touched).
    #[error("{service} has nothing to roll back to: {reason}")]
    NothingToRollBack {
        /// The service.
        service: ServiceName,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The previous release's instances are gone and its record keeps no spec to recreate
    /// them from (it was stored by an older docker-flow).
    #[error("the instances of the previous release of {service} ({image}) are gone and its record keeps no spec to recreate them from (stored by an older docker-flow); deploy that version again (-F deploy)")]
    NoPreviousSpec {
        /// The service.
        service: ServiceName,
        /// The image the previous release ran.
        image: String,
    },
    /// The proxy routes to instances the stored state does not name live (a run was killed
    /// between its switch and its commit) and the stored live colour runs nothing, so a
    /// rollback would have to remove what is served.
    #[error("the proxy routes {service} to {}, which the stored state does not name live, and the stored live colour runs no instance: a rollback would remove what is served; run a deploy (-F deploy), which stores them as live first", instances.join(", "))]
    ServedNotLive {
        /// The service.
        service: ServiceName,
        /// The instances the proxy routes to.
        instances: Vec<String>,
    },
    /// The run was interrupted (Ctrl-C) before this step could finish.
    #[error("interrupted")]
    Interrupted,
    /// An instance has no address a proxy could send traffic to.
    #[error(
        "{instance} has no address the proxy can reach: set --port to the service's container port"
    )]
    NoAddress {
        /// The instance (container name).
        instance: String,
    },
}

/// The health in words; the check's output is left to the diagnosis when it has it, so it
/// is not printed twice.
fn describe_health(health: &Health, diagnosis: &Diagnosis) -> String {
    match health {
        Health::Unhealthy { .. } if diagnosis.last_health_output.is_some() => {
            "health check failing".to_string()
        }
        Health::Unhealthy { detail } => format!("health check failing: {}", detail.trim()),
        Health::Exited { code } => format!("exited with code {code}"),
        Health::Starting { detail } => format!(
            "still starting{}",
            detail
                .as_deref()
                .map(|d| format!(": {}", d.trim()))
                .unwrap_or_default()
        ),
        Health::Healthy => "healthy".to_string(),
    }
}

fn describe_diagnosis(diagnosis: &Diagnosis) -> String {
    let mut text = String::new();
    if let Some(output) = diagnosis.last_health_output.as_deref() {
        text.push_str(&format!("\n  last health output: {}", output.trim()));
    }
    if !diagnosis.log_tail.trim().is_empty() {
        text.push_str("\n  last log lines:");
        for line in diagnosis.log_tail.trim_end().lines() {
            text.push_str("\n    ");
            text.push_str(line);
        }
    }
    text
}

/// A failed invocation, sorted by what it left behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The options contradict each other or miss something a step needs; found before any
    /// port was called.
    #[error("{0}")]
    InvalidOptions(String),
    /// A step failed before anything was changed: the live release, its instances and the
    /// stored state are as they were. The lock held by another release is one such case.
    #[error("{}{cause}\nnothing was changed", step.map(|s| format!("{s}: ")).unwrap_or_default())]
    NothingChanged {
        /// The step that failed (`None`: before the first step, e.g. taking the lock).
        step: Option<Step>,
        /// Why.
        cause: Cause,
    },
    /// A step failed after it had started something, and was rolled back: what it started was
    /// removed, the proxy points at the servers it had before, the stored state is untouched.
    /// `undone` says what was undone and `cleanup_failures` what could not be (empty when the
    /// rollback was clean), each naming the instances.
    #[error(
        "{step} aborted: {cause}\n{}",
        rollback_summary(undone, cleanup_failures)
    )]
    Aborted {
        /// The step that was rolled back.
        step: Step,
        /// Why.
        cause: Cause,
        /// What was undone (and what was left as it was found), in words.
        undone: Vec<String>,
        /// Undo actions that failed, in words.
        cleanup_failures: Vec<String>,
    },
    /// A step failed after earlier steps of the same invocation had changed something
    /// (committed a release, switched the proxy, stopped instances). Those changes stay;
    /// `error` says what the failing step itself left behind.
    #[error("{} done; then {error}", done.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
    EarlierStepsDone {
        /// The earlier steps that changed something, in order.
        done: Vec<Step>,
        /// The failure of the later step.
        error: Box<ReleaseError>,
    },
    /// A step failed after its new state was committed: the new version is live, but this
    /// step's follow-up work (removing replaced instances, draining) or a later step failed.
    #[error("{step} failed after the new state was committed (the new version is live): {cause}")]
    AfterCommit {
        /// The step that failed.
        step: Step,
        /// Why.
        cause: Cause,
    },
}

fn rollback_summary(undone: &[String], failures: &[String]) -> String {
    let done = if undone.is_empty() {
        "it had started and switched nothing".to_string()
    } else {
        undone.join("; ")
    };
    if failures.is_empty() {
        format!("rolled back: {done}; the live version and the stored state are untouched")
    } else {
        format!(
            "rolled back INCOMPLETELY ({done}); fix by hand:\n  - {}",
            failures.join("\n  - ")
        )
    }
}

impl ReleaseError {
    /// Whether the input was refused: the options contradict each other, or ask for
    /// something the stored state cannot give (a rollback with no previous release). Nothing
    /// was changed in either case.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ReleaseError::InvalidOptions(_)
                | ReleaseError::NothingChanged {
                    cause: Cause::NothingToRollBack { .. },
                    ..
                }
        )
    }

    /// The underlying cause, when there is one.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            ReleaseError::InvalidOptions(_) => None,
            ReleaseError::EarlierStepsDone { error, .. } => error.cause(),
            ReleaseError::NothingChanged { cause, .. }
            | ReleaseError::Aborted { cause, .. }
            | ReleaseError::AfterCommit { cause, .. } => Some(cause),
        }
    }
}
