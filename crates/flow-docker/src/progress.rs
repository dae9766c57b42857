//! What [`DockerOrchestrator`](crate::DockerOrchestrator) reports while it works, besides its
//! results: a build's output as it comes, and the waits for `depends_on` conditions.
//!
//! These happen inside one port call (`prepare`, `start_side_targets`, `start`), which the
//! release engine sees only when it returns; a person would otherwise watch a silent terminal
//! for as long as a build or a database's healthcheck takes. The orchestrator hands each event
//! to the [`DockerObserver`] it was given ([`DockerOrchestrator::with_observer`](crate::DockerOrchestrator::with_observer)),
//! which the command line draws with the release's own progress. Events serialize as the
//! command line's `--json` events do (an `event` tag in kebab-case, durations in
//! milliseconds).

use std::time::Duration;

use serde::Serialize;

use crate::compose::Condition;

/// Something the Docker adapter reports as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum DockerEvent {
    /// One line of a build's output (`Step 1/4 : FROM scratch`), as the engine sends it.
    BuildOutput {
        /// The Compose service being built.
        service: String,
        /// The line, without its line break.
        line: String,
    },
    /// `service` waits for `dependency` to meet `condition` before it starts.
    DependencyWaiting {
        /// The service about to start.
        service: String,
        /// The service it depends on.
        dependency: String,
        /// What it waits for.
        condition: Condition,
    },
    /// `dependency` met `condition`; `service` can start.
    DependencyReady {
        /// The service about to start.
        service: String,
        /// The service it depends on.
        dependency: String,
        /// What was waited for.
        condition: Condition,
        /// How long the wait took.
        #[serde(serialize_with = "millis")]
        took: Duration,
    },
    /// A `required: false` dependency is absent or did not get ready: `service` starts
    /// without it, as Compose does.
    DependencySkipped {
        /// The service about to start.
        service: String,
        /// The optional dependency.
        dependency: String,
        /// Why it is skipped.
        reason: String,
    },
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Receives the Docker adapter's events as they happen (the command line shows them).
pub trait DockerObserver: Send + Sync {
    /// Called for each event, in order.
    fn on_docker_event(&self, event: &DockerEvent);
}

impl<F: Fn(&DockerEvent) + Send + Sync> DockerObserver for F {
    fn on_docker_event(&self, event: &DockerEvent) {
        self(event)
    }
}
