//! `docker-flow status`: what runs for a service, as text for people or one `status` JSON
//! line (`--json`). It connects like a release but changes nothing and takes no lock
//! ([`flow_core::status`]).

use std::fmt::Write as _;
use std::sync::Arc;

use flow_core::status::{
    status, InstanceStatus, LockStatus, ProxyStatus, ReleaseSummary, Status, StatusQuery,
};
use flow_core::time::rfc3339;

use crate::config::ReleaseConfig;
use crate::exit::Exit;
use crate::output::Printer;
use crate::release::{ports, read_compose};

/// Prints the status of the configured target and says how it went.
pub async fn run(config: ReleaseConfig) -> Exit {
    let printer = Arc::new(Printer::new(config.json, config.verbosity));
    for warning in &config.warnings {
        printer.warn(warning);
    }
    let target = &config.release.target;
    // Only the target has to exist: status reads whatever runs, releasable or not.
    let compose =
        match read_compose(&config, &printer).and_then(|compose| match compose.service(target) {
            Ok(_) => Ok(compose),
            Err(error) => Err(error.to_string()),
        }) {
            Ok(compose) => compose,
            Err(message) => return printer.fail(message, Exit::BadInput),
        };
    let ports = match ports(&config, compose, &printer).await {
        Ok(ports) => ports,
        Err(exit) => return exit,
    };
    let query = StatusQuery {
        service: config.release.service.clone(),
        target: target.clone(),
        blue_green: config.release.blue_green,
    };
    match status(&ports, &query).await {
        Ok(status) => {
            printer.status(&status);
            Exit::Success
        }
        Err(error) => printer.fail(error, Exit::NothingChanged),
    }
}

/// The status in words, one fact a line.
pub fn render(status: &Status) -> String {
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!("{} (target {})", status.service, status.target));
    let live = match (status.live_color, &status.release) {
        (Some(color), Some(release)) => format!("{color}, {}", release_words(release)),
        (None, Some(release)) => release_words(release),
        (Some(color), None) => {
            format!("{color} (released by Docker Flow 1.x or by hand: no record)")
        }
        (None, None) => "nothing released yet".to_string(),
    };
    line(format!("  live: {live}"));
    line(format!(
        "  stored scale: {}",
        status
            .stored_scale
            .map_or_else(|| "none".to_string(), |s| s.to_string())
    ));
    for instance in &status.instances {
        line(format!("    {}", instance_words(instance)));
    }
    if let Some(idle) = &status.idle {
        line(format!(
            "  idle: {} {} ({} instance(s))",
            idle.color,
            idle.state,
            idle.instances.len()
        ));
        for instance in &idle.instances {
            line(format!("    {}", instance_words(instance)));
        }
    }
    if let Some(previous) = &status.previous_release {
        line(format!(
            "  previous release: {} (docker-flow rollback makes it live again)",
            release_words(previous)
        ));
    }
    if let Some(proxy) = &status.proxy {
        line(format!(
            "  proxy: {}",
            match proxy {
                ProxyStatus::Routed {
                    color,
                    paths,
                    domain,
                    servers,
                } => {
                    let mut words = format!("routes {}", paths.join(", "));
                    if let Some(domain) = domain {
                        let _ = write!(words, " on {domain}");
                    }
                    if let Some(color) = color {
                        let _ = write!(words, " to {color}");
                    }
                    let servers: Vec<String> = servers
                        .iter()
                        .map(|s| format!("{} {} ({} session(s))", s.address, s.state, s.sessions))
                        .collect();
                    let _ = write!(words, ": {}", servers.join(", "));
                    words
                }
                ProxyStatus::None => "no route for this service".to_string(),
                ProxyStatus::Unknown { reason } => format!("unknown ({reason})"),
            }
        ));
    }
    line(format!(
        "  lock: {}",
        match &status.lock {
            LockStatus::Free => "free (no release is running)".to_string(),
            LockStatus::Held { holder, since } => format!(
                "held by {holder} since {}: a release is running",
                rfc3339(*since)
            ),
            LockStatus::Unknown { reason } => format!("unknown ({reason})"),
        }
    ));
    text
}

fn release_words(release: &ReleaseSummary) -> String {
    format!(
        "{}{}, {} instance(s), released {} by {}",
        release.image,
        release
            .image_id
            .as_deref()
            .map(|id| format!(" ({id})"))
            .unwrap_or_default(),
        release.scale,
        rfc3339(release.released_at),
        release.released_by
    )
}

fn instance_words(instance: &InstanceStatus) -> String {
    format!(
        "{} {} {}{}",
        instance.name,
        instance
            .address
            .map_or_else(|| "-".to_string(), |a| a.to_string()),
        instance.health,
        instance
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    )
}
