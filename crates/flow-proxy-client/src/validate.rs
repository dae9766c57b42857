//! Validation of everything that ends up in the HAProxy configuration.
//!
//! HAProxy's configuration language splits words on white space, starts comments at `#`,
//! gives quotes and some backslash sequences a meaning, and a newline ends a statement. A path
//! or domain that carried any of those could break the whole file or inject directives, so
//! every value is checked here, against a small allow-list, before it reaches the renderer;
//! a rejected value changes nothing and becomes an HTTP 400.

use std::net::{IpAddr, SocketAddr};

use flow_core::{PathType, Route};

use crate::route::{Destination, HeaderRule, Mode, PathRewrite, RouteEntry, RouteOptions, User};

/// The longest path accepted (HAProxy's own line limit is a few kilobytes for a whole line).
const MAX_PATH_LEN: usize = 1024;

/// The longest domain name DNS allows.
const MAX_DOMAIN_LEN: usize = 253;

/// Input that cannot be routed safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// The service name has characters outside letters, digits, `-`, `_`, `.`.
    #[error("invalid serviceName {value:?}: use 1 to 200 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit")]
    ServiceName {
        /// The rejected text.
        value: String,
    },
    /// The colour is neither `blue` nor `green`.
    #[error("invalid serviceColor {value:?}: use \"blue\" or \"green\", or leave it out")]
    Color {
        /// The rejected text.
        value: String,
    },
    /// The matcher is not one of HAProxy's path matchers.
    #[error("invalid pathType {value:?}: use path_beg (default), path, path_end or path_reg")]
    PathType {
        /// The rejected text.
        value: String,
    },
    /// A route without any path.
    #[error("servicePath is missing: give at least one path, e.g. servicePath=/api,/web")]
    NoPaths,
    /// A path with a character or form that cannot be put into the configuration safely.
    #[error("invalid servicePath {path:?}: {reason}")]
    Path {
        /// The rejected path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `path_reg` path HAProxy's regular expression engine does not compile.
    #[error("invalid servicePath {path:?}: not a regular expression HAProxy compiles ({reason})")]
    Regex {
        /// The rejected path.
        path: String,
        /// HAProxy's reason.
        reason: String,
    },
    /// A domain that is not a plain host name.
    #[error("invalid serviceDomain {value:?}: {reason}")]
    Domain {
        /// The rejected text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A server that is not `ip:port`.
    #[error("invalid server {value:?}: give servers as ip:port (e.g. 10.0.0.5:8080 or [fd00::5]:8080); host names are not resolved")]
    Server {
        /// The rejected text.
        value: String,
    },
    /// A server port of 0.
    #[error("invalid server {value}: port 0 cannot be connected to")]
    ServerPortZero {
        /// The rejected server.
        value: SocketAddr,
    },
    /// No servers where at least one is needed.
    #[error("no servers given: a route needs at least one ip:port server")]
    NoServers,
    /// A parameter whose value cannot be used; `reason` says why and, except for passwords,
    /// shows the value.
    #[error("invalid {parameter}: {reason}")]
    Parameter {
        /// The parameter, with its index when it has one (`servicePath.2`).
        parameter: String,
        /// What is wrong.
        reason: String,
    },
    /// Parameters that contradict each other or the other routes.
    #[error("{0}")]
    Conflict(String),
    /// A boolean parameter that is neither `true` nor `false`.
    #[error("invalid {name} {value:?}: use true or false")]
    Boolean {
        /// The parameter.
        name: &'static str,
        /// The rejected text.
        value: String,
    },
}

/// Checks the paths and domain of `route` (its service name is valid by construction).
pub fn check_route(route: &Route) -> Result<(), InvalidInput> {
    if route.paths.is_empty() {
        return Err(InvalidInput::NoPaths);
    }
    for path in &route.paths {
        check_path(path, route.path_type)?;
    }
    if let Some(domain) = &route.domain {
        check_domain(domain)?;
    }
    Ok(())
}

/// Checks every destination and option of `entry`, as [`check_route`] does for a route.
pub fn check_entry(entry: &RouteEntry) -> Result<(), InvalidInput> {
    if entry.destinations.is_empty() {
        return Err(InvalidInput::NoPaths);
    }
    for (position, destination) in entry.destinations.iter().enumerate() {
        check_destination(destination, &format!(" (destination {})", position + 1))?;
    }
    check_options(&entry.options)?;
    if entry.options.has_http_options() && entry.destinations.iter().all(|d| d.mode == Mode::Tcp) {
        return Err(InvalidInput::Conflict(
            "users, the header parameters, redirectWhenHttpProto, redirectUnlessHttpsProto, httpsRedirectCode and isDefaultBackend apply to HTTP destinations, and this service has only reqMode=tcp ones".into(),
        ));
    }
    Ok(())
}

/// The longest timeout HAProxy takes, in seconds (2^31 - 1 milliseconds).
pub const MAX_TIMEOUT_SECONDS: u32 = 2_147_483;

fn invalid(parameter: &str, reason: impl Into<String>) -> InvalidInput {
    InvalidInput::Parameter {
        parameter: parameter.to_string(),
        reason: reason.into(),
    }
}

/// Checks one destination; `which` names it in messages (e.g. ` (destination 2)`).
pub fn check_destination(destination: &Destination, which: &str) -> Result<(), InvalidInput> {
    for (parameter, port) in [
        ("srcPort", destination.src_port),
        ("port", destination.port),
        ("httpsPort", destination.https_port),
        ("srcHttpsPort", destination.src_https_port),
    ] {
        if port == Some(0) {
            return Err(invalid(parameter, format!("0 is not a port{which}")));
        }
    }
    for (parameter, timeout) in [
        ("timeoutServer", destination.timeout_server),
        ("timeoutTunnel", destination.timeout_tunnel),
    ] {
        if timeout.is_some_and(|t| t == 0 || t > MAX_TIMEOUT_SECONDS) {
            return Err(invalid(
                parameter,
                format!("give whole seconds from 1 to {MAX_TIMEOUT_SECONDS}{which}"),
            ));
        }
    }
    if destination.mode == Mode::Tcp {
        let http_only = [
            ("servicePath", !destination.paths.is_empty()),
            ("serviceDomain", !destination.domains.is_empty()),
            ("servicePathExclude", !destination.excluded_paths.is_empty()),
            (
                "reqPathSearchReplace",
                !destination.path_rewrites.is_empty(),
            ),
            ("allowedMethods", !destination.allowed_methods.is_empty()),
            ("deniedMethods", !destination.denied_methods.is_empty()),
            ("httpsOnly", destination.https_only),
            ("httpsPort", destination.https_port.is_some()),
            ("srcHttpsPort", destination.src_https_port.is_some()),
            ("denyHttp", destination.deny_http),
            ("ignoreAuthorization", destination.ignore_authorization),
            (
                "redirectFromDomain",
                !destination.redirect_from_domains.is_empty(),
            ),
        ];
        if let Some((parameter, _)) = http_only.iter().find(|(_, given)| *given) {
            return Err(InvalidInput::Conflict(format!(
                "reqMode=tcp cannot be combined with {parameter}{which}: a TCP destination forwards connections as they are, on its own srcPort, so HTTP paths, domains, methods and redirects do not apply"
            )));
        }
        if destination.src_port.is_none() {
            return Err(InvalidInput::Conflict(format!(
                "reqMode=tcp needs srcPort{which}: the proxy port the TCP connections arrive on, e.g. srcPort=6379"
            )));
        }
        return Ok(());
    }
    if destination.paths.is_empty() {
        return Err(InvalidInput::NoPaths);
    }
    for path in destination.paths.iter().chain(&destination.excluded_paths) {
        check_path(path, destination.path_type)?;
    }
    for domain in &destination.domains {
        check_domain_pattern("serviceDomain", domain)?;
    }
    for domain in &destination.redirect_from_domains {
        check_domain_pattern("redirectFromDomain", domain)?;
    }
    if !destination.redirect_from_domains.is_empty() && redirect_target(destination).is_none() {
        return Err(InvalidInput::Conflict(format!(
            "redirectFromDomain needs a serviceDomain without '*' as its first domain to redirect to{which}"
        )));
    }
    for rewrite in &destination.path_rewrites {
        check_path_rewrite(rewrite)?;
    }
    for (parameter, methods) in [
        ("allowedMethods", &destination.allowed_methods),
        ("deniedMethods", &destination.denied_methods),
    ] {
        for method in methods {
            if method.is_empty()
                || method.len() > 32
                || !method
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    parameter,
                    format!("{method:?} is not an HTTP method: give names such as GET,POST{which}"),
                ));
            }
        }
    }
    Ok(())
}

/// The domain `redirectFromDomain` redirects to: the destination's first, when exact.
pub fn redirect_target(destination: &Destination) -> Option<&str> {
    destination
        .domains
        .first()
        .map(String::as_str)
        .filter(|d| !d.starts_with("*."))
}

/// Checks a domain that may start with `*.` (every subdomain of the rest).
pub fn check_domain_pattern(parameter: &str, pattern: &str) -> Result<(), InvalidInput> {
    let domain = pattern.strip_prefix("*.").unwrap_or(pattern);
    check_domain(domain).map_err(|error| match error {
        InvalidInput::Domain { reason, .. } => invalid(parameter, format!("{pattern:?}: {reason}")),
        other => other,
    })
}

/// Checks a `reqPathSearchReplace` pair. Both halves end up inside HAProxy's
/// `regsub(search,replace)`, whose arguments end at `,` and `)`, so neither may carry those;
/// backslash sequences HAProxy's parser rewrites are refused as in `path_reg` paths.
fn check_path_rewrite(rewrite: &PathRewrite) -> Result<(), InvalidInput> {
    let parameter = "reqPathSearchReplace";
    for (what, text, may_be_empty) in [
        ("search", &rewrite.search, false),
        ("replacement", &rewrite.replace, true),
    ] {
        if text.is_empty() && !may_be_empty {
            return Err(invalid(parameter, "a search expression cannot be empty: give search,replace pairs separated by ':', e.g. /old/,/new/"));
        }
        if text.len() > MAX_PATH_LEN {
            return Err(invalid(
                parameter,
                format!("the {what} can have at most 1024 characters"),
            ));
        }
        let refused = |c: char| !c.is_ascii_graphic() || "\"'#%(),".contains(c);
        if let Some(bad) = text
            .chars()
            .find(|c| refused(*c) || (*c == '\\' && what == "replacement"))
        {
            return Err(invalid(
                parameter,
                format!("{bad:?} is not allowed in the {what} {text:?}: white space, quotes, '#', '%', parentheses (capture groups are not supported), ',' and, in the replacement, backslashes are not"),
            ));
        }
        // The other characters of the search are fine; its backslash sequences are checked
        // like those of a path_reg path.
        if what == "search" && text.contains('\\') {
            check_path(text, PathType::Regex).map_err(|error| match error {
                InvalidInput::Path { reason, .. } => {
                    invalid(parameter, format!("{text:?}: {reason}"))
                }
                other => other,
            })?;
        }
    }
    Ok(())
}

/// Checks the service-wide options.
pub fn check_options(options: &RouteOptions) -> Result<(), InvalidInput> {
    if let Some(name) = &options.acl_name {
        if name.is_empty()
            || name.len() > 200
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "aclName",
                format!("{name:?}: use 1 to 200 ASCII letters, digits, '-', '_' or '.'"),
            ));
        }
    }
    for user in &options.users {
        check_user(user)?;
    }
    for (parameter, rules) in [
        ("ReqHeader", &options.request_headers),
        ("ResHeader", &options.response_headers),
    ] {
        for rule in rules {
            check_header(parameter, rule)?;
        }
    }
    if let Some(code) = options.https_redirect_code {
        if ![301, 302, 303, 307, 308].contains(&code) {
            return Err(invalid(
                "httpsRedirectCode",
                format!("{code}: use 301, 302, 303, 307 or 308"),
            ));
        }
    }
    Ok(())
}

/// Checks a user; messages name the user, never the password.
fn check_user(user: &User) -> Result<(), InvalidInput> {
    if user.name.is_empty()
        || user.name.len() > 64
        || !user
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        return Err(invalid(
            "users",
            format!(
                "the user name {:?}: use 1 to 64 ASCII letters, digits, '-', '_', '.' or '@'",
                user.name
            ),
        ));
    }
    let name = &user.name;
    if user.password.is_empty() {
        return Err(invalid(
            "users",
            format!("{name} has no password: give users=name:password,… (or the password in usersSecret)"),
        ));
    }
    if user.password.len() > 256 {
        return Err(invalid(
            "users",
            format!("the password of {name} is longer than 256 characters"),
        ));
    }
    let fits = if user.encrypted {
        user.password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./$".contains(&b))
    } else {
        user.password
            .chars()
            .all(|c| c.is_ascii_graphic() && !"\"'\\#,".contains(c))
    };
    if !fits {
        return Err(invalid(
            "users",
            if user.encrypted {
                format!("the password of {name} is not a crypt(3) hash (letters, digits, '.', '/' and '$', e.g. from mkpasswd -m sha-512)")
            } else {
                format!("the password of {name} has white space, a quote, a backslash, '#' or ',' (or is not ASCII): choose another, or give its crypt(3) hash with usersPassEncrypted=true")
            },
        ));
    }
    Ok(())
}

/// Checks a header rule: a token for the name, literal printable text for the value.
fn check_header(kind: &str, rule: &HeaderRule) -> Result<(), InvalidInput> {
    let parameter = match rule.action {
        crate::route::HeaderAction::Add => format!("add{kind}"),
        crate::route::HeaderAction::Set => format!("set{kind}"),
        crate::route::HeaderAction::Del => format!("del{kind}"),
    };
    let name = &rule.name;
    if rule.name.is_empty()
        || rule.name.len() > 128
        || !rule
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(invalid(
            &parameter,
            format!("the header name {name:?}: use ASCII letters, digits, '-', '_' or '.'"),
        ));
    }
    let value = &rule.value;
    if value.is_empty() && rule.action != crate::route::HeaderAction::Del {
        return Err(invalid(
            &parameter,
            format!("{name} has no value: give `Name value` items"),
        ));
    }
    if value.contains(['\r', '\n']) {
        return Err(invalid(
            &parameter,
            format!("the value of {name} has a line break (CR or LF), which would end the header or inject another"),
        ));
    }
    if value.len() > 4096 {
        return Err(invalid(
            &parameter,
            format!("the value of {name} is longer than 4096 characters"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || "'%".contains(*c))
    {
        return Err(invalid(
            &parameter,
            format!("{bad:?} is not allowed in the value of {name}: values are literal printable ASCII without \"'\" and '%' (HAProxy expressions such as %[dst_port] are not supported)"),
        ));
    }
    let words: Vec<&str> = value.split(' ').collect();
    if words.iter().any(|w| *w == "if" || *w == "unless") {
        return Err(invalid(
            &parameter,
            format!("the value of {name} has a condition (`if …`/`unless …`), which is not supported: the header always applies"),
        ));
    }
    Ok(())
}

/// Checks one path for the given matcher.
pub fn check_path(path: &str, path_type: PathType) -> Result<(), InvalidInput> {
    let reject = |reason| {
        Err(InvalidInput::Path {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return reject("a path cannot be empty");
    }
    if path.len() > MAX_PATH_LEN {
        return reject("a path can have at most 1024 characters");
    }
    if let Some(bad) = path.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return if bad.is_ascii_whitespace() {
            reject("white space and line breaks are not allowed in a path")
        } else {
            reject("only printable ASCII is allowed in a path (percent-encode the rest)")
        };
    }
    if path.contains(['"', '\'']) {
        return reject("quotes are not allowed in a path");
    }
    if path.contains(',') {
        return reject("',' is not allowed in a path: servicePath is a comma-separated list, so a comma would split it in two (give several paths instead)");
    }
    if path.contains('#') {
        return reject("'#' is not allowed in a path (it starts a comment in HAProxy's configuration and never reaches a server)");
    }
    if path_type == PathType::Regex {
        // HAProxy's parser rewrites these backslash sequences itself (\x41, \n, escaped space,
        // quote or hash), so the regular expression would not be the one the caller wrote.
        let bytes = path.as_bytes();
        for (index, byte) in bytes.iter().enumerate() {
            if *byte == b'\\' {
                match bytes.get(index + 1) {
                    None => return reject("a regular expression cannot end with a backslash"),
                    Some(next) if b"\\#'\"xrnte$ ".contains(next) => {
                        return reject("the backslash sequences \\\\, \\x, \\r, \\n, \\t, \\e, \\$ are not allowed in a path_reg expression (use a character class instead)")
                    }
                    Some(_) => {}
                }
            }
        }
    } else {
        if path.contains('\\') {
            return reject("backslashes are only allowed in path_reg expressions");
        }
        if matches!(path_type, PathType::Prefix | PathType::Exact) && !path.starts_with('/') {
            return reject("path_beg and path paths must start with '/'");
        }
    }
    Ok(())
}

/// Checks that `domain` is a plain DNS host name (letters, digits, `-`, dot-separated labels).
pub fn check_domain(domain: &str) -> Result<(), InvalidInput> {
    let reject = |reason| {
        Err(InvalidInput::Domain {
            value: domain.to_string(),
            reason,
        })
    };
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
        return reject("a domain has 1 to 253 characters");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return reject("each dot-separated label has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return reject("only ASCII letters, digits, '-' and '.' are allowed (no port, no scheme; a wildcard only as a leading '*.')");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return reject("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

/// `addresses` as a message lists them: `a, b`.
pub fn list_addresses(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a comma-separated list of `ip:port` servers (empty items are ignored, duplicates
/// collapse, order is kept).
pub fn parse_servers(list: &str) -> Result<Vec<SocketAddr>, InvalidInput> {
    let mut servers = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let server: SocketAddr = item.parse().map_err(|_| InvalidInput::Server {
            value: item.to_string(),
        })?;
        if server.port() == 0 {
            return Err(InvalidInput::ServerPortZero { value: server });
        }
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    if servers.is_empty() {
        return Err(InvalidInput::NoServers);
    }
    Ok(servers)
}

/// The HAProxy server name of `server`: derived only from the address, so it is a valid
/// identifier (letters, digits, `_`) and the same in the configuration and at run time.
///
/// `127.0.0.1:8080` → `s4_127_0_0_1_8080`; `[fd00::5]:80` → `s6_fd00_0_0_0_0_0_0_5_80`.
pub fn server_name(server: SocketAddr) -> String {
    match server.ip() {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            format!("s4_{a}_{b}_{c}_{d}_{}", server.port())
        }
        IpAddr::V6(ip) => {
            let segments: Vec<String> = ip.segments().iter().map(|s| format!("{s:x}")).collect();
            format!("s6_{}_{}", segments.join("_"), server.port())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_would_break_the_configuration_are_rejected() {
        for bad in [
            "/a b",
            "/a\nbackend x",
            "/a\"",
            "/a'",
            "/a#x",
            "",
            "/a\\b",
            "a",
            "/é",
        ] {
            assert!(check_path(bad, PathType::Prefix).is_err(), "{bad:?}");
        }
        assert!(check_path("^/a\\x41", PathType::Regex).is_err());
        assert!(check_path("^/a\\", PathType::Regex).is_err());
        assert!(check_path("^/a\\.b$", PathType::Regex).is_ok());
        assert!(check_path(".js", PathType::Suffix).is_ok());
        assert!(check_path("/api/v1", PathType::Prefix).is_ok());
    }

    #[test]
    fn domains_are_plain_host_names() {
        assert!(check_domain("example.com").is_ok());
        assert!(check_domain("a-b.example").is_ok());
        for bad in [
            "",
            "example.com:80",
            "ex ample.com",
            "*.example.com",
            "-a.com",
            "a..com",
            "a.com\n",
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcard_domains_are_a_leading_star_dot_only() {
        assert!(check_domain_pattern("serviceDomain", "*.example.com").is_ok());
        for bad in [
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "**.example.com",
            "*.-a.com",
        ] {
            assert!(
                check_domain_pattern("serviceDomain", bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_rules_are_literal_single_lines() {
        use crate::route::HeaderAction::{Add, Del};
        let rule = |action, name: &str, value: &str| HeaderRule {
            action,
            name: name.into(),
            value: value.into(),
        };
        assert!(check_header("ReqHeader", &rule(Add, "X-Env", "prod # \"x\" $HOME")).is_ok());
        assert!(check_header("ReqHeader", &rule(Del, "Cookie", "")).is_ok());
        for (name, value) in [
            ("X-A", "a\r\nX-B: b"),
            ("X-A", "%[env(HOME)]"),
            ("X-A", "it's"),
            ("X-A", "on if { ssl_fc }"),
            ("X-A", ""),
            ("X A", "b"),
            ("X-A", "é"),
        ] {
            let error = check_header("ReqHeader", &rule(Add, name, value)).unwrap_err();
            assert!(
                error.to_string().starts_with("invalid addReqHeader: "),
                "{error}"
            );
        }
    }

    #[test]
    fn path_rewrites_cannot_leave_regsub() {
        let rewrite = |search: &str, replace: &str| PathRewrite {
            search: search.into(),
            replace: replace.into(),
        };
        assert!(check_path_rewrite(&rewrite("^/api/", "/")).is_ok());
        assert!(check_path_rewrite(&rewrite("\\.json$", "")).is_ok());
        for (search, replace) in [
            ("", "/"),
            ("/a)", "/"),
            ("/a", "/b)"),
            ("/a", "\\1"),
            ("/a b", "/"),
            ("/a%", "/"),
            ("/a\\x41", "/"),
        ] {
            assert!(
                check_path_rewrite(&rewrite(search, replace)).is_err(),
                "{search:?} {replace:?}"
            );
        }
    }

    #[test]
    fn user_errors_never_show_the_password() {
        let user = |password: &str, encrypted| User {
            name: "alice".into(),
            password: password.into(),
            encrypted,
        };
        assert!(check_user(&user("s3cr3t-pa$$", false)).is_ok());
        assert!(check_user(&user("$6$salt$abc./", true)).is_ok());
        for (password, encrypted) in [
            ("with space", false),
            ("quo'te", false),
            ("", false),
            ("not!hash", true),
        ] {
            let error = check_user(&user(password, encrypted))
                .unwrap_err()
                .to_string();
            assert!(error.contains("alice"), "{error}");
            assert!(password.is_empty() || !error.contains(password), "{error}");
        }
    }

    #[test]
    fn servers_parse_as_ip_and_port() {
        assert_eq!(
            parse_servers("127.0.0.1:80, [::1]:81,127.0.0.1:80").unwrap(),
            vec![
                "127.0.0.1:80".parse::<SocketAddr>().unwrap(),
                "[::1]:81".parse().unwrap()
            ]
        );
        assert!(parse_servers("localhost:80").is_err());
        assert!(parse_servers("127.0.0.1").is_err());
        assert!(parse_servers("127.0.0.1:0").is_err());
        assert_eq!(parse_servers(" , "), Err(InvalidInput::NoServers));
    }

    #[test]
    fn server_names_are_identifiers() {
        assert_eq!(
            server_name("127.0.0.1:8080".parse().unwrap()),
            "s4_127_0_0_1_8080"
        );
        assert_eq!(
            server_name("[fd00::5]:80".parse().unwrap()),
            "s6_fd00_0_0_0_0_0_0_5_80"
        );
    }
}
