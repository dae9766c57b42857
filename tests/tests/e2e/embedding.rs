//! flow-core as an embedder sees it: this crate depends on flow-core from outside, with the
//! `mocks` feature, and unit-tests a release with the exported mockall mocks of the three
//! ports. If the mocks, the ports or the engine's API were not usable from another crate,
//! this would not compile.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use flow_core::mocks::{MockOrchestrator, MockProxy, MockRegistry};
use flow_core::release::{Engine, Event, Ports, ReleaseOptions, RouteSettings, Step, Timeouts};
use flow_core::{
    Color, Group, Health, Instance, Lease, PathType, ReleaseSpec, ReleaseState, Revision,
    ServiceName, TargetInfo, Versioned,
};
use mockall::predicate::eq;
use mockall::Sequence;

const TARGET: &str = "web";

fn instance(color: Color, number: u32, image: &str) -> Instance {
    let octet = match color {
        Color::Blue => 10,
        Color::Green => 20,
    };
    Instance {
        id: format!("{color}-{number}"),
        name: format!("shop-{TARGET}-{color}-{number}"),
        group: Group::new(TARGET, Some(color)),
        number,
        running: true,
        address: Some(SocketAddr::from(([172, 18, 0, octet + number as u8], 8080))),
        image: image.to_string(),
    }
}

#[tokio::test]
async fn an_embedder_unit_tests_a_blue_green_release_with_a_proxy_switch() {
    let service = ServiceName::new("shop-web").expect("a valid service name");
    let live = ReleaseState {
        color: Some(Color::Blue),
        scale: Some(1),
        last_release: None,
        previous_release: None,
    };
    // Which port did what, in order, for the final check of the whole story.
    let journal = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut order = Sequence::new();

    let mut registry = MockRegistry::new();
    registry
        .expect_lock()
        .times(1)
        .returning(|service, holder, ttl| {
            Ok(Lease {
                service: service.clone(),
                holder: holder.to_string(),
                token: "lease-1".to_string(),
                acquired_at: SystemTime::now(),
                ttl,
            })
        });
    registry.expect_renew().returning(|_| Ok(()));
    registry.expect_load().times(1).returning(move |_| {
        Ok(Versioned {
            value: live.clone(),
            revision: Revision(7),
        })
    });

    let mut orchestrator = MockOrchestrator::new();
    orchestrator
        .expect_describe()
        .with(eq(TARGET))
        .returning(|_| {
            Ok(TargetInfo {
                image: "shop/web:2".to_string(),
                ..TargetInfo::default()
            })
        });
    orchestrator.expect_list().returning(|group: &Group| {
        // Blue is live with one instance; green, the idle colour, is empty.
        Ok(match group.color {
            Some(Color::Blue) => vec![instance(Color::Blue, 1, "shop/web:1")],
            _ => Vec::new(),
        })
    });
    orchestrator.expect_prepare().returning(|_| {
        Ok(ReleaseSpec::new(
            "shop/web:2",
            "sha256:2",
            Default::default(),
        ))
    });
    let started = journal.clone();
    orchestrator
        .expect_start()
        .withf(|group, numbers, spec| {
            *group == Group::new(TARGET, Some(Color::Green))
                && numbers == [1]
                && spec.image == "shop/web:2"
        })
        .times(1)
        .returning(move |group: &Group, numbers: &[u32], _: &ReleaseSpec| {
            started.lock().unwrap().push(format!("start {group}"));
            Ok(numbers
                .iter()
                .map(|&n| instance(Color::Green, n, "shop/web:2"))
                .collect())
        });
    orchestrator
        .expect_health()
        .returning(|_| Ok(Health::Healthy));
    // Healthy instances are registered (as `<service>-green`) before the proxy is switched.
    registry
        .expect_register()
        .withf(|registration| registration.name.ends_with("-green"))
        .times(1)
        .returning(|_| Ok(()));
    registry.expect_deregister().never();
    // A blue-green deploy keeps the old colour: nothing is stopped or removed.
    orchestrator.expect_stop().never();
    orchestrator.expect_remove().never();

    // The point of the test: the proxy is switched to the new colour, and only then is the
    // new state stored.
    let mut proxy = MockProxy::new();
    let switched = journal.clone();
    proxy
        .expect_reconfigure()
        .withf(|route, servers| {
            route.color == Some(Color::Green)
                && route.paths == ["/shop"]
                && servers == [SocketAddr::from(([172, 18, 0, 21], 8080))]
        })
        .times(1)
        .in_sequence(&mut order)
        .returning(move |route, _| {
            switched
                .lock()
                .unwrap()
                .push(format!("proxy -> {:?}", route.color));
            Ok(())
        });
    let stored = journal.clone();
    registry
        .expect_store()
        .withf(|_, state, expected| {
            state.color == Some(Color::Green) && state.scale == Some(1) && *expected == Revision(7)
        })
        .times(1)
        .in_sequence(&mut order)
        .returning(move |_, state, _| {
            stored
                .lock()
                .unwrap()
                .push(format!("store {:?}", state.color));
            Ok(Revision(8))
        });
    let unlocked = journal.clone();
    registry
        .expect_unlock()
        .times(1)
        .in_sequence(&mut order)
        .returning(move |_| {
            unlocked.lock().unwrap().push("unlock".to_string());
            Ok(())
        });

    let engine = Engine::new(
        Ports {
            orchestrator: Arc::new(orchestrator),
            registry: Arc::new(registry),
            proxy: Some(Arc::new(proxy)),
        },
        ReleaseOptions {
            service: service.clone(),
            target: TARGET.to_string(),
            side_targets: Vec::new(),
            blue_green: true,
            steps: vec![Step::Deploy],
            scale: None,
            route: Some(RouteSettings {
                paths: vec!["/shop".to_string()],
                domain: None,
                path_type: PathType::default(),
            }),
            timeouts: Timeouts {
                health_poll: Duration::from_millis(10),
                ..Timeouts::default()
            },
            health_fail_fast: false,
            holder: "shop deployer".to_string(),
        },
    )
    .expect("valid options");

    let events = Mutex::new(Vec::new());
    let report = engine
        .run(&|event: &Event| events.lock().unwrap().push(format!("{event:?}")))
        .await
        .expect("the release succeeds");

    assert_eq!(report.service, service);
    assert_eq!(report.live_color, Some(Color::Green));
    assert_eq!(report.scale, Some(1));
    assert_eq!(
        *journal.lock().unwrap(),
        [
            "start web-green",
            "proxy -> Some(Green)",
            "store Some(Green)",
            "unlock"
        ]
    );
    assert!(
        !events.lock().unwrap().is_empty(),
        "the observer hears the release's progress"
    );
}
