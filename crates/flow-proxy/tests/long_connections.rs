//! Long connections through the proxy: real WebSocket clients and servers (tokio-tungstenite)
//! on loopback, through a real `proxy serve` with HAProxy.
//!
//! * A WebSocket open on the old colour stays on it after a switch, keeps exchanging
//!   messages, and is counted in its server's sessions until it closes; new ones go to the
//!   new colour.
//! * A release whose old colour holds a WebSocket that does not close waits for it up to the
//!   drain timeout, then stops the old instances, which closes it.
//! * `timeoutTunnel` closes an idle WebSocket of its route; one without it stays.
//! * Reloads of HAProxy and a restart of `proxy serve` that adopts HAProxy keep open
//!   WebSockets, and their sessions are still counted.

mod common;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{config, processes, Backend, TestProxy};
use flow_core::memory::{MemoryOrchestrator, MemoryRegistry};
use flow_core::release::{
    Engine, Event, Phase, Ports, ReleaseOptions, RouteSettings, Step, Timeouts,
};
use flow_core::{
    Color, Diagnosis, Group, Health, Instance, Orchestrator, OrchestratorError, PathType, Proxy,
    RecoveredSpec, ReleaseSpec, Route, ServiceName, TargetInfo,
};
use flow_proxy::HttpProxy;
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A loopback WebSocket server answering each text message `m` with `<name>:m`. Dropping it
/// closes every connection it has, as a stopped container does.
#[derive(Debug)]
struct WsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WsServer {
    async fn start(name: &str) -> WsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                connections.spawn(echo(stream, name.clone()));
            }
        });
        WsServer { addr, task }
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one WebSocket (HAProxy's health checks connect and leave: no handshake, no echo).
async fn echo(stream: TcpStream, name: String) {
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            let reply = Message::text(format!("{name}:{}", text.as_str()));
            if socket.send(reply).await.is_err() {
                return;
            }
        }
    }
}

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket through the proxy's frontend at `bind`.
async fn open(bind: SocketAddr, path: &str) -> Client {
    let (socket, response) = tokio_tungstenite::connect_async(format!("ws://{bind}{path}"))
        .await
        .expect("the WebSocket handshake through the proxy succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

/// Sends `text` and returns the reply's text.
async fn exchange(socket: &mut Client, text: &str) -> String {
    socket
        .send(Message::text(text))
        .await
        .expect("the message is sent");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(reply)))) => return reply.as_str().to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no reply to {text:?}: {other:?}"),
        }
    }
}

/// Waits (up to `limit`) for the connection to end: a close frame, an error or the end of
/// the stream. Returns how long it took, `None` when it stayed open.
async fn closed_within(socket: &mut Client, limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    tokio::time::timeout(limit, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .ok()
    .map(|()| began.elapsed())
}

/// Polls `sessions` until it is `wanted` (up to 5 s) and returns the last count.
async fn sessions_become(
    proxy: &HttpProxy,
    service: &ServiceName,
    server: SocketAddr,
    wanted: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sessions = proxy.sessions(service, &[server]).await.unwrap();
        if sessions == wanted || Instant::now() >= deadline {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn chat() -> ServiceName {
    ServiceName::new("chat").unwrap()
}

fn route(color: Color) -> Route {
    Route {
        service: chat(),
        color: Some(color),
        paths: vec!["/chat".into()],
        domain: None,
        path_type: PathType::Prefix,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_stays_on_the_old_colour_and_counts_until_it_closes() {
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let adapter = HttpProxy::new("127.0.0.1", proxy.api.port(), None);
    let (blue, green) = (
        WsServer::start("blue").await,
        WsServer::start("green").await,
    );
    adapter
        .reconfigure(&route(Color::Blue), &[blue.addr])
        .await
        .unwrap();
    let mut old = open(proxy.bind, "/chat").await;
    assert_eq!(exchange(&mut old, "1").await, "blue:1");

    // The switch a release does: green in, blue draining.
    adapter
        .reconfigure(&route(Color::Green), &[green.addr])
        .await
        .unwrap();
    for n in 2..=4 {
        assert_eq!(
            exchange(&mut old, &n.to_string()).await,
            format!("blue:{n}")
        );
    }
    assert_eq!(
        adapter.sessions(&chat(), &[blue.addr]).await.unwrap(),
        1,
        "the open WebSocket is blue's session, which a release's drain waits for"
    );
    let mut new = open(proxy.bind, "/chat").await;
    assert_eq!(exchange(&mut new, "hello").await, "green:hello");
    assert_eq!(adapter.sessions(&chat(), &[green.addr]).await.unwrap(), 1);

    // Time alone does not end it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(exchange(&mut old, "5").await, "blue:5");
    assert_eq!(adapter.sessions(&chat(), &[blue.addr]).await.unwrap(), 1);

    old.close(None).await.unwrap();
    assert_eq!(
        sessions_become(&adapter, &chat(), blue.addr, 0).await,
        0,
        "closed by the client, blue has drained"
    );
    assert_eq!(exchange(&mut new, "still").await, "green:still");
}

/// The memory orchestrator, with a real WebSocket server behind each instance it runs: an
/// instance's address is its server's, and stopping or removing it stops the server (which
/// closes its connections, as stopping a container does).
#[derive(Debug, Clone)]
struct LoopbackOrchestrator {
    memory: MemoryOrchestrator,
    servers: Arc<Mutex<HashMap<String, WsServer>>>,
}

impl LoopbackOrchestrator {
    fn new(target: &str) -> LoopbackOrchestrator {
        LoopbackOrchestrator {
            memory: MemoryOrchestrator::new().with_target(target, "chat:1"),
            servers: Arc::default(),
        }
    }

    /// Starts a server named after its colour for each of `instances`.
    async fn serve(&self, mut instances: Vec<Instance>) -> Vec<Instance> {
        for instance in &mut instances {
            let color = instance.group.color.map(|c| c.to_string());
            let server = WsServer::start(color.as_deref().unwrap_or("plain")).await;
            instance.address = Some(server.addr);
            self.servers
                .lock()
                .unwrap()
                .insert(instance.id.clone(), server);
        }
        instances
    }

    /// `instances` with the addresses of their servers.
    fn addressed(&self, mut instances: Vec<Instance>) -> Vec<Instance> {
        let servers = self.servers.lock().unwrap();
        for instance in &mut instances {
            if let Some(server) = servers.get(&instance.id) {
                instance.address = Some(server.addr);
            }
        }
        instances
    }

    fn retire(&self, instances: &[Instance]) {
        let mut servers = self.servers.lock().unwrap();
        for instance in instances {
            servers.remove(&instance.id);
        }
    }
}

impl fmt::Display for LoopbackOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("loopback WebSocket orchestrator")
    }
}

#[async_trait]
impl Orchestrator for LoopbackOrchestrator {
    async fn describe(&self, target: &str) -> Result<TargetInfo, OrchestratorError> {
        self.memory.describe(target).await
    }

    async fn prepare(&self, target: &str) -> Result<ReleaseSpec, OrchestratorError> {
        self.memory.prepare(target).await
    }

    async fn start_side_targets(&self, side_targets: &[String]) -> Result<(), OrchestratorError> {
        self.memory.start_side_targets(side_targets).await
    }

    async fn list(&self, group: &Group) -> Result<Vec<Instance>, OrchestratorError> {
        Ok(self.addressed(self.memory.list(group).await?))
    }

    async fn start(
        &self,
        group: &Group,
        numbers: &[u32],
        spec: &ReleaseSpec,
    ) -> Result<Vec<Instance>, OrchestratorError> {
        let started = self.memory.start(group, numbers, spec).await?;
        Ok(self.serve(started).await)
    }

    async fn resume(&self, instances: &[Instance]) -> Result<Vec<Instance>, OrchestratorError> {
        let resumed = self.memory.resume(instances).await?;
        Ok(self.serve(resumed).await)
    }

    async fn recover_spec(&self, instance: &Instance) -> Result<RecoveredSpec, OrchestratorError> {
        self.memory.recover_spec(instance).await
    }

    async fn health(&self, instance: &Instance) -> Result<Health, OrchestratorError> {
        self.memory.health(instance).await
    }

    async fn diagnose(&self, instance: &Instance) -> Result<Diagnosis, OrchestratorError> {
        self.memory.diagnose(instance).await
    }

    async fn stop(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        self.memory.stop(instances).await?;
        self.retire(instances);
        Ok(())
    }

    async fn remove(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        self.memory.remove(instances).await?;
        self.retire(instances);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_waits_for_an_open_websocket_up_to_the_drain_timeout_then_closes_it() {
    const DRAIN: Duration = Duration::from_secs(3);
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let adapter = Arc::new(HttpProxy::new("127.0.0.1", proxy.api.port(), None));
    let orchestrator = LoopbackOrchestrator::new("chat");
    let registry = MemoryRegistry::new();
    let release = |steps: Vec<Step>| {
        Engine::new(
            Ports {
                orchestrator: Arc::new(orchestrator.clone()),
                registry: Arc::new(registry.clone()),
                proxy: Some(adapter.clone()),
            },
            ReleaseOptions {
                service: chat(),
                target: "chat".into(),
                side_targets: Vec::new(),
                blue_green: true,
                steps,
                scale: None,
                route: Some(RouteSettings {
                    paths: vec!["/chat".into()],
                    domain: None,
                    path_type: PathType::Prefix,
                }),
                timeouts: Timeouts {
                    health_poll: Duration::from_millis(10),
                    drain: DRAIN,
                    drain_poll: Duration::from_millis(100),
                    ..Timeouts::default()
                },
                health_fail_fast: false,
                holder: "long connection test".into(),
            },
        )
        .expect("valid options")
    };

    let first = release(vec![Step::Deploy])
        .run(&|_: &Event| {})
        .await
        .expect("the first release succeeds");
    let old_color = first.live_color.expect("blue-green");
    let mut socket = open(proxy.bind, "/chat").await;
    assert_eq!(exchange(&mut socket, "0").await, format!("{old_color}:0"));

    // The next release, and meanwhile a client that keeps talking until it is cut off.
    let notices = Mutex::new(Vec::new());
    let observer = |event: &Event| {
        if let Event::Notice { message } = event {
            notices.lock().unwrap().push(message.clone());
        }
    };
    let began = Instant::now();
    let second = release(vec![Step::Deploy, Step::StopOld]);
    let talking = async {
        let mut replies = Vec::new();
        for n in 1.. {
            if socket.send(Message::text(n.to_string())).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
                Ok(Some(Ok(Message::Text(reply)))) => replies.push(reply.as_str().to_string()),
                _ => break,
            }
            assert!(
                began.elapsed() < DRAIN * 4,
                "the WebSocket was never closed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (replies, began.elapsed())
    };
    let (report, (replies, cut_after)) = tokio::join!(second.run(&observer), talking);
    let released_after = began.elapsed();
    let report = report.expect("the second release succeeds");

    assert_ne!(report.live_color, Some(old_color));
    let drain = report
        .timings
        .iter()
        .find(|t| t.step == Some(Step::StopOld) && t.phase == Phase::Drain)
        .expect("stop-old drained")
        .took;
    assert!(
        drain >= DRAIN && drain < DRAIN + Duration::from_secs(2),
        "the drain waited for the WebSocket up to the drain timeout ({DRAIN:?}), took {drain:?}"
    );
    let notices = notices.into_inner().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("1 session(s) still open after the drain timeout")),
        "{notices:?}"
    );
    assert!(
        replies.len() >= 10,
        "messages kept flowing during the drain: {replies:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with(&format!("{old_color}:"))),
        "{replies:?}"
    );
    assert!(
        cut_after >= DRAIN && cut_after <= released_after + Duration::from_secs(2),
        "closed when the old instance was stopped after the drain timeout: cut after {cut_after:?}, release done after {released_after:?}"
    );
    let mut fresh = open(proxy.bind, "/chat").await;
    let new_color = report.live_color.unwrap();
    assert_eq!(
        exchange(&mut fresh, "new").await,
        format!("{new_color}:new")
    );
    println!(
        "long connection drain: drain timeout {DRAIN:?}, drain took {drain:?}, WebSocket closed {cut_after:?} after the release began, release took {released_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_tunnel_closes_an_idle_websocket_of_its_route_only() {
    const TUNNEL: Duration = Duration::from_secs(2);
    let state = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start(state.path()).await;
    let (short, long) = (
        WsServer::start("short").await,
        WsServer::start("long").await,
    );
    let (status, json) = proxy
        .reconfigure(
            "short",
            "/short",
            &[short.addr],
            &format!("&timeoutTunnel={}", TUNNEL.as_secs()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) = proxy.reconfigure("long", "/long", &[long.addr], "").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(proxy
        .config_text(state.path())
        .contains(&format!("timeout tunnel {}s", TUNNEL.as_secs())));

    let mut idle = open(proxy.bind, "/short").await;
    let mut busy = open(proxy.bind, "/short").await;
    let mut other = open(proxy.bind, "/long").await;
    assert_eq!(exchange(&mut idle, "a").await, "short:a");
    assert_eq!(exchange(&mut other, "a").await, "long:a");

    // The timeout counts inactivity: a WebSocket of the same route that talks stays.
    let talking = async {
        let began = Instant::now();
        while began.elapsed() < TUNNEL * 2 {
            assert_eq!(exchange(&mut busy, "b").await, "short:b");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let (closed, ()) = tokio::join!(closed_within(&mut idle, TUNNEL * 4), talking);
    let closed = closed.expect("HAProxy closed the idle WebSocket of the route with timeoutTunnel");
    assert!(
        closed >= TUNNEL - Duration::from_millis(300) && closed < TUNNEL * 2,
        "closed after about {TUNNEL:?} idle, was {closed:?}"
    );
    assert_eq!(
        exchange(&mut other, "b").await,
        "long:b",
        "idle as long, the WebSocket of the route without timeoutTunnel stays"
    );
    println!("timeoutTunnel: {TUNNEL:?} set, idle WebSocket closed after {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_a_restart_of_proxy_serve_keep_open_websockets_counted() {
    let state = tempfile::tempdir().unwrap();
    let mut proxy = TestProxy::start(state.path()).await;
    let bind = proxy.bind;
    let adapter = HttpProxy::new("127.0.0.1", proxy.api.port(), None);
    let (blue, green) = (
        WsServer::start("blue").await,
        WsServer::start("green").await,
    );
    adapter
        .reconfigure(&route(Color::Blue), &[blue.addr])
        .await
        .unwrap();
    let mut socket = open(bind, "/chat").await;
    assert_eq!(exchange(&mut socket, "1").await, "blue:1");

    // A route of another service is a reload: the WebSocket stays with the old worker.
    let (_, worker) = processes(state.path()).await;
    let other = Backend::start("other").await;
    let (status, _) = proxy
        .reconfigure("other", "/other", &[other.addr], "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(processes(state.path()).await.1, worker, "a reload happened");
    assert_eq!(exchange(&mut socket, "2").await, "blue:2");
    assert_eq!(
        adapter.sessions(&chat(), &[blue.addr]).await.unwrap(),
        1,
        "the session the old worker holds is counted"
    );

    // Then the switch: blue drains, its WebSocket still counted.
    adapter
        .reconfigure(&route(Color::Green), &[green.addr])
        .await
        .unwrap();
    assert_eq!(exchange(&mut socket, "3").await, "blue:3");
    assert_eq!(adapter.sessions(&chat(), &[blue.addr]).await.unwrap(), 1);

    // A second reload while it drains (a removal), then `proxy serve` restarts and adopts
    // HAProxy.
    let (status, _, _) = proxy
        .api_text("GET", "/v1/docker-flow-proxy/remove?serviceName=other")
        .await;
    assert_eq!(status, StatusCode::OK);
    proxy.running.take().unwrap().detach().await;
    let adopted = TestProxy::start_with(config(state.path(), bind)).await;
    assert!(adopted.running.as_ref().unwrap().adopted_master().is_some());
    let adapter = HttpProxy::new("127.0.0.1", adopted.api.port(), None);
    assert_eq!(exchange(&mut socket, "4").await, "blue:4");
    assert_eq!(
        adapter.sessions(&chat(), &[blue.addr]).await.unwrap(),
        1,
        "still counted after two reloads and a restart of proxy serve"
    );
    let mut new = open(bind, "/chat").await;
    assert_eq!(exchange(&mut new, "hello").await, "green:hello");

    socket.close(None).await.unwrap();
    assert_eq!(sessions_become(&adapter, &chat(), blue.addr, 0).await, 0);
    assert_eq!(exchange(&mut new, "still").await, "green:still");
}
