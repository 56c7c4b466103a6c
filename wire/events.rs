//! Pushed events: `presence:event`, `metadata:event` and `message` serialised once for
//! every recipient, and the envelope that carries them between nodes over Redis Pub/Sub
//! (key layout version 1, docs/redis-keys.md).
//!
//! Compiled into the host (fan-out and the Redis feed) and into the Spin adapter (which
//! publishes what the components announce to the same channels), against `crate::wit` as
//! `json.rs` explains, and mounted beside `json.rs`, whose items it reaches as `super::`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ItemView, MessageView, empty_object, raw_json};
use crate::wit::events::Event;
use crate::wit::types::{MetadataOperation, PresenceChange};

/// The name of the event pushed for presence changes.
pub const PRESENCE_EVENT: &str = "presence:event";
/// The name of the event pushed after metadata writes.
pub const METADATA_EVENT: &str = "metadata:event";
/// The name of the event pushed for a published message.
pub const MESSAGE_EVENT: &str = "message";
/// Pushed to a room's sockets when their node may have missed some of the room's events
/// (its link to the other nodes was down): re-read the snapshot.
pub const RESYNC_EVENT: &str = "presence:resync";
/// Pushed to a socket whose connection the store lost (Redis came back empty): join again.
pub const LOST_EVENT: &str = "presence:lost";
/// Pushed to a channel's subscribers when the store lost its history and sequence: seq
/// starts again at 1.
pub const RESET_EVENT: &str = "message:reset";

/// An event ready for fan-out: serialised once, shared by every recipient.
#[derive(Debug)]
pub struct Published {
    /// The room whose members get it; for a message, its channel.
    pub room_id: String,
    /// The event name.
    pub name: &'static str,
    /// The payload JSON.
    pub data: Box<RawValue>,
    /// The connection this event says left, so the bus can unbind its socket.
    pub leave_of: Option<String>,
    /// A message's seq in its channel (none for room events): what orders delivery.
    pub seq: Option<u64>,
    /// When it was made here, for the fan-out delay histogram (the node's monotonic
    /// clock; never sent, never compared across processes).
    pub created: std::time::Instant,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PresenceEventView<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room_id: &'a str,
    user_id: &'a str,
    conn_id: &'a str,
    state: Box<RawValue>,
    ts: u64,
    epoch: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetadataEventView<'a> {
    operation: &'static str,
    channel_name: &'a str,
    channel_type: &'a str,
    items: Vec<ItemView>,
    major_revision: u64,
}

impl Published {
    /// Serialises a component's event.
    pub fn from_event(event: Event) -> Published {
        match event {
            Event::Presence(event) => {
                let kind = match event.change {
                    PresenceChange::Join => "join",
                    PresenceChange::Update => "update",
                    PresenceChange::Leave => "leave",
                };
                let view = PresenceEventView {
                    kind,
                    room_id: &event.room_id,
                    user_id: &event.user_id,
                    conn_id: &event.conn_id,
                    state: raw_json(event.state),
                    ts: event.ts,
                    epoch: event.epoch,
                };
                let data = to_raw(&view);
                let leave_of =
                    (event.change == PresenceChange::Leave).then(|| event.conn_id.clone());
                Published {
                    room_id: event.room_id,
                    name: PRESENCE_EVENT,
                    data,
                    leave_of,
                    seq: None,
                    created: std::time::Instant::now(),
                }
            }
            Event::Metadata(event) => {
                let operation = match event.operation {
                    MetadataOperation::Set => "set",
                    MetadataOperation::Update => "update",
                    MetadataOperation::Remove => "remove",
                };
                let view = MetadataEventView {
                    operation,
                    channel_name: &event.channel.channel_name,
                    channel_type: &event.channel.channel_type,
                    items: event.items.into_iter().map(ItemView::from).collect(),
                    major_revision: event.major_revision,
                };
                let data = to_raw(&view);
                Published {
                    room_id: event.channel.channel_name,
                    name: METADATA_EVENT,
                    data,
                    leave_of: None,
                    seq: None,
                    created: std::time::Instant::now(),
                }
            }
            Event::Message(message) => {
                let (channel, seq) = (message.channel.clone(), message.seq);
                Published {
                    room_id: channel,
                    name: MESSAGE_EVENT,
                    data: to_raw(&MessageView::from(message)),
                    leave_of: None,
                    seq: Some(seq),
                    created: std::time::Instant::now(),
                }
            }
        }
    }

    /// An event the host itself announces (`presence:resync`, `presence:lost`,
    /// `message:reset`) about `room_id` (or channel), with `data`.
    pub fn notice(name: &'static str, room_id: &str, data: &impl Serialize) -> Published {
        Published {
            room_id: room_id.to_owned(),
            name,
            data: to_raw(data),
            leave_of: None,
            seq: None,
            created: std::time::Instant::now(),
        }
    }

    /// Whether this is a message (for a channel's subscribers) rather than a room event.
    pub fn is_message(&self) -> bool {
        self.seq.is_some()
    }

    /// The Pub/Sub channel it travels on between nodes.
    pub fn topic(&self) -> String {
        if self.is_message() {
            message_channel(&self.room_id)
        } else {
            channel(&self.room_id)
        }
    }

    /// The `/ws` push frame: `{"event": name, "data": {...}}`.
    pub fn ws_frame(&self) -> String {
        format!(r#"{{"event":"{}","data":{}}}"#, self.name, self.data.get())
    }
}

fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_object())
}

/// The channel of a room's events (layout version 1).
pub fn channel(room_id: &str) -> String {
    format!("roster:v1:events:{room_id}")
}

/// The channel of a message channel's messages (layout version 1).
pub fn message_channel(channel: &str) -> String {
    format!("roster:v1:messages:{channel}")
}

/// What travels on a room's channel (layout version 1). Strings borrow from the message
/// when they hold no escapes.
#[derive(Serialize, Deserialize)]
pub struct Envelope<'a> {
    /// The envelope format.
    pub v: u32,
    /// The publishing node: receivers skip their own.
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    /// The room whose members get it.
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    /// `presence:event`, `metadata:event` or `message`.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// For a presence `leave`, the connection that left.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub leave: Option<Cow<'a, str>>,
    /// For a `message`, its seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The event's payload, as clients receive it.
    #[serde(borrow)]
    pub data: &'a RawValue,
}

impl Published {
    /// The envelope of this event from `node`, as published on [`channel`]`(room_id)`.
    pub fn envelope(&self, node: &str) -> Option<String> {
        serde_json::to_string(&Envelope {
            v: 1,
            node: Cow::Borrowed(node),
            room: Cow::Borrowed(&self.room_id),
            name: Cow::Borrowed(self.name),
            leave: self.leave_of.as_deref().map(Cow::Borrowed),
            seq: self.seq,
            data: &self.data,
        })
        .ok()
    }
}
