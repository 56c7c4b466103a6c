//! The operation table: every operation Roster serves, described once, and everything
//! the transports derive from it. Compiled into the host and into the Spin gateway (mounted
//! beside `json.rs`, whose items it reaches as `super::`), so both route, decode and
//! validate every request with the same code and answer a bad one with the same error.
//!
//! Each [`Operation`] names its socket event, its HTTP route, the component export it
//! calls, the policy action it needs and its rate class. From the table:
//! - the socket transports (`/ws`, Socket.IO) decode `(event, data)` with
//!   [`Request::from_event`];
//! - the `/v1` router (node and Spin) matches `(method, path)` with [`route`] and decodes
//!   with [`Request::from_http`];
//! - [`execute`] calls the component through the [`Components`] each side implements
//!   (wasmtime on a node, wit-bindgen's imports on Spin) and builds the ack.
//!
//! Adding an operation: its rule in a component and its export in the WIT, then here an
//! entry in [`OPERATIONS`] and the arms of [`Request`] that decode and run it (the
//! compiler lists every `match` that needs one), and a line for its export in each
//! [`Components`] implementation. `docs/architecture.md` ("Adding an operation") says it
//! in full.

use serde_json::value::RawValue;

use super::{
    Ack, ApiError, ChannelData, HeartbeatBody, HeartbeatData, JoinBody, JoinData, LockBody,
    LockData, PublishBody, PublishData, Reply, ResumeData, RoomData, SnapshotData, SubscribeData,
    UnsubscribeData, WriteBody, WriteData, decode, decode_body, lock_request,
};
use crate::wit::types::{
    self, Action, Channel, ChannelState, ErrorCode, HeartbeatOk, Joined, Left, LockInfo,
    MessageHistory, MetadataOperation, Occupancy, Published, SnapshotPage, TickReport,
};

/// Which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpId {
    /// `presence:join`.
    Join,
    /// `presence:heartbeat`.
    Heartbeat,
    /// `presence:leave`.
    Leave,
    /// `presence:snapshot`.
    Snapshot,
    /// `presence:count`.
    Count,
    /// `presence:resume` (sockets only).
    Resume,
    /// `metadata:set`.
    MetadataSet,
    /// `metadata:update`.
    MetadataUpdate,
    /// `metadata:remove`.
    MetadataRemove,
    /// `metadata:get`.
    MetadataGet,
    /// `lock:acquire`.
    LockAcquire,
    /// `lock:release`.
    LockRelease,
    /// One reaper pass, for schedulers (HTTP only).
    ReaperTick,
    /// `auth:refresh`: a socket's new token (sockets only).
    AuthRefresh,
    /// `message:subscribe` (sockets only).
    MessageSubscribe,
    /// `message:unsubscribe` (sockets only).
    MessageUnsubscribe,
    /// `message:publish`.
    MessagePublish,
    /// A channel's history (HTTP only; sockets read it with `message:subscribe`).
    MessageHistory,
}

/// The component an operation calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `roster:hub/presence`.
    Presence,
    /// `roster:hub/metadata`.
    Metadata,
    /// `roster:hub/reaper`.
    Reaper,
    /// No component: the host itself (token verification).
    Host,
}

/// How an operation counts against rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateClass {
    /// A request like any other.
    Request,
    /// A heartbeat: the hot path, coalesced.
    Heartbeat,
    /// Behind an operator's token; not limited per principal.
    Operator,
}

/// An HTTP method and path template (`{name}` segments are parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRoute {
    /// The method.
    pub method: &'static str,
    /// The path template.
    pub path: &'static str,
}

/// One operation, described once.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// Which.
    pub id: OpId,
    /// Its socket event (`/ws`, Socket.IO), if sockets serve it.
    pub event: Option<&'static str>,
    /// Its `/v1` route, if HTTP serves it.
    pub http: Option<HttpRoute>,
    /// The component it calls.
    pub slot: Slot,
    /// The component's export it calls.
    pub export: &'static str,
    /// What the policy decides for it, about the name the request names; none: no policy
    /// call (heartbeats and leaves act only on the caller's own connections, the tick is
    /// behind its own token).
    pub action: Option<Action>,
    /// How it counts against rate limits.
    pub rate: RateClass,
    /// The code of a malformed request.
    pub invalid: ErrorCode,
}

const fn http(method: &'static str, path: &'static str) -> Option<HttpRoute> {
    Some(HttpRoute { method, path })
}

const PRESENCE_INVALID: ErrorCode = ErrorCode::InvalidPayload;
const METADATA_INVALID: ErrorCode = ErrorCode::MetadataInvalid;

/// Every operation. Order matters only for the `Allow` header of a path several serve.
pub const OPERATIONS: [Operation; 18] = [
    Operation {
        id: OpId::Join,
        event: Some("presence:join"),
        http: http("POST", "/v1/rooms/{roomId}/connections"),
        slot: Slot::Presence,
        export: "join",
        action: Some(Action::Join),
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::Heartbeat,
        event: Some("presence:heartbeat"),
        http: http("POST", "/v1/connections/{connId}/heartbeat"),
        slot: Slot::Presence,
        export: "heartbeat",
        action: None,
        rate: RateClass::Heartbeat,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::Leave,
        event: Some("presence:leave"),
        http: http("DELETE", "/v1/connections/{connId}"),
        slot: Slot::Presence,
        export: "leave",
        action: None,
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::Snapshot,
        event: Some("presence:snapshot"),
        http: http("GET", "/v1/rooms/{roomId}/connections"),
        slot: Slot::Presence,
        export: "snapshot",
        action: Some(Action::Read),
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::Count,
        event: Some("presence:count"),
        http: http("GET", "/v1/rooms/{roomId}/occupancy"),
        slot: Slot::Presence,
        export: "count",
        action: Some(Action::Read),
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::Resume,
        event: Some("presence:resume"),
        http: None,
        slot: Slot::Presence,
        export: "resume",
        // The resume token proves the connection is the caller's; its room was judged
        // when it joined.
        action: None,
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::MetadataGet,
        event: Some("metadata:get"),
        http: http("GET", "/v1/channels/{channelType}/{channelName}/metadata"),
        slot: Slot::Metadata,
        export: "get",
        action: Some(Action::MetadataRead),
        rate: RateClass::Request,
        invalid: METADATA_INVALID,
    },
    Operation {
        id: OpId::MetadataSet,
        event: Some("metadata:set"),
        http: http("PUT", "/v1/channels/{channelType}/{channelName}/metadata"),
        slot: Slot::Metadata,
        export: "set",
        action: Some(Action::MetadataWrite),
        rate: RateClass::Request,
        invalid: METADATA_INVALID,
    },
    Operation {
        id: OpId::MetadataUpdate,
        event: Some("metadata:update"),
        http: http("PATCH", "/v1/channels/{channelType}/{channelName}/metadata"),
        slot: Slot::Metadata,
        export: "update",
        action: Some(Action::MetadataWrite),
        rate: RateClass::Request,
        invalid: METADATA_INVALID,
    },
    Operation {
        id: OpId::MetadataRemove,
        event: Some("metadata:remove"),
        http: http(
            "DELETE",
            "/v1/channels/{channelType}/{channelName}/metadata",
        ),
        slot: Slot::Metadata,
        export: "remove",
        action: Some(Action::MetadataWrite),
        rate: RateClass::Request,
        invalid: METADATA_INVALID,
    },
    Operation {
        id: OpId::LockAcquire,
        event: Some("lock:acquire"),
        http: http(
            "POST",
            "/v1/channels/{channelType}/{channelName}/locks/{lockName}",
        ),
        slot: Slot::Metadata,
        export: "acquire-lock",
        action: Some(Action::Lock),
        rate: RateClass::Request,
        invalid: METADATA_INVALID,
    },
    Operation {
        id: OpId::LockRelease,
        event: Some("lock:release"),
        http: http(
            "DELETE",
            "/v1/channels/{channelType}/{channelName}/locks/{lockName}",
        ),
        slot: Slot::Metadata,
        export: "release-lock",
        action: Some(Action::Lock),
        rate: RateClass::Request,
        invalid: METADATA_INVALID,
    },
    Operation {
        id: OpId::ReaperTick,
        event: None,
        http: http("POST", "/v1/reaper/tick"),
        slot: Slot::Reaper,
        export: "tick",
        action: None,
        rate: RateClass::Operator,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::AuthRefresh,
        event: Some("auth:refresh"),
        http: None,
        slot: Slot::Host,
        export: "verify",
        action: None,
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::MessageSubscribe,
        event: Some("message:subscribe"),
        http: None,
        slot: Slot::Metadata,
        export: "history",
        action: Some(Action::Subscribe),
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::MessageUnsubscribe,
        event: Some("message:unsubscribe"),
        http: None,
        slot: Slot::Host,
        export: "unsubscribe",
        action: None,
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::MessagePublish,
        event: Some("message:publish"),
        http: http("POST", "/v1/channels/{channel}/messages"),
        slot: Slot::Metadata,
        export: "publish",
        action: Some(Action::Publish),
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
    Operation {
        id: OpId::MessageHistory,
        event: None,
        http: http("GET", "/v1/channels/{channel}/messages"),
        slot: Slot::Metadata,
        export: "history",
        action: Some(Action::Subscribe),
        rate: RateClass::Request,
        invalid: PRESENCE_INVALID,
    },
];

impl OpId {
    /// The operation's description.
    pub fn spec(self) -> &'static Operation {
        // Every OpId has its entry (a unit test checks it), so the fallback never serves.
        OPERATIONS
            .iter()
            .find(|op| op.id == self)
            .unwrap_or(&OPERATIONS[0])
    }
}

/// The socket events, for messages.
pub fn events() -> impl Iterator<Item = &'static str> {
    OPERATIONS.iter().filter_map(|op| op.event)
}

/// The operation of a socket event.
pub fn by_event(event: &str) -> Result<&'static Operation, ApiError> {
    OPERATIONS
        .iter()
        .find(|op| op.event == Some(event))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidPayload,
                format!(
                    "unknown event {event:?}; expected one of {}",
                    events().collect::<Vec<_>>().join(", ")
                ),
            )
        })
}

/// Why a `/v1` request matches no operation.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteError {
    /// No route serves the path (404).
    NoRoute,
    /// Routes serve the path, with other methods (405 with `Allow`).
    MethodNotAllowed {
        /// The methods, as the `Allow` header says them.
        allow: String,
    },
}

impl RouteError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NoRoute => 404,
            RouteError::MethodNotAllowed { .. } => 405,
        }
    }

    /// The `Allow` header, for a 405.
    pub fn allow(&self) -> Option<&str> {
        match self {
            RouteError::NoRoute => None,
            RouteError::MethodNotAllowed { allow } => Some(allow),
        }
    }

    /// The error body.
    pub fn error(&self, method: &str) -> ApiError {
        match self {
            RouteError::NoRoute => super::no_such_route(),
            RouteError::MethodNotAllowed { allow } => super::method_not_allowed(method, allow),
        }
    }
}

/// A matched route: the operation and its path parameters, raw (percent-encoded).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The operation.
    pub op: &'static Operation,
    /// `(name, raw value)` of each `{name}` segment.
    pub params: Vec<(&'static str, String)>,
}

/// Matches `template` against the path's segments: its parameters when it fits.
fn fit(template: &'static str, segments: &[&str]) -> Option<Vec<(&'static str, String)>> {
    let parts: Vec<&'static str> = template.trim_start_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.into_iter().zip(segments) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if !segment.is_empty() => params.push((name, (*segment).to_owned())),
            Some(_) => return None,
            None if part == *segment => {}
            None => return None,
        }
    }
    Some(params)
}

/// Routes a `/v1` request: the operation that serves `method` on `path` (without its
/// query), or why none does.
pub fn route(method: &str, path: &str) -> Result<Routed, RouteError> {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut allow: Vec<&str> = Vec::new();
    for op in &OPERATIONS {
        let Some(route) = op.http else { continue };
        let Some(params) = fit(route.path, &segments) else {
            continue;
        };
        if route.method == method {
            return Ok(Routed { op, params });
        }
        if !allow.contains(&route.method) {
            allow.push(route.method);
        }
    }
    if allow.is_empty() {
        Err(RouteError::NoRoute)
    } else {
        Err(RouteError::MethodNotAllowed {
            allow: allow.join(", "),
        })
    }
}

/// Percent-decodes `text` (`+` as a space when `plus` is set, as in a query); none when
/// the result is not UTF-8.
pub fn percent_decode(text: &str, plus: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|b| char::from(*b).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match byte {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                _ => out.push(byte),
            },
            b'+' if plus => out.push(b' '),
            _ => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The first value of `name` in a query string, decoded; a value that does not decode to
/// UTF-8 is refused with `code`.
pub fn query_value(query: &str, name: &str, code: ErrorCode) -> Result<Option<String>, ApiError> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key, true).as_deref() == Some(name) {
            return percent_decode(value, true).map(Some).ok_or_else(|| {
                ApiError::new(
                    code,
                    format!("the query is not valid: {name} is not percent-encoded UTF-8"),
                )
            });
        }
    }
    Ok(None)
}

/// A request, decoded and checked for types (the components check the values), the same
/// whichever transport it came by.
#[derive(Debug)]
pub enum Request {
    /// `presence:join`; `replaces` is the socket's current connection (sockets only).
    Join {
        /// The payload.
        data: JoinData,
        /// The connection it replaces.
        replaces: Option<String>,
    },
    /// `presence:heartbeat`.
    Heartbeat(types::HeartbeatRequest),
    /// `presence:leave`: the connection (a socket's is its own, filled in by its session).
    Leave {
        /// The connection.
        conn_id: Option<String>,
    },
    /// `presence:snapshot`.
    Snapshot(types::SnapshotRequest),
    /// `presence:count`.
    Count {
        /// The room.
        room_id: String,
    },
    /// `presence:resume` (its session takes the connection over).
    Resume(ResumeData),
    /// `metadata:set`, `metadata:update`, `metadata:remove`.
    MetadataWrite(MetadataOperation, types::WriteRequest),
    /// `metadata:get`.
    MetadataGet(Channel),
    /// `lock:acquire`.
    LockAcquire(types::LockRequest),
    /// `lock:release`.
    LockRelease(types::LockRequest),
    /// A reaper pass.
    ReaperTick,
    /// `auth:refresh`: a socket's new token (its session verifies it).
    AuthRefresh {
        /// The token.
        token: String,
    },
    /// `message:subscribe` (its session subscribes the socket).
    MessageSubscribe {
        /// The channel.
        channel: String,
        /// The last seq the client saw.
        since: Option<u64>,
    },
    /// `message:unsubscribe`.
    MessageUnsubscribe {
        /// The channel.
        channel: String,
    },
    /// `message:publish`; `nonce` is filled in when it runs.
    MessagePublish(types::PublishRequest),
    /// A channel's history after `since`.
    MessageHistory(types::HistoryRequest),
}

/// The metadata operation of a write.
fn metadata_operation(id: OpId) -> MetadataOperation {
    match id {
        OpId::MetadataSet => MetadataOperation::Set,
        OpId::MetadataUpdate => MetadataOperation::Update,
        _ => MetadataOperation::Remove,
    }
}

impl Request {
    /// Decodes a socket request: `event` with its `data`. Acting users come from the
    /// socket (an `actorUserId` in the payload is ignored): see [`Request::act_as`].
    pub fn from_event(
        event: &str,
        data: Option<&RawValue>,
    ) -> Result<(&'static Operation, Request), ApiError> {
        let op = by_event(event)?;
        let code = op.invalid;
        let request = match op.id {
            OpId::Join => Request::Join {
                data: decode(data, code)?,
                replaces: None,
            },
            OpId::Heartbeat => {
                let data: HeartbeatData = decode(data, code)?;
                Request::Heartbeat(types::HeartbeatRequest {
                    conn_id: data.conn_id,
                    epoch: data.epoch,
                    patch_state: data.patch_state.map(|raw| String::from(raw.get())),
                })
            }
            OpId::Leave => Request::Leave { conn_id: None },
            OpId::Snapshot => Request::Snapshot(decode::<SnapshotData>(data, code)?.into_request()),
            OpId::Count => Request::Count {
                room_id: decode::<RoomData>(data, code)?.room_id,
            },
            OpId::Resume => Request::Resume(decode(data, code)?),
            OpId::MetadataSet | OpId::MetadataUpdate | OpId::MetadataRemove => {
                let data: WriteData = decode(data, code)?;
                Request::MetadataWrite(metadata_operation(op.id), data.into_request(None))
            }
            OpId::MetadataGet => {
                Request::MetadataGet(decode::<ChannelData>(data, code)?.into_channel())
            }
            OpId::LockAcquire => {
                Request::LockAcquire(decode::<LockData>(data, code)?.into_request(None))
            }
            OpId::LockRelease => {
                Request::LockRelease(decode::<LockData>(data, code)?.into_request(None))
            }
            OpId::ReaperTick => {
                return Err(ApiError::new(
                    code,
                    "the reaper tick is an HTTP route for schedulers",
                ));
            }
            OpId::AuthRefresh => Request::AuthRefresh {
                token: decode::<TokenData>(data, code)?.token,
            },
            OpId::MessageSubscribe => {
                let data: SubscribeData = decode(data, code)?;
                Request::MessageSubscribe {
                    channel: data.channel,
                    since: data.since,
                }
            }
            OpId::MessageUnsubscribe => Request::MessageUnsubscribe {
                channel: decode::<UnsubscribeData>(data, code)?.channel,
            },
            OpId::MessagePublish => {
                let data: PublishData = decode(data, code)?;
                Request::MessagePublish(types::PublishRequest {
                    channel: data.channel,
                    payload: String::from(data.payload.get()),
                    id: data.id,
                    actor: None,
                    nonce: 0,
                })
            }
            OpId::MessageHistory => {
                return Err(ApiError::new(
                    code,
                    "history is an HTTP route; sockets read it with message:subscribe and since",
                ));
            }
        };
        Ok((op, request))
    }

    /// Decodes a `/v1` request routed to `routed`: its path parameters, its query and
    /// its body (at most `max_body` bytes).
    pub fn from_http(
        routed: &Routed,
        query: &str,
        body: &[u8],
        max_body: usize,
    ) -> Result<Request, ApiError> {
        let code = routed.op.invalid;
        let param = |name: &str| -> Result<String, ApiError> {
            let raw = routed
                .params
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_str())
                .unwrap_or_default();
            percent_decode(raw, false).ok_or_else(|| {
                ApiError::new(
                    code,
                    format!("the path is not valid: {name} is not percent-encoded UTF-8"),
                )
            })
        };
        let channel = || -> Result<Channel, ApiError> {
            Ok(Channel {
                channel_type: param("channelType")?,
                channel_name: param("channelName")?,
            })
        };
        Ok(match routed.op.id {
            OpId::Join => {
                let body: JoinBody = decode_body(body, max_body, code)?;
                Request::Join {
                    data: body.into_data(param("roomId")?),
                    replaces: None,
                }
            }
            OpId::Heartbeat => {
                let body: HeartbeatBody = decode_body(body, max_body, code)?;
                Request::Heartbeat(body.into_request(param("connId")?))
            }
            OpId::Leave => Request::Leave {
                conn_id: Some(param("connId")?),
            },
            OpId::Snapshot => {
                let limit = match query_value(query, "limit", code)? {
                    None => None,
                    Some(text) => Some(text.parse::<u32>().map_err(|_| {
                        ApiError::new(
                            code,
                            format!("the query is not valid: limit {text:?} is not a count"),
                        )
                    })?),
                };
                Request::Snapshot(types::SnapshotRequest {
                    room_id: param("roomId")?,
                    cursor: query_value(query, "cursor", code)?,
                    limit,
                })
            }
            OpId::Count => Request::Count {
                room_id: param("roomId")?,
            },
            OpId::MetadataSet | OpId::MetadataUpdate | OpId::MetadataRemove => {
                let body: WriteBody = decode_body(body, max_body, code)?;
                Request::MetadataWrite(
                    metadata_operation(routed.op.id),
                    body.into_request(channel()?),
                )
            }
            OpId::MetadataGet => Request::MetadataGet(channel()?),
            OpId::LockAcquire => {
                let body: LockBody = decode_body(body, max_body, code)?;
                Request::LockAcquire(lock_request(
                    channel()?,
                    param("lockName")?,
                    body.ttl_ms,
                    body.actor_user_id,
                ))
            }
            OpId::LockRelease => {
                let body: LockBody = decode_body(body, max_body, code)?;
                let actor = match body.actor_user_id {
                    Some(actor) => Some(actor),
                    None => query_value(query, "actorUserId", code)?,
                };
                Request::LockRelease(lock_request(channel()?, param("lockName")?, None, actor))
            }
            OpId::ReaperTick => Request::ReaperTick,
            OpId::AuthRefresh
            | OpId::MessageSubscribe
            | OpId::MessageUnsubscribe
            | OpId::Resume => {
                return Err(ApiError::new(
                    code,
                    format!(
                        "{} is a socket event",
                        routed.op.event.unwrap_or("this operation")
                    ),
                ));
            }
            OpId::MessagePublish => {
                let body: PublishBody = decode_body(body, max_body, code)?;
                Request::MessagePublish(types::PublishRequest {
                    channel: param("channel")?,
                    payload: String::from(body.payload.get()),
                    id: body.id,
                    actor: None,
                    nonce: 0,
                })
            }
            OpId::MessageHistory => {
                let since = match query_value(query, "since", code)? {
                    None => None,
                    Some(text) => Some(text.parse::<u64>().map_err(|_| {
                        ApiError::new(
                            code,
                            format!("the query is not valid: since {text:?} is not a seq"),
                        )
                    })?),
                };
                Request::MessageHistory(types::HistoryRequest {
                    channel: param("channel")?,
                    since,
                })
            }
        })
    }

    /// Which operation this is.
    pub fn id(&self) -> OpId {
        match self {
            Request::Join { .. } => OpId::Join,
            Request::Heartbeat(_) => OpId::Heartbeat,
            Request::Leave { .. } => OpId::Leave,
            Request::Snapshot(_) => OpId::Snapshot,
            Request::Count { .. } => OpId::Count,
            Request::MetadataWrite(MetadataOperation::Set, _) => OpId::MetadataSet,
            Request::MetadataWrite(MetadataOperation::Update, _) => OpId::MetadataUpdate,
            Request::MetadataWrite(MetadataOperation::Remove, _) => OpId::MetadataRemove,
            Request::MetadataGet(_) => OpId::MetadataGet,
            Request::LockAcquire(_) => OpId::LockAcquire,
            Request::LockRelease(_) => OpId::LockRelease,
            Request::ReaperTick => OpId::ReaperTick,
            Request::AuthRefresh { .. } => OpId::AuthRefresh,
            Request::Resume(_) => OpId::Resume,
            Request::MessageSubscribe { .. } => OpId::MessageSubscribe,
            Request::MessageUnsubscribe { .. } => OpId::MessageUnsubscribe,
            Request::MessagePublish(_) => OpId::MessagePublish,
            Request::MessageHistory(_) => OpId::MessageHistory,
        }
    }

    /// The name the policy judges: the room, or the channel.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Request::Join { data, .. } => Some(&data.room_id),
            Request::Snapshot(request) => Some(&request.room_id),
            Request::Count { room_id } => Some(room_id),
            Request::MetadataWrite(_, request) => Some(&request.channel.channel_name),
            Request::MetadataGet(channel) => Some(&channel.channel_name),
            Request::LockAcquire(request) | Request::LockRelease(request) => {
                Some(&request.channel.channel_name)
            }
            Request::MessageSubscribe { channel, .. } => Some(channel),
            Request::MessagePublish(request) => Some(&request.channel),
            Request::MessageHistory(request) => Some(&request.channel),
            Request::Heartbeat(_)
            | Request::Leave { .. }
            | Request::ReaperTick
            | Request::AuthRefresh { .. }
            | Request::Resume(_)
            | Request::MessageUnsubscribe { .. } => None,
        }
    }

    /// Sets the acting user of a metadata or lock request (a socket's is the user it
    /// joined as; nothing else acts).
    pub fn act_as(&mut self, actor: Option<String>) {
        match self {
            Request::MetadataWrite(_, request) => request.actor = actor,
            Request::LockAcquire(request) | Request::LockRelease(request) => {
                request.actor = actor;
            }
            Request::MessagePublish(request) => request.actor = actor,
            _ => {}
        }
    }
}

/// The component calls an operation makes, as each deployment reaches its components:
/// the host through wasmtime (with heartbeats coalesced), Spin through its imports. Each
/// builds the call's context (`now`, node, settings) itself.
#[allow(
    async_fn_in_trait,
    reason = "used with concrete types only, never as dyn"
)]
pub trait Components {
    /// 64 bits from a cryptographic RNG, for a new connection id.
    fn nonce(&self) -> Result<u64, ApiError>;
    /// `policy.decide` for the caller: whether it may do `action` to `name`.
    async fn authorize(&self, action: Action, name: &str) -> Result<(), ApiError>;
    /// `presence.join`.
    async fn join(&self, request: types::JoinRequest) -> Result<Joined, ApiError>;
    /// `presence.heartbeat`, for one request.
    async fn heartbeat(&self, request: types::HeartbeatRequest) -> Result<HeartbeatOk, ApiError>;
    /// `presence.leave`.
    async fn leave(&self, conn_id: &str) -> Result<Left, ApiError>;
    /// `presence.snapshot`.
    async fn snapshot(&self, request: types::SnapshotRequest) -> Result<SnapshotPage, ApiError>;
    /// `presence.count`.
    async fn count(&self, room_id: &str) -> Result<Occupancy, ApiError>;
    /// `metadata.set`, `metadata.update`, `metadata.remove`.
    async fn metadata_write(
        &self,
        operation: MetadataOperation,
        request: types::WriteRequest,
    ) -> Result<ChannelState, ApiError>;
    /// `metadata.get`.
    async fn metadata_get(&self, channel: Channel) -> Result<ChannelState, ApiError>;
    /// `metadata.acquire-lock`.
    async fn acquire_lock(&self, request: types::LockRequest) -> Result<LockInfo, ApiError>;
    /// `metadata.release-lock`.
    async fn release_lock(&self, request: types::LockRequest) -> Result<(), ApiError>;
    /// `reaper.tick`.
    async fn tick(&self) -> Result<TickReport, ApiError>;
    /// `messages.publish`.
    async fn publish(&self, request: types::PublishRequest) -> Result<Published, ApiError>;
    /// `messages.history`.
    async fn history(&self, request: types::HistoryRequest) -> Result<MessageHistory, ApiError>;
}

/// The component's join request for `data`, with a fresh nonce, resume token and
/// binding (all from the cryptographic RNG).
pub fn join_request(
    data: JoinData,
    replaces: Option<String>,
    components: &impl Components,
) -> Result<types::JoinRequest, ApiError> {
    Ok(types::JoinRequest {
        room_id: data.room_id,
        user_id: data.user_id,
        state: data.state.map(|raw| String::from(raw.get())),
        nonce: components.nonce()?,
        replaces,
        resume_token: format!("{:016x}{:016x}", components.nonce()?, components.nonce()?),
        binding: components.nonce()?,
    })
}

/// Asks the policy about `request`, when its operation needs a decision.
pub async fn authorize(request: &Request, components: &impl Components) -> Result<(), ApiError> {
    match (request.id().spec().action, request.subject()) {
        (Some(action), Some(name)) => components.authorize(action, name).await,
        _ => Ok(()),
    }
}

/// Runs a request through the policy and the components and builds its ack.
pub async fn execute(request: Request, components: &impl Components) -> Reply {
    authorize(&request, components).await?;
    match request {
        Request::Join { data, replaces } => {
            let request = join_request(data, replaces, components)?;
            let token = request.resume_token.clone();
            Ok(Ack::joined(components.join(request).await?, token))
        }
        Request::Heartbeat(request) => {
            let ok = components.heartbeat(request).await?;
            Ok(Ack::Heartbeat {
                changed: ok.changed,
            })
        }
        Request::Leave { conn_id } => {
            let conn_id = conn_id.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownConnection,
                    "this socket holds no presence connection; join first",
                )
            })?;
            components.leave(&conn_id).await?;
            Ok(Ack::Done)
        }
        Request::Snapshot(request) => Ok(Ack::snapshot(components.snapshot(request).await?)),
        Request::Count { room_id } => {
            let occupancy = components.count(&room_id).await?;
            Ok(Ack::Count { room_id, occupancy })
        }
        Request::MetadataWrite(operation, request) => Ok(Ack::channel(
            components.metadata_write(operation, request).await?,
        )),
        Request::MetadataGet(channel) => Ok(Ack::channel(components.metadata_get(channel).await?)),
        Request::LockAcquire(request) => Ok(Ack::lock(components.acquire_lock(request).await?)),
        Request::LockRelease(request) => {
            components.release_lock(request).await?;
            Ok(Ack::Done)
        }
        Request::ReaperTick => Ok(Ack::Tick(components.tick().await?)),
        Request::AuthRefresh { .. } => Err(ApiError::new(
            ErrorCode::InvalidPayload,
            "auth:refresh renews a socket's token; this transport has none",
        )),
        Request::MessageSubscribe { .. } | Request::MessageUnsubscribe { .. } => Err(
            ApiError::new(ErrorCode::InvalidPayload, "subscriptions belong to sockets"),
        ),
        Request::Resume(_) => Err(ApiError::new(
            ErrorCode::InvalidPayload,
            "presence:resume binds a connection to a socket; this transport has none",
        )),
        Request::MessagePublish(mut request) => {
            request.nonce = components.nonce()?;
            let published = components.publish(request).await?;
            Ok(Ack::Published {
                channel: published.channel,
                seq: published.seq,
                id: published.id,
            })
        }
        Request::MessageHistory(request) => {
            Ok(Ack::history(components.history(request).await?, true))
        }
    }
}

/// `auth:refresh` data.
#[derive(Debug, serde::Deserialize)]
struct TokenData {
    token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation has one entry, its socket event is unique and namespaced, and every
    /// HTTP route is under `/v1/`.
    #[test]
    fn the_table_is_whole() {
        for id in [
            OpId::Join,
            OpId::Heartbeat,
            OpId::Leave,
            OpId::Snapshot,
            OpId::Count,
            OpId::Resume,
            OpId::MetadataSet,
            OpId::MetadataUpdate,
            OpId::MetadataRemove,
            OpId::MetadataGet,
            OpId::LockAcquire,
            OpId::LockRelease,
            OpId::ReaperTick,
            OpId::AuthRefresh,
            OpId::MessageSubscribe,
            OpId::MessageUnsubscribe,
            OpId::MessagePublish,
            OpId::MessageHistory,
        ] {
            assert_eq!(
                OPERATIONS.iter().filter(|op| op.id == id).count(),
                1,
                "{id:?}"
            );
            assert_eq!(id.spec().id, id);
        }
        let events: Vec<_> = events().collect();
        for event in &events {
            assert_eq!(events.iter().filter(|e| *e == event).count(), 1);
            assert!(event.contains(':'), "{event}");
        }
        for op in &OPERATIONS {
            if let Some(route) = op.http {
                assert!(route.path.starts_with("/v1/"), "{}", route.path);
            }
        }
    }

    /// Paths route to their operation with their parameters; other methods name the
    /// allowed ones; other paths match nothing.
    #[test]
    fn routing() {
        let routed = route("PATCH", "/v1/channels/room/a%20b/metadata?x=1").unwrap();
        assert_eq!(routed.op.id, OpId::MetadataUpdate);
        assert_eq!(
            routed.params,
            vec![
                ("channelType", "room".to_owned()),
                ("channelName", "a%20b".to_owned())
            ]
        );
        assert_eq!(
            route("PUT", "/v1/rooms/r/connections").unwrap_err(),
            RouteError::MethodNotAllowed {
                allow: "POST, GET".into()
            }
        );
        for missing in ["/", "/v1", "/v1/rooms//connections", "/v1/rooms/x", "/nope"] {
            assert_eq!(route("GET", missing).unwrap_err(), RouteError::NoRoute);
        }
    }

    /// Path and query values decode like forms; what does not decode to UTF-8 is the
    /// operation's invalid code.
    #[test]
    fn decoding_paths_and_queries() {
        assert_eq!(
            query_value(
                "a=1&actorUserId=ada+l%C3%BC",
                "actorUserId",
                ErrorCode::MetadataInvalid
            )
            .unwrap()
            .as_deref(),
            Some("ada lü")
        );
        assert_eq!(
            query_value("a=1", "actorUserId", ErrorCode::MetadataInvalid).unwrap(),
            None
        );
        let routed = route("GET", "/v1/channels/t/%FF/metadata").unwrap();
        let error = Request::from_http(&routed, "", b"", 100).unwrap_err();
        assert_eq!(error.code, ErrorCode::MetadataInvalid);
        let routed = route("GET", "/v1/rooms/r/connections").unwrap();
        let error = Request::from_http(&routed, "limit=x", b"", 100).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidPayload);
    }
}
