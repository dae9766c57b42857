use std::collections::HashMap;

use clap::Parser;

use super::*;

const CWD: &str = "/srv/My Shop.v2";

fn context(env: &[(&str, &str)], yml: Option<&str>) -> Context {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Context {
        cwd: PathBuf::from(CWD),
        env: Box::new(move |name| env.get(name).cloned()),
        config_file: yml.map(|text| ConfigFileText {
            path: Path::new(CWD).join(CONFIG_FILE_NAME),
            text: text.to_string(),
        }),
        pid: 42,
        hostname: "build-1".to_string(),
    }
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("docker-flow").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
}

fn run(args: &[&str], env: &[(&str, &str)], yml: Option<&str>) -> Result<Command, ConfigError> {
    load(cli(args), &context(env, yml))
}

fn release(args: &[&str], env: &[(&str, &str)], yml: Option<&str>) -> ReleaseConfig {
    match run(args, env, yml) {
        Ok(Command::Release(config)) => *config,
        other => panic!("{args:?} should be a release, got {other:?}"),
    }
}

fn error(args: &[&str], env: &[(&str, &str)], yml: Option<&str>) -> String {
    match run(args, env, yml) {
        Err(error) => error.to_string(),
        Ok(command) => panic!("{args:?} should be refused, got {command:?}"),
    }
}

#[test]
fn defaults() {
    let config = release(&["-t", "app"], &[], None);
    assert_eq!(config.release.target, "app");
    assert_eq!(config.project, "myshopv2");
    assert_eq!(config.release.service.as_str(), "myshopv2-app");
    assert_eq!(config.release.steps, [Step::Deploy]);
    assert_eq!(config.release.scale, None);
    assert!(!config.release.blue_green);
    assert!(config.release.side_targets.is_empty());
    assert_eq!(config.release.route, None);
    assert_eq!(config.release.timeouts, Timeouts::default());
    assert_eq!(config.release.holder, "docker-flow pid 42 on build-1");
    assert_eq!(
        config.compose_path,
        Path::new("/srv/My Shop.v2/docker-compose.yml")
    );
    assert_eq!(
        config.registry,
        RegistryLocation::File(PathBuf::from("/srv/My Shop.v2/.docker-flow"))
    );
    assert_eq!(config.docker, DockerEndpoint::default());
    assert_eq!(config.proxy, None);
    assert_eq!(config.pull, PullPolicy::Missing);
    assert!(!config.pull_side_targets && !config.dry_run && !config.json);
    assert_eq!(
        (config.health_path, config.port, config.advertise_addr),
        (None, None, None)
    );
    assert!(config.warnings.is_empty());
}

#[test]
fn scalar_layers_default_yml_env_flag() {
    let yml = Some("target: app\nscale: 3\n");
    assert_eq!(
        release(&[], &[], yml).release.scale,
        Some(ScaleSpec::Absolute(3))
    );
    let env = [("FLOW_SCALE", "+2")];
    assert_eq!(
        release(&[], &env, yml).release.scale,
        Some(ScaleSpec::Relative(2))
    );
    assert_eq!(
        release(&["-s", "-1"], &env, yml).release.scale,
        Some(ScaleSpec::Relative(-1))
    );
    // The yml keeps a relative scale's sign (a YAML integer would not).
    let yml = Some("target: app\nscale: +2\n");
    assert_eq!(
        release(&[], &[], yml).release.scale,
        Some(ScaleSpec::Relative(2))
    );
    // Target from each layer.
    let yml = Some("target: from-yml\n");
    assert_eq!(release(&[], &[], yml).release.target, "from-yml");
    let env = [("FLOW_TARGET", "from-env")];
    assert_eq!(release(&[], &env, yml).release.target, "from-env");
    assert_eq!(
        release(&["--target", "flag"], &env, yml).release.target,
        "flag"
    );
}

#[test]
fn empty_env_scalar_counts_as_unset() {
    let config = release(&[], &[("FLOW_TARGET", "")], Some("target: app\n"));
    assert_eq!(config.release.target, "app");
}

#[test]
fn list_layers_and_first_flag_replaces_later_flags_append() {
    let yml = Some("target: app\nblue_green: true\nflow: [deploy, scale]\nside_targets: db\n");
    let config = release(&[], &[], yml);
    assert_eq!(config.release.steps, [Step::Deploy, Step::Scale]);
    assert_eq!(config.release.side_targets, ["db"]);

    let env = [
        ("FLOW", "deploy, stop-old"),
        ("FLOW_SIDE_TARGETS", "db, ,cache"),
    ];
    let config = release(&[], &env, yml);
    assert_eq!(config.release.steps, [Step::Deploy, Step::StopOld]);
    assert_eq!(config.release.side_targets, ["db", "cache"]);

    let config = release(&["-F", "scale", "--flow", "deploy", "-T", "mq"], &env, yml);
    assert_eq!(config.release.steps, [Step::Scale, Step::Deploy]);
    assert_eq!(config.release.side_targets, ["mq"]);
}

#[test]
fn flow_flow_env_wins_over_flow() {
    let env = [("FLOW", "scale"), ("FLOW_FLOW", "deploy,scale")];
    let config = release(&["-t", "app"], &env, None);
    assert_eq!(config.release.steps, [Step::Deploy, Step::Scale]);
    let config = release(&["-t", "app"], &[("FLOW", "scale")], None);
    assert_eq!(config.release.steps, [Step::Scale]);
    let config = release(&[], &[("FLOW", "")], Some("target: app\nflow: [scale]\n"));
    assert_eq!(
        config.release.steps,
        [Step::Deploy],
        "an empty list means the default"
    );
}

#[test]
fn service_paths_layer_and_env_splits_on_commas() {
    let yml = Some("target: app\nservice_path: [/yml]\n");
    let route = |config: ReleaseConfig| config.release.route.unwrap().paths;
    assert_eq!(route(release(&[], &[], yml)), ["/yml"]);
    let env = [("FLOW_SERVICE_PATH", "/a,/b")];
    assert_eq!(route(release(&[], &env, yml)), ["/a", "/b"]);
    assert_eq!(
        route(release(
            &["--service-path", "/c", "--service-path", "/d"],
            &env,
            yml
        )),
        ["/c", "/d"]
    );
}

#[test]
fn step_names_are_case_insensitive() {
    let config = release(
        &["-t", "app", "-b", "-F", "Deploy", "-F", "STOP-OLD"],
        &[],
        None,
    );
    assert_eq!(config.release.steps, [Step::Deploy, Step::StopOld]);
}

#[test]
fn boolean_env_values() {
    for (text, expected) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("Yes", true),
        ("false", false),
        ("0", false),
        ("no", false),
        ("NO", false),
    ] {
        let config = release(&["-t", "app"], &[("FLOW_BLUE_GREEN", text)], None);
        assert_eq!(
            config.release.blue_green, expected,
            "FLOW_BLUE_GREEN={text}"
        );
    }
    assert_eq!(
        error(&["-t", "app"], &[("FLOW_BLUE_GREEN", "maybe")], None),
        "environment variable FLOW_BLUE_GREEN has the invalid value \"maybe\": use true or false (also accepted: yes/no, 1/0)"
    );
}

#[test]
fn boolean_flag_overrides_yml_and_env() {
    let yml = Some("target: app\nblue_green: yes\ndry_run: true\n");
    let config = release(&[], &[("FLOW_JSON", "1")], yml);
    assert!(config.release.blue_green && config.dry_run && config.json);
    let config = release(
        &["--blue-green=false", "--dry-run=no", "--json=0"],
        &[],
        yml,
    );
    assert!(!config.release.blue_green && !config.dry_run && !config.json);
    let config = release(&["-t", "app", "-S"], &[], None);
    assert!(config.pull_side_targets);
}

#[test]
fn invalid_yaml_and_wrong_types_name_the_file_line_and_key() {
    let message = error(&[], &[], Some("target: app\nscale: [1]\n"));
    assert!(
        message.starts_with(
            "/srv/My Shop.v2/docker-flow.yml is invalid: scale: invalid type: sequence"
        ),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
    let message = error(&[], &[], Some("target: [\n"));
    assert!(
        message.starts_with("/srv/My Shop.v2/docker-flow.yml is invalid: "),
        "{message}"
    );
    let message = error(&[], &[], Some("- target\n"));
    assert!(message.contains("docker-flow.yml is invalid"), "{message}");
}

#[test]
fn bad_yml_value_names_line_and_key() {
    assert_eq!(
        error(&[], &[], Some("target: app\nhealth_timeout: soon\n")),
        "/srv/My Shop.v2/docker-flow.yml line 2, key health_timeout has the invalid value \"soon\": use a duration such as 90s, 2m, 500ms or a number of seconds"
    );
}

#[test]
fn unknown_yml_keys_are_warnings() {
    let config = release(&[], &[], Some("target: app\ncolour: red\n"));
    assert_eq!(
        config.warnings,
        ["/srv/My Shop.v2/docker-flow.yml line 2: unknown key \"colour\" is ignored"]
    );
}

#[test]
fn missing_target() {
    assert_eq!(
        error(&[], &[], None),
        "no target given: name the Compose service to release with --target/-t (or FLOW_TARGET, or `target:` in docker-flow.yml)"
    );
    assert!(error(&["-t", " "], &[], None).starts_with("no target given"));
}

#[test]
fn invalid_scale() {
    assert_eq!(
        error(&["-t", "app", "--scale", "lots"], &[], None),
        "--scale: invalid scale \"lots\": use a whole number N (absolute), +N or -N (relative to the stored scale), e.g. --scale=3 or --scale=+2"
    );
    assert!(error(&["-t", "app"], &[("FLOW_SCALE", "2x")], None)
        .starts_with("environment variable FLOW_SCALE: invalid scale \"2x\""));
}

#[test]
fn unknown_and_duplicate_steps() {
    assert_eq!(
        error(&["-t", "app", "-F", "deploy,launch"], &[], None),
        "--flow: unknown step \"launch\": use deploy, scale, stop-old, proxy or rollback"
    );
    assert_eq!(
        error(&["-t", "app", "-F", "deploy", "-F", "Deploy"], &[], None),
        "--flow lists the step deploy twice: give each step once, in the order they should run"
    );
}

#[test]
fn proxy_step_needs_service_path_and_proxy_host() {
    assert_eq!(
        error(&["-t", "app", "-F", "proxy"], &[], None),
        "--service-path is required with -F proxy: give the URL paths the proxy routes to the service, e.g. --service-path=/api"
    );
    assert_eq!(
        error(&["-t", "app", "-F", "proxy", "--service-path", "/api"], &[], None),
        "-F proxy needs --proxy-host: give the host of the proxy's API (run by `docker-flow proxy serve`)"
    );
}

#[test]
fn proxy_host_needs_service_path() {
    assert_eq!(
        error(&["-t", "app"], &[("FLOW_PROXY_HOST", "127.0.0.1")], None),
        "environment variable FLOW_PROXY_HOST configures a proxy, which needs a route: give --service-path too, e.g. --service-path=/api"
    );
}

#[test]
fn service_domain_needs_service_path() {
    assert_eq!(
        error(&["-t", "app", "--service-domain", "shop.example"], &[], None),
        "--service-domain needs --service-path: a route is a set of paths, optionally restricted to a domain"
    );
}

#[test]
fn proxy_docker_host_is_refused() {
    let message = error(
        &["-t", "app", "--proxy-docker-host", "tcp://10.0.0.1:2376"],
        &[],
        None,
    );
    assert_eq!(
        message,
        "--proxy-docker-host is not supported: docker-flow does not start the proxy container itself; run `docker-flow proxy serve` where the proxy should run (README, section \"Running the proxy\") and point --proxy-host at it"
    );
    let message = error(
        &["-t", "app"],
        &[("FLOW_PROXY_DOCKER_CERT_PATH", "/certs")],
        None,
    );
    assert!(
        message.starts_with("environment variable FLOW_PROXY_DOCKER_CERT_PATH is not supported"),
        "{message}"
    );
}

#[test]
fn consul_templates_are_refused() {
    let message = error(
        &["-t", "app", "--consul-template-fe-path", "/t/fe.ctmpl"],
        &[],
        None,
    );
    assert_eq!(
        message,
        "--consul-template-fe-path is not supported: the proxy renders its own HAProxy configuration from the routes docker-flow sends it (paths, domain, path type), so custom Consul templates would have no effect; remove the option"
    );
    let message = error(
        &[],
        &[],
        Some("target: app\nconsul_template_be_path: be.ctmpl\n"),
    );
    assert!(
        message.starts_with(
            "/srv/My Shop.v2/docker-flow.yml line 2, key consul_template_be_path is not supported"
        ),
        "{message}"
    );
}

#[test]
fn stop_old_needs_blue_green() {
    assert_eq!(
        error(&["-t", "app", "-F", "deploy,stop-old"], &[], None),
        "-F stop-old needs --blue-green/-b: without blue-green there is no old colour to stop"
    );
}

#[test]
fn registry_forms() {
    let registry = |args: &[&str]| {
        let mut all = vec!["-t", "app"];
        all.extend_from_slice(args);
        release(&all, &[], None).registry
    };
    assert_eq!(
        registry(&["-f", "deploy/compose.yml", "--registry", "file:state"]),
        RegistryLocation::File(PathBuf::from("/srv/My Shop.v2/deploy/state"))
    );
    assert_eq!(
        registry(&["-f", "deploy/compose.yml"]),
        RegistryLocation::File(PathBuf::from("/srv/My Shop.v2/deploy/.docker-flow"))
    );
    assert_eq!(
        registry(&["--registry", "file:///var/lib/flow"]),
        RegistryLocation::File(PathBuf::from("/var/lib/flow"))
    );
    let consul = |address: &str| RegistryLocation::Consul {
        address: address.to_string(),
    };
    assert_eq!(
        registry(&["--registry", "consul://127.0.0.1:8501"]),
        consul("127.0.0.1:8501")
    );
    assert_eq!(
        registry(&["--registry", "consul://consul"]),
        consul("consul:8500")
    );
    assert_eq!(
        registry(&["--registry", "consul://[::1]:8500"]),
        consul("[::1]:8500")
    );
    assert_eq!(
        registry(&["-c", "http://127.0.0.1:8500"]),
        consul("127.0.0.1:8500")
    );
    assert_eq!(
        registry(&["--consul-address", "consul:9000"]),
        consul("consul:9000")
    );
    assert_eq!(
        registry(&[
            "--registry",
            "consul://consul:8500",
            "-c",
            "http://consul:8500"
        ]),
        consul("consul:8500")
    );
    assert_eq!(
        registry(&["--registry", "etcd://10.0.0.1:2379,etcd-2"]),
        RegistryLocation::Etcd {
            endpoints: vec!["10.0.0.1:2379".to_string(), "etcd-2:2379".to_string()]
        }
    );
}

#[test]
fn invalid_registries() {
    assert_eq!(
        error(&["-t", "app", "--registry", "redis://cache:6379"], &[], None),
        "--registry has the invalid registry \"redis://cache:6379\" (unknown form): use file:PATH, consul://HOST:PORT or etcd://HOST:PORT[,HOST:PORT…]"
    );
    for (value, reason) in [
        ("file:", "the path is empty"),
        ("consul://", "the address is empty"),
        (
            "etcd://a:1,b:99999",
            "\"99999\" is not a port number from 1 to 65535",
        ),
        (
            "consul://bad host",
            "\"bad host\" is not a host name or IP address",
        ),
    ] {
        let message = error(&["-t", "app"], &[("FLOW_REGISTRY", value)], None);
        assert!(
            message.starts_with(&format!(
                "environment variable FLOW_REGISTRY has the invalid registry {value:?} ({reason})"
            )),
            "{message}"
        );
    }
    let message = error(&["-t", "app", "-c", "https://consul:8500"], &[], None);
    assert!(message.contains("(only http:// is supported)"), "{message}");
    assert_eq!(
        error(&["-t", "app", "--registry", "etcd://e:2379", "-c", "consul:8500"], &[], None),
        "--registry and --consul-address choose different registries: give only one (--registry=consul://HOST:PORT is the same as --consul-address=HOST:PORT)"
    );
}

#[test]
fn service_name_override_and_validation() {
    let config = release(&["-t", "app"], &[("FLOW_SERVICENAME", "shop")], None);
    assert_eq!(config.release.service.as_str(), "shop");
    let config = release(&[], &[], Some("target: app\nservicename: shop-2\n"));
    assert_eq!(config.release.service.as_str(), "shop-2");
    assert_eq!(
        error(&["-t", "app", "--service-name", "my shop"], &[], None),
        "invalid service name \"my shop\": use 1 to 200 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit (the service name comes from --service-name); choose a valid one with --service-name (FLOW_SERVICENAME, `servicename:` in docker-flow.yml)"
    );
    let message = error(&["-t", "web/app"], &[], None);
    assert!(
        message.starts_with("invalid service name \"myshopv2-web/app\"")
            && message.contains("(the service name is <project>-<target>)"),
        "{message}"
    );
}

#[test]
fn project_name() {
    let project = |args: &[&str]| {
        let mut all = vec!["-t", "app"];
        all.extend_from_slice(args);
        release(&all, &[], None).project
    };
    assert_eq!(
        project(&["-f", "../_Other-Dir_2/compose.yml"]),
        "other-dir_2"
    );
    assert_eq!(project(&["-f", "/opt/Web.Shop/compose.yml"]), "webshop");
    assert_eq!(project(&["-p", "shop_1"]), "shop_1");
    let config = release(&["-t", "app", "-p", "shop"], &[], None);
    assert_eq!(config.release.service.as_str(), "shop-app");
    assert_eq!(
        error(&["-t", "app", "-p", "Shop"], &[], None),
        "--project has the invalid project name \"Shop\": use lowercase letters, digits, '-' and '_', starting with a letter or digit"
    );
    assert_eq!(
        error(&["-t", "app", "-f", "/compose.yml"], &[], None),
        "cannot derive a project name from the directory /: give one with --project/-p"
    );
}

#[test]
fn timeouts() {
    let timeouts = |args: &[&str]| {
        let mut all = vec!["-t", "app"];
        all.extend_from_slice(args);
        release(&all, &[], None).release.timeouts
    };
    assert_eq!(
        timeouts(&["--health-timeout", "90s"]).health,
        Duration::from_secs(90)
    );
    assert_eq!(
        timeouts(&["--health-timeout", "2m"]).health,
        Duration::from_secs(120)
    );
    assert_eq!(
        timeouts(&["--health-timeout", "500ms"]).health,
        Duration::from_millis(500)
    );
    assert_eq!(
        timeouts(&["--health-timeout", "45"]).health,
        Duration::from_secs(45)
    );
    assert_eq!(
        timeouts(&["--drain-timeout", "1h"]).drain,
        Duration::from_secs(3600)
    );
    assert_eq!(timeouts(&["--drain-timeout", "0"]).drain, Duration::ZERO);
    let untouched = timeouts(&["--health-timeout", "90s"]);
    assert_eq!(untouched.lock_ttl, Timeouts::default().lock_ttl);
    assert_eq!(untouched.drain, Duration::from_secs(30));
    assert_eq!(
        error(&["-t", "app", "--health-timeout", "0"], &[], None),
        "--health-timeout has the invalid value \"0\": use a duration such as 90s, 2m, 500ms or a number of seconds"
    );
    // Go durations, as Docker Flow 1.x and Compose take them.
    assert_eq!(
        timeouts(&["--drain-timeout", "1m30.5s"]).drain,
        Duration::from_millis(90_500)
    );
    assert!(
        error(&["-t", "app", "--drain-timeout", "90 seconds"], &[], None)
            .starts_with("--drain-timeout has the invalid value \"90 seconds\"")
    );
}

#[test]
fn typed_values() {
    let config = release(
        &[
            "-t",
            "app",
            "--pull=Always",
            "--port",
            "8080",
            "--advertise-addr",
            "192.0.2.10",
            "--health-path",
            "/health",
        ],
        &[],
        None,
    );
    assert_eq!(config.pull, PullPolicy::Always);
    assert_eq!(config.port, Some(8080));
    assert_eq!(config.advertise_addr, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(config.health_path.as_deref(), Some("/health"));
    assert_eq!(
        release(&["-t", "app"], &[("FLOW_PULL", "never")], None).pull,
        PullPolicy::Never
    );
    for (args, message) in [
        (
            ["--pull", "sometimes"],
            "--pull has the invalid value \"sometimes\": use always, missing or never",
        ),
        (
            ["--port", "70000"],
            "--port has the invalid value \"70000\": use a port number from 1 to 65535",
        ),
        (
            ["--advertise-addr", "host.local"],
            "--advertise-addr has the invalid value \"host.local\": use an IP address such as 192.0.2.10",
        ),
        (
            ["--health-path", "health"],
            "--health-path has the invalid value \"health\": use an HTTP path starting with '/', e.g. /health",
        ),
        (
            ["--path-type", "path_sub"],
            "--path-type has the invalid value \"path_sub\": use path_beg (prefix), path (exact), path_end or path_reg",
        ),
        (
            ["--service-path", "api"],
            "--service-path has the invalid value \"api\": use a URL path starting with '/' and without spaces, e.g. /api",
        ),
    ] {
        let mut all = vec!["-t", "app"];
        all.extend_from_slice(&args);
        assert_eq!(error(&all, &[], None), message);
    }
}

#[test]
fn route_and_proxy_endpoint() {
    let config = release(
        &[
            "-t",
            "app",
            "-b",
            "-F",
            "deploy,proxy,stop-old",
            "--service-path",
            "/api",
            "--service-path",
            "/v[0-9]+/",
            "--path-type",
            "path_reg",
            "--service-domain",
            "shop.example",
            "--proxy-host",
            "http://127.0.0.1",
        ],
        &[("FLOW_PROXY_TOKEN", "s3cret")],
        Some("target: ignored\nproxy_reconf_port: 9090\n"),
    );
    assert_eq!(
        config.release.route,
        Some(RouteSettings {
            paths: vec!["/api".to_string(), "/v[0-9]+/".to_string()],
            domain: Some("shop.example".to_string()),
            path_type: PathType::Regex,
        })
    );
    let proxy = config.proxy.expect("a proxy endpoint");
    assert_eq!(
        (proxy.host.as_str(), proxy.port, proxy.token.as_deref()),
        ("127.0.0.1", 9090, Some("s3cret"))
    );
    let printed = format!("{proxy:?}");
    assert!(
        !printed.contains("s3cret") && printed.contains("<redacted>"),
        "{printed}"
    );
    let config = release(
        &["-t", "app", "--service-path", "/", "--proxy-host", "proxy"],
        &[],
        None,
    );
    let proxy = config.proxy.unwrap();
    assert_eq!((proxy.port, proxy.token), (8080, None));
    assert_eq!(config.release.route.unwrap().path_type, PathType::Prefix);
    assert!(error(
        &[
            "-t",
            "app",
            "--service-path",
            "/",
            "--proxy-host",
            "proxy:8080"
        ],
        &[],
        None
    )
    .starts_with("--proxy-host has the invalid value \"proxy:8080\""));
}

#[test]
fn docker_endpoint_is_the_explicit_choice_and_leaves_docker_variables_to_the_resolver() {
    let env = [
        ("DOCKER_HOST", "tcp://docker:2376"),
        ("DOCKER_CERT_PATH", "certs"),
    ];
    let docker = release(&["-t", "app"], &env, None).docker;
    assert_eq!(docker, DockerEndpoint::default());
    let yml = Some("target: app\nhost: unix:///yml.sock\n");
    assert_eq!(
        release(&[], &env, yml).docker.host.as_deref(),
        Some("unix:///yml.sock")
    );
    let env = [
        ("DOCKER_HOST", "tcp://docker:2376"),
        ("FLOW_HOST", "tcp://flow:2376"),
    ];
    assert_eq!(
        release(&[], &env, yml).docker.host.as_deref(),
        Some("tcp://flow:2376")
    );
    let docker = release(&["-H", "unix:///flag.sock", "--cert-path", "c"], &env, yml).docker;
    assert_eq!(docker.host.as_deref(), Some("unix:///flag.sock"));
    assert_eq!(docker.cert_path, Some(PathBuf::from("/srv/My Shop.v2/c")));
    let docker = release(&["--context", "remote"], &[("FLOW_CONTEXT", "other")], yml).docker;
    assert_eq!(
        docker.context,
        Some(("remote".to_string(), "--context".to_string()))
    );
    let docker = release(&[], &[("FLOW_CONTEXT", "other")], yml).docker;
    assert_eq!(
        docker.context,
        Some((
            "other".to_string(),
            "environment variable FLOW_CONTEXT".to_string()
        ))
    );
}

#[test]
fn quiet_and_verbose_choose_the_verbosity_and_exclude_each_other() {
    assert_eq!(
        release(&["-t", "app"], &[], None).verbosity,
        Verbosity::Normal
    );
    assert_eq!(
        release(&["-t", "app", "-q"], &[], None).verbosity,
        Verbosity::Quiet
    );
    assert_eq!(
        release(&["-t", "app"], &[("FLOW_VERBOSE", "true")], None).verbosity,
        Verbosity::Verbose
    );
    assert_eq!(
        error(&["-t", "app", "-q"], &[("FLOW_VERBOSE", "1")], None),
        "--quiet and environment variable FLOW_VERBOSE are both set: give only one"
    );
}

#[test]
fn proxy_serve_defaults_and_flags() {
    let Command::ProxyServe(config) = run(&["proxy", "serve"], &[("PATH", "")], None).unwrap()
    else {
        panic!("expected proxy serve");
    };
    assert_eq!(config.api_addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.binds, ["127.0.0.1:8081".parse().unwrap()]);
    assert_eq!(
        config.state_dir,
        Path::new("/srv/My Shop.v2/.docker-flow-proxy")
    );
    assert_eq!(config.haproxy, Path::new("/usr/sbin/haproxy"));
    assert_eq!((config.api_token, config.registry), (None, None));
    assert!(config.https_binds.is_empty());
    assert_eq!(config.certs_dir, None);

    let args = [
        "proxy",
        "serve",
        "--api-addr",
        "[::1]:9000",
        "--bind",
        "127.0.0.1:80",
        "--bind",
        "127.0.0.2:80",
        "--state-dir",
        "/var/lib/proxy",
        "--haproxy",
        "bin/haproxy",
        "--registry",
        "etcd://127.0.0.1:2379",
        "--bind-https",
        "127.0.0.1:443",
        "--certs-dir",
        "certs",
    ];
    let env = [("FLOW_PROXY_TOKEN", "t0ken")];
    let Command::ProxyServe(config) = run(&args, &env, None).unwrap() else {
        panic!("expected proxy serve");
    };
    assert_eq!(config.api_addr, "[::1]:9000".parse().unwrap());
    assert_eq!(config.binds.len(), 2);
    assert_eq!(config.https_binds, ["127.0.0.1:443".parse().unwrap()]);
    assert_eq!(
        config.certs_dir.as_deref(),
        Some(Path::new("/srv/My Shop.v2/certs"))
    );
    assert_eq!(config.state_dir, Path::new("/var/lib/proxy"));
    assert_eq!(config.haproxy, Path::new("/srv/My Shop.v2/bin/haproxy"));
    assert_eq!(config.api_token.as_deref(), Some("t0ken"));
    assert!(!format!("{config:?}").contains("t0ken"));
    assert_eq!(
        config.registry,
        Some(RegistryLocation::Etcd {
            endpoints: vec!["127.0.0.1:2379".to_string()]
        })
    );
    assert_eq!(
        error(&["proxy", "serve", "--bind", "localhost:80"], &[], None),
        "--bind has the invalid value \"localhost:80\": use IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"
    );
    assert_eq!(
        error(&["proxy", "serve", "--bind-https", "localhost:443"], &[], None),
        "--bind-https has the invalid value \"localhost:443\": use IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"
    );
}

#[test]
fn proxy_serve_refuses_an_empty_token_unless_no_auth() {
    let serve = |args: &[&str], env: &[(&str, &str)]| match run(args, env, None).unwrap() {
        Command::ProxyServe(config) => config,
        _ => panic!("expected proxy serve"),
    };
    assert_eq!(
        error(&["proxy", "serve"], &[("FLOW_PROXY_TOKEN", "")], None),
        "environment variable FLOW_PROXY_TOKEN is empty: set a token, or run the API without authentication explicitly with --no-auth"
    );
    assert!(error(&["proxy", "serve", "--api-token", " "], &[], None)
        .starts_with("--api-token is empty"));
    let config = serve(
        &["proxy", "serve", "--no-auth"],
        &[("FLOW_PROXY_TOKEN", "")],
    );
    assert_eq!(config.api_token, None);
    assert_eq!(
        error(&["proxy", "serve", "--no-auth"], &[("FLOW_PROXY_TOKEN", "t")], None),
        "--no-auth conflicts with the token of environment variable FLOW_PROXY_TOKEN: remove one of them"
    );

    assert_eq!(serve(&["proxy", "serve"], &[]).stop_haproxy, None);
    assert_eq!(
        serve(&["proxy", "serve", "--stop-haproxy"], &[]).stop_haproxy,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        serve(
            &["proxy", "serve", "--stop-haproxy", "--stop-timeout", "5s"],
            &[]
        )
        .stop_haproxy,
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        serve(&["proxy", "serve"], &[]).secrets_dir,
        std::path::Path::new("/run/secrets")
    );
    assert!(serve(&["proxy", "serve", "--secrets-dir", "s"], &[])
        .secrets_dir
        .ends_with("s"));
}

#[test]
fn proxy_serve_finds_haproxy_on_path() {
    let dir = std::env::temp_dir().join(format!("flow-cli-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("haproxy");
    std::fs::write(&binary, b"").unwrap();
    let path = format!("/nonexistent-flow-dir:{}", dir.display());
    let result = run(&["proxy", "serve"], &[("PATH", path.as_str())], None);
    std::fs::remove_dir_all(&dir).unwrap();
    let Command::ProxyServe(config) = result.unwrap() else {
        panic!("expected proxy serve");
    };
    assert_eq!(config.haproxy, binary);
}

#[test]
fn registrator() {
    assert_eq!(
        error(&["registrator"], &[], None),
        "docker-flow registrator needs a registry: give --registry (or FLOW_REGISTRY), e.g. --registry=consul://127.0.0.1:8500"
    );
    let env = [
        ("FLOW_REGISTRY", "consul://127.0.0.1:8500"),
        ("DOCKER_HOST", "unix:///d.sock"),
    ];
    let Command::Registrator(config) = run(
        &["registrator", "--ip", "10.1.2.3", "--resync", "5m"],
        &env,
        None,
    )
    .unwrap() else {
        panic!("expected registrator");
    };
    assert_eq!(
        config,
        RegistratorConfig {
            registry: RegistryLocation::Consul {
                address: "127.0.0.1:8500".to_string()
            },
            ip: Some("10.1.2.3".parse().unwrap()),
            resync: Some(Duration::from_secs(300)),
            rules: RegistratorRules::default(),
            ttl: None,
            deregister: flow_registrator::Deregister::Always,
            cleanup: true,
            retry_attempts: Some(0),
            retry_interval: Duration::from_secs(2),
            docker: DockerEndpoint::default(),
        }
    );
    assert!(error(
        &["registrator", "--registry", "file:s", "--resync", "0"],
        &[],
        None
    )
    .starts_with("--resync has the invalid value \"0\""));
}

fn registrator_config(args: &[&str], env: &[(&str, &str)]) -> RegistratorConfig {
    let mut line = vec!["registrator"];
    line.extend_from_slice(args);
    match run(&line, env, None) {
        Ok(Command::Registrator(config)) => config,
        other => panic!("expected registrator: {other:?}"),
    }
}

#[test]
fn registrator_flags_of_registrator_and_their_env() {
    let etcd = [("FLOW_REGISTRY", "etcd://127.0.0.1:2379")];
    let config = registrator_config(
        &[
            "--internal",
            "--explicit",
            "--tags",
            "a,b\\,c",
            "--use-ip-from-label",
            "ipam.ip",
            "--ttl",
            "30",
            "--ttl-refresh",
            "10s",
            "--deregister",
            "on-success",
            "--cleanup=false",
            "--retry-attempts",
            "-1",
            "--retry-interval",
            "500",
        ],
        &etcd,
    );
    assert_eq!(
        config.rules,
        RegistratorRules {
            internal: true,
            explicit: true,
            tags: vec!["a".to_string(), "b,c".to_string()],
            ip_label: Some("ipam.ip".to_string()),
        }
    );
    assert_eq!(
        config.ttl,
        Some(RegistrationTtl {
            ttl: Duration::from_secs(30),
            refresh: Duration::from_secs(10)
        })
    );
    assert_eq!(config.deregister, flow_registrator::Deregister::OnSuccess);
    assert!(!config.cleanup);
    assert_eq!(config.retry_attempts, None);
    assert_eq!(config.retry_interval, Duration::from_millis(500));

    let env = [
        ("FLOW_REGISTRY", "etcd://127.0.0.1:2379"),
        ("FLOW_IP", "192.0.2.7"),
        ("FLOW_RESYNC", "1m"),
        ("FLOW_INTERNAL", "true"),
        ("FLOW_EXPLICIT", "yes"),
        ("FLOW_TAGS", "x"),
        ("FLOW_USE_IP_FROM_LABEL", "l"),
        ("FLOW_TTL", "1m"),
        ("FLOW_TTL_REFRESH", "20s"),
        ("FLOW_DEREGISTER", "on-success"),
        ("FLOW_CLEANUP", "0"),
        ("FLOW_RETRY_ATTEMPTS", "3"),
        ("FLOW_RETRY_INTERVAL", "1s"),
    ];
    let from_env = registrator_config(&[], &env);
    assert_eq!(from_env.ip, Some("192.0.2.7".parse().unwrap()));
    assert_eq!(from_env.resync, Some(Duration::from_secs(60)));
    assert_eq!(
        from_env.rules,
        RegistratorRules {
            internal: true,
            explicit: true,
            tags: vec!["x".to_string()],
            ip_label: Some("l".to_string()),
        }
    );
    assert_eq!(from_env.ttl.map(|t| t.ttl), Some(Duration::from_secs(60)));
    assert_eq!(from_env.deregister, flow_registrator::Deregister::OnSuccess);
    assert!(!from_env.cleanup);
    assert_eq!(from_env.retry_attempts, Some(3));
    assert_eq!(from_env.retry_interval, Duration::from_secs(1));
    // A flag wins over its variable.
    let flag_wins = registrator_config(&["--internal=false"], &env);
    assert!(!flag_wins.rules.internal);
}

#[test]
fn registrator_flags_refused_with_the_reason() {
    let etcd = [("FLOW_REGISTRY", "etcd://127.0.0.1:2379")];
    let consul = [("FLOW_REGISTRY", "consul://127.0.0.1:8500")];
    let refused = |args: &[&str], env: &[(&str, &str)]| {
        let mut line = vec!["registrator"];
        line.extend_from_slice(args);
        error(&line, env, None)
    };
    assert_eq!(
        refused(&["--ttl", "30s"], &etcd),
        "--ttl needs --ttl-refresh as well: registrations that expire must be written again before they do (Registrator's -ttl and -ttl-refresh go together too)"
    );
    assert!(
        refused(&["--ttl-refresh", "30s"], &etcd).starts_with("--ttl-refresh needs --ttl as well")
    );
    assert_eq!(
        refused(&["--ttl", "10s", "--ttl-refresh", "10s"], &etcd),
        "--ttl must be longer than --ttl-refresh, or registrations expire between two refreshes"
    );
    assert!(refused(&["--ttl", "30s", "--ttl-refresh", "10s"], &consul)
        .starts_with("--ttl needs a registry that expires registrations, and consul://127.0.0.1:8500 does not"));
    assert!(refused(&["--deregister", "never"], &etcd)
        .starts_with("--deregister has the invalid value \"never\""));
    assert!(refused(&["--retry-attempts", "-2"], &etcd)
        .starts_with("--retry-attempts has the invalid value \"-2\""));
    assert!(refused(&["--retry-interval", "0"], &etcd)
        .starts_with("--retry-interval has the invalid value \"0\""));
    assert!(refused(&["--cleanup=perhaps"], &etcd).starts_with("--cleanup has the invalid value"));
    assert!(refused(&["--tags", "{{.Config.Hostname}}"], &etcd)
        .contains("a Go template: docker-flow does not render templates in --tags"));
}

#[test]
fn subcommands_ignore_the_yml_file() {
    let result = run(&["proxy", "serve"], &[], Some("not: [valid"));
    assert!(matches!(result, Ok(Command::ProxyServe(_))), "{result:?}");
}

#[test]
fn paths_and_domains_the_proxy_would_refuse_are_refused_before_anything_runs() {
    let quote = error(&["-t", "app", "--service-path", "/a\"b"], &[], None);
    assert!(
        quote.contains("quotes are not allowed in a path"),
        "{quote}"
    );
    let comma = error(
        &[
            "-t",
            "app",
            "--path-type",
            "path_reg",
            "--service-path",
            "^/v[0-9]{1,3}/",
        ],
        &[],
        None,
    );
    assert!(comma.contains("',' is not allowed in a path"), "{comma}");
    let hash = error(&["-t", "app", "--service-path", "/a#b"], &[], None);
    assert!(hash.contains("'#' is not allowed"), "{hash}");
}

#[test]
fn rollback_takes_the_release_options_before_or_after_the_word_and_adds_the_flow_steps() {
    let env = [("FLOW_PROXY_HOST", "127.0.0.1"), ("FLOW", "deploy")];
    let yml = "target: web\nblue_green: true\nservice_path: /web\nflow: [deploy, stop-old]\n";
    for args in [
        &["rollback"][..],
        &["-b", "rollback"][..],
        &["rollback", "-t", "web"][..],
    ] {
        let config = release(args, &env, Some(yml));
        assert_eq!(config.release.steps, [Step::Rollback], "{args:?}");
        assert_eq!(config.release.target, "web");
        assert!(config.release.blue_green);
        assert!(config.proxy.is_some());
    }
    let config = release(
        &["-t", "web", "-b", "rollback", "-F", "stop-old"],
        &[],
        None,
    );
    assert_eq!(config.release.steps, [Step::Rollback, Step::StopOld]);
    let config = release(
        &["rollback", "-t", "web", "-b", "-F", "rollback,stop-old"],
        &[],
        None,
    );
    assert_eq!(config.release.steps, [Step::Rollback, Step::StopOld]);
    let config = release(&["-t", "web", "-b", "-F", "rollback"], &[], None);
    assert_eq!(config.release.steps, [Step::Rollback]);
}

#[test]
fn status_reads_the_same_options_and_refuses_release_only_flags() {
    let yml = "target: web\nblue_green: true\nscale: 3\nflow: deploy\n";
    // A proxy needs no route to be asked for the one it has.
    let env = [
        ("FLOW_PROXY_HOST", "127.0.0.1"),
        ("FLOW_REGISTRY", "consul://127.0.0.1"),
    ];
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["-b", "status"][..],
    ] {
        match run(args, &env, Some(yml)) {
            Ok(Command::Status(config)) => {
                assert_eq!(config.release.target, "web");
                assert!(config.proxy.is_some());
                assert_eq!(
                    config.registry,
                    RegistryLocation::Consul {
                        address: "127.0.0.1:8500".into()
                    }
                );
            }
            other => panic!("{args:?} should be a status, got {other:?}"),
        }
    }
    for (args, flag) in [
        (&["status", "-t", "web", "-s", "2"][..], "--scale"),
        (&["-t", "web", "-F", "deploy", "status"][..], "--flow"),
        (&["status", "-t", "web", "--dry-run"][..], "--dry-run"),
    ] {
        let text = error(args, &[], None);
        assert_eq!(
            text,
            format!("docker-flow status does not use {flag}: it only reads what runs; remove it")
        );
    }
    assert!(error(&["status"], &[], None).contains("no target given"));
}

#[test]
fn a_word_after_release_flags_other_than_rollback_or_status_is_refused() {
    let text = error(&["-t", "web", "proxy"], &[], None);
    assert!(text.starts_with("unexpected argument \"proxy\""), "{text}");
    assert!(text.contains("only rollback and status may follow release options"));
}
