//! The handlers of the API's endpoints: authorization, the parsing of a request's
//! parameters, `reconfigure`, `remove`, `routes` and the waits while HAProxy restarts (see
//! the [parent module](super)).

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::haproxy::Applied;
use crate::table::write_atomically;
use crate::validate::{list_addresses, InvalidInput};
use wire::{Answer, RouteView, ServerView};

use super::*;

/// How long a request waits for the supervisor to restart a HAProxy whose master or worker
/// died before it is answered 503 with `Retry-After` (a restart takes about 100 ms).
const RESTART_WAIT: Duration = Duration::from_secs(3);

/// How long a failed exchange with HAProxy waits to see whether HAProxy is dying.
const DEATH_NOTICE: Duration = Duration::from_millis(250);

/// What an endpoint answers: the API's JSON answer, or a document of its own.
pub(crate) enum Reply {
    /// `{"Status":…}`.
    Answer(Box<Answer>),
    /// Another body (the configuration, metrics).
    Document {
        /// Its `Content-Type`.
        content_type: &'static str,
        /// The body.
        body: String,
    },
}

impl Reply {
    /// The JSON `answer`.
    pub(crate) fn answer(answer: Answer) -> Reply {
        Reply::Answer(Box::new(answer))
    }
}

/// A failed request: its status and answer.
pub(crate) struct Failure {
    status: StatusCode,
    pub(super) answer: Box<Answer>,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            status,
            answer: Box::new(Answer {
                status: "NOK".into(),
                message: message.into(),
                error: Some(kind),
                ..Answer::default()
            }),
        }
    }

    pub(crate) fn bad_request(error: InvalidInput) -> Failure {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            error.to_string(),
        )
    }
}

impl From<HaproxyError> for Failure {
    fn from(error: HaproxyError) -> Failure {
        let message = error.to_string();
        match error {
            HaproxyError::Invalid(_) => {
                Failure::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
            }
            HaproxyError::Certificate(error) if error.is_bad_input() => {
                Failure::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
            }
            HaproxyError::UnknownService { .. } => {
                Failure::new(StatusCode::NOT_FOUND, ErrorKind::UnknownService, message)
            }
            HaproxyError::NotUp { servers, .. } => {
                let mut failure =
                    Failure::new(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::NotUp, message);
                failure.answer.not_up_servers = servers;
                failure
            }
            HaproxyError::InvalidConfig { .. }
            | HaproxyError::Runtime { .. }
            | HaproxyError::Reload { .. } => Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Refused,
                message,
            ),
            _ => Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Internal,
                message,
            ),
        }
    }
}

/// The query parameters of a request; [`params::check`] makes sure each is known and given
/// once before any is read.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(request: &Request<Incoming>) -> Query {
        let query = request.uri().query().unwrap_or_default();
        Query(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of `name`; an empty value counts as absent, like in 1.x.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn service(&self) -> Result<ServiceName, Failure> {
        let value = self.get("serviceName").ok_or_else(|| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                "serviceName is missing: give the service to route, e.g. serviceName=shop-web",
            )
        })?;
        ServiceName::new(value).map_err(|e| {
            Failure::bad_request(InvalidInput::ServiceName {
                value: e.value.clone(),
            })
        })
    }
}

impl App {
    pub(super) async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let json = |answer: &Answer| serde_json::to_vec(answer).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::builder();
        let (status, content_type, body) = match self.route(request).await {
            Ok(Reply::Answer(answer)) => (StatusCode::OK, "application/json", json(&answer)),
            Ok(Reply::Document { content_type, body }) => {
                (StatusCode::OK, content_type, body.into_bytes())
            }
            Err(failure) => {
                if failure.answer.error == Some(ErrorKind::Unavailable) {
                    response = response.header(header::RETRY_AFTER, "1");
                }
                (failure.status, "application/json", json(&failure.answer))
            }
        };
        response
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a response of a status, two headers and a body is valid")
    }

    /// Runs `change` once HAProxy serves, waiting up to [`RESTART_WAIT`] for the supervisor
    /// to restart a HAProxy whose master or worker died. When HAProxy dies while `change`
    /// runs, `change` failed before anything was stored (the restarted HAProxy runs the
    /// stored routes), so it runs again on the restarted one: a release switching right
    /// after a `kill -9` of HAProxy does not fail.
    pub(crate) async fn across_restarts<T, F>(
        &self,
        mut change: impl FnMut() -> F,
    ) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, HaproxyError>>,
    {
        let deadline = tokio::time::Instant::now() + RESTART_WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.haproxy.wait_serving(left).await {
                return Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Unavailable,
                    "HAProxy is not serving: it is being restarted after its master or worker died; nothing was changed, send the request again",
                ));
            }
            let restarts = self.haproxy.restarts();
            match change().await {
                Ok(value) => return Ok(value),
                Err(error)
                    if tokio::time::Instant::now() < deadline
                        && self.died_during(&error, restarts).await => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Whether `error` came from a HAProxy that died meanwhile: one talking to HAProxy
    /// (socket, runtime command, reload), after which HAProxy was restarted or is seen not
    /// serving within [`DEATH_NOTICE`] — a killed process closes its sockets a moment
    /// before it can be seen gone.
    async fn died_during(&self, error: &HaproxyError, restarts: u64) -> bool {
        if !matches!(
            error,
            HaproxyError::Io { .. } | HaproxyError::Runtime { .. } | HaproxyError::Reload { .. }
        ) {
            return false;
        }
        let deadline = tokio::time::Instant::now() + DEATH_NOTICE;
        loop {
            if self.haproxy.restarts() != restarts || !self.haproxy.serving() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Any HTTP method is taken, like 1.x did (its routes named no method), except for
    /// `cert`, which 1.x took as PUT only.
    async fn route(&self, request: Request<Incoming>) -> Result<Reply, Failure> {
        self.authorize(&request)?;
        let query = Query::parse(&request);
        let path = request.uri().path().to_string();
        let path = path.as_str();
        let endpoint = path.strip_prefix(API_PREFIX).unwrap_or_default();
        let takes = match endpoint {
            "/reconfigure" => params::Endpoint::Reconfigure,
            "/remove" => params::Endpoint::Remove,
            "/config" => params::Endpoint::Config,
            "/reload" => params::Endpoint::Reload,
            "/cert" => params::Endpoint::Cert,
            "/routes" | "/ping" | "/certs" | "/metrics" => params::Endpoint::Other,
            _ if path == "/metrics" => params::Endpoint::Other,
            // Before the parameters: they mean nothing to an endpoint that does not exist.
            _ => return Err(no_endpoint(path)),
        };
        params::check(takes, query.0.iter().map(|(name, _)| name.as_str())).map_err(|error| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                error.to_string(),
            )
        })?;
        match (path, endpoint) {
            ("/metrics", _) => {
                let routes = self.across_restarts(|| self.haproxy.routes()).await?;
                let body = metrics::render(&routes, &self.switches, self.haproxy.restarts());
                Ok(Reply::Document {
                    content_type: metrics::CONTENT_TYPE,
                    body,
                })
            }
            (_, "/reconfigure") => self.reconfigure(&query).await.map(Reply::answer),
            (_, "/remove") => self.remove(&query).await.map(Reply::answer),
            (_, "/routes") => self.routes().await.map(Reply::answer),
            (_, "/config") => crate::endpoints::config(self, query.get("type")).await,
            (_, "/reload") => crate::endpoints::reload(self, query.get("recreate")).await,
            (_, "/ping") => Ok(crate::endpoints::ping()),
            (_, "/metrics") => crate::endpoints::stats_csv(self).await,
            (_, "/certs") => Ok(crate::endpoints::certs(self)),
            (_, "/cert") => crate::endpoints::cert(self, query.get("certName"), request)
                .await
                .map(Reply::answer),
            _ => Err(no_endpoint(path)),
        }
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), Failure> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                ErrorKind::Unauthorized,
                "missing or wrong token: send the proxy's token as `Authorization: Bearer <token>`",
            ))
        }
    }

    async fn reconfigure(&self, query: &Query) -> Result<Answer, Failure> {
        let service = query.service()?;
        let color = query
            .get("serviceColor")
            .map(|c| {
                c.parse::<Color>().map_err(|_| {
                    Failure::bad_request(InvalidInput::Color {
                        value: c.to_string(),
                    })
                })
            })
            .transpose()?;
        let boolean = |name: &'static str| match query.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(Failure::bad_request(InvalidInput::Boolean {
                name,
                value: other.to_string(),
            })),
        };
        let skip_check = boolean("skipCheck")?;
        let keep = boolean(wire::KEEP_ROUTE_OPTIONS)?;
        if keep {
            params::check_kept(query.0.iter().map(|(name, _)| name.as_str()))
                .map_err(Failure::bad_request)?;
        }
        let (destinations, options) = params::reconfigure_route(
            &|name| query.get(name),
            query.0.iter().map(|(name, _)| name.as_str()),
            &self.secrets_dir,
        )
        .map_err(Failure::bad_request)?;
        // The route mirrors the first destination (see RouteEntry::route).
        let first = &destinations[0];
        let path_type = first.path_type;
        let route = Route {
            service: service.clone(),
            color,
            paths: first.paths.clone(),
            domain: first.domains.first().cloned(),
            path_type,
        };
        let from_registry = query.get("servers").is_none();
        let servers = match query.get("servers") {
            Some(list) => parse_servers(list).map_err(Failure::bad_request)?,
            None => self.registered_servers(&service, color).await?,
        };
        let mut answer = Answer {
            status: "OK".into(),
            service_name: service.to_string(),
            service_color: color.map(|c| c.to_string()).unwrap_or_default(),
            service_path: route.paths.clone(),
            service_domain: destinations[0].domains.join(","),
            path_type: path_type.haproxy_matcher().into(),
            skip_check,
            servers: servers.clone(),
            ..Answer::default()
        };
        let entry = RouteEntry {
            route,
            servers: servers.clone(),
            skip_check,
            destinations,
            options,
        };
        let started = std::time::Instant::now();
        let before = self.haproxy.route(&service);
        match self
            .across_restarts(|| {
                let entry = entry.clone();
                async move {
                    if keep {
                        self.haproxy.reconfigure_keeping(entry).await
                    } else {
                        self.haproxy.reconfigure_entry(entry).await
                    }
                }
            })
            .await
        {
            Ok(applied) => {
                if before.is_none_or(|b| b.servers != servers || b.route.color != color) {
                    self.switches.record(&service, color, started.elapsed());
                }
                let source_warning = self.remember_source(&service, from_registry).await;
                answer.message = with_warnings(
                    format!(
                        "{service} is routed to {} (all UP)",
                        list_addresses(&servers)
                    ),
                    applied,
                    source_warning,
                );
                Ok(answer)
            }
            Err(mut failure) => {
                failure.answer.service_name = answer.service_name;
                failure.answer.service_color = answer.service_color;
                failure.answer.service_path = answer.service_path;
                failure.answer.service_domain = answer.service_domain;
                failure.answer.path_type = answer.path_type;
                failure.answer.skip_check = skip_check;
                failure.answer.servers = servers;
                Err(failure)
            }
        }
    }

    /// The servers of `service` registered as `<service>-<color>` (or `<service>`).
    async fn registered_servers(
        &self,
        service: &ServiceName,
        color: Option<Color>,
    ) -> Result<Vec<SocketAddr>, Failure> {
        let Some(registry) = &self.registry else {
            let name = service.instance_name(color);
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("servers is missing: give servers=ip:port,… or start the proxy with --registry so it looks up the instances registered as {name}"),
            ));
        };
        registered_servers(registry, service, color).await
    }

    /// Records whether the route of `service` is registry-backed (`true`) or not (`false`,
    /// also after a removal), writing the list when it changes or an earlier write failed.
    ///
    /// It is called once the route is applied, so a failed write is a warning (returned), not
    /// a failure: the route stands, memory keeps its new source, and the file follows at the
    /// next write.
    async fn remember_source(&self, service: &ServiceName, from_registry: bool) -> Option<String> {
        let mut backed = self.registry_routes.lock().await;
        let changed = if from_registry {
            backed.services.insert(service.clone())
        } else {
            backed.services.remove(service)
        };
        if !changed && !backed.file_behind {
            return None;
        }
        let names: Vec<&str> = backed.services.iter().map(ServiceName::as_str).collect();
        let text = serde_json::to_vec_pretty(&names).expect("a list of names serializes");
        match write_atomically(&self.registry_routes_path, text).await {
            Ok(()) => {
                backed.file_behind = false;
                None
            }
            Err(error) => {
                backed.file_behind = true;
                Some(format!(
                    "the list of registry-backed routes {} could not be written ({error}); a restarted proxy would rebuild from the registry the routes listed before this change, until a later change writes the list again",
                    self.registry_routes_path.display()
                ))
            }
        }
    }

    async fn remove(&self, query: &Query) -> Result<Answer, Failure> {
        let service = query.service()?;
        let mut answer = Answer {
            service_name: service.to_string(),
            ..Answer::default()
        };
        match self
            .across_restarts(|| self.haproxy.remove_named(&service, query.get("aclName")))
            .await
        {
            Ok(applied) => {
                let source_warning = self.remember_source(&service, false).await;
                answer.status = "OK".into();
                answer.message = with_warnings(
                    format!("the route of {service} was removed"),
                    applied,
                    source_warning,
                );
                Ok(answer)
            }
            Err(mut failure) => {
                failure.answer.service_name = answer.service_name;
                Err(failure)
            }
        }
    }

    pub(crate) async fn routes(&self) -> Result<Answer, Failure> {
        let routes = self.across_restarts(|| self.haproxy.routes()).await?;
        let views: Vec<RouteView> = routes
            .into_iter()
            .map(|r| RouteView {
                service_name: r.entry.route.service.to_string(),
                service_color: r.entry.route.color.map(|c| c.to_string()),
                service_path: r.entry.route.paths.clone(),
                service_domain: r.entry.route.domain.clone(),
                path_type: r.entry.route.path_type.haproxy_matcher().into(),
                skip_check: r.entry.skip_check,
                servers: r
                    .servers
                    .into_iter()
                    .map(|s| ServerView {
                        address: s.address,
                        name: s.name,
                        state: s.state,
                        sessions: s.sessions,
                        active: s.active,
                    })
                    .collect(),
                options: r.entry.options.redacted(),
                destinations: r.entry.destinations,
            })
            .collect();
        Ok(Answer {
            status: "OK".into(),
            message: format!("{} routes", views.len()),
            routes: Some(views),
            ..Answer::default()
        })
    }
}

fn no_endpoint(path: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ErrorKind::UnknownService,
        format!(
            "no endpoint {path}: use {API_PREFIX}/reconfigure, /remove, /routes, /config, /reload, /ping, /certs, /cert or /metrics (HAProxy's statistics), or /metrics (Prometheus)"
        ),
    )
}

/// `message` followed by each warning of a change that was applied (also printed on stderr,
/// where the proxy's operator sees it).
fn with_warnings(message: String, applied: Applied, source_warning: Option<String>) -> String {
    let mut message = message;
    for warning in applied.warnings.into_iter().chain(source_warning) {
        eprintln!("docker-flow proxy: warning: {warning}");
        message.push_str("; warning: ");
        message.push_str(&warning);
    }
    message
}

/// Whether `presented` is `token`, in a time that depends on `presented` only: every byte
/// presented is compared (with the token's bytes, cycled), and a length mismatch is folded
/// into the result instead of returning early, so the time says nothing about the token,
/// not even its length. `token` is never empty ([`start`] refuses an empty one).
fn constant_time_eq(presented: &[u8], token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut difference = u8::from(presented.len() != token.len());
    for (index, byte) in presented.iter().enumerate() {
        difference |= byte ^ token[index % token.len()];
    }
    difference == 0 && !presented.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal_including_their_length() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(
            !constant_time_eq(b"s3crets3cret", b"s3cret"),
            "a repeated token is not it"
        );
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"x", b""));
    }
}
