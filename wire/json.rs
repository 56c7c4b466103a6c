//! The wire protocol's JSON (DESIGN.md §2): request payloads, acks, error codes, and the
//! HTTP API's bodies and statuses. Every transport decodes and encodes through here, so
//! `/ws`, `/v1`, Socket.IO and the Spin gateway put the same bytes on the wire.
//!
//! This file is compiled into two worlds: the host (against wasmtime's bindings of `wit/`)
//! and the Spin gateway (against wit-bindgen's). Both generators give the WIT types the same
//! Rust names, and each crate mounts them at `crate::wit`; the file names nothing else of
//! its crate.
//!
//! Decoding checks types only (a `roomId` must be a string); what the values must be is
//! the components' business. A payload of the wrong shape is `INVALID_PAYLOAD` for presence
//! events and `METADATA_INVALID` for metadata and lock events, with the offending field named.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::wit::types::{
    self, ChannelState, Conn, ErrorCode, Failure, LockInfo, MetadataItem, Occupancy, TickReport,
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

/// Decodes an event's `data` as `T`. A missing `data` decodes like `{}`, so the message
/// names the first required field. Every payload is a JSON object: an array is refused
/// (serde would otherwise read `["u", {}]` as a struct's fields in order).
pub fn decode<T: DeserializeOwned>(
    data: Option<&RawValue>,
    code: ErrorCode,
) -> Result<T, ApiError> {
    let text = data.map_or("{}", RawValue::get);
    let kind = json_kind(text);
    if kind != "an object" {
        return Err(ApiError::new(
            code,
            format!("data must be a JSON object, not {kind}"),
        ));
    }
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

/// What kind of JSON value `text` (valid JSON) holds, for messages.
pub fn json_kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(_) => "a number",
        None => "nothing",
    }
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
    /// The user; may be omitted with a token (it is the token's `sub`).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The initial state, any JSON (the component checks it is an object).
    #[serde(default)]
    pub state: Option<Box<RawValue>>,
}

/// `presence:resume` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeData {
    /// The connection.
    pub conn_id: String,
    /// Its resume token (from the join ack).
    pub resume_token: String,
    /// At least the connection's epoch.
    #[serde(default)]
    pub epoch: Option<u64>,
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

/// `presence:snapshot` data (and the query of `GET /v1/rooms/{roomId}/connections`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotData {
    /// The room.
    pub room_id: String,
    /// Start after this connection id (a previous page's `cursor`).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Most connections in the page.
    #[serde(default)]
    pub limit: Option<u32>,
}

impl SnapshotData {
    /// The WIT request.
    pub fn into_request(self) -> types::SnapshotRequest {
        types::SnapshotRequest {
            room_id: self.room_id,
            cursor: self.cursor,
            limit: self.limit,
        }
    }
}

/// `presence:count` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomData {
    /// The room.
    pub room_id: String,
}

/// `message:subscribe` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeData {
    /// The channel.
    pub channel: String,
    /// The last seq the client saw: the ack then carries what came after.
    #[serde(default)]
    pub since: Option<u64>,
}

/// `message:unsubscribe` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsubscribeData {
    /// The channel.
    pub channel: String,
}

/// `message:publish` data.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishData {
    /// The channel.
    pub channel: String,
    /// Any JSON value (`null` included); required.
    pub payload: Box<RawValue>,
    /// The idempotency key.
    #[serde(default)]
    pub id: Option<String>,
}

/// `POST /v1/channels/{channel}/messages` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishBody {
    /// Any JSON value (`null` included); required.
    pub payload: Box<RawValue>,
    /// The idempotency key.
    #[serde(default)]
    pub id: Option<String>,
}

/// A message as clients get it (`message` pushes, history).
#[derive(Debug, Serialize)]
pub struct MessageView {
    channel: String,
    seq: u64,
    id: String,
    from: Option<String>,
    payload: Box<RawValue>,
    ts: u64,
}

impl From<types::MessageEvent> for MessageView {
    fn from(message: types::MessageEvent) -> MessageView {
        MessageView {
            channel: message.channel,
            seq: message.seq,
            id: message.id,
            from: message.sender,
            payload: raw_json(message.payload),
            ts: message.ts,
        }
    }
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

/// `{}`.
pub fn empty_object() -> Box<RawValue> {
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
    /// The secret that lets a new socket resume it (`presence:resume`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
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
        /// The room, self included (its first page when the room is large).
        snapshot: Vec<ConnView>,
        /// The new connection.
        me: SelfView,
        /// When the snapshot is partial: where the next page starts (`presence:snapshot`).
        cursor: Option<String>,
    },
    /// `presence:heartbeat`.
    Heartbeat {
        /// Whether the patch changed the state.
        changed: bool,
    },
    /// An operation with nothing to report.
    Done,
    /// A reaper tick (HTTP API): what it removed.
    Tick(TickReport),
    /// A page of a room's snapshot.
    Snapshot {
        /// The connections.
        snapshot: Vec<ConnView>,
        /// Where the next page starts, when there is one.
        cursor: Option<String>,
    },
    /// `presence:count`: a room's size.
    Count {
        /// The room.
        room_id: String,
        /// Its connections and distinct users.
        occupancy: Occupancy,
    },
    /// Every metadata operation: the channel after it.
    Channel {
        /// The items.
        items: Vec<ItemView>,
        /// The major revision.
        major_revision: u64,
    },
    /// `auth:refresh`: when the new token expires (ms; none in open mode).
    Refreshed {
        /// The new token's `exp`, in ms.
        expires_at: Option<u64>,
    },
    /// `message:publish`: the message's place in its channel.
    Published {
        /// The channel.
        channel: String,
        /// Its seq.
        seq: u64,
        /// Its id.
        id: String,
    },
    /// `message:subscribe` (without `history`: a socket's ack, which carries messages only
    /// when asked `since`) and the HTTP history read (always with them).
    Subscribed {
        /// The channel.
        channel: String,
        /// Its latest seq.
        seq: u64,
        /// With `since`: whether nothing was missed, and what came after it (each message
        /// as its JSON, as pushed).
        history: Option<(bool, Vec<Box<RawValue>>)>,
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
    /// The ack of a join, with the connection's resume token.
    pub fn joined(joined: types::Joined, resume_token: String) -> Ack {
        Ack::Joined {
            snapshot: joined.snapshot.into_iter().map(ConnView::from).collect(),
            me: SelfView {
                conn_id: joined.conn_id,
                epoch: joined.epoch,
                resume_token: Some(resume_token),
            },
            cursor: joined.next,
        }
    }

    /// The ack of a resume: the connection as it is and its room's first page.
    pub fn resumed(
        resumed: types::Resumed,
        resume_token: String,
        page: types::SnapshotPage,
    ) -> Ack {
        Ack::Joined {
            snapshot: page.conns.into_iter().map(ConnView::from).collect(),
            me: SelfView {
                conn_id: resumed.conn_id,
                epoch: resumed.epoch,
                resume_token: Some(resume_token),
            },
            cursor: page.next,
        }
    }

    /// The ack of a snapshot page.
    pub fn snapshot(page: types::SnapshotPage) -> Ack {
        Ack::Snapshot {
            snapshot: page.conns.into_iter().map(ConnView::from).collect(),
            cursor: page.next,
        }
    }

    /// The ack of a metadata operation.
    pub fn channel(state: ChannelState) -> Ack {
        Ack::Channel {
            items: state.items.into_iter().map(ItemView::from).collect(),
            major_revision: state.major_revision,
        }
    }

    /// The ack of a history read; `with_messages` says whether it carries them (a
    /// subscription asked with `since`, or the HTTP read).
    pub fn history(history: types::MessageHistory, with_messages: bool) -> Ack {
        Ack::Subscribed {
            channel: history.channel,
            seq: history.seq,
            history: with_messages.then(|| {
                (
                    history.recovered,
                    history
                        .messages
                        .into_iter()
                        .map(|message| {
                            serde_json::value::to_raw_value(&MessageView::from(message))
                                .unwrap_or_else(|_| empty_object())
                        })
                        .collect(),
                )
            }),
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
            Ack::Joined {
                snapshot,
                me,
                cursor,
            } => {
                map.serialize_entry("snapshot", snapshot)?;
                map.serialize_entry("self", me)?;
                if let Some(cursor) = cursor {
                    map.serialize_entry("partial", &true)?;
                    map.serialize_entry("cursor", cursor)?;
                }
            }
            Ack::Heartbeat { changed } => map.serialize_entry("changed", changed)?,
            Ack::Done => {}
            Ack::Tick(report) => {
                map.serialize_entry("reaped", &report.reaped)?;
                map.serialize_entry("orphans", &report.orphans)?;
                map.serialize_entry("more", &report.more)?;
            }
            Ack::Snapshot { snapshot, cursor } => {
                map.serialize_entry("snapshot", snapshot)?;
                if let Some(cursor) = cursor {
                    map.serialize_entry("cursor", cursor)?;
                }
            }
            Ack::Count { room_id, occupancy } => {
                map.serialize_entry("roomId", room_id)?;
                map.serialize_entry("connections", &occupancy.connections)?;
                map.serialize_entry("users", &occupancy.users)?;
            }
            Ack::Channel {
                items,
                major_revision,
            } => {
                map.serialize_entry("items", items)?;
                map.serialize_entry("majorRevision", major_revision)?;
            }
            Ack::Refreshed { expires_at } => map.serialize_entry("expiresAt", expires_at)?,
            Ack::Published { channel, seq, id } => {
                map.serialize_entry("channel", channel)?;
                map.serialize_entry("seq", seq)?;
                map.serialize_entry("id", id)?;
            }
            Ack::Subscribed {
                channel,
                seq,
                history,
            } => {
                map.serialize_entry("channel", channel)?;
                map.serialize_entry("seq", seq)?;
                if let Some((recovered, messages)) = history {
                    map.serialize_entry("recovered", recovered)?;
                    map.serialize_entry("messages", messages)?;
                }
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

/// The HTTP status of an error code (HTTP API).
pub fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::InvalidPayload | ErrorCode::MetadataInvalid => 400,
        ErrorCode::UnknownConnection => 404,
        ErrorCode::StaleEpoch | ErrorCode::MetadataConflict => 409,
        ErrorCode::MetadataLock => 423,
        ErrorCode::Unauthorized => 401,
        ErrorCode::Forbidden => 403,
        ErrorCode::RateLimited => 429,
        ErrorCode::PayloadTooLarge => 413,
        ErrorCode::StoreUnavailable => 503,
        ErrorCode::ComponentFailed => 500,
    }
}

/// The HTTP status of a reply (HTTP API).
pub fn reply_status(reply: &Reply) -> u16 {
    match reply {
        Ok(_) => 200,
        Err(error) => http_status(error.code),
    }
}

/// The reply to a path no route serves (status 404).
pub fn no_such_route() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidPayload,
        "no such route; see docs/openapi.yaml",
    )
}

/// The reply to a method a route does not serve (status 405).
pub fn method_not_allowed(method: &str, allowed: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidPayload,
        format!("{method} is not served here; this route serves {allowed}"),
    )
}

/// Decodes an HTTP body as `T`: at most `max` bytes, UTF-8 JSON; an empty body reads as
/// `{}`. Failures name the field, like socket payloads.
pub fn decode_body<T: DeserializeOwned>(
    bytes: &[u8],
    max: usize,
    code: ErrorCode,
) -> Result<T, ApiError> {
    if bytes.len() > max {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is {} bytes; the limit is {max}", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::new(code, "the body is not UTF-8 JSON"))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    let raw: Box<RawValue> = serde_json::from_str(text)
        .map_err(|error| ApiError::new(code, format!("the body is not JSON: {error}")))?;
    decode(Some(&raw), code)
}

/// `POST /v1/rooms/{roomId}/connections` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinBody {
    /// The user; may be omitted with a token (it is the token's `sub`).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The initial state.
    #[serde(default)]
    pub state: Option<Box<RawValue>>,
}

impl JoinBody {
    /// The join of this body in `room_id`.
    pub fn into_data(self, room_id: String) -> JoinData {
        JoinData {
            room_id,
            user_id: self.user_id,
            state: self.state,
        }
    }
}

/// `POST /v1/connections/{connId}/heartbeat` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatBody {
    /// Fences stale writers.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Merged into the state.
    #[serde(default)]
    pub patch_state: Option<Box<RawValue>>,
}

impl HeartbeatBody {
    /// The heartbeat of `conn_id` this body asks for.
    pub fn into_request(self, conn_id: String) -> types::HeartbeatRequest {
        types::HeartbeatRequest {
            conn_id,
            epoch: self.epoch,
            patch_state: self.patch_state.map(|raw| String::from(raw.get())),
        }
    }
}

/// The body of the metadata writes (`PUT`, `PATCH`, `DELETE` of a channel's metadata).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteBody {
    /// The items.
    #[serde(default)]
    pub items: Option<Vec<ItemData>>,
    /// The options.
    #[serde(default)]
    pub options: Option<OptionsData>,
    /// The acting user.
    #[serde(default)]
    pub actor_user_id: Option<String>,
}

impl WriteBody {
    /// The write request on `channel` this body asks for, acting as `actorUserId`.
    pub fn into_request(self, channel: types::Channel) -> types::WriteRequest {
        let actor = self.actor_user_id.clone();
        WriteData {
            channel_type: channel.channel_type,
            channel_name: channel.channel_name,
            items: self.items,
            options: self.options,
            actor_user_id: self.actor_user_id,
        }
        .into_request(actor)
    }
}

/// The body of `POST` and `DELETE` of a lock.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockBody {
    /// The lock's lifetime (acquire).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The acting user.
    #[serde(default)]
    pub actor_user_id: Option<String>,
}

/// The lock request on `channel` named `lock_name`.
pub fn lock_request(
    channel: types::Channel,
    lock_name: String,
    ttl_ms: Option<u64>,
    actor: Option<String>,
) -> types::LockRequest {
    types::LockRequest {
        channel,
        lock_name,
        ttl_ms,
        actor,
    }
}

/// Checks `Authorization: Bearer <token>` against the configured token (`what` names the
/// setting): no token configured refuses everything (`FORBIDDEN`), so a protected route
/// is never open by accident; a missing or wrong token is `UNAUTHORIZED`. Compares in time
/// independent of where the tokens differ.
pub fn check_bearer(
    configured: Option<&str>,
    authorization: Option<&str>,
    what: &str,
) -> Result<(), ApiError> {
    let Some(token) = configured.filter(|token| !token.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this route is disabled: set {what} to enable it"),
        ));
    };
    match authorization.and_then(|value| value.strip_prefix("Bearer ")) {
        Some(presented) if same_secret(presented.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::Unauthorized, "wrong token")),
        None => Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!("this route needs Authorization: Bearer <{what}>"),
        )),
    }
}

/// Compares in time independent of where the inputs differ (`subtle`).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}
