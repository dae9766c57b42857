//! The file store against the Registry contract, across instances and processes, and with
//! damaged files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use flow_core::{
    Color, HealthCheck, Lease, Registration, Registry, RegistryError, ReleaseRecord, ReleaseState,
    Revision, ServiceName,
};
use flow_store::FileRegistry;

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn state(color: Option<Color>, scale: Option<u32>) -> ReleaseState {
    ReleaseState {
        color,
        scale,
        last_release: None,
        previous_release: None,
    }
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, RegistryError>, file: &Path) {
    match result {
        Err(RegistryError::Corrupt { key, .. }) => {
            assert_eq!(Path::new(&key), file, "Corrupt must name the file")
        }
        other => panic!("expected Corrupt naming {}, got {other:?}", file.display()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_registry_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    flow_core::conformance::run_all(&FileRegistry::new(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_is_what_the_docs_say() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::new(dir.path().join(".docker-flow"));
    let app = service("shop-web");
    let stored = ReleaseState {
        color: Some(Color::Blue),
        scale: Some(3),
        last_release: Some(ReleaseRecord {
            color: Some(Color::Blue),
            image: "shop/web:2".into(),
            scale: 3,
            released_at: SystemTime::now(),
            released_by: "docker-flow pid 1 on host-a".into(),
            spec: None,
        }),
        previous_release: None,
    };
    registry.store(&app, &stored, Revision::NONE).await.unwrap();
    let service_dir = registry.dir().join("shop-web");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(service_dir.join("state.json")).unwrap())
            .unwrap();
    assert_eq!(json["revision"], 1);
    assert_eq!(json["color"], "blue");
    assert_eq!(json["scale"], 3);
    assert_eq!(json["last_release"]["image"], "shop/web:2");
    assert_eq!(
        std::fs::read_to_string(service_dir.join("color")).unwrap(),
        "blue\n"
    );
    assert_eq!(
        std::fs::read_to_string(service_dir.join("scale")).unwrap(),
        "3\n"
    );
    assert_eq!(registry.load(&app).await.unwrap().value, stored);

    // Clearing a value removes its plain file.
    registry
        .store(&app, &state(None, Some(2)), Revision(1))
        .await
        .unwrap();
    assert!(!service_dir.join("color").exists());

    // Ids with ':' and '/' live in one safe file each and round-trip exactly.
    let registration = Registration {
        id: "host-a/../x:c0ffee:8080".into(),
        name: "shop-web-blue".into(),
        address: "10.0.0.5".into(),
        port: 8080,
        tags: vec!["blue".into()],
        meta: BTreeMap::from([("image".into(), "shop/web:2".into())]),
        check: Some(HealthCheck::http(
            "http://10.0.0.5:8080/health",
            Duration::from_secs(5),
            Some(Duration::from_millis(1500)),
        )),
    };
    registry.register(&registration).await.unwrap();
    let file = registry
        .dir()
        .join("instances")
        .join("host-a%2F%2E%2E%2Fx%3Ac0ffee%3A8080.json");
    assert!(file.is_file(), "expected {}", file.display());
    assert_eq!(
        registry.instances("shop-web-blue").await.unwrap(),
        vec![registration.clone()]
    );
    registry.deregister(&registration.id).await.unwrap();
    assert!(!file.exists());
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&service_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_files_seed_state_until_state_json_exists() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::new(dir.path());
    let app = service("legacy");
    std::fs::create_dir_all(dir.path().join("legacy")).unwrap();
    std::fs::write(dir.path().join("legacy/color"), "green\n").unwrap();
    std::fs::write(dir.path().join("legacy/scale"), "4").unwrap();
    let loaded = registry.load(&app).await.unwrap();
    assert_eq!(loaded.value, state(Some(Color::Green), Some(4)));
    assert_eq!(loaded.revision, Revision::NONE);

    let rev = registry
        .store(&app, &state(Some(Color::Blue), Some(4)), Revision::NONE)
        .await
        .unwrap();
    // From now on state.json rules, whatever the plain files say.
    std::fs::write(dir.path().join("legacy/color"), "green\n").unwrap();
    let loaded = registry.load(&app).await.unwrap();
    assert_eq!(loaded.value.color, Some(Color::Blue));
    assert_eq!(loaded.revision, rev);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_is_committed_once_state_json_is_written_even_if_a_plain_copy_fails() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::new(dir.path());
    let app = service("copies");
    let first = registry
        .store(&app, &state(Some(Color::Blue), Some(1)), Revision::NONE)
        .await
        .unwrap();
    // A directory where the `color` copy goes: renaming the new copy onto it fails.
    let color = dir.path().join("copies/color");
    std::fs::remove_file(&color).unwrap();
    std::fs::create_dir(&color).unwrap();
    std::fs::write(color.join("keep"), "").unwrap();
    let second = registry
        .store(&app, &state(Some(Color::Green), Some(2)), first)
        .await
        .expect("the committed store is reported as such");
    let loaded = registry.load(&app).await.unwrap();
    assert_eq!(loaded.value, state(Some(Color::Green), Some(2)));
    assert_eq!(loaded.revision, second);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_files_are_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::new(dir.path());

    // Bad JSON in state.json: load and store both refuse, the file stays as it was.
    let app = service("app");
    let state_json = dir.path().join("app/state.json");
    std::fs::create_dir_all(state_json.parent().unwrap()).unwrap();
    std::fs::write(&state_json, "{\"revision\": 3, \"color\": ").unwrap();
    assert_corrupt(registry.load(&app).await, &state_json);
    assert_corrupt(
        registry
            .store(&app, &state(Some(Color::Blue), None), Revision(3))
            .await,
        &state_json,
    );
    assert_eq!(
        std::fs::read_to_string(&state_json).unwrap(),
        "{\"revision\": 3, \"color\": "
    );

    // A colour that is not blue/green, a scale that is not a number.
    std::fs::write(
        &state_json,
        r#"{"revision": 3, "color": "purple", "scale": 1, "last_release": null}"#,
    )
    .unwrap();
    assert_corrupt(registry.load(&app).await, &state_json);
    std::fs::write(
        &state_json,
        r#"{"revision": 3, "color": "blue", "scale": "two", "last_release": null}"#,
    )
    .unwrap();
    assert_corrupt(registry.load(&app).await, &state_json);

    // The same in the plain files, when they are what is read.
    let old = service("old");
    std::fs::create_dir_all(dir.path().join("old")).unwrap();
    std::fs::write(dir.path().join("old/color"), "purple\n").unwrap();
    assert_corrupt(registry.load(&old).await, &dir.path().join("old/color"));
    std::fs::write(dir.path().join("old/color"), "blue\n").unwrap();
    std::fs::write(dir.path().join("old/scale"), "many\n").unwrap();
    match registry.load(&old).await {
        Err(e @ RegistryError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("old/scale") && text.contains("many"),
                "{text}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // A damaged registration and a damaged lock record.
    let instance = dir.path().join("instances/x.json");
    std::fs::create_dir_all(instance.parent().unwrap()).unwrap();
    std::fs::write(&instance, "not json").unwrap();
    assert_corrupt(registry.all_instances().await, &instance);
    assert_corrupt(registry.instances("app").await, &instance);
    let lock = dir.path().join("app/lock");
    std::fs::write(&lock, "[]").unwrap();
    assert_corrupt(
        registry.lock(&app, "me", Duration::from_secs(5)).await,
        &lock,
    );
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "[]");
}

#[tokio::test(flavor = "multi_thread")]
async fn io_failures_are_unavailable_naming_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_directory = dir.path().join("file");
    std::fs::write(&not_a_directory, "").unwrap();
    let store_dir = not_a_directory.join("store");
    let registry = FileRegistry::new(&store_dir);
    let app = service("app");
    for result in [
        registry.load(&app).await.map(drop),
        registry
            .store(&app, &ReleaseState::default(), Revision::NONE)
            .await
            .map(drop),
        registry
            .lock(&app, "me", Duration::from_secs(5))
            .await
            .map(drop),
        registry.all_instances().await.map(drop),
    ] {
        match result {
            Err(RegistryError::Unavailable { address, source }) => {
                assert_eq!(address, store_dir.display().to_string());
                assert!(source.to_string().contains("store"), "{source}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_instances_directory_is_not_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::new(dir.path());
    match registry.load(&service("instances")).await {
        Err(RegistryError::Backend { message, .. }) => {
            assert!(message.contains("reserved"), "{message}")
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_on_one_directory_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileRegistry::new(dir.path());
    let b = FileRegistry::new(dir.path());
    let app = service("app");

    let rev = a
        .store(&app, &state(Some(Color::Blue), Some(2)), Revision::NONE)
        .await
        .unwrap();
    let seen = b.load(&app).await.unwrap();
    assert_eq!(seen.value, state(Some(Color::Blue), Some(2)));
    assert_eq!(seen.revision, rev);
    b.store(&app, &state(Some(Color::Green), Some(2)), rev)
        .await
        .unwrap();
    assert!(matches!(
        a.store(&app, &state(Some(Color::Blue), Some(9)), rev).await,
        Err(RegistryError::Conflict { .. })
    ));
    assert_eq!(a.load(&app).await.unwrap().value.color, Some(Color::Green));

    assert_eq!(b.lock_holder(&app).await.unwrap(), None);
    let lease = a.lock(&app, "a", Duration::from_secs(60)).await.unwrap();
    let seen = b.lock_holder(&app).await.unwrap().expect("a holds it");
    assert_eq!((seen.holder.as_str(), seen.since), ("a", lease.acquired_at));
    assert_eq!(
        a.lock_holder(&app).await.unwrap().map(|h| h.holder),
        Some("a".to_string()),
        "the holding store sees itself"
    );
    match b.lock(&app, "b", Duration::from_secs(60)).await {
        Err(RegistryError::Locked { holder, .. }) => assert_eq!(holder, "a"),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(matches!(
        b.unlock(&Lease {
            token: "forged".into(),
            ..lease.clone()
        })
        .await,
        Err(RegistryError::LeaseLost { .. })
    ));
    // b may unlock a's lease (it is in the shared record), just like another process could.
    a.unlock(&lease).await.unwrap();
    b.lock(&app, "b", Duration::from_secs(60)).await.unwrap();

    // Eight writers on separate stores and threads: no increment is lost.
    let counter = service("counter");
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let registry = FileRegistry::new(dir.path());
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut done = 0;
                let mut attempts = 0;
                while done < 10 {
                    attempts += 1;
                    assert!(attempts < 1000, "no progress");
                    let loaded = registry.load(&counter).await.unwrap();
                    let next = state(None, Some(loaded.value.scale.unwrap_or(0) + 1));
                    match registry.store(&counter, &next, loaded.revision).await {
                        Ok(_) => done += 1,
                        Err(RegistryError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(a.load(&counter).await.unwrap().value.scale, Some(80));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_is_taken_over_from_a_live_holder() {
    let dir = tempfile::tempdir().unwrap();
    let old_holder = FileRegistry::new(dir.path());
    let new_holder = FileRegistry::new(dir.path());
    let app = service("app");
    let old = old_holder
        .lock(&app, "old", Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = new_holder
        .lock(&app, "new", Duration::from_secs(60))
        .await
        .unwrap();
    let record_path = dir.path().join("app/lock");
    let record = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap()
    };
    assert_eq!(record()["holder"], "new");
    assert_eq!(
        record()["os_locked"],
        false,
        "the old holder still keeps the OS lock"
    );
    assert!(matches!(
        old_holder.renew(&old).await,
        Err(RegistryError::LeaseLost { .. })
    ));
    // The old holder let go of its OS lock on LeaseLost; the next renew picks it up.
    new_holder.renew(&new).await.unwrap();
    assert_eq!(record()["os_locked"], true);
    new_holder.unlock(&new).await.unwrap();
    assert!(!record_path.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_of_this_store_hands_its_os_lock_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::new(dir.path());
    let app = service("app");
    let old = registry
        .lock(&app, "first", Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = registry
        .lock(&app, "second", Duration::from_secs(60))
        .await
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("app/lock")).unwrap())
            .unwrap();
    assert_eq!(record["holder"], "second");
    assert_eq!(
        record["os_locked"], true,
        "the new lease keeps the OS lock, so a crash would free it at once"
    );
    assert!(matches!(
        registry.unlock(&old).await,
        Err(RegistryError::LeaseLost { .. })
    ));
    registry.unlock(&new).await.unwrap();
}

/// Set in the child process of the crash test: the store directory to lock in.
const CHILD_DIR_ENV: &str = "FLOW_STORE_TEST_LOCK_HOLDER_DIR";
const CRASH_TEST: &str = "a_killed_holder_frees_the_lock_at_once";

/// Kills the child on every way out of the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holder_frees_the_lock_at_once() {
    let app = service("app");
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        // Child: take the lock for ten minutes, say so, and wait to be killed.
        // The registry must live on: dropping it releases its OS locks.
        let registry = FileRegistry::new(dir);
        let lease = registry
            .lock(&app, "crashing child", Duration::from_secs(600))
            .await
            .expect("the child takes the lock");
        println!("LOCK HELD {}", lease.token);
        tokio::time::sleep(Duration::from_secs(60)).await;
        panic!("the parent did not kill this process within 60 s");
    }

    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("re-running the test binary as the lock holder");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let token = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                // libtest may print its own text before ours on the same line.
                .find_map(|line| {
                    line.split_once("LOCK HELD ")
                        .map(|(_, token)| token.trim().to_string())
                })
        }),
    )
    .await
    .expect("the child took the lock within 60 s")
    .unwrap()
    .expect("the child reported its lease");

    let registry = FileRegistry::new(dir.path());
    match registry.lock(&app, "parent", Duration::from_secs(60)).await {
        Err(RegistryError::Locked { holder, .. }) => assert_eq!(holder, "crashing child"),
        other => panic!("expected Locked by the live child, got {other:?}"),
    }
    let seen = registry.lock_holder(&app).await.unwrap();
    assert_eq!(seen.map(|h| h.holder).as_deref(), Some("crashing child"));

    child.0.kill().unwrap(); // SIGKILL: no destructor, no unlock
    child.0.wait().unwrap();
    assert_eq!(
        registry.lock_holder(&app).await.unwrap(),
        None,
        "a killed holder holds nothing, though its record is still there"
    );

    let lease = registry
        .lock(&app, "parent", Duration::from_secs(60))
        .await
        .expect("the lock of a killed holder is free at once, long before its TTL");
    let childs_lease = Lease {
        token,
        holder: "crashing child".into(),
        ..lease.clone()
    };
    assert!(matches!(
        registry.renew(&childs_lease).await,
        Err(RegistryError::LeaseLost { .. })
    ));
    registry.unlock(&lease).await.unwrap();
}
