//! The `Proxy` port: the reverse proxy that sends a service's traffic to its live instances.
//!
//! # Contract
//!
//! * [`Proxy::reconfigure`] makes the route of `route.service` send traffic to exactly
//!   `servers`, and returns only once every one of them is UP in the proxy (health-checked and
//!   taking traffic). Servers of the route that are no longer listed leave the rotation by
//!   draining: they take no new requests and finish the ones they have. If any listed server
//!   does not come UP, it fails with [`ProxyError::NotUp`] and the servers that were serving
//!   before keep serving. Paths, domain and matcher of the route are replaced by the new ones.
//! * [`Proxy::sessions`] counts the sessions still open on `servers` of the service; a server
//!   the proxy no longer knows counts as zero. Callers poll it to learn when draining is done.
//! * [`Proxy::remove`] deletes the route of exactly that service (never another service whose
//!   name shares a prefix); an unknown service is [`ProxyError::UnknownService`].
//! * [`Proxy::served_route`] reads the route of exactly that service, changing nothing.

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{Color, ServiceName};

/// How a route's paths match a request path (HAProxy's matchers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathType {
    /// The request path starts with one of the paths (`path_beg`, the default).
    #[default]
    Prefix,
    /// The request path equals one of the paths (`path`).
    Exact,
    /// The request path ends with one of the paths (`path_end`).
    Suffix,
    /// The request path matches one of the paths as a regular expression (`path_reg`).
    Regex,
}

impl PathType {
    /// HAProxy's name of the matcher, also used by the Docker Flow `pathType` parameter.
    pub fn haproxy_matcher(self) -> &'static str {
        match self {
            PathType::Prefix => "path_beg",
            PathType::Exact => "path",
            PathType::Suffix => "path_end",
            PathType::Regex => "path_reg",
        }
    }

    /// Parses an HAProxy matcher name (`path_beg`, `path`, `path_end`, `path_reg`).
    pub fn from_haproxy_matcher(name: &str) -> Option<PathType> {
        [
            PathType::Prefix,
            PathType::Exact,
            PathType::Suffix,
            PathType::Regex,
        ]
        .into_iter()
        .find(|t| t.haproxy_matcher() == name)
    }
}

/// Which requests reach a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The service routed to.
    pub service: ServiceName,
    /// The live colour the servers belong to (`None` without blue-green).
    pub color: Option<Color>,
    /// URL paths routed to the service (at least one).
    pub paths: Vec<String>,
    /// A host name requests must carry, when set.
    pub domain: Option<String>,
    /// How the paths match.
    pub path_type: PathType,
}

/// A route as the proxy serves it now ([`Proxy::served_route`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedRoute {
    /// The route.
    pub route: Route,
    /// Its servers, as the proxy sees them.
    pub servers: Vec<ServedServer>,
}

/// One server of a [`ServedRoute`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedServer {
    /// Where the proxy sends requests.
    pub address: SocketAddr,
    /// Its state in the proxy's words (HAProxy's `UP`, `DOWN`, `MAINT`, …).
    pub state: String,
    /// Sessions open on it now.
    pub sessions: u64,
    /// Whether it is one of the servers the route sends new requests to (`false`: it left
    /// the rotation and is draining or in maintenance).
    pub active: bool,
}

/// Everything a proxy operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy could not be reached.
    #[error("the proxy at {address} cannot be reached: {}", crate::error_chain(source.as_ref()))]
    Unreachable {
        /// The address tried.
        address: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Some listed servers did not come UP; the previous servers keep serving.
    #[error("the proxy did not see these servers of {service} come UP: {}", .servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    NotUp {
        /// The service.
        service: ServiceName,
        /// The servers that are not UP.
        servers: Vec<SocketAddr>,
    },
    /// The proxy refused the request (bad parameters, invalid configuration).
    #[error("the proxy refused: {message}")]
    Refused {
        /// The proxy's message.
        message: String,
    },
    /// The service has no route.
    #[error("the proxy has no route for {service}")]
    UnknownService {
        /// The service.
        service: ServiceName,
    },
}

/// The reverse proxy in front of the services. See the [module docs](self) for the contract
/// every implementation keeps.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Proxy: fmt::Debug + fmt::Display + Send + Sync {
    /// Routes the service to exactly `servers`; returns once they are all UP.
    async fn reconfigure(&self, route: &Route, servers: &[SocketAddr]) -> Result<(), ProxyError>;

    /// Sessions still open on `servers` of `service` (unknown servers count zero).
    async fn sessions(
        &self,
        service: &ServiceName,
        servers: &[SocketAddr],
    ) -> Result<u64, ProxyError>;

    /// Deletes the route of exactly `service`.
    async fn remove(&self, service: &ServiceName) -> Result<(), ProxyError>;

    /// The route of exactly `service` as the proxy serves it now (`None`: it has none), with
    /// every server it knows for it (those leaving the rotation too, in their state).
    async fn served_route(&self, service: &ServiceName) -> Result<Option<ServedRoute>, ProxyError>;
}

/// A shared, dynamically dispatched proxy.
pub type DynProxy = std::sync::Arc<dyn Proxy>;

#[cfg(any(test, feature = "mocks"))]
impl fmt::Display for MockProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock proxy")
    }
}
