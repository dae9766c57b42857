//! The conformance suites of the ports (feature `conformance`): the [`Registry`] suite here,
//! the [`Orchestrator`](crate::Orchestrator) suite in [`orchestrator`], the
//! [`Proxy`](crate::Proxy) suite in [`proxy`].
//!
//! One list of `async fn`s taking `&dyn Registry`, each checking one clause of the
//! [`Registry` contract](crate::registry). A backend's tests call [`run_all`] (or the functions
//! one by one, to see which clause fails):
//!
//! ```no_run
//! # async fn backend_tests() {
//! let registry = flow_core::memory::MemoryRegistry::new(); // or the backend under test
//! flow_core::conformance::run_all(&registry).await;
//! # }
//! ```
//!
//! # Design
//!
//! * Every function makes its own service names, unique to the process and the moment
//!   (`conformance-<pid>-<nanos>-<n>-<label>`), so the suite can run against a shared real
//!   backend (a Consul agent, an etcd cluster) that other tests use at the same time, and can
//!   run twice against the same one without clean-up between runs.
//! * A failed clause panics with a message naming the clause, as a test assertion does.
//! * Waiting is bounded: the lock-expiry check takes a few seconds of wall clock
//!   ([`DEFAULT_LOCK_TTL`] and a little more), the rest runs as fast as the backend answers.
//! * Concurrency is made with `join_all` over futures borrowing the registry, not with
//!   spawned tasks, so the suite needs no `'static` registry and no particular runtime
//!   flavour; the writers yield between load and store so their calls interleave even on a
//!   backend that never suspends.
//! * Registrations are compared on id, name, address, port, tags and meta. `check` is not
//!   compared: Consul keeps checks apart from its catalog and does not hand them back.
//! * The *Corrupt* and *Errors* clauses are not here: checking them needs a raw value written
//!   under the backend's keys, or a backend that is down, which only the backend's own tests
//!   can arrange (the file store's tests write damaged files, for example).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::domain::{Color, ReleaseRecord, ReleaseSpec, ReleaseState, Revision, ServiceName};
use crate::registry::{HealthCheck, Lease, Registration, Registry, RegistryError};

pub mod orchestrator;
pub mod proxy;

/// The lease TTL the lock-expiry check uses in [`run_all`]: short, so the suite stays fast,
/// and above etcd's minimum lease TTL.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(2);

/// Runs every check of the suite in turn, with [`DEFAULT_LOCK_TTL`] for the expiry check.
pub async fn run_all(registry: &dyn Registry) {
    run_all_with_lock_ttl(registry, DEFAULT_LOCK_TTL).await;
}

/// Runs every check of the suite in turn; the expiry check uses `lock_ttl` (for backends
/// whose leases cannot be shorter, such as Consul sessions, at least 10 s).
pub async fn run_all_with_lock_ttl(registry: &dyn Registry, lock_ttl: Duration) {
    unknown_service_has_default_state(registry).await;
    state_round_trip(registry).await;
    stale_revision_conflicts(registry).await;
    create_only_conflicts_when_stored(registry).await;
    concurrent_writers_lose_no_update(registry).await;
    lock_is_exclusive(registry).await;
    unlock_then_relock(registry).await;
    renew_and_unlock_after_takeover_are_lease_lost(registry).await;
    lock_holder_is_read_without_taking_the_lock(registry).await;
    lock_expires_without_renew(registry, lock_ttl).await;
    instances_register_replace_deregister(registry).await;
    instances_match_names_exactly(registry).await;
    all_instances_sorted_by_id(registry).await;
}

/// A service name no other run, process or check uses.
fn unique_service(label: &str) -> ServiceName {
    ServiceName::new(unique_text(label)).expect("the suite's service names are valid")
}

fn unique_text(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conformance-{}-{nanos:x}-{n}-{label}", std::process::id())
}

/// A state with every field set; the release time is a whole second so that backends that
/// store seconds round-trip it too.
fn full_state(color: Color, scale: u32, image: &str) -> ReleaseState {
    ReleaseState {
        color: Some(color),
        scale: Some(scale),
        last_release: Some(ReleaseRecord {
            color: Some(color),
            image: image.to_string(),
            scale,
            released_at: UNIX_EPOCH + Duration::from_secs(1_795_841_331),
            released_by: "conformance suite pid 1 on host-a".to_string(),
            spec: Some(ReleaseSpec::new(
                image,
                format!("sha256:{:064x}", scale),
                BTreeMap::from([
                    (
                        "command".to_string(),
                        serde_json::json!(["serve", "--port=8080"]),
                    ),
                    (
                        "environment".to_string(),
                        serde_json::json!({"MODE": "a \"quoted\" value", "EMPTY": ""}),
                    ),
                    ("healthcheck".to_string(), serde_json::Value::Null),
                ]),
            )),
        }),
        // The release before it, as a rollback reads it: a record without a spec, as older
        // versions stored them.
        previous_release: Some(ReleaseRecord {
            color: Some(color.other()),
            image: format!("{image}-previous"),
            scale: 1,
            released_at: UNIX_EPOCH + Duration::from_secs(1_795_841_000),
            released_by: "conformance suite pid 1 on host-a".to_string(),
            spec: None,
        }),
    }
}

/// Contract, *State*: `load` of a service never stored returns `ReleaseState::default()` at
/// `Revision::NONE`.
pub async fn unknown_service_has_default_state(registry: &dyn Registry) {
    let service = unique_service("unknown");
    let loaded = registry
        .load(&service)
        .await
        .unwrap_or_else(|e| panic!("{registry}: load of a never-stored service failed: {e}"));
    assert_eq!(
        loaded.value,
        ReleaseState::default(),
        "{registry}: a never-stored service must load the default state"
    );
    assert_eq!(
        loaded.revision,
        Revision::NONE,
        "{registry}: a never-stored service must load at Revision::NONE"
    );
}

/// Contract, *State*: a successful `store` returns a new revision and is visible to every
/// later `load` — colour, scale and last release round-trip exactly, and so does a state with
/// nothing set (as Docker Flow 1.x left it).
pub async fn state_round_trip(registry: &dyn Registry) {
    let service = unique_service("roundtrip");
    let first = full_state(Color::Blue, 3, "registry.example/app:1.0");
    let rev1 = registry
        .store(&service, &first, Revision::NONE)
        .await
        .unwrap_or_else(|e| panic!("{registry}: create-only store of a new service failed: {e}"));
    assert_ne!(
        rev1,
        Revision::NONE,
        "{registry}: store must return a revision other than NONE"
    );
    let loaded = registry.load(&service).await.expect("load after store");
    assert_eq!(
        loaded.value, first,
        "{registry}: load must return what was stored"
    );
    assert_eq!(
        loaded.revision, rev1,
        "{registry}: load must return the revision store returned"
    );

    let second = full_state(Color::Green, 5, "registry.example/app:1.1");
    let rev2 = registry
        .store(&service, &second, rev1)
        .await
        .unwrap_or_else(|e| panic!("{registry}: store at the current revision failed: {e}"));
    assert_ne!(
        rev2, rev1,
        "{registry}: every store must return a new revision"
    );
    let loaded = registry.load(&service).await.expect("load after 2nd store");
    assert_eq!(
        loaded.value, second,
        "{registry}: the second store must win"
    );
    assert_eq!(loaded.revision, rev2);

    let empty = ReleaseState::default();
    let rev3 = registry
        .store(&service, &empty, rev2)
        .await
        .expect("store of an empty state");
    let loaded = registry.load(&service).await.expect("load of empty state");
    assert_eq!(
        loaded.value, empty,
        "{registry}: a state with nothing set must round-trip"
    );
    assert_eq!(loaded.revision, rev3);
}

/// Contract, *State*: `store` with a revision that is no longer the stored one fails with
/// `Conflict` naming the service, and writes nothing.
pub async fn stale_revision_conflicts(registry: &dyn Registry) {
    let service = unique_service("stale");
    let rev1 = registry
        .store(
            &service,
            &full_state(Color::Blue, 1, "app:1"),
            Revision::NONE,
        )
        .await
        .expect("first store");
    let current = full_state(Color::Green, 2, "app:2");
    let rev2 = registry
        .store(&service, &current, rev1)
        .await
        .expect("second store");

    let result = registry
        .store(&service, &full_state(Color::Blue, 9, "app:stale"), rev1)
        .await;
    match result {
        Err(RegistryError::Conflict { service: named }) => {
            assert_eq!(named, service, "{registry}: Conflict must name the service")
        }
        other => panic!("{registry}: store at a stale revision must be Conflict, got {other:?}"),
    }
    let loaded = registry.load(&service).await.expect("load after conflict");
    assert_eq!(
        loaded.value, current,
        "{registry}: a conflicting store must write nothing"
    );
    assert_eq!(
        loaded.revision, rev2,
        "{registry}: a conflicting store must not change the revision"
    );
}

/// Contract, *State*: `store` with `Revision::NONE` (create only) when a state is stored fails
/// with `Conflict` and writes nothing.
pub async fn create_only_conflicts_when_stored(registry: &dyn Registry) {
    let service = unique_service("create-only");
    let stored = full_state(Color::Blue, 2, "app:1");
    let rev1 = registry
        .store(&service, &stored, Revision::NONE)
        .await
        .expect("first create-only store");
    let result = registry
        .store(
            &service,
            &full_state(Color::Green, 7, "app:2"),
            Revision::NONE,
        )
        .await;
    assert!(
        matches!(result, Err(RegistryError::Conflict { .. })),
        "{registry}: a create-only store over a stored state must be Conflict, got {result:?}"
    );
    let loaded = registry.load(&service).await.expect("load after conflict");
    assert_eq!(
        loaded.value, stored,
        "{registry}: a conflicting create-only store must write nothing"
    );
    assert_eq!(loaded.revision, rev1);
}

/// Contract, *State* (compare-and-swap under contention): 8 writers each load the state and
/// store `scale + 1` at the revision they loaded, retrying on `Conflict`, until each has
/// made 4 increments. The final scale equals the number of successful stores: no update is
/// lost, and every `Conflict` left the state untouched.
pub async fn concurrent_writers_lose_no_update(registry: &dyn Registry) {
    const WRITERS: u32 = 8;
    const INCREMENTS_EACH: u32 = 4;
    const MAX_ATTEMPTS_EACH: u32 = 500;
    let service = unique_service("concurrent");

    let writer = |writer_number: u32| {
        let service = service.clone();
        async move {
            let mut done = 0;
            let mut attempts = 0;
            while done < INCREMENTS_EACH {
                attempts += 1;
                assert!(
                    attempts <= MAX_ATTEMPTS_EACH,
                    "{registry}: writer {writer_number} made no progress in {MAX_ATTEMPTS_EACH} attempts"
                );
                let loaded = registry.load(&service).await.expect("load by a writer");
                let mut next = loaded.value.clone();
                next.scale = Some(loaded.value.scale.unwrap_or(0) + 1);
                // Let the other writers load the same revision before this one stores.
                tokio::task::yield_now().await;
                match registry.store(&service, &next, loaded.revision).await {
                    Ok(_) => done += 1,
                    Err(RegistryError::Conflict { .. }) => {}
                    Err(e) => panic!("{registry}: store by a writer failed: {e}"),
                }
            }
        }
    };
    futures::future::join_all((1..=WRITERS).map(writer)).await;

    let loaded = registry.load(&service).await.expect("final load");
    assert_eq!(
        loaded.value.scale,
        Some(WRITERS * INCREMENTS_EACH),
        "{registry}: concurrent compare-and-swap increments lost updates"
    );
}

/// Takes a lock that the contract says must be free, panicking with the clause otherwise.
async fn lock_free(
    registry: &dyn Registry,
    service: &ServiceName,
    holder: &str,
    ttl: Duration,
    clause: &str,
) -> Lease {
    registry
        .lock(service, holder, ttl)
        .await
        .unwrap_or_else(|e| panic!("{registry}: {clause}: lock by {holder} failed: {e}"))
}

/// Asserts that `lock` fails with `Locked` naming `holder` and a `since` close to
/// `acquired_at`.
async fn assert_locked_by(
    registry: &dyn Registry,
    service: &ServiceName,
    holder: &str,
    acquired_at: SystemTime,
    clause: &str,
) {
    match registry
        .lock(service, "conformance intruder", Duration::from_secs(30))
        .await
    {
        Err(RegistryError::Locked {
            service: named,
            holder: named_holder,
            since,
        }) => {
            assert_eq!(
                &named, service,
                "{registry}: {clause}: Locked must name the service"
            );
            assert_eq!(
                named_holder, holder,
                "{registry}: {clause}: Locked must name the holder"
            );
            let skew = since
                .duration_since(acquired_at)
                .unwrap_or_else(|e| e.duration());
            assert!(
                skew <= Duration::from_secs(2),
                "{registry}: {clause}: Locked.since must be when the lease was taken (off by {skew:?})"
            );
        }
        other => panic!("{registry}: {clause}: a second lock must be Locked, got {other:?}"),
    }
}

/// Contract, *Lock*: one live lease per service. While it lives, another `lock` fails at once
/// with `Locked` naming the holder and since when; renewing a live lease is fine; locks of
/// different services are independent.
pub async fn lock_is_exclusive(registry: &dyn Registry) {
    let clause = "lock exclusivity";
    let service = unique_service("lock");
    let ttl = Duration::from_secs(30);
    let lease = lock_free(registry, &service, "holder-a pid 1 on host-a", ttl, clause).await;
    assert_eq!(
        lease.service, service,
        "{registry}: the lease must name its service"
    );
    assert_eq!(lease.holder, "holder-a pid 1 on host-a");
    assert_eq!(lease.ttl, ttl, "{registry}: the lease must carry its TTL");

    let started = Instant::now();
    assert_locked_by(registry, &service, &lease.holder, lease.acquired_at, clause).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{registry}: {clause}: a second lock must fail at once, not wait"
    );

    registry
        .renew(&lease)
        .await
        .unwrap_or_else(|e| panic!("{registry}: renew of a live lease failed: {e}"));
    assert_locked_by(registry, &service, &lease.holder, lease.acquired_at, clause).await;

    let other_service = unique_service("lock-other");
    let other = lock_free(
        registry,
        &other_service,
        "holder-b",
        ttl,
        "independent services",
    )
    .await;
    registry.unlock(&other).await.expect("unlock other service");
    registry.unlock(&lease).await.expect("unlock");
}

/// Contract, *Lock*: `unlock` ends the lease, so the next `lock` (by anyone) succeeds, and the
/// unlocked lease cannot be unlocked or renewed again (`LeaseLost`).
pub async fn unlock_then_relock(registry: &dyn Registry) {
    let clause = "unlock then relock";
    let service = unique_service("relock");
    let ttl = Duration::from_secs(30);
    let first = lock_free(registry, &service, "holder-a", ttl, clause).await;
    registry
        .unlock(&first)
        .await
        .unwrap_or_else(|e| panic!("{registry}: unlock of a live lease failed: {e}"));
    let second = lock_free(registry, &service, "holder-a", ttl, clause).await;
    assert_ne!(
        first.token, second.token,
        "{registry}: each lease must have its own token"
    );
    registry.unlock(&second).await.expect("unlock second");
    let third = lock_free(registry, &service, "holder-b", ttl, clause).await;
    registry.unlock(&third).await.expect("unlock third");

    let again = registry.unlock(&third).await;
    assert!(
        matches!(again, Err(RegistryError::LeaseLost { .. })),
        "{registry}: unlock of an unlocked lease must be LeaseLost, got {again:?}"
    );
    let renewed = registry.renew(&third).await;
    assert!(
        matches!(renewed, Err(RegistryError::LeaseLost { .. })),
        "{registry}: renew of an unlocked lease must be LeaseLost, got {renewed:?}"
    );
}

/// Contract, *Lock*: after a lease ended and another holder took the lock, the old lease's
/// `renew` and `unlock` fail with `LeaseLost` naming the service, and leave the new holder's
/// lease live.
pub async fn renew_and_unlock_after_takeover_are_lease_lost(registry: &dyn Registry) {
    let clause = "takeover";
    let service = unique_service("takeover");
    let ttl = Duration::from_secs(30);
    let old = lock_free(registry, &service, "holder-old", ttl, clause).await;
    registry.unlock(&old).await.expect("unlock old");
    let new = lock_free(registry, &service, "holder-new", ttl, clause).await;

    match registry.renew(&old).await {
        Err(RegistryError::LeaseLost { service: named }) => assert_eq!(named, service),
        other => panic!("{registry}: renew of a taken-over lease must be LeaseLost, got {other:?}"),
    }
    match registry.unlock(&old).await {
        Err(RegistryError::LeaseLost { service: named }) => assert_eq!(named, service),
        other => {
            panic!("{registry}: unlock of a taken-over lease must be LeaseLost, got {other:?}")
        }
    }
    assert_locked_by(registry, &service, &new.holder, new.acquired_at, clause).await;
    registry
        .renew(&new)
        .await
        .expect("the new holder's lease must survive the old holder's attempts");
    registry.unlock(&new).await.expect("unlock new");
}

/// Contract, *Lock*: `lock_holder` tells who holds a live lease and since when, `None` once
/// it is unlocked, and takes nothing from the holder (its renew still succeeds).
pub async fn lock_holder_is_read_without_taking_the_lock(registry: &dyn Registry) {
    let clause = "lock holder";
    let service = unique_service("holder");
    let read = || async {
        registry
            .lock_holder(&service)
            .await
            .unwrap_or_else(|e| panic!("{registry}: {clause}: lock_holder failed: {e}"))
    };
    assert_eq!(
        read().await,
        None,
        "{registry}: {clause}: a free lock has no holder"
    );
    let lease = lock_free(
        registry,
        &service,
        "docker-flow pid 9 on host-a",
        Duration::from_secs(30),
        clause,
    )
    .await;
    let seen = read()
        .await
        .unwrap_or_else(|| panic!("{registry}: {clause}: a held lock must name its holder"));
    assert_eq!(
        seen.holder, lease.holder,
        "{registry}: {clause}: the holder"
    );
    let skew = seen
        .since
        .duration_since(lease.acquired_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew <= Duration::from_secs(2),
        "{registry}: {clause}: since must be when the lease was taken (off by {skew:?})"
    );
    registry
        .renew(&lease)
        .await
        .unwrap_or_else(|e| panic!("{registry}: {clause}: reading took the lease away: {e}"));
    registry.unlock(&lease).await.expect("unlock");
    assert_eq!(
        read().await,
        None,
        "{registry}: {clause}: an unlocked lock has no holder"
    );
}

/// Contract, *Lock*: a lease is live until its TTL passes without a renew. A renew extends
/// it; once it expired another holder can take the lock, and the expired lease's `renew` and
/// `unlock` fail with `LeaseLost`. Takes about `2.5 × ttl` of wall clock.
pub async fn lock_expires_without_renew(registry: &dyn Registry, ttl: Duration) {
    let clause = "lock expiry";
    let service = unique_service("expiry");
    let old = lock_free(registry, &service, "holder-expiring", ttl, clause).await;

    // A renew half-way keeps it alive past its first TTL.
    tokio::time::sleep(ttl / 2).await;
    registry
        .renew(&old)
        .await
        .unwrap_or_else(|e| panic!("{registry}: renew of a live lease failed: {e}"));
    tokio::time::sleep(ttl * 3 / 4).await;
    assert_locked_by(registry, &service, &old.holder, old.acquired_at, clause).await;

    // Without renew, it ends: another holder gets it (backends may expire a little late).
    let deadline = Instant::now() + ttl * 2 + Duration::from_secs(3);
    let new = loop {
        match registry
            .lock(&service, "holder-after-expiry", Duration::from_secs(30))
            .await
        {
            Ok(lease) => break lease,
            Err(RegistryError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!(
                "{registry}: {clause}: a lease not renewed for its TTL ({ttl:?}) must end, got {other:?}"
            ),
        }
    };
    let renewed = registry.renew(&old).await;
    assert!(
        matches!(renewed, Err(RegistryError::LeaseLost { .. })),
        "{registry}: renew of an expired lease must be LeaseLost, got {renewed:?}"
    );
    let unlocked = registry.unlock(&old).await;
    assert!(
        matches!(unlocked, Err(RegistryError::LeaseLost { .. })),
        "{registry}: unlock of an expired lease must be LeaseLost, got {unlocked:?}"
    );
    registry.unlock(&new).await.expect("unlock after expiry");
}

fn registration(id: &str, name: &str, address: &str, port: u16) -> Registration {
    Registration {
        id: id.to_string(),
        name: name.to_string(),
        address: address.to_string(),
        port,
        tags: vec!["blue".to_string(), "v1".to_string()],
        meta: BTreeMap::from([("version".to_string(), "1.0".to_string())]),
        check: Some(HealthCheck::http(
            format!("http://{address}:{port}/health"),
            Duration::from_secs(5),
            Some(Duration::from_secs(2)),
        )),
    }
}

/// The fields every backend hands back (see the module docs for `check`).
fn key_fields(r: &Registration) -> (&str, &str, &str, u16, &[String], &BTreeMap<String, String>) {
    (&r.id, &r.name, &r.address, r.port, &r.tags, &r.meta)
}

fn assert_same(registry: &dyn Registry, found: &[Registration], wanted: &[&Registration]) {
    let found: Vec<_> = found.iter().map(key_fields).collect();
    let wanted: Vec<_> = wanted.iter().map(|r| key_fields(r)).collect();
    assert_eq!(found, wanted, "{registry}: unexpected registrations");
}

/// Contract, *Instances*: `register` adds, or replaces by id (also moving it to another
/// name); `deregister` removes; removing an unknown id is not an error.
pub async fn instances_register_replace_deregister(registry: &dyn Registry) {
    let name = unique_text("svc-blue");
    let moved_to = unique_text("svc-green");
    let prefix = unique_text("host");
    let a = registration(&format!("{prefix}:a:8080"), &name, "10.0.0.1", 8080);
    let b = registration(&format!("{prefix}:b:8080"), &name, "10.0.0.2", 8080);
    registry.register(&b).await.expect("register b");
    registry.register(&a).await.expect("register a");
    let found = registry.instances(&name).await.expect("instances");
    assert_same(registry, &found, &[&a, &b]);

    let a2 = registration(&a.id, &name, "10.0.0.9", 9090);
    registry.register(&a2).await.expect("re-register a");
    let found = registry.instances(&name).await.expect("instances");
    assert_same(registry, &found, &[&a2, &b]);

    let b_moved = registration(&b.id, &moved_to, "10.0.0.2", 8080);
    registry.register(&b_moved).await.expect("move b");
    assert_same(
        registry,
        &registry.instances(&name).await.expect("instances"),
        &[&a2],
    );
    assert_same(
        registry,
        &registry.instances(&moved_to).await.expect("instances"),
        &[&b_moved],
    );

    registry.deregister(&a.id).await.expect("deregister a");
    assert_same(
        registry,
        &registry.instances(&name).await.expect("instances"),
        &[],
    );
    registry
        .deregister(&a.id)
        .await
        .unwrap_or_else(|e| panic!("{registry}: deregister of a removed id must be Ok: {e}"));
    registry
        .deregister(&format!("{prefix}:never-registered"))
        .await
        .unwrap_or_else(|e| panic!("{registry}: deregister of an unknown id must be Ok: {e}"));
    registry.deregister(&b.id).await.expect("deregister b");
    assert_same(
        registry,
        &registry.instances(&moved_to).await.expect("instances"),
        &[],
    );
}

/// Contract, *Instances*: `instances(name)` lists exactly the registrations with that name,
/// sorted by id: `app` never lists `app2`, and an unknown name lists nothing.
pub async fn instances_match_names_exactly(registry: &dyn Registry) {
    let app = unique_text("app");
    let app2 = format!("{app}2");
    let prefix = unique_text("host");
    let ids = ["c", "a", "b"].map(|s| format!("{prefix}:{s}:80"));
    let in_app: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| registration(id, &app, &format!("10.0.1.{}", i + 1), 80))
        .collect();
    let in_app2 = registration(&format!("{prefix}:a2:80"), &app2, "10.0.2.1", 80);
    for r in in_app.iter().chain([&in_app2]) {
        registry.register(r).await.expect("register");
    }

    let found = registry.instances(&app).await.expect("instances of app");
    let mut wanted: Vec<_> = in_app.iter().collect();
    wanted.sort_by(|x, y| x.id.cmp(&y.id));
    assert_same(registry, &found, &wanted);
    let found = registry.instances(&app2).await.expect("instances of app2");
    assert_same(registry, &found, &[&in_app2]);
    let unknown = registry
        .instances(&unique_text("nobody"))
        .await
        .expect("instances of an unknown name");
    assert!(
        unknown.is_empty(),
        "{registry}: an unknown name must list nothing"
    );

    for r in in_app.iter().chain([&in_app2]) {
        registry.deregister(&r.id).await.expect("deregister");
    }
}

/// Contract, *Instances*: `all_instances` lists every registration, sorted by id.
pub async fn all_instances_sorted_by_id(registry: &dyn Registry) {
    let prefix = unique_text("all");
    let mine: Vec<_> = ["z", "m", "a"]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            registration(
                &format!("{prefix}:{s}"),
                &format!("{prefix}-svc{i}"),
                "10.0.3.1",
                8000 + i as u16,
            )
        })
        .collect();
    for r in &mine {
        registry.register(r).await.expect("register");
    }
    let all = registry.all_instances().await.expect("all_instances");
    assert!(
        all.windows(2).all(|w| w[0].id <= w[1].id),
        "{registry}: all_instances must be sorted by id"
    );
    let found: Vec<_> = all
        .into_iter()
        .filter(|r| r.id.starts_with(&prefix))
        .collect();
    let mut wanted: Vec<_> = mine.iter().collect();
    wanted.sort_by(|x, y| x.id.cmp(&y.id));
    assert_same(registry, &found, &wanted);
    for r in &mine {
        registry.deregister(&r.id).await.expect("deregister");
    }
}
