//! The derivation rules on hand-made inspects (no engine).

use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerInspectResponse, EndpointSettings, NetworkSettings, PortBinding,
};

use super::*;

fn host() -> HostIdentity {
    HostIdentity {
        hostname: "host-a".to_string(),
        ip: None,
    }
}

/// A running container `web-1` of image `reg:5000/team/web:2` on network `app` at 172.20.0.5,
/// exposing `exposed`, publishing `published` (`(container port/proto, host ip, host port)`).
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
            Some(Duration::from_secs(5))
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
fn unusable_check_settings_are_errors_naming_the_setting() {
    let published = [("8080/tcp", "127.0.0.1", "1")];
    let c = container(
        &["SERVICE_CHECK_HTTP=/h", "SERVICE_CHECK_INTERVAL=often"],
        &[],
        &[],
        &published,
    );
    let error = registrations(&c, &host()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "container web-1: SERVICE_CHECK_INTERVAL=\"often\" is not a duration; write it like 10s, 1m30s or 500ms"
    );
    let c = container(&["SERVICE_CHECK_HTTP=health"], &[], &[], &published);
    assert!(matches!(
        registrations(&c, &host()),
        Err(SettingError::InvalidCheckPath { key, .. }) if key == "SERVICE_CHECK_HTTP"
    ));
}

#[test]
fn address_rules_for_published_ports() {
    // --ip wins, with the host port.
    let c = container(&[], &[], &[], &[("8080/tcp", "0.0.0.0", "49153")]);
    let with_ip = HostIdentity {
        ip: Some("10.1.2.3".parse().unwrap()),
        ..host()
    };
    let r = &registrations(&c, &with_ip).unwrap()[0];
    assert_eq!((r.address.as_str(), r.port), ("10.1.2.3", 49153));
    // Every interface and no --ip: the container's IP with the container port.
    let r = &derive(&c)[0];
    assert_eq!((r.address.as_str(), r.port), ("172.20.0.5", 8080));
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
fn internal_mode_registers_exposed_ports_at_the_container_ip() {
    let c = container(&["SERVICE_NAME=app-blue"], &[], &["8080/tcp"], &[]);
    let with_ip = HostIdentity {
        ip: Some("10.1.2.3".parse().unwrap()),
        ..host()
    };
    let [r] = registrations(&c, &with_ip)
        .unwrap()
        .try_into()
        .expect("one registration");
    assert_eq!(r.id, "host-a:web-1:8080");
    assert_eq!(r.name, "app-blue");
    assert_eq!((r.address.as_str(), r.port), ("172.20.0.5", 8080));
}

#[test]
fn nothing_to_register_without_ports_or_without_an_ip() {
    assert!(derive(&container(&["SERVICE_NAME=x"], &[], &[], &[])).is_empty());
    let mut no_network = container(&["SERVICE_NAME=x"], &[], &["8080/tcp"], &[]);
    no_network.network_settings.as_mut().unwrap().networks = Some(HashMap::new());
    assert!(derive(&no_network).is_empty());
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
    let with_ip = HostIdentity {
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
    assert_eq!(derive(&plain).len(), 1);
}
