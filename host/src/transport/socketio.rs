//! The Socket.IO v4 transport at `/socket.io/`: Engine.IO (WebSocket, and HTTP long-polling
//! with upgrade) from `engineioxide`, and the Socket.IO packet layer on top written here.
//! Existing `socket.io-client` apps use the protocol's event names with acks, unchanged.
//!
//! **Why the packet layer is ours.** Roster promises that a bad payload never disconnects
//! (DESIGN.md §2): a malformed packet on an intact frame gets an `INVALID_PAYLOAD` ack when
//! it carries an ack id, and is dropped otherwise; the socket keeps its presence. A generic
//! Socket.IO server closes the whole connection on any packet it cannot parse, and reads ack
//! ids as `i64` (a larger one ran the request but could never be acked). The packet format
//! itself is small (a type digit, attachments, a namespace, an ack id, a JSON array); what
//! this module adds is how tolerant it is, and the echo of ack ids verbatim.
//!
//! Only the default namespace `/` exists. A socket connects to it with a `CONNECT` packet
//! (admitted against the node's socket limit, or refused with `CONNECT_ERROR`); requests are
//! `EVENT` packets `["presence:join", {...}]` with an ack id; pushes are `EVENT`s without one.
//! Binary packets are not part of the protocol: a binary event is refused (acked with
//! `INVALID_PAYLOAD` when it has an ack id) and its attachments are discarded.
//!
//! It shares everything with `/ws` but the framing: each socket gets a [`Peer`] on the bus
//! and a [`Session`]. Engine.IO hands over packets on the connection's reader, in arrival
//! order; each request goes on the socket's inbox there, and one task per socket runs the
//! inbox through the session and acks, so a socket's requests run one at a time, in order.
//! The bus puts the socket's events straight on the engine's queue ([`outlet`]). A client
//! that emits without an ack callback gets no ack, as Socket.IO does.
//!
//! Disconnecting is leaving. On shutdown each socket leaves first; then the server closes
//! the transports, which socket.io clients treat as a dropped connection and reconnect (to
//! another node behind the load balancer).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use engineioxide::handler::EngineIoHandler;
use engineioxide::layer::EngineIoLayer;
use engineioxide::socket::Sid;
use engineioxide::{DisconnectReason, Str};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::bus::{CloseReason, Outlet, Peer, Refused};
use crate::hub::{Hub, SocketPermit};
use crate::protocol::auth::{self, Verified};
use crate::protocol::ops;
use crate::protocol::{self, ApiError, Reply};
use crate::runtime::bindings::types::ErrorCode;
use crate::session::Session;

/// Requests one socket may have waiting; more get `RATE_LIMITED` at once.
const INBOX: usize = 64;

/// How long an Engine.IO session may stay without connecting to the namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// The longest ack id echoed; a longer one cannot be answered (nothing reads it as a
/// number), so its packet is refused like one without an ack id.
const MAX_ACK_DIGITS: usize = 32;

/// An Engine.IO socket carrying Socket.IO.
type EngineSocket = engineioxide::Socket<SocketData>;

/// What the Socket.IO layer keeps per Engine.IO socket.
#[derive(Default)]
pub struct SocketData {
    /// Set when the client connected to the namespace: where its requests go.
    connected: Mutex<Option<Connected>>,
    /// Binary attachments still to discard (a refused binary packet announced them).
    attachments: AtomicUsize,
    /// Aborts the connect timeout once the client connected.
    connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
}

/// A socket connected to the namespace.
struct Connected {
    /// The socket's inbox; its session task owns the receiver.
    inbox: mpsc::Sender<Box<Incoming>>,
    /// The socket's side on the bus; cancelled when the transport closes.
    peer: Arc<Peer>,
}

/// One request, as it arrived.
struct Incoming {
    event: String,
    data: Option<Box<RawValue>>,
    /// The ack id, digits as sent.
    ack: Option<String>,
}

/// The Engine.IO handler: the Socket.IO packet layer.
#[derive(Clone)]
pub struct Handler {
    hub: Arc<Hub>,
    /// Every open Engine.IO socket, so shutdown can close the transports.
    sockets: Arc<Mutex<HashMap<Sid, Arc<EngineSocket>>>>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("sockets", &self.sockets.lock().len())
            .finish_non_exhaustive()
    }
}

/// What shutdown needs of the Socket.IO transport.
#[derive(Clone, Debug)]
pub struct Transports {
    handler: Handler,
}

impl Transports {
    /// Closes every Engine.IO transport (clients see a lost connection and reconnect).
    pub fn close_all(&self) {
        let sockets: Vec<_> = self.handler.sockets.lock().values().cloned().collect();
        for socket in sockets {
            socket.close(DisconnectReason::ClosingServer);
        }
    }

    /// Open Engine.IO transports.
    pub fn open(&self) -> usize {
        self.handler.sockets.lock().len()
    }
}

/// Builds the Socket.IO layer and the handle shutdown closes its transports with.
pub fn layer(hub: &Arc<Hub>) -> (EngineIoLayer<Handler>, Transports) {
    let config = hub.config();
    let limit = config.hard_frame_limit();
    let engine = engineioxide::config::EngineIoConfig::builder()
        .req_path("/socket.io")
        .ping_interval(Duration::from_millis(config.socketio_ping_interval_ms))
        .ping_timeout(Duration::from_millis(config.socketio_ping_timeout_ms))
        .max_payload(u64::try_from(limit).unwrap_or(u64::MAX))
        .ws_max_message_size(limit)
        .ws_max_frame_size(limit)
        .ws_read_buffer_size(super::WS_READ_BUFFER_BYTES)
        .max_buffer_size(config.max_pending_messages)
        .build();
    let handler = Handler {
        hub: Arc::clone(hub),
        sockets: Arc::default(),
    };
    let transports = Transports {
        handler: handler.clone(),
    };
    (
        EngineIoLayer::from_config(Arc::new(handler), engine),
        transports,
    )
}

/// Gives a Socket.IO request a head of its own. Engine.IO keeps each connection's request
/// head for the connection's life, and hyper parses heads without copying: the URI and
/// header values are slices of the connection's read buffer, so that whole buffer (16 KiB)
/// stayed allocated per socket. Copying the head (a few hundred bytes) lets it go. Other
/// routes are untouched.
pub async fn own_head(mut request: axum::extract::Request) -> axum::extract::Request {
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
    if !request.uri().path().starts_with("/socket.io/") {
        return request;
    }
    let headers = std::mem::take(request.headers_mut());
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in &headers {
        // `from_bytes` copies; both inputs come from a parsed head, so they are valid.
        let (Ok(name), Ok(mut copy)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        owned.append(name, copy);
    }
    *request.headers_mut() = owned;
    if let Ok(uri) = Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
    request
}

/// A Socket.IO packet, as far as it reads.
#[derive(Debug, PartialEq)]
enum Packet<'a> {
    /// `0`: connect to a namespace, with optional auth data (a JSON object, or nothing).
    Connect { namespace: &'a str, data: &'a str },
    /// `1`: leave a namespace.
    Disconnect { namespace: &'a str },
    /// `2`: an event; `data` is the JSON text after the header (an array when well formed).
    Event {
        namespace: &'a str,
        ack: Option<&'a str>,
        data: &'a str,
    },
    /// `5`: a binary event with its attachments' count.
    BinaryEvent {
        ack: Option<&'a str>,
        attachments: usize,
    },
    /// `6`: a binary ack with its attachments' count.
    BinaryAck { attachments: usize },
    /// `3` (an ack from the client: the server asks for none), `4`, or nothing readable.
    Ignored,
}

/// Reads a packet's header: type, attachments, namespace, ack id.
fn parse(text: &str) -> Packet<'_> {
    let mut rest = text;
    let Some(kind) = rest.chars().next() else {
        return Packet::Ignored;
    };
    rest = &rest[kind.len_utf8()..];
    let mut attachments = 0;
    if matches!(kind, '5' | '6') {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        attachments = rest[..digits].parse().unwrap_or(0);
        rest = &rest[digits..];
        rest = rest.strip_prefix('-').unwrap_or(rest);
    }
    let mut namespace = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                namespace = &rest[..comma];
                rest = &rest[comma + 1..];
            }
            None => {
                namespace = rest;
                rest = "";
            }
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = (digits > 0 && digits <= MAX_ACK_DIGITS).then(|| &rest[..digits]);
    let data = &rest[digits..];
    match kind {
        '0' => Packet::Connect {
            namespace,
            data: &rest[digits..],
        },
        '1' => Packet::Disconnect { namespace },
        '2' => Packet::Event {
            namespace,
            ack,
            data,
        },
        '5' => Packet::BinaryEvent { ack, attachments },
        '6' => Packet::BinaryAck { attachments },
        _ => Packet::Ignored,
    }
}

/// Reads an event's arguments, `["event", data, ...]`: the name and the first argument
/// (further arguments are ignored), or why it is not a request.
fn event_arguments(data: &str) -> Result<(String, Option<Box<RawValue>>), String> {
    let arguments: Vec<&RawValue> = serde_json::from_str(data).map_err(|error| {
        let kind = serde_json::from_str::<&RawValue>(data)
            .map(|raw| protocol::json_kind(raw.get()))
            .ok();
        match kind {
            Some(kind) => format!("the packet's arguments are {kind}, not an array"),
            None => format!("the packet is not JSON: {error}"),
        }
    })?;
    let name = arguments
        .first()
        .ok_or_else(|| String::from("the packet has no arguments (no event name)"))?;
    let name = serde_json::from_str::<String>(name.get()).map_err(|_| {
        format!(
            "the event name must be a string, not {}",
            protocol::json_kind(name.get())
        )
    })?;
    Ok((name, arguments.get(1).map(|data| (*data).to_owned())))
}

/// The ack packet of `reply` for ack id `ack`.
fn ack_packet(ack: &str, reply: &Reply) -> String {
    format!("3{ack}[{}]", protocol::reply_json(reply))
}

/// The event packet of a push.
fn event_packet(name: &str, data: &RawValue) -> String {
    format!(r#"2["{name}",{}]"#, data.get())
}

/// Sends a packet; false when the socket's queue is full (a slow reader) or it is gone.
fn send(socket: &EngineSocket, packet: String) -> Result<(), TrySendError<Str>> {
    socket.emit(Str::from(packet))
}

impl EngineIoHandler for Handler {
    type Data = SocketData;

    fn on_connect(self: Arc<Self>, socket: Arc<EngineSocket>) {
        self.sockets.lock().insert(socket.id, Arc::clone(&socket));
        let waiting = Arc::clone(&socket);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(CONNECT_TIMEOUT).await;
            if waiting.data.connected.lock().is_none() {
                tracing::debug!(sid = %waiting.id, "closing a Socket.IO session that never connected");
                waiting.close(DisconnectReason::TransportClose);
            }
        });
        *socket.data.connect_timer.lock() = Some(timer.abort_handle());
    }

    fn on_disconnect(&self, socket: Arc<EngineSocket>, reason: DisconnectReason) {
        self.sockets.lock().remove(&socket.id);
        if let Some(timer) = socket.data.connect_timer.lock().take() {
            timer.abort();
        }
        if let Some(connected) = socket.data.connected.lock().take() {
            tracing::debug!(
                peer = connected.peer.id,
                ?reason,
                "Socket.IO transport closed"
            );
            connected.peer.cancel_token().cancel();
        }
    }

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<EngineSocket>) {
        // A text packet ends any binary packet whose attachments never came.
        socket.data.attachments.store(0, Ordering::Relaxed);
        match parse(msg.as_str()) {
            Packet::Connect { namespace, data } => self.connect(&socket, namespace, data),
            Packet::Disconnect { namespace: "/" } => {
                if let Some(connected) = socket.data.connected.lock().take() {
                    // The client left the namespace: the session leaves and ends.
                    connected.peer.said_goodbye();
                    connected.peer.cancel_token().cancel();
                }
            }
            Packet::Event {
                namespace,
                ack,
                data,
            } => {
                if namespace != "/" {
                    refuse(
                        &socket,
                        ack,
                        format!("no namespace {namespace:?}: connect to \"/\""),
                    );
                    return;
                }
                match event_arguments(data) {
                    Ok((event, data)) => self.enqueue(&socket, event, data, ack),
                    Err(why) => refuse(&socket, ack, why),
                }
            }
            Packet::BinaryEvent { ack, attachments } => {
                socket
                    .data
                    .attachments
                    .store(attachments, Ordering::Relaxed);
                refuse(
                    &socket,
                    ack,
                    "binary payloads are not supported; send JSON".to_owned(),
                );
            }
            Packet::BinaryAck { attachments } => {
                socket
                    .data
                    .attachments
                    .store(attachments, Ordering::Relaxed);
            }
            Packet::Disconnect { .. } | Packet::Ignored => {
                tracing::debug!(sid = %socket.id, "ignored a Socket.IO packet");
            }
        }
    }

    fn on_binary(self: &Arc<Self>, _data: bytes::Bytes, socket: Arc<EngineSocket>) {
        // An attachment of a refused binary packet, or a stray binary frame: dropped.
        let _ = socket
            .data
            .attachments
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// Answers a packet that is not a request: an `INVALID_PAYLOAD` ack when it has an ack
/// id; without one there is no one to answer, and the packet is dropped.
fn refuse(socket: &EngineSocket, ack: Option<&str>, why: String) {
    let Some(ack) = ack else {
        tracing::debug!(sid = %socket.id, why, "dropped a malformed Socket.IO packet");
        return;
    };
    let error = ApiError::new(ErrorCode::InvalidPayload, why);
    if send(socket, ack_packet(ack, &Err(error))).is_err() {
        tracing::debug!(sid = %socket.id, "could not send an error ack");
    }
}

impl Handler {
    /// A `CONNECT` to `namespace`: admits the socket and starts its session, or refuses
    /// with a `CONNECT_ERROR` whose `data` is the error (`{code, message}`).
    fn connect(&self, socket: &Arc<EngineSocket>, namespace: &str, auth: &str) {
        let refuse_connect = |error: ApiError| {
            let message = serde_json::json!({
                "message": error.message,
                "data": {"code": protocol::code_name(error.code), "message": error.message},
            });
            let prefix = if namespace == "/" {
                String::new()
            } else {
                format!("{namespace},")
            };
            let _ = send(socket, format!("4{prefix}{message}"));
        };
        if namespace != "/" {
            refuse_connect(ApiError::new(
                ErrorCode::InvalidPayload,
                "Invalid namespace",
            ));
            return;
        }
        if socket.data.connected.lock().is_some() {
            return;
        }
        if let Err(error) = super::check_origin(&self.hub, &socket.req_parts.headers) {
            refuse_connect(error);
            return;
        }
        let identity = match handshake_token(socket, auth)
            .and_then(|token| self.hub.authenticate(token.as_deref()))
        {
            Ok(identity) => identity,
            Err(error) => {
                refuse_connect(error);
                return;
            }
        };
        let Some(permit) = self.hub.admit_socket() else {
            tracing::warn!(
                "refusing a Socket.IO connection: the node is at its socket limit or shutting down"
            );
            refuse_connect(ApiError::new(
                ErrorCode::RateLimited,
                "this node is at its socket limit or shutting down; try another node or later",
            ));
            return;
        };
        let (inbox, requests) = mpsc::channel(INBOX);
        let peer = Arc::new(Peer::new(
            self.hub.next_peer_id(),
            outlet(socket),
            self.hub.shutdown_token(),
        ));
        *socket.data.connected.lock() = Some(Connected {
            inbox,
            peer: Arc::clone(&peer),
        });
        if let Some(timer) = socket.data.connect_timer.lock().take() {
            timer.abort();
        }
        let sid = format!(r#"0{{"sid":"{}"}}"#, fastrand_sid());
        if send(socket, sid).is_err() {
            peer.cancel_token().cancel();
        }
        let tasks = self.hub.socket_tasks().clone();
        tasks.spawn(serve(
            Arc::clone(&self.hub),
            Arc::clone(socket),
            peer,
            requests,
            permit,
            identity,
        ));
    }

    /// Puts a request on the socket's inbox, in arrival order.
    fn enqueue(
        &self,
        socket: &EngineSocket,
        event: String,
        data: Option<Box<RawValue>>,
        ack: Option<&str>,
    ) {
        let inbox = socket
            .data
            .connected
            .lock()
            .as_ref()
            .map(|connected| connected.inbox.clone());
        let Some(inbox) = inbox else {
            refuse(
                socket,
                ack,
                "connect to the namespace before sending events".to_owned(),
            );
            return;
        };
        let incoming = Box::new(Incoming {
            event,
            data,
            ack: ack.map(str::to_owned),
        });
        if let Err(TrySendError::Full(incoming)) = inbox.try_send(incoming)
            && let Some(ack) = &incoming.ack
        {
            let error = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {INBOX} requests are waiting on this socket; await acks before sending more"
                ),
            );
            let _ = send(socket, ack_packet(ack, &Err(error)));
        }
    }
}

/// The token of a Socket.IO handshake, where the Socket.IO servers Roster replaces read it:
/// the `CONNECT` packet's `auth: {token}`, then the `token` query parameter, then
/// `Authorization: Bearer`.
fn handshake_token(socket: &EngineSocket, auth: &str) -> Result<Option<String>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Auth {
        #[serde(default)]
        token: Option<String>,
    }
    if let Ok(Auth { token: Some(token) }) = serde_json::from_str::<Auth>(auth) {
        return Ok(Some(token));
    }
    let query = socket.req_parts.uri.query().unwrap_or_default();
    if let Some(token) = ops::query_value(query, "token", ErrorCode::Unauthorized)? {
        return Ok(Some(token));
    }
    let header = socket
        .req_parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    Ok(auth::bearer(header).map(str::to_owned))
}

/// A Socket.IO session id: random, for the client's `socket.id` (not a secret).
fn fastrand_sid() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(20)
        .collect()
}

/// A socket's session task. Set up here, and [`run`] is the future, unwrapped: an `async`
/// block or `async fn` keeps its arguments for as long as it runs (the identity, moved
/// into the session, would be kept twice).
fn serve(
    hub: Arc<Hub>,
    socket: Arc<EngineSocket>,
    peer: Arc<Peer>,
    requests: mpsc::Receiver<Box<Incoming>>,
    permit: SocketPermit,
    identity: Verified,
) -> impl Future<Output = ()> + Send {
    let session = Session::new(
        Arc::clone(&hub),
        Arc::clone(&peer),
        identity,
        crate::metrics::Transport::SocketIo,
    );
    run(hub, socket, peer, requests, permit, session)
}

async fn run(
    hub: Arc<Hub>,
    socket: Arc<EngineSocket>,
    peer: Arc<Peer>,
    mut requests: mpsc::Receiver<Box<Incoming>>,
    _permit: SocketPermit,
    mut session: Session,
) {
    let max_frame = hub.config().max_frame_bytes;
    // The token's end (far away in open mode); `auth:refresh` moves it.
    let far = || tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut ends = session.expiry();
    let expiry = tokio::time::sleep_until(ends.unwrap_or_else(far));
    tokio::pin!(expiry);
    // Once, not per request (re-registering per request showed in the `/ws` profile).
    let cancelled = peer.cancel_token().cancelled();
    tokio::pin!(cancelled);
    loop {
        let incoming = tokio::select! {
            () = &mut cancelled => break,
            () = &mut expiry => {
                // A normal leave; then `auth:expired` and the disconnect (below).
                tracing::debug!(peer = peer.id, "closing a Socket.IO socket whose token expired");
                peer.will_close(CloseReason::Expired);
                Box::pin(session.close()).await;
                peer.close(CloseReason::Expired);
                break;
            }
            incoming = requests.recv() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let reply = handle(&mut session, &incoming, max_frame).await;
        if session.expiry() != ends {
            ends = session.expiry();
            expiry.as_mut().reset(ends.unwrap_or_else(far));
        }
        if let Some(ack) = &incoming.ack {
            match send(&socket, ack_packet(ack, &reply)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    slow_reader(&hub, &peer);
                    break;
                }
                Err(TrySendError::Closed(_)) => break,
            }
        }
    }
    // Boxed: it runs once, and inline its size would be part of every socket's task.
    Box::pin(session.close()).await;
    match peer.close_reason() {
        // The transports are closed together once every socket has left.
        Some(CloseReason::Shutdown) | None => {}
        Some(reason) => {
            if reason == CloseReason::Expired {
                let _ = send(
                    &socket,
                    event_packet(
                        "auth:expired",
                        &protocol::raw_json(String::from(
                            r#"{"code":"UNAUTHORIZED","message":"the token expired"}"#,
                        )),
                    ),
                );
            }
            // Like a Socket.IO server's `disconnect()`: the client sees "io server
            // disconnect" and does not reconnect by itself.
            let _ = send(&socket, String::from("1"));
            socket.close(DisconnectReason::ClosingServer);
        }
    }
    peer.cancel_token().cancel();
}

/// Closes a socket whose queue is full.
fn slow_reader(hub: &Hub, peer: &Peer) {
    tracing::warn!(peer = peer.id, "closing a slow Socket.IO reader");
    hub.bus.stats.slow_readers.fetch_add(1, Ordering::Relaxed);
    peer.close(CloseReason::SlowReader);
}

async fn handle(session: &mut Session, incoming: &Incoming, max_frame: usize) -> Reply {
    if let Some(data) = &incoming.data
        && data.get().len() > max_frame
    {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the payload is {} bytes; the limit is {max_frame}",
                data.get().len()
            ),
        ));
    }
    session
        .handle(&incoming.event, incoming.data.as_deref())
        .await
}

/// Where the bus puts a socket's events: straight on the engine's own bounded queue
/// (`max_buffer_size` is `max_pending_messages`), framed as a Socket.IO `EVENT`. No queue
/// and no task of ours in between: an event is one hand-off, not two, and a socket keeps
/// neither. The engine socket is held weakly: it holds the peer (in `connected`).
fn outlet(socket: &Arc<EngineSocket>) -> Outlet {
    let socket = Arc::downgrade(socket);
    Outlet::Direct(Box::new(move |event| {
        let socket = socket.upgrade().ok_or(Refused::Closed)?;
        crate::metrics::METRICS
            .fanout(crate::metrics::Transport::SocketIo, event.created.elapsed());
        send(&socket, event_packet(event.name, &event.data)).map_err(|error| match error {
            TrySendError::Full(_) => Refused::Full,
            TrySendError::Closed(_) => Refused::Closed,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers read as the Socket.IO protocol writes them; what is not a header is ignored.
    #[test]
    fn packet_headers() {
        assert_eq!(
            parse("0"),
            Packet::Connect {
                namespace: "/",
                data: ""
            }
        );
        assert_eq!(
            parse("0/admin,{\"token\":1}"),
            Packet::Connect {
                namespace: "/admin",
                data: "{\"token\":1}"
            }
        );
        assert_eq!(parse("1"), Packet::Disconnect { namespace: "/" });
        assert_eq!(
            parse(r#"27["e",{}]"#),
            Packet::Event {
                namespace: "/",
                ack: Some("7"),
                data: r#"["e",{}]"#
            }
        );
        assert_eq!(
            parse(r#"2/chat,12["e"]"#),
            Packet::Event {
                namespace: "/chat",
                ack: Some("12"),
                data: r#"["e"]"#
            }
        );
        let huge = "18446744073709551616";
        assert_eq!(
            parse(&format!(r#"2{huge}["e"]"#)),
            Packet::Event {
                namespace: "/",
                ack: Some(huge),
                data: r#"["e"]"#
            }
        );
        assert_eq!(
            parse(&format!("2{}[]", "9".repeat(40))),
            Packet::Event {
                namespace: "/",
                ack: None,
                data: "[]"
            }
        );
        assert_eq!(
            parse(r#"51-3["e",{"_placeholder":true,"num":0}]"#),
            Packet::BinaryEvent {
                ack: Some("3"),
                attachments: 1
            }
        );
        assert_eq!(parse("62-"), Packet::BinaryAck { attachments: 2 });
        for ignored in ["", "3", "4", "9", "é", "x2[]"] {
            assert_eq!(parse(ignored), Packet::Ignored, "{ignored:?}");
        }
    }

    /// Event arguments must be an array starting with a string; everything else says why.
    #[test]
    fn event_argument_errors() {
        let (name, data) = event_arguments(r#"["presence:join",{"roomId":"r"},1]"#).unwrap();
        assert_eq!(name, "presence:join");
        assert_eq!(data.unwrap().get(), r#"{"roomId":"r"}"#);
        assert!(
            event_arguments(r#"["presence:leave"]"#)
                .unwrap()
                .1
                .is_none()
        );
        for (data, why) in [
            ("[]", "no arguments"),
            ("null", "null, not an array"),
            ("{}", "an object, not an array"),
            (r#"[1,{}]"#, "must be a string, not a number"),
            (r#"[null]"#, "must be a string, not null"),
            ("[", "not JSON"),
            ("", "not JSON"),
        ] {
            let error = event_arguments(data).unwrap_err();
            assert!(error.contains(why), "{data:?}: {error}");
        }
    }

    /// Acks echo the id as sent; pushes carry the event name and data.
    #[test]
    fn packets_out() {
        assert_eq!(
            ack_packet("18446744073709551616", &Ok(protocol::Ack::Done)),
            r#"318446744073709551616[{"ok":true}]"#
        );
        let data = RawValue::from_string(r#"{"a":1}"#.to_owned()).unwrap();
        assert_eq!(
            event_packet("presence:event", &data),
            r#"2["presence:event",{"a":1}]"#
        );
    }
}
