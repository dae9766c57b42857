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
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use flow_core::{PathType, Route, ServiceName};
use serde::{Deserialize, Serialize};

/// The version of the `routes.json` layout written when every route is a single HTTP
/// destination without options: the layout of earlier versions, so that a table they can
/// read is still written the way they read it.
const FORMAT_VERSION: u32 = 1;

/// The version written when a route has several destinations or options: an earlier proxy
/// would ignore those fields and route without them (without authentication, for `users`),
/// so it must refuse the file instead.
const FORMAT_VERSION_DESTINATIONS: u32 = 2;

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

    /// Whether an earlier proxy could serve this entry as it is (see [`FORMAT_VERSION`]).
    fn is_legacy(&self) -> bool {
        self.options.is_empty()
            && match self.destinations.as_slice() {
                [] => true,
                [only] => *only == Destination::of_route(&self.route),
                _ => false,
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
    fn is_empty(&self) -> bool {
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
        let version = if self.entries.values().all(RouteEntry::is_legacy) {
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
    use flow_core::{Color, PathType};

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
