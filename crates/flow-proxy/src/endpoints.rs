//! The endpoints of Docker Flow 1.x that users scripted against besides `reconfigure` and
//! `remove` (`docs/usage.md` of docker-flow-proxy), each under [`crate::api::API_PREFIX`]:
//!
//! * `ping` — `{"Status":"OK"}` while the API runs (1.x's `HEALTHCHECK` target).
//! * `config` — the configuration HAProxy runs, as text (`text/plain`); with `type=json`,
//!   the routes as `routes` answers them. 1.x answered `text/html`; the body is the same
//!   kind of document, so `text/plain` says what it is.
//! * `reload` — renders the stored routes, validates and loads them (a reload drops no
//!   request). `recreate` is taken and changes nothing: every reload is a recreation here,
//!   since the configuration is always rendered from the route table. `fromListener` is
//!   refused by name (there is no Swarm Listener).
//! * `metrics` — HAProxy's statistics as CSV, as 1.x passed them through (`show stat` of the
//!   running worker). Prometheus metrics are at `/metrics` ([`crate::metrics`]).
//! * `certs` — the certificates the proxy serves: none, since it does not terminate TLS
//!   (yet); the answer says so, in 1.x's shape (`Certs: []`).
//! * `cert` — uploading a certificate is refused with a 400 that says TLS is not supported.

use http::{Method, StatusCode};

use crate::api::wire::ErrorKind;
use crate::api::{App, Failure, Reply};

/// `ping`.
pub(crate) fn ping() -> Reply {
    json(serde_json::json!({"Status": "OK", "Message": "pong"}))
}

/// `config?type=…`.
pub(crate) async fn config(app: &App, kind: Option<&str>) -> Result<Reply, Failure> {
    if kind.is_some_and(|kind| kind.eq_ignore_ascii_case("json")) {
        return app.routes().await.map(Reply::answer);
    }
    Ok(Reply::Document {
        content_type: "text/plain; charset=utf-8",
        body: app.haproxy.config_text(),
    })
}

/// `reload?recreate=…`.
pub(crate) async fn reload(app: &App, recreate: Option<&str>) -> Result<Reply, Failure> {
    if let Some(value) = recreate.filter(|v| !matches!(*v, "true" | "false")) {
        return Err(Failure::bad_request(
            crate::validate::InvalidInput::Boolean {
                name: "recreate",
                value: value.to_string(),
            },
        ));
    }
    app.across_restarts(|| app.haproxy.reload()).await?;
    Ok(json(serde_json::json!({
        "Status": "OK",
        "Message": "the stored routes were rendered, validated and loaded",
    })))
}

/// `metrics` (1.x): HAProxy's statistics CSV.
pub(crate) async fn stats_csv(app: &App) -> Result<Reply, Failure> {
    let body = app.across_restarts(|| app.haproxy.stats_csv()).await?;
    Ok(Reply::Document {
        content_type: "text/csv; charset=utf-8",
        body,
    })
}

/// `certs`.
pub(crate) fn certs() -> Reply {
    json(serde_json::json!({
        "Status": "OK",
        "Message": "no certificates: this proxy does not terminate TLS yet (terminate TLS in front of it)",
        "Certs": [],
    }))
}

/// `cert` (PUT in 1.x): always refused.
pub(crate) fn cert(method: &Method) -> Failure {
    let message = if method == Method::PUT {
        "cert is not supported: this proxy does not terminate TLS yet, so a certificate would never be served; terminate TLS in front of it".to_string()
    } else {
        format!("cert takes PUT, not {method}; and it is not supported: this proxy does not terminate TLS yet")
    };
    Failure::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
}

fn json(value: serde_json::Value) -> Reply {
    Reply::Document {
        content_type: "application/json",
        body: value.to_string(),
    }
}
