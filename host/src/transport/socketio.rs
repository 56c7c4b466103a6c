//! The Socket.IO v4 transport at `/socket.io/`, on socketioxide: WebSocket, and HTTP
//! long-polling with upgrade. Existing `socket.io-client` apps use the protocol's event
//! names with acks, unchanged.
//!
//! It shares everything with `/ws` but the framing: each socket gets a [`Peer`] on the bus
//! and a [`Session`]. socketioxide runs every message handler as its own task, which would
//! let two requests of one socket race; so the only handler is a fallback whose extractor
//! ([`Enqueued`]) runs inline, in arrival order, and puts the request on the socket's
//! inbox. One task per socket takes requests from the inbox in order, runs them through
//! the session, and acks; a writer task emits the bus's events. A client that emits
//! without an ack callback gets no ack, as Socket.IO does.
//!
//! Disconnecting is leaving. On shutdown each socket leaves first; then the server closes
//! the transports, which socket.io clients treat as a dropped connection and reconnect
//! (to another node behind the load balancer).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{ConnectHandler as _, FromMessageParts, Value};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use tokio::sync::mpsc;

use crate::bus::{CloseReason, Outbound, Peer};
use crate::hub::{Hub, SocketPermit};
use crate::protocol::{ApiError, Reply};
use crate::runtime::bindings::types::ErrorCode;
use crate::session::Session;

/// Requests one socket may have waiting; more get `RATE_LIMITED` at once.
const INBOX: usize = 64;

/// One request, as it arrived.
struct Incoming {
    event: Result<String, String>,
    data: Option<Box<RawValue>>,
    ack: AckSender,
}

/// The socket's inbox, kept in its extensions for [`Enqueued`]. Requests are boxed: the
/// channel allocates room for 32 of its items per socket up front, 3 KiB unboxed.
#[derive(Clone)]
struct Inbox(mpsc::Sender<Box<Incoming>>);

/// Builds the Socket.IO layer and its handle (kept to close every transport at shutdown).
pub fn layer(hub: &Arc<Hub>) -> (SocketIoLayer, SocketIo) {
    let config = hub.config();
    let limit = config.hard_frame_limit();
    let (layer, io) = SocketIo::builder()
        .ping_interval(Duration::from_millis(config.socketio_ping_interval_ms))
        .ping_timeout(Duration::from_millis(config.socketio_ping_timeout_ms))
        .max_payload(u64::try_from(limit).unwrap_or(u64::MAX))
        .ws_max_message_size(limit)
        .ws_max_frame_size(limit)
        .ws_read_buffer_size(super::WS_READ_BUFFER_BYTES)
        .max_buffer_size(config.max_pending_messages)
        .build_layer();
    let hub = Arc::clone(hub);
    // The session is set up in a connect middleware, which socketioxide awaits before it
    // sends CONNECT: a client's first event can never arrive before its handler exists
    // (the connect handler proper runs on a task of its own, after CONNECT).
    let connected = async |_: SocketRef| {};
    io.ns(
        "/",
        connected.with(move |socket: SocketRef| {
            let hub = Arc::clone(&hub);
            async move { connect(hub, socket) }
        }),
    );
    (layer, io)
}

/// Admits a socket and starts its session; a refusal reaches the client as `connect_error`.
fn connect(hub: Arc<Hub>, socket: SocketRef) -> Result<(), &'static str> {
    let Some(permit) = hub.admit_socket() else {
        tracing::warn!(
            "refusing a Socket.IO connection: the node is at its socket limit or shutting down"
        );
        return Err("this node is at its socket limit or shutting down; try another node or later");
    };
    let (inbox, requests) = mpsc::channel(INBOX);
    socket.extensions.insert(Inbox(inbox));
    socket.on_fallback(async |_: Enqueued| {});
    let (tx, outbound) = mpsc::channel(hub.config().max_pending_messages);
    let peer = Arc::new(Peer::new(hub.next_peer_id(), tx, hub.shutdown_token()));
    let gone = Arc::clone(&peer);
    socket.on_disconnect(async move || gone.cancel_token().cancel());
    let tasks = hub.socket_tasks().clone();
    tasks.spawn(serve(hub, socket, peer, requests, outbound, permit));
    Ok(())
}

/// Gives a Socket.IO request a head of its own. socketioxide keeps each connection's request
/// head for the connection's life (handlers may read it), and hyper parses heads without
/// copying: the URI and header values are slices of the connection's read buffer, so that
/// whole buffer (16 KiB) stayed allocated per socket. Copying the head (a few hundred
/// bytes) lets it go. Other routes are untouched.
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

/// The extractor of the fallback handler: runs inline, in arrival order, and queues the
/// request on the socket's inbox.
struct Enqueued;

impl FromMessageParts<LocalAdapter> for Enqueued {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<LocalAdapter>>,
        value: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let ack = AckSender::from_message_parts(socket, value, ack_id)?;
        let (event, data) = split_message(value);
        let incoming = Box::new(Incoming { event, data, ack });
        let Some(Inbox(inbox)) = socket.extensions.get::<Inbox>() else {
            return Ok(Enqueued);
        };
        if let Err(mpsc::error::TrySendError::Full(incoming)) = inbox.try_send(incoming) {
            let error = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {INBOX} requests are waiting on this socket; await acks before sending more"
                ),
            );
            let _ = incoming.ack.send(&error);
        }
        Ok(Enqueued)
    }
}

/// Splits a message's arguments, `["event", data, ...]`, into the event name and the first
/// argument, borrowing the raw JSON rather than rebuilding it. Extra arguments are ignored;
/// a message without arguments has no data (the session then names the first missing
/// field).
fn split_message(value: &Value) -> (Result<String, String>, Option<Box<RawValue>>) {
    let Some(text) = value.as_str() else {
        return (Err("binary messages are not supported".into()), None);
    };
    match serde_json::from_str::<Vec<&RawValue>>(text.as_str()) {
        Ok(arguments) => {
            let event = arguments
                .first()
                .ok_or_else(|| String::from("it is empty"))
                .and_then(|name| {
                    serde_json::from_str::<String>(name.get()).map_err(|error| error.to_string())
                });
            (event, arguments.get(1).map(|data| (*data).to_owned()))
        }
        Err(error) => (Err(error.to_string()), None),
    }
}

async fn serve(
    hub: Arc<Hub>,
    socket: SocketRef,
    peer: Arc<Peer>,
    mut requests: mpsc::Receiver<Box<Incoming>>,
    outbound: mpsc::Receiver<Outbound>,
    _permit: SocketPermit,
) {
    let writer = tokio::spawn(write_loop(
        Arc::clone(&hub),
        socket.clone(),
        outbound,
        Arc::clone(&peer),
    ));
    let mut session = Session::new(Arc::clone(&hub), Arc::clone(&peer));
    let max_frame = hub.config().max_frame_bytes;
    loop {
        let incoming = tokio::select! {
            () = peer.cancel_token().cancelled() => break,
            incoming = requests.recv() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let reply = handle(&mut session, &incoming, max_frame).await;
        let sent = match &reply {
            Ok(ack) => incoming.ack.send(ack),
            Err(error) => incoming.ack.send(error),
        };
        if let Err(error) = sent {
            tracing::debug!(peer = peer.id, %error, "could not send an ack");
        }
    }
    session.close().await;
    match peer.close_reason() {
        // The transports are closed together once every socket has left.
        Some(CloseReason::Shutdown) | None => {}
        Some(_) => {
            let _ = socket.disconnect();
        }
    }
    peer.cancel_token().cancel();
    if let Err(error) = writer.await {
        tracing::warn!(%error, "a Socket.IO writer task failed");
    }
}

async fn handle(session: &mut Session, incoming: &Incoming, max_frame: usize) -> Reply {
    let event = incoming.event.as_deref().map_err(|why| {
        ApiError::new(
            ErrorCode::InvalidPayload,
            format!("the message has no event name: {why}"),
        )
    })?;
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
    session.handle(event, incoming.data.as_deref()).await
}

async fn write_loop(
    hub: Arc<Hub>,
    socket: SocketRef,
    mut outbound: mpsc::Receiver<Outbound>,
    peer: Arc<Peer>,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = peer.cancel_token().cancelled() => return,
            outbound = outbound.recv() => match outbound {
                Some(Outbound::Event(event)) => event,
                // Socket.IO replies are acks, sent by the session task.
                Some(Outbound::Reply(_)) => continue,
                None => return,
            },
        };
        if let Err(error) = socket.emit(event.name, &*event.data) {
            if socket.connected() {
                tracing::warn!(peer = peer.id, %error, "closing a slow Socket.IO reader");
                hub.bus
                    .stats
                    .slow_readers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                peer.close(CloseReason::SlowReader);
            }
            return;
        }
    }
}
