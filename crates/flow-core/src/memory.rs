//! In-memory implementations of the three ports, for tests and for embedders.
//!
//! * [`MemoryRegistry`] keeps the [`Registry`] contract exactly (it passes
//!   `flow_core::conformance`); its lock TTL runs on the wall clock.
//! * [`MemoryOrchestrator`] simulates the containers of groups. Each target has an image and a
//!   script: how its instances' health evolves ([`HealthScript`]) and which operations fail
//!   ([`MemoryOrchestrator::fail`]), so the release engine's failure branches can be driven
//!   without Docker.
//! * [`MemoryProxy`] records the route and servers of each service, answers `sessions` from a
//!   script (drain to zero after N polls) and can be made to refuse or to report servers that
//!   do not come UP.
//!
//! Every port records an ordered log of what was asked of it ([`Recorded`]). The sequence
//! numbers come from one process-wide counter, so entries of different ports can be ordered
//! against each other: that is how a test checks that the proxy was switched before the state
//! was committed and the old colour stopped after both.
//!
//! All of them are cheap to clone: clones share the same state, so a test keeps one handle
//! for assertions and gives another to the engine as `Arc<dyn …>`. Nothing here does I/O;
//! addresses such as `10.0.0.7:8080` are never dialled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use crate::domain::{ReleaseSpec, ReleaseState, Revision, ServiceName, Versioned};
use crate::orchestrator::{
    Diagnosis, Group, Health, Instance, Orchestrator, OrchestratorError, RecoveredSpec, TargetInfo,
};
use crate::proxy::{Proxy, ProxyError, Route, ServedRoute, ServedServer};
use crate::registry::{Lease, LockHolder, Registration, Registry, RegistryError};

/// One logged operation with its place in the process-wide order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded<T> {
    /// Position among every operation any memory port recorded (increasing).
    pub sequence: u64,
    /// What was asked.
    pub operation: T,
}

fn next_sequence() -> u64 {
    static SEQUENCE: AtomicU64 = AtomicU64::new(1);
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not hide the state from
/// the assertions that follow.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------

/// A registry write, as logged by [`MemoryRegistry`] (reads are not logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryOperation {
    /// A successful compare-and-swap store.
    Store {
        /// The service.
        service: ServiceName,
        /// What was stored.
        state: ReleaseState,
    },
    /// A granted lock.
    Lock {
        /// The service.
        service: ServiceName,
        /// Who took it.
        holder: String,
    },
    /// A successful renew.
    Renew {
        /// The service.
        service: ServiceName,
    },
    /// A successful unlock.
    Unlock {
        /// The service.
        service: ServiceName,
    },
    /// A registration added or replaced.
    Register(Registration),
    /// A registration removed (or an unknown id asked to be).
    Deregister(String),
}

#[derive(Debug)]
struct LiveLock {
    holder: String,
    token: String,
    acquired_at: SystemTime,
    expires: Instant,
}

#[derive(Debug, Default)]
struct RegistryInner {
    states: BTreeMap<ServiceName, Versioned<ReleaseState>>,
    last_revision: u64,
    locks: BTreeMap<ServiceName, LiveLock>,
    last_token: u64,
    instances: BTreeMap<String, Registration>,
    unavailable: bool,
    log: Vec<Recorded<RegistryOperation>>,
}

impl RegistryInner {
    fn record(&mut self, operation: RegistryOperation) {
        self.log.push(Recorded {
            sequence: next_sequence(),
            operation,
        });
    }

    fn check_available(&self) -> Result<(), RegistryError> {
        if self.unavailable {
            return Err(RegistryError::Unavailable {
                address: "memory".to_string(),
                source: "the memory registry was made unavailable by the test".into(),
            });
        }
        Ok(())
    }

    /// The live lock of `lease.service` if it is this lease; an expired lock is dropped.
    fn live_lease(&mut self, lease: &Lease) -> Result<&mut LiveLock, RegistryError> {
        let lost = || RegistryError::LeaseLost {
            service: lease.service.clone(),
        };
        let now = Instant::now();
        match self.locks.get(&lease.service) {
            Some(lock) if lock.expires <= now => {
                self.locks.remove(&lease.service);
                Err(lost())
            }
            Some(lock) if lock.token == lease.token => {
                Ok(self.locks.get_mut(&lease.service).expect("just looked up"))
            }
            _ => Err(lost()),
        }
    }
}

/// An in-memory [`Registry`] keeping the whole contract, with the lock TTL on the wall clock.
///
/// Revisions count up across all services, so a revision is never reused. Lease expiry is
/// measured with `std::time::Instant`, not Tokio's clock: a test with paused Tokio time does
/// not expire leases by advancing it. Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    inner: Arc<Mutex<RegistryInner>>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call fail with [`RegistryError::Unavailable`] (or work again), to
    /// exercise what callers do when the registry goes away.
    pub fn set_unavailable(&self, unavailable: bool) {
        locked(&self.inner).unavailable = unavailable;
    }

    /// The writes made so far, in order.
    pub fn operations(&self) -> Vec<Recorded<RegistryOperation>> {
        locked(&self.inner).log.clone()
    }

    /// The stored state of `service`, without going through the async port.
    pub fn state(&self, service: &ServiceName) -> Option<ReleaseState> {
        locked(&self.inner)
            .states
            .get(service)
            .map(|v| v.value.clone())
    }
}

impl fmt::Display for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory registry")
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn load(&self, service: &ServiceName) -> Result<Versioned<ReleaseState>, RegistryError> {
        let inner = locked(&self.inner);
        inner.check_available()?;
        Ok(inner
            .states
            .get(service)
            .cloned()
            .unwrap_or_else(|| Versioned {
                value: ReleaseState::default(),
                revision: Revision::NONE,
            }))
    }

    async fn store(
        &self,
        service: &ServiceName,
        state: &ReleaseState,
        expected: Revision,
    ) -> Result<Revision, RegistryError> {
        let mut inner = locked(&self.inner);
        inner.check_available()?;
        let current = inner
            .states
            .get(service)
            .map_or(Revision::NONE, |v| v.revision);
        if current != expected {
            return Err(RegistryError::Conflict {
                service: service.clone(),
            });
        }
        inner.last_revision += 1;
        let revision = Revision(inner.last_revision);
        inner.states.insert(
            service.clone(),
            Versioned {
                value: state.clone(),
                revision,
            },
        );
        inner.record(RegistryOperation::Store {
            service: service.clone(),
            state: state.clone(),
        });
        Ok(revision)
    }

    async fn lock(
        &self,
        service: &ServiceName,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, RegistryError> {
        let mut inner = locked(&self.inner);
        inner.check_available()?;
        let now = Instant::now();
        if let Some(lock) = inner.locks.get(service) {
            if lock.expires > now {
                return Err(RegistryError::Locked {
                    service: service.clone(),
                    holder: lock.holder.clone(),
                    since: lock.acquired_at,
                });
            }
        }
        inner.last_token += 1;
        let lease = Lease {
            service: service.clone(),
            holder: holder.to_string(),
            token: format!("memory-lease-{}", inner.last_token),
            acquired_at: SystemTime::now(),
            ttl,
        };
        inner.locks.insert(
            service.clone(),
            LiveLock {
                holder: lease.holder.clone(),
                token: lease.token.clone(),
                acquired_at: lease.acquired_at,
                expires: now + ttl,
            },
        );
        inner.record(RegistryOperation::Lock {
            service: service.clone(),
            holder: holder.to_string(),
        });
        Ok(lease)
    }

    async fn lock_holder(
        &self,
        service: &ServiceName,
    ) -> Result<Option<LockHolder>, RegistryError> {
        let inner = locked(&self.inner);
        inner.check_available()?;
        Ok(inner
            .locks
            .get(service)
            .filter(|lock| lock.expires > Instant::now())
            .map(|lock| LockHolder {
                holder: lock.holder.clone(),
                since: lock.acquired_at,
            }))
    }

    async fn renew(&self, lease: &Lease) -> Result<(), RegistryError> {
        let mut inner = locked(&self.inner);
        inner.check_available()?;
        inner.live_lease(lease)?.expires = Instant::now() + lease.ttl;
        inner.record(RegistryOperation::Renew {
            service: lease.service.clone(),
        });
        Ok(())
    }

    async fn unlock(&self, lease: &Lease) -> Result<(), RegistryError> {
        let mut inner = locked(&self.inner);
        inner.check_available()?;
        inner.live_lease(lease)?;
        inner.locks.remove(&lease.service);
        inner.record(RegistryOperation::Unlock {
            service: lease.service.clone(),
        });
        Ok(())
    }

    async fn register(&self, registration: &Registration) -> Result<(), RegistryError> {
        let mut inner = locked(&self.inner);
        inner.check_available()?;
        inner
            .instances
            .insert(registration.id.clone(), registration.clone());
        inner.record(RegistryOperation::Register(registration.clone()));
        Ok(())
    }

    async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let mut inner = locked(&self.inner);
        inner.check_available()?;
        inner.instances.remove(id);
        inner.record(RegistryOperation::Deregister(id.to_string()));
        Ok(())
    }

    async fn instances(&self, name: &str) -> Result<Vec<Registration>, RegistryError> {
        let inner = locked(&self.inner);
        inner.check_available()?;
        // The map is keyed by id, so its order is the contract's order.
        Ok(inner
            .instances
            .values()
            .filter(|r| r.name == name)
            .cloned()
            .collect())
    }

    async fn all_instances(&self) -> Result<Vec<Registration>, RegistryError> {
        let inner = locked(&self.inner);
        inner.check_available()?;
        Ok(inner.instances.values().cloned().collect())
    }
}

// ---------------------------------------------------------------------------------------
// Orchestrator
// ---------------------------------------------------------------------------------------

/// How the health of a target's instances evolves, poll by poll.
///
/// Each instance counts its own polls of [`Orchestrator::health`]. The first `polls` answer
/// `Starting`; every later one answers the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthScript {
    /// `Healthy` after this many `Starting` answers (`HealthyAfter(0)`, the default: at once).
    HealthyAfter(u32),
    /// `Unhealthy` with `detail` after `polls` `Starting` answers.
    UnhealthyAfter {
        /// `Starting` answers first.
        polls: u32,
        /// The health check output reported (also by `diagnose`).
        detail: String,
    },
    /// The instance exits with `code` after `polls` `Starting` answers (and is then stopped).
    ExitedAfter {
        /// `Starting` answers first.
        polls: u32,
        /// Its exit code.
        code: i64,
    },
}

impl Default for HealthScript {
    fn default() -> Self {
        HealthScript::HealthyAfter(0)
    }
}

/// An orchestrator operation a test can make fail with [`MemoryOrchestrator::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailingOperation {
    /// `prepare` of the target fails (as a failed pull: [`OrchestratorError::Image`]).
    Prepare,
    /// `start` of any group of the target fails and creates nothing.
    Start,
    /// `stop` of instances of the target fails.
    Stop,
    /// `remove` of instances of the target fails.
    Remove,
}

/// An orchestrator call, as logged by [`MemoryOrchestrator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrchestratorOperation {
    /// `describe(target)`.
    Describe(String),
    /// `prepare(target)`.
    Prepare(String),
    /// One side target actually started by `start_side_targets` (running ones are not).
    StartSideTarget(String),
    /// `list(group)`.
    List(Group),
    /// `start(group, numbers)` (logged also when it fails).
    Start(Group, Vec<u32>),
    /// `resume` of the instances with these names.
    Resume(Vec<String>),
    /// `recover_spec` of the instance with this name.
    RecoverSpec(String),
    /// `health` of the instance with this name.
    Health(String),
    /// `diagnose` of the instance with this name.
    Diagnose(String),
    /// `stop` of the instances with these names.
    Stop(Vec<String>),
    /// `remove` of the instances with these names.
    Remove(Vec<String>),
}

#[derive(Debug)]
struct Container {
    instance: Instance,
    polls: u32,
    /// What it was started from; `None` for an instance planted as started by Docker Flow
    /// 1.x ([`MemoryOrchestrator::plant_legacy`]), which carries no spec.
    spec: Option<ReleaseSpec>,
}

#[derive(Debug, Default)]
struct TargetConfig {
    image: String,
    /// The resolved configuration besides the image ([`MemoryOrchestrator::set_config`]).
    config: BTreeMap<String, serde_json::Value>,
    health: HealthScript,
    failing: BTreeSet<FailingOperation>,
    side_running: bool,
}

#[derive(Debug, Default)]
struct OrchestratorInner {
    targets: BTreeMap<String, TargetConfig>,
    /// Keyed by container id.
    containers: BTreeMap<String, Container>,
    last_container: u64,
    log: Vec<Recorded<OrchestratorOperation>>,
}

impl OrchestratorInner {
    fn record(&mut self, operation: OrchestratorOperation) {
        self.log.push(Recorded {
            sequence: next_sequence(),
            operation,
        });
    }

    /// The spec `target` resolves to now.
    fn resolve(&self, target: &str) -> Result<ReleaseSpec, OrchestratorError> {
        let config = self.target(target)?;
        Ok(ReleaseSpec::new(
            config.image.clone(),
            image_id_of(&config.image),
            config.config.clone(),
        ))
    }

    fn target(&self, target: &str) -> Result<&TargetConfig, OrchestratorError> {
        self.targets
            .get(target)
            .ok_or_else(|| OrchestratorError::UnknownTarget {
                target: target.to_string(),
                known: self.targets.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    fn fails(&self, target: &str, operation: FailingOperation) -> bool {
        self.targets
            .get(target)
            .is_some_and(|t| t.failing.contains(&operation))
    }

    /// Refuses `operation` (named `name` in the error) when it is scripted to fail for the
    /// target of one of `instances`; checked before anything is done: all or nothing.
    fn refuse_scripted(
        &self,
        instances: &[Instance],
        operation: FailingOperation,
        name: &'static str,
    ) -> Result<(), OrchestratorError> {
        match instances
            .iter()
            .find(|i| self.fails(&i.group.target, operation))
        {
            Some(failing) => Err(scripted_failure(name, failing.name.clone())),
            None => Ok(()),
        }
    }
}

/// The error of an operation scripted to fail on `instance`.
fn scripted_failure(operation: &'static str, instance: String) -> OrchestratorError {
    OrchestratorError::Instance {
        operation,
        instance,
        message: "scripted failure of the memory orchestrator".into(),
    }
}

/// A simulated container engine: targets with an image and a script, instances as records.
///
/// Configure targets with [`with_target`](Self::with_target) (or
/// [`add_target`](Self::add_target)), script their health with
/// [`set_health`](Self::set_health) and their failures with [`fail`](Self::fail), then
/// assert on [`operations`](Self::operations) and [`instances`](Self::instances).
/// Instance addresses are `10.0.<n / 250>.<n % 250 + 2>:8080` for the n-th instance ever
/// started, so each has its own.
#[derive(Debug, Clone, Default)]
pub struct MemoryOrchestrator {
    inner: Arc<Mutex<OrchestratorInner>>,
}

impl MemoryOrchestrator {
    /// An orchestrator with no targets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or re-images) `target`, builder style.
    pub fn with_target(self, target: &str, image: &str) -> Self {
        self.add_target(target, image);
        self
    }

    /// Adds `target` running `image`, or changes the image of an existing one (as a new
    /// Compose file would).
    pub fn add_target(&self, target: &str, image: &str) {
        locked(&self.inner)
            .targets
            .entry(target.to_string())
            .or_default()
            .image = image.to_string();
    }

    /// Sets the resolved configuration of `target` besides its image (as an edited Compose
    /// file would).
    pub fn set_config(&self, target: &str, config: BTreeMap<String, serde_json::Value>) {
        locked(&self.inner)
            .targets
            .entry(target.to_string())
            .or_default()
            .config = config;
    }

    /// The spec the instance with container id `id` was started from.
    pub fn spec_of(&self, id: &str) -> Option<ReleaseSpec> {
        locked(&self.inner)
            .containers
            .get(id)
            .and_then(|c| c.spec.clone())
    }

    /// Plants a running instance of `group` as Docker Flow 1.x left it: running `image`, with
    /// no spec on it.
    pub fn plant_legacy(&self, group: &Group, number: u32, image: &str) -> Instance {
        let mut inner = locked(&self.inner);
        inner.last_container += 1;
        let n = inner.last_container;
        let instance = Instance {
            id: format!("memory-container-{n}"),
            name: format!("{group}-{number}"),
            group: group.clone(),
            number,
            running: true,
            address: Some(address_of(n)),
            image: image.to_string(),
        };
        inner.containers.insert(
            instance.id.clone(),
            Container {
                instance: instance.clone(),
                polls: 0,
                spec: None,
            },
        );
        instance
    }

    /// Sets how the health of `target`'s instances started from now on evolves.
    pub fn set_health(&self, target: &str, script: HealthScript) {
        locked(&self.inner)
            .targets
            .entry(target.to_string())
            .or_default()
            .health = script;
    }

    /// Makes `operation` fail for `target` until [`heal`](Self::heal).
    pub fn fail(&self, target: &str, operation: FailingOperation) {
        locked(&self.inner)
            .targets
            .entry(target.to_string())
            .or_default()
            .failing
            .insert(operation);
    }

    /// Makes `operation` work again for `target`.
    pub fn heal(&self, target: &str, operation: FailingOperation) {
        if let Some(t) = locked(&self.inner).targets.get_mut(target) {
            t.failing.remove(&operation);
        }
    }

    /// The calls made so far, in order.
    pub fn operations(&self) -> Vec<Recorded<OrchestratorOperation>> {
        locked(&self.inner).log.clone()
    }

    /// Every instance that exists (running or stopped), in container-id order (the order
    /// they were started in).
    pub fn instances(&self) -> Vec<Instance> {
        let inner = locked(&self.inner);
        let mut all: Vec<_> = inner
            .containers
            .values()
            .map(|c| c.instance.clone())
            .collect();
        all.sort_by_key(|i| container_number(&i.id));
        all
    }

    /// Whether side target `target` is running.
    pub fn side_target_running(&self, target: &str) -> bool {
        locked(&self.inner)
            .targets
            .get(target)
            .is_some_and(|t| t.side_running)
    }
}

fn container_number(id: &str) -> u64 {
    id.trim_start_matches("memory-container-")
        .parse()
        .unwrap_or(u64::MAX)
}

/// The content id the memory engine gives `image`: one per reference.
fn image_id_of(image: &str) -> String {
    format!("memory-image:{image}")
}

fn address_of(n: u64) -> SocketAddr {
    let ip = Ipv4Addr::new(10, 0, (n / 250 % 250) as u8, (n % 250 + 2) as u8);
    SocketAddr::from((ip, 8080))
}

impl fmt::Display for MemoryOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory orchestrator")
    }
}

#[async_trait]
impl Orchestrator for MemoryOrchestrator {
    async fn describe(&self, target: &str) -> Result<TargetInfo, OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::Describe(target.to_string()));
        let config = inner.target(target)?;
        Ok(TargetInfo {
            image: config.image.clone(),
            config: config.config.clone(),
        })
    }

    async fn prepare(&self, target: &str) -> Result<ReleaseSpec, OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::Prepare(target.to_string()));
        let spec = inner.resolve(target)?;
        if inner.fails(target, FailingOperation::Prepare) {
            return Err(OrchestratorError::Image {
                image: spec.image,
                message: "pull refused (scripted failure of the memory orchestrator)".into(),
            });
        }
        Ok(spec)
    }

    async fn start_side_targets(&self, side_targets: &[String]) -> Result<(), OrchestratorError> {
        let mut inner = locked(&self.inner);
        for target in side_targets {
            inner.target(target)?;
        }
        for target in side_targets {
            let config = inner.targets.get_mut(target).expect("checked above");
            if !config.side_running {
                config.side_running = true;
                inner.record(OrchestratorOperation::StartSideTarget(target.clone()));
            }
        }
        Ok(())
    }

    async fn list(&self, group: &Group) -> Result<Vec<Instance>, OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::List(group.clone()));
        let mut found: Vec<_> = inner
            .containers
            .values()
            .filter(|c| &c.instance.group == group)
            .map(|c| c.instance.clone())
            .collect();
        found.sort_by_key(|i| i.number);
        Ok(found)
    }

    async fn start(
        &self,
        group: &Group,
        numbers: &[u32],
        spec: &ReleaseSpec,
    ) -> Result<Vec<Instance>, OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::Start(
            group.clone(),
            numbers.to_vec(),
        ));
        inner.target(&group.target)?;
        if inner.fails(&group.target, FailingOperation::Start) {
            return Err(scripted_failure(
                "start",
                format!("{group}-{}", numbers.first().copied().unwrap_or(1)),
            ));
        }
        if let Some(taken) = inner
            .containers
            .values()
            .find(|c| &c.instance.group == group && numbers.contains(&c.instance.number))
        {
            return Err(OrchestratorError::Instance {
                operation: "create",
                instance: taken.instance.name.clone(),
                message: "an instance with this name already exists".into(),
            });
        }
        let mut started = Vec::with_capacity(numbers.len());
        for &number in numbers {
            inner.last_container += 1;
            let n = inner.last_container;
            let instance = Instance {
                id: format!("memory-container-{n}"),
                name: format!("{group}-{number}"),
                group: group.clone(),
                number,
                running: true,
                address: Some(address_of(n)),
                image: spec.image.clone(),
            };
            inner.containers.insert(
                instance.id.clone(),
                Container {
                    instance: instance.clone(),
                    polls: 0,
                    spec: Some(spec.clone()),
                },
            );
            started.push(instance);
        }
        Ok(started)
    }

    async fn resume(&self, instances: &[Instance]) -> Result<Vec<Instance>, OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::Resume(
            instances.iter().map(|i| i.name.clone()).collect(),
        ));
        // Checked before anything is started: all or nothing.
        inner.refuse_scripted(instances, FailingOperation::Start, "start")?;
        if let Some(gone) = instances
            .iter()
            .find(|i| !inner.containers.contains_key(&i.id))
        {
            return Err(OrchestratorError::Instance {
                operation: "start",
                instance: gone.name.clone(),
                message: "no such container".into(),
            });
        }
        let mut resumed = Vec::with_capacity(instances.len());
        for instance in instances {
            inner.last_container += 1;
            let address = address_of(inner.last_container);
            let container = inner
                .containers
                .get_mut(&instance.id)
                .expect("checked above");
            if !container.instance.running {
                container.instance.running = true;
                container.instance.address = Some(address);
                container.polls = 0;
            }
            resumed.push(container.instance.clone());
        }
        Ok(resumed)
    }

    async fn recover_spec(&self, instance: &Instance) -> Result<RecoveredSpec, OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::RecoverSpec(instance.name.clone()));
        let container =
            inner
                .containers
                .get(&instance.id)
                .ok_or_else(|| OrchestratorError::Instance {
                    operation: "inspect",
                    instance: instance.name.clone(),
                    message: "no such container".into(),
                })?;
        if let Some(spec) = &container.spec {
            return Ok(RecoveredSpec::Exact(spec.clone()));
        }
        let image = container.instance.image.clone();
        let config = inner.target(&instance.group.target)?.config.clone();
        Ok(RecoveredSpec::ImageOnly(ReleaseSpec::new(
            image.clone(),
            image_id_of(&image),
            config,
        )))
    }

    async fn health(&self, instance: &Instance) -> Result<Health, OrchestratorError> {
        let mut guard = locked(&self.inner);
        let inner = &mut *guard;
        inner.record(OrchestratorOperation::Health(instance.name.clone()));
        let script = inner
            .targets
            .get(&instance.group.target)
            .map(|t| t.health.clone())
            .unwrap_or_default();
        let container =
            inner
                .containers
                .get_mut(&instance.id)
                .ok_or_else(|| OrchestratorError::Instance {
                    operation: "inspect",
                    instance: instance.name.clone(),
                    message: "no such container".into(),
                })?;
        if !container.instance.running {
            return Ok(Health::Exited { code: 0 });
        }
        container.polls += 1;
        let starting_polls = match &script {
            HealthScript::HealthyAfter(polls)
            | HealthScript::UnhealthyAfter { polls, .. }
            | HealthScript::ExitedAfter { polls, .. } => *polls,
        };
        if container.polls <= starting_polls {
            return Ok(Health::Starting { detail: None });
        }
        Ok(match script {
            HealthScript::HealthyAfter(_) => Health::Healthy,
            HealthScript::UnhealthyAfter { detail, .. } => Health::Unhealthy { detail },
            HealthScript::ExitedAfter { code, .. } => {
                container.instance.running = false;
                container.instance.address = None;
                Health::Exited { code }
            }
        })
    }

    async fn diagnose(&self, instance: &Instance) -> Result<Diagnosis, OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::Diagnose(instance.name.clone()));
        let last_health_output = match inner.targets.get(&instance.group.target) {
            Some(TargetConfig {
                health: HealthScript::UnhealthyAfter { detail, .. },
                ..
            }) => Some(detail.clone()),
            _ => None,
        };
        Ok(Diagnosis {
            last_health_output,
            log_tail: format!("memory instance {} ({})", instance.name, instance.image),
        })
    }

    async fn stop(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::Stop(
            instances.iter().map(|i| i.name.clone()).collect(),
        ));
        inner.refuse_scripted(instances, FailingOperation::Stop, "stop")?;
        for instance in instances {
            if let Some(container) = inner.containers.get_mut(&instance.id) {
                container.instance.running = false;
                container.instance.address = None;
            }
        }
        Ok(())
    }

    async fn remove(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        let mut inner = locked(&self.inner);
        inner.record(OrchestratorOperation::Remove(
            instances.iter().map(|i| i.name.clone()).collect(),
        ));
        inner.refuse_scripted(instances, FailingOperation::Remove, "remove")?;
        for instance in instances {
            inner.containers.remove(&instance.id);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------------------

/// A proxy call, as logged by [`MemoryProxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyOperation {
    /// `reconfigure(route, servers)` (logged also when it fails).
    Reconfigure(Route, Vec<SocketAddr>),
    /// `sessions(service, servers)`.
    Sessions(ServiceName, Vec<SocketAddr>),
    /// `remove(service)`.
    Remove(ServiceName),
}

/// How [`MemoryProxy::reconfigure`] fails for a service, until cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFailure {
    /// [`ProxyError::Refused`] with this message.
    Refuse(String),
    /// [`ProxyError::NotUp`] naming every server asked for.
    NotUp,
}

#[derive(Debug, Clone, Copy)]
struct Draining {
    open: u64,
    polls_left: u32,
}

#[derive(Debug, Default)]
struct ProxyInner {
    routes: BTreeMap<ServiceName, (Route, Vec<SocketAddr>)>,
    failures: BTreeMap<ServiceName, ProxyFailure>,
    draining: BTreeMap<ServiceName, Draining>,
    down: BTreeSet<SocketAddr>,
    log: Vec<Recorded<ProxyOperation>>,
}

impl ProxyInner {
    fn record(&mut self, operation: ProxyOperation) {
        self.log.push(Recorded {
            sequence: next_sequence(),
            operation,
        });
    }
}

/// A proxy that records routes instead of routing.
///
/// `reconfigure` replaces the route and servers of the service (every server is "UP" at
/// once) unless a failure is scripted with [`fail_reconfigure`](Self::fail_reconfigure) or a
/// server is [down](Self::set_down), in which case the previous route stays, as the contract
/// wants. `sessions` answers 0 unless
/// [`drain_after`](Self::drain_after) scripted open sessions.
#[derive(Debug, Clone, Default)]
pub struct MemoryProxy {
    inner: Arc<Mutex<ProxyInner>>,
}

impl MemoryProxy {
    /// A proxy with no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The route and servers of `service`, if it has a route.
    pub fn route(&self, service: &ServiceName) -> Option<(Route, Vec<SocketAddr>)> {
        locked(&self.inner).routes.get(service).cloned()
    }

    /// Makes `reconfigure` of `service` fail with `failure` until
    /// [`clear_failure`](Self::clear_failure).
    pub fn fail_reconfigure(&self, service: &ServiceName, failure: ProxyFailure) {
        locked(&self.inner)
            .failures
            .insert(service.clone(), failure);
    }

    /// Makes `reconfigure` of `service` work again.
    pub fn clear_failure(&self, service: &ServiceName) {
        locked(&self.inner).failures.remove(service);
    }

    /// Makes the server at `address` never come UP: a `reconfigure` listing it fails with
    /// [`ProxyError::NotUp`] naming exactly the servers that are down.
    pub fn set_down(&self, address: SocketAddr) {
        locked(&self.inner).down.insert(address);
    }

    /// Makes `sessions` of `service` answer `open` for the next `polls` calls, then 0 (the
    /// old servers drain after `polls` polls). `u32::MAX` polls: never drains.
    pub fn drain_after(&self, service: &ServiceName, open: u64, polls: u32) {
        locked(&self.inner).draining.insert(
            service.clone(),
            Draining {
                open,
                polls_left: polls,
            },
        );
    }

    /// The calls made so far, in order.
    pub fn operations(&self) -> Vec<Recorded<ProxyOperation>> {
        locked(&self.inner).log.clone()
    }
}

impl fmt::Display for MemoryProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory proxy")
    }
}

#[async_trait]
impl Proxy for MemoryProxy {
    async fn reconfigure(&self, route: &Route, servers: &[SocketAddr]) -> Result<(), ProxyError> {
        let mut inner = locked(&self.inner);
        inner.record(ProxyOperation::Reconfigure(route.clone(), servers.to_vec()));
        match inner.failures.get(&route.service) {
            Some(ProxyFailure::Refuse(message)) => Err(ProxyError::Refused {
                message: message.clone(),
            }),
            Some(ProxyFailure::NotUp) => Err(ProxyError::NotUp {
                service: route.service.clone(),
                servers: servers.to_vec(),
            }),
            None => {
                let down: Vec<SocketAddr> = servers
                    .iter()
                    .filter(|server| inner.down.contains(server))
                    .copied()
                    .collect();
                if !down.is_empty() {
                    return Err(ProxyError::NotUp {
                        service: route.service.clone(),
                        servers: down,
                    });
                }
                inner
                    .routes
                    .insert(route.service.clone(), (route.clone(), servers.to_vec()));
                Ok(())
            }
        }
    }

    async fn sessions(
        &self,
        service: &ServiceName,
        servers: &[SocketAddr],
    ) -> Result<u64, ProxyError> {
        let mut inner = locked(&self.inner);
        inner.record(ProxyOperation::Sessions(service.clone(), servers.to_vec()));
        Ok(match inner.draining.get_mut(service) {
            Some(draining) if draining.polls_left > 0 => {
                if draining.polls_left != u32::MAX {
                    draining.polls_left -= 1;
                }
                draining.open
            }
            _ => 0,
        })
    }

    async fn served_route(&self, service: &ServiceName) -> Result<Option<ServedRoute>, ProxyError> {
        let inner = locked(&self.inner);
        Ok(inner
            .routes
            .get(service)
            .map(|(route, servers)| ServedRoute {
                route: route.clone(),
                servers: servers
                    .iter()
                    .map(|&address| ServedServer {
                        address,
                        state: "UP".into(),
                        sessions: 0,
                        active: true,
                    })
                    .collect(),
            }))
    }

    async fn remove(&self, service: &ServiceName) -> Result<(), ProxyError> {
        let mut inner = locked(&self.inner);
        inner.record(ProxyOperation::Remove(service.clone()));
        match inner.routes.remove(service) {
            Some(_) => Ok(()),
            None => Err(ProxyError::UnknownService {
                service: service.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Color, ReleaseRecord};
    use crate::proxy::PathType;

    fn service(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    fn spec(image: &str) -> ReleaseSpec {
        ReleaseSpec::new(image, image_id_of(image), BTreeMap::new())
    }

    #[tokio::test]
    async fn orchestrator_starts_from_the_spec_resumes_and_reads_specs_back() {
        let orchestrator = MemoryOrchestrator::new().with_target("web", "web:2");
        orchestrator.set_config(
            "web",
            BTreeMap::from([("command".to_string(), serde_json::json!(["serve"]))]),
        );
        let blue = Group::new("web", Some(Color::Blue));
        let prepared = orchestrator.prepare("web").await.unwrap();
        assert_eq!(prepared.image, "web:2");
        assert!(prepared.is_intact());
        assert_eq!(
            orchestrator.describe("web").await.unwrap().config,
            prepared.config
        );
        // The Compose file moves on; the spec given is what starts.
        orchestrator.add_target("web", "web:3");
        let started = orchestrator.start(&blue, &[1], &prepared).await.unwrap();
        assert_eq!(started[0].image, "web:2");
        assert_eq!(
            orchestrator.recover_spec(&started[0]).await.unwrap(),
            RecoveredSpec::Exact(prepared.clone())
        );
        orchestrator.stop(&started).await.unwrap();
        let resumed = orchestrator.resume(&started).await.unwrap();
        assert_eq!(resumed[0].id, started[0].id, "the same container");
        assert!(resumed[0].running && resumed[0].address.is_some());

        let legacy = orchestrator.plant_legacy(&Group::new("web", Some(Color::Green)), 1, "web:1");
        let RecoveredSpec::ImageOnly(read) = orchestrator.recover_spec(&legacy).await.unwrap()
        else {
            panic!("a legacy instance carries no spec")
        };
        assert_eq!(
            (read.image.as_str(), read.config),
            ("web:1", prepared.config)
        );
        orchestrator
            .remove(std::slice::from_ref(&legacy))
            .await
            .unwrap();
        assert!(orchestrator.resume(&[legacy]).await.is_err());
    }

    #[tokio::test]
    async fn registry_cas_and_log() {
        let registry = MemoryRegistry::new();
        let app = service("app");
        let loaded = registry.load(&app).await.unwrap();
        assert_eq!(loaded.revision, Revision::NONE);
        let state = ReleaseState {
            color: Some(Color::Blue),
            scale: Some(2),
            last_release: Some(ReleaseRecord {
                color: Some(Color::Blue),
                image: "app:1".into(),
                scale: 2,
                released_at: SystemTime::UNIX_EPOCH,
                released_by: "test".into(),
                spec: None,
            }),
            previous_release: None,
        };
        let rev = registry.store(&app, &state, Revision::NONE).await.unwrap();
        assert!(matches!(
            registry.store(&app, &state, Revision::NONE).await,
            Err(RegistryError::Conflict { .. })
        ));
        assert_eq!(registry.load(&app).await.unwrap().revision, rev);
        assert_eq!(registry.state(&app), Some(state.clone()));
        let ops: Vec<_> = registry
            .operations()
            .into_iter()
            .map(|r| r.operation)
            .collect();
        assert_eq!(
            ops,
            vec![RegistryOperation::Store {
                service: app,
                state
            }]
        );
    }

    #[tokio::test]
    async fn registry_lock_and_unavailable() {
        let registry = MemoryRegistry::new();
        let app = service("app");
        let lease = registry
            .lock(&app, "a", Duration::from_secs(60))
            .await
            .unwrap();
        match registry.lock(&app, "b", Duration::from_secs(60)).await {
            Err(RegistryError::Locked { holder, since, .. }) => {
                assert_eq!(holder, "a");
                assert_eq!(since, lease.acquired_at);
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        registry.set_unavailable(true);
        assert!(matches!(
            registry.load(&app).await,
            Err(RegistryError::Unavailable { .. })
        ));
        assert!(matches!(
            registry.unlock(&lease).await,
            Err(RegistryError::Unavailable { .. })
        ));
        registry.set_unavailable(false);
        registry.unlock(&lease).await.unwrap();
        assert!(matches!(
            registry.unlock(&lease).await,
            Err(RegistryError::LeaseLost { .. })
        ));
        assert_eq!(registry.to_string(), "memory registry");
    }

    #[tokio::test]
    async fn registry_lease_with_zero_ttl_is_never_live() {
        let registry = MemoryRegistry::new();
        let app = service("app");
        let lease = registry.lock(&app, "a", Duration::ZERO).await.unwrap();
        assert!(matches!(
            registry.renew(&lease).await,
            Err(RegistryError::LeaseLost { .. })
        ));
        registry
            .lock(&app, "b", Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn orchestrator_starts_lists_and_scripts_health() {
        let orchestrator = MemoryOrchestrator::new().with_target("web", "web:2");
        orchestrator.set_health("web", HealthScript::HealthyAfter(2));
        let blue = Group::new("web", Some(Color::Blue));
        assert_eq!(orchestrator.describe("web").await.unwrap().image, "web:2");
        let started = orchestrator
            .start(&blue, &[2, 1], &spec("web:2"))
            .await
            .unwrap();
        assert_eq!(orchestrator.spec_of(&started[0].id), Some(spec("web:2")));
        assert_eq!(started.len(), 2);
        assert_eq!(started[0].name, "web-blue-2");
        assert_ne!(started[0].address, started[1].address);
        let listed = orchestrator.list(&blue).await.unwrap();
        assert_eq!(
            listed.iter().map(|i| i.number).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(orchestrator
            .list(&Group::new("web", Some(Color::Green)))
            .await
            .unwrap()
            .is_empty());

        let one = &listed[0];
        for _ in 0..2 {
            assert_eq!(
                orchestrator.health(one).await.unwrap(),
                Health::Starting { detail: None }
            );
        }
        assert_eq!(orchestrator.health(one).await.unwrap(), Health::Healthy);

        // Numbers in use cannot be started again.
        assert!(matches!(
            orchestrator.start(&blue, &[1], &spec("web:2")).await,
            Err(OrchestratorError::Instance {
                operation: "create",
                ..
            })
        ));

        orchestrator.stop(&listed).await.unwrap();
        assert!(orchestrator
            .list(&blue)
            .await
            .unwrap()
            .iter()
            .all(|i| !i.running && i.address.is_none()));
        assert_eq!(
            orchestrator.health(one).await.unwrap(),
            Health::Exited { code: 0 }
        );
        orchestrator.stop(&listed).await.unwrap();
        orchestrator.remove(&listed).await.unwrap();
        orchestrator.remove(&listed).await.unwrap();
        assert!(orchestrator.instances().is_empty());
        assert!(matches!(
            orchestrator.health(one).await,
            Err(OrchestratorError::Instance { .. })
        ));
        assert_eq!(orchestrator.to_string(), "memory orchestrator");
    }

    #[tokio::test]
    async fn orchestrator_unhealthy_and_exited_scripts() {
        let orchestrator = MemoryOrchestrator::new()
            .with_target("bad", "bad:1")
            .with_target("crash", "crash:1");
        orchestrator.set_health(
            "bad",
            HealthScript::UnhealthyAfter {
                polls: 1,
                detail: "HTTP 500".into(),
            },
        );
        orchestrator.set_health("crash", HealthScript::ExitedAfter { polls: 0, code: 3 });
        let bad = orchestrator
            .start(&Group::new("bad", None), &[1], &spec("bad:1"))
            .await
            .unwrap();
        assert_eq!(
            orchestrator.health(&bad[0]).await.unwrap(),
            Health::Starting { detail: None }
        );
        assert_eq!(
            orchestrator.health(&bad[0]).await.unwrap(),
            Health::Unhealthy {
                detail: "HTTP 500".into()
            }
        );
        let diagnosis = orchestrator.diagnose(&bad[0]).await.unwrap();
        assert_eq!(diagnosis.last_health_output.as_deref(), Some("HTTP 500"));

        let crash = orchestrator
            .start(&Group::new("crash", None), &[1], &spec("crash:1"))
            .await
            .unwrap();
        assert_eq!(
            orchestrator.health(&crash[0]).await.unwrap(),
            Health::Exited { code: 3 }
        );
        assert!(!orchestrator.list(&crash[0].group).await.unwrap()[0].running);
    }

    #[tokio::test]
    async fn orchestrator_scripted_failures_and_log() {
        let orchestrator = MemoryOrchestrator::new()
            .with_target("web", "web:1")
            .with_target("db", "db:1");
        let group = Group::new("web", None);
        assert!(matches!(
            orchestrator.describe("nope").await,
            Err(OrchestratorError::UnknownTarget { known, .. }) if known == "db, web"
        ));

        orchestrator.fail("web", FailingOperation::Prepare);
        assert!(matches!(
            orchestrator.prepare("web").await,
            Err(OrchestratorError::Image { image, .. }) if image == "web:1"
        ));
        orchestrator.fail("web", FailingOperation::Start);
        assert!(orchestrator
            .start(&group, &[1, 2], &spec("web:1"))
            .await
            .is_err());
        assert!(
            orchestrator.instances().is_empty(),
            "a failed start leaves nothing"
        );
        orchestrator.heal("web", FailingOperation::Start);
        let started = orchestrator
            .start(&group, &[1], &spec("web:1"))
            .await
            .unwrap();
        orchestrator.fail("web", FailingOperation::Stop);
        assert!(orchestrator.stop(&started).await.is_err());
        assert!(orchestrator.instances()[0].running);
        orchestrator.fail("web", FailingOperation::Remove);
        assert!(orchestrator.remove(&started).await.is_err());
        assert_eq!(orchestrator.instances().len(), 1);

        orchestrator
            .start_side_targets(&["db".to_string()])
            .await
            .unwrap();
        orchestrator
            .start_side_targets(&["db".to_string()])
            .await
            .unwrap();
        assert!(orchestrator.side_target_running("db"));
        assert!(orchestrator
            .start_side_targets(&["cache".to_string()])
            .await
            .is_err());

        let ops: Vec<_> = orchestrator
            .operations()
            .into_iter()
            .map(|r| r.operation)
            .collect();
        use OrchestratorOperation as Op;
        assert_eq!(
            ops,
            vec![
                Op::Describe("nope".into()),
                Op::Prepare("web".into()),
                Op::Start(group.clone(), vec![1, 2]),
                Op::Start(group.clone(), vec![1]),
                Op::Stop(vec!["web-1".into()]),
                Op::Remove(vec!["web-1".into()]),
                Op::StartSideTarget("db".into()),
            ]
        );
        let sequences: Vec<_> = orchestrator
            .operations()
            .iter()
            .map(|r| r.sequence)
            .collect();
        assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    }

    fn route(name: &str) -> Route {
        Route {
            service: service(name),
            color: Some(Color::Green),
            paths: vec!["/api".into()],
            domain: None,
            path_type: PathType::Prefix,
        }
    }

    #[tokio::test]
    async fn proxy_records_routes_and_scripted_failures() {
        let proxy = MemoryProxy::new();
        let app = service("app");
        let first: Vec<SocketAddr> = vec!["10.0.0.2:8080".parse().unwrap()];
        let second: Vec<SocketAddr> = vec!["10.0.0.3:8080".parse().unwrap()];
        proxy.reconfigure(&route("app"), &first).await.unwrap();
        assert_eq!(proxy.route(&app), Some((route("app"), first.clone())));

        proxy.fail_reconfigure(&app, ProxyFailure::NotUp);
        match proxy.reconfigure(&route("app"), &second).await {
            Err(ProxyError::NotUp { servers, .. }) => assert_eq!(servers, second),
            other => panic!("expected NotUp, got {other:?}"),
        }
        proxy.fail_reconfigure(&app, ProxyFailure::Refuse("bad config".into()));
        assert!(matches!(
            proxy.reconfigure(&route("app"), &second).await,
            Err(ProxyError::Refused { message }) if message == "bad config"
        ));
        assert_eq!(
            proxy.route(&app).unwrap().1,
            first,
            "failures keep the old servers"
        );
        proxy.clear_failure(&app);
        proxy.reconfigure(&route("app"), &second).await.unwrap();
        assert_eq!(proxy.route(&app).unwrap().1, second);

        assert!(matches!(
            proxy.remove(&service("app2")).await,
            Err(ProxyError::UnknownService { .. })
        ));
        proxy.remove(&app).await.unwrap();
        assert_eq!(proxy.route(&app), None);
        assert_eq!(proxy.operations().len(), 6);
        assert_eq!(proxy.to_string(), "memory proxy");
    }

    #[tokio::test]
    async fn proxy_sessions_drain_after_polls() {
        let proxy = MemoryProxy::new();
        let app = service("app");
        assert_eq!(proxy.sessions(&app, &[]).await.unwrap(), 0);
        proxy.drain_after(&app, 3, 2);
        assert_eq!(proxy.sessions(&app, &[]).await.unwrap(), 3);
        assert_eq!(proxy.sessions(&app, &[]).await.unwrap(), 3);
        assert_eq!(proxy.sessions(&app, &[]).await.unwrap(), 0);
        assert_eq!(proxy.sessions(&app, &[]).await.unwrap(), 0);
        proxy.drain_after(&app, 1, u32::MAX);
        for _ in 0..5 {
            assert_eq!(proxy.sessions(&app, &[]).await.unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn ports_share_one_order() {
        let registry = MemoryRegistry::new();
        let proxy = MemoryProxy::new();
        proxy.reconfigure(&route("app"), &[]).await.unwrap();
        registry
            .store(&service("app"), &ReleaseState::default(), Revision::NONE)
            .await
            .unwrap();
        assert!(proxy.operations()[0].sequence < registry.operations()[0].sequence);
    }
}
