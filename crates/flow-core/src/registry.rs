//! The `Registry` port: where release state, the deploy lock and instance registrations live.
//!
//! # Contract
//!
//! Every backend (the in-memory one in [`crate::memory`], the embedded file store, Consul,
//! etcd) must behave as below; `flow_core::conformance` (feature `conformance`) checks it.
//!
//! * **State** — [`Registry::load`] of a service never stored returns
//!   `ReleaseState::default()` at [`Revision::NONE`]. [`Registry::store`] writes only when the
//!   stored revision still equals `expected` (compare-and-swap; `Revision::NONE` means "only
//!   if nothing is stored"), returns the new revision, and otherwise fails with
//!   [`RegistryError::Conflict`] without writing. A successful store is visible to every later
//!   `load`, from any process. A value under our keys that cannot be read back (a colour that
//!   is not `blue`/`green`, a scale that is not a number) is [`RegistryError::Corrupt`]: never
//!   silently reset.
//! * **Lock** — [`Registry::lock`] grants at most one live [`Lease`] per service. While a lease
//!   is live, another `lock` of that service fails at once with [`RegistryError::Locked`]
//!   naming the holder and since when. A lease is live until [`Registry::unlock`], or until its
//!   TTL passes without a [`Registry::renew`], or until its holder process dies (backends that
//!   can detect that, such as the file store, release it at once). `renew` and `unlock` of a
//!   lease that is no longer live fail with [`RegistryError::LeaseLost`]; a lost lease must
//!   make its holder stop before it changes anything else. [`Registry::lock_holder`] tells
//!   who holds a live lease (and `None` when no lease is live) without taking it.
//! * **Instances** — [`Registry::register`] adds or replaces the registration with that `id`;
//!   [`Registry::deregister`] removes it (removing an unknown id is not an error);
//!   [`Registry::instances`] lists registrations whose `name` equals the one given (exactly:
//!   `app` never lists `app2`) and [`Registry::all_instances`] lists all; both sorted by `id`.
//! * **Errors** — a backend that cannot be reached, or answers with an error status, fails
//!   with [`RegistryError::Unavailable`] / [`RegistryError::Backend`] naming its address; it
//!   never turns an error answer into a value.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{ReleaseState, Revision, ServiceName, Versioned};

/// A live hold on a service's deploy lock, as granted by [`Registry::lock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The locked service.
    pub service: ServiceName,
    /// Who holds it, in words a person can act on (`docker-flow pid 4242 on host-a`).
    pub holder: String,
    /// The backend's identity of this lease (session id, lease id, random token).
    pub token: String,
    /// When it was granted.
    pub acquired_at: SystemTime,
    /// How long it lives without a renew.
    pub ttl: Duration,
}

/// What a [`HealthCheck`] probes: the kinds Consul runs (and Registrator's
/// `SERVICE_CHECK_HTTP/HTTPS/TCP/TTL/SCRIPT/GRPC` ask for).
///
/// Serialized flattened into the check (`{"http": "..."}`), so a check stored before the other
/// kinds existed still reads back as an HTTP check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckTarget {
    /// Request this URL (`http://` or `https://`); 2xx passes, 429 warns, anything else fails.
    Http(String),
    /// Open a TCP connection to this `host:port`.
    Tcp(String),
    /// Nothing is probed: the check fails unless it is reported passing within this long.
    Ttl(Duration),
    /// Run this program with these arguments; exit 0 passes, 1 warns, anything else fails.
    Script(Vec<String>),
    /// Ask this `host:port[/service]` through the gRPC health checking protocol.
    Grpc(String),
}

/// How a health check's first result reads before it has run, as Consul names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// `passing`.
    Passing,
    /// `warning`.
    Warning,
    /// `critical` (what a check starts as when nothing else is said).
    Critical,
}

impl CheckStatus {
    /// The name Consul uses: `passing`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }
}

/// A health check a registry (Consul) can run against a registered instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is probed.
    #[serde(flatten)]
    pub target: CheckTarget,
    /// How often to check; `None` for TTL checks, which are reported rather than run.
    pub interval: Option<Duration>,
    /// How long one check may take; `None`: the registry's default (Consul: 10 s).
    pub timeout: Option<Duration>,
    /// The HTTP method of an HTTP check; `None`: GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A gRPC check speaks TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grpc_use_tls: bool,
    /// An HTTPS or gRPC-over-TLS check does not verify the certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_skip_verify: bool,
    /// The status before the first run; `None`: the registry's default (Consul: critical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_status: Option<CheckStatus>,
    /// Remove the instance once the check has been critical this long; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_after: Option<Duration>,
}

impl HealthCheck {
    /// A plain HTTP GET check of `url`, nothing else set.
    pub fn http(url: impl Into<String>, interval: Duration, timeout: Option<Duration>) -> Self {
        HealthCheck {
            target: CheckTarget::Http(url.into()),
            interval: Some(interval),
            timeout,
            method: None,
            grpc_use_tls: false,
            tls_skip_verify: false,
            initial_status: None,
            deregister_after: None,
        }
    }
}

/// One service instance as the registry knows it (Consul's catalog entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Unique id (Registrator's `<host>:<container>:<port>`, or the container id).
    pub id: String,
    /// The service name the instance answers under: `<service>-<color>` in blue-green mode.
    pub name: String,
    /// Address clients use to reach it.
    pub address: String,
    /// Port clients use to reach it.
    pub port: u16,
    /// Free-form tags (colour, version).
    pub tags: Vec<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// A health check, when one is known.
    pub check: Option<HealthCheck>,
}

/// Everything a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A compare-and-swap store found a different revision: another writer changed the state
    /// since it was loaded.
    #[error("the state of {service} changed while this release was running (another writer stored it); nothing was written — run again")]
    Conflict {
        /// The service whose state changed.
        service: ServiceName,
    },
    /// `lock` found a live lease of another holder.
    #[error("{service} is being released by {holder} (locked since {}); wait for it to finish, or for the lock to expire if that process died", crate::time::describe(*since))]
    Locked {
        /// The locked service.
        service: ServiceName,
        /// The other holder.
        holder: String,
        /// When it took the lock.
        since: SystemTime,
    },
    /// `renew` or `unlock` of a lease that expired or was taken over.
    #[error("the deploy lock of {service} was lost (it expired or was taken over); stopping before changing anything else")]
    LeaseLost {
        /// The service whose lock was lost.
        service: ServiceName,
    },
    /// A value under our keys that cannot be read back.
    #[error("the registry holds an unreadable value at {key}: {value:?} ({reason}); fix or delete it by hand — it is never reset silently")]
    Corrupt {
        /// The key (or file) holding it.
        key: String,
        /// The value as found.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend could not be reached.
    #[error("the registry at {address} cannot be reached: {}", crate::error_chain(source.as_ref()))]
    Unavailable {
        /// What was tried.
        address: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend answered with an error.
    #[error("the registry at {address} answered an error: {message}")]
    Backend {
        /// The backend's address.
        address: String,
        /// Its answer (status and body).
        message: String,
    },
}

/// Who holds a service's deploy lock, as [`Registry::lock_holder`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holder, as it gave itself to [`Registry::lock`] (`docker-flow pid 42 on host-a`).
    pub holder: String,
    /// When it took the lock.
    #[serde(with = "crate::time::rfc3339_serde")]
    pub since: SystemTime,
}

/// Where release state, the deploy lock and instance registrations live. See the
/// [module docs](self) for the contract every implementation keeps.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Registry: fmt::Debug + fmt::Display + Send + Sync {
    /// Reads the state of `service` with its revision.
    async fn load(&self, service: &ServiceName) -> Result<Versioned<ReleaseState>, RegistryError>;

    /// Stores `state` if the stored revision is still `expected`; returns the new revision.
    async fn store(
        &self,
        service: &ServiceName,
        state: &ReleaseState,
        expected: Revision,
    ) -> Result<Revision, RegistryError>;

    /// Takes the deploy lock of `service` for `holder`, living `ttl` without a renew.
    async fn lock(
        &self,
        service: &ServiceName,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, RegistryError>;

    /// Extends a live lease by its TTL.
    async fn renew(&self, lease: &Lease) -> Result<(), RegistryError>;

    /// Releases a live lease.
    async fn unlock(&self, lease: &Lease) -> Result<(), RegistryError>;

    /// Who holds the deploy lock of `service` now (`None`: it is free), read without taking
    /// it, for `docker-flow status`. A lease past its TTL, or whose holder the backend knows
    /// to be dead, is free.
    async fn lock_holder(&self, service: &ServiceName)
        -> Result<Option<LockHolder>, RegistryError>;

    /// Adds or replaces a registration (by `id`).
    async fn register(&self, registration: &Registration) -> Result<(), RegistryError>;

    /// Removes the registration with this id; an unknown id is not an error.
    async fn deregister(&self, id: &str) -> Result<(), RegistryError>;

    /// Registrations whose name is exactly `name`, sorted by id.
    async fn instances(&self, name: &str) -> Result<Vec<Registration>, RegistryError>;

    /// Every registration, sorted by id (the registrator uses it to find dangling ones).
    async fn all_instances(&self) -> Result<Vec<Registration>, RegistryError>;
}

/// A shared, dynamically dispatched registry.
pub type DynRegistry = std::sync::Arc<dyn Registry>;

#[cfg(any(test, feature = "mocks"))]
impl fmt::Display for MockRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock registry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_stored_before_the_other_kinds_existed_reads_back_as_http() {
        let stored = r#"{"http":"http://10.0.0.5:8080/health",
            "interval":{"secs":5,"nanos":0},"timeout":{"secs":2,"nanos":0}}"#;
        let check: HealthCheck = serde_json::from_str(stored).expect("the old form reads");
        assert_eq!(
            check,
            HealthCheck::http(
                "http://10.0.0.5:8080/health",
                Duration::from_secs(5),
                Some(Duration::from_secs(2))
            )
        );
        let ttl = HealthCheck {
            target: CheckTarget::Ttl(Duration::from_secs(30)),
            interval: None,
            initial_status: Some(CheckStatus::Passing),
            ..check
        };
        let text = serde_json::to_string(&ttl).expect("serializes");
        assert_eq!(
            serde_json::from_str::<HealthCheck>(&text).expect("reads"),
            ttl
        );
    }
}
