//! The HTTP API of the proxy, compatible with Docker Flow's `docker-flow-proxy`.
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

use bytes::Bytes;
use flow_core::{Color, DynRegistry, Route, ServiceName};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::haproxy::{Applied, Haproxy, HaproxyError, HaproxyOptions, DEFAULT_BINARY};
use crate::metrics::{self, Switches};
use crate::params;
use crate::table::{off_runtime, write_atomically, RouteEntry};
use crate::validate::{list_addresses, parse_servers, InvalidInput};
use wire::{Answer, ErrorKind, RouteView, ServerView};

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

/// How long a request waits for the supervisor to restart a HAProxy whose master or worker
/// died before it is answered 503 with `Retry-After` (a restart takes about 100 ms).
const RESTART_WAIT: Duration = Duration::from_secs(3);

/// How long a failed exchange with HAProxy waits to see whether HAProxy is dying.
const DEATH_NOTICE: Duration = Duration::from_millis(250);

/// What an endpoint answers: the API's JSON answer, or a document of its own.
pub(crate) enum Reply {
    /// `{"Status":…}`.
    Answer(Box<Answer>),
    /// Another body (the configuration, metrics).
    Document {
        /// Its `Content-Type`.
        content_type: &'static str,
        /// The body.
        body: String,
    },
}

/// The registry-backed services as the API knows them, and whether their file lags behind.
struct RegistryRoutes {
    services: BTreeSet<ServiceName>,
    /// The last write of the file failed: the next call writes it even without a change.
    file_behind: bool,
}

impl Reply {
    /// The JSON `answer`.
    pub(crate) fn answer(answer: Answer) -> Reply {
        Reply::Answer(Box::new(answer))
    }
}

/// A failed request: its status and answer.
pub(crate) struct Failure {
    status: StatusCode,
    answer: Box<Answer>,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            status,
            answer: Box::new(Answer {
                status: "NOK".into(),
                message: message.into(),
                error: Some(kind),
                ..Answer::default()
            }),
        }
    }

    pub(crate) fn bad_request(error: InvalidInput) -> Failure {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            error.to_string(),
        )
    }
}

impl From<HaproxyError> for Failure {
    fn from(error: HaproxyError) -> Failure {
        let message = error.to_string();
        match error {
            HaproxyError::Invalid(_) => {
                Failure::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
            }
            HaproxyError::Certificate(error) if error.is_bad_input() => {
                Failure::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
            }
            HaproxyError::UnknownService { .. } => {
                Failure::new(StatusCode::NOT_FOUND, ErrorKind::UnknownService, message)
            }
            HaproxyError::NotUp { servers, .. } => {
                let mut failure =
                    Failure::new(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::NotUp, message);
                failure.answer.not_up_servers = servers;
                failure
            }
            HaproxyError::InvalidConfig { .. }
            | HaproxyError::Runtime { .. }
            | HaproxyError::Reload { .. } => Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Refused,
                message,
            ),
            _ => Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Internal,
                message,
            ),
        }
    }
}

/// The query parameters of a request; [`params::check`] makes sure each is known and given
/// once before any is read.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(request: &Request<Incoming>) -> Query {
        let query = request.uri().query().unwrap_or_default();
        Query(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of `name`; an empty value counts as absent, like in 1.x.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn service(&self) -> Result<ServiceName, Failure> {
        let value = self.get("serviceName").ok_or_else(|| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                "serviceName is missing: give the service to route, e.g. serviceName=shop-web",
            )
        })?;
        ServiceName::new(value).map_err(|e| {
            Failure::bad_request(InvalidInput::ServiceName {
                value: e.value.clone(),
            })
        })
    }
}

impl App {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let json = |answer: &Answer| serde_json::to_vec(answer).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::builder();
        let (status, content_type, body) = match self.route(request).await {
            Ok(Reply::Answer(answer)) => (StatusCode::OK, "application/json", json(&answer)),
            Ok(Reply::Document { content_type, body }) => {
                (StatusCode::OK, content_type, body.into_bytes())
            }
            Err(failure) => {
                if failure.answer.error == Some(ErrorKind::Unavailable) {
                    response = response.header(header::RETRY_AFTER, "1");
                }
                (failure.status, "application/json", json(&failure.answer))
            }
        };
        response
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a response of a status, two headers and a body is valid")
    }

    /// Runs `change` once HAProxy serves, waiting up to [`RESTART_WAIT`] for the supervisor
    /// to restart a HAProxy whose master or worker died. When HAProxy dies while `change`
    /// runs, `change` failed before anything was stored (the restarted HAProxy runs the
    /// stored routes), so it runs again on the restarted one: a release switching right
    /// after a `kill -9` of HAProxy does not fail.
    pub(crate) async fn across_restarts<T, F>(
        &self,
        mut change: impl FnMut() -> F,
    ) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, HaproxyError>>,
    {
        let deadline = tokio::time::Instant::now() + RESTART_WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.haproxy.wait_serving(left).await {
                return Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Unavailable,
                    "HAProxy is not serving: it is being restarted after its master or worker died; nothing was changed, send the request again",
                ));
            }
            let restarts = self.haproxy.restarts();
            match change().await {
                Ok(value) => return Ok(value),
                Err(error)
                    if tokio::time::Instant::now() < deadline
                        && self.died_during(&error, restarts).await => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Whether `error` came from a HAProxy that died meanwhile: one talking to HAProxy
    /// (socket, runtime command, reload), after which HAProxy was restarted or is seen not
    /// serving within [`DEATH_NOTICE`] — a killed process closes its sockets a moment
    /// before it can be seen gone.
    async fn died_during(&self, error: &HaproxyError, restarts: u64) -> bool {
        if !matches!(
            error,
            HaproxyError::Io { .. } | HaproxyError::Runtime { .. } | HaproxyError::Reload { .. }
        ) {
            return false;
        }
        let deadline = tokio::time::Instant::now() + DEATH_NOTICE;
        loop {
            if self.haproxy.restarts() != restarts || !self.haproxy.serving() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Any HTTP method is taken, like 1.x did (its routes named no method), except for
    /// `cert`, which 1.x took as PUT only.
    async fn route(&self, request: Request<Incoming>) -> Result<Reply, Failure> {
        self.authorize(&request)?;
        let query = Query::parse(&request);
        let path = request.uri().path().to_string();
        let path = path.as_str();
        let endpoint = path.strip_prefix(API_PREFIX).unwrap_or_default();
        let takes = match endpoint {
            "/reconfigure" => params::Endpoint::Reconfigure,
            "/remove" => params::Endpoint::Remove,
            "/config" => params::Endpoint::Config,
            "/reload" => params::Endpoint::Reload,
            "/cert" => params::Endpoint::Cert,
            "/routes" | "/ping" | "/certs" | "/metrics" => params::Endpoint::Other,
            _ if path == "/metrics" => params::Endpoint::Other,
            // Before the parameters: they mean nothing to an endpoint that does not exist.
            _ => return Err(no_endpoint(path)),
        };
        params::check(takes, query.0.iter().map(|(name, _)| name.as_str())).map_err(|error| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                error.to_string(),
            )
        })?;
        match (path, endpoint) {
            ("/metrics", _) => {
                let routes = self.across_restarts(|| self.haproxy.routes()).await?;
                let body = metrics::render(&routes, &self.switches, self.haproxy.restarts());
                Ok(Reply::Document {
                    content_type: metrics::CONTENT_TYPE,
                    body,
                })
            }
            (_, "/reconfigure") => self.reconfigure(&query).await.map(Reply::answer),
            (_, "/remove") => self.remove(&query).await.map(Reply::answer),
            (_, "/routes") => self.routes().await.map(Reply::answer),
            (_, "/config") => crate::endpoints::config(self, query.get("type")).await,
            (_, "/reload") => crate::endpoints::reload(self, query.get("recreate")).await,
            (_, "/ping") => Ok(crate::endpoints::ping()),
            (_, "/metrics") => crate::endpoints::stats_csv(self).await,
            (_, "/certs") => Ok(crate::endpoints::certs(self)),
            (_, "/cert") => crate::endpoints::cert(self, query.get("certName"), request)
                .await
                .map(Reply::answer),
            _ => Err(no_endpoint(path)),
        }
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), Failure> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                ErrorKind::Unauthorized,
                "missing or wrong token: send the proxy's token as `Authorization: Bearer <token>`",
            ))
        }
    }

    async fn reconfigure(&self, query: &Query) -> Result<Answer, Failure> {
        let service = query.service()?;
        let color = query
            .get("serviceColor")
            .map(|c| {
                c.parse::<Color>().map_err(|_| {
                    Failure::bad_request(InvalidInput::Color {
                        value: c.to_string(),
                    })
                })
            })
            .transpose()?;
        let boolean = |name: &'static str| match query.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(Failure::bad_request(InvalidInput::Boolean {
                name,
                value: other.to_string(),
            })),
        };
        let skip_check = boolean("skipCheck")?;
        let keep = boolean(wire::KEEP_ROUTE_OPTIONS)?;
        if keep {
            params::check_kept(query.0.iter().map(|(name, _)| name.as_str()))
                .map_err(Failure::bad_request)?;
        }
        let (destinations, options) = params::reconfigure_route(
            &|name| query.get(name),
            query.0.iter().map(|(name, _)| name.as_str()),
            &self.secrets_dir,
        )
        .map_err(Failure::bad_request)?;
        // The route mirrors the first destination (see RouteEntry::route).
        let first = &destinations[0];
        let path_type = first.path_type;
        let route = Route {
            service: service.clone(),
            color,
            paths: first.paths.clone(),
            domain: first.domains.first().cloned(),
            path_type,
        };
        let from_registry = query.get("servers").is_none();
        let servers = match query.get("servers") {
            Some(list) => parse_servers(list).map_err(Failure::bad_request)?,
            None => self.registered_servers(&service, color).await?,
        };
        let mut answer = Answer {
            status: "OK".into(),
            service_name: service.to_string(),
            service_color: color.map(|c| c.to_string()).unwrap_or_default(),
            service_path: route.paths.clone(),
            service_domain: destinations[0].domains.join(","),
            path_type: path_type.haproxy_matcher().into(),
            skip_check,
            servers: servers.clone(),
            ..Answer::default()
        };
        let entry = RouteEntry {
            route,
            servers: servers.clone(),
            skip_check,
            destinations,
            options,
        };
        let started = std::time::Instant::now();
        let before = self.haproxy.route(&service);
        match self
            .across_restarts(|| {
                let entry = entry.clone();
                async move {
                    if keep {
                        self.haproxy.reconfigure_keeping(entry).await
                    } else {
                        self.haproxy.reconfigure_entry(entry).await
                    }
                }
            })
            .await
        {
            Ok(applied) => {
                if before.is_none_or(|b| b.servers != servers || b.route.color != color) {
                    self.switches.record(&service, color, started.elapsed());
                }
                let source_warning = self.remember_source(&service, from_registry).await;
                answer.message = with_warnings(
                    format!(
                        "{service} is routed to {} (all UP)",
                        list_addresses(&servers)
                    ),
                    applied,
                    source_warning,
                );
                Ok(answer)
            }
            Err(mut failure) => {
                failure.answer.service_name = answer.service_name;
                failure.answer.service_color = answer.service_color;
                failure.answer.service_path = answer.service_path;
                failure.answer.service_domain = answer.service_domain;
                failure.answer.path_type = answer.path_type;
                failure.answer.skip_check = skip_check;
                failure.answer.servers = servers;
                Err(failure)
            }
        }
    }

    /// The servers of `service` registered as `<service>-<color>` (or `<service>`).
    async fn registered_servers(
        &self,
        service: &ServiceName,
        color: Option<Color>,
    ) -> Result<Vec<SocketAddr>, Failure> {
        let Some(registry) = &self.registry else {
            let name = service.instance_name(color);
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("servers is missing: give servers=ip:port,… or start the proxy with --registry so it looks up the instances registered as {name}"),
            ));
        };
        registered_servers(registry, service, color).await
    }

    /// Records whether the route of `service` is registry-backed (`true`) or not (`false`,
    /// also after a removal), writing the list when it changes or an earlier write failed.
    ///
    /// It is called once the route is applied, so a failed write is a warning (returned), not
    /// a failure: the route stands, memory keeps its new source, and the file follows at the
    /// next write.
    async fn remember_source(&self, service: &ServiceName, from_registry: bool) -> Option<String> {
        let mut backed = self.registry_routes.lock().await;
        let changed = if from_registry {
            backed.services.insert(service.clone())
        } else {
            backed.services.remove(service)
        };
        if !changed && !backed.file_behind {
            return None;
        }
        let names: Vec<&str> = backed.services.iter().map(ServiceName::as_str).collect();
        let text = serde_json::to_vec_pretty(&names).expect("a list of names serializes");
        match write_atomically(&self.registry_routes_path, text).await {
            Ok(()) => {
                backed.file_behind = false;
                None
            }
            Err(error) => {
                backed.file_behind = true;
                Some(format!(
                    "the list of registry-backed routes {} could not be written ({error}); a restarted proxy would rebuild from the registry the routes listed before this change, until a later change writes the list again",
                    self.registry_routes_path.display()
                ))
            }
        }
    }

    async fn remove(&self, query: &Query) -> Result<Answer, Failure> {
        let service = query.service()?;
        let mut answer = Answer {
            service_name: service.to_string(),
            ..Answer::default()
        };
        match self
            .across_restarts(|| self.haproxy.remove_named(&service, query.get("aclName")))
            .await
        {
            Ok(applied) => {
                let source_warning = self.remember_source(&service, false).await;
                answer.status = "OK".into();
                answer.message = with_warnings(
                    format!("the route of {service} was removed"),
                    applied,
                    source_warning,
                );
                Ok(answer)
            }
            Err(mut failure) => {
                failure.answer.service_name = answer.service_name;
                Err(failure)
            }
        }
    }

    pub(crate) async fn routes(&self) -> Result<Answer, Failure> {
        let routes = self.across_restarts(|| self.haproxy.routes()).await?;
        let views: Vec<RouteView> = routes
            .into_iter()
            .map(|r| RouteView {
                service_name: r.entry.route.service.to_string(),
                service_color: r.entry.route.color.map(|c| c.to_string()),
                service_path: r.entry.route.paths.clone(),
                service_domain: r.entry.route.domain.clone(),
                path_type: r.entry.route.path_type.haproxy_matcher().into(),
                skip_check: r.entry.skip_check,
                servers: r
                    .servers
                    .into_iter()
                    .map(|s| ServerView {
                        address: s.address,
                        name: s.name,
                        state: s.state,
                        sessions: s.sessions,
                        active: s.active,
                    })
                    .collect(),
                options: r.entry.options.redacted(),
                destinations: r.entry.destinations,
            })
            .collect();
        Ok(Answer {
            status: "OK".into(),
            message: format!("{} routes", views.len()),
            routes: Some(views),
            ..Answer::default()
        })
    }
}

fn no_endpoint(path: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ErrorKind::UnknownService,
        format!(
            "no endpoint {path}: use {API_PREFIX}/reconfigure, /remove, /routes, /config, /reload, /ping, /certs, /cert or /metrics (HAProxy's statistics), or /metrics (Prometheus)"
        ),
    )
}

/// `message` followed by each warning of a change that was applied (also printed on stderr,
/// where the proxy's operator sees it).
fn with_warnings(message: String, applied: Applied, source_warning: Option<String>) -> String {
    let mut message = message;
    for warning in applied.warnings.into_iter().chain(source_warning) {
        eprintln!("docker-flow proxy: warning: {warning}");
        message.push_str("; warning: ");
        message.push_str(&warning);
    }
    message
}

/// Whether `presented` is `token`, in a time that depends on `presented` only: every byte
/// presented is compared (with the token's bytes, cycled), and a length mismatch is folded
/// into the result instead of returning early, so the time says nothing about the token,
/// not even its length. `token` is never empty ([`start`] refuses an empty one).
fn constant_time_eq(presented: &[u8], token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut difference = u8::from(presented.len() != token.len());
    for (index, byte) in presented.iter().enumerate() {
        difference |= byte ^ token[index % token.len()];
    }
    difference == 0 && !presented.is_empty()
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

    #[test]
    fn tokens_compare_equal_only_when_equal_including_their_length() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(
            !constant_time_eq(b"s3crets3cret", b"s3cret"),
            "a repeated token is not it"
        );
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"x", b""));
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
