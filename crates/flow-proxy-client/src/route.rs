//! A route as the proxy stores it and the API describes it: a service's destinations (paths,
//! domains, ports, mode, handling), its servers and the options that apply to all of its
//! HTTP destinations.
//!
//! Every value here is checked by [`crate::validate`] before the proxy renders it into
//! HAProxy's configuration.

use std::net::SocketAddr;

use flow_core::{PathType, Route};
use serde::{Deserialize, Serialize};

/// One service's route with the servers it sends traffic to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The service, its colour, and the routing of its first destination (kept in step with
    /// `destinations[0]`, which is what routes; tables of earlier versions have only this).
    pub route: Route,
    /// The servers taking its traffic (draining ones are not listed). A destination with a
    /// [`Destination::port`] reaches their addresses on that port instead.
    pub servers: Vec<SocketAddr>,
    /// Servers are not health-checked (Docker Flow's `skipCheck`): UP as soon as added.
    #[serde(default)]
    pub skip_check: bool,
    /// Every destination, in the order of their 1.x index (never empty once loaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<Destination>,
    /// What applies to every HTTP destination of the service.
    #[serde(default, skip_serializing_if = "RouteOptions::is_empty")]
    pub options: RouteOptions,
}

impl RouteEntry {
    /// The entry of `route` alone: one HTTP destination with its paths, domain and matcher.
    pub fn new(route: Route, servers: Vec<SocketAddr>, skip_check: bool) -> RouteEntry {
        let destination = Destination::of_route(&route);
        RouteEntry {
            route,
            servers,
            skip_check,
            destinations: vec![destination],
            options: RouteOptions::default(),
        }
    }

    /// This entry as a release states it (servers, colour, and the first destination's paths,
    /// domains and path type) on top of everything else of `current`, the route as it stands:
    /// its options, its health-check mode, its other destinations, and the first destination's
    /// other settings (ports, method filters, rewrites, …). What an operator configured on the
    /// route therefore outlives a release, which knows nothing of it (`keepRouteOptions`).
    pub fn keeping_settings_of(self, current: &RouteEntry) -> RouteEntry {
        let stated = self
            .destinations
            .into_iter()
            .next()
            .unwrap_or_else(|| Destination::of_route(&self.route));
        let mut destinations = current.destinations.clone();
        match destinations.first_mut() {
            Some(first) => {
                first.paths = stated.paths;
                first.path_type = stated.path_type;
                first.domains = stated.domains;
            }
            None => destinations.push(stated),
        }
        RouteEntry {
            route: self.route,
            servers: self.servers,
            skip_check: current.skip_check,
            destinations,
            options: current.options.clone(),
        }
    }
}

/// How a destination's connections are handled (Docker Flow's `reqMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP requests, routed by path and domain on the proxy's HTTP frontends.
    #[default]
    Http,
    /// TCP connections on a port of their own (`srcPort`), forwarded as they are.
    Tcp,
}

/// One destination of a service (Docker Flow's indexed parameters, `servicePath.1`, `port.1`,
/// …): which requests reach it, on which port of the servers, and what happens on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Destination {
    /// HTTP or TCP.
    pub mode: Mode,
    /// The paths it takes (HTTP; `/` for a domain-only destination).
    pub paths: Vec<String>,
    /// How the paths match.
    pub path_type: PathType,
    /// Paths excluded from it (`servicePathExclude`), matched like `paths`.
    pub excluded_paths: Vec<String>,
    /// The host names it takes (any when empty); `*.example.com` takes every subdomain.
    pub domains: Vec<String>,
    /// The proxy port it takes requests on (`srcPort`): one of the HTTP binds, or a TCP
    /// frontend's own port.
    pub src_port: Option<u16>,
    /// The servers' port for this destination (`port`); the servers' own port when unset.
    pub port: Option<u16>,
    /// The servers' port for the requests of this destination that arrived over HTTPS
    /// (`httpsPort`), still spoken to in plain HTTP; [`Destination::port`]'s when unset.
    pub https_port: Option<u16>,
    /// The HTTPS port of the proxy it takes requests on (`srcHttpsPort`): one of the HTTPS
    /// binds; every HTTPS bind when unset.
    pub src_https_port: Option<u16>,
    /// Regular expression search and replacement applied to the path, in order
    /// (`reqPathSearchReplace`).
    pub path_rewrites: Vec<PathRewrite>,
    /// Methods taken; others are denied with 403 (`allowedMethods`).
    pub allowed_methods: Vec<String>,
    /// Methods denied with 403 (`deniedMethods`).
    pub denied_methods: Vec<String>,
    /// Requests that did not arrive over TLS are redirected to HTTPS (`httpsOnly`).
    pub https_only: bool,
    /// Requests that did not arrive over TLS are denied with 403 (`denyHttp`).
    pub deny_http: bool,
    /// The service's `users` are not asked for here (`ignoreAuthorization`).
    pub ignore_authorization: bool,
    /// Host names redirected (301) to the first of `domains` (`redirectFromDomain`).
    pub redirect_from_domains: Vec<String>,
    /// How long a server may take to answer, in seconds (`timeoutServer`).
    pub timeout_server: Option<u32>,
    /// How long an upgraded (WebSocket) or TCP connection may stay idle, in seconds
    /// (`timeoutTunnel`).
    pub timeout_tunnel: Option<u32>,
}

impl Destination {
    /// The single HTTP destination of a [`Route`].
    pub fn of_route(route: &Route) -> Destination {
        Destination {
            paths: route.paths.clone(),
            path_type: route.path_type,
            domains: route.domain.iter().cloned().collect(),
            ..Destination::default()
        }
    }
}

/// One `reqPathSearchReplace` pair: a regular expression and what replaces its matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRewrite {
    /// The regular expression searched in the path.
    pub search: String,
    /// The replacement.
    pub replace: String,
}

/// What applies to every HTTP destination of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteOptions {
    /// Orders the route among others (`aclName`): routes with one come first, by name.
    pub acl_name: Option<String>,
    /// Requests no route matches go to this service (`isDefaultBackend`).
    pub default_backend: bool,
    /// HTTP basic authentication: requests without valid credentials get 401 (`users`).
    pub users: Vec<User>,
    /// Request headers added, set or deleted before the request reaches a server.
    pub request_headers: Vec<HeaderRule>,
    /// Response headers added, set or deleted before the response reaches the client.
    pub response_headers: Vec<HeaderRule>,
    /// Requests carrying `X-Forwarded-Proto: http` are redirected to HTTPS
    /// (`redirectWhenHttpProto`).
    pub redirect_when_http_proto: bool,
    /// Requests without `X-Forwarded-Proto: https` are redirected to HTTPS
    /// (`redirectUnlessHttpsProto`).
    pub redirect_unless_https_proto: bool,
    /// The status of redirects to HTTPS (`httpsRedirectCode`; HAProxy's 302 when unset).
    pub https_redirect_code: Option<u16>,
}

impl RouteOptions {
    /// Whether no option is set (what a route of earlier versions had).
    pub fn is_empty(&self) -> bool {
        *self == RouteOptions::default()
    }

    /// Whether any option that only HTTP destinations can apply is set.
    pub fn has_http_options(&self) -> bool {
        RouteOptions {
            acl_name: None,
            ..self.clone()
        } != RouteOptions::default()
    }
}

/// A user of HTTP basic authentication. Its password is never shown (`Debug` hides it, and
/// the API never echoes it); it is kept in `routes.json` and `haproxy.cfg`, which are
/// owner-only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The password, or its crypt(3) hash when `encrypted`.
    pub password: String,
    /// `password` is a crypt(3) hash (`usersPassEncrypted`), e.g. from `mkpasswd -m sha-512`.
    pub encrypted: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<hidden>")
            .field("encrypted", &self.encrypted)
            .finish()
    }
}

/// What the API shows instead of a password.
pub const REDACTED: &str = "<redacted>";

impl RouteOptions {
    /// These options with every password (or hash) replaced by [`REDACTED`], to be shown.
    pub fn redacted(&self) -> RouteOptions {
        let mut options = self.clone();
        for user in &mut options.users {
            user.password = REDACTED.to_string();
        }
        options
    }
}

/// What a header rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    /// Adds the header (`addReqHeader`, `addResHeader`), keeping others of the same name.
    Add,
    /// Replaces every header of the name with this one (`setReqHeader`, `setResHeader`).
    Set,
    /// Deletes every header of the name (`delReqHeader`, `delResHeader`).
    Del,
}

/// A header added, set or deleted; the value is literal text (no HAProxy expressions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    /// What is done.
    pub action: HeaderAction,
    /// The header name.
    pub name: String,
    /// The value (empty for [`HeaderAction::Del`]).
    #[serde(default)]
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::{Color, ServiceName};

    fn entry(name: &str) -> RouteEntry {
        RouteEntry::new(
            Route {
                service: ServiceName::new(name).unwrap(),
                color: Some(Color::Green),
                paths: vec!["/a".into(), "/b".into()],
                domain: Some("example.com".into()),
                path_type: PathType::Exact,
            },
            vec!["127.0.0.1:9000".parse().unwrap()],
            false,
        )
    }

    #[test]
    fn a_kept_route_takes_only_what_the_release_states() {
        let mut current = entry("app");
        current.skip_check = true;
        current.destinations[0].port = Some(8080);
        current.destinations[0].denied_methods = vec!["DELETE".into()];
        current.destinations.push(Destination {
            paths: vec!["/admin".into()],
            port: Some(9090),
            ..Destination::default()
        });
        current.options.users.push(User {
            name: "alice".into(),
            password: "pw".into(),
            encrypted: false,
        });
        let release = RouteEntry::new(
            Route {
                service: ServiceName::new("app").unwrap(),
                color: Some(Color::Blue),
                paths: vec!["/new".into()],
                domain: None,
                path_type: PathType::Prefix,
            },
            vec!["127.0.0.1:9001".parse().unwrap()],
            false,
        );
        let kept = release.clone().keeping_settings_of(&current);
        assert_eq!(kept.route, release.route);
        assert_eq!(kept.servers, release.servers);
        assert!(kept.skip_check);
        assert_eq!(kept.options, current.options);
        assert_eq!(kept.destinations[1], current.destinations[1]);
        let first = &kept.destinations[0];
        assert_eq!(first.paths, ["/new"]);
        assert_eq!(first.path_type, PathType::Prefix);
        assert!(first.domains.is_empty(), "the release states no domain");
        assert_eq!(first.port, Some(8080));
        assert_eq!(first.denied_methods, ["DELETE"]);
    }
}
