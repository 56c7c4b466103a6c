//! The plain WebSocket transport at `/ws`: JSON text frames.
//!
//! Request `{"id": 7, "event": "presence:join", "data": {...}}`, reply
//! `{"id": 7, "ack": {...}}`, push `{"event": "presence:event", "data": {...}}`. The `id` is
//! echoed as sent (any JSON value; `null` when absent or unreadable).
//!
//! Each socket runs a reader and a writer task. The reader handles requests one at a time,
//! in order, so a socket's replies come back in request order and a client cannot have
//! more than one request in flight per socket. The writer drains the socket's bounded
//! queue and sends pings. Cleanup happens in one place: when the reader ends (client
//! closed, error, idle, server closing), the session leaves, then the writer sends a Close
//! frame naming the reason.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Uri, header};

use crate::protocol::auth::{self, Verified};
use crate::protocol::ops;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bus::{CloseReason, Outbound, Peer};
use crate::hub::{Hub, SocketPermit};
use crate::protocol::{self, ApiError, Reply};
use crate::runtime::bindings::types::ErrorCode;
use crate::session::Session;

/// The close code of a socket whose token expired (DESIGN.md §7): the 4000s are the
/// application's.
const TOKEN_EXPIRED: u16 = 4401;

/// How long one frame may take to reach the kernel: past it the reader is slow (1008).
const SEND_STALL: Duration = Duration::from_secs(10);

/// How long a closing socket may take to accept its Close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes of outgoing frames buffered before a write (every frame is flushed anyway).
const WS_WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// An error response with `status`.
fn refuse(status: StatusCode, error: ApiError) -> Response {
    let mut response = super::http::respond(Err(error));
    *response.status_mut() = status;
    response
}

/// The token of a `/ws` upgrade: `Authorization: Bearer`, else `?token=` (browsers cannot
/// set headers on a WebSocket).
fn token(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if let Some(token) = auth::bearer(header) {
        return Ok(Some(token.to_owned()));
    }
    ops::query_value(query.unwrap_or_default(), "token", ErrorCode::Unauthorized)
}

/// `GET /ws`: upgrades to a WebSocket if the node has room, the token verifies (with
/// authentication on) and the page's origin is allowed. A request that is not a
/// WebSocket upgrade gets the contract's error (400), a refused token a 401, a foreign
/// origin a 403, a full node a 503 with its reason.
pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let error = ApiError::new(
                ErrorCode::InvalidPayload,
                format!("/ws takes WebSocket upgrades only: {rejection}"),
            );
            return refuse(StatusCode::BAD_REQUEST, error);
        }
    };
    if let Err(error) = super::check_origin(&hub, &headers) {
        return refuse(StatusCode::FORBIDDEN, error);
    }
    let identity =
        match token(&headers, uri.query()).and_then(|token| hub.authenticate(token.as_deref())) {
            Ok(identity) => identity,
            Err(error) => return refuse(StatusCode::UNAUTHORIZED, error),
        };
    let Some(permit) = hub.admit_socket() else {
        let error = ApiError::new(
            ErrorCode::RateLimited,
            "this node is at its socket limit or shutting down; try another node or later",
        );
        return refuse(StatusCode::SERVICE_UNAVAILABLE, error);
    };
    let limit = hub.config().hard_frame_limit();
    let tasks = hub.socket_tasks().clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(super::WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| tasks.track_future(serve(hub, socket, permit, identity)))
}

/// A request frame. Borrowed: `data` is handed to the session without a copy.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Just the `id` of a frame that is too large or malformed, when it can be read.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
}

fn id_of(text: &str) -> Option<&RawValue> {
    serde_json::from_str::<IdOnly<'_>>(text)
        .ok()
        .and_then(|frame| frame.id)
}

fn reply_frame(id: Option<&RawValue>, reply: &Reply) -> String {
    format!(
        r#"{{"id":{},"ack":{}}}"#,
        id.map_or("null", RawValue::get),
        protocol::reply_json(reply)
    )
}

/// A socket's life. Not an `async fn`: one of those keeps its arguments for as long as it
/// runs, and this future lives as long as the socket. Everything is set up here, and the
/// future holds only what it uses (the socket split into its halves, the session holding
/// the identity): 1,160 bytes instead of 2,960 as an `async fn` (measured with
/// `size_of_val`), 8.75 KiB of RSS per idle socket instead of 9.28.
fn serve(
    hub: Arc<Hub>,
    socket: WebSocket,
    permit: SocketPermit,
    identity: Verified,
) -> impl Future<Output = ()> + Send {
    let (tx, rx) = mpsc::channel(hub.config().max_pending_messages);
    let peer = Arc::new(Peer::new(hub.next_peer_id(), tx, hub.shutdown_token()));
    let ping_every = Duration::from_millis(hub.config().ping_interval_ms);
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, rx, Arc::clone(&peer), ping_every));
    let mut session = Session::new(
        Arc::clone(&hub),
        Arc::clone(&peer),
        identity,
        crate::metrics::Transport::Ws,
    );
    async move {
        let _permit = permit;
        read_loop(&hub, &mut session, &peer, stream, ping_every).await;
        session.close().await;
        if peer.close_reason().is_none() {
            // The client went away; make the writer stop too.
            peer.cancel_token().cancel();
        }
        if let Err(error) = writer.await {
            tracing::warn!(%error, "a socket writer task failed");
        }
    }
}

async fn read_loop(
    hub: &Hub,
    session: &mut Session,
    peer: &Peer,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    ping_every: Duration,
) {
    let idle_after = ping_every * 2;
    let max_frame = hub.config().max_frame_bytes;
    // Created once, not per frame: re-arming a timer and re-registering with the
    // cancellation token for every frame showed in the profile. The idle timer fires at the
    // first deadline, then re-arms at the last frame's deadline if a frame came since.
    let cancelled = peer.cancel_token().cancelled();
    tokio::pin!(cancelled);
    let mut last_frame = Instant::now();
    let idle = tokio::time::sleep_until(last_frame + idle_after);
    tokio::pin!(idle);
    // The token's end (far away in open mode); `auth:refresh` moves it.
    let far = || Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut ends = session.expiry();
    let expiry = tokio::time::sleep_until(ends.unwrap_or_else(far));
    tokio::pin!(expiry);
    loop {
        let message = tokio::select! {
            () = &mut cancelled => return,
            () = &mut expiry => {
                // A normal leave, then the close (4401) says why.
                tracing::debug!(peer = peer.id, "closing a socket whose token expired");
                peer.will_close(CloseReason::Expired);
                session.close().await;
                peer.close(CloseReason::Expired);
                return;
            }
            () = &mut idle => {
                let deadline = last_frame + idle_after;
                if deadline > Instant::now() {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                peer.close(CloseReason::Idle);
                return;
            }
            message = stream.next() => message,
        };
        last_frame = Instant::now();
        let reply = match message {
            None => return,
            Some(Err(error)) => {
                tracing::debug!(peer = peer.id, %error, "socket read failed");
                if is_capacity_error(&error) {
                    peer.close(CloseReason::TooLarge);
                }
                return;
            }
            Some(Ok(Message::Text(text))) => {
                let reply = handle_text(session, text.as_str(), max_frame).await;
                if session.expiry() != ends {
                    ends = session.expiry();
                    expiry.as_mut().reset(ends.unwrap_or_else(far));
                }
                reply
            }
            Some(Ok(Message::Binary(_))) => reply_frame(
                None,
                &Err(ApiError::new(
                    ErrorCode::InvalidPayload,
                    "binary frames are not supported; send JSON text frames",
                )),
            ),
            Some(Ok(Message::Close(_))) => {
                // The client said goodbye: its connection leaves at once.
                peer.said_goodbye();
                return;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        if !peer.reply(reply).await {
            return;
        }
    }
}

/// Whether a read failed because a frame passed the hard size limit.
fn is_capacity_error(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)))
}

async fn handle_text(session: &mut Session, text: &str, max_frame: usize) -> String {
    if text.len() > max_frame {
        let error = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the frame is {} bytes; the limit is {max_frame}",
                text.len()
            ),
        );
        return reply_frame(id_of(text), &Err(error));
    }
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(envelope) => {
            let reply = session.handle(&envelope.event, envelope.data).await;
            reply_frame(envelope.id, &reply)
        }
        Err(error) => {
            let error = ApiError::new(
                ErrorCode::InvalidPayload,
                format!("the frame is not a request ({{\"id\", \"event\", \"data\"}}): {error}"),
            );
            reply_frame(id_of(text), &Err(error))
        }
    }
}

/// The WebSocket message of a queued frame.
fn frame(outbound: Outbound) -> Message {
    match outbound {
        Outbound::Reply(text) => Message::Text(Utf8Bytes::from(*text)),
        Outbound::Event(event) => {
            crate::metrics::METRICS.fanout(crate::metrics::Transport::Ws, event.created.elapsed());
            Message::Text(Utf8Bytes::from(event.ws_frame()))
        }
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    peer: Arc<Peer>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let cancelled = peer.cancel_token().cancelled();
    tokio::pin!(cancelled);
    loop {
        let message = tokio::select! {
            biased;
            () = &mut cancelled => break,
            outbound = rx.recv() => match outbound {
                Some(outbound) => frame(outbound),
                None => break,
            },
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        // A reader that stopped reading blocks this send once its TCP buffers are full:
        // closing the socket must not wait for it, and a send stuck that long is a slow
        // reader even if its queue never fills (few, large events).
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            sent = tokio::time::timeout(SEND_STALL, sink.send(message)) => match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(peer = peer.id, "closing a slow reader: a send stalled for {SEND_STALL:?}");
                    peer.close(CloseReason::SlowReader);
                    break;
                }
            },
        }
    }
    let (code, reason) = match peer.close_reason() {
        Some(CloseReason::Shutdown) => (close_code::AWAY, "the server is shutting down"),
        Some(CloseReason::SlowReader) => {
            (close_code::POLICY, "slow reader: too many pending messages")
        }
        Some(CloseReason::Idle) => (
            close_code::AWAY,
            "idle: nothing received for two ping intervals",
        ),
        Some(CloseReason::TooLarge) => (close_code::SIZE, "frame too large"),
        Some(CloseReason::Expired) => (TOKEN_EXPIRED, "the token expired"),
        None => (close_code::NORMAL, ""),
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    // Best effort, bounded: a peer that reads nothing never takes the Close frame, and
    // dropping the socket then closes the TCP connection anyway.
    let close = async {
        sink.send(Message::Close(Some(frame))).await?;
        sink.close().await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}
