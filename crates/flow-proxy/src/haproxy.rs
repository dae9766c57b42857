//! The HAProxy driver: owns one HAProxy process in master-worker mode and keeps its
//! configuration, its runtime state and the persisted route table in step.
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
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use flow_core::{Route, ServiceName};
use rustix::process::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::Command;
use tokio::sync::{watch, Mutex};
use tokio::time::{sleep, timeout, Instant};

use crate::process::{process_alive, Master, StateLock};
use crate::render::{backends, Backend, CHECK};
pub use crate::render::{render, CertificateFile, Listeners};
use crate::table::{
    create_private_dir, off_runtime, open_private_file, write_atomically, Mode, RouteEntry,
    RouteTable, StateDirError, StateError,
};
use crate::tls::{self, CertError, Certificate, Certificates, Source};
use crate::validate::{check_entry, list_addresses, server_name, InvalidInput};

/// How often `show stat` is polled while waiting for servers or for a drain.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long one runtime command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long HAProxy may take to start a worker (first start or reload).
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the supervisor looks at the master: a dead one is noticed within this time.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(20);

/// Restarts that fail in a row before the driver gives up and reports HAProxy as lost.
const MAX_FAILED_RESTARTS: u32 = 3;

/// Restarts within [`RESTART_WINDOW`] beyond which HAProxy counts as crash-looping (lost).
const MAX_RESTARTS_IN_WINDOW: usize = 10;

/// The window of [`MAX_RESTARTS_IN_WINDOW`].
const RESTART_WINDOW: Duration = Duration::from_secs(60);

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

    /// The certificates served on the HTTPS addresses, by name (the first is the default);
    /// none without HTTPS addresses (stored uploads are then kept, not served).
    pub fn certificates(&self) -> Vec<Certificate> {
        if self.inner.options.https_binds.is_empty() {
            return Vec::new();
        }
        self.inner
            .certificates
            .lock()
            .expect("certificates mutex poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// What the start found about the certificates: one sentence for each stored one that
    /// expired since it was taken (it is still served).
    pub fn certificate_warnings(&self) -> &[String] {
        &self.inner.certificate_warnings
    }

    /// Checks the PEM file `pem` ([`tls::check`]), stores it as the uploaded certificate
    /// `name` (replacing one of that name) and reloads HAProxy with it, which drops no
    /// request. A refused certificate is neither stored nor loaded; when HAProxy refuses the
    /// configuration, the previous file is put back and the previous certificates keep
    /// serving.
    pub async fn add_certificate(
        &self,
        name: &str,
        pem: Vec<u8>,
    ) -> Result<Certificate, HaproxyError> {
        let inner = &self.inner;
        let certificate = tls::check(name, &pem, Source::Upload, SystemTime::now())?;
        if inner.options.https_binds.is_empty() {
            return Err(CertError::NoHttps {
                name: name.to_string(),
            }
            .into());
        }
        let mut state = inner.state.lock().await;
        let current = inner
            .certificates
            .lock()
            .expect("certificates mutex poisoned")
            .clone();
        let previous = match current.get(name) {
            Some(existing) if existing.source == Source::CertsDir => {
                let certs_dir = inner.options.certs_dir.clone().unwrap_or_default();
                return Err(CertError::FromCertsDir {
                    name: name.to_string(),
                    path: certs_dir.join(name),
                }
                .into());
            }
            Some(existing) => Some(existing.pem().to_vec()),
            None => None,
        };
        let path = Certificates::path(&inner.options.state_dir, &certificate);
        write_atomically(&path, pem)
            .await
            .map_err(|source| CertError::Io {
                what: "cannot write",
                path: path.clone(),
                source,
            })?;
        let mut candidate = current.clone();
        candidate.insert(certificate.clone());
        *inner
            .certificates
            .lock()
            .expect("certificates mutex poisoned") = candidate;
        let table = state.table.clone();
        if let Err(error) = inner.reload_with(&mut state, &table, None).await {
            *inner
                .certificates
                .lock()
                .expect("certificates mutex poisoned") = current;
            let restored = match previous {
                Some(previous) => write_atomically(&path, previous).await,
                None => {
                    let removed = path.clone();
                    off_runtime(move || std::fs::remove_file(removed))
                        .await
                        .and_then(|removed| removed)
                }
            };
            if let Err(restore) = restored {
                eprintln!(
                    "docker-flow proxy: warning: the refused certificate {} could not be taken back ({restore}); a restart would load it again",
                    path.display()
                );
            }
            let _ = inner.install_config(&state.table, None).await;
            return Err(error);
        }
        Ok(certificate)
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

    /// Routes `route.service` to exactly `servers`, returning once they are all UP (see the
    /// [module docs](self) for how). Once HAProxy runs the change it is not reported as a
    /// failure: files that could not be written then are listed in [`Applied::warnings`].
    pub async fn reconfigure(
        &self,
        route: Route,
        servers: Vec<SocketAddr>,
        skip_check: bool,
    ) -> Result<Applied, HaproxyError> {
        self.reconfigure_entry(RouteEntry::new(route, servers, skip_check))
            .await
    }

    /// Like [`Haproxy::reconfigure`], for a route with any destinations and options. What
    /// depends on the other routes is checked here, under the lock: a `srcPort` of a TCP
    /// destination must be free, one of HTTP must be an HTTP bind's port, and only one
    /// service can be the default backend.
    pub async fn reconfigure_entry(&self, wanted: RouteEntry) -> Result<Applied, HaproxyError> {
        self.apply_entry(wanted, false).await
    }

    /// Like [`Haproxy::reconfigure_entry`] for what a release states, kept on top of the
    /// service's current route ([`RouteEntry::keeping_settings_of`]); the same as
    /// [`Haproxy::reconfigure_entry`] when the service has no route yet. The current route is
    /// read under the lock, so a change in between is never lost.
    pub async fn reconfigure_keeping(&self, stated: RouteEntry) -> Result<Applied, HaproxyError> {
        self.apply_entry(stated, true).await
    }

    async fn apply_entry(&self, wanted: RouteEntry, keep: bool) -> Result<Applied, HaproxyError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let wanted = match state.table.get(&wanted.route.service) {
            Some(current) if keep => wanted.keeping_settings_of(current),
            _ => wanted,
        };
        check_entry(&wanted)?;
        if wanted.servers.is_empty() {
            return Err(InvalidInput::NoServers.into());
        }
        check_against_others(
            &wanted,
            &state.table,
            &inner.options.binds,
            &inner.options.https_binds,
        )?;
        // Under the lock: the check file is shared.
        inner.check_patterns(&wanted).await?;
        let service = wanted.route.service.clone();
        let skip_check = wanted.skip_check;
        let mut table = state.table.clone();
        table.insert(wanted.clone());
        // Set when only servers moved: the configuration file then still lists the old ones.
        let mut rewrite_config = false;
        match state.table.get(&service).cloned() {
            None => {
                // First the backend alone, so that servers that never come UP are never
                // routed to (a new route can overlap the paths of others), then the route.
                // The final configuration is checked before anything is loaded.
                inner.check_config(&table, None).await?;
                inner
                    .reload_with(&mut state, &table, Some(&service))
                    .await?;
                if let Err(error) = inner.wait_ready(&state, &wanted).await {
                    let previous = state.table.clone();
                    inner.reload_with(&mut state, &previous, None).await?;
                    return Err(error);
                }
                inner.reload_with(&mut state, &table, None).await?;
            }
            Some(current) => {
                let same_route = same_routing(&current, &wanted);
                if same_route {
                    self.move_servers(&mut state, &wanted).await?;
                    // The file lists the servers; with the same ones (a colour-only or repeated
                    // reconfigure) it is already what HAProxy runs.
                    rewrite_config = current.servers != wanted.servers;
                } else {
                    // The backend exists: move its servers without a reload first (which keeps
                    // the old ones if the new ones fail), then load the new routing.
                    if current.skip_check == skip_check {
                        // Servers are only moved once HAProxy accepts the new routing.
                        inner.check_config(&table, None).await?;
                        self.move_servers(&mut state, &wanted).await?;
                    }
                    inner.reload_with(&mut state, &table, None).await?;
                    // Backends of new destinations got their servers from the reload, like
                    // every backend when the check mode changed: they are waited for, and a
                    // failure loads the previous routing again.
                    let serving = backends(&current);
                    let added_backend = backends(&wanted)
                        .iter()
                        .any(|b| !serving.iter().any(|s| s.name == b.name));
                    if current.skip_check != skip_check || added_backend {
                        if let Err(error) = inner.wait_ready(&state, &wanted).await {
                            let previous = state.table.clone();
                            inner.reload_with(&mut state, &previous, None).await?;
                            return Err(error);
                        }
                    }
                }
            }
        }
        // HAProxy runs the change from here on: memory follows it first, the files after.
        state.table = table;
        inner.publish(&state);
        let mut applied = Applied::default();
        if rewrite_config {
            if let Err(error) = inner.install_config(&state.table, None).await {
                applied.warnings.push(format!(
                    "HAProxy runs the new servers of {service}, but {} could not be rewritten to list them ({error}); this changes nothing while the proxy runs, since every reload and every start render the configuration from the route table",
                    inner.files.config.display()
                ));
            }
        }
        inner.save_applied(&state.table, &mut applied).await;
        Ok(applied)
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

    /// Stops HAProxy at once without waiting (SIGKILL of the master; its workers exit with
    /// it), unless the driver was detached. Used where no runtime is at hand, e.g. in `Drop`.
    pub fn kill_now(&self) {
        if !self.inner.supervising.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(master) = self
            .inner
            .master
            .lock()
            .expect("master mutex poisoned")
            .as_ref()
        {
            master.signal(Signal::KILL);
        }
        self.inner.release_state_dir();
    }

    /// Stops HAProxy now: the master closes every connection (SIGTERM) and exits with its
    /// workers.
    pub async fn shutdown(&self) {
        self.stop_master(Signal::TERM, Duration::from_secs(2)).await;
    }

    /// Stops HAProxy gracefully: its listeners close at once, open connections are finished
    /// (SIGUSR1, HAProxy's soft stop), and whatever is still open after `drain_timeout` is
    /// closed.
    pub async fn stop_gracefully(&self, drain_timeout: Duration) {
        self.stop_master(Signal::USR1, drain_timeout).await;
    }

    /// Lets go of HAProxy, which keeps serving: the supervisor stops, nothing is signalled,
    /// and once a change in progress is done the state directory is free for a later driver,
    /// which adopts HAProxy. Changes sent afterwards fail.
    pub async fn detach(&self) {
        self.inner.supervising.store(false, Ordering::SeqCst);
        let _state = self.inner.state.lock().await;
        self.inner
            .master
            .lock()
            .expect("master mutex poisoned")
            .take();
        self.inner.release_state_dir();
    }

    async fn stop_master(&self, first: Signal, grace: Duration) {
        self.inner.supervising.store(false, Ordering::SeqCst);
        // Taken under the state lock, so no restart or reload is halfway through.
        let _state = self.inner.state.lock().await;
        let master = self
            .inner
            .master
            .lock()
            .expect("master mutex poisoned")
            .take();
        if let Some(mut master) = master {
            master.stop(first, grace).await;
        }
        self.inner.release_state_dir();
    }

    /// Adds the wanted servers missing from each backend the worker already has, waits until
    /// all wanted servers pass their check, puts them in rotation, then drains the others. A
    /// backend the worker does not have yet (a new destination) gets its servers from the
    /// reload that follows.
    async fn move_servers(
        &self,
        state: &mut State,
        wanted: &RouteEntry,
    ) -> Result<(), HaproxyError> {
        let inner = &self.inner;
        let service = &wanted.route.service;
        let pid = state.worker_pid;
        let stats = inner.show_stat(pid).await?;
        let serving: Vec<Backend> = state.table.get(service).map(backends).unwrap_or_default();
        // Only backends the worker runs: servers cannot be added to one it does not know.
        let moving: Vec<Backend> = backends(wanted)
            .into_iter()
            .filter(|b| serving.iter().any(|s| s.name == b.name))
            .collect();
        let mut added = Vec::new();
        for backend in &moving {
            let present: Vec<&RuntimeServer> =
                stats.iter().filter(|s| s.backend == backend.name).collect();
            let served = serving
                .iter()
                .find(|s| s.name == backend.name)
                .map(|s| s.servers.as_slice())
                .unwrap_or_default();
            for address in &backend.servers {
                let name = server_name(*address);
                let target = format!("{}/{name}", backend.name);
                let result = match present.iter().find(|s| s.name == name) {
                    // One of the route's servers already: its admin state is left as it is
                    // (a server DOWN by its check is waited for like a new one, and stays
                    // ready).
                    Some(_) if served.contains(address) => Ok(()),
                    // Left over from an earlier switch (draining or in maintenance): checked
                    // again while it waits in drain like a new one. It stays in the draining
                    // set until the switch succeeds, so a failed switch lets its drain task
                    // finish.
                    Some(_) => inner.set_state(pid, &target, "drain").await,
                    None => {
                        added.push(target.clone());
                        inner
                            .add_server(pid, &target, *address, wanted.skip_check)
                            .await
                    }
                };
                if let Err(error) = result {
                    inner.delete_servers(pid, &added).await;
                    return Err(error);
                }
            }
        }
        if let Err(error) = inner.wait_ready_in(state, wanted, &moving).await {
            inner.delete_servers(pid, &added).await;
            return Err(error);
        }
        for backend in &moving {
            for address in &backend.servers {
                state
                    .draining
                    .remove(&(service.clone(), backend.name.clone(), *address));
                let target = format!("{}/{}", backend.name, server_name(*address));
                inner.set_state(pid, &target, "ready").await?;
            }
            for old in stats
                .iter()
                .filter(|s| s.backend == backend.name && !backend.servers.contains(&s.address))
            {
                let target = format!("{}/{}", backend.name, old.name);
                inner.set_state(pid, &target, "drain").await?;
                let key = (service.clone(), backend.name.clone(), old.address);
                if state.draining.insert(key.clone()) {
                    tokio::spawn(drain_then_delete(Arc::downgrade(&self.inner), key));
                }
            }
        }
        Ok(())
    }
}

/// What `wanted` asks for that depends on the other routes of `table`: a TCP destination's
/// `srcPort` must be taken by no other service and by no HTTP or HTTPS bind; an HTTP
/// destination's must be the port of an HTTP bind, and its `srcHttpsPort` one of an HTTPS
/// bind; only one service is the default backend.
fn check_against_others(
    wanted: &RouteEntry,
    table: &RouteTable,
    binds: &[SocketAddr],
    https_binds: &[SocketAddr],
) -> Result<(), InvalidInput> {
    let service = &wanted.route.service;
    let others: Vec<&RouteEntry> = table
        .entries()
        .filter(|e| e.route.service != *service)
        .collect();
    let http_ports: Vec<u16> = binds.iter().map(SocketAddr::port).collect();
    let mut tcp_ports = BTreeSet::new();
    for destination in &wanted.destinations {
        if let Some(port) = destination.src_https_port {
            if !https_binds.iter().any(|bind| bind.port() == port) {
                return Err(InvalidInput::Conflict(format!(
                    "srcHttpsPort {port} is not a port the proxy serves HTTPS on ({}): give one of them",
                    if https_binds.is_empty() {
                        "none: start it with --bind-https ADDR".to_string()
                    } else {
                        list_addresses(https_binds)
                    }
                )));
            }
        }
        let Some(port) = destination.src_port else {
            continue;
        };
        match destination.mode {
            Mode::Http if !http_ports.contains(&port) => {
                return Err(InvalidInput::Conflict(format!(
                    "srcPort {port} of an HTTP destination is not a port the proxy serves HTTP on ({}): give one of them, or reqMode=tcp for a TCP frontend of its own",
                    list_addresses(binds)
                )));
            }
            Mode::Http => {}
            Mode::Tcp => {
                if http_ports.contains(&port) {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is the proxy's HTTP port: a reqMode=tcp destination needs a port of its own"
                    )));
                }
                if https_binds.iter().any(|bind| bind.port() == port) {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is the proxy's HTTPS port: a reqMode=tcp destination needs a port of its own"
                    )));
                }
                if !tcp_ports.insert(port) {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is given to two reqMode=tcp destinations of {service}: each needs a port of its own"
                    )));
                }
                let taken_by = others.iter().find(|e| {
                    e.destinations
                        .iter()
                        .any(|d| d.mode == Mode::Tcp && d.src_port == Some(port))
                });
                if let Some(other) = taken_by {
                    return Err(InvalidInput::Conflict(format!(
                        "srcPort {port} is already taken by {}: give another port, or remove that service first",
                        other.route.service
                    )));
                }
            }
        }
    }
    if wanted.options.default_backend {
        if let Some(other) = others.iter().find(|e| e.options.default_backend) {
            return Err(InvalidInput::Conflict(format!(
                "isDefaultBackend: {} is already the default backend; only one service can be (reconfigure it without isDefaultBackend first)",
                other.route.service
            )));
        }
    }
    Ok(())
}

/// Restarts HAProxy from the stored routes whenever its master is gone — killed, crashed, or
/// exited because its worker died (HAProxy's master stops everything when a worker dies,
/// and 2.6 ignores `no-exit-on-failure`). The master is looked at every
/// [`SUPERVISE_INTERVAL`]; a restart renders the stored routes (blue-green ones too) before
/// the new frontends open. When restarts fail [`MAX_FAILED_RESTARTS`] times in a row, or
/// HAProxy dies more than [`MAX_RESTARTS_IN_WINDOW`] times in [`RESTART_WINDOW`], HAProxy is
/// reported lost ([`Haproxy::lost`]) and `proxy serve` exits non-zero, so that the service
/// manager (systemd's `Restart=`) sees it.
async fn supervise(inner: Weak<Inner>) {
    let mut failed_in_a_row = 0;
    let mut recent_restarts: std::collections::VecDeque<Instant> = Default::default();
    loop {
        sleep(SUPERVISE_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.supervising.load(Ordering::SeqCst) {
            return;
        }
        if inner.master_exit_status().is_none() {
            continue;
        }
        let mut state = inner.state.lock().await;
        // Stopped meanwhile (stop_master takes the lock first), or already restarted.
        if !inner.supervising.load(Ordering::SeqCst) {
            return;
        }
        let Some(status) = inner.master_exit_status() else {
            continue;
        };
        let now = Instant::now();
        recent_restarts.retain(|at| now.duration_since(*at) < RESTART_WINDOW);
        recent_restarts.push_back(now);
        if recent_restarts.len() > MAX_RESTARTS_IN_WINDOW {
            let message = format!(
                "HAProxy died {} times within {RESTART_WINDOW:?} (last: {status}); {}",
                recent_restarts.len(),
                inner.log_tail().await
            );
            inner.give_up(message);
            return;
        }
        eprintln!("docker-flow proxy: HAProxy's master is gone ({status}); restarting it with the stored routes");
        match inner.start_master(&mut state).await {
            Ok(()) => {
                failed_in_a_row = 0;
                inner.restarts.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "docker-flow proxy: HAProxy restarted in {} ms (worker {})",
                    now.elapsed().as_millis(),
                    state.worker_pid
                );
            }
            Err(error) => {
                failed_in_a_row += 1;
                eprintln!("docker-flow proxy: HAProxy did not restart: {error}");
                if failed_in_a_row >= MAX_FAILED_RESTARTS {
                    inner.give_up(format!(
                        "{MAX_FAILED_RESTARTS} restarts in a row failed, the last with: {error}"
                    ));
                    return;
                }
            }
        }
    }
}

/// Whether the running worker serves exactly the stored routes: each route's backend has
/// its stored servers in rotation and no other, and no backend is left of a removed route.
fn runtime_matches(table: &RouteTable, stats: &[RuntimeServer]) -> bool {
    let all: Vec<Backend> = table.entries().flat_map(backends).collect();
    if stats
        .iter()
        .any(|s| !all.iter().any(|backend| backend.name == s.backend))
    {
        return false;
    }
    all.iter().all(|backend| {
        let in_rotation: BTreeSet<SocketAddr> = stats
            .iter()
            .filter(|s| {
                s.backend == backend.name
                    && !matches!(s.state, ServerState::Drain | ServerState::Maint)
            })
            .map(|s| s.address)
            .collect();
        in_rotation == backend.servers.iter().copied().collect()
    })
}

/// Waits until the draining server has no session, then puts it in maintenance and deletes
/// it; stops early when the server is wanted again, was removed by a reload, or the driver
/// is gone.
async fn drain_then_delete(inner: Weak<Inner>, key: Draining) {
    let (_, backend, address) = key.clone();
    let target = format!("{backend}/{}", server_name(address));
    loop {
        sleep(POLL_INTERVAL * 2).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut state = inner.state.lock().await;
        if !state.draining.contains(&key) {
            return;
        }
        let pid = state.worker_pid;
        let Ok(stats) = inner.show_stat(pid).await else {
            continue;
        };
        let Some(server) = stats
            .iter()
            .find(|s| s.backend == backend && s.address == address)
        else {
            // A reload dropped it (the configuration never lists draining servers).
            state.draining.remove(&key);
            return;
        };
        if server.sessions > 0 {
            continue;
        }
        if inner.set_state(pid, &target, "maint").await.is_err() {
            continue;
        }
        let reply = inner
            .command(pid, &format!("del server {target}"))
            .await
            .unwrap_or_default();
        if reply.contains("Server deleted.") || reply.contains("No such server") {
            state.draining.remove(&key);
            return;
        }
        // Still has connections attached: retried on the next round.
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

    /// Installs the configuration of the stored routes, starts a master with it and waits
    /// for its worker: every stored route is in the configuration before the frontends open.
    async fn start_master(&self, state: &mut State) -> Result<(), HaproxyError> {
        if !self.config_file_matches(&state.table).await {
            self.install_config(&state.table, None).await?;
        }
        let master = self.spawn_master().await?;
        *self.master.lock().expect("master mutex poisoned") = Some(master);
        state.worker_pid = self.wait_for_new_worker(None, 0).await?;
        // A new master knows only the configured servers: nothing is left draining.
        state.draining.clear();
        self.publish(state);
        Ok(())
    }

    /// The master listening on the master socket and its current worker, when one runs
    /// (left by an earlier driver on this state directory).
    async fn running_master(&self) -> Option<(u32, u32)> {
        let deadline = Instant::now() + WORKER_START_TIMEOUT;
        loop {
            let proc = self.show_proc().await.ok()?;
            let master = proc.master?;
            if let Some(worker) = proc.workers.first() {
                return Some((master, *worker));
            }
            // A master between two workers (a reload in progress) gets a new one shortly.
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether `haproxy.cfg` is already the rendering of `table` (then HAProxy loaded it, or
    /// will on its next start, without another `haproxy -c`).
    async fn config_file_matches(&self, table: &RouteTable) -> bool {
        let text = render(table, &self.listeners(), &self.files.admin_socket, None);
        let path = self.files.config.clone();
        off_runtime(move || std::fs::read_to_string(path))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|current| current == text)
    }

    async fn spawn_master(&self) -> Result<Master, HaproxyError> {
        let log_path = self.files.log.clone();
        let (log, log_err) = file_work("cannot open the log file", move || {
            let log = open_private_file(&log_path).map_err(|source| HaproxyError::Io {
                what: format!("cannot open {}", log_path.display()),
                source,
            })?;
            let log_err = log.try_clone().map_err(|source| HaproxyError::Io {
                what: "cannot share the log file".into(),
                source,
            })?;
            Ok((log, log_err))
        })
        .await?;
        // The master socket drives HAProxy without a token: owner-only, like the directory.
        let mut master_socket = self.files.master_socket.clone().into_os_string();
        master_socket.push(",mode,600");
        let child = Command::new(&self.options.binary)
            .arg("-W")
            .arg("-S")
            .arg(master_socket)
            .arg("-f")
            .arg(&self.files.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C meant for `proxy serve` does not stop HAProxy,
            // and dropping the handle does not kill it (see crate::process).
            .process_group(0)
            .spawn()
            .map_err(|source| HaproxyError::Io {
                what: format!("cannot run {}", self.options.binary.display()),
                source,
            })?;
        Master::spawned(child).map_err(|source| HaproxyError::Io {
            what: format!("cannot run {}", self.options.binary.display()),
            source,
        })
    }

    /// Renders `table`, validates it with `haproxy -c` and, only if valid, makes it the
    /// configuration file. Nothing is loaded.
    async fn install_config(
        &self,
        table: &RouteTable,
        unrouted: Option<&ServiceName>,
    ) -> Result<(), HaproxyError> {
        self.check_config(table, unrouted).await?;
        let (candidate, config) = (self.files.candidate.clone(), self.files.config.clone());
        file_work("cannot install the configuration", move || {
            std::fs::rename(&candidate, &config).map_err(|source| HaproxyError::Io {
                what: format!("cannot install {}", config.display()),
                source,
            })
        })
        .await
    }

    /// Renders `table` into the candidate file and validates it with `haproxy -c`.
    async fn check_config(
        &self,
        table: &RouteTable,
        unrouted: Option<&ServiceName>,
    ) -> Result<(), HaproxyError> {
        let text = render(table, &self.listeners(), &self.files.admin_socket, unrouted);
        write_atomically(&self.files.candidate, text.into_bytes())
            .await
            .map_err(|source| HaproxyError::Io {
                what: format!("cannot write {}", self.files.candidate.display()),
                source,
            })?;
        self.validate_file(&self.files.candidate)
            .await?
            .map_err(|message| HaproxyError::InvalidConfig { message })
    }

    /// Runs `haproxy -c` on `path`: `Ok(Err(HAProxy's output))` when HAProxy rejects it.
    async fn validate_file(&self, path: &Path) -> Result<Result<(), String>, HaproxyError> {
        let output = Command::new(&self.options.binary)
            .arg("-c")
            .arg("-f")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| HaproxyError::Io {
                what: format!("cannot run {} -c", self.options.binary.display()),
                source,
            })?;
        if output.status.success() {
            return Ok(Ok(()));
        }
        let mut message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            if !message.is_empty() {
                message.push('\n');
            }
            message.push_str(stderr.trim());
        }
        Ok(Err(message))
    }

    /// Checks that HAProxy compiles each regular expression of `entry` — `path_reg` paths and
    /// `reqPathSearchReplace` searches — alone in a throw-away configuration: a pattern its
    /// regex engine (PCRE) rejects is bad input, answered 400 with PCRE's reason, not a
    /// configuration HAProxy refuses (500). The allow-list of [`crate::validate`] has already
    /// made sure no pattern can inject configuration.
    async fn check_patterns(&self, entry: &RouteEntry) -> Result<(), HaproxyError> {
        for destination in &entry.destinations {
            if destination.path_type == flow_core::PathType::Regex {
                for path in destination.paths.iter().chain(&destination.excluded_paths) {
                    let rule = format!("http-request deny if {{ path_reg -- {path} }}");
                    if let Some(reason) = self.check_pattern(&rule).await? {
                        return Err(InvalidInput::Regex {
                            path: path.clone(),
                            reason,
                        }
                        .into());
                    }
                }
            }
            for rewrite in &destination.path_rewrites {
                let rule = format!(
                    "http-request set-path %[path,regsub({},{})]",
                    rewrite.search, rewrite.replace
                );
                if let Some(reason) = self.check_pattern(&rule).await? {
                    return Err(InvalidInput::Parameter {
                        parameter: "reqPathSearchReplace".into(),
                        reason: format!(
                            "{:?} is not a regular expression HAProxy compiles ({reason})",
                            rewrite.search
                        ),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Validates `rule` alone in a frontend: `Some(HAProxy's reason)` when it is rejected.
    async fn check_pattern(&self, rule: &str) -> Result<Option<String>, HaproxyError> {
        let text = format!(
            "defaults\n    mode http\nfrontend pattern_check\n    bind 127.0.0.1:1\n    {rule}\n"
        );
        write_atomically(&self.files.regex_check, text.into_bytes())
            .await
            .map_err(|source| HaproxyError::Io {
                what: format!("cannot write {}", self.files.regex_check.display()),
                source,
            })?;
        let Err(message) = self.validate_file(&self.files.regex_check).await? else {
            return Ok(None);
        };
        // HAProxy's line reads `… : regex '…' is invalid (error=…)` or similar.
        let reason = message
            .lines()
            .find(|line| line.contains("regex"))
            .or_else(|| message.lines().find(|line| line.contains("ALERT")))
            .and_then(|line| line.rsplit(" : ").next())
            .unwrap_or(&message)
            .trim()
            .to_string();
        Ok(Some(reason))
    }

    /// Installs the configuration of `table` (without the `use_backend` rule of `unrouted`)
    /// and reloads HAProxy with it.
    async fn reload_with(
        &self,
        state: &mut State,
        table: &RouteTable,
        unrouted: Option<&ServiceName>,
    ) -> Result<(), HaproxyError> {
        self.install_config(table, unrouted).await?;
        let before = self.show_proc().await?;
        // The master re-executes itself on `reload` and closes the connection without a reply
        // in 2.6; the outcome is read from `show proc`.
        let _ = self.master_command("reload").await;
        match self
            .wait_for_new_worker(Some(state.worker_pid), before.failed)
            .await
        {
            Ok(pid) => {
                state.worker_pid = pid;
                self.publish(state);
                Ok(())
            }
            Err(error) => {
                // Put the configuration of what is still running back in place, so the next
                // reload starts from it.
                let _ = self.install_config(&state.table, None).await;
                Err(error)
            }
        }
    }

    /// Polls `show proc` until a worker other than `old` runs; fails when the master counts
    /// a failed reload beyond `failed_before` or exits.
    async fn wait_for_new_worker(
        &self,
        old: Option<u32>,
        failed_before: u32,
    ) -> Result<u32, HaproxyError> {
        let deadline = Instant::now() + WORKER_START_TIMEOUT;
        let starting = old.is_none();
        let fail = |message: String| {
            if starting {
                HaproxyError::Start { message }
            } else {
                HaproxyError::Reload { message }
            }
        };
        loop {
            if let Some(status) = self.master_exit_status() {
                return Err(fail(format!(
                    "the HAProxy master exited ({status}); {}",
                    self.log_tail().await
                )));
            }
            if let Ok(proc) = self.show_proc().await {
                if proc.failed > failed_before {
                    return Err(fail(format!(
                        "the new worker failed to load; the previous one keeps serving; {}",
                        self.log_tail().await
                    )));
                }
                if let Some(pid) = proc.workers.first().copied().filter(|p| Some(*p) != old) {
                    return Ok(pid);
                }
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "no new worker after {WORKER_START_TIMEOUT:?}; {}",
                    self.log_tail().await
                )));
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// How the master ended, once it is gone (also when the driver holds none).
    fn master_exit_status(&self) -> Option<String> {
        let mut guard = self.master.lock().expect("master mutex poisoned");
        match guard.as_mut() {
            Some(master) => master.exit_status(),
            None => Some("it was stopped".into()),
        }
    }

    async fn log_tail(&self) -> String {
        let path = self.files.log.clone();
        let log = off_runtime(move || std::fs::read_to_string(path))
            .await
            .and_then(|read| read)
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(8).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("{}: {}", self.files.log.display(), tail.join(" | "))
    }

    /// The server lines of every old worker. One that exits between `show proc` and its
    /// `show stat` holds no session any more, so it is left out rather than failing.
    async fn old_worker_stats(&self) -> Result<Vec<RuntimeServer>, HaproxyError> {
        let mut stats = Vec::new();
        for pid in self.show_proc().await?.old_workers {
            if let Ok(servers) = self.show_stat(pid).await {
                stats.extend(servers);
            }
        }
        Ok(stats)
    }

    async fn show_proc(&self) -> Result<ProcInfo, HaproxyError> {
        let reply = self.master_command("show proc").await?;
        Ok(parse_show_proc(&reply))
    }

    /// Waits until every server of every backend of `wanted` passed its health check
    /// (checked servers) or is known to the worker (unchecked ones); fails with `NotUp`
    /// naming the others.
    async fn wait_ready(&self, state: &State, wanted: &RouteEntry) -> Result<(), HaproxyError> {
        self.wait_ready_in(state, wanted, &backends(wanted)).await
    }

    /// [`Inner::wait_ready`] for some of the backends of `wanted`.
    async fn wait_ready_in(
        &self,
        state: &State,
        wanted: &RouteEntry,
        backends: &[Backend],
    ) -> Result<(), HaproxyError> {
        let waited = self.options.up_timeout;
        let deadline = Instant::now() + waited;
        loop {
            let stats = self.show_stat(state.worker_pid).await?;
            let mut not_up: Vec<SocketAddr> = Vec::new();
            for backend in backends {
                for address in &backend.servers {
                    let up = stats.iter().any(|s| {
                        s.backend == backend.name
                            && s.address == *address
                            && s.passed_check(wanted.skip_check)
                    });
                    if !up && !not_up.contains(address) {
                        not_up.push(*address);
                    }
                }
            }
            if not_up.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HaproxyError::NotUp {
                    service: wanted.route.service.clone(),
                    servers: not_up,
                    waited,
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    async fn add_server(
        &self,
        pid: u32,
        target: &str,
        address: SocketAddr,
        skip_check: bool,
    ) -> Result<(), HaproxyError> {
        let command = if skip_check {
            format!("add server {target} {address}")
        } else {
            format!("add server {target} {address} {CHECK}")
        };
        let reply = self.command(pid, &command).await?;
        if !reply.contains("New server registered.") {
            return Err(HaproxyError::Runtime { command, reply });
        }
        if !skip_check {
            self.expect_silent(pid, &format!("enable health {target}"))
                .await?;
        }
        self.set_state(pid, target, "drain").await
    }

    async fn set_state(&self, pid: u32, target: &str, state: &str) -> Result<(), HaproxyError> {
        self.expect_silent(pid, &format!("set server {target} state {state}"))
            .await
    }

    /// Sends a command whose success is an empty reply.
    async fn expect_silent(&self, pid: u32, command: &str) -> Result<(), HaproxyError> {
        let reply = self.command(pid, command).await?;
        if reply.trim().is_empty() {
            Ok(())
        } else {
            Err(HaproxyError::Runtime {
                command: command.to_string(),
                reply: reply.trim().to_string(),
            })
        }
    }

    /// Best effort: takes servers this call added out again (maint, then delete).
    async fn delete_servers(&self, pid: u32, targets: &[String]) {
        for target in targets {
            let _ = self.set_state(pid, target, "maint").await;
            let _ = self.command(pid, &format!("del server {target}")).await;
        }
    }

    async fn show_stat(&self, pid: u32) -> Result<Vec<RuntimeServer>, HaproxyError> {
        let reply = self.command(pid, "show stat").await?;
        parse_show_stat(&reply).ok_or_else(|| HaproxyError::Runtime {
            command: "show stat".into(),
            reply: reply.lines().next().unwrap_or_default().to_string(),
        })
    }

    /// Sends a runtime command to the worker `pid` through the master socket.
    async fn command(&self, pid: u32, command: &str) -> Result<String, HaproxyError> {
        self.master_command(&format!("@!{pid} {command}")).await
    }

    async fn master_command(&self, command: &str) -> Result<String, HaproxyError> {
        let socket = &self.files.master_socket;
        let exchange = async {
            let mut stream = UnixStream::connect(socket).await?;
            stream.write_all(format!("{command}\n").as_bytes()).await?;
            // The master CLI answers and closes only once our side is closed.
            stream.shutdown().await?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await?;
            Ok::<String, io::Error>(reply)
        };
        match timeout(COMMAND_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(source)) => Err(HaproxyError::Io {
                what: format!("`{command}` on {}", socket.display()),
                source,
            }),
            Err(_) => Err(HaproxyError::Io {
                what: format!("`{command}` on {}", socket.display()),
                source: io::Error::new(io::ErrorKind::TimedOut, "no reply within 5 s"),
            }),
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

/// The processes `show proc` lists.
#[derive(Debug, Default, PartialEq, Eq)]
struct ProcInfo {
    /// The master's pid.
    master: Option<u32>,
    /// Current workers, newest first.
    workers: Vec<u32>,
    /// Workers left by earlier reloads, still finishing their connections.
    old_workers: Vec<u32>,
    /// The master's count of failed reloads.
    failed: u32,
}

fn parse_show_proc(reply: &str) -> ProcInfo {
    let mut info = ProcInfo::default();
    // The section a line is in: `# workers` or `# old workers`.
    let mut section = "";
    for line in reply.lines() {
        if line.starts_with('#') {
            section = line.trim();
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(pid), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        if kind == "master" {
            info.master = pid.parse().ok();
            if let Some(rest) = line.split("failed:").nth(1) {
                let digits: String = rest
                    .trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                info.failed = digits.parse().unwrap_or(0);
            }
        } else if kind == "worker" {
            let list = match section {
                "# workers" => &mut info.workers,
                "# old workers" => &mut info.old_workers,
                _ => continue,
            };
            if let Ok(pid) = pid.parse() {
                list.push(pid);
            }
        }
    }
    info
}

/// One server line of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuntimeServer {
    backend: String,
    name: String,
    address: SocketAddr,
    sessions: u64,
    state: ServerState,
    raw_status: String,
    check_status: String,
    requests: u64,
    responses_5xx: u64,
}

impl RuntimeServer {
    /// Health-checked and found reachable, or unchecked (then it counts as UP once present).
    fn passed_check(&self, skip_check: bool) -> bool {
        let running = matches!(self.state, ServerState::Up | ServerState::Drain)
            || self.raw_status == "no check";
        if skip_check {
            running
        } else {
            running && matches!(self.check_status.as_str(), "L4OK" | "L6OK" | "L7OK")
        }
    }
}

/// Parses the CSV of `show stat` into its server lines (None: not a `show stat` reply).
fn parse_show_stat(reply: &str) -> Option<Vec<RuntimeServer>> {
    let mut lines = reply.lines();
    let header = lines.next()?.strip_prefix("# ")?;
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (px, sv, scur, status, check, addr) = (
        column("pxname")?,
        column("svname")?,
        column("scur")?,
        column("status")?,
        column("check_status")?,
        column("addr")?,
    );
    // Counters only the metrics read: a reply without them still lists the servers.
    let (requests, responses_5xx) = (column("req_tot"), column("hrsp_5xx"));
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or_default();
        let counter = |i: Option<usize>| i.and_then(|i| field(i).parse().ok()).unwrap_or(0);
        let name = field(sv);
        if name.is_empty() || name == "FRONTEND" || name == "BACKEND" {
            continue;
        }
        let Ok(address) = field(addr).parse() else {
            continue;
        };
        let raw_status = field(status).to_string();
        let state = if raw_status.starts_with("MAINT") {
            ServerState::Maint
        } else if raw_status.starts_with("DRAIN") {
            ServerState::Drain
        } else if raw_status.starts_with("UP") || raw_status == "no check" {
            ServerState::Up
        } else {
            ServerState::Down
        };
        servers.push(RuntimeServer {
            backend: field(px).to_string(),
            name: name.to_string(),
            address,
            sessions: field(scur).parse().unwrap_or(0),
            state,
            raw_status,
            check_status: field(check).to_string(),
            requests: counter(requests),
            responses_5xx: counter(responses_5xx),
        });
    }
    Some(servers)
}

/// Adds the sessions `old` workers still hold to the current worker's servers (`current`);
/// a server with sessions that only an old worker knows is added, draining: it takes no new
/// connection. Request counters stay the current worker's.
fn add_sessions_of_old_workers(current: &mut Vec<RuntimeServer>, old: Vec<RuntimeServer>) {
    for server in old.into_iter().filter(|s| s.sessions > 0) {
        match current
            .iter_mut()
            .find(|s| s.backend == server.backend && s.address == server.address)
        {
            Some(known) => known.sessions += server.sessions,
            None => current.push(RuntimeServer {
                state: ServerState::Drain,
                requests: 0,
                responses_5xx: 0,
                ..server
            }),
        }
    }
}

/// Whether two entries render the same HAProxy configuration apart from their servers. The
/// colour is not part of it (one backend per destination, whatever the colour), so a
/// blue-green switch that keeps the routing moves servers through the Runtime API without a
/// reload.
fn same_routing(a: &RouteEntry, b: &RouteEntry) -> bool {
    a.route.service == b.route.service
        && a.destinations == b.destinations
        && a.options == b.options
        && a.skip_check == b.skip_check
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::PathType;

    #[test]
    fn show_proc_lists_current_workers_and_failed_reloads() {
        let reply = "#<PID>          <type>          <reloads>       <uptime>        <version>\n\
            7885            master          1 [failed: 2]   0d00h10m29s     2.6.12\n\
            # workers\n\
            4572            worker          0               0d00h00m01s     2.6.12\n\
            # old workers\n\
            4000            worker          1               0d00h00m01s     2.6.12\n\
            # programs\n";
        assert_eq!(
            parse_show_proc(reply),
            ProcInfo {
                master: Some(7885),
                workers: vec![4572],
                old_workers: vec![4000],
                failed: 2
            }
        );
    }

    #[test]
    fn show_stat_lines_become_servers_with_their_state() {
        let reply = "# pxname,svname,scur,status,check_status,addr,\n\
            http_0,FRONTEND,3,OPEN,,,\n\
            be_web,s4_127_0_0_1_1,2,UP,L4OK,127.0.0.1:1,\n\
            be_web,s4_127_0_0_1_2,1,DRAIN,L4OK,127.0.0.1:2,\n\
            be_web,s4_127_0_0_1_3,0,MAINT,,127.0.0.1:3,\n\
            be_web,s4_127_0_0_1_4,0,DOWN,L4CON,127.0.0.1:4,\n\
            be_web,s4_127_0_0_1_5,0,no check,,127.0.0.1:5,\n\
            be_web,BACKEND,3,UP,,,\n";
        let servers = parse_show_stat(reply).unwrap();
        let states: Vec<(ServerState, u64)> =
            servers.iter().map(|s| (s.state, s.sessions)).collect();
        assert_eq!(
            states,
            [
                (ServerState::Up, 2),
                (ServerState::Drain, 1),
                (ServerState::Maint, 0),
                (ServerState::Down, 0),
                (ServerState::Up, 0)
            ]
        );
        assert!(servers[0].passed_check(false));
        assert!(servers[1].passed_check(false), "checked OK while draining");
        assert!(!servers[3].passed_check(false));
        assert!(
            !servers[4].passed_check(false),
            "unchecked is not checked OK"
        );
        assert!(servers[4].passed_check(true));
        assert!(parse_show_stat("Unknown command.").is_none());
    }

    #[test]
    fn sessions_old_workers_hold_are_added_and_servers_only_they_know_drain() {
        let current = "# pxname,svname,scur,status,check_status,addr,req_tot,\n\
            be_web,s4_127_0_0_1_1,1,UP,L4OK,127.0.0.1:1,7,\n";
        let old = "# pxname,svname,scur,status,check_status,addr,req_tot,\n\
            be_web,s4_127_0_0_1_1,2,UP,L4OK,127.0.0.1:1,40,\n\
            be_web,s4_127_0_0_1_2,3,UP,L4OK,127.0.0.1:2,50,\n\
            be_web,s4_127_0_0_1_3,0,UP,L4OK,127.0.0.1:3,60,\n";
        let mut servers = parse_show_stat(current).unwrap();
        add_sessions_of_old_workers(&mut servers, parse_show_stat(old).unwrap());
        let seen: Vec<(u16, ServerState, u64, u64)> = servers
            .iter()
            .map(|s| (s.address.port(), s.state, s.sessions, s.requests))
            .collect();
        assert_eq!(
            seen,
            [(1, ServerState::Up, 3, 7), (2, ServerState::Drain, 3, 0)],
            "sessions summed, requests the current worker's, idle old-only servers left out"
        );
    }

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
