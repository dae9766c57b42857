//! The Compose reader: every accepted syntax, interpolation, warnings and every error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_core::OrchestratorError;
use flow_docker::compose::{
    interpolate, parse_duration, ComposeError, ComposeProject, HealthcheckSpec, PortSpec,
    VolumeSource,
};

fn parse(text: &str) -> Result<ComposeProject, ComposeError> {
    parse_with(text, &HashMap::new())
}

fn parse_with(text: &str, vars: &HashMap<String, String>) -> Result<ComposeProject, ComposeError> {
    ComposeProject::parse(text, Path::new("/srv/app/docker-compose.yml"), vars)
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn reads_every_field_in_list_syntax() {
    let project = parse(
        r#"
version: "3.8"
services:
  web:
    image: demo:v1
    command: serve --port "80 80"
    entrypoint: /bin/entry
    environment:
      - MODE=prod
      - EMPTY=
    labels:
      - team=core
    ports:
      - "8080"
      - "127.0.0.1::8080"
      - "9090:80"
      - "53/udp"
      - 7000
    expose: ["8081", 8082]
    volumes:
      - ./data:/data:ro
      - cache:/cache
      - /scratch
    networks: [front, back]
    healthcheck:
      test: ["CMD", "/demo-server", "--check"]
      interval: 1s
      timeout: 1m30s
      retries: 3
      start_period: 500ms
    restart: on-failure:3
    depends_on: [db]
  db:
    image: db:1
"#,
    )
    .unwrap();
    assert!(project.warnings.is_empty(), "{:?}", project.warnings);
    let web = &project.services["web"];
    assert_eq!(web.image, "demo:v1");
    assert_eq!(
        web.command.as_deref().unwrap(),
        ["serve", "--port", "80 80"]
    );
    assert_eq!(web.entrypoint.as_deref().unwrap(), ["/bin/entry"]);
    assert_eq!(web.environment["MODE"], "prod");
    assert_eq!(web.environment["EMPTY"], "");
    assert_eq!(web.labels["team"], "core");
    assert_eq!(
        web.ports,
        vec![
            PortSpec {
                host_ip: None,
                host_port: None,
                container_port: 8080,
                protocol: "tcp".into()
            },
            PortSpec {
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
                container_port: 8080,
                protocol: "tcp".into()
            },
            PortSpec {
                host_ip: None,
                host_port: Some(9090),
                container_port: 80,
                protocol: "tcp".into()
            },
            PortSpec {
                host_ip: None,
                host_port: None,
                container_port: 53,
                protocol: "udp".into()
            },
            PortSpec {
                host_ip: None,
                host_port: None,
                container_port: 7000,
                protocol: "tcp".into()
            },
        ]
    );
    assert_eq!(web.expose, vec![8081, 8082]);
    assert_eq!(
        web.volumes[0].source,
        VolumeSource::Bind(PathBuf::from("/srv/app/data"))
    );
    assert!(web.volumes[0].read_only);
    assert_eq!(web.volumes[1].source, VolumeSource::Named("cache".into()));
    assert_eq!(web.volumes[2].source, VolumeSource::Anonymous);
    assert_eq!(web.networks, vec!["front", "back"]);
    assert_eq!(
        web.healthcheck,
        Some(HealthcheckSpec::Check {
            test: Some(vec!["CMD".into(), "/demo-server".into(), "--check".into()]),
            interval: Some(Duration::from_secs(1)),
            timeout: Some(Duration::from_secs(90)),
            retries: Some(3),
            start_period: Some(Duration::from_millis(500)),
            start_interval: None,
        })
    );
    assert_eq!(web.restart.as_deref(), Some("on-failure:3"));
    assert_eq!(web.depends_on, vec!["db"]);
    assert_eq!(project.services["db"].networks, vec!["default"]);
}

#[test]
fn reads_map_and_long_syntaxes() {
    let project = parse(
        r#"
services:
  web:
    image: demo:v1
    command: ["serve", "--verbose"]
    entrypoint: ["/demo-server"]
    environment:
      MODE: prod
      PORT: 8080
      DEBUG: false
    labels:
      team: core
    ports:
      - target: 80
        published: 8080
        host_ip: 127.0.0.1
        protocol: tcp
      - target: 81
    volumes:
      - type: volume
        source: cache
        target: /cache
        read_only: true
    networks:
      front:
        aliases: [w]
    healthcheck:
      test: /demo-server --check
    depends_on:
      db:
        condition: service_started
    container_name: the-web
  db:
    image: db:1
    healthcheck:
      disable: true
networks:
  front:
    name: shared-front
volumes:
  cache:
"#,
    )
    .unwrap();
    let web = &project.services["web"];
    assert_eq!(web.command.as_deref().unwrap(), ["serve", "--verbose"]);
    assert_eq!(web.environment["PORT"], "8080");
    assert_eq!(web.environment["DEBUG"], "false");
    assert_eq!(web.labels["team"], "core");
    assert_eq!(web.ports[0].host_port, Some(8080));
    assert_eq!(web.ports[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(web.ports[1].host_port, None);
    assert_eq!(web.volumes[0].source, VolumeSource::Named("cache".into()));
    assert!(web.volumes[0].read_only);
    assert_eq!(web.networks, vec!["front"]);
    assert_eq!(
        web.healthcheck,
        Some(HealthcheckSpec::Check {
            test: Some(vec!["CMD-SHELL".into(), "/demo-server --check".into()]),
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
            start_interval: None,
        })
    );
    assert_eq!(web.depends_on, vec!["db"]);
    assert_eq!(web.container_name.as_deref(), Some("the-web"));
    assert_eq!(
        project.services["db"].healthcheck,
        Some(HealthcheckSpec::Disabled)
    );
    assert_eq!(
        project.networks["front"].name.as_deref(),
        Some("shared-front")
    );
    assert!(project.volumes.contains_key("cache"));
}

#[test]
fn reads_env_files_and_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.env"),
        "# comment\nA=from-file\nB=\"quoted\"\n\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".env"), "TAG=v9\n").unwrap();
    let compose = dir.path().join("docker-compose.yml");
    std::fs::write(
        &compose,
        "services:\n  web:\n    image: demo:${TAG}\n    env_file: app.env\n    environment:\n      A: from-compose\n",
    )
    .unwrap();
    let project = ComposeProject::load(&compose).unwrap();
    let web = &project.services["web"];
    assert_eq!(web.image, "demo:v9", "the .env beside the file is read");
    assert_eq!(web.environment["A"], "from-compose");
    assert_eq!(web.environment["B"], "quoted");
}

#[test]
fn interpolates_all_forms() {
    let v = vars(&[("SET", "yes"), ("EMPTY", "")]);
    assert_eq!(interpolate("a-${SET}-$SET", &v).unwrap(), "a-yes-yes");
    assert_eq!(interpolate("${MISSING:-d}", &v).unwrap(), "d");
    assert_eq!(interpolate("${EMPTY:-d}", &v).unwrap(), "d");
    assert_eq!(interpolate("${EMPTY-d}", &v).unwrap(), "");
    assert_eq!(interpolate("${MISSING-d}", &v).unwrap(), "d");
    assert_eq!(interpolate("${MISSING}", &v).unwrap(), "");
    assert_eq!(interpolate("cost $$5", &v).unwrap(), "cost $5");
    assert!(matches!(
        interpolate("${MISSING:?set it}", &v),
        Err(ComposeError::Interpolation { message, .. }) if message.contains("set it")
    ));
    assert!(matches!(
        interpolate("${OPEN", &v),
        Err(ComposeError::Interpolation { .. })
    ));
    let project = parse_with(
        "services:\n  web:\n    image: demo:${TAG:-v1}\n    environment:\n      - URL=http://${HOST-localhost}/$$x\n",
        &vars(&[("HOST", "example")]),
    )
    .unwrap();
    assert_eq!(project.services["web"].image, "demo:v1");
    assert_eq!(
        project.services["web"].environment["URL"],
        "http://example/$x"
    );
}

#[test]
fn process_environment_wins_over_dot_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "PATH=from-dot-env\n").unwrap();
    let compose = dir.path().join("docker-compose.yml");
    std::fs::write(
        &compose,
        "services:\n  web:\n    image: demo\n    environment:\n      P: ${PATH}\n",
    )
    .unwrap();
    let project = ComposeProject::load(&compose).unwrap();
    assert_eq!(
        project.services["web"].environment["P"],
        std::env::var("PATH").unwrap()
    );
}

#[test]
fn unknown_keys_are_warnings() {
    let project = parse(
        "x-common: &c {}\nsecrets: {}\nservices:\n  web:\n    image: demo\n    build: .\n    x-extra: 1\n    deploy: {resources: {}}\n",
    )
    .unwrap();
    assert_eq!(project.warnings.len(), 3, "{:?}", project.warnings);
    assert!(project.warnings.iter().any(|w| w.contains("\"secrets\"")));
    assert!(project.warnings.iter().any(|w| w.contains("\"build\"")));
    assert!(project
        .warnings
        .iter()
        .any(|w| w.contains("deploy: key \"resources\"")));
}

#[test]
fn missing_file_names_the_path_and_the_flag() {
    let error = ComposeProject::load(Path::new("/nonexistent/docker-compose.yml")).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ComposeError::NotFound { .. }));
    assert!(
        message.contains("/nonexistent/docker-compose.yml")
            && message.contains("-f/--compose-path"),
        "{message}"
    );
}

#[test]
fn malformed_yaml_has_a_location() {
    let error = parse("services:\n  web:\n    image: [unclosed\n").unwrap_err();
    match error {
        ComposeError::Yaml { line, column, .. } => {
            assert!(line >= 3 && column > 0, "{line}:{column}")
        }
        other => panic!("expected a YAML error, got {other}"),
    }
}

#[test]
fn errors_name_the_problem() {
    assert!(matches!(
        parse("version: '3'\n"),
        Err(ComposeError::NoServices { .. })
    ));
    assert!(matches!(
        parse("services: {}\n"),
        Err(ComposeError::NoServices { .. })
    ));
    assert!(matches!(
        parse("services:\n  web:\n    build: .\n").unwrap().runnable("web"),
        Err(ComposeError::NoImage { service }) if service == "web"
    ));
    let error = parse("services:\n  web:\n    image: d\n    healthcheck:\n      interval: soon\n")
        .unwrap_err();
    assert!(
        matches!(&error, ComposeError::InvalidDuration { field, value, .. } if field == "healthcheck.interval" && value == "soon"),
        "{error}"
    );
    let error = parse("services:\n  web:\n    image: d\n    ports: [\"80-90:80\"]\n").unwrap_err();
    assert!(error.to_string().contains("not a port number"), "{error}");
    let project = parse("services:\n  web:\n    image: d\n    restart: false\n").unwrap();
    assert_eq!(project.services["web"].restart.as_deref(), Some("no"));
    let error = parse("services:\n  web:\n    image: d\n    restart: sometimes\n").unwrap_err();
    assert!(error.to_string().contains("restart policy"), "{error}");
}

#[test]
fn unknown_targets_are_reported_with_the_known_ones() {
    let project = parse("services:\n  web:\n    image: d\n  db:\n    image: e\n").unwrap();
    match project.service("api") {
        Err(OrchestratorError::UnknownTarget { target, known }) => {
            assert_eq!(target, "api");
            assert_eq!(known, "db, web");
        }
        other => panic!("expected UnknownTarget, got {other:?}"),
    }
    assert!(matches!(
        project.validate_target("api", false),
        Err(ComposeError::UnknownService { .. })
    ));
}

#[test]
fn blue_green_refuses_fixed_host_ports_and_container_names() {
    let project = parse(
        "services:\n  fixed:\n    image: d\n    ports: [\"8080:80\"]\n  named:\n    image: d\n    container_name: x\n  fine:\n    image: d\n    ports: [\"80\", \"127.0.0.1::81\"]\n    expose: [\"82\"]\n",
    )
    .unwrap();
    let error = project.validate_target("fixed", true).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("8080")
            && message.contains("ports: [\"80\"]")
            && message.contains("expose"),
        "{message}"
    );
    let error = project.validate_target("named", true).unwrap_err();
    assert!(error.to_string().contains("container_name"), "{error}");
    project.validate_target("fine", true).unwrap();
    project.validate_target("fixed", false).unwrap();
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration(""), None);
    assert_eq!(parse_duration("5 days"), None);
}

#[test]
fn default_project_name_follows_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("My App.v2");
    std::fs::create_dir(&sub).unwrap();
    let compose = sub.join("docker-compose.yml");
    std::fs::write(&compose, "services:\n  web:\n    image: d\n").unwrap();
    assert_eq!(
        ComposeProject::load(&compose)
            .unwrap()
            .default_project_name(),
        "myappv2"
    );
    let named = parse("name: shop\nservices:\n  web:\n    image: d\n").unwrap();
    assert_eq!(named.default_project_name(), "shop");
}
