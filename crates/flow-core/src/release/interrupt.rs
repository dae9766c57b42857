//! Asking a running release to stop (Ctrl-C) so that it rolls back instead of dying half way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A one-way switch shared between whoever wants a release to stop and the engine.
///
/// The engine checks it between phases and while it waits (health, drain, pull); a step
/// interrupted before its commit rolls back like any other failure
/// ([`Cause::Interrupted`](crate::release::Cause::Interrupted)). Clones share the switch.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    triggered: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    /// A switch that is off.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Turns the switch on; every waiter wakes up.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether the switch is on.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Completes once the switch is on.
    pub async fn triggered(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}
