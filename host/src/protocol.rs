//! The wire protocol's JSON (DESIGN.md §2): request payloads, acks, pushed events, error
//! codes. Every transport decodes and encodes through here, so `/ws`, `/v1` and later
//! Socket.IO put the same bytes on the wire.
//!
//! Decoding checks types only (a `roomId` must be a string); what the values must be is
//! the components' business. A payload of the wrong shape is `INVALID_PAYLOAD` for presence
//! events and `METADATA_INVALID` for metadata and lock events, with the offending field named.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::runtime::bindings::events::Event;
use crate::runtime::bindings::types::{
    self, ChannelState, Conn, ErrorCode, Failure, LockInfo, MetadataItem, MetadataOperation,
    PresenceChange,
};

/// The stable spelling of an error code.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
        ErrorCode::UnknownConnection => "UNKNOWN_CONNECTION",
        ErrorCode::StaleEpoch => "STALE_EPOCH",
        ErrorCode::Unauthorized => "UNAUTHORIZED",
        ErrorCode::Forbidden => "FORBIDDEN",
        ErrorCode::RateLimited => "RATE_LIMITED",
        ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
        ErrorCode::StoreUnavailable => "STORE_UNAVAILABLE",
        ErrorCode::ComponentFailed => "COMPONENT_FAILED",
        ErrorCode::MetadataConflict => "METADATA_CONFLICT",
        ErrorCode::MetadataLock => "METADATA_LOCK",
        ErrorCode::MetadataInvalid => "METADATA_INVALID",
    }
}

/// A refused request, as every transport reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        ApiError::new(failure.code, failure.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

impl Serialize for ApiError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            ok: bool,
            error: Detail<'a>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'static str,
            message: &'a str,
        }
        Body {
            ok: false,
            error: Detail {
                code: code_name(self.code),
                message: &self.message,
            },
        }
        .serialize(serializer)
    }
}

/// Which error code a malformed payload of an event gets.
pub fn invalid_code(event: &str) -> ErrorCode {
    if event.starts_with("metadata:") || event.starts_with("lock:") {
        ErrorCode::MetadataInvalid
    } else {
        ErrorCode::InvalidPayload
    }
}

/// Decodes an event's `data` as `T`. A missing `data` decodes like `{}`, so the message
/// names the first required field.
pub fn decode<T: DeserializeOwned>(
    data: Option<&RawValue>,
    code: ErrorCode,
) -> Result<T, ApiError> {
    let text = data.map_or("{}", RawValue::get);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let what = if inner.is_data() || inner.is_syntax() || inner.is_eof() {
            strip_position(&inner.to_string())
        } else {
            inner.to_string()
        };
        let message = if path == "." {
            format!("data: {what}")
        } else {
            format!("data.{path}: {what}")
        };
        ApiError::new(code, message)
    })
}

/// serde_json's messages end in " at line 1 column 12", which means nothing to a client
/// that sent an object; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// `presence:join` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinData {
    /// The room.
    pub room_id: String,
    /// The user.
    pub user_id: String,
    /// The initial state, any JSON (the component checks it is an object).
    #[serde(default)]
    pub state: Option<Box<RawValue>>,
}

/// `presence:heartbeat` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatData {
    /// The connection.
    pub conn_id: String,
    /// Fences stale writers.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Merged into the state.
    #[serde(default)]
    pub patch_state: Option<Box<RawValue>>,
}

/// `metadata:get` data, and the channel part of the others.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelData {
    /// The channel type.
    pub channel_type: String,
    /// The channel name (= the room its events go to).
    pub channel_name: String,
}

/// An item of a metadata write.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemData {
    /// The key.
    pub key: String,
    /// The value; metadata values are strings.
    #[serde(default)]
    pub value: Option<String>,
    /// The expected current revision.
    #[serde(default)]
    pub revision: Option<i64>,
}

/// `options` of a metadata write.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionsData {
    /// The expected major revision.
    #[serde(default)]
    pub major_revision: Option<i64>,
    /// A lock the actor must hold.
    #[serde(default)]
    pub lock_name: Option<String>,
    /// Stamp `updated`.
    #[serde(default)]
    pub add_timestamp: Option<bool>,
    /// Stamp `authorUid`.
    #[serde(default)]
    pub add_user_id: Option<bool>,
}

/// `metadata:set`, `metadata:update`, `metadata:remove` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteData {
    /// The channel type.
    pub channel_type: String,
    /// The channel name.
    pub channel_name: String,
    /// The items.
    #[serde(default)]
    pub items: Option<Vec<ItemData>>,
    /// The options.
    #[serde(default)]
    pub options: Option<OptionsData>,
    /// The acting user (HTTP API only; sockets act as the user they joined as).
    #[serde(default)]
    pub actor_user_id: Option<String>,
}

/// `lock:acquire` and `lock:release` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockData {
    /// The channel type.
    pub channel_type: String,
    /// The channel name.
    pub channel_name: String,
    /// The lock.
    pub lock_name: String,
    /// The lock's lifetime (acquire).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The acting user (HTTP API only).
    #[serde(default)]
    pub actor_user_id: Option<String>,
}

impl ChannelData {
    /// The WIT channel.
    pub fn into_channel(self) -> types::Channel {
        types::Channel {
            channel_type: self.channel_type,
            channel_name: self.channel_name,
        }
    }
}

impl WriteData {
    /// The WIT request, acting as `actor`.
    pub fn into_request(self, actor: Option<String>) -> types::WriteRequest {
        let options = self.options.unwrap_or_default();
        types::WriteRequest {
            channel: types::Channel {
                channel_type: self.channel_type,
                channel_name: self.channel_name,
            },
            items: self
                .items
                .unwrap_or_default()
                .into_iter()
                .map(|item| types::ItemInput {
                    key: item.key,
                    value: item.value,
                    revision: item.revision,
                })
                .collect(),
            options: types::WriteOptions {
                major_revision: options.major_revision,
                lock_name: options.lock_name,
                add_timestamp: options.add_timestamp.unwrap_or(false),
                add_user_id: options.add_user_id.unwrap_or(false),
            },
            actor,
        }
    }
}

impl LockData {
    /// The WIT request, acting as `actor`.
    pub fn into_request(self, actor: Option<String>) -> types::LockRequest {
        types::LockRequest {
            channel: types::Channel {
                channel_type: self.channel_type,
                channel_name: self.channel_name,
            },
            lock_name: self.lock_name,
            ttl_ms: self.ttl_ms,
            actor,
        }
    }
}

/// JSON text from a component as a raw value. Components are sandboxed, not trusted: text
/// that is not JSON is logged and replaced by `{}` rather than put on the wire.
pub fn raw_json(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|error| {
        tracing::warn!(%error, "a component returned a state that is not JSON; sending {{}}");
        empty_object()
    })
}

fn empty_object() -> Box<RawValue> {
    // "{}" is valid JSON; the fallback only exists to avoid an unwrap.
    RawValue::from_string(String::from("{}")).unwrap_or_else(|_| Box::<RawValue>::default())
}

/// A connection in a snapshot.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnView {
    conn_id: String,
    user_id: String,
    state: Box<RawValue>,
    epoch: u64,
    last_seen: u64,
}

impl From<Conn> for ConnView {
    fn from(conn: Conn) -> Self {
        ConnView {
            conn_id: conn.conn_id,
            user_id: conn.user_id,
            state: raw_json(conn.state),
            epoch: conn.epoch,
            last_seen: conn.last_seen,
        }
    }
}

/// `self` in a join ack.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfView {
    /// The new connection.
    pub conn_id: String,
    /// Its epoch.
    pub epoch: u64,
}

/// A metadata item on the wire.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemView {
    key: String,
    value: String,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author_uid: Option<String>,
}

impl From<MetadataItem> for ItemView {
    fn from(item: MetadataItem) -> Self {
        ItemView {
            key: item.key,
            value: item.value,
            revision: item.revision,
            updated: item.updated,
            author_uid: item.author_uid,
        }
    }
}

/// Every successful ack. Serialised with `ok: true` first, then the fields of its kind.
#[derive(Debug)]
pub enum Ack {
    /// `presence:join`.
    Joined {
        /// The room, self included.
        snapshot: Vec<ConnView>,
        /// The new connection.
        me: SelfView,
    },
    /// `presence:heartbeat`.
    Heartbeat {
        /// Whether the patch changed the state.
        changed: bool,
    },
    /// An operation with nothing to report.
    Done,
    /// A room snapshot (HTTP API).
    Snapshot(Vec<ConnView>),
    /// Every metadata operation: the channel after it.
    Channel {
        /// The items.
        items: Vec<ItemView>,
        /// The major revision.
        major_revision: u64,
    },
    /// `lock:acquire`.
    Lock {
        /// The lock.
        lock_name: String,
        /// Its holder.
        owner: String,
        /// When it expires (ms).
        expires_at: u64,
    },
}

impl Ack {
    /// The ack of a join.
    pub fn joined(joined: types::Joined) -> Ack {
        Ack::Joined {
            snapshot: joined.snapshot.into_iter().map(ConnView::from).collect(),
            me: SelfView {
                conn_id: joined.conn_id,
                epoch: joined.epoch,
            },
        }
    }

    /// The ack of a metadata operation.
    pub fn channel(state: ChannelState) -> Ack {
        Ack::Channel {
            items: state.items.into_iter().map(ItemView::from).collect(),
            major_revision: state.major_revision,
        }
    }

    /// The ack of a lock acquisition.
    pub fn lock(info: LockInfo) -> Ack {
        Ack::Lock {
            lock_name: info.lock_name,
            owner: info.owner,
            expires_at: info.expires_at,
        }
    }
}

impl Serialize for Ack {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("ok", &true)?;
        match self {
            Ack::Joined { snapshot, me } => {
                map.serialize_entry("snapshot", snapshot)?;
                map.serialize_entry("self", me)?;
            }
            Ack::Heartbeat { changed } => map.serialize_entry("changed", changed)?,
            Ack::Done => {}
            Ack::Snapshot(snapshot) => map.serialize_entry("snapshot", snapshot)?,
            Ack::Channel {
                items,
                major_revision,
            } => {
                map.serialize_entry("items", items)?;
                map.serialize_entry("majorRevision", major_revision)?;
            }
            Ack::Lock {
                lock_name,
                owner,
                expires_at,
            } => {
                map.serialize_entry("lockName", lock_name)?;
                map.serialize_entry("owner", owner)?;
                map.serialize_entry("expiresAt", expires_at)?;
            }
        }
        map.end()
    }
}

/// What a request produced: an ack or an error, serialised as the protocol says.
pub type Reply = Result<Ack, ApiError>;

/// Serialises a reply.
pub fn reply_json(reply: &Reply) -> String {
    let result = match reply {
        Ok(ack) => serde_json::to_string(ack),
        Err(error) => serde_json::to_string(error),
    };
    result.unwrap_or_else(|_| {
        String::from(
            r#"{"ok":false,"error":{"code":"COMPONENT_FAILED","message":"the reply could not be encoded"}}"#,
        )
    })
}

/// The name of the event pushed for presence changes.
pub const PRESENCE_EVENT: &str = "presence:event";
/// The name of the event pushed after metadata writes.
pub const METADATA_EVENT: &str = "metadata:event";

/// An event ready for fan-out: serialised once, shared by every recipient.
#[derive(Debug)]
pub struct Published {
    /// The room whose members get it.
    pub room_id: String,
    /// The event name.
    pub name: &'static str,
    /// The payload JSON.
    pub data: Box<RawValue>,
    /// The connection this event says left, so the bus can unbind its socket.
    pub leave_of: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PresenceEventView<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room_id: &'a str,
    user_id: &'a str,
    conn_id: &'a str,
    state: Option<Box<RawValue>>,
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
                    state: event.state.map(raw_json),
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
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    /// Wrong types name the field; missing data names the first required field.
    #[test]
    fn decode_errors_name_the_field() {
        let err = decode::<JoinData>(
            Some(&raw(r#"{"roomId":5,"userId":"u"}"#)),
            ErrorCode::InvalidPayload,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        assert!(
            err.message
                .starts_with("data.roomId: invalid type: integer `5`"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("line 1"), "{}", err.message);
        let err = decode::<JoinData>(None, ErrorCode::InvalidPayload).unwrap_err();
        assert!(
            err.message.contains("missing field `roomId`"),
            "{}",
            err.message
        );
        let err = decode::<WriteData>(
            Some(&raw(
                r#"{"channelType":"t","channelName":"n","items":[{"key":"k","value":1}]}"#,
            )),
            ErrorCode::MetadataInvalid,
        )
        .unwrap_err();
        assert!(
            err.message.starts_with("data.items[0].value:"),
            "{}",
            err.message
        );
        let err = decode::<HeartbeatData>(
            Some(&raw(r#"{"connId":"c","epoch":-1}"#)),
            ErrorCode::InvalidPayload,
        )
        .unwrap_err();
        assert!(err.message.starts_with("data.epoch:"), "{}", err.message);
    }

    /// `null` optional fields read as absent; extra fields are ignored.
    #[test]
    fn nulls_and_extra_fields() {
        let data = decode::<HeartbeatData>(
            Some(&raw(
                r#"{"connId":"c","epoch":null,"patchState":null,"extra":1}"#,
            )),
            ErrorCode::InvalidPayload,
        )
        .unwrap();
        assert!(data.epoch.is_none() && data.patch_state.is_none());
    }

    /// Acks and errors serialise exactly as the protocol shows them.
    #[test]
    fn ack_shapes() {
        assert_eq!(
            reply_json(&Ok(Ack::Heartbeat { changed: true })),
            r#"{"ok":true,"changed":true}"#
        );
        assert_eq!(reply_json(&Ok(Ack::Done)), r#"{"ok":true}"#);
        let joined = Ack::joined(types::Joined {
            conn_id: "c1".into(),
            epoch: 7,
            snapshot: vec![Conn {
                conn_id: "c1".into(),
                user_id: "u".into(),
                state: r#"{"a":1}"#.into(),
                epoch: 7,
                last_seen: 9,
            }],
        });
        assert_eq!(
            reply_json(&Ok(joined)),
            r#"{"ok":true,"snapshot":[{"connId":"c1","userId":"u","state":{"a":1},"epoch":7,"lastSeen":9}],"self":{"connId":"c1","epoch":7}}"#
        );
        let error = ApiError::new(ErrorCode::StaleEpoch, "old");
        assert_eq!(
            reply_json(&Err(error)),
            r#"{"ok":false,"error":{"code":"STALE_EPOCH","message":"old"}}"#
        );
    }

    /// Events serialise once with the protocol's field names; leave carries `state: null`.
    #[test]
    fn event_shapes() {
        let published = Published::from_event(Event::Presence(types::PresenceEvent {
            change: PresenceChange::Leave,
            room_id: "r".into(),
            user_id: "u".into(),
            conn_id: "c".into(),
            state: None,
            ts: 5,
            epoch: 6,
        }));
        assert_eq!(published.leave_of.as_deref(), Some("c"));
        assert_eq!(
            published.ws_frame(),
            r#"{"event":"presence:event","data":{"type":"leave","roomId":"r","userId":"u","connId":"c","state":null,"ts":5,"epoch":6}}"#
        );
        let published = Published::from_event(Event::Metadata(types::MetadataEvent {
            operation: MetadataOperation::Update,
            channel: types::Channel {
                channel_type: "t".into(),
                channel_name: "r".into(),
            },
            items: vec![MetadataItem {
                key: "k".into(),
                value: "v".into(),
                revision: 2,
                updated: None,
                author_uid: Some("u".into()),
            }],
            major_revision: 3,
        }));
        assert_eq!(published.room_id, "r");
        assert_eq!(
            published.data.get(),
            r#"{"operation":"update","channelName":"r","channelType":"t","items":[{"key":"k","value":"v","revision":2,"authorUid":"u"}],"majorRevision":3}"#
        );
    }
}
