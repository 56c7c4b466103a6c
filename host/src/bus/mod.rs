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
//!
//! Message channels (DESIGN.md §8) have subscribers of their own, and an order: each
//! channel's [`Feed`] delivers its messages in `seq` order, whichever way they arrive
//! (local publishes racing each other, other nodes' through Pub/Sub). A message ahead of
//! the next expected seq waits; a gap that lasts is filled from the channel's history
//! ([`Bus::gaps`], [`Bus::fill`], driven by the hub). A socket's subscription is *pending*
//! from the moment it subscribes until its ack knows the channel's seq: what arrives
//! meanwhile is kept for it, so nothing published around the subscription is lost.

pub mod redis;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{
    LOST_EVENT, Published, RESET_EVENT, RESYNC_EVENT, channel as room_topic, message_channel,
};
use crate::runtime::bindings::events::Event;

/// Other nodes' events for the rooms and message channels this node watches, by the
/// Pub/Sub channel (*topic*) they travel on ([`room_topic`], [`message_channel`]).
pub trait RoomFeed: Send + Sync + 'static {
    /// Starts receiving `topic`'s events from other nodes; resolves once they flow (at
    /// once if they already do). Safe to call for a topic already watched.
    fn watch<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    /// Stops receiving `topic`'s events (the last local subscriber left).
    fn unwatch(&self, topic: &str);
}

/// Messages kept for one pending subscription (or waiting ahead of a gap in one channel)
/// at most; past it the subscriber is a slow reader (the waiting messages are dropped, and
/// history fills the gap).
const MAX_EARLY: usize = 1024;

/// One local subscription to a message channel.
#[derive(Debug)]
struct Sub {
    peer: Arc<Peer>,
    /// Until its ack: what arrived for it. Then: the last seq its ack covered.
    state: SubState,
}

#[derive(Debug)]
enum SubState {
    Pending(Vec<Arc<Published>>),
    Live { after: u64 },
}

/// A message channel's local subscribers and the order its messages reach them in.
#[derive(Debug, Default)]
struct Feed {
    /// The next seq to deliver; none until a subscriber's ack learned the channel's seq.
    next: Option<u64>,
    /// Messages that arrived ahead of `next`, by seq.
    waiting: BTreeMap<u64, Arc<Published>>,
    /// Since when a message has been waiting for a missing one.
    gap_since: Option<Instant>,
    subs: HashMap<u64, Sub>,
}

impl Feed {
    /// Hands `message` to every subscriber (in the order this is called: seq order).
    fn fan_out(&mut self, message: &Arc<Published>, seq: u64, stats: &BusStats) {
        for sub in self.subs.values_mut() {
            match &mut sub.state {
                SubState::Pending(early) => {
                    if early.len() < MAX_EARLY {
                        early.push(Arc::clone(message));
                    } else {
                        sub.peer.close(CloseReason::SlowReader);
                    }
                }
                SubState::Live { after } if seq > *after => match sub.peer.push(message) {
                    Pushed::Queued => {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Pushed::Overflowed => {
                        stats.slow_readers.fetch_add(1, Ordering::Relaxed);
                    }
                    Pushed::Dropped => {}
                },
                SubState::Live { .. } => {}
            }
        }
    }

    /// Delivers what waits from `next` on, in order.
    fn drain(&mut self, stats: &BusStats) {
        let Some(start) = self.next else { return };
        let mut next = start;
        // Anything below `next` was delivered (or predates every subscription).
        while let Some(entry) = self.waiting.first_entry() {
            let seq = *entry.key();
            if seq > next {
                break;
            }
            let message = entry.remove();
            if seq == next {
                self.fan_out(&message, seq, stats);
                next += 1;
            }
        }
        self.next = Some(next);
        // A gap's clock starts when `next` stops moving with messages waiting behind it.
        self.gap_since = match (self.waiting.is_empty(), next == start) {
            (true, _) => None,
            (false, true) => self.gap_since.or_else(|| Some(Instant::now())),
            (false, false) => Some(Instant::now()),
        };
    }

    /// Takes a message in, in whatever order it arrives.
    fn accept(&mut self, message: Arc<Published>, seq: u64, stats: &BusStats) {
        if self.next.is_some_and(|next| seq < next) {
            return; // delivered already
        }
        if self.waiting.len() >= MAX_EARLY {
            // Too far behind: give up what waits; history fills the gap.
            if let Some(entry) = self.waiting.last_entry() {
                entry.remove();
            }
        }
        self.waiting.insert(seq, message);
        self.drain(stats);
    }
}

/// Where the `events` import delivers.
pub trait EventSink: Send + Sync + 'static {
    /// Delivers an event to the members of its room. Never blocks, never fails the caller.
    fn publish(&self, event: Event);
}

/// Where a socket's events go.
pub enum Outlet {
    /// A queue the socket's task writes from (`/ws`), bounded by `max_pending_messages`.
    /// Its items are one pointer each: the queue allocates room for 32 of them per socket
    /// up front, so their size is part of every idle socket's cost.
    Queue(mpsc::Sender<Arc<Published>>),
    /// A transport with its own bounded queue (Socket.IO's engine): the event is framed
    /// and queued there at once, with no task of ours in between.
    Direct(Box<DirectPush>),
}

/// Frames an event and queues it on a transport's own queue.
pub type DirectPush = dyn Fn(&Published) -> Result<(), Refused> + Send + Sync;

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outlet::Queue(_) => "Outlet::Queue",
            Outlet::Direct(_) => "Outlet::Direct",
        })
    }
}

/// Why an outlet refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The socket's queue is full: a slow reader.
    Full,
    /// The socket is gone.
    Closed,
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
    /// The random binding the component stored for this socket's hold on it: the socket's
    /// leave or detach applies only while it matches (another socket may resume it).
    pub binding: u64,
    /// The connection's resume token.
    pub resume_token: String,
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
    /// Where its events go.
    outlet: Outlet,
    /// Cancelled when the server closes the socket; the socket's tasks watch it. A child of
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
    /// Whether the client said goodbye (a Close frame, a Socket.IO disconnect packet): then
    /// its connection leaves at once; a socket that just drops keeps it for a resume.
    goodbye: AtomicBool,
}

impl Peer {
    /// A peer whose events go to `outlet`, closed with the node when `shutdown` fires.
    pub fn new(id: u64, outlet: Outlet, shutdown: &CancellationToken) -> Self {
        Peer {
            id,
            outlet,
            cancel: shutdown.child_token(),
            shutdown: shutdown.clone(),
            close_reason: Mutex::new(None),
            binding: Mutex::new(None),
            overflowed: AtomicBool::new(false),
            goodbye: AtomicBool::new(false),
        }
    }

    /// The client said goodbye.
    pub fn said_goodbye(&self) {
        self.goodbye.store(true, Ordering::Relaxed);
    }

    /// Whether the client said goodbye.
    pub fn left_cleanly(&self) -> bool {
        self.goodbye.load(Ordering::Relaxed)
    }

    /// Records why the server is about to close the socket, before it does (so its session
    /// can act on the reason, e.g. leave before the close is sent); the first reason wins.
    pub fn will_close(&self, reason: CloseReason) {
        self.close_reason.lock().get_or_insert(reason);
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

    /// Queues an event without waiting; a full queue closes the socket.
    fn push(&self, event: &Arc<Published>) -> Pushed {
        let pushed = match &self.outlet {
            Outlet::Queue(tx) => tx.try_send(Arc::clone(event)).map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }),
            Outlet::Direct(push) => push(event),
        };
        match pushed {
            Ok(()) => Pushed::Queued,
            Err(Refused::Full) => {
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
            Err(Refused::Closed) => Pushed::Dropped,
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
    /// Gaps in a channel's seq filled from its history.
    pub gaps_filled: AtomicU64,
    /// Messages no subscriber here got: gone from history before a gap was filled.
    pub messages_lost: AtomicU64,
}

/// The in-process bus.
#[derive(Default)]
pub struct Bus {
    /// Room id -> subscribed peers by id. A peer is in at most one room (its binding's, or
    /// the one it is joining).
    rooms: RwLock<HashMap<String, HashMap<u64, Arc<Peer>>>>,
    /// Connection id -> the local peer bound to it.
    conns: Mutex<HashMap<String, Arc<Peer>>>,
    /// Message channel -> its local subscribers and delivery order.
    channels: Mutex<HashMap<String, Feed>>,
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
                let watched = feed.watch(&room_topic(room_id)).await;
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
            feed.unwatch(&room_topic(room_id));
        }
    }

    /// Subscribes `peer` to the message channel `channel`, pending until
    /// [`Bus::activate`]: what is delivered meanwhile is kept for it. With other nodes,
    /// waits until their messages for the channel flow.
    pub async fn subscribe_channel(&self, channel: &str, peer: &Arc<Peer>) -> Result<(), String> {
        self.channels
            .lock()
            .entry(channel.to_owned())
            .or_default()
            .subs
            .insert(
                peer.id,
                Sub {
                    peer: Arc::clone(peer),
                    state: SubState::Pending(Vec::new()),
                },
            );
        match self.feed.get() {
            Some(feed) => {
                let watched = feed.watch(&message_channel(channel)).await;
                if watched.is_err() {
                    self.unsubscribe_channel(channel, peer.id);
                }
                watched
            }
            None => Ok(()),
        }
    }

    /// Makes `peer`'s subscription live once its ack knows the channel's seq (`seq`): it
    /// gets every message after the returned seq (at least `seq`) pushed, in order; the
    /// returned messages (after `seq`, in order) are those that arrived while it was
    /// pending, for its ack.
    pub fn activate(&self, channel: &str, peer_id: u64, seq: u64) -> (u64, Vec<Arc<Published>>) {
        let mut channels = self.channels.lock();
        let Some(feed) = channels.get_mut(channel) else {
            return (seq, Vec::new());
        };
        if feed.next.is_none() {
            feed.next = Some(seq.saturating_add(1));
            feed.drain(&self.stats);
        }
        let Some(sub) = feed.subs.get_mut(&peer_id) else {
            return (seq, Vec::new());
        };
        let early = match std::mem::replace(&mut sub.state, SubState::Live { after: seq }) {
            SubState::Pending(early) => early,
            SubState::Live { after } => {
                sub.state = SubState::Live { after };
                return (after, Vec::new());
            }
        };
        let mut after = seq;
        let mut kept = Vec::new();
        for message in early {
            if let Some(s) = message.seq.filter(|s| *s > after) {
                after = s;
                kept.push(message);
            }
        }
        sub.state = SubState::Live { after };
        (after, kept)
    }

    /// Unsubscribes a peer from a message channel.
    pub fn unsubscribe_channel(&self, channel: &str, peer_id: u64) {
        let emptied = {
            let mut channels = self.channels.lock();
            match channels.get_mut(channel) {
                Some(feed) => {
                    feed.subs.remove(&peer_id);
                    let emptied = feed.subs.is_empty();
                    if emptied {
                        channels.remove(channel);
                    }
                    emptied
                }
                None => false,
            }
        };
        if emptied && let Some(feed) = self.feed.get() {
            feed.unwatch(&message_channel(channel));
        }
    }

    /// Message channels with a local subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.lock().len()
    }

    /// Channels whose next message has been missing for `at_least`, with the seq after
    /// which their history is needed.
    pub fn gaps(&self, at_least: Duration) -> Vec<(String, u64)> {
        self.channels
            .lock()
            .iter()
            .filter(|(_, feed)| {
                feed.gap_since
                    .is_some_and(|since| since.elapsed() >= at_least)
            })
            .filter_map(|(name, feed)| Some((name.clone(), feed.next?.saturating_sub(1))))
            .collect()
    }

    /// Fills a gap with messages read from history (`messages`, in seq order) when the
    /// channel's seq was `latest`: a message up to `latest` that history did not hold is
    /// gone (it left history first) and skipped, counted in `messages_lost`; later ones may
    /// still be on their way.
    pub fn fill(&self, channel: &str, messages: Vec<Arc<Published>>, latest: u64) {
        let mut channels = self.channels.lock();
        let Some(feed) = channels.get_mut(channel) else {
            return;
        };
        self.stats.gaps_filled.fetch_add(1, Ordering::Relaxed);
        for message in messages {
            if let Some(seq) = message.seq {
                feed.accept(message, seq, &self.stats);
            }
        }
        if let Some(next) = feed.next
            && next <= latest
        {
            let resume = feed
                .waiting
                .first_key_value()
                .map_or(latest + 1, |(&first, _)| first.min(latest + 1));
            tracing::warn!(
                channel,
                from = next,
                to = resume - 1,
                "messages left history before this node got them; skipping them"
            );
            self.stats
                .messages_lost
                .fetch_add(resume - next, Ordering::Relaxed);
            feed.next = Some(resume);
            feed.drain(&self.stats);
        }
    }

    /// The node's link to the other nodes was down and is back, with the store's data
    /// intact: events of the rooms and channels it follows may have been missed meanwhile.
    /// Each room's sockets get `presence:resync {roomId}` (re-read the snapshot), and each
    /// channel's history is read again for what it missed (delivered in order).
    pub fn resync(&self) {
        let rooms: Vec<(String, Vec<Arc<Peer>>)> = self
            .rooms
            .read()
            .iter()
            .map(|(room, members)| (room.clone(), members.values().cloned().collect()))
            .collect();
        for (room, members) in rooms {
            let notice = Arc::new(Published::notice(
                RESYNC_EVENT,
                &room,
                &serde_json::json!({ "roomId": room, "reason": "events may have been missed" }),
            ));
            for peer in members {
                let _ = peer.push(&notice);
            }
        }
        // Overdue at once: the hub's gap filler reads their history now.
        let overdue = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or_else(Instant::now);
        for feed in self.channels.lock().values_mut() {
            if feed.next.is_some() {
                feed.gap_since = Some(overdue);
            }
        }
    }

    /// The store lost its data (Redis came back empty): every connection held here is gone
    /// and every channel starts over. Each socket holding one gets `presence:lost {roomId,
    /// connId}` and holds nothing (it may join again); each channel's subscribers get
    /// `message:reset {channel}`, and the channel's next seq is 1 again.
    pub fn store_lost(&self) {
        let held: Vec<(String, Arc<Peer>)> = self.conns.lock().drain().collect();
        for (conn_id, peer) in held {
            if let Some(binding) = peer.unbind_if(&conn_id) {
                let notice = Arc::new(Published::notice(
                    LOST_EVENT,
                    &binding.room_id,
                    &serde_json::json!({
                        "roomId": binding.room_id,
                        "connId": conn_id,
                        "reason": "the store lost its data; join again",
                    }),
                ));
                let _ = peer.push(&notice);
                self.unsubscribe(&binding.room_id, peer.id);
            }
        }
        for (channel, feed) in self.channels.lock().iter_mut() {
            feed.next = Some(1);
            feed.waiting.clear();
            feed.gap_since = None;
            let notice = Arc::new(Published::notice(
                RESET_EVENT,
                channel,
                &serde_json::json!({ "channel": channel, "seq": 0 }),
            ));
            for sub in feed.subs.values_mut() {
                if let SubState::Live { after } = &mut sub.state {
                    *after = 0;
                    let _ = sub.peer.push(&notice);
                }
            }
        }
    }

    /// Whether the room has a local subscriber.
    pub fn has_subscribers(&self, room_id: &str) -> bool {
        self.rooms.read().contains_key(room_id)
    }

    /// Records that `peer` holds `conn_id`; another local peer that held it (the socket a
    /// resume took the connection from) is let go of it: it stops hearing the room.
    pub fn bind(&self, conn_id: &str, peer: &Arc<Peer>) {
        let previous = self
            .conns
            .lock()
            .insert(conn_id.to_owned(), Arc::clone(peer));
        if let Some(previous) = previous.filter(|previous| previous.id != peer.id)
            && let Some(binding) = previous.unbind_if(conn_id)
        {
            self.unsubscribe(&binding.room_id, previous.id);
        }
    }

    /// Forgets who holds `conn_id`, if it is still `peer_id`.
    pub fn unbind(&self, conn_id: &str, peer_id: u64) {
        let mut conns = self.conns.lock();
        if conns.get(conn_id).is_some_and(|peer| peer.id == peer_id) {
            conns.remove(conn_id);
        }
    }

    /// Rooms with at least one local subscriber.
    pub fn room_count(&self) -> usize {
        self.rooms.read().len()
    }

    /// The rooms with a local subscriber and how many local sockets each has, sorted by
    /// room id; at most `limit` of them.
    pub fn rooms(&self, limit: usize) -> Vec<(String, usize)> {
        let mut rooms: Vec<(String, usize)> = self
            .rooms
            .read()
            .iter()
            .map(|(room_id, peers)| (room_id.clone(), peers.len()))
            .collect();
        rooms.sort_unstable();
        rooms.truncate(limit);
        rooms
    }

    /// Delivers a published event to its local room, or a message to its channel's
    /// subscribers.
    pub fn deliver(&self, published: Arc<Published>) {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        if let Some(seq) = published.seq {
            let mut channels = self.channels.lock();
            if let Some(feed) = channels.get_mut(&published.room_id) {
                feed.accept(published, seq, &self.stats);
            }
            return;
        }
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

    fn peer(id: u64, capacity: usize) -> (Arc<Peer>, mpsc::Receiver<Arc<Published>>) {
        let (tx, rx) = mpsc::channel(capacity);
        let outlet = Outlet::Queue(tx);
        (
            Arc::new(Peer::new(id, outlet, &CancellationToken::new())),
            rx,
        )
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
        assert!(matches!(rx_a.try_recv(), Ok(e) if e.room_id == "lobby"));
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
            binding: 1,
            resume_token: "t".into(),
        }));
        bus.bind("c1", &a);
        bus.publish(event(PresenceChange::Leave, "lobby", "c1"));
        assert!(matches!(rx.try_recv(), Ok(e) if e.leave_of.as_deref() == Some("c1")));
        assert_eq!(a.binding(), None);
        assert_eq!(bus.room_count(), 0);
    }

    fn message(channel: &str, seq: u64) -> Arc<Published> {
        Arc::new(Published::from_event(Event::Message(
            crate::runtime::bindings::types::MessageEvent {
                channel: channel.into(),
                seq,
                id: format!("m{seq}"),
                sender: None,
                payload: "1".into(),
                ts: 1,
            },
        )))
    }

    fn seqs(rx: &mut mpsc::Receiver<Arc<Published>>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(event) = rx.try_recv() {
            out.push(event.seq.unwrap());
        }
        out
    }

    /// Messages arriving out of order reach subscribers in seq order, each once.
    #[test]
    fn messages_are_delivered_in_seq_order() {
        let bus = Bus::new();
        let (a, mut rx) = peer(1, 64);
        block_on(bus.subscribe_channel("chat", &a)).unwrap();
        let (after, early) = bus.activate("chat", 1, 0);
        assert_eq!((after, early.len()), (0, 0));
        for seq in [2, 1, 4, 3, 3, 1, 5] {
            bus.deliver(message("chat", seq));
        }
        assert_eq!(seqs(&mut rx), vec![1, 2, 3, 4, 5]);
        assert!(bus.gaps(Duration::ZERO).is_empty());
    }

    /// What arrives while a subscription is pending is handed to its ack (after the seq the
    /// ack read); later messages are pushed.
    #[test]
    fn a_pending_subscription_keeps_what_arrives() {
        let bus = Bus::new();
        let (a, mut rx_a) = peer(1, 64);
        block_on(bus.subscribe_channel("chat", &a)).unwrap();
        bus.activate("chat", 1, 10);
        let (b, mut rx_b) = peer(2, 64);
        block_on(bus.subscribe_channel("chat", &b)).unwrap();
        // b read seq 11 from the store; 11 and 12 are delivered before its ack.
        bus.deliver(message("chat", 11));
        bus.deliver(message("chat", 12));
        let (after, early) = bus.activate("chat", 2, 11);
        assert_eq!(after, 12);
        assert_eq!(
            early.iter().map(|m| m.seq.unwrap()).collect::<Vec<_>>(),
            vec![12]
        );
        bus.deliver(message("chat", 13));
        assert_eq!(seqs(&mut rx_a), vec![11, 12, 13]);
        assert_eq!(seqs(&mut rx_b), vec![13]);
    }

    /// A gap that lasts is reported, filled from history, and what history no longer holds
    /// is skipped (counted), never delivered out of order.
    #[test]
    fn gaps_are_filled_or_skipped() {
        let bus = Bus::new();
        let (a, mut rx) = peer(1, 64);
        block_on(bus.subscribe_channel("chat", &a)).unwrap();
        bus.activate("chat", 1, 0);
        bus.deliver(message("chat", 1));
        bus.deliver(message("chat", 3));
        assert_eq!(seqs(&mut rx), vec![1]);
        assert_eq!(bus.gaps(Duration::ZERO), vec![("chat".to_owned(), 1)]);
        bus.fill("chat", vec![message("chat", 2), message("chat", 3)], 3);
        assert_eq!(seqs(&mut rx), vec![2, 3]);
        assert!(bus.gaps(Duration::ZERO).is_empty());
        // 4 and 5 left history before this node got them; 6 is waiting.
        bus.deliver(message("chat", 6));
        bus.fill("chat", vec![message("chat", 6)], 6);
        assert_eq!(seqs(&mut rx), vec![6]);
        assert_eq!(bus.stats.messages_lost.load(Ordering::Relaxed), 2);
        // A fill that read an older seq does not skip what may still be on its way.
        bus.deliver(message("chat", 9));
        bus.fill("chat", Vec::new(), 6);
        assert!(seqs(&mut rx).is_empty());
        assert_eq!(bus.stats.messages_lost.load(Ordering::Relaxed), 2);
        bus.deliver(message("chat", 7));
        bus.deliver(message("chat", 8));
        assert_eq!(seqs(&mut rx), vec![7, 8, 9]);
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
            binding: 1,
            resume_token: "t".into(),
        }));
        bus.publish(event(PresenceChange::Leave, "lobby", "c1"));
        assert!(a.binding().is_some());
        assert_eq!(bus.room_count(), 1);
    }
}
