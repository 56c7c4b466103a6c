//! Messages (DESIGN.md §8): a per-channel sequence with no gaps and no repeats, idempotent
//! publishing, and a bounded history for recovery.
//!
//! A channel is one sorted set ([`keys::log_key`]), so a publish is one atomic batch on one
//! hash tag (one round trip on Redis, one slot on a cluster):
//! - the member `#seq`, scored by the channel's latest seq (the counter);
//! - per message, its JSON (`{"id","sender","ts","payload"}`) and `id:<id>`, both scored by
//!   its seq. `zappend` bumps the counter and adds both at the new value, then trims what
//!   is older than the last `message-history` messages; a guard refuses the batch when
//!   `id:<id>` is already there (a retried publish), and a read in the same round trip
//!   says which seq that id got.
//!
//! History is read by score from `since + 1`; messages older than
//! `message-history-ttl-ms` are left out (from the oldest on, so what is returned is
//! always contiguous). The key expires [`IDLE_MS`] after the last publish (or the history
//! TTL when that is longer): a channel silent that long starts again at seq 1, and a
//! reader whose `since` is beyond the channel's seq gets `recovered: false`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bindings::roster::hub::events::Event;
use crate::db::{self, BatchBuilder, Outcome};
use crate::fail;
use crate::keys;
use crate::metadata::acting_user;
use crate::types::{
    CallContext, ErrorCode, Failure, HistoryRequest, MessageEvent, MessageHistory, PublishRequest,
    Published,
};

/// The counter's member.
const COUNTER: &str = "#seq";
/// The prefix of a message id's member.
const ID_PREFIX: &str = "id:";
/// Longest message id, in characters.
pub const MAX_MESSAGE_ID_CHARS: usize = 128;
/// How long a silent channel keeps its sequence: a day.
pub const IDLE_MS: u64 = 24 * 3_600_000;

/// A message as the log stores it (its seq is its score).
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    sender: Option<Cow<'a, str>>,
    ts: u64,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Checks a channel name: an id like any other (`INVALID_PAYLOAD`).
pub fn check_channel(channel: &str) -> Result<(), Failure> {
    fail::check_id(channel, "channel", ErrorCode::InvalidPayload)
}

fn check_message_id(id: &str) -> Result<(), Failure> {
    if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_CHARS {
        return Err(fail::invalid(format!(
            "id must be 1 to {MAX_MESSAGE_ID_CHARS} characters"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(fail::invalid("id must not contain control characters"));
    }
    Ok(())
}

/// The log key's lifetime.
fn key_ttl(ctx: &CallContext) -> u64 {
    IDLE_MS.max(ctx.settings.message_history_ttl_ms)
}

/// Appends a message (or, for an id already in history, returns its seq and publishes
/// nothing).
pub fn publish(ctx: &CallContext, request: PublishRequest) -> Result<Published, Failure> {
    check_channel(&request.channel)?;
    if let Some(id) = &request.id {
        check_message_id(id)?;
    }
    let limit = ctx.settings.max_message_bytes as usize;
    if request.payload.len() > limit {
        return Err(fail::too_large(format!(
            "the payload is {} bytes; the limit is {limit}",
            request.payload.len()
        )));
    }
    let payload: &RawValue = serde_json::from_str(&request.payload)
        .map_err(|error| fail::invalid(format!("payload is not JSON: {error}")))?;
    let sender = acting_user(ctx, request.actor.as_deref())?;
    let id = request
        .id
        .clone()
        .unwrap_or_else(|| format!("{:016x}", request.nonce));
    let stored = serde_json::to_string(&Stored {
        id: Cow::Borrowed(&id),
        sender: sender.as_deref().map(Cow::Borrowed),
        ts: ctx.now,
        payload,
    })
    .map_err(|error| fail::internal(format!("cannot encode the message: {error}")))?;
    let log = keys::log_key(&request.channel);
    let id_member = format!("{ID_PREFIX}{id}");

    let mut append = BatchBuilder::new();
    // Absent, or scored below the lowest score there is: absent.
    append.guard(db::score_absent_or_below(&log, &id_member, i64::MIN));
    let seq = append.read(db::zappend(
        &log,
        COUNTER,
        vec![stored, id_member.clone()],
        ctx.settings.message_history,
    ));
    append.op(db::pexpire(&log, key_ttl(ctx)));
    let mut earlier = BatchBuilder::new();
    let existing = earlier.read(db::zscore(&log, &id_member));
    let mut outcomes = db::execute(&[append.build(), earlier.build()])?.into_iter();
    let (Some(appended), Some(read)) = (outcomes.next(), outcomes.next()) else {
        return Err(fail::internal("the store answered fewer batches than sent"));
    };
    match appended {
        Outcome::Applied(mut applied) => {
            let seq = u64::try_from(applied.take(seq)?).unwrap_or_default();
            crate::host::publish(&Event::Message(MessageEvent {
                channel: request.channel.clone(),
                seq,
                id: id.clone(),
                sender,
                payload: request.payload,
                ts: ctx.now,
            }));
            Ok(Published {
                channel: request.channel,
                seq,
                id,
                duplicate: false,
            })
        }
        Outcome::Refused(_) => {
            let seq = read.unguarded()?.take(existing)?.ok_or_else(|| {
                fail::internal("a duplicate id vanished from the channel's history")
            })?;
            Ok(Published {
                channel: request.channel,
                seq: u64::try_from(seq).unwrap_or_default(),
                id,
                duplicate: true,
            })
        }
    }
}

/// The channel's latest seq and its history after `since`.
pub fn history(ctx: &CallContext, request: &HistoryRequest) -> Result<MessageHistory, Failure> {
    check_channel(&request.channel)?;
    let log = keys::log_key(&request.channel);
    let since = request.since.unwrap_or(0);
    let from = i64::try_from(since.saturating_add(1)).unwrap_or(i64::MAX);
    let mut batch = BatchBuilder::new();
    let latest = batch.read(db::zscore(&log, COUNTER));
    // Two members per message, and the counter among them.
    let window = ctx
        .settings
        .message_history
        .max(1)
        .saturating_mul(2)
        .saturating_add(1);
    let entries = batch.read(db::zrange_with_scores(&log, from, i64::MAX, window));
    let mut applied = db::execute_read(batch.build())?;
    let seq = u64::try_from(applied.take(latest)?.unwrap_or(0)).unwrap_or_default();
    let oldest_kept = ctx.now.saturating_sub(ctx.settings.message_history_ttl_ms);
    let mut messages = Vec::new();
    for (member, score) in applied.take(entries)? {
        if !member.starts_with('{') {
            continue;
        }
        let stored: Stored<'_> = serde_json::from_str(&member)
            .map_err(|error| fail::internal(format!("a stored message is not JSON: {error}")))?;
        // History keeps at most the TTL: drop the expired oldest messages (only a prefix,
        // so what is returned stays contiguous).
        if messages.is_empty() && stored.ts < oldest_kept {
            continue;
        }
        let seq = score
            .parse::<u64>()
            .map_err(|_| fail::internal(format!("a message's seq {score:?} is not a number")))?;
        messages.push(MessageEvent {
            channel: request.channel.clone(),
            seq,
            id: stored.id.into_owned(),
            sender: stored.sender.map(Cow::into_owned),
            payload: stored.payload.get().to_owned(),
            ts: stored.ts,
        });
    }
    let recovered = match messages.first() {
        _ if since == seq => true,
        _ if since > seq => false,
        Some(first) => first.seq == since + 1,
        None => false,
    };
    Ok(MessageHistory {
        channel: request.channel.clone(),
        seq,
        recovered,
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_bounded() {
        assert!(check_message_id("a").is_ok());
        assert!(check_message_id(&"é".repeat(128)).is_ok());
        assert!(check_message_id(&"x".repeat(129)).is_err());
        assert!(check_message_id("").is_err());
        assert!(check_message_id("a\u{7}").is_err());
    }

    #[test]
    fn stored_messages_round_trip() {
        let payload: &RawValue = serde_json::from_str(r#"{"text":"hi","n":[1,2]}"#).unwrap();
        let text = serde_json::to_string(&Stored {
            id: Cow::Borrowed("m\"1"),
            sender: Some(Cow::Borrowed("ada")),
            ts: 7,
            payload,
        })
        .unwrap();
        assert!(text.starts_with('{'));
        let back: Stored<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.id.as_ref(), back.sender.as_deref(), back.ts),
            ("m\"1", Some("ada"), 7)
        );
        assert_eq!(back.payload.get(), r#"{"text":"hi","n":[1,2]}"#);
    }
}
