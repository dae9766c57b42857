//! The release engine: one invocation's steps (`deploy`, `scale`, `stop-old`, `proxy`) driven
//! through the ports.
//!
//! # Shape
//!
//! [`Engine::run`] takes the service's deploy lock (renewed in the background; once it is lost
//! nothing more is changed), reads the state once, computes the wanted scale once (so
//! `--scale=+2` is applied once per invocation whatever the order of the steps), then runs the
//! steps in the order given. A deploy, and a rollback (`-F rollback`, which runs the same
//! phases with what the previous release left: see `rollback.rs`), is an explicit state machine (`DeployPhase` in
//! `engine.rs`): each variant documents what it does, where it goes next, and what a failure
//! there leads to; one `advance` function moves it.
//!
//! # Guarantees
//!
//! * Order: new instances started → all healthy → proxy switched (when a proxy is configured)
//!   → state committed (compare-and-swap) → old instances drained and stopped (when asked).
//! * A failure before the commit removes what the step started, points the proxy back at the
//!   old servers if it had been switched, and leaves the live instances and the stored state
//!   untouched ([`ReleaseError::Aborted`]).
//! * A failure before anything was started changes nothing ([`ReleaseError::NothingChanged`]).
//! * The colour a proxy is pointed at is always the live one after the preceding steps.
//! * A run killed at any point (no rollback ran) leaves what the next deploy or rollback
//!   converges from: before it removes the instances left in the group it goes into, it
//!   reads the proxy's route, points the proxy back at the stored live colour when it routes
//!   to them (or stores what it serves as live when that colour runs nothing), and drains the
//!   running ones (`reconcile.rs`). So nothing the proxy routes to, or that carries sessions,
//!   is removed without a switch away and a drain first, and the dry run plans the same.
//! * Every wait is bounded ([`Timeouts`]).

mod engine;
mod error;
mod event;
mod interrupt;
mod options;
mod plan;
mod reconcile;
mod rollback;
mod step;
#[cfg(test)]
mod tests;

pub use engine::{Engine, PhaseTiming, Ports, Report};
pub use error::{Cause, ReleaseError};
pub use event::{Event, Observer, Phase};
pub use interrupt::Interrupt;
pub use options::{ReleaseOptions, RouteSettings, Timeouts};
pub use plan::{Plan, PlannedAction};
pub use step::{Step, UnknownStep};
