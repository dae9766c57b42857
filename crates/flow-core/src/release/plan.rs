//! `--dry-run`: what an invocation would do, computed from the same state and instance lists
//! the real run reads, changing nothing (no lock is taken).

use std::fmt;

use serde::Serialize;

use crate::domain::{Color, ServiceName};
use crate::orchestrator::{Group, Instance};
use crate::release::reconcile::{self, Recovery};
use crate::release::rollback::{self, Launch};
use crate::release::{Cause, Engine, ReleaseError, Step};

/// One thing an invocation would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum PlannedAction {
    /// Remove instances.
    Remove {
        /// The step doing it.
        step: Step,
        /// Their names.
        instances: Vec<String>,
        /// Why.
        why: String,
    },
    /// Point the proxy back at the stored live colour: it routes to instances an earlier run
    /// started and the stored state does not name live (that run stopped between its switch
    /// and its commit).
    PointBack {
        /// The step doing it.
        step: Step,
        /// The stored live colour.
        color: Option<Color>,
        /// How many of its running servers.
        servers: usize,
        /// The instances the proxy routes to now.
        routed: Vec<String>,
    },
    /// Take the instances the proxy routes to as the live release the run replaces: the
    /// stored live colour runs none (an earlier run stopped between its switch and its
    /// commit). The commit stores them as the release a rollback returns to.
    Adopt {
        /// The step doing it.
        step: Step,
        /// Their colour.
        color: Color,
        /// Their names.
        instances: Vec<String>,
    },
    /// Wait until the proxy reports no session on running instances that are about to be
    /// removed.
    Drain {
        /// The step doing it.
        step: Step,
        /// Their names.
        instances: Vec<String>,
    },
    /// Start new instances and wait for them to be healthy.
    Start {
        /// The step doing it.
        step: Step,
        /// The group they join.
        group: String,
        /// Their numbers.
        numbers: Vec<u32>,
        /// The image they run.
        image: String,
    },
    /// Start stopped instances again (the same containers) and wait for them to be healthy.
    Resume {
        /// The step doing it.
        step: Step,
        /// Their names.
        instances: Vec<String>,
    },
    /// Wait for running instances to be healthy (they are taken as they are).
    CheckHealth {
        /// The step doing it.
        step: Step,
        /// Their names.
        instances: Vec<String>,
    },
    /// Point the proxy at a set of servers.
    SwitchProxy {
        /// The step doing it.
        step: Step,
        /// The colour routed to.
        color: Option<Color>,
        /// How many servers.
        servers: usize,
    },
    /// Store the state.
    Store {
        /// The step doing it.
        step: Step,
        /// The live colour stored.
        color: Option<Color>,
        /// The scale stored.
        scale: u32,
    },
    /// Drain (with a proxy) and stop instances, keeping them.
    Stop {
        /// The step doing it.
        step: Step,
        /// Their names.
        instances: Vec<String>,
    },
    /// The step would do nothing.
    Nothing {
        /// The step.
        step: Step,
        /// Why.
        why: String,
    },
}

impl fmt::Display for PlannedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlannedAction::Remove { step, instances, why } => {
                write!(f, "{step}: remove {} ({why})", instances.join(", "))
            }
            PlannedAction::PointBack { step, color, servers, routed } => write!(
                f,
                "{step}: point the proxy back at {servers} server(s){} (it routes to {}, which the stored state does not name live)",
                color.map(|c| format!(" of {c}")).unwrap_or_default(),
                routed.join(", ")
            ),
            PlannedAction::Adopt { step, color, instances } => write!(
                f,
                "{step}: take {color} as live as the proxy serves it ({}), since the stored live colour runs no instance",
                instances.join(", ")
            ),
            PlannedAction::Drain { step, instances } => write!(
                f,
                "{step}: drain {} (until the proxy reports no session on them)",
                instances.join(", ")
            ),
            PlannedAction::Start { step, group, numbers, image } => write!(
                f,
                "{step}: start {} instance(s) of {group} (numbers {}) from {image}, then wait until healthy",
                numbers.len(),
                numbers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            PlannedAction::Resume { step, instances } => write!(
                f,
                "{step}: start {} again (the same containers), then wait until healthy",
                instances.join(", ")
            ),
            PlannedAction::CheckHealth { step, instances } => write!(
                f,
                "{step}: check that the running {} are healthy",
                instances.join(", ")
            ),
            PlannedAction::SwitchProxy { step, color, servers } => write!(
                f,
                "{step}: point the proxy at {servers} server(s){}",
                color.map(|c| format!(" of {c}")).unwrap_or_default()
            ),
            PlannedAction::Store { step, color, scale } => write!(
                f,
                "{step}: store scale {scale}{}",
                color.map(|c| format!(", colour {c}")).unwrap_or_default()
            ),
            PlannedAction::Stop { step, instances } => {
                write!(f, "{step}: drain and stop (keep) {}", instances.join(", "))
            }
            PlannedAction::Nothing { step, why } => write!(f, "{step}: nothing to do ({why})"),
        }
    }
}

/// What an invocation would do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The service.
    pub service: ServiceName,
    /// The live colour now.
    pub live_color: Option<Color>,
    /// The stored scale now.
    pub stored_scale: Option<u32>,
    /// The actions, in order.
    pub actions: Vec<PlannedAction>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for {} (live colour: {}, stored scale: {}):",
            self.service,
            self.live_color
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into()),
            self.stored_scale
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into())
        )?;
        for (n, action) in self.actions.iter().enumerate() {
            writeln!(f, "  {}. {action}", n + 1)?;
        }
        Ok(())
    }
}

impl Engine {
    /// Computes what [`Engine::run`] would do now, reading state and instance lists only.
    pub async fn plan(&self) -> Result<Plan, ReleaseError> {
        let fail = |cause: Cause| ReleaseError::NothingChanged { step: None, cause };
        let options = &self.options;
        let orchestrator = &self.ports.orchestrator;
        let loaded = self
            .ports
            .registry
            .load(&options.service)
            .await
            .map_err(|e| fail(e.into()))?;
        let state = loaded.value;
        let wanted = options.scale.map(|s| s.apply(state.scale));
        let with_proxy = self.ports.proxy.is_some();
        let list = |group: Group| async move {
            orchestrator.list(&group).await.map_err(|e| fail(e.into()))
        };

        let mut actions = Vec::new();
        let mut live_color = state.color;
        let mut previous_live: Option<Vec<Instance>> = None;
        let mut deployed = false;
        // How many instances a deploy or rollback of this run leaves live.
        let mut released: Option<usize> = None;
        for &step in &options.steps {
            let live_group = Group::new(
                options.target.clone(),
                if options.blue_green { live_color } else { None },
            );
            let nothing_live = options.blue_green && live_color.is_none();
            match step {
                Step::Deploy => {
                    let image = orchestrator
                        .describe(&options.target)
                        .await
                        .map_err(|e| fail(e.into()))?
                        .image;
                    let count = wanted.unwrap_or_else(|| state.scale.unwrap_or(1));
                    let (group, first, old) = loop {
                        let live_group = Group::new(
                            options.target.clone(),
                            if options.blue_green { live_color } else { None },
                        );
                        let (old, stopped): (Vec<Instance>, Vec<Instance>) =
                            if options.blue_green && live_color.is_none() {
                                (Vec::new(), Vec::new())
                            } else {
                                list(live_group.clone())
                                    .await?
                                    .into_iter()
                                    .partition(|i| i.running)
                            };
                        if !options.blue_green {
                            if !stopped.is_empty() {
                                actions.push(PlannedAction::Remove {
                                    step,
                                    instances: names(&stopped),
                                    why: "stopped leftovers".into(),
                                });
                            }
                            let first = old.iter().map(|i| i.number).max().unwrap_or(0) + 1;
                            break (live_group, first, old);
                        }
                        let next = Color::next_after(live_color);
                        let group = Group::new(options.target.clone(), Some(next));
                        let leftovers = list(group.clone()).await?;
                        match self
                            .reconcile(step, &leftovers, live_color, &old, &mut actions)
                            .await?
                        {
                            Some(adopted) => live_color = Some(adopted),
                            None => {
                                push_clear(
                                    &mut actions,
                                    step,
                                    with_proxy,
                                    &leftovers,
                                    "leftovers of an older release",
                                );
                                break (group, 1, old);
                            }
                        }
                    };
                    actions.push(PlannedAction::Start {
                        step,
                        group: group.to_string(),
                        numbers: (first..first + count).collect(),
                        image,
                    });
                    if with_proxy {
                        actions.push(PlannedAction::SwitchProxy {
                            step,
                            color: group.color,
                            servers: count as usize,
                        });
                    }
                    actions.push(PlannedAction::Store {
                        step,
                        color: group.color.or(live_color),
                        scale: count,
                    });
                    if !options.blue_green && !old.is_empty() {
                        actions.push(PlannedAction::Remove {
                            step,
                            instances: names(&old),
                            why: "replaced by the new instances".into(),
                        });
                    }
                    live_color = group.color.or(live_color);
                    previous_live = Some(old);
                    deployed = true;
                    released = Some(count as usize);
                }
                Step::Rollback => {
                    let resolved = rollback::resolve(orchestrator, options, &state)
                        .await
                        .map_err(|cause| ReleaseError::NothingChanged {
                            step: Some(step),
                            cause,
                        })?;
                    let cleared: Vec<Instance> = resolved
                        .foreign
                        .iter()
                        .chain(&resolved.leftovers)
                        .cloned()
                        .collect();
                    // A rollback never adopts (reconcile::inspect refuses it).
                    self.reconcile(
                        step,
                        &cleared,
                        resolved.old_color,
                        &resolved.old,
                        &mut actions,
                    )
                    .await?;
                    push_clear(
                        &mut actions,
                        step,
                        with_proxy,
                        &cleared,
                        "leftovers that do not run the previous release",
                    );
                    let count = resolved.launch.count();
                    match resolved.launch {
                        Launch::Create { numbers } => actions.push(PlannedAction::Start {
                            step,
                            group: resolved.group.to_string(),
                            numbers,
                            image: resolved.previous.image.clone(),
                        }),
                        Launch::Reuse { running, stopped } => {
                            if !stopped.is_empty() {
                                actions.push(PlannedAction::Resume {
                                    step,
                                    instances: names(&stopped),
                                });
                            }
                            if !running.is_empty() {
                                actions.push(PlannedAction::CheckHealth {
                                    step,
                                    instances: names(&running),
                                });
                            }
                        }
                    }
                    if with_proxy {
                        actions.push(PlannedAction::SwitchProxy {
                            step,
                            color: resolved.group.color,
                            servers: count,
                        });
                    }
                    actions.push(PlannedAction::Store {
                        step,
                        color: resolved.group.color.or(live_color),
                        scale: count as u32,
                    });
                    if !options.blue_green && !resolved.old.is_empty() {
                        actions.push(PlannedAction::Remove {
                            step,
                            instances: names(&resolved.old),
                            why: "replaced by the previous release".into(),
                        });
                    }
                    live_color = resolved.group.color.or(live_color);
                    previous_live = Some(resolved.old);
                    released = Some(count);
                }
                Step::Scale => {
                    let wanted = wanted.unwrap_or(1);
                    if deployed {
                        actions.push(PlannedAction::Nothing {
                            step,
                            why: "the deploy applies --scale".into(),
                        });
                    } else if nothing_live {
                        actions.push(PlannedAction::Nothing {
                            step,
                            why: "nothing is live yet: this step would fail".into(),
                        });
                    } else {
                        let all = list(live_group.clone()).await?;
                        let live = running(all.clone());
                        let current = live.len() as u32;
                        if wanted > current {
                            let first = all.iter().map(|i| i.number).max().unwrap_or(0) + 1;
                            actions.push(PlannedAction::Start {
                                step,
                                group: live_group.to_string(),
                                numbers: (first..first + wanted - current).collect(),
                                // Scaling starts what the live instances run.
                                image: match live.first() {
                                    Some(instance) => instance.image.clone(),
                                    None => {
                                        orchestrator
                                            .describe(&options.target)
                                            .await
                                            .map_err(|e| fail(e.into()))?
                                            .image
                                    }
                                },
                            });
                        }
                        if wanted != current && with_proxy {
                            actions.push(PlannedAction::SwitchProxy {
                                step,
                                color: live_group.color,
                                servers: wanted as usize,
                            });
                        }
                        actions.push(PlannedAction::Store {
                            step,
                            color: live_color,
                            scale: wanted,
                        });
                        if wanted < current {
                            let mut victims = live;
                            victims.sort_by_key(|i| std::cmp::Reverse(i.number));
                            victims.truncate((current - wanted) as usize);
                            actions.push(PlannedAction::Remove {
                                step,
                                instances: names(&victims),
                                why: "highest numbers go first".into(),
                            });
                        }
                    }
                }
                Step::StopOld => {
                    let old = match (&previous_live, live_color) {
                        (Some(previous), _) => previous.clone(),
                        (None, Some(color)) => running(
                            list(Group::new(options.target.clone(), Some(color.other()))).await?,
                        ),
                        (None, None) => Vec::new(),
                    };
                    if old.is_empty() {
                        actions.push(PlannedAction::Nothing {
                            step,
                            why: "no old instance is running".into(),
                        });
                    } else {
                        actions.push(PlannedAction::Stop {
                            step,
                            instances: names(&old),
                        });
                    }
                }
                Step::Proxy => {
                    if nothing_live {
                        actions.push(PlannedAction::Nothing {
                            step,
                            why: "nothing is live yet: this step would fail".into(),
                        });
                    } else {
                        let servers = if let Some(count) = released {
                            count
                        } else {
                            running(list(live_group.clone()).await?).len()
                        };
                        actions.push(PlannedAction::SwitchProxy {
                            step,
                            color: live_group.color,
                            servers,
                        });
                    }
                }
            }
        }
        Ok(Plan {
            service: options.service.clone(),
            live_color: state.color,
            stored_scale: state.scale,
            actions,
        })
    }
}

impl Engine {
    /// Plans what [`reconcile::inspect`] asks for before `leftovers` are cleared: a switch
    /// back (pushed onto `actions`; `None` returned), or an adoption, whose colour is
    /// returned so that the caller plans again from the state naming it live.
    async fn reconcile(
        &self,
        step: Step,
        leftovers: &[Instance],
        live_color: Option<Color>,
        live: &[Instance],
        actions: &mut Vec<PlannedAction>,
    ) -> Result<Option<Color>, ReleaseError> {
        let found = reconcile::inspect(
            self.ports.proxy.as_ref(),
            step,
            &self.options.service,
            leftovers,
            live_color,
            live,
        )
        .await
        .map_err(|cause| ReleaseError::NothingChanged {
            step: Some(step),
            cause,
        })?;
        match found.recovery {
            Recovery::Nothing => Ok(None),
            Recovery::SwitchBack { color, to } => {
                actions.push(PlannedAction::PointBack {
                    step,
                    color,
                    servers: to.len(),
                    routed: names(&found.routed),
                });
                Ok(None)
            }
            Recovery::Adopt { color, instances } => {
                actions.push(PlannedAction::Adopt {
                    step,
                    color,
                    instances: names(&instances),
                });
                Ok(Some(color))
            }
        }
    }
}

/// Plans the removal of `leftovers`, the running ones drained first when a proxy is set.
fn push_clear(
    actions: &mut Vec<PlannedAction>,
    step: Step,
    with_proxy: bool,
    leftovers: &[Instance],
    why: &str,
) {
    let running: Vec<Instance> = leftovers.iter().filter(|i| i.running).cloned().collect();
    if with_proxy && !running.is_empty() {
        actions.push(PlannedAction::Drain {
            step,
            instances: names(&running),
        });
    }
    if !leftovers.is_empty() {
        actions.push(PlannedAction::Remove {
            step,
            instances: names(leftovers),
            why: why.into(),
        });
    }
}

fn running(instances: Vec<Instance>) -> Vec<Instance> {
    instances.into_iter().filter(|i| i.running).collect()
}

fn names(instances: &[Instance]) -> Vec<String> {
    instances.iter().map(|i| i.name.clone()).collect()
}
