//! `RUST_LOG` diagnostics through `tracing`: when the variable is set, events of docker-flow
//! (`docker_flow::port` for every port call) and of the libraries it uses (bollard, hyper,
//! reqwest) at the levels it names are written to stderr, e.g. `RUST_LOG=debug` or
//! `RUST_LOG=docker_flow::port=debug,hyper=warn`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// Whether [`init`] installed a subscriber.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// A `RUST_LOG` value that is not a list of tracing directives.
#[derive(Debug, thiserror::Error)]
#[error("RUST_LOG={value:?} is not a list of log directives ({source}); it is ignored: use levels and targets such as RUST_LOG=debug or RUST_LOG=docker_flow::port=debug,hyper=warn")]
pub struct InvalidFilter {
    /// The variable's value.
    pub value: String,
    /// The parser's complaint.
    pub source: tracing_subscriber::filter::ParseError,
}

/// Writes diagnostics to stderr when `RUST_LOG` is set and not empty; an invalid value is
/// returned so that the caller warns about it by name.
pub fn init() -> Result<(), InvalidFilter> {
    let Some(value) = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(());
    };
    let filter = EnvFilter::builder()
        .parse(&value)
        .map_err(|source| InvalidFilter { value, source })?;
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .is_ok();
    ENABLED.store(installed, Ordering::SeqCst);
    Ok(())
}

/// Whether diagnostics are written to stderr.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}
