//! Progress of a release, reported as it happens.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::release::Step;

/// A named stretch of work whose duration the report gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Taking the deploy lock and reading the state.
    Lock,
    /// Pulling the image, creating networks, starting side targets, removing leftovers.
    Prepare,
    /// Creating and starting new instances.
    Start,
    /// Waiting for new instances to be healthy.
    Healthy,
    /// Reconfiguring the proxy (returns once the new servers are UP).
    Switch,
    /// Writing the new state (compare-and-swap).
    Commit,
    /// Waiting for old servers' sessions to finish.
    Drain,
    /// Stopping or removing old instances.
    Retire,
    /// Undoing a failed step.
    Rollback,
}

impl Phase {
    /// The phase's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Lock => "lock",
            Phase::Prepare => "prepare",
            Phase::Start => "start",
            Phase::Healthy => "healthy",
            Phase::Switch => "switch",
            Phase::Commit => "commit",
            Phase::Drain => "drain",
            Phase::Retire => "retire",
            Phase::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened during a release.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A step begins.
    StepStarted {
        /// The step.
        step: Step,
    },
    /// A phase finished.
    PhaseFinished {
        /// The step it belongs to (`None` for the lock).
        step: Option<Step>,
        /// The phase.
        phase: Phase,
        /// How long it took.
        #[serde(with = "millis")]
        took: Duration,
    },
    /// Still waiting for new instances to be healthy (sent on every poll).
    WaitingHealthy {
        /// How many are healthy.
        healthy: usize,
        /// How many were started.
        total: usize,
        /// Time since the wait began.
        #[serde(with = "millis")]
        elapsed: Duration,
    },
    /// Still waiting for old servers to drain (sent on every poll).
    Draining {
        /// Sessions still open.
        sessions: u64,
        /// Time since the drain began.
        #[serde(with = "millis")]
        elapsed: Duration,
    },
    /// Something a person should know that is not a failure.
    Notice {
        /// What happened.
        message: String,
    },
    /// Something that did not stop the run but may not be what was meant: the Compose file
    /// resolving to another image than the live release runs, a spec read back from the
    /// instances.
    Warning {
        /// What is different, naming both sides.
        message: String,
    },
    /// A new instance reported unhealthy while the release waits for it; the wait goes on
    /// until `--health-timeout` (Docker's status can recover), unless `--health-fail-fast`.
    /// Sent when an instance turns unhealthy and whenever its check's output changes.
    InstanceUnhealthy {
        /// The instance (container name).
        instance: String,
        /// The health check's latest output.
        detail: String,
        /// Time since the wait began.
        #[serde(with = "millis")]
        elapsed: Duration,
    },
    /// A step finished.
    StepFinished {
        /// The step.
        step: Step,
        /// What it did, in words.
        summary: String,
    },
    /// A step failed after starting something and is being rolled back.
    RollingBack {
        /// The step.
        step: Step,
        /// Why.
        reason: String,
    },
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Receives the events of a release as they happen (the CLI prints them).
pub trait Observer: Send + Sync {
    /// Called for each event, in order.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Observer for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}
