//! The reaper: removes connections whose last heartbeat is older than the TTL, and the
//! connections of nodes whose lease expired (nodes that died without a goodbye).
//!
//! One tick is at most four round trips whatever the deployment's size:
//! 1. a scan of every bucket's expiry index, and of the lease registry for dead nodes;
//! 2. the creating node and user of each stale connection, and the per-bucket sets of
//!    dead nodes;
//! 3. the users of the dead nodes' connections (only when a node died);
//! 4. one guarded removal batch per connection, plus the registry entries of dead nodes
//!    that have nothing left.
//!
//! A paced tick (`at-most-every-ms`, for deployments without a scheduler) first takes a
//! shared mark in the store, and does nothing when another tick took it within the pace.
//!
//! With a resume grace, a dead node's connections are not removed but detached (as a
//! dropped socket's are): their clients may resume them on another node until the grace
//! ends, when the stale scan announces the leave of those that did not.
//!
//! Guards make every removal exactly-once when several nodes reap at once, and keep a
//! connection that heart-beat since the scan: a stale connection is removed only while it
//! is still in the index with a stale score; an orphan only while its record still names
//! the dead node; a dead node's lease only while it is still expired. An index entry whose
//! record is already gone (it expired by the store's lookback: nothing reaped it in time)
//! is dropped from the indexes; there is nothing left to announce.

use crate::bindings::roster::hub::store::Batch;
use crate::db::{self, BatchBuilder, Outcome, Read, Slot, score};
use crate::fail;
use crate::keys::{self, conn as f};
use crate::presence;
use crate::types::{CallContext, Failure, NodeLease, TickOptions, TickReport};

/// Stale connections taken from one bucket per tick; a full bucket sets `more`.
pub const SCAN_LIMIT: u32 = 64;

/// Dead nodes handled per tick.
pub const DEAD_NODES_PER_TICK: u32 = 4;

/// Orphans (connections of dead nodes) removed per tick; more set `more`.
pub const ORPHANS_PER_TICK: usize = 4096;

/// The newest `seen` that is stale at `now`, or none before the first TTL has passed.
pub fn stale_cutoff(now: u64, ttl_ms: u64) -> Option<u64> {
    now.checked_sub(ttl_ms)?.checked_sub(1)
}

/// A connection to remove.
struct Doomed {
    bucket: u16,
    conn_id: String,
    /// Why: stale (expiry index) or orphaned (of this dead node).
    dead_node: Option<String>,
    /// Who created it, as its record says (none: the record is gone).
    creator: Option<String>,
    /// Its user, as its record says (none: the record is gone).
    user: Option<String>,
}

/// Renews this node's lease.
pub fn renew_lease(ctx: &CallContext) -> Result<(), Failure> {
    let expires = ctx.now.saturating_add(ctx.settings.node_lease_ms);
    let mut batch = BatchBuilder::new();
    batch.op(db::zadd(&keys::leases_key(), &ctx.node_id, score(expires)));
    db::execute_read(batch.build()).map(drop)
}

/// The lease registry: every node with a lease, and when it runs out.
pub fn nodes() -> Result<Vec<NodeLease>, Failure> {
    let (batch, slot) = single(db::zrange_with_scores(
        &keys::leases_key(),
        i64::MIN,
        i64::MAX,
        1024,
    ));
    let mut outcomes = db::execute(&[batch])?.into_iter();
    reply(outcomes.next(), slot)?
        .into_iter()
        .map(|(node_id, score)| {
            let expires_at = score
                .parse::<f64>()
                .ok()
                .filter(|s| *s >= 0.0)
                .map(|s| s as u64)
                .ok_or_else(|| fail::internal(format!("a lease {score:?} is not a time")))?;
            Ok(NodeLease {
                node_id,
                expires_at,
            })
        })
        .collect()
}

/// A batch of one read, and the slot of its reply.
fn single<T: db::ReplyKind>(read: Read<T>) -> (Batch, Slot<T>) {
    let mut batch = BatchBuilder::new();
    let slot = batch.read(read);
    (batch.build(), slot)
}

/// The reply of a [`single`] read.
fn reply<T: db::ReplyKind>(outcome: Option<Outcome>, slot: Slot<T>) -> Result<T, Failure> {
    outcome
        .ok_or_else(|| fail::internal("a read went missing"))?
        .unguarded()?
        .take(slot)
}

/// Takes the pacing mark for `pace_ms`; false when another tick holds it.
fn take_pace(ctx: &CallContext, pace_ms: u64) -> Result<bool, Failure> {
    let key = keys::tick_key();
    let mut batch = BatchBuilder::new();
    batch.guard(db::absent(&key));
    batch.op(db::set(&key, &ctx.node_id, Some(pace_ms.max(1))));
    Ok(db::execute_one(batch.build())?.is_applied())
}

/// One reaper tick.
pub fn tick(ctx: &CallContext, options: TickOptions) -> Result<TickReport, Failure> {
    let idle = TickReport {
        reaped: 0,
        orphans: 0,
        more: false,
    };
    if let Some(pace) = options.at_most_every_ms
        && !take_pace(ctx, pace)?
    {
        return Ok(idle);
    }
    let cutoff = stale_cutoff(ctx.now, ctx.settings.ttl_ms);
    let leases = keys::leases_key();

    // 1. Scan the expiry indexes and the lease registry.
    let mut scans: Vec<Batch> = Vec::new();
    let mut scan_slots = Vec::new();
    if let Some(cutoff) = cutoff {
        for bucket in 0..keys::BUCKETS {
            let (batch, slot) = single(db::zrange_by_score(
                &keys::expiry_key(bucket),
                i64::MIN,
                score(cutoff),
                SCAN_LIMIT,
            ));
            scans.push(batch);
            scan_slots.push(slot);
        }
    }
    let lease_scan = options.reap_dead_nodes.then(|| {
        let expired = score(ctx.now.saturating_sub(1));
        let (batch, slot) = single(db::zrange_by_score(
            &leases,
            i64::MIN,
            expired,
            DEAD_NODES_PER_TICK + 1,
        ));
        scans.push(batch);
        slot
    });
    let mut outcomes = db::execute(&scans)?.into_iter();
    let mut more = false;
    let mut doomed = Vec::new();
    for (bucket, slot) in (0..keys::BUCKETS).zip(scan_slots) {
        let stale = reply(outcomes.next(), slot)?;
        more |= stale.len() >= SCAN_LIMIT as usize;
        doomed.extend(stale.into_iter().map(|conn_id| Doomed {
            bucket,
            conn_id,
            dead_node: None,
            creator: None,
            user: None,
        }));
    }
    let mut dead: Vec<String> = match lease_scan {
        Some(slot) => reply(outcomes.next(), slot)?,
        None => Vec::new(),
    };
    dead.retain(|node| *node != ctx.node_id);
    more |= dead.len() > DEAD_NODES_PER_TICK as usize;
    dead.truncate(DEAD_NODES_PER_TICK as usize);
    if doomed.is_empty() && dead.is_empty() {
        return Ok(TickReport { more, ..idle });
    }

    // 2. Who created each stale connection, and whose it is; what each dead node left.
    let mut reads: Vec<Batch> = Vec::new();
    let mut record_slots = Vec::with_capacity(doomed.len());
    for d in &doomed {
        let (batch, slot) = single(record_read(&d.conn_id));
        reads.push(batch);
        record_slots.push(slot);
    }
    let mut set_slots = Vec::with_capacity(dead.len() * usize::from(keys::BUCKETS));
    for node in &dead {
        for bucket in 0..keys::BUCKETS {
            let (batch, slot) = single(db::smembers(&keys::node_key(bucket, node)));
            reads.push(batch);
            set_slots.push(slot);
        }
    }
    let mut outcomes = db::execute(&reads)?.into_iter();
    for (d, slot) in doomed.iter_mut().zip(record_slots) {
        let mut fields = reply(outcomes.next(), slot)?.into_iter();
        d.creator = fields.next().flatten();
        d.user = fields.next().flatten();
    }
    let mut set_slots = set_slots.into_iter();
    let mut finished = Vec::new();
    let mut orphans = Vec::new();
    for node in &dead {
        let mut left = 0usize;
        for bucket in 0..keys::BUCKETS {
            let slot = set_slots
                .next()
                .ok_or_else(|| fail::internal("a read went missing"))?;
            let conns = reply(outcomes.next(), slot)?;
            left += conns.len();
            for conn_id in conns {
                if orphans.len() >= ORPHANS_PER_TICK {
                    more = true;
                    break;
                }
                orphans.push(Doomed {
                    bucket,
                    conn_id,
                    dead_node: Some(node.clone()),
                    creator: Some(node.clone()),
                    user: None,
                });
            }
        }
        if left == 0 {
            finished.push(node.clone());
        }
    }

    // 3. Whose each orphan is (its removal decrements its user's count).
    if !orphans.is_empty() {
        let (batches, slots): (Vec<Batch>, Vec<_>) = orphans
            .iter()
            .map(|d| single(record_read(&d.conn_id)))
            .unzip();
        let mut outcomes = db::execute(&batches)?.into_iter();
        for (d, slot) in orphans.iter_mut().zip(slots) {
            d.user = reply(outcomes.next(), slot)?.into_iter().nth(1).flatten();
        }
        doomed.extend(orphans);
    }

    // 4. Remove, each under its guard; retire dead nodes with nothing left.
    let mut removals = Vec::with_capacity(doomed.len() + finished.len());
    let mut removal_of = Vec::with_capacity(doomed.len());
    for d in &doomed {
        let digest = keys::conn_room_digest(&d.conn_id);
        let (Some(digest), Some(user)) = (digest, &d.user) else {
            // Not one of our ids, or its record is gone: drop it from where it was found
            // (and from its room's set); there is nothing to announce.
            let mut batch = BatchBuilder::new();
            batch.op(match &d.dead_node {
                None => db::zrem(&keys::expiry_key(d.bucket), &d.conn_id),
                Some(node) => db::srem(&keys::node_key(d.bucket, node), &d.conn_id),
            });
            if let Some(digest) = digest {
                batch.op(db::srem(&keys::room_key(digest), &d.conn_id));
            }
            removals.push(batch.build());
            removal_of.push(None);
            continue;
        };
        let conn_key = keys::conn_key(digest, &d.conn_id);
        if let (Some(node), true) = (&d.dead_node, ctx.settings.resume_grace_ms > 0) {
            // A dead node's sockets dropped without a goodbye, like any dropped socket:
            // their connections get the resume grace (taken off the dead node, stale when
            // it ends, when the stale scan announces their leave), so their clients can
            // resume them on another node.
            let mut batch = BatchBuilder::new();
            batch.guard(db::field_is(&conn_key, f::NODE, Some(node)));
            batch.op(db::zadd(
                &keys::expiry_key(d.bucket),
                &d.conn_id,
                presence::detached_score(ctx),
            ));
            removals.push(batch.build());
            removal_of.push(None);
            let mut batch = BatchBuilder::new();
            batch.op(db::srem(&keys::node_key(d.bucket, node), &d.conn_id));
            removals.push(batch.build());
            continue;
        }
        let mut guards = Vec::new();
        if d.dead_node.is_none() {
            let expiry = keys::expiry_key(d.bucket);
            guards.push(db::score_at_most(
                &expiry,
                &d.conn_id,
                score(cutoff.unwrap_or(0)),
            ));
        }
        if let Some(creator) = &d.creator {
            guards.push(db::field_is(&conn_key, f::NODE, Some(creator)));
        }
        let (batch, removal) =
            presence::removal_batch(digest, &d.conn_id, d.creator.as_deref(), user, guards);
        removals.push(batch);
        removal_of.push(Some((removals.len() - 1, removal)));
        if let Some(node) = &d.dead_node {
            // Whatever became of the connection, it no longer belongs in the dead node's set.
            let mut batch = BatchBuilder::new();
            batch.op(db::srem(&keys::node_key(d.bucket, node), &d.conn_id));
            removals.push(batch.build());
        }
    }
    let expired = score(ctx.now.saturating_sub(1));
    for node in &finished {
        let mut batch = BatchBuilder::new();
        batch.guard(db::score_at_most(&leases, node, expired));
        batch.op(db::zrem(&leases, node));
        removals.push(batch.build());
    }
    let mut outcomes: Vec<Option<Outcome>> =
        db::execute(&removals)?.into_iter().map(Some).collect();
    let mut reaped = 0u32;
    let mut orphaned = 0u32;
    for (d, removal) in doomed.iter().zip(removal_of) {
        let Some((index, removal)) = removal else {
            continue;
        };
        // Refused: another node removed it first, or it heart-beat since the scan.
        let Some(Outcome::Applied(replies)) = outcomes.get_mut(index).and_then(Option::take) else {
            continue;
        };
        if presence::announce_leave(ctx, &d.conn_id, &removal, replies)?.is_some() {
            if d.dead_node.is_some() {
                orphaned = orphaned.saturating_add(1);
            } else {
                reaped = reaped.saturating_add(1);
            }
        }
    }
    Ok(TickReport {
        reaped,
        orphans: orphaned,
        more,
    })
}

/// The read of a connection's creating node and user (none for an id that is not ours).
fn record_read(conn_id: &str) -> Read<Vec<Option<String>>> {
    let digest = keys::conn_room_digest(conn_id).unwrap_or_default();
    db::hmget(&keys::conn_key(digest, conn_id), &[f::NODE, f::USER])
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
