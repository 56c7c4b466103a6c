//! Schedules the reaper component: a tick every `PRESENCE_REAPER_INTERVAL_MS`, repeated at
//! once (a bounded number of times) while a tick reports more stale connections than it
//! took; and this node's lease, renewed every third of `ROSTER_NODE_LEASE_MS`. Every node
//! runs both; the component makes each removal exactly-once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::hub::Hub;

/// Ticks in a row when a tick says there is more: bounds one round's work.
const MAX_TICKS_PER_ROUND: usize = 16;

/// Runs until the hub shuts down.
pub async fn run(hub: Arc<Hub>) {
    let mut interval =
        tokio::time::interval(Duration::from_millis(hub.config().reaper_interval_ms));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = hub.shutdown_token().cancelled() => return,
            _ = interval.tick() => {}
        }
        for _ in 0..MAX_TICKS_PER_ROUND {
            match hub.reap().await {
                Ok(report) => {
                    if report.reaped > 0 {
                        tracing::info!(reaped = report.reaped, "reaped stale connections");
                    }
                    if report.orphans > 0 {
                        tracing::info!(
                            orphans = report.orphans,
                            "removed the connections of dead nodes"
                        );
                    }
                    if !report.more {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reaper tick failed");
                    break;
                }
            }
        }
    }
}

/// Renews this node's lease until the hub shuts down: at once, then every third of the
/// lease, so two renewals can fail before the lease runs out. A renewal that fails (the
/// store not reachable yet at start-up, or an outage) is retried within a quarter of a
/// second, so the node is listed again as soon as the store answers.
pub async fn renew_leases(hub: Arc<Hub>) {
    let period = Duration::from_millis(hub.config().node_lease_ms / 3);
    let retry = period.min(Duration::from_millis(250));
    let mut wait = Duration::ZERO;
    let mut failing = false;
    loop {
        tokio::select! {
            () = hub.shutdown_token().cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match hub.renew_lease().await {
            Ok(()) => {
                wait = period;
                if failing {
                    failing = false;
                    tracing::info!("this node's lease is renewed again");
                }
            }
            Err(error) => {
                wait = retry;
                if !failing {
                    tracing::warn!(%error, "could not renew this node's lease");
                }
                failing = true;
            }
        }
    }
}
