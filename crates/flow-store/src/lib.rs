//! The embedded file store: docker-flow's default [`Registry`], kept in a directory.
//!
//! When no Consul or etcd is configured, release state, the deploy lock and instance
//! registrations live in plain files in a directory — by default `.docker-flow/` beside the
//! Compose file ([`FileRegistry::beside`]). Nothing has to run for it, it survives reboots,
//! and a person can read (and, carefully, repair) it with a text editor.
//!
//! # Layout
//!
//! ```text
//! <dir>/<service>/state.json   the state: {"revision", "color", "scale", "last_release", "previous_release"}
//! <dir>/<service>/color        "blue" or "green" (absent when no colour is stored)
//! <dir>/<service>/scale        the scale as a decimal number (absent when none is stored)
//! <dir>/<service>/guard        empty; OS-locked during every read-compare-write
//! <dir>/<service>/lock         the deploy lock's record (JSON): holder, token, pid, times
//! <dir>/<service>/lock.held    empty; OS-locked by the process holding the deploy lock
//! <dir>/instances/<id>.json    one registration per file; the id is %-encoded
//! ```
//!
//! **`state.json` is the source of truth.** `color` and `scale` are copies written after it,
//! for people and for Docker Flow 1.x habits (`cat .docker-flow/app/color`); they are never
//! read while `state.json` exists. When it does not exist, `color` and `scale` are read as
//! the state at [`Revision::NONE`], so state can be seeded by hand (as 1.x users did with
//! `consul kv put`); the first store writes `state.json`.
//!
//! Instance ids (Registrator's `host:container:port`, or paths) are encoded byte by byte:
//! ASCII letters, digits, `-` and `_` stay, every other byte becomes `%XX`. So an id can
//! never name another directory, a hidden file or `.`/`..`. The service name `instances` is
//! therefore reserved.
//!
//! # Design
//!
//! * **Atomic writes.** Every file is written to a temporary file in the same directory,
//!   fsynced, and renamed over the old one. A crash leaves the old file or the new one,
//!   never a torn one, so readers need no lock. For `state.json` and registrations the
//!   directory is fsynced too, so a returned store survives a power loss; the plain copies
//!   and the lock record skip that (an fsync costs milliseconds on many disks): losing
//!   their last rename is harmless, as `state.json` rules and no OS lock outlives a reboot.
//! * **Compare-and-swap across processes.** `store` holds an exclusive OS file lock
//!   (`flock`, through `File::lock`) on the service's `guard` file while it reads the stored
//!   revision, compares and writes, so two docker-flow processes (or two [`FileRegistry`]
//!   values in one process) can never interleave a read-compare-write. The revision is a
//!   counter in `state.json`.
//! * **A deploy lock a crash cannot leave held.** The lock's record says who holds it, its
//!   token and when it expires; the holding process also keeps an OS lock on `lock.held`
//!   for as long as the lease lives (the record itself is replaced by rename, and an OS lock
//!   belongs to a file, not a name, so it sits on a file that is never replaced). The
//!   kernel drops that OS lock when the process dies, however it dies, so the next `lock`
//!   sees a record whose process is gone and takes the lock at once. A lease whose TTL
//!   passed without a renew can be taken over even while its process lives; the old
//!   holder's `renew`/`unlock` then fail with [`RegistryError::LeaseLost`] because the
//!   record carries another token. A lease taken over that way is not backed by an OS lock
//!   (the old process still has it) and says so in its record (`os_locked: false`); it ends
//!   by TTL only, and its holder picks the OS lock up at its next renew when it is free.
//! * **Nothing is reset.** A file that cannot be read back (bad JSON, a colour that is not
//!   `blue`/`green`, a scale that is not a number) is [`RegistryError::Corrupt`] naming the
//!   file; it is left as found for a person to repair. Failed I/O is
//!   [`RegistryError::Unavailable`] naming the directory, with the file and the action in
//!   the source error.
//! * **Async on top of blocking I/O.** Each operation runs in `tokio::task::spawn_blocking`:
//!   the file system has no useful async API here, and OS locks are per thread-blocking
//!   calls anyway. Any Tokio runtime works.

#![deny(missing_docs)]

mod files;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use flow_core::{
    Color, Lease, LockHolder, Registration, Registry, RegistryError, ReleaseRecord, ReleaseState,
    Revision, ServiceName, Versioned,
};
use serde::{Deserialize, Serialize};

use files::{encode_id, not_found_is_none, Durability, Store};

/// The directory name [`FileRegistry::beside`] uses next to the Compose file.
pub const DEFAULT_DIR_NAME: &str = ".docker-flow";

/// The directory under the store that holds registrations; reserved as a service name.
const INSTANCES_DIR: &str = "instances";

/// `state.json`: the source of truth for one service.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    revision: u64,
    color: Option<Color>,
    scale: Option<u32>,
    last_release: Option<ReleaseRecord>,
    /// Absent in files written before rollbacks were kept.
    #[serde(default)]
    previous_release: Option<ReleaseRecord>,
}

/// `lock`: the record of a deploy lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    holder: String,
    token: String,
    pid: u32,
    acquired_at_ms: u64,
    expires_at_ms: u64,
    /// Whether the holder process keeps the OS lock on `lock.held` (see the crate docs).
    os_locked: bool,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn expiry_ms(now: SystemTime, ttl: Duration) -> u64 {
    unix_ms(now).saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// The Registry kept in a directory. See the [crate docs](crate) for the layout and the
/// guarantees.
///
/// Cheap to clone; clones share the OS locks of the leases they hold. Dropping the last
/// clone releases those OS locks, as the end of the process would: its leases are then
/// free to take at once. Two `FileRegistry`
/// values on the same directory (in one process or several) see each other's writes and
/// exclude each other exactly as two processes do.
#[derive(Debug, Clone)]
pub struct FileRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// The open `lock.held` files of the leases this registry holds, by token: closing one
    /// releases its OS lock.
    held: Mutex<HashMap<String, File>>,
}

impl FileRegistry {
    /// A store in `dir`. Nothing is touched until the first operation; the directory is
    /// created by the first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileRegistry {
            inner: Arc::new(Inner {
                store: Store::new(dir.into()),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The default store of a project: `.docker-flow/` in the directory of `compose_file`.
    pub fn beside(compose_file: &Path) -> Self {
        let parent = match compose_file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Self::new(parent.join(DEFAULT_DIR_NAME))
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        self.inner.store.dir()
    }

    /// Runs `operation` on the blocking pool.
    async fn blocking<T, F>(&self, operation: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, RegistryError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let address = inner.store.address();
        tokio::task::spawn_blocking(move || operation(&inner))
            .await
            .map_err(|e| RegistryError::Unavailable {
                address,
                source: Box::new(e),
            })?
    }
}

impl fmt::Display for FileRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file store at {}", self.dir().display())
    }
}

impl Inner {
    fn service_dir(&self, service: &ServiceName) -> Result<PathBuf, RegistryError> {
        if service.as_str() == INSTANCES_DIR {
            return Err(RegistryError::Backend {
                address: self.store.address(),
                message: format!(
                    "the service name {INSTANCES_DIR:?} is reserved by the file store for \
                     registrations; rename the Compose project or target, or configure \
                     another registry"
                ),
            });
        }
        Ok(self.store.dir().join(service.as_str()))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, File>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `state.json` (or, without it, the plain `color` and `scale` files).
    fn load(&self, service: &ServiceName) -> Result<Versioned<ReleaseState>, RegistryError> {
        let dir = self.service_dir(service)?;
        if let Some(file) = self.read_state_file(&dir)? {
            return Ok(Versioned {
                value: ReleaseState {
                    color: file.color,
                    scale: file.scale,
                    last_release: file.last_release,
                    previous_release: file.previous_release,
                },
                revision: Revision(file.revision),
            });
        }
        let color = self.store.read_plain(&dir.join("color"), |text| {
            text.parse::<Color>().map_err(|e| e.to_string())
        })?;
        let scale = self.store.read_plain(&dir.join("scale"), |text| {
            text.trim()
                .parse::<u32>()
                .map_err(|e| format!("not a whole number ({e})"))
        })?;
        Ok(Versioned {
            value: ReleaseState {
                color,
                scale,
                last_release: None,
                previous_release: None,
            },
            revision: Revision::NONE,
        })
    }

    fn read_state_file(&self, dir: &Path) -> Result<Option<StateFile>, RegistryError> {
        let path = dir.join("state.json");
        let Some(file) = self.store.read_json::<StateFile>(&path)? else {
            return Ok(None);
        };
        if file.revision == 0 {
            return Err(files::corrupt(
                &path,
                &format!("revision {}", file.revision),
                "the revision of a stored state is at least 1",
            ));
        }
        Ok(Some(file))
    }

    fn store(
        &self,
        service: &ServiceName,
        state: &ReleaseState,
        expected: Revision,
    ) -> Result<Revision, RegistryError> {
        let dir = self.service_dir(service)?;
        let _guard = self.store.guard(&dir)?;
        let current = self
            .read_state_file(&dir)?
            .map_or(Revision::NONE, |f| Revision(f.revision));
        if current != expected {
            return Err(RegistryError::Conflict {
                service: service.clone(),
            });
        }
        let revision = Revision(current.0 + 1);
        let file = StateFile {
            revision: revision.0,
            color: state.color,
            scale: state.scale,
            last_release: state.last_release.clone(),
            previous_release: state.previous_release.clone(),
        };
        self.store
            .write_json(&dir.join("state.json"), &file, Durability::Durable)?;
        // The store is committed once state.json is renamed into place. The plain copies are
        // for people and 1.x habits: failing to refresh them must not report the committed
        // store as failed (the caller would roll back a release that is live), and `load`
        // never reads them while state.json exists.
        let _ = self.store.write_plain(
            &dir.join("color"),
            state.color.map(|c| c.as_str().to_string()),
        );
        let _ = self
            .store
            .write_plain(&dir.join("scale"), state.scale.map(|s| s.to_string()));
        Ok(revision)
    }

    fn lock(
        &self,
        service: &ServiceName,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, RegistryError> {
        let dir = self.service_dir(service)?;
        let _guard = self.store.guard(&dir)?;
        let record_path = dir.join("lock");
        let now = SystemTime::now();
        let previous = self.store.read_json::<LockRecord>(&record_path)?;
        let expired = previous
            .as_ref()
            .is_some_and(|record| record.expires_at_ms <= unix_ms(now));
        if let (true, Some(record)) = (expired, &previous) {
            // If the expired lease is one of ours, let go of its OS lock so the new lease
            // can take it.
            self.held().remove(&record.token);
        }
        let held_file = self.store.try_os_lock(&dir.join("lock.held"))?;
        if let Some(record) = previous {
            // We got the OS lock although the record says its holder keeps it: that
            // process is gone.
            let holder_died = held_file.is_some() && record.os_locked;
            if !expired && !holder_died {
                return Err(RegistryError::Locked {
                    service: service.clone(),
                    holder: record.holder,
                    since: UNIX_EPOCH + Duration::from_millis(record.acquired_at_ms),
                });
            }
        }
        let record = LockRecord {
            holder: holder.to_string(),
            token: new_token(),
            pid: std::process::id(),
            acquired_at_ms: unix_ms(now),
            expires_at_ms: expiry_ms(now, ttl),
            os_locked: held_file.is_some(),
        };
        self.store
            .write_json(&record_path, &record, Durability::Whole)?;
        if let Some(file) = held_file {
            self.held().insert(record.token.clone(), file);
        }
        Ok(Lease {
            service: service.clone(),
            holder: record.holder,
            token: record.token,
            acquired_at: UNIX_EPOCH + Duration::from_millis(record.acquired_at_ms),
            ttl,
        })
    }

    /// The record of `lease` if it is still live. Otherwise drops the OS lock this registry
    /// may keep for it and answers `LeaseLost`.
    fn live_record(&self, dir: &Path, lease: &Lease) -> Result<LockRecord, RegistryError> {
        let record = self.store.read_json::<LockRecord>(&dir.join("lock"))?;
        match record {
            Some(record)
                if record.token == lease.token
                    && record.expires_at_ms > unix_ms(SystemTime::now()) =>
            {
                Ok(record)
            }
            _ => {
                self.held().remove(&lease.token);
                Err(RegistryError::LeaseLost {
                    service: lease.service.clone(),
                })
            }
        }
    }

    /// The live lease's holder: a record past its TTL is free, and so is one whose process
    /// let go of the OS lock on `lock.held` (it died). The probe of that OS lock runs under
    /// the guard, as `lock` does, so it never makes a concurrent `lock` think the holder
    /// lives.
    fn lock_holder(&self, service: &ServiceName) -> Result<Option<LockHolder>, RegistryError> {
        let dir = self.service_dir(service)?;
        let Some(record) = self.store.read_json::<LockRecord>(&dir.join("lock"))? else {
            return Ok(None);
        };
        if record.expires_at_ms <= unix_ms(SystemTime::now()) {
            return Ok(None);
        }
        if record.os_locked && !self.held().contains_key(&record.token) {
            let _guard = self.store.guard(&dir)?;
            if self.store.try_os_lock(&dir.join("lock.held"))?.is_some() {
                return Ok(None);
            }
        }
        Ok(Some(LockHolder {
            holder: record.holder,
            since: UNIX_EPOCH + Duration::from_millis(record.acquired_at_ms),
        }))
    }

    fn renew(&self, lease: &Lease) -> Result<(), RegistryError> {
        let dir = self.service_dir(&lease.service)?;
        let _guard = self.store.guard(&dir)?;
        let mut record = self.live_record(&dir, lease)?;
        record.expires_at_ms = expiry_ms(SystemTime::now(), lease.ttl);
        if !record.os_locked {
            // A lease taken over from a live process: pick the OS lock up once it is free,
            // so that from now on a crash of ours frees the lock at once.
            if let Some(file) = self.store.try_os_lock(&dir.join("lock.held"))? {
                self.held().insert(record.token.clone(), file);
                record.os_locked = true;
            }
        }
        self.store
            .write_json(&dir.join("lock"), &record, Durability::Whole)
    }

    fn unlock(&self, lease: &Lease) -> Result<(), RegistryError> {
        let dir = self.service_dir(&lease.service)?;
        let _guard = self.store.guard(&dir)?;
        self.live_record(&dir, lease)?;
        self.store.remove(&dir.join("lock"))?;
        self.held().remove(&lease.token);
        Ok(())
    }

    fn instance_path(&self, id: &str) -> PathBuf {
        self.store
            .dir()
            .join(INSTANCES_DIR)
            .join(format!("{}.json", encode_id(id)))
    }

    fn register(&self, registration: &Registration) -> Result<(), RegistryError> {
        self.store.write_json(
            &self.instance_path(&registration.id),
            registration,
            Durability::Durable,
        )
    }

    fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        self.store.remove(&self.instance_path(id))
    }

    /// Every registration, sorted by id.
    fn all_instances(&self) -> Result<Vec<Registration>, RegistryError> {
        let dir = self.store.dir().join(INSTANCES_DIR);
        let entries = match not_found_is_none(fs::read_dir(&dir)) {
            Ok(Some(entries)) => entries,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => return Err(self.store.io_error("list", &dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.store.io_error("list", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Temporary files of writes in progress start with a dot; ids never do.
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            // A registration removed since the listing is simply gone.
            if let Some(registration) = self.store.read_json::<Registration>(&entry.path())? {
                found.push(registration);
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }
}

fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait]
impl Registry for FileRegistry {
    async fn load(&self, service: &ServiceName) -> Result<Versioned<ReleaseState>, RegistryError> {
        let service = service.clone();
        self.blocking(move |inner| inner.load(&service)).await
    }

    async fn store(
        &self,
        service: &ServiceName,
        state: &ReleaseState,
        expected: Revision,
    ) -> Result<Revision, RegistryError> {
        let (service, state) = (service.clone(), state.clone());
        self.blocking(move |inner| inner.store(&service, &state, expected))
            .await
    }

    async fn lock(
        &self,
        service: &ServiceName,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, RegistryError> {
        let (service, holder) = (service.clone(), holder.to_string());
        self.blocking(move |inner| inner.lock(&service, &holder, ttl))
            .await
    }

    async fn lock_holder(
        &self,
        service: &ServiceName,
    ) -> Result<Option<LockHolder>, RegistryError> {
        let service = service.clone();
        self.blocking(move |inner| inner.lock_holder(&service))
            .await
    }

    async fn renew(&self, lease: &Lease) -> Result<(), RegistryError> {
        let lease = lease.clone();
        self.blocking(move |inner| inner.renew(&lease)).await
    }

    async fn unlock(&self, lease: &Lease) -> Result<(), RegistryError> {
        let lease = lease.clone();
        self.blocking(move |inner| inner.unlock(&lease)).await
    }

    async fn register(&self, registration: &Registration) -> Result<(), RegistryError> {
        let registration = registration.clone();
        self.blocking(move |inner| inner.register(&registration))
            .await
    }

    async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let id = id.to_string();
        self.blocking(move |inner| inner.deregister(&id)).await
    }

    async fn instances(&self, name: &str) -> Result<Vec<Registration>, RegistryError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let mut all = inner.all_instances()?;
            all.retain(|r| r.name == name);
            Ok(all)
        })
        .await
    }

    async fn all_instances(&self) -> Result<Vec<Registration>, RegistryError> {
        self.blocking(|inner| inner.all_instances()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_puts_the_store_next_to_the_compose_file() {
        assert_eq!(
            FileRegistry::beside(Path::new("/srv/app/docker-compose.yml")).dir(),
            Path::new("/srv/app/.docker-flow")
        );
        assert_eq!(
            FileRegistry::beside(Path::new("compose.yaml")).dir(),
            Path::new("./.docker-flow")
        );
        assert_eq!(
            FileRegistry::new("/tmp/x").to_string(),
            "file store at /tmp/x"
        );
    }
}
