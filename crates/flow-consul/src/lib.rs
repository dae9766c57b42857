//! docker-flow's [`Registry`] on Consul's HTTP API.
//!
//! # Keys and compatibility with Docker Flow 1.x
//!
//! Release state of service `S` lives under the KV prefix `docker-flow/S/`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `docker-flow/S/color` | `blue` / `green`, plain text | 1.x and us |
//! | `docker-flow/S/scale` | decimal instance count, plain text | 1.x and us |
//! | `docker-flow/S/release` | JSON of [`ReleaseState::last_release`] | us |
//! | `docker-flow/S/revision` | a fixed note; only its `ModifyIndex` matters | us |
//! | `docker-flow/S/lock` | JSON `{holder, since_ms, expires_ms}`, held by a session | us |
//!
//! The layout and the reading of its values are [`flow_core::kv`]'s, shared with every
//! key-value registry. A service released by 1.x has only `color` and `scale`: it loads as
//! that state at [`Revision::NONE`], so the first store of ours takes it over (creating
//! `revision`).
//! An absent key is an absent field; a present key we cannot read back is
//! [`RegistryError::Corrupt`] naming it — never a default.
//!
//! # Revisions and compare-and-swap
//!
//! The [`Revision`] of a state is the `ModifyIndex` of its `revision` key (0 when absent).
//! [`Registry::store`] sends one `PUT /v1/txn` whose first operation is a `cas` of the
//! `revision` key at the expected index (index 0: create only), followed by `set`/`delete` of
//! `color`, `scale` and `release`. Consul applies a transaction all or nothing, so the three
//! values change together and only when nobody stored in between; the new revision is the
//! `ModifyIndex` Consul reports for the `revision` key. A dedicated key, rather than the
//! largest `ModifyIndex` of the prefix, keeps the check to a single `cas` and is not moved by
//! the lock key, which changes on every lock and renew.
//!
//! `load` reads the whole prefix in one `GET ?recurse`, which Consul answers from one
//! snapshot, so values and revision are always consistent.
//!
//! # The deploy lock
//!
//! A lock is a Consul session (`Behavior=delete`) holding `docker-flow/S/lock` through
//! `?acquire=`. Consul sessions cannot live less than 10 s (and Consul may wait up to twice
//! the TTL before invalidating one), while the [`Registry`] contract wants a lease to end
//! exactly when its TTL passes without a renew. So the lock value also carries the lease's own
//! deadline (`expires_ms`, wall clock): a `lock` that finds a held lock past that deadline
//! destroys the stale session and takes the lock, and `renew`/`unlock` of a lease past it fail
//! with [`RegistryError::LeaseLost`]. The session TTL (the lease TTL rounded up to at least
//! 10 s) is the backstop that frees the lock when its holder dies without unlocking. This
//! compares wall clocks of the hosts involved: keep them in sync (NTP), as Consul's own
//! operators do anyway. `renew` renews the session and re-acquires the key with a new
//! deadline (an acquire by the holding session only updates the value); `unlock` releases the
//! key and destroys the session.
//!
//! # Instances
//!
//! `register` uses the local agent (`PUT /v1/agent/service/register`) as Registrator does,
//! with an HTTP check when one is given, and marks the registration with the meta key
//! [`MANAGED_META_KEY`] (removed again when reading). The agent hands registrations to the
//! catalog asynchronously, so `register` and `deregister` return only once the catalog shows
//! the change (blocking queries, at most 5 s): a caller reads its own writes.
//! `deregister` first asks the agent (`GET /v1/agent/service/<id>`) which service the id
//! belongs to; an id this agent does not know is a no-op. `instances(name)` reads
//! `GET /v1/health/service/<name>` rather than the catalog: the catalog's entries carry no
//! check definition, the health entries carry the service and its checks in one answer, so a
//! [`Registration`] reads back as written. `all_instances` lists `GET /v1/catalog/services`
//! and reads each name the same way, keeping only registrations marked as ours, so that
//! Consul's own `consul` service and other tools' services are never taken for dangling ones.
//!
//! # Transport
//!
//! `reqwest` with default features off: it sits on the hyper 1 stack the workspace already
//! builds (bollard uses it), adds no TLS or C build, and gives per-request timeouts and a
//! clear "could not connect" classification, which a hand-rolled hyper-util client would have
//! to rebuild. Every answer's status is checked before its body is read as data: a
//! connection failure is [`RegistryError::Unavailable`], any unexpected status is
//! [`RegistryError::Backend`] with status and body, and neither ever becomes state.
//!
//! The ACL token (`CONSUL_HTTP_TOKEN`) is sent as `X-Consul-Token` and is never shown:
//! [`ConsulRegistry`]'s `Debug` and `Display` print the address only.
//!
//! # Testing
//!
//! The crate `flow-consul-double` is a stateful in-process double of the parts of Consul's
//! HTTP API used here (and the `consul-double` binary), for tests of this crate and of the
//! crates using it; the same tests run against a real Consul when `FLOW_TEST_CONSUL_ADDR` is
//! set.

#![deny(missing_docs)]

/// Go durations, the form Consul writes TTLs, intervals and timeouts in.
pub use flow_core::time::go_duration as duration;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use flow_core::kv::{corrupt, parse_lock, LockRecord, ServiceKeys};
use flow_core::{
    CheckTarget, HealthCheck, Lease, LockHolder, Registration, Registry, RegistryError,
    ReleaseState, Revision, ServiceName, Versioned,
};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::json;

/// The address used when neither `--consul-address` nor `CONSUL_HTTP_ADDR` gives one.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";

/// The meta key marking registrations made through this crate (value `"true"`).
pub const MANAGED_META_KEY: &str = "docker-flow-registration";

/// Consul refuses session TTLs below this.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
/// Consul refuses session TTLs above this.
const MAX_SESSION_TTL: Duration = Duration::from_secs(86_400);
/// How long one request may take; blocking queries are not used by the adapter.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `register`/`deregister` wait for the catalog to show the change.
const CATALOG_SYNC_WAIT: Duration = Duration::from_secs(5);
/// How long connecting may take before the agent counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A `--consul-address` / `CONSUL_HTTP_ADDR` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConsulConfigError {
    /// The address is not `http://host:port` (or `host:port`).
    #[error("invalid Consul address {address:?}: {reason}; use http://host:port, e.g. --consul-address=http://127.0.0.1:8500")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (the system's TLS/resolver setup is unusable).
    #[error("cannot build an HTTP client for Consul: {0}")]
    Client(#[source] reqwest::Error),
}

/// [`Registry`] on a Consul agent's HTTP API. See the [crate docs](crate) for the key layout.
#[derive(Clone)]
pub struct ConsulRegistry {
    base: Url,
    address: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl fmt::Debug for ConsulRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulRegistry")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for ConsulRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Consul at {}", self.address)
    }
}

impl ConsulRegistry {
    /// A registry on the agent at `address` (`http://host:port`; a bare `host:port` means
    /// `http://`), sending `token` as `X-Consul-Token` when given.
    pub fn new(address: &str, token: Option<String>) -> Result<Self, ConsulConfigError> {
        let invalid = |reason: &str| ConsulConfigError::InvalidAddress {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = address.trim();
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("http://{trimmed}")
        };
        let base = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        if base.scheme() != "http" {
            return Err(invalid(
                "only http:// is supported (no TLS is built in); reach a remote agent through a local one",
            ));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it names no host"));
        }
        if base.path() != "/" || base.query().is_some() {
            return Err(invalid("it must not have a path or query"));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(ConsulConfigError::Client)?;
        Ok(ConsulRegistry {
            address: base.as_str().trim_end_matches('/').to_string(),
            base,
            token: token.filter(|t| !t.is_empty()),
            client,
        })
    }

    /// A registry configured like Consul's own CLI: `address` when given (`--consul-address`),
    /// else `CONSUL_HTTP_ADDR`, else [`DEFAULT_ADDRESS`]; the token from `CONSUL_HTTP_TOKEN`.
    pub fn from_env_with(address: Option<&str>) -> Result<Self, ConsulConfigError> {
        let address = match address {
            Some(address) => address.to_string(),
            None => std::env::var("CONSUL_HTTP_ADDR")
                .ok()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| DEFAULT_ADDRESS.to_string()),
        };
        Self::new(&address, std::env::var("CONSUL_HTTP_TOKEN").ok())
    }

    /// [`ConsulRegistry::from_env_with`] without an explicit address.
    pub fn from_env() -> Result<Self, ConsulConfigError> {
        Self::from_env_with(None)
    }

    /// The agent's address, `http://host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `/v1/<segments…>`, each segment percent-encoded as needed.
    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http URL has path segments")
            .clear()
            .push("v1")
            .extend(segments);
        url
    }

    fn kv_url(&self, key: &str) -> Url {
        self.url(std::iter::once("kv").chain(key.split('/')))
    }

    /// Sends one request and returns its status and body; only a transport failure is an
    /// error here, every caller checks the status itself.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), RegistryError> {
        let (status, body, _) = self.send_indexed(method, url, body).await?;
        Ok((status, body))
    }

    /// [`ConsulRegistry::send`], also returning the answer's `X-Consul-Index`.
    async fn send_indexed(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>, Option<u64>), RegistryError> {
        let mut request = self.client.request(method, url);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let unavailable = |e: reqwest::Error| RegistryError::Unavailable {
            address: self.address.clone(),
            source: Box::new(e.without_url()),
        };
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.bytes().await.map_err(unavailable)?;
        Ok((status, body.to_vec(), index))
    }

    /// Sends a request that must answer 2xx; anything else is [`RegistryError::Backend`].
    async fn send_ok(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, RegistryError> {
        let (status, body) = self.send(method, url, body).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(self.backend_error(status, &body))
        }
    }

    fn backend_error(&self, status: StatusCode, body: &[u8]) -> RegistryError {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        RegistryError::Backend {
            address: self.address.clone(),
            message: if text.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {text}")
            },
        }
    }

    /// Reads a 2xx body as JSON; a body that is not the expected shape is a backend error.
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        body: &[u8],
    ) -> Result<T, RegistryError> {
        serde_json::from_slice(body).map_err(|e| RegistryError::Backend {
            address: self.address.clone(),
            message: format!(
                "unexpected answer to {what} ({e}): {}",
                String::from_utf8_lossy(body)
            ),
        })
    }

    /// All entries under `prefix` (empty when none).
    async fn kv_tree(&self, prefix: &str) -> Result<Vec<KvEntry>, RegistryError> {
        let mut url = self.kv_url(prefix);
        url.query_pairs_mut().append_key_only("recurse");
        let (status, body) = self.send(Method::GET, url, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            status if status.is_success() => self.parse("a KV read", &body),
            status => Err(self.backend_error(status, &body)),
        }
    }

    /// The entry at `key`, if any.
    async fn kv_get(&self, key: &str) -> Result<Option<KvEntry>, RegistryError> {
        let (status, body) = self.send(Method::GET, self.kv_url(key), None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                let entries: Vec<KvEntry> = self.parse("a KV read", &body)?;
                Ok(entries.into_iter().find(|e| e.key == key))
            }
            status => Err(self.backend_error(status, &body)),
        }
    }

    /// A KV write with query flags (`acquire`, `release`, `cas`) answering `true`/`false`.
    async fn kv_put_flag(
        &self,
        key: &str,
        flag: (&str, &str),
        value: Option<Vec<u8>>,
    ) -> Result<bool, RegistryError> {
        let mut url = self.kv_url(key);
        url.query_pairs_mut().append_pair(flag.0, flag.1);
        let body = self.send_ok(Method::PUT, url, value).await?;
        self.parse("a KV write", &body)
    }

    async fn destroy_session(&self, session: &str) -> Result<(), RegistryError> {
        self.send_ok(Method::PUT, self.url(["session", "destroy", session]), None)
            .await
            .map(drop)
    }

    /// Reads the lock entry and its value; `None` when the key is absent or held by nobody.
    async fn held_lock(&self, key: &str) -> Result<Option<(String, LockRecord)>, RegistryError> {
        let Some(entry) = self.kv_get(key).await? else {
            return Ok(None);
        };
        let Some(session) = entry.session.clone() else {
            return Ok(None);
        };
        Ok(Some((session, parse_lock(key, &entry.text(key)?)?)))
    }

    /// The lock held by `lease` right now, or [`RegistryError::LeaseLost`].
    async fn live_lock(&self, lease: &Lease) -> Result<LockRecord, RegistryError> {
        let key = ServiceKeys::new(&lease.service).lock;
        match self.held_lock(&key).await? {
            Some((session, value)) if session == lease.token && !value.expired() => Ok(value),
            _ => {
                // The lease is gone; free its session so it does not linger until its TTL.
                self.destroy_session(&lease.token).await?;
                Err(RegistryError::LeaseLost {
                    service: lease.service.clone(),
                })
            }
        }
    }

    /// Waits until the catalog's view of service `name` satisfies `done`.
    ///
    /// The agent hands registrations to the catalog asynchronously (anti-entropy), so a
    /// catalog read right after `register` may not show it yet; waiting here gives callers
    /// read-your-writes. Uses blocking queries, so it costs one read when the catalog is
    /// already up to date, and gives up after [`CATALOG_SYNC_WAIT`].
    async fn await_catalog(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&[HealthEntry]) -> bool,
    ) -> Result<(), RegistryError> {
        let deadline = Instant::now() + CATALOG_SYNC_WAIT;
        let mut seen_index = None;
        loop {
            let mut url = self.url(["health", "service", name]);
            if let Some(index) = seen_index {
                url.query_pairs_mut()
                    .append_pair("index", &format!("{index}"))
                    .append_pair("wait", "1s");
            }
            let (status, body, index) = self.send_indexed(Method::GET, url, None).await?;
            if !status.is_success() {
                return Err(self.backend_error(status, &body));
            }
            let entries: Vec<HealthEntry> = self.parse("a health read", &body)?;
            if done(&entries) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RegistryError::Backend {
                    address: self.address.clone(),
                    message: format!(
                        "the agent accepted {what}, but the catalog did not show it within {}s",
                        CATALOG_SYNC_WAIT.as_secs()
                    ),
                });
            }
            match index {
                Some(index) => seen_index = Some(index),
                // No index to block on: poll gently instead.
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The health entries (service and checks) of every instance named `name`.
    async fn health_entries(&self, name: &str) -> Result<Vec<HealthEntry>, RegistryError> {
        let body = self
            .send_ok(Method::GET, self.url(["health", "service", name]), None)
            .await?;
        self.parse("a health read", &body)
    }
}

/// One entry of a KV read, as Consul documents it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    key: String,
    value: Option<String>,
    modify_index: u64,
    session: Option<String>,
}

impl KvEntry {
    /// The value as UTF-8 text (empty when Consul holds no value).
    fn text(&self, key: &str) -> Result<String, RegistryError> {
        let raw = self.value.as_deref().unwrap_or("");
        let bytes = BASE64
            .decode(raw)
            .map_err(|e| corrupt(key, raw, format!("not base64: {e}")))?;
        String::from_utf8(bytes).map_err(|e| corrupt(key, raw, format!("not UTF-8 text: {e}")))
    }
}

/// The answer of `PUT /v1/txn` (200 and 409 alike).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnAnswer {
    results: Option<Vec<TxnResult>>,
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<TxnKv>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnKv {
    key: String,
    modify_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    op_index: usize,
    what: String,
}

/// One entry of `GET /v1/health/service/<name>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    service: AgentService,
    #[serde(default)]
    checks: Vec<HealthCheckEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthCheckEntry {
    #[serde(rename = "ServiceID", default)]
    service_id: String,
    #[serde(default)]
    definition: Option<CheckDefinition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckDefinition {
    #[serde(rename = "HTTP", default)]
    http: String,
    #[serde(rename = "TCP", default)]
    tcp: String,
    #[serde(rename = "GRPC", default)]
    grpc: String,
    #[serde(rename = "GRPCUseTLS", default)]
    grpc_use_tls: bool,
    #[serde(rename = "TLSSkipVerify", default)]
    tls_skip_verify: bool,
    #[serde(default)]
    method: String,
    #[serde(default)]
    script_args: Option<Vec<String>>,
    #[serde(rename = "TTL", default)]
    ttl: Option<serde_json::Value>,
    #[serde(default)]
    interval: Option<serde_json::Value>,
    #[serde(default)]
    timeout: Option<serde_json::Value>,
    #[serde(default)]
    deregister_critical_service_after: Option<serde_json::Value>,
}

impl CheckDefinition {
    /// The check as registered; `None` for a definition of a kind docker-flow does not write.
    fn into_check(self) -> Option<HealthCheck> {
        let ttl = json_duration(self.ttl.as_ref()).filter(|d| !d.is_zero());
        let target = if !self.http.is_empty() {
            CheckTarget::Http(self.http)
        } else if !self.tcp.is_empty() {
            CheckTarget::Tcp(self.tcp)
        } else if !self.grpc.is_empty() {
            CheckTarget::Grpc(self.grpc)
        } else if let Some(args) = self.script_args.filter(|a| !a.is_empty()) {
            CheckTarget::Script(args)
        } else {
            CheckTarget::Ttl(ttl?)
        };
        let nonzero = |v: Option<&serde_json::Value>| json_duration(v).filter(|d| !d.is_zero());
        Some(HealthCheck {
            interval: nonzero(self.interval.as_ref()),
            timeout: nonzero(self.timeout.as_ref()),
            method: Some(self.method).filter(|m| !m.is_empty()),
            grpc_use_tls: self.grpc_use_tls,
            tls_skip_verify: self.tls_skip_verify,
            // Consul reports the current status, not the one the check started with.
            initial_status: None,
            deregister_after: nonzero(self.deregister_critical_service_after.as_ref()),
            target,
        })
    }
}

/// The `Check` object of an agent service registration for `check`.
fn check_definition(check: &HealthCheck) -> serde_json::Value {
    let mut definition = match &check.target {
        CheckTarget::Http(url) => json!({"HTTP": url}),
        CheckTarget::Tcp(address) => json!({"TCP": address}),
        CheckTarget::Ttl(ttl) => json!({"TTL": duration::format(*ttl)}),
        CheckTarget::Script(args) => json!({"Args": args}),
        CheckTarget::Grpc(target) => json!({"GRPC": target, "GRPCUseTLS": check.grpc_use_tls}),
    };
    let durations = [
        ("Interval", check.interval),
        ("Timeout", check.timeout),
        ("DeregisterCriticalServiceAfter", check.deregister_after),
    ];
    for (field, value) in durations {
        if let Some(value) = value {
            definition[field] = json!(duration::format(value));
        }
    }
    if let Some(method) = &check.method {
        definition["Method"] = json!(method);
    }
    if check.tls_skip_verify {
        definition["TLSSkipVerify"] = json!(true);
    }
    if let Some(status) = check.initial_status {
        definition["Status"] = json!(status.as_str());
    }
    definition
}

/// A Consul duration in JSON: Go text (`"10s"`) or integer nanoseconds, as versions differ.
fn json_duration(value: Option<&serde_json::Value>) -> Option<Duration> {
    match value? {
        serde_json::Value::String(text) => duration::parse(text).ok(),
        serde_json::Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        _ => None,
    }
}

impl HealthEntry {
    fn into_registration(self) -> Registration {
        let service_id = self.service.id.clone();
        let check = self
            .checks
            .into_iter()
            .filter(|c| c.service_id == service_id)
            .find_map(|c| c.definition.and_then(CheckDefinition::into_check));
        let mut meta = self.service.meta.unwrap_or_default();
        meta.remove(MANAGED_META_KEY);
        Registration {
            id: self.service.id,
            name: self.service.service,
            address: self.service.address,
            port: self.service.port,
            tags: self.service.tags.unwrap_or_default(),
            meta,
            check,
        }
    }

    fn is_managed(&self) -> bool {
        self.service
            .meta
            .as_ref()
            .is_some_and(|m| m.get(MANAGED_META_KEY).is_some_and(|v| v == "true"))
    }
}

fn txn_set(key: &str, value: &str) -> serde_json::Value {
    json!({"KV": {"Verb": "set", "Key": key, "Value": BASE64.encode(value)}})
}

fn txn_delete(key: &str) -> serde_json::Value {
    json!({"KV": {"Verb": "delete", "Key": key}})
}

#[async_trait]
impl Registry for ConsulRegistry {
    async fn load(&self, service: &ServiceName) -> Result<Versioned<ReleaseState>, RegistryError> {
        let keys = ServiceKeys::new(service);
        let mut state = ReleaseState::default();
        let mut revision = Revision::NONE;
        for entry in self.kv_tree(&keys.prefix).await? {
            let key = entry.key.as_str();
            if key == keys.revision {
                revision = Revision(entry.modify_index);
            } else {
                keys.read_into(&mut state, key, || entry.text(key))?;
            }
        }
        Ok(Versioned {
            value: state,
            revision,
        })
    }

    async fn store(
        &self,
        service: &ServiceName,
        state: &ReleaseState,
        expected: Revision,
    ) -> Result<Revision, RegistryError> {
        let keys = ServiceKeys::new(service);
        let mut operations = vec![json!({"KV": {
            "Verb": "cas",
            "Key": keys.revision,
            "Value": BASE64.encode("the ModifyIndex of this key is the revision of docker-flow's state"),
            "Index": expected.0,
        }})];
        operations.extend(
            keys.values_of(state)
                .into_iter()
                .map(|(key, value)| match value {
                    Some(value) => txn_set(key, &value),
                    None => txn_delete(key),
                }),
        );
        let body = serde_json::to_vec(&operations).expect("a transaction serializes");
        let (status, body) = self
            .send(Method::PUT, self.url(["txn"]), Some(body))
            .await?;
        match status {
            StatusCode::OK => {
                let answer: TxnAnswer = self.parse("a transaction", &body)?;
                answer
                    .results
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.kv)
                    .find(|kv| kv.key == keys.revision)
                    .map(|kv| Revision(kv.modify_index))
                    .ok_or_else(|| RegistryError::Backend {
                        address: self.address.clone(),
                        message: format!(
                            "the transaction answer has no result for {}: {}",
                            keys.revision,
                            String::from_utf8_lossy(&body)
                        ),
                    })
            }
            StatusCode::CONFLICT => {
                let answer: TxnAnswer = self.parse("a transaction", &body)?;
                let errors = answer.errors.unwrap_or_default();
                if errors.iter().any(|e| e.op_index == 0) {
                    Err(RegistryError::Conflict {
                        service: service.clone(),
                    })
                } else {
                    Err(RegistryError::Backend {
                        address: self.address.clone(),
                        message: format!(
                            "the transaction was rolled back: {}",
                            errors
                                .iter()
                                .map(|e| e.what.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    })
                }
            }
            status => Err(self.backend_error(status, &body)),
        }
    }

    async fn lock(
        &self,
        service: &ServiceName,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, RegistryError> {
        let key = ServiceKeys::new(service).lock;
        let session_ttl = Duration::from_secs(ttl.as_secs_f64().ceil() as u64)
            .clamp(MIN_SESSION_TTL, MAX_SESSION_TTL);
        let request = json!({
            "Name": format!("docker-flow deploy lock of {service}"),
            "TTL": duration::format(session_ttl),
            "Behavior": "delete",
            "LockDelay": "0s",
        });
        let body = self
            .send_ok(
                Method::PUT,
                self.url(["session", "create"]),
                Some(serde_json::to_vec(&request).expect("a session request serializes")),
            )
            .await?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let session = self.parse::<Created>("a session creation", &body)?.id;
        let acquired_at = SystemTime::now();
        let value = LockRecord::new(holder, acquired_at, ttl)
            .to_json()
            .into_bytes();
        // Two rounds: the second one only after a stale holder was removed.
        for _ in 0..2 {
            let acquired = self
                .kv_put_flag(&key, ("acquire", &session), Some(value.clone()))
                .await;
            match acquired {
                Ok(true) => {
                    return Ok(Lease {
                        service: service.clone(),
                        holder: holder.to_string(),
                        token: session,
                        acquired_at,
                        ttl,
                    })
                }
                Ok(false) => {}
                Err(error) => {
                    self.destroy_session(&session).await.ok();
                    return Err(error);
                }
            }
            match self.held_lock(&key).await {
                Ok(Some((_, current))) if !current.expired() => {
                    self.destroy_session(&session).await?;
                    return Err(RegistryError::Locked {
                        service: service.clone(),
                        since: current.since(),
                        holder: current.holder,
                    });
                }
                // Past its deadline: the holder stopped renewing, end its session.
                Ok(Some((other, _))) => self.destroy_session(&other).await?,
                // Released in between: try again.
                Ok(None) => {}
                Err(error) => {
                    self.destroy_session(&session).await.ok();
                    return Err(error);
                }
            }
        }
        self.destroy_session(&session).await?;
        Err(RegistryError::Backend {
            address: self.address.clone(),
            message: format!("{key} could not be acquired although no live session holds it"),
        })
    }

    async fn lock_holder(
        &self,
        service: &ServiceName,
    ) -> Result<Option<LockHolder>, RegistryError> {
        let key = ServiceKeys::new(service).lock;
        Ok(self
            .held_lock(&key)
            .await?
            .and_then(|(_, value)| value.live_holder()))
    }

    async fn renew(&self, lease: &Lease) -> Result<(), RegistryError> {
        let current = self.live_lock(lease).await?;
        let (status, body) = self
            .send(
                Method::PUT,
                self.url(["session", "renew", &lease.token]),
                None,
            )
            .await?;
        match status {
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::LeaseLost {
                    service: lease.service.clone(),
                })
            }
            status if !status.is_success() => return Err(self.backend_error(status, &body)),
            _ => {}
        }
        let value = current.renewed(lease.ttl).to_json().into_bytes();
        let key = ServiceKeys::new(&lease.service).lock;
        if self
            .kv_put_flag(&key, ("acquire", &lease.token), Some(value))
            .await?
        {
            Ok(())
        } else {
            Err(RegistryError::LeaseLost {
                service: lease.service.clone(),
            })
        }
    }

    async fn unlock(&self, lease: &Lease) -> Result<(), RegistryError> {
        self.live_lock(lease).await?;
        let key = ServiceKeys::new(&lease.service).lock;
        let released = self
            .kv_put_flag(&key, ("release", &lease.token), None)
            .await?;
        self.destroy_session(&lease.token).await?;
        if released {
            Ok(())
        } else {
            Err(RegistryError::LeaseLost {
                service: lease.service.clone(),
            })
        }
    }

    async fn register(&self, registration: &Registration) -> Result<(), RegistryError> {
        let mut meta = registration.meta.clone();
        meta.insert(MANAGED_META_KEY.to_string(), "true".to_string());
        let mut request = json!({
            "ID": registration.id,
            "Name": registration.name,
            "Tags": registration.tags,
            "Address": registration.address,
            "Port": registration.port,
            "Meta": meta,
        });
        if let Some(check) = &registration.check {
            request["Check"] = check_definition(check);
        }
        let body = serde_json::to_vec(&request).expect("a registration serializes");
        // Without it, the agent keeps the checks of an earlier registration of this id that
        // the new one no longer has.
        let mut url = self.url(["agent", "service", "register"]);
        url.query_pairs_mut()
            .append_pair("replace-existing-checks", "true");
        self.send_ok(Method::PUT, url, Some(body)).await?;
        self.await_catalog(
            &registration.name,
            &format!("the registration of {}", registration.id),
            |entries| {
                entries.iter().any(|e| {
                    e.service.id == registration.id
                        && e.service.address == registration.address
                        && e.service.port == registration.port
                })
            },
        )
        .await
    }

    async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        // The agent's own record names the service, so the catalog can be watched for it.
        let (status, body) = self
            .send(Method::GET, self.url(["agent", "service", id]), None)
            .await?;
        let name = match status {
            // Unknown to this agent: nothing of ours to remove; the contract makes it a no-op.
            StatusCode::NOT_FOUND => return Ok(()),
            status if status.is_success() => {
                self.parse::<AgentService>("an agent read", &body)?.service
            }
            status => return Err(self.backend_error(status, &body)),
        };
        let url = self.url(["agent", "service", "deregister", id]);
        let (status, body) = self.send(Method::PUT, url, None).await?;
        // 404: removed in between by someone else; just as gone.
        if !(status.is_success() || status == StatusCode::NOT_FOUND) {
            return Err(self.backend_error(status, &body));
        }
        self.await_catalog(&name, &format!("the removal of {id}"), |entries| {
            entries.iter().all(|e| e.service.id != id)
        })
        .await
    }

    async fn instances(&self, name: &str) -> Result<Vec<Registration>, RegistryError> {
        let mut registrations = self
            .health_entries(name)
            .await?
            .into_iter()
            // Consul matches service names without regard to case; the contract is exact.
            .filter(|e| e.service.service == name)
            .map(HealthEntry::into_registration)
            .collect::<Vec<_>>();
        registrations.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(registrations)
    }

    async fn all_instances(&self) -> Result<Vec<Registration>, RegistryError> {
        let body = self
            .send_ok(Method::GET, self.url(["catalog", "services"]), None)
            .await?;
        let names: BTreeMap<String, serde_json::Value> = self.parse("a catalog read", &body)?;
        let mut all = Vec::new();
        for name in names.keys() {
            all.extend(
                self.health_entries(name)
                    .await?
                    .into_iter()
                    .filter(HealthEntry::is_managed)
                    .map(HealthEntry::into_registration),
            );
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }
}
