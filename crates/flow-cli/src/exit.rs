//! The exit codes, one per outcome a script needs to tell apart.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failed before changing anything (engine or registry unreachable, lock held by another release, pull failed, …) |
//! | 2 | bad input: options, `docker-flow.yml`, Compose file, a `rollback` with nothing to roll back to, an unknown `status` target; nothing was touched |
//! | 3 | aborted and rolled back: what the step started was removed, the live version and the stored state are untouched |
//! | 4 | changes remain: the new version was committed but a later part failed, an earlier step of the same run had already changed something (`-F deploy -F stop-old` whose stop-old fails), or a rollback could not undo everything (the message says what to fix) |

use std::process::ExitCode;

use flow_core::release::ReleaseError;

/// What an invocation ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked was done.
    Success = 0,
    /// Nothing was changed.
    NothingChanged = 1,
    /// The input was refused before anything was touched.
    BadInput = 2,
    /// A step was aborted and cleanly rolled back.
    RolledBack = 3,
    /// Some changes remain that were not asked for or could not be undone.
    ChangesRemain = 4,
}

impl Exit {
    /// The exit code for a failed release.
    pub fn of(error: &ReleaseError) -> Exit {
        match error {
            _ if error.is_bad_input() => Exit::BadInput,
            ReleaseError::NothingChanged { .. } => Exit::NothingChanged,
            ReleaseError::Aborted {
                cleanup_failures, ..
            } if cleanup_failures.is_empty() => Exit::RolledBack,
            _ => Exit::ChangesRemain,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}
