//! Supervision of HAProxy's master process: starting or adopting it, restarting it from the
//! stored routes when it is gone, and stopping or leaving it when the driver stops (see the
//! [parent module](super)).

use std::process::Stdio;
use std::sync::Weak;

use rustix::process::Signal;
use tokio::process::Command;

use super::runtime::RuntimeServer;
use crate::render::Backend;
use crate::table::open_private_file;

use super::*;

/// How often the supervisor looks at the master: a dead one is noticed within this time.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(20);

/// Restarts that fail in a row before the driver gives up and reports HAProxy as lost.
const MAX_FAILED_RESTARTS: u32 = 3;

/// Restarts within [`RESTART_WINDOW`] beyond which HAProxy counts as crash-looping (lost).
const MAX_RESTARTS_IN_WINDOW: usize = 10;

/// The window of [`MAX_RESTARTS_IN_WINDOW`].
const RESTART_WINDOW: Duration = Duration::from_secs(60);

impl Haproxy {
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

    pub(super) async fn stop_master(&self, first: Signal, grace: Duration) {
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
}

impl Inner {
    /// Installs the configuration of the stored routes, starts a master with it and waits
    /// for its worker: every stored route is in the configuration before the frontends open.
    pub(super) async fn start_master(&self, state: &mut State) -> Result<(), HaproxyError> {
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
    pub(super) async fn running_master(&self) -> Option<(u32, u32)> {
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
    pub(super) async fn config_file_matches(&self, table: &RouteTable) -> bool {
        let text = render(table, &self.listeners(), &self.files.admin_socket, None);
        let path = self.files.config.clone();
        off_runtime(move || std::fs::read_to_string(path))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|current| current == text)
    }

    pub(super) async fn spawn_master(&self) -> Result<Master, HaproxyError> {
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

    /// How the master ended, once it is gone (also when the driver holds none).
    pub(super) fn master_exit_status(&self) -> Option<String> {
        let mut guard = self.master.lock().expect("master mutex poisoned");
        match guard.as_mut() {
            Some(master) => master.exit_status(),
            None => Some("it was stopped".into()),
        }
    }

    pub(super) async fn log_tail(&self) -> String {
        let path = self.files.log.clone();
        let log = off_runtime(move || std::fs::read_to_string(path))
            .await
            .and_then(|read| read)
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(8).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("{}: {}", self.files.log.display(), tail.join(" | "))
    }
}

/// Restarts HAProxy from the stored routes whenever its master is gone — killed, crashed, or
/// exited because its worker died (HAProxy's master stops everything when a worker dies,
/// and 2.6 ignores `no-exit-on-failure`). The master is looked at every
/// [`SUPERVISE_INTERVAL`]; a restart renders the stored routes (blue-green ones too) before
/// the new frontends open. When restarts fail [`MAX_FAILED_RESTARTS`] times in a row, or
/// HAProxy dies more than [`MAX_RESTARTS_IN_WINDOW`] times in [`RESTART_WINDOW`], HAProxy is
/// reported lost ([`Haproxy::lost`]) and `proxy serve` exits non-zero, so that the service
/// manager (systemd's `Restart=`) sees it.
pub(super) async fn supervise(inner: Weak<Inner>) {
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
pub(super) fn runtime_matches(table: &RouteTable, stats: &[RuntimeServer]) -> bool {
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
