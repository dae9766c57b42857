//! What one invocation asks the engine to do, validated on construction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{ScaleSpec, ServiceName};
use crate::proxy::PathType;
use crate::release::Step;

/// How long the engine waits for things; all bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// How long new instances may take to become healthy (`--health-timeout`, default 60 s).
    pub health: Duration,
    /// How often health is polled while waiting (default 250 ms).
    pub health_poll: Duration,
    /// How long old instances may take to drain their sessions (`--drain-timeout`, default 30 s).
    pub drain: Duration,
    /// How often sessions are polled while draining (default 250 ms).
    pub drain_poll: Duration,
    /// The deploy lock's time to live; the engine renews it at a third of this (default 30 s).
    pub lock_ttl: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            health: Duration::from_secs(60),
            health_poll: Duration::from_millis(250),
            drain: Duration::from_secs(30),
            drain_poll: Duration::from_millis(250),
            lock_ttl: Duration::from_secs(30),
        }
    }
}

/// How the proxy routes to the service (`--service-path`, `--service-domain`, `--path-type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSettings {
    /// URL path prefixes (or exact paths, per `path_type`); at least one.
    pub paths: Vec<String>,
    /// A host name requests must carry.
    pub domain: Option<String>,
    /// How paths match.
    pub path_type: PathType,
}

/// One invocation: which target, which steps, how many instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOptions {
    /// The registry/proxy name of the service (`<project>-<target>` unless overridden).
    pub service: ServiceName,
    /// The Compose service to release.
    pub target: String,
    /// Extra Compose services started with it (databases); never coloured, scaled or stopped.
    pub side_targets: Vec<String>,
    /// Release into the other colour (`--blue-green`).
    pub blue_green: bool,
    /// The steps, in the order they run.
    pub steps: Vec<Step>,
    /// `--scale`; `None` keeps the stored scale (1 when none).
    pub scale: Option<ScaleSpec>,
    /// How the proxy routes to the service; required when a proxy is configured.
    pub route: Option<RouteSettings>,
    /// Bounds on every wait.
    pub timeouts: Timeouts,
    /// End the health wait at the first `unhealthy` (`--health-fail-fast`); without it an
    /// unhealthy instance is waited on until the health timeout, as Docker's status can
    /// still turn healthy.
    #[serde(default)]
    pub health_fail_fast: bool,
    /// Who this invocation is, for the lock and the release record (`docker-flow pid 42 on host`).
    pub holder: String,
}
