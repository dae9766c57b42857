//! The proxy's own faults under a constant bounded load (half keep-alive, half new
//! connections), counting failed requests: the real `docker-flow proxy serve` binary, the
//! real HAProxy, and real backends (the demo server, as processes on loopback ports).
//!
//! Goals asserted: an upgrade (SIGTERM and a new `proxy serve`) and a `kill -9` of
//! `proxy serve` fail no request; a `kill -9` of HAProxy's worker or master is served again
//! within a second; a switch sent at once after any of these succeeds (the client adapter
//! releases use, `HttpProxy`); `--stop-haproxy` finishes the requests in flight within
//! `--stop-timeout` and cuts them after it. The figures are printed (`fault figures:`) and
//! reported in docs/benchmarks.md.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use flow_core::{Color, PathType, Proxy, Route, ServiceName};
use flow_proxy::HttpProxy;
use flow_tests::fixtures::{demo_server_binary, docker_flow_binary};
use rustix::process::{Pid, Signal};

use crate::load::{Load, LoadShape, Sample};

/// Rounds of the four faults, one after the other under the same load.
const ROUNDS: usize = 3;

/// 3 + 3 clients, each pausing 10 ms between requests: a constant load (about 300
/// requests/s) that leaves the two cores room for HAProxy's restarts.
const SHAPE: LoadShape = LoadShape {
    clients_per_kind: 3,
    pause: Some(Duration::from_millis(10)),
    max_time: Duration::from_secs(240),
    max_requests: 400_000,
};

/// How long after a fault the load is watched before its failures are counted.
const SETTLE: Duration = Duration::from_millis(1500);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn signal(pid: i32, signal: Signal) {
    rustix::process::kill_process(Pid::from_raw(pid).expect("a pid"), signal)
        .unwrap_or_else(|e| panic!("cannot signal {pid}: {e}"));
}

/// A demo server answering its version, on a loopback port.
struct Backend {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Backend {
    fn start(version: &str) -> Backend {
        let addr = free_addr();
        let child = std::process::Command::new(demo_server_binary())
            .env("PORT", addr.port().to_string())
            .env("DEMO_VERSION", version)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the demo server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the demo server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Backend { child, addr }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `show proc` on HAProxy's master socket: (master pid, current worker pid), `None` when no
/// HAProxy answers there.
fn haproxy_processes(state: &Path) -> Option<(i32, i32)> {
    let mut stream = std::os::unix::net::UnixStream::connect(state.join("master.sock")).ok()?;
    stream.write_all(b"show proc\n").ok()?;
    stream.shutdown(std::net::Shutdown::Write).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let pid_of = |kind: &str| {
        reply
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(kind))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|pid| pid.parse().ok())
    };
    Some((pid_of("master")?, pid_of("worker")?))
}

/// Kills the HAProxy left running in `state` when the test ends early: `proxy serve` leaves
/// it serving on purpose.
struct HaproxyGuard(PathBuf);

impl Drop for HaproxyGuard {
    fn drop(&mut self) {
        if let Some((master, _)) = haproxy_processes(&self.0) {
            // Its workers exit with it.
            let _ =
                rustix::process::kill_process(Pid::from_raw(master).expect("a pid"), Signal::KILL);
        }
    }
}

/// One `docker-flow proxy serve` process, its stderr appended to `serve.log`.
struct ProxyServe {
    child: tokio::process::Child,
}

impl ProxyServe {
    fn spawn(dir: &Path, bind: SocketAddr, api: SocketAddr, extra: &[&str]) -> ProxyServe {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .expect("the log file opens");
        let child = tokio::process::Command::new(docker_flow_binary())
            .args(["proxy", "serve", "--no-auth", "--bind"])
            .arg(bind.to_string())
            .arg("--api-addr")
            .arg(api.to_string())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("docker-flow proxy serve starts");
        ProxyServe { child }
    }

    fn signal(&self, which: Signal) {
        signal(
            i32::try_from(self.child.id().expect("running")).unwrap(),
            which,
        );
    }

    async fn wait(mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("proxy serve did not exit within {limit:?}"))
            .expect("waiting for proxy serve")
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

/// `restarted in N ms`, as `proxy serve` last reported a restart of HAProxy.
fn last_restart(dir: &Path) -> String {
    log(dir)
        .lines()
        .rev()
        .find_map(|line| line.split_once("HAProxy restarted in "))
        .map(|(_, rest)| {
            format!(
                "HAProxy restarted in {}",
                rest.split(" (").next().unwrap_or(rest)
            )
        })
        .unwrap_or_else(|| "no restart reported".into())
}

/// Switches the route of `app` to `backends` the way a release's switch step does.
async fn switch(client: &HttpProxy, color: Color, backends: &[Backend]) {
    let route = Route {
        service: ServiceName::new("app").unwrap(),
        color: Some(color),
        paths: vec!["/".into()],
        domain: None,
        path_type: PathType::default(),
    };
    let servers: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    client
        .reconfigure(&route, &servers)
        .await
        .unwrap_or_else(|e| panic!("the switch to {color} failed: {e}"));
}

/// The failed requests that were in flight at or after `since`.
fn failed_since(samples: &[Sample], since: Instant) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.finished >= since && s.outcome.is_err())
        .collect()
}

/// How long after `since` requests failed: the end of the last failure (zero when none did).
fn recovery(failures: &[&Sample], since: Instant) -> Duration {
    failures
        .iter()
        .map(|s| s.finished.saturating_duration_since(since))
        .max()
        .unwrap_or_default()
}

fn describe<'a>(failures: &[&'a Sample]) -> Vec<&'a Result<String, String>> {
    failures.iter().take(5).map(|s| &s.outcome).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_serve_restarts_and_haproxy_faults_under_load() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dir = dir.path();
    let state = dir.join("state");
    let _guard = HaproxyGuard(state.clone());
    let (bind, api) = (free_addr(), free_addr());
    let blue = [Backend::start("v1"), Backend::start("v1")];
    let green = [Backend::start("v2"), Backend::start("v2")];
    let client = HttpProxy::new("127.0.0.1", api.port(), None);

    let _exclusive = crate::load::exclusive().await;
    let mut serve = ProxyServe::spawn(dir, bind, api, &[]);
    // Sent while the API is not listening yet: the client waits for it.
    switch(&client, Color::Blue, &blue).await;
    let load = Load::start(format!("http://{bind}/"), SHAPE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warm_up = load.snapshot();
    assert!(!warm_up.is_empty(), "the load reaches the proxy");
    assert!(failed_since(&warm_up, Instant::now() - Duration::from_secs(60)).is_empty());

    let mut color = Color::Blue;
    let next = |color: &mut Color| {
        *color = color.other();
        (*color, if *color == Color::Blue { &blue } else { &green })
    };
    for round in 1..=ROUNDS {
        // (a) An upgrade: SIGTERM, then a new proxy serve; a switch sent at once.
        let master_before = haproxy_processes(&state).expect("HAProxy runs").0;
        let fault = Instant::now();
        serve.signal(Signal::TERM);
        let status = serve.wait(Duration::from_secs(10)).await;
        assert!(status.success(), "SIGTERM: {status}\n{}", log(dir));
        serve = ProxyServe::spawn(dir, bind, api, &[]);
        let (to, backends) = next(&mut color);
        switch(&client, to, backends).await;
        let switched = fault.elapsed();
        tokio::time::sleep(SETTLE).await;
        let samples = load.snapshot();
        let failures = failed_since(&samples, fault);
        println!(
            "fault figures: round {round}: SIGTERM + restart of proxy serve: {} failed of {}; switch returned {} ms after the SIGTERM",
            failures.len(),
            samples.iter().filter(|s| s.finished >= fault).count(),
            switched.as_millis()
        );
        assert!(
            failures.is_empty(),
            "an upgrade of proxy serve failed requests: {:?}\n{}",
            describe(&failures),
            log(dir)
        );
        assert_eq!(
            haproxy_processes(&state).map(|p| p.0),
            Some(master_before),
            "the new proxy serve adopted the running HAProxy"
        );

        // (b) kill -9 of proxy serve, then a new one; a switch sent at once.
        let fault = Instant::now();
        serve.signal(Signal::KILL);
        let status = serve.wait(Duration::from_secs(10)).await;
        assert!(!status.success());
        serve = ProxyServe::spawn(dir, bind, api, &[]);
        let (to, backends) = next(&mut color);
        switch(&client, to, backends).await;
        let switched = fault.elapsed();
        tokio::time::sleep(SETTLE).await;
        let samples = load.snapshot();
        let failures = failed_since(&samples, fault);
        println!(
            "fault figures: round {round}: kill -9 of proxy serve + restart: {} failed of {}; switch returned {} ms after the kill",
            failures.len(),
            samples.iter().filter(|s| s.finished >= fault).count(),
            switched.as_millis()
        );
        assert!(
            failures.is_empty(),
            "a kill -9 of proxy serve failed requests: {:?}\n{}",
            describe(&failures),
            log(dir)
        );
        assert_eq!(
            haproxy_processes(&state).map(|p| p.0),
            Some(master_before),
            "the new proxy serve adopted the running HAProxy"
        );

        // (c), (d) kill -9 of HAProxy's worker, then of its master; a switch sent at once.
        for victim in ["worker", "master"] {
            let (master, worker) = haproxy_processes(&state).expect("HAProxy runs");
            let fault = Instant::now();
            signal(
                if victim == "worker" { worker } else { master },
                Signal::KILL,
            );
            let (to, backends) = next(&mut color);
            switch(&client, to, backends).await;
            let switched = fault.elapsed();
            tokio::time::sleep(SETTLE).await;
            let samples = load.snapshot();
            let failures = failed_since(&samples, fault);
            let recovered = recovery(&failures, fault);
            println!(
                "fault figures: round {round}: kill -9 of the HAProxy {victim}: {} failed of {}; served again {} ms after the kill ({}); switch returned {} ms after it",
                failures.len(),
                samples.iter().filter(|s| s.finished >= fault).count(),
                recovered.as_millis(),
                last_restart(dir),
                switched.as_millis()
            );
            assert!(
                recovered < Duration::from_secs(1),
                "requests failed for {recovered:?} after a kill -9 of the {victim}: {:?}\n{}",
                describe(&failures),
                log(dir)
            );
            assert_ne!(
                haproxy_processes(&state).map(|p| p.0),
                Some(master),
                "a new HAProxy master runs"
            );
        }
    }
    let samples = load.stop().await;
    let failed = samples.iter().filter(|s| s.outcome.is_err()).count();
    let elapsed = samples.last().map(|s| s.finished).unwrap() - samples[0].started;
    println!(
        "fault figures: load: {} requests in {:.1} s ({:.0}/s), {failed} failed in all",
        samples.len(),
        elapsed.as_secs_f64(),
        samples.len() as f64 / elapsed.as_secs_f64()
    );

    // (e) --stop-haproxy: the requests in flight finish within --stop-timeout…
    serve.signal(Signal::TERM);
    assert!(serve.wait(Duration::from_secs(10)).await.success());
    let serve = ProxyServe::spawn(dir, bind, api, &["--stop-haproxy", "--stop-timeout", "5s"]);
    switch(
        &client,
        color,
        if color == Color::Blue { &blue } else { &green },
    )
    .await;
    let (finished, stopped_after, refused) = stop_with_requests_in_flight(serve, bind).await;
    println!(
        "fault figures: --stop-haproxy --stop-timeout 5s: {} of {} slow requests (2 s) in flight answered; proxy serve and HAProxy stopped {} ms after SIGTERM",
        finished.iter().filter(|r| r.is_ok()).count(),
        finished.len(),
        stopped_after.as_millis()
    );
    assert!(
        finished.iter().all(Result::is_ok),
        "requests in flight were cut: {finished:?}\n{}",
        log(dir)
    );
    assert!(refused, "no new connection is taken once stopping");
    assert!(stopped_after < Duration::from_secs(5), "{stopped_after:?}");
    assert_eq!(haproxy_processes(&state), None, "HAProxy stopped");

    // … and are cut once it has passed.
    let serve = ProxyServe::spawn(dir, bind, api, &["--stop-haproxy", "--stop-timeout", "1s"]);
    switch(
        &client,
        color,
        if color == Color::Blue { &blue } else { &green },
    )
    .await;
    let (finished, stopped_after, _) = stop_with_requests_in_flight(serve, bind).await;
    println!(
        "fault figures: --stop-haproxy --stop-timeout 1s: {} of {} slow requests (2 s) in flight cut; stopped {} ms after SIGTERM",
        finished.iter().filter(|r| r.is_err()).count(),
        finished.len(),
        stopped_after.as_millis()
    );
    assert!(
        finished.iter().all(Result::is_err),
        "requests outlived --stop-timeout: {finished:?}"
    );
    assert!(
        stopped_after >= Duration::from_millis(900) && stopped_after < Duration::from_secs(3),
        "{stopped_after:?}"
    );
    assert_eq!(haproxy_processes(&state), None, "HAProxy stopped");
}

/// Sends 4 slow requests (`/slow`, 2 s) on new connections, SIGTERMs `serve` while they are
/// in flight, and returns their outcomes, how long `serve` took to exit after the SIGTERM,
/// and whether a new connection was refused meanwhile.
async fn stop_with_requests_in_flight(
    serve: ProxyServe,
    bind: SocketAddr,
) -> (Vec<Result<String, String>>, Duration, bool) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let request = client.get(format!("http://{bind}/slow"));
            tokio::spawn(async move {
                match request.send().await {
                    Ok(response) if response.status().is_success() => response
                        .text()
                        .await
                        .map(|body| body.trim().to_string())
                        .map_err(|e| e.to_string()),
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(error) => Err(error.to_string()),
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    serve.signal(Signal::TERM);
    let probe = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::net::TcpStream::connect(bind).await.is_err()
    });
    let status = serve.wait(Duration::from_secs(15)).await;
    let stopped_after = stopping.elapsed();
    assert!(status.success(), "{status}");
    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.unwrap());
    }
    (outcomes, stopped_after, probe.await.unwrap())
}

/// What `proxy serve` cannot serve stops it before HAProxy starts, with exit code 2 (bad
/// input) and a message naming the file or the address: a file of `--certs-dir` that is no
/// certificate, and an address given to `--bind` and `--bind-https`.
#[tokio::test]
async fn proxy_serve_refuses_a_bad_certificate_and_an_address_given_twice_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let _haproxy = HaproxyGuard(dir.path().join("state"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("shop.pem"), "not a certificate").unwrap();
    let (bind, api) = (free_addr(), free_addr());
    let https = free_addr().to_string();
    let certs_dir = certs.display().to_string();
    let serve = ProxyServe::spawn(
        dir.path(),
        bind,
        api,
        &["--bind-https", &https, "--certs-dir", &certs_dir],
    );
    let status = serve.wait(Duration::from_secs(30)).await;
    let printed = log(dir.path());
    assert_eq!(status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("shop.pem") && printed.contains("holds no certificate"),
        "{printed}"
    );
    assert!(haproxy_processes(&dir.path().join("state")).is_none());

    let twice = bind.to_string();
    let serve = ProxyServe::spawn(dir.path(), bind, api, &["--bind-https", &twice]);
    let status = serve.wait(Duration::from_secs(30)).await;
    let printed = log(dir.path());
    assert_eq!(status.code(), Some(2), "{printed}");
    assert!(
        printed.contains(&format!("{bind} is given twice")),
        "{printed}"
    );
}
