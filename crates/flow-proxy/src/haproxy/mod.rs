//! The HAProxy driver: owns one HAProxy process in master-worker mode and keeps its
//! configuration, its runtime state and the persisted route table in step.
//!
//! This module holds the driver ([`Haproxy`]) and its state; each concern has a module of
//! its own: the switch algorithm (`switch.rs`), the supervision of the master process
//! (`supervise.rs`), loading a configuration (`reload.rs`), the Runtime API client
//! (`runtime.rs`) and the certificates (`certs.rs`); the configuration is rendered by
//! [`render`].
//!
//! # How a change is applied
//!
//! * **Reload** (used for a new service, other paths / domain / matcher, another check mode,
//!   a removal) — the whole configuration is rendered from the route table, written to
//!   `haproxy.cfg.candidate`, validated with `haproxy -c -f`, renamed over `haproxy.cfg` and
//!   loaded with `reload` on the master socket; the reload is confirmed by a new worker pid
//!   in `show proc` (and a failed one by the master's `failed` counter). A candidate HAProxy
//!   rejects is never renamed nor loaded: the running worker keeps serving and the caller
//!   gets HAProxy's message. Listening sockets are handed from the old worker to the new one
//!   and idle keep-alive connections are not cut (see the crate docs), so a reload drops no
//!   request.
//! * **New service** — its backends (one per destination, see [`render`]) are loaded
//!   first without their frontend rules, so their servers are health-checked while no
//!   request can reach them (a new route may overlap the paths of others); once they are UP,
//!   a second reload adds the routes. If they do not come UP, the previous configuration is
//!   loaded again. (When the check mode of an existing route changes, or it gains a
//!   destination, its servers are reloaded with the route and then waited for, the same
//!   way.)
//! * **Existing backends, other servers** — no reload. Through the Runtime API, in every
//!   backend of the route, each new server is added (`add server … check …`), its health check
//!   enabled, and put in `drain` state, where HAProxy health-checks it but sends it no
//!   request. Once `show stat` reports every new server checked OK (bounded by
//!   [`HaproxyOptions::up_timeout`]), they are set `ready` and only then the old servers are
//!   set `drain`. A background task moves each draining server to `maint` once its `scur` is
//!   0 and deletes it (`del server`, retried until "Server deleted."); it waits as long as
//!   sessions remain. If a new server does not pass its check in time, the ones added are
//!   deleted again and the old ones, never touched, keep serving. When paths or domain
//!   change as well, the servers are moved first (after the new configuration passed
//!   `haproxy -c`) and the routing is reloaded after.
//! * After every change the configuration file is rewritten (validated the same way) to list
//!   exactly the servers taking traffic, so a later reload never changes routing. Servers
//!   still draining are *not* written: they take no new requests anyway, and after a reload
//!   the old worker finishes their open requests while the new worker never knows them.
//!
//! # Sessions across reloads
//!
//! A reload leaves the connections open at that moment to the old worker, which keeps them
//! until they close: a WebSocket (or any upgraded connection) lives on through any number of
//! reloads. The sessions [`Haproxy::routes`] reports are therefore those of the current
//! worker *plus* those the old workers still hold (`show proc` lists them, `@!<pid> show
//! stat` reads each): otherwise a release that drains a server after a reload would see 0
//! sessions and stop it under its open connections. A server only an old worker knows is
//! reported draining. Old workers are not cut after a fixed time (no `hard-stop-after`,
//! which would close every long connection some minutes after any reload of any route);
//! `mworker-max-reloads` bounds how many can pile up instead (see [`render`]).
//!
//! # When a file cannot be written after a change
//!
//! What HAProxy runs is the truth. Once a change is applied (new servers in rotation, a
//! reload confirmed), the route table in memory is updated and published first, and only
//! then are the files written: the configuration file (when only the servers changed) and
//! `routes.json`. A write that fails then (disk full, permissions, a failing disk) does not
//! turn the change into a failure — the caller would roll back a switch that happened, and
//! memory would disagree with HAProxy. It is returned as a warning in [`Applied`] (the API
//! answers `OK` with the warning in its `Message`) and the proxy keeps serving the change.
//! Until a later change writes the files again, a *restarted* proxy restores the routes as
//! they were before the change: the atomic write leaves the previous `routes.json` whole.
//! A stale configuration file alone does not matter: every reload and every start render the
//! configuration from the route table.
//!
//! File work (writes with their `fsync`s, renames, reading the log) runs on tokio's blocking
//! pool ([`crate::table`]), so a slow disk holds the change in progress — the state lock is
//! kept across the write, which keeps writes in the order of the changes — but never a
//! runtime thread.
//!
//! # Health checks
//!
//! Servers are checked with a plain TCP connect (`check inter 1s fastinter 20ms downinter 20ms
//! rise 1`: each second while UP, every 20 ms while DOWN or changing state, one success to be
//! UP, so a new server is UP about 20 ms after it is added), not an HTTP request: the proxy knows no health URL of the services (a route's
//! paths may be regular expressions, and a service may answer `/` with 404), and the release
//! engine has already waited for the application's own health before it asks the proxy to
//! switch. The connect check makes sure the proxy itself can reach each server before it
//! takes traffic. With `skip_check` (Docker Flow's `skipCheck`) servers are added without a
//! check and count as UP at once.
//!
//! # Serialization
//!
//! Changes are serialized by one lock (a reconfigure holds it while it waits for servers to
//! come UP); reading the routes does not take it.
//!
//! # Talking to HAProxy
//!
//! Runtime commands go through the master socket addressed to the current worker
//! (`@!<pid> <command>`), so that right after a reload no command can reach the old worker
//! that is finishing its connections. The admin socket (`admin.sock`, level admin) is there
//! for operators. Replies are plain text without status codes: the known strings are matched.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flow_core::{Route, ServiceName};
use tokio::sync::{watch, Mutex};
use tokio::time::{sleep, timeout, Instant};

use crate::process::{process_alive, Master, StateLock};
use crate::render::backends;
pub use crate::render::{render, CertificateFile, Listeners};
use crate::table::{
    create_private_dir, off_runtime, RouteEntry, RouteTable, StateDirError, StateError,
};
use crate::tls::{self, CertError, Certificate, Certificates};
use crate::validate::{list_addresses, server_name, InvalidInput};

mod certs;
mod reload;
mod runtime;
mod supervise;
mod switch;

use runtime::add_sessions_of_old_workers;
use supervise::{runtime_matches, supervise};
use switch::drain_then_delete;

/// How often `show stat` is polled while waiting for servers or for a drain.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long HAProxy may take to start a worker (first start or reload).
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the driver finds HAProxy and keeps its files.
#[derive(Debug, Clone)]
pub struct HaproxyOptions {
    /// The HAProxy binary (`/usr/sbin/haproxy` from the Debian package `haproxy`).
    pub binary: PathBuf,
    /// The directory holding `haproxy.cfg`, `routes.json`, the sockets and `haproxy.log`.
    pub state_dir: PathBuf,
    /// The addresses the HTTP frontends listen on (at least one).
    pub binds: Vec<SocketAddr>,
    /// The addresses the HTTPS frontends listen on, once there is a certificate (see
    /// [`crate::tls`]); none: the proxy serves plain HTTP only.
    pub https_binds: Vec<SocketAddr>,
    /// A directory of certificates (PEM files of a chain and its key) served on the HTTPS
    /// addresses besides the uploaded ones; read at start.
    pub certs_dir: Option<PathBuf>,
    /// How long a reconfigure waits for new servers to pass their health check.
    pub up_timeout: Duration,
}

impl HaproxyOptions {
    /// Options with the default binary and a 10-second UP timeout.
    pub fn new(state_dir: impl Into<PathBuf>, binds: Vec<SocketAddr>) -> HaproxyOptions {
        HaproxyOptions {
            binary: PathBuf::from(DEFAULT_BINARY),
            state_dir: state_dir.into(),
            binds,
            https_binds: Vec::new(),
            certs_dir: None,
            up_timeout: Duration::from_secs(10),
        }
    }
}

/// The HAProxy binary of Debian's `haproxy` package.
pub const DEFAULT_BINARY: &str = "/usr/sbin/haproxy";

/// Everything the driver can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// The HAProxy binary does not exist.
    #[error("HAProxy is not installed at {path}: install the Debian package `haproxy` (apt-get install haproxy) or point --haproxy at the binary")]
    BinaryMissing {
        /// The path tried.
        path: PathBuf,
    },
    /// The state directory's path is too long for the Unix sockets HAProxy binds in it.
    #[error("the state directory {path} is too long for HAProxy's Unix sockets (their paths must stay under 108 bytes): choose a shorter state directory")]
    StateDirTooLong {
        /// The state directory.
        path: PathBuf,
    },
    /// The driver was given no address to listen on.
    #[error("no bind address: give at least one address for the proxy to listen on, e.g. --bind 127.0.0.1:8081")]
    NoBinds,
    /// An address is given for HTTP and HTTPS, or twice.
    #[error("{address} is given twice among the HTTP and HTTPS addresses: each address serves one of them, e.g. --bind 0.0.0.0:80 --bind-https 0.0.0.0:443")]
    SameAddress {
        /// The address.
        address: SocketAddr,
    },
    /// A certificate is refused, or its file cannot be read or written; nothing was loaded.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The route's input would not be safe in the configuration.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// `haproxy -c` rejected the rendered configuration; nothing was loaded.
    #[error("HAProxy rejected the new configuration, which was not loaded (the previous one keeps serving): {message}")]
    InvalidConfig {
        /// HAProxy's validation output.
        message: String,
    },
    /// HAProxy did not start a worker.
    #[error("HAProxy did not start: {message}")]
    Start {
        /// What was seen (exit status, log lines).
        message: String,
    },
    /// A reload was not confirmed by a new worker.
    #[error("HAProxy did not reload: {message}")]
    Reload {
        /// What was seen.
        message: String,
    },
    /// A Runtime API command got an unexpected reply.
    #[error("HAProxy refused `{command}`: {reply}")]
    Runtime {
        /// The command sent.
        command: String,
        /// HAProxy's reply.
        reply: String,
    },
    /// New servers did not pass their health check in time; the previous ones keep serving.
    #[error("these servers of {service} did not come UP within {waited:?}: {}", .servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    NotUp {
        /// The service.
        service: ServiceName,
        /// The servers that were not UP.
        servers: Vec<SocketAddr>,
        /// How long the driver waited.
        waited: Duration,
    },
    /// The service has no route.
    #[error("there is no route for {service}")]
    UnknownService {
        /// The service.
        service: ServiceName,
    },
    /// The route table could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The state directory cannot be made private.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// Another driver runs on the same state directory.
    #[error("another `docker-flow proxy serve` runs on the state directory {path} (it holds {path}/proxy.lock): stop it first, or give this one another --state-dir")]
    Locked {
        /// The state directory.
        path: PathBuf,
    },
    /// HAProxy died and could not be restarted.
    #[error("HAProxy could not be kept running: {message}")]
    Lost {
        /// What happened.
        message: String,
    },
}

/// A change HAProxy runs now, with what could not be written to the state directory after it
/// was applied (see the [module docs](self#when-a-file-cannot-be-written-after-a-change)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "a change whose files could not be written must be reported"]
pub struct Applied {
    /// One sentence per file that could not be written, saying what it means for a restart;
    /// empty when every file is in step with what HAProxy runs.
    pub warnings: Vec<String>,
}

pub use flow_proxy_client::ServerState;

/// One server of a route as the running worker sees it, with the sessions old workers still
/// hold on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerStatus {
    /// Its address.
    pub address: SocketAddr,
    /// Its HAProxy name.
    pub name: String,
    /// Its state (draining when only an old worker still knows it).
    pub state: ServerState,
    /// Sessions open on it now (`scur`), in the running worker and the old ones.
    pub sessions: u64,
    /// Whether it is one of the route's servers (false: left over, draining).
    pub active: bool,
    /// HTTP requests the running worker sent it (`req_tot`; a new worker starts from 0).
    pub requests: u64,
    /// Its 5xx responses the running worker saw (`hrsp_5xx`).
    pub responses_5xx: u64,
}

/// One route with the live state of its servers.
#[derive(Debug, Clone)]
pub struct RouteStatus {
    /// The route and its servers as stored.
    pub entry: RouteEntry,
    /// Every server the worker has in the route's backend, plus stored ones it lacks.
    pub servers: Vec<ServerStatus>,
}

/// Files the driver keeps in the state directory.
#[derive(Debug)]
struct Files {
    config: PathBuf,
    candidate: PathBuf,
    regex_check: PathBuf,
    routes: PathBuf,
    master_socket: PathBuf,
    admin_socket: PathBuf,
    log: PathBuf,
    lock: PathBuf,
}

impl Files {
    fn new(state_dir: &Path) -> Files {
        Files {
            config: state_dir.join("haproxy.cfg"),
            candidate: state_dir.join("haproxy.cfg.candidate"),
            regex_check: state_dir.join("regex-check.cfg"),
            routes: state_dir.join("routes.json"),
            master_socket: state_dir.join("master.sock"),
            admin_socket: state_dir.join("admin.sock"),
            log: state_dir.join("haproxy.log"),
            lock: state_dir.join("proxy.lock"),
        }
    }
}

/// A server set to drain: its service, backend and address.
type Draining = (ServiceName, String, SocketAddr);

/// What changes under the lock.
#[derive(Debug)]
struct State {
    table: RouteTable,
    /// The pid of the worker that takes new connections.
    worker_pid: u32,
    /// Servers set to drain: their service, backend and address; their drain task deletes
    /// them.
    draining: BTreeSet<Draining>,
}

#[derive(Debug)]
struct Inner {
    options: HaproxyOptions,
    files: Files,
    state: Mutex<State>,
    /// The table and worker pid last applied, for readers that must not wait behind a
    /// change in progress (a reconfigure can wait seconds for servers to come UP).
    published: std::sync::Mutex<(RouteTable, u32)>,
    master: std::sync::Mutex<Option<Master>>,
    /// False once the driver stops or detaches: the supervisor then restarts nothing.
    supervising: AtomicBool,
    /// How many times the supervisor restarted HAProxy since the driver started.
    restarts: AtomicU64,
    /// Set (once) when HAProxy died and could not be restarted.
    lost: watch::Sender<Option<String>>,
    /// The state directory's lock (see [`crate::process`]), held until the driver stops,
    /// detaches or is dropped.
    state_dir_lock: std::sync::Mutex<Option<StateLock>>,
    /// The certificates rendered into the configuration; changed under the state lock only
    /// (while an upload is being loaded, it holds the upload too).
    certificates: std::sync::Mutex<Certificates>,
    /// What the start found about the certificates (an expired one still served).
    certificate_warnings: Vec<String>,
}

/// An HAProxy process and the routes it serves. Cheap to clone; every change is serialized.
#[derive(Debug, Clone)]
pub struct Haproxy {
    inner: Arc<Inner>,
}

/// Fails with [`HaproxyError::BinaryMissing`] unless `binary` is an existing file.
pub fn check_binary(binary: &Path) -> Result<(), HaproxyError> {
    match std::fs::metadata(binary) {
        Ok(meta) if meta.is_file() => Ok(()),
        _ => Err(HaproxyError::BinaryMissing {
            path: binary.to_path_buf(),
        }),
    }
}

impl Haproxy {
    /// Restores the route table from the state directory, renders and validates it, and
    /// starts HAProxy with it: every stored route is in the configuration before the
    /// frontends open their sockets.
    pub async fn start(options: HaproxyOptions) -> Result<Haproxy, HaproxyError> {
        let binary = options.binary.clone();
        file_work("cannot look for the HAProxy binary", move || {
            check_binary(&binary)
        })
        .await?;
        if options.binds.is_empty() {
            return Err(HaproxyError::NoBinds);
        }
        let mut seen = BTreeSet::new();
        if let Some(address) = options
            .binds
            .iter()
            .chain(&options.https_binds)
            .find(|address| !seen.insert(**address))
        {
            return Err(HaproxyError::SameAddress { address: *address });
        }
        if let (Some(dir), true) = (&options.certs_dir, options.https_binds.is_empty()) {
            return Err(CertError::CertsDirWithoutHttps { dir: dir.clone() }.into());
        }
        let files = Files::new(&options.state_dir);
        // sockaddr_un holds 108 bytes including the terminating NUL.
        if files.master_socket.as_os_str().len() >= 108 {
            return Err(HaproxyError::StateDirTooLong {
                path: options.state_dir.clone(),
            });
        }
        let state_dir = options.state_dir.clone();
        let certs_dir = options.certs_dir.clone();
        let (routes, lock_path) = (files.routes.clone(), files.lock.clone());
        let (table, lock, (certificates, certificate_warnings)) =
            file_work("cannot read the state directory", move || {
                create_private_dir(&state_dir)?;
                let lock = StateLock::try_take(&lock_path)
                    .map_err(|source| HaproxyError::Io {
                        what: format!("cannot lock {}", lock_path.display()),
                        source,
                    })?
                    .ok_or_else(|| HaproxyError::Locked {
                        path: state_dir.clone(),
                    })?;
                let certificates =
                    Certificates::load(&state_dir, certs_dir.as_deref(), SystemTime::now())?;
                Ok((RouteTable::load(&routes)?, lock, certificates))
            })
            .await?;
        let mut certificate_warnings = certificate_warnings;
        if options.https_binds.is_empty() && !certificates.is_empty() {
            let names: Vec<&str> = certificates.iter().map(|c| c.name.as_str()).collect();
            certificate_warnings.push(format!(
                "the uploaded certificates {} are kept but not served: the proxy has no HTTPS address (start it with --bind-https ADDR)",
                names.join(", ")
            ));
        }
        if !options.https_binds.is_empty() && certificates.is_empty() {
            certificate_warnings.push(format!(
                "no certificate yet: the HTTPS addresses ({}) listen once one is uploaded (PUT {}/cert?certName=NAME) or put in --certs-dir",
                list_addresses(&options.https_binds),
                crate::api::API_PREFIX
            ));
        }
        let (lost, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            options,
            files,
            state: Mutex::new(State {
                table,
                worker_pid: 0,
                draining: BTreeSet::new(),
            }),
            published: std::sync::Mutex::new((RouteTable::default(), 0)),
            master: std::sync::Mutex::new(None),
            supervising: AtomicBool::new(true),
            restarts: AtomicU64::new(0),
            lost,
            state_dir_lock: std::sync::Mutex::new(Some(lock)),
            certificates: std::sync::Mutex::new(certificates),
            certificate_warnings,
        });
        let haproxy = Haproxy { inner };
        {
            let mut state = haproxy.inner.state.lock().await;
            match haproxy.inner.running_master().await {
                Some((master_pid, worker_pid)) => {
                    haproxy.adopt(&mut state, master_pid, worker_pid).await?
                }
                None => haproxy.inner.start_master(&mut state).await?,
            }
        }
        tokio::spawn(supervise(Arc::downgrade(&haproxy.inner)));
        Ok(haproxy)
    }

    /// Takes over the running master `master_pid` (worker `worker_pid`) left by an earlier
    /// driver: HAProxy keeps serving untouched when it runs the stored routes; otherwise the
    /// stored routes are loaded with a reload (which drops no request). Servers an earlier
    /// driver left draining get their drain task again.
    async fn adopt(
        &self,
        state: &mut State,
        master_pid: u32,
        worker_pid: u32,
    ) -> Result<(), HaproxyError> {
        let inner = &self.inner;
        *inner.master.lock().expect("master mutex poisoned") = Some(Master::adopted(master_pid));
        state.worker_pid = worker_pid;
        let config_current = inner.config_file_matches(&state.table).await;
        let stats = inner.show_stat(worker_pid).await?;
        if !config_current || !runtime_matches(&state.table, &stats) {
            let table = state.table.clone();
            inner.reload_with(state, &table, None).await?;
        } else {
            for server in &stats {
                let Some((entry, backend)) = state.table.entries().find_map(|e| {
                    let backend = backends(e).into_iter().find(|b| b.name == server.backend)?;
                    Some((e, backend))
                }) else {
                    continue;
                };
                let key = (entry.route.service.clone(), backend.name, server.address);
                if !backend.servers.contains(&server.address) && state.draining.insert(key.clone())
                {
                    tokio::spawn(drain_then_delete(Arc::downgrade(&self.inner), key));
                }
            }
        }
        inner.publish(state);
        Ok(())
    }

    /// The pid of the master when it was adopted from an earlier driver rather than started.
    pub fn adopted_master(&self) -> Option<u32> {
        let guard = self.inner.master.lock().expect("master mutex poisoned");
        guard.as_ref().filter(|m| m.is_adopted()).map(Master::pid)
    }

    /// Completes with what happened once HAProxy died and could not be restarted (see
    /// the supervisor); pending forever while it runs.
    pub async fn lost(&self) -> String {
        let mut lost = self.inner.lost.subscribe();
        loop {
            if let Some(message) = lost.borrow_and_update().clone() {
                return message;
            }
            if lost.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether HAProxy serves with a worker the driver knows: false from the moment its
    /// master or current worker dies until the supervisor has restarted it (a runtime
    /// command sent then would reach a dead worker), and once the driver stopped, detached or
    /// gave up.
    pub fn serving(&self) -> bool {
        let worker = self
            .inner
            .published
            .lock()
            .expect("published mutex poisoned")
            .1;
        self.inner.supervising.load(Ordering::SeqCst)
            && self.inner.master_exit_status().is_none()
            && process_alive(worker)
    }

    /// Waits until HAProxy [serves](Haproxy::serving), at most `limit`; false when it still
    /// does not, or at once when the driver no longer supervises it (it would never serve
    /// again).
    pub async fn wait_serving(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.serving() {
                return true;
            }
            if !self.inner.supervising.load(Ordering::SeqCst) || Instant::now() >= deadline {
                return false;
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// The stored route of `service` as last applied (without waiting for a change in
    /// progress).
    pub fn route(&self, service: &ServiceName) -> Option<RouteEntry> {
        let published = self
            .inner
            .published
            .lock()
            .expect("published mutex poisoned");
        published.0.get(service).cloned()
    }

    /// How many times the supervisor restarted HAProxy since this driver started.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::SeqCst)
    }

    /// The configuration HAProxy runs: the rendering of the last applied route table, which
    /// is also what a reload or a restart loads.
    pub fn config_text(&self) -> String {
        let table = self
            .inner
            .published
            .lock()
            .expect("published mutex poisoned")
            .0
            .clone();
        render(
            &table,
            &self.inner.listeners(),
            &self.inner.files.admin_socket,
            None,
        )
    }

    /// The HTTPS addresses (empty: plain HTTP only).
    pub fn https_binds(&self) -> &[SocketAddr] {
        &self.inner.options.https_binds
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.options.state_dir
    }

    /// The running worker's statistics as HAProxy prints them (`show stat`, CSV).
    pub async fn stats_csv(&self) -> Result<String, HaproxyError> {
        let worker = self
            .inner
            .published
            .lock()
            .expect("published mutex poisoned")
            .1;
        self.inner.command(worker, "show stat").await
    }

    /// Renders the stored routes, validates them and reloads HAProxy with them (Docker Flow's
    /// `reload`): a new worker takes the listening sockets and the old one finishes its
    /// requests. Servers left draining are not in the new worker; the old one finishes them.
    pub async fn reload(&self) -> Result<(), HaproxyError> {
        let mut state = self.inner.state.lock().await;
        let table = state.table.clone();
        self.inner.reload_with(&mut state, &table, None).await
    }

    /// Deletes the route of exactly `service` (render, validate, reload). Once HAProxy runs
    /// without the route, a route table that cannot be written is a warning in [`Applied`].
    pub async fn remove(&self, service: &ServiceName) -> Result<Applied, HaproxyError> {
        self.remove_named(service, None).await
    }

    /// Like [`Haproxy::remove`]; with an `acl_name` (Docker Flow's `remove?aclName=`), the
    /// route must have been given that `aclName`, and is left alone otherwise.
    pub async fn remove_named(
        &self,
        service: &ServiceName,
        acl_name: Option<&str>,
    ) -> Result<Applied, HaproxyError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let mut table = state.table.clone();
        let Some(removed) = table.remove(service) else {
            return Err(HaproxyError::UnknownService {
                service: service.clone(),
            });
        };
        if let Some(wanted) = acl_name {
            if removed.options.acl_name.as_deref() != Some(wanted) {
                return Err(InvalidInput::Conflict(format!(
                    "aclName {wanted} does not name the route of {service}, whose aclName is {}: give its own, or leave aclName out",
                    removed.options.acl_name.as_deref().unwrap_or("not set")
                ))
                .into());
            }
        }
        inner.reload_with(&mut state, &table, None).await?;
        // HAProxy runs without the route from here on: memory follows it first, the file after.
        state.table = table;
        state.draining.retain(|(s, _, _)| s != service);
        inner.publish(&state);
        let mut applied = Applied::default();
        inner.save_applied(&state.table, &mut applied).await;
        Ok(applied)
    }

    /// Every route with the live state of its servers; sessions count those old workers
    /// still hold after a reload too (see [Sessions across reloads](self#sessions-across-reloads)).
    ///
    /// It reads the last applied table and does not wait for a change in progress.
    pub async fn routes(&self) -> Result<Vec<RouteStatus>, HaproxyError> {
        let (table, worker_pid) = self
            .inner
            .published
            .lock()
            .expect("published mutex poisoned")
            .clone();
        let mut stats = self.inner.show_stat(worker_pid).await?;
        add_sessions_of_old_workers(&mut stats, self.inner.old_worker_stats().await?);
        let mut routes = Vec::new();
        for entry in table.entries() {
            let mut servers: Vec<ServerStatus> = Vec::new();
            for backend in backends(entry) {
                let mut listed: Vec<ServerStatus> = stats
                    .iter()
                    .filter(|s| s.backend == backend.name)
                    .map(|s| ServerStatus {
                        address: s.address,
                        name: s.name.clone(),
                        state: s.state,
                        sessions: s.sessions,
                        active: backend.servers.contains(&s.address),
                        requests: s.requests,
                        responses_5xx: s.responses_5xx,
                    })
                    .collect();
                for address in &backend.servers {
                    if !listed.iter().any(|s| s.address == *address) {
                        listed.push(ServerStatus {
                            address: *address,
                            name: server_name(*address),
                            state: ServerState::Down,
                            sessions: 0,
                            active: true,
                            requests: 0,
                            responses_5xx: 0,
                        });
                    }
                }
                servers.extend(listed);
            }
            routes.push(RouteStatus {
                entry: entry.clone(),
                servers,
            });
        }
        Ok(routes)
    }
}

impl Inner {
    fn release_state_dir(&self) {
        self.state_dir_lock
            .lock()
            .expect("state directory lock mutex poisoned")
            .take();
    }

    /// Reports HAProxy lost: supervision ends and [`Haproxy::lost`] completes.
    fn give_up(&self, message: String) {
        eprintln!("docker-flow proxy: {message}");
        self.supervising.store(false, Ordering::SeqCst);
        self.lost.send_replace(Some(message));
    }

    /// What the frontends listen on, with the certificates to render.
    fn listeners(&self) -> Listeners {
        let certificates = self
            .certificates
            .lock()
            .expect("certificates mutex poisoned");
        Listeners {
            http: self.options.binds.clone(),
            https: self.options.https_binds.clone(),
            certificates: certificates
                .iter()
                .map(|certificate| CertificateFile {
                    path: Certificates::path(&self.options.state_dir, certificate),
                    fingerprint: certificate.fingerprint.clone(),
                })
                .collect(),
        }
    }

    fn publish(&self, state: &State) {
        *self.published.lock().expect("published mutex poisoned") =
            (state.table.clone(), state.worker_pid);
    }

    /// Writes `table`, which HAProxy already runs, to `routes.json`; a failure becomes a
    /// warning of `applied` (see the [module docs](self#when-a-file-cannot-be-written-after-a-change)).
    async fn save_applied(&self, table: &RouteTable, applied: &mut Applied) {
        if let Err(error) = table.save(&self.files.routes).await {
            applied.warnings.push(format!(
                "HAProxy runs this change and the proxy keeps serving it, but it could not be saved ({error}); a restarted proxy would restore the routes as they were before it, until a later change saves the table again"
            ));
        }
    }
}

/// Runs blocking file work on the blocking pool ([`off_runtime`]); `what` names it in the
/// error should it not run at all.
async fn file_work<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, HaproxyError> + Send + 'static,
) -> Result<T, HaproxyError> {
    off_runtime(work).await.map_err(|source| HaproxyError::Io {
        what: what.to_string(),
        source,
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::PathType;

    #[test]
    fn the_rendered_configuration_routes_specific_paths_first() {
        let mut table = RouteTable::default();
        for (name, path, domain) in [
            ("app", "/a", None),
            ("app2", "/a/long", None),
            ("web", "/", Some("example.com")),
        ] {
            table.insert(RouteEntry::new(
                Route {
                    service: ServiceName::new(name).unwrap(),
                    color: None,
                    paths: vec![path.to_string()],
                    domain: domain.map(str::to_string),
                    path_type: PathType::Prefix,
                },
                vec!["127.0.0.1:9000".parse().unwrap()],
                false,
            ));
        }
        let text = render(
            &table,
            &Listeners::http(vec!["127.0.0.1:8081".parse().unwrap()]),
            Path::new("/s/admin.sock"),
            None,
        );
        let web = text.find("use_backend be_web").unwrap();
        let app2 = text.find("use_backend be_app2").unwrap();
        let app = text.find("use_backend be_app ").unwrap();
        assert!(web < app2 && app2 < app, "{text}");
        assert!(text.contains("acl host_web hdr(host),field(1,:) -i -- example.com"));
        assert!(
            text.contains("server s4_127_0_0_1_9000 127.0.0.1:9000 check inter 1s fastinter 20ms downinter 20ms rise 1")
        );
    }
}
