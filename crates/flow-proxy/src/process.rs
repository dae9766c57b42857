//! The HAProxy master process as the driver holds it: started by this proxy (a child) or
//! adopted from an earlier `proxy serve` on the same state directory, found through its
//! master socket.
//!
//! # Why HAProxy outlives `proxy serve`
//!
//! HAProxy serves the traffic; `proxy serve` only drives it. So stopping, crashing or
//! upgrading `proxy serve` must not stop HAProxy:
//!
//! * the master is started in a process group of its own, so a Ctrl-C in a terminal (which
//!   signals the whole foreground group) reaches `proxy serve` only;
//! * it is not killed when its handle is dropped: only an explicit stop ([`Master::signal`])
//!   ends it;
//! * a later `proxy serve` on the same state directory finds it through `master.sock` and
//!   adopts it. An adopted master is not a child of this process, so its liveness is read
//!   from `/proc/<pid>/stat` (a zombie counts as dead) instead of `waitpid`.
//!
//! # One driver per state directory
//!
//! Two drivers on one master would undo each other's changes, so the state directory is
//! locked ([`StateLock`], `flock` on `proxy.lock`) for as long as the driver runs. The kernel
//! releases the lock when the process ends, `kill -9` included, so a crashed `proxy serve`
//! never blocks the next one.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::Child;
use tokio::time::{sleep, Instant};

/// How often a stopping master is looked at.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// The HAProxy master this driver runs or adopted.
#[derive(Debug)]
pub(crate) struct Master {
    pid: u32,
    /// Set when this process started the master: its exit is read with `waitpid`.
    child: Option<Child>,
}

impl Master {
    /// A master this process started.
    pub(crate) fn spawned(child: Child) -> io::Result<Master> {
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the HAProxy master exited at once"))?;
        Ok(Master {
            pid,
            child: Some(child),
        })
    }

    /// A running master found through its master socket.
    pub(crate) fn adopted(pid: u32) -> Master {
        Master { pid, child: None }
    }

    /// The master's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the master was adopted rather than started here.
    pub(crate) fn is_adopted(&self) -> bool {
        self.child.is_none()
    }

    /// `Some(how it ended)` once the master is gone; `None` while it runs.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(error) => Some(format!("cannot wait for it: {error}")),
            },
            None => (!process_alive(self.pid)).then(|| "it is gone".to_string()),
        }
    }

    /// Sends `signal` to the master (harmless when it is already gone).
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            // ESRCH: it exited meanwhile, which is what a stop wants anyway.
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Waits until the master has exited, at most `limit`; true when it did.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.exit_status().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(EXIT_POLL).await;
        }
    }

    /// Stops the master: `first` (SIGUSR1: finish the open connections, SIGTERM: close them),
    /// then SIGTERM and SIGKILL if it is still there after `grace` and 2 more seconds.
    pub(crate) async fn stop(&mut self, first: Signal, grace: Duration) {
        self.signal(first);
        if self.wait_exit(grace).await {
            return;
        }
        self.signal(Signal::TERM);
        if self.wait_exit(Duration::from_secs(2)).await {
            return;
        }
        self.signal(Signal::KILL);
        self.wait_exit(Duration::from_secs(2)).await;
    }
}

/// Whether `pid` runs (exists and is not a zombie waiting to be reaped).
pub(crate) fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last ')' (comm may hold spaces or parens).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The exclusive lock of a state directory, held while the driver runs.
#[derive(Debug)]
pub(crate) struct StateLock {
    /// Holding the open file holds the lock.
    _file: fs::File,
}

impl StateLock {
    /// Takes the lock of `path` without waiting; `Ok(None)` when another process holds it.
    pub(crate) fn try_take(path: &Path) -> io::Result<Option<StateLock>> {
        let file = crate::table::open_private_file(path)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(StateLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }

    #[test]
    fn a_state_directory_is_locked_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.lock");
        let first = StateLock::try_take(&path).unwrap();
        assert!(first.is_some());
        // flock locks belong to the open file: a second open, even in this process, is refused.
        assert!(StateLock::try_take(&path).unwrap().is_none());
        drop(first);
        assert!(StateLock::try_take(&path).unwrap().is_some());
    }
}
