//! Channel metadata: items with revisions, a major revision, and named locks.
//!
//! A write reads the channel (and the lock it names), applies the rules here, and writes
//! back with a compare-and-set on the major revision, guarded by the lock when one is
//! named. A writer that loses the race to another reads again and re-checks: a request that
//! pinned revisions then fails with `METADATA_CONFLICT`; one that did not simply applies on
//! top. So every acknowledged write was checked against the state it replaced.
//!
//! Rules:
//! - `set` replaces the whole item set (keys not given are removed); `update` changes only
//!   given items, which must exist; `remove` drops the given keys, or all when none given.
//! - Every successful write raises `majorRevision` by one and each written item's revision
//!   by one (a new item starts at 1). A `remove` that removes nothing writes nothing.
//! - An item `revision` >= 0, or `options.majorRevision` >= 0, that differs from the current
//!   one is `METADATA_CONFLICT`; nothing is written. (An absent item has revision 0.)
//! - `options.lockName`: the write needs that lock held by the acting user (`METADATA_LOCK`).
//! - `addTimestamp` / `addUserId` stamp `updated` / `authorUid` on written items; `update`
//!   keeps earlier stamps it does not replace.

use serde::{Deserialize, Serialize};

use crate::bindings::roster::hub::events::Event;
use crate::db::{self, BatchBuilder, Outcome};
use crate::fail;
use crate::keys::{self, meta as f};
use crate::policy;
use crate::types::{
    CallContext, Channel, ChannelState, ErrorCode, Failure, ItemInput, LockInfo, LockRequest,
    MetadataEvent, MetadataItem, MetadataOperation, Settings, WriteRequest,
};

/// How many times a write re-reads after losing a compare-and-set race.
const WRITE_ATTEMPTS: usize = 8;

/// A channel's metadata as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The major revision field exactly as stored (none: the channel has never been written);
    /// the compare-and-set compares this text.
    pub major_text: Option<String>,
    /// The major revision.
    pub major: u64,
    /// The items in write order.
    pub items: Vec<MetadataItem>,
}

/// The stored form of an item (JSON).
#[derive(Serialize, Deserialize)]
struct StoredItem {
    key: String,
    value: String,
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated: Option<u64>,
    #[serde(rename = "authorUid", default, skip_serializing_if = "Option::is_none")]
    author_uid: Option<String>,
}

impl Stored {
    /// Decodes the `major` and `items` fields.
    pub fn decode(major: Option<String>, items: Option<String>) -> Result<Stored, Failure> {
        let parsed_major = match &major {
            None => 0,
            Some(text) => text.parse().map_err(|_| {
                fail::internal(format!("stored majorRevision {text:?} is not a number"))
            })?,
        };
        let items = match items {
            None => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<StoredItem>>(&text)
                .map_err(|error| {
                    fail::internal(format!("stored metadata items are corrupt: {error}"))
                })?
                .into_iter()
                .map(|item| MetadataItem {
                    key: item.key,
                    value: item.value,
                    revision: item.revision,
                    updated: item.updated,
                    author_uid: item.author_uid,
                })
                .collect(),
        };
        Ok(Stored {
            major_text: major,
            major: parsed_major,
            items,
        })
    }

    fn state(self) -> ChannelState {
        ChannelState {
            items: self.items,
            major_revision: self.major,
        }
    }

    fn find(&self, key: &str) -> Option<&MetadataItem> {
        self.items.iter().find(|item| item.key == key)
    }
}

/// Encodes items for the `items` field.
fn encode(items: &[MetadataItem]) -> String {
    let stored: Vec<StoredItem> = items
        .iter()
        .map(|item| StoredItem {
            key: item.key.clone(),
            value: item.value.clone(),
            revision: item.revision,
            updated: item.updated,
            author_uid: item.author_uid.clone(),
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| String::from("[]"))
}

/// What a write changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The channel's items after the write.
    pub next: Vec<MetadataItem>,
    /// The items the event reports: written (set, update) or removed (remove).
    pub touched: Vec<MetadataItem>,
}

fn conflict(message: String) -> Failure {
    fail::failure(ErrorCode::MetadataConflict, message)
}

fn lock_failure(message: String) -> Failure {
    fail::failure(ErrorCode::MetadataLock, message)
}

/// Validates the parts every write shares.
pub fn validate_write(request: &WriteRequest, operation: MetadataOperation) -> Result<(), Failure> {
    validate_channel(&request.channel)?;
    let mut seen = std::collections::HashSet::new();
    for item in &request.items {
        fail::check_id(&item.key, "item key", ErrorCode::MetadataInvalid)?;
        if !seen.insert(item.key.as_str()) {
            return Err(fail::metadata_invalid(format!(
                "item key {:?} appears twice",
                item.key
            )));
        }
        if operation == MetadataOperation::Set && item.value.is_none() {
            return Err(fail::metadata_invalid(format!(
                "item {:?} needs a string value",
                item.key
            )));
        }
    }
    if operation == MetadataOperation::Update && request.items.is_empty() {
        return Err(fail::metadata_invalid(
            "metadata:update needs at least one item",
        ));
    }
    if let Some(lock) = &request.options.lock_name {
        fail::check_id(lock, "options.lockName", ErrorCode::MetadataInvalid)?;
    }
    check_actor(request.actor.as_deref())?;
    Ok(())
}

fn validate_channel(channel: &Channel) -> Result<(), Failure> {
    fail::check_id(
        &channel.channel_type,
        "channelType",
        ErrorCode::MetadataInvalid,
    )?;
    fail::check_id(
        &channel.channel_name,
        "channelName",
        ErrorCode::MetadataInvalid,
    )
}

/// `options.majorRevision`, when >= 0, must be the current one.
pub fn check_major(expected: Option<i64>, current: u64) -> Result<(), Failure> {
    match expected {
        Some(expected) if expected >= 0 && u64::try_from(expected).ok() != Some(current) => {
            Err(conflict(format!(
                "expected majorRevision {expected}, but the channel is at {current}"
            )))
        }
        _ => Ok(()),
    }
}

/// An item's `revision`, when >= 0, must be the current one (0 when absent).
fn check_revision(input: &ItemInput, current: Option<&MetadataItem>) -> Result<(), Failure> {
    let actual = current.map_or(0, |item| item.revision);
    match input.revision {
        Some(expected) if expected >= 0 && u64::try_from(expected).ok() != Some(actual) => {
            Err(conflict(format!(
                "item {:?} is at revision {actual}, not {expected}",
                input.key
            )))
        }
        _ => Ok(()),
    }
}

/// Stamps a written item as the options ask.
fn stamp(item: &mut MetadataItem, request: &WriteRequest, now: u64) {
    if request.options.add_timestamp {
        item.updated = Some(now);
    }
    if request.options.add_user_id
        && let Some(actor) = &request.actor
    {
        item.author_uid = Some(actor.clone());
    }
}

/// `set`: the given items become the whole set.
pub fn plan_set(current: &Stored, request: &WriteRequest, now: u64) -> Result<Plan, Failure> {
    let mut next = Vec::with_capacity(request.items.len());
    for input in &request.items {
        let existing = current.find(&input.key);
        check_revision(input, existing)?;
        let mut item = MetadataItem {
            key: input.key.clone(),
            value: input.value.clone().unwrap_or_default(),
            revision: existing.map_or(0, |item| item.revision).saturating_add(1),
            updated: None,
            author_uid: None,
        };
        stamp(&mut item, request, now);
        next.push(item);
    }
    Ok(Plan {
        touched: next.clone(),
        next,
    })
}

/// `update`: only the given items change; each must exist.
pub fn plan_update(current: &Stored, request: &WriteRequest, now: u64) -> Result<Plan, Failure> {
    let mut next = current.items.clone();
    let mut touched = Vec::with_capacity(request.items.len());
    for input in &request.items {
        let Some(item) = next.iter_mut().find(|item| item.key == input.key) else {
            return Err(fail::metadata_invalid(format!(
                "item {:?} does not exist; metadata:update changes existing items only",
                input.key
            )));
        };
        check_revision(input, Some(item))?;
        if let Some(value) = &input.value {
            item.value.clone_from(value);
        }
        item.revision = item.revision.saturating_add(1);
        stamp(item, request, now);
        touched.push(item.clone());
    }
    Ok(Plan { next, touched })
}

/// `remove`: the given keys, or all; none when nothing would be removed.
pub fn plan_remove(current: &Stored, request: &WriteRequest) -> Result<Option<Plan>, Failure> {
    for input in &request.items {
        check_revision(input, current.find(&input.key))?;
    }
    let (touched, next): (Vec<MetadataItem>, Vec<MetadataItem>) = if request.items.is_empty() {
        (current.items.clone(), Vec::new())
    } else {
        current
            .items
            .iter()
            .cloned()
            .partition(|item| request.items.iter().any(|input| input.key == item.key))
    };
    Ok((!touched.is_empty()).then_some(Plan { next, touched }))
}

/// The channel's size limits.
pub fn check_limits(items: &[MetadataItem], settings: &Settings) -> Result<(), Failure> {
    let max_items = usize::try_from(settings.max_metadata_items).unwrap_or(usize::MAX);
    if items.len() > max_items {
        return Err(fail::too_large(format!(
            "the channel would hold {} items; the limit is {max_items}",
            items.len()
        )));
    }
    let bytes: usize = items
        .iter()
        .map(|item| item.key.len() + item.value.len())
        .sum();
    let max_bytes = usize::try_from(settings.max_metadata_bytes).unwrap_or(usize::MAX);
    if bytes > max_bytes {
        return Err(fail::too_large(format!(
            "the channel's items would total {bytes} bytes; the limit is {max_bytes}"
        )));
    }
    Ok(())
}

/// A write's lock must be held by the acting user.
pub fn check_lock(
    lock_name: &str,
    owner: Option<&str>,
    actor: Option<&str>,
) -> Result<(), Failure> {
    match (owner, actor) {
        (None, _) => Err(lock_failure(format!("lock {lock_name:?} is not held"))),
        (Some(_), None) => Err(lock_failure(format!(
            "lock {lock_name:?} needs an acting user: join first, or pass actorUserId"
        ))),
        (Some(owner), Some(actor)) if owner != actor => Err(lock_failure(format!(
            "lock {lock_name:?} is held by another user"
        ))),
        _ => Ok(()),
    }
}

/// Reads a channel (and the owner of `lock_key`, when given).
fn read(meta_key: &str, lock_key: Option<&str>) -> Result<(Stored, Option<String>), Failure> {
    let mut batch = BatchBuilder::new();
    let fields = batch.read(db::hmget(meta_key, &[f::MAJOR, f::ITEMS]));
    let owner = lock_key.map(|key| batch.read(db::get(key)));
    let mut replies = db::execute_read(batch.build())?;
    let mut fields = replies.take(fields)?.into_iter();
    let stored = Stored::decode(fields.next().flatten(), fields.next().flatten())?;
    let owner = match owner {
        Some(slot) => replies.take(slot)?,
        None => None,
    };
    Ok((stored, owner))
}

/// `metadata:get`.
pub fn get(channel: &Channel) -> Result<ChannelState, Failure> {
    validate_channel(channel)?;
    Ok(read(&keys::meta_key(channel), None)?.0.state())
}

/// `metadata:set`, `metadata:update` or `metadata:remove`.
pub fn write(
    ctx: &CallContext,
    mut request: WriteRequest,
    operation: MetadataOperation,
) -> Result<ChannelState, Failure> {
    validate_write(&request, operation)?;
    request.actor = acting_user(ctx, request.actor.as_deref())?;
    let meta_key = keys::meta_key(&request.channel);
    let lock = request
        .options
        .lock_name
        .as_deref()
        .map(|name| (name, keys::lock_key(&request.channel, name)));
    for _ in 0..WRITE_ATTEMPTS {
        let (current, owner) = read(&meta_key, lock.as_ref().map(|(_, key)| key.as_str()))?;
        if let Some((name, _)) = &lock {
            check_lock(name, owner.as_deref(), request.actor.as_deref())?;
        }
        check_major(request.options.major_revision, current.major)?;
        let plan = match operation {
            MetadataOperation::Set => plan_set(&current, &request, ctx.now)?,
            MetadataOperation::Update => plan_update(&current, &request, ctx.now)?,
            MetadataOperation::Remove => match plan_remove(&current, &request)? {
                Some(plan) => plan,
                None => return Ok(current.state()),
            },
        };
        check_limits(&plan.next, &ctx.settings)?;
        let major = current.major.saturating_add(1);
        let mut cas = BatchBuilder::new();
        let unchanged = cas.guard(db::field_is(
            &meta_key,
            f::MAJOR,
            current.major_text.as_deref(),
        ));
        if let Some((_, key)) = &lock {
            cas.guard(db::value_is(key, request.actor.as_deref()));
        }
        cas.op(db::hset(
            &meta_key,
            vec![
                (f::MAJOR, major.to_string()),
                (f::ITEMS, encode(&plan.next)),
                (f::TYPE, request.channel.channel_type.clone()),
                (f::NAME, request.channel.channel_name.clone()),
            ],
        ));
        match db::execute_one(cas.build())? {
            Outcome::Applied(_) => {
                crate::host::publish(&Event::Metadata(MetadataEvent {
                    operation,
                    channel: request.channel.clone(),
                    items: plan.touched,
                    major_revision: major,
                }));
                return Ok(ChannelState {
                    items: plan.next,
                    major_revision: major,
                });
            }
            // Another write landed first: read again and re-check.
            Outcome::Refused(guard) if guard == unchanged => continue,
            Outcome::Refused(_) => {
                let name = lock.as_ref().map(|(name, _)| *name).unwrap_or_default();
                return Err(lock_failure(format!(
                    "lock {name:?} changed hands while the write was applied"
                )));
            }
        }
    }
    Err(conflict(format!(
        "the channel changed {WRITE_ATTEMPTS} times while this write was applied; try again"
    )))
}

/// An acting user is an id like any other: not empty, bounded, no control characters
/// (it becomes a lock owner and an `authorUid`).
fn check_actor(actor: Option<&str>) -> Result<(), Failure> {
    match actor {
        Some(actor) => fail::check_id(actor, "actorUserId", ErrorCode::MetadataInvalid),
        None => Ok(()),
    }
}

/// Who acts: with a verified principal, its user (an admin may name another, as
/// `actorUserId`); in open mode, the user the request names.
pub fn acting_user(ctx: &CallContext, named: Option<&str>) -> Result<Option<String>, Failure> {
    let principal = &ctx.principal;
    if !principal.verified {
        return Ok(named.map(str::to_owned));
    }
    match (named, principal.user_id.as_deref()) {
        (Some(named), verified) if Some(named) != verified && !policy::is_admin(principal) => {
            Err(fail::failure(
                ErrorCode::Forbidden,
                format!(
                    "the token is user {:?}'s: it cannot act as {named:?}",
                    verified.unwrap_or_default()
                ),
            ))
        }
        (Some(named), _) => Ok(Some(named.to_owned())),
        (None, verified) => Ok(verified.map(str::to_owned)),
    }
}

fn validate_lock(request: &LockRequest) -> Result<&str, Failure> {
    validate_channel(&request.channel)?;
    fail::check_id(&request.lock_name, "lockName", ErrorCode::MetadataInvalid)?;
    check_actor(request.actor.as_deref())?;
    request.actor.as_deref().ok_or_else(|| {
        fail::failure(
            ErrorCode::Unauthorized,
            "locks need an acting user: join first, or pass actorUserId",
        )
    })
}

/// `lock:acquire`: takes a free lock, or extends one the actor holds. One round trip:
/// take-if-free, extend-if-mine, and read the owner (for the refusal) run together.
pub fn acquire_lock(ctx: &CallContext, request: &LockRequest) -> Result<LockInfo, Failure> {
    let mut request = request.clone();
    check_actor(request.actor.as_deref())?;
    request.actor = acting_user(ctx, request.actor.as_deref())?;
    let request = &request;
    let actor = validate_lock(request)?;
    let ttl = request.ttl_ms.unwrap_or(ctx.settings.default_lock_ttl_ms);
    if ttl == 0 || ttl > ctx.settings.max_lock_ttl_ms {
        return Err(fail::metadata_invalid(format!(
            "ttlMs must be between 1 and {}",
            ctx.settings.max_lock_ttl_ms
        )));
    }
    let key = keys::lock_key(&request.channel, &request.lock_name);
    let take = || db::set(&key, actor, Some(ttl));
    let mut take_free = BatchBuilder::new();
    take_free.guard(db::absent(&key));
    take_free.op(take());
    let mut extend_mine = BatchBuilder::new();
    extend_mine.guard(db::value_is(&key, Some(actor)));
    extend_mine.op(take());
    let mut read_owner = BatchBuilder::new();
    let owner = read_owner.read(db::get(&key));
    let batches = [take_free.build(), extend_mine.build(), read_owner.build()];
    let mut outcomes = db::execute(&batches)?.into_iter();
    let took = outcomes.next().is_some_and(|o| o.is_applied());
    let extended = outcomes.next().is_some_and(|o| o.is_applied());
    if took || extended {
        return Ok(LockInfo {
            lock_name: request.lock_name.clone(),
            owner: actor.to_owned(),
            expires_at: ctx.now.saturating_add(ttl),
        });
    }
    let owner = match outcomes.next() {
        Some(Outcome::Applied(mut replies)) => replies.take(owner)?,
        _ => None,
    };
    Err(lock_failure(match owner {
        Some(owner) => format!("lock {:?} is held by {owner:?}", request.lock_name),
        None => format!("lock {:?} was contended; try again", request.lock_name),
    }))
}

/// `lock:release`: frees a lock the actor holds. Releasing a free lock succeeds.
pub fn release_lock(ctx: &CallContext, request: &LockRequest) -> Result<(), Failure> {
    let mut request = request.clone();
    check_actor(request.actor.as_deref())?;
    request.actor = acting_user(ctx, request.actor.as_deref())?;
    let request = &request;
    let actor = validate_lock(request)?;
    let key = keys::lock_key(&request.channel, &request.lock_name);
    let mut free_mine = BatchBuilder::new();
    free_mine.guard(db::value_is(&key, Some(actor)));
    free_mine.op(db::del(&key));
    let mut read_owner = BatchBuilder::new();
    let owner = read_owner.read(db::get(&key));
    let mut outcomes = db::execute(&[free_mine.build(), read_owner.build()])?.into_iter();
    if outcomes.next().is_some_and(|o| o.is_applied()) {
        return Ok(());
    }
    let owner = match outcomes.next() {
        Some(Outcome::Applied(mut replies)) => replies.take(owner)?,
        _ => None,
    };
    match owner {
        None => Ok(()),
        Some(owner) => Err(lock_failure(format!(
            "lock {:?} is held by {owner:?}, not by {actor:?}",
            request.lock_name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::WriteOptions;

    fn item(key: &str, value: &str, revision: u64) -> MetadataItem {
        MetadataItem {
            key: key.into(),
            value: value.into(),
            revision,
            updated: None,
            author_uid: None,
        }
    }

    fn input(key: &str, value: Option<&str>, revision: Option<i64>) -> ItemInput {
        ItemInput {
            key: key.into(),
            value: value.map(str::to_owned),
            revision,
        }
    }

    fn request(items: Vec<ItemInput>) -> WriteRequest {
        WriteRequest {
            channel: Channel {
                channel_type: "room".into(),
                channel_name: "lobby".into(),
            },
            items,
            options: WriteOptions {
                major_revision: None,
                lock_name: None,
                add_timestamp: false,
                add_user_id: false,
            },
            actor: Some("ada".into()),
        }
    }

    fn stored(items: Vec<MetadataItem>, major: u64) -> Stored {
        Stored {
            major_text: Some(major.to_string()),
            major,
            items,
        }
    }

    /// `set` replaces everything, bumping revisions of kept keys and starting new ones at 1.
    #[test]
    fn set_replaces_the_item_set() {
        let current = stored(vec![item("topic", "old", 3), item("gone", "x", 1)], 4);
        let req = request(vec![
            input("topic", Some("new"), None),
            input("seat", Some("1"), None),
        ]);
        let plan = plan_set(&current, &req, 10).unwrap();
        assert_eq!(
            plan.next,
            vec![item("topic", "new", 4), item("seat", "1", 1)]
        );
        assert_eq!(plan.touched, plan.next);
    }

    /// Item revisions >= 0 must match (absent items are revision 0); negative means no check.
    #[test]
    fn item_revisions_are_checked() {
        let current = stored(vec![item("topic", "old", 3)], 4);
        let ok = request(vec![
            input("topic", Some("a"), Some(3)),
            input("new", Some("b"), Some(0)),
        ]);
        assert!(plan_set(&current, &ok, 0).is_ok());
        let skip = request(vec![input("topic", Some("a"), Some(-1))]);
        assert!(plan_set(&current, &skip, 0).is_ok());
        for bad in [
            request(vec![input("topic", Some("a"), Some(2))]),
            request(vec![input("new", Some("a"), Some(1))]),
        ] {
            let err = plan_set(&current, &bad, 0).unwrap_err();
            assert_eq!(err.code, ErrorCode::MetadataConflict);
        }
        let err =
            plan_update(&current, &request(vec![input("topic", None, Some(9))]), 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::MetadataConflict);
    }

    /// `options.majorRevision` >= 0 must match the channel's.
    #[test]
    fn major_revision_is_checked() {
        assert!(check_major(None, 4).is_ok());
        assert!(check_major(Some(-1), 4).is_ok());
        assert!(check_major(Some(4), 4).is_ok());
        assert_eq!(
            check_major(Some(3), 4).unwrap_err().code,
            ErrorCode::MetadataConflict
        );
    }

    /// `update` needs existing items, keeps other items and earlier stamps, and may keep the value.
    #[test]
    fn update_changes_given_items_only() {
        let mut stamped = item("topic", "old", 3);
        stamped.author_uid = Some("bob".into());
        let current = stored(vec![stamped, item("seat", "1", 1)], 4);
        let mut req = request(vec![
            input("topic", Some("new"), None),
            input("seat", None, None),
        ]);
        req.options.add_timestamp = true;
        let plan = plan_update(&current, &req, 77).unwrap();
        assert_eq!(plan.next[0].value, "new");
        assert_eq!(plan.next[0].revision, 4);
        assert_eq!(plan.next[0].updated, Some(77));
        assert_eq!(plan.next[0].author_uid.as_deref(), Some("bob"));
        assert_eq!(plan.next[1].value, "1");
        assert_eq!(plan.next[1].revision, 2);
        assert_eq!(plan.touched.len(), 2);
        let err =
            plan_update(&current, &request(vec![input("nope", Some("x"), None)]), 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::MetadataInvalid);
    }

    /// `addUserId` stamps the actor; without an actor nothing is stamped.
    #[test]
    fn add_user_id_stamps_the_actor() {
        let current = stored(Vec::new(), 0);
        let mut req = request(vec![input("topic", Some("x"), None)]);
        req.options.add_user_id = true;
        assert_eq!(
            plan_set(&current, &req, 0).unwrap().next[0]
                .author_uid
                .as_deref(),
            Some("ada")
        );
        req.actor = None;
        assert_eq!(
            plan_set(&current, &req, 0).unwrap().next[0].author_uid,
            None
        );
    }

    /// `remove` drops the given keys, or all; removing nothing is no write.
    #[test]
    fn remove_given_or_all() {
        let current = stored(vec![item("a", "1", 1), item("b", "2", 5)], 2);
        let plan = plan_remove(&current, &request(vec![input("b", None, Some(5))]))
            .unwrap()
            .unwrap();
        assert_eq!(plan.next, vec![item("a", "1", 1)]);
        assert_eq!(plan.touched, vec![item("b", "2", 5)]);
        let all = plan_remove(&current, &request(Vec::new()))
            .unwrap()
            .unwrap();
        assert!(all.next.is_empty());
        assert_eq!(all.touched.len(), 2);
        assert_eq!(
            plan_remove(&current, &request(vec![input("zz", None, None)])).unwrap(),
            None
        );
        let err = plan_remove(&current, &request(vec![input("a", None, Some(4))])).unwrap_err();
        assert_eq!(err.code, ErrorCode::MetadataConflict);
    }

    /// Malformed writes are METADATA_INVALID.
    #[test]
    fn write_validation() {
        let dup = request(vec![
            input("a", Some("1"), None),
            input("a", Some("2"), None),
        ]);
        assert_eq!(
            validate_write(&dup, MetadataOperation::Set)
                .unwrap_err()
                .code,
            ErrorCode::MetadataInvalid
        );
        let no_value = request(vec![input("a", None, None)]);
        assert!(validate_write(&no_value, MetadataOperation::Set).is_err());
        assert!(validate_write(&no_value, MetadataOperation::Update).is_ok());
        assert!(validate_write(&request(Vec::new()), MetadataOperation::Update).is_err());
        assert!(validate_write(&request(Vec::new()), MetadataOperation::Set).is_ok());
        let mut no_channel = request(Vec::new());
        no_channel.channel.channel_name.clear();
        assert!(validate_write(&no_channel, MetadataOperation::Remove).is_err());
    }

    /// Size limits count items and bytes of keys plus values.
    #[test]
    fn limits() {
        let settings = Settings {
            ttl_ms: 1,
            lookback_ms: 1,
            max_state_bytes: 1,
            max_room_members: 1,
            max_metadata_items: 2,
            max_metadata_bytes: 10,
            default_lock_ttl_ms: 1,
            max_lock_ttl_ms: 1,
            node_lease_ms: 1,
            max_snapshot_members: 1,
            max_message_bytes: 1024,
            message_history: 10,
            message_history_ttl_ms: 60_000,
            resume_grace_ms: 10_000,
            max_snapshot_bytes: 1,
        };
        assert!(check_limits(&[item("a", "1234", 1), item("b", "1234", 1)], &settings).is_ok());
        let three = [item("a", "", 1), item("b", "", 1), item("c", "", 1)];
        assert_eq!(
            check_limits(&three, &settings).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
        assert!(check_limits(&[item("a", "1234567890", 1)], &settings).is_err());
    }

    /// A lock-guarded write needs the lock held by the actor.
    #[test]
    fn lock_checks() {
        assert!(check_lock("edit", Some("ada"), Some("ada")).is_ok());
        for (owner, actor) in [
            (None, Some("ada")),
            (Some("bob"), Some("ada")),
            (Some("ada"), None),
        ] {
            assert_eq!(
                check_lock("edit", owner, actor).unwrap_err().code,
                ErrorCode::MetadataLock
            );
        }
    }

    /// Stored items round-trip, stamps included; a corrupt record is an internal failure.
    #[test]
    fn stored_round_trip() {
        let mut stamped = item("a", "1", 2);
        stamped.updated = Some(5);
        stamped.author_uid = Some("ada".into());
        let items = vec![stamped, item("b", "2", 1)];
        let decoded = Stored::decode(Some("3".into()), Some(encode(&items))).unwrap();
        assert_eq!(decoded.items, items);
        assert_eq!(decoded.major, 3);
        assert_eq!(Stored::decode(None, None).unwrap().major, 0);
        assert_eq!(
            Stored::decode(None, Some("{".into())).unwrap_err().code,
            ErrorCode::ComponentFailed
        );
    }
}
