//! Presence: join with a snapshot, heartbeat with epoch fencing and state patches, leave,
//! paged snapshots and occupancy counts.
//!
//! Costs in store round trips (one `execute` each):
//! - join: 2 (create + list members, then read the members and remove the replaced
//!   connection); 3 when the room's states are too large to read without first measuring
//!   them; one more when this user's last join in the room had a later epoch (a retry);
//! - heartbeat without a patch, or with one that changes nothing: 1;
//! - heartbeat whose patch changes the state: 2 (refresh + read, then compare-and-set);
//! - leave: 2; snapshot: 2 (3 for large states); count: 1.
//!
//! Liveness: a connection is live while `seen + ttl >= now`. A stale connection is hidden
//! from snapshots and refuses heartbeats with `UNKNOWN_CONNECTION` even before the reaper
//! removes it, so the TTL means the same whatever the reaper's timing.
//!
//! Epochs: a join's epoch is `max(now, e + 1)` where `e` is the epoch of the same user's
//! previous join in the room (kept in the room's `epochs` set for a lookback), so join
//! epochs of a user in a room strictly increase across nodes even when node clocks differ
//! (by less than the lookback). A heartbeat's epoch is a safe integer (at most 2^53 - 1)
//! and at most [`MAX_EPOCH_STEP`] above the stored one unless it is below `now + step`:
//! one request cannot push a connection's epoch out of every client's reach, and Redis and
//! the embedded store compare every stored number exactly.

use crate::bindings::roster::hub::events::Event;
use crate::bindings::roster::hub::store::{Batch, Guard};
use crate::db::{self, Applied, BatchBuilder, GuardId, Outcome, Slot, score};
use crate::fail;
use crate::keys::{self, conn as f};
use crate::policy;
use crate::state::{self, State};
use crate::types::{
    CallContext, Conn, ErrorCode, Failure, HeartbeatOk, HeartbeatRequest, JoinRequest, Joined,
    Left, Occupancy, PresenceChange, PresenceEvent, Principal, ResumeRequest, Resumed, Settings,
    SnapshotPage, SnapshotRequest,
};

/// The largest epoch: JavaScript's `Number.MAX_SAFE_INTEGER`, the largest integer every
/// client and both stores represent exactly.
pub const MAX_EPOCH: u64 = (1 << 53) - 1;

/// How far above the stored epoch (and above `now`) a heartbeat may raise it at once.
/// Counters (+1) and clocks (`Date.now()`) stay far below it; a client cannot jump its
/// connection to the top of the range in one request.
pub const MAX_EPOCH_STEP: u64 = 1 << 32;

/// Joins retried when another join of the same user in the same room took the epoch this
/// one wanted (or this node's clock is behind the one that made it).
const EPOCH_ATTEMPTS: usize = 4;

/// Fields read back for a snapshot entry, in this order.
const SNAPSHOT_FIELDS: [&str; 6] = [f::ROOM, f::USER, f::EPOCH, f::STATE, f::SEEN, f::JOINED];

/// Fields read when a page first measures its members' states, in this order.
const SIZED_FIELDS: [&str; 5] = [f::ROOM, f::USER, f::EPOCH, f::SEEN, f::JOINED];

/// Fields a removal reads before it removes, for its `leave`, in this order.
const LEAVE_FIELDS: [&str; 4] = [f::ROOM, f::USER, f::EPOCH, f::STATE];

/// How many times a state patch is re-applied when another writer changed the state between
/// read and write. Only a client racing itself (or the HTTP API) gets here.
const PATCH_ATTEMPTS: usize = 4;

/// True while a connection last seen at `seen` is live at `now`.
pub fn is_live(seen: u64, now: u64, ttl_ms: u64) -> bool {
    seen.saturating_add(ttl_ms) >= now
}

/// The earliest `seen` a live connection can have at `now` (the heartbeat guard's bound).
fn live_bound(now: u64, ttl_ms: u64) -> i64 {
    score(now.saturating_sub(ttl_ms))
}

/// The user a join joins as: the one it names, else the verified principal's. A verified
/// principal other than an admin joins only as itself.
pub fn joining_user(request: &JoinRequest, principal: &Principal) -> Result<String, Failure> {
    let user = match (&request.user_id, &principal.user_id) {
        (Some(named), Some(verified))
            if principal.verified && named != verified && !policy::is_admin(principal) =>
        {
            return Err(fail::failure(
                ErrorCode::Forbidden,
                format!("the token is user {verified:?}'s: it cannot join as {named:?}"),
            ));
        }
        (Some(named), _) => named.clone(),
        (None, Some(verified)) if principal.verified => verified.clone(),
        (None, _) => return Err(fail::invalid("data: missing field `userId`")),
    };
    fail::check_id(&user, "userId", ErrorCode::InvalidPayload)?;
    Ok(user)
}

/// Checks a join request and returns the user it joins as and the canonical initial state
/// text.
pub fn validate_join(
    request: &JoinRequest,
    ctx: &CallContext,
) -> Result<(String, String), Failure> {
    let settings = &ctx.settings;
    fail::check_id(&request.room_id, "roomId", ErrorCode::InvalidPayload)?;
    let user = joining_user(request, &ctx.principal)?;
    let state = match &request.state {
        None => State::new(),
        Some(text) => {
            state::check_size(text, "state", settings.max_state_bytes)?;
            state::parse_object(text, "state")?
        }
    };
    let text = state::to_text(&state);
    state::check_size(&text, "state", settings.max_state_bytes)?;
    Ok((user, text))
}

/// The connection a join replaces.
struct Replaced {
    conn_id: String,
    digest: u64,
}

/// The handles of a join's create batch.
struct Create {
    id_free: GuardId,
    /// Present when the replaced connection is in the same room: it must still exist for
    /// the room's limit to count it as leaving.
    replaced_exists: Option<GuardId>,
    room_free: GuardId,
    members: Slot<Vec<String>>,
}

/// The connection a join creates.
struct NewConn<'a> {
    room_id: &'a str,
    user_id: &'a str,
    digest: u64,
    conn_id: &'a str,
    state: &'a str,
    resume_token: &'a str,
    binding: u64,
}

/// The batch that creates the connection, indexes it and lists the room; refused when the
/// id is taken, the room is full, or this user's last join in the room had an epoch at or
/// above `epoch`.
fn create_batch(
    ctx: &CallContext,
    new: &NewConn<'_>,
    epoch: u64,
    replaced_here: Option<&str>,
) -> (Batch, Create) {
    let NewConn {
        room_id,
        user_id,
        digest,
        conn_id,
        state: state_text,
        ..
    } = *new;
    let now = ctx.now;
    let lookback = ctx.settings.lookback_ms;
    let bucket = keys::bucket(digest);
    let conn_key = keys::conn_key(digest, conn_id);
    let room_key = keys::room_key(digest);
    let users_key = keys::users_key(digest);
    let epochs_key = keys::epochs_key(digest);
    let expiry_key = keys::expiry_key(bucket);
    let mut batch = BatchBuilder::new();
    let id_free = batch.guard(db::absent(&conn_key));
    // Replacing a connection of the same room frees its place in the same step.
    let (replaced_exists, limit) = match replaced_here {
        Some(old) => (
            Some(batch.guard(db::exists(&keys::conn_key(digest, old)))),
            ctx.settings.max_room_members.saturating_add(1),
        ),
        None => (None, ctx.settings.max_room_members),
    };
    let room_free = batch.guard(db::size_below(&room_key, limit));
    batch.guard(db::score_absent_or_below(
        &epochs_key,
        user_id,
        score(epoch),
    ));
    batch.op(db::hset(
        &conn_key,
        vec![
            (f::ROOM, room_id.to_owned()),
            (f::USER, user_id.to_owned()),
            (f::EPOCH, epoch.to_string()),
            (f::STATE, state_text.to_owned()),
            (f::SEEN, now.to_string()),
            (f::JOINED, now.to_string()),
            (f::NODE, ctx.node_id.clone()),
            (f::RESUME, new.resume_token.to_owned()),
            (f::BIND, new.binding.to_string()),
        ],
    ));
    batch.op(db::pexpire(&conn_key, lookback));
    batch.op(db::sadd(&room_key, conn_id));
    batch.op(db::pexpire(&room_key, lookback));
    batch.op(db::zincrby(&users_key, user_id, 1));
    batch.op(db::pexpire(&users_key, lookback));
    // Epochs older than the lookback are below any epoch a node can issue now (unless its
    // clock is that far behind): they need not be kept.
    batch.op(db::zadd(&epochs_key, user_id, score(epoch)));
    batch.op(db::zrem_range_by_score(
        &epochs_key,
        i64::MIN,
        score(now.saturating_sub(lookback)),
    ));
    batch.op(db::pexpire(&epochs_key, lookback));
    batch.op(db::zadd(&expiry_key, conn_id, score(now)));
    // Entries whose record expired by the store's lookback (no reaper ran) are dropped, so
    // the index stays bounded where nothing reaps.
    batch.op(db::zrem_range_by_score(
        &expiry_key,
        i64::MIN,
        score(now.saturating_sub(lookback.saturating_mul(2))),
    ));
    if ctx.settings.node_lease_ms > 0 {
        batch.op(db::sadd(&keys::node_key(bucket, &ctx.node_id), conn_id));
    }
    let members = batch.read(db::smembers(&room_key));
    (
        batch.build(),
        Create {
            id_free,
            replaced_exists,
            room_free,
            members,
        },
    )
}

/// Creates the connection, removes the one it replaces, announces `leave` (of the replaced
/// one) and `join`, and returns the room's snapshot (its first page for a large room).
pub fn join(ctx: &CallContext, request: JoinRequest) -> Result<Joined, Failure> {
    let (user_id, state_text) = validate_join(&request, ctx)?;
    let digest = keys::digest(&request.room_id);
    let conn_id = keys::conn_id(digest, request.nonce);
    let mut replaced = request.replaces.as_deref().and_then(|old| {
        let digest = keys::conn_room_digest(old)?;
        (old != conn_id).then(|| Replaced {
            conn_id: old.to_owned(),
            digest,
        })
    });
    let mut epoch = ctx.now.clamp(1, MAX_EPOCH);
    let mut created = None;
    for _ in 0..EPOCH_ATTEMPTS {
        let here = replaced
            .as_ref()
            .filter(|old| old.digest == digest)
            .map(|old| old.conn_id.as_str());
        let new = NewConn {
            room_id: &request.room_id,
            user_id: &user_id,
            digest,
            conn_id: &conn_id,
            state: &state_text,
            resume_token: &request.resume_token,
            binding: request.binding,
        };
        let (batch, create) = create_batch(ctx, &new, epoch, here);
        let mut batches = vec![batch];
        // What the replaced connection's removal needs, read in the same round trip.
        let old_fields = replaced.as_ref().map(|old| {
            let mut read = BatchBuilder::new();
            let slot = read.read(db::hmget(
                &keys::conn_key(old.digest, &old.conn_id),
                &[f::NODE, f::USER],
            ));
            batches.push(read.build());
            slot
        });
        let mut outcomes = db::execute(&batches)?.into_iter();
        match outcomes.next() {
            Some(Outcome::Applied(mut replies)) => {
                let members = replies.take(create.members)?;
                let old = match (old_fields, outcomes.next()) {
                    (Some(slot), Some(outcome)) => {
                        let mut fields = outcome.unguarded()?.take(slot)?.into_iter();
                        fields.next().flatten().zip(fields.next().flatten())
                    }
                    _ => None,
                };
                created = Some((members, old));
                break;
            }
            Some(Outcome::Refused(guard)) if guard == create.id_free => {
                return Err(fail::internal(format!(
                    "connection id {conn_id} is taken; join again"
                )));
            }
            Some(Outcome::Refused(guard)) if Some(guard) == create.replaced_exists => {
                // The replaced connection is already gone (reaped): nothing to replace.
                replaced = None;
            }
            Some(Outcome::Refused(guard)) if guard == create.room_free => {
                return Err(fail::failure(
                    ErrorCode::Forbidden,
                    format!(
                        "room {:?} is full: it holds {} connections, the limit",
                        request.room_id, ctx.settings.max_room_members
                    ),
                ));
            }
            Some(Outcome::Refused(_)) => {
                // This user's last join in the room took an epoch at or above ours.
                let last = last_join_epoch(digest, &user_id)?;
                epoch = ctx.now.max(last.saturating_add(1));
                if epoch > MAX_EPOCH {
                    return Err(fail::internal(format!(
                        "user {:?} has exhausted the epochs of room {:?}",
                        user_id, request.room_id
                    )));
                }
            }
            None => return Err(fail::internal("the store returned no outcome")),
        }
    }
    let Some((members, old)) = created else {
        return Err(fail::failure(
            ErrorCode::StaleEpoch,
            format!(
                "other joins of user {:?} in room {:?} kept taking the next epoch; join again",
                user_id, request.room_id
            ),
        ));
    };

    // The replaced connection goes in the same round trip as the snapshot read; its
    // removal is guarded by what was read, so a connection that went meanwhile is left.
    let mut extra = Vec::new();
    let removal = match (&replaced, &old) {
        (Some(replaced), Some((node, user))) => {
            let (batch, removal) = removal_batch(
                replaced.digest,
                &replaced.conn_id,
                Some(node),
                user,
                vec![db::field_is(
                    &keys::conn_key(replaced.digest, &replaced.conn_id),
                    f::NODE,
                    Some(node),
                )],
            );
            extra.push(batch);
            Some(removal)
        }
        _ => None,
    };
    let removing = removal.is_some();
    // The snapshot shows the room as the join leaves it: without the replaced connection.
    let mut members = members;
    if let Some(replaced) = &replaced {
        members.retain(|id| *id != replaced.conn_id);
    }
    let page = read_page(
        ctx,
        digest,
        &request.room_id,
        members,
        None,
        ctx.settings.max_snapshot_members,
        extra,
    );
    let me = PresenceEvent {
        change: PresenceChange::Join,
        room_id: request.room_id.clone(),
        user_id: user_id.clone(),
        conn_id: conn_id.clone(),
        state: state_text.clone(),
        ts: ctx.now,
        epoch,
    };
    match page {
        Ok((page, mut extra)) => {
            let mut replace_pending = false;
            if let (Some(replaced), Some(removal)) = (&replaced, removal) {
                match extra.pop() {
                    Some(Outcome::Applied(replies)) => {
                        announce_leave(ctx, &replaced.conn_id, &removal, replies)?;
                    }
                    // Refused: it went meanwhile (reaped, or left over HTTP).
                    Some(Outcome::Refused(_)) => {}
                    None => replace_pending = true,
                }
            }
            crate::host::publish(&Event::Presence(me));
            Ok(Joined {
                conn_id,
                epoch,
                snapshot: page.conns,
                next: page.next,
                replace_pending,
            })
        }
        Err(failure) if failure.code == ErrorCode::StoreUnavailable => {
            // The connection exists: the join succeeded, only its snapshot could not be
            // read. Say so (the snapshot is partial, from the start) rather than fail a
            // join that took effect; the replaced connection's leave is the host's to retry.
            crate::host::publish(&Event::Presence(me));
            Ok(Joined {
                conn_id: conn_id.clone(),
                epoch,
                snapshot: vec![Conn {
                    conn_id,
                    user_id,
                    state: state_text,
                    epoch,
                    last_seen: ctx.now,
                }],
                next: Some(String::new()),
                replace_pending: removing,
            })
        }
        Err(failure) => Err(failure),
    }
}

/// The epoch of `user`'s last join in the room, 0 when none is kept.
fn last_join_epoch(digest: u64, user: &str) -> Result<u64, Failure> {
    let mut read = BatchBuilder::new();
    let slot = read.read(db::zscore(&keys::epochs_key(digest), user));
    let last = db::execute_read(read.build())?.take(slot)?;
    Ok(last.and_then(|e| u64::try_from(e).ok()).unwrap_or(0))
}

/// A page of the live connections of a room.
pub fn snapshot(ctx: &CallContext, request: SnapshotRequest) -> Result<SnapshotPage, Failure> {
    fail::check_id(&request.room_id, "roomId", ErrorCode::InvalidPayload)?;
    let page_size = ctx.settings.max_snapshot_members.max(1);
    let limit = match request.limit {
        None => page_size,
        Some(0) => return Err(fail::invalid("limit must be at least 1")),
        Some(limit) => limit.min(page_size),
    };
    let cursor = request.cursor.filter(|cursor| !cursor.is_empty());
    if let Some(cursor) = &cursor
        && keys::conn_room_digest(cursor).is_none()
    {
        return Err(fail::invalid(format!(
            "cursor {cursor:?} is not one this room's snapshot gave"
        )));
    }
    let digest = keys::digest(&request.room_id);
    let mut list = BatchBuilder::new();
    let listed = list.read(db::smembers(&keys::room_key(digest)));
    let members = db::execute_read(list.build())?.take(listed)?;
    let (page, _) = read_page(
        ctx,
        digest,
        &request.room_id,
        members,
        cursor.as_deref(),
        limit,
        Vec::new(),
    )?;
    Ok(page)
}

/// How many connections and distinct users a room holds: one round trip, nothing listed.
pub fn count(room_id: &str) -> Result<Occupancy, Failure> {
    fail::check_id(room_id, "roomId", ErrorCode::InvalidPayload)?;
    let digest = keys::digest(room_id);
    let mut read = BatchBuilder::new();
    let connections = read.read(db::scard(&keys::room_key(digest)));
    let users = read.read(db::zcard(&keys::users_key(digest)));
    let mut replies = db::execute_read(read.build())?;
    let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    Ok(Occupancy {
        connections: count(replies.take(connections)?),
        users: count(replies.take(users)?),
    })
}

/// Reads one page of a room: the member ids after `cursor`, in id order, at most `limit`
/// of them and no more than the snapshot byte budget of states. `extra` batches ride along
/// on the last round trip (a join's removal of the connection it replaces); their
/// outcomes come back in order (none when that round trip failed).
///
/// Memory stays bounded whatever the room holds: ids only for the listing; then either
/// every record at once, when `limit` states at their largest fit the budget, or first the
/// records without states and the states' lengths, then only the states that fit.
fn read_page(
    ctx: &CallContext,
    digest: u64,
    room_id: &str,
    mut ids: Vec<String>,
    cursor: Option<&str>,
    limit: u32,
    extra: Vec<Batch>,
) -> Result<(SnapshotPage, Vec<Outcome>), Failure> {
    ids.sort_unstable();
    ids.dedup();
    if let Some(cursor) = cursor {
        ids.retain(|id| id.as_str() > cursor);
    }
    let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
    let mut next = None;
    if ids.len() > limit {
        ids.truncate(limit);
        next = ids.last().cloned();
    }
    let budget = u64::from(ctx.settings.max_snapshot_bytes);
    let worst = u64::from(ctx.settings.max_state_bytes).saturating_mul(ids.len() as u64);
    if worst <= budget {
        let (conns, extra) = read_records(ctx, digest, room_id, &ids, extra)?;
        return Ok((SnapshotPage { conns, next }, extra));
    }

    // Measure first, then read only the states that fit.
    let mut read = BatchBuilder::new();
    let slots: Vec<_> = ids
        .iter()
        .map(|id| {
            let key = keys::conn_key(digest, id);
            (
                read.read(db::hmget(&key, &SIZED_FIELDS)),
                read.read(db::hstrlen(&key, f::STATE)),
            )
        })
        .collect();
    let mut replies = db::execute_read(read.build())?;
    let mut kept: Vec<(&String, Vec<Option<String>>)> = Vec::with_capacity(ids.len());
    let mut total = 0u64;
    for (id, (fields, length)) in ids.iter().zip(slots) {
        let fields = replies.take(fields)?;
        let length = u64::try_from(replies.take(length)?).unwrap_or(0);
        if total.saturating_add(length) > budget && !kept.is_empty() {
            // The page ends before the first state that does not fit.
            next = kept.last().map(|(kept_id, _)| (*kept_id).clone());
            break;
        }
        total = total.saturating_add(length);
        kept.push((id, fields));
    }
    let mut read = BatchBuilder::new();
    let states: Vec<_> = kept
        .iter()
        .map(|(id, _)| read.read(db::hget(&keys::conn_key(digest, id), f::STATE)))
        .collect();
    let mut batches = vec![read.build()];
    batches.extend(extra);
    let mut outcomes = db::execute(&batches)?.into_iter();
    let mut replies = outcomes
        .next()
        .ok_or_else(|| fail::internal("the store returned no outcome"))?
        .unguarded()?;
    let mut live = Vec::with_capacity(kept.len());
    for ((id, fields), slot) in kept.into_iter().zip(states) {
        let state = replies.take(slot)?;
        let mut fields = fields.into_iter();
        let record = [
            fields.next().flatten(),
            fields.next().flatten(),
            fields.next().flatten(),
            state,
            fields.next().flatten(),
            fields.next().flatten(),
        ];
        if let Some(entry) = snapshot_entry(ctx, room_id, id, record.to_vec()) {
            live.push(entry);
        }
    }
    Ok((
        SnapshotPage {
            conns: oldest_first(live),
            next,
        },
        outcomes.collect(),
    ))
}

/// Reads the records of `ids` (with `extra` batches in the same round trip) and keeps the
/// live ones, oldest join first.
fn read_records(
    ctx: &CallContext,
    digest: u64,
    room_id: &str,
    ids: &[String],
    extra: Vec<Batch>,
) -> Result<(Vec<Conn>, Vec<Outcome>), Failure> {
    if ids.is_empty() && extra.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut read = BatchBuilder::new();
    let slots: Vec<_> = ids
        .iter()
        .map(|id| read.read(db::hmget(&keys::conn_key(digest, id), &SNAPSHOT_FIELDS)))
        .collect();
    let mut batches = vec![read.build()];
    batches.extend(extra);
    let mut outcomes = db::execute(&batches)?.into_iter();
    let mut replies = outcomes
        .next()
        .ok_or_else(|| fail::internal("the store returned no outcome"))?
        .unguarded()?;
    let mut live = Vec::with_capacity(ids.len());
    for (id, slot) in ids.iter().zip(slots) {
        if let Some(entry) = snapshot_entry(ctx, room_id, id, replies.take(slot)?) {
            live.push(entry);
        }
    }
    Ok((oldest_first(live), outcomes.collect()))
}

/// Orders snapshot entries by join time (then id) and drops the time.
fn oldest_first(mut live: Vec<(u64, Conn)>) -> Vec<Conn> {
    live.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.conn_id.cmp(&b.1.conn_id)));
    live.into_iter().map(|(_, conn)| conn).collect()
}

/// One snapshot entry from the fields of [`SNAPSHOT_FIELDS`], with its join time for
/// ordering; none when the connection is gone, stale, or of another room (digest clash).
fn snapshot_entry(
    ctx: &CallContext,
    room_id: &str,
    conn_id: &str,
    fields: Vec<Option<String>>,
) -> Option<(u64, Conn)> {
    let [room, user, epoch, state, seen, joined]: [Option<String>; 6] = fields.try_into().ok()?;
    let seen = db::parse_u64(seen.as_deref())?;
    if room.as_deref() != Some(room_id) || !is_live(seen, ctx.now, ctx.settings.ttl_ms) {
        return None;
    }
    Some((
        db::parse_u64(joined.as_deref()).unwrap_or(seen),
        Conn {
            conn_id: conn_id.to_owned(),
            user_id: user?,
            state: state.unwrap_or_else(|| String::from("{}")),
            epoch: db::parse_u64(epoch.as_deref()).unwrap_or(0),
            last_seen: seen,
        },
    ))
}

/// A heartbeat that passed validation.
struct Beat {
    conn_id: String,
    digest: u64,
    epoch: Option<u64>,
    patch: Option<State>,
}

impl Beat {
    fn conn_key(&self) -> String {
        keys::conn_key(self.digest, &self.conn_id)
    }
}

/// Checks a heartbeat before it reaches the store.
fn validate_heartbeat(request: HeartbeatRequest, settings: &Settings) -> Result<Beat, Failure> {
    if request.conn_id.is_empty() {
        return Err(fail::invalid("connId must not be empty"));
    }
    let digest = keys::conn_room_digest(&request.conn_id)
        .ok_or_else(|| fail::unknown_connection(&request.conn_id))?;
    if let Some(epoch) = request.epoch
        && epoch > MAX_EPOCH
    {
        return Err(fail::invalid(format!(
            "epoch {epoch} is not a safe integer; the largest epoch is {MAX_EPOCH}"
        )));
    }
    let patch = match &request.patch_state {
        None => None,
        Some(text) => {
            state::check_size(text, "patchState", settings.max_state_bytes)?;
            Some(state::parse_object(text, "patchState")?).filter(|patch| !patch.is_empty())
        }
    };
    Ok(Beat {
        conn_id: request.conn_id,
        digest,
        epoch: request.epoch,
        patch,
    })
}

/// The handles to read a refresh batch's outcome through.
struct Refresh {
    exists: GuardId,
    live: GuardId,
    /// Refuses a connection that is not the verified caller's (none for admins, open mode
    /// and the host's coalesced socket heartbeats: a socket heartbeats only its own).
    owner: Option<GuardId>,
    /// Refuses an epoch more than [`MAX_EPOCH_STEP`] above the stored one.
    step: Option<GuardId>,
    fields: Slot<Vec<Option<String>>>,
}

/// The refresh batch: fence, refresh the TTL, and read what the ack (and a patch) needs.
fn refresh_batch(ctx: &CallContext, beat: &Beat) -> (Batch, Refresh) {
    let conn_key = beat.conn_key();
    let lookback = ctx.settings.lookback_ms;
    let now = ctx.now;
    let mut fields = vec![(f::SEEN, now.to_string())];
    if let Some(epoch) = beat.epoch {
        fields.push((f::EPOCH, epoch.to_string()));
    }
    let reads: &[&str] = if beat.patch.is_some() {
        &[f::EPOCH, f::STATE, f::ROOM, f::USER]
    } else {
        &[f::EPOCH]
    };
    let mut batch = BatchBuilder::new();
    let exists = batch.guard(db::exists(&conn_key));
    let live = batch.guard(db::field_at_least(
        &conn_key,
        f::SEEN,
        live_bound(now, ctx.settings.ttl_ms),
    ));
    let owner = owner_of(&ctx.principal)
        .map(|user| batch.guard(db::field_is(&conn_key, f::USER, Some(user))));
    let mut step = None;
    if let Some(epoch) = beat.epoch {
        batch.guard(db::field_at_most(&conn_key, f::EPOCH, score(epoch)));
        if epoch > now.saturating_add(MAX_EPOCH_STEP) {
            step = Some(batch.guard(db::field_at_least(
                &conn_key,
                f::EPOCH,
                score(epoch - MAX_EPOCH_STEP),
            )));
        }
    }
    batch.op(db::hset(&conn_key, fields));
    batch.op(db::pexpire(&conn_key, lookback));
    batch.op(db::pexpire(&keys::room_key(beat.digest), lookback));
    batch.op(db::pexpire(&keys::users_key(beat.digest), lookback));
    batch.op(db::zadd(
        &keys::expiry_key(keys::bucket(beat.digest)),
        &beat.conn_id,
        score(now),
    ));
    let fields = batch.read(db::hmget(&conn_key, reads));
    (
        batch.build(),
        Refresh {
            exists,
            live,
            owner,
            step,
            fields,
        },
    )
}

/// The user whose connections alone the caller may heartbeat or remove: a verified
/// principal's own, unless it is an admin; none: any connection.
fn owner_of(principal: &Principal) -> Option<&str> {
    if principal.verified && !policy::is_admin(principal) {
        principal.user_id.as_deref().or(Some(""))
    } else {
        None
    }
}

/// The FORBIDDEN failure for a connection that is not the caller's.
fn not_yours(conn_id: &str) -> Failure {
    fail::failure(
        ErrorCode::Forbidden,
        format!("connection {conn_id:?} is another user's; a token acts only on its own"),
    )
}

/// The STALE_EPOCH failure for a beat.
fn stale(beat: &Beat) -> Failure {
    fail::failure(
        ErrorCode::StaleEpoch,
        format!(
            "epoch {} is older than the epoch of connection {:?}; nothing was applied",
            beat.epoch.unwrap_or(0),
            beat.conn_id
        ),
    )
}

/// What the refresh read back about a connection that is being patched.
struct Current {
    epoch: u64,
    state: Option<String>,
    room_id: String,
    user_id: String,
}

/// The first refresh result of a beat.
enum Refreshed {
    Done(HeartbeatOk),
    Patch(Current),
}

fn read_refresh(beat: &Beat, refresh: &Refresh, outcome: Outcome) -> Result<Refreshed, Failure> {
    let mut replies = match outcome {
        Outcome::Applied(replies) => replies,
        Outcome::Refused(guard) if guard == refresh.exists || guard == refresh.live => {
            return Err(fail::unknown_connection(&beat.conn_id));
        }
        Outcome::Refused(guard) if Some(guard) == refresh.owner => {
            return Err(not_yours(&beat.conn_id));
        }
        Outcome::Refused(guard) if Some(guard) == refresh.step => {
            return Err(fail::invalid(format!(
                "epoch {} is more than {MAX_EPOCH_STEP} above the epoch of connection {:?}; \
                 nothing was applied",
                beat.epoch.unwrap_or(0),
                beat.conn_id
            )));
        }
        Outcome::Refused(_) => return Err(stale(beat)),
    };
    let mut fields = replies.take(refresh.fields)?.into_iter();
    let epoch = db::parse_u64(fields.next().flatten().as_deref()).unwrap_or(0);
    if beat.patch.is_none() {
        return Ok(Refreshed::Done(HeartbeatOk {
            changed: false,
            epoch,
        }));
    }
    let state = fields.next().flatten();
    let (Some(room_id), Some(user_id)) = (fields.next().flatten(), fields.next().flatten()) else {
        return Err(fail::unknown_connection(&beat.conn_id));
    };
    Ok(Refreshed::Patch(Current {
        epoch,
        state,
        room_id,
        user_id,
    }))
}

/// Applies a patch to the current state: the new state text when it changes anything.
pub fn patched_state(
    current: Option<&str>,
    patch: &State,
    settings: &Settings,
) -> Result<Option<String>, Failure> {
    let mut state = current
        .and_then(|text| state::parse_object(text, "state").ok())
        .unwrap_or_default();
    if !state::merge(&mut state, patch.clone()) {
        return Ok(None);
    }
    let text = state::to_text(&state);
    state::check_size(
        &text,
        "the state after patchState",
        settings.max_state_bytes,
    )?;
    Ok(Some(text))
}

/// The compare-and-set that writes a patched state if nobody changed it meanwhile, and the
/// guard that fences the epoch (its refusal is `STALE_EPOCH`, not a lost race).
fn cas_batch(beat: &Beat, current: &Current, next: &str) -> (Batch, Option<GuardId>) {
    let conn_key = beat.conn_key();
    let mut batch = BatchBuilder::new();
    batch.guard(db::field_is(&conn_key, f::STATE, current.state.as_deref()));
    let fence = beat
        .epoch
        .map(|epoch| batch.guard(db::field_at_most(&conn_key, f::EPOCH, score(epoch))));
    batch.op(db::hset(&conn_key, vec![(f::STATE, next.to_owned())]));
    (batch.build(), fence)
}

/// Heartbeats, each independent: validation and store failures are per request.
pub fn heartbeat(
    ctx: &CallContext,
    requests: Vec<HeartbeatRequest>,
) -> Vec<Result<HeartbeatOk, Failure>> {
    let mut results: Vec<Option<Result<HeartbeatOk, Failure>>> = Vec::with_capacity(requests.len());
    let mut beats = Vec::with_capacity(requests.len());
    for request in requests {
        match validate_heartbeat(request, &ctx.settings) {
            Ok(beat) => {
                beats.push((results.len(), beat));
                results.push(None);
            }
            Err(failure) => results.push(Some(Err(failure))),
        }
    }

    let (batches, refreshes): (Vec<Batch>, Vec<Refresh>) = beats
        .iter()
        .map(|(_, beat)| refresh_batch(ctx, beat))
        .unzip();
    match db::execute(&batches) {
        Err(failure) => {
            for (index, _) in &beats {
                results[*index] = Some(Err(failure.clone()));
            }
        }
        Ok(outcomes) => {
            // Patches that change the state get one batched compare-and-set; the rare
            // losers of a race retry on their own.
            let mut patches = Vec::new();
            for (((index, beat), refresh), outcome) in
                beats.into_iter().zip(&refreshes).zip(outcomes)
            {
                match read_refresh(&beat, refresh, outcome) {
                    Ok(Refreshed::Done(ok)) => results[index] = Some(Ok(ok)),
                    Ok(Refreshed::Patch(current)) => patches.push((index, beat, current)),
                    Err(failure) => results[index] = Some(Err(failure)),
                }
            }
            for (index, result) in apply_patches(ctx, patches) {
                results[index] = Some(result);
            }
        }
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(fail::internal("a heartbeat got no result"))))
        .collect()
}

/// Applies the patches of refreshed beats: one batched compare-and-set, then retries.
fn apply_patches(
    ctx: &CallContext,
    patches: Vec<(usize, Beat, Current)>,
) -> Vec<(usize, Result<HeartbeatOk, Failure>)> {
    let mut done = Vec::with_capacity(patches.len());
    let mut writes = Vec::new();
    for (index, beat, current) in patches {
        let Some(patch) = beat.patch.as_ref() else {
            continue;
        };
        match patched_state(current.state.as_deref(), patch, &ctx.settings) {
            Ok(None) => done.push((
                index,
                Ok(HeartbeatOk {
                    changed: false,
                    epoch: current.epoch,
                }),
            )),
            Ok(Some(next)) => writes.push((index, beat, current, next)),
            Err(failure) => done.push((index, Err(failure))),
        }
    }
    let (batches, fences): (Vec<Batch>, Vec<Option<GuardId>>) = writes
        .iter()
        .map(|(_, beat, current, next)| cas_batch(beat, current, next))
        .unzip();
    match db::execute(&batches) {
        Err(failure) => done.extend(
            writes
                .into_iter()
                .map(|(index, ..)| (index, Err(failure.clone()))),
        ),
        Ok(outcomes) => {
            for (((index, beat, current, next), fence), outcome) in
                writes.into_iter().zip(fences).zip(outcomes)
            {
                let result = match outcome {
                    Outcome::Applied(_) => Ok(announce_update(ctx, &beat, &current, next)),
                    Outcome::Refused(guard) if Some(guard) == fence => Err(stale(&beat)),
                    Outcome::Refused(_) => retry_patch(ctx, &beat),
                };
                done.push((index, result));
            }
        }
    }
    done
}

/// Re-reads and re-applies one patch after losing a race, a few times.
fn retry_patch(ctx: &CallContext, beat: &Beat) -> Result<HeartbeatOk, Failure> {
    let Some(patch) = beat.patch.as_ref() else {
        return Err(fail::internal("retrying a heartbeat without a patch"));
    };
    let conn_key = beat.conn_key();
    for _ in 1..PATCH_ATTEMPTS {
        let mut read = BatchBuilder::new();
        let slot = read.read(db::hmget(
            &conn_key,
            &[f::EPOCH, f::STATE, f::ROOM, f::USER],
        ));
        let mut fields = db::execute_read(read.build())?.take(slot)?.into_iter();
        let epoch = db::parse_u64(fields.next().flatten().as_deref()).unwrap_or(0);
        let state = fields.next().flatten();
        let (Some(room_id), Some(user_id)) = (fields.next().flatten(), fields.next().flatten())
        else {
            return Err(fail::unknown_connection(&beat.conn_id));
        };
        if beat.epoch.is_some_and(|given| given < epoch) {
            return Err(stale(beat));
        }
        let current = Current {
            epoch,
            state,
            room_id,
            user_id,
        };
        let Some(next) = patched_state(current.state.as_deref(), patch, &ctx.settings)? else {
            return Ok(HeartbeatOk {
                changed: false,
                epoch,
            });
        };
        let (cas, fence) = cas_batch(beat, &current, &next);
        match db::execute_one(cas)? {
            Outcome::Applied(_) => return Ok(announce_update(ctx, beat, &current, next)),
            Outcome::Refused(guard) if Some(guard) == fence => return Err(stale(beat)),
            Outcome::Refused(_) => {}
        }
    }
    Err(fail::failure(
        ErrorCode::StaleEpoch,
        format!(
            "the state of connection {:?} kept changing under this patch; nothing was applied",
            beat.conn_id
        ),
    ))
}

/// Publishes the `update` of a written patch and builds the ack.
fn announce_update(
    ctx: &CallContext,
    beat: &Beat,
    current: &Current,
    state: String,
) -> HeartbeatOk {
    let epoch = beat
        .epoch
        .map_or(current.epoch, |given| given.max(current.epoch));
    crate::host::publish(&Event::Presence(PresenceEvent {
        change: PresenceChange::Update,
        room_id: current.room_id.clone(),
        user_id: current.user_id.clone(),
        conn_id: beat.conn_id.clone(),
        state,
        ts: ctx.now,
        epoch,
    }));
    HeartbeatOk {
        changed: true,
        epoch,
    }
}

/// Removes a connection and announces `leave`. Two round trips: the node that created the
/// connection and its user are read first, because their index entries are part of the
/// removal.
pub fn leave(ctx: &CallContext, conn_id: &str, binding: Option<u64>) -> Result<Left, Failure> {
    if conn_id.is_empty() {
        return Err(fail::invalid("connId must not be empty"));
    }
    let digest =
        keys::conn_room_digest(conn_id).ok_or_else(|| fail::unknown_connection(conn_id))?;
    let conn_key = keys::conn_key(digest, conn_id);
    let mut read = BatchBuilder::new();
    let slot = read.read(db::hmget(&conn_key, &[f::NODE, f::USER]));
    let mut fields = db::execute_read(read.build())?.take(slot)?.into_iter();
    let (Some(node), Some(user)) = (fields.next().flatten(), fields.next().flatten()) else {
        return Err(fail::unknown_connection(conn_id));
    };
    if owner_of(&ctx.principal).is_some_and(|owner| owner != user) {
        return Err(not_yours(conn_id));
    }
    // The node changes only when the connection is resumed elsewhere: then this removal
    // (and its node set) is refused, as is a socket's removal of a connection another
    // socket took over.
    let mut guards = vec![db::field_is(&conn_key, f::NODE, Some(&node))];
    if let Some(binding) = binding {
        guards.push(db::field_is(&conn_key, f::BIND, Some(&binding.to_string())));
    }
    let (batch, removal) = removal_batch(digest, conn_id, Some(&node), &user, guards);
    match db::execute_one(batch)? {
        Outcome::Applied(replies) => announce_leave(ctx, conn_id, &removal, replies)?
            .ok_or_else(|| fail::unknown_connection(conn_id)),
        Outcome::Refused(_) => Err(fail::unknown_connection(conn_id)),
    }
}

/// Checks a resume token against the stored one, in time independent of where they
/// differ.
fn same_secret(given: &str, stored: &str) -> bool {
    given.len() == stored.len()
        && given
            .bytes()
            .zip(stored.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The reaper's expiry score that makes a connection stale `grace_ms` from now: the index
/// holds last-heartbeat times, and a connection is reaped once its score is older than
/// the TTL.
pub fn detached_score(ctx: &CallContext) -> i64 {
    let ttl = ctx.settings.ttl_ms;
    let grace = ctx.settings.resume_grace_ms.min(ttl);
    score(ctx.now.saturating_add(grace).saturating_sub(ttl))
}

/// The keys of a connection that resume and detach touch, and its room's digest.
struct ConnKeys {
    /// Its room's digest (in its id).
    digest: u64,
    /// Its hash.
    conn_key: String,
    /// Its bucket.
    bucket: u16,
    /// The bucket's expiry index.
    index: String,
}

/// The keys of `conn_id`; an id that is not one of ours is an unknown connection.
fn conn_keys(conn_id: &str) -> Result<ConnKeys, Failure> {
    let digest =
        keys::conn_room_digest(conn_id).ok_or_else(|| fail::unknown_connection(conn_id))?;
    let bucket = keys::bucket(digest);
    Ok(ConnKeys {
        digest,
        conn_key: keys::conn_key(digest, conn_id),
        bucket,
        index: keys::expiry_key(bucket),
    })
}

/// The socket holding `conn_id` (as `binding`) dropped: keep the connection, silently, for
/// the resume grace, and take it off its node (a node that dies or shuts down meanwhile
/// must not announce it). The reaper announces its `leave` when the grace ends, unless a
/// new socket resumes it.
pub fn detach(ctx: &CallContext, conn_id: &str, binding: u64) -> Result<(), Failure> {
    let ConnKeys {
        conn_key,
        bucket,
        index,
        ..
    } = conn_keys(conn_id)?;
    let mut read = BatchBuilder::new();
    let slot = read.read(db::hmget(&conn_key, &[f::NODE, f::BIND]));
    let indexed = read.read(db::zscore(&index, conn_id));
    let mut applied = db::execute_read(read.build())?;
    let mut fields = applied.take(slot)?.into_iter();
    let (Some(node), Some(bound), Some(seen)) = (
        fields.next().flatten(),
        fields.next().flatten(),
        applied.take(indexed)?,
    ) else {
        return Ok(()); // gone already
    };
    if bound != binding.to_string() {
        return Ok(()); // another socket resumed it
    }
    let mut batch = BatchBuilder::new();
    batch.guard(db::field_is(&conn_key, f::BIND, Some(&bound)));
    batch.guard(db::field_is(&conn_key, f::NODE, Some(&node)));
    // Stale at the end of the grace, or sooner if it already would be.
    batch.op(db::zadd(&index, conn_id, seen.min(detached_score(ctx))));
    if ctx.settings.node_lease_ms > 0 {
        batch.op(db::srem(&keys::node_key(bucket, &node), conn_id));
    }
    db::execute_one(batch.build()).map(drop)
}

/// A new socket takes over a connection with its resume token: live again (its TTL and
/// index refreshed), bound to the new socket and this node; nothing is announced.
pub fn resume(ctx: &CallContext, request: &ResumeRequest) -> Result<Resumed, Failure> {
    let conn_id = request.conn_id.as_str();
    let ConnKeys {
        digest,
        conn_key,
        bucket,
        index,
    } = conn_keys(conn_id)?;
    let mut read = BatchBuilder::new();
    let slot = read.read(db::hmget(
        &conn_key,
        &[f::ROOM, f::USER, f::EPOCH, f::NODE, f::RESUME],
    ));
    let indexed = read.read(db::zscore(&index, conn_id));
    let mut applied = db::execute_read(read.build())?;
    let mut fields = applied.take(slot)?.into_iter();
    let mut next = || fields.next().flatten();
    let (Some(room_id), Some(user_id), epoch, Some(node), Some(secret)) =
        (next(), next(), next(), next(), next())
    else {
        return Err(fail::unknown_connection(conn_id));
    };
    let live = applied
        .take(indexed)?
        .is_some_and(|seen| seen >= live_bound(ctx.now, ctx.settings.ttl_ms));
    if !live {
        return Err(fail::failure(
            ErrorCode::UnknownConnection,
            format!("connection {conn_id:?} expired; join again"),
        ));
    }
    if !same_secret(&request.resume_token, &secret) {
        return Err(fail::failure(
            ErrorCode::Forbidden,
            format!("the resume token of connection {conn_id:?} does not match"),
        ));
    }
    if owner_of(&ctx.principal).is_some_and(|owner| owner != user_id) {
        return Err(not_yours(conn_id));
    }
    let stored = db::parse_u64(epoch.as_deref()).unwrap_or(0);
    let epoch = match request.epoch {
        Some(epoch) if epoch < stored => {
            return Err(fail::failure(
                ErrorCode::StaleEpoch,
                format!("epoch {epoch} is older than the epoch of connection {conn_id:?}"),
            ));
        }
        Some(epoch) if epoch > MAX_EPOCH || epoch > stored.saturating_add(MAX_EPOCH_STEP) => {
            return Err(fail::invalid(format!(
                "epoch {epoch} is out of bounds (at most {MAX_EPOCH}, and {MAX_EPOCH_STEP} above the stored one)"
            )));
        }
        Some(epoch) => epoch,
        None => stored,
    };
    let lookback = ctx.settings.lookback_ms;
    let mut batch = BatchBuilder::new();
    batch.guard(db::field_is(&conn_key, f::NODE, Some(&node)));
    batch.guard(db::field_is(&conn_key, f::RESUME, Some(&secret)));
    batch.op(db::hset(
        &conn_key,
        vec![
            (f::SEEN, ctx.now.to_string()),
            (f::EPOCH, epoch.to_string()),
            (f::NODE, ctx.node_id.clone()),
            (f::BIND, request.binding.to_string()),
        ],
    ));
    batch.op(db::pexpire(&conn_key, lookback));
    batch.op(db::pexpire(&keys::room_key(digest), lookback));
    batch.op(db::pexpire(&keys::users_key(digest), lookback));
    batch.op(db::zadd(&index, conn_id, score(ctx.now)));
    batch.op(db::srem(&keys::node_key(bucket, &node), conn_id));
    if ctx.settings.node_lease_ms > 0 {
        batch.op(db::sadd(&keys::node_key(bucket, &ctx.node_id), conn_id));
    }
    match db::execute_one(batch.build())? {
        Outcome::Applied(_) => Ok(Resumed {
            conn_id: conn_id.to_owned(),
            room_id,
            user_id,
            epoch,
        }),
        // It left, was reaped or was resumed by another socket meanwhile.
        Outcome::Refused(_) => Err(fail::unknown_connection(conn_id)),
    }
}

/// The handle to what a removal batch read before removing: the connection's room, user,
/// epoch and state.
pub struct Removal {
    record: Slot<Vec<Option<String>>>,
}

/// The batch that removes a connection everywhere (its record, its room's set, its user's
/// count, its bucket's expiry index, and the set of `node`, the node that created it, when
/// known) if `guards` hold and the record is still `user`'s, reading first what its `leave`
/// needs. Shared by leave, a replacing join and the reaper.
pub fn removal_batch(
    digest: u64,
    conn_id: &str,
    node: Option<&str>,
    user: &str,
    guards: Vec<Guard>,
) -> (Batch, Removal) {
    let conn_key = keys::conn_key(digest, conn_id);
    let users_key = keys::users_key(digest);
    let bucket = keys::bucket(digest);
    let mut batch = BatchBuilder::new();
    for guard in guards {
        batch.guard(guard);
    }
    // The user count below is this user's: the record must say so.
    batch.guard(db::field_is(&conn_key, f::USER, Some(user)));
    let record = batch.read(db::hmget(&conn_key, &LEAVE_FIELDS));
    batch.op(db::del(&conn_key));
    batch.op(db::srem(&keys::room_key(digest), conn_id));
    batch.op(db::zincrby(&users_key, user, -1));
    batch.op(db::zrem_range_by_score(&users_key, i64::MIN, 0));
    batch.op(db::zrem(&keys::expiry_key(bucket), conn_id));
    if let Some(node) = node {
        batch.op(db::srem(&keys::node_key(bucket, node), conn_id));
    }
    (batch.build(), Removal { record })
}

/// Publishes the `leave` of an applied [`removal_batch`], with the connection's last state;
/// none when the record was already incomplete (nothing to announce).
pub fn announce_leave(
    ctx: &CallContext,
    conn_id: &str,
    removal: &Removal,
    mut replies: Applied,
) -> Result<Option<Left>, Failure> {
    let mut fields = replies.take(removal.record)?.into_iter();
    let (Some(room_id), Some(user_id)) = (fields.next().flatten(), fields.next().flatten()) else {
        return Ok(None);
    };
    let epoch = db::parse_u64(fields.next().flatten().as_deref()).unwrap_or(0);
    let state = fields
        .next()
        .flatten()
        .unwrap_or_else(|| String::from("{}"));
    crate::host::publish(&Event::Presence(PresenceEvent {
        change: PresenceChange::Leave,
        room_id: room_id.clone(),
        user_id: user_id.clone(),
        conn_id: conn_id.to_owned(),
        state: state.clone(),
        ts: ctx.now,
        epoch,
    }));
    Ok(Some(Left {
        room_id,
        user_id,
        conn_id: conn_id.to_owned(),
        epoch,
        state,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            ttl_ms: 30_000,
            lookback_ms: 60_000,
            max_state_bytes: 64,
            max_room_members: 10,
            max_metadata_items: 8,
            max_metadata_bytes: 256,
            default_lock_ttl_ms: 30_000,
            max_lock_ttl_ms: 60_000,
            node_lease_ms: 5_000,
            max_snapshot_members: 100,
            max_message_bytes: 1024,
            message_history: 10,
            message_history_ttl_ms: 60_000,
            resume_grace_ms: 10_000,
            max_snapshot_bytes: 4096,
        }
    }

    fn join_request(state: Option<&str>) -> JoinRequest {
        JoinRequest {
            room_id: "lobby".into(),
            user_id: Some("ada".into()),
            state: state.map(str::to_owned),
            nonce: 1,
            replaces: None,
            resume_token: "secret".into(),
            binding: 1,
        }
    }

    fn open() -> Principal {
        Principal {
            user_id: None,
            verified: false,
            role: None,
            permissions: Vec::new(),
            rooms: None,
        }
    }

    fn verified(user: &str, role: Option<&str>) -> Principal {
        Principal {
            user_id: Some(user.into()),
            verified: true,
            role: role.map(str::to_owned),
            permissions: Vec::new(),
            rooms: None,
        }
    }

    fn ctx() -> CallContext {
        CallContext {
            now: 100_000,
            node_id: "n1".into(),
            settings: settings(),
            principal: open(),
        }
    }

    /// A join without state starts with `{}`; a state is canonicalised; non-objects and
    /// oversize states are refused with their codes.
    #[test]
    fn join_validation() {
        let c = ctx();
        let state = |request: &JoinRequest| validate_join(request, &c).map(|(_, state)| state);
        assert_eq!(state(&join_request(None)).unwrap(), "{}");
        assert_eq!(
            state(&join_request(Some(r#"{ "a" : 1 }"#))).unwrap(),
            r#"{"a":1}"#
        );
        let err = state(&join_request(Some("[1]"))).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(100));
        let err = state(&join_request(Some(&big))).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        let mut no_room = join_request(None);
        no_room.room_id.clear();
        assert_eq!(state(&no_room).unwrap_err().code, ErrorCode::InvalidPayload);
    }

    /// Who a join joins as: the named user in open mode; the token's user, who may not
    /// name another (an admin may); a join with no user needs a token.
    #[test]
    fn the_joining_user() {
        let named = join_request(None);
        let mut unnamed = join_request(None);
        unnamed.user_id = None;
        assert_eq!(joining_user(&named, &open()).unwrap(), "ada");
        assert_eq!(
            joining_user(&unnamed, &open()).unwrap_err().code,
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            joining_user(&unnamed, &verified("bob", None)).unwrap(),
            "bob"
        );
        assert_eq!(joining_user(&named, &verified("ada", None)).unwrap(), "ada");
        assert_eq!(
            joining_user(&named, &verified("bob", None))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            joining_user(&named, &verified("root", Some("admin"))).unwrap(),
            "ada"
        );
    }

    /// Liveness is inclusive at exactly TTL and ends one millisecond later.
    #[test]
    fn liveness_window() {
        assert!(is_live(70_000, 100_000, 30_000));
        assert!(!is_live(69_999, 100_000, 30_000));
        assert!(is_live(u64::MAX, 0, u64::MAX));
    }

    /// Heartbeats with malformed connection ids or epochs past the safe range never reach
    /// the store.
    #[test]
    fn heartbeat_validation() {
        let s = settings();
        let request = |conn_id: &str, patch: Option<&str>| HeartbeatRequest {
            conn_id: conn_id.into(),
            epoch: None,
            patch_state: patch.map(str::to_owned),
        };
        let err = validate_heartbeat(request("", None), &s).err().unwrap();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        let err = validate_heartbeat(request("conn-1", None), &s)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::UnknownConnection);
        let id = keys::conn_id(keys::digest("lobby"), 9);
        let err = validate_heartbeat(request(&id, Some("3")), &s)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        let beat = validate_heartbeat(request(&id, Some("{}")), &s)
            .ok()
            .unwrap();
        assert!(beat.patch.is_none(), "an empty patch is no patch");
        assert_eq!(beat.digest, keys::digest("lobby"));
        for (epoch, ok) in [(MAX_EPOCH, true), (MAX_EPOCH + 1, false), (u64::MAX, false)] {
            let mut beat = request(&id, None);
            beat.epoch = Some(epoch);
            assert_eq!(validate_heartbeat(beat, &s).is_ok(), ok, "epoch {epoch}");
        }
    }

    /// The step guard appears only for epochs far above both `now` and (by its bound) the
    /// stored epoch.
    #[test]
    fn epoch_step_guard() {
        let ctx = ctx();
        let id = keys::conn_id(keys::digest("lobby"), 9);
        let beat = |epoch: u64| Beat {
            conn_id: id.clone(),
            digest: keys::digest("lobby"),
            epoch: Some(epoch),
            patch: None,
        };
        assert!(refresh_batch(&ctx, &beat(ctx.now + 5)).1.step.is_none());
        assert!(
            refresh_batch(&ctx, &beat(ctx.now + MAX_EPOCH_STEP))
                .1
                .step
                .is_none()
        );
        let (batch, refresh) = refresh_batch(&ctx, &beat(ctx.now + MAX_EPOCH_STEP + 1));
        assert!(refresh.step.is_some());
        assert!(matches!(
            batch.guards.last(),
            Some(Guard::FieldAtLeast(g)) if g.bound == score(ctx.now + 1)
        ));
    }

    /// A patch yields a new state only when it changes something, and never past the limit.
    #[test]
    fn patching() {
        let s = settings();
        let patch = |text: &str| state::parse_object(text, "patchState").unwrap();
        assert_eq!(
            patched_state(Some(r#"{"a":1}"#), &patch(r#"{"a":1}"#), &s).unwrap(),
            None
        );
        assert_eq!(
            patched_state(Some(r#"{"a":1}"#), &patch(r#"{"b":2}"#), &s).unwrap(),
            Some(r#"{"a":1,"b":2}"#.to_owned())
        );
        assert_eq!(
            patched_state(None, &patch(r#"{"b":2}"#), &s).unwrap(),
            Some(r#"{"b":2}"#.to_owned())
        );
        let big = patch(&format!(r#"{{"x":"{}"}}"#, "y".repeat(60)));
        assert_eq!(
            patched_state(Some(r#"{"a":1}"#), &big, &s)
                .unwrap_err()
                .code,
            ErrorCode::PayloadTooLarge
        );
    }

    /// Snapshot entries skip stale connections and connections of another room.
    #[test]
    fn snapshot_entries() {
        let ctx = ctx();
        let fields = |room: &str, seen: u64| {
            vec![
                Some(room.to_owned()),
                Some("ada".to_owned()),
                Some("5".to_owned()),
                Some(r#"{"a":1}"#.to_owned()),
                Some(seen.to_string()),
                Some("1".to_owned()),
            ]
        };
        let (joined, conn) = snapshot_entry(&ctx, "lobby", "c1", fields("lobby", 90_000)).unwrap();
        assert_eq!(joined, 1);
        assert_eq!(conn.user_id, "ada");
        assert_eq!(conn.epoch, 5);
        assert_eq!(conn.last_seen, 90_000);
        assert!(snapshot_entry(&ctx, "lobby", "c1", fields("lobby", 1_000)).is_none());
        assert!(snapshot_entry(&ctx, "lobby", "c1", fields("other", 90_000)).is_none());
        assert!(snapshot_entry(&ctx, "lobby", "c1", vec![None; 6]).is_none());
    }

    /// A replacing join in the same room counts the replaced connection as leaving (its
    /// place is free) and requires it to exist; elsewhere the room's limit is plain.
    #[test]
    fn replacing_join_frees_its_place() {
        let ctx = ctx();
        let request = join_request(None);
        let digest = keys::digest("lobby");
        let id = keys::conn_id(digest, 2);
        let old = keys::conn_id(digest, 1);
        let new = NewConn {
            room_id: &request.room_id,
            user_id: "ada",
            digest,
            conn_id: &id,
            state: "{}",
            resume_token: "secret",
            binding: 1,
        };
        let (batch, create) = create_batch(&ctx, &new, 7, Some(&old));
        assert!(create.replaced_exists.is_some());
        assert!(batch.guards.iter().any(|g| matches!(
            g,
            Guard::SizeBelow(s) if s.limit == ctx.settings.max_room_members + 1
        )));
        let (batch, create) = create_batch(&ctx, &new, 7, None);
        assert!(create.replaced_exists.is_none());
        assert!(batch.guards.iter().any(|g| matches!(
            g,
            Guard::SizeBelow(s) if s.limit == ctx.settings.max_room_members
        )));
    }
}
