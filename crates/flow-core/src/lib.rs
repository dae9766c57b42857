//! The heart of docker-flow: domain types, the three ports and the release engine.
//!
//! # Design
//!
//! docker-flow releases a Compose service into the idle colour of a blue-green pair, waits for
//! it to be healthy, switches the proxy, commits the new state and (when asked) stops the old
//! colour. Everything that touches the outside world goes through one of three ports:
//!
//! * [`Orchestrator`] — the container engine (Docker, through `flow-docker`);
//! * [`Registry`] — release state, the deploy lock and instance registrations (the embedded
//!   file store in `flow-store`, Consul in `flow-consul`, etcd in `flow-etcd`);
//! * [`Proxy`] — the reverse proxy (HAProxy, through `flow-proxy`).
//!
//! Each port is an object-safe `async_trait` with a written contract (see its module) so
//! that `Arc<dyn Orchestrator>` and friends can be wired at run time from options, and
//! so that the engine, which only sees the traits, can be tested without any of them. This
//! crate does no I/O of its own: the only effects it has are the ports' calls and timers.
//!
//! [`status`] reads what runs for a service through the same ports, changing nothing.
//!
//! The release itself is an explicit state machine ([`release`]): an enum of phases advanced by
//! one `step` function, each variant documenting where it goes next and how it aborts. The
//! engine guarantees the order *new colour started → healthy → proxy switched → state
//! committed → old colour stopped*, and that a failure before the commit removes what the
//! release started and leaves the live colour and the stored state untouched. A run killed
//! at any point leaves what the next one converges from: it reconciles the proxy with the
//! stored state and what runs before it removes anything (see `release::reconcile`).
//!
//! # Testing against the ports
//!
//! [`memory`] has an in-memory implementation of every port, for tests that want behaviour
//! rather than expectations. With the cargo feature `mocks`, [`mocks`] exports mockall mocks
//! of the three ports for embedders' unit tests.
//!
//! ```toml
//! [dev-dependencies]
//! flow-core = { version = "0.1", features = ["mocks"] }
//! ```
//!
//! A unit test of a first blue-green release, as an embedder writes it (this example runs as
//! a doctest with `--features mocks`):
//!
//! ```
//! # #[cfg(feature = "mocks")]
//! # fn main() {
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//!
//! use flow_core::mocks::{MockOrchestrator, MockRegistry};
//! use flow_core::release::{Engine, Event, Ports, ReleaseOptions, Step, Timeouts};
//! use flow_core::{Color, Group, Health, Instance, Lease, ReleaseSpec, Revision, ServiceName, TargetInfo, Versioned};
//!
//! let service = ServiceName::new("shop-web").unwrap();
//! let mut registry = MockRegistry::new();
//! registry.expect_lock().returning(|service, holder, ttl| {
//!     Ok(Lease { service: service.clone(), holder: holder.into(), token: "t".into(),
//!                acquired_at: SystemTime::now(), ttl })
//! });
//! registry.expect_load().returning(|_| Ok(Versioned { value: Default::default(), revision: Revision::NONE }));
//! // The first release goes blue, and is committed once.
//! registry.expect_store()
//!     .withf(|_, state, _| state.color == Some(Color::Blue) && state.scale == Some(1))
//!     .times(1)
//!     .returning(|_, _, _| Ok(Revision(1)));
//! registry.expect_unlock().returning(|_| Ok(()));
//! registry.expect_register().returning(|_| Ok(()));
//!
//! let mut orchestrator = MockOrchestrator::new();
//! orchestrator.expect_describe().returning(|_| Ok(TargetInfo { image: "shop/web:2".into(), ..Default::default() }));
//! orchestrator.expect_list().returning(|_| Ok(vec![]));
//! orchestrator.expect_prepare()
//!     .returning(|_| Ok(ReleaseSpec::new("shop/web:2", "sha256:2", Default::default())));
//! orchestrator.expect_start().returning(|group: &Group, numbers: &[u32], _: &ReleaseSpec| {
//!     Ok(numbers.iter().map(|&number| Instance {
//!         id: format!("c{number}"), name: format!("shop-web-blue-{number}"), group: group.clone(),
//!         number, running: true, address: None, image: "shop/web:2".into(),
//!     }).collect())
//! });
//! orchestrator.expect_health().returning(|_| Ok(Health::Healthy));
//!
//! let engine = Engine::new(
//!     Ports { orchestrator: Arc::new(orchestrator), registry: Arc::new(registry), proxy: None },
//!     ReleaseOptions {
//!         service, target: "web".into(), side_targets: vec![], blue_green: true,
//!         steps: vec![Step::Deploy], scale: None, route: None,
//!         timeouts: Timeouts::default(), health_fail_fast: false, holder: "unit test".into(),
//!     },
//! ).unwrap();
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! let report = runtime.block_on(engine.run(&|_: &Event| {})).unwrap();
//! assert_eq!(report.live_color, Some(Color::Blue));
//! # }
//! # #[cfg(not(feature = "mocks"))]
//! # fn main() {}
//! ```
//!
//! With the feature `conformance`, `conformance` holds the suite every [`Registry`] backend
//! must pass.

#![deny(missing_docs)]

pub mod address;
pub mod domain;
pub mod kv;
pub mod memory;
pub mod orchestrator;
pub mod proxy;
pub mod registry;
pub mod release;
pub mod status;
pub mod time;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use domain::{
    Color, InvalidScale, InvalidServiceName, ParseColorError, ReleaseRecord, ReleaseSpec,
    ReleaseState, Revision, ScaleSpec, ServiceName, Versioned,
};
pub use orchestrator::{
    DependencyFailure, Diagnosis, DynOrchestrator, Group, Health, Instance, Orchestrator,
    OrchestratorError, RecoveredSpec, TargetInfo,
};
pub use proxy::{DynProxy, PathType, Proxy, ProxyError, Route, ServedRoute, ServedServer};
pub use registry::{
    CheckStatus, CheckTarget, DynRegistry, HealthCheck, Lease, LockHolder, Registration, Registry,
    RegistryError,
};

/// An error and its causes on one line (`error sending request: connection refused`), so a
/// message about an unreachable backend says why, not only that it failed.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_names_every_cause_once() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = super::error_chain(&Outer(refused));
        assert_eq!(text, "error sending request: connection refused");
    }
}

/// mockall mocks of the three ports (feature `mocks`), for unit tests of code that drives
/// them.
#[cfg(any(test, feature = "mocks"))]
pub mod mocks {
    pub use crate::orchestrator::MockOrchestrator;
    pub use crate::proxy::MockProxy;
    pub use crate::registry::MockRegistry;
}
