//! What `docker-flow --version` says: the version, the commit it was built from and the Docker
//! Engine API versions it speaks.

use std::sync::OnceLock;

/// `-V`: the crate version.
pub const SHORT: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from (see `build.rs`).
pub const COMMIT: &str = env!("FLOW_COMMIT");

/// `--version`: `0.1.0 (commit 0123abcd4567, Docker API 1.41 to 1.53)`.
pub fn long() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{SHORT} (commit {COMMIT}, Docker API {})",
            flow_docker::api_versions()
        )
    })
}
