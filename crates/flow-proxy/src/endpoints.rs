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
//! * `certs` — the certificates HAProxy serves on the HTTPS addresses, in 1.x's shape
//!   (`Certs: [{ProxyServiceName, CertsDir, CertContent}]`, where 1.x put the file name in
//!   `ProxyServiceName`), plus `Name`, `Source` (`upload` or `certs-dir`), `DnsNames`,
//!   `NotAfter` and `Expired`. `CertContent` is the certificate chain only: 1.x answered
//!   the private key too, to anyone who could reach the API.
//! * `cert` — `PUT …/cert?certName=NAME` with the PEM file as the body: checked, stored in
//!   the state directory and served (see [`crate::tls`]); a refused file is answered 400
//!   naming the problem and changes nothing. PUT only, like 1.x.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::api::wire::{Answer, ErrorKind};
use crate::api::{App, Failure, Reply};
use crate::haproxy::HaproxyError;
use crate::tls::{self, CertError, Certificates};
use crate::validate::list_addresses;

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
pub(crate) fn certs(app: &App) -> Reply {
    let state_dir = app.haproxy.state_dir();
    let certificates = app.haproxy.certificates();
    let listed: Vec<serde_json::Value> = certificates
        .iter()
        .map(|certificate| {
            let path = Certificates::path(state_dir, certificate);
            let directory = path.parent().unwrap_or(state_dir);
            serde_json::json!({
                "ProxyServiceName": certificate.name,
                "CertsDir": directory.display().to_string(),
                "CertContent": certificate.chain_pem,
                "Name": certificate.name,
                "Source": certificate.source,
                "DnsNames": certificate.dns_names,
                "NotAfter": certificate.not_after,
                "Expired": certificate.expired,
            })
        })
        .collect();
    let https = app.haproxy.https_binds();
    let message = match (https.is_empty(), listed.len()) {
        (true, _) => {
            "no certificates: the proxy has no HTTPS address (start it with --bind-https ADDR)"
                .to_string()
        }
        (false, 0) => format!(
            "no certificates yet: the HTTPS addresses ({}) listen from the first one on",
            list_addresses(https)
        ),
        (false, count) => format!("{count} certificates, served on {}", list_addresses(https)),
    };
    json(serde_json::json!({
        "Status": "OK",
        "Message": message,
        "Certs": listed,
    }))
}

/// `cert?certName=NAME` (PUT, the PEM file as the body).
pub(crate) async fn cert(
    app: &App,
    name: Option<&str>,
    request: Request<Incoming>,
) -> Result<Answer, Failure> {
    let method = request.method().clone();
    if method != Method::PUT {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            format!("cert takes PUT with the PEM file as the body, not {method}"),
        ));
    }
    let refused = |error: CertError| Failure::from(HaproxyError::Certificate(error));
    let name = name.ok_or(CertError::NoName).map_err(refused)?;
    tls::check_name(name).map_err(refused)?;
    let body: Bytes = match Limited::new(request.into_body(), tls::MAX_PEM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(refused(CertError::TooLarge {
                name: name.to_string(),
            }))
        }
        Err(error) => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("cannot read the body of the certificate {name}: {error}"),
            ))
        }
    };
    let certificate = app
        .across_restarts(|| app.haproxy.add_certificate(name, body.to_vec()))
        .await?;
    Ok(Answer {
        status: "OK".into(),
        message: format!(
            "certificate {name} is served on {} for {}, until {}",
            list_addresses(app.haproxy.https_binds()),
            certificate.dns_names.join(", "),
            certificate.not_after
        ),
        ..Answer::default()
    })
}

fn json(value: serde_json::Value) -> Reply {
    Reply::Document {
        content_type: "application/json",
        body: value.to_string(),
    }
}
