//! Crash safety: the real `docker-flow` binary SIGKILLed at every phase of a release, behind
//! the real HAProxy-backed proxy with a constant load, then the next release (or rollback)
//! run to the end. After each, the stored state names a colour whose instances run and are
//! exactly what the proxy routes to, nothing the killed run left remains, the lock was free
//! at once, and no request of the load failed.
//!
//! The moment of each kill is read from the `--json` event stream. The one between the
//! proxy switch and the commit is made certain rather than raced: from the `healthy` event
//! on, the test holds the file store's `guard` (the OS lock every compare-and-swap takes),
//! so the commit waits while the switch goes ahead, and the kill lands after the `switch`
//! event with the state still unchanged. The kill during stop-old's drain holds a request
//! open on the old colour (its body not yet sent), so the drain waits for it; the next run
//! must drain it too before it removes that colour, and the request is answered.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::load::{assert_only, Load, LoadShape, Sample};
use crate::support::{watch_json, ProxiedSite, Site, Watch, Watched, DEMO_REPOSITORY};

/// A constant, light load: a few thousand requests a phase on a busy 2-core machine.
const LOAD: LoadShape = LoadShape {
    clients_per_kind: 4,
    pause: Some(Duration::from_millis(5)),
    max_time: Duration::from_secs(300),
    max_requests: 300_000,
};

/// Where a release is killed, named by the event that marks the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// The new instances were started (`phase-finished` `start`).
    Started,
    /// The wait for health is on, not all healthy yet (`waiting-healthy`).
    HealthWait,
    /// The proxy was switched, the commit waits (`phase-finished` `switch`).
    Switched,
    /// The state was committed, stop-old not begun (`phase-finished` `commit`).
    Committed,
    /// stop-old drains an open session on the old colour (`draining` with sessions).
    Draining,
}

impl KillPoint {
    fn name(self) -> &'static str {
        match self {
            KillPoint::Started => "while starting",
            KillPoint::HealthWait => "during the health wait",
            KillPoint::Switched => "after the switch, before the commit",
            KillPoint::Committed => "right after the commit",
            KillPoint::Draining => "during stop-old's drain",
        }
    }

    fn reached(self, event: &Value) -> bool {
        let finished = |phase: &str| {
            event["event"] == "phase-finished"
                && event["step"] == "deploy"
                && event["phase"] == phase
        };
        match self {
            KillPoint::Started => finished("start"),
            KillPoint::HealthWait => {
                event["event"] == "waiting-healthy"
                    && event["healthy"].as_u64() < event["total"].as_u64()
            }
            KillPoint::Switched => finished("switch"),
            KillPoint::Committed => finished("commit"),
            KillPoint::Draining => {
                event["event"] == "draining" && event["sessions"].as_u64().unwrap_or(0) > 0
            }
        }
    }
}

/// One phase of the test: a release killed at `point`, then the next run.
struct Scenario {
    point: KillPoint,
    /// The `--flow` (and more) of the killed release.
    killed_flow: &'static [&'static str],
    /// The version the killed release deploys.
    killed_tag: &'static str,
    /// The next run: a deploy of `next_tag` (with stop-old), or a rollback (`None`).
    next_tag: Option<&'static str>,
    /// What is live after the next run: colour and version.
    expect: (&'static str, &'static str),
    /// What a notice of the next run must say about the reconcile.
    notice: Option<&'static str>,
}

impl Scenario {
    fn name(&self) -> String {
        format!(
            "killed {} ({} next)",
            self.point.name(),
            if self.next_tag.is_some() {
                "deploy"
            } else {
                "rollback"
            }
        )
    }
}

/// What a killed release left for the next run.
struct Killed {
    /// When the phase began.
    began: Instant,
    /// The stored state before the killed release.
    state_before: Option<Vec<u8>>,
    /// The request held open on the old colour ([`KillPoint::Draining`]).
    held: Option<HeldRequest>,
}

/// A request sent through the proxy whose body is held back, so the server it went to keeps
/// a session open until [`HeldRequest::finish`].
struct HeldRequest {
    stream: TcpStream,
}

impl HeldRequest {
    fn open(proxy: SocketAddr) -> HeldRequest {
        let mut stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(5))
            .expect("connecting to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a timeout");
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: chaos\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            )
            .expect("sending the request head");
        HeldRequest { stream }
    }

    /// Sends the body and returns the response.
    fn finish(mut self) -> String {
        self.stream.write_all(b"x").expect("sending the body");
        let mut response = String::new();
        self.stream
            .read_to_string(&mut response)
            .expect("reading the response");
        response
    }
}

/// The exclusive OS lock on the file store's guard of `site`'s service, held until dropped:
/// every compare-and-swap of the store waits for it.
fn hold_guard(site: &Site) -> File {
    let path = site.store_dir().join(site.service()).join("guard");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    file
}

/// Runs `docker-flow` with `args` (and `DEMO_TAG=tag`), watching its events.
async fn run(
    site: &Site,
    args: Vec<String>,
    tag: Option<&str>,
    watch: impl FnMut(&Value) -> Watch,
) -> Watched {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = tag.map(|t| ("DEMO_TAG", t)).into_iter().collect();
    watch_json(site, &args, &env, watch).await
}

/// The requests of `samples` sent between `from` and `to`, and how many of them failed.
fn counted(samples: &[Sample], from: Instant, to: Instant) -> (usize, Vec<&Sample>) {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started >= from && s.started < to)
        .collect();
    let failed = window
        .iter()
        .copied()
        .filter(|s| s.outcome.is_err())
        .collect();
    (window.len(), failed)
}

/// Runs the killed release of `scenario` and SIGKILLs it at its point; checks that it died
/// before or after its commit as the point says and that the lock is free at once.
async fn kill(proxied: &ProxiedSite, scenario: &Scenario) -> Killed {
    let (site, point) = (&proxied.site, scenario.point);
    let began = Instant::now();
    let state_before = site.state_bytes();
    let held = (point == KillPoint::Draining).then(|| {
        let held = HeldRequest::open(proxied.bind);
        // Long enough for HAProxy to have sent it on to a server of the live colour.
        std::thread::sleep(Duration::from_millis(500));
        held
    });
    let guard: Mutex<Option<File>> = Mutex::new(None);
    let killed = run(
        site,
        proxied.release_args(scenario.killed_flow),
        Some(scenario.killed_tag),
        |event| {
            if point == KillPoint::Switched
                && event["event"] == "phase-finished"
                && event["phase"] == "healthy"
            {
                *guard.lock().unwrap() = Some(hold_guard(site));
            }
            if point.reached(event) {
                Watch::Kill
            } else {
                Watch::Continue
            }
        },
    )
    .await;
    drop(guard.lock().unwrap().take());
    assert_eq!(
        killed.code,
        None,
        "{}: the release was not killed\n--- stdout\n{}\n--- stderr\n{}",
        scenario.name(),
        killed.lines.join("\n"),
        killed.stderr
    );
    let committed = site.state_bytes() != state_before;
    assert_eq!(
        committed,
        matches!(point, KillPoint::Committed | KillPoint::Draining),
        "{}: killed before its commit, or after it, as the point says",
        scenario.name()
    );
    let after_kill = proxied.status().await;
    assert_eq!(
        after_kill["lock"]["lock"],
        "free",
        "{}: the file store's lock is free at once: {after_kill}",
        scenario.name()
    );
    Killed {
        began,
        state_before,
        held,
    }
}

/// Runs the next run of `scenario` after `killed` and checks that it converged: the stored
/// colour runs two healthy instances of the expected version, exactly what the proxy routes
/// to, the other colour runs nothing, and no request of `load` failed that was sent since
/// the kill (or since `load_began`, when the load began later). Returns the requests and
/// failures of the phase.
async fn converge(
    proxied: &ProxiedSite,
    load: &Load,
    scenario: &Scenario,
    killed: Killed,
    load_began: Option<Instant>,
) -> (usize, usize) {
    let (site, name) = (&proxied.site, scenario.name());
    let finishing: Arc<Mutex<Option<tokio::task::JoinHandle<String>>>> = Arc::new(Mutex::new(None));
    let mut held = killed.held;
    let flow = if scenario.next_tag.is_some() {
        "deploy,stop-old"
    } else {
        "rollback,stop-old"
    };
    let next = {
        let finishing = finishing.clone();
        run(
            site,
            proxied.release_args(&["-F", flow]),
            scenario.next_tag,
            move |event| {
                let still_open = event["event"] == "notice"
                    && event["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("session(s) still open on leftover"));
                if still_open {
                    if let Some(request) = held.take() {
                        // The drain must wait for it: the body comes a second later.
                        *finishing.lock().unwrap() = Some(tokio::task::spawn_blocking(move || {
                            std::thread::sleep(Duration::from_secs(1));
                            request.finish()
                        }));
                    }
                }
                Watch::Continue
            },
        )
        .await
    };
    next.assert_succeeded(&format!("the run after the release {name}"));
    let done = Instant::now();
    let (expected_colour, expected_tag) = scenario.expect;

    // Counted first, so a failing check below still shows the figures.
    let samples = load.snapshot();
    let (requests, failed) = counted(
        &samples,
        load_began.map_or(killed.began, |began| began.max(killed.began)),
        done,
    );
    println!(
        "chaos: {name}: {requests} requests, {} failed",
        failed.len()
    );

    // The notices name what was reconciled.
    let notices: Vec<String> = next
        .events("notice")
        .iter()
        .filter_map(|n| n["message"].as_str().map(str::to_string))
        .collect();
    if let Some(wanted) = scenario.notice {
        assert!(
            notices.iter().any(|n| n.contains(wanted)),
            "{name}: no notice says {wanted:?}: {notices:?}"
        );
    }
    if scenario.point == KillPoint::Draining {
        let request = finishing.lock().unwrap().take().unwrap_or_else(|| {
            panic!("{name}: the next run did not drain the open session: {notices:?}")
        });
        let response = request.await.expect("the held request");
        // Answered by the colour that was live when it was sent.
        let before: Value = serde_json::from_slice(&killed.state_before.unwrap_or_default())
            .expect("a state before the kill");
        let version = before["last_release"]["image"]
            .as_str()
            .and_then(|image| image.rsplit_once(':'))
            .map(|(_, tag)| tag.to_string())
            .unwrap_or_default();
        assert!(
            response.starts_with("HTTP/1.1 200")
                && response.trim_end().ends_with(&format!("\r\n\r\n{version}")),
            "{name}: the session the next run drained was answered by {version}: {response}"
        );
    }

    // State, containers and the proxy agree.
    let state = site.state();
    assert_eq!(state["color"], expected_colour, "{name}: {state}");
    assert_eq!(
        state["last_release"]["image"],
        format!("{DEMO_REPOSITORY}:{expected_tag}"),
        "{name}"
    );
    let seen = proxied.status().await;
    assert_eq!(seen["live_color"], expected_colour, "{name}: {seen}");
    assert_eq!(seen["lock"]["lock"], "free", "{name}: {seen}");
    let instances = seen["instances"].as_array().cloned().unwrap_or_default();
    assert_eq!(instances.len(), 2, "{name}: {seen}");
    assert!(
        instances.iter().all(|i| i["health"] == "healthy"),
        "{name}: {seen}"
    );
    let live: BTreeSet<String> = instances
        .iter()
        .filter_map(|i| i["address"].as_str().map(str::to_string))
        .collect();
    assert_eq!(seen["proxy"]["route"], "routed", "{name}: {seen}");
    assert_eq!(seen["proxy"]["color"], expected_colour, "{name}: {seen}");
    let routed: BTreeSet<String> = seen["proxy"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["active"] == true)
        .filter_map(|s| s["address"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        routed, live,
        "{name}: the proxy routes exactly the live instances: {seen}"
    );
    let other = if expected_colour == "blue" {
        "green"
    } else {
        "blue"
    };
    assert_eq!(site.running(expected_colour).await.len(), 2, "{name}");
    assert!(
        site.running(other).await.is_empty(),
        "{name}: stop-old stopped the old colour; nothing of the killed run runs"
    );
    assert!(
        site.colour(other).await.len() <= 2,
        "{name}: no leftover beside the stopped old instances"
    );
    assert_only(
        &load.snapshot(),
        done,
        expected_tag,
        &format!("the run after the release {name}"),
    );
    assert!(
        failed.is_empty(),
        "{name}: {} of {requests} requests failed, first ones: {:?}",
        failed.len(),
        failed
            .iter()
            .take(5)
            .map(|s| &s.outcome)
            .collect::<Vec<_>>()
    );
    assert!(requests >= 500, "{name}: only {requests} requests");
    (requests, failed.len())
}

/// Stops `load` and checks that none of its requests failed.
async fn stop_without_failures(load: Load, kills: usize) {
    let samples = load.stop().await;
    let failed = samples.iter().filter(|s| s.outcome.is_err()).count();
    println!(
        "chaos: {} requests in all, {failed} failed, over {kills} kill(s)",
        samples.len()
    );
    assert_eq!(failed, 0);
}

const DEPLOY_STOP_OLD: &[&str] = &["-F", "deploy,stop-old"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_killed_at_any_phase_converges_on_the_next_run_and_fails_no_request() {
    let proxied = ProxiedSite::new("chaos").await;
    proxied
        .release(&["-s", "2", "-F", "deploy,proxy"], Some("v1"))
        .await;
    let _exclusive = crate::load::exclusive().await;
    let load = Load::start(format!("http://{}/", proxied.bind), LOAD);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!load.snapshot().is_empty(), "the load reaches the proxy");
    let switched_back = Some("pointing it back at the live");
    let scenarios = [
        Scenario {
            point: KillPoint::Started,
            killed_flow: DEPLOY_STOP_OLD,
            killed_tag: "v2",
            next_tag: Some("v2"),
            expect: ("green", "v2"),
            notice: Some("removing 2 leftover instance(s)"),
        },
        Scenario {
            point: KillPoint::HealthWait,
            killed_flow: DEPLOY_STOP_OLD,
            killed_tag: "v3",
            next_tag: Some("v3"),
            expect: ("blue", "v3"),
            notice: Some("removing 2 leftover instance(s)"),
        },
        Scenario {
            point: KillPoint::Switched,
            killed_flow: DEPLOY_STOP_OLD,
            killed_tag: "v1",
            next_tag: Some("v1"),
            expect: ("green", "v1"),
            notice: switched_back,
        },
        // Killed in blue again; the rollback brings back v3 (blue's previous release) from
        // its stored spec, after pointing the proxy back at green and removing the v2 it
        // served.
        Scenario {
            point: KillPoint::Switched,
            killed_flow: DEPLOY_STOP_OLD,
            killed_tag: "v2",
            next_tag: None,
            expect: ("blue", "v3"),
            notice: switched_back,
        },
        Scenario {
            point: KillPoint::Committed,
            killed_flow: DEPLOY_STOP_OLD,
            killed_tag: "v2",
            next_tag: Some("v1"),
            expect: ("blue", "v1"),
            notice: Some("removing 2 leftover instance(s)"),
        },
        Scenario {
            point: KillPoint::Draining,
            killed_flow: DEPLOY_STOP_OLD,
            killed_tag: "v3",
            next_tag: Some("v2"),
            expect: ("blue", "v2"),
            notice: Some("session(s) still open on leftover"),
        },
    ];
    for scenario in &scenarios {
        let killed = kill(&proxied, scenario).await;
        converge(&proxied, &load, scenario, killed, None).await;
    }
    stop_without_failures(load, scenarios.len()).await;
    proxied.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_release_killed_after_its_switch_is_adopted_by_the_next_under_load() {
    let proxied = ProxiedSite::new("chaos-first").await;
    let _exclusive = crate::load::exclusive().await;
    // Nothing stored yet, and the proxy routes to the killed release's instances.
    let scenario = Scenario {
        point: KillPoint::Switched,
        killed_flow: &["-s", "2", "-F", "deploy,proxy"],
        killed_tag: "v1",
        next_tag: Some("v2"),
        expect: ("green", "v2"),
        notice: Some("taking app-blue as the live release"),
    };
    let killed = kill(&proxied, &scenario).await;
    assert_eq!(killed.state_before, None);
    let load_began = Instant::now();
    let load = Load::start(format!("http://{}/", proxied.bind), LOAD);
    tokio::time::sleep(Duration::from_secs(1)).await;
    converge(&proxied, &load, &scenario, killed, Some(load_began)).await;
    let state = proxied.site.state();
    assert_eq!(
        state["previous_release"]["image"],
        format!("{DEMO_REPOSITORY}:v1"),
        "the adopted release is the one a rollback returns to: {state}"
    );
    stop_without_failures(load, 1).await;
    proxied.proxy.shutdown().await;
}
