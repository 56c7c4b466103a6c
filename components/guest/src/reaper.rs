//! The reaper: removes connections whose last heartbeat is older than the TTL.
//!
//! One tick is two round trips whatever the deployment's size: a scan of every bucket's
//! expiry index (one batch per bucket, pipelined), then one guarded removal batch per stale
//! connection. The guard (`score-at-most`: the connection is still in the index and still
//! stale) makes removal exactly-once when several nodes reap at the same time, and keeps a
//! connection that heart-beat since the scan.

use crate::bindings::roster::hub::store::Batch;
use crate::db::{self, BatchBuilder, Replies, score};
use crate::keys;
use crate::presence;
use crate::types::{CallContext, Failure, TickReport};

/// Stale connections taken from one bucket per tick; a full bucket sets `more`.
pub const SCAN_LIMIT: u32 = 64;

/// The newest `seen` that is stale at `now`, or none before the first TTL has passed.
pub fn stale_cutoff(now: u64, ttl_ms: u64) -> Option<u64> {
    now.checked_sub(ttl_ms)?.checked_sub(1)
}

/// One reaper tick.
pub fn tick(ctx: &CallContext) -> Result<TickReport, Failure> {
    let Some(cutoff) = stale_cutoff(ctx.now, ctx.settings.ttl_ms) else {
        return Ok(TickReport {
            reaped: 0,
            more: false,
        });
    };
    let scans: Vec<Batch> = (0..keys::BUCKETS)
        .map(|bucket| {
            BatchBuilder::new()
                .op(db::zrange_by_score(
                    &keys::expiry_key(bucket),
                    i64::MIN,
                    score(cutoff),
                    SCAN_LIMIT,
                ))
                .build()
        })
        .collect();
    let mut stale = Vec::new();
    let mut more = false;
    for (bucket, outcome) in (0..keys::BUCKETS).zip(db::execute(&scans)?) {
        let replies =
            db::applied(outcome).map_err(|_| crate::fail::internal("a scan was refused"))?;
        let members = Replies::new(replies).members()?;
        more |= members.len() >= SCAN_LIMIT as usize;
        stale.extend(members.into_iter().map(|conn_id| (bucket, conn_id)));
    }
    if stale.is_empty() {
        return Ok(TickReport {
            reaped: 0,
            more: false,
        });
    }

    let removals: Vec<Batch> = stale
        .iter()
        .map(|(bucket, conn_id)| {
            let expiry = keys::expiry_key(*bucket);
            let still_stale = db::score_at_most(&expiry, conn_id, score(cutoff));
            match keys::conn_room_digest(conn_id) {
                Some(digest) => presence::removal_batch(digest, conn_id, still_stale),
                // Not one of our ids: drop it from the index so it is not scanned forever.
                None => BatchBuilder::new()
                    .guard(still_stale)
                    .op(db::zrem(&expiry, conn_id))
                    .build(),
            }
        })
        .collect();
    let mut reaped = 0u32;
    for ((_, conn_id), outcome) in stale.iter().zip(db::execute(&removals)?) {
        // Refused: another node reaped it first, or it heart-beat since the scan.
        let Ok(replies) = db::applied(outcome) else {
            continue;
        };
        if keys::conn_room_digest(conn_id).is_some()
            && presence::announce_leave(ctx, conn_id, replies)?.is_some()
        {
            reaped = reaped.saturating_add(1);
        }
    }
    Ok(TickReport { reaped, more })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cutoff is one millisecond before the liveness bound, and absent early on.
    #[test]
    fn cutoff_matches_liveness() {
        let (now, ttl) = (100_000, 30_000);
        let cutoff = stale_cutoff(now, ttl).unwrap();
        assert!(!presence::is_live(cutoff, now, ttl));
        assert!(presence::is_live(cutoff + 1, now, ttl));
        assert_eq!(stale_cutoff(ttl, ttl), None);
        assert_eq!(stale_cutoff(5, ttl), None);
    }
}
