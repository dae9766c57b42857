//! `GET /metrics`: the proxy's state in Prometheus' text exposition format (0.0.4).
//!
//! # Where the numbers come from
//!
//! Everything that happens per request is HAProxy's own counting, read from the running
//! worker's `show stat` when Prometheus scrapes (`req_tot`, `hrsp_5xx`, `scur` and the
//! status of each server): nothing is counted per request in this process, so the proxy
//! adds no work to the request path and cannot disagree with HAProxy. Only what happens in
//! this process is counted here: switches (a `reconfigure` that changed the servers or the
//! colour of a route) with the time the last one took, and HAProxy restarts by the
//! supervisor.
//!
//! # Colours
//!
//! Series are labelled `service` and `color`. The servers of a route are of the route's
//! colour; servers left over from the previous switch (draining until their sessions end)
//! are of the other colour. A route without colour has `color=""`.
//!
//! # Resets
//!
//! A new HAProxy worker (after a reload or a restart) starts its counters from 0, and a
//! drained server's counters go with it when it is deleted; the switch counter starts from
//! 0 with `proxy serve`. Prometheus' `rate()` and `increase()` read such drops as counter
//! resets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use flow_core::{Color, ServiceName};

use crate::haproxy::{RouteStatus, ServerState};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The switches this proxy made, per service.
#[derive(Debug, Default)]
pub(crate) struct Switches(std::sync::Mutex<BTreeMap<ServiceName, SwitchRecord>>);

#[derive(Debug)]
struct SwitchRecord {
    count: u64,
    last_color: Option<Color>,
    last_took: Duration,
}

impl Switches {
    /// Counts a switch of `service` to `color` that took `took` (from the request to every
    /// new server UP and in rotation).
    pub(crate) fn record(&self, service: &ServiceName, color: Option<Color>, took: Duration) {
        let mut records = self.0.lock().expect("switches mutex poisoned");
        let record = records.entry(service.clone()).or_insert(SwitchRecord {
            count: 0,
            last_color: color,
            last_took: took,
        });
        record.count += 1;
        record.last_color = color;
        record.last_took = took;
    }
}

/// What one service and colour add up to.
#[derive(Debug, Default)]
struct ColorTotals {
    requests: u64,
    responses_5xx: u64,
    sessions: u64,
    /// Servers by state: up, down, draining, maint.
    servers: [u64; 4],
}

const STATES: [&str; 4] = ["up", "down", "draining", "maint"];

fn state_index(state: ServerState) -> usize {
    match state {
        ServerState::Up => 0,
        ServerState::Down => 1,
        ServerState::Drain => 2,
        ServerState::Maint => 3,
    }
}

/// The exposition of `routes` (their servers as the running worker reports them), the
/// switches and the number of HAProxy restarts.
pub(crate) fn render(routes: &[RouteStatus], switches: &Switches, restarts: u64) -> String {
    let mut totals: BTreeMap<(String, String), ColorTotals> = BTreeMap::new();
    for route in routes {
        let service = route.entry.route.service.to_string();
        let color = route.entry.route.color;
        for server in &route.servers {
            let server_color = if server.active {
                color
            } else {
                color.map(|c| c.other())
            };
            let key = (
                service.clone(),
                server_color.map(|c| c.to_string()).unwrap_or_default(),
            );
            let entry = totals.entry(key).or_default();
            entry.requests += server.requests;
            entry.responses_5xx += server.responses_5xx;
            entry.sessions += server.sessions;
            entry.servers[state_index(server.state)] += 1;
        }
    }
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(&ColorTotals) -> u64| {
        header(&mut out, name, kind, help);
        for ((service, color), totals) in &totals {
            sample(
                &mut out,
                name,
                &[("service", service), ("color", color)],
                value(totals),
            );
        }
    };
    family(
        "docker_flow_proxy_requests_total",
        "counter",
        "HTTP requests HAProxy's running worker sent to the servers of a service and colour.",
        &|t| t.requests,
    );
    family(
        "docker_flow_proxy_responses_5xx_total",
        "counter",
        "HTTP 5xx responses HAProxy's running worker saw from the servers of a service and colour.",
        &|t| t.responses_5xx,
    );
    family(
        "docker_flow_proxy_sessions",
        "gauge",
        "Sessions open now on the servers of a service and colour.",
        &|t| t.sessions,
    );
    header(
        &mut out,
        "docker_flow_proxy_servers",
        "gauge",
        "Servers of a service and colour by state: up, down (failing its check), draining (finishing its sessions after a switch), maint.",
    );
    for ((service, color), totals) in &totals {
        for (state, count) in STATES.iter().zip(totals.servers) {
            sample(
                &mut out,
                "docker_flow_proxy_servers",
                &[("service", service), ("color", color), ("state", state)],
                count,
            );
        }
    }
    let records = switches.0.lock().expect("switches mutex poisoned");
    header(
        &mut out,
        "docker_flow_proxy_switches_total",
        "counter",
        "Switches of a service to other servers or another colour made by this proxy serve.",
    );
    for (service, record) in records.iter() {
        sample(
            &mut out,
            "docker_flow_proxy_switches_total",
            &[("service", service.as_str())],
            record.count,
        );
    }
    header(
        &mut out,
        "docker_flow_proxy_last_switch_seconds",
        "gauge",
        "How long the last switch of a service took, from the reconfigure request to every new server UP and in rotation; color is the colour switched to.",
    );
    for (service, record) in records.iter() {
        let color = record.last_color.map(|c| c.to_string()).unwrap_or_default();
        let labels = labels(&[("service", service.as_str()), ("color", &color)]);
        let _ = writeln!(
            out,
            "docker_flow_proxy_last_switch_seconds{labels} {}",
            record.last_took.as_secs_f64()
        );
    }
    header(
        &mut out,
        "docker_flow_proxy_haproxy_restarts_total",
        "counter",
        "Times HAProxy was restarted from the stored routes after its master or worker died.",
    );
    let _ = writeln!(out, "docker_flow_proxy_haproxy_restarts_total {restarts}");
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, pairs: &[(&str, &str)], value: u64) {
    let _ = writeln!(out, "{name}{} {value}", labels(pairs));
}

/// `{name="value",…}` with the values escaped as the format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\nw"), ("b", "")]),
            r#"{a="x\"y\\z\nw",b=""}"#
        );
    }
}
