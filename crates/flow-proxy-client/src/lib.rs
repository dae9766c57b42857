//! The client side of docker-flow's proxy: [`HttpProxy`], the [`flow_core::Proxy`] port
//! implemented against the proxy's HTTP API, the API's JSON documents ([`wire`]), the route
//! model they carry ([`route`]) and the checks a request's values must pass ([`validate`]).
//!
//! # Why a crate of its own
//!
//! A release only talks to a running proxy: it needs an HTTP client and the API's types, not
//! HAProxy's supervision, its Runtime API client, the configuration renderer or the API
//! server, which live in `flow-proxy`. With the client here, a tool that drives a proxy (the
//! CLI's release, status and rollback, or any Rust program) depends on this crate and links
//! hyper's client only; `flow-proxy` depends on it for the same types, so server and client
//! cannot disagree on the wire format or on what is valid.
//!
//! Validation is here rather than in the server because a caller can check a path or domain
//! before it sends anything (the CLI checks its configuration file this way); the server
//! runs the same checks on every request.

#![deny(missing_docs)]

pub mod client;
pub mod route;
pub mod validate;
pub mod wire;

pub use client::{HttpProxy, RETRY_FOR};
pub use route::{RouteEntry, RouteOptions};
pub use validate::InvalidInput;
pub use wire::{ServerState, API_PREFIX};
