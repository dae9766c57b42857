//! docker-flow's registrator: keeps a [`Registry`](flow_core::Registry) in step with the
//! containers running on one Docker engine, by Registrator's conventions
//! (`SERVICE_NAME`, `SERVICE_TAGS`, `SERVICE_CHECK_HTTP`…; see [`conventions`]).
//!
//! # How it stays in step
//!
//! * **Resync, then events.** [`run`] opens the engine's event stream (containers' `start`,
//!   `die`, `stop`, `destroy` and `rename`), registers every running container and removes every
//!   registration of its own whose container is gone (a *resync*), then follows the events.
//!   The stream asks for events since a moment before the resync began, so an event that
//!   happens while the resync lists containers is replayed afterwards, never lost.
//! * **Events are hints, the engine is the truth.** Whatever the event, the container is
//!   inspected and its registrations are made to match what it is now (running: registered
//!   as its settings say; stopped or gone: deregistered). Handling an event twice, or late,
//!   or in a burst, therefore ends in the same state, which is what makes the replay above
//!   and the restart below safe.
//! * **Failures end in a resync.** When the event stream breaks (the engine restarts, the
//!   connection drops) or a registry write fails, the registrator reports it, waits
//!   (exponential backoff from 0.2 s to 5 s, reset once things work again), reconnects and
//!   resyncs fully. [`RegistratorOptions::resync`] also resyncs periodically, for changes no
//!   event announces (a registration deleted by hand).
//! * **Only its own registrations.** Everything it writes carries the meta
//!   [`REGISTERED_BY_KEY`]`=`[`REGISTERED_BY`] and [`HOST_KEY`]`=<hostname>`; a resync
//!   only ever removes registrations carrying both, with its own host name. docker-flow's
//!   release registrations, other tools' and other hosts' registrators' are left alone.
//!   That marking is why removing dangling registrations ([`RegistratorOptions::cleanup`])
//!   is on by default here, while Registrator, which can only guess its own from the shape
//!   of their ids, makes it opt-in (`-cleanup`).
//! * **Stopped containers.** Their registrations go, unless
//!   [`RegistratorOptions::deregister`] is [`Deregister::OnSuccess`] and the container
//!   failed (an exit code that is neither 0 nor a signal's): then they stay, through events
//!   and resyncs, until it succeeds, runs again or is removed — Registrator's
//!   `-deregister on-success`.
//! * **Expiring registrations.** With [`RegistratorOptions::refresh`] every registration is
//!   written again that often, for a registry built to expire them (etcd's
//!   `EtcdRegistry::with_registration_ttl`, the CLI's `--ttl`): they then vanish within the
//!   TTL once the registrator stops or its host dies.
//! * **Stopping leaves registrations in place.** When [`run`]'s shutdown future completes
//!   it returns without deregistering: the containers still run, and the next start's resync
//!   removes whatever went away meanwhile. (Deregistering on exit would make every restart
//!   of the registrator a gap in service discovery.)
//!
//! # Errors and reporting
//!
//! Every register and deregister, every resync, every skipped container and every failure
//! is one [`Activity`] handed to [`RegistratorOptions::reporter`] (by default one line on
//! stderr). Registry failures name the registry's address (the backend's
//! [`RegistryError`] does). [`run`] fails only when its *first* resync fails, so that a wrong
//! registry address or an unreachable engine is seen at once (a registry that cannot be
//! reached is first tried [`RegistratorOptions::retry_attempts`] more times,
//! [`RegistratorOptions::retry_interval`] apart, as Registrator's `-retry-attempts`);
//! afterwards it keeps retrying until shut down.
//!
//! # Use
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use flow_registrator::{run, RegistratorOptions};
//!
//! let docker = flow_docker::connect(&flow_docker::ConnectSettings::from_env()).await?;
//! let registry: flow_core::DynRegistry =
//!     Arc::new(flow_consul::ConsulRegistry::new("http://127.0.0.1:8500", None)?);
//! let options = RegistratorOptions {
//!     resync: Some(std::time::Duration::from_secs(300)),
//!     ..RegistratorOptions::default()
//! };
//! run(docker, registry, options, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod conventions;
mod sync;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use flow_core::{DynRegistry, Registration, RegistryError};
use futures::StreamExt;

pub use conventions::{
    registrations, split_tags, Conventions, SettingError, CONTAINER_KEY, HOST_KEY, REGISTERED_BY,
    REGISTERED_BY_KEY,
};
pub use sync::ResyncSummary;

/// The container events that can change what is registered.
/// (`rename` changes the default ids, which contain the container's name.)
pub const WATCHED_EVENTS: [&str; 5] = ["start", "die", "stop", "destroy", "rename"];
/// The first wait after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How far before a resync the event stream starts, so that no event is missed between
/// subscribing and listing (clock granularity; replayed events are harmless).
const EVENT_REPLAY_MARGIN: Duration = Duration::from_secs(1);

/// Receives every [`Activity`]; the CLI prints them.
pub type Reporter = Arc<dyn Fn(&Activity) + Send + Sync>;

/// When a stopped container's registrations are removed (`--deregister`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deregister {
    /// Whenever the container stops (Registrator's `always`, the default).
    #[default]
    Always,
    /// Only when it exits with code 0 or is stopped by a signal (`on-success`): a container
    /// that fails keeps its registrations, for its restart policy to bring it back.
    OnSuccess,
}

/// How the registrator runs.
#[derive(Clone)]
pub struct RegistratorOptions {
    /// The address registered for published ports (`--ip`); `None`: each binding's host IP,
    /// or the host's name resolved for ports published on every interface.
    pub ip: Option<IpAddr>,
    /// Register exposed ports at the container IP instead of published ones (`--internal`).
    pub internal: bool,
    /// Register only ports with a `SERVICE_NAME` (`--explicit`).
    pub explicit: bool,
    /// Tags added to every registration (`--tags`).
    pub tags: Vec<String>,
    /// A label holding the address to register (`--use-ip-from-label`).
    pub ip_label: Option<String>,
    /// When a stopped container's registrations are removed (`--deregister`).
    pub deregister: Deregister,
    /// Whether a resync removes registrations of ours whose container is gone (`--cleanup`,
    /// default `true`); `false` leaves that to the container's own events, as Registrator
    /// does without `-cleanup`.
    pub cleanup: bool,
    /// Write every registration again this often (`--ttl-refresh`), for registries that
    /// expire them (`--ttl`); `None`: never.
    pub refresh: Option<Duration>,
    /// Resync everything this often (`--resync`); `None`: only at start and after failures.
    pub resync: Option<Duration>,
    /// How many times the first resync is tried again when the registry cannot be reached
    /// (`--retry-attempts`); `None`: without end. Default 0: fail at once.
    pub retry_attempts: Option<u32>,
    /// The wait between those attempts (`--retry-interval`, default 2 s).
    pub retry_interval: Duration,
    /// The host name in default ids and in the [`HOST_KEY`] meta; `None`: the engine's own
    /// name (`docker info`), so that registrators of different hosts sharing one registry
    /// never remove each other's registrations.
    pub hostname: Option<String>,
    /// How error messages name the Docker engine watched (`-H`); default: what
    /// `DOCKER_HOST` says, else the local socket, as [`flow_docker::connect`] would use.
    pub docker_endpoint: String,
    /// Receives every activity; the default prints one line per activity on stderr.
    pub reporter: Reporter,
}

/// Registrator's default `-retry-interval`.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(2);

impl Default for RegistratorOptions {
    fn default() -> Self {
        RegistratorOptions {
            ip: None,
            internal: false,
            explicit: false,
            tags: Vec::new(),
            ip_label: None,
            deregister: Deregister::Always,
            cleanup: true,
            refresh: None,
            resync: None,
            retry_attempts: Some(0),
            retry_interval: DEFAULT_RETRY_INTERVAL,
            hostname: None,
            docker_endpoint: flow_docker::ConnectSettings::from_env().endpoint(),
            reporter: Arc::new(|activity| eprintln!("registrator: {activity}")),
        }
    }
}

impl fmt::Debug for RegistratorOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistratorOptions")
            .field("ip", &self.ip)
            .field("internal", &self.internal)
            .field("explicit", &self.explicit)
            .field("tags", &self.tags)
            .field("ip_label", &self.ip_label)
            .field("deregister", &self.deregister)
            .field("cleanup", &self.cleanup)
            .field("refresh", &self.refresh)
            .field("resync", &self.resync)
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_interval", &self.retry_interval)
            .field("hostname", &self.hostname)
            .field("docker_endpoint", &self.docker_endpoint)
            .finish_non_exhaustive()
    }
}

/// Something the registrator did or ran into; [`fmt::Display`] gives the line to print.
#[derive(Debug)]
#[non_exhaustive]
pub enum Activity {
    /// A registration was written (new or changed).
    Registered(Registration),
    /// A registration was removed (its container stopped or went away).
    Deregistered(Registration),
    /// A resync completed.
    Resynced(ResyncSummary),
    /// A running container was left as it is: its settings cannot be used.
    Skipped(SettingError),
    /// Something failed; the registrator retries (reconnects and resyncs) after `retry_in`.
    Failed {
        /// What failed.
        error: RegistratorError,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activity::Registered(r) => write!(
                f,
                "registered {} as {} at {}:{}",
                r.id, r.name, r.address, r.port
            ),
            Activity::Deregistered(r) => write!(f, "deregistered {} ({})", r.id, r.name),
            Activity::Resynced(s) => write!(
                f,
                "resynced: {} running containers, {} registrations ({} written, {} removed)",
                s.containers, s.registrations, s.registered, s.removed
            ),
            Activity::Skipped(error) => write!(f, "not registered: {error}"),
            Activity::Failed { error, retry_in } => {
                write!(f, "{error}; retrying in {} ms", retry_in.as_millis())
            }
        }
    }
}

/// Everything the registrator can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistratorError {
    /// A call to the Docker engine failed (listing, inspecting, `docker info`), or its event
    /// stream broke.
    #[error("the Docker engine at {endpoint} failed to {action}: {source}")]
    Docker {
        /// The engine's endpoint, as [`RegistratorOptions::docker_endpoint`] names it.
        endpoint: String,
        /// What was asked.
        action: String,
        /// The engine's or the transport's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine closed its event stream (it is shutting down or restarting).
    #[error("the Docker engine closed its event stream (is it restarting?)")]
    EventsEnded,
    /// A registry call failed; the source names the registry's address.
    #[error("could not {action}: {source}")]
    Registry {
        /// What was asked.
        action: String,
        /// The backend's error.
        #[source]
        source: RegistryError,
    },
}

/// Bounded exponential backoff.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    /// The wait to use now; the following one is twice as long, up to [`BACKOFF_MAX`].
    fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        now
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// The name of the engine's host, for ids and the [`HOST_KEY`] meta.
async fn engine_hostname(docker: &Docker, endpoint: &str) -> Result<String, RegistratorError> {
    let info = docker
        .info()
        .await
        .map_err(|source| RegistratorError::Docker {
            endpoint: endpoint.to_string(),
            action: "describe itself (docker info)".to_string(),
            source,
        })?;
    Ok(info
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string())))
}

/// The engine's container event stream from `since` on.
fn container_events(
    docker: &Docker,
    since: SystemTime,
) -> impl futures::Stream<Item = Result<EventMessage, bollard::errors::Error>> {
    let since = since
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            WATCHED_EVENTS.iter().map(|e| e.to_string()).collect(),
        ),
    ]);
    docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(filters),
    }))
}

/// Why [`follow`] stopped.
enum Interrupted {
    /// The shutdown future completed.
    Shutdown,
    /// Something failed; the caller waits, reconnects and resyncs.
    Failed(RegistratorError),
}

/// A timer firing every `period` from one period from now; `None` never fires.
fn every(period: Option<Duration>) -> Option<tokio::time::Interval> {
    period.map(|period| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A step slower than the period must not be followed by a burst.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    })
}

/// The next tick of a timer made by [`every`].
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval.as_mut() {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Handles the engine's events (and periodic resyncs and refreshes) after a successful
/// resync, until something fails or `shutdown` completes. Each step that succeeds resets
/// `backoff`.
async fn follow(
    syncer: &mut sync::Syncer,
    events: &mut (impl futures::Stream<Item = Result<EventMessage, bollard::errors::Error>> + Unpin),
    options: &RegistratorOptions,
    backoff: &mut Backoff,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Interrupted {
    let mut resync = every(options.resync);
    let mut refresh = every(options.refresh);
    loop {
        let step = tokio::select! {
            _ = &mut shutdown => return Interrupted::Shutdown,
            _ = tick(&mut resync) => syncer.resync().await.map(|summary| {
                (options.reporter)(&Activity::Resynced(summary));
            }),
            _ = tick(&mut refresh) => syncer.refresh().await,
            event = events.next() => match event {
                None => Err(RegistratorError::EventsEnded),
                Some(Err(source)) => Err(RegistratorError::Docker {
                    endpoint: options.docker_endpoint.clone(),
                    action: "stream events".to_string(),
                    source,
                }),
                Some(Ok(event)) => match event.actor.and_then(|a| a.id) {
                    Some(id) => syncer.reconcile(&id).await,
                    None => Ok(()),
                },
            },
        };
        match step {
            Ok(()) => backoff.reset(),
            Err(error) => return Interrupted::Failed(error),
        }
    }
}

/// The host's address as its name resolves (the first IPv4 one, else the first), for ports
/// published on every interface: what Registrator registers without `-ip`.
async fn resolve(hostname: &str) -> Option<IpAddr> {
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((hostname, 0))
        .await
        .ok()?
        .map(|a| a.ip())
        .collect();
    addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addresses.first())
        .copied()
}

/// Runs the registrator until `shutdown` completes: resyncs, then follows the engine's
/// container events (see the [crate docs](crate)). Returns `Ok(())` on shutdown, an error
/// only when the engine cannot be asked its name or the first resync fails (after
/// [`RegistratorOptions::retry_attempts`] more tries when the registry cannot be reached);
/// later failures are reported to [`RegistratorOptions::reporter`] and retried.
pub async fn run(
    docker: Docker,
    registry: DynRegistry,
    options: RegistratorOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RegistratorError> {
    tokio::pin!(shutdown);
    let hostname = match options.hostname.clone() {
        Some(hostname) => hostname,
        None => tokio::select! {
            _ = &mut shutdown => return Ok(()),
            hostname = engine_hostname(&docker, &options.docker_endpoint) => hostname?,
        },
    };
    let host_address = match options.ip {
        Some(_) => None,
        None => resolve(&hostname).await,
    };
    let conventions = Conventions {
        ip: options.ip,
        host_address,
        internal: options.internal,
        explicit: options.explicit,
        tags: options.tags.clone(),
        ip_label: options.ip_label.clone(),
        ..Conventions::new(hostname)
    };
    let report = options.reporter.clone();
    let mut syncer = sync::Syncer::new(
        docker.clone(),
        options.docker_endpoint.clone(),
        registry,
        conventions,
        sync::Policy {
            deregister: options.deregister,
            cleanup: options.cleanup,
        },
        report.clone(),
    );
    let mut backoff = Backoff::new();
    let mut first = true;
    let mut attempts = 0u32;
    loop {
        let since = SystemTime::now() - EVENT_REPLAY_MARGIN;
        let mut events = Box::pin(container_events(&docker, since));
        let resynced = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            resynced = syncer.resync() => resynced,
        };
        let (failure, retry_in) = match resynced {
            Err(error @ RegistratorError::Registry { .. })
                if first && options.retry_attempts.is_none_or(|limit| attempts < limit) =>
            {
                attempts += 1;
                (error, options.retry_interval)
            }
            Err(error) if first => return Err(error),
            Err(error) => (error, backoff.step()),
            Ok(summary) => {
                first = false;
                report(&Activity::Resynced(summary));
                let followed = follow(
                    &mut syncer,
                    &mut events,
                    &options,
                    &mut backoff,
                    shutdown.as_mut(),
                );
                match followed.await {
                    Interrupted::Shutdown => return Ok(()),
                    Interrupted::Failed(error) => (error, backoff.step()),
                }
            }
        };
        report(&Activity::Failed {
            error: failure,
            retry_in,
        });
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut backoff = Backoff::new();
        let waits: Vec<u128> = (0..7).map(|_| backoff.step().as_millis()).collect();
        assert_eq!(waits, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.step(), BACKOFF_MIN);
    }

    #[test]
    fn activities_read_as_one_line_each() {
        let registration = Registration {
            id: "host-a:web-1:8080".to_string(),
            name: "shop".to_string(),
            address: "127.0.0.1".to_string(),
            port: 49153,
            tags: Vec::new(),
            meta: Default::default(),
            check: None,
        };
        assert_eq!(
            Activity::Registered(registration.clone()).to_string(),
            "registered host-a:web-1:8080 as shop at 127.0.0.1:49153"
        );
        assert_eq!(
            Activity::Deregistered(registration).to_string(),
            "deregistered host-a:web-1:8080 (shop)"
        );
        let failed = Activity::Failed {
            error: RegistratorError::EventsEnded,
            retry_in: Duration::from_millis(400),
        };
        assert_eq!(
            failed.to_string(),
            "the Docker engine closed its event stream (is it restarting?); retrying in 400 ms"
        );
    }
}
