//! docker-flow's [`Registry`] on etcd v3, through etcd's JSON gateway.
//!
//! # Why the JSON gateway
//!
//! etcd serves its v3 API as gRPC and, on the same client port, as JSON over HTTP
//! (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/lease/grant`…). The gRPC client crates need
//! `protoc` at build time; the gateway needs nothing but the HTTP client the workspace already
//! has (`reqwest` without default features, on hyper). Gateway conventions handled here: keys
//! and values are base64, 64-bit numbers are JSON strings, and fields holding their default
//! value (`false`, `0`, empty) are left out of answers.
//!
//! # Keys
//!
//! State uses Docker Flow 1.x's layout, so `etcdctl get docker-flow/S/color` prints `blue`:
//!
//! | key | value |
//! |---|---|
//! | `docker-flow/S/color` | `blue` / `green`, plain text |
//! | `docker-flow/S/scale` | decimal instance count, plain text |
//! | `docker-flow/S/release` | JSON of [`ReleaseState::last_release`] |
//! | `docker-flow/S/revision` | a fixed note; only its `mod_revision` matters |
//! | `docker-flow/S/lock` | JSON `{holder, since_ms, expires_ms}`, attached to a lease |
//! | `docker-flow/.instances/<id>` | JSON of a [`Registration`] |
//!
//! The service keys and the reading of their values are [`flow_core::kv`]'s, shared with
//! every key-value registry. Instances live under `docker-flow/.instances/`: a service name
//! cannot start with `.`, so no service's keys can collide with them.
//!
//! # Revisions and compare-and-swap
//!
//! The [`Revision`] of a state is the `mod_revision` of its `revision` key (0 when absent, as
//! for state written by 1.x). `store` is one `txn`: *if* `mod_revision(revision) == expected`
//! *then* put `revision`, and put or delete `color`, `scale`, `release`. etcd applies it
//! atomically; every put of the transaction gets the transaction's revision, which is the new
//! [`Revision`] (the answer's `header.revision`). `load` reads the service's prefix with one
//! `range`, a single snapshot.
//!
//! # The deploy lock
//!
//! `lock` grants a lease (TTL in whole seconds, at least 1) and creates the lock key attached
//! to it in a `txn` guarded by `create_revision(lock) == 0`, so only one holder can create it;
//! when it exists, the same transaction reads it so the [`RegistryError::Locked`] answer names
//! its holder and since when. `renew` is a lease keep-alive plus a rewrite of the value's
//! deadline guarded by the key still being attached to the lease; `unlock` revokes the lease,
//! which deletes the key. etcd expires leases on its own schedule (up to ~0.5 s late, and
//! extends them across leader changes), so, as in the Consul adapter, the value also carries
//! the lease's exact deadline (`expires_ms`, wall clock): past it the lease counts as lost and
//! a new `lock` revokes it and takes over.
//!
//! # Registrations outlive the process
//!
//! A release registers its instances with plain puts (no lease): they stay until
//! deregistered, like containers that keep running after `docker-flow` exits. A registrator
//! that wants registrations to vanish with it (`--ttl`) builds the registry
//! [`EtcdRegistry::with_registration_ttl`]: each [`Registry::register`] then grants a lease
//! of that TTL and puts the registration on it, so the key vanishes unless written again
//! within the TTL (the registrator's `--ttl-refresh`). A fresh lease per write, rather than
//! one shared lease kept alive, keeps every write self-contained: a registration never
//! depends on a lease another write granted, and an expired lease needs no recovery. The
//! leases a refresh leaves behind hold no key and expire on their own.
//!
//! # Endpoints and errors
//!
//! [`EtcdRegistry::new`] takes `etcd://host:port[,host:port…]`. Each request goes to the
//! endpoint that answered last and, when that one cannot be connected to, to the next ones in
//! order; only when none can be reached is the result [`RegistryError::Unavailable`], naming
//! every endpoint tried. An answer that is not 200 is [`RegistryError::Backend`] with status
//! and body, never data. A value under our keys that cannot be read back is
//! [`RegistryError::Corrupt`] naming the key.

#![deny(missing_docs)]

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use flow_core::kv::{corrupt, parse_lock, LockRecord, ServiceKeys};
use flow_core::{
    Lease, LockHolder, Registration, Registry, RegistryError, ReleaseState, Revision, ServiceName,
    Versioned,
};
use serde_json::{json, Value};

/// The prefix of instance registrations.
pub const INSTANCES_PREFIX: &str = "docker-flow/.instances/";

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting to one endpoint may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An endpoint list that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdConfigError {
    /// The list is not `etcd://host:port[,host:port…]`.
    #[error("invalid etcd endpoints {endpoints:?}: {reason}; use etcd://host:port[,host:port…], e.g. etcd://127.0.0.1:2379")]
    InvalidEndpoints {
        /// The endpoints as given.
        endpoints: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build an HTTP client for etcd: {0}")]
    Client(#[source] reqwest::Error),
}

/// [`Registry`] on etcd v3's JSON gateway. See the [crate docs](crate) for the key layout.
pub struct EtcdRegistry {
    endpoints: Vec<String>,
    /// The endpoint that answered last; requests start there.
    preferred: AtomicUsize,
    client: reqwest::Client,
    /// Registrations expire this long after their last write; `None`: never.
    registration_ttl: Option<Duration>,
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.endpoints)
            .field("registration_ttl", &self.registration_ttl)
            .finish()
    }
}

impl fmt::Display for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd at {}", self.address())
    }
}

/// etcd's client port, taken for an endpoint written without one.
const DEFAULT_CLIENT_PORT: u16 = 2379;

impl EtcdRegistry {
    /// A registry on the etcd cluster at `endpoints`: `etcd://host:port[,host:port…]`
    /// (`http://` per endpoint is accepted too; a member without a port is at 2379).
    pub fn new(endpoints: &str) -> Result<Self, EtcdConfigError> {
        let invalid = |reason: String| EtcdConfigError::InvalidEndpoints {
            endpoints: endpoints.to_string(),
            reason,
        };
        let list = endpoints
            .trim()
            .strip_prefix("etcd://")
            .unwrap_or(endpoints.trim());
        let mut parsed = Vec::new();
        for endpoint in list.split(',').map(str::trim) {
            let host_port = endpoint.strip_prefix("http://").unwrap_or(endpoint);
            if host_port.contains("://") {
                return Err(invalid(format!(
                    "{endpoint:?} has an unsupported scheme (only plain HTTP is built in)"
                )));
            }
            let host_port = flow_core::address::authority(host_port, DEFAULT_CLIENT_PORT)
                .map_err(|reason| invalid(format!("{endpoint:?}: {reason}")))?;
            parsed.push(format!("http://{host_port}"));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(EtcdConfigError::Client)?;
        Ok(EtcdRegistry {
            endpoints: parsed,
            preferred: AtomicUsize::new(0),
            client,
            registration_ttl: None,
        })
    }

    /// The same registry, writing registrations that expire `ttl` (whole seconds, at least
    /// one) after their last [`Registry::register`] (see the crate docs).
    pub fn with_registration_ttl(self, ttl: Duration) -> Self {
        EtcdRegistry {
            registration_ttl: Some(ttl),
            ..self
        }
    }

    /// Grants a lease of `ttl` (rounded up to whole seconds, at least 1) and returns its id.
    async fn grant(&self, ttl: Duration) -> Result<String, RegistryError> {
        let seconds = (ttl.as_secs_f64().ceil() as u64).max(1);
        let granted = self
            .call("/v3/lease/grant", json!({"TTL": seconds.to_string()}))
            .await?;
        match granted["ID"].as_str() {
            Some(id) => Ok(id.to_string()),
            None => Err(RegistryError::Backend {
                address: self.address(),
                message: format!("a lease grant answered without an ID: {granted}"),
            }),
        }
    }

    /// The endpoints, as `etcd://host:port,host:port`.
    pub fn address(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// POSTs `body` to `path` on the first endpoint that can be reached and returns the
    /// answer as JSON; a non-200 answer is [`RegistryError::Backend`].
    async fn call(&self, path: &str, body: Value) -> Result<Value, RegistryError> {
        let body = serde_json::to_vec(&body).expect("JSON values serialize");
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for offset in 0..self.endpoints.len() {
            let at = (start + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[at];
            let sent = self
                .client
                .post(format!("{endpoint}{path}"))
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                // Not connected: nothing reached this member, another one may answer.
                Err(e) if e.is_connect() => {
                    failures.push(format!(
                        "{endpoint}: {}",
                        flow_core::error_chain(&e.without_url())
                    ));
                    continue;
                }
                Err(e) => {
                    return Err(RegistryError::Unavailable {
                        address: endpoint.clone(),
                        source: Box::new(e.without_url()),
                    })
                }
            };
            self.preferred.store(at, Ordering::Relaxed);
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| RegistryError::Unavailable {
                    address: endpoint.clone(),
                    source: Box::new(e.without_url()),
                })?;
            if status != reqwest::StatusCode::OK {
                return Err(RegistryError::Backend {
                    address: endpoint.clone(),
                    message: format!("{status} on {path}: {}", text.trim()),
                });
            }
            return serde_json::from_str(&text).map_err(|e| RegistryError::Backend {
                address: endpoint.clone(),
                message: format!("unexpected answer to {path} ({e}): {text}"),
            });
        }
        Err(RegistryError::Unavailable {
            address: self.address(),
            source: failures.join("; ").into(),
        })
    }

    /// Every key-value under `prefix`.
    async fn range_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, RegistryError> {
        let answer = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(prefix), "range_end": b64(&prefix_end(prefix))}),
            )
            .await?;
        key_values(&answer["kvs"])
    }

    /// The key-value at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, RegistryError> {
        let answer = self.call("/v3/kv/range", json!({"key": b64(key)})).await?;
        Ok(key_values(&answer["kvs"])?.into_iter().next())
    }

    async fn revoke(&self, lease_id: &str) -> Result<bool, RegistryError> {
        match self.call("/v3/lease/revoke", json!({"ID": lease_id})).await {
            Ok(_) => Ok(true),
            // etcd answers an error for a lease it no longer knows: it is gone either way.
            Err(RegistryError::Backend { message, .. }) if message.contains("lease not found") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The lock held by `lease` right now, or [`RegistryError::LeaseLost`].
    async fn live_lock(&self, lease: &Lease) -> Result<LockRecord, RegistryError> {
        let key = ServiceKeys::new(&lease.service).lock;
        let held = match self.get(&key).await? {
            Some(kv) if kv.lease == lease.token => {
                let value = parse_lock(&key, &kv.value)?;
                (!value.expired()).then_some(value)
            }
            _ => None,
        };
        match held {
            Some(value) => Ok(value),
            None => {
                // The lease is gone or past its deadline; end it so it does not linger.
                self.revoke(&lease.token).await?;
                Err(RegistryError::LeaseLost {
                    service: lease.service.clone(),
                })
            }
        }
    }
}

fn b64(text: &str) -> String {
    BASE64.encode(text)
}

/// The end of etcd's range covering every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    let last = bytes.last_mut().expect("prefixes are not empty");
    *last += 1;
    String::from_utf8(bytes).expect("our prefixes end in ASCII")
}

/// One key-value of a range answer, decoded.
struct KeyValue {
    key: String,
    value: String,
    mod_revision: u64,
    /// The lease id as etcd writes it (decimal text), empty when none.
    lease: String,
}

/// Decodes the `kvs` of a range answer (absent when empty).
fn key_values(kvs: &Value) -> Result<Vec<KeyValue>, RegistryError> {
    let Some(kvs) = kvs.as_array() else {
        return Ok(Vec::new());
    };
    kvs.iter()
        .map(|kv| {
            let field = |name: &str| kv[name].as_str().unwrap_or("");
            let decode = |raw: &str| {
                BASE64
                    .decode(raw)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            };
            let key = decode(field("key")).unwrap_or_else(|| field("key").to_string());
            let value = decode(field("value"))
                .ok_or_else(|| corrupt(&key, field("value"), "not base64-encoded UTF-8 text"))?;
            Ok(KeyValue {
                value,
                mod_revision: field("mod_revision").parse().unwrap_or(0),
                lease: match field("lease") {
                    "0" => String::new(),
                    lease => lease.to_string(),
                },
                key,
            })
        })
        .collect()
}

fn put(key: &str, value: &str) -> Value {
    json!({"request_put": {"key": b64(key), "value": b64(value)}})
}

fn put_leased(key: &str, value: &str, lease: &str) -> Value {
    json!({"request_put": {"key": b64(key), "value": b64(value), "lease": lease}})
}

fn delete(key: &str) -> Value {
    json!({"request_delete_range": {"key": b64(key)}})
}

/// `succeeded` of a txn answer (absent when false).
fn succeeded(answer: &Value) -> bool {
    answer["succeeded"].as_bool().unwrap_or(false)
}

fn header_revision(answer: &Value) -> Option<u64> {
    answer["header"]["revision"].as_str()?.parse().ok()
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn load(&self, service: &ServiceName) -> Result<Versioned<ReleaseState>, RegistryError> {
        let keys = ServiceKeys::new(service);
        let mut state = ReleaseState::default();
        let mut revision = Revision::NONE;
        for kv in self.range_prefix(&keys.prefix).await? {
            let (key, text) = (kv.key.as_str(), kv.value.as_str());
            if key == keys.revision {
                revision = Revision(kv.mod_revision);
            } else {
                keys.read_into(&mut state, key, || Ok(text.to_string()))?;
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
        let mut success = vec![put(
            &keys.revision,
            "the mod_revision of this key is the revision of docker-flow's state",
        )];
        success.extend(
            keys.values_of(state)
                .into_iter()
                .map(|(key, value)| match value {
                    Some(value) => put(key, &value),
                    None => delete(key),
                }),
        );
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{
                        "key": b64(&keys.revision),
                        "target": "MOD",
                        "result": "EQUAL",
                        "mod_revision": expected.0.to_string(),
                    }],
                    "success": success,
                }),
            )
            .await?;
        if !succeeded(&answer) {
            return Err(RegistryError::Conflict {
                service: service.clone(),
            });
        }
        header_revision(&answer)
            .map(Revision)
            .ok_or_else(|| RegistryError::Backend {
                address: self.address(),
                message: format!("the transaction answer has no revision: {answer}"),
            })
    }

    async fn lock(
        &self,
        service: &ServiceName,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, RegistryError> {
        let key = ServiceKeys::new(service).lock;
        let lease_id = self.grant(ttl).await?;
        let acquired_at = SystemTime::now();
        let value = LockRecord::new(holder, acquired_at, ttl).to_json();
        let attempt = json!({
            "compare": [{"key": b64(&key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [put_leased(&key, &value, &lease_id)],
            "failure": [{"request_range": {"key": b64(&key)}}],
        });
        // Two rounds: the second one only after a stale holder was removed.
        for _ in 0..2 {
            let answer = match self.call("/v3/kv/txn", attempt.clone()).await {
                Ok(answer) => answer,
                Err(error) => {
                    self.revoke(&lease_id).await.ok();
                    return Err(error);
                }
            };
            if succeeded(&answer) {
                return Ok(Lease {
                    service: service.clone(),
                    holder: holder.to_string(),
                    token: lease_id,
                    acquired_at,
                    ttl,
                });
            }
            let current =
                key_values(&answer["responses"][0]["response_range"]["kvs"]).and_then(|kvs| {
                    match kvs.into_iter().next() {
                        Some(kv) => parse_lock(&key, &kv.value)
                            .map(|value| Some((kv.lease, kv.mod_revision, value))),
                        None => Ok(None),
                    }
                });
            match current {
                Ok(Some((_, _, value))) if !value.expired() => {
                    self.revoke(&lease_id).await?;
                    return Err(RegistryError::Locked {
                        service: service.clone(),
                        since: value.since(),
                        holder: value.holder,
                    });
                }
                // Past its deadline: the holder stopped renewing; end its lease.
                Ok(Some((other, _, _))) if !other.is_empty() => {
                    self.revoke(&other).await?;
                }
                Ok(Some((_, seen, _))) => {
                    // A lock key with no lease was not written by this adapter: remove it
                    // only because its own deadline passed, and only if it is still the one
                    // read (another process may have taken the lock since).
                    self.call(
                        "/v3/kv/txn",
                        json!({
                            "compare": [{"key": b64(&key), "target": "MOD", "result": "EQUAL", "mod_revision": seen.to_string()}],
                            "success": [delete(&key)],
                        }),
                    )
                    .await?;
                }
                Ok(None) => {}
                Err(error) => {
                    self.revoke(&lease_id).await.ok();
                    return Err(error);
                }
            }
        }
        self.revoke(&lease_id).await?;
        Err(RegistryError::Backend {
            address: self.address(),
            message: format!("{key} could not be created although no live lease holds it"),
        })
    }

    async fn lock_holder(
        &self,
        service: &ServiceName,
    ) -> Result<Option<LockHolder>, RegistryError> {
        let key = ServiceKeys::new(service).lock;
        Ok(match self.get(&key).await? {
            Some(kv) => parse_lock(&key, &kv.value)?.live_holder(),
            None => None,
        })
    }

    async fn renew(&self, lease: &Lease) -> Result<(), RegistryError> {
        let current = self.live_lock(lease).await?;
        let kept = self
            .call("/v3/lease/keepalive", json!({"ID": lease.token}))
            .await?;
        // The keep-alive answer's TTL is absent (0) when etcd no longer knows the lease.
        let ttl_left: i64 = kept["result"]["TTL"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if ttl_left <= 0 {
            return Err(RegistryError::LeaseLost {
                service: lease.service.clone(),
            });
        }
        let key = ServiceKeys::new(&lease.service).lock;
        let value = current.renewed(lease.ttl).to_json();
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": b64(&key), "target": "LEASE", "result": "EQUAL", "lease": lease.token}],
                    "success": [put_leased(&key, &value, &lease.token)],
                }),
            )
            .await?;
        if succeeded(&answer) {
            Ok(())
        } else {
            Err(RegistryError::LeaseLost {
                service: lease.service.clone(),
            })
        }
    }

    async fn unlock(&self, lease: &Lease) -> Result<(), RegistryError> {
        self.live_lock(lease).await?;
        if self.revoke(&lease.token).await? {
            Ok(())
        } else {
            Err(RegistryError::LeaseLost {
                service: lease.service.clone(),
            })
        }
    }

    async fn register(&self, registration: &Registration) -> Result<(), RegistryError> {
        let value = serde_json::to_string(registration).expect("a registration serializes");
        let mut put = json!({"key": b64(&format!("{INSTANCES_PREFIX}{}", registration.id)), "value": b64(&value)});
        if let Some(ttl) = self.registration_ttl {
            put["lease"] = json!(self.grant(ttl).await?);
        }
        self.call("/v3/kv/put", put).await.map(drop)
    }

    async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        self.call(
            "/v3/kv/deleterange",
            json!({"key": b64(&format!("{INSTANCES_PREFIX}{id}"))}),
        )
        .await
        .map(drop)
    }

    async fn instances(&self, name: &str) -> Result<Vec<Registration>, RegistryError> {
        Ok(self
            .all_instances()
            .await?
            .into_iter()
            .filter(|r| r.name == name)
            .collect())
    }

    async fn all_instances(&self) -> Result<Vec<Registration>, RegistryError> {
        let mut all = self
            .range_prefix(INSTANCES_PREFIX)
            .await?
            .into_iter()
            .map(|kv| {
                serde_json::from_str::<Registration>(&kv.value)
                    .map_err(|e| corrupt(&kv.key, &kv.value, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }
}
