//! The live progress display of a release on a terminal.
//!
//! One line at the bottom of the screen shows what runs now, redrawn in place (a spinner and
//! the elapsed time; while instances become healthy a bar with `healthy/total`; while old
//! servers drain the open sessions). Every phase that finishes leaves a permanent line with
//! its duration above it, so the screen ends as the record of the run. [`indicatif`] does the
//! drawing; the display only maps the engine's events onto it.
//!
//! The engine announces phases when they finish, not when they begin, so the running line is
//! named after the step (`deploy`) until an event says more (`healthy`, `drain`).
//!
//! The display is used only when stderr is a terminal and no `RUST_LOG` diagnostics share it;
//! otherwise [`crate::output`] prints plain lines.

use std::sync::Mutex;
use std::time::Duration;

use flow_core::release::Event;
use flow_core::time::human;
use flow_docker::compose::Condition;
use flow_docker::progress::DockerEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often the running line is redrawn (spinner frame and elapsed time).
const TICK: Duration = Duration::from_millis(120);

/// The width of the phase names column.
const LABEL_WIDTH: usize = 9;

/// Draws a release's progress on a terminal.
pub struct LiveDisplay {
    bars: MultiProgress,
    running: Mutex<Option<ProgressBar>>,
}

impl LiveDisplay {
    /// A display drawing on stderr.
    pub fn stderr() -> LiveDisplay {
        LiveDisplay::with_target(ProgressDrawTarget::stderr())
    }

    /// A display drawing on `target`; the first running line is the deploy lock.
    pub fn with_target(target: ProgressDrawTarget) -> LiveDisplay {
        let display = LiveDisplay {
            bars: MultiProgress::with_draw_target(target),
            running: Mutex::new(None),
        };
        display.run("lock", "taking the deploy lock");
        display
    }

    /// Shows one event.
    pub fn event(&self, event: &Event) {
        match event {
            Event::StepStarted { step } => {
                self.line(format!("==> {step}"));
                self.run(step.as_str(), "");
            }
            Event::PhaseFinished { step, phase, took } => {
                self.line(format!(
                    "    ✓ {:<LABEL_WIDTH$} {}",
                    phase.as_str(),
                    human(*took)
                ));
                self.run(step.map_or("", |step| step.as_str()), "");
            }
            Event::WaitingHealthy { healthy, total, .. } => self.update(|bar| {
                bar.set_style(health_style());
                bar.set_prefix("healthy");
                bar.set_length(*total as u64);
                bar.set_position(*healthy as u64);
            }),
            Event::Draining { sessions, .. } => self.update(|bar| {
                bar.set_prefix("drain");
                bar.set_message(format!("{sessions} session(s) open"));
            }),
            Event::Notice { message } => self.line(format!("    note: {message}")),
            Event::Warning { message } => self.line(format!("    warning: {message}")),
            Event::InstanceUnhealthy {
                instance, detail, ..
            } => self.line(format!(
                "    {instance} unhealthy, still waiting: {}",
                detail.trim().lines().next().unwrap_or("")
            )),
            Event::StepFinished { summary, .. } => {
                self.clear_running();
                self.line(format!("    {summary}"));
            }
            Event::RollingBack { step, reason } => {
                self.line(format!(
                    "    {step} failed, rolling back: {}",
                    reason.lines().next().unwrap_or(reason)
                ));
                self.run("rollback", "undoing what the step started");
            }
        }
    }

    /// Shows one event of the Docker adapter: a build's newest line and a dependency wait on
    /// the running line, a met dependency as a line that stays.
    pub fn docker_event(&self, event: &DockerEvent) {
        match event {
            DockerEvent::BuildOutput { service, line } => {
                self.activity("build", format!("{service}: {line}"))
            }
            DockerEvent::DependencyWaiting {
                service,
                dependency,
                condition,
            } => self.activity(
                "depends",
                format!("{service} waits for {dependency}: {condition}"),
            ),
            DockerEvent::DependencyReady {
                dependency,
                condition,
                took,
                ..
            } => self.line(format!(
                "    ✓ {dependency} {} ({})",
                condition_met(*condition),
                human(*took)
            )),
            DockerEvent::DependencySkipped {
                service,
                dependency,
                ..
            } => self.line(format!(
                "    warning: {service} starts without {dependency}"
            )),
        }
    }

    /// Shows what the running step does now on its line, under `label`.
    fn activity(&self, label: &str, message: String) {
        self.update(|bar| {
            bar.set_style(activity_style());
            bar.set_prefix(label.to_string());
            bar.set_message(message);
        });
    }

    /// Prints a line above the running one (a `--verbose` port call, a warning).
    pub fn line(&self, text: String) {
        // A terminal that went away leaves nothing to report to.
        let _ = self.bars.println(text);
    }

    /// Removes the running line (the run ended).
    pub fn clear_running(&self) {
        if let Some(bar) = self.lock().take() {
            bar.finish_and_clear();
            self.bars.remove(&bar);
        }
    }

    /// Replaces the running line with a spinner named `label`.
    fn run(&self, label: &str, message: &str) {
        self.clear_running();
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(spinner_style());
        bar.set_prefix(label.to_string());
        bar.set_message(message.to_string());
        bar.enable_steady_tick(TICK);
        *self.lock() = Some(bar);
    }

    fn update(&self, change: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.lock().as_ref() {
            change(bar);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for LiveDisplay {
    fn drop(&mut self) {
        self.clear_running();
    }
}

/// The elapsed time the way the summary writes durations (`569ms`, `1.4s`).
fn took(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = out.write_str(&human(state.elapsed()));
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("    {spinner} {prefix:9} {msg} {took}")
        .expect("the template is valid")
        .with_key("took", took)
}

/// The running line of a build or a wait: the message takes what the terminal's width leaves
/// (a build's line can be long) and is cut rather than wrapped.
fn activity_style() -> ProgressStyle {
    ProgressStyle::with_template("    {spinner} {prefix:9} {took} {wide_msg}")
        .expect("the template is valid")
        .with_key("took", took)
}

/// What a dependency did when its condition is met, in words.
pub fn condition_met(condition: Condition) -> &'static str {
    match condition {
        Condition::Started => "is running",
        Condition::Healthy => "is healthy",
        Condition::CompletedSuccessfully => "completed successfully",
    }
}

fn health_style() -> ProgressStyle {
    ProgressStyle::with_template("    {spinner} {prefix:9} [{bar:20}] {pos}/{len} healthy {took}")
        .expect("the template is valid")
        .with_key("took", took)
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::release::{Phase, Step};
    use indicatif::InMemoryTerm;

    fn screen(term: &InMemoryTerm) -> String {
        // The running line is redrawn on a timer; give it one frame.
        std::thread::sleep(TICK * 2);
        term.contents()
    }

    #[test]
    fn finished_phases_stay_and_the_running_line_shows_health_counts() {
        let term = InMemoryTerm::new(12, 80);
        let display =
            LiveDisplay::with_target(ProgressDrawTarget::term_like(Box::new(term.clone())));
        assert!(screen(&term).contains("lock"), "{}", term.contents());
        display.event(&Event::PhaseFinished {
            step: None,
            phase: Phase::Lock,
            took: Duration::from_millis(3),
        });
        display.event(&Event::StepStarted { step: Step::Deploy });
        display.event(&Event::PhaseFinished {
            step: Some(Step::Deploy),
            phase: Phase::Start,
            took: Duration::from_millis(569),
        });
        display.event(&Event::WaitingHealthy {
            healthy: 1,
            total: 2,
            elapsed: Duration::from_millis(400),
        });
        let shown = screen(&term);
        assert!(shown.contains("✓ lock      3ms"), "{shown}");
        assert!(shown.contains("==> deploy"), "{shown}");
        assert!(shown.contains("✓ start     569ms"), "{shown}");
        let running = shown.lines().last().unwrap_or_default().to_string();
        assert!(
            running.contains("healthy") && running.contains("1/2 healthy"),
            "the last line is the health bar: {shown}"
        );

        display.docker_event(&DockerEvent::BuildOutput {
            service: "web".into(),
            line: "Step 2/4 : COPY app /app".into(),
        });
        let running = screen(&term).lines().last().unwrap_or_default().to_string();
        assert!(
            running.contains("build") && running.contains("web: Step 2/4 : COPY app /app"),
            "the running line shows the build's newest line: {running}"
        );
        display.docker_event(&DockerEvent::DependencyReady {
            service: "web".into(),
            dependency: "db".into(),
            condition: Condition::Healthy,
            took: Duration::from_millis(1200),
        });
        assert!(screen(&term).contains("✓ db is healthy (1.2s)"));

        display.event(&Event::StepFinished {
            step: Step::Deploy,
            summary: "green live, scale 2".into(),
        });
        let shown = screen(&term);
        assert!(shown.contains("green live, scale 2"), "{shown}");
        assert!(!shown.contains("1/2 healthy"), "the bar is gone: {shown}");
    }
}
