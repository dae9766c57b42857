//! Building the demo image and isolating each test in its own Compose project.
//!
//! * [`demo_server_binary`] builds the static `demo-server` once per process.
//! * [`build_demo_image`] wraps it into a `FROM scratch` image through the Docker API.
//! * [`docker_flow_binary`] builds the `docker-flow` binary once per process, for tests that
//!   run the real command line.
//! * [`unique_project`] names a Compose project no other test (or run) uses, and
//!   [`ProjectGuard`] removes everything labelled with it when dropped, also when the test
//!   panics, so a failing test leaves nothing behind on the shared engine.
//! * [`EtcdNode`] runs a throwaway single-member etcd on free loopback ports for the tests
//!   and benchmarks of the etcd registry, killed and its data removed when dropped.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{
    BuildImageOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use futures::StreamExt;

/// The target triple the demo server is built for (static binaries need an explicit target,
/// so that build scripts are not linked statically too).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The Compose label every container, network and volume of a project carries.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the flow-tests package lives in <workspace>/tests")
        .to_path_buf()
}

/// Builds the static `demo-server` (once per process) and returns its path.
///
/// Runs `cargo build --release -p demo-server --target x86_64-unknown-linux-gnu` with
/// `crt-static` into `<workspace>/target/static`, a target directory of its own so that the
/// static flags never invalidate the normal build.
///
/// # Panics
///
/// When cargo fails, with cargo's output: every Docker test needs this binary.
pub fn demo_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let root = workspace_root();
            let target_dir = root.join("target").join("static");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let output = Command::new(&cargo)
                .current_dir(&root)
                .args(["build", "--release", "-p", "demo-server", "--target"])
                .arg(STATIC_TARGET)
                .arg("--target-dir")
                .arg(&target_dir)
                .env(
                    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                    "-C target-feature=+crt-static",
                )
                .output()
                .unwrap_or_else(|error| panic!("cannot run {cargo} to build demo-server: {error}"));
            if !output.status.success() {
                panic!(
                    "building the static demo-server failed ({}):\n{}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let binary = target_dir
                .join(STATIC_TARGET)
                .join("release")
                .join("demo-server");
            assert!(
                binary.is_file(),
                "cargo succeeded but {} does not exist",
                binary.display()
            );
            binary
        })
        .clone()
}

/// Builds the `docker-flow` binary (once per process) and returns its path.
///
/// A binary of another package is not built for this package's tests (cargo's artifact
/// dependencies are unstable), so this runs `cargo build -p flow-cli --bin docker-flow` in the
/// workspace and takes the path from cargo's own `compiler-artifact` message rather than
/// guessing the target directory and profile layout.
///
/// # Panics
///
/// When cargo fails, with cargo's output: every command-line test needs this binary.
pub fn docker_flow_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let output = Command::new(&cargo)
                .current_dir(workspace_root())
                .args([
                    "build",
                    "-p",
                    "flow-cli",
                    "--bin",
                    "docker-flow",
                    "--message-format=json",
                ])
                .output()
                .unwrap_or_else(|error| panic!("cannot run {cargo} to build docker-flow: {error}"));
            let messages = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                panic!(
                    "building docker-flow failed ({}):\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let binary = messages
                .lines()
                .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
                .filter_map(executable_path)
                .find(|path| path.file_name().is_some_and(|name| name == "docker-flow"))
                .unwrap_or_else(|| {
                    panic!("cargo built docker-flow but named no executable:\n{messages}")
                });
            assert!(
                binary.is_file(),
                "cargo reported {} but it does not exist",
                binary.display()
            );
            binary
        })
        .clone()
}

/// The `"executable":"<path>"` field of one of cargo's JSON messages, when it names one.
/// Workspace paths contain no characters JSON would escape, so the text is taken as is.
fn executable_path(message: &str) -> Option<PathBuf> {
    const FIELD: &str = "\"executable\":\"";
    let start = message.find(FIELD)? + FIELD.len();
    let end = start + message[start..].find('"')?;
    Some(PathBuf::from(&message[start..end]))
}

/// The Dockerfile of the demo image for `version`.
fn demo_dockerfile(version: &str) -> String {
    format!(
        "FROM scratch\n\
         COPY demo-server /demo-server\n\
         ENV DEMO_VERSION={version}\n\
         EXPOSE 8080\n\
         STOPSIGNAL SIGTERM\n\
         HEALTHCHECK --interval=1s --timeout=1s --retries=3 CMD [\"/demo-server\",\"--check\"]\n\
         ENTRYPOINT [\"/demo-server\"]\n"
    )
}

/// Why the demo image could not be built.
#[derive(Debug)]
pub enum DemoImageError {
    /// The in-memory build context could not be assembled (the binary could not be read).
    Context(io::Error),
    /// The engine refused the build or the build failed; the engine's message.
    Build(String),
}

impl std::fmt::Display for DemoImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoImageError::Context(error) => {
                write!(f, "cannot assemble the demo image build context: {error}")
            }
            DemoImageError::Build(message) => {
                write!(f, "building the demo image failed: {message}")
            }
        }
    }
}

impl std::error::Error for DemoImageError {}

/// Builds the tar build context: the Dockerfile and the static binary.
fn demo_build_context(version: &str) -> io::Result<Vec<u8>> {
    let binary = std::fs::read(demo_server_binary())?;
    let dockerfile = demo_dockerfile(version);
    let mut builder = tar::Builder::new(Vec::new());
    for (name, contents, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("demo-server", binary.as_slice(), 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append_data(&mut header, name, contents)?;
    }
    builder.into_inner()
}

/// Builds the demo image `tag` (`FROM scratch`, `/demo-server`, `DEMO_VERSION=<version>`,
/// `EXPOSE 8080`, a `--check` HEALTHCHECK every second) through the Docker API.
///
/// Docker's layer cache makes a rebuild of an unchanged binary cheap, so tests may call this
/// freely.
pub async fn build_demo_image(
    docker: &Docker,
    tag: &str,
    version: &str,
) -> Result<(), DemoImageError> {
    let context = demo_build_context(version).map_err(DemoImageError::Context)?;
    let options = BuildImageOptions {
        t: Some(tag.to_string()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = progress.next().await {
        let info = step.map_err(|error| DemoImageError::Build(error.to_string()))?;
        if let Some(detail) = info.error_detail {
            return Err(DemoImageError::Build(
                detail
                    .message
                    .unwrap_or_else(|| "unknown build error".to_string()),
            ));
        }
    }
    Ok(())
}

/// Connects to the local engine (DOCKER_HOST or the default socket) and negotiates the API
/// version (the engine here speaks 1.41, older than bollard's default).
///
/// # Panics
///
/// When no engine answers: every Docker test needs one, and says so.
pub async fn docker() -> Docker {
    let docker = Docker::connect_with_defaults()
        .unwrap_or_else(|error| panic!("cannot set up a Docker client: {error}"));
    docker.negotiate_version().await.unwrap_or_else(|error| {
        panic!(
            "the Docker engine does not answer ({error}); the Docker tests need a running engine"
        )
    })
}

/// A Compose project name no other test in this run, or in another run, uses:
/// `<prefix>-<pid>-<counter>-<time>` in lower case.
pub fn unique_project(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{counter}-{:x}",
        prefix.to_lowercase(),
        std::process::id(),
        nanos % 0x10000
    )
}

/// Removes every container, network and volume labelled
/// `com.docker.compose.project=<project>` when dropped.
///
/// The clean-up runs on a thread of its own with its own runtime, so it works from an async
/// test, from a sync one, and while a panicking test unwinds.
#[derive(Debug)]
pub struct ProjectGuard {
    project: String,
}

impl ProjectGuard {
    /// Guards `project`.
    pub fn new(project: impl Into<String>) -> Self {
        ProjectGuard {
            project: project.into(),
        }
    }

    /// The guarded project name.
    pub fn project(&self) -> &str {
        &self.project
    }
}

impl Drop for ProjectGuard {
    fn drop(&mut self) {
        let project = self.project.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up");
            runtime.block_on(remove_project(&project))
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => eprintln!("clean-up of project {}: {message}", self.project),
            Err(_) => eprintln!("clean-up of project {} panicked", self.project),
        }
    }
}

/// Removes the containers, then the networks and volumes, of `project`.
async fn remove_project(project: &str) -> Result<(), String> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| e.to_string())?
        .negotiate_version()
        .await
        .map_err(|e| e.to_string())?;
    let filters: HashMap<String, Vec<String>> = HashMap::from([(
        "label".to_string(),
        vec![format!("{PROJECT_LABEL}={project}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| e.to_string())?;
    let removals = containers.iter().filter_map(|c| c.id.clone()).map(|id| {
        let docker = docker.clone();
        async move {
            docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
        }
    });
    let mut problems = Vec::new();
    for result in futures::future::join_all(removals).await {
        if let Err(error) = result {
            problems.push(error.to_string());
        }
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .map_err(|e| e.to_string())?;
    for network in networks {
        if let Some(id) = network.id {
            if let Err(error) = docker.remove_network(&id).await {
                problems.push(error.to_string());
            }
        }
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| e.to_string())?;
    for volume in volumes.volumes.unwrap_or_default() {
        if let Err(error) = docker
            .remove_volume(&volume.name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            problems.push(error.to_string());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A throwaway single-member etcd node on free loopback ports, with its data in a temporary
/// directory; killed, and its data removed, when dropped.
///
/// It runs the real `etcd` binary (Debian's `etcd-server`, 3.4+) with short heartbeat and
/// election timeouts so that it serves within a fraction of a second. It can be killed and
/// restarted on the same ports and data in between, as a registry outage.
pub struct EtcdNode {
    client_port: u16,
    peer_port: u16,
    child: Child,
    data: tempfile::TempDir,
}

impl Drop for EtcdNode {
    fn drop(&mut self) {
        self.kill();
    }
}

impl EtcdNode {
    /// Starts a node and waits until it serves etcd's JSON gateway.
    ///
    /// # Panics
    ///
    /// When `etcd` cannot be started (naming the package to install), exits before serving,
    /// or does not serve within 20 s: the tests that need it cannot run without it.
    pub async fn start() -> EtcdNode {
        let data = tempfile::tempdir().expect("a temporary data directory");
        let (client_port, peer_port) = (free_port(), free_port());
        let child = spawn_etcd(data.path(), client_port, peer_port);
        let mut node = EtcdNode {
            client_port,
            peer_port,
            child,
            data,
        };
        node.wait_ready().await;
        node
    }

    /// Kills the node (its data stays), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed node again on the same ports and data, and waits until it serves.
    ///
    /// # Panics
    ///
    /// As [`EtcdNode::start`].
    pub async fn restart(&mut self) {
        self.child = spawn_etcd(self.data.path(), self.client_port, self.peer_port);
        self.wait_ready().await;
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:<client port>`, as the etcd registry takes it.
    pub fn endpoints(&self) -> String {
        format!("etcd://{}", self.address())
    }

    /// Runs `etcdctl` (v3 API) against this node and returns its standard output, to check
    /// what a registry wrote the way an operator would see it.
    ///
    /// # Panics
    ///
    /// When `etcdctl` cannot be run (naming the package to install) or fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://{}", self.address()))
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `etcdctl` ({e}); install Debian's `etcd-client` package")
            });
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("etcdctl prints text")
    }

    /// Waits until a range read through the JSON gateway succeeds.
    async fn wait_ready(&mut self) {
        let range_url = format!("http://{}/v3/kv/range", self.address());
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .post(&range_url)
                .body(r#"{"key":"AA=="}"#)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited before serving ({status}); is the port taken?");
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not serve within 20 s on {}",
                self.address()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs `etcd` as a single-member cluster on the given ports and data directory.
fn spawn_etcd(data: &Path, client_port: u16, peer_port: u16) -> Child {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    Command::new("etcd")
        .arg("--name")
        .arg("default")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `etcd` ({e}): these tests need a real etcd 3.4+ node; \
                 install Debian's `etcd-server` package (apt-get install etcd-server)"
            )
        })
}
