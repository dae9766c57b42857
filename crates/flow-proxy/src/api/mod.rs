//! The HTTP API of the proxy, compatible with Docker Flow's `docker-flow-proxy`.
//!
//! This module runs the server (listening, routing requests to the handlers, restoring
//! registry-backed routes on start); the handlers of the endpoints are in `handlers.rs`, the
//! JSON documents in [`wire`] (from `flow-proxy-client`).
//!
//! * `GET /v1/docker-flow-proxy/reconfigure?serviceName=S&servicePath=/a,/b&servers=ip:port,…`
//!   (plus `serviceColor`, `serviceDomain`, `pathType`, `skipCheck`, and the 1.x parameters
//!   [`params`] lists, turned into a route's destinations and options by
//!   `params::reconfigure_route`) — answers once every server is UP, or with
//!   `"Error":"NotUp"` and the servers that are not in `NotUpServers`.
//!   Without `servers`, the servers are looked up in the registry given to [`serve`]
//!   (registrations named `S-<color>`, or `S` without colour).
//!   Such a route is remembered as *registry-backed* (`registry-routes.json` in the state
//!   directory); a later `reconfigure` with `servers` or a `remove` forgets it.
//!   A `reconfigure` replaces the service's whole route, like 1.x; with
//!   `keepRouteOptions=true` (what releases send) it replaces only what a release states and
//!   keeps the rest of the route ([`RouteEntry::keeping_settings_of`]), so that a release
//!   never drops the `users` or headers an operator configured.
//! * `GET /v1/docker-flow-proxy/remove?serviceName=S` — removes exactly S (with `aclName=A`,
//!   only when S was given that `aclName`).
//! * `GET /v1/docker-flow-proxy/routes` — every route with its servers' state and sessions,
//!   its destinations and options (passwords redacted).
//! * `config`, `reload`, `ping`, `metrics`, `certs`, `cert`: Docker Flow 1.x's other
//!   endpoints (see `endpoints.rs`), and `GET /metrics`: Prometheus' text format, from
//!   HAProxy's statistics (see `metrics.rs`). Any HTTP method is taken, like 1.x did.
//!
//! # While HAProxy restarts
//!
//! Every request that talks to HAProxy waits, at most 3 s, until HAProxy serves: from a
//! `kill -9` of its master or worker until the supervisor restarted it, its runtime API is
//! gone. A change that fails because HAProxy died while it ran is run again on the restarted
//! HAProxy (it failed before anything was stored, and the restart loads the stored routes).
//! Past 3 s the answer is 503 `"Error":"Unavailable"` with `Retry-After: 1`, which
//! [`crate::HttpProxy`] retries.
//!
//! # Restoring registry-backed routes on start
//!
//! [`start`] first serves every stored route as it was (HAProxy routes from its first
//! connection). Then, when a registry is given, every registry-backed route is rebuilt from
//! the registry's *current* content: the colour stored for the service ([`Registry::load`],
//! `docker-flow/S/color`; the route's own colour when none is stored) and the instances
//! registered as `S-<colour>`. A release that happened while the proxy was down is thus
//! routed to without any `reconfigure` call. Why only registry-backed routes: a route given
//! explicit `servers` may point at addresses the registry does not list (published ports,
//! another network), and the caller that gave them stays their owner. A registry that cannot
//! be read, lists no instance, or instances that do not come UP leave the stored route as it
//! was (the last known servers beat no servers); each such case is reported by
//! [`RunningProxy::restore_warnings`] and printed by [`serve`].
//!
//! [`Registry::load`]: flow_core::Registry::load
//!
//! Every answer is JSON `{"Status":"OK"|"NOK","Message":…}` with the request's parameters
//! echoed like 1.x did; failures add `"Error"` (see [`wire::ErrorKind`]) and use 400 (bad
//! parameters), 401 (token), 404 (unknown service or endpoint), 500 (HAProxy refused) or
//! 503 (servers not UP).
//!
//! # A change that runs but cannot be saved
//!
//! Once HAProxy runs a `reconfigure` or `remove`, the answer is `OK`: a file of the state
//! directory that cannot be written afterwards (`routes.json`, `registry-routes.json`) adds
//! a `warning: …` to the `Message` (also printed on stderr) saying what a restart would do —
//! restore the routes, or the list of registry-backed routes, as they were before the change,
//! until a later change writes them again. Answering `NOK` would make a release roll back a
//! switch that happened (see [`crate::haproxy`]).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flow_core::{Color, DynRegistry, Route, ServiceName};
use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::haproxy::{Haproxy, HaproxyError, HaproxyOptions, DEFAULT_BINARY};
use crate::metrics::{self, Switches};
use crate::params;
use crate::table::{off_runtime, RouteEntry};
use crate::validate::parse_servers;
use wire::ErrorKind;

mod handlers;

pub(crate) use handlers::{Failure, Reply};

pub use flow_proxy_client::wire;
pub use flow_proxy_client::API_PREFIX;

/// What [`serve`] needs.
#[derive(Clone)]
pub struct ServeConfig {
    /// Where the API listens (default `127.0.0.1:8080`; port 0 picks a free one).
    pub api_addr: SocketAddr,
    /// Where HAProxy's HTTP frontends listen (at least one).
    pub binds: Vec<SocketAddr>,
    /// Where HAProxy's HTTPS frontends listen, once there is a certificate (none: plain
    /// HTTP only; see [`crate::tls`]).
    pub https_binds: Vec<SocketAddr>,
    /// A directory of PEM certificates (chain and key in one file) served on the HTTPS
    /// addresses, read at start.
    pub certs_dir: Option<PathBuf>,
    /// Where the configuration, route table, sockets and log live.
    pub state_dir: PathBuf,
    /// The HAProxy binary.
    pub haproxy: PathBuf,
    /// When set, every request needs `Authorization: Bearer <token>`; an empty token is
    /// refused at start ([`ServeError::EmptyToken`]): no token at all is `None`.
    pub token: Option<String>,
    /// Where `reconfigure` without `servers` looks the servers up.
    pub registry: Option<DynRegistry>,
    /// How long `reconfigure` waits for servers to come UP.
    pub up_timeout: Duration,
    /// What [`serve`] does with HAProxy on SIGINT/SIGTERM: `None` leaves it serving (a later
    /// `proxy serve` on the same state directory adopts it); `Some(limit)` stops it
    /// gracefully, finishing open connections for at most `limit`.
    pub stop_haproxy: Option<Duration>,
    /// Where `usersSecret=S` finds its credentials, in the file `dfp_users_S` (Docker's
    /// secrets directory by default, `/run/secrets`).
    pub secrets_dir: PathBuf,
}

impl ServeConfig {
    /// A configuration with the defaults: API on `127.0.0.1:8080`, `/usr/sbin/haproxy`, no
    /// token, no registry, 10 s UP timeout.
    pub fn new(state_dir: impl Into<PathBuf>, binds: Vec<SocketAddr>) -> ServeConfig {
        ServeConfig {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            binds,
            https_binds: Vec::new(),
            certs_dir: None,
            state_dir: state_dir.into(),
            haproxy: PathBuf::from(DEFAULT_BINARY),
            token: None,
            registry: None,
            up_timeout: Duration::from_secs(10),
            stop_haproxy: None,
            secrets_dir: PathBuf::from("/run/secrets"),
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("api_addr", &self.api_addr)
            .field("binds", &self.binds)
            .field("https_binds", &self.https_binds)
            .field("certs_dir", &self.certs_dir)
            .field("state_dir", &self.state_dir)
            .field("haproxy", &self.haproxy)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("registry", &self.registry.as_ref().map(ToString::to_string))
            .field("up_timeout", &self.up_timeout)
            .field("stop_haproxy", &self.stop_haproxy)
            .field("secrets_dir", &self.secrets_dir)
            .finish()
    }
}

/// Why the proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// HAProxy could not be started with the restored routes.
    #[error(transparent)]
    Haproxy(#[from] HaproxyError),
    /// The API address could not be bound.
    #[error("cannot listen for the API on {address}: {source} (pick another --api-addr)")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty, which would let every request through unnoticed.
    #[error("the API token is empty: set a token (FLOW_PROXY_TOKEN or --api-token), or run without authentication explicitly with --no-auth")]
    EmptyToken,
    /// Waiting for a stop signal failed.
    #[error("cannot wait for a stop signal: {0}")]
    Signal(#[source] std::io::Error),
    /// The list of registry-backed routes exists but cannot be read; it is never reset
    /// silently, since that would stop those routes from following the registry.
    #[error("the list of registry-backed routes {path} is unreadable ({reason}); fix or move it away by hand")]
    RegistryRoutes {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A started proxy: HAProxy running with the restored routes, the API accepting requests.
#[derive(Debug)]
pub struct RunningProxy {
    api_addr: SocketAddr,
    restore_warnings: Vec<String>,
    haproxy: Haproxy,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl RunningProxy {
    /// The address the API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The registry-backed routes that could not be rebuilt from the registry at start and
    /// kept their stored servers, and the stored certificates that expired since they were
    /// taken (still served), one sentence each (empty when there are none).
    pub fn restore_warnings(&self) -> &[String] {
        &self.restore_warnings
    }

    /// The pid of the HAProxy master when it was adopted from an earlier `proxy serve` on the
    /// same state directory, rather than started.
    pub fn adopted_master(&self) -> Option<u32> {
        self.haproxy.adopted_master()
    }

    /// Completes with what happened once HAProxy died and could not be restarted.
    pub async fn haproxy_lost(&self) -> String {
        self.haproxy.lost().await
    }

    /// Stops the API and HAProxy (closing its connections).
    pub async fn shutdown(mut self) {
        self.stop_api().await;
        self.haproxy.shutdown().await;
    }

    /// Stops the API and leaves HAProxy serving, unsupervised: a later start on the same
    /// state directory adopts it.
    pub async fn detach(mut self) {
        self.stop_api().await;
        self.haproxy.detach().await;
    }

    /// Stops the API, then HAProxy gracefully: open connections are finished within
    /// `drain_timeout`, then closed.
    pub async fn stop_gracefully(mut self, drain_timeout: Duration) {
        self.stop_api().await;
        self.haproxy.stop_gracefully(drain_timeout).await;
    }

    async fn stop_api(&mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.haproxy.kill_now();
    }
}

/// Runs the proxy until SIGINT or SIGTERM: the entry point of `docker-flow proxy serve`.
///
/// On a signal the API stops and HAProxy keeps serving (or stops gracefully with
/// [`ServeConfig::stop_haproxy`]). When HAProxy dies and cannot be restarted, it returns
/// [`HaproxyError::Lost`], so that the process exits non-zero and its service manager
/// restarts it.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let stop_haproxy = config.stop_haproxy;
    // Before HAProxy starts: a signal that arrives while it starts is not lost.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Signal)?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(ServeError::Signal)?;
    let running = start(config).await?;
    if let Some(pid) = running.adopted_master() {
        eprintln!("docker-flow proxy: adopted the running HAProxy (master pid {pid})");
    }
    for warning in running.restore_warnings() {
        eprintln!("docker-flow proxy: {warning}");
    }
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        message = running.haproxy_lost() => {
            running.shutdown().await;
            return Err(HaproxyError::Lost { message }.into());
        }
    }
    match stop_haproxy {
        None => {
            running.detach().await;
            eprintln!("docker-flow proxy: API stopped; HAProxy keeps serving (a new `proxy serve` on this state directory adopts it)");
        }
        Some(limit) => {
            running.stop_gracefully(limit).await;
            eprintln!("docker-flow proxy: API and HAProxy stopped");
        }
    }
    Ok(())
}

/// Starts HAProxy with every stored route, rebuilds the registry-backed ones from the
/// registry when one is given (see the [module docs](self)), then opens the API. Traffic is
/// routed by the restored configuration from HAProxy's first accepted connection.
pub async fn start(config: ServeConfig) -> Result<RunningProxy, ServeError> {
    if config.token.as_deref() == Some("") {
        return Err(ServeError::EmptyToken);
    }
    let backed_path = config.state_dir.join(REGISTRY_ROUTES_FILE);
    let backed = {
        let path = backed_path.clone();
        off_runtime(move || load_registry_routes(&path))
            .await
            .map_err(|error| ServeError::RegistryRoutes {
                path: backed_path.clone(),
                reason: error.to_string(),
            })??
    };
    let mut options = HaproxyOptions::new(config.state_dir.clone(), config.binds.clone());
    options.binary = config.haproxy.clone();
    options.up_timeout = config.up_timeout;
    options.https_binds = config.https_binds.clone();
    options.certs_dir = config.certs_dir.clone();
    let haproxy = Haproxy::start(options).await?;
    let mut restore_warnings = haproxy.certificate_warnings().to_vec();
    if let Some(registry) = &config.registry {
        restore_warnings.extend(restore_from_registry(&haproxy, registry, &backed).await);
    }
    let listener = match TcpListener::bind(config.api_addr).await {
        Ok(listener) => listener,
        Err(source) => {
            haproxy.shutdown().await;
            return Err(ServeError::Bind {
                address: config.api_addr,
                source,
            });
        }
    };
    let api_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        address: config.api_addr,
        source,
    })?;
    let app = Arc::new(App {
        haproxy: haproxy.clone(),
        token: config.token.clone(),
        registry: config.registry.clone(),
        registry_routes: tokio::sync::Mutex::new(RegistryRoutes {
            services: backed,
            file_behind: false,
        }),
        registry_routes_path: backed_path,
        secrets_dir: config.secrets_dir.clone(),
        switches: Switches::default(),
    });
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let app = app.clone();
                    let service = service_fn(move |request| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(app.handle(request).await) }
                    });
                    let mut stopping = stopped.clone();
                    tokio::spawn(async move {
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            // A client that goes away mid-request is not the proxy's error.
                            _ = connection.as_mut() => {}
                            // Once the API stops, a kept-alive connection takes no more
                            // requests; one in progress is answered first.
                            _ = stopping.changed() => {
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
                _ = stopped.changed() => return,
            }
        }
    });
    Ok(RunningProxy {
        api_addr,
        restore_warnings,
        haproxy,
        stop,
        server: Some(server),
    })
}

/// The file, in the state directory, listing the registry-backed routes.
const REGISTRY_ROUTES_FILE: &str = "registry-routes.json";

/// Reads the registry-backed services from `path`; a missing file is none.
fn load_registry_routes(path: &Path) -> Result<BTreeSet<ServiceName>, ServeError> {
    let unreadable = |reason: String| ServeError::RegistryRoutes {
        path: path.to_path_buf(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(error) => return Err(unreadable(error.to_string())),
    };
    let names: Vec<String> = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    names
        .into_iter()
        .map(|name| ServiceName::new(name).map_err(|e| unreadable(e.to_string())))
        .collect()
}

/// Rebuilds every stored route of `backed` from the registry's current colour and instances;
/// returns what could not be rebuilt (those routes keep their stored servers).
async fn restore_from_registry(
    haproxy: &Haproxy,
    registry: &DynRegistry,
    backed: &BTreeSet<ServiceName>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let routes = match haproxy.routes().await {
        Ok(routes) => routes,
        Err(error) => {
            warnings.push(format!("cannot list the restored routes: {error}"));
            return warnings;
        }
    };
    for stored in routes.into_iter().map(|status| status.entry) {
        let service = stored.route.service.clone();
        if !backed.contains(&service) {
            continue;
        }
        let color = match registry.load(&service).await {
            Ok(state) => state.value.color.or(stored.route.color),
            Err(error) => {
                warnings.push(format!(
                    "{service} keeps its stored servers: cannot read its colour from {registry}: {error}"
                ));
                continue;
            }
        };
        let servers = match registered_servers(registry, &service, color).await {
            Ok(servers) => servers,
            Err(failure) => {
                warnings.push(format!(
                    "{service} keeps its stored servers: {}",
                    failure.answer.message
                ));
                continue;
            }
        };
        if servers == stored.servers && color == stored.route.color {
            continue;
        }
        let entry = RouteEntry {
            route: Route {
                color,
                ..stored.route.clone()
            },
            servers,
            ..stored.clone()
        };
        match haproxy.reconfigure_entry(entry).await {
            Ok(applied) => warnings.extend(
                applied
                    .warnings
                    .into_iter()
                    .map(|warning| format!("{service} was rebuilt from {registry}: {warning}")),
            ),
            Err(error) => warnings.push(format!(
                "{service} keeps its stored servers: the registered ones were refused: {error}"
            )),
        }
    }
    warnings
}

/// The servers of `service` registered as `<service>-<color>` (or `<service>`) in `registry`.
async fn registered_servers(
    registry: &DynRegistry,
    service: &ServiceName,
    color: Option<Color>,
) -> Result<Vec<SocketAddr>, Failure> {
    let name = service.instance_name(color);
    let registrations = registry.instances(&name).await.map_err(|e| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            format!("cannot look up {name} in {registry}: {e}"),
        )
    })?;
    let list: Vec<String> = registrations
        .iter()
        .map(|r| match r.address.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, r.port).to_string(),
            Err(_) => format!("{}:{}", r.address, r.port),
        })
        .collect();
    if list.is_empty() {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            ErrorKind::UnknownService,
            format!("no instance is registered as {name} in {registry}: start it first, or give servers=ip:port,…"),
        ));
    }
    parse_servers(&list.join(",")).map_err(Failure::bad_request)
}

pub(crate) struct App {
    pub(crate) haproxy: Haproxy,
    token: Option<String>,
    registry: Option<DynRegistry>,
    /// The registry-backed services; the lock also orders the writes of
    /// `registry_routes_path`.
    registry_routes: tokio::sync::Mutex<RegistryRoutes>,
    registry_routes_path: PathBuf,
    secrets_dir: PathBuf,
    /// The switches made, for `/metrics`.
    switches: Switches,
}

/// The registry-backed services as the API knows them, and whether their file lags behind.
struct RegistryRoutes {
    services: BTreeSet<ServiceName>,
    /// The last write of the file failed: the next call writes it even without a change.
    file_behind: bool,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flow_core::memory::MemoryRegistry;
    use flow_core::{Registration, Registry, ReleaseState, Revision};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTP server on a loopback port answering every request with `name`.
    async fn backend(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                        name.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (address, task)
    }

    /// The body of `GET path` through the proxy's frontend at `bind`.
    async fn get(bind: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(bind).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    fn registration(id: &str, name: &str, address: SocketAddr) -> Registration {
        Registration {
            id: id.to_string(),
            name: name.to_string(),
            address: address.ip().to_string(),
            port: address.port(),
            tags: Vec::new(),
            meta: Default::default(),
            check: None,
        }
    }

    async fn api(proxy: &RunningProxy, query: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(proxy.api_addr())
            .await
            .unwrap();
        let request = format!(
            "GET {API_PREFIX}/reconfigure?{query} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    fn config(state: &Path, bind: SocketAddr, registry: &Arc<MemoryRegistry>) -> ServeConfig {
        let mut config = ServeConfig::new(state, vec![bind]);
        config.api_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.up_timeout = Duration::from_secs(4);
        config.registry = Some(registry.clone());
        config
    }

    #[tokio::test]
    async fn registry_backed_routes_are_rebuilt_from_the_registry_on_start() {
        let state = tempfile::tempdir().unwrap();
        let bind = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (blue, _blue) = backend("blue").await;
        let (green, _green) = backend("green").await;
        let (docs, _docs) = backend("docs").await;
        let (other_docs, _other_docs) = backend("other-docs").await;
        let registry = Arc::new(MemoryRegistry::new());
        let shop = ServiceName::new("shop").unwrap();
        registry
            .register(&registration("shop-blue-1", "shop-blue", blue))
            .await
            .unwrap();
        registry
            .register(&registration("docs-1", "docs", other_docs))
            .await
            .unwrap();

        let proxy = start(config(state.path(), bind, &registry)).await.unwrap();
        assert!(proxy.restore_warnings().is_empty());
        api(
            &proxy,
            "serviceName=shop&serviceColor=blue&servicePath=/shop",
        )
        .await;
        // Explicit servers: not registry-backed, whatever the registry lists as `docs`.
        api(
            &proxy,
            &format!("serviceName=docs&servicePath=/docs&servers={docs}"),
        )
        .await;
        assert_eq!(get(bind, "/shop").await, "blue");
        let backed = std::fs::read_to_string(state.path().join(REGISTRY_ROUTES_FILE)).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<String>>(&backed).unwrap(),
            ["shop"]
        );
        proxy.shutdown().await;

        // While the proxy is down, shop is released to green.
        registry
            .register(&registration("shop-green-1", "shop-green", green))
            .await
            .unwrap();
        registry.deregister("shop-blue-1").await.unwrap();
        let green_state = ReleaseState {
            color: Some(Color::Green),
            scale: Some(1),
            last_release: None,
            previous_release: None,
        };
        registry
            .store(&shop, &green_state, Revision::NONE)
            .await
            .unwrap();

        let proxy = start(config(state.path(), bind, &registry)).await.unwrap();
        assert!(
            proxy.restore_warnings().is_empty(),
            "{:?}",
            proxy.restore_warnings()
        );
        assert_eq!(get(bind, "/shop").await, "green");
        assert_eq!(
            get(bind, "/docs").await,
            "docs",
            "explicit servers are kept"
        );
        let routes = proxy.haproxy.routes().await.unwrap();
        let shop_route = routes
            .iter()
            .find(|r| r.entry.route.service == shop)
            .unwrap();
        assert_eq!(shop_route.entry.route.color, Some(Color::Green));
        assert_eq!(shop_route.entry.servers, [green]);
        proxy.shutdown().await;

        // No instance registered any more: the stored servers stay, and the start says so.
        registry.deregister("shop-green-1").await.unwrap();
        let proxy = start(config(state.path(), bind, &registry)).await.unwrap();
        let warnings = proxy.restore_warnings().join("\n");
        assert!(
            warnings.contains("shop keeps its stored servers") && warnings.contains("shop-green"),
            "{warnings}"
        );
        assert_eq!(get(bind, "/shop").await, "green");

        // Explicit servers given later make the route no longer registry-backed.
        api(
            &proxy,
            &format!("serviceName=shop&serviceColor=green&servicePath=/shop&servers={green}"),
        )
        .await;
        let backed = std::fs::read_to_string(state.path().join(REGISTRY_ROUTES_FILE)).unwrap();
        assert!(serde_json::from_str::<Vec<String>>(&backed)
            .unwrap()
            .is_empty());
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn a_registry_backed_route_stands_when_its_list_cannot_be_written() {
        let state = tempfile::tempdir().unwrap();
        let bind = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (blue, _blue) = backend("blue").await;
        let registry = Arc::new(MemoryRegistry::new());
        registry
            .register(&registration("shop-blue-1", "shop-blue", blue))
            .await
            .unwrap();
        // A directory where the temporary file of the list goes: writing the list fails.
        let blocker = state.path().join(format!("{REGISTRY_ROUTES_FILE}.tmp"));
        std::fs::create_dir(&blocker).unwrap();
        let proxy = start(config(state.path(), bind, &registry)).await.unwrap();

        let query = "serviceName=shop&serviceColor=blue&servicePath=/shop";
        let response = api(&proxy, query).await;
        assert!(
            response.contains(r#""Status":"OK""#)
                && response.contains("; warning: the list of registry-backed routes"),
            "{response}"
        );
        assert_eq!(get(bind, "/shop").await, "blue");
        assert!(!state.path().join(REGISTRY_ROUTES_FILE).exists());

        // Once it can be written, the next call writes it, though the source did not change.
        std::fs::remove_dir(&blocker).unwrap();
        let response = api(&proxy, query).await;
        assert!(!response.contains("warning"), "{response}");
        let backed = std::fs::read_to_string(state.path().join(REGISTRY_ROUTES_FILE)).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<String>>(&backed).unwrap(),
            ["shop"]
        );
        proxy.shutdown().await;
    }
}
