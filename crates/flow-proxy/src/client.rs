//! [`HttpProxy`]: the [`flow_core::Proxy`] port implemented against the proxy's HTTP API.
//!
//! It uses hyper-util's legacy client over plain HTTP: the API server is built on the same
//! hyper stack already, so the client adds no dependency (no TLS stack, no second HTTP
//! implementation to compile), and the API is only ever reached over loopback or a private
//! network, like 1.x's reconfigure port.

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use flow_core::{Proxy, ProxyError, Route, ServiceName};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::wire::{Answer, ErrorKind};
use crate::api::API_PREFIX;
use crate::params::KEEP_ROUTE_OPTIONS;

/// A client of the proxy's HTTP API, usable wherever a [`Proxy`] is needed.
///
/// Its [`Proxy::reconfigure`] sends `keepRouteOptions=true`: a release moves the servers,
/// colour and first destination's paths and domain, and keeps what an operator configured on
/// the route besides (`users`, headers, other destinations, …).
#[derive(Clone)]
pub struct HttpProxy {
    /// `host:port` (IPv6 hosts in brackets).
    authority: String,
    token: Option<String>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl HttpProxy {
    /// A client of the proxy API at `host:port`; with `token`, every request carries
    /// `Authorization: Bearer <token>`.
    pub fn new(host: &str, port: u16, token: Option<String>) -> HttpProxy {
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        HttpProxy {
            authority,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `GET <API_PREFIX><endpoint>?<params>` and reads the JSON answer; a `NOK`
    /// answer becomes the matching [`ProxyError`].
    async fn call(&self, endpoint: &str, params: &[(&str, String)]) -> Result<Answer, ProxyError> {
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in params {
                query.append_pair(name, value);
            }
            query.finish()
        };
        let uri = format!("http://{}{API_PREFIX}{endpoint}?{query}", self.authority);
        let mut request = Request::get(&uri);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| ProxyError::Refused {
                message: format!("cannot build the request {uri}: {e}"),
            })?;
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| ProxyError::Unreachable {
                address: self.authority.clone(),
                source,
            };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| unreachable(Box::new(e)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(Box::new(e)))?
            .to_bytes();
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| ProxyError::Refused {
            message: format!(
                "{} answered {status} with a body that is not the proxy API's JSON: {}",
                self.authority,
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        })?;
        if status == StatusCode::OK && answer.status == "OK" {
            return Ok(answer);
        }
        Err(match answer.error {
            Some(ErrorKind::NotUp) => match ServiceName::new(answer.service_name.clone()) {
                Ok(service) => ProxyError::NotUp {
                    service,
                    servers: answer.not_up_servers,
                },
                Err(_) => ProxyError::Refused {
                    message: answer.message,
                },
            },
            Some(ErrorKind::UnknownService) if status == StatusCode::NOT_FOUND => {
                match ServiceName::new(answer.service_name.clone()) {
                    Ok(service) => ProxyError::UnknownService { service },
                    Err(_) => ProxyError::Refused {
                        message: answer.message,
                    },
                }
            }
            _ => ProxyError::Refused {
                message: answer.message,
            },
        })
    }
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProxy")
            .field("authority", &self.authority)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl fmt::Display for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker-flow proxy at http://{}", self.authority)
    }
}

#[async_trait]
impl Proxy for HttpProxy {
    async fn reconfigure(&self, route: &Route, servers: &[SocketAddr]) -> Result<(), ProxyError> {
        // A release states only the route's paths, domain, colour and servers: what an
        // operator configured besides (users, headers, other destinations, …) is kept.
        let mut params = vec![
            (KEEP_ROUTE_OPTIONS, "true".to_string()),
            ("serviceName", route.service.to_string()),
            ("servicePath", route.paths.join(",")),
            ("pathType", route.path_type.haproxy_matcher().to_string()),
            (
                "servers",
                servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        if let Some(color) = route.color {
            params.push(("serviceColor", color.to_string()));
        }
        if let Some(domain) = &route.domain {
            params.push(("serviceDomain", domain.clone()));
        }
        self.call("/reconfigure", &params).await.map(drop)
    }

    async fn sessions(
        &self,
        service: &ServiceName,
        servers: &[SocketAddr],
    ) -> Result<u64, ProxyError> {
        let answer = self.call("/routes", &[]).await?;
        let sessions = answer
            .routes
            .unwrap_or_default()
            .iter()
            .filter(|r| r.service_name == service.as_str())
            .flat_map(|r| r.servers.iter())
            .filter(|s| servers.contains(&s.address))
            .map(|s| s.sessions)
            .sum();
        Ok(sessions)
    }

    async fn remove(&self, service: &ServiceName) -> Result<(), ProxyError> {
        self.call("/remove", &[("serviceName", service.to_string())])
            .await
            .map(drop)
    }
}
