//! What a release does with the instances an earlier run left in the group it goes into,
//! read from the proxy before anything is removed. The dry run ([`crate::release::Plan`])
//! and the executor both call [`inspect`], so they cannot disagree about it.
//!
//! A run killed at any point leaves one of these behind, and the next release finds it as
//! leftovers of the group it goes into:
//!
//! * killed while starting or waiting for health: new instances nothing routes to; they are
//!   removed (after a drain check, which finds no session);
//! * killed between the switch and the commit: the proxy routes to instances the stored state
//!   does not name live. They are never removed while routed to: the proxy is first pointed
//!   back at the stored live colour's running instances ([`Recovery::SwitchBack`]), or, when
//!   that colour runs nothing, the routed instances are stored as live
//!   ([`Recovery::Adopt`]) and the release goes into the other colour;
//! * killed during stop-old's drain: old instances that still carry sessions; they are
//!   drained (bounded by the drain timeout) before they are removed.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::domain::{Color, ServiceName};
use crate::orchestrator::Instance;
use crate::proxy::DynProxy;
use crate::release::{Cause, Step};

/// What has to happen to the proxy before the leftovers may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The proxy routes to no leftover: nothing to do before the drain.
    Nothing,
    /// The proxy routes to leftovers while the stored live colour runs `to`: point the proxy
    /// back at `to` (colour `color`) first.
    SwitchBack {
        /// The stored live colour.
        color: Option<Color>,
        /// Its running instances.
        to: Vec<Instance>,
    },
    /// The proxy routes to leftovers and the stored live colour runs nothing: take the
    /// routed instances as the live release (colour `color`), then plan again.
    Adopt {
        /// The colour the proxy serves.
        color: Color,
        /// The instances it routes to.
        instances: Vec<Instance>,
    },
}

/// The leftovers of a release as the proxy sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    /// What the proxy needs first.
    pub(crate) recovery: Recovery,
    /// The leftovers the proxy routes to (active servers of the route).
    pub(crate) routed: Vec<Instance>,
}

/// Reads the route of `service` and decides what `leftovers` of `step` need before their
/// removal, given the stored live colour and its running instances (`live`). Without a
/// proxy, or without a running leftover, nothing is read and nothing is needed.
///
/// Fails with [`Cause::ServedNotLive`] when a rollback would have to adopt.
pub(crate) async fn inspect(
    proxy: Option<&DynProxy>,
    step: Step,
    service: &ServiceName,
    leftovers: &[Instance],
    live_color: Option<Color>,
    live: &[Instance],
) -> Result<Reconciliation, Cause> {
    let nothing = Reconciliation {
        recovery: Recovery::Nothing,
        routed: Vec::new(),
    };
    let Some(proxy) = proxy else {
        return Ok(nothing);
    };
    if !leftovers.iter().any(|i| i.running) {
        return Ok(nothing);
    }
    let Some(served) = proxy.served_route(service).await? else {
        return Ok(nothing);
    };
    let active: BTreeSet<SocketAddr> = served
        .servers
        .iter()
        .filter(|s| s.active)
        .map(|s| s.address)
        .collect();
    let routed: Vec<Instance> = leftovers
        .iter()
        .filter(|i| i.running && i.address.is_some_and(|a| active.contains(&a)))
        .cloned()
        .collect();
    let recovery = match routed.first() {
        None => Recovery::Nothing,
        Some(_) if !live.is_empty() => Recovery::SwitchBack {
            color: live_color,
            to: live.to_vec(),
        },
        Some(_) if step == Step::Rollback => {
            return Err(Cause::ServedNotLive {
                service: service.clone(),
                instances: routed.iter().map(|i| i.name.clone()).collect(),
            })
        }
        Some(first) => match first.group.color {
            Some(color) => Recovery::Adopt {
                color,
                instances: routed.clone(),
            },
            // Without colours the leftovers are stopped instances, which no proxy routes to.
            None => Recovery::Nothing,
        },
    };
    Ok(Reconciliation { recovery, routed })
}
