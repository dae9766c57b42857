//! Renders the HAProxy configuration of a route table. Pure: every value in the table was
//! validated ([`crate::validate`]) before it got there, and the result is checked with
//! `haproxy -c` before it is loaded ([`crate::haproxy`]).
//!
//! # Layout
//!
//! * One HTTP frontend per bind address. Redirects of `redirectFromDomain` come first, then
//!   one `use_backend` per HTTP destination, most specific first (see [`render`]), then the
//!   default backend (`isDefaultBackend`), if any.
//! * One HTTPS frontend per HTTPS address, once there is a certificate ([`crate::tls`]):
//!   the same rules, behind `ssl` with every certificate as a `crt` (HAProxy picks one by
//!   SNI), and `X-Forwarded-Proto: https` set on every request, so that servers — and the
//!   `redirectUnlessHttpsProto` rule — see the request came over TLS. A comment lists each
//!   certificate's fingerprint: a changed certificate changes the configuration.
//! * One TCP frontend per `srcPort` of a `reqMode=tcp` destination, on the IP addresses of
//!   the HTTP binds.
//! * One backend per destination: `be_<service>` for the first (the only one of most
//!   services, and the name earlier versions used), `be_<service>:<n>` for the n-th. `:`
//!   never occurs in a service name, so no two services' names can collide. A destination
//!   with an `httpsPort` has a second backend, `be_<service>:https` (`be_<service>:<n>:https`),
//!   for the requests that came over HTTPS, with the same servers on that port. What is done to a
//!   request on the way (redirects to HTTPS, method filters, basic authentication, headers,
//!   path rewrites, timeouts) lives in the backend, where it runs after routing: a rewritten
//!   path must not change which route a request took.
//! * Header values are single-quoted, which HAProxy takes literally (no escapes, no
//!   environment variables), and they carry no `%`, so no log-format expression either.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use flow_core::ServiceName;

use crate::table::{Destination, HeaderAction, HeaderRule, Mode, RouteEntry, RouteTable};
use crate::validate::{redirect_target, server_name};

/// The health check of every server: a TCP connect each second while UP, every 20 ms while
/// DOWN or changing state, and one success is enough to be UP. A server added at run time
/// starts out DOWN, so its first check runs after 20 ms: with the 10 ms `show stat` polling
/// that is most of the time a switch takes once the new servers are healthy (the release
/// engine has already waited for the application's own health, so one connect suffices).
pub(crate) const CHECK: &str = "check inter 1s fastinter 20ms downinter 20ms rise 1";

/// One backend of a route: its name, the servers it sends to, and the destination it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) servers: Vec<SocketAddr>,
    /// The position of its destination in the route.
    pub(crate) destination: usize,
}

/// The backend of the `position`-th destination (from 0) of `service`.
pub(crate) fn backend_name(service: &ServiceName, position: usize) -> String {
    if position == 0 {
        format!("be_{service}")
    } else {
        format!("be_{service}:{}", position + 1)
    }
}

/// The backend taking the requests of the `position`-th destination of `entry` that came
/// over TLS when `tls`: its `httpsPort` backend when it has one.
fn routed_backend(entry: &RouteEntry, position: usize, tls: bool) -> String {
    let name = backend_name(&entry.route.service, position);
    if tls && entry.destinations[position].https_port.is_some() {
        format!("{name}:https")
    } else {
        name
    }
}

/// The backends of `entry`, one per destination and one more per `httpsPort`, with the
/// servers each sends to: the entry's servers, on the destination's `port` (`httpsPort`)
/// when it has one.
pub(crate) fn backends(entry: &RouteEntry) -> Vec<Backend> {
    let mut out = Vec::new();
    for (position, destination) in entry.destinations.iter().enumerate() {
        out.push(Backend {
            name: routed_backend(entry, position, false),
            servers: destination_servers(&entry.servers, destination.port),
            destination: position,
        });
        if let Some(port) = destination.https_port {
            out.push(Backend {
                name: routed_backend(entry, position, true),
                servers: destination_servers(&entry.servers, Some(port)),
                destination: position,
            });
        }
    }
    out
}

fn destination_servers(servers: &[SocketAddr], port: Option<u16>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for server in servers {
        let address = match port {
            Some(port) => SocketAddr::new(server.ip(), port),
            None => *server,
        };
        if !out.contains(&address) {
            out.push(address);
        }
    }
    out
}

/// What the frontends listen on, and the certificates the HTTPS ones serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listeners {
    /// The plain HTTP addresses (at least one).
    pub http: Vec<SocketAddr>,
    /// The HTTPS addresses; they listen once there is a certificate.
    pub https: Vec<SocketAddr>,
    /// The certificate files, the default one (served without a matching SNI) first.
    pub certificates: Vec<CertificateFile>,
}

/// One certificate file of the HTTPS frontends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFile {
    /// The PEM file (chain and key) HAProxy loads.
    pub path: PathBuf,
    /// The SHA-256 of its chain (see [`crate::tls::Certificate::fingerprint`]).
    pub fingerprint: String,
}

impl Listeners {
    /// Plain HTTP on `http`, no HTTPS.
    pub fn http(http: Vec<SocketAddr>) -> Listeners {
        Listeners {
            http,
            ..Listeners::default()
        }
    }

    /// Whether HTTPS frontends are rendered: HTTPS addresses and a certificate to serve.
    fn serves_https(&self) -> bool {
        !self.https.is_empty() && !self.certificates.is_empty()
    }

    /// The port `httpsOnly` redirects to: the first HTTPS address's, when there is one
    /// (none: the redirect keeps the Host header, for a TLS terminator in front on 443).
    fn https_port(&self) -> Option<u16> {
        self.https.first().map(SocketAddr::port)
    }
}

/// The name of an ACL of the `position`-th destination of `service`.
fn acl_name(kind: &str, service: &ServiceName, position: usize) -> String {
    if position == 0 {
        format!("{kind}_{service}")
    } else {
        format!("{kind}_{service}:{}", position + 1)
    }
}

/// The condition matching the Host header (without its port) against `domains`: exact names,
/// and `*.example.com` as every name ending in `.example.com`.
fn host_acls(name: &str, domains: &[String]) -> String {
    let (wildcards, exact): (Vec<&String>, Vec<&String>) =
        domains.iter().partition(|d| d.starts_with("*."));
    let mut out = String::new();
    if !exact.is_empty() {
        let list: Vec<&str> = exact.iter().map(|d| d.as_str()).collect();
        // field(1,:) drops a `:port` from the Host header.
        out.push_str(&format!(
            "    acl {name} hdr(host),field(1,:) -i -- {}\n",
            list.join(" ")
        ));
    }
    if !wildcards.is_empty() {
        let list: Vec<&str> = wildcards.iter().map(|d| &d[1..]).collect();
        out.push_str(&format!(
            "    acl {name} hdr(host),field(1,:) -m end -i -- {}\n",
            list.join(" ")
        ));
    }
    out
}

/// Renders the whole configuration of `table`.
///
/// Routes are tried in this order, since HAProxy takes the first `use_backend` that
/// matches: routes with an `aclName`, by that name (1.x ordered every route by it); then
/// destinations with a domain; then longer paths first.
///
/// The frontend rules of `unrouted` are left out (its backends are there): its servers are
/// health-checked while no request can reach them.
pub fn render(
    table: &RouteTable,
    listeners: &Listeners,
    admin_socket: &Path,
    unrouted: Option<&ServiceName>,
) -> String {
    let mut out = String::new();
    out.push_str("# Rendered by docker-flow's proxy from routes.json: edits are overwritten.\n");
    out.push_str("global\n");
    out.push_str(&format!(
        "    stats socket {} mode 600 level admin expose-fd listeners\n",
        admin_socket.display()
    ));
    out.push_str("    stats timeout 30s\n");
    // An old worker keeps the connections it has after a reload until they close: no
    // `hard-stop-after`, which would cut every WebSocket some time after any reload. Workers
    // that lived through this many reloads are stopped, which bounds how many pile up.
    out.push_str("    mworker-max-reloads 50\n");
    if listeners.serves_https() {
        // Only the PEM files listed, each checked before (no `.key`, `.ocsp`, … beside them).
        out.push_str("    ssl-load-extra-files none\n");
        out.push_str("    ssl-default-bind-options ssl-min-ver TLSv1.2\n");
    }
    out.push('\n');
    // idle-close-on-response: on a reload the old worker does not close idle keep-alive
    // connections (a client may be sending on them at that very moment, and would see the
    // connection drop); it answers one more request with `Connection: close` instead.
    // timeout tunnel: an upgraded connection (WebSocket) may sit idle for an hour, rather
    // than the 60 s of the client and server timeouts; `timeoutTunnel` sets it per route.
    out.push_str(
        "defaults\n    mode http\n    option idle-close-on-response\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n    timeout http-request 10s\n    timeout http-keep-alive 10s\n    timeout queue 30s\n    timeout tunnel 1h\n\n",
    );

    let routed: Vec<&RouteEntry> = table
        .entries()
        .filter(|e| Some(&e.route.service) != unrouted)
        .collect();
    let mut http: Vec<(&RouteEntry, usize, &Destination)> = routed
        .iter()
        .flat_map(|entry| {
            entry
                .destinations
                .iter()
                .enumerate()
                .filter(|(_, d)| d.mode == Mode::Http)
                .map(move |(position, d)| (*entry, position, d))
        })
        .collect();
    http.sort_by_key(|(entry, position, d)| {
        let longest = d.paths.iter().map(String::len).max().unwrap_or(0);
        (
            entry.options.acl_name.is_none(),
            entry.options.acl_name.clone(),
            d.domains.is_empty(),
            std::cmp::Reverse(longest),
            entry.route.service.clone(),
            *position,
        )
    });
    let default_backend = routed
        .iter()
        .find(|e| e.options.default_backend)
        .and_then(|e| {
            let position = e.destinations.iter().position(|d| d.mode == Mode::Http)?;
            Some((*e, position))
        });
    let https: &[SocketAddr] = if listeners.serves_https() {
        &listeners.https
    } else {
        &[]
    };
    let frontends = listeners
        .http
        .iter()
        .enumerate()
        .map(|(index, bind)| (false, index, bind))
        .chain(
            https
                .iter()
                .enumerate()
                .map(|(index, bind)| (true, index, bind)),
        );
    for (tls, index, bind) in frontends {
        if tls {
            out.push_str(&format!("frontend https_{index}\n"));
            for certificate in &listeners.certificates {
                out.push_str(&format!(
                    "    # crt {} sha256 {}\n",
                    certificate.path.display(),
                    certificate.fingerprint
                ));
            }
            out.push_str(&format!("    bind {bind} ssl"));
            for certificate in &listeners.certificates {
                out.push_str(&format!(" crt {}", certificate.path.display()));
            }
            out.push_str(" alpn h2,http/1.1\n");
            out.push_str("    http-request set-header X-Forwarded-Proto https\n");
        } else {
            out.push_str(&format!("frontend http_{index}\n    bind {bind}\n"));
        }
        let scheme = if tls { "https" } else { "http" };
        for (entry, position, destination) in &http {
            if destination.redirect_from_domains.is_empty() {
                continue;
            }
            if let Some(target) = redirect_target(destination) {
                let name = acl_name("redirect", &entry.route.service, *position);
                out.push_str(&host_acls(&name, &destination.redirect_from_domains));
                out.push_str(&format!(
                    "    http-request redirect prefix {scheme}://{target} code 301 if {name}\n"
                ));
            }
        }
        for (entry, position, destination) in &http {
            out.push_str(&http_route(entry, *position, destination, tls));
        }
        if let Some((entry, position)) = default_backend {
            out.push_str(&format!(
                "    default_backend {}\n",
                routed_backend(entry, position, tls)
            ));
        }
        out.push('\n');
    }
    let ips: BTreeSet<std::net::IpAddr> = listeners.http.iter().map(SocketAddr::ip).collect();
    for entry in &routed {
        for (position, destination) in entry.destinations.iter().enumerate() {
            let (Mode::Tcp, Some(port)) = (destination.mode, destination.src_port) else {
                continue;
            };
            out.push_str(&format!("frontend tcp_{port}\n    mode tcp\n"));
            // The option is HTTP's (see defaults): unset here, so HAProxy does not warn.
            out.push_str("    no option idle-close-on-response\n");
            for ip in &ips {
                out.push_str(&format!("    bind {}\n", SocketAddr::new(*ip, port)));
            }
            out.push_str(&format!(
                "    default_backend {}\n\n",
                backend_name(&entry.route.service, position)
            ));
        }
    }
    let mut entries: Vec<&RouteEntry> = table.entries().collect();
    entries.sort_by_key(|e| {
        let longest = e.route.paths.iter().map(String::len).max().unwrap_or(0);
        (
            e.route.domain.is_none(),
            std::cmp::Reverse(longest),
            e.route.service.clone(),
        )
    });
    for entry in &entries {
        out.push_str(&userlist(entry));
        for backend in backends(entry) {
            out.push_str(&render_backend(
                entry,
                &entry.destinations[backend.destination],
                &backend,
                listeners.https_port(),
            ));
        }
    }
    out
}

/// The ACLs and the `use_backend` rule of one HTTP destination, in an HTTPS frontend when
/// `tls` (there `srcHttpsPort` selects the port, and `srcPort` does not apply).
fn http_route(entry: &RouteEntry, position: usize, destination: &Destination, tls: bool) -> String {
    let service = &entry.route.service;
    let path = acl_name("path", service, position);
    let mut out = format!(
        "    acl {path} {} -- {}\n",
        destination.path_type.haproxy_matcher(),
        destination.paths.join(" ")
    );
    let mut condition = path;
    if !destination.excluded_paths.is_empty() {
        let exclude = acl_name("exclude", service, position);
        out.push_str(&format!(
            "    acl {exclude} {} -- {}\n",
            destination.path_type.haproxy_matcher(),
            destination.excluded_paths.join(" ")
        ));
        condition.push_str(&format!(" !{exclude}"));
    }
    if !destination.domains.is_empty() {
        let host = acl_name("host", service, position);
        out.push_str(&host_acls(&host, &destination.domains));
        condition.push_str(&format!(" {host}"));
    }
    let src_port = if tls {
        destination.src_https_port
    } else {
        destination.src_port
    };
    if let Some(port) = src_port {
        condition.push_str(&format!(" {{ dst_port {port} }}"));
    }
    out.push_str(&format!(
        "    use_backend {} if {condition}\n",
        routed_backend(entry, position, tls)
    ));
    out
}

/// The user list of a service with basic authentication (empty without).
fn userlist(entry: &RouteEntry) -> String {
    if entry.options.users.is_empty() {
        return String::new();
    }
    let mut out = format!("userlist users_{}\n", entry.route.service);
    for user in &entry.options.users {
        let kind = if user.encrypted {
            "password"
        } else {
            "insecure-password"
        };
        out.push_str(&format!(
            "    user {} {kind} {}\n",
            user.name, user.password
        ));
    }
    out.push('\n');
    out
}

fn render_backend(
    entry: &RouteEntry,
    destination: &Destination,
    backend: &Backend,
    https_port: Option<u16>,
) -> String {
    let mut out = format!("backend {}\n", backend.name);
    if destination.mode == Mode::Tcp {
        out.push_str("    mode tcp\n");
    }
    out.push_str("    balance roundrobin\n    option redispatch\n    retries 3\n");
    if let Some(seconds) = destination.timeout_server {
        out.push_str(&format!("    timeout server {seconds}s\n"));
    }
    if let Some(seconds) = destination.timeout_tunnel {
        out.push_str(&format!("    timeout tunnel {seconds}s\n"));
    }
    if destination.mode == Mode::Http {
        out.push_str(&http_rules(entry, destination, https_port));
    }
    for server in &backend.servers {
        let name = server_name(*server);
        if entry.skip_check {
            out.push_str(&format!("    server {name} {server}\n"));
        } else {
            out.push_str(&format!("    server {name} {server} {CHECK}\n"));
        }
    }
    out.push('\n');
    out
}

/// What an HTTP backend does to requests and responses, in the order it is done: redirects
/// to HTTPS, method filters, authentication, headers, the path rewrite.
///
/// `httpsOnly` redirects to `https_port` (the proxy's own HTTPS address) on the host the
/// request named, its port replaced; without HTTPS addresses, to the same host and port
/// over `https://`, for a TLS terminator in front.
fn http_rules(entry: &RouteEntry, destination: &Destination, https_port: Option<u16>) -> String {
    let options = &entry.options;
    let mut out = String::new();
    let code = options
        .https_redirect_code
        .map(|code| format!(" code {code}"))
        .unwrap_or_default();
    if destination.https_only {
        match https_port {
            None => out.push_str(&format!(
                "    http-request redirect scheme https{code} if !{{ ssl_fc }}\n"
            )),
            Some(port) => {
                let port = if port == 443 {
                    String::new()
                } else {
                    format!(":{port}")
                };
                // The Host header without its port (`[::1]:8081` keeps `[::1]`); `\$` is a
                // literal `$` inside HAProxy's double quotes.
                out.push_str(&format!(
                    "    http-request redirect location \"https://%[hdr(host),regsub(':[0-9]+\\$','')]{port}%[pathq]\"{code} if !{{ ssl_fc }}\n"
                ));
            }
        }
    }
    if options.redirect_when_http_proto {
        out.push_str(&format!(
            "    http-request redirect scheme https{code} if {{ req.hdr(X-Forwarded-Proto) -i http }}\n"
        ));
    }
    if options.redirect_unless_https_proto {
        out.push_str(&format!(
            "    http-request redirect scheme https{code} unless {{ req.hdr(X-Forwarded-Proto) -i https }}\n"
        ));
    }
    if destination.deny_http {
        out.push_str("    http-request deny if !{ ssl_fc }\n");
    }
    if !destination.allowed_methods.is_empty() {
        out.push_str(&format!(
            "    http-request deny unless {{ method {} }}\n",
            destination.allowed_methods.join(" ")
        ));
    }
    if !destination.denied_methods.is_empty() {
        out.push_str(&format!(
            "    http-request deny if {{ method {} }}\n",
            destination.denied_methods.join(" ")
        ));
    }
    if !options.users.is_empty() && !destination.ignore_authorization {
        let service = &entry.route.service;
        out.push_str(&format!(
            "    http-request auth realm {service} unless {{ http_auth(users_{service}) }}\n"
        ));
        // The credentials are the proxy's business, not the server's.
        out.push_str("    http-request del-header Authorization\n");
    }
    for rule in &options.request_headers {
        out.push_str(&header_rule("http-request", rule));
    }
    for rule in &options.response_headers {
        out.push_str(&header_rule("http-response", rule));
    }
    for rewrite in &destination.path_rewrites {
        out.push_str(&format!(
            "    http-request set-path %[path,regsub({},{})]\n",
            rewrite.search, rewrite.replace
        ));
    }
    out
}

fn header_rule(directive: &str, rule: &HeaderRule) -> String {
    match rule.action {
        HeaderAction::Add => format!(
            "    {directive} add-header {} '{}'\n",
            rule.name, rule.value
        ),
        HeaderAction::Set => format!(
            "    {directive} set-header {} '{}'\n",
            rule.name, rule.value
        ),
        HeaderAction::Del => format!("    {directive} del-header {}\n", rule.name),
    }
}

#[cfg(test)]
mod tests {
    use flow_core::{PathType, Route};

    use super::*;
    use crate::table::{PathRewrite, RouteOptions, User};

    fn entry(service: &str, destinations: Vec<Destination>, options: RouteOptions) -> RouteEntry {
        let route = Route {
            service: ServiceName::new(service).unwrap(),
            color: None,
            paths: destinations[0].paths.clone(),
            domain: destinations[0].domains.first().cloned(),
            path_type: destinations[0].path_type,
        };
        RouteEntry {
            destinations,
            options,
            ..RouteEntry::new(route, vec!["127.0.0.1:9000".parse().unwrap()], false)
        }
    }

    /// Every feature at once: HAProxy (the real binary) takes the configuration without a
    /// single warning, since a warning means a rule that does not do what it says.
    #[test]
    fn every_feature_renders_a_configuration_haproxy_takes_without_warnings() {
        let mut table = RouteTable::default();
        table.insert(entry(
            "app",
            vec![
                Destination {
                    paths: vec!["/app".into()],
                    excluded_paths: vec!["/app/private".into()],
                    domains: vec!["app.example".into(), "*.app.example".into()],
                    redirect_from_domains: vec!["old.example".into(), "*.old.example".into()],
                    src_port: Some(8081),
                    path_rewrites: vec![PathRewrite {
                        search: "^/app/".into(),
                        replace: "/".into(),
                    }],
                    allowed_methods: vec!["GET".into(), "POST".into()],
                    denied_methods: vec!["DELETE".into()],
                    https_only: true,
                    deny_http: true,
                    https_port: Some(9443),
                    src_https_port: Some(8443),
                    timeout_server: Some(5),
                    timeout_tunnel: Some(3600),
                    ..Destination::default()
                },
                Destination {
                    paths: vec!["^/admin/[0-9]+$".into()],
                    path_type: PathType::Regex,
                    port: Some(9090),
                    ignore_authorization: true,
                    ..Destination::default()
                },
                Destination {
                    mode: Mode::Tcp,
                    src_port: Some(6379),
                    timeout_tunnel: Some(60),
                    ..Destination::default()
                },
            ],
            RouteOptions {
                acl_name: Some("01-app".into()),
                default_backend: true,
                users: vec![
                    User {
                        name: "alice".into(),
                        password: "pa$$word".into(),
                        encrypted: false,
                    },
                    User {
                        name: "bob".into(),
                        password: "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.".into(),
                        encrypted: true,
                    },
                ],
                request_headers: vec![HeaderRule {
                    action: HeaderAction::Add,
                    name: "X-Env".into(),
                    value: "prod # \"quoted\" $HOME".into(),
                }],
                response_headers: vec![HeaderRule {
                    action: HeaderAction::Del,
                    name: "Server".into(),
                    value: String::new(),
                }],
                redirect_when_http_proto: true,
                redirect_unless_https_proto: true,
                https_redirect_code: Some(301),
            },
        ));
        crate::validate::check_entry(table.get(&ServiceName::new("app").unwrap()).unwrap())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        let mut certificates = Vec::new();
        for name in ["a.example", "b.example"] {
            let key = rcgen::KeyPair::generate().unwrap();
            let certificate = rcgen::CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let file = dir.path().join(format!("{name}.pem"));
            std::fs::write(
                &file,
                format!("{}{}", certificate.pem(), key.serialize_pem()),
            )
            .unwrap();
            certificates.push(CertificateFile {
                path: file,
                fingerprint: name.to_string(),
            });
        }
        let listeners = Listeners {
            http: vec![
                "127.0.0.1:8081".parse().unwrap(),
                "[::1]:8081".parse().unwrap(),
            ],
            https: vec!["127.0.0.1:8443".parse().unwrap()],
            certificates,
        };
        let text = render(&table, &listeners, &dir.path().join("admin.sock"), None);
        std::fs::write(&path, &text).unwrap();
        let output = std::process::Command::new(crate::haproxy::DEFAULT_BINARY)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("HAProxy is installed (apt-get install haproxy)");
        let messages = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{messages}\n{text}");
        assert!(!messages.contains("WARNING"), "{messages}\n{text}");
        assert!(text.contains("frontend tcp_6379\n"), "{text}");
        assert!(
            text.contains("    bind 127.0.0.1:6379\n    bind [::1]:6379\n"),
            "{text}"
        );
        assert!(text.contains("backend be_app:2\n"), "{text}");
        assert!(
            text.contains("server s4_127_0_0_1_9090 127.0.0.1:9090"),
            "{text}"
        );
        assert!(text.contains("    default_backend be_app\n"), "{text}");
        assert!(text.contains("frontend https_0\n"), "{text}");
        let (plain, tls) = text.split_once("frontend https_0\n").unwrap();
        assert!(
            plain.contains("redirect prefix http://app.example code 301 if redirect_app"),
            "{text}"
        );
        assert!(
            tls.contains("redirect prefix https://app.example code 301 if redirect_app"),
            "{text}"
        );
        assert!(
            text.contains("    use_backend be_app:https if path_app !exclude_app host_app { dst_port 8443 }\n"),
            "{text}"
        );
        assert!(
            text.contains("    default_backend be_app:https\n"),
            "{text}"
        );
        assert!(
            text.contains("server s4_127_0_0_1_9443 127.0.0.1:9443"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "ssl crt {} crt {}",
                dir.path().join("a.example.pem").display(),
                dir.path().join("b.example.pem").display()
            )),
            "{text}"
        );
    }
}
