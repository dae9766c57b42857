//! The conformance suite every [`Orchestrator`] backend runs (feature `conformance`).
//!
//! Each `async fn` checks one clause of the [`Orchestrator` contract](crate::orchestrator)
//! against a [`Subject`]: the orchestrator and the names of a target it can run. A backend's
//! tests call [`run_all`], or the functions one by one to see which clause fails:
//!
//! ```no_run
//! # async fn backend_tests() {
//! use flow_core::conformance::orchestrator::{run_all, Subject};
//! let orchestrator = flow_core::memory::MemoryOrchestrator::new()
//!     .with_target("web", "web:v1")
//!     .with_target("db", "db:v1");
//! run_all(&Subject::new(&orchestrator, "web", "db")).await;
//! # }
//! ```
//!
//! # Design
//!
//! * The subject's target must be startable and become healthy (with or without a health
//!   check) within [`HEALTH_DEADLINE`], and its instances must have an address (a service
//!   port). The side target is any other service of the same project.
//! * Every clause starts from an empty group and removes what it started, so the clauses run
//!   in any order against one project; a backend's test gives the suite a project of its own
//!   (a real engine is shared with other tests).
//! * The suite checks what every engine must do alike. What only a backend can arrange (an
//!   unreachable engine, a failing pull, a configuration edited between `prepare` and
//!   `start`) stays in the backend's own tests.

use std::time::{Duration, Instant};

use crate::domain::Color;
use crate::orchestrator::{
    Group, Health, Instance, Orchestrator, OrchestratorError, RecoveredSpec,
};

/// How long the suite waits for an instance to become healthy before failing the clause.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(60);

/// What the suite runs against: an orchestrator and two services it defines.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The backend under test.
    pub orchestrator: &'a dyn Orchestrator,
    /// A target that starts, becomes healthy and has a service port.
    pub target: &'a str,
    /// Another service of the same project, started as a side target.
    pub side_target: &'a str,
}

impl<'a> Subject<'a> {
    /// The subject `target` and `side_target` of `orchestrator`.
    pub fn new(orchestrator: &'a dyn Orchestrator, target: &'a str, side_target: &'a str) -> Self {
        Subject {
            orchestrator,
            target,
            side_target,
        }
    }

    fn group(&self, color: Option<Color>) -> Group {
        Group::new(self.target, color)
    }

    /// Prepares the target and starts instances `numbers` of `group` from its spec.
    async fn start(&self, group: &Group, numbers: &[u32]) -> Vec<Instance> {
        let spec = self
            .orchestrator
            .prepare(self.target)
            .await
            .expect("prepare");
        self.orchestrator
            .start(group, numbers, &spec)
            .await
            .unwrap_or_else(|e| panic!("start: {group} {numbers:?}: {e}"))
    }
}

/// Runs every clause in turn.
pub async fn run_all(subject: &Subject<'_>) {
    unknown_targets_are_named(subject).await;
    describe_and_prepare_agree(subject).await;
    start_runs_the_spec_given(subject).await;
    groups_are_apart(subject).await;
    start_is_all_or_nothing(subject).await;
    started_instances_become_healthy(subject).await;
    stop_keeps_and_resume_restarts_the_same_instances(subject).await;
    stop_and_remove_are_idempotent(subject).await;
    side_targets_start_once(subject).await;
}

/// `describe` and `prepare` of a service the project does not define are `UnknownTarget`,
/// naming it.
pub async fn unknown_targets_are_named(subject: &Subject<'_>) {
    let missing = "conformance-no-such-service";
    for (call, result) in [
        (
            "describe",
            subject.orchestrator.describe(missing).await.map(|_| ()),
        ),
        (
            "prepare",
            subject.orchestrator.prepare(missing).await.map(|_| ()),
        ),
    ] {
        match result {
            Err(OrchestratorError::UnknownTarget { target, .. }) => assert_eq!(
                target, missing,
                "unknown target: {call} must name the service asked for"
            ),
            other => panic!("unknown target: {call} must be UnknownTarget, got {other:?}"),
        }
    }
}

/// `prepare` returns the spec of the target as `describe` reads it: the same image
/// reference and configuration, a content id, and a digest that is the spec's own.
pub async fn describe_and_prepare_agree(subject: &Subject<'_>) {
    let described = subject
        .orchestrator
        .describe(subject.target)
        .await
        .expect("describe: the subject's target is defined");
    let spec = subject
        .orchestrator
        .prepare(subject.target)
        .await
        .expect("prepare: the subject's target is startable");
    assert_eq!(
        spec.image, described.image,
        "prepare: the spec names the image describe reads"
    );
    assert_eq!(
        spec.config, described.config,
        "prepare: the spec holds the configuration describe reads"
    );
    assert!(
        !spec.image_id.is_empty(),
        "prepare: the spec names the image's content id"
    );
    assert!(
        spec.is_intact(),
        "prepare: the spec's digest is the digest of its content"
    );
}

/// `start` returns one running instance per number, sorted, each with an address, running
/// the spec given; `list` returns the same instances; `recover_spec` reads the exact spec
/// back.
pub async fn start_runs_the_spec_given(subject: &Subject<'_>) {
    let orchestrator = subject.orchestrator;
    let group = subject.group(Some(Color::Blue));
    let spec = orchestrator.prepare(subject.target).await.expect("prepare");
    let started = orchestrator
        .start(&group, &[1, 2], &spec)
        .await
        .expect("start: instances 1 and 2 start");
    assert_eq!(
        numbers(&started),
        [1, 2],
        "start: one instance per number, in order"
    );
    for instance in &started {
        assert!(instance.running, "start: {} runs", instance.name);
        assert!(
            instance.address.is_some(),
            "start: {} has an address",
            instance.name
        );
        assert_eq!(
            instance.group, group,
            "start: {} is in its group",
            instance.name
        );
        match orchestrator.recover_spec(instance).await {
            Ok(RecoveredSpec::Exact(read)) => assert_eq!(
                read.digest, spec.digest,
                "recover_spec: {} runs the spec it was started from",
                instance.name
            ),
            other => panic!(
                "recover_spec: {} must carry its exact spec, got {other:?}",
                instance.name
            ),
        }
    }
    let listed = orchestrator.list(&group).await.expect("list");
    assert_eq!(
        ids(&listed),
        ids(&started),
        "list: returns the started instances, sorted by number"
    );
    orchestrator.remove(&started).await.expect("remove");
    assert!(
        orchestrator.list(&group).await.expect("list").is_empty(),
        "remove: the group is empty again"
    );
}

/// The two colours and the uncoloured group of one target hold their own instances.
pub async fn groups_are_apart(subject: &Subject<'_>) {
    let orchestrator = subject.orchestrator;
    let spec = orchestrator.prepare(subject.target).await.expect("prepare");
    let blue = subject.group(Some(Color::Blue));
    let green = subject.group(Some(Color::Green));
    let plain = subject.group(None);
    let mut all = Vec::new();
    for (group, numbers) in [(&blue, &[1][..]), (&green, &[1, 2][..]), (&plain, &[1][..])] {
        all.extend(
            orchestrator
                .start(group, numbers, &spec)
                .await
                .unwrap_or_else(|e| panic!("start: {group} {numbers:?}: {e}")),
        );
    }
    for (group, expected) in [(&blue, 1), (&green, 2), (&plain, 1)] {
        let listed = orchestrator.list(group).await.expect("list");
        assert_eq!(
            listed.len(),
            expected,
            "groups: {group} lists only its own instances: {listed:?}"
        );
        assert!(
            listed.iter().all(|i| &i.group == group),
            "groups: every instance listed for {group} belongs to it"
        );
    }
    orchestrator.remove(&all).await.expect("remove");
}

/// A `start` that cannot start every number (one is taken) fails and leaves nothing it
/// created behind; the instances that existed are untouched.
pub async fn start_is_all_or_nothing(subject: &Subject<'_>) {
    let orchestrator = subject.orchestrator;
    let group = subject.group(Some(Color::Green));
    let spec = orchestrator.prepare(subject.target).await.expect("prepare");
    let existing = orchestrator
        .start(&group, &[2], &spec)
        .await
        .expect("start: instance 2");
    let refused = orchestrator.start(&group, &[1, 2, 3], &spec).await;
    assert!(
        refused.is_err(),
        "start: a number that is taken makes the whole start fail, got {refused:?}"
    );
    let listed = orchestrator.list(&group).await.expect("list");
    assert_eq!(
        ids(&listed),
        ids(&existing),
        "start: a failed start leaves only what existed before it"
    );
    assert!(
        listed.iter().all(|i| i.running),
        "start: a failed start leaves the existing instances running"
    );
    orchestrator.remove(&existing).await.expect("remove");
}

/// A started instance of the subject's target becomes `Healthy` within
/// [`HEALTH_DEADLINE`]; `diagnose` answers for it.
pub async fn started_instances_become_healthy(subject: &Subject<'_>) {
    let orchestrator = subject.orchestrator;
    let group = subject.group(None);
    let started = subject.start(&group, &[1]).await;
    let instance = &started[0];
    wait_healthy(orchestrator, instance).await;
    orchestrator
        .diagnose(instance)
        .await
        .expect("diagnose: answers for a running instance");
    orchestrator.remove(&started).await.expect("remove");
}

/// `stop` keeps the instances (listed, not running, no address); `resume` starts the same
/// instances again (same ids), which become healthy; `resume` of running instances returns
/// them unchanged.
pub async fn stop_keeps_and_resume_restarts_the_same_instances(subject: &Subject<'_>) {
    let orchestrator = subject.orchestrator;
    let group = subject.group(Some(Color::Blue));
    let started = subject.start(&group, &[1, 2]).await;
    orchestrator.stop(&started).await.expect("stop");
    let stopped = orchestrator.list(&group).await.expect("list");
    assert_eq!(ids(&stopped), ids(&started), "stop: keeps the instances");
    assert!(
        stopped.iter().all(|i| !i.running && i.address.is_none()),
        "stop: stopped instances neither run nor have an address: {stopped:?}"
    );
    let resumed = orchestrator.resume(&stopped).await.expect("resume");
    assert_eq!(
        ids(&resumed),
        ids(&started),
        "resume: the same containers, not new ones"
    );
    assert!(
        resumed.iter().all(|i| i.running && i.address.is_some()),
        "resume: resumed instances run and have an address: {resumed:?}"
    );
    for instance in &resumed {
        wait_healthy(orchestrator, instance).await;
    }
    let again = orchestrator
        .resume(&resumed)
        .await
        .expect("resume: of running instances");
    assert_eq!(
        ids(&again),
        ids(&resumed),
        "resume: running instances are returned unchanged"
    );
    orchestrator.remove(&resumed).await.expect("remove");
}

/// Stopping a stopped instance and removing a removed one are not errors.
pub async fn stop_and_remove_are_idempotent(subject: &Subject<'_>) {
    let orchestrator = subject.orchestrator;
    let group = subject.group(Some(Color::Green));
    let started = subject.start(&group, &[1]).await;
    orchestrator.stop(&started).await.expect("stop");
    orchestrator
        .stop(&started)
        .await
        .expect("stop: of a stopped instance is not an error");
    orchestrator.remove(&started).await.expect("remove");
    orchestrator
        .remove(&started)
        .await
        .expect("remove: of a removed instance is not an error");
    orchestrator
        .stop(&started)
        .await
        .expect("stop: of a removed instance is not an error");
    assert!(
        orchestrator.list(&group).await.expect("list").is_empty(),
        "remove: nothing of the group is left"
    );
}

/// `start_side_targets` starts the side target and, called again, leaves it as it is.
pub async fn side_targets_start_once(subject: &Subject<'_>) {
    let orchestrator = subject.orchestrator;
    let side = [subject.side_target.to_string()];
    orchestrator
        .start_side_targets(&side)
        .await
        .expect("start_side_targets: starts an absent side target");
    orchestrator
        .start_side_targets(&side)
        .await
        .expect("start_side_targets: a running side target is left running");
}

async fn wait_healthy(orchestrator: &dyn Orchestrator, instance: &Instance) {
    let deadline = Instant::now() + HEALTH_DEADLINE;
    loop {
        let health = orchestrator.health(instance).await.expect("health");
        match health {
            Health::Healthy => return,
            Health::Exited { .. } | Health::Unhealthy { .. } => {
                panic!(
                    "health: {} must become healthy, got {health:?}",
                    instance.name
                )
            }
            Health::Starting { .. } => {}
        }
        assert!(
            Instant::now() < deadline,
            "health: {} not healthy within {HEALTH_DEADLINE:?}",
            instance.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn numbers(instances: &[Instance]) -> Vec<u32> {
    instances.iter().map(|i| i.number).collect()
}

fn ids(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(|i| i.id.as_str()).collect()
}
