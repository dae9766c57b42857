//! What a release prints: progress on stderr for people (or JSON lines on stdout for
//! programs), and one summary line with the phase timings at the end.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flow_core::release::{Event, Observer, Report};
use flow_core::time::human;

/// How often a wait that makes no visible progress still prints a line, so a person sees the
/// tool is alive.
const QUIET_WAIT_REPORT: Duration = Duration::from_secs(5);

/// Prints release events as they come.
pub struct Printer {
    json: bool,
    waits: Mutex<WaitState>,
}

/// What the last wait line said, so that unchanged polls are not printed every 250 ms.
#[derive(Default)]
struct WaitState {
    last_line: Option<(String, Instant)>,
}

impl Printer {
    /// A printer for people (`json == false`, on stderr) or programs (JSON lines on stdout).
    pub fn new(json: bool) -> Printer {
        Printer {
            json,
            waits: Mutex::new(WaitState::default()),
        }
    }

    fn human(&self, event: &Event) -> Option<String> {
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

    /// The closing line of a successful run.
    pub fn finish(&self, report: &Report, total: Duration) {
        if self.json {
            let line = serde_json::json!({ "event": "done", "report": report, "total_ms": total.as_millis() as u64 });
            println!("{line}");
            return;
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
}

impl Observer for Printer {
    fn on_event(&self, event: &Event) {
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        } else if let Some(line) = self.human(event) {
            eprintln!("{line}");
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
