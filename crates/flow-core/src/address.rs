//! `host:port` addresses, as docker-flow's options and adapters take them: one parser, so
//! that `--registry etcd://…`, `--consul-address` and an etcd adapter opened from a library
//! accept and refuse the same text.
//!
//! Hosts are names (letters, digits, `.`, `-`, `_`), IPv4 addresses, or IPv6 addresses in
//! brackets; a port is 1 to 65535. Nothing is resolved: a name is checked for its form only.

/// `host:port` (or `[v6]:port`) as written, trimmed of a trailing `/`, with `default_port`
/// when the port is left out; the error says what is wrong in words.
pub fn authority(text: &str, default_port: u16) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Err("the address is empty".into());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?} has no closing ']'"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after the address"))?,
            ),
        };
        (format!("[{v6}]"), port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (text.to_string(), None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if !host_ok {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("{port:?} is not a port number from 1 to 65535")),
        },
    };
    Ok(format!("{host}:{port}"))
}

/// A comma-separated list of [`authority`] addresses (blanks around the commas are ignored);
/// at least one.
pub fn authority_list(text: &str, default_port: u16) -> Result<Vec<String>, String> {
    let addresses = text
        .split(',')
        .map(|member| authority(member, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ips_and_bracketed_ipv6_take_a_port_or_the_default() {
        assert_eq!(authority("etcd-1:2380", 2379).unwrap(), "etcd-1:2380");
        assert_eq!(authority(" 10.0.0.5/ ", 2379).unwrap(), "10.0.0.5:2379");
        assert_eq!(authority("[::1]:8500", 1).unwrap(), "[::1]:8500");
        assert_eq!(authority("[::1]", 8500).unwrap(), "[::1]:8500");
        assert_eq!(
            authority_list("a:1, b", 2379).unwrap(),
            ["a:1".to_string(), "b:2379".to_string()]
        );
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (text, expected) in [
            ("", "empty"),
            ("[::1", "no closing ']'"),
            ("[zz]:1", "not an IPv6 address"),
            ("[::1]x", "unexpected"),
            ("a b:1", "not a host name"),
            ("host:0", "not a port number"),
            ("host:http", "not a port number"),
        ] {
            let error = authority(text, 1).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        assert!(authority_list("a:1,,b:2", 1).is_err());
    }
}
