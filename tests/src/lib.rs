//! Fixtures shared by docker-flow's integration tests, benchmarks and the README's demo.
//!
//! Every test that needs Docker runs against the real engine with the `demo-server` image
//! built here, `FROM scratch`, through the Docker API: no registry is reachable, so nothing is
//! pulled, and no `docker` CLI is needed. See [`fixtures`].

#![deny(missing_docs)]

pub mod fixtures;
