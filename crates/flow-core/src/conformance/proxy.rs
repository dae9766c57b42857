//! The conformance suite every [`Proxy`] backend runs (feature `conformance`).
//!
//! Each `async fn` checks one clause of the [`Proxy` contract](crate::proxy) against a
//! [`Subject`]: the proxy, two servers it can route to and one that never comes UP. A
//! backend's tests call [`run_all`], or the functions one by one:
//!
//! ```no_run
//! # async fn backend_tests() {
//! use flow_core::conformance::proxy::{run_all, Subject};
//! let proxy = flow_core::memory::MemoryProxy::new();
//! let dead = "127.0.0.1:9".parse().unwrap();
//! proxy.set_down(dead);
//! let servers = ["127.0.0.1:8001".parse().unwrap(), "127.0.0.1:8002".parse().unwrap()];
//! run_all(&Subject::new(&proxy, servers, dead)).await;
//! # }
//! ```
//!
//! # Design
//!
//! * The suite sees the proxy only through the port, as a release does: a route's effect is
//!   checked by what the port answers next (a removed route is `UnknownService`, a route of
//!   another service survives a removal). What a request through the proxy gets is the
//!   backend's own test (a real HAProxy forwards real requests there).
//! * Service names are unique to the process and the moment, so the suite can run against a
//!   proxy other tests use, and twice against the same one; every clause removes its routes.

use std::net::SocketAddr;

use super::unique_service;

use crate::domain::{Color, ServiceName};
use crate::proxy::{PathType, Proxy, ProxyError, Route};

/// What the suite runs against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The backend under test.
    pub proxy: &'a dyn Proxy,
    /// Two servers that come UP when routed to (real backends for a real proxy).
    pub servers: [SocketAddr; 2],
    /// A server that never comes UP (nothing listens there).
    pub dead: SocketAddr,
}

impl<'a> Subject<'a> {
    /// The subject of `proxy` with live `servers` and a `dead` one.
    pub fn new(proxy: &'a dyn Proxy, servers: [SocketAddr; 2], dead: SocketAddr) -> Self {
        Subject {
            proxy,
            servers,
            dead,
        }
    }
}

/// Runs every clause in turn.
pub async fn run_all(subject: &Subject<'_>) {
    reconfigure_switches_between_servers(subject).await;
    not_up_names_exactly_the_servers_down(subject).await;
    unknown_servers_and_services_have_no_sessions(subject).await;
    remove_removes_exactly_that_service(subject).await;
    removing_an_unknown_service_names_it(subject).await;
    served_route_reads_the_route_as_routed(subject).await;
}

/// `reconfigure` routes to one server, switches to the other, then to both; each call
/// returns once the servers are UP, and replacing paths and colour is accepted.
pub async fn reconfigure_switches_between_servers(subject: &Subject<'_>) {
    let [a, b] = subject.servers;
    let route = route("switch", Some(Color::Blue), &["/conformance-switch"]);
    for servers in [&[a][..], &[b], &[a, b]] {
        subject
            .proxy
            .reconfigure(&route, servers)
            .await
            .unwrap_or_else(|e| panic!("reconfigure: routing to {servers:?}: {e}"));
    }
    let moved = Route {
        color: Some(Color::Green),
        paths: vec!["/conformance-moved".into(), "/conformance-also".into()],
        ..route.clone()
    };
    subject
        .proxy
        .reconfigure(&moved, &[b])
        .await
        .unwrap_or_else(|e| panic!("reconfigure: new paths and colour replace the old: {e}"));
    subject.proxy.remove(&route.service).await.expect("remove");
}

/// A `reconfigure` listing a server that does not come UP is `NotUp` naming exactly that
/// server; the route keeps serving (a later switch to the live servers works).
pub async fn not_up_names_exactly_the_servers_down(subject: &Subject<'_>) {
    let [a, b] = subject.servers;
    let route = route("not-up", None, &["/conformance-not-up"]);
    subject
        .proxy
        .reconfigure(&route, &[a])
        .await
        .expect("reconfigure: to a live server");
    match subject.proxy.reconfigure(&route, &[b, subject.dead]).await {
        Err(ProxyError::NotUp { service, servers }) => {
            assert_eq!(service, route.service, "NotUp: names the service");
            assert_eq!(
                servers,
                [subject.dead],
                "NotUp: names exactly the servers that are not UP"
            );
        }
        other => panic!("NotUp: a server that never comes up must fail, got {other:?}"),
    }
    subject
        .proxy
        .reconfigure(&route, &[b])
        .await
        .expect("reconfigure: after NotUp the route still switches");
    subject.proxy.remove(&route.service).await.expect("remove");
}

/// `sessions` counts zero for servers the route does not have and for a service with no
/// route.
pub async fn unknown_servers_and_services_have_no_sessions(subject: &Subject<'_>) {
    let [a, b] = subject.servers;
    let route = route("sessions", None, &["/conformance-sessions"]);
    subject
        .proxy
        .reconfigure(&route, &[a])
        .await
        .expect("reconfigure");
    assert_eq!(
        subject
            .proxy
            .sessions(&route.service, &[b, subject.dead])
            .await
            .expect("sessions"),
        0,
        "sessions: servers the route does not have count zero"
    );
    subject.proxy.remove(&route.service).await.expect("remove");
    let unknown = unique_service("never-routed");
    assert_eq!(
        subject
            .proxy
            .sessions(&unknown, &[a])
            .await
            .expect("sessions: of a service with no route"),
        0,
        "sessions: a service with no route has none"
    );
}

/// `remove` deletes the route of exactly that service: a service whose name extends it
/// keeps its route, and a second `remove` is `UnknownService`.
pub async fn remove_removes_exactly_that_service(subject: &Subject<'_>) {
    let [a, b] = subject.servers;
    let short = route("prefix", None, &["/conformance-short"]);
    let long = Route {
        service: ServiceName::new(format!("{}-2", short.service)).expect("a valid service name"),
        paths: vec!["/conformance-long".into()],
        ..short.clone()
    };
    subject
        .proxy
        .reconfigure(&short, &[a])
        .await
        .expect("reconfigure");
    subject
        .proxy
        .reconfigure(&long, &[b])
        .await
        .expect("reconfigure");
    subject
        .proxy
        .remove(&short.service)
        .await
        .expect("remove: of a routed service");
    assert!(
        matches!(
            subject.proxy.remove(&short.service).await,
            Err(ProxyError::UnknownService { .. })
        ),
        "remove: a removed route is gone"
    );
    subject
        .proxy
        .remove(&long.service)
        .await
        .expect("remove: a service sharing the prefix keeps its route");
}

/// `remove` of a service that never had a route is `UnknownService` naming it.
pub async fn removing_an_unknown_service_names_it(subject: &Subject<'_>) {
    let unknown = unique_service("unknown");
    match subject.proxy.remove(&unknown).await {
        Err(ProxyError::UnknownService { service }) => {
            assert_eq!(service, unknown, "UnknownService: names the service")
        }
        other => panic!("remove: of an unknown service must be UnknownService, got {other:?}"),
    }
}

/// `served_route` reads back the route as last reconfigured (colour, paths, domain, path
/// type) with its servers UP and active; a server that left the rotation is no longer UP
/// nor active if it is listed at all; a service with no route, or a removed one, reads `None`.
pub async fn served_route_reads_the_route_as_routed(subject: &Subject<'_>) {
    let [a, b] = subject.servers;
    let read = |route: &Route| {
        let service = route.service.clone();
        async move {
            subject
                .proxy
                .served_route(&service)
                .await
                .unwrap_or_else(|e| panic!("served_route: of {service}: {e}"))
        }
    };
    let first = Route {
        domain: Some("conformance.example".into()),
        path_type: PathType::Exact,
        ..route("served", Some(Color::Blue), &["/conformance-served"])
    };
    assert_eq!(read(&first).await, None, "served_route: no route yet");
    subject
        .proxy
        .reconfigure(&first, &[a])
        .await
        .expect("reconfigure");
    let switched = Route {
        color: Some(Color::Green),
        ..first.clone()
    };
    subject
        .proxy
        .reconfigure(&switched, &[b])
        .await
        .expect("reconfigure: switch");
    let served = read(&switched)
        .await
        .unwrap_or_else(|| panic!("served_route: a routed service has its route"));
    assert_eq!(
        served.route, switched,
        "served_route: the route as last routed"
    );
    let state = |address| {
        served
            .servers
            .iter()
            .find(|s| s.address == address)
            .map(|s| s.state.as_str())
    };
    assert_eq!(
        state(b),
        Some("UP"),
        "served_route: the routed server is UP"
    );
    assert_ne!(
        state(a),
        Some("UP"),
        "served_route: a server that left the rotation is not UP"
    );
    let active = |address| {
        served
            .servers
            .iter()
            .find(|s| s.address == address)
            .map(|s| s.active)
    };
    assert_eq!(
        active(b),
        Some(true),
        "served_route: the routed server is active"
    );
    assert_ne!(
        active(a),
        Some(true),
        "served_route: a server that left the rotation is not active"
    );
    subject.proxy.remove(&first.service).await.expect("remove");
    assert_eq!(
        read(&first).await,
        None,
        "served_route: a removed route is gone"
    );
}

fn route(label: &str, color: Option<Color>, paths: &[&str]) -> Route {
    Route {
        service: unique_service(label),
        color,
        paths: paths.iter().map(|p| p.to_string()).collect(),
        domain: None,
        path_type: PathType::Prefix,
    }
}
