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
//!   make its holder stop before it changes anything else.
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

/// A health check a registry (Consul) can run against a registered instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The URL to GET; 2xx is passing.
    pub http: String,
    /// How often to check.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
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
    /// An HTTP check, when a health path is known.
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
