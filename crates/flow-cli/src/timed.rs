//! `--verbose` and `RUST_LOG`: every call a release makes through its ports, with its timing.
//!
//! The engine sees the ports only through their traits, so timing them is a wrapper per port
//! that forwards each call and reports it to a [`CallLog`] (the printer shows it with
//! `--verbose`) and as a `tracing` event at debug level under the target `docker_flow::port`
//! (`RUST_LOG=docker_flow::port=debug`). Wrapping costs an `Instant::now()` a call, so the
//! ports are always wrapped and the printer decides what to show.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flow_core::{
    Diagnosis, DynOrchestrator, DynProxy, DynRegistry, Group, Health, Instance, Lease, LockHolder,
    Orchestrator, OrchestratorError, Proxy, ProxyError, RecoveredSpec, Registration, Registry,
    RegistryError, ReleaseSpec, ReleaseState, Revision, Route, ServedRoute, ServiceName,
    TargetInfo, Versioned,
};

/// One finished call through a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCall {
    /// `orchestrator`, `registry` or `proxy`.
    pub port: &'static str,
    /// The method called.
    pub call: &'static str,
    /// What it was called for (a target, a group, a service), in words.
    pub subject: String,
    /// How long it took.
    pub took: Duration,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// Receives every port call once it returns.
pub trait CallLog: Send + Sync {
    /// Called once per call, after it returned.
    fn call(&self, call: &PortCall);
}

/// Runs `work`, then reports it to `log` and to `tracing`.
async fn timed<T, E: fmt::Display>(
    log: &dyn CallLog,
    port: &'static str,
    call: &'static str,
    subject: String,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let began = Instant::now();
    let result = work.await;
    let record = PortCall {
        port,
        call,
        subject,
        took: began.elapsed(),
        error: result.as_ref().err().map(ToString::to_string),
    };
    tracing::debug!(
        target: "docker_flow::port",
        port,
        call,
        subject = %record.subject,
        took_ms = record.took.as_millis() as u64,
        error = record.error.as_deref(),
        "port call"
    );
    log.call(&record);
    result
}

fn names(instances: &[Instance]) -> String {
    instances
        .iter()
        .map(|instance| instance.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An orchestrator whose calls are timed.
pub struct TimedOrchestrator {
    inner: DynOrchestrator,
    log: Arc<dyn CallLog>,
}

impl TimedOrchestrator {
    /// Wraps `inner`, reporting to `log`.
    pub fn new(inner: DynOrchestrator, log: Arc<dyn CallLog>) -> TimedOrchestrator {
        TimedOrchestrator { inner, log }
    }
}

impl fmt::Debug for TimedOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for TimedOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

const ORCHESTRATOR: &str = "orchestrator";

#[async_trait]
impl Orchestrator for TimedOrchestrator {
    async fn describe(&self, target: &str) -> Result<TargetInfo, OrchestratorError> {
        let work = self.inner.describe(target);
        timed(&*self.log, ORCHESTRATOR, "describe", target.into(), work).await
    }

    async fn prepare(&self, target: &str) -> Result<ReleaseSpec, OrchestratorError> {
        let work = self.inner.prepare(target);
        timed(&*self.log, ORCHESTRATOR, "prepare", target.into(), work).await
    }

    async fn start_side_targets(&self, side_targets: &[String]) -> Result<(), OrchestratorError> {
        let work = self.inner.start_side_targets(side_targets);
        let subject = side_targets.join(", ");
        timed(
            &*self.log,
            ORCHESTRATOR,
            "start_side_targets",
            subject,
            work,
        )
        .await
    }

    async fn list(&self, group: &Group) -> Result<Vec<Instance>, OrchestratorError> {
        let work = self.inner.list(group);
        timed(&*self.log, ORCHESTRATOR, "list", group.to_string(), work).await
    }

    async fn start(
        &self,
        group: &Group,
        numbers: &[u32],
        spec: &ReleaseSpec,
    ) -> Result<Vec<Instance>, OrchestratorError> {
        let work = self.inner.start(group, numbers, spec);
        let subject = format!("{} instance(s) of {group}", numbers.len());
        timed(&*self.log, ORCHESTRATOR, "start", subject, work).await
    }

    async fn resume(&self, instances: &[Instance]) -> Result<Vec<Instance>, OrchestratorError> {
        let work = self.inner.resume(instances);
        timed(&*self.log, ORCHESTRATOR, "resume", names(instances), work).await
    }

    async fn recover_spec(&self, instance: &Instance) -> Result<RecoveredSpec, OrchestratorError> {
        let work = self.inner.recover_spec(instance);
        timed(
            &*self.log,
            ORCHESTRATOR,
            "recover_spec",
            instance.name.clone(),
            work,
        )
        .await
    }

    async fn health(&self, instance: &Instance) -> Result<Health, OrchestratorError> {
        let work = self.inner.health(instance);
        timed(
            &*self.log,
            ORCHESTRATOR,
            "health",
            instance.name.clone(),
            work,
        )
        .await
    }

    async fn diagnose(&self, instance: &Instance) -> Result<Diagnosis, OrchestratorError> {
        let work = self.inner.diagnose(instance);
        timed(
            &*self.log,
            ORCHESTRATOR,
            "diagnose",
            instance.name.clone(),
            work,
        )
        .await
    }

    async fn stop(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        let work = self.inner.stop(instances);
        timed(&*self.log, ORCHESTRATOR, "stop", names(instances), work).await
    }

    async fn remove(&self, instances: &[Instance]) -> Result<(), OrchestratorError> {
        let work = self.inner.remove(instances);
        timed(&*self.log, ORCHESTRATOR, "remove", names(instances), work).await
    }
}

/// A registry whose calls are timed.
pub struct TimedRegistry {
    inner: DynRegistry,
    log: Arc<dyn CallLog>,
}

impl TimedRegistry {
    /// Wraps `inner`, reporting to `log`.
    pub fn new(inner: DynRegistry, log: Arc<dyn CallLog>) -> TimedRegistry {
        TimedRegistry { inner, log }
    }
}

impl fmt::Debug for TimedRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for TimedRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

const REGISTRY: &str = "registry";

#[async_trait]
impl Registry for TimedRegistry {
    async fn load(&self, service: &ServiceName) -> Result<Versioned<ReleaseState>, RegistryError> {
        let work = self.inner.load(service);
        timed(&*self.log, REGISTRY, "load", service.to_string(), work).await
    }

    async fn store(
        &self,
        service: &ServiceName,
        state: &ReleaseState,
        expected: Revision,
    ) -> Result<Revision, RegistryError> {
        let work = self.inner.store(service, state, expected);
        timed(&*self.log, REGISTRY, "store", service.to_string(), work).await
    }

    async fn lock(
        &self,
        service: &ServiceName,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, RegistryError> {
        let work = self.inner.lock(service, holder, ttl);
        timed(&*self.log, REGISTRY, "lock", service.to_string(), work).await
    }

    async fn renew(&self, lease: &Lease) -> Result<(), RegistryError> {
        let work = self.inner.renew(lease);
        timed(
            &*self.log,
            REGISTRY,
            "renew",
            "the deploy lock".into(),
            work,
        )
        .await
    }

    async fn unlock(&self, lease: &Lease) -> Result<(), RegistryError> {
        let work = self.inner.unlock(lease);
        timed(
            &*self.log,
            REGISTRY,
            "unlock",
            "the deploy lock".into(),
            work,
        )
        .await
    }

    async fn lock_holder(
        &self,
        service: &ServiceName,
    ) -> Result<Option<LockHolder>, RegistryError> {
        let work = self.inner.lock_holder(service);
        timed(
            &*self.log,
            REGISTRY,
            "lock_holder",
            service.to_string(),
            work,
        )
        .await
    }

    async fn register(&self, registration: &Registration) -> Result<(), RegistryError> {
        let work = self.inner.register(registration);
        timed(
            &*self.log,
            REGISTRY,
            "register",
            registration.id.clone(),
            work,
        )
        .await
    }

    async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let work = self.inner.deregister(id);
        timed(&*self.log, REGISTRY, "deregister", id.into(), work).await
    }

    async fn instances(&self, name: &str) -> Result<Vec<Registration>, RegistryError> {
        let work = self.inner.instances(name);
        timed(&*self.log, REGISTRY, "instances", name.into(), work).await
    }

    async fn all_instances(&self) -> Result<Vec<Registration>, RegistryError> {
        let work = self.inner.all_instances();
        timed(&*self.log, REGISTRY, "all_instances", String::new(), work).await
    }
}

/// A proxy whose calls are timed.
pub struct TimedProxy {
    inner: DynProxy,
    log: Arc<dyn CallLog>,
}

impl TimedProxy {
    /// Wraps `inner`, reporting to `log`.
    pub fn new(inner: DynProxy, log: Arc<dyn CallLog>) -> TimedProxy {
        TimedProxy { inner, log }
    }
}

impl fmt::Debug for TimedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for TimedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

const PROXY: &str = "proxy";

#[async_trait]
impl Proxy for TimedProxy {
    async fn reconfigure(&self, route: &Route, servers: &[SocketAddr]) -> Result<(), ProxyError> {
        let work = self.inner.reconfigure(route, servers);
        let subject = format!("{} to {} server(s)", route.service, servers.len());
        timed(&*self.log, PROXY, "reconfigure", subject, work).await
    }

    async fn sessions(
        &self,
        service: &ServiceName,
        servers: &[SocketAddr],
    ) -> Result<u64, ProxyError> {
        let work = self.inner.sessions(service, servers);
        let subject = format!("{service}, {} server(s)", servers.len());
        timed(&*self.log, PROXY, "sessions", subject, work).await
    }

    async fn remove(&self, service: &ServiceName) -> Result<(), ProxyError> {
        let work = self.inner.remove(service);
        timed(&*self.log, PROXY, "remove", service.to_string(), work).await
    }

    async fn served_route(&self, service: &ServiceName) -> Result<Option<ServedRoute>, ProxyError> {
        let work = self.inner.served_route(service);
        timed(&*self.log, PROXY, "served_route", service.to_string(), work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<PortCall>>);

    impl CallLog for Recorded {
        fn call(&self, call: &PortCall) {
            self.0.lock().unwrap().push(call.clone());
        }
    }

    #[tokio::test]
    async fn each_call_is_forwarded_and_reported_once_with_its_outcome() {
        let log = Arc::new(Recorded::default());
        let memory = Arc::new(flow_core::memory::MemoryRegistry::new());
        let registry = TimedRegistry::new(memory, log.clone());
        let service = ServiceName::new("demo-app").unwrap();
        let loaded = registry.load(&service).await.unwrap();
        registry
            .store(&service, &loaded.value, loaded.revision)
            .await
            .unwrap();
        let stale = registry
            .store(&service, &loaded.value, loaded.revision)
            .await;
        assert!(
            stale.is_err(),
            "a stale revision is refused through the wrapper"
        );
        let calls = log.0.lock().unwrap();
        let summary: Vec<(&str, &str, bool)> = calls
            .iter()
            .map(|c| (c.port, c.call, c.error.is_some()))
            .collect();
        assert_eq!(
            summary,
            [
                ("registry", "load", false),
                ("registry", "store", false),
                ("registry", "store", true)
            ]
        );
        assert!(calls.iter().all(|c| c.subject == "demo-app"));
    }
}
