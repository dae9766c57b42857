//! The Compose reader: every accepted syntax, interpolation, warnings and every error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_core::OrchestratorError;
use flow_docker::compose::{
    format_duration, interpolate, parse_duration, ComposeError, ComposeProject, Condition,
    Dependency, HealthcheckSpec, LoadOptions, PortSpec, VolumeSource, MAX_FILE_BYTES,
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
        "x-common: &c {}\nsecrets: {}\nservices:\n  web:\n    image: demo\n    privileged: true\n    x-extra: 1\n    deploy: {resources: {}}\n",
    )
    .unwrap();
    assert_eq!(project.warnings.len(), 3, "{:?}", project.warnings);
    assert!(project.warnings.iter().any(|w| w.contains("\"secrets\"")));
    assert!(project
        .warnings
        .iter()
        .any(|w| w.contains("\"privileged\"")));
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

/// A project directory with the given files, and the path of its `docker-compose.yml`.
fn project_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let compose = dir.path().join("docker-compose.yml");
    (dir, compose)
}

fn load_in(compose: &Path, environment: &[(&str, &str)]) -> Result<ComposeProject, ComposeError> {
    let options = LoadOptions {
        environment: vars(environment),
        profiles: Vec::new(),
    };
    ComposeProject::load_with(compose, &options, &mut Vec::new())
}

#[test]
fn a_build_only_service_blocks_only_itself() {
    let project = parse(
        "services:\n  web:\n    image: demo:v1\n  worker:\n    build: ./worker\n  base:\n    environment: [A=1]\n",
    )
    .unwrap();
    project.validate_target("web", true).unwrap();
    assert!(project.runnable("web").is_ok());
    let error = project.validate_target("worker", true).unwrap_err();
    assert!(
        matches!(&error, ComposeError::NoImage { service } if service == "worker"),
        "{error}"
    );
    assert!(project.service("worker").is_err());
    assert!(matches!(
        project.runnable("base"),
        Err(ComposeError::NoImage { .. })
    ));
    assert_eq!(
        project.services["worker"].build.as_ref().unwrap().context,
        "/srv/app/worker"
    );
}

#[test]
fn merge_keys_are_applied() {
    // 10-fragments.md examples 3 and 4: `<<: *anchor` merges, keys written beside it win.
    let project = parse(
        r#"
x-common: &common
  image: base:1
  restart: always
  environment: &env
    FOO: BAR
    ZOT: QUIX
services:
  web:
    <<: *common
    restart: "no"
    environment:
      <<: *env
      YET_ANOTHER: VARIABLE
  db:
    <<: [*common]
"#,
    )
    .unwrap();
    let web = &project.services["web"];
    assert_eq!(web.image, "base:1");
    assert_eq!(web.restart.as_deref(), Some("no"));
    assert_eq!(web.environment["FOO"], "BAR");
    assert_eq!(web.environment["ZOT"], "QUIX");
    assert_eq!(web.environment["YET_ANOTHER"], "VARIABLE");
    assert_eq!(project.services["db"].restart.as_deref(), Some("always"));
}

#[test]
fn home_is_expanded_in_volume_paths() {
    let project = parse_with(
        "services:\n  web:\n    image: d\n    volumes:\n      - ~/data:/data\n      - ~:/home\n      - type: bind\n        source: ~/long\n        target: /long\n      - ../up:/up\n",
        &vars(&[("HOME", "/home/me")]),
    )
    .unwrap();
    let sources: Vec<_> = project.services["web"]
        .volumes
        .iter()
        .map(|v| v.source.clone())
        .collect();
    assert_eq!(
        sources,
        vec![
            VolumeSource::Bind("/home/me/data".into()),
            VolumeSource::Bind("/home/me".into()),
            VolumeSource::Bind("/home/me/long".into()),
            VolumeSource::Bind("/srv/up".into()),
        ]
    );
}

#[test]
fn env_files_follow_the_specification() {
    // Every example of 05-services.md "Env_file format".
    let (_dir, compose) = project_dir(&[
        (
            "app.env",
            "# Set Rails/Rack environment\nRACK_ENV=development\nVAR=\"quoted\"\nA=VAL # comment\nB=VAL# not a comment\nC=\"VAL # not a comment\"\nD=\"VAL\" # comment\nE='$OTHER'\nF='${OTHER}'\nG='Let\\'s go!'\nH=\"{\\\"hello\\\": \\\"json\\\"}\"\nI=\"some\\tvalue\"\nJ='some\\tvalue'\nK=some\\tvalue\nEMPTY=\nUNSET\nexport EXPORTED=yes\nINTERP=${OTHER}-x\nLATER=${RACK_ENV}\nMULTI=\"one\ntwo\"\n",
        ),
        (
            "docker-compose.yml",
            "services:\n  web:\n    image: d\n    env_file: app.env\n",
        ),
    ]);
    let project = load_in(&compose, &[("OTHER", "other")]).unwrap();
    let env = &project.services["web"].environment;
    let expected = [
        ("RACK_ENV", "development"),
        ("VAR", "quoted"),
        ("A", "VAL"),
        ("B", "VAL# not a comment"),
        ("C", "VAL # not a comment"),
        ("D", "VAL"),
        ("E", "$OTHER"),
        ("F", "${OTHER}"),
        ("G", "Let's go!"),
        ("H", "{\"hello\": \"json\"}"),
        ("I", "some\tvalue"),
        ("J", "some\\tvalue"),
        ("K", "some\\tvalue"),
        ("EMPTY", ""),
        ("EXPORTED", "yes"),
        ("INTERP", "other-x"),
        ("LATER", "development"),
        ("MULTI", "one\ntwo"),
    ];
    for (key, value) in expected {
        assert_eq!(env.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(!env.contains_key("UNSET"), "`VAR` without `=` is unset");
}

#[test]
fn dot_env_comments_do_not_reach_the_file() {
    let (_dir, compose) = project_dir(&[
        (".env", "TAG=v2 # the release\n"),
        (
            "docker-compose.yml",
            "services:\n  web:\n    image: demo:${TAG}\n",
        ),
    ]);
    assert_eq!(
        load_in(&compose, &[]).unwrap().services["web"].image,
        "demo:v2"
    );
}

#[test]
fn long_env_file_entries_honour_required_and_format() {
    let (_dir, compose) = project_dir(&[
        ("default.env", "A=1\nB=2\n"),
        ("raw.env", "R=\"kept\" $AS_IS\n"),
        (
            "docker-compose.yml",
            "services:\n  web:\n    image: d\n    env_file:\n      - path: ./default.env\n        required: true\n      - path: ./override.env\n        required: false\n      - path: ./raw.env\n        format: raw\n",
        ),
    ]);
    let project = load_in(&compose, &[]).unwrap();
    let env = &project.services["web"].environment;
    assert_eq!(env["A"], "1");
    assert_eq!(env["R"], "\"kept\" $AS_IS");

    let (_dir, compose) = project_dir(&[(
        "docker-compose.yml",
        "services:\n  web:\n    image: d\n    env_file:\n      - path: ./missing.env\n",
    )]);
    let error = load_in(&compose, &[]).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, ComposeError::MissingEnvFile { service, .. } if service == "web")
            && message.contains("missing.env")
            && message.contains("required: false"),
        "{message}"
    );
}

#[test]
fn every_interpolation_form_of_the_specification() {
    let v = vars(&[("SET", "yes"), ("EMPTY", ""), ("FOO", "foo")]);
    let cases = [
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${MISSING:+alt}", ""),
        ("${SET+alt}", "alt"),
        ("${EMPTY+alt}", "alt"),
        ("${MISSING+alt}", ""),
        ("${MISSING:-${FOO}}", "foo"),
        ("${MISSING:-${ALSO_MISSING:-default}}", "default"),
        ("${SET?$FOO}", "yes"),
        ("${SET:+${FOO}-x}", "foo-x"),
        ("$1 and $ alone", "$1 and $ alone"),
        ("$$SET", "$SET"),
        ("${EMPTY?unused}", ""),
    ];
    for (text, expected) in cases {
        assert_eq!(interpolate(text, &v).unwrap(), expected, "{text}");
    }
    let error = interpolate("${EMPTY:?set EMPTY to the port}", &v).unwrap_err();
    assert!(
        error.to_string().contains("set EMPTY to the port"),
        "{error}"
    );
    let error = interpolate("${MISSING?needs ${FOO}}", &v).unwrap_err();
    assert!(error.to_string().contains("needs foo"), "{error}");

    // In a file, the message names the file and the key.
    let error = parse_with(
        "services:\n  web:\n    image: demo:${TAG:?give the release tag}\n",
        &HashMap::new(),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("docker-compose.yml")
            && message.contains("services.web.image")
            && message.contains("give the release tag"),
        "{message}"
    );
}

#[test]
fn unset_variables_are_warnings() {
    let (_dir, compose) = project_dir(&[(
        "docker-compose.yml",
        "services:\n  web:\n    image: demo:${TAG}\n",
    )]);
    let mut warnings = Vec::new();
    ComposeProject::load_with(&compose, &LoadOptions::default(), &mut warnings).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("TAG is not set")),
        "{warnings:?}"
    );
}

#[test]
fn tmpfs_in_both_syntaxes() {
    let project = parse(
        "services:\n  web:\n    image: d\n    tmpfs:\n      - /run\n      - /data:mode=755,uid=1009\n    volumes:\n      - type: tmpfs\n        target: /cache\n        tmpfs:\n          size: 1000000\n          mode: 0o1777\n",
    )
    .unwrap();
    let volumes = &project.services["web"].volumes;
    let tmpfs: Vec<(String, VolumeSource)> = volumes
        .iter()
        .map(|v| (v.target.clone(), v.source.clone()))
        .collect();
    assert!(
        tmpfs.contains(&(
            "/cache".into(),
            VolumeSource::Tmpfs("size=1000000,mode=1777".into())
        )),
        "{tmpfs:?}"
    );
    assert!(tmpfs.contains(&("/run".into(), VolumeSource::Tmpfs(String::new()))));
    assert!(tmpfs.contains(&(
        "/data".into(),
        VolumeSource::Tmpfs("mode=755,uid=1009".into())
    )));
}

#[test]
fn network_settings_and_top_level_network_options() {
    let project = parse(
        r#"
services:
  web:
    image: d
    networks:
      front:
        aliases: [www, site]
      back:
        ipv4_address: 172.16.238.10
      plain:
networks:
  front:
    driver: bridge
    driver_opts: {com.docker.network.bridge.enable_icc: "true"}
  back:
    ipam:
      driver: default
      config:
        - subnet: 172.16.238.0/24
          gateway: 172.16.238.1
  plain:
    internal: true
    attachable: true
"#,
    )
    .unwrap();
    let web = &project.services["web"];
    assert_eq!(web.networks, vec!["front", "back", "plain"]);
    assert_eq!(web.network_settings["front"].aliases, vec!["www", "site"]);
    assert_eq!(
        web.network_settings["back"].ipv4_address.as_deref(),
        Some("172.16.238.10")
    );
    assert!(!web.network_settings.contains_key("plain"));
    assert_eq!(project.networks["front"].driver.as_deref(), Some("bridge"));
    let ipam = project.networks["back"].ipam.as_ref().unwrap();
    assert_eq!(ipam.config[0].subnet.as_deref(), Some("172.16.238.0/24"));
    assert_eq!(ipam.config[0].gateway.as_deref(), Some("172.16.238.1"));
    assert!(project.networks["plain"].internal && project.networks["plain"].attachable);
    // One fixed address cannot be held by two colours.
    let error = project.validate_target("web", true).unwrap_err();
    assert!(error.to_string().contains("172.16.238.10"), "{error}");
    project.validate_target("web", false).unwrap();
}

#[test]
fn healthcheck_start_settings_and_replicas() {
    let project = parse(
        "services:\n  web:\n    image: d\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      start_period: 40s\n      start_interval: 5s\n    deploy:\n      replicas: 3\n  api:\n    image: d\n    scale: 2\n",
    )
    .unwrap();
    match &project.services["web"].healthcheck {
        Some(HealthcheckSpec::Check {
            start_period,
            start_interval,
            ..
        }) => {
            assert_eq!(*start_period, Some(Duration::from_secs(40)));
            assert_eq!(*start_interval, Some(Duration::from_secs(5)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(project.services["web"].replicas, Some(3));
    assert_eq!(project.services["api"].replicas, Some(2));
    let error = parse("services:\n  web:\n    image: d\n    scale: 2\n    deploy: {replicas: 3}\n")
        .unwrap_err();
    assert!(error.to_string().contains("deploy.replicas"), "{error}");
}

#[test]
fn warnings_survive_a_failed_load() {
    let (_dir, compose) = project_dir(&[(
        "docker-compose.yml",
        "secrets: {}\nservices:\n  web:\n    image: d\n    privileged: true\n    ports: [\"not-a-port\"]\n",
    )]);
    let mut warnings = Vec::new();
    let error =
        ComposeProject::load_with(&compose, &LoadOptions::default(), &mut warnings).unwrap_err();
    assert!(error.to_string().contains("not-a-port"), "{error}");
    assert!(
        warnings.iter().any(|w| w.contains("\"secrets\"")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("\"privileged\"")),
        "{warnings:?}"
    );
}

#[test]
fn nested_keys_that_change_a_container_are_warned_by_name() {
    let project = parse(
        r#"
services:
  web:
    image: d
    deploy:
      replicas: 2
      resources: {limits: {memory: 1g}}
    healthcheck:
      test: ["CMD", "true"]
      frequency: 1s
    depends_on:
      db:
        condition: service_healthy
        restart: true
    networks:
      default:
        priority: 100
    volumes:
      - type: bind
        source: ./src
        target: /src
        bind: {propagation: rshared}
      - ./code:/code:z
  db:
    image: e
networks:
  default:
    enable_ipv6: true
"#,
    )
    .unwrap();
    let warnings = project.warnings.join("\n");
    for named in [
        "deploy: key \"resources\"",
        "healthcheck: key \"frequency\"",
        "depends_on.db.restart: true is not implemented",
        "networks.default: key \"priority\"",
        "key \"bind\"",
        "mode \"z\"",
        "networks.default: key \"enable_ipv6\"",
    ] {
        assert!(
            warnings.contains(named),
            "{named} missing from:\n{warnings}"
        );
    }
    assert!(
        !warnings.contains("service_healthy"),
        "conditions are waited for: {warnings}"
    );
    assert_eq!(
        project.services["web"].dependency("db"),
        Dependency {
            condition: Condition::Healthy,
            required: true,
            restart: true
        }
    );
}

#[test]
fn depends_on_reads_both_forms_and_orders_services_by_it() {
    // 05-services.md "depends_on": the short form is the long form's defaults.
    let project = parse(
        r#"
services:
  web:
    image: d
    depends_on:
      migrate: {condition: service_completed_successfully}
      cache: {condition: service_started, required: false}
      metrics: {required: "false"}
  migrate:
    image: d
    depends_on: [db]
  db:
    image: d
  cache:
    image: d
"#,
    )
    .unwrap();
    let web = &project.services["web"];
    assert_eq!(web.depends_on, ["migrate", "cache", "metrics"]);
    assert_eq!(
        web.dependency("migrate").condition,
        Condition::CompletedSuccessfully
    );
    assert!(!web.dependency("cache").required);
    assert!(!web.dependency("metrics").required);
    assert_eq!(
        project.services["migrate"].dependency("db"),
        Dependency::default()
    );
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        project
            .start_order(&names(&["web", "cache", "migrate", "db"]))
            .unwrap(),
        names(&["db", "migrate", "cache", "web"]),
        "each after what it depends on; the absent optional metrics is left out"
    );

    let cyclic = parse(
        "services:
  a:
    image: d
    depends_on: [b]
  b:
    image: d
    depends_on: [c]
  c:
    image: d
    depends_on: [a]
",
    )
    .unwrap();
    let error = cyclic.start_order(&names(&["a"])).unwrap_err();
    assert!(
        matches!(&error, ComposeError::DependencyCycle { cycle } if cycle == &names(&["a", "b", "c", "a"])),
        "{error:?}"
    );
    assert!(error.to_string().contains("a -> b -> c -> a"), "{error}");

    let missing = parse(
        "services:
  a:
    image: d
    depends_on: [ghost]
",
    )
    .unwrap();
    assert!(matches!(
        missing.start_order(&names(&["a"])),
        Err(ComposeError::UnknownDependency { service, dependency }) if service == "a" && dependency == "ghost"
    ));

    for (bad, field) in [
        ("depends_on: {db: {condition: service_ready}}", "condition"),
        ("depends_on: {db: {required: maybe}}", "required"),
        ("depends_on: [[db]]", "depends_on"),
    ] {
        let error = parse(&format!(
            "services:
  web:
    image: d
    {bad}
  db:
    image: d
"
        ))
        .unwrap_err();
        assert!(error.to_string().contains(field), "{bad}: {error}");
    }
}

#[test]
fn list_valued_labels_are_refused() {
    let error =
        parse("services:\n  web:\n    image: d\n    labels:\n      a: [x, y]\n").unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("\"web\"") && message.contains("labels") && message.contains("\"a\""),
        "{message}"
    );
    let error =
        parse("services:\n  web:\n    image: d\n    environment:\n      A: {b: c}\n").unwrap_err();
    assert!(error.to_string().contains("environment"), "{error}");
    let error = parse(
        "services:\n  web:\n    image: d\n    labels:\n      com.docker.compose.project: x\n",
    )
    .unwrap_err();
    assert!(error.to_string().contains("reserves"), "{error}");
}

#[test]
fn extends_in_the_same_file_and_another() {
    // 05-services.md "Merging service definitions".
    let (_dir, compose) = project_dir(&[
        (
            "common/common.yml",
            "services:\n  webapp:\n    image: common:1\n    env_file: ./common.env\n    volumes:\n      - ./data:/data\n    ports: [\"80\"]\n",
        ),
        ("common/common.env", "FROM_COMMON=1\n"),
        (
            "docker-compose.yml",
            r#"
services:
  base:
    image: busybox
    user: root
  common:
    image: busybox
    extends:
      service: base
    environment:
      TZ: utc
      PORT: 80
    volumes:
      - common-volume:/var/lib/backup/data:rw
    security_opt: [label:role:ROLE]
  cli:
    extends: common
    environment:
      - PORT=8080
    volumes:
      - cli-volume:/var/lib/backup/data:ro
    command: ["echo", "cli"]
  web:
    extends:
      file: common/common.yml
      service: webapp
    ports: ["80", "81"]
"#,
        ),
    ]);
    let mut warnings = Vec::new();
    let project =
        ComposeProject::load_with(&compose, &LoadOptions::default(), &mut warnings).unwrap();
    let cli = &project.services["cli"];
    assert_eq!(cli.image, "busybox");
    assert_eq!(cli.environment["PORT"], "8080");
    assert_eq!(cli.environment["TZ"], "utc");
    assert_eq!(cli.volumes.len(), 1);
    assert_eq!(
        cli.volumes[0].source,
        VolumeSource::Named("cli-volume".into())
    );
    assert!(cli.volumes[0].read_only);
    assert_eq!(cli.command.as_deref().unwrap(), ["echo", "cli"]);
    let web = &project.services["web"];
    assert_eq!(web.image, "common:1");
    let common_dir = compose.parent().unwrap().join("common");
    assert_eq!(
        web.volumes[0].source,
        VolumeSource::Bind(common_dir.join("data")),
        "paths stay relative to the file they were written in"
    );
    assert_eq!(web.environment["FROM_COMMON"], "1");
    let published: Vec<u16> = web.ports.iter().map(|p| p.container_port).collect();
    assert_eq!(published, vec![80, 81], "ports merge without duplicates");
}

#[test]
fn malformed_extends_chains_name_the_service() {
    let cycle =
        parse("services:\n  a:\n    image: d\n    extends: b\n  b:\n    extends: {service: a}\n")
            .unwrap_err();
    let message = cycle.to_string();
    assert!(
        matches!(cycle, ComposeError::Extends { .. }) && message.contains("cycle"),
        "{message}"
    );
    let missing = parse("services:\n  a:\n    image: d\n    extends: nowhere\n").unwrap_err();
    assert!(
        missing.to_string().contains("\"a\"") && missing.to_string().contains("nowhere"),
        "{missing}"
    );
    let (_dir, compose) = project_dir(&[(
        "docker-compose.yml",
        "services:\n  a:\n    extends: {file: other.yml, service: x}\n",
    )]);
    let error = load_in(&compose, &[]).unwrap_err();
    assert!(
        error.to_string().contains("other.yml") && error.to_string().contains("\"a\""),
        "{error}"
    );
    let shapeless = parse("services:\n  a:\n    extends: {file: x.yml}\n").unwrap_err();
    assert!(shapeless.to_string().contains("service"), "{shapeless}");
}

#[test]
fn include_adds_another_project() {
    let (_dir, compose) = project_dir(&[
        (
            "db/compose.yaml",
            "services:\n  db:\n    image: postgres:${PG:-15}\n    volumes: [./init:/init, data:/var/lib/postgresql]\nvolumes:\n  data: {}\n",
        ),
        ("db/.env", "PG=16\n"),
        (
            "docker-compose.yml",
            "include:\n  - db/compose.yaml\nservices:\n  web:\n    image: d\n    depends_on: [db]\n",
        ),
    ]);
    let project = load_in(&compose, &[]).unwrap();
    let db = &project.services["db"];
    assert_eq!(db.image, "postgres:16", "the included project's own .env");
    let db_dir = compose.parent().unwrap().join("db");
    assert_eq!(
        db.volumes[0].source,
        VolumeSource::Bind(db_dir.join("init"))
    );
    assert!(project.volumes.contains_key("data"));
    let overridden = load_in(&compose, &[("PG", "17")]).unwrap();
    assert_eq!(
        overridden.services["db"].image, "postgres:17",
        "the local environment wins"
    );
}

#[test]
fn include_cycles_and_missing_files_are_refused() {
    let (_dir, compose) = project_dir(&[
        (
            "a.yml",
            "include: [docker-compose.yml]\nservices:\n  a:\n    image: d\n",
        ),
        (
            "docker-compose.yml",
            "include: [a.yml]\nservices:\n  web:\n    image: d\n",
        ),
    ]);
    let error = load_in(&compose, &[]).unwrap_err();
    assert!(error.to_string().contains("cycle"), "{error}");
    let (_dir, compose) = project_dir(&[(
        "docker-compose.yml",
        "include:\n  - path: nowhere/compose.yaml\nservices:\n  web:\n    image: d\n",
    )]);
    let error = load_in(&compose, &[]).unwrap_err();
    assert!(
        matches!(error, ComposeError::Include { .. }) && error.to_string().contains("nowhere"),
        "{error}"
    );
}

#[test]
fn profiles_enable_services() {
    // 15-profiles.md's example.
    let text = "services:\n  foo:\n    image: foo\n  bar:\n    image: bar\n    profiles: [test]\n  zot:\n    image: zot\n    profiles: [debug]\n";
    let none = parse(text).unwrap();
    assert!(none.is_enabled("foo") && !none.is_enabled("bar") && !none.is_enabled("zot"));
    assert!(
        none.runnable("bar").is_ok(),
        "a service named explicitly runs anyway"
    );
    let test = parse_with(text, &vars(&[("COMPOSE_PROFILES", "test")])).unwrap();
    assert!(test.is_enabled("bar") && !test.is_enabled("zot"));
    let (_dir, compose) = project_dir(&[("docker-compose.yml", text)]);
    let options = LoadOptions {
        environment: vars(&[("COMPOSE_PROFILES", "test")]),
        profiles: vec!["debug".into()],
    };
    let both = ComposeProject::load_with(&compose, &options, &mut Vec::new()).unwrap();
    assert!(both.is_enabled("bar") && both.is_enabled("zot"));
}

#[test]
fn files_above_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let compose = dir.path().join("docker-compose.yml");
    let file = std::fs::File::create(&compose).unwrap();
    file.set_len(MAX_FILE_BYTES + 1).unwrap();
    let error = ComposeProject::load(&compose).unwrap_err();
    assert!(
        matches!(error, ComposeError::TooLarge { .. })
            && error.to_string().contains("docker-compose.yml"),
        "{error}"
    );
    std::fs::write(&compose, "services:\n  web:\n    image: d\n").unwrap();
    let dot_env = std::fs::File::create(dir.path().join(".env")).unwrap();
    dot_env.set_len(MAX_FILE_BYTES + 1).unwrap();
    let error = ComposeProject::load(&compose).unwrap_err();
    assert!(error.to_string().contains(".env"), "{error}");
}

#[test]
fn durations_print_as_compose_prints_them() {
    for (text, printed) in [
        ("1s", "1s"),
        ("90s", "1m30s"),
        ("1h", "1h0m0s"),
        ("500ms", "500ms"),
        ("1.5s", "1.5s"),
        ("2h3m4s", "2h3m4s"),
    ] {
        assert_eq!(format_duration(parse_duration(text).unwrap()), printed);
    }
}
