//! What a rollback brings back, resolved from the stored state and what runs. The dry run
//! ([`crate::release::Plan`]) and the executor both call [`resolve`], so they cannot disagree
//! about which instances are reused, restarted, recreated or removed.
//!
//! A rollback makes `previous_release` live again. In blue-green mode its colour is the idle
//! one, and what is found there decides how: instances still running are only health-checked
//! (warm), stopped ones are started again (the same containers), and when none is left they
//! are recreated from the record's spec. An instance of that colour that runs something else
//! (a leftover of a release that was killed before its commit) is removed first: the
//! rollback must bring back exactly the recorded version. Without blue-green the previous
//! release's instances were removed by the deploy that replaced it, so they are recreated
//! beside the live ones, which are removed after the commit, as a deploy does.

use crate::domain::{Color, ReleaseRecord, ReleaseSpec, ReleaseState};
use crate::orchestrator::{DynOrchestrator, Group, Instance, RecoveredSpec};
use crate::registry::RegistryError;
use crate::release::{Cause, ReleaseOptions};

/// How the instances a release puts live come to run; it also decides how a failure before
/// the commit undoes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Launch {
    /// Create these instance numbers from the spec; undone by removing them.
    Create {
        /// The numbers, in the release's group.
        numbers: Vec<u32>,
    },
    /// Bring back existing instances: `running` ones are only health-checked (undone by
    /// leaving them as they are), `stopped` ones are started again (undone by stopping them).
    Reuse {
        /// Instances still running.
        running: Vec<Instance>,
        /// Instances to start again.
        stopped: Vec<Instance>,
    },
}

impl Launch {
    /// How many instances the release puts live.
    pub(crate) fn count(&self) -> usize {
        match self {
            Launch::Create { numbers } => numbers.len(),
            Launch::Reuse { running, stopped } => running.len() + stopped.len(),
        }
    }

    /// The words a summary uses for how they came to run.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Launch::Create { .. } => "recreated from the stored spec",
            Launch::Reuse { stopped, .. } if stopped.is_empty() => "were still running",
            Launch::Reuse { running, .. } if running.is_empty() => "started again",
            Launch::Reuse { .. } => "still running or started again",
        }
    }
}

/// A rollback, resolved.
#[derive(Debug, Clone)]
pub(crate) struct RollbackPlan {
    /// The record made live again.
    pub(crate) previous: ReleaseRecord,
    /// The group its instances are in.
    pub(crate) group: Group,
    /// What they run (`None`: the record predates specs; then only existing instances can
    /// be brought back).
    pub(crate) spec: Option<ReleaseSpec>,
    /// How they come to run.
    pub(crate) launch: Launch,
    /// Instances of the group that run something else: removed before anything starts.
    pub(crate) foreign: Vec<Instance>,
    /// Stopped instances of the live group without blue-green: removed as leftovers.
    pub(crate) leftovers: Vec<Instance>,
    /// The running instances of the release being rolled back.
    pub(crate) old: Vec<Instance>,
    /// The colour being rolled back (blue-green only).
    pub(crate) old_color: Option<Color>,
}

/// Resolves the rollback of `state`, reading instance lists and specs only.
///
/// Fails with [`Cause::NothingToRollBack`] when no previous release is recorded or it cannot
/// be made live in this mode, [`RegistryError::Corrupt`] when its stored spec does not match
/// its digest, and [`Cause::NoPreviousSpec`] when its instances are gone and it has no spec.
pub(crate) async fn resolve(
    orchestrator: &DynOrchestrator,
    options: &ReleaseOptions,
    state: &ReleaseState,
) -> Result<RollbackPlan, Cause> {
    let service = &options.service;
    let refuse = |reason: &str| {
        Err(Cause::NothingToRollBack {
            service: service.clone(),
            reason: reason.to_string(),
        })
    };
    let Some(previous) = state.previous_release.clone() else {
        return refuse("no earlier release is recorded (a rollback needs two releases made by docker-flow; a state written by Docker Flow 1.x records none); deploy the version you want with -F deploy");
    };
    match (options.blue_green, previous.color, state.color) {
        (true, Some(back), Some(live)) if back != live => {}
        (true, None, _) => {
            return refuse("the previous release was made without --blue-green: run the rollback without -b/--blue-green")
        }
        (true, Some(_), _) => {
            return refuse("the previous release is in the live colour itself; deploy the version you want with -F deploy")
        }
        (false, Some(_), _) => {
            return refuse(
                "the previous release was made with --blue-green: add -b/--blue-green",
            )
        }
        (false, None, _) => {}
    }
    let spec = match previous.spec.clone() {
        Some(spec) if !spec.is_intact() => {
            return Err(RegistryError::Corrupt {
                key: format!("the previous release record of {service}"),
                value: spec.digest,
                reason: "the stored spec does not match its digest (edited or truncated); deploy the version you want with -F deploy".into(),
            }
            .into())
        }
        spec => spec,
    };
    let target = options.target.clone();
    let scale = previous.scale.max(1);
    if !options.blue_green {
        let group = Group::new(target, None);
        let (old, leftovers): (Vec<_>, Vec<_>) = orchestrator
            .list(&group)
            .await?
            .into_iter()
            .partition(|i| i.running);
        let Some(spec) = spec else {
            return Err(Cause::NoPreviousSpec {
                service: service.clone(),
                image: previous.image,
            });
        };
        let first = old.iter().map(|i| i.number).max().unwrap_or(0) + 1;
        return Ok(RollbackPlan {
            previous,
            group,
            spec: Some(spec),
            launch: Launch::Create {
                numbers: (first..first + scale).collect(),
            },
            foreign: Vec::new(),
            leftovers,
            old,
            old_color: None,
        });
    }
    let group = Group::new(target.clone(), previous.color);
    let mut kept = Vec::new();
    let mut foreign = Vec::new();
    for instance in orchestrator.list(&group).await? {
        if runs(orchestrator, &instance, spec.as_ref()).await? {
            kept.push(instance);
        } else {
            foreign.push(instance);
        }
    }
    let launch = if kept.is_empty() {
        let Some(_) = &spec else {
            return Err(Cause::NoPreviousSpec {
                service: service.clone(),
                image: previous.image,
            });
        };
        Launch::Create {
            numbers: (1..=scale).collect(),
        }
    } else {
        let (running, stopped) = kept.into_iter().partition(|i| i.running);
        Launch::Reuse { running, stopped }
    };
    let old = match state.color {
        Some(live) => orchestrator
            .list(&Group::new(target, Some(live)))
            .await?
            .into_iter()
            .filter(|i| i.running)
            .collect(),
        None => Vec::new(),
    };
    Ok(RollbackPlan {
        previous,
        group,
        spec,
        launch,
        foreign,
        leftovers: Vec::new(),
        old,
        old_color: state.color,
    })
}

/// Whether `instance` runs `spec`: the spec it carries has the same digest, or (an instance
/// that carries none) its image is the same content. Without a spec to compare to, the
/// instances found are taken as the previous release's: nothing else can say otherwise.
async fn runs(
    orchestrator: &DynOrchestrator,
    instance: &Instance,
    spec: Option<&ReleaseSpec>,
) -> Result<bool, Cause> {
    let Some(spec) = spec else {
        return Ok(true);
    };
    Ok(match orchestrator.recover_spec(instance).await? {
        RecoveredSpec::Exact(found) => found.digest == spec.digest,
        RecoveredSpec::ImageOnly(found) => found.image_id == spec.image_id,
    })
}
