//! The release engine: one invocation's steps (`deploy`, `scale`, `stop-old`, `proxy`) driven
//! through the ports.

mod options;
mod step;

pub use options::{ReleaseOptions, RouteSettings, Timeouts};
pub use step::{Step, UnknownStep};
