//! The JSON documents of the proxy's HTTP API and the names on the wire, shared by the
//! server (`flow-proxy`) and [`crate::HttpProxy`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::route::{Destination, RouteOptions};

/// The API path prefix Docker Flow clients use.
pub const API_PREFIX: &str = "/v1/docker-flow-proxy";

/// docker-flow's own parameter that makes a `reconfigure` keep the route's other settings
/// (what a release does not state); [`crate::HttpProxy`] sends it.
pub const KEEP_ROUTE_OPTIONS: &str = "keepRouteOptions";

/// A server's state as HAProxy reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServerState {
    /// Taking traffic.
    Up,
    /// Failing its health check (or not known to the running worker).
    Down,
    /// Finishing its sessions, taking no new ones.
    Drain,
    /// Out of rotation.
    Maint,
}

impl ServerState {
    /// The state in HAProxy's words, as the routes API spells it (`UP`, `DOWN`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "UP",
            ServerState::Down => "DOWN",
            ServerState::Drain => "DRAIN",
            ServerState::Maint => "MAINT",
        }
    }
}

/// Why a request failed (the `Error` field of a `NOK` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Missing or invalid parameters (HTTP 400).
    BadRequest,
    /// Missing or wrong bearer token (HTTP 401).
    Unauthorized,
    /// The service has no route, or the endpoint does not exist (HTTP 404).
    UnknownService,
    /// Servers did not come UP; they are listed in `NotUpServers` (HTTP 503).
    NotUp,
    /// HAProxy rejected the configuration or a runtime command (HTTP 500).
    Refused,
    /// The proxy itself failed (files, sockets; HTTP 500).
    Internal,
    /// HAProxy is being restarted after its master or worker died and was not back in
    /// time (HTTP 503 with `Retry-After`): nothing was changed, the request can be sent
    /// again.
    Unavailable,
}

/// One server of a route in the `routes` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerView {
    /// `ip:port`.
    pub address: SocketAddr,
    /// The HAProxy server name.
    pub name: String,
    /// UP, DOWN, DRAIN or MAINT.
    pub state: ServerState,
    /// Sessions open on it now.
    pub sessions: u64,
    /// One of the route's servers (false: left over and draining).
    pub active: bool,
}

/// One route in the `routes` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouteView {
    /// The service.
    pub service_name: String,
    /// Its live colour, if any.
    pub service_color: Option<String>,
    /// Its paths.
    pub service_path: Vec<String>,
    /// Its domain, if any.
    pub service_domain: Option<String>,
    /// The HAProxy matcher.
    pub path_type: String,
    /// Whether servers are health-checked.
    pub skip_check: bool,
    /// Its servers with their state.
    pub servers: Vec<ServerView>,
    /// Every destination, in the order of their 1.x index (the first is the one the
    /// fields above describe); absent from the answers of earlier versions.
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// What applies to every HTTP destination, passwords replaced by
    /// [`crate::route::REDACTED`]: what a release (`keepRouteOptions`) keeps.
    #[serde(default)]
    pub options: RouteOptions,
}

/// Every answer of the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    /// `OK` or `NOK`.
    pub status: String,
    /// What happened, in words.
    pub message: String,
    /// Why it failed (`NOK` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// The servers that did not come UP (`NotUp` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_up_servers: Vec<SocketAddr>,
    /// Echo of `serviceName`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    /// Echo of `serviceColor`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_color: String,
    /// Echo of `servicePath`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_path: Vec<String>,
    /// Echo of `serviceDomain`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_domain: String,
    /// Echo of `pathType`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_type: String,
    /// Echo of `skipCheck`.
    #[serde(default)]
    pub skip_check: bool,
    /// The servers routed to (`reconfigure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<SocketAddr>,
    /// Every route (`routes` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteView>>,
}
