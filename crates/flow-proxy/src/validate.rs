//! Validation of everything that ends up in the HAProxy configuration.
//!
//! HAProxy's configuration language splits words on white space, starts comments at `#`,
//! gives quotes and some backslash sequences a meaning, and a newline ends a statement. A path
//! or domain that carried any of those could break the whole file or inject directives, so
//! every value is checked here, against a small allow-list, before it reaches the renderer;
//! a rejected value changes nothing and becomes an HTTP 400.

use std::net::{IpAddr, SocketAddr};

use flow_core::{PathType, Route};

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
            return reject("only ASCII letters, digits, '-' and '.' are allowed (no port, no scheme, no wildcard)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return reject("a label cannot start or end with '-'");
        }
    }
    Ok(())
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
