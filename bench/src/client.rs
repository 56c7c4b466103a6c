//! A load-generator client: one WebSocket connection speaking Roster's `/ws` framing or
//! Socket.IO v4 (Engine.IO v4 over WebSocket), with requests matched to acks by id and
//! pushed events handed to a callback. Kept lean, so that the generator costs less CPU than
//! the server it loads: one reader task per connection; requests are written by the task
//! that makes them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Which protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Roster's plain WebSocket at `/ws`.
    Ws,
    /// Socket.IO v4 over WebSocket at `/socket.io/`.
    Socketio,
}

/// Called for each pushed event: `(event name, data)`.
pub type OnEvent = Arc<dyn Fn(&str, &Value) + Send + Sync>;

/// Requests waiting for their ack, by id (locked briefly, never across an await).
type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// The sending half of a connection, shared by its requests and its reader's pongs.
type Sink = Arc<Mutex<SplitSink<WebSocketStream<TcpStream>, Message>>>;

/// One connection.
pub struct Client {
    transport: Transport,
    sink: Sink,
    pending: Pending,
    next_id: AtomicU64,
}

impl Client {
    /// Connects to the server at `server` (host:port) from `source` (a loopback address, or
    /// any) with `token` when the server verifies tokens (`Authorization: Bearer` on `/ws`,
    /// `auth: {token}` on Socket.IO), and starts its reader and writer.
    pub async fn connect(
        server: SocketAddr,
        transport: Transport,
        source: Option<IpAddr>,
        token: Option<&str>,
        on_event: OnEvent,
    ) -> anyhow::Result<Client> {
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = source {
            socket.set_reuseaddr(true)?;
            socket
                .bind(SocketAddr::new(source, 0))
                .context("binding the source address")?;
        }
        socket.set_nodelay(true)?;
        let stream = socket.connect(server).await.context("connecting")?;
        let url = match transport {
            Transport::Ws => format!("ws://{server}/ws"),
            Transport::Socketio => format!("ws://{server}/socket.io/?EIO=4&transport=websocket"),
        };
        let mut request = url.into_client_request()?;
        if let (Some(token), Transport::Ws) = (token, transport) {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .context("the WebSocket handshake")?;
        if transport == Transport::Socketio {
            let open = next_text(&mut socket).await?;
            if !open.starts_with('0') {
                bail!("expected an Engine.IO open packet, got {open}");
            }
            let connect = match token {
                Some(token) => format!("40{}", json!({ "token": token })),
                None => "40".to_owned(),
            };
            socket.send(Message::text(connect)).await?;
            loop {
                let connect = next_text(&mut socket).await?;
                if connect == "2" {
                    // A ping while the server is busy: answer it and keep waiting.
                    socket.send(Message::text("3")).await?;
                    continue;
                }
                if !connect.starts_with("40") {
                    bail!("the Socket.IO connect was refused: {connect}");
                }
                break;
            }
        }
        let (sink, mut stream) = socket.split();
        let sink: Sink = Arc::new(Mutex::new(sink));
        let pending: Pending = Arc::default();
        let replies = Arc::clone(&pending);
        let pong = Arc::downgrade(&sink);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                match transport {
                    Transport::Ws => {
                        let Ok(mut frame) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        if let Some(id) = frame.get("id").and_then(Value::as_u64) {
                            if let Some(waiter) = take(&replies, id) {
                                let _ = waiter.send(frame["ack"].take());
                            }
                        } else if let Some(name) = frame.get("event").and_then(Value::as_str) {
                            on_event(name, &frame["data"]);
                        }
                    }
                    Transport::Socketio => {
                        let text = text.as_str();
                        if text == "2" {
                            if let Some(sink) = pong.upgrade() {
                                let _ = sink.lock().await.send(Message::text("3")).await;
                            }
                        } else if let Some(rest) = text.strip_prefix("43") {
                            let Some(split) = rest.find('[') else {
                                continue;
                            };
                            let (Ok(id), Ok(mut args)) = (
                                rest[..split].parse::<u64>(),
                                serde_json::from_str::<Vec<Value>>(&rest[split..]),
                            ) else {
                                continue;
                            };
                            if let Some(waiter) = take(&replies, id) {
                                let _ = waiter.send(if args.is_empty() {
                                    Value::Null
                                } else {
                                    args.swap_remove(0)
                                });
                            }
                        } else if let Some(rest) = text.strip_prefix("42")
                            && let Ok(args) = serde_json::from_str::<Vec<Value>>(rest)
                            && let (Some(name), Some(data)) =
                                (args.first().and_then(Value::as_str), args.get(1))
                        {
                            on_event(name, data);
                        }
                    }
                }
            }
            // The connection ended: every waiter learns it (their senders drop).
            replies.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        Ok(Client {
            transport,
            sink,
            pending,
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends `event` with `data` and waits for its ack.
    pub async fn request(&self, event: &str, data: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, ack) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, done);
        let frame = match self.transport {
            Transport::Ws => json!({"id": id, "event": event, "data": data}).to_string(),
            Transport::Socketio => format!("42{id}{}", json!([event, data])),
        };
        self.sink
            .lock()
            .await
            .send(Message::text(frame))
            .await
            .context("the connection is closed")?;
        ack.await.context("the connection closed before the ack")
    }
}

/// Removes the waiter of request `id`.
fn take(pending: &Pending, id: u64) -> Option<oneshot::Sender<Value>> {
    pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id)
}

async fn next_text<S>(socket: &mut S) -> anyhow::Result<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("the connection closed"),
        }
    }
}
