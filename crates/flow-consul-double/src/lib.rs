//! A stateful in-process double of the parts of Consul's HTTP API docker-flow uses, for tests
//! where a real agent cannot be run.
//!
//! It is a crate of its own, outside the product crates: `flow-consul` ships only the
//! adapter, and the crates testing against Consul take this crate as a dev-dependency.
//!
//! It serves plain HTTP/1.1 on `127.0.0.1:<free port>` (or the address given to
//! [`ConsulDouble::start_on`]; the `consul-double` binary of this crate serves it on its own) and keeps everything in memory. What it implements, with the shapes Consul
//! documents:
//!
//! * **KV** `GET /v1/kv/<key>` — a JSON array of entries (`Key`, base64 `Value`, `Flags`,
//!   `CreateIndex`, `ModifyIndex`, `LockIndex`, `Session` when held; an empty value is `null`,
//!   as Go encodes Consul's nil value); `404` with an empty body
//!   when nothing matches; `?raw` (the bare value), `?recurse` (every key under the prefix),
//!   `?keys` (key names, with an optional `?separator=`). `PUT` stores the body and answers
//!   `true`/`false`: `?cas=<ModifyIndex>` (0: create only), `?acquire=<session>`,
//!   `?release=<session>`, `?flags=`. `DELETE` (with `?recurse`, `?cas=`) answers `true`.
//! * **Transactions** `PUT /v1/txn` — KV verbs `set`, `cas`, `get`, `delete`, `delete-cas`,
//!   `check-index`, `check-not-exists`; all operations share one index and apply all or
//!   nothing: `200 {"Results": [...], "Errors": null}` or `409 {"Results": null, "Errors":
//!   [{"OpIndex", "What"}]}`. Write verbs report their entry without its value, deletes report
//!   nothing, as Consul does. Over 128 operations, or a body over 512 KiB, is Consul's `413`
//!   (as is a KV value over 512 KiB: Consul's default limits).
//! * **Bodies** are read as Consul reads them: keys without regard to case or underscores
//!   (`{"name": ...}`, `grpc_use_tls`), unknown keys ignored, and a body Consul would refuse
//!   answered with Consul's 400 message (`Missing service name`, `Invalid check: ...`,
//!   `Invalid Service Meta: ...`, `Request decode failed: ...`).
//! * **Sessions** `PUT /v1/session/create` (`Name`, `Node`, `TTL` between 10s and 24h,
//!   `Behavior` `release`/`delete`, `LockDelay` as Go text or a number (below 1000ns taken as
//!   seconds, as Consul's `FixupLockDelay` does), `Checks`/`NodeChecks`/
//!   `ServiceChecks`, which must exist and not be critical), `PUT /v1/session/renew/<id>` (404
//!   when unknown), `PUT /v1/session/destroy/<id>`, `GET /v1/session/info/<id>`,
//!   `/v1/session/list`, `/v1/session/node/<node>` (`LockDelay` in nanoseconds; the deprecated
//!   `Checks` left out when `serfHealth` is the only check, as Consul 1.7+ does). A session
//!   whose TTL passes without a renew, or one of whose checks turns critical, is invalidated
//!   (checked on every request): the keys it holds are released, or deleted with
//!   `Behavior=delete`, and no session can acquire them for its `LockDelay` (default 15s).
//!   (Consul may take up to twice the TTL; the double takes exactly the TTL.)
//! * **Services** `PUT /v1/agent/service/register` (`ID`, `Name`, `Tags`, `Address` — not an
//!   "any" address, which Consul refuses —, `Port`, `Meta`, `Weights`, `EnableTagOverride`,
//!   `Check` and `Checks`: HTTP, TCP, TTL, script and gRPC checks validated as Consul's
//!   `CheckType` is; `?replace-existing-checks`; `Kind`, `Proxy`, `Connect`,
//!   `TaggedAddresses`, `SocketPath` and `Locality`, which Consul acts on, are refused with a
//!   400 naming the field rather than dropped), `PUT /v1/agent/service/deregister/<id>` (404
//!   when unknown), `GET /v1/agent/service/<id>`, `GET /v1/agent/services`,
//!   `GET /v1/agent/checks`, `PUT /v1/agent/check/pass|warn|fail/<id>?note=` (TTL checks;
//!   one not reported within its TTL turns critical with `TTL expired`),
//!   `PUT /v1/agent/check/register` (a node check, or a service's with `ServiceID`; the ID
//!   defaults to the name), `PUT /v1/agent/check/deregister/<id>` (404 when unknown),
//!   `GET /v1/status/leader`, `GET /v1/status/peers`, `GET /v1/catalog/datacenters`,
//!   `GET /v1/catalog/services`,
//!   `GET /v1/catalog/service/<name>` (`[]` when unknown; `ServiceID`, `ServiceName`,
//!   `ServiceAddress`, `ServicePort`, `ServiceTags`, `ServiceMeta`…), `GET
//!   /v1/health/service/<name>` with `?passing` (the node's checks count for every
//!   instance); both with `?tag=` (repeatable, all must match); `GET /v1/health/checks/<name>`,
//!   `/v1/health/state/<state>`, `/v1/health/node/<node>`. A new check starts `critical` unless its `Status` says otherwise, as in Consul;
//!   the double never runs HTTP, TCP, script or gRPC checks, so tests set their status with
//!   [`ConsulDouble::set_check_status`]. Like a real server agent, the catalog also holds
//!   Consul's own `consul` service.
//! * **Blocking queries** on KV, catalog, health and session reads: `?index=<n>&wait=<dur>`
//!   holds the answer until the store's index passes `n` or the wait (default 5m, at most
//!   10m) elapses; an `index` that is not a number is `400 Invalid index`, a `wait` that is not
//!   a duration `400 Invalid wait time`. Every read reporting `X-Consul-Index` also sends
//!   `X-Consul-LastContact` and `X-Consul-KnownLeader`, which Consul's Go client requires.
//!   The double keeps one index for everything (every write increments it), so a blocking
//!   read may also wake for a write elsewhere — Consul documents that clients must expect
//!   such wake-ups.
//! * **One datacenter**, `dc1`, with one node: `?dc=` naming another is answered as Consul
//!   answers for an unreachable one (`500 No path to datacenter`). `?filter=`, `?near=`,
//!   `?node-meta=` and `?peer=`, which would change the answer, are a 400 naming the double.
//! * **ACL**: started with [`ConsulDouble::start_with_token`], every request without that
//!   token (`X-Consul-Token` header or `?token=`) is answered `403 Permission denied`.
//!
//! Anything else is answered `404` (unknown path) or `405` (known path, other method).
//! The agent's own registrations reach the catalog at once by default; with
//! [`ConsulDouble::set_catalog_sync_delay`] they arrive later, as with Consul's asynchronous
//! anti-entropy sync. [`ConsulDouble::set_check_status`], [`ConsulDouble::expire_session`] and
//! [`ConsulDouble::set_catalog_sync_delay`] are test hooks with no Consul counterpart:
//! test-only.

#![deny(missing_docs)]

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

use flow_core::time::go_duration as duration;

const NODE: &str = "consul-double";
const NODE_ADDRESS: &str = "127.0.0.1";
const DATACENTER: &str = "dc1";
/// The server's RPC address, as `/v1/status/leader` and `/v1/status/peers` report it.
const SERVER_ADDRESS: &str = "127.0.0.1:8300";
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
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), None).await
    }

    /// Starts a double that answers `403` to every request not carrying `token`.
    pub async fn start_with_token(token: &str) -> std::io::Result<ConsulDouble> {
        Self::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(token.to_string()),
        )
        .await
    }

    /// Starts a double listening on `listen` (port 0: a free one; [`ConsulDouble::address`]
    /// tells which), requiring `token` on every request when one is given.
    pub async fn start_on(
        listen: SocketAddr,
        token: Option<String>,
    ) -> std::io::Result<ConsulDouble> {
        let listener = TcpListener::bind(listen).await?;
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
        state.set_status(&check_id, status, "");
        let index = state.index;
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
    node: String,
    ttl: Option<Duration>,
    delete_on_invalidate: bool,
    lock_delay: Duration,
    /// The checks whose turning critical invalidates the session.
    checks: Vec<String>,
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
    /// `{"Passing": n, "Warning": n}`, DNS weights by status (Consul's default: 1 and 1).
    weights: Value,
    enable_tag_override: bool,
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
    output: String,
    /// Consul's `Type`: `http`, `tcp`, `ttl`, `script` or `grpc`.
    kind: &'static str,
    definition: Value,
    /// A TTL check's TTL, and when it turns critical unless reported again.
    ttl: Option<(Duration, Instant)>,
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
    /// Keys a session held when it was invalidated: no session acquires them before then.
    lock_delays: BTreeMap<String, Instant>,
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

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A blocking query's `index` and `wait`, validated as Consul does (400 `Invalid index` /
    /// `Invalid wait time`); `None` when the read does not block.
    fn blocking(&self) -> Result<Option<(u64, Duration)>, Answer> {
        let wait = match self.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(text) => duration::parse(text)
                .map_err(|_| Answer::text(StatusCode::BAD_REQUEST, "Invalid wait time"))?,
        };
        match self.get("index") {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<u64>() {
                Ok(0) => Ok(None),
                Ok(index) => Ok(Some((index, wait.min(MAX_WAIT)))),
                Err(_) => Err(Answer::text(StatusCode::BAD_REQUEST, "Invalid index")),
            },
        }
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

/// `value` with the keys of its top-level object renamed to `names` where they match without
/// regard to case or underscores: Consul decodes bodies with Go's case-insensitive JSON and
/// also takes snake_case forms (`grpc_use_tls`), so `{"name": ...}` is `{"Name": ...}`.
/// Keys that match none of `names` are kept as they are (Consul ignores unknown fields).
fn canonical(value: &Value, names: &[&str]) -> Value {
    let Value::Object(object) = value else {
        return value.clone();
    };
    let fold = |key: &str| key.replace('_', "").to_ascii_lowercase();
    let renamed = object.iter().map(|(key, v)| {
        let name = names
            .iter()
            .find(|n| fold(n) == fold(key))
            .map_or(key.as_str(), |n| n);
        (name.to_string(), v.clone())
    });
    Value::Object(renamed.collect())
}

/// The fields of an agent service registration the double implements.
const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Check",
    "Checks",
    "EnableTagOverride",
    "Weights",
];
/// Registration fields Consul acts on that the double does not implement: refused by name
/// rather than dropped.
const UNSUPPORTED_SERVICE_FIELDS: &[&str] = &[
    "Kind",
    "Proxy",
    "Connect",
    "TaggedAddresses",
    "SocketPath",
    "Locality",
];
/// The fields of a check definition.
const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "ID",
    "Name",
    "Notes",
    "Status",
    "ServiceID",
    "HTTP",
    "Method",
    "Header",
    "TCP",
    "TTL",
    "Args",
    "ScriptArgs",
    "GRPC",
    "GRPCUseTLS",
    "TLSSkipVerify",
    "Interval",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "DockerContainerID",
    "Shell",
    "H2PING",
    "UDP",
    "AliasService",
    "AliasNode",
    "OSService",
];
/// The fields of a session creation.
const SESSION_FIELDS: &[&str] = &[
    "Name",
    "Node",
    "TTL",
    "Behavior",
    "LockDelay",
    "Checks",
    "NodeChecks",
    "ServiceChecks",
];
/// The fields of a transaction's KV operation.
const TXN_KV_FIELDS: &[&str] = &["Verb", "Key", "Value", "Flags", "Index", "Session"];

/// Consul's default `kv_max_value_size` and `txn_max_req_len`: the largest KV value and
/// transaction body it takes.
const MAX_BODY: usize = 512 * 1024;
/// The most operations Consul takes in one transaction.
const MAX_TXN_OPERATIONS: usize = 128;

/// `413` in Consul's words (without the documentation link it appends) for a body over
/// [`MAX_BODY`]; `setting` names the agent setting that raises the limit.
fn within_limit(body: &[u8], setting: &str) -> Result<(), Answer> {
    if body.len() <= MAX_BODY {
        return Ok(());
    }
    Err(Answer::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "Request body({} bytes) too large, max size: {MAX_BODY} bytes (Consul's {setting})",
            body.len()
        ),
    ))
}

/// A request body that must be a JSON object, with its keys renamed to `fields` as Consul's
/// decoder matches them; anything else is Consul's 400 naming the Go type it decodes into.
fn decode_object(body: &[u8], fields: &[&str], go_type: &str) -> Result<Value, Answer> {
    let refused = |reason: String| {
        Answer::text(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: {reason}"),
        )
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(object @ Value::Object(_)) => Ok(canonical(&object, fields)),
        Ok(other) => Err(refused(format!(
            "json: cannot unmarshal {other} into Go value of type {go_type}"
        ))),
        Err(e) => Err(refused(e.to_string())),
    }
}

/// A Consul duration field: Go text (`"10s"`) or integer nanoseconds; `Ok(None)` when absent.
fn duration_field(object: &Value, field: &str) -> Result<Option<Duration>, Answer> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_u64().map(Duration::from_nanos)),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => duration::parse(text).map(Some).map_err(|_| {
            Answer::text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: time: invalid duration {text:?}"),
            )
        }),
        Some(other) => Err(Answer::text(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: {field}: cannot decode {other} as a duration"),
        )),
    }
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
            // What Consul's own Go client requires of every read that reports an index.
            response = response
                .header("X-Consul-Index", index.to_string())
                .header("X-Consul-LastContact", "0")
                .header("X-Consul-KnownLeader", "true");
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
        // One datacenter: another is as unreachable as from an agent that has no path to it.
        if let Some(dc) = query
            .get("dc")
            .filter(|dc| !dc.is_empty() && *dc != DATACENTER)
        {
            return Answer::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "No path to datacenter (the double serves only {DATACENTER:?}, not {dc:?})"
                ),
            );
        }
        // Parameters that narrow or reorder Consul's answers: answering without them would be a
        // different answer, so they are refused by name.
        if let Some(parameter) = ["filter", "near", "node-meta", "peer"]
            .into_iter()
            .find(|p| query.has(p))
        {
            return Answer::text(
                StatusCode::BAD_REQUEST,
                format!("?{parameter}= is not implemented by this Consul double"),
            );
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
            (["v1", "agent", "service", "register"], &Method::PUT) => self.register(&body, &query),
            (["v1", "agent", "service", "deregister", id], &Method::PUT) => self.deregister(id),
            (["v1", "agent", "service", id], &Method::GET) => self.agent_service(id),
            (["v1", "agent", "services"], &Method::GET) => self.agent_services(),
            (["v1", "agent", "checks"], &Method::GET) => self.agent_checks(),
            (["v1", "agent", "check", "register"], &Method::PUT) => self.register_check(&body),
            (["v1", "agent", "check", "deregister", id], &Method::PUT) => self.deregister_check(id),
            (["v1", "agent", "check", verb @ ("pass" | "warn" | "fail"), id], &Method::PUT) => {
                let status = match *verb {
                    "pass" => CheckStatus::Passing,
                    "warn" => CheckStatus::Warning,
                    _ => CheckStatus::Critical,
                };
                self.update_ttl_check(id, status, query.get("note").unwrap_or(""))
            }
            (["v1", "status", "leader"], &Method::GET) => Answer::ok(&json!(SERVER_ADDRESS)),
            (["v1", "status", "peers"], &Method::GET) => Answer::ok(&json!([SERVER_ADDRESS])),
            (["v1", "catalog" | "health" | "session", ..], &Method::GET) => {
                if let Err(answer) = self.block(&query).await {
                    return answer;
                }
                self.read(&segments, &query)
            }
            (
                ["v1", "txn"]
                | ["v1", "session", ..]
                | ["v1", "agent", ..]
                | ["v1", "catalog", ..]
                | ["v1", "status", ..]
                | ["v1", "health", ..],
                _,
            ) => Answer::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            ),
            _ => Answer::text(StatusCode::NOT_FOUND, format!("unknown path {path}")),
        }
    }

    /// The catalog, health and session reads (after any blocking wait).
    fn read(&self, segments: &[&str], query: &Query) -> Answer {
        let tags: Vec<&str> = query.all("tag").collect();
        match segments {
            ["v1", "catalog", "services"] => self.catalog_services(),
            ["v1", "catalog", "datacenters"] => Answer::ok(&json!([DATACENTER])),
            ["v1", "catalog", "service", name] => self.catalog_service(name, &tags),
            ["v1", "health", "service", name] => {
                self.health_service(name, &tags, query.has("passing"))
            }
            ["v1", "health", "node", node] => {
                let here = *node == NODE;
                self.health_checks(here, |_| here)
            }
            ["v1", "health", "checks", name] => {
                self.health_checks(false, |c| c.service_name == *name)
            }
            ["v1", "health", "state", wanted] => {
                let wanted = match *wanted {
                    "any" => None,
                    "passing" => Some(CheckStatus::Passing),
                    "warning" => Some(CheckStatus::Warning),
                    "critical" => Some(CheckStatus::Critical),
                    _ => return Answer::text(StatusCode::BAD_REQUEST, "Bad state"),
                };
                // serfHealth is passing: it belongs to `passing` and `any`.
                let serf = wanted.is_none_or(|w| w == CheckStatus::Passing);
                self.health_checks(serf, |c| wanted.is_none_or(|w| c.status == w))
            }
            ["v1", "session", "info", id] => self.sessions(|session_id, _| session_id == *id),
            ["v1", "session", "list"] => self.sessions(|_, _| true),
            ["v1", "session", "node", node] => self.sessions(|_, s| s.node == *node),
            _ => Answer::text(
                StatusCode::NOT_FOUND,
                format!("unknown path /{}", segments.join("/")),
            ),
        }
    }
    /// Holds a blocking query (`?index=`) until the index passes it or `?wait=` elapses;
    /// an `index` or `wait` Consul would refuse is the 400 it answers.
    async fn block(&self, query: &Query) -> Result<(), Answer> {
        let Some((wanted, wait)) = query.blocking()? else {
            return Ok(());
        };
        let mut changes = self.changed.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|index| *index > wanted)).await;
        Ok(())
    }

    fn expire_sessions(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let lapsed: Vec<String> = state
            .checks
            .values()
            .filter(|c| c.status != CheckStatus::Critical)
            .filter(|c| c.ttl.is_some_and(|(_, deadline)| deadline <= now))
            .map(|c| c.id.clone())
            .collect();
        for id in &lapsed {
            state.set_status(id, CheckStatus::Critical, "TTL expired");
        }
        if !lapsed.is_empty() {
            self.notify(state.index);
        }
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
                if let Err(answer) = self.block(query).await {
                    return answer;
                }
                let state = self.lock();
                state.kv_get(key, query).with_index(state.index)
            }
            Method::PUT => {
                if let Err(answer) = within_limit(&body, "kv_max_value_size") {
                    return answer;
                }
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
        if let Err(answer) = within_limit(body, "txn_max_req_len") {
            return answer;
        }
        let operations: Vec<Value> = match serde_json::from_slice(body) {
            Ok(ops) => ops,
            Err(e) => {
                return Answer::text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse body: {e}"),
                )
            }
        };
        if operations.len() > MAX_TXN_OPERATIONS {
            return Answer::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Transaction contains too many operations ({} > {MAX_TXN_OPERATIONS})",
                    operations.len()
                ),
            );
        }
        let mut state = self.lock();
        let mut draft = state.clone();
        let index = state.index + 1;
        let mut results = Vec::new();
        let mut errors = Vec::new();
        let mut wrote = false;
        for (op_index, operation) in operations.iter().enumerate() {
            let operation = canonical(operation, &["KV"]);
            let Some(kv) = operation.get("KV").map(|kv| canonical(kv, TXN_KV_FIELDS)) else {
                return Answer::text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "operation {op_index} is not a KV operation (the double supports KV only)"
                    ),
                );
            };
            match draft.txn_kv(&kv, index) {
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
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => canonical(&v, SESSION_FIELDS),
                Err(e) => {
                    return Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("Request decode failed: {e}"),
                    )
                }
            }
        };
        let text = |field: &str| request.get(field).and_then(Value::as_str).unwrap_or("");
        // Consul checks Behavior and TTL in the server's Session.Apply, after decoding: its
        // errors reach the client as 500s, in these words and in this order.
        let refused = |message: String| Answer::text(StatusCode::INTERNAL_SERVER_ERROR, message);
        let delete_on_invalidate = match text("Behavior") {
            "" | "release" => false,
            "delete" => true,
            other => return refused(format!("Invalid Behavior setting '{other}'")),
        };
        let ttl = match text("TTL") {
            "" => None,
            ttl_text => match duration::parse(ttl_text) {
                Ok(ttl) if ttl == Duration::ZERO => None,
                Ok(ttl)
                    if (Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&ttl) =>
                {
                    Some(ttl)
                }
                Ok(ttl) => {
                    return refused(format!(
                        "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                        ttl.as_nanos()
                    ))
                }
                Err(_) => {
                    return refused(format!(
                        "Session TTL '{ttl_text}' invalid: time: invalid duration {ttl_text:?}"
                    ))
                }
            },
        };
        // Consul's FixupLockDelay: a number is nanoseconds and text a Go duration, and either
        // below 1000ns is taken as that many seconds (clients send `5` meaning 5s).
        let lock_delay = match request.get("LockDelay") {
            Some(Value::Number(n)) => {
                Duration::from_nanos(n.as_f64().unwrap_or(0.0).max(0.0) as u64)
            }
            _ => match duration_field(&request, "LockDelay") {
                Ok(delay) => delay.unwrap_or(Duration::from_secs(15)),
                Err(answer) => return answer,
            },
        };
        let lock_delay = if lock_delay < Duration::from_nanos(1000) {
            Duration::from_secs(lock_delay.as_nanos() as u64)
        } else {
            lock_delay
        };
        let node = match text("Node") {
            "" | NODE => NODE.to_string(),
            _ => {
                return Answer::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Failed to create session: Missing node registration",
                )
            }
        };
        let listed = |field: &str| -> Vec<String> {
            request
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| match c {
                    Value::String(id) => Some(id.clone()),
                    other => other.get("ID").and_then(Value::as_str).map(str::to_string),
                })
                .collect()
        };
        let mut checks: Vec<String> = ["Checks", "NodeChecks", "ServiceChecks"]
            .iter()
            .flat_map(|field| listed(field))
            .collect();
        let given = ["Checks", "NodeChecks", "ServiceChecks"]
            .iter()
            .any(|field| request.get(*field).is_some_and(|v| !v.is_null()));
        if !given {
            checks.push("serfHealth".to_string());
        }
        let mut state = self.lock();
        for check in checks.iter().filter(|c| *c != "serfHealth") {
            match state.checks.get(check) {
                None => {
                    return Answer::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Missing check '{check}' registration"),
                    )
                }
                Some(c) if c.status == CheckStatus::Critical => {
                    return Answer::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Check '{check}' is in critical state"),
                    )
                }
                Some(_) => {}
            }
        }
        let index = state.next_index();
        let id = random_uuid();
        state.sessions.insert(
            id.clone(),
            Session {
                name: text("Name").to_string(),
                node,
                ttl,
                delete_on_invalidate,
                lock_delay,
                checks,
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

    /// The sessions `keep` selects, as `/v1/session/info|list|node` answer them.
    fn sessions(&self, keep: impl Fn(&str, &Session) -> bool) -> Answer {
        let state = self.lock();
        let sessions: Vec<Value> = state
            .sessions
            .iter()
            .filter(|(id, s)| keep(id, s))
            .map(|(id, s)| session_json(id, s))
            .collect();
        Answer::ok(&json!(sessions)).with_index(state.index)
    }

    fn register(self: &Arc<Self>, body: &[u8], query: &Query) -> Answer {
        let fields = [SERVICE_FIELDS, UNSUPPORTED_SERVICE_FIELDS].concat();
        let request = match decode_object(body, &fields, "structs.ServiceDefinition") {
            Ok(request) => request,
            Err(answer) => return answer,
        };
        let decode_error = |field: &str, wanted: &str| {
            Answer::text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: json: cannot unmarshal {} into Go struct field ServiceDefinition.{field} of type {wanted}", request[field]),
            )
        };
        let text = |field: &str| -> Result<String, Answer> {
            match request.get(field) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(text)) => Ok(text.clone()),
                Some(_) => Err(decode_error(field, "string")),
            }
        };
        let (name, id, address) = match (text("Name"), text("ID"), text("Address")) {
            (Ok(name), Ok(id), Ok(address)) => (name, id, address),
            (Err(answer), ..) | (_, Err(answer), _) | (.., Err(answer)) => return answer,
        };
        if name.is_empty() {
            return Answer::text(StatusCode::BAD_REQUEST, "Missing service name");
        }
        // Consul refuses an "any" address here rather than register something unreachable.
        if ["0.0.0.0", "::", "[::]"].contains(&address.as_str()) {
            return Answer::text(StatusCode::BAD_REQUEST, "Invalid service address");
        }
        let given = |field: &str| {
            request.get(field).is_some_and(|v| match v {
                Value::Null => false,
                Value::String(text) => !text.is_empty(),
                Value::Object(map) => !map.is_empty(),
                _ => true,
            })
        };
        if let Some(field) = UNSUPPORTED_SERVICE_FIELDS.iter().find(|f| given(f)) {
            return Answer::text(
                StatusCode::BAD_REQUEST,
                format!("Invalid service: {field} is not implemented by this Consul double (services with ID, Name, Tags, Address, Port, Meta, Weights, EnableTagOverride and checks are)"),
            );
        }
        let weights = match request.get("Weights") {
            None | Some(Value::Null) => json!({"Passing": 1, "Warning": 1}),
            Some(weights) => match parse_weights(weights) {
                Ok(weights) => weights,
                Err(answer) => return answer,
            },
        };
        let enable_tag_override = match request.get("EnableTagOverride") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(enabled)) => *enabled,
            Some(_) => return decode_error("EnableTagOverride", "bool"),
        };
        let id = if id.is_empty() { name.clone() } else { id };
        let tags: Vec<String> = match request.get("Tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(tags) => match serde_json::from_value(tags.clone()) {
                Ok(tags) => tags,
                Err(_) => return decode_error("Tags", "[]string"),
            },
        };
        let meta: BTreeMap<String, String> = match request.get("Meta") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(meta) => match serde_json::from_value(meta.clone()) {
                Ok(meta) => meta,
                Err(_) => return decode_error("Meta", "map[string]string"),
            },
        };
        if let Err(reason) = validate_meta(&meta) {
            return Answer::text(
                StatusCode::BAD_REQUEST,
                format!("Invalid Service Meta: {reason}"),
            );
        }
        let port = match request.get("Port") {
            None | Some(Value::Null) => 0,
            Some(port) => match port.as_u64().filter(|p| *p <= 65_535) {
                Some(port) => port,
                None => return decode_error("Port", "int"),
            },
        };
        // `Check` first, then `Checks`, as Consul lists them; empty objects are no check.
        let mut definitions: Vec<Value> = Vec::new();
        if let Some(check) = request.get("Check").filter(|c| c.is_object()) {
            definitions.push(check.clone());
        }
        if let Some(checks) = request.get("Checks").and_then(Value::as_array) {
            definitions.extend(checks.iter().cloned());
        }
        definitions.retain(|c| c.as_object().is_some_and(|o| !o.is_empty()));
        let several = definitions.len() > 1;
        let mut checks = Vec::new();
        for (n, definition) in definitions.iter().enumerate() {
            let default_id = if several {
                format!("service:{id}:{}", n + 1)
            } else {
                format!("service:{id}")
            };
            let default_name = format!("Service '{name}' check");
            match parse_check(definition, &default_id, &default_name) {
                Ok(check) => checks.push(Check {
                    service_id: id.clone(),
                    service_name: name.clone(),
                    ..check
                }),
                Err(answer) => return answer,
            }
        }
        let replace_checks = query
            .get("replace-existing-checks")
            .is_some_and(|v| v != "false" && v != "0");
        let service = Service {
            id: id.clone(),
            name: name.clone(),
            tags,
            address,
            port,
            meta,
            weights,
            enable_tag_override,
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
            if replace_checks {
                state.checks.retain(|_, c| c.service_id != id);
            }
            for check in checks {
                state.checks.insert(
                    check.id.clone(),
                    Check {
                        create_index: index,
                        modify_index: index,
                        ..check
                    },
                );
            }
        });
        Answer::text(StatusCode::OK, "")
    }

    /// `PUT /v1/agent/check/pass|warn|fail/<id>`: reports a TTL check.
    fn update_ttl_check(&self, id: &str, status: CheckStatus, note: &str) -> Answer {
        let mut state = self.lock();
        match state.checks.get(id) {
            None => {
                return Answer::text(
                    StatusCode::NOT_FOUND,
                    format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."),
                )
            }
            Some(check) if check.ttl.is_none() => {
                return Answer::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("CheckID {id:?} does not have associated TTL"),
                )
            }
            Some(_) => {}
        }
        state.set_status(id, status, note);
        let index = state.index;
        drop(state);
        self.notify(index);
        Answer::text(StatusCode::OK, "")
    }

    fn agent_services(&self) -> Answer {
        let state = self.lock();
        let services: BTreeMap<&str, Value> = state
            .agent
            .values()
            .map(|s| (s.id.as_str(), agent_service_json(s)))
            .collect();
        Answer::ok(&json!(services))
    }

    fn agent_checks(&self) -> Answer {
        let state = self.lock();
        let checks: BTreeMap<&str, Value> = state
            .checks
            .values()
            .map(|c| {
                let tags = state.services.get(&c.service_id).map(|s| s.tags.clone());
                (c.id.as_str(), check_json(c, &tags.unwrap_or_default()))
            })
            .collect();
        Answer::ok(&json!(checks))
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
            state.checks.retain(|_, c| c.service_id != id);
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
            Some(s) => {
                let mut service = agent_service_json(s);
                service["ContentHash"] = json!(format!("{:016x}", s.modify_index));
                Answer::ok(&service)
            }
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

    fn catalog_service(&self, name: &str, tags: &[&str]) -> Answer {
        let state = self.lock();
        let entries: Vec<Value> = state
            .services_named(name, tags)
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
                    "ServiceWeights": s.weights,
                    "ServiceEnableTagOverride": s.enable_tag_override,
                    "CreateIndex": s.create_index,
                    "ModifyIndex": s.modify_index,
                })
            })
            .collect();
        Answer::ok(&json!(entries)).with_index(state.index)
    }

    /// `/v1/health/checks/<service>` and `/v1/health/state/<state>`: the catalog's checks
    /// `keep` selects, after the node's `serfHealth` when `with_serf_health`.
    fn health_checks(&self, with_serf_health: bool, keep: impl Fn(&Check) -> bool) -> Answer {
        let state = self.lock();
        let mut checks: Vec<Value> = Vec::new();
        if with_serf_health {
            checks.push(serf_health_json());
        }
        checks.extend(state.checks.values().filter(|c| keep(c)).map(|c| {
            let tags = state.services.get(&c.service_id).map(|s| s.tags.clone());
            check_json(c, &tags.unwrap_or_default())
        }));
        Answer::ok(&json!(checks)).with_index(state.index)
    }

    /// `PUT /v1/agent/check/register`: a check of the node, or of one of the agent's
    /// services with `ServiceID`.
    fn register_check(self: &Arc<Self>, body: &[u8]) -> Answer {
        let request = match decode_object(body, CHECK_FIELDS, "structs.CheckDefinition") {
            Ok(request) => request,
            Err(answer) => return answer,
        };
        let text = |field: &str| request.get(field).and_then(Value::as_str).unwrap_or("");
        let name = text("Name").to_string();
        if name.is_empty() {
            return Answer::text(StatusCode::BAD_REQUEST, "Missing check name");
        }
        // Consul's CheckID defaults to the check's name.
        let check = match parse_check(&request, &name, &name) {
            Ok(check) => check,
            Err(answer) => return answer,
        };
        let service_id = text("ServiceID").to_string();
        let service_name = if service_id.is_empty() {
            String::new()
        } else {
            match self.lock().agent.get(&service_id) {
                Some(service) => service.name.clone(),
                None => {
                    return Answer::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("ServiceID {service_id:?} does not exist"),
                    )
                }
            }
        };
        self.sync_to_catalog(move |state, index| {
            state.checks.insert(
                check.id.clone(),
                Check {
                    service_id,
                    service_name,
                    create_index: index,
                    modify_index: index,
                    ..check
                },
            );
        });
        Answer::text(StatusCode::OK, "")
    }

    /// `PUT /v1/agent/check/deregister/<id>`.
    fn deregister_check(self: &Arc<Self>, id: &str) -> Answer {
        if !self.lock().checks.contains_key(id) {
            return Answer::text(
                StatusCode::NOT_FOUND,
                format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."),
            );
        }
        let id = id.to_string();
        self.sync_to_catalog(move |state, _| {
            state.checks.remove(&id);
        });
        Answer::text(StatusCode::OK, "")
    }

    fn health_service(&self, name: &str, tags: &[&str], passing_only: bool) -> Answer {
        let state = self.lock();
        let entries: Vec<Value> = state
            .services_named(name, tags)
            .filter_map(|s| {
                // The node's checks count for every instance on it, as in Consul.
                let checks: Vec<&Check> = state
                    .checks
                    .values()
                    .filter(|c| c.service_id == s.id || c.service_id.is_empty())
                    .collect();
                if passing_only && checks.iter().any(|c| c.status != CheckStatus::Passing) {
                    return None;
                }
                let mut check_values = vec![serf_health_json()];
                check_values.extend(checks.iter().map(|c| check_json(c, &s.tags)));
                Some(json!({
                    "Node": {"ID": "00000000-0000-0000-0000-000000000001", "Node": NODE,
                             "Address": NODE_ADDRESS, "Datacenter": DATACENTER},
                    "Service": {"ID": s.id, "Service": s.name, "Tags": s.tags,
                                "Address": s.address, "Port": s.port, "Meta": s.meta,
                                "Weights": s.weights,
                                "EnableTagOverride": s.enable_tag_override,
                                "CreateIndex": s.create_index, "ModifyIndex": s.modify_index},
                    "Checks": check_values,
                }))
            })
            .collect();
        Answer::ok(&json!(entries)).with_index(state.index)
    }
}

/// The node's `serfHealth` check, which Consul's servers keep in the catalog (never in the
/// agent's own checks); the double's node is always alive.
fn serf_health_json() -> Value {
    json!({
        "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
        "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Definition": {},
        "CreateIndex": 1, "ModifyIndex": 1,
    })
}

fn agent_service_json(s: &Service) -> Value {
    json!({
        "ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address,
        "Port": s.port, "Meta": s.meta, "Datacenter": DATACENTER,
        "Weights": s.weights, "EnableTagOverride": s.enable_tag_override,
    })
}

fn check_json(c: &Check, service_tags: &[String]) -> Value {
    json!({
        "Node": NODE, "CheckID": c.id, "Name": c.name,
        "Status": c.status.as_str(), "Notes": "", "Output": c.output,
        "ServiceID": c.service_id, "ServiceName": c.service_name,
        "ServiceTags": service_tags, "Type": c.kind, "Definition": c.definition,
        "CreateIndex": c.create_index, "ModifyIndex": c.modify_index,
    })
}

/// Consul's rules for service meta (`structs.ValidateServiceMetadata`), in its words.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".to_string());
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            Some("Key cannot be blank".to_string())
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("Key contains invalid characters".to_string())
        } else if key.len() > 128 {
            Some("Key is too long (limit: 128 characters)".to_string())
        } else if key.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use".to_string())
        } else if value.len() > 512 {
            Some("Value is too long (limit: 512 characters)".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!(
                "Couldn't load metadata pair ('{key}', '{value}'): {problem}"
            ));
        }
    }
    Ok(())
}

/// A registration's `Weights`, validated as Consul's `structs.ValidateWeights` does; a field
/// left out is Go's zero (only a registration without `Weights` gets Consul's 1 and 1).
fn parse_weights(weights: &Value) -> Result<Value, Answer> {
    let weights = canonical(weights, &["Passing", "Warning"]);
    let field = |name: &str, default: i64| {
        match weights.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_i64().ok_or_else(|| {
            Answer::text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: json: cannot unmarshal {value} into Go struct field Weights.Weights.{name} of type int"),
            )
        }),
    }
    };
    let passing = field("Passing", 0)?;
    let warning = field("Warning", 0)?;
    let invalid = if passing < 1 {
        Some("Passing must be greater than 0")
    } else if warning < 0 {
        Some("Warning must be greater or equal than 0")
    } else if passing > 65_535 || warning > 65_535 {
        Some("DNS Weight must be between 0 and 65535")
    } else {
        None
    };
    match invalid {
        Some(reason) => Err(Answer::text(
            StatusCode::BAD_REQUEST,
            format!("Invalid Weights: {reason}"),
        )),
        None => Ok(json!({"Passing": passing, "Warning": warning})),
    }
}

/// One check definition of a service registration, validated as Consul's `CheckType` is.
fn parse_check(definition: &Value, default_id: &str, default_name: &str) -> Result<Check, Answer> {
    let check = canonical(definition, CHECK_FIELDS);
    let bad = |reason: String| Answer::text(StatusCode::BAD_REQUEST, reason);
    let text = |field: &str| {
        check
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let status = match text("Status").as_str() {
        "" | "critical" => CheckStatus::Critical,
        "passing" => CheckStatus::Passing,
        "warning" => CheckStatus::Warning,
        _ => {
            return Err(bad(
                "Status for checks must 'passing', 'warning', 'critical'".to_string(),
            ))
        }
    };
    for unsupported in [
        "DockerContainerID",
        "H2PING",
        "UDP",
        "AliasService",
        "AliasNode",
        "OSService",
    ] {
        if check
            .get(unsupported)
            .is_some_and(|v| !v.is_null() && v != "")
        {
            return Err(bad(format!(
                "Invalid check: {unsupported} checks are not implemented by this Consul double (HTTP, TCP, TTL, script and gRPC are)"
            )));
        }
    }
    let interval = duration_field(&check, "Interval")?.filter(|d| !d.is_zero());
    let timeout = duration_field(&check, "Timeout")?;
    let ttl = duration_field(&check, "TTL")?.filter(|d| !d.is_zero());
    let deregister_after = duration_field(&check, "DeregisterCriticalServiceAfter")?;
    let args: Vec<String> = ["Args", "ScriptArgs"]
        .iter()
        .find_map(|f| check.get(*f))
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    let mut shown = serde_json::Map::new();
    let kind = if !text("HTTP").is_empty() {
        shown.insert("HTTP".into(), json!(text("HTTP")));
        if !text("Method").is_empty() {
            shown.insert("Method".into(), json!(text("Method")));
        }
        "http"
    } else if !text("TCP").is_empty() {
        shown.insert("TCP".into(), json!(text("TCP")));
        "tcp"
    } else if !text("GRPC").is_empty() {
        shown.insert("GRPC".into(), json!(text("GRPC")));
        shown.insert(
            "GRPCUseTLS".into(),
            json!(check
                .get("GRPCUseTLS")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
        );
        "grpc"
    } else if !args.is_empty() {
        shown.insert("ScriptArgs".into(), json!(args));
        "script"
    } else {
        "ttl"
    };
    if kind == "ttl" {
        if interval.is_some() && ttl.is_some() {
            return Err(bad(
                "Invalid check: Interval and TTL cannot both be specified".to_string(),
            ));
        }
        let Some(ttl) = ttl else {
            return Err(bad(
                "Invalid check: TTL must be > 0 for TTL checks".to_string()
            ));
        };
        shown.insert("TTL".into(), json!(duration::format(ttl)));
    } else {
        let Some(interval) = interval else {
            return Err(bad(
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks".to_string(),
            ));
        };
        if ttl.is_some() {
            return Err(bad(
                "Invalid check: Interval and TTL cannot both be specified".to_string(),
            ));
        }
        shown.insert("Interval".into(), json!(duration::format(interval)));
        // Consul's default timeout for checks that run.
        shown.insert(
            "Timeout".into(),
            json!(duration::format(timeout.unwrap_or(Duration::from_secs(10)))),
        );
    }
    if check.get("TLSSkipVerify").and_then(Value::as_bool) == Some(true) {
        shown.insert("TLSSkipVerify".into(), json!(true));
    }
    if let Some(after) = deregister_after {
        shown.insert(
            "DeregisterCriticalServiceAfter".into(),
            json!(duration::format(after)),
        );
    }
    let id = [text("CheckID"), text("ID")]
        .into_iter()
        .find(|id| !id.is_empty())
        .unwrap_or_else(|| default_id.to_string());
    let name = Some(text("Name"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_name.to_string());
    Ok(Check {
        id,
        name,
        service_id: String::new(),
        service_name: String::new(),
        status,
        output: String::new(),
        kind,
        definition: Value::Object(shown),
        ttl: ttl
            .filter(|_| kind == "ttl")
            .map(|ttl| (ttl, Instant::now() + ttl)),
        create_index: 0,
        modify_index: 0,
    })
}

fn session_json(id: &str, session: &Session) -> Value {
    let (node_checks, service_checks): (Vec<&String>, Vec<&String>) =
        session.checks.iter().partition(|c| *c == "serfHealth");
    let mut value = json!({
        "ID": id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": session.lock_delay.as_nanos() as u64,
        "Behavior": if session.delete_on_invalidate { "delete" } else { "release" },
        "TTL": session.ttl.map(duration::format).unwrap_or_default(),
        "NodeChecks": node_checks,
        "ServiceChecks": if service_checks.is_empty() {
            Value::Null
        } else {
            json!(service_checks.iter().map(|id| json!({"ID": id, "Namespace": ""})).collect::<Vec<_>>())
        },
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    });
    // Consul 1.7+ leaves out the deprecated `Checks` when `serfHealth` is its only check.
    if session.checks != ["serfHealth"] {
        value["Checks"] = json!(session.checks);
    }
    value
}

fn entry_json(key: &str, entry: &KvEntry, with_value: bool) -> Value {
    let mut value = json!({
        "Key": key,
        "Flags": entry.flags,
        // Consul stores an empty value as nil, which Go encodes as `null`, not `""`.
        "Value": if with_value && !entry.value.is_empty() {
            json!(BASE64.encode(&entry.value))
        } else {
            Value::Null
        },
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
            lock_delays: BTreeMap::new(),
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
                weights: json!({"Passing": 1, "Warning": 1}),
                enable_tag_override: false,
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

    /// Sets a check's status; a check turning critical invalidates the sessions tied to it.
    fn set_status(&mut self, check_id: &str, status: CheckStatus, output: &str) {
        let index = self.next_index();
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        check.status = status;
        check.output = output.to_string();
        check.modify_index = index;
        if let Some((ttl, deadline)) = check.ttl.as_mut() {
            *deadline = Instant::now() + *ttl;
        }
        if status == CheckStatus::Critical {
            let tied: Vec<String> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.checks.iter().any(|c| c == check_id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in tied {
                self.invalidate_session(&id, index);
            }
        }
    }

    /// The catalog's instances of `name` carrying every one of `tags` (`?tag=`, repeatable).
    fn services_named<'a>(
        &'a self,
        name: &'a str,
        tags: &'a [&'a str],
    ) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .values()
            .filter(move |s| s.name == name)
            .filter(move |s| tags.iter().all(|t| s.tags.iter().any(|own| own == t)))
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
            if !session.lock_delay.is_zero() {
                self.lock_delays
                    .insert(key.clone(), Instant::now() + session.lock_delay);
            }
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
            let delayed = self
                .lock_delays
                .get(key)
                .is_some_and(|until| *until > Instant::now());
            if delayed {
                return Ok(false);
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
            verb @ ("lock" | "unlock" | "get-tree" | "check-session" | "delete-tree") => {
                Err(TxnFailure::BadRequest(format!(
                    "KV verb {verb:?} is not implemented by this Consul double"
                )))
            }
            other => Err(TxnFailure::BadRequest(format!("Unknown KV verb {other:?}"))),
        }
    }
}
