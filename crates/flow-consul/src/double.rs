//! A stateful in-process double of the parts of Consul's HTTP API docker-flow uses (feature
//! `double`), for tests where a real agent cannot be run.
//!
//! It serves plain HTTP/1.1 on `127.0.0.1:<free port>` and keeps everything in memory. What it
//! implements, with the shapes Consul documents:
//!
//! * **KV** `GET /v1/kv/<key>` — a JSON array of entries (`Key`, base64 `Value`, `Flags`,
//!   `CreateIndex`, `ModifyIndex`, `LockIndex`, `Session` when held); `404` with an empty body
//!   when nothing matches; `?raw` (the bare value), `?recurse` (every key under the prefix),
//!   `?keys` (key names, with an optional `?separator=`). `PUT` stores the body and answers
//!   `true`/`false`: `?cas=<ModifyIndex>` (0: create only), `?acquire=<session>`,
//!   `?release=<session>`, `?flags=`. `DELETE` (with `?recurse`, `?cas=`) answers `true`.
//! * **Transactions** `PUT /v1/txn` — KV verbs `set`, `cas`, `get`, `delete`, `delete-cas`,
//!   `check-index`, `check-not-exists`; all operations share one index and apply all or
//!   nothing: `200 {"Results": [...], "Errors": null}` or `409 {"Results": null, "Errors":
//!   [{"OpIndex", "What"}]}`. Write verbs report their entry without its value, deletes report
//!   nothing, as Consul does.
//! * **Sessions** `PUT /v1/session/create` (`Name`, `TTL` between 10s and 24h, `Behavior`
//!   `release`/`delete`, `LockDelay`), `PUT /v1/session/renew/<id>` (404 when unknown),
//!   `PUT /v1/session/destroy/<id>`, `GET /v1/session/info/<id>`. A session whose TTL passes
//!   without a renew is invalidated (checked on every request): the keys it holds are
//!   released, or deleted with `Behavior=delete`. (Consul may take up to twice the TTL; the
//!   double takes exactly the TTL. `LockDelay` is recorded but not enforced: docker-flow's
//!   sessions ask for none.)
//! * **Services** `PUT /v1/agent/service/register` (`ID`, `Name`, `Tags`, `Address`, `Port`,
//!   `Meta`, `Check` with `HTTP`/`Interval`/`Timeout`/`Status`), `PUT
//!   /v1/agent/service/deregister/<id>` (404 when unknown), `GET /v1/agent/service/<id>`
//!   (404 when unknown), `GET /v1/catalog/services`,
//!   `GET /v1/catalog/service/<name>` (`[]` when unknown; `ServiceID`, `ServiceName`,
//!   `ServiceAddress`, `ServicePort`, `ServiceTags`, `ServiceMeta`…), `GET
//!   /v1/health/service/<name>` with `?passing`. A new check starts `critical`, as in Consul;
//!   the double never runs checks, so tests set their status with
//!   [`ConsulDouble::set_check_status`]. Like a real server agent, the catalog also holds
//!   Consul's own `consul` service.
//! * **Blocking queries** on KV, catalog and health reads: `?index=<n>&wait=<dur>` holds the
//!   answer until the store's index passes `n` or the wait (default 5m, at most 10m) elapses.
//!   The double keeps one index for everything (every write increments it and every read
//!   reports it in `X-Consul-Index`), so a blocking read may also wake for a write elsewhere
//!   — Consul documents that clients must expect such wake-ups.
//! * **ACL**: started with [`ConsulDouble::start_with_token`], every request without that
//!   token (`X-Consul-Token` header or `?token=`) is answered `403 Permission denied`.
//!
//! Anything else is answered `404` (unknown path) or `405` (known path, other method).
//! The agent's own registrations reach the catalog at once by default; with
//! [`ConsulDouble::set_catalog_sync_delay`] they arrive later, as with Consul's asynchronous
//! anti-entropy sync. [`ConsulDouble::set_check_status`], [`ConsulDouble::expire_session`] and
//! [`ConsulDouble::set_catalog_sync_delay`] are test hooks with no Consul counterpart:
//! test-only.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::duration;

const NODE: &str = "consul-double";
const NODE_ADDRESS: &str = "127.0.0.1";
const DATACENTER: &str = "dc1";
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The status of a health check, as Consul names it.
pub use flow_core::CheckStatus;

/// A running double; the server stops when this is dropped.
pub struct ConsulDouble {
    address: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for ConsulDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulDouble")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ConsulDouble {
    /// Starts a double without ACLs on a free loopback port.
    pub async fn start() -> std::io::Result<ConsulDouble> {
        Self::start_inner(None).await
    }

    /// Starts a double that answers `403` to every request not carrying `token`.
    pub async fn start_with_token(token: &str) -> std::io::Result<ConsulDouble> {
        Self::start_inner(Some(token.to_string())).await
    }

    async fn start_inner(token: Option<String>) -> std::io::Result<ConsulDouble> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let address = format!("http://{}", listener.local_addr()?);
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            catalog_sync_delay: Mutex::new(Duration::ZERO),
            changed,
            token,
        });
        let server_shared = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            // Connections live in this set, so aborting the server task ends them too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = Arc::clone(&server_shared);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(shared.handle(request).await) }
                    });
                    // A client hanging up mid-request is its business, not the double's.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(ConsulDouble {
            address,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`, for `ConsulRegistry::new` or `CONSUL_HTTP_ADDR`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Test-only: sets the status of the check of service instance `service_id`, as if
    /// Consul had run it. Returns false when that instance has no check.
    pub fn set_check_status(&self, service_id: &str, status: CheckStatus) -> bool {
        let mut state = self.shared.lock();
        let check_id = format!("service:{service_id}");
        if !state.checks.contains_key(&check_id) {
            return false;
        }
        let index = state.next_index();
        let check = state.checks.get_mut(&check_id).expect("checked above");
        check.status = status;
        check.modify_index = index;
        drop(state);
        self.shared.notify(index);
        true
    }

    /// Test-only: makes agent registrations reach the catalog (and health) `delay` after the
    /// agent accepted them, as Consul's anti-entropy sync does (the default is at once).
    pub fn set_catalog_sync_delay(&self, delay: Duration) {
        *self
            .shared
            .catalog_sync_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Test-only: invalidates session `id` now, as if its TTL had passed. Returns false when
    /// no such session exists.
    pub fn expire_session(&self, id: &str) -> bool {
        let mut state = self.shared.lock();
        if !state.sessions.contains_key(id) {
            return false;
        }
        let index = state.next_index();
        state.invalidate_session(id, index);
        drop(state);
        self.shared.notify(index);
        true
    }
}

struct Shared {
    state: Mutex<State>,
    catalog_sync_delay: Mutex<Duration>,
    changed: watch::Sender<u64>,
    token: Option<String>,
}

#[derive(Clone)]
struct KvEntry {
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    session: Option<String>,
}

#[derive(Clone)]
struct Session {
    name: String,
    ttl: Option<Duration>,
    delete_on_invalidate: bool,
    lock_delay: String,
    deadline: Option<Instant>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Clone)]
struct Service {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u64,
    meta: BTreeMap<String, String>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Clone)]
struct Check {
    id: String,
    name: String,
    service_id: String,
    service_name: String,
    status: CheckStatus,
    definition: Value,
    create_index: u64,
    modify_index: u64,
}

#[derive(Clone)]
struct State {
    index: u64,
    kv: BTreeMap<String, KvEntry>,
    /// The local agent's registrations (changed at once by the agent endpoints).
    agent: BTreeMap<String, Service>,
    sessions: BTreeMap<String, Session>,
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, Check>,
}

/// An HTTP answer before it is turned into a response.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
    index: Option<u64>,
}

impl Answer {
    fn json(status: StatusCode, value: &Value) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(value).expect("JSON values serialize"),
            content_type: "application/json",
            index: None,
        }
    }

    fn ok(value: &Value) -> Answer {
        Answer::json(StatusCode::OK, value)
    }

    fn text(status: StatusCode, text: impl Into<String>) -> Answer {
        Answer {
            status,
            body: text.into().into_bytes(),
            content_type: "text/plain; charset=utf-8",
            index: None,
        }
    }

    /// Consul's "nothing here": 404 with an empty body.
    fn not_found_empty() -> Answer {
        Answer::text(StatusCode::NOT_FOUND, "")
    }

    fn with_index(mut self, index: u64) -> Answer {
        self.index = Some(index);
        self
    }
}

/// The parsed query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(pair), String::new()),
                })
                .collect(),
        )
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn random_uuid() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let high = hasher.finish();
    hasher.write_u64(high);
    let low = hasher.finish();
    let hex = format!("{high:016x}{low:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, index: u64) {
        self.changed.send_replace(index);
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let answer = self.answer(request).await;
        let mut response = Response::builder()
            .status(answer.status)
            .header("Content-Type", answer.content_type);
        if let Some(index) = answer.index {
            response = response.header("X-Consul-Index", index.to_string());
        }
        response
            .body(Full::new(Bytes::from(answer.body)))
            .expect("a response with valid headers builds")
    }

    async fn answer(self: &Arc<Self>, request: Request<Incoming>) -> Answer {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = Query::parse(request.uri().query());
        if let Some(required) = &self.token {
            let header = request
                .headers()
                .get("X-Consul-Token")
                .and_then(|v| v.to_str().ok());
            let given = header.or_else(|| query.get("token"));
            if given != Some(required.as_str()) {
                return Answer::text(StatusCode::FORBIDDEN, "Permission denied");
            }
        }
        let body = match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e) => return Answer::text(StatusCode::BAD_REQUEST, format!("reading body: {e}")),
        };
        self.expire_sessions();
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (segments.as_slice(), &method) {
            (["v1", "kv", key @ ..], _) => self.kv(&method, &key.join("/"), &query, body).await,
            (["v1", "txn"], &Method::PUT) => self.txn(&body),
            (["v1", "session", "create"], &Method::PUT) => self.session_create(&body),
            (["v1", "session", "renew", id], &Method::PUT) => self.session_renew(id),
            (["v1", "session", "destroy", id], &Method::PUT) => self.session_destroy(id),
            (["v1", "session", "info", id], &Method::GET) => self.session_info(id),
            (["v1", "agent", "service", "register"], &Method::PUT) => self.register(&body),
            (["v1", "agent", "service", "deregister", id], &Method::PUT) => self.deregister(id),
            (["v1", "agent", "service", id], &Method::GET) => self.agent_service(id),
            (["v1", "catalog", "services"], &Method::GET) => {
                self.block(&query).await;
                self.catalog_services()
            }
            (["v1", "catalog", "service", name], &Method::GET) => {
                self.block(&query).await;
                self.catalog_service(name)
            }
            (["v1", "health", "service", name], &Method::GET) => {
                self.block(&query).await;
                self.health_service(name, query.has("passing"))
            }
            (
                ["v1", "txn"]
                | ["v1", "session", ..]
                | ["v1", "agent", "service", ..]
                | ["v1", "catalog", ..]
                | ["v1", "health", ..],
                _,
            ) => Answer::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            ),
            _ => Answer::text(StatusCode::NOT_FOUND, format!("unknown path {path}")),
        }
    }

    /// Holds a blocking query (`?index=`) until the index passes it or `?wait=` elapses.
    async fn block(&self, query: &Query) {
        let Some(wanted) = query.get("index").and_then(|i| i.parse::<u64>().ok()) else {
            return;
        };
        let wait = query
            .get("wait")
            .and_then(|w| duration::parse(w).ok())
            .unwrap_or(DEFAULT_WAIT)
            .min(MAX_WAIT);
        let mut changes = self.changed.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|index| *index > wanted)).await;
    }

    fn expire_sessions(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let expired: Vec<String> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        let index = state.next_index();
        for id in &expired {
            state.invalidate_session(id, index);
        }
        drop(state);
        self.notify(index);
    }

    async fn kv(&self, method: &Method, key: &str, query: &Query, body: Vec<u8>) -> Answer {
        match *method {
            Method::GET => {
                self.block(query).await;
                let state = self.lock();
                state.kv_get(key, query).with_index(state.index)
            }
            Method::PUT => {
                let mut state = self.lock();
                let index = state.index + 1;
                match state.kv_put(key, query, body, index) {
                    Ok(written) => {
                        if written {
                            state.index = index;
                            drop(state);
                            self.notify(index);
                        }
                        Answer::ok(&json!(written))
                    }
                    Err(answer) => answer,
                }
            }
            Method::DELETE => {
                let mut state = self.lock();
                let index = state.index + 1;
                let deleted = state.kv_delete(key, query);
                if deleted {
                    state.index = index;
                    drop(state);
                    self.notify(index);
                }
                Answer::ok(&json!(deleted || !query.has("cas")))
            }
            _ => Answer::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            ),
        }
    }

    fn txn(&self, body: &[u8]) -> Answer {
        let operations: Vec<Value> = match serde_json::from_slice(body) {
            Ok(ops) => ops,
            Err(e) => {
                return Answer::text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse body: {e}"),
                )
            }
        };
        let mut state = self.lock();
        let mut draft = state.clone();
        let index = state.index + 1;
        let mut results = Vec::new();
        let mut errors = Vec::new();
        let mut wrote = false;
        for (op_index, operation) in operations.iter().enumerate() {
            let Some(kv) = operation.get("KV") else {
                return Answer::text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "operation {op_index} is not a KV operation (the double supports KV only)"
                    ),
                );
            };
            match draft.txn_kv(kv, index) {
                Ok(TxnOutcome::Result(result, is_write)) => {
                    wrote |= is_write;
                    results.push(json!({"KV": result}));
                }
                Ok(TxnOutcome::Nothing(is_write)) => wrote |= is_write,
                Err(TxnFailure::Rollback(what)) => {
                    errors.push(json!({"OpIndex": op_index, "What": what}))
                }
                Err(TxnFailure::BadRequest(what)) => {
                    return Answer::text(StatusCode::BAD_REQUEST, what)
                }
            }
        }
        if !errors.is_empty() {
            return Answer::json(
                StatusCode::CONFLICT,
                &json!({"Results": null, "Errors": errors}),
            );
        }
        if wrote {
            draft.index = index;
        }
        *state = draft;
        drop(state);
        if wrote {
            self.notify(index);
        }
        Answer::ok(&json!({"Results": results, "Errors": null}))
    }

    fn session_create(&self, body: &[u8]) -> Answer {
        let request: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("Request decode failed: {e}"),
                    )
                }
            }
        };
        let text = |field: &str| request.get(field).and_then(Value::as_str).unwrap_or("");
        let ttl = match text("TTL") {
            "" => None,
            ttl_text => match duration::parse(ttl_text) {
                Ok(ttl) if ttl == Duration::ZERO => None,
                Ok(ttl)
                    if (Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&ttl) =>
                {
                    Some(ttl)
                }
                Ok(_) => {
                    return Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid Session TTL '{ttl_text}', must be between [10s=24h0m0s]"),
                    )
                }
                Err(_) => {
                    return Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("Request decode failed: invalid duration {ttl_text:?}"),
                    )
                }
            },
        };
        let delete_on_invalidate = match text("Behavior") {
            "" | "release" => false,
            "delete" => true,
            other => {
                return Answer::text(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid Behavior setting '{other}'"),
                )
            }
        };
        let lock_delay = match text("LockDelay") {
            "" => "15s".to_string(),
            delay => delay.to_string(),
        };
        let mut state = self.lock();
        let index = state.next_index();
        let id = random_uuid();
        state.sessions.insert(
            id.clone(),
            Session {
                name: text("Name").to_string(),
                ttl,
                delete_on_invalidate,
                lock_delay,
                deadline: ttl.map(|ttl| Instant::now() + ttl),
                create_index: index,
                modify_index: index,
            },
        );
        drop(state);
        self.notify(index);
        Answer::ok(&json!({"ID": id}))
    }

    fn session_renew(&self, id: &str) -> Answer {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(id) else {
            return Answer::text(
                StatusCode::NOT_FOUND,
                format!("Session id '{id}' not found"),
            );
        };
        session.deadline = session.ttl.map(|ttl| Instant::now() + ttl);
        let info = session_json(id, session);
        Answer::ok(&json!([info]))
    }

    fn session_destroy(&self, id: &str) -> Answer {
        let mut state = self.lock();
        if state.sessions.contains_key(id) {
            let index = state.next_index();
            state.invalidate_session(id, index);
            drop(state);
            self.notify(index);
        }
        Answer::ok(&json!(true))
    }

    fn session_info(&self, id: &str) -> Answer {
        let state = self.lock();
        let sessions: Vec<Value> = state
            .sessions
            .get(id)
            .map(|s| session_json(id, s))
            .into_iter()
            .collect();
        Answer::ok(&json!(sessions)).with_index(state.index)
    }

    fn register(self: &Arc<Self>, body: &[u8]) -> Answer {
        let request: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Answer::text(
                    StatusCode::BAD_REQUEST,
                    format!("Request decode failed: {e}"),
                )
            }
        };
        let text = |v: &Value, field: &str| {
            v.get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let name = text(&request, "Name");
        if name.is_empty() {
            return Answer::text(StatusCode::BAD_REQUEST, "Missing service name");
        }
        let id = match text(&request, "ID") {
            id if id.is_empty() => name.clone(),
            id => id,
        };
        let tags: Vec<String> = request
            .get("Tags")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        let meta: BTreeMap<String, String> = match request.get("Meta") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(meta) => match serde_json::from_value(meta.clone()) {
                Ok(meta) => meta,
                Err(e) => {
                    return Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid Service Meta: {e}"),
                    )
                }
            },
        };
        let port = request.get("Port").and_then(Value::as_u64).unwrap_or(0);
        let check = match request.get("Check") {
            None | Some(Value::Null) => None,
            Some(check) => {
                let http = text(check, "HTTP");
                let interval = text(check, "Interval");
                if http.is_empty() {
                    return Answer::text(
                        StatusCode::BAD_REQUEST,
                        "Invalid check: the double supports HTTP checks only",
                    );
                }
                if duration::parse(&interval).is_err() {
                    return Answer::text(
                        StatusCode::BAD_REQUEST,
                        "Invalid check: Interval must be a duration for HTTP checks",
                    );
                }
                let timeout = match text(check, "Timeout") {
                    t if t.is_empty() => "10s".to_string(),
                    t => t,
                };
                let status = match text(check, "Status").as_str() {
                    "passing" => CheckStatus::Passing,
                    "warning" => CheckStatus::Warning,
                    _ => CheckStatus::Critical,
                };
                Some((http, interval, timeout, status))
            }
        };
        let service = Service {
            id: id.clone(),
            name: name.clone(),
            tags,
            address: text(&request, "Address"),
            port,
            meta,
            create_index: 0,
            modify_index: 0,
        };
        self.lock().agent.insert(id.clone(), service.clone());
        self.sync_to_catalog(move |state, index| {
            let create_index = state.services.get(&id).map_or(index, |s| s.create_index);
            state.services.insert(
                id.clone(),
                Service {
                    create_index,
                    modify_index: index,
                    ..service
                },
            );
            let check_id = format!("service:{id}");
            state.checks.remove(&check_id);
            if let Some((http, interval, timeout, status)) = check {
                state.checks.insert(
                    check_id.clone(),
                    Check {
                        id: check_id,
                        name: format!("Service '{name}' check"),
                        service_id: id,
                        service_name: name,
                        status,
                        definition: json!({"HTTP": http, "Interval": interval, "Timeout": timeout}),
                        create_index: index,
                        modify_index: index,
                    },
                );
            }
        });
        Answer::text(StatusCode::OK, "")
    }

    fn deregister(self: &Arc<Self>, id: &str) -> Answer {
        if self.lock().agent.remove(id).is_none() {
            return Answer::text(
                StatusCode::NOT_FOUND,
                format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."),
            );
        }
        let id = id.to_string();
        self.sync_to_catalog(move |state, _| {
            state.services.remove(&id);
            state.checks.remove(&format!("service:{id}"));
        });
        Answer::text(StatusCode::OK, "")
    }

    /// Applies an agent change to the catalog: at once, or after the configured delay as
    /// Consul's anti-entropy does.
    fn sync_to_catalog(self: &Arc<Self>, change: impl FnOnce(&mut State, u64) + Send + 'static) {
        let apply = |shared: &Shared| {
            let mut state = shared.lock();
            let index = state.next_index();
            change(&mut state, index);
            drop(state);
            shared.notify(index);
        };
        let delay = *self
            .catalog_sync_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if delay.is_zero() {
            apply(self);
        } else {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                apply(&shared);
            });
        }
    }

    fn agent_service(&self, id: &str) -> Answer {
        let state = self.lock();
        match state.agent.get(id) {
            None => Answer::text(StatusCode::NOT_FOUND, format!("unknown service ID: {id}")),
            Some(s) => Answer::ok(&json!({
                "ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address,
                "Port": s.port, "Meta": s.meta, "Datacenter": DATACENTER,
                "ContentHash": format!("{:016x}", s.modify_index),
            })),
        }
    }

    fn catalog_services(&self) -> Answer {
        let state = self.lock();
        let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for service in state.services.values() {
            names
                .entry(&service.name)
                .or_default()
                .extend(service.tags.iter().map(String::as_str));
        }
        Answer::ok(&json!(names)).with_index(state.index)
    }

    fn catalog_service(&self, name: &str) -> Answer {
        let state = self.lock();
        let entries: Vec<Value> = state
            .services_named(name)
            .map(|s| {
                json!({
                    "ID": "00000000-0000-0000-0000-000000000001",
                    "Node": NODE,
                    "Address": NODE_ADDRESS,
                    "Datacenter": DATACENTER,
                    "TaggedAddresses": {"lan": NODE_ADDRESS, "wan": NODE_ADDRESS},
                    "NodeMeta": {},
                    "ServiceID": s.id,
                    "ServiceName": s.name,
                    "ServiceAddress": s.address,
                    "ServicePort": s.port,
                    "ServiceTags": s.tags,
                    "ServiceMeta": s.meta,
                    "ServiceEnableTagOverride": false,
                    "CreateIndex": s.create_index,
                    "ModifyIndex": s.modify_index,
                })
            })
            .collect();
        Answer::ok(&json!(entries)).with_index(state.index)
    }

    fn health_service(&self, name: &str, passing_only: bool) -> Answer {
        let state = self.lock();
        let node_check = json!({
            "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Definition": {},
            "CreateIndex": 1, "ModifyIndex": 1,
        });
        let entries: Vec<Value> = state
            .services_named(name)
            .filter_map(|s| {
                let checks: Vec<&Check> = state
                    .checks
                    .values()
                    .filter(|c| c.service_id == s.id)
                    .collect();
                if passing_only && checks.iter().any(|c| c.status != CheckStatus::Passing) {
                    return None;
                }
                let mut check_values = vec![node_check.clone()];
                check_values.extend(checks.iter().map(|c| {
                    json!({
                        "Node": NODE, "CheckID": c.id, "Name": c.name,
                        "Status": c.status.as_str(), "Notes": "", "Output": "",
                        "ServiceID": c.service_id, "ServiceName": c.service_name,
                        "ServiceTags": s.tags, "Type": "http", "Definition": c.definition,
                        "CreateIndex": c.create_index, "ModifyIndex": c.modify_index,
                    })
                }));
                Some(json!({
                    "Node": {"ID": "00000000-0000-0000-0000-000000000001", "Node": NODE,
                             "Address": NODE_ADDRESS, "Datacenter": DATACENTER},
                    "Service": {"ID": s.id, "Service": s.name, "Tags": s.tags,
                                "Address": s.address, "Port": s.port, "Meta": s.meta,
                                "CreateIndex": s.create_index, "ModifyIndex": s.modify_index},
                    "Checks": check_values,
                }))
            })
            .collect();
        Answer::ok(&json!(entries)).with_index(state.index)
    }
}

fn session_json(id: &str, session: &Session) -> Value {
    json!({
        "ID": id,
        "Name": session.name,
        "Node": NODE,
        "LockDelay": session.lock_delay,
        "Behavior": if session.delete_on_invalidate { "delete" } else { "release" },
        "TTL": session.ttl.map(duration::format).unwrap_or_default(),
        "NodeChecks": ["serfHealth"],
        "ServiceChecks": null,
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    })
}

fn entry_json(key: &str, entry: &KvEntry, with_value: bool) -> Value {
    let mut value = json!({
        "Key": key,
        "Flags": entry.flags,
        "Value": if with_value { json!(BASE64.encode(&entry.value)) } else { Value::Null },
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
        "LockIndex": entry.lock_index,
    });
    if let Some(session) = &entry.session {
        value["Session"] = json!(session);
    }
    value
}

enum TxnOutcome {
    /// An entry to report, and whether the operation wrote.
    Result(Value, bool),
    /// An operation that reports nothing (deletes, existence checks), and whether it wrote.
    Nothing(bool),
}

enum TxnFailure {
    /// The operation failed: the transaction rolls back with 409.
    Rollback(String),
    /// The request itself is malformed: 400.
    BadRequest(String),
}

impl State {
    fn new() -> State {
        let mut state = State {
            index: 1,
            kv: BTreeMap::new(),
            agent: BTreeMap::new(),
            sessions: BTreeMap::new(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
        };
        // A server agent lists Consul itself in the catalog.
        state.services.insert(
            "consul".to_string(),
            Service {
                id: "consul".to_string(),
                name: "consul".to_string(),
                tags: Vec::new(),
                address: String::new(),
                port: 8300,
                meta: BTreeMap::new(),
                create_index: 1,
                modify_index: 1,
            },
        );
        state
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn services_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services.values().filter(move |s| s.name == name)
    }

    fn invalidate_session(&mut self, id: &str, index: u64) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in held {
            if session.delete_on_invalidate {
                self.kv.remove(&key);
            } else if let Some(entry) = self.kv.get_mut(&key) {
                entry.session = None;
                entry.modify_index = index;
            }
        }
    }

    fn kv_get(&self, key: &str, query: &Query) -> Answer {
        if query.has("keys") {
            let separator = query.get("separator").filter(|s| !s.is_empty());
            let mut keys: BTreeSet<String> = BTreeSet::new();
            for k in self.kv.keys().filter(|k| k.starts_with(key)) {
                let rest = &k[key.len()..];
                match separator.and_then(|sep| rest.find(sep).map(|at| at + sep.len())) {
                    Some(end) => keys.insert(format!("{key}{}", &rest[..end])),
                    None => keys.insert(k.clone()),
                };
            }
            return if keys.is_empty() {
                Answer::not_found_empty()
            } else {
                Answer::ok(&json!(keys))
            };
        }
        if query.has("recurse") {
            let entries: Vec<Value> = self
                .kv
                .iter()
                .filter(|(k, _)| k.starts_with(key))
                .map(|(k, e)| entry_json(k, e, true))
                .collect();
            return if entries.is_empty() {
                Answer::not_found_empty()
            } else {
                Answer::ok(&json!(entries))
            };
        }
        match self.kv.get(key) {
            None => Answer::not_found_empty(),
            Some(entry) if query.has("raw") => Answer {
                status: StatusCode::OK,
                body: entry.value.clone(),
                content_type: "text/plain; charset=utf-8",
                index: None,
            },
            Some(entry) => Answer::ok(&json!([entry_json(key, entry, true)])),
        }
    }

    /// A KV `PUT`; `Ok(false)` when a `cas`/`acquire`/`release` condition does not hold.
    fn kv_put(
        &mut self,
        key: &str,
        query: &Query,
        value: Vec<u8>,
        index: u64,
    ) -> Result<bool, Answer> {
        if key.is_empty() {
            return Err(Answer::text(StatusCode::BAD_REQUEST, "Missing key name"));
        }
        let number = |name: &str| -> Result<Option<u64>, Answer> {
            match query.get(name) {
                None => Ok(None),
                Some(text) => text.parse().map(Some).map_err(|_| {
                    Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid {name} index: {text:?}"),
                    )
                }),
            }
        };
        let flags = number("flags")?.unwrap_or(0);
        let existing = self.kv.get(key).cloned();
        if let Some(session) = query.get("acquire") {
            if !self.sessions.contains_key(session) {
                return Err(Answer::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("invalid session {session:?}"),
                ));
            }
            let lock_index = match &existing {
                Some(e) if e.session.as_deref() == Some(session) => e.lock_index,
                Some(e) if e.session.is_some() => return Ok(false),
                Some(e) => e.lock_index + 1,
                None => 1,
            };
            self.kv.insert(
                key.to_string(),
                KvEntry {
                    value,
                    flags,
                    create_index: existing.as_ref().map_or(index, |e| e.create_index),
                    modify_index: index,
                    lock_index,
                    session: Some(session.to_string()),
                },
            );
            return Ok(true);
        }
        if let Some(session) = query.get("release") {
            return match existing {
                Some(e) if e.session.as_deref() == Some(session) => {
                    self.kv.insert(
                        key.to_string(),
                        KvEntry {
                            value,
                            flags,
                            modify_index: index,
                            session: None,
                            ..e
                        },
                    );
                    Ok(true)
                }
                _ => Ok(false),
            };
        }
        if let Some(cas) = number("cas")? {
            let current = existing.as_ref().map_or(0, |e| e.modify_index);
            if current != cas {
                return Ok(false);
            }
        }
        self.kv.insert(
            key.to_string(),
            KvEntry {
                value,
                flags,
                create_index: existing.as_ref().map_or(index, |e| e.create_index),
                modify_index: index,
                lock_index: existing.as_ref().map_or(0, |e| e.lock_index),
                session: existing.and_then(|e| e.session),
            },
        );
        Ok(true)
    }

    /// A KV `DELETE`; false when a `cas` condition does not hold or nothing was there.
    fn kv_delete(&mut self, key: &str, query: &Query) -> bool {
        if query.has("recurse") {
            let before = self.kv.len();
            self.kv.retain(|k, _| !k.starts_with(key));
            return self.kv.len() != before;
        }
        if let Some(cas) = query.get("cas").and_then(|c| c.parse::<u64>().ok()) {
            if self.kv.get(key).map(|e| e.modify_index) != Some(cas) {
                return false;
            }
        }
        self.kv.remove(key).is_some()
    }

    fn txn_kv(&mut self, kv: &Value, index: u64) -> Result<TxnOutcome, TxnFailure> {
        let verb = kv.get("Verb").and_then(Value::as_str).unwrap_or("");
        let key = kv
            .get("Key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let op_index = kv.get("Index").and_then(Value::as_u64).unwrap_or(0);
        let flags = kv.get("Flags").and_then(Value::as_u64).unwrap_or(0);
        let value = match kv.get("Value").and_then(Value::as_str) {
            None => Vec::new(),
            Some(b64) => BASE64.decode(b64).map_err(|e| {
                TxnFailure::BadRequest(format!("Failed to decode KV value for {key:?}: {e}"))
            })?,
        };
        let existing = self.kv.get(&key).cloned();
        let modify_index = existing.as_ref().map_or(0, |e| e.modify_index);
        let write = |state: &mut State| {
            let entry = KvEntry {
                value: value.clone(),
                flags,
                create_index: existing.as_ref().map_or(index, |e| e.create_index),
                modify_index: index,
                lock_index: existing.as_ref().map_or(0, |e| e.lock_index),
                session: existing.as_ref().and_then(|e| e.session.clone()),
            };
            let reported = entry_json(&key, &entry, false);
            state.kv.insert(key.clone(), entry);
            TxnOutcome::Result(reported, true)
        };
        match verb {
            "set" => Ok(write(self)),
            "cas" if op_index == modify_index => Ok(write(self)),
            "cas" => Err(TxnFailure::Rollback(format!(
                "failed to set key {key:?}, index is stale"
            ))),
            "get" => match &existing {
                Some(e) => Ok(TxnOutcome::Result(entry_json(&key, e, true), false)),
                None => Err(TxnFailure::Rollback(format!("key {key:?} doesn't exist"))),
            },
            "check-index" => match &existing {
                Some(e) if e.modify_index == op_index => {
                    Ok(TxnOutcome::Result(entry_json(&key, e, false), false))
                }
                Some(e) => Err(TxnFailure::Rollback(format!(
                    "current modify index {} != {op_index}",
                    e.modify_index
                ))),
                None => Err(TxnFailure::Rollback(format!("key {key:?} doesn't exist"))),
            },
            "check-not-exists" => match existing {
                None => Ok(TxnOutcome::Nothing(false)),
                Some(_) => Err(TxnFailure::Rollback(format!("key {key:?} exists"))),
            },
            "delete" => {
                self.kv.remove(&key);
                Ok(TxnOutcome::Nothing(true))
            }
            "delete-cas" if op_index == modify_index && existing.is_some() => {
                self.kv.remove(&key);
                Ok(TxnOutcome::Nothing(true))
            }
            "delete-cas" => Err(TxnFailure::Rollback(format!(
                "failed to delete key {key:?}, index is stale"
            ))),
            other => Err(TxnFailure::BadRequest(format!("Unknown KV verb {other:?}"))),
        }
    }
}
