//! docker-flow's reverse proxy: HAProxy driven through its Runtime API, behind a Docker Flow
//! compatible HTTP API.
//!
//! [`HttpProxy`], the client that implements the [`flow_core::Proxy`] port against that API,
//! lives in `flow-proxy-client` with the API's wire types ([`api::wire`]), the route model
//! ([`table::Destination`], [`RouteEntry`], …) and [`validate`]: a release needs only those,
//! so a tool that drives a proxy depends on that crate and links no server. They are
//! re-exported here under their former paths.
//!
//! # Design
//!
//! * **HAProxy does the proxying; this crate only drives it** ([`haproxy`]). One HAProxy
//!   process runs in master-worker mode, so a reload hands the listening sockets to a new
//!   worker while the old one finishes its requests. Reloads are only needed when routing
//!   changes (a new service, other paths, domain or matcher). Switching a service to other
//!   servers — what every release does — happens through the Runtime API without a reload:
//!   new servers are health-checked while they take no traffic, put in rotation once they
//!   passed, and only then the old ones drain. That ordering is what gives zero failed
//!   requests during a switch; putting the old servers out first gives 503s.
//! * **Nothing unvalidated is loaded.** Every value that reaches the configuration is
//!   checked against an allow-list first ([`validate`]), and every rendered configuration is
//!   checked with `haproxy -c` before it replaces the file and is reloaded. A configuration
//!   HAProxy rejects leaves the running one serving and reaches the caller as HAProxy's own
//!   message. Docker Flow 1.x did neither, so one bad snippet broke all later reloads.
//! * **The route table is the source of truth** ([`table`]). It is stored atomically in the
//!   state directory after each change, and the configuration file is rewritten to match the
//!   runtime state after each change, so a reload (or a restart) never changes routing. At
//!   start the whole table — blue-green routes too — is rendered into the configuration
//!   before HAProxy opens its frontends; 1.x lost blue-green routes on restart. Once HAProxy
//!   runs a change, though, the change stands: memory follows it first and the files are
//!   written after, so a write that fails then is answered `OK` with a warning rather than
//!   as a failure the caller would roll back (a restart would then restore the previous
//!   table; see [`haproxy`]). File work runs on tokio's blocking pool, never on the runtime.
//! * **Reloads close no connection.** The old worker keeps idle keep-alive connections open
//!   (`option idle-close-on-response`) and answers one more request on each with
//!   `Connection: close`, using the routing it was started with; closing them at once made
//!   clients that were sending at that moment fail (2 of 6,000 requests over 16 reloads in our
//!   load test). So right after a reload (new service, changed paths), a request on a
//!   connection opened before it can still see the previous routing, once. Switching servers
//!   needs no reload and holds for every connection as soon as `reconfigure` returns.
//!   WebSockets and other upgraded connections stay with the old worker until they close
//!   (no `hard-stop-after`), and the sessions it holds are still counted, so a release drains
//!   them as it drains any other (see [`haproxy`]).
//! * **Removal is exact.** Routes are keyed by service name, never by a prefix: removing
//!   `app` leaves `app2` alone.
//! * **The API answers when the switch is done** ([`api`]): `reconfigure` returns once every
//!   new server is UP, or fails naming those that are not (the old servers keep serving), so
//!   the release engine can commit or roll back on a fact rather than after a fixed sleep.
//!   Servers are given explicitly (`servers=ip:port,…`), or looked up in a
//!   [`flow_core::Registry`] when the proxy was started with one.
//!
//! * **HAProxy outlives its driver and is supervised** ([`haproxy`]): the
//!   master runs in its own process group and is never killed by dropping its handle; on
//!   SIGINT/SIGTERM [`serve`] stops the API and leaves HAProxy serving, and the next start on
//!   the same state directory adopts it through `master.sock` (one driver per directory,
//!   `proxy.lock`). A master that is gone (killed, or exited because its worker died) is
//!   restarted from the stored routes; [`serve`] fails when that keeps failing.
//! * **A restart of HAProxy is waited for, not failed** ([`api`]): a request that arrives
//!   while HAProxy's master or worker is dead, or whose exchange with HAProxy fails because
//!   it is dying, waits for the supervisor's restart (bounded, then 503 with `Retry-After`)
//!   and runs on the restarted HAProxy; [`HttpProxy`] retries for a bounded time while
//!   nothing listens on the API or it answers that 503. A release switching during a restart
//!   of HAProxy or of `proxy serve` thus waits instead of rolling back.
//! * **Every parameter is known** ([`params`]): implemented, or answered 400 naming it.
//! * **A route is a service's destinations** ([`table::Destination`]): Docker Flow's indexed
//!   parameters give a service several, each with its own paths, domains, ports, mode (HTTP,
//!   or TCP on a port of its own) and handling, and each rendered as a backend of its own
//!   holding the service's servers ([`haproxy::render`]). A release still moves one list of servers,
//!   and every backend follows it through the Runtime API. What a request goes through on
//!   the way (authentication, headers, path rewrites, redirects, method filters) is rendered
//!   from validated values only, never from text handed to HAProxy as it came: 1.x passed
//!   header values and conditions through, so a parameter could read HAProxy's environment
//!   (`%[env(…)]`) or change a rule.
//! * **Metrics are HAProxy's** (`/metrics`, see the README): requests, 5xx, sessions and
//!   server states are read from `show stat` when scraped, never counted per request here.
//! * **Docker Flow 1.x's other endpoints** (`config`, `reload`, `ping`, `metrics`, `certs`,
//!   `cert`) answer as its `docs/usage.md` documents them, for any HTTP method (`cert`: PUT).
//! * **TLS is terminated by HAProxy** ([`tls`]) on the HTTPS addresses, with certificates
//!   from a directory and uploads, each checked (PEM, key matching, validity) before HAProxy
//!   loads it; SNI picks among them, and a change is a reload like any other.
//!
//! # Entry points
//!
//! * [`serve`] runs the proxy until SIGINT/SIGTERM (the CLI's `docker-flow proxy serve`);
//!   [`start`] starts it and hands back a [`RunningProxy`] for embedding and tests.
//! * [`HttpProxy::new`] (from `flow-proxy-client`) builds the client adapter used by the
//!   release engine.

#![deny(missing_docs)]

pub mod api;
mod endpoints;
pub mod haproxy;
mod metrics;
pub mod params;
mod process;
mod render;
pub mod table;
pub mod tls;

/// [`HttpProxy`], the client of the API (from `flow-proxy-client`).
pub use flow_proxy_client::client;
/// The checks every value passes before it reaches HAProxy (from `flow-proxy-client`).
pub use flow_proxy_client::validate;

pub use api::{serve, start, RunningProxy, ServeConfig, ServeError};
pub use flow_proxy_client::HttpProxy;
pub use flow_proxy_client::InvalidInput;
pub use haproxy::{Applied, Haproxy, HaproxyError, HaproxyOptions, ServerState};
pub use table::{RouteEntry, RouteTable, StateError};
