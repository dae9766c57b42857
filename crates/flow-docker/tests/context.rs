//! Docker contexts resolved from context files the tests write, pointing at the real engine.

use std::collections::HashMap;
use std::path::Path;

use flow_core::OrchestratorError;
use flow_docker::context::{resolve, ContextError, Selection};

/// Writes a context store with `contexts` (name, host, with TLS material) and a config.json
/// choosing `current`.
fn store(dir: &Path, contexts: &[(&str, &str, bool)], current: Option<&str>) {
    for (index, (name, host, tls)) in contexts.iter().enumerate() {
        let id = format!("id{index}");
        let meta = dir.join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            format!(r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#),
        )
        .unwrap();
        if *tls {
            let tls = dir.join("contexts/tls").join(&id).join("docker");
            std::fs::create_dir_all(&tls).unwrap();
            std::fs::write(tls.join("ca.pem"), "not used here").unwrap();
        }
    }
    if let Some(current) = current {
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{}},"currentContext":"{current}"}}"#),
        )
        .unwrap();
    }
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// The socket of the engine the tests use.
fn engine() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

#[tokio::test]
async fn the_current_context_of_config_json_reaches_the_real_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    store(dir.path(), &[("here", &engine, false)], Some("here"));
    let config = dir.path().to_string_lossy().into_owned();
    let resolved = resolve(&Selection::default(), &env(&[("DOCKER_CONFIG", &config)])).unwrap();
    assert_eq!(resolved.settings.host.as_deref(), Some(engine.as_str()));
    assert!(resolved
        .describe()
        .contains("Docker context \"here\", from currentContext in"));
    let docker = flow_docker::connect(&resolved.settings).await.unwrap();
    docker
        .ping()
        .await
        .expect("the engine answers through the context");
}

#[test]
fn precedence_is_the_docker_clis() {
    let dir = tempfile::tempdir().unwrap();
    store(
        dir.path(),
        &[("a", "unix:///a.sock", false), ("b", "tcp://b:2376", true)],
        Some("a"),
    );
    let config = dir.path().to_string_lossy().into_owned();
    let host = |selection: &Selection, pairs: &[(&str, &str)]| {
        let mut all = vec![("DOCKER_CONFIG", config.as_str())];
        all.extend_from_slice(pairs);
        resolve(selection, &env(&all)).unwrap().settings
    };
    let none = Selection::default();
    assert_eq!(host(&none, &[]).host.as_deref(), Some("unix:///a.sock"));
    let b = host(&none, &[("DOCKER_CONTEXT", "b")]);
    assert_eq!(b.host.as_deref(), Some("tcp://b:2376"));
    assert!(b.tls_verify, "TLS material turns TLS on");
    assert!(b.cert_path.unwrap().ends_with("contexts/tls/id1/docker"));
    let env_host = [("DOCKER_CONTEXT", "b"), ("DOCKER_HOST", "unix:///env.sock")];
    assert_eq!(
        host(&none, &env_host).host.as_deref(),
        Some("unix:///env.sock")
    );
    let flag_host = Selection {
        host: Some("unix:///flag.sock".into()),
        ..Selection::default()
    };
    assert_eq!(
        host(&flag_host, &env_host).host.as_deref(),
        Some("unix:///flag.sock")
    );
    let flag_context = Selection {
        context: Some(("b".into(), "--context".into())),
        ..Selection::default()
    };
    assert_eq!(
        host(&flag_context, &env_host).host.as_deref(),
        Some("tcp://b:2376")
    );
    let default = Selection {
        context: Some(("default".into(), "--context".into())),
        ..Selection::default()
    };
    assert_eq!(host(&default, &[]).host, None);
    let both = Selection {
        host: Some("unix:///flag.sock".into()),
        ..flag_context
    };
    assert!(matches!(
        resolve(&both, &env(&[])),
        Err(ContextError::HostAndContext { .. })
    ));
}

#[test]
fn an_unknown_context_names_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), &[("a", "unix:///a.sock", false)], None);
    let config = dir.path().to_string_lossy().into_owned();
    let error = resolve(
        &Selection::default(),
        &env(&[("DOCKER_CONFIG", &config), ("DOCKER_CONTEXT", "nope")]),
    )
    .unwrap_err();
    assert!(
        matches!(&error, ContextError::Unknown { name, known, .. } if name == "nope" && known == &["default", "a"]),
        "{error}"
    );
    assert!(error.to_string().contains("from DOCKER_CONTEXT"), "{error}");
}

#[tokio::test]
async fn a_context_whose_endpoint_is_not_reachable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    store(
        dir.path(),
        &[("gone", "unix:///nonexistent/docker.sock", false)],
        None,
    );
    let config = dir.path().to_string_lossy().into_owned();
    let resolved = resolve(
        &Selection::default(),
        &env(&[("DOCKER_CONFIG", &config), ("DOCKER_CONTEXT", "gone")]),
    )
    .unwrap();
    let error = flow_docker::connect(&resolved.settings).await.unwrap_err();
    assert!(
        matches!(error, OrchestratorError::Unreachable { .. }),
        "{error}"
    );
    assert!(resolved.describe().contains("\"gone\""));
}
