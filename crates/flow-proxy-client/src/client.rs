//! [`HttpProxy`]: the [`flow_core::Proxy`] port implemented against the proxy's HTTP API.
//!
//! It uses hyper-util's legacy client over plain HTTP: the API server is built on the same
//! hyper stack already, so the client adds no dependency (no TLS stack, no second HTTP
//! implementation to compile), and the API is only ever reached over loopback or a private
//! network, like 1.x's reconfigure port.
//!
//! # Retries across restarts
//!
//! A request that cannot be sent because nothing listens (the API of a `proxy serve` being
//! upgraded or restarted by its service manager) or that is answered 503 `Unavailable`
//! (HAProxy being restarted after its master or worker died; the answer carries
//! `Retry-After`) is sent again until [`RETRY_FOR`] after the first try: in both cases
//! nothing was changed, so a release switching during such a restart waits for it instead of
//! rolling back. Nothing else is retried: a request that reached the proxy and failed has
//! an outcome the caller must see.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flow_core::{PathType, Proxy, ProxyError, Route, ServedRoute, ServedServer, ServiceName};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::wire::{Answer, ErrorKind, RouteView, API_PREFIX, KEEP_ROUTE_OPTIONS};

/// How long a request is retried while the proxy restarts (see the [module docs](self)).
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// The pause between two connection attempts to an API that does not listen.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The longest `Retry-After` honoured, whatever the proxy asks.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);

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

    /// The route of exactly `service` in the routes API's answer (`None`: it has none).
    async fn route_of(&self, service: &ServiceName) -> Result<Option<RouteView>, ProxyError> {
        let answer = self.call("/routes", &[]).await?;
        Ok(answer
            .routes
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.service_name == service.as_str()))
    }

    /// Sends `GET <API_PREFIX><endpoint>?<params>` and reads the JSON answer, retrying while
    /// the proxy restarts (see the [module docs](self)); a `NOK` answer becomes the
    /// matching [`ProxyError`].
    async fn call(&self, endpoint: &str, params: &[(&str, String)]) -> Result<Answer, ProxyError> {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let pause = match self.call_once(endpoint, params).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { pause, error } => {
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(error);
                    }
                    pause
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One request; [`Attempt::Retry`] when it changed nothing because the proxy restarts.
    async fn call_once(&self, endpoint: &str, params: &[(&str, String)]) -> Attempt {
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
        let request = match request.body(Empty::new()) {
            Ok(request) => request,
            Err(e) => {
                return Attempt::Done(Err(ProxyError::Refused {
                    message: format!("cannot build the request {uri}: {e}"),
                }))
            }
        };
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| ProxyError::Unreachable {
                address: self.authority.clone(),
                source,
            };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            // Nothing listens (yet): the request was never sent.
            Err(e) if e.is_connect() => {
                return Attempt::Retry {
                    pause: CONNECT_RETRY_PAUSE,
                    error: unreachable(Box::new(e)),
                }
            }
            Err(e) => return Attempt::Done(Err(unreachable(Box::new(e)))),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return Attempt::Done(Err(unreachable(Box::new(e)))),
        };
        let Ok(answer) = serde_json::from_slice::<Answer>(&body) else {
            return Attempt::Done(Err(ProxyError::Refused {
                message: format!(
                    "{} answered {status} with a body that is not the proxy API's JSON: {}",
                    self.authority,
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            }));
        };
        let unavailable = answer.error == Some(ErrorKind::Unavailable);
        match (outcome(status, answer), retry_after) {
            (Err(error), Some(pause)) if unavailable => Attempt::Retry { pause, error },
            (result, _) => Attempt::Done(result),
        }
    }
}

/// The API's `answer` with `status`, or the [`ProxyError`] it stands for.
fn outcome(status: StatusCode, answer: Answer) -> Result<Answer, ProxyError> {
    if status == StatusCode::OK && answer.status == "OK" {
        return Ok(answer);
    }
    Err(match answer.error {
        Some(ErrorKind::Unavailable) => ProxyError::Refused {
            message: format!(
                "{} (still so after retrying for {RETRY_FOR:?})",
                answer.message
            ),
        },
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

/// The outcome of one request.
enum Attempt {
    /// Final.
    Done(Result<Answer, ProxyError>),
    /// Nothing was changed: send it again after `pause`, or report `error` once out of time.
    Retry { pause: Duration, error: ProxyError },
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
        let sessions = self
            .route_of(service)
            .await?
            .iter()
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

    async fn served_route(&self, service: &ServiceName) -> Result<Option<ServedRoute>, ProxyError> {
        self.route_of(service)
            .await?
            .map(|view| served(service, view))
            .transpose()
    }
}

/// A route of the routes API as the [`Proxy`] port speaks of it.
fn served(service: &ServiceName, view: RouteView) -> Result<ServedRoute, ProxyError> {
    let garbled = |what: &str, value: &str| ProxyError::Refused {
        message: format!("the proxy reported the route of {service} with {what} {value:?}"),
    };
    let color = view
        .service_color
        .as_deref()
        .map(|c| c.parse().map_err(|_| garbled("the colour", c)))
        .transpose()?;
    let path_type = PathType::from_haproxy_matcher(&view.path_type)
        .ok_or_else(|| garbled("the path type", &view.path_type))?;
    Ok(ServedRoute {
        route: Route {
            service: service.clone(),
            color,
            paths: view.service_path,
            domain: view.service_domain,
            path_type,
        },
        servers: view
            .servers
            .into_iter()
            .map(|server| ServedServer {
                address: server.address,
                state: server.state.as_str().to_string(),
                sessions: server.sessions,
                active: server.active,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves `answers` in turn (status line and extra headers, body), one per connection,
    /// counting the requests; the listener is bound after `delay`.
    fn api(
        address: SocketAddr,
        delay: Duration,
        answers: Vec<(&'static str, &'static str)>,
    ) -> Arc<AtomicUsize> {
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let listener = TcpListener::bind(address).await.unwrap();
            for (head, body) in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 {head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
            }
        });
        served
    }

    fn free_address() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    const OK: (&str, &str) = ("200 OK", r#"{"Status":"OK","Message":"done"}"#);
    const UNAVAILABLE: (&str, &str) = (
        "503 Service Unavailable\r\nRetry-After: 1",
        r#"{"Status":"NOK","Message":"HAProxy is not serving","Error":"Unavailable"}"#,
    );

    #[tokio::test]
    async fn a_proxy_that_restarts_is_waited_for() {
        let address = free_address();
        // Nothing listens for 300 ms, then HAProxy is restarting once, then it answers.
        let served = api(address, Duration::from_millis(300), vec![UNAVAILABLE, OK]);
        let proxy = HttpProxy::new("127.0.0.1", address.port(), None);
        let started = tokio::time::Instant::now();
        let answer = proxy.call("/routes", &[]).await.unwrap();
        assert_eq!(answer.message, "done");
        assert_eq!(served.load(Ordering::SeqCst), 2);
        assert!(
            started.elapsed() >= Duration::from_millis(1300),
            "Retry-After was honoured"
        );
    }

    #[tokio::test]
    async fn a_failure_that_reached_the_proxy_is_not_retried() {
        let address = free_address();
        let served = api(
            address,
            Duration::ZERO,
            vec![(
                "500 Internal Server Error",
                r#"{"Status":"NOK","Message":"HAProxy refused it","Error":"Refused"}"#,
            )],
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let proxy = HttpProxy::new("127.0.0.1", address.port(), None);
        let error = proxy.call("/routes", &[]).await.unwrap_err();
        assert!(error.to_string().contains("HAProxy refused it"), "{error}");
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }
}
