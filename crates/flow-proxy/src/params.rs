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
//! recognised for the parameters 1.x documents as indexable, and refused with their reason.

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

const TLS: &str =
    "TLS is not supported yet: terminate TLS in front of the proxy, which serves plain HTTP";
pub(crate) const TCP: &str = "TCP mode (reqMode=tcp) is not supported yet: only HTTP routes are";
const AUTH: &str = "basic authentication is not supported yet: protect the service itself, or put an authenticating proxy in front";
const TEMPLATES: &str = "custom templates and raw HAProxy configuration are not accepted: the proxy renders and validates its whole configuration, and a snippet could break or take it over";
const INDEXED: &str = "several destinations for one service (indexed parameters such as servicePath.1) are not supported yet: route each destination as a service of its own";

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

/// Every parameter of `reconfigure`: Docker Flow 1.x's documented ones and this proxy's own
/// (`serviceColor`, `servers`, `skipCheck`).
pub const RECONFIGURE: &[Parameter] = &[
    implemented("serviceName", false),
    implemented("serviceColor", false),
    implemented("servicePath", true),
    implemented("serviceDomain", true),
    implemented("pathType", false),
    implemented("servers", false),
    implemented("skipCheck", false),
    implemented("reqMode", true),
    refused("aclName", false, "routes are ordered by how specific they are (domain routes first, then longer paths), not by name: leave aclName out"),
    refused("addReqHeader", false, "adding request headers is not supported yet"),
    refused("addResHeader", false, "adding response headers is not supported yet"),
    refused("setReqHeader", false, "setting request headers is not supported yet"),
    refused("setResHeader", false, "setting response headers is not supported yet"),
    refused("delReqHeader", false, "deleting request headers is not supported yet"),
    refused("delResHeader", false, "deleting response headers is not supported yet"),
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
    refused("port", true, "servers carry their own port: give servers=ip:port, or register the instances with their port"),
    refused("srcPort", true, TCP),
    refused("checkTcp", false, TCP),
    refused("clitcpka", false, TCP),
    refused("timeoutClient", false, TCP),
    refused("serviceGroup", false, TCP),
    refused("balanceGroup", false, TCP),
    refused("timeoutServer", false, "per-service server timeouts are not supported yet (the proxy waits 60 s for a server)"),
    refused("timeoutTunnel", false, "per-service tunnel timeouts are not supported yet"),
    refused("reqPathSearchReplace", true, "rewriting request paths is not supported yet"),
    refused("reqPathReplace", false, "deprecated in 1.x in favour of reqPathSearchReplace, and not supported"),
    refused("reqPathSearch", false, "deprecated in 1.x in favour of reqPathSearchReplace, and not supported"),
    refused("servicePathExclude", true, "excluding paths is not supported yet"),
    refused("serviceDomainAlgo", false, "domains are matched case-insensitively against the Host header without its port; other matching methods are not supported"),
    refused("serviceHeader", true, "routing on request headers is not supported"),
    refused("userAgent", true, "routing on the User-Agent is not supported"),
    refused("sessionType", false, "sticky sessions are not supported: servers are balanced round-robin"),
    refused("isDefaultBackend", false, "a default backend is not supported yet: requests no route matches get 503"),
    refused("allowedMethods", true, "filtering by HTTP method is not supported yet"),
    refused("deniedMethods", true, "filtering by HTTP method is not supported yet"),
    refused("redirectFromDomain", true, "domain redirects are not supported yet"),
    refused("compressionAlgo", false, "HTTP compression is not supported"),
    refused("compressionType", false, "HTTP compression is not supported"),
    refused("users", false, AUTH),
    refused("usersPassEncrypted", false, AUTH),
    refused("usersSecret", false, "Docker secrets are a Swarm feature, and basic authentication is not supported yet"),
    refused("ignoreAuthorization", true, AUTH),
    refused("httpsPort", false, TLS),
    refused("srcHttpsPort", true, TLS),
    refused("httpsOnly", true, TLS),
    refused("httpsRedirectCode", false, TLS),
    refused("redirectWhenHttpProto", false, TLS),
    refused("redirectUnlessHttpsProto", false, TLS),
    refused("denyHttp", true, TLS),
    refused("serviceCert", false, TLS),
    refused("sslVerifyNone", true, "servers are reached over plain HTTP: TLS to servers is not supported"),
    refused("verifyClientSsl", false, TLS),
];

/// Every parameter of `remove`.
pub const REMOVE: &[Parameter] = &[
    implemented("serviceName", false),
    refused("aclName", false, "routes have no ACL name (see reconfigure): serviceName alone names the route"),
    refused("distribute", false, "one proxy instance serves the routes: there are no other instances to distribute the change to"),
];

/// Every parameter of `config`.
pub const CONFIG: &[Parameter] = &[implemented("type", false)];

/// Every parameter of `reload`.
pub const RELOAD: &[Parameter] = &[
    implemented("recreate", false),
    refused("fromListener", false, "there is no Docker Flow Swarm Listener: routes come from the stored route table (and the registry, with --registry); reload renders them again"),
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
                Support::Implemented if index => {
                    return Err(ParameterError::Unsupported {
                        name: name.into(),
                        reason: INDEXED,
                    })
                }
                Support::Implemented => {}
            },
        }
    }
    Ok(())
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
        let error = check(Endpoint::Reconfigure, ["serviceName", "users"]).unwrap_err();
        assert!(matches!(&error, ParameterError::Unsupported { name, .. } if name == "users"));
        assert!(
            error.to_string().starts_with("users is not supported: "),
            "{error}"
        );
        let error = check(Endpoint::Reconfigure, ["servicepath"]).unwrap_err();
        assert!(matches!(&error, ParameterError::Unknown { name, .. } if name == "servicepath"));
        assert!(error.to_string().contains("servicePath"), "{error}");
        assert!(matches!(
            check(Endpoint::Reconfigure, ["servicePath.1"]),
            Err(ParameterError::Unsupported {
                reason: INDEXED,
                ..
            })
        ));
        assert!(matches!(
            check(Endpoint::Reconfigure, ["pathType.1"]),
            Err(ParameterError::Unknown { .. })
        ));
        assert!(matches!(
            check(Endpoint::Reconfigure, ["serviceName", "serviceName"]),
            Err(ParameterError::Duplicate { .. })
        ));
        assert!(matches!(
            check(Endpoint::Remove, ["serviceName", "aclName"]),
            Err(ParameterError::Unsupported { .. })
        ));
        assert!(matches!(
            check(Endpoint::Other, ["x"]),
            Err(ParameterError::Unknown { .. })
        ));
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
