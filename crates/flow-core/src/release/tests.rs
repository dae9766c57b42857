//! The engine against mockall mocks of the three ports: the order of operations and every
//! failure branch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mockall::predicate::{always, eq};
use mockall::Sequence;

use crate::domain::{
    Color, ReleaseSpec, ReleaseState, Revision, ScaleSpec, ServiceName, Versioned,
};
use crate::mocks::{MockOrchestrator, MockProxy, MockRegistry};
use crate::orchestrator::{Diagnosis, Group, Health, Instance, OrchestratorError, TargetInfo};
use crate::proxy::{PathType, ProxyError};
use crate::registry::{Lease, RegistryError};
use crate::release::{
    Cause, Engine, Event, PlannedAction, Ports, ReleaseError, ReleaseOptions, RouteSettings, Step,
    Timeouts,
};

const TARGET: &str = "app";

fn service() -> ServiceName {
    ServiceName::new("demo-app").unwrap()
}

fn options(steps: &[Step], blue_green: bool, scale: Option<ScaleSpec>) -> ReleaseOptions {
    ReleaseOptions {
        service: service(),
        target: TARGET.into(),
        side_targets: Vec::new(),
        blue_green,
        steps: steps.to_vec(),
        scale,
        route: Some(RouteSettings {
            paths: vec!["/".into()],
            domain: None,
            path_type: PathType::Prefix,
        }),
        timeouts: Timeouts {
            health: Duration::from_secs(5),
            health_poll: Duration::from_millis(100),
            drain: Duration::from_secs(2),
            drain_poll: Duration::from_millis(100),
            lock_ttl: Duration::from_secs(30),
        },
        health_fail_fast: false,
        holder: "test holder".into(),
    }
}

fn instance(color: Option<Color>, number: u32, running: bool) -> Instance {
    let group = Group::new(TARGET, color);
    let octet = match color {
        Some(Color::Blue) => 10,
        Some(Color::Green) => 20,
        None => 30,
    };
    Instance {
        id: format!("id-{group}-{number}"),
        name: format!("demo-{group}-{number}"),
        group,
        number,
        running,
        address: Some(SocketAddr::from(([10, 0, octet, number as u8], 8080))),
        image: "demo:v2".into(),
    }
}

fn addrs(instances: &[Instance]) -> Vec<SocketAddr> {
    instances.iter().map(|i| i.address.unwrap()).collect()
}

fn state(color: Option<Color>, scale: Option<u32>) -> ReleaseState {
    ReleaseState {
        color,
        scale,
        last_release: None,
        previous_release: None,
    }
}

/// The spec `demo:v2` resolves to.
fn spec() -> ReleaseSpec {
    ReleaseSpec::new("demo:v2", "sha256:demo-v2", BTreeMap::new())
}

fn lease() -> Lease {
    Lease {
        service: service(),
        holder: "test holder".into(),
        token: "t".into(),
        acquired_at: SystemTime::now(),
        ttl: Duration::from_secs(30),
    }
}

/// A registry that grants the lock, holds `initial` at revision 7, and expects the unlock.
fn registry(seq: &mut Sequence, initial: ReleaseState) -> MockRegistry {
    let mut registry = MockRegistry::new();
    registry
        .expect_lock()
        .times(1)
        .in_sequence(seq)
        .returning(|_, _, _| Ok(lease()));
    registry
        .expect_load()
        .times(1)
        .in_sequence(seq)
        .returning(move |_| {
            Ok(Versioned {
                value: initial.clone(),
                revision: Revision(7),
            })
        });
    registry.expect_renew().returning(|_| Ok(()));
    registry.expect_register().returning(|_| Ok(()));
    registry.expect_deregister().returning(|_| Ok(()));
    registry
}

fn expect_unlock(registry: &mut MockRegistry, seq: &mut Sequence) {
    registry
        .expect_unlock()
        .times(1)
        .in_sequence(seq)
        .returning(|_| Ok(()));
}

fn engine(
    orchestrator: MockOrchestrator,
    registry: MockRegistry,
    proxy: Option<MockProxy>,
    options: ReleaseOptions,
) -> Engine {
    Engine::new(
        Ports {
            orchestrator: Arc::new(orchestrator),
            registry: Arc::new(registry),
            proxy: proxy.map(|p| Arc::new(p) as _),
        },
        options,
    )
    .expect("valid options")
}

fn ignore(_: &Event) {}

/// Expects the Preparing phase of a blue-green deploy into `next` with `live` running.
fn expect_prepare_bg(
    orchestrator: &mut MockOrchestrator,
    seq: &mut Sequence,
    next: Color,
    live: Option<(Color, Vec<Instance>)>,
    leftovers: Vec<Instance>,
) {
    orchestrator
        .expect_describe()
        .with(eq(TARGET))
        .times(1)
        .in_sequence(seq)
        .returning(|_| {
            Ok(TargetInfo {
                image: "demo:v2".into(),
                ..TargetInfo::default()
            })
        });
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(next))))
        .times(1)
        .in_sequence(seq)
        .returning(move |_| Ok(leftovers.clone()));
    if let Some((color, instances)) = live {
        orchestrator
            .expect_list()
            .with(eq(Group::new(TARGET, Some(color))))
            .times(1)
            .in_sequence(seq)
            .returning(move |_| Ok(instances.clone()));
    }
    orchestrator
        .expect_prepare()
        .times(1)
        .in_sequence(seq)
        .returning(|_| Ok(spec()));
}

fn expect_start(
    orchestrator: &mut MockOrchestrator,
    seq: &mut Sequence,
    color: Option<Color>,
    numbers: Vec<u32>,
) -> Vec<Instance> {
    let started: Vec<Instance> = numbers.iter().map(|n| instance(color, *n, true)).collect();
    let answer = started.clone();
    orchestrator
        .expect_start()
        .with(eq(Group::new(TARGET, color)), eq(numbers), eq(spec()))
        .times(1)
        .in_sequence(seq)
        .returning(move |_, _, _| Ok(answer.clone()));
    started
}

/// Expects a scale to read the live spec back from the first live instance (the stored
/// state has none) and to compare it with what the Compose file resolves to now.
fn expect_live_spec(orchestrator: &mut MockOrchestrator, seq: &mut Sequence) {
    orchestrator
        .expect_recover_spec()
        .times(1)
        .in_sequence(seq)
        .returning(|_| Ok(crate::orchestrator::RecoveredSpec::Exact(spec())));
    orchestrator
        .expect_describe()
        .times(1)
        .in_sequence(seq)
        .returning(|_| {
            Ok(TargetInfo {
                image: "demo:v2".into(),
                ..TargetInfo::default()
            })
        });
}

fn expect_healthy(orchestrator: &mut MockOrchestrator, seq: &mut Sequence, count: usize) {
    orchestrator
        .expect_health()
        .times(count)
        .in_sequence(seq)
        .returning(|_| Ok(Health::Healthy));
}

#[tokio::test]
async fn first_blue_green_deploy_goes_blue_in_the_guaranteed_order() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, ReleaseState::default());
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    expect_prepare_bg(&mut orchestrator, &mut seq, Color::Blue, None, vec![]);
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![1]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    let servers = addrs(&started);
    proxy
        .expect_reconfigure()
        .withf(move |route, s| route.color == Some(Color::Blue) && s == servers.as_slice())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    registry
        .expect_store()
        .withf(|_, state, expected| {
            state.color == Some(Color::Blue)
                && state.scale == Some(1)
                && state.last_release.as_ref().map(|r| r.image.as_str()) == Some("demo:v2")
                && *expected == Revision(7)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    expect_unlock(&mut registry, &mut seq);

    let report = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .expect("deploy succeeds");
    assert_eq!(report.live_color, Some(Color::Blue));
    assert_eq!(report.scale, Some(1));
    let phases: Vec<&str> = report.timings.iter().map(|t| t.phase.as_str()).collect();
    assert_eq!(
        phases,
        ["lock", "prepare", "start", "healthy", "switch", "commit"]
    );
}

#[tokio::test]
async fn second_deploy_goes_to_the_other_colour_removes_leftovers_and_keeps_the_old_running() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(2)));
    let mut orchestrator = MockOrchestrator::new();
    let live = vec![
        instance(Some(Color::Blue), 1, true),
        instance(Some(Color::Blue), 2, true),
    ];
    let leftovers = vec![instance(Some(Color::Green), 1, false)];
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Green,
        Some((Color::Blue, live)),
        leftovers.clone(),
    );
    orchestrator
        .expect_remove()
        .with(eq(leftovers.clone()))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_start(&mut orchestrator, &mut seq, Some(Color::Green), vec![1, 2]);
    expect_healthy(&mut orchestrator, &mut seq, 2);
    registry
        .expect_store()
        .withf(|_, state, _| state.color == Some(Color::Green) && state.scale == Some(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    expect_unlock(&mut registry, &mut seq);
    orchestrator.expect_stop().never();

    let report = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap();
    assert_eq!(report.live_color, Some(Color::Green));
    assert!(
        report.summaries[0]
            .1
            .contains("2 instance(s) of blue still running"),
        "{:?}",
        report.summaries
    );
}

#[tokio::test]
async fn unhealthy_instance_aborts_removes_what_was_started_and_stores_nothing() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Green,
        Some((Color::Blue, vec![instance(Some(Color::Blue), 1, true)])),
        vec![],
    );
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Green), vec![1]);
    orchestrator
        .expect_health()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Ok(Health::Unhealthy {
                detail: "HTTP 500".into(),
            })
        });
    orchestrator
        .expect_diagnose()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Ok(Diagnosis {
                last_health_output: Some("HTTP 500".into()),
                log_tail: "boom\n".into(),
            })
        });
    orchestrator
        .expect_remove()
        .with(eq(started))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_unlock(&mut registry, &mut seq);
    registry.expect_store().never();
    proxy.expect_reconfigure().never();

    let error = engine(
        orchestrator,
        registry,
        Some(proxy),
        ReleaseOptions {
            health_fail_fast: true,
            ..options(&[Step::Deploy], true, None)
        },
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(
        matches!(&error, ReleaseError::Aborted { step: Step::Deploy, cause: Cause::Unhealthy { .. }, cleanup_failures, .. } if cleanup_failures.is_empty()),
        "{error:?}"
    );
    assert!(
        matches!(&error, ReleaseError::Aborted { cleanup_failures, .. } if cleanup_failures.is_empty())
    );
    let text = error.to_string();
    assert!(
        text.contains("demo-app-green-1") && text.contains("HTTP 500") && text.contains("boom"),
        "{text}"
    );
}

#[tokio::test]
async fn exited_instance_aborts_too() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, ReleaseState::default());
    let mut orchestrator = MockOrchestrator::new();
    expect_prepare_bg(&mut orchestrator, &mut seq, Color::Blue, None, vec![]);
    expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![1]);
    orchestrator
        .expect_health()
        .returning(|_| Ok(Health::Exited { code: 3 }));
    orchestrator
        .expect_diagnose()
        .returning(|_| Ok(Diagnosis::default()));
    orchestrator.expect_remove().times(1).returning(|_| Ok(()));
    registry.expect_store().never();
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(error.to_string().contains("exited with code 3"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn health_timeout_aborts_and_names_the_slow_instances() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, ReleaseState::default());
    let mut orchestrator = MockOrchestrator::new();
    expect_prepare_bg(&mut orchestrator, &mut seq, Color::Blue, None, vec![]);
    expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![1, 2]);
    // Instance 1 is healthy at once; instance 2 never gets there.
    orchestrator.expect_health().returning(|i| {
        Ok(if i.number == 1 {
            Health::Healthy
        } else {
            Health::Starting {
                detail: Some("connection refused".into()),
            }
        })
    });
    orchestrator
        .expect_diagnose()
        .times(1)
        .returning(|_| Ok(Diagnosis::default()));
    orchestrator.expect_remove().times(1).returning(|_| Ok(()));
    registry.expect_store().never();
    expect_unlock(&mut registry, &mut seq);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let observer = move |e: &Event| sink.lock().unwrap().push(e.clone());
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, Some(ScaleSpec::Absolute(2))),
    )
    .run(&observer)
    .await
    .unwrap_err();
    match &error {
        ReleaseError::Aborted {
            cause: Cause::HealthTimeout { instances, .. },
            ..
        } => {
            assert_eq!(instances, &vec!["demo-app-blue-2".to_string()])
        }
        other => panic!("expected a health timeout, got {other:?}"),
    }
    let progress = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::WaitingHealthy {
                    healthy: 1,
                    total: 2,
                    ..
                }
            )
        })
        .count();
    assert!(
        progress > 10,
        "progress is reported on every poll ({progress})"
    );
}

#[tokio::test]
async fn failed_proxy_switch_aborts_before_commit_and_the_old_colour_keeps_serving() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Green,
        Some((Color::Blue, vec![instance(Some(Color::Blue), 1, true)])),
        vec![],
    );
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Green), vec![1]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    proxy
        .expect_reconfigure()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            Err(ProxyError::Unreachable {
                address: "127.0.0.1:8080".into(),
                source: "connection refused".into(),
            })
        });
    orchestrator
        .expect_remove()
        .with(eq(started))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_unlock(&mut registry, &mut seq);
    registry.expect_store().never();
    proxy.expect_remove().never();
    let error = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(
        matches!(error, ReleaseError::Aborted { cause: Cause::Proxy(_), ref cleanup_failures, .. } if cleanup_failures.is_empty())
    );
}

#[tokio::test]
async fn commit_conflict_after_the_switch_points_the_proxy_back_and_removes_the_new_colour() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    let live = vec![instance(Some(Color::Blue), 1, true)];
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Green,
        Some((Color::Blue, live.clone())),
        vec![],
    );
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Green), vec![1]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    let new_servers = addrs(&started);
    proxy
        .expect_reconfigure()
        .withf(move |r, s| r.color == Some(Color::Green) && s == new_servers.as_slice())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    registry
        .expect_store()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|service, _, _| {
            Err(RegistryError::Conflict {
                service: service.clone(),
            })
        });
    let old_servers = addrs(&live);
    proxy
        .expect_reconfigure()
        .withf(move |r, s| r.color == Some(Color::Blue) && s == old_servers.as_slice())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    orchestrator
        .expect_remove()
        .with(eq(started))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            ReleaseError::Aborted {
                cause: Cause::Registry(RegistryError::Conflict { .. }),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_rollback_that_cannot_remove_says_what_to_fix_by_hand() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, ReleaseState::default());
    let mut orchestrator = MockOrchestrator::new();
    expect_prepare_bg(&mut orchestrator, &mut seq, Color::Blue, None, vec![]);
    expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![1]);
    orchestrator.expect_health().returning(|_| {
        Ok(Health::Unhealthy {
            detail: "no".into(),
        })
    });
    orchestrator
        .expect_diagnose()
        .returning(|_| Ok(Diagnosis::default()));
    orchestrator.expect_remove().returning(|_| {
        Err(OrchestratorError::Engine {
            operation: "remove".into(),
            message: "daemon gone".into(),
        })
    });
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(
        matches!(&error, ReleaseError::Aborted { cleanup_failures, .. } if !cleanup_failures.is_empty())
    );
    assert!(
        error.to_string().contains("INCOMPLETELY") && error.to_string().contains("daemon gone"),
        "{error}"
    );
}

#[tokio::test]
async fn failed_start_or_prepare_changes_nothing() {
    for fail_in_prepare in [true, false] {
        let mut seq = Sequence::new();
        let mut registry = registry(&mut seq, ReleaseState::default());
        let mut orchestrator = MockOrchestrator::new();
        orchestrator.expect_describe().returning(|_| {
            Ok(TargetInfo {
                image: "demo:v2".into(),
                ..TargetInfo::default()
            })
        });
        orchestrator.expect_list().returning(|_| Ok(vec![]));
        orchestrator.expect_prepare().returning(move |_| {
            if fail_in_prepare {
                Err(OrchestratorError::Image {
                    image: "demo:v2".into(),
                    message: "not found".into(),
                })
            } else {
                Ok(spec())
            }
        });
        orchestrator.expect_start().returning(|_, _, _| {
            Err(OrchestratorError::Instance {
                operation: "create",
                instance: "demo-app-blue-1".into(),
                message: "name in use".into(),
            })
        });
        orchestrator.expect_remove().never();
        registry.expect_store().never();
        expect_unlock(&mut registry, &mut seq);
        let error = engine(
            orchestrator,
            registry,
            None,
            options(&[Step::Deploy], true, None),
        )
        .run(&ignore)
        .await
        .unwrap_err();
        assert!(
            matches!(
                error,
                ReleaseError::NothingChanged {
                    step: Some(Step::Deploy),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().ends_with("nothing was changed"));
    }
}

#[tokio::test]
async fn a_held_lock_refuses_before_anything_is_read_and_names_the_holder() {
    let mut registry = MockRegistry::new();
    registry.expect_lock().returning(|service, _, _| {
        Err(RegistryError::Locked {
            service: service.clone(),
            holder: "docker-flow pid 42 on host-a".into(),
            since: SystemTime::now(),
        })
    });
    registry.expect_load().never();
    registry.expect_unlock().never();
    let mut orchestrator = MockOrchestrator::new();
    orchestrator.expect_describe().never();
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(matches!(
        error,
        ReleaseError::NothingChanged { step: None, .. }
    ));
    assert!(
        error.to_string().contains("docker-flow pid 42 on host-a"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_registry_changes_nothing_and_still_unlocks() {
    let mut seq = Sequence::new();
    let mut registry = MockRegistry::new();
    registry
        .expect_lock()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(lease()));
    registry
        .expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Err(RegistryError::Unavailable {
                address: "http://127.0.0.1:8500".into(),
                source: "refused".into(),
            })
        });
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        MockOrchestrator::new(),
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(error.to_string().contains("127.0.0.1:8500"));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_the_release_before_it_starts_anything() {
    let mut registry = MockRegistry::new();
    registry.expect_lock().returning(|_, _, _| {
        Ok(Lease {
            ttl: Duration::from_millis(300),
            ..lease()
        })
    });
    registry.expect_load().returning(|_| {
        Ok(Versioned {
            value: ReleaseState::default(),
            revision: Revision::NONE,
        })
    });
    registry.expect_renew().returning(|l| {
        Err(RegistryError::LeaseLost {
            service: l.service.clone(),
        })
    });
    registry.expect_unlock().returning(|_| Ok(()));
    registry.expect_deregister().returning(|_| Ok(()));
    registry.expect_store().never();
    let mut orchestrator = MockOrchestrator::new();
    orchestrator.expect_describe().returning(|_| {
        Ok(TargetInfo {
            image: "demo:v2".into(),
            ..TargetInfo::default()
        })
    });
    orchestrator.expect_list().returning(|_| Ok(vec![]));
    // The pull takes long enough for a renewal to fail meanwhile.
    orchestrator.expect_prepare().returning(|_| {
        std::thread::sleep(Duration::from_millis(1));
        Ok(spec())
    });
    orchestrator
        .expect_start()
        .returning(|_, _, _| Ok(vec![instance(Some(Color::Blue), 1, true)]));
    orchestrator
        .expect_health()
        .returning(|_| Ok(Health::Starting { detail: None }));
    orchestrator.expect_remove().times(1).returning(|_| Ok(()));
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            ReleaseError::Aborted {
                cause: Cause::Registry(RegistryError::LeaseLost { .. }),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn relative_scale_up_starts_the_missing_numbers_and_stores_the_count() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    let live = vec![instance(Some(Color::Blue), 1, true)];
    let listed = live.clone();
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Blue))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Ok(listed.clone()));
    expect_live_spec(&mut orchestrator, &mut seq);
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![2, 3]);
    expect_healthy(&mut orchestrator, &mut seq, 2);
    let all: Vec<SocketAddr> = addrs(&live).into_iter().chain(addrs(&started)).collect();
    proxy
        .expect_reconfigure()
        .withf(move |r, s| r.color == Some(Color::Blue) && s == all.as_slice())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    registry
        .expect_store()
        .withf(|_, s, _| s.scale == Some(3) && s.color == Some(Color::Blue))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    expect_unlock(&mut registry, &mut seq);
    let report = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Scale], true, Some(ScaleSpec::Relative(2))),
    )
    .run(&ignore)
    .await
    .unwrap();
    assert_eq!(report.scale, Some(3));
}

#[tokio::test]
async fn scale_down_never_goes_below_one_and_removes_the_highest_numbers_after_draining() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(3)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    let live: Vec<Instance> = (1..=3)
        .map(|n| instance(Some(Color::Blue), n, true))
        .collect();
    let listed = live.clone();
    orchestrator
        .expect_list()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Ok(listed.clone()));
    let keep = addrs(&live[..1]);
    proxy
        .expect_reconfigure()
        .withf(move |_, s| s == keep.as_slice())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    registry
        .expect_store()
        .withf(|_, s, _| s.scale == Some(1))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    let victims = addrs(&[live[2].clone(), live[1].clone()]);
    let mut polls = 0;
    proxy
        .expect_sessions()
        .withf(move |_, s| s == victims.as_slice())
        .times(2)
        .in_sequence(&mut seq)
        .returning(move |_, _| {
            polls += 1;
            Ok(if polls == 1 { 4 } else { 0 })
        });
    orchestrator
        .expect_remove()
        .with(eq(vec![live[2].clone(), live[1].clone()]))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_unlock(&mut registry, &mut seq);
    let report = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Scale], true, Some(ScaleSpec::Relative(-10))),
    )
    .run(&ignore)
    .await
    .unwrap();
    assert_eq!(report.scale, Some(1));
    assert!(report.timings.iter().any(|t| t.phase.as_str() == "drain"));
}

#[tokio::test]
async fn relative_scale_is_applied_once_when_scale_runs_before_deploy() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    // scale: 1 running → 3
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Blue))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(vec![instance(Some(Color::Blue), 1, true)]));
    expect_live_spec(&mut orchestrator, &mut seq);
    expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![2, 3]);
    expect_healthy(&mut orchestrator, &mut seq, 2);
    registry
        .expect_store()
        .withf(|_, s, e| s.scale == Some(3) && *e == Revision(7))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    // deploy: into green with the same 3, not 5.
    let live: Vec<Instance> = (1..=3)
        .map(|n| instance(Some(Color::Blue), n, true))
        .collect();
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Green,
        Some((Color::Blue, live)),
        vec![],
    );
    expect_start(
        &mut orchestrator,
        &mut seq,
        Some(Color::Green),
        vec![1, 2, 3],
    );
    expect_healthy(&mut orchestrator, &mut seq, 3);
    registry
        .expect_store()
        .withf(|_, s, e| s.scale == Some(3) && s.color == Some(Color::Green) && *e == Revision(8))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(9)));
    expect_unlock(&mut registry, &mut seq);
    let report = engine(
        orchestrator,
        registry,
        None,
        options(
            &[Step::Scale, Step::Deploy],
            true,
            Some(ScaleSpec::Relative(2)),
        ),
    )
    .run(&ignore)
    .await
    .unwrap();
    assert_eq!(report.scale, Some(3));
}

#[tokio::test]
async fn scale_after_deploy_is_a_no_op() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, ReleaseState::default());
    let mut orchestrator = MockOrchestrator::new();
    expect_prepare_bg(&mut orchestrator, &mut seq, Color::Blue, None, vec![]);
    expect_start(
        &mut orchestrator,
        &mut seq,
        Some(Color::Blue),
        vec![1, 2, 3],
    );
    expect_healthy(&mut orchestrator, &mut seq, 3);
    registry
        .expect_store()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    expect_unlock(&mut registry, &mut seq);
    let report = engine(
        orchestrator,
        registry,
        None,
        options(
            &[Step::Deploy, Step::Scale],
            true,
            Some(ScaleSpec::Relative(2)),
        ),
    )
    .run(&ignore)
    .await
    .unwrap();
    assert!(
        report.summaries[1].1.contains("already at 3"),
        "{:?}",
        report.summaries
    );
}

#[tokio::test]
async fn deploy_then_proxy_then_stop_old_sends_the_new_colour_and_drains_before_stopping() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Green), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    let old = vec![instance(Some(Color::Green), 1, true)];
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Blue,
        Some((Color::Green, old.clone())),
        vec![],
    );
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![1]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    proxy
        .expect_reconfigure()
        .withf(|r, _| r.color == Some(Color::Blue))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    registry
        .expect_store()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    // proxy step: the live colour is now blue.
    let listed = started.clone();
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Blue))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Ok(listed.clone()));
    proxy
        .expect_reconfigure()
        .withf(|r, _| r.color == Some(Color::Blue))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    // stop-old: green drained, then stopped (kept).
    let listed = old.clone();
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Green))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Ok(listed.clone()));
    proxy
        .expect_sessions()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(0));
    orchestrator
        .expect_stop()
        .with(eq(old))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_unlock(&mut registry, &mut seq);
    orchestrator.expect_remove().never();
    engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Deploy, Step::Proxy, Step::StopOld], true, None),
    )
    .run(&ignore)
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn stop_old_stops_anyway_when_the_drain_times_out_and_says_so() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Green))))
        .returning(|_| Ok(vec![instance(Some(Color::Green), 1, true)]));
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Blue))))
        .returning(|_| Ok(vec![instance(Some(Color::Blue), 1, true)]));
    proxy.expect_reconfigure().times(1).returning(|_, _| Ok(()));
    proxy.expect_sessions().returning(|_, _| Ok(2));
    orchestrator.expect_stop().times(1).returning(|_| Ok(()));
    expect_unlock(&mut registry, &mut seq);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let observer = move |e: &Event| sink.lock().unwrap().push(e.clone());
    engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::StopOld], true, None),
    )
    .run(&observer)
    .await
    .unwrap();
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Notice { message } if message.contains("stopping anyway"))));
}

#[tokio::test]
async fn deploy_without_blue_green_numbers_new_instances_after_the_old_and_removes_the_old_after_commit(
) {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(None, Some(2)));
    let mut orchestrator = MockOrchestrator::new();
    let old = vec![instance(None, 1, true), instance(None, 2, true)];
    let stale = instance(None, 5, false);
    orchestrator
        .expect_describe()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Ok(TargetInfo {
                image: "demo:v2".into(),
                ..TargetInfo::default()
            })
        });
    let mut listed = old.clone();
    listed.push(stale.clone());
    orchestrator
        .expect_list()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Ok(listed.clone()));
    orchestrator
        .expect_prepare()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(spec()));
    orchestrator
        .expect_remove()
        .with(eq(vec![stale]))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_start(&mut orchestrator, &mut seq, None, vec![3, 4]);
    expect_healthy(&mut orchestrator, &mut seq, 2);
    registry
        .expect_store()
        .withf(|_, s, _| s.color.is_none() && s.scale == Some(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    orchestrator
        .expect_remove()
        .with(eq(old))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    expect_unlock(&mut registry, &mut seq);
    engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], false, None),
    )
    .run(&ignore)
    .await
    .unwrap();
}

#[tokio::test]
async fn steps_needing_a_live_release_refuse_when_there_is_none() {
    for step in [Step::Scale, Step::StopOld, Step::Proxy] {
        let mut seq = Sequence::new();
        let mut registry = registry(&mut seq, ReleaseState::default());
        expect_unlock(&mut registry, &mut seq);
        registry.expect_store().never();
        let proxy = MockProxy::new();
        let error = engine(
            MockOrchestrator::new(),
            registry,
            Some(proxy),
            options(&[step], true, Some(ScaleSpec::Relative(1))),
        )
        .run(&ignore)
        .await
        .unwrap_err();
        assert!(
            matches!(
                error,
                ReleaseError::NothingChanged {
                    cause: Cause::NothingLive { .. },
                    ..
                }
            ),
            "{step}: {error:?}"
        );
    }
}

#[tokio::test]
async fn failed_scale_up_switch_removes_the_new_instances() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    orchestrator
        .expect_list()
        .returning(|_| Ok(vec![instance(Some(Color::Blue), 1, true)]));
    expect_live_spec(&mut orchestrator, &mut seq);
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![2]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    proxy.expect_reconfigure().times(1).returning(|r, s| {
        Err(ProxyError::NotUp {
            service: r.service.clone(),
            servers: s.to_vec(),
        })
    });
    orchestrator
        .expect_remove()
        .with(eq(started))
        .times(1)
        .returning(|_| Ok(()));
    registry.expect_store().never();
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Scale], true, Some(ScaleSpec::Relative(1))),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(matches!(
        error,
        ReleaseError::Aborted {
            step: Step::Scale,
            cause: Cause::Proxy(ProxyError::NotUp { .. }),
            ..
        }
    ));
}

#[tokio::test]
async fn failed_scale_down_commit_restores_the_proxy_and_removes_nothing() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(2)));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    let live: Vec<Instance> = (1..=2)
        .map(|n| instance(Some(Color::Blue), n, true))
        .collect();
    let listed = live.clone();
    orchestrator
        .expect_list()
        .returning(move |_| Ok(listed.clone()));
    proxy
        .expect_reconfigure()
        .withf(|_, s| s.len() == 1)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    registry
        .expect_store()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|s, _, _| Err(RegistryError::Conflict { service: s.clone() }));
    proxy
        .expect_reconfigure()
        .withf(|_, s| s.len() == 2)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    orchestrator.expect_remove().never();
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Scale], true, Some(ScaleSpec::Absolute(1))),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(matches!(
        error,
        ReleaseError::Aborted {
            step: Step::Scale,
            ..
        }
    ));
}

#[tokio::test]
async fn a_failure_after_commit_is_reported_as_such() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Green))))
        .returning(|_| Ok(vec![instance(Some(Color::Green), 1, true)]));
    orchestrator.expect_stop().returning(|_| {
        Err(OrchestratorError::Engine {
            operation: "stop".into(),
            message: "timeout".into(),
        })
    });
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::StopOld], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(matches!(
        error,
        ReleaseError::AfterCommit {
            step: Step::StopOld,
            ..
        }
    ));
}

#[test]
fn incoherent_options_are_refused_before_any_port_is_called() {
    let ports = |proxy: bool| Ports {
        orchestrator: Arc::new(MockOrchestrator::new()),
        registry: Arc::new(MockRegistry::new()),
        proxy: proxy.then(|| Arc::new(MockProxy::new()) as _),
    };
    let cases: Vec<(ReleaseOptions, bool, &str)> = vec![
        (options(&[], true, None), false, "no step"),
        (
            options(&[Step::Deploy, Step::Deploy], true, None),
            false,
            "given twice",
        ),
        (options(&[Step::Scale], true, None), false, "needs --scale"),
        (
            options(&[Step::StopOld], false, None),
            false,
            "--blue-green",
        ),
        (options(&[Step::Proxy], true, None), false, "--proxy-host"),
        (
            ReleaseOptions {
                route: None,
                ..options(&[Step::Deploy], true, None)
            },
            true,
            "--service-path is required",
        ),
        (
            ReleaseOptions {
                route: Some(RouteSettings {
                    paths: vec![],
                    domain: None,
                    path_type: PathType::Prefix,
                }),
                ..options(&[Step::Proxy], true, None)
            },
            true,
            "--service-path is empty",
        ),
    ];
    for (options, with_proxy, expected) in cases {
        match Engine::new(ports(with_proxy), options) {
            Err(ReleaseError::InvalidOptions(message)) => {
                assert!(message.contains(expected), "{message}")
            }
            other => panic!("expected InvalidOptions containing {expected:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn dry_run_plans_without_locking_or_changing_anything() {
    let mut registry = MockRegistry::new();
    registry.expect_load().times(1).returning(|_| {
        Ok(Versioned {
            value: state(Some(Color::Blue), Some(2)),
            revision: Revision(3),
        })
    });
    registry.expect_lock().never();
    registry.expect_store().never();
    let mut orchestrator = MockOrchestrator::new();
    orchestrator.expect_describe().returning(|_| {
        Ok(TargetInfo {
            image: "demo:v3".into(),
            ..TargetInfo::default()
        })
    });
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Blue))))
        .returning(|_| {
            Ok(vec![
                instance(Some(Color::Blue), 1, true),
                instance(Some(Color::Blue), 2, true),
            ])
        });
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Green))))
        .returning(|_| Ok(vec![instance(Some(Color::Green), 1, false)]));
    orchestrator.expect_start().never();
    orchestrator.expect_remove().never();
    orchestrator.expect_stop().never();
    let mut proxy = MockProxy::new();
    proxy.expect_reconfigure().never();
    let plan = engine(
        orchestrator,
        registry,
        Some(proxy),
        options(
            &[Step::Deploy, Step::StopOld],
            true,
            Some(ScaleSpec::Relative(1)),
        ),
    )
    .plan()
    .await
    .unwrap();
    let actions: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
    assert_eq!(
        actions,
        vec![
            "deploy: remove demo-app-green-1 (leftovers of an older release)".to_string(),
            "deploy: start 3 instance(s) of app-green (numbers 1, 2, 3) from demo:v3, then wait until healthy".to_string(),
            "deploy: point the proxy at 3 server(s) of green".to_string(),
            "deploy: store scale 3, colour green".to_string(),
            "stop-old: drain and stop (keep) demo-app-blue-1, demo-app-blue-2".to_string(),
        ]
    );
    assert!(matches!(plan.actions[1], PlannedAction::Start { .. }));
    assert!(plan
        .to_string()
        .starts_with("plan for demo-app (live colour: blue, stored scale: 2):"));
}

#[test]
fn mocks_are_usable_behind_the_dyn_ports() {
    // The ports are object safe: the mocks go behind Arc<dyn …> and Box<dyn …>.
    let _: Box<dyn crate::Orchestrator> = Box::new(MockOrchestrator::new());
    let _: Box<dyn crate::Registry> = Box::new(MockRegistry::new());
    let _: Box<dyn crate::Proxy> = Box::new(MockProxy::new());
    let _ = always();
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_while_waiting_for_health_rolls_back() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Green,
        Some((Color::Blue, vec![instance(Some(Color::Blue), 1, true)])),
        vec![],
    );
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Green), vec![1]);
    orchestrator
        .expect_health()
        .returning(|_| Ok(Health::Starting { detail: None }));
    orchestrator
        .expect_remove()
        .with(eq(started))
        .times(1)
        .returning(|_| Ok(()));
    registry.expect_store().never();
    expect_unlock(&mut registry, &mut seq);
    let interrupt = crate::release::Interrupt::new();
    let engine = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .with_interrupt(interrupt.clone());
    let trigger = async {
        tokio::time::sleep(Duration::from_millis(350)).await;
        interrupt.trigger();
    };
    let (outcome, ()) = tokio::join!(engine.run(&ignore), trigger);
    let error = outcome.unwrap_err();
    assert!(
        matches!(error, ReleaseError::Aborted { cause: Cause::Interrupted, ref cleanup_failures, .. } if cleanup_failures.is_empty()),
        "{error:?}"
    );
}

#[tokio::test]
async fn new_instances_are_registered_after_they_are_healthy_and_before_the_switch() {
    let mut seq = Sequence::new();
    let mut registry = MockRegistry::new();
    registry
        .expect_lock()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(lease()));
    registry
        .expect_load()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Ok(Versioned {
                value: ReleaseState::default(),
                revision: Revision::NONE,
            })
        });
    registry.expect_renew().returning(|_| Ok(()));
    let mut orchestrator = MockOrchestrator::new();
    let mut proxy = MockProxy::new();
    expect_prepare_bg(&mut orchestrator, &mut seq, Color::Blue, None, vec![]);
    expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![1]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    registry
        .expect_register()
        .withf(|r| {
            r.id == "demo-app-blue-1"
                && r.name == "demo-app-blue"
                && r.address == "10.0.10.1"
                && r.port == 8080
                && r.tags == vec!["blue".to_string(), "version=v2".to_string()]
                && r.meta.get("docker-flow-service").map(String::as_str) == Some("demo-app")
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    proxy
        .expect_reconfigure()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    registry
        .expect_store()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(1)));
    expect_unlock(&mut registry, &mut seq);
    engine(
        orchestrator,
        registry,
        Some(proxy),
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_registry_refusing_the_registration_rolls_the_release_back() {
    let mut seq = Sequence::new();
    let mut registry = MockRegistry::new();
    registry.expect_lock().returning(|_, _, _| Ok(lease()));
    registry.expect_load().returning(|_| {
        Ok(Versioned {
            value: ReleaseState::default(),
            revision: Revision::NONE,
        })
    });
    registry.expect_register().returning(|_| {
        Err(RegistryError::Backend {
            address: "http://127.0.0.1:8500".into(),
            message: "500 Internal Server Error".into(),
        })
    });
    registry.expect_deregister().times(1).returning(|_| Ok(()));
    registry.expect_store().never();
    registry.expect_unlock().returning(|_| Ok(()));
    let mut orchestrator = MockOrchestrator::new();
    expect_prepare_bg(&mut orchestrator, &mut seq, Color::Blue, None, vec![]);
    let started = expect_start(&mut orchestrator, &mut seq, Some(Color::Blue), vec![1]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    orchestrator
        .expect_remove()
        .with(eq(started))
        .times(1)
        .returning(|_| Ok(()));
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            ReleaseError::Aborted {
                cause: Cause::Registry(RegistryError::Backend { .. }),
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_later_step_failing_after_an_earlier_one_committed_says_the_earlier_changes_stay() {
    let mut seq = Sequence::new();
    let mut registry = registry(&mut seq, state(Some(Color::Blue), Some(1)));
    let mut orchestrator = MockOrchestrator::new();
    let live = vec![instance(Some(Color::Blue), 1, true)];
    expect_prepare_bg(
        &mut orchestrator,
        &mut seq,
        Color::Green,
        Some((Color::Blue, live)),
        vec![],
    );
    expect_start(&mut orchestrator, &mut seq, Some(Color::Green), vec![1]);
    expect_healthy(&mut orchestrator, &mut seq, 1);
    registry
        .expect_store()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Revision(8)));
    // stop-old cannot even list the old colour: on its own that would be "nothing changed".
    orchestrator
        .expect_list()
        .with(eq(Group::new(TARGET, Some(Color::Blue))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Err(OrchestratorError::Engine {
                operation: "list".into(),
                message: "daemon restarting".into(),
            })
        });
    expect_unlock(&mut registry, &mut seq);
    let error = engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy, Step::StopOld], true, None),
    )
    .run(&ignore)
    .await
    .unwrap_err();
    match &error {
        ReleaseError::EarlierStepsDone { done, error } => {
            assert_eq!(done, &vec![Step::Deploy]);
            assert!(matches!(
                **error,
                ReleaseError::NothingChanged {
                    step: Some(Step::StopOld),
                    ..
                }
            ));
        }
        other => panic!("expected EarlierStepsDone, got {other:?}"),
    }
    assert!(
        error.to_string().starts_with("deploy done; then stop-old:"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_registry_during_a_renewal_is_not_a_lost_lease() {
    let mut registry = MockRegistry::new();
    registry.expect_lock().returning(|_, _, _| {
        Ok(Lease {
            ttl: Duration::from_millis(300),
            ..lease()
        })
    });
    registry.expect_load().returning(|_| {
        Ok(Versioned {
            value: ReleaseState::default(),
            revision: Revision::NONE,
        })
    });
    registry.expect_renew().returning(|_| {
        Err(RegistryError::Unavailable {
            address: "etcd://127.0.0.1:2379".into(),
            source: "timed out".into(),
        })
    });
    registry.expect_register().returning(|_| Ok(()));
    registry
        .expect_store()
        .times(1)
        .returning(|_, _, _| Ok(Revision(1)));
    registry.expect_unlock().returning(|_| Ok(()));
    let mut orchestrator = MockOrchestrator::new();
    orchestrator.expect_describe().returning(|_| {
        Ok(TargetInfo {
            image: "demo:v2".into(),
            ..TargetInfo::default()
        })
    });
    orchestrator.expect_list().returning(|_| Ok(vec![]));
    orchestrator.expect_prepare().returning(|_| Ok(spec()));
    orchestrator
        .expect_start()
        .returning(|_, _, _| Ok(vec![instance(Some(Color::Blue), 1, true)]));
    // Healthy only after several renewal periods have passed.
    let mut polls = 0;
    orchestrator.expect_health().returning(move |_| {
        polls += 1;
        Ok(if polls > 10 {
            Health::Healthy
        } else {
            Health::Starting { detail: None }
        })
    });
    engine(
        orchestrator,
        registry,
        None,
        options(&[Step::Deploy], true, None),
    )
    .run(&ignore)
    .await
    .expect("transient renewal failures do not abort the release");
}

#[tokio::test]
async fn scale_without_a_new_deploy_keeps_every_instance_on_the_live_spec_and_warns() {
    use crate::memory::{MemoryOrchestrator, MemoryRegistry};
    let orchestrator = MemoryOrchestrator::new().with_target(TARGET, "web:v2");
    let registry = MemoryRegistry::new();
    let ports = Ports {
        orchestrator: Arc::new(orchestrator.clone()),
        registry: Arc::new(registry.clone()),
        proxy: None,
    };
    let deploy = ReleaseOptions {
        route: None,
        ..options(&[Step::Deploy], true, None)
    };
    Engine::new(ports.clone(), deploy)
        .unwrap()
        .run(&ignore)
        .await
        .unwrap();
    // The Compose file now resolves to v1 (VERSION unset).
    orchestrator.add_target(TARGET, "web:v1");
    let scale = ReleaseOptions {
        route: None,
        ..options(&[Step::Scale], true, Some(ScaleSpec::Relative(2)))
    };
    let events = Mutex::new(Vec::new());
    let report = Engine::new(ports, scale)
        .unwrap()
        .run(&|event: &Event| events.lock().unwrap().push(event.clone()))
        .await
        .unwrap();
    assert_eq!(report.scale, Some(3));
    let instances = orchestrator.instances();
    assert_eq!(instances.len(), 3);
    assert!(
        instances.iter().all(|i| i.image == "web:v2"),
        "{instances:?}"
    );
    let stored = registry.state(&service()).unwrap();
    let live = stored.last_release.unwrap().spec.unwrap();
    for instance in &instances {
        assert_eq!(orchestrator.spec_of(&instance.id), Some(live.clone()));
    }
    let warned = events.lock().unwrap().iter().any(|event| {
        matches!(event, Event::Warning { message } if message.contains("web:v1") && message.contains("web:v2"))
    });
    assert!(warned, "a warning names both images");
}

#[tokio::test]
async fn an_unhealthy_instance_is_shown_once_and_waited_on_until_the_health_timeout() {
    use crate::memory::{HealthScript, MemoryOrchestrator, MemoryRegistry};
    let orchestrator = MemoryOrchestrator::new().with_target(TARGET, "web:v2");
    orchestrator.set_health(
        TARGET,
        HealthScript::UnhealthyAfter {
            polls: 0,
            detail: "HTTP 503".into(),
        },
    );
    let ports = Ports {
        orchestrator: Arc::new(orchestrator.clone()),
        registry: Arc::new(MemoryRegistry::new()),
        proxy: None,
    };
    let mut deploy = ReleaseOptions {
        route: None,
        ..options(&[Step::Deploy], true, None)
    };
    deploy.timeouts.health = Duration::from_millis(350);
    deploy.timeouts.health_poll = Duration::from_millis(50);
    let events = Mutex::new(Vec::new());
    let began = std::time::Instant::now();
    let error = Engine::new(ports, deploy)
        .unwrap()
        .run(&|event: &Event| events.lock().unwrap().push(event.clone()))
        .await
        .unwrap_err();
    assert!(began.elapsed() >= Duration::from_millis(350), "waited on");
    assert!(
        matches!(error.cause(), Some(Cause::HealthTimeout { .. })),
        "{error:?}"
    );
    let shown: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::InstanceUnhealthy { detail, .. } if detail == "HTTP 503"))
        .cloned()
        .collect();
    assert_eq!(shown.len(), 1, "shown once with the check's output");
}

// ----- rollback -----

/// In-memory ports with a proxy, the target configured with `image`.
fn memory_ports(
    image: &str,
) -> (
    Ports,
    crate::memory::MemoryOrchestrator,
    crate::memory::MemoryRegistry,
    crate::memory::MemoryProxy,
) {
    use crate::memory::{MemoryOrchestrator, MemoryProxy, MemoryRegistry};
    let orchestrator = MemoryOrchestrator::new().with_target(TARGET, image);
    let registry = MemoryRegistry::new();
    let proxy = MemoryProxy::new();
    let ports = Ports {
        orchestrator: Arc::new(orchestrator.clone()),
        registry: Arc::new(registry.clone()),
        proxy: Some(Arc::new(proxy.clone())),
    };
    (ports, orchestrator, registry, proxy)
}

async fn run_steps(ports: &Ports, steps: &[Step]) -> Result<crate::release::Report, ReleaseError> {
    Engine::new(ports.clone(), options(steps, true, None))?
        .run(&ignore)
        .await
}

/// Releases v1 into blue, then v2 into green (with `then` after the v2 deploy).
async fn v1_then_v2(
    ports: &Ports,
    orchestrator: &crate::memory::MemoryOrchestrator,
    then: &[Step],
) {
    run_steps(ports, &[Step::Deploy]).await.unwrap();
    orchestrator.add_target(TARGET, "web:v2");
    let steps: Vec<Step> = std::iter::once(Step::Deploy)
        .chain(then.iter().copied())
        .collect();
    run_steps(ports, &steps).await.unwrap();
}

fn of_color(orchestrator: &crate::memory::MemoryOrchestrator, color: Color) -> Vec<Instance> {
    orchestrator
        .instances()
        .into_iter()
        .filter(|i| i.group.color == Some(color))
        .collect()
}

fn operations_since(
    orchestrator: &crate::memory::MemoryOrchestrator,
    before: usize,
) -> Vec<crate::memory::OrchestratorOperation> {
    orchestrator
        .operations()
        .into_iter()
        .skip(before)
        .map(|r| r.operation)
        .collect()
}

#[tokio::test]
async fn warm_rollback_health_checks_the_running_previous_colour_switches_and_restores_its_record()
{
    use crate::memory::OrchestratorOperation as Op;
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[]).await;
    let blue = of_color(&orchestrator, Color::Blue);
    let before = registry.state(&service()).unwrap();
    let calls = orchestrator.operations().len();

    let report = run_steps(&ports, &[Step::Rollback]).await.unwrap();

    assert_eq!(report.live_color, Some(Color::Blue));
    let done = operations_since(&orchestrator, calls);
    assert!(
        !done.iter().any(|op| matches!(
            op,
            Op::Start(..) | Op::Resume(_) | Op::Stop(_) | Op::Remove(_)
        )),
        "a warm rollback starts, stops and removes nothing: {done:?}"
    );
    assert!(done
        .iter()
        .any(|op| matches!(op, Op::Health(name) if name == &blue[0].name)));
    assert_eq!(
        of_color(&orchestrator, Color::Blue),
        blue,
        "the same containers"
    );
    let (route, servers) = proxy.route(&service()).unwrap();
    assert_eq!(route.color, Some(Color::Blue));
    assert_eq!(servers, addrs(&blue));
    let after = registry.state(&service()).unwrap();
    assert_eq!(after.color, Some(Color::Blue));
    assert_eq!(
        after.last_release, before.previous_release,
        "its record restored"
    );
    assert_eq!(
        after.previous_release, before.last_release,
        "the bad one kept to return to"
    );
    assert!(
        of_color(&orchestrator, Color::Green)
            .iter()
            .all(|i| i.running),
        "the rolled-back colour keeps running until stop-old"
    );
    assert!(
        report.summaries[0].1.contains("were still running"),
        "{report:?}"
    );
}

#[tokio::test]
async fn rollback_then_stop_old_stops_the_bad_colour_after_the_switch() {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[]).await;
    run_steps(&ports, &[Step::Rollback, Step::StopOld])
        .await
        .unwrap();
    assert!(of_color(&orchestrator, Color::Green)
        .iter()
        .all(|i| !i.running));
    assert!(of_color(&orchestrator, Color::Blue)
        .iter()
        .all(|i| i.running));
    assert_eq!(proxy.route(&service()).unwrap().0.color, Some(Color::Blue));
    let state = registry.state(&service()).unwrap();
    assert_eq!(state.last_release.unwrap().image, "web:v1");
}

#[tokio::test]
async fn rollback_after_stop_old_starts_the_same_containers_again() {
    use crate::memory::OrchestratorOperation as Op;
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[Step::StopOld]).await;
    let stopped = of_color(&orchestrator, Color::Blue);
    assert!(stopped.iter().all(|i| !i.running));
    let calls = orchestrator.operations().len();

    let report = run_steps(&ports, &[Step::Rollback]).await.unwrap();

    let done = operations_since(&orchestrator, calls);
    assert!(
        done.contains(&Op::Resume(vec![stopped[0].name.clone()])),
        "{done:?}"
    );
    assert!(
        !done.iter().any(|op| matches!(op, Op::Start(..))),
        "{done:?}"
    );
    let blue = of_color(&orchestrator, Color::Blue);
    assert_eq!(blue.len(), 1);
    assert_eq!(
        blue[0].id, stopped[0].id,
        "the same container, not a new one"
    );
    assert!(blue[0].running);
    assert_eq!(proxy.route(&service()).unwrap().1, addrs(&blue));
    assert_eq!(registry.state(&service()).unwrap().color, Some(Color::Blue));
    assert!(
        report.summaries[0].1.contains("started again"),
        "{report:?}"
    );
}

#[tokio::test]
async fn rollback_whose_instances_are_gone_recreates_them_from_the_stored_spec() {
    let (ports, orchestrator, registry, _proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[Step::StopOld]).await;
    let v1 = registry
        .state(&service())
        .unwrap()
        .previous_release
        .unwrap()
        .spec
        .unwrap();
    let gone = of_color(&orchestrator, Color::Blue);
    crate::Orchestrator::remove(&orchestrator, &gone)
        .await
        .unwrap();

    run_steps(&ports, &[Step::Rollback]).await.unwrap();

    let blue = of_color(&orchestrator, Color::Blue);
    assert_eq!(blue.len(), 1);
    assert_ne!(blue[0].id, gone[0].id);
    assert_eq!(
        orchestrator.spec_of(&blue[0].id),
        Some(v1),
        "the stored spec, not the Compose file's v2"
    );
}

#[tokio::test]
async fn rollback_removes_instances_of_the_previous_colour_that_run_something_else() {
    let (ports, orchestrator, _registry, _proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[Step::StopOld]).await;
    // A killed release left a v3 instance in blue next to the stopped v1 one.
    let stray = orchestrator.plant_legacy(&Group::new(TARGET, Some(Color::Blue)), 2, "web:v3");
    run_steps(&ports, &[Step::Rollback]).await.unwrap();
    let blue = of_color(&orchestrator, Color::Blue);
    assert_eq!(blue.len(), 1, "{blue:?}");
    assert_ne!(blue[0].id, stray.id);
    assert_eq!(blue[0].image, "web:v1");
}

/// A rollback whose instances all fail their health check (fail-fast).
async fn failing_rollback(
    ports: &Ports,
    orchestrator: &crate::memory::MemoryOrchestrator,
) -> ReleaseError {
    orchestrator.set_health(
        TARGET,
        crate::memory::HealthScript::UnhealthyAfter {
            polls: 0,
            detail: "HTTP 500".into(),
        },
    );
    let mut rollback = options(&[Step::Rollback], true, None);
    rollback.health_fail_fast = true;
    Engine::new(ports.clone(), rollback)
        .unwrap()
        .run(&ignore)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_failed_rollback_stops_again_what_it_started_and_changes_no_state() {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[Step::StopOld]).await;
    let before = registry.state(&service()).unwrap();
    let route_before = proxy.route(&service()).unwrap();
    let error = failing_rollback(&ports, &orchestrator).await;
    assert!(
        matches!(&error, ReleaseError::Aborted { step: Step::Rollback, cleanup_failures, .. } if cleanup_failures.is_empty()),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("those it started again were stopped again (app-blue-1)"),
        "{error}"
    );
    let blue = of_color(&orchestrator, Color::Blue);
    assert_eq!(blue.len(), 1, "stopped again, not removed");
    assert!(!blue[0].running);
    assert_eq!(registry.state(&service()).unwrap(), before);
    assert_eq!(proxy.route(&service()).unwrap(), route_before);
}

#[tokio::test]
async fn rollback_with_nothing_to_return_to_is_refused_as_bad_input_and_changes_nothing() {
    let (ports, orchestrator, registry, _proxy) = memory_ports("web:v1");
    run_steps(&ports, &[Step::Deploy]).await.unwrap();
    let before = registry.state(&service()).unwrap();
    let calls = orchestrator.operations().len();
    for error in [
        run_steps(&ports, &[Step::Rollback]).await.unwrap_err(),
        Engine::new(ports.clone(), options(&[Step::Rollback], true, None))
            .unwrap()
            .plan()
            .await
            .unwrap_err(),
    ] {
        assert!(error.is_bad_input(), "{error:?}");
        assert!(
            error.to_string().contains("nothing to roll back to"),
            "{error}"
        );
    }
    assert_eq!(registry.state(&service()).unwrap(), before);
    assert!(operations_since(&orchestrator, calls)
        .iter()
        .all(|op| matches!(op, crate::memory::OrchestratorOperation::List(_))));
}

#[test]
fn rollback_and_deploy_in_one_flow_are_refused() {
    let (ports, ..) = memory_ports("web:v1");
    let error =
        Engine::new(ports, options(&[Step::Deploy, Step::Rollback], true, None)).unwrap_err();
    assert!(error.is_bad_input());
    assert!(
        error.to_string().contains("-F rollback and -F deploy"),
        "{error}"
    );
}

#[tokio::test]
async fn the_dry_run_of_a_rollback_names_what_the_rollback_then_does() {
    use crate::memory::OrchestratorOperation as Op;
    let (ports, orchestrator, _registry, _proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[Step::StopOld]).await;
    let blue = of_color(&orchestrator, Color::Blue);
    let plan = Engine::new(
        ports.clone(),
        options(&[Step::Rollback, Step::StopOld], true, None),
    )
    .unwrap()
    .plan()
    .await
    .unwrap();
    let green = of_color(&orchestrator, Color::Green);
    assert!(green.iter().all(|i| i.running));
    assert_eq!(
        plan.actions,
        vec![
            PlannedAction::Resume {
                step: Step::Rollback,
                instances: vec![blue[0].name.clone()],
            },
            PlannedAction::SwitchProxy {
                step: Step::Rollback,
                color: Some(Color::Blue),
                servers: 1,
            },
            PlannedAction::Store {
                step: Step::Rollback,
                color: Some(Color::Blue),
                scale: 1,
            },
            PlannedAction::Stop {
                step: Step::StopOld,
                instances: vec![green[0].name.clone()],
            },
        ]
    );
    let text = plan.to_string();
    assert!(
        text.contains(&format!(
            "rollback: start {} again (the same containers)",
            blue[0].name
        )),
        "{text}"
    );
    // The real run does what the plan said.
    let calls = orchestrator.operations().len();
    run_steps(&ports, &[Step::Rollback, Step::StopOld])
        .await
        .unwrap();
    let done = operations_since(&orchestrator, calls);
    assert!(done.contains(&Op::Resume(vec![blue[0].name.clone()])));
    assert!(done.contains(&Op::Stop(vec![green[0].name.clone()])));
}

#[tokio::test]
async fn rollback_without_blue_green_recreates_the_previous_spec_and_removes_the_live_instances() {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    let plain = |steps: &[Step]| options(steps, false, None);
    Engine::new(ports.clone(), plain(&[Step::Deploy]))
        .unwrap()
        .run(&ignore)
        .await
        .unwrap();
    orchestrator.add_target(TARGET, "web:v2");
    Engine::new(ports.clone(), plain(&[Step::Deploy]))
        .unwrap()
        .run(&ignore)
        .await
        .unwrap();
    let v2 = orchestrator.instances();
    Engine::new(ports.clone(), plain(&[Step::Rollback]))
        .unwrap()
        .run(&ignore)
        .await
        .unwrap();
    let now = orchestrator.instances();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, v2[0].id);
    assert_eq!(now[0].image, "web:v1");
    assert_eq!(proxy.route(&service()).unwrap().1, addrs(&now));
    let state = registry.state(&service()).unwrap();
    assert_eq!(state.last_release.unwrap().image, "web:v1");
    assert_eq!(state.previous_release.unwrap().image, "web:v2");
}

// ----- after a killed run -----

/// How long the lease of a killed run lives: it ends by its TTL, as a killed process's does
/// in a registry with TTLs.
const KILLED_LEASE: Duration = Duration::from_millis(300);

/// A run "killed" where `at` first matches an event: it unwinds out of the engine there, so
/// nothing after that point runs (no rollback, no unlock), as with SIGKILL. Returns once the
/// dead run's lease has run out.
async fn killed_at(ports: &Ports, steps: &[Step], at: impl Fn(&Event) -> bool + Send + Sync) {
    use futures::FutureExt;
    let mut killed = options(steps, true, None);
    killed.timeouts.lock_ttl = KILLED_LEASE;
    killed.timeouts.drain = Duration::from_secs(30);
    let engine = Engine::new(ports.clone(), killed).unwrap();
    let observer = move |event: &Event| {
        if at(event) {
            // Unwinds without the panic hook: the kill is expected, not a failure.
            std::panic::resume_unwind(Box::new("killed"));
        }
    };
    let outcome = std::panic::AssertUnwindSafe(engine.run(&observer))
        .catch_unwind()
        .await;
    assert!(outcome.is_err(), "the run ended before the kill point");
    tokio::time::sleep(KILLED_LEASE + Duration::from_millis(100)).await;
}

/// A deploy killed right after its proxy switch, before its commit.
async fn killed_after_switch(ports: &Ports) {
    killed_at(
        ports,
        &[Step::Deploy],
        finished(Step::Deploy, crate::release::Phase::Switch),
    )
    .await;
}

/// Whether `op` asks the proxy for the sessions of exactly `instances`.
fn drains(op: &AnyOp, instances: &[Instance]) -> bool {
    matches!(op, AnyOp::Proxy(crate::memory::ProxyOperation::Sessions(_, s)) if *s == addrs(instances))
}

/// Whether an event marks a kill point.
type KillPointFn = Box<dyn Fn(&Event) -> bool + Send + Sync>;

fn finished(step: Step, phase: crate::release::Phase) -> impl Fn(&Event) -> bool + Send + Sync {
    move |event| matches!(event, Event::PhaseFinished { step: Some(s), phase: p, .. } if *s == step && *p == phase)
}

/// Runs `steps` to the end, collecting the events.
async fn run_collecting(ports: &Ports, steps: &[Step]) -> (crate::release::Report, Vec<Event>) {
    let events = Mutex::new(Vec::new());
    let collect = |event: &Event| events.lock().unwrap().push(event.clone());
    let report = Engine::new(ports.clone(), options(steps, true, None))
        .unwrap()
        .run(&collect)
        .await
        .unwrap_or_else(|e| panic!("the next run fails: {e}"));
    (report, events.into_inner().unwrap())
}

fn notices(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Notice { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Every operation of the three memory ports after `since` (a sequence number), in order.
#[derive(Debug, Clone, PartialEq)]
enum AnyOp {
    Orchestrator(crate::memory::OrchestratorOperation),
    Proxy(crate::memory::ProxyOperation),
    Registry(Box<crate::memory::RegistryOperation>),
}

fn all_operations(
    orchestrator: &crate::memory::MemoryOrchestrator,
    registry: &crate::memory::MemoryRegistry,
    proxy: &crate::memory::MemoryProxy,
    since: u64,
) -> Vec<AnyOp> {
    let mut all: Vec<(u64, AnyOp)> = orchestrator
        .operations()
        .into_iter()
        .map(|r| (r.sequence, AnyOp::Orchestrator(r.operation)))
        .chain(
            proxy
                .operations()
                .into_iter()
                .map(|r| (r.sequence, AnyOp::Proxy(r.operation))),
        )
        .chain(
            registry
                .operations()
                .into_iter()
                .map(|r| (r.sequence, AnyOp::Registry(Box::new(r.operation)))),
        )
        .filter(|(sequence, _)| *sequence > since)
        .collect();
    all.sort_by_key(|(sequence, _)| *sequence);
    all.into_iter().map(|(_, op)| op).collect()
}

/// The sequence number of the latest operation any memory port recorded.
fn last_sequence(
    orchestrator: &crate::memory::MemoryOrchestrator,
    registry: &crate::memory::MemoryRegistry,
    proxy: &crate::memory::MemoryProxy,
) -> u64 {
    let o = orchestrator.operations().last().map_or(0, |r| r.sequence);
    let p = proxy.operations().last().map_or(0, |r| r.sequence);
    let r = registry.operations().last().map_or(0, |r| r.sequence);
    o.max(p).max(r)
}

/// Where `wanted` first occurs in `ops` (panics, listing them, when it does not).
fn position(ops: &[AnyOp], what: &str, wanted: impl Fn(&AnyOp) -> bool) -> usize {
    ops.iter()
        .position(wanted)
        .unwrap_or_else(|| panic!("no {what} in {ops:#?}"))
}

/// Whether `op` points the proxy at exactly `servers`.
fn reconfigures_to(op: &AnyOp, servers: &[SocketAddr]) -> bool {
    matches!(op, AnyOp::Proxy(crate::memory::ProxyOperation::Reconfigure(_, s)) if s == servers)
}

fn removes(op: &AnyOp, instances: &[Instance]) -> bool {
    let wanted: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
    matches!(op, AnyOp::Orchestrator(crate::memory::OrchestratorOperation::Remove(names)) if *names == wanted)
}

/// The invariants every next run must leave: the stored colour runs and is what the proxy
/// routes to, exactly its running instances, which run `image`; nothing else of that colour
/// is left.
fn assert_converged(
    orchestrator: &crate::memory::MemoryOrchestrator,
    registry: &crate::memory::MemoryRegistry,
    proxy: &crate::memory::MemoryProxy,
    image: &str,
) -> Color {
    let state = registry.state(&service()).expect("a stored state");
    let live = state.color.expect("a live colour");
    let instances = of_color(orchestrator, live);
    assert!(
        !instances.is_empty() && instances.iter().all(|i| i.running && i.image == image),
        "{instances:?}"
    );
    let (route, servers) = proxy.route(&service()).expect("a route");
    assert_eq!(
        route.color,
        Some(live),
        "the proxy routes the stored colour"
    );
    assert_eq!(
        servers,
        addrs(&instances),
        "the proxy routes its running instances"
    );
    assert_eq!(
        state.last_release.as_ref().map(|r| r.image.as_str()),
        Some(image)
    );
    live
}

#[tokio::test]
async fn a_run_killed_while_starting_or_waiting_for_health_leaves_instances_the_next_deploy_removes(
) {
    let points: [(&str, KillPointFn); 2] = [
        (
            "start",
            Box::new(finished(Step::Deploy, crate::release::Phase::Start)),
        ),
        (
            "health wait",
            Box::new(|e: &Event| matches!(e, Event::WaitingHealthy { .. })),
        ),
    ];
    for (point, at) in points {
        let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
        run_steps(&ports, &[Step::Deploy]).await.unwrap();
        let blue = of_color(&orchestrator, Color::Blue);
        orchestrator.add_target(TARGET, "web:v2");
        killed_at(&ports, &[Step::Deploy], at).await;
        let stranded = of_color(&orchestrator, Color::Green);
        assert_eq!(stranded.len(), 1, "{point}: the killed run started green");
        assert_eq!(proxy.route(&service()).unwrap().1, addrs(&blue), "{point}");
        assert_eq!(registry.state(&service()).unwrap().color, Some(Color::Blue));

        orchestrator.add_target(TARGET, "web:v3");
        let since = last_sequence(&orchestrator, &registry, &proxy);
        run_steps(&ports, &[Step::Deploy]).await.unwrap();

        let ops = all_operations(&orchestrator, &registry, &proxy, since);
        let removed = position(&ops, "removal of the stranded instance", |op| {
            removes(op, &stranded)
        });
        let drained = position(&ops, "drain check", |op| drains(op, &stranded));
        assert!(drained < removed, "{point}: drain before removal: {ops:#?}");
        assert!(
            !ops.iter().any(|op| reconfigures_to(op, &addrs(&stranded))),
            "{point}: never routed to"
        );
        assert_eq!(
            assert_converged(&orchestrator, &registry, &proxy, "web:v3"),
            Color::Green
        );
        assert_eq!(
            of_color(&orchestrator, Color::Blue),
            blue,
            "{point}: blue kept"
        );
    }
}

#[tokio::test]
async fn a_run_killed_between_switch_and_commit_is_switched_back_and_drained_before_its_instances_go(
) {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    run_steps(&ports, &[Step::Deploy]).await.unwrap();
    let blue = of_color(&orchestrator, Color::Blue);
    let stored = registry.state(&service()).unwrap();
    orchestrator.add_target(TARGET, "web:v2");
    killed_after_switch(&ports).await;
    // What the issue measured: the state says blue, the proxy routes to green.
    let served = of_color(&orchestrator, Color::Green);
    assert_eq!(proxy.route(&service()).unwrap().1, addrs(&served));
    assert_eq!(registry.state(&service()).unwrap(), stored);

    orchestrator.add_target(TARGET, "web:v3");
    let since = last_sequence(&orchestrator, &registry, &proxy);
    let (_, events) = run_collecting(&ports, &[Step::Deploy]).await;

    let ops = all_operations(&orchestrator, &registry, &proxy, since);
    let back = position(&ops, "switch back to blue", |op| {
        reconfigures_to(op, &addrs(&blue))
    });
    let drained = position(&ops, "drain of the served green", |op| drains(op, &served));
    let removed = position(&ops, "removal of the served green", |op| {
        removes(op, &served)
    });
    assert!(
        back < drained && drained < removed,
        "switch back, drain, remove: {ops:#?}"
    );
    let message = notices(&events).join("\n");
    assert!(
        message.contains(&served[0].name)
            && message.contains("pointing it back at the live app-blue"),
        "{message}"
    );
    assert_eq!(
        assert_converged(&orchestrator, &registry, &proxy, "web:v3"),
        Color::Green
    );
    assert_eq!(of_color(&orchestrator, Color::Blue), blue);
    let state = registry.state(&service()).unwrap();
    assert_eq!(
        state.previous_release, stored.last_release,
        "v1 stays the one to return to"
    );
}

#[tokio::test]
async fn a_rollback_after_a_run_killed_between_switch_and_commit_switches_back_before_removing() {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[]).await;
    let green = of_color(&orchestrator, Color::Green);
    orchestrator.add_target(TARGET, "web:v3");
    killed_after_switch(&ports).await;
    let served = of_color(&orchestrator, Color::Blue);
    assert_eq!(served[0].image, "web:v3");
    assert_eq!(proxy.route(&service()).unwrap().1, addrs(&served));
    assert_eq!(
        registry.state(&service()).unwrap().color,
        Some(Color::Green)
    );

    let since = last_sequence(&orchestrator, &registry, &proxy);
    run_collecting(&ports, &[Step::Rollback]).await;

    let ops = all_operations(&orchestrator, &registry, &proxy, since);
    let back = position(&ops, "switch back to green", |op| {
        reconfigures_to(op, &addrs(&green))
    });
    let removed = position(&ops, "removal of the served v3", |op| removes(op, &served));
    assert!(back < removed, "{ops:#?}");
    assert_eq!(
        assert_converged(&orchestrator, &registry, &proxy, "web:v1"),
        Color::Blue
    );
    assert_eq!(
        of_color(&orchestrator, Color::Green),
        green,
        "v2 keeps running until stop-old"
    );
}

#[tokio::test]
async fn a_first_deploy_killed_between_switch_and_commit_is_adopted_by_the_next_deploy() {
    use crate::memory::RegistryOperation as Reg;
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    killed_after_switch(&ports).await;
    assert_eq!(registry.state(&service()), None, "nothing was stored");
    let served = of_color(&orchestrator, Color::Blue);
    assert_eq!(proxy.route(&service()).unwrap().1, addrs(&served));
    orchestrator.add_target(TARGET, "web:v2");

    let plan = Engine::new(ports.clone(), options(&[Step::Deploy], true, None))
        .unwrap()
        .plan()
        .await
        .unwrap();
    assert_eq!(
        plan.actions[0],
        PlannedAction::Adopt {
            step: Step::Deploy,
            color: Color::Blue,
            instances: vec![served[0].name.clone()],
        }
    );
    assert!(
        matches!(&plan.actions[1], PlannedAction::Start { group, .. } if group == "app-green"),
        "{plan}"
    );

    let since = last_sequence(&orchestrator, &registry, &proxy);
    let (_, events) = run_collecting(&ports, &[Step::Deploy]).await;

    let ops = all_operations(&orchestrator, &registry, &proxy, since);
    assert!(
        !ops.iter().any(|op| matches!(
            op,
            AnyOp::Orchestrator(crate::memory::OrchestratorOperation::Remove(_))
        )),
        "what the proxy serves is never removed: {ops:#?}"
    );
    let stores: Vec<&ReleaseState> = ops
        .iter()
        .filter_map(|op| match op {
            AnyOp::Registry(op) => match op.as_ref() {
                Reg::Store { state, .. } => Some(state),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(stores.len(), 1, "one compare-and-swap: the release's own");
    assert!(notices(&events)
        .iter()
        .any(|n| n.contains("taking app-blue as the live release")));
    assert_eq!(
        assert_converged(&orchestrator, &registry, &proxy, "web:v2"),
        Color::Green
    );
    assert_eq!(
        of_color(&orchestrator, Color::Blue),
        served,
        "the adopted v1 keeps running"
    );
    let state = registry.state(&service()).unwrap();
    let adopted = state.previous_release.unwrap();
    assert_eq!(
        (adopted.image.as_str(), adopted.color),
        ("web:v1", Some(Color::Blue)),
        "a rollback returns to it"
    );
    assert_eq!(
        adopted.spec,
        orchestrator.spec_of(&served[0].id),
        "its spec read back"
    );
}

#[tokio::test]
async fn a_deploy_that_adopted_and_then_fails_stores_nothing_and_leaves_the_proxy_on_what_it_served(
) {
    use crate::memory::HealthScript;
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    killed_after_switch(&ports).await;
    let served = of_color(&orchestrator, Color::Blue);
    orchestrator.add_target(TARGET, "web:v2");
    orchestrator.set_health(
        TARGET,
        HealthScript::UnhealthyAfter {
            polls: 0,
            detail: "HTTP 500".into(),
        },
    );
    let mut deploy = options(&[Step::Deploy], true, None);
    deploy.health_fail_fast = true;
    let error = Engine::new(ports.clone(), deploy)
        .unwrap()
        .run(&ignore)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ReleaseError::Aborted { cleanup_failures, .. } if cleanup_failures.is_empty()),
        "{error:?}"
    );
    assert_eq!(registry.state(&service()), None, "nothing was stored");
    assert_eq!(proxy.route(&service()).unwrap().1, addrs(&served));
    assert_eq!(of_color(&orchestrator, Color::Blue), served);
    assert!(of_color(&orchestrator, Color::Green).is_empty());
}

#[tokio::test]
async fn a_run_killed_during_stop_olds_drain_leaves_sessions_the_next_deploy_drains_first() {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    run_steps(&ports, &[Step::Deploy]).await.unwrap();
    let blue = of_color(&orchestrator, Color::Blue);
    orchestrator.add_target(TARGET, "web:v2");
    // One session stays open on blue for as long as the killed run drains.
    proxy.drain_after(&service(), 1, u32::MAX);
    killed_at(
        &ports,
        &[Step::Deploy, Step::StopOld],
        |e| matches!(e, Event::Draining { sessions, .. } if *sessions > 0),
    )
    .await;
    assert_eq!(
        registry.state(&service()).unwrap().color,
        Some(Color::Green)
    );
    assert!(of_color(&orchestrator, Color::Blue)
        .iter()
        .all(|i| i.running));
    // It ends after two more polls.
    proxy.drain_after(&service(), 1, 2);

    orchestrator.add_target(TARGET, "web:v3");
    let since = last_sequence(&orchestrator, &registry, &proxy);
    let (_, events) = run_collecting(&ports, &[Step::Deploy]).await;

    let ops = all_operations(&orchestrator, &registry, &proxy, since);
    let polls: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| drains(op, &blue))
        .map(|(n, _)| n)
        .collect();
    let removed = position(&ops, "removal of the old blue", |op| removes(op, &blue));
    assert_eq!(polls.len(), 3, "polled until the session ended: {ops:#?}");
    assert!(
        polls.iter().all(|&n| n < removed),
        "drained before removal: {ops:#?}"
    );
    assert!(
        notices(&events)
            .iter()
            .any(|n| n.contains("1 session(s) still open") && n.contains(&blue[0].name)),
        "{events:?}"
    );
    assert_eq!(
        assert_converged(&orchestrator, &registry, &proxy, "web:v3"),
        Color::Blue
    );
}

#[tokio::test]
async fn a_rollback_that_would_remove_what_is_served_is_refused_and_a_deploy_adopts_it() {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[Step::StopOld]).await;
    orchestrator.add_target(TARGET, "web:v3");
    killed_after_switch(&ports).await;
    let served = of_color(&orchestrator, Color::Blue);
    // The stored live colour runs nothing any more.
    crate::Orchestrator::stop(&orchestrator, &of_color(&orchestrator, Color::Green))
        .await
        .unwrap();
    let stored = registry.state(&service()).unwrap();

    let error = run_steps(&ports, &[Step::Rollback]).await.unwrap_err();
    assert!(
        matches!(&error, ReleaseError::NothingChanged { cause: Cause::ServedNotLive { instances, .. }, .. } if *instances == vec![served[0].name.clone()]),
        "{error:?}"
    );
    assert!(error.to_string().contains("run a deploy"), "{error}");
    assert_eq!(registry.state(&service()).unwrap(), stored);
    assert_eq!(proxy.route(&service()).unwrap().1, addrs(&served));

    run_collecting(&ports, &[Step::Deploy]).await;
    assert_eq!(
        assert_converged(&orchestrator, &registry, &proxy, "web:v3"),
        Color::Green
    );
    assert_eq!(of_color(&orchestrator, Color::Blue), served);
}

#[tokio::test]
async fn the_dry_run_after_a_run_killed_between_switch_and_commit_names_the_reconcile() {
    let (ports, orchestrator, registry, proxy) = memory_ports("web:v1");
    run_steps(&ports, &[Step::Deploy]).await.unwrap();
    let blue = of_color(&orchestrator, Color::Blue);
    orchestrator.add_target(TARGET, "web:v2");
    killed_after_switch(&ports).await;
    let served = of_color(&orchestrator, Color::Green);
    let plan = Engine::new(ports.clone(), options(&[Step::Deploy], true, None))
        .unwrap()
        .plan()
        .await
        .unwrap();
    let green = vec![served[0].name.clone()];
    assert_eq!(
        plan.actions[..3],
        [
            PlannedAction::PointBack {
                step: Step::Deploy,
                color: Some(Color::Blue),
                servers: 1,
                routed: green.clone(),
            },
            PlannedAction::Drain {
                step: Step::Deploy,
                instances: green.clone(),
            },
            PlannedAction::Remove {
                step: Step::Deploy,
                instances: green.clone(),
                why: "leftovers of an older release".into(),
            },
        ]
    );
    assert!(
        plan.to_string()
            .contains("deploy: point the proxy back at 1 server(s) of blue"),
        "{plan}"
    );
    assert_eq!(
        proxy.route(&service()).unwrap().1,
        addrs(&served),
        "the dry run changes nothing"
    );

    // The real run does what the plan said, in its order.
    let since = last_sequence(&orchestrator, &registry, &proxy);
    run_collecting(&ports, &[Step::Deploy]).await;
    let ops = all_operations(&orchestrator, &registry, &proxy, since);
    let back = position(&ops, "switch back", |op| reconfigures_to(op, &addrs(&blue)));
    let removed = position(&ops, "removal", |op| removes(op, &served));
    let started = position(&ops, "start", |op| {
        matches!(
            op,
            AnyOp::Orchestrator(crate::memory::OrchestratorOperation::Start(..))
        )
    });
    assert!(back < removed && removed < started, "{ops:#?}");
}

#[tokio::test]
async fn a_failed_warm_rollback_says_it_left_the_running_instances_and_nothing_else() {
    let (ports, orchestrator, registry, _proxy) = memory_ports("web:v1");
    v1_then_v2(&ports, &orchestrator, &[]).await;
    let blue = of_color(&orchestrator, Color::Blue);
    let before = registry.state(&service()).unwrap();
    let error = failing_rollback(&ports, &orchestrator).await;
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "rolled back: {} were running before and keep running; the live version",
            blue[0].name
        )),
        "{text}"
    );
    assert!(
        !text.contains("recreated") && !text.contains("started again"),
        "names only what happened: {text}"
    );
    assert_eq!(of_color(&orchestrator, Color::Blue), blue);
    assert_eq!(registry.state(&service()).unwrap(), before);
}
