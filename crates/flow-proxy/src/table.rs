//! The route table: every service's route, servers and check mode, persisted in the state
//! directory so that a restarted proxy renders every route (blue-green ones too) into its
//! configuration before HAProxy opens its listening sockets.
//!
//! The file (`routes.json`) is written atomically: a temporary file in the same directory,
//! `fsync`, `rename` over the old one, `fsync` of the directory. A crash leaves either the
//! old or the new table, never half of one. A file that cannot be read back is an error at
//! start: it is never silently replaced by an empty table, which would drop every route.
//!
//! # Blocking file work
//!
//! Writing a file atomically means two `fsync`s, which can take tens of milliseconds on a
//! busy disk (seconds on a failing one). Done on the async runtime, that would stall every
//! other task of the worker thread — API requests, `routes` readers, drain tasks — for as
//! long. So [`RouteTable::save`] and the crate's other file work run on tokio's blocking
//! pool and are awaited from there.
//!
//! The writes of the whole process are serialized by one lock taken inside the blocking
//! work itself: a write whose caller went away (its future dropped) still completes on the
//! blocking pool, and must not share its temporary file with the next write, which would
//! break the atomicity above.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use flow_core::ServiceName;
use serde::{Deserialize, Serialize};

pub use flow_proxy_client::route::{
    Destination, HeaderAction, HeaderRule, Mode, PathRewrite, RouteEntry, RouteOptions, User,
    REDACTED,
};

/// The version of the `routes.json` layout written when every route is a single HTTP
/// destination without options: the layout of earlier versions, so that a table they can
/// read is still written the way they read it.
const FORMAT_VERSION: u32 = 1;

/// The version written when a route has several destinations or options: an earlier proxy
/// would ignore those fields and route without them (without authentication, for `users`),
/// so it must refuse the file instead.
const FORMAT_VERSION_DESTINATIONS: u32 = 2;

/// Whether an earlier proxy could serve `entry` as it is (see [`FORMAT_VERSION`]).
fn is_legacy(entry: &RouteEntry) -> bool {
    entry.options.is_empty()
        && match entry.destinations.as_slice() {
            [] => true,
            [only] => *only == Destination::of_route(&entry.route),
            _ => false,
        }
}

/// Every route the proxy serves, by service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    entries: BTreeMap<ServiceName, RouteEntry>,
}

/// What the file holds.
#[derive(Serialize, Deserialize)]
struct TableFile {
    version: u32,
    routes: Vec<RouteEntry>,
}

/// The route table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading the file (or creating the state directory) failed.
    #[error("cannot read the route table {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a route table this version understands.
    #[error("the route table {path} is unreadable ({reason}); fix or move it away by hand — it is never reset silently, since that would drop every route")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing the file failed; the previous table is still in place.
    #[error("cannot write the route table {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl RouteTable {
    /// Reads the table at `path`; a missing file is an empty table.
    pub fn load(path: &Path) -> Result<RouteTable, StateError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(RouteTable::default())
            }
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file: TableFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if ![FORMAT_VERSION, FORMAT_VERSION_DESTINATIONS].contains(&file.version) {
            return Err(corrupt(format!(
                "format version {} (this proxy reads versions {FORMAT_VERSION} and {FORMAT_VERSION_DESTINATIONS})",
                file.version
            )));
        }
        let mut table = RouteTable::default();
        for mut entry in file.routes {
            if entry.destinations.is_empty() {
                entry.destinations = vec![Destination::of_route(&entry.route)];
            }
            crate::validate::check_entry(&entry).map_err(|e| corrupt(e.to_string()))?;
            table.insert(entry);
        }
        Ok(table)
    }

    /// Writes the table to `path` atomically (temporary file, fsync, rename, directory fsync)
    /// on the blocking pool (see the [module docs](self)).
    pub async fn save(&self, path: &Path) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        let version = if self.entries.values().all(is_legacy) {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_DESTINATIONS
        };
        let file = TableFile {
            version,
            routes: self.entries.values().cloned().collect(),
        };
        let text =
            serde_json::to_vec_pretty(&file).map_err(|e| write_error(io::Error::other(e)))?;
        write_atomically(path, text).await.map_err(write_error)
    }

    /// The entry of `service`.
    pub fn get(&self, service: &ServiceName) -> Option<&RouteEntry> {
        self.entries.get(service)
    }

    /// Adds or replaces the entry of its service.
    pub fn insert(&mut self, entry: RouteEntry) {
        self.entries.insert(entry.route.service.clone(), entry);
    }

    /// Removes the entry of exactly `service`.
    pub fn remove(&mut self, service: &ServiceName) -> Option<RouteEntry> {
        self.entries.remove(service)
    }

    /// Every entry, sorted by service name.
    pub fn entries(&self) -> impl Iterator<Item = &RouteEntry> {
        self.entries.values()
    }
}

/// Runs blocking file work on tokio's blocking pool and waits for it, so that it does not
/// stall the runtime's worker threads. A panic in `work` is resumed in the caller, as if the
/// work had run in place.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only when the runtime shuts down before the work started.
        Err(error) => Err(io::Error::other(format!(
            "the file operation did not run: {error}"
        ))),
    }
}

/// Replaces `path` with `contents` so that a crash leaves the old or the new file whole; the
/// work runs on the blocking pool ([`off_runtime`]).
pub(crate) async fn write_atomically(path: &Path, contents: Vec<u8>) -> io::Result<()> {
    let path = path.to_path_buf();
    off_runtime(move || write_atomically_blocking(&path, &contents)).await?
}

/// Serializes the atomic writes of the process (see the [module docs](self)).
static ATOMIC_WRITES: Mutex<()> = Mutex::new(());

/// The blocking body of [`write_atomically`].
pub(crate) fn write_atomically_blocking(path: &Path, contents: &[u8]) -> io::Result<()> {
    // The lock guards no data, so a panic of an earlier holder leaves nothing inconsistent.
    let _serialized = ATOMIC_WRITES.lock().unwrap_or_else(PoisonError::into_inner);
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the path has no file name"))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(".tmp");
    let temporary = directory.join(temporary_name);
    let mut file = create_private_file(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    fs::File::open(directory)?.sync_all()
}

/// Creates (or truncates) `path` readable and writable by its owner only, whatever the umask:
/// the files of the state directory hold routes, credentials and the rendered configuration.
/// A file left over with a wider mode is narrowed too, since `mode` only applies on creation.
pub(crate) fn create_private_file(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    Ok(file)
}

/// Opens `path` for writing without truncating it, created owner-only like
/// [`create_private_file`] (a lock file, the HAProxy log appended to).
pub(crate) fn open_private_file(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    Ok(file)
}

/// Owner read and write.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Owner only: read, write, search.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Why a state directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// The directory could not be created or inspected.
    #[error("cannot create the state directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The path exists and is a shared directory (sticky bit, like `/tmp`) or belongs to
    /// another user: narrowing its mode would break others, leaving it would expose the
    /// sockets.
    #[error("the state directory {path} is {why}: its sockets drive HAProxy, so it must be private to this user; give a directory of its own, e.g. --state-dir {path}/docker-flow-proxy")]
    Shared {
        /// The directory.
        path: PathBuf,
        /// What makes it shared.
        why: &'static str,
    },
}

/// Creates the state directory owner-only (mode 0700, whatever the umask), or narrows an
/// existing one of this user to 0700: everything in it — the master socket above all, which
/// drives HAProxy without any token — is then out of reach of other users.
pub fn create_private_dir(path: &Path) -> Result<(), StateDirError> {
    let create_error = |source| StateDirError::Create {
        path: path.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(create_error)?;
    let meta = fs::metadata(path).map_err(create_error)?;
    if meta.permissions().mode() & 0o1000 != 0 {
        return Err(StateDirError::Shared {
            path: path.to_path_buf(),
            why: "a shared directory (its sticky bit is set)",
        });
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(StateDirError::Shared {
            path: path.to_path_buf(),
            why: "owned by another user",
        });
    }
    if meta.permissions().mode() & 0o777 != PRIVATE_DIR_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .map_err(create_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::{Color, PathType, Route};

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

    #[tokio::test]
    async fn a_saved_table_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        assert_eq!(RouteTable::load(&path).unwrap(), RouteTable::default());
        let mut table = RouteTable::default();
        table.insert(entry("app"));
        table.insert(entry("app2"));
        table.save(&path).await.unwrap();
        assert_eq!(RouteTable::load(&path).unwrap(), table);
    }

    #[tokio::test]
    async fn tables_of_earlier_versions_load_and_are_written_as_they_were_unless_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        // A table as the proxy wrote it before destinations and options existed.
        fs::write(
            &path,
            r#"{"version":1,"routes":[{"route":{"service":"app","color":"green","paths":["/a"],"domain":"example.com","path_type":"Prefix"},"servers":["127.0.0.1:9000"],"skip_check":false}]}"#,
        )
        .unwrap();
        let table = RouteTable::load(&path).unwrap();
        let app = table
            .get(&ServiceName::new("app").unwrap())
            .unwrap()
            .clone();
        assert_eq!(app.destinations, [Destination::of_route(&app.route)]);
        assert_eq!(app.destinations[0].domains, ["example.com"]);
        table.save(&path).await.unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");

        let mut table = table;
        let mut with_users = app.clone();
        with_users.options.users.push(User {
            name: "alice".into(),
            password: "pw".into(),
            encrypted: false,
        });
        table.insert(with_users);
        table.save(&path).await.unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert_eq!(RouteTable::load(&path).unwrap(), table);
        assert!(
            !format!("{table:?}").contains("\"pw\""),
            "Debug hides passwords"
        );
    }

    #[test]
    fn an_unreadable_table_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            RouteTable::load(&path),
            Err(StateError::Corrupt { .. })
        ));
        fs::write(&path, r#"{"version":99,"routes":[]}"#).unwrap();
        assert!(matches!(
            RouteTable::load(&path),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_state_directory_and_its_files_are_private_whatever_the_umask() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let nested = dir.join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(
            fs::metadata(&nested).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let file = dir.join("f");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        write_atomically_blocking(&file, b"y").unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(&file).unwrap(), b"y");

        let shared = parent.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(
            create_private_dir(&shared),
            Err(StateDirError::Shared { .. })
        ));
    }
}
