//! The in-process bus: fans events out to the sockets of a room.
//!
//! Components publish through the `events` import; the bus serialises each event once
//! ([`Published`]) and queues it for every subscribed socket ([`Peer`]). Queues are bounded:
//! a socket whose queue is full is a slow reader and is closed (it would otherwise grow
//! memory without bound or silently miss events), and its presence leaves as on any
//! disconnect.
//!
//! The bus also knows which local socket holds which presence connection, so that when a
//! `leave` for that connection is published by someone else (the reaper, the HTTP API, a
//! second join), the socket is unbound and stops receiving the room's events.
//!
//! With several nodes, a [`RoomFeed`] brings the other nodes' events: the bus watches a
//! room on the feed while it has local subscribers ([`redis`] relays over Redis Pub/Sub).

pub mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::Published;
use crate::runtime::bindings::events::Event;

/// Other nodes' events for the rooms this node watches.
pub trait RoomFeed: Send + Sync + 'static {
    /// Starts receiving `room_id`'s events from other nodes; resolves once they flow (at
    /// once if they already do). Safe to call for a room already watched.
    fn watch<'a>(
        &'a self,
        room_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    /// Stops receiving `room_id`'s events (the last local subscriber left).
    fn unwatch(&self, room_id: &str);
}

/// Where the `events` import delivers.
pub trait EventSink: Send + Sync + 'static {
    /// Delivers an event to the members of its room. Never blocks, never fails the caller.
    fn publish(&self, event: Event);
}

/// What a socket's writer sends. Two thin pointers: the queue allocates room for 32 of
/// these per socket up front, so their size is part of every idle socket's cost.
#[derive(Debug)]
pub enum Outbound {
    /// A reply, already encoded for the socket's transport.
    Reply(Box<String>),
    /// A pushed event, shared by every recipient.
    Event(Arc<Published>),
}

/// The presence connection a socket holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The connection.
    pub conn_id: String,
    /// Its room.
    pub room_id: String,
    /// Its user: the acting user of the socket's metadata requests.
    pub user_id: String,
}

/// Why a socket is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The node is shutting down.
    Shutdown,
    /// Its outbound queue overflowed.
    SlowReader,
    /// It sent nothing (not even a pong) for two ping intervals.
    Idle,
    /// It sent a frame over the hard size limit.
    TooLarge,
    /// Its token expired without a refresh.
    Expired,
}

/// The side of a socket that the bus and the session share.
#[derive(Debug)]
pub struct Peer {
    /// Unique per node, for the room tables.
    pub id: u64,
    /// The socket's outbound queue; the writer task owns the receiver. Bounded by
    /// `max_pending_messages`.
    tx: mpsc::Sender<Outbound>,
    /// Cancelled when the server closes the socket; both socket tasks watch it. A child of
    /// the node's shutdown token.
    cancel: CancellationToken,
    /// The node's shutdown token: when it fired, the reason is [`CloseReason::Shutdown`].
    shutdown: CancellationToken,
    /// Set once, before `cancel` fires.
    close_reason: Mutex<Option<CloseReason>>,
    /// The presence connection, if joined. Only the session sets it; the bus clears it when
    /// the connection leaves by other means.
    binding: Mutex<Option<Binding>>,
    /// Whether this socket already counted as a slow reader.
    overflowed: AtomicBool,
}

impl Peer {
    /// A peer writing to `tx`, closed with the node when `shutdown` fires.
    pub fn new(id: u64, tx: mpsc::Sender<Outbound>, shutdown: &CancellationToken) -> Self {
        Peer {
            id,
            tx,
            cancel: shutdown.child_token(),
            shutdown: shutdown.clone(),
            close_reason: Mutex::new(None),
            binding: Mutex::new(None),
            overflowed: AtomicBool::new(false),
        }
    }

    /// The token that closes this socket.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Asks the socket to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        self.close_reason.lock().get_or_insert(reason);
        self.cancel.cancel();
    }

    /// Why the server is closing this socket, if it is.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let reason = *self.close_reason.lock();
        reason.or_else(|| {
            self.shutdown
                .is_cancelled()
                .then_some(CloseReason::Shutdown)
        })
    }

    /// The current binding.
    pub fn binding(&self) -> Option<Binding> {
        self.binding.lock().clone()
    }

    /// Replaces the binding, returning the old one.
    pub fn set_binding(&self, binding: Option<Binding>) -> Option<Binding> {
        std::mem::replace(&mut *self.binding.lock(), binding)
    }

    /// Clears the binding if it is `conn_id`, returning it.
    fn unbind_if(&self, conn_id: &str) -> Option<Binding> {
        let mut binding = self.binding.lock();
        if binding.as_ref().is_some_and(|b| b.conn_id == conn_id) {
            binding.take()
        } else {
            None
        }
    }

    /// Queues a reply, waiting for room: a socket that cannot take its replies stops being
    /// read (backpressure) rather than growing a queue.
    pub async fn reply(&self, text: String) -> bool {
        self.tx.send(Outbound::Reply(Box::new(text))).await.is_ok()
    }

    /// Queues an event without waiting; a full queue closes the socket.
    fn push(&self, event: &Arc<Published>) -> Pushed {
        match self.tx.try_send(Outbound::Event(Arc::clone(event))) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.overflowed.swap(true, Ordering::Relaxed) {
                    return Pushed::Dropped;
                }
                tracing::warn!(
                    peer = self.id,
                    "closing a slow reader: its outbound queue is full"
                );
                self.close(CloseReason::SlowReader);
                Pushed::Overflowed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Dropped,
        }
    }
}

/// What became of one event copy.
enum Pushed {
    Queued,
    /// The queue just overflowed: the socket is being closed.
    Overflowed,
    /// The socket is closing or gone.
    Dropped,
}

/// Counters the bus keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Events published.
    pub published: AtomicU64,
    /// Event copies queued to sockets.
    pub delivered: AtomicU64,
    /// Sockets closed as slow readers.
    pub slow_readers: AtomicU64,
}

/// The in-process bus.
#[derive(Default)]
pub struct Bus {
    /// Room id -> subscribed peers by id. A peer is in at most one room (its binding's, or
    /// the one it is joining).
    rooms: RwLock<HashMap<String, HashMap<u64, Arc<Peer>>>>,
    /// Connection id -> the local peer bound to it.
    conns: Mutex<HashMap<String, Arc<Peer>>>,
    /// Counters.
    pub stats: BusStats,
    /// Other nodes' events, when there are other nodes. Set once at start-up.
    feed: OnceLock<Arc<dyn RoomFeed>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("rooms", &self.room_count())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects the bus to other nodes' events. Only the first call counts.
    pub fn set_feed(&self, feed: Arc<dyn RoomFeed>) {
        let _ = self.feed.set(feed);
    }

    /// Subscribes `peer` to `room_id`'s events, and, with other nodes, waits until their
    /// events for the room flow too: a socket that joins after this misses nothing.
    pub async fn subscribe(&self, room_id: &str, peer: &Arc<Peer>) -> Result<(), String> {
        self.rooms
            .write()
            .entry(room_id.to_owned())
            .or_default()
            .insert(peer.id, Arc::clone(peer));
        match self.feed.get() {
            Some(feed) => {
                let watched = feed.watch(room_id).await;
                if watched.is_err() {
                    self.unsubscribe(room_id, peer.id);
                }
                watched
            }
            None => Ok(()),
        }
    }

    /// Unsubscribes a peer from a room.
    pub fn unsubscribe(&self, room_id: &str, peer_id: u64) {
        let emptied = {
            let mut rooms = self.rooms.write();
            match rooms.get_mut(room_id) {
                Some(members) => {
                    members.remove(&peer_id);
                    let emptied = members.is_empty();
                    if emptied {
                        rooms.remove(room_id);
                    }
                    emptied
                }
                None => false,
            }
        };
        if emptied && let Some(feed) = self.feed.get() {
            feed.unwatch(room_id);
        }
    }

    /// Whether the room has a local subscriber.
    pub fn has_subscribers(&self, room_id: &str) -> bool {
        self.rooms.read().contains_key(room_id)
    }

    /// Records that `peer` holds `conn_id`.
    pub fn bind(&self, conn_id: &str, peer: &Arc<Peer>) {
        self.conns
            .lock()
            .insert(conn_id.to_owned(), Arc::clone(peer));
    }

    /// Forgets who holds `conn_id`.
    pub fn unbind(&self, conn_id: &str) {
        self.conns.lock().remove(conn_id);
    }

    /// Rooms with at least one local subscriber.
    pub fn room_count(&self) -> usize {
        self.rooms.read().len()
    }

    /// Delivers a published event to its local room.
    pub fn deliver(&self, published: Arc<Published>) {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let mut delivered = 0u64;
        let mut overflowed = 0u64;
        if let Some(members) = self.rooms.read().get(&published.room_id) {
            for peer in members.values() {
                match peer.push(&published) {
                    Pushed::Queued => delivered += 1,
                    Pushed::Overflowed => overflowed += 1,
                    Pushed::Dropped => {}
                }
            }
        }
        self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.stats
            .slow_readers
            .fetch_add(overflowed, Ordering::Relaxed);
        if let Some(conn_id) = &published.leave_of {
            let peer = self.conns.lock().remove(conn_id);
            if let Some(peer) = peer {
                // Only a socket still bound to this connection stops listening: one that
                // already moved on (left, or is joining again) keeps its subscription.
                if let Some(binding) = peer.unbind_if(conn_id) {
                    self.unsubscribe(&binding.room_id, peer.id);
                }
            }
        }
    }
}

impl EventSink for Bus {
    fn publish(&self, event: Event) {
        self.deliver(Arc::new(Published::from_event(event)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::types::{PresenceChange, PresenceEvent};

    /// Runs a future that never waits (no feed is set in these tests).
    fn block_on<F: Future>(future: F) -> F::Output {
        futures_util::FutureExt::now_or_never(future).expect("completes without waiting")
    }

    fn peer(id: u64, capacity: usize) -> (Arc<Peer>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Arc::new(Peer::new(id, tx, &CancellationToken::new())), rx)
    }

    fn event(change: PresenceChange, room: &str, conn: &str) -> Event {
        Event::Presence(PresenceEvent {
            change,
            room_id: room.into(),
            user_id: "u".into(),
            conn_id: conn.into(),
            state: "{}".into(),
            ts: 1,
            epoch: 1,
        })
    }

    /// Events reach the room's subscribers and nobody else.
    #[test]
    fn fan_out_to_room_members() {
        let bus = Bus::new();
        let (a, mut rx_a) = peer(1, 4);
        let (b, mut rx_b) = peer(2, 4);
        block_on(bus.subscribe("lobby", &a)).unwrap();
        block_on(bus.subscribe("other", &b)).unwrap();
        bus.publish(event(PresenceChange::Join, "lobby", "c1"));
        assert!(matches!(rx_a.try_recv(), Ok(Outbound::Event(e)) if e.room_id == "lobby"));
        assert!(rx_b.try_recv().is_err());
    }

    /// A full queue closes the socket as a slow reader instead of growing.
    #[test]
    fn slow_readers_are_closed() {
        let bus = Bus::new();
        let (a, _rx) = peer(1, 2);
        block_on(bus.subscribe("lobby", &a)).unwrap();
        for _ in 0..3 {
            bus.publish(event(PresenceChange::Update, "lobby", "c1"));
        }
        assert!(a.cancel_token().is_cancelled());
        assert_eq!(a.close_reason(), Some(CloseReason::SlowReader));
        assert_eq!(bus.stats.slow_readers.load(Ordering::Relaxed), 1);
    }

    /// A leave published by someone else unbinds the socket holding that connection, after
    /// delivering the leave to it.
    #[test]
    fn leave_unbinds_the_local_holder() {
        let bus = Bus::new();
        let (a, mut rx) = peer(1, 4);
        block_on(bus.subscribe("lobby", &a)).unwrap();
        a.set_binding(Some(Binding {
            conn_id: "c1".into(),
            room_id: "lobby".into(),
            user_id: "u".into(),
        }));
        bus.bind("c1", &a);
        bus.publish(event(PresenceChange::Leave, "lobby", "c1"));
        assert!(
            matches!(rx.try_recv(), Ok(Outbound::Event(e)) if e.leave_of.as_deref() == Some("c1"))
        );
        assert_eq!(a.binding(), None);
        assert_eq!(bus.room_count(), 0);
    }

    /// A socket that already moved to another connection keeps its subscription.
    #[test]
    fn stale_leave_keeps_a_rejoined_socket() {
        let bus = Bus::new();
        let (a, _rx) = peer(1, 4);
        block_on(bus.subscribe("lobby", &a)).unwrap();
        bus.bind("c1", &a);
        a.set_binding(Some(Binding {
            conn_id: "c2".into(),
            room_id: "lobby".into(),
            user_id: "u".into(),
        }));
        bus.publish(event(PresenceChange::Leave, "lobby", "c1"));
        assert!(a.binding().is_some());
        assert_eq!(bus.room_count(), 1);
    }
}
