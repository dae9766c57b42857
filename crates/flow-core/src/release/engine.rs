//! The engine: takes the lock, runs the steps in order, and drives each through the ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::join_all;
use tokio::time::{sleep, Instant};

use crate::domain::{Color, ReleaseRecord, ReleaseSpec, ReleaseState, Revision, ServiceName};
use crate::orchestrator::{DynOrchestrator, Group, Health, Instance, RecoveredSpec};
use crate::proxy::{DynProxy, Route};
use crate::registry::{DynRegistry, Lease, Registration, RegistryError};
use crate::release::event::{Event, Observer, Phase};
use crate::release::reconcile::{self, Recovery};
use crate::release::rollback::{self, Launch};
use crate::release::{Cause, Interrupt, ReleaseError, ReleaseOptions, Step};

/// The adapters a release runs through. The proxy is optional: without one, no switching or
/// draining happens.
#[derive(Debug, Clone)]
pub struct Ports {
    /// The container engine.
    pub orchestrator: DynOrchestrator,
    /// Where state, lock and registrations live.
    pub registry: DynRegistry,
    /// The reverse proxy, when one is configured.
    pub proxy: Option<DynProxy>,
}

/// How long one phase took, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PhaseTiming {
    /// The step (`None` for the lock).
    pub step: Option<Step>,
    /// The phase.
    pub phase: Phase,
    /// How long it took.
    pub took: std::time::Duration,
}

/// What a successful invocation did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// The service.
    pub service: ServiceName,
    /// The live colour afterwards (`None` without blue-green).
    pub live_color: Option<Color>,
    /// The stored scale afterwards.
    pub scale: Option<u32>,
    /// One line per step, in order.
    pub summaries: Vec<(Step, String)>,
    /// Every phase's duration, in order.
    pub timings: Vec<PhaseTiming>,
}

/// Runs invocations: validated options plus the ports they go through.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) ports: Ports,
    pub(crate) options: ReleaseOptions,
    interrupt: Interrupt,
}

impl Engine {
    /// Checks that the options are coherent with each other and with the ports given.
    ///
    /// Fails with [`ReleaseError::InvalidOptions`] (nothing called yet) when: no step is
    /// given; a step is given twice; `scale` is asked without a scale; `stop-old` is asked
    /// without blue-green; a proxy is configured (or `proxy` asked) without route settings;
    /// `proxy` is asked without a proxy; the route has no path.
    pub fn new(ports: Ports, options: ReleaseOptions) -> Result<Engine, ReleaseError> {
        let invalid = |m: String| Err(ReleaseError::InvalidOptions(m));
        if options.steps.is_empty() {
            return invalid(
                "no step to run: give at least one of --flow deploy, scale, stop-old, proxy, rollback".into(),
            );
        }
        let mut seen = BTreeSet::new();
        for step in &options.steps {
            if !seen.insert(step.as_str()) {
                return invalid(format!(
                    "step {step} is given twice in --flow; give each step once"
                ));
            }
        }
        if options.steps.contains(&Step::Rollback) && options.steps.contains(&Step::Deploy) {
            return invalid("-F rollback and -F deploy cannot run in one invocation: a rollback makes the previous release live again, a deploy releases a new one; run them one after the other".into());
        }
        if options.steps.contains(&Step::Scale) && options.scale.is_none() {
            return invalid("-F scale needs --scale (N, +N or -N)".into());
        }
        if options.steps.contains(&Step::StopOld) && !options.blue_green {
            return invalid("-F stop-old only applies to blue-green releases: add --blue-green (without it, a deploy replaces the old instances itself)".into());
        }
        if options.steps.contains(&Step::Proxy) && ports.proxy.is_none() {
            return invalid(
                "-F proxy needs a proxy: set --proxy-host (and --proxy-reconf-port if not 8080)"
                    .into(),
            );
        }
        if ports.proxy.is_some() || options.steps.contains(&Step::Proxy) {
            match &options.route {
                None => return invalid("--service-path is required when a proxy is used: give the URL path(s) the proxy routes to the service, e.g. --service-path /api".into()),
                Some(route) if route.paths.is_empty() => return invalid("--service-path is empty: give at least one URL path".into()),
                Some(_) => {}
            }
        }
        Ok(Engine {
            ports,
            options,
            interrupt: Interrupt::new(),
        })
    }

    /// Lets `interrupt` stop a run: a step interrupted before its commit rolls back.
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Engine {
        self.interrupt = interrupt;
        self
    }

    /// The options this engine runs.
    pub fn options(&self) -> &ReleaseOptions {
        &self.options
    }

    /// Runs every step in order under the service's deploy lock, reporting progress to
    /// `observer`. The lock is released at the end, whatever happened.
    pub async fn run(&self, observer: &dyn Observer) -> Result<Report, ReleaseError> {
        let started = Instant::now();
        let registry = &self.ports.registry;
        let service = &self.options.service;
        let lease = registry
            .lock(
                service,
                &self.options.holder,
                self.options.timeouts.lock_ttl,
            )
            .await
            .map_err(|e| ReleaseError::NothingChanged {
                step: None,
                cause: e.into(),
            })?;
        let keeper = LeaseKeeper::start(registry.clone(), lease.clone());
        let outcome = async {
            let loaded =
                registry
                    .load(service)
                    .await
                    .map_err(|e| ReleaseError::NothingChanged {
                        step: None,
                        cause: e.into(),
                    })?;
            let mut run = Run::new(self, observer, &keeper, loaded.value, loaded.revision);
            run.timing(None, Phase::Lock, started.elapsed());
            for step in &self.options.steps {
                if let Err(error) = run.step(*step).await {
                    return Err(if run.changed.is_empty() {
                        error
                    } else {
                        ReleaseError::EarlierStepsDone {
                            done: run.changed.clone(),
                            error: Box::new(error),
                        }
                    });
                }
            }
            Ok(run.report())
        }
        .await;
        keeper.stop();
        // Unlocking a lease that expired is harmless: it is free already.
        let _ = registry.unlock(&lease).await;
        outcome
    }
}

/// Renews the deploy lock in the background and remembers whether it was lost, so the engine
/// can refuse to change anything more once it is.
pub(crate) struct LeaseKeeper {
    lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    service: ServiceName,
}

impl LeaseKeeper {
    fn start(registry: DynRegistry, lease: Lease) -> LeaseKeeper {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let service = lease.service.clone();
        let period = lease.ttl / 3;
        let task = tokio::spawn(async move {
            loop {
                sleep(period).await;
                match registry.renew(&lease).await {
                    Ok(()) => {}
                    // Only a lease the registry says is gone is lost; an unreachable registry
                    // is asked again next period (the lease outlives two missed renewals).
                    Err(RegistryError::LeaseLost { .. }) => {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(_) => {}
                }
            }
        });
        LeaseKeeper {
            lost,
            task,
            service,
        }
    }

    /// Fails once the lease is lost: nothing may be changed after that.
    fn ensure_held(&self) -> Result<(), Cause> {
        if self.lost.load(Ordering::SeqCst) {
            Err(RegistryError::LeaseLost {
                service: self.service.clone(),
            }
            .into())
        } else {
            Ok(())
        }
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for LeaseKeeper {
    /// A run that ends without reaching its unlock (its future dropped, a panic) stops
    /// renewing too, so its lease ends by its TTL as a killed process's does.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The phases of a release: a deploy, or a rollback (`-F rollback`), which runs the same
/// phases with what the previous release left. `Run::advance` moves from one to the next;
/// each variant says what it does, where it goes next, and what a failure in it leads to.
#[derive(Debug)]
enum DeployPhase {
    /// Deploy: read the target's image, pull it, create its network. Rollback: find the
    /// previous release's instances ([`rollback::resolve`]). Both: reconcile the proxy with
    /// the stored state when it routes to the instances left in the group this release goes
    /// into ([`reconcile::inspect`]: point it back at the live colour, or a deploy adopts
    /// what it serves), start side targets, drain and remove those instances.
    /// → `Starting`. Failure → `Failed` (nothing of the live release was touched).
    Preparing,
    /// Create and start the new instances (all or nothing, by the orchestrator's contract);
    /// a rollback starts the previous release's stopped instances again instead, or takes
    /// its running ones as they are, and creates them from its spec only when none is left.
    /// → `WaitingHealthy`. Failure → `Failed` (nothing of the live release was touched).
    Starting,
    /// Poll the new instances until every one is healthy, within the health timeout.
    /// → `Switching` when a proxy is configured, else `Committing`.
    /// Unhealthy, exited, timed out → `RollingBack`.
    WaitingHealthy { started: Vec<Instance> },
    /// Point the proxy at the new instances; it answers once they are UP there.
    /// → `Committing`. Failure → `RollingBack` (the proxy kept the old servers).
    Switching { started: Vec<Instance> },
    /// Compare-and-swap the new colour, scale and release record into the registry.
    /// → `Retiring`. Failure (conflict, lost lock) → `RollingBack`, which also points the
    /// proxy back at the old servers.
    Committing {
        started: Vec<Instance>,
        switched: bool,
    },
    /// Without blue-green, drain and remove the replaced instances (blue-green keeps the old
    /// colour running until `stop-old`).
    /// → `Done`. Failure → `Failed` with [`ReleaseError::AfterCommit`].
    Retiring,
    /// Undo what was done, by how it was done: point the proxy back at the old servers when
    /// it had been switched, then remove the instances this release created and stop again
    /// the ones it started again (instances it found running are left running).
    /// → `Failed` with [`ReleaseError::Aborted`].
    RollingBack {
        started: Vec<Instance>,
        switched: bool,
        cause: Cause,
    },
    /// The deploy is committed and finished.
    Done,
    /// The deploy failed; the error says what it left behind.
    Failed(ReleaseError),
}

/// What a deploy or rollback works with, fixed in `Preparing`.
#[derive(Debug)]
struct DeployPlan {
    /// The group the new instances go into.
    group: Option<Group>,
    /// How they come to run.
    launch: Launch,
    /// The image reference they run (the summary names it).
    image: String,
    /// What they run: as `prepare` resolved it (deploy), as recorded (rollback).
    spec: Option<ReleaseSpec>,
    /// Rollback: the record made live again.
    restores: Option<ReleaseRecord>,
    /// The live instances before this deploy (running ones only).
    old: Vec<Instance>,
    /// The colour that was live before (blue-green only).
    old_color: Option<Color>,
}

impl Default for DeployPlan {
    fn default() -> Self {
        DeployPlan {
            group: None,
            launch: Launch::Create {
                numbers: Vec::new(),
            },
            image: String::new(),
            spec: None,
            restores: None,
            old: Vec::new(),
            old_color: None,
        }
    }
}

/// One invocation in progress.
struct Run<'a> {
    engine: &'a Engine,
    observer: &'a dyn Observer,
    keeper: &'a LeaseKeeper,
    state: ReleaseState,
    revision: Revision,
    /// The scale `--scale` asks for, computed once from the state loaded at the start so that a
    /// relative scale is applied once per invocation whatever the order of the steps.
    wanted_scale: Option<u32>,
    /// Whether a deploy of this invocation committed (a later `scale` is then a no-op).
    deployed: bool,
    /// Whether a deploy or rollback of this invocation switched the live colour (a later
    /// `stop-old` then needs no switch of its own).
    released: bool,
    /// The steps of this invocation that changed something (committed state, switched the
    /// proxy, stopped or removed instances): a later failure cannot undo them.
    changed: Vec<Step>,
    /// Whether the step running now has changed something yet (set by commit, switch and
    /// retire; atomic because they borrow the run shared across awaits).
    changed_something: AtomicBool,
    summaries: Vec<(Step, String)>,
    timings: Vec<PhaseTiming>,
    plan: DeployPlan,
}

impl<'a> Run<'a> {
    fn new(
        engine: &'a Engine,
        observer: &'a dyn Observer,
        keeper: &'a LeaseKeeper,
        state: ReleaseState,
        revision: Revision,
    ) -> Run<'a> {
        let wanted_scale = engine.options.scale.map(|spec| spec.apply(state.scale));
        Run {
            engine,
            observer,
            keeper,
            state,
            revision,
            wanted_scale,
            deployed: false,
            released: false,
            changed: Vec::new(),
            changed_something: AtomicBool::new(false),
            summaries: Vec::new(),
            timings: Vec::new(),
            plan: DeployPlan::default(),
        }
    }

    fn options(&self) -> &ReleaseOptions {
        &self.engine.options
    }

    /// Fails once the lease is lost or the run was interrupted: nothing more may change.
    fn checkpoint(&self) -> Result<(), Cause> {
        self.keeper.ensure_held()?;
        if self.engine.interrupt.is_triggered() {
            return Err(Cause::Interrupted);
        }
        Ok(())
    }

    /// Sleeps `period`, waking early when the run is interrupted.
    async fn pause(&self, period: std::time::Duration) {
        tokio::select! {
            _ = sleep(period) => {}
            _ = self.engine.interrupt.triggered() => {}
        }
    }

    fn orchestrator(&self) -> &DynOrchestrator {
        &self.engine.ports.orchestrator
    }

    fn proxy(&self) -> Option<&DynProxy> {
        self.engine.ports.proxy.as_ref()
    }

    fn emit(&self, event: Event) {
        self.observer.on_event(&event);
    }

    fn timing(&mut self, step: Option<Step>, phase: Phase, took: std::time::Duration) {
        self.timings.push(PhaseTiming { step, phase, took });
        self.emit(Event::PhaseFinished { step, phase, took });
    }

    fn report(self) -> Report {
        Report {
            service: self.engine.options.service.clone(),
            live_color: self.state.color,
            scale: self.state.scale,
            summaries: self.summaries,
            timings: self.timings,
        }
    }

    async fn step(&mut self, step: Step) -> Result<(), ReleaseError> {
        self.emit(Event::StepStarted { step });
        let summary = match step {
            Step::Deploy | Step::Rollback => self.release(step).await?,
            Step::Scale => self.scale().await?,
            Step::StopOld => self.stop_old().await?,
            Step::Proxy => self.point_proxy().await?,
        };
        if self.changed_something.swap(false, Ordering::SeqCst) && !self.changed.contains(&step) {
            self.changed.push(step);
        }
        self.emit(Event::StepFinished {
            step,
            summary: summary.clone(),
        });
        self.summaries.push((step, summary));
        Ok(())
    }

    /// The live group: the stored colour in blue-green mode, the target itself otherwise.
    fn live_group(&self) -> Result<Group, Cause> {
        let target = self.options().target.clone();
        if self.options().blue_green {
            match self.state.color {
                Some(color) => Ok(Group::new(target, Some(color))),
                None => Err(Cause::NothingLive {
                    service: self.options().service.clone(),
                }),
            }
        } else {
            Ok(Group::new(target, None))
        }
    }

    fn route(&self, color: Option<Color>) -> Option<Route> {
        self.options().route.as_ref().map(|settings| Route {
            service: self.options().service.clone(),
            color,
            paths: settings.paths.clone(),
            domain: settings.domain.clone(),
            path_type: settings.path_type,
        })
    }

    // ----- deploy -----

    /// Runs a deploy or a rollback (`step`) through the phases to its end.
    async fn release(&mut self, step: Step) -> Result<String, ReleaseError> {
        let mut phase = DeployPhase::Preparing;
        loop {
            phase = match phase {
                DeployPhase::Done => break,
                DeployPhase::Failed(error) => return Err(error),
                other => self.advance(step, other).await,
            };
        }
        self.deployed = step == Step::Deploy;
        self.released = true;
        let plan = &self.plan;
        let group = plan
            .group
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let how = match step {
            Step::Rollback => format!(" again ({})", plan.launch.describe()),
            _ => String::new(),
        };
        Ok(format!(
            "{} instance(s) of {} ({}) live{how}{}",
            plan.launch.count(),
            group,
            plan.image,
            match plan.old_color {
                Some(old) if !plan.old.is_empty() => format!(
                    "; {} instance(s) of {old} still running (stop them with -F stop-old)",
                    plan.old.len()
                ),
                _ => String::new(),
            }
        ))
    }

    /// Advances a deploy or rollback (`step`) by one phase.
    async fn advance(&mut self, step: Step, phase: DeployPhase) -> DeployPhase {
        let began = Instant::now();
        match phase {
            DeployPhase::Preparing => match self.prepare(step).await {
                Ok(()) => {
                    self.timing(Some(step), Phase::Prepare, began.elapsed());
                    DeployPhase::Starting
                }
                Err(cause) => DeployPhase::Failed(ReleaseError::NothingChanged {
                    step: Some(step),
                    cause,
                }),
            },
            DeployPhase::Starting => {
                let started = match self.checkpoint() {
                    Ok(()) => self.launch().await,
                    Err(cause) => Err(cause),
                };
                match started {
                    Ok(started) => {
                        self.timing(Some(step), Phase::Start, began.elapsed());
                        DeployPhase::WaitingHealthy { started }
                    }
                    Err(cause) => DeployPhase::Failed(ReleaseError::NothingChanged {
                        step: Some(step),
                        cause,
                    }),
                }
            }
            DeployPhase::WaitingHealthy { started } => match self.admit(&started).await {
                Ok(()) => {
                    self.timing(Some(step), Phase::Healthy, began.elapsed());
                    if self.proxy().is_some() {
                        DeployPhase::Switching { started }
                    } else {
                        DeployPhase::Committing {
                            started,
                            switched: false,
                        }
                    }
                }
                Err(cause) => DeployPhase::RollingBack {
                    started,
                    switched: false,
                    cause,
                },
            },
            DeployPhase::Switching { started } => {
                let color = self.plan.group.as_ref().and_then(|g| g.color);
                match self.switch_to(color, &started).await {
                    Ok(()) => {
                        self.timing(Some(step), Phase::Switch, began.elapsed());
                        DeployPhase::Committing {
                            started,
                            switched: true,
                        }
                    }
                    Err(cause) => DeployPhase::RollingBack {
                        started,
                        switched: false,
                        cause,
                    },
                }
            }
            DeployPhase::Committing { started, switched } => {
                let state = self.released_state(started.len() as u32);
                match self.commit(state).await {
                    Ok(()) => {
                        self.timing(Some(step), Phase::Commit, began.elapsed());
                        DeployPhase::Retiring
                    }
                    Err(cause) => DeployPhase::RollingBack {
                        started,
                        switched,
                        cause,
                    },
                }
            }
            DeployPhase::Retiring => {
                if self.options().blue_green || self.plan.old.is_empty() {
                    return DeployPhase::Done;
                }
                let old = self.plan.old.clone();
                match self.drain_and(&old, Retire::Remove, step).await {
                    Ok(()) => DeployPhase::Done,
                    Err(cause) => DeployPhase::Failed(ReleaseError::AfterCommit { step, cause }),
                }
            }
            DeployPhase::RollingBack {
                started,
                switched,
                cause,
            } => {
                let old = self.plan.old.clone();
                let old_color = self.plan.old_color;
                // Undone by how each came to run: created ones are removed, started-again
                // ones stopped, running ones left as they were.
                let (created, resumed) = match &self.plan.launch {
                    Launch::Create { .. } => (started, Vec::new()),
                    Launch::Reuse { stopped, .. } => (
                        Vec::new(),
                        started
                            .into_iter()
                            .filter(|i| stopped.iter().any(|s| s.id == i.id))
                            .collect(),
                    ),
                };
                let mut undo = self
                    .roll_back(
                        step,
                        &cause,
                        &created,
                        &resumed,
                        switched.then_some((old_color, &old[..])),
                    )
                    .await;
                if let Launch::Reuse { running, .. } = &self.plan.launch {
                    if !running.is_empty() {
                        undo.done.push(format!(
                            "{} were running before and keep running",
                            names(running)
                        ));
                    }
                }
                self.timing(Some(step), Phase::Rollback, began.elapsed());
                DeployPhase::Failed(ReleaseError::Aborted {
                    step,
                    cause,
                    undone: undo.done,
                    cleanup_failures: undo.failures,
                })
            }
            DeployPhase::Done => DeployPhase::Done,
            DeployPhase::Failed(error) => DeployPhase::Failed(error),
        }
    }

    /// Fixes the plan of a deploy or rollback (`step`), reconciles the proxy with the stored
    /// state and what runs ([`reconcile::inspect`]), makes the target startable and clears
    /// the leftovers of the group the release goes into. Touches nothing that is live: the
    /// proxy is only pointed back at the stored live colour, or what it serves is taken as
    /// live, when an earlier run was killed between its switch and its commit.
    async fn prepare(&mut self, step: Step) -> Result<(), Cause> {
        self.checkpoint()?;
        let leftovers = loop {
            let leftovers = match step {
                Step::Rollback => self.plan_rollback().await?,
                _ => self.plan_deploy().await?,
            };
            let found = reconcile::inspect(
                self.proxy(),
                step,
                &self.options().service,
                &leftovers,
                self.plan.old_color,
                &self.plan.old,
            )
            .await?;
            match found.recovery {
                Recovery::Nothing => break leftovers,
                Recovery::SwitchBack { color, to } => {
                    self.emit(Event::Notice {
                        message: format!(
                            "the proxy routes {} to {}, which the stored state does not name live (an earlier run stopped between its switch and its commit): pointing it back at the live {} ({}) before removing them",
                            self.options().service,
                            names(&found.routed),
                            Group::new(self.options().target.clone(), color),
                            names(&to)
                        ),
                    });
                    self.switch_to(color, &to).await?;
                    break leftovers;
                }
                // A deploy is planned again from a state that names them live: they are then
                // the old instances, not leftovers (a rollback never adopts).
                Recovery::Adopt { color, instances } => self.adopt(color, &instances).await?,
            }
        };
        if step != Step::Rollback {
            // A pull can take long: an interrupt abandons it (a partial pull changes nothing).
            let orchestrator = self.orchestrator().clone();
            let spec = tokio::select! {
                prepared = orchestrator.prepare(&self.options().target) => prepared?,
                _ = self.engine.interrupt.triggered() => return Err(Cause::Interrupted),
            };
            self.plan.image = spec.image.clone();
            self.plan.spec = Some(spec);
        }
        self.start_side_targets_and_clear(step, &leftovers).await
    }

    /// Fixes the deploy plan; returns the leftovers of the group it goes into.
    async fn plan_deploy(&mut self) -> Result<Vec<Instance>, Cause> {
        let orchestrator = self.orchestrator().clone();
        let target = self.options().target.clone();
        let info = orchestrator.describe(&target).await?;
        let count = self
            .wanted_scale
            .unwrap_or_else(|| self.state.scale.unwrap_or(1));
        let (group, old_color, old, leftovers, first_number) = if self.options().blue_green {
            let next = Color::next_after(self.state.color);
            let group = Group::new(target.clone(), Some(next));
            // Everything in the idle colour is a leftover of an older release.
            let leftovers = orchestrator.list(&group).await?;
            let old = match self.state.color {
                Some(live) => running(
                    orchestrator
                        .list(&Group::new(target.clone(), Some(live)))
                        .await?,
                ),
                None => Vec::new(),
            };
            (group, self.state.color, old, leftovers, 1)
        } else {
            // Without colours, new instances are numbered after the live ones so both can
            // run side by side until the new ones are healthy.
            let group = Group::new(target.clone(), None);
            let existing = orchestrator.list(&group).await?;
            let (old, leftovers): (Vec<_>, Vec<_>) = existing.into_iter().partition(|i| i.running);
            let first = old.iter().map(|i| i.number).max().unwrap_or(0) + 1;
            (group, None, old, leftovers, first)
        };
        self.plan = DeployPlan {
            group: Some(group),
            launch: Launch::Create {
                numbers: (first_number..first_number + count).collect(),
            },
            image: info.image,
            spec: None,
            restores: None,
            old,
            old_color,
        };
        Ok(leftovers)
    }

    /// Fixes the rollback plan from what the previous release left ([`rollback::resolve`]);
    /// returns the instances of the group it goes into that it does not reuse.
    async fn plan_rollback(&mut self) -> Result<Vec<Instance>, Cause> {
        let resolved = rollback::resolve(self.orchestrator(), self.options(), &self.state).await?;
        if let Some(scale) = self.options().scale {
            if !self.options().steps.contains(&Step::Scale) {
                self.emit(Event::Warning {
                    message: format!(
                        "--scale {scale} is not applied by a rollback, which brings back the previous release with its {} instance(s); add -F scale after it to change the count",
                        resolved.launch.count()
                    ),
                });
            }
        }
        let clear: Vec<Instance> = resolved
            .foreign
            .iter()
            .chain(&resolved.leftovers)
            .cloned()
            .collect();
        self.plan = DeployPlan {
            group: Some(resolved.group),
            launch: resolved.launch,
            image: resolved.previous.image.clone(),
            spec: resolved.spec,
            restores: Some(resolved.previous),
            old: resolved.old,
            old_color: resolved.old_color,
        };
        Ok(clear)
    }

    /// Takes `instances` (of `color`), which the proxy serves while the stored live colour
    /// runs nothing, as the live release this run replaces: what they run is read back from
    /// the first of them. Nothing is stored here: the release's own commit stores them as the
    /// release a rollback returns to, by compare-and-swap against the state as it was read,
    /// and a release that fails before it points the proxy back at them.
    async fn adopt(&mut self, color: Color, instances: &[Instance]) -> Result<(), Cause> {
        let first = instances
            .first()
            .expect("reconcile::inspect adopts routed instances only");
        let spec = self
            .orchestrator()
            .recover_spec(first)
            .await?
            .spec()
            .clone();
        let group = Group::new(self.options().target.clone(), Some(color));
        self.emit(Event::Notice {
            message: format!(
                "the proxy routes {} to {} of {group}, and the stored live colour runs no instance (an earlier run stopped between its switch and its commit): taking {group} as the live release ({}, read back from {}); this release goes into the other colour and its commit stores {group} as the one a rollback returns to",
                self.options().service,
                names(instances),
                spec.image,
                first.name
            ),
        });
        let count = instances.len() as u32;
        self.state = ReleaseState {
            color: Some(color),
            scale: Some(count),
            last_release: Some(ReleaseRecord {
                color: Some(color),
                image: spec.image.clone(),
                scale: count,
                released_at: SystemTime::now(),
                released_by: self.options().holder.clone(),
                spec: Some(spec),
            }),
            previous_release: self.state.last_release.clone(),
        };
        Ok(())
    }

    /// Starts the side targets, then removes `leftovers` (instances in the release's group
    /// it does not reuse) and their registrations. With a proxy, the running ones are
    /// drained first: a run killed during stop-old's drain leaves sessions on them.
    async fn start_side_targets_and_clear(
        &mut self,
        step: Step,
        leftovers: &[Instance],
    ) -> Result<(), Cause> {
        let orchestrator = self.orchestrator().clone();
        if !self.options().side_targets.is_empty() {
            orchestrator
                .start_side_targets(&self.options().side_targets)
                .await?;
        }
        if leftovers.is_empty() {
            return Ok(());
        }
        let running: Vec<Instance> = leftovers.iter().filter(|i| i.running).cloned().collect();
        if !running.is_empty() {
            self.drain(&running, step, Some("leftover instance(s)"))
                .await?;
        }
        self.emit(Event::Notice {
            message: format!(
                "removing {} leftover instance(s) of an older release: {}",
                leftovers.len(),
                names(leftovers)
            ),
        });
        orchestrator.remove(leftovers).await?;
        // An idle colour that was never stopped is still registered: a registry-backed
        // proxy must not find its removed instances.
        self.deregister(leftovers).await?;
        Ok(())
    }

    /// Brings the release's instances to run, as the plan says: creates them from the spec,
    /// or starts the stopped ones again and takes the running ones as they are.
    async fn launch(&self) -> Result<Vec<Instance>, Cause> {
        let plan = &self.plan;
        match &plan.launch {
            Launch::Create { numbers } => {
                let (Some(group), Some(spec)) = (&plan.group, &plan.spec) else {
                    unreachable!(
                        "Preparing fixes the group and spec of a release that creates instances"
                    )
                };
                Ok(self.orchestrator().start(group, numbers, spec).await?)
            }
            Launch::Reuse { running, stopped } => {
                let mut all = running.clone();
                if !stopped.is_empty() {
                    all.extend(self.orchestrator().resume(stopped).await?);
                }
                all.sort_by_key(|i| i.number);
                Ok(all)
            }
        }
    }

    /// The state a deploy or rollback commits with `count` instances live. A deploy records
    /// a new release; a rollback restores the previous record as it was (when and by whom
    /// that version was released), with the count it brought back. Either way the release
    /// that was live becomes the one a (next) rollback returns to.
    fn released_state(&self, count: u32) -> ReleaseState {
        let color = self.plan.group.as_ref().and_then(|g| g.color);
        let record = match &self.plan.restores {
            Some(previous) => ReleaseRecord {
                scale: count,
                ..previous.clone()
            },
            None => ReleaseRecord {
                color,
                image: self.plan.image.clone(),
                scale: count,
                released_at: SystemTime::now(),
                released_by: self.options().holder.clone(),
                spec: self.plan.spec.clone(),
            },
        };
        ReleaseState {
            color: color.or(self.state.color),
            scale: Some(count),
            last_release: Some(record),
            previous_release: self.state.last_release.clone(),
        }
    }

    /// Waits until `instances` are healthy, then registers them, so that whoever reads the
    /// registry (a proxy, a client) only ever finds instances that passed their health check.
    async fn admit(&self, instances: &[Instance]) -> Result<(), Cause> {
        self.wait_healthy(instances).await?;
        self.checkpoint()?;
        for registration in instances.iter().filter_map(|i| self.registration(i)) {
            self.engine.ports.registry.register(&registration).await?;
        }
        Ok(())
    }

    /// Removes the registrations of `instances` (unknown ones are not an error).
    async fn deregister(&self, instances: &[Instance]) -> Result<(), Cause> {
        for instance in instances {
            self.engine
                .ports
                .registry
                .deregister(&instance.name)
                .await?;
        }
        Ok(())
    }

    /// What the registry records of an instance: its registry name (`<service>-<color>`), its
    /// address, tags with the colour and image version. `None` when it has no address.
    fn registration(&self, instance: &Instance) -> Option<Registration> {
        let address = instance.address?;
        let service = &self.options().service;
        let version = instance
            .image
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or("latest", |(_, tag)| tag);
        let mut tags: Vec<String> = instance
            .group
            .color
            .map(|c| c.to_string())
            .into_iter()
            .collect();
        tags.push(format!("version={version}"));
        let meta = BTreeMap::from([
            ("docker-flow-service".to_string(), service.to_string()),
            (
                "docker-flow-target".to_string(),
                instance.group.target.clone(),
            ),
            ("image".to_string(), instance.image.clone()),
        ]);
        Some(Registration {
            id: instance.name.clone(),
            name: service.instance_name(instance.group.color),
            address: address.ip().to_string(),
            port: address.port(),
            tags,
            meta,
            check: None,
        })
    }

    /// Polls `instances` until all are healthy, bounded by the health timeout alone. An
    /// unhealthy answer is reported (with the check's output) and waited on, since Docker's
    /// status can still turn healthy; with `--health-fail-fast` it fails at once. An exited
    /// instance fails at once (it will not come back by itself).
    async fn wait_healthy(&self, instances: &[Instance]) -> Result<(), Cause> {
        let timeouts = self.options().timeouts;
        let fail_fast = self.options().health_fail_fast;
        let began = Instant::now();
        let mut pending: Vec<&Instance> = instances.iter().collect();
        // The last unhealthy output reported per instance, so a check failing the same way on
        // every poll is reported once.
        let mut reported: BTreeMap<&str, String> = BTreeMap::new();
        loop {
            self.checkpoint()?;
            let answers = join_all(pending.iter().map(|i| self.orchestrator().health(i))).await;
            let mut still = Vec::new();
            for (instance, answer) in pending.into_iter().zip(answers) {
                match answer? {
                    Health::Healthy => {}
                    Health::Starting { .. } => still.push(instance),
                    Health::Unhealthy { detail } if !fail_fast => {
                        if reported.get(instance.name.as_str()) != Some(&detail) {
                            self.emit(Event::InstanceUnhealthy {
                                instance: instance.name.clone(),
                                detail: detail.clone(),
                                elapsed: began.elapsed(),
                            });
                            reported.insert(&instance.name, detail);
                        }
                        still.push(instance);
                    }
                    health @ (Health::Unhealthy { .. } | Health::Exited { .. }) => {
                        let diagnosis = self
                            .orchestrator()
                            .diagnose(instance)
                            .await
                            .unwrap_or_default();
                        return Err(Cause::Unhealthy {
                            instance: instance.name.clone(),
                            health,
                            diagnosis: Box::new(diagnosis),
                        });
                    }
                }
            }
            pending = still;
            self.emit(Event::WaitingHealthy {
                healthy: instances.len() - pending.len(),
                total: instances.len(),
                elapsed: began.elapsed(),
            });
            if pending.is_empty() {
                return Ok(());
            }
            if began.elapsed() >= timeouts.health {
                let diagnosis = self
                    .orchestrator()
                    .diagnose(pending[0])
                    .await
                    .unwrap_or_default();
                return Err(Cause::HealthTimeout {
                    instances: pending.iter().map(|i| i.name.clone()).collect(),
                    after: timeouts.health,
                    diagnosis: Box::new(diagnosis),
                });
            }
            self.pause(timeouts.health_poll).await;
        }
    }

    /// Points the proxy (when there is one) at exactly `instances`.
    async fn switch_to(&self, color: Option<Color>, instances: &[Instance]) -> Result<(), Cause> {
        let (Some(proxy), Some(route)) = (self.proxy(), self.route(color)) else {
            return Ok(());
        };
        self.checkpoint()?;
        let servers = addresses(instances)?;
        proxy.reconfigure(&route, &servers).await?;
        self.changed_something.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Stores `state` by compare-and-swap against the revision this invocation holds.
    async fn commit(&mut self, state: ReleaseState) -> Result<(), Cause> {
        self.checkpoint()?;
        let revision = self
            .engine
            .ports
            .registry
            .store(&self.options().service, &state, self.revision)
            .await?;
        self.changed_something.store(true, Ordering::SeqCst);
        self.state = state;
        self.revision = revision;
        Ok(())
    }

    /// Waits (bounded by the drain timeout) until the proxy, when there is one, reports no
    /// sessions on `instances`. When `what` names them, a first poll that finds sessions says
    /// so in a notice.
    async fn drain(
        &mut self,
        instances: &[Instance],
        step: Step,
        what: Option<&str>,
    ) -> Result<(), Cause> {
        let Some(proxy) = self.proxy().cloned() else {
            return Ok(());
        };
        let began = Instant::now();
        let servers: Vec<SocketAddr> = instances.iter().filter_map(|i| i.address).collect();
        let timeouts = self.options().timeouts;
        let mut first = true;
        loop {
            self.checkpoint()?;
            let sessions = proxy.sessions(&self.options().service, &servers).await?;
            self.emit(Event::Draining {
                sessions,
                elapsed: began.elapsed(),
            });
            if sessions == 0 {
                break;
            }
            if let (true, Some(what)) = (first, what) {
                self.emit(Event::Notice {
                    message: format!(
                        "{sessions} session(s) still open on {what} {} (an earlier run stopped while they drained): draining them before they are removed",
                        names(instances)
                    ),
                });
            }
            first = false;
            if began.elapsed() >= timeouts.drain {
                self.emit(Event::Notice {
                    message: format!(
                        "{sessions} session(s) still open after the drain timeout ({}); stopping anyway",
                        crate::time::human(timeouts.drain)
                    ),
                });
                break;
            }
            self.pause(timeouts.drain_poll).await;
        }
        self.timing(Some(step), Phase::Drain, began.elapsed());
        Ok(())
    }

    /// Drains `instances` ([`Run::drain`]), then stops or removes them.
    async fn drain_and(
        &mut self,
        instances: &[Instance],
        retire: Retire,
        step: Step,
    ) -> Result<(), Cause> {
        self.drain(instances, step, None).await?;
        let began = Instant::now();
        match retire {
            Retire::Stop => self.orchestrator().stop(instances).await?,
            Retire::Remove => self.orchestrator().remove(instances).await?,
        }
        self.changed_something.store(true, Ordering::SeqCst);
        self.deregister(instances).await?;
        self.timing(Some(step), Phase::Retire, began.elapsed());
        Ok(())
    }

    /// Undoes a failed step: the proxy goes back to `restore` (colour and servers) when it
    /// had been switched, then what the step created (`started`) is removed and what it
    /// started again (`resumed`) is stopped. Returns what was undone and what failed, each
    /// naming the instances, so the message names only what really remains.
    async fn roll_back(
        &self,
        step: Step,
        cause: &Cause,
        started: &[Instance],
        resumed: &[Instance],
        restore: Option<(Option<Color>, &[Instance])>,
    ) -> Undo {
        self.emit(Event::RollingBack {
            step,
            reason: cause.to_string(),
        });
        let mut undo = Undo::default();
        if let (Some((color, old)), Some(proxy)) = (restore, self.proxy()) {
            let restored = if old.is_empty() {
                proxy
                    .remove(&self.options().service)
                    .await
                    .map_err(Cause::from)
                    .map(|()| format!("the route of {} was removed again", self.options().service))
            } else {
                match (self.route(color), addresses(old)) {
                    (Some(route), Ok(servers)) => proxy
                        .reconfigure(&route, &servers)
                        .await
                        .map_err(Cause::from)
                        .map(|()| format!("the proxy routes to {} again", names(old))),
                    (_, Err(cause)) => Err(cause),
                    (None, _) => Ok(format!("the proxy routes to {} again", names(old))),
                }
            };
            match restored {
                Ok(done) => undo.done.push(done),
                Err(e) => undo.failures.push(format!(
                    "point the proxy back at the old instances ({}): {e}",
                    names(old)
                )),
            }
        }
        if !started.is_empty() {
            let how = if step == Step::Rollback {
                "recreated"
            } else {
                "started"
            };
            match self.orchestrator().remove(started).await {
                Ok(()) => undo.done.push(format!(
                    "the instances it {how} were removed ({})",
                    names(started)
                )),
                Err(e) => undo.failures.push(format!(
                    "remove the new instances ({}): {e}",
                    names(started)
                )),
            }
            if let Err(e) = self.deregister(started).await {
                undo.failures.push(format!(
                    "deregister the new instances ({}) from the registry: {e}",
                    names(started)
                ));
            }
        }
        if !resumed.is_empty() {
            match self.orchestrator().stop(resumed).await {
                Ok(()) => undo.done.push(format!(
                    "those it started again were stopped again ({})",
                    names(resumed)
                )),
                Err(e) => undo.failures.push(format!(
                    "stop again the instances started again ({}): {e}",
                    names(resumed)
                )),
            }
        }
        undo
    }

    // ----- scale -----

    async fn scale(&mut self) -> Result<String, ReleaseError> {
        let step = Step::Scale;
        let wanted = self
            .wanted_scale
            .expect("validated: scale step has a scale");
        if self.deployed {
            return Ok(format!(
                "already at {wanted} instance(s): the deploy of this run applied --scale"
            ));
        }
        let nothing_changed = |cause: Cause| ReleaseError::NothingChanged {
            step: Some(step),
            cause,
        };
        let group = self.live_group().map_err(nothing_changed)?;
        let all = self
            .orchestrator()
            .list(&group)
            .await
            .map_err(|e| nothing_changed(e.into()))?;
        let live = running(all.clone());
        let current = live.len() as u32;
        if wanted > current {
            self.scale_up(&group, &all, &live, wanted).await?;
            Ok(format!(
                "{group} scaled up from {current} to {wanted} instance(s)"
            ))
        } else if wanted < current {
            self.scale_down(&group, &live, wanted).await?;
            Ok(format!(
                "{group} scaled down from {current} to {wanted} instance(s)"
            ))
        } else {
            if self.state.scale != Some(wanted) {
                let state = ReleaseState {
                    scale: Some(wanted),
                    ..self.state.clone()
                };
                self.commit(state).await.map_err(nothing_changed)?;
            }
            Ok(format!("{group} already runs {wanted} instance(s)"))
        }
    }

    async fn scale_up(
        &mut self,
        group: &Group,
        all: &[Instance],
        live: &[Instance],
        wanted: u32,
    ) -> Result<(), ReleaseError> {
        let step = Step::Scale;
        let began = Instant::now();
        let first = all.iter().map(|i| i.number).max().unwrap_or(0) + 1;
        let numbers: Vec<u32> = (first..first + wanted - live.len() as u32).collect();
        let nothing_changed = |cause| ReleaseError::NothingChanged {
            step: Some(step),
            cause,
        };
        let spec = self.live_spec(group, live).await.map_err(nothing_changed)?;
        let started = match self.checkpoint() {
            Ok(()) => self
                .orchestrator()
                .start(group, &numbers, &spec)
                .await
                .map_err(Cause::from),
            Err(cause) => Err(cause),
        }
        .map_err(nothing_changed)?;
        self.timing(Some(step), Phase::Start, began.elapsed());
        let mut switched = false;
        let outcome = async {
            let began = Instant::now();
            self.admit(&started).await?;
            self.timing(Some(step), Phase::Healthy, began.elapsed());
            if self.proxy().is_some() {
                let began = Instant::now();
                let serving: Vec<Instance> = live.iter().chain(started.iter()).cloned().collect();
                self.switch_to(group.color, &serving).await?;
                switched = true;
                self.timing(Some(step), Phase::Switch, began.elapsed());
            }
            let began = Instant::now();
            let mut state = ReleaseState {
                scale: Some(wanted),
                ..self.state.clone()
            };
            // A record without a spec gets the one read back, so the next scale is exact.
            if let Some(record) = state
                .last_release
                .as_mut()
                .filter(|r| r.color == group.color)
            {
                record.spec.get_or_insert(spec);
            }
            self.commit(state).await?;
            self.timing(Some(step), Phase::Commit, began.elapsed());
            Ok::<(), Cause>(())
        }
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(cause) => {
                let undo = self
                    .roll_back(
                        step,
                        &cause,
                        &started,
                        &[],
                        switched.then_some((group.color, live)),
                    )
                    .await;
                Err(ReleaseError::Aborted {
                    step,
                    cause,
                    undone: undo.done,
                    cleanup_failures: undo.failures,
                })
            }
        }
    }

    /// What the live group runs: the stored release's spec, or, when the stored release has
    /// none (written by Docker Flow 1.x or an older docker-flow), the spec read back from a
    /// running instance, with a warning. Warns, naming both sides, when the Compose file now
    /// resolves to something else: scaling keeps the live version, only a deploy changes it.
    async fn live_spec(&self, group: &Group, live: &[Instance]) -> Result<ReleaseSpec, Cause> {
        let service = &self.options().service;
        let stored = self
            .state
            .last_release
            .as_ref()
            .filter(|record| record.color == group.color)
            .and_then(|record| record.spec.clone());
        let spec = match stored {
            Some(spec) if spec.is_intact() => spec,
            Some(spec) => {
                return Err(RegistryError::Corrupt {
                    key: format!("the release record of {service}"),
                    value: spec.digest,
                    reason: "the stored spec does not match its digest (edited or truncated); deploy again to store a new one".into(),
                }
                .into())
            }
            None => {
                let Some(first) = live.first() else {
                    return Err(Cause::NoLiveSpec {
                        service: service.clone(),
                    });
                };
                let recovered = self.orchestrator().recover_spec(first).await?;
                let origin = match &recovered {
                    RecoveredSpec::Exact(_) => "its spec".to_string(),
                    RecoveredSpec::ImageOnly(_) => {
                        "its image; the rest of the configuration is the Compose file's as it is now"
                            .to_string()
                    }
                };
                let spec = recovered.spec().clone();
                self.emit(Event::Warning {
                    message: format!(
                        "the stored release of {service} records no spec (stored by Docker Flow 1.x or an older docker-flow): read back from running instance {}: {} ({}), {origin}",
                        first.name, spec.image, spec.image_id
                    ),
                });
                spec
            }
        };
        let now = self.orchestrator().describe(&group.target).await?;
        let changed = spec.changed_keys(&now.config);
        if now.image != spec.image {
            self.emit(Event::Warning {
                message: format!(
                    "the Compose file now gives {} the image {}, but {group} runs {} ({}): scaling starts {} like the live instances; only a deploy (-F deploy) changes the version",
                    group.target, now.image, spec.image, spec.image_id, spec.image
                ),
            });
        } else if !changed.is_empty() {
            self.emit(Event::Warning {
                message: format!(
                    "the Compose file's {} now differs from what {group} runs in: {}; scaling starts the live configuration; only a deploy (-F deploy) changes it",
                    group.target,
                    changed.join(", ")
                ),
            });
        }
        Ok(spec)
    }

    async fn scale_down(
        &mut self,
        group: &Group,
        live: &[Instance],
        wanted: u32,
    ) -> Result<(), ReleaseError> {
        let step = Step::Scale;
        // The highest numbers go first, so the remaining ones stay 1..=wanted when they were.
        let mut by_number = live.to_vec();
        by_number.sort_by_key(|i| std::cmp::Reverse(i.number));
        let surplus = by_number.len() - wanted as usize;
        let victims: Vec<Instance> = by_number.drain(..surplus).collect();
        let keep = by_number;
        let began = Instant::now();
        if let Err(cause) = self.switch_to(group.color, &keep).await {
            // The proxy keeps its servers when it refuses (contract), so nothing changed.
            return Err(ReleaseError::NothingChanged {
                step: Some(step),
                cause,
            });
        }
        if self.proxy().is_some() {
            self.timing(Some(step), Phase::Switch, began.elapsed());
        }
        let began = Instant::now();
        let state = ReleaseState {
            scale: Some(wanted),
            ..self.state.clone()
        };
        if let Err(cause) = self.commit(state).await {
            let undo = self
                .roll_back(
                    step,
                    &cause,
                    &[],
                    &[],
                    self.proxy().is_some().then_some((group.color, live)),
                )
                .await;
            return Err(ReleaseError::Aborted {
                step,
                cause,
                undone: undo.done,
                cleanup_failures: undo.failures,
            });
        }
        self.timing(Some(step), Phase::Commit, began.elapsed());
        self.drain_and(&victims, Retire::Remove, step)
            .await
            .map_err(|cause| ReleaseError::AfterCommit { step, cause })
    }

    // ----- stop-old -----

    async fn stop_old(&mut self) -> Result<String, ReleaseError> {
        let step = Step::StopOld;
        let nothing_changed = |cause: Cause| ReleaseError::NothingChanged {
            step: Some(step),
            cause,
        };
        let live_group = self.live_group().map_err(nothing_changed)?;
        let live_color = live_group.color.expect("blue-green validated for stop-old");
        let old_group = Group::new(self.options().target.clone(), Some(live_color.other()));
        let old = running(
            self.orchestrator()
                .list(&old_group)
                .await
                .map_err(|e| nothing_changed(e.into()))?,
        );
        if old.is_empty() {
            return Ok(format!(
                "nothing to stop: no instance of {old_group} is running"
            ));
        }
        if self.proxy().is_some() && !self.released {
            // Make sure the old colour is out of the rotation before waiting for it to drain
            // (a no-op when a deploy or rollback of this run switched the proxy already).
            let began = Instant::now();
            let live = running(
                self.orchestrator()
                    .list(&live_group)
                    .await
                    .map_err(|e| nothing_changed(e.into()))?,
            );
            self.switch_to(Some(live_color), &live)
                .await
                .map_err(nothing_changed)?;
            self.timing(Some(step), Phase::Switch, began.elapsed());
        }
        self.checkpoint().map_err(nothing_changed)?;
        self.drain_and(&old, Retire::Stop, step)
            .await
            .map_err(|cause| ReleaseError::AfterCommit { step, cause })?;
        Ok(format!(
            "stopped {} instance(s) of {old_group}: {}",
            old.len(),
            names(&old)
        ))
    }

    // ----- proxy -----

    async fn point_proxy(&mut self) -> Result<String, ReleaseError> {
        let step = Step::Proxy;
        let nothing_changed = |cause: Cause| ReleaseError::NothingChanged {
            step: Some(step),
            cause,
        };
        let began = Instant::now();
        let group = self.live_group().map_err(nothing_changed)?;
        let live = running(
            self.orchestrator()
                .list(&group)
                .await
                .map_err(|e| nothing_changed(e.into()))?,
        );
        if live.is_empty() {
            return Err(nothing_changed(Cause::NothingLive {
                service: self.options().service.clone(),
            }));
        }
        self.switch_to(group.color, &live)
            .await
            .map_err(nothing_changed)?;
        self.timing(Some(step), Phase::Switch, began.elapsed());
        Ok(format!(
            "proxy routes {} to {} instance(s) of {group}",
            self.options().service,
            live.len()
        ))
    }
}

/// What undoing a failed step did and could not do, in words naming the instances.
#[derive(Debug, Default)]
struct Undo {
    done: Vec<String>,
    failures: Vec<String>,
}

/// What happens to instances once drained.
#[derive(Debug, Clone, Copy)]
enum Retire {
    /// Stop them and keep them, for a manual restart (old colour).
    Stop,
    /// Remove them (replaced or scaled away).
    Remove,
}

fn running(instances: Vec<Instance>) -> Vec<Instance> {
    instances.into_iter().filter(|i| i.running).collect()
}

fn names(instances: &[Instance]) -> String {
    instances
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn addresses(instances: &[Instance]) -> Result<Vec<SocketAddr>, Cause> {
    instances
        .iter()
        .map(|i| {
            i.address.ok_or_else(|| Cause::NoAddress {
                instance: i.name.clone(),
            })
        })
        .collect()
}
