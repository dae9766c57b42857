//! Which query parameters each endpoint takes: every parameter of Docker Flow 1.x's
//! `reconfigure` and `remove` is listed here, implemented or refused with the reason, so that
//! no parameter is ever accepted and ignored.
//!
//! A request with a parameter that is refused, unknown, or given twice is answered 400 naming
//! it, and nothing changes. 1.x accepted and dropped what it did not know, so a typo
//! (`servicepath`) or a feature this proxy lacks (`users`: basic authentication) left a
//! service routed in a way its owner did not ask for — open to everyone, in the case of
//! `users`.
//!
//! Indexed forms (`servicePath.1`, `port.2`, …: several destinations for one service) are
//! taken for the parameters 1.x documents as indexable; `reconfigure_route` turns a query
//! into the destinations and options of a route.

use std::collections::BTreeSet;
use std::path::Path;

use flow_core::PathType;
use flow_proxy_client::wire::KEEP_ROUTE_OPTIONS;

use crate::table::{Destination, HeaderAction, HeaderRule, Mode, PathRewrite, RouteOptions, User};
use crate::validate::InvalidInput;

/// An API endpoint that takes parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `reconfigure`.
    Reconfigure,
    /// `remove`.
    Remove,
    /// `config`.
    Config,
    /// `reload`.
    Reload,
    /// `cert`.
    Cert,
    /// Endpoints without parameters (`routes`, `ping`, `certs`, `/metrics`).
    Other,
}

/// How this proxy treats a documented parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// It has its effect.
    Implemented,
    /// It is answered 400 with this reason.
    Refused(&'static str),
}

/// One documented parameter.
#[derive(Debug, Clone, Copy)]
pub struct Parameter {
    /// Its name in the query.
    pub name: &'static str,
    /// Whether 1.x accepts it with an index suffix (`name.1`).
    pub indexed: bool,
    /// What this proxy does with it.
    pub support: Support,
}

const TLS_TO_SERVERS: &str = "the proxy terminates TLS and reaches servers over plain HTTP (httpsPort gives another port for the requests that came over HTTPS): TLS to servers is not supported";
const TCP_OPTION: &str = "TCP frontends (reqMode=tcp) take srcPort, port and timeoutServer/timeoutTunnel; this TCP option is not supported";
const TEMPLATES: &str = "custom templates and raw HAProxy configuration are not accepted: the proxy renders and validates its whole configuration, and a snippet could break or take it over";

const fn implemented(name: &'static str, indexed: bool) -> Parameter {
    Parameter {
        name,
        indexed,
        support: Support::Implemented,
    }
}

const fn refused(name: &'static str, indexed: bool, reason: &'static str) -> Parameter {
    Parameter {
        name,
        indexed,
        support: Support::Refused(reason),
    }
}

/// What a release states about a route; with [`KEEP_ROUTE_OPTIONS`] these are the only
/// parameters taken, and everything else of the route is kept as it is.
const STATED_BY_RELEASES: &[&str] = &[
    "serviceName",
    "serviceColor",
    "servicePath",
    "serviceDomain",
    "pathType",
    "servers",
    KEEP_ROUTE_OPTIONS,
];

/// Checks a `reconfigure` with `keepRouteOptions=true` gives only what a release states: any
/// other parameter would be a setting that is both kept and given, so which one wins could
/// only be guessed.
pub(crate) fn check_kept<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), InvalidInput> {
    match names.into_iter().find(|name| !STATED_BY_RELEASES.contains(name)) {
        None => Ok(()),
        Some(name) => Err(invalid(
            name,
            format!(
                "{KEEP_ROUTE_OPTIONS}=true keeps every setting of the route except {}; to change {name}, send a reconfigure without {KEEP_ROUTE_OPTIONS}, which replaces the whole route",
                STATED_BY_RELEASES[1..STATED_BY_RELEASES.len() - 1].join(", ")
            ),
        )),
    }
}

/// Every parameter of `reconfigure`: Docker Flow 1.x's documented ones and this proxy's own
/// (`serviceColor`, `servers`, `skipCheck`, `keepRouteOptions`). The indexed ones describe one
/// destination each (the unindexed form is the first destination, `name.1`, `name.2`, … the
/// next ones); the others apply to the whole service.
pub const RECONFIGURE: &[Parameter] = &[
    implemented("serviceName", false),
    implemented("serviceColor", false),
    implemented("servicePath", true),
    implemented("serviceDomain", true),
    implemented("pathType", true),
    implemented("servers", false),
    implemented("skipCheck", false),
    implemented(KEEP_ROUTE_OPTIONS, false),
    implemented("reqMode", true),
    implemented("srcPort", true),
    implemented("port", true),
    implemented("servicePathExclude", true),
    implemented("reqPathSearchReplace", true),
    implemented("allowedMethods", true),
    implemented("deniedMethods", true),
    implemented("httpsOnly", true),
    implemented("redirectFromDomain", true),
    implemented("timeoutServer", true),
    implemented("timeoutTunnel", true),
    implemented("aclName", false),
    implemented("isDefaultBackend", false),
    implemented("users", false),
    implemented("usersPassEncrypted", false),
    implemented("usersSecret", false),
    implemented("addReqHeader", false),
    implemented("addResHeader", false),
    implemented("setReqHeader", false),
    implemented("setResHeader", false),
    implemented("delReqHeader", false),
    implemented("delResHeader", false),
    implemented("redirectWhenHttpProto", false),
    implemented("httpsRedirectCode", false),
    implemented("redirectUnlessHttpsProto", false),
    implemented("denyHttp", true),
    implemented("ignoreAuthorization", true),
    refused("backendExtra", false, TEMPLATES),
    refused("templateBePath", false, TEMPLATES),
    refused("templateFePath", false, TEMPLATES),
    refused("userDef", true, "it only fed custom templates, which this proxy does not have"),
    refused("checkResolvers", false, "servers are IP addresses (servers=ip:port, or the registry): nothing is resolved through DNS"),
    refused("discoveryType", false, "servers come from servers=ip:port or from the registry (--registry), not from Swarm's DNS or overlay network"),
    refused("outboundHostname", true, "servers are IP addresses: dispatching to a host name is not supported"),
    refused("connectionMode", false, "the proxy keeps HTTP connections alive and closes idle ones only after a response, which is what makes reloads drop no request; other connection modes are not supported"),
    refused("distribute", false, "one proxy instance serves the routes: there are no other instances to distribute the change to"),
    refused("proxyInstanceName", false, "one proxy instance serves the routes: there is no instance name to filter on"),
    refused("checkTcp", true, "TCP destinations are always health-checked with a TCP connect (unless skipCheck=true)"),
    refused("clitcpka", true, TCP_OPTION),
    refused("timeoutClient", true, TCP_OPTION),
    refused("serviceGroup", true, TCP_OPTION),
    refused("balanceGroup", true, TCP_OPTION),
    refused("reqPathReplace", false, "deprecated in 1.x in favour of reqPathSearchReplace: use reqPathSearchReplace=search,replace"),
    refused("reqPathSearch", false, "deprecated in 1.x in favour of reqPathSearchReplace: use reqPathSearchReplace=search,replace"),
    refused("serviceDomainAlgo", false, "domains are matched case-insensitively against the Host header without its port (*.example.com for every subdomain); other matching methods are not supported"),
    refused("serviceHeader", true, "routing on request headers is not supported"),
    refused("userAgent", true, "routing on the User-Agent is not supported"),
    refused("sessionType", false, "sticky sessions are not supported: servers are balanced round-robin"),
    refused("compressionAlgo", false, "HTTP compression is not supported"),
    refused("compressionType", false, "HTTP compression is not supported"),
    implemented("httpsPort", true),
    implemented("srcHttpsPort", true),
    refused("serviceCert", false, "certificates are chosen by SNI among all the proxy serves, not per service: upload it with PUT /v1/docker-flow-proxy/cert?certName=NAME, or put it in --certs-dir"),
    refused("sslVerifyNone", true, TLS_TO_SERVERS),
    refused("verifyClientSsl", false, "client certificates are not verified: the HTTPS addresses do not ask for one"),
];

/// Every parameter of `remove`.
pub const REMOVE: &[Parameter] = &[
    implemented("serviceName", false),
    implemented("aclName", false),
    refused("distribute", false, "one proxy instance serves the routes: there are no other instances to distribute the change to"),
];

/// Every parameter of `config`.
pub const CONFIG: &[Parameter] = &[implemented("type", false)];

/// Every parameter of `reload`.
pub const RELOAD: &[Parameter] = &[
    implemented("recreate", false),
    refused("fromListener", false, "there is no Docker Flow Swarm Listener: routes come from the stored route table (and the registry, with --registry); reload renders them again"),
];

/// Every parameter of `cert`.
pub const CERT: &[Parameter] = &[
    implemented("certName", false),
    refused("distribute", false, "one proxy instance serves the certificates: there are no other instances to distribute it to"),
];

/// A parameter that is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    /// A documented parameter this proxy does not implement.
    #[error("{name} is not supported: {reason}")]
    Unsupported {
        /// The parameter as sent.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A parameter no endpoint of this proxy or of Docker Flow 1.x knows.
    #[error("unknown parameter {name}: {endpoint} takes {known}")]
    Unknown {
        /// The parameter as sent.
        name: String,
        /// The endpoint.
        endpoint: &'static str,
        /// The parameters it takes.
        known: String,
    },
    /// The same parameter twice: which one was meant cannot be known.
    #[error("{name} is given twice: give each parameter once (lists are comma-separated, e.g. servicePath=/a,/b)")]
    Duplicate {
        /// The parameter.
        name: String,
    },
}

fn parameters(endpoint: Endpoint) -> (&'static str, &'static [Parameter]) {
    match endpoint {
        Endpoint::Reconfigure => ("reconfigure", RECONFIGURE),
        Endpoint::Remove => ("remove", REMOVE),
        Endpoint::Config => ("config", CONFIG),
        Endpoint::Reload => ("reload", RELOAD),
        Endpoint::Cert => ("cert", CERT),
        Endpoint::Other => ("this endpoint", &[]),
    }
}

/// Checks that every name of `names` is a parameter `endpoint` implements, given once.
pub(crate) fn check<'a>(
    endpoint: Endpoint,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ParameterError> {
    let (endpoint_name, known) = parameters(endpoint);
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ParameterError::Duplicate { name: name.into() });
        }
        let (base, index) = match name.split_once('.') {
            Some((base, index))
                if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (base, true)
            }
            _ => (name, false),
        };
        let parameter = known
            .iter()
            .find(|p| p.name == base && (p.indexed || !index));
        match parameter {
            None => {
                let list = if known.is_empty() {
                    "no parameters".to_string()
                } else {
                    known
                        .iter()
                        .filter(|p| p.support == Support::Implemented)
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(ParameterError::Unknown {
                    name: name.into(),
                    endpoint: endpoint_name,
                    known: list,
                });
            }
            Some(parameter) => match parameter.support {
                Support::Refused(reason) => {
                    return Err(ParameterError::Unsupported {
                        name: name.into(),
                        reason,
                    })
                }
                Support::Implemented => {}
            },
        }
    }
    Ok(())
}

/// The destinations and options of a `reconfigure` query, checked ([`check`] has made sure
/// every name is known and given once). `get` returns a parameter's value (empty values
/// count as absent); `names` are the query's parameter names, for the indexes given;
/// `secrets_dir` holds the files `usersSecret` names (`dfp_users_<suffix>`).
pub(crate) fn reconfigure_route<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
    names: impl IntoIterator<Item = &'a str>,
    secrets_dir: &Path,
) -> Result<(Vec<Destination>, RouteOptions), InvalidInput> {
    let mut indexes = BTreeSet::new();
    for name in names {
        let Some((base, index)) = name.split_once('.') else {
            continue;
        };
        if get(name).is_none() || !RECONFIGURE.iter().any(|p| p.indexed && p.name == base) {
            continue;
        }
        match index.parse::<u32>() {
            Ok(0) | Err(_) => {
                return Err(invalid(
                    name,
                    "indexes start at 1 (servicePath.1, servicePath.2, …); the unindexed form is the first destination",
                ))
            }
            Ok(index) => {
                indexes.insert(index);
            }
        }
    }
    let unindexed_given = RECONFIGURE
        .iter()
        .filter(|p| p.indexed)
        .any(|p| get(p.name).is_some());
    let mut destinations = Vec::new();
    if unindexed_given || indexes.is_empty() {
        destinations.push(destination(get, "")?);
    }
    for index in indexes {
        destinations.push(destination(get, &format!(".{index}"))?);
    }
    Ok((destinations, options(get, secrets_dir)?))
}

fn invalid(parameter: &str, reason: impl Into<String>) -> InvalidInput {
    InvalidInput::Parameter {
        parameter: parameter.to_string(),
        reason: reason.into(),
    }
}

/// A comma-separated list, items trimmed, empty ones dropped.
fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

fn boolean(parameter: &str, value: Option<&str>) -> Result<bool, InvalidInput> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(parameter, format!("{other:?}: use true or false"))),
    }
}

fn number<T: std::str::FromStr>(
    parameter: &str,
    value: Option<&str>,
) -> Result<Option<T>, InvalidInput> {
    value
        .map(|text| {
            text.parse().map_err(|_| {
                invalid(
                    parameter,
                    format!("{text:?} is not a whole number in range"),
                )
            })
        })
        .transpose()
}

/// The destination of the parameters ending in `suffix` (`""` or `.N`).
fn destination<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
    suffix: &str,
) -> Result<Destination, InvalidInput> {
    let name = |base: &str| format!("{base}{suffix}");
    let value = |base: &str| get(&name(base));
    let mode = match value("reqMode") {
        None | Some("http") => Mode::Http,
        Some("tcp") => Mode::Tcp,
        Some(other) => {
            return Err(invalid(
                &name("reqMode"),
                format!("{other:?}: use http (the default) or tcp (sni is not supported)"),
            ))
        }
    };
    let path_type = match value("pathType") {
        None => PathType::default(),
        Some(matcher) => {
            PathType::from_haproxy_matcher(matcher).ok_or_else(|| InvalidInput::PathType {
                value: matcher.to_string(),
            })?
        }
    };
    let mut paths = list(value("servicePath"));
    let domains = list(value("serviceDomain"));
    if mode == Mode::Http && paths.is_empty() {
        if domains.is_empty() {
            return Err(if suffix.is_empty() {
                InvalidInput::NoPaths
            } else {
                InvalidInput::Conflict(format!(
                    "the destination {suffix} has neither servicePath{suffix} nor serviceDomain{suffix}: give at least one of them"
                ))
            });
        }
        if value("pathType").is_some() {
            return Err(InvalidInput::Conflict(format!(
                "pathType{suffix} needs servicePath{suffix}: a destination with serviceDomain alone takes every path"
            )));
        }
        // 1.x routed a domain-only destination on every path.
        paths.push("/".into());
    }
    let mut path_rewrites = Vec::new();
    if let Some(pairs) = value("reqPathSearchReplace") {
        for pair in pairs.split(':') {
            let (search, replace) = pair.split_once(',').ok_or_else(|| {
                invalid(
                    &name("reqPathSearchReplace"),
                    format!("{pair:?} is not a search,replace pair (pairs are separated by ':', e.g. /old/,/new/:/x,/y)"),
                )
            })?;
            path_rewrites.push(PathRewrite {
                search: search.to_string(),
                replace: replace.to_string(),
            });
        }
    }
    let destination = Destination {
        mode,
        paths,
        path_type,
        excluded_paths: list(value("servicePathExclude")),
        domains,
        src_port: number(&name("srcPort"), value("srcPort"))?,
        port: number(&name("port"), value("port"))?,
        https_port: number(&name("httpsPort"), value("httpsPort"))?,
        src_https_port: number(&name("srcHttpsPort"), value("srcHttpsPort"))?,
        path_rewrites,
        allowed_methods: list(value("allowedMethods")),
        denied_methods: list(value("deniedMethods")),
        https_only: boolean(&name("httpsOnly"), value("httpsOnly"))?,
        deny_http: boolean(&name("denyHttp"), value("denyHttp"))?,
        ignore_authorization: boolean(&name("ignoreAuthorization"), value("ignoreAuthorization"))?,
        redirect_from_domains: list(value("redirectFromDomain")),
        timeout_server: number(&name("timeoutServer"), value("timeoutServer"))?,
        timeout_tunnel: number(&name("timeoutTunnel"), value("timeoutTunnel"))?,
    };
    let which = if suffix.is_empty() {
        String::new()
    } else {
        format!(" (destination {suffix})")
    };
    crate::validate::check_destination(&destination, &which)?;
    Ok(destination)
}

/// The service-wide options.
fn options<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
    secrets_dir: &Path,
) -> Result<RouteOptions, InvalidInput> {
    let mut request_headers = Vec::new();
    let mut response_headers = Vec::new();
    for (action, verb) in [
        (HeaderAction::Add, "add"),
        (HeaderAction::Set, "set"),
        (HeaderAction::Del, "del"),
    ] {
        for (kind, rules) in [
            ("ReqHeader", &mut request_headers),
            ("ResHeader", &mut response_headers),
        ] {
            let parameter = format!("{verb}{kind}");
            for item in list(get(&parameter)) {
                let rule = match action {
                    HeaderAction::Del => HeaderRule {
                        action,
                        name: item,
                        value: String::new(),
                    },
                    _ => {
                        let (name, value) = item.split_once(' ').ok_or_else(|| {
                            invalid(
                                &parameter,
                                format!("{item:?} has no value: give `Name value` items, e.g. {parameter}=X-Env%20prod"),
                            )
                        })?;
                        HeaderRule {
                            action,
                            name: name.to_string(),
                            value: value.trim().to_string(),
                        }
                    }
                };
                rules.push(rule);
            }
        }
    }
    let options = RouteOptions {
        acl_name: get("aclName").map(str::to_string),
        default_backend: boolean("isDefaultBackend", get("isDefaultBackend"))?,
        users: users(get, secrets_dir)?,
        request_headers,
        response_headers,
        redirect_when_http_proto: boolean("redirectWhenHttpProto", get("redirectWhenHttpProto"))?,
        redirect_unless_https_proto: boolean(
            "redirectUnlessHttpsProto",
            get("redirectUnlessHttpsProto"),
        )?,
        https_redirect_code: number("httpsRedirectCode", get("httpsRedirectCode"))?,
    };
    crate::validate::check_options(&options)?;
    Ok(options)
}

/// The users of `users` (`name:password,…`) and of the `usersSecret` file; a user of `users`
/// without a password takes it from the file. Messages never show a password.
fn users<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
    secrets_dir: &Path,
) -> Result<Vec<User>, InvalidInput> {
    let encrypted = boolean("usersPassEncrypted", get("usersPassEncrypted"))?;
    let parse = |text: &str| -> Vec<(String, Option<String>)> {
        text.split([',', '\n'])
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once(':') {
                Some((name, password)) => (name.trim().to_string(), Some(password.to_string())),
                None => (item.to_string(), None),
            })
            .collect()
    };
    let secret = match get("usersSecret") {
        None => None,
        Some(suffix) => {
            if !suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || suffix.starts_with('.')
            {
                return Err(invalid(
                    "usersSecret",
                    format!("{suffix:?}: a secret name suffix has ASCII letters, digits, '-', '_' or '.'"),
                ));
            }
            let path = secrets_dir.join(format!("dfp_users_{suffix}"));
            let text = std::fs::read_to_string(&path).map_err(|error| {
                invalid(
                    "usersSecret",
                    format!("cannot read {} ({error}): it holds name:password,… for usersSecret={suffix}", path.display()),
                )
            })?;
            Some(parse(&text))
        }
    };
    let given = get("users").map(parse);
    let listed = match (&given, &secret) {
        (Some(given), _) => given.clone(),
        (None, Some(secret)) => secret.clone(),
        (None, None) => return Ok(Vec::new()),
    };
    let mut users: Vec<User> = Vec::new();
    for (name, password) in listed {
        let password = password
            .or_else(|| {
                secret
                    .iter()
                    .flatten()
                    .find(|(secret_name, _)| *secret_name == name)
                    .and_then(|(_, password)| password.clone())
            })
            .ok_or_else(|| {
                invalid(
                    "users",
                    format!("{name} has no password: give users={name}:password (or the password in the usersSecret file)"),
                )
            })?;
        if users.iter().any(|u| u.name == name) {
            return Err(invalid("users", format!("{name} is listed twice")));
        }
        users.push(User {
            name,
            password,
            encrypted,
        });
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implemented_parameters_pass_and_the_others_are_named() {
        assert_eq!(
            check(
                Endpoint::Reconfigure,
                ["serviceName", "servicePath", "servers"]
            ),
            Ok(())
        );
        let error = check(Endpoint::Reconfigure, ["serviceName", "sessionType"]).unwrap_err();
        assert!(
            matches!(&error, ParameterError::Unsupported { name, .. } if name == "sessionType")
        );
        assert!(
            error
                .to_string()
                .starts_with("sessionType is not supported: "),
            "{error}"
        );
        let error = check(Endpoint::Reconfigure, ["servicepath"]).unwrap_err();
        assert!(matches!(&error, ParameterError::Unknown { name, .. } if name == "servicepath"));
        assert!(error.to_string().contains("servicePath"), "{error}");
        assert_eq!(
            check(Endpoint::Reconfigure, ["servicePath.1", "port.2"]),
            Ok(())
        );
        assert!(matches!(
            check(Endpoint::Reconfigure, ["users.1"]),
            Err(ParameterError::Unknown { .. })
        ));
        assert!(matches!(
            check(Endpoint::Reconfigure, ["serviceName", "serviceName"]),
            Err(ParameterError::Duplicate { .. })
        ));
        assert!(matches!(
            check(Endpoint::Remove, ["serviceName", "distribute"]),
            Err(ParameterError::Unsupported { .. })
        ));
        assert!(matches!(
            check(Endpoint::Other, ["x"]),
            Err(ParameterError::Unknown { .. })
        ));
    }

    #[test]
    fn a_kept_route_takes_only_what_releases_state() {
        let release = [
            "keepRouteOptions",
            "serviceName",
            "serviceColor",
            "servicePath",
            "serviceDomain",
            "pathType",
            "servers",
        ];
        assert_eq!(check(Endpoint::Reconfigure, release), Ok(()));
        assert_eq!(check_kept(release), Ok(()));
        for extra in ["users", "skipCheck", "servicePath.1", "port"] {
            let error = check_kept(["serviceName", extra]).unwrap_err().to_string();
            assert!(error.contains(extra), "{error}");
            assert!(error.contains("without keepRouteOptions"), "{error}");
        }
    }

    #[test]
    fn every_parameter_is_listed_once_and_in_the_readme() {
        let readme = include_str!("../../../README.md");
        for list in [RECONFIGURE, REMOVE] {
            let mut names: Vec<&str> = list.iter().map(|p| p.name).collect();
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "a parameter is listed twice");
            for name in names {
                assert!(
                    readme.contains(&format!("`{name}`")),
                    "README.md does not document the parameter {name}"
                );
            }
        }
    }
}
