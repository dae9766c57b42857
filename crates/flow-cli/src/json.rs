//! The `--json` event stream: one JSON object a line on stdout, each carrying the schema
//! version.
//!
//! The README documents every event type with an example (section "JSON events"), and the
//! end-to-end tests check a real run's lines against those examples, so the documentation is
//! the schema. Decisions:
//!
//! * **The version is added here, not in flow-core.** [`line`] wraps whatever it prints with
//!   `"schema": SCHEMA_VERSION`, so an event variant the engine adds later is versioned without
//!   anyone remembering to do it.
//! * **One naming convention.** Event names and enumerated values are lowercase kebab-case,
//!   spelled as `--flow` spells steps (`"stop-old"`); field names are lowercase snake_case;
//!   durations are integer milliseconds.
//! * **Programs see failures too.** A failed invocation ends with a `failed` event naming the
//!   exit code, in addition to the message on stderr.
//! * Bump [`SCHEMA_VERSION`] when a field is removed, renamed or changes type; adding an event
//!   type or a field does not break readers that ignore what they do not know.

use std::time::Duration;

use flow_core::release::{Plan, Report};
use flow_core::{Color, ServiceName};
use serde::Serialize;

/// The version of the event schema every line carries in its `schema` field.
pub const SCHEMA_VERSION: u32 = 1;

/// Any event, with the schema version in front of its own fields.
#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    schema: u32,
    #[serde(flatten)]
    event: &'a T,
}

/// The JSON line of an event: its own fields (an `event` tag among them) plus `schema`.
pub fn line<T: Serialize>(event: &T) -> String {
    serde_json::to_string(&Versioned {
        schema: SCHEMA_VERSION,
        event,
    })
    // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
    .unwrap_or_default()
}

/// The events the command line adds to the engine's own ([`flow_core::release::Event`]).
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum CliEvent<'a> {
    /// `--dry-run`: what the invocation would do.
    Plan {
        /// The plan's own fields.
        #[serde(flatten)]
        plan: &'a Plan,
    },
    /// `docker-flow status`: what runs.
    Status {
        /// The status's own fields.
        #[serde(flatten)]
        status: &'a flow_core::status::Status,
    },
    /// The last line of a successful run.
    Done(Done),
    /// The last line of a failed run (the message is on stderr too).
    Failed {
        /// The process's exit code.
        exit: u8,
        /// The whole message, as printed on stderr.
        message: String,
    },
    /// `--verbose`: one call through a port (engine, registry or proxy).
    PortCall {
        /// `orchestrator`, `registry` or `proxy`.
        port: &'static str,
        /// The port's method.
        call: &'static str,
        /// What it was called for, in words (a target, a group, a service).
        subject: String,
        /// How long it took, in milliseconds.
        #[serde(serialize_with = "millis")]
        took: Duration,
        /// The error, when it failed.
        error: Option<String>,
    },
}

/// What a successful run did.
#[derive(Debug, Serialize)]
pub struct Done {
    /// The service.
    pub service: ServiceName,
    /// The live colour afterwards (`null` without blue-green).
    pub live_color: Option<Color>,
    /// The stored scale afterwards.
    pub scale: Option<u32>,
    /// One entry per step, in order.
    pub summaries: Vec<StepSummary>,
    /// Every phase's duration, in order.
    pub timings: Vec<Timing>,
    /// The whole run, in milliseconds.
    #[serde(serialize_with = "millis")]
    pub total: Duration,
}

/// What one step did.
#[derive(Debug, Serialize)]
pub struct StepSummary {
    /// The step.
    pub step: flow_core::release::Step,
    /// In words.
    pub summary: String,
}

/// How long one phase took.
#[derive(Debug, Serialize)]
pub struct Timing {
    /// The step (`null` for the lock).
    pub step: Option<flow_core::release::Step>,
    /// The phase.
    pub phase: flow_core::release::Phase,
    /// Milliseconds.
    #[serde(serialize_with = "millis")]
    pub took: Duration,
}

impl Done {
    /// The event for a run that ended with `report` after `total`.
    pub fn new(report: &Report, total: Duration) -> Done {
        Done {
            service: report.service.clone(),
            live_color: report.live_color,
            scale: report.scale,
            summaries: report
                .summaries
                .iter()
                .map(|(step, summary)| StepSummary {
                    step: *step,
                    summary: summary.clone(),
                })
                .collect(),
            timings: report
                .timings
                .iter()
                .map(|timing| Timing {
                    step: timing.step,
                    phase: timing.phase,
                    took: timing.took,
                })
                .collect(),
            total,
        }
    }
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::release::{Event, Phase, Step};

    #[test]
    fn every_line_carries_the_schema_version_and_kebab_case_values() {
        let text = line(&Event::PhaseFinished {
            step: Some(Step::StopOld),
            phase: Phase::Drain,
            took: Duration::from_millis(1500),
        });
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "schema": SCHEMA_VERSION, "event": "phase-finished",
                "step": "stop-old", "phase": "drain", "took": 1500
            })
        );
        let text = line(&CliEvent::Failed {
            exit: 3,
            message: "aborted".into(),
        });
        assert!(
            text.starts_with(r#"{"schema":1,"event":"failed""#),
            "{text}"
        );
    }
}
