//! What the end-to-end areas share: a scratch directory with its own Compose project in which
//! the real `docker-flow` binary runs, the demo images, and views of the project's containers
//! and stored state.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use tokio::io::{AsyncBufReadExt, BufReader};

use flow_tests::fixtures::{
    build_demo_image, docker, docker_flow_binary, unique_project, ProjectGuard, PROJECT_LABEL,
};

/// The repository of the demo images the end-to-end tests release. Tags are versions
/// (`v1`, `v2`, `v3`): the image answers its tag on `/`.
pub const DEMO_REPOSITORY: &str = "docker-flow-e2e-demo";

/// The versions built by [`demo_images`].
const DEMO_VERSIONS: [&str; 3] = ["v1", "v2", "v3"];

/// How long a single `docker-flow` invocation may run before the test gives up on it: a
/// hung release must fail the test, not hang it.
const INVOCATION_LIMIT: Duration = Duration::from_secs(120);

/// The Compose service every scenario releases.
pub const TARGET: &str = "app";

/// Builds the demo images `docker-flow-e2e-demo:v1..v3` once per process.
///
/// The tags are fixed rather than unique per run so that Docker's layer cache makes them
/// free after the first run, the way the Docker adapter's own tests do it; containers, which
/// carry the state a test could leak, are unique per test and removed by its guard.
pub async fn demo_images() {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let docker = docker().await;
            for version in DEMO_VERSIONS {
                let tag = format!("{DEMO_REPOSITORY}:{version}");
                build_demo_image(&docker, &tag, version)
                    .await
                    .unwrap_or_else(|error| panic!("building {tag}: {error}"));
            }
        })
        .await;
}

/// The Compose file of the released service: the demo image at `${DEMO_TAG}`, its single
/// port exposed on the project network only, and `DEMO_UNHEALTHY` passed through so that a
/// test can release instances whose health check fails. `extra` is appended to the service.
pub fn demo_compose(extra: &str) -> String {
    format!(
        "services:\n  \
           {TARGET}:\n    \
             image: {DEMO_REPOSITORY}:${{DEMO_TAG:-v1}}\n    \
             expose:\n      - \"8080\"\n    \
             environment:\n      \
               DEMO_UNHEALTHY: ${{DEMO_UNHEALTHY:-0}}\n\
         {extra}"
    )
}

/// How one `docker-flow` invocation ended.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (`-1` when a signal ended the process).
    pub code: i32,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Outcome {
    /// Panics, showing both streams, unless the exit code is `expected`.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "docker-flow exited {} (expected {expected})\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless stderr contains every one of `parts`.
    #[track_caller]
    pub fn assert_stderr_names(&self, parts: &[&str]) -> &Self {
        for part in parts {
            assert!(
                self.stderr.contains(part),
                "stderr does not mention {part:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// One container of a project, as the engine lists it.
#[derive(Debug, Clone)]
pub struct Container {
    /// The engine's id.
    pub id: String,
    /// The name, without the leading `/`.
    pub name: String,
    /// `running`, `exited`, …
    pub state: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

impl Container {
    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// A scratch directory holding a Compose file, in which `docker-flow` runs against the real
/// engine under a Compose project name no other test uses. Everything the project started is
/// removed when it is dropped.
pub struct Site {
    dir: tempfile::TempDir,
    docker: Docker,
    guard: ProjectGuard,
}

impl Site {
    /// A new site whose `docker-compose.yml` is `compose`; the project is named after
    /// `prefix` and made unique.
    pub async fn new(prefix: &str, compose: &str) -> Site {
        let docker = docker().await;
        let dir = tempfile::Builder::new()
            .prefix("docker-flow-e2e-")
            .tempdir()
            .expect("a temporary directory");
        let site = Site {
            dir,
            docker,
            guard: ProjectGuard::new(unique_project(&format!("e2e-{prefix}"))),
        };
        site.write("docker-compose.yml", compose);
        site
    }

    /// The Compose project name.
    pub fn project(&self) -> &str {
        self.guard.project()
    }

    /// The registry name of the released service: `<project>-app`.
    pub fn service(&self) -> String {
        format!("{}-{TARGET}", self.project())
    }

    /// The site's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` in the site's directory.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir().join(name), text)
            .unwrap_or_else(|error| panic!("writing {name}: {error}"));
    }

    /// The directory the embedded file store keeps state in, beside the Compose file.
    pub fn store_dir(&self) -> PathBuf {
        self.dir().join(".docker-flow")
    }

    /// Where the state of the released service is stored.
    pub fn state_path(&self) -> PathBuf {
        self.store_dir().join(self.service()).join("state.json")
    }

    /// The stored state file as bytes, `None` when there is none.
    pub fn state_bytes(&self) -> Option<Vec<u8>> {
        match std::fs::read(self.state_path()) {
            Ok(bytes) => Some(bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => panic!("reading {}: {error}", self.state_path().display()),
        }
    }

    /// The stored state, parsed; panics when there is none.
    pub fn state(&self) -> serde_json::Value {
        let bytes = self
            .state_bytes()
            .unwrap_or_else(|| panic!("no state stored at {}", self.state_path().display()));
        serde_json::from_slice(&bytes).expect("state.json is JSON")
    }

    /// Runs `docker-flow -p <project> <args>` in the site's directory with `env` added.
    ///
    /// `FLOW*` variables of the test's own environment are removed so that nothing outside
    /// the test changes what it runs; `DOCKER_HOST` is kept, as the fixtures use it too.
    pub async fn flow(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let child = self.spawn_flow(args, env);
        finish(child).await
    }

    /// Starts `docker-flow -p <project> <args>` in the background (see [`Site::flow`]).
    pub fn spawn_flow(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
        let mut command = tokio::process::Command::new(docker_flow_binary());
        command
            .current_dir(self.dir())
            .arg("-p")
            .arg(self.project())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FLOW") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start docker-flow: {error}"))
    }

    /// Every container of the project, running or not, sorted by name.
    pub async fn containers(&self) -> Vec<Container> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={}", self.project())],
        )]);
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .expect("listing the project's containers");
        let mut containers: Vec<Container> = listed
            .into_iter()
            .map(|summary| Container {
                id: summary.id.unwrap_or_default(),
                name: summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: summary.labels.unwrap_or_default(),
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        containers
    }

    /// The containers of one colour of the target.
    pub async fn colour(&self, colour: &str) -> Vec<Container> {
        let service = format!("{TARGET}-{colour}");
        self.containers()
            .await
            .into_iter()
            .filter(|c| c.labels.get("com.docker.compose.service") == Some(&service))
            .collect()
    }

    /// The names of the running containers of one colour.
    pub async fn running(&self, colour: &str) -> Vec<String> {
        self.colour(colour)
            .await
            .into_iter()
            .filter(Container::running)
            .map(|c| c.name)
            .collect()
    }

    /// The name docker-flow gives instance `number` of `colour`.
    pub fn instance(&self, colour: &str, number: u32) -> String {
        format!("{}-{TARGET}-{colour}-{number}", self.project())
    }

    /// The Docker client the site lists with.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Panics unless the project has no container at all and nothing was stored.
    #[track_caller]
    pub fn assert_nothing_stored(&self) {
        assert!(
            !self.store_dir().exists(),
            "{} was created by a refused invocation",
            self.store_dir().display()
        );
    }

    /// Panics unless the project has no container.
    pub async fn assert_no_containers(&self) {
        let containers = self.containers().await;
        assert!(
            containers.is_empty(),
            "a refused invocation left containers: {:?}",
            containers.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
    }
}

/// Waits (bounded) for a started `docker-flow` to end and collects what it printed.
pub async fn finish(child: tokio::process::Child) -> Outcome {
    let output = tokio::time::timeout(INVOCATION_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("docker-flow ran longer than {INVOCATION_LIMIT:?}"))
        .expect("waiting for docker-flow");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The body of `GET /` from a container on its project network, port 8080.
///
/// A plain HTTP/1.0-style exchange over a `TcpStream` (`Connection: close`, read to the end)
/// is all the demo server needs; the traffic stays on the engine's local bridge.
pub async fn get_root(docker: &Docker, container: &str) -> String {
    let inspected = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap_or_else(|error| panic!("inspecting {container}: {error}"));
    let ip: IpAddr = inspected
        .network_settings
        .and_then(|settings| settings.networks)
        .and_then(|networks| {
            networks
                .into_values()
                .find_map(|network| network.ip_address.filter(|ip| !ip.is_empty()))
        })
        .unwrap_or_else(|| panic!("{container} has no IP address"))
        .parse()
        .expect("the engine reports IP addresses");
    let address = SocketAddr::new(ip, 8080);
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(5);
        let mut stream = TcpStream::connect_timeout(&address, timeout)
            .unwrap_or_else(|error| panic!("connecting to {address}: {error}"));
        stream.set_read_timeout(Some(timeout)).expect("a timeout");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            .expect("sending the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("reading the response");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "GET / on {address} answered: {response}"
        );
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.trim().to_string())
            .unwrap_or_default()
    })
    .await
    .expect("the request thread")
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts the proxy (the code `docker-flow proxy serve` runs) with its state in `state_dir`,
/// its API and HTTP frontend on free loopback ports; returns it with the frontend's address.
pub async fn start_proxy(state_dir: &Path) -> (flow_proxy::RunningProxy, SocketAddr) {
    let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = flow_proxy::ServeConfig {
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..flow_proxy::ServeConfig::new(state_dir, vec![bind])
    };
    let proxy = flow_proxy::start(config).await.unwrap_or_else(|e| {
        panic!("the proxy did not start (is Debian's haproxy installed?): {e}")
    });
    (proxy, bind)
}

/// A [`Site`] behind a running proxy, with the flags that point `docker-flow` at it. The
/// proxy's state directory lives as long as it does.
pub struct ProxiedSite {
    /// The site released into.
    pub site: Site,
    /// The proxy.
    pub proxy: flow_proxy::RunningProxy,
    /// Its HTTP frontend.
    pub bind: SocketAddr,
    _state_dir: tempfile::TempDir,
}

impl ProxiedSite {
    /// A new site (see [`Site::new`]) with the demo Compose file, and a proxy for it.
    pub async fn new(prefix: &str) -> ProxiedSite {
        demo_images().await;
        let site = Site::new(prefix, &demo_compose("")).await;
        let state_dir = tempfile::tempdir().expect("a proxy state directory");
        let (proxy, bind) = start_proxy(state_dir.path()).await;
        ProxiedSite {
            site,
            proxy,
            bind,
            _state_dir: state_dir,
        }
    }

    /// `-t app -b --json` and the proxy's address: what every invocation, `status` too, takes.
    pub fn flags(&self) -> Vec<String> {
        let api_port = self.proxy.api_addr().port().to_string();
        [
            "-t",
            "app",
            "-b",
            "--json",
            "--proxy-host",
            "127.0.0.1",
            "--proxy-reconf-port",
            &api_port,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// [`ProxiedSite::flags`], the route on `/` with a 20 s drain timeout, then `more`.
    pub fn release_args(&self, more: &[&str]) -> Vec<String> {
        let mut args = self.flags();
        args.extend(
            ["--service-path", "/", "--drain-timeout", "20s"]
                .iter()
                .chain(more)
                .map(|s| s.to_string()),
        );
        args
    }

    /// Runs a release with [`ProxiedSite::release_args`] (see [`release`]), with
    /// `DEMO_TAG=tag` when a tag is given.
    pub async fn release(&self, more: &[&str], tag: Option<&str>) -> (Option<Instant>, Instant) {
        let args = self.release_args(more);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = tag.map(|t| ("DEMO_TAG", t)).into_iter().collect();
        release(&self.site, &args, &env).await
    }

    /// `docker-flow status --json`, parsed; asserts it succeeds.
    pub async fn status(&self) -> serde_json::Value {
        let mut args = self.flags();
        args.push("status".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let outcome = self.site.flow(&args, &[]).await;
        outcome.assert_code(0);
        events(&outcome.stdout, "status")
            .pop()
            .unwrap_or_else(|| panic!("no status line: {}", outcome.stdout))
    }
}

/// What a `--json` run's watcher wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Read on.
    Continue,
    /// SIGKILL the process now.
    Kill,
}

/// How a watched `--json` run ended.
#[derive(Debug)]
pub struct Watched {
    /// The exit code (`None`: a signal ended it, e.g. the watcher's kill).
    pub code: Option<i32>,
    /// Every line it printed on stdout.
    pub lines: Vec<String>,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Watched {
    /// Panics, showing both streams, unless the run exited 0.
    #[track_caller]
    pub fn assert_succeeded(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed\n--- stdout\n{}\n--- stderr\n{}",
            self.lines.join("\n"),
            self.stderr
        );
    }

    /// The lines that are `event` events, parsed.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        events(&self.lines.join("\n"), event)
    }
}

/// Runs `docker-flow --json …` and hands every event line, parsed, to `watch` as it is
/// printed; SIGKILLs the process when `watch` says so. Bounded like [`Site::flow`].
pub async fn watch_json(
    site: &Site,
    args: &[&str],
    env: &[(&str, &str)],
    mut watch: impl FnMut(&serde_json::Value) -> Watch,
) -> Watched {
    let mut child = site.spawn_flow(args, env);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    });
    let reading = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        while let Some(line) = lines
            .next_line()
            .await
            .expect("reading docker-flow's stdout")
        {
            let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
            printed.push(line);
            if let Some(event) = parsed {
                if watch(&event) == Watch::Kill {
                    child.start_kill().expect("SIGKILL docker-flow");
                    break;
                }
            }
        }
        let status = child.wait().await.expect("waiting for docker-flow");
        (status.code(), printed)
    };
    let (code, lines) = tokio::time::timeout(INVOCATION_LIMIT, reading)
        .await
        .unwrap_or_else(|_| panic!("docker-flow {args:?} ran longer than {INVOCATION_LIMIT:?}"));
    Watched {
        code,
        lines,
        stderr: errors.await.unwrap_or_default(),
    }
}

/// Runs `docker-flow` with `--json` among `args`, asserting it succeeds; returns the instant
/// its deploy reported the new instances healthy (when it did) and the instant it returned.
pub async fn release(
    site: &Site,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<Instant>, Instant) {
    let mut healthy_at = None;
    let run = watch_json(site, args, env, |event| {
        let phase = |name: &str| event["event"] == "phase-finished" && event["phase"] == name;
        if healthy_at.is_none() && phase("healthy") {
            healthy_at = Some(Instant::now());
        }
        if phase("switch") || phase("drain") {
            println!("{}: {event}", args.join(" "));
        }
        Watch::Continue
    })
    .await;
    let returned = Instant::now();
    run.assert_succeeded(&format!("docker-flow {args:?}"));
    (healthy_at, returned)
}

/// The stdout lines of a `docker-flow --json` run that are `event` events.
pub fn events(lines: &str, event: &str) -> Vec<serde_json::Value> {
    lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|value| value["event"] == event)
        .collect()
}
