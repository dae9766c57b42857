//! docker-flow's end-to-end tests: one test binary, one module per area.
//!
//! A single binary keeps the link count down on a small machine and lets every area share what
//! is built once per process: the `docker-flow` binary and the demo images (see [`support`]).
//! Tests that need Docker run against the real engine, each in a Compose project of its own
//! that a guard removes at the end, also when the test fails.
//!
//! To add an area, add a module file next to this one and declare it below.

mod load;
mod support;

mod chaos;
mod cli_release;
mod compose_files;
mod embedding;
mod proxy;
mod proxy_faults;
mod registry;
mod rollback;
mod tooling;
