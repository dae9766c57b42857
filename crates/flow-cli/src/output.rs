//! What a release prints: progress on stderr for people (a live display on a terminal, plain
//! lines otherwise) or JSON lines on stdout for programs, and one summary at the end.
//!
//! | | progress | port calls | summary and errors |
//! |---|---|---|---|
//! | `--quiet` | none (a rollback is still announced) | none | yes |
//! | default | live display on a terminal, else plain lines | none | yes |
//! | `--verbose` | as the default | every call with its timing | yes |
//!
//! The Docker adapter's own events (a build's output, `depends_on` waits) are printed the same
//! way, through [`DockerObserver`].
//!
//! With `--json` the same choice applies to the event lines: `--quiet` keeps only `done` and
//! `failed`. The live display is not used when `RUST_LOG` diagnostics write to the same
//! terminal, as the two would overwrite each other.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use flow_core::release::{Event, Observer, Plan, Report};
use flow_core::time::human;
use flow_docker::progress::{DockerEvent, DockerObserver};

use crate::exit::Exit;
use crate::json::{self, CliEvent, Done};
use crate::progress::{condition_met, LiveDisplay};
use crate::timed::{CallLog, PortCall};

/// How a wait that makes no visible progress still prints a line, so a person sees the tool is
/// alive (plain lines only; the live display shows the elapsed time itself).
const QUIET_WAIT_REPORT: Duration = Duration::from_secs(5);

/// How much a release prints besides its summary and errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// `--quiet`: only the summary and errors.
    Quiet,
    /// Progress, notes, the summary and errors.
    #[default]
    Normal,
    /// Also every port call with its timing.
    Verbose,
}

/// Prints release events as they come.
pub struct Printer {
    style: Style,
    verbosity: Verbosity,
    waits: Mutex<WaitState>,
}

enum Style {
    /// JSON lines on stdout.
    Json,
    /// Plain lines on stderr.
    Lines,
    /// The live display on the stderr terminal, started by the first event.
    Live(OnceLock<LiveDisplay>),
}

/// What the last wait line said, so that unchanged polls are not printed every 250 ms.
#[derive(Default)]
struct WaitState {
    last_line: Option<(String, Instant)>,
}

impl Printer {
    /// A printer for people (`json == false`, on stderr) or programs (JSON lines on stdout).
    pub fn new(json: bool, verbosity: Verbosity) -> Printer {
        let style = if json {
            Style::Json
        } else if verbosity != Verbosity::Quiet
            && std::io::stderr().is_terminal()
            && !crate::diagnostics::enabled()
        {
            Style::Live(OnceLock::new())
        } else {
            Style::Lines
        };
        Printer {
            style,
            verbosity,
            waits: Mutex::new(WaitState::default()),
        }
    }

    /// A warning: printed whatever the verbosity, as it names input that is not used.
    pub fn warn(&self, warning: impl fmt::Display) {
        self.person(format!("docker-flow: warning: {warning}"));
    }

    /// Reports a failure on stderr (and as a `failed` event with `--json`) and returns `exit`.
    pub fn fail(&self, error: impl fmt::Display, exit: Exit) -> Exit {
        let message = error.to_string();
        if let Style::Json = self.style {
            self.json_line(&json::line(&CliEvent::Failed {
                exit: exit as u8,
                message: message.clone(),
            }));
        }
        if let Style::Live(display) = &self.style {
            if let Some(display) = display.get() {
                display.clear_running();
            }
        }
        self.person(format!("docker-flow: {message}"));
        exit
    }

    /// Prints a dry run's plan.
    pub fn plan(&self, plan: &Plan) {
        match self.style {
            Style::Json => self.json_line(&json::line(&CliEvent::Plan { plan })),
            _ => print!("{plan}"),
        }
    }

    /// Prints a status: a `status` line with `--json`, else the text on stdout.
    pub fn status(&self, status: &flow_core::status::Status) {
        match self.style {
            Style::Json => self.json_line(&json::line(&CliEvent::Status { status })),
            _ => print!("{}", crate::status::render(status)),
        }
    }

    /// The closing line of a successful run.
    pub fn finish(&self, report: &Report, total: Duration) {
        if let Style::Json = self.style {
            self.json_line(&json::line(&CliEvent::Done(Done::new(report, total))));
            return;
        }
        if let Style::Live(display) = &self.style {
            if let Some(display) = display.get() {
                display.clear_running();
            }
        }
        let timings: Vec<String> = report
            .timings
            .iter()
            .map(|t| format!("{} {}", t.phase, human(t.took)))
            .collect();
        println!(
            "{}: {}scale {} | {} | total {}",
            report.service,
            report
                .live_color
                .map(|c| format!("{c} live, "))
                .unwrap_or_default(),
            report
                .scale
                .map(|s| s.to_string())
                .unwrap_or_else(|| "1".into()),
            timings.join(", "),
            human(total)
        );
    }

    /// A line for people on stderr, above the live display when it runs.
    fn person(&self, line: String) {
        match &self.style {
            Style::Live(display) => match display.get() {
                Some(display) => display.line(line),
                None => eprintln!("{line}"),
            },
            _ => eprintln!("{line}"),
        }
    }

    fn json_line(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    fn plain(&self, event: &Event) -> Option<String> {
        match event {
            Event::StepStarted { step } => Some(format!("==> {step}")),
            Event::PhaseFinished { phase, took, .. } => {
                Some(format!("    {:<9} {}", phase.as_str(), human(*took)))
            }
            Event::WaitingHealthy {
                healthy,
                total,
                elapsed,
            } => self.throttled(
                format!("    waiting for health: {healthy}/{total} healthy"),
                *elapsed,
            ),
            Event::Draining { sessions, elapsed } => self.throttled(
                format!("    draining: {sessions} session(s) open"),
                *elapsed,
            ),
            Event::Notice { message } => Some(format!("    note: {message}")),
            Event::Warning { message } => Some(format!("    warning: {message}")),
            Event::InstanceUnhealthy {
                instance,
                detail,
                elapsed,
            } => Some(format!(
                "    {instance} unhealthy ({}), still waiting: {}",
                human(*elapsed),
                first_line(detail.trim())
            )),
            Event::StepFinished { summary, .. } => Some(format!("    {summary}")),
            Event::RollingBack { step, reason } => Some(format!(
                "    {step} failed, rolling back: {}",
                first_line(reason)
            )),
        }
    }

    /// Prints a wait line when it changed, or when it has been quiet for a while.
    fn throttled(&self, line: String, elapsed: Duration) -> Option<String> {
        let mut state = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let show = match &state.last_line {
            Some((last, at)) => *last != line || now.duration_since(*at) >= QUIET_WAIT_REPORT,
            None => true,
        };
        if show {
            state.last_line = Some((line.clone(), now));
            Some(format!("{line} ({})", human(elapsed)))
        } else {
            None
        }
    }
}

impl Observer for Printer {
    fn on_event(&self, event: &Event) {
        // A rollback is part of the error a quiet run still reports.
        if self.verbosity == Verbosity::Quiet && !matches!(event, Event::RollingBack { .. }) {
            return;
        }
        match &self.style {
            Style::Json => self.json_line(&json::line(event)),
            Style::Live(display) => display.get_or_init(LiveDisplay::stderr).event(event),
            Style::Lines => {
                if let Some(line) = self.plain(event) {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// A build's lines and the waits for dependencies, shown with the release's own progress:
/// each line on its own with plain lines, the running line of the live display, `--json`
/// events. An optional dependency that is skipped is a warning, whatever the verbosity.
impl DockerObserver for Printer {
    fn on_docker_event(&self, event: &DockerEvent) {
        if let DockerEvent::DependencySkipped {
            service,
            dependency,
            reason,
        } = event
        {
            if !matches!(self.style, Style::Json) {
                self.warn(format!(
                    "{service} starts without {dependency} (required: false): {}",
                    first_line(reason)
                ));
                return;
            }
        }
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.style {
            Style::Json => self.json_line(&json::line(event)),
            Style::Live(display) => display.get_or_init(LiveDisplay::stderr).docker_event(event),
            Style::Lines => match event {
                DockerEvent::BuildOutput { service, line } => {
                    eprintln!("    build {service}: {line}")
                }
                DockerEvent::DependencyWaiting {
                    service,
                    dependency,
                    condition,
                } => eprintln!("    {service} waits for {dependency}: {condition}"),
                DockerEvent::DependencyReady {
                    dependency,
                    condition,
                    took,
                    ..
                } => eprintln!(
                    "    {dependency} {} ({})",
                    condition_met(*condition),
                    human(*took)
                ),
                DockerEvent::DependencySkipped { .. } => {}
            },
        }
    }
}

impl CallLog for Printer {
    fn call(&self, call: &PortCall) {
        if self.verbosity != Verbosity::Verbose {
            return;
        }
        let line = || {
            format!(
                "    {}.{}({}) {}{}",
                call.port,
                call.call,
                call.subject,
                human(call.took),
                call.error
                    .as_ref()
                    .map(|error| format!(" failed: {}", first_line(error)))
                    .unwrap_or_default()
            )
        };
        match &self.style {
            Style::Json => self.json_line(&json::line(&CliEvent::PortCall {
                port: call.port,
                call: call.call,
                subject: call.subject.clone(),
                took: call.took,
                error: call.error.clone(),
            })),
            Style::Live(display) => display.get_or_init(LiveDisplay::stderr).line(line()),
            Style::Lines => eprintln!("{}", line()),
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
