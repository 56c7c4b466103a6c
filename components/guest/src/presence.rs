//! Presence: join with a snapshot, heartbeat with epoch fencing and state patches, leave.
//!
//! Costs in store round trips (one `execute` each):
//! - join: 2 (create + list members, then read the members);
//! - heartbeat without a patch, or with one that changes nothing: 1;
//! - heartbeat whose patch changes the state: 2 (refresh + read, then compare-and-set);
//! - leave: 1; snapshot: 2.
//!
//! Liveness: a connection is live while `seen + ttl >= now`. A stale connection is hidden
//! from snapshots and refuses heartbeats with `UNKNOWN_CONNECTION` even before the reaper
//! removes it, so the TTL means the same whatever the reaper's timing.

use crate::bindings::roster::hub::events::Event;
use crate::bindings::roster::hub::store::{Batch, Guard};
use crate::db::{self, Applied, BatchBuilder, GuardId, Outcome, Slot, score};
use crate::fail;
use crate::keys::{self, conn as f};
use crate::state::{self, State};
use crate::types::{
    CallContext, Conn, ErrorCode, Failure, HeartbeatOk, HeartbeatRequest, JoinRequest, Joined,
    Left, PresenceChange, PresenceEvent, Settings,
};

/// Fields read back for a snapshot entry, in this order.
const SNAPSHOT_FIELDS: [&str; 6] = [f::ROOM, f::USER, f::EPOCH, f::STATE, f::SEEN, f::JOINED];

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

/// Checks a join request and returns the canonical initial state text.
pub fn validate_join(request: &JoinRequest, settings: &Settings) -> Result<String, Failure> {
    fail::check_id(&request.room_id, "roomId", ErrorCode::InvalidPayload)?;
    fail::check_id(&request.user_id, "userId", ErrorCode::InvalidPayload)?;
    let state = match &request.state {
        None => State::new(),
        Some(text) => {
            state::check_size(text, "state", settings.max_state_bytes)?;
            state::parse_object(text, "state")?
        }
    };
    let text = state::to_text(&state);
    state::check_size(&text, "state", settings.max_state_bytes)?;
    Ok(text)
}

/// Creates the connection, announces `join` and returns the room's snapshot.
pub fn join(ctx: &CallContext, request: JoinRequest) -> Result<Joined, Failure> {
    let state_text = validate_join(&request, &ctx.settings)?;
    let digest = keys::digest(&request.room_id);
    let conn_id = keys::conn_id(digest, request.nonce);
    let conn_key = keys::conn_key(digest, &conn_id);
    let room_key = keys::room_key(digest);
    let now = ctx.now;
    let epoch = now;
    let lookback = ctx.settings.lookback_ms;

    let mut create = BatchBuilder::new();
    let id_free = create.guard(db::absent(&conn_key));
    create.guard(db::size_below(&room_key, ctx.settings.max_room_members));
    create.op(db::hset(
        &conn_key,
        vec![
            (f::ROOM, request.room_id.clone()),
            (f::USER, request.user_id.clone()),
            (f::EPOCH, epoch.to_string()),
            (f::STATE, state_text.clone()),
            (f::SEEN, now.to_string()),
            (f::JOINED, now.to_string()),
            (f::NODE, ctx.node_id.clone()),
        ],
    ));
    create.op(db::pexpire(&conn_key, lookback));
    create.op(db::sadd(&room_key, &conn_id));
    create.op(db::pexpire(&room_key, lookback));
    create.op(db::zadd(
        &keys::expiry_key(keys::bucket(digest)),
        &conn_id,
        score(now),
    ));
    create.op(db::sadd(
        &keys::node_key(keys::bucket(digest), &ctx.node_id),
        &conn_id,
    ));
    let listed = create.read(db::smembers(&room_key));
    let members = match db::execute_one(create.build())? {
        Outcome::Applied(mut replies) => replies.take(listed)?,
        Outcome::Refused(guard) if guard == id_free => {
            return Err(fail::internal(format!(
                "connection id {conn_id} is taken; join again"
            )));
        }
        Outcome::Refused(_) => {
            return Err(fail::failure(
                ErrorCode::Forbidden,
                format!(
                    "room {:?} is full: it holds {} connections, the limit",
                    request.room_id, ctx.settings.max_room_members
                ),
            ));
        }
    };

    crate::host::publish(&Event::Presence(PresenceEvent {
        change: PresenceChange::Join,
        room_id: request.room_id.clone(),
        user_id: request.user_id,
        conn_id: conn_id.clone(),
        state: Some(state_text),
        ts: now,
        epoch,
    }));

    let snapshot = read_members(ctx, digest, &request.room_id, &members)?;
    Ok(Joined {
        conn_id,
        epoch,
        snapshot,
    })
}

/// The live connections of a room.
pub fn snapshot(ctx: &CallContext, room_id: &str) -> Result<Vec<Conn>, Failure> {
    fail::check_id(room_id, "roomId", ErrorCode::InvalidPayload)?;
    let digest = keys::digest(room_id);
    let mut list = BatchBuilder::new();
    let listed = list.read(db::smembers(&keys::room_key(digest)));
    let members = db::execute_read(list.build())?.take(listed)?;
    read_members(ctx, digest, room_id, &members)
}

/// Reads the given members of a room and keeps the live ones, oldest join first.
fn read_members(
    ctx: &CallContext,
    digest: u64,
    room_id: &str,
    members: &[String],
) -> Result<Vec<Conn>, Failure> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut read = BatchBuilder::new();
    let slots: Vec<_> = members
        .iter()
        .map(|conn_id| {
            read.read(db::hmget(
                &keys::conn_key(digest, conn_id),
                &SNAPSHOT_FIELDS,
            ))
        })
        .collect();
    let mut replies = db::execute_read(read.build())?;
    let mut live = Vec::with_capacity(members.len());
    for (conn_id, slot) in members.iter().zip(slots) {
        let fields = replies.take(slot)?;
        if let Some(conn) = snapshot_entry(ctx, room_id, conn_id, fields) {
            live.push(conn);
        }
    }
    live.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.conn_id.cmp(&b.1.conn_id)));
    Ok(live.into_iter().map(|(_, conn)| conn).collect())
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
    fields: Slot<Vec<Option<String>>>,
}

/// The refresh batch: fence, refresh the TTL, and read what the ack (and a patch) needs.
fn refresh_batch(ctx: &CallContext, beat: &Beat) -> (Batch, Refresh) {
    let conn_key = beat.conn_key();
    let room_key = keys::room_key(beat.digest);
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
    if let Some(epoch) = beat.epoch {
        batch.guard(db::field_at_most(&conn_key, f::EPOCH, score(epoch)));
    }
    batch.op(db::hset(&conn_key, fields));
    batch.op(db::pexpire(&conn_key, ctx.settings.lookback_ms));
    batch.op(db::pexpire(&room_key, ctx.settings.lookback_ms));
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
            fields,
        },
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
        state: Some(state),
        ts: ctx.now,
        epoch,
    }));
    HeartbeatOk {
        changed: true,
        epoch,
    }
}

/// Removes a connection and announces `leave`. Two round trips: the node that created the
/// connection is read first, because its set is part of the removal.
pub fn leave(ctx: &CallContext, conn_id: &str) -> Result<Left, Failure> {
    if conn_id.is_empty() {
        return Err(fail::invalid("connId must not be empty"));
    }
    let digest =
        keys::conn_room_digest(conn_id).ok_or_else(|| fail::unknown_connection(conn_id))?;
    let conn_key = keys::conn_key(digest, conn_id);
    let mut read = BatchBuilder::new();
    let slot = read.read(db::hget(&conn_key, f::NODE));
    let node = db::execute_read(read.build())?
        .take(slot)?
        .ok_or_else(|| fail::unknown_connection(conn_id))?;
    // The node never changes, so this guard fails only if the connection went meanwhile.
    let guard = db::field_is(&conn_key, f::NODE, Some(&node));
    let (batch, removal) = removal_batch(digest, conn_id, Some(&node), vec![guard]);
    match db::execute_one(batch)? {
        Outcome::Applied(replies) => announce_leave(ctx, conn_id, &removal, replies)?
            .ok_or_else(|| fail::unknown_connection(conn_id)),
        Outcome::Refused(_) => Err(fail::unknown_connection(conn_id)),
    }
}

/// The handle to what a removal batch read before removing: the connection's room, user
/// and epoch.
pub struct Removal {
    record: Slot<Vec<Option<String>>>,
}

/// The batch that removes a connection everywhere (its record, its room's set, its
/// bucket's expiry index, and the set of `node`, the node that created it, when known) if
/// `guards` hold, reading first what its `leave` needs. Shared by leave and the reaper.
pub fn removal_batch(
    digest: u64,
    conn_id: &str,
    node: Option<&str>,
    guards: Vec<Guard>,
) -> (Batch, Removal) {
    let conn_key = keys::conn_key(digest, conn_id);
    let bucket = keys::bucket(digest);
    let mut batch = BatchBuilder::new();
    for guard in guards {
        batch.guard(guard);
    }
    let record = batch.read(db::hmget(&conn_key, &[f::ROOM, f::USER, f::EPOCH]));
    batch.op(db::del(&conn_key));
    batch.op(db::srem(&keys::room_key(digest), conn_id));
    batch.op(db::zrem(&keys::expiry_key(bucket), conn_id));
    if let Some(node) = node {
        batch.op(db::srem(&keys::node_key(bucket, node), conn_id));
    }
    (batch.build(), Removal { record })
}

/// Publishes the `leave` of an applied [`removal_batch`]; none when the record was already
/// incomplete (nothing to announce).
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
    crate::host::publish(&Event::Presence(PresenceEvent {
        change: PresenceChange::Leave,
        room_id: room_id.clone(),
        user_id: user_id.clone(),
        conn_id: conn_id.to_owned(),
        state: None,
        ts: ctx.now,
        epoch,
    }));
    Ok(Some(Left {
        room_id,
        user_id,
        conn_id: conn_id.to_owned(),
        epoch,
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
        }
    }

    fn join_request(state: Option<&str>) -> JoinRequest {
        JoinRequest {
            room_id: "lobby".into(),
            user_id: "ada".into(),
            state: state.map(str::to_owned),
            nonce: 1,
        }
    }

    fn ctx() -> CallContext {
        CallContext {
            now: 100_000,
            node_id: "n1".into(),
            settings: settings(),
        }
    }

    /// A join without state starts with `{}`; a state is canonicalised; non-objects and
    /// oversize states are refused with their codes.
    #[test]
    fn join_validation() {
        let s = settings();
        assert_eq!(validate_join(&join_request(None), &s).unwrap(), "{}");
        assert_eq!(
            validate_join(&join_request(Some(r#"{ "a" : 1 }"#)), &s).unwrap(),
            r#"{"a":1}"#
        );
        let err = validate_join(&join_request(Some("[1]")), &s).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(100));
        let err = validate_join(&join_request(Some(&big)), &s).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        let mut no_room = join_request(None);
        no_room.room_id.clear();
        assert_eq!(
            validate_join(&no_room, &s).unwrap_err().code,
            ErrorCode::InvalidPayload
        );
    }

    /// Liveness is inclusive at exactly TTL and ends one millisecond later.
    #[test]
    fn liveness_window() {
        assert!(is_live(70_000, 100_000, 30_000));
        assert!(!is_live(69_999, 100_000, 30_000));
        assert!(is_live(u64::MAX, 0, u64::MAX));
    }

    /// Heartbeats with malformed connection ids never reach the store.
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
}
