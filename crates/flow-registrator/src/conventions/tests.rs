//! The derivation rules on hand-made inspects (no engine).

use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerInspectResponse, EndpointSettings, NetworkSettings, PortBinding,
};

use super::*;

/// Host `host-a`, whose name resolves to 192.0.2.1.
fn host() -> Conventions {
    Conventions {
        host_address: Some("192.0.2.1".parse().unwrap()),
        ..Conventions::new("host-a")
    }
}

fn internal() -> Conventions {
    Conventions {
        internal: true,
        ..host()
    }
}

fn container(
    env: &[&str],
    labels: &[(&str, &str)],
    exposed: &[&str],
    published: &[(&str, &str, &str)],
) -> ContainerInspectResponse {
    let mut ports: HashMap<String, Option<Vec<PortBinding>>> =
        exposed.iter().map(|p| (p.to_string(), None)).collect();
    for (key, ip, port) in published {
        ports
            .entry(key.to_string())
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(ip.to_string()),
                host_port: Some(port.to_string()),
            });
    }
    ContainerInspectResponse {
        id: Some("c0ffee".to_string()),
        name: Some("/web-1".to_string()),
        config: Some(ContainerConfig {
            image: Some("reg:5000/team/web:2".to_string()),
            env: Some(env.iter().map(|e| e.to_string()).collect()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            exposed_ports: Some(exposed.iter().map(|p| p.to_string()).collect()),
            ..Default::default()
        }),
        network_settings: Some(NetworkSettings {
            ports: Some(ports),
            networks: Some(HashMap::from([(
                "app".to_string(),
                EndpointSettings {
                    ip_address: Some("172.20.0.5".to_string()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn derive(container: &ContainerInspectResponse) -> Vec<Registration> {
    registrations(container, &host()).expect("usable settings")
}

#[test]
fn a_published_port_registers_at_its_host_binding_with_our_meta() {
    let c = container(
        &["SERVICE_NAME=shop", "PATH=/bin"],
        &[],
        &["8080/tcp"],
        &[("8080/tcp", "127.0.0.1", "49153")],
    );
    let [r] = derive(&c).try_into().expect("one registration");
    assert_eq!(r.id, "host-a:web-1:8080");
    assert_eq!(r.name, "shop");
    assert_eq!((r.address.as_str(), r.port), ("127.0.0.1", 49153));
    assert!(r.tags.is_empty());
    assert_eq!(r.check, None);
    assert_eq!(
        r.meta,
        BTreeMap::from([
            (REGISTERED_BY_KEY.to_string(), REGISTERED_BY.to_string()),
            (HOST_KEY.to_string(), "host-a".to_string()),
            (CONTAINER_KEY.to_string(), "c0ffee".to_string()),
        ])
    );
}

#[test]
fn the_default_name_is_the_image_base_name() {
    let c = container(&[], &[], &["8080/tcp"], &[("8080/tcp", "127.0.0.1", "1")]);
    assert_eq!(derive(&c)[0].name, "web");
    assert_eq!(image_base_name("web"), "web");
    assert_eq!(image_base_name("web:1.2"), "web");
    assert_eq!(image_base_name("localhost:5000/a/b/web:3"), "web");
    assert_eq!(image_base_name("web@sha256:abcd"), "web");
}

#[test]
fn several_ports_get_the_port_appended_unless_named_per_port() {
    let c = container(
        &["SERVICE_NAME=shop", "SERVICE_9090_NAME=shop-metrics"],
        &[],
        &["8080/tcp", "9090/tcp", "5353/udp"],
        &[
            ("8080/tcp", "127.0.0.1", "1001"),
            ("9090/tcp", "127.0.0.1", "1002"),
            ("5353/udp", "127.0.0.1", "1003"),
        ],
    );
    let got: Vec<(String, String, u16)> = derive(&c)
        .into_iter()
        .map(|r| (r.id, r.name, r.port))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "host-a:web-1:5353:udp".to_string(),
                "shop-5353".to_string(),
                1003
            ),
            (
                "host-a:web-1:8080".to_string(),
                "shop-8080".to_string(),
                1001
            ),
            (
                "host-a:web-1:9090".to_string(),
                "shop-metrics".to_string(),
                1002
            ),
        ]
    );
}

#[test]
fn service_id_tags_and_labels_over_env() {
    let c = container(
        &[
            "SERVICE_NAME=from-env",
            "SERVICE_ID=custom",
            "SERVICE_TAGS= a, b ,,c",
        ],
        &[("SERVICE_NAME", "from-label")],
        &["8080/tcp"],
        &[("8080/tcp", "127.0.0.1", "1")],
    );
    let [r] = derive(&c).try_into().expect("one registration");
    assert_eq!(r.id, "custom");
    assert_eq!(r.name, "from-label");
    assert_eq!(r.tags, vec!["a", "b", "c"]);
}

#[test]
fn a_container_wide_id_with_several_ports_stays_unique() {
    let c = container(
        &["SERVICE_ID=custom"],
        &[],
        &[],
        &[
            ("8080/tcp", "127.0.0.1", "1"),
            ("9090/tcp", "127.0.0.1", "2"),
        ],
    );
    let ids: Vec<String> = derive(&c).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec!["custom:8080", "custom:9090"]);
}

#[test]
fn ignore_skips_the_container_or_one_port_and_empty_means_not_given() {
    let published = [
        ("8080/tcp", "127.0.0.1", "1"),
        ("9090/tcp", "127.0.0.1", "2"),
    ];
    let all = container(&["SERVICE_IGNORE=true"], &[], &[], &published);
    assert!(derive(&all).is_empty());
    let by_label = container(&[], &[("SERVICE_IGNORE", "1")], &[], &published);
    assert!(derive(&by_label).is_empty());
    let one = container(&["SERVICE_9090_IGNORE=yes"], &[], &[], &published);
    let names: Vec<String> = derive(&one).into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec!["web-8080"]);
    let empty = container(&["SERVICE_IGNORE="], &[], &[], &published[..1]);
    assert_eq!(derive(&empty).len(), 1);
}

#[test]
fn http_check_with_defaults_and_overrides() {
    let c = container(
        &["SERVICE_CHECK_HTTP=/health"],
        &[],
        &[],
        &[("8080/tcp", "127.0.0.1", "49153")],
    );
    assert_eq!(
        derive(&c)[0].check,
        Some(HealthCheck::http(
            "http://127.0.0.1:49153/health",
            Duration::from_secs(10),
            // No SERVICE_CHECK_TIMEOUT: the registry's default, as Registrator leaves it.
            None
        ))
    );
    let c = container(
        &[
            "SERVICE_CHECK_HTTP=/ready",
            "SERVICE_CHECK_INTERVAL=1m30s",
            "SERVICE_8080_CHECK_TIMEOUT=500ms",
        ],
        &[],
        &[],
        &[("8080/tcp", "::1", "49153")],
    );
    assert_eq!(
        derive(&c)[0].check,
        Some(HealthCheck::http(
            "http://[::1]:49153/ready",
            Duration::from_secs(90),
            Some(Duration::from_millis(500))
        ))
    );
}

#[test]
fn unusable_check_settings_are_errors_naming_the_container_and_the_setting() {
    let published = [("8080/tcp", "127.0.0.1", "1")];
    let error_of = |env: &[&str]| {
        registrations(&container(env, &[], &[], &published), &host())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error_of(&["SERVICE_CHECK_HTTP=/h", "SERVICE_CHECK_INTERVAL=often"]),
        "container web-1: SERVICE_CHECK_INTERVAL=\"often\" cannot be used: write a duration such as 10s, 1m30s or 500ms"
    );
    assert_eq!(
        error_of(&["SERVICE_8080_CHECK_TCP=maybe"]),
        "container web-1: SERVICE_8080_CHECK_TCP=\"maybe\" cannot be used: write true or false"
    );
    assert_eq!(
        error_of(&["SERVICE_CHECK_TTL=soon"]),
        "container web-1: SERVICE_CHECK_TTL=\"soon\" cannot be used: write a duration such as 10s, 1m30s or 500ms"
    );
    assert_eq!(
        error_of(&["SERVICE_CHECK_HTTP=/a b"]),
        "container web-1: SERVICE_CHECK_HTTP=\"/a b\" cannot be used: write a URL path such as /health (without spaces)"
    );
    assert_eq!(
        error_of(&["SERVICE_CHECK_TCP=true", "SERVICE_CHECK_INITIAL_STATUS=green"]),
        "container web-1: SERVICE_CHECK_INITIAL_STATUS=\"green\" cannot be used: write passing, warning or critical"
    );
    assert_eq!(
        error_of(&["SERVICE_CHECK_HTTP=/", "SERVICE_CHECK_HTTP_METHOD=GE T"]),
        "container web-1: SERVICE_CHECK_HTTP_METHOD=\"GE T\" cannot be used: write an HTTP method such as GET or HEAD"
    );
    assert_eq!(
        error_of(&["SERVICE_CHECK_GRPC=true", "SERVICE_CHECK_DEREGISTER_AFTER=later"]),
        "container web-1: SERVICE_CHECK_DEREGISTER_AFTER=\"later\" cannot be used: write a duration such as 10s, 1m30s or 500ms"
    );
}

#[test]
fn a_check_path_without_a_leading_slash_is_a_path() {
    let c = container(
        &["SERVICE_CHECK_HTTP=health"],
        &[],
        &[],
        &[("8080/tcp", "127.0.0.1", "1")],
    );
    assert_eq!(
        derive(&c)[0].check.as_ref().map(|c| c.target.clone()),
        Some(CheckTarget::Http("http://127.0.0.1:1/health".to_string()))
    );
}

/// The check of the only port of a container with `env`, published on 127.0.0.1:49153.
fn check_of(env: &[&str]) -> Option<HealthCheck> {
    let c = container(env, &[], &[], &[("8080/tcp", "127.0.0.1", "49153")]);
    derive(&c).remove(0).check
}

#[test]
fn every_check_kind_of_registrator() {
    let plain = |target| HealthCheck {
        target,
        interval: Some(DEFAULT_CHECK_INTERVAL),
        timeout: None,
        method: None,
        grpc_use_tls: false,
        tls_skip_verify: false,
        initial_status: None,
        deregister_after: None,
    };
    assert_eq!(
        check_of(&[
            "SERVICE_8080_CHECK_HTTPS=/health",
            "SERVICE_CHECK_HTTPS_METHOD=head",
            "SERVICE_CHECK_TLS_SKIP_VERIFY=true",
            "SERVICE_CHECK_TIMEOUT=1s",
        ]),
        Some(HealthCheck {
            method: Some("HEAD".to_string()),
            tls_skip_verify: true,
            timeout: Some(Duration::from_secs(1)),
            ..plain(CheckTarget::Http(
                "https://127.0.0.1:49153/health".to_string()
            ))
        })
    );
    assert_eq!(
        check_of(&["SERVICE_CHECK_HTTP=/h", "SERVICE_CHECK_HTTP_METHOD=POST"]),
        Some(HealthCheck {
            method: Some("POST".to_string()),
            ..plain(CheckTarget::Http("http://127.0.0.1:49153/h".to_string()))
        })
    );
    assert_eq!(
        check_of(&["SERVICE_CHECK_TCP=true", "SERVICE_CHECK_INTERVAL=15s"]),
        Some(HealthCheck {
            interval: Some(Duration::from_secs(15)),
            ..plain(CheckTarget::Tcp("127.0.0.1:49153".to_string()))
        })
    );
    assert_eq!(check_of(&["SERVICE_CHECK_TCP=false"]), None);
    assert_eq!(
        check_of(&[
            "SERVICE_CHECK_GRPC=true",
            "SERVICE_CHECK_GRPC_USE_TLS=true",
            "SERVICE_CHECK_TLS_SKIP_VERIFY=1",
        ]),
        Some(HealthCheck {
            grpc_use_tls: true,
            tls_skip_verify: true,
            ..plain(CheckTarget::Grpc("127.0.0.1:49153".to_string()))
        })
    );
    assert_eq!(
        check_of(&["SERVICE_CHECK_SCRIPT=nc $SERVICE_IP $SERVICE_PORT | grep OK"]),
        Some(plain(CheckTarget::Script(vec![
            "sh".to_string(),
            "-c".to_string(),
            "nc 127.0.0.1 49153 | grep OK".to_string()
        ])))
    );
    assert_eq!(
        check_of(&["SERVICE_CHECK_CMD=/bin/health"]),
        Some(plain(CheckTarget::Script(vec![
            "check-cmd".to_string(),
            "c0ffee".to_string(),
            "8080".to_string(),
            "/bin/health".to_string()
        ])))
    );
    assert_eq!(
        check_of(&[
            "SERVICE_CHECK_TTL=30s",
            "SERVICE_CHECK_INITIAL_STATUS=passing",
            "SERVICE_CHECK_DEREGISTER_AFTER=10m",
        ]),
        Some(HealthCheck {
            interval: None,
            initial_status: Some(CheckStatus::Passing),
            deregister_after: Some(Duration::from_secs(600)),
            ..plain(CheckTarget::Ttl(Duration::from_secs(30)))
        })
    );
    // Several kinds: HTTP first, as Registrator's order has it.
    assert_eq!(
        check_of(&["SERVICE_CHECK_TCP=true", "SERVICE_CHECK_HTTP=/h"]).map(|c| c.target),
        Some(CheckTarget::Http("http://127.0.0.1:49153/h".to_string()))
    );
    // Only a status: no check.
    assert_eq!(check_of(&["SERVICE_CHECK_INITIAL_STATUS=passing"]), None);
}

/// The meta of `r` without the registrator's own keys.
fn attributes_of(r: &Registration) -> BTreeMap<String, String> {
    r.meta
        .iter()
        .filter(|(k, _)| ![REGISTERED_BY_KEY, HOST_KEY, CONTAINER_KEY].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn other_settings_become_meta_port_specific_ones_winning() {
    let c = container(
        &[
            "SERVICE_REGION=us-east",
            "SERVICE_443_SNI=enabled",
            "SERVICE_80_REGION=eu",
            "SERVICE_80_NAME=http",
            "SERVICE_EMPTY=",
            "SERVICE_TAGS=www",
        ],
        &[("SERVICE_Owner", "team-a")],
        &[],
        &[
            ("443/tcp", "127.0.0.1", "4443"),
            ("80/tcp", "127.0.0.1", "8000"),
        ],
    );
    let all = derive(&c);
    let https = all.iter().find(|r| r.port == 4443).expect("443");
    let http = all.iter().find(|r| r.port == 8000).expect("80");
    assert_eq!(
        attributes_of(https),
        BTreeMap::from([
            ("owner".to_string(), "team-a".to_string()),
            ("region".to_string(), "us-east".to_string()),
            ("sni".to_string(), "enabled".to_string()),
        ])
    );
    assert_eq!(
        attributes_of(http),
        BTreeMap::from([
            ("owner".to_string(), "team-a".to_string()),
            ("region".to_string(), "eu".to_string()),
        ])
    );
    assert_eq!(http.name, "http");
    // A label key Consul would refuse as a meta key, or one of our own: named, not written.
    let published = [("80/tcp", "127.0.0.1", "1")];
    let c = container(&[], &[("SERVICE_a.b", "x")], &[], &published);
    assert!(matches!(
        registrations(&c, &host()),
        Err(SettingError::Invalid { variable, .. }) if variable == "SERVICE_a.b"
    ));
    let c = container(&[], &[("SERVICE_container-id", "x")], &[], &published);
    assert!(registrations(&c, &host()).is_err());
}

#[test]
fn setting_keys_are_read_without_regard_to_case() {
    let c = container(
        &["SERVICE_name=lower", "SERVICE_8080_Tags=a"],
        &[],
        &[],
        &[("8080/tcp", "127.0.0.1", "1")],
    );
    let [r] = derive(&c).try_into().expect("one registration");
    assert_eq!((r.name.as_str(), r.tags), ("lower", vec!["a".to_string()]));
}

#[test]
fn tags_split_at_unescaped_commas_then_forced_tags_then_udp() {
    // The cases of Registrator's bridge/util_test.go (sorted there; in written order here).
    let cases: [(&str, &[&str]); 9] = [
        ("", &[]),
        ("foobar", &["foobar"]),
        ("foo,bar", &["foo", "bar"]),
        ("foo\\,bar", &["foo,bar"]),
        ("foo,bar\\,baz", &["foo", "bar,baz"]),
        ("\\,foobar\\,", &[",foobar,"]),
        (",,,,foo,,,bar,,,", &["foo", "bar"]),
        (",,,,", &[]),
        (",,\\,,", &[","]),
    ];
    for (text, expected) in cases {
        assert_eq!(split_tags(text), expected, "{text:?}");
    }
    let c = container(
        &["SERVICE_TAGS=/(;\\,:-_)/,a"],
        &[],
        &[],
        &[("5353/udp", "127.0.0.1", "1")],
    );
    let conventions = Conventions {
        tags: vec!["forced".to_string(), "a".to_string()],
        ..host()
    };
    let [r] = registrations(&c, &conventions)
        .unwrap()
        .try_into()
        .expect("one registration");
    assert_eq!(r.tags, vec!["/(;,:-_)/", "a", "forced", "udp"]);
    assert_eq!(r.id, "host-a:web-1:5353:udp");
}

#[test]
fn a_port_name_for_a_port_not_exposed_names_container_and_variable() {
    let c = container(
        &["SERVICE_9999_NAME=ghost"],
        &[],
        &["8080/tcp"],
        &[("8080/tcp", "127.0.0.1", "1")],
    );
    assert_eq!(
        registrations(&c, &host()).unwrap_err().to_string(),
        "container web-1: SERVICE_9999_NAME names port 9999, which the container does not expose; expose the port or remove the setting"
    );
}

#[test]
fn explicit_registers_only_named_ports() {
    let published = [
        ("8080/tcp", "127.0.0.1", "1"),
        ("9090/tcp", "127.0.0.1", "2"),
    ];
    let explicit = Conventions {
        explicit: true,
        ..host()
    };
    let c = container(&["SERVICE_9090_NAME=metrics"], &[], &[], &published);
    let names: Vec<String> = registrations(&c, &explicit)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["metrics"]);
    let unnamed = container(&[], &[], &[], &published);
    assert!(registrations(&unnamed, &explicit).unwrap().is_empty());
}

#[test]
fn the_address_can_come_from_a_label() {
    let conventions = Conventions {
        ip_label: Some("ipam.address".to_string()),
        ..host()
    };
    let published = [("8080/tcp", "0.0.0.0", "49153")];
    let c = container(&[], &[("ipam.address", "10.9.8.7/24")], &[], &published);
    let r = &registrations(&c, &conventions).unwrap()[0];
    assert_eq!((r.address.as_str(), r.port), ("10.9.8.7", 49153));
    let without = container(&[], &[], &[], &published);
    assert_eq!(
        registrations(&without, &conventions).unwrap()[0].address,
        "192.0.2.1"
    );
    let bad = container(&[], &[("ipam.address", "nowhere")], &[], &published);
    assert_eq!(
        registrations(&bad, &conventions).unwrap_err().to_string(),
        "container web-1: label ipam.address=\"nowhere\" is not an IP address (as 10.0.0.5 or 10.0.0.5/24)"
    );
}

#[test]
fn address_rules_for_published_ports() {
    // --ip wins, with the host port.
    let c = container(&[], &[], &[], &[("8080/tcp", "0.0.0.0", "49153")]);
    let with_ip = Conventions {
        ip: Some("10.1.2.3".parse().unwrap()),
        ..host()
    };
    let r = &registrations(&c, &with_ip).unwrap()[0];
    assert_eq!((r.address.as_str(), r.port), ("10.1.2.3", 49153));
    // Every interface and no --ip: the host's address with the host port.
    let r = &derive(&c)[0];
    assert_eq!((r.address.as_str(), r.port), ("192.0.2.1", 49153));
    // …and when the host's name does not resolve, the container is reported.
    let unresolved = Conventions::new("host-a");
    assert_eq!(
        registrations(&c, &unresolved).unwrap_err().to_string(),
        "container web-1: port 8080 is published on every interface and the address of host \"host-a\" is unknown (its name does not resolve); give the registrator --ip ADDRESS"
    );
    // An IPv4 and an IPv6 binding of one port: one registration, the IPv4 one.
    let c = container(
        &[],
        &[],
        &[],
        &[("8080/tcp", "::1", "2"), ("8080/tcp", "127.0.0.1", "1")],
    );
    let all = derive(&c);
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].address.as_str(), all[0].port), ("127.0.0.1", 1));
}

#[test]
fn exposed_only_ports_need_internal() {
    let c = container(
        &["SERVICE_NAME=app"],
        &[],
        &["8080/tcp", "9090/tcp"],
        &[("9090/tcp", "0.0.0.0", "49000")],
    );
    let published: Vec<(u16, String)> = derive(&c).into_iter().map(|r| (r.port, r.name)).collect();
    assert_eq!(published, vec![(49000, "app".to_string())]);
    // --internal: every exposed port, published or not, at the container IP and its port.
    let got: Vec<(String, u16, String)> = registrations(&c, &internal())
        .unwrap()
        .into_iter()
        .map(|r| (r.address, r.port, r.name))
        .collect();
    assert_eq!(
        got,
        vec![
            ("172.20.0.5".to_string(), 8080, "app-8080".to_string()),
            ("172.20.0.5".to_string(), 9090, "app-9090".to_string()),
        ]
    );
}

#[test]
fn host_network_containers_register_their_exposed_ports_at_the_host() {
    let mut c = container(&["SERVICE_NAME=edge"], &[], &["8443/tcp"], &[]);
    c.host_config = Some(bollard::models::HostConfig {
        network_mode: Some("host".to_string()),
        ..Default::default()
    });
    c.network_settings = Some(NetworkSettings {
        networks: Some(HashMap::from([(
            "host".to_string(),
            EndpointSettings::default(),
        )])),
        ..Default::default()
    });
    let r = &derive(&c)[0];
    assert_eq!((r.address.as_str(), r.port), ("192.0.2.1", 8443));
    let r = &registrations(&c, &internal()).unwrap()[0];
    assert_eq!((r.address.as_str(), r.port), ("192.0.2.1", 8443));
}

#[test]
fn nothing_to_register_without_ports_and_internal_needs_an_ip() {
    assert!(derive(&container(&["SERVICE_NAME=x"], &[], &[], &[])).is_empty());
    let mut no_network = container(&["SERVICE_NAME=x"], &[], &["8080/tcp"], &[]);
    no_network.network_settings.as_mut().unwrap().networks = Some(HashMap::new());
    no_network.host_config = Some(bollard::models::HostConfig {
        network_mode: Some("none".to_string()),
        ..Default::default()
    });
    assert!(derive(&no_network).is_empty());
    assert!(matches!(
        registrations(&no_network, &internal()),
        Err(SettingError::NoContainerAddress { network_mode, .. }) if network_mode == "none"
    ));
}

#[test]
fn an_inspect_as_docker_20_10_answers_it() {
    // Trimmed from a real `GET /containers/<id>/json` of API 1.41: ExposedPorts is a map of
    // empty objects, a published port lists an IPv4 and an IPv6 binding.
    let json = r#"{
        "Id": "5e1f",
        "Name": "/shop-blue-1",
        "State": {"Status": "running", "Running": true},
        "Config": {
            "Image": "shop:1.4",
            "Env": ["PATH=/usr/bin", "SERVICE_NAME=shop-blue", "SERVICE_CHECK_HTTP=/health"],
            "Labels": {"com.docker.compose.project": "shop"},
            "ExposedPorts": {"8080/tcp": {}, "9090/tcp": {}}
        },
        "NetworkSettings": {
            "Ports": {
                "8080/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "49160"},
                    {"HostIp": "::", "HostPort": "49160"}
                ],
                "9090/tcp": null
            },
            "IPAddress": "172.17.0.3",
            "Networks": {"bridge": {"IPAddress": "172.17.0.3", "Gateway": "172.17.0.1"}}
        }
    }"#;
    let inspect: ContainerInspectResponse =
        serde_json::from_str(json).expect("the engine's inspect shape");
    let with_ip = Conventions {
        ip: Some("192.0.2.10".parse().unwrap()),
        ..host()
    };
    let [r] = registrations(&inspect, &with_ip)
        .unwrap()
        .try_into()
        .expect("only the published port");
    assert_eq!(r.id, "host-a:shop-blue-1:8080");
    assert_eq!(r.name, "shop-blue");
    assert_eq!((r.address.as_str(), r.port), ("192.0.2.10", 49160));
    assert_eq!(
        r.check.map(|c| c.target),
        Some(flow_core::CheckTarget::Http(
            "http://192.0.2.10:49160/health".to_string()
        ))
    );
    assert_eq!(r.meta[CONTAINER_KEY], "5e1f");
}

#[test]
fn docker_flow_release_instances_are_left_to_the_release() {
    let released = container(
        &["SERVICE_NAME=shop-web-blue"],
        &[(flow_docker::LABEL_SERVICE, "shop-web")],
        &["8080/tcp"],
        &[],
    );
    assert!(derive(&released).is_empty());
    let plain = container(&["SERVICE_NAME=shop-web-blue"], &[], &["8080/tcp"], &[]);
    assert_eq!(registrations(&plain, &internal()).unwrap().len(), 1);
}
