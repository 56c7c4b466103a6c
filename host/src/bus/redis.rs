//! Cross-node events over Redis Pub/Sub.
//!
//! Every event a component publishes on this node is delivered to the local sockets at
//! once and published on the room's channel, `roster:v1:events:<roomId>` (a message on its
//! channel's, `roster:v1:messages:<channel>`), wrapped in an envelope that names the node.
//! Each node subscribes only to the rooms and channels it has sockets in (the bus tells it
//! when), relays what arrives to its local sockets, and skips its own envelopes (already
//! delivered). Messages carry their seq: the bus puts them back in order.
//!
//! Three tasks, so that no caller ever waits on Redis for an event:
//! - the *publisher* drains a bounded queue of outgoing envelopes, pipelining what has
//!   accumulated, in publish order (a full queue drops, and counts, rather than block a
//!   component call);
//! - the *subscriber* owns the Pub/Sub connection (RESP3, so subscriptions are replayed by
//!   the client after a reconnect) and applies watch / unwatch requests in order, pinging
//!   so a lost connection is noticed and restored;
//! - the *receiver* turns incoming messages into local deliveries. When the Pub/Sub
//!   connection drops (the client says so with a `Disconnection` push: a killed client
//!   connection, a network cut) it wakes the subscriber. If the store's health checks
//!   then show Redis answering with nothing lost (no outage, no recovery), only the link
//!   was lost: the subscriber resubscribes on a fresh connection and tells the bus that
//!   events may have been missed (`presence:resync`, channels caught up from history).
//!   A whole-Redis outage is left to the recovery path, so watchers resync once.
//!
//! On a Redis Cluster, classic Pub/Sub is used: a message published on any node reaches
//! subscribers on every node.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Bus, EventSink, RoomFeed};
use crate::protocol::{Envelope, MESSAGE_EVENT, METADATA_EVENT, PRESENCE_EVENT, Published};
use crate::runtime::bindings::events::Event;
use crate::store::redis::{Conn, Connect, PushQueue, RedisStore};

/// Envelopes waiting to be published; beyond this, events are dropped (and counted).
const OUTBOX: usize = 16_384;
/// How long after the Pub/Sub connection drops the subscriber looks again: three health
/// checks, so an outage of Redis itself has been seen (and is left to the recovery path)
/// by then.
const RELINK_AFTER: std::time::Duration = std::time::Duration::from_millis(750);
/// Publishes sent in one pipeline at most.
const PUBLISH_BATCH: usize = 256;
/// Incoming messages waiting to be relayed; beyond this, Redis' pushes are dropped.
const INBOX: usize = 65_536;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Envelopes published.
    pub published: AtomicU64,
    /// Envelopes dropped: the outbox was full or Redis refused them.
    pub dropped: AtomicU64,
    /// Envelopes from other nodes delivered locally.
    pub relayed: AtomicU64,
}

enum Command {
    Watch(String, oneshot::Sender<Result<(), String>>),
    Unwatch(String),
}

/// The events sink and room feed of a node that shares Redis with others.
pub struct RedisFeed {
    node_id: String,
    bus: Arc<Bus>,
    /// The store, whose health says whether Redis answers.
    store: Arc<RedisStore>,
    outbox: mpsc::Sender<(String, String)>,
    commands: mpsc::UnboundedSender<Command>,
    /// Counters.
    pub stats: Arc<FeedStats>,
}

impl std::fmt::Debug for RedisFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeed")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl RedisFeed {
    /// Starts the feed's tasks (until `shutdown`) and connects it to `bus`.
    pub fn start(
        node_id: String,
        bus: Arc<Bus>,
        store: Arc<RedisStore>,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Arc<RedisFeed> {
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let (commands, requests) = mpsc::unbounded_channel();
        let (push, pushes) = PushQueue::new(INBOX);
        let stats = Arc::new(FeedStats::default());
        let link_lost = Arc::new(tokio::sync::Notify::new());
        let feed = Arc::new(RedisFeed {
            node_id: node_id.clone(),
            bus: Arc::clone(&bus),
            store: Arc::clone(&store),
            outbox,
            commands,
            stats: Arc::clone(&stats),
        });
        tasks.spawn(publisher(
            Arc::clone(&store),
            outgoing,
            Arc::clone(&stats),
            shutdown.clone(),
        ));
        tasks.spawn(subscriber(
            Arc::clone(&store),
            Arc::clone(&bus),
            push,
            requests,
            Arc::clone(&link_lost),
            shutdown.clone(),
        ));
        tasks.spawn(receiver(
            node_id,
            bus.clone(),
            pushes,
            stats,
            link_lost,
            shutdown,
        ));
        bus.set_feed(feed.clone());
        feed
    }
}

impl EventSink for RedisFeed {
    fn publish(&self, event: Event) {
        let published = Arc::new(Published::from_event(event));
        let message = published.envelope(&self.node_id);
        let topic = published.topic();
        self.bus.deliver(published);
        let queued = message.is_some_and(|message| self.outbox.try_send((topic, message)).is_ok());
        if !queued {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl RoomFeed for RedisFeed {
    fn watch<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            // Fail fast while Redis is down, rather than queue behind subscriptions that
            // are waiting out their timeouts (the store refuses writes at once too).
            if !self.store.is_healthy() {
                return Err(String::from("Redis is not reachable"));
            }
            let (done, watched) = oneshot::channel();
            self.commands
                .send(Command::Watch(topic.to_owned(), done))
                .map_err(|_| String::from("the event feed has stopped"))?;
            watched
                .await
                .map_err(|_| String::from("the event feed has stopped"))?
        })
    }

    fn unwatch(&self, topic: &str) {
        let _ = self.commands.send(Command::Unwatch(topic.to_owned()));
    }
}

async fn publisher(
    store: Arc<RedisStore>,
    mut outgoing: mpsc::Receiver<(String, String)>,
    stats: Arc<FeedStats>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            next = outgoing.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        batch.push(first);
        while batch.len() < PUBLISH_BATCH {
            match outgoing.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        match store.publish_all(&batch).await {
            Ok(()) => stats.published.fetch_add(count, Ordering::Relaxed),
            Err(error) => {
                tracing::debug!(?error, count, "could not publish events to other nodes");
                stats.dropped.fetch_add(count, Ordering::Relaxed)
            }
        };
        batch.clear();
    }
}

async fn subscriber(
    store: Arc<RedisStore>,
    bus: Arc<Bus>,
    push: PushQueue,
    mut requests: mpsc::UnboundedReceiver<Command>,
    link_lost: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let connect = store.connect().clone();
    // The Pub/Sub connection dropped: when to look again, and the store's recoveries then.
    let mut relink: Option<(tokio::time::Instant, u64)> = None;
    // When the recovery path last replaced the connection: the old one's Disconnection
    // push follows, and is not a lost link.
    let mut replaced_at: Option<tokio::time::Instant> = None;
    let timeout = connect.timeout;
    let mut conn: Option<Conn> = None;
    let mut watched: HashSet<String> = HashSet::new();
    let mut ping = tokio::time::interval(crate::store::redis::HEALTH_INTERVAL * 4);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Redis came back this many times, and lost its data this many, as last handled.
    let (mut recoveries, mut resets) = (0u64, store.resets());
    loop {
        // Redis (re)appeared: resubscribe on a fresh connection before the node takes
        // requests again, then tell the bus what may have been missed.
        if store.recoveries() != recoveries {
            let now = store.recoveries();
            let ok = if watched.is_empty() {
                true
            } else {
                conn = open(&connect, &push).await;
                let mut ok = conn.is_some();
                if let Some(conn) = conn.as_mut() {
                    for topic in &watched {
                        let subscribed = tokio::time::timeout(timeout, conn.subscribe(topic)).await;
                        ok &= matches!(subscribed, Ok(Ok(())));
                    }
                }
                ok
            };
            if ok {
                if recoveries > 0 {
                    if store.resets() == resets {
                        bus.resync();
                    } else {
                        bus.store_lost();
                    }
                }
                resets = store.resets();
                recoveries = now;
                relink = None;
                if !watched.is_empty() {
                    replaced_at = Some(tokio::time::Instant::now());
                }
                store.set_feed_ready(true);
            } else {
                conn = None;
                tokio::time::sleep(crate::store::redis::HEALTH_INTERVAL).await;
                continue;
            }
        }
        if let Some((due, seen)) = relink
            && tokio::time::Instant::now() >= due
        {
            if store.recoveries() != seen {
                // Redis itself went away and came back: the recovery path resubscribed.
                relink = None;
            } else if store.is_healthy() {
                // Only the link was lost: a fresh connection with every subscription, then
                // the rooms re-read what they may have missed.
                let mut fresh = open(&connect, &push).await;
                let mut ok = fresh.is_some();
                if let Some(fresh) = fresh.as_mut() {
                    for topic in &watched {
                        let subscribed =
                            tokio::time::timeout(timeout, fresh.subscribe(topic)).await;
                        ok &= matches!(subscribed, Ok(Ok(())));
                    }
                }
                if ok {
                    conn = fresh;
                    relink = None;
                    replaced_at = Some(tokio::time::Instant::now());
                    tracing::info!(
                        topics = watched.len(),
                        "the Pub/Sub connection was lost and is back: rooms resync"
                    );
                    bus.resync();
                } else {
                    relink = Some((due + crate::store::redis::HEALTH_INTERVAL, seen));
                }
            } else {
                // Unhealthy: wait for the recovery (it changes `recoveries`).
                relink = Some((due + crate::store::redis::HEALTH_INTERVAL, seen));
            }
        }
        let command = tokio::select! {
            () = shutdown.cancelled() => return,
            () = store.recovered.notified() => continue,
            () = link_lost.notified() => {
                let ours = replaced_at
                    .is_some_and(|at| at.elapsed() < RELINK_AFTER * 2);
                if !watched.is_empty() && !ours && relink.is_none() {
                    relink = Some((tokio::time::Instant::now() + RELINK_AFTER, store.recoveries()));
                }
                continue;
            }
            () = async {
                match relink {
                    Some((due, _)) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => continue,
            command = requests.recv() => match command {
                Some(command) => command,
                None => return,
            },
            _ = ping.tick() => {
                // Sending something is what makes a lost connection reconnect (and
                // resubscribe); a connection that never opened is opened here.
                if let Some(conn) = conn.as_mut() {
                    let _ = tokio::time::timeout(timeout, conn.command::<redis::Value>(&redis::cmd("PING"))).await;
                } else if !watched.is_empty() {
                    conn = open(&connect, &push).await;
                    if let Some(conn) = conn.as_mut() {
                        for topic in &watched {
                            let _ = tokio::time::timeout(timeout, conn.subscribe(topic)).await;
                        }
                    }
                }
                continue;
            }
        };
        match command {
            Command::Watch(room, done) => {
                if watched.contains(&room) {
                    let _ = done.send(Ok(()));
                    continue;
                }
                if conn.is_none() {
                    conn = open(&connect, &push).await;
                }
                let result = match conn.as_mut() {
                    None => Err(String::from("cannot reach Redis for the event feed")),
                    Some(conn) => {
                        match tokio::time::timeout(timeout, conn.subscribe(&room)).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(error)) => {
                                Err(format!("cannot subscribe to the room's events: {error}"))
                            }
                            Err(_) => {
                                Err(String::from("subscribing to the room's events timed out"))
                            }
                        }
                    }
                };
                if result.is_ok() {
                    watched.insert(room);
                }
                let _ = done.send(result);
            }
            Command::Unwatch(room) => {
                if watched.remove(&room)
                    && let Some(conn) = conn.as_mut()
                {
                    let _ = tokio::time::timeout(timeout, conn.unsubscribe(&room)).await;
                }
            }
        }
    }
}

async fn open(connect: &Connect, push: &PushQueue) -> Option<Conn> {
    match tokio::time::timeout(connect.timeout * 2, Conn::open(connect, Some(push.clone()))).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(error)) => {
            tracing::debug!(%error, "cannot open the Pub/Sub connection");
            None
        }
        Err(_) => None,
    }
}

async fn receiver(
    node_id: String,
    bus: Arc<Bus>,
    mut pushes: mpsc::Receiver<redis::PushInfo>,
    stats: Arc<FeedStats>,
    link_lost: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let push = tokio::select! {
            () = shutdown.cancelled() => return,
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
        if push.kind == redis::PushKind::Disconnection {
            link_lost.notify_one();
            continue;
        }
        if push.kind != redis::PushKind::Message {
            continue;
        }
        let Some(payload) = push.data.get(1).and_then(|value| match value {
            redis::Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }) else {
            continue;
        };
        match serde_json::from_str::<Envelope<'_>>(payload) {
            Ok(envelope) if envelope.v == 1 && envelope.node != node_id => {
                let name = match envelope.name.as_ref() {
                    PRESENCE_EVENT => PRESENCE_EVENT,
                    METADATA_EVENT => METADATA_EVENT,
                    MESSAGE_EVENT if envelope.seq.is_some() => MESSAGE_EVENT,
                    _ => continue,
                };
                stats.relayed.fetch_add(1, Ordering::Relaxed);
                bus.deliver(Arc::new(Published {
                    room_id: envelope.room.into_owned(),
                    name,
                    data: envelope.data.to_owned(),
                    leave_of: envelope.leave.map(Cow::into_owned),
                    seq: envelope.seq,
                    created: std::time::Instant::now(),
                }));
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "ignoring a malformed event envelope"),
        }
    }
}
