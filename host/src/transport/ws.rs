//! The plain WebSocket transport at `/ws`: JSON text frames.
//!
//! Request `{"id": 7, "event": "presence:join", "data": {...}}`, reply
//! `{"id": 7, "ack": {...}}`, push `{"event": "presence:event", "data": {...}}`. The `id` is
//! echoed as sent (any JSON value; `null` when absent or unreadable).
//!
//! Each socket runs one task ([`run`]). It handles requests one at a time, in order, so a
//! socket's replies come back in request order and a client cannot have more than one
//! request in flight per socket; meanwhile it writes the events of the socket's bounded
//! queue and sends pings. Cleanup happens in one place: when the loop ends (client closed,
//! error, idle, server closing), the session leaves, then a Close frame names the reason.

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

use crate::bus::{CloseReason, Outlet, Peer};
use crate::hub::{Hub, SocketPermit};
use crate::protocol::Published;
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

/// A socket's life: its queue, its side on the bus and its session are set up here, and
/// [`run`] is the future, unwrapped. (An `async` block around it would keep its own copy
/// of every argument for as long as the socket lives; the 368-byte socket among them.)
///
/// What an idle socket keeps, measured with `size_of_val` and as RSS per idle socket: as
/// a reader and a writer task, 1,160 bytes of reader future plus the writer's, 8.75 KiB;
/// as one task of 1,600 bytes, with the session boxed (it moves in and out of the request
/// in flight) and one timer for its three deadlines, 8.02 KiB.
fn serve(
    hub: Arc<Hub>,
    socket: WebSocket,
    permit: SocketPermit,
    identity: Verified,
) -> impl Future<Output = ()> + Send {
    let (tx, rx) = mpsc::channel(hub.config().max_pending_messages);
    let peer = Arc::new(Peer::new(
        hub.next_peer_id(),
        Outlet::Queue(tx),
        hub.shutdown_token(),
    ));
    let session = Box::new(Session::new(
        Arc::clone(&hub),
        Arc::clone(&peer),
        identity,
        crate::metrics::Transport::Ws,
    ));
    run(hub, peer, socket, rx, session, permit)
}

/// A request being handled: it owns the session until it is done, and gives it back with
/// the reply frame.
type InFlight = std::pin::Pin<Box<dyn Future<Output = (Box<Session>, String)> + Send>>;

fn start(mut session: Box<Session>, text: Utf8Bytes, max_frame: usize) -> InFlight {
    Box::pin(async move {
        let reply = handle_text(&mut session, text.as_str(), max_frame).await;
        (session, reply)
    })
}

/// What the socket's task does next.
enum Step {
    /// The server closes the socket.
    Stop,
    /// A request is done: the session is back, and the reply goes out.
    Done(Box<Session>, String),
    /// An event goes out.
    Out(Arc<Published>),
    /// A deadline: a ping, the idle limit, the token's end.
    Timer,
    Frame(Option<Result<Message, axum::Error>>),
}

/// The socket's one task: it reads requests (one at a time, so replies come back in request
/// order and a client has at most one request in flight per socket), writes replies and
/// the events queued for it, and sends pings. One task, not a reader and a writer: a reply
/// is written by the task that handled the request instead of waking another, and an idle
/// socket keeps one task's state.
///
/// Cleanup happens in one place: when the loop ends (client closed, error, idle, server
/// closing), a request still in flight finishes, the session leaves (or detaches), then a
/// Close frame names the reason.
async fn run(
    hub: Arc<Hub>,
    peer: Arc<Peer>,
    mut socket: WebSocket,
    mut rx: mpsc::Receiver<Arc<Published>>,
    session: Box<Session>,
    _permit: SocketPermit,
) {
    let ping_every = Duration::from_millis(hub.config().ping_interval_ms);
    let max_frame = hub.config().max_frame_bytes;
    // Created once, not per frame: re-arming a timer and re-registering with the
    // cancellation token for every frame showed in the profile.
    let cancelled = peer.cancel_token().cancelled();
    tokio::pin!(cancelled);
    let now = Instant::now();
    let mut deadlines = Deadlines {
        ping_every,
        next_ping: now + ping_every,
        last_frame: now,
        ends: session.expiry(),
    };
    let timer = tokio::time::sleep_until(deadlines.next(false));
    tokio::pin!(timer);
    // Whether the timer skipped the idle limit or the token's end during a request.
    let mut deferred = false;
    // Exactly one of the two holds the session.
    let mut session = Some(session);
    let mut in_flight: Option<InFlight> = None;
    loop {
        let step = tokio::select! {
            biased;
            () = &mut cancelled => Step::Stop,
            (back, reply) = poll_in_flight(&mut in_flight), if in_flight.is_some() => {
                Step::Done(back, reply)
            }
            outbound = rx.recv() => outbound.map_or(Step::Stop, Step::Out),
            () = &mut timer => Step::Timer,
            message = socket.next(), if session.is_some() => Step::Frame(message),
        };
        let sent = match step {
            Step::Stop => break,
            Step::Done(back, reply) => {
                in_flight = None;
                if back.expiry() != deadlines.ends || deferred {
                    deadlines.ends = back.expiry();
                    deferred = false;
                    timer.as_mut().reset(deadlines.next(false));
                }
                session = Some(back);
                // What the request queued (its own `join`, say) goes out before its reply,
                // as it would have from one queue.
                let mut sent = true;
                while let (true, Ok(event)) = (sent, rx.try_recv()) {
                    sent = send(&mut socket, &mut cancelled, &peer, frame(event)).await;
                }
                sent && send(&mut socket, &mut cancelled, &peer, text(reply)).await
            }
            Step::Out(event) => send(&mut socket, &mut cancelled, &peer, frame(event)).await,
            Step::Timer => {
                let now = Instant::now();
                let busy = session.is_none();
                if !busy && deadlines.ends.is_some_and(|ends| ends <= now) {
                    // A normal leave, then the close (4401) says why.
                    tracing::debug!(peer = peer.id, "closing a socket whose token expired");
                    peer.will_close(CloseReason::Expired);
                    if let Some(session) = &mut session {
                        Box::pin(session.close()).await;
                    }
                    peer.close(CloseReason::Expired);
                    break;
                }
                if !busy && deadlines.idle_at() <= now {
                    peer.close(CloseReason::Idle);
                    break;
                }
                deferred |= busy;
                let ping = deadlines.next_ping <= now;
                if ping {
                    deadlines.next_ping = now + ping_every;
                }
                timer.as_mut().reset(deadlines.next(busy));
                if !ping {
                    continue;
                }
                send(
                    &mut socket,
                    &mut cancelled,
                    &peer,
                    Message::Ping(Default::default()),
                )
                .await
            }
            Step::Frame(message) => {
                deadlines.last_frame = Instant::now();
                let reply = match message {
                    None => break,
                    Some(Err(error)) => {
                        tracing::debug!(peer = peer.id, %error, "socket read failed");
                        if is_capacity_error(&error) {
                            peer.close(CloseReason::TooLarge);
                        }
                        break;
                    }
                    Some(Ok(Message::Text(text))) => {
                        in_flight = session.take().map(|s| start(s, text, max_frame));
                        continue;
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
                        break;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                send(&mut socket, &mut cancelled, &peer, text(reply)).await
            }
        };
        if !sent {
            break;
        }
    }
    // A request in flight holds the session: it finishes (its reply is dropped), so that
    // the session can leave.
    if let Some(request) = in_flight.take() {
        session = Some(request.await.0);
    }
    // The closing steps are boxed: they run once, and inline they would add their size to
    // every socket's task for its whole life.
    if let Some(mut session) = session {
        Box::pin(session.close()).await;
    }
    Box::pin(close(&mut socket, &peer)).await;
}

/// A socket's deadlines, on one timer (three timers, one of them an interval with its own
/// allocation, made the task's future 104 bytes larger): the next ping, the idle limit
/// (nothing received for two ping intervals; not checked while a request is in flight)
/// and the token's end (likewise).
struct Deadlines {
    ping_every: Duration,
    next_ping: Instant,
    last_frame: Instant,
    /// The token's end; none in open mode.
    ends: Option<Instant>,
}

impl Deadlines {
    fn idle_at(&self) -> Instant {
        self.last_frame + self.ping_every * 2
    }

    /// The next deadline; while `busy` (a request in flight), only the next ping.
    fn next(&self, busy: bool) -> Instant {
        if busy {
            return self.next_ping;
        }
        let next = self.next_ping.min(self.idle_at());
        self.ends.map_or(next, |ends| next.min(ends))
    }
}

/// Polls the request in flight; never ready without one.
async fn poll_in_flight(in_flight: &mut Option<InFlight>) -> (Box<Session>, String) {
    std::future::poll_fn(|cx| match in_flight {
        Some(request) => request.as_mut().poll(cx),
        None => std::task::Poll::Pending,
    })
    .await
}

fn text(reply: String) -> Message {
    Message::Text(Utf8Bytes::from(reply))
}

/// Writes one frame. False when the socket is done: the write failed, the server is
/// closing it, or the write stalled (a reader that stopped reading blocks a write once its
/// TCP buffers are full; a write stuck that long is a slow reader even if its queue never
/// fills, with few, large events).
async fn send(
    socket: &mut WebSocket,
    cancelled: &mut std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    peer: &Peer,
    message: Message,
) -> bool {
    tokio::select! {
        biased;
        () = cancelled.as_mut() => false,
        sent = tokio::time::timeout(SEND_STALL, socket.send(message)) => match sent {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(peer = peer.id, "closing a slow reader: a send stalled for {SEND_STALL:?}");
                peer.close(CloseReason::SlowReader);
                false
            }
        },
    }
}

/// Sends the Close frame naming why the socket ends. Best effort, bounded: a peer that
/// reads nothing never takes it, and dropping the socket then closes the TCP connection
/// anyway.
async fn close(socket: &mut WebSocket, peer: &Peer) {
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
    let close = async {
        socket.send(Message::Close(Some(frame))).await?;
        socket.close().await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
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

/// The WebSocket message of a queued event.
fn frame(event: Arc<Published>) -> Message {
    crate::metrics::METRICS.fanout(crate::metrics::Transport::Ws, event.created.elapsed());
    Message::Text(Utf8Bytes::from(event.ws_frame()))
}
