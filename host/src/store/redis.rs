//! The Redis backend: standalone Redis (`redis://`, `rediss://`) or Redis Cluster.
//!
//! Every batch runs as one call of a generic Lua script (`batch.lua`): the script checks the
//! guards and applies the ops atomically, on the one slot the batch's hash tag names. The
//! batches of one `execute` are pipelined: one round trip on a standalone server; on a
//! cluster, one pipeline per slot, all sent at once. Scripts are called by their SHA and
//! loaded again after a server restart (NOSCRIPT).
//!
//! Failing fast: the client's own reconnection would make a command wait out a whole retry
//! cycle while Redis is down. A health task pings Redis every [`HEALTH_INTERVAL`]; while the
//! last ping (or command) failed, `execute` refuses at once with `unavailable`, and every
//! call is bounded by the configured timeout. The health task also reconnects (and, for a
//! cluster, makes the first connection when Redis was down at start-up).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{ServerErrorKind, Value};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use super::codec::{Encoded, Flat};
use super::{Batch, BatchOutcome, Store, StoreError, StoreFuture, batch_tag};

pub use super::codec::BATCH_SCRIPT;

/// How often the health task pings Redis: how long a recovered Redis may wait to be used
/// again, and how long a failed one may be tried before requests fail fast.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (or a primary behind a proxy).
    Single(String),
    /// A Redis Cluster, from these seed nodes.
    Cluster(Vec<String>),
}

impl Target {
    /// Reads `REDIS_URL`: one URL is a single server, unless `cluster` says it is a cluster's
    /// seed; several comma-separated URLs are the seed nodes of a cluster.
    pub fn parse(url: &str, cluster: bool) -> Result<Target, String> {
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        for url in &urls {
            redis::Client::open(url.as_str()).map_err(|error| format!("{url}: {error}"))?;
        }
        match urls.len() {
            0 => Err("REDIS_URL is empty".into()),
            1 if !cluster => Ok(Target::Single(urls.into_iter().next().unwrap_or_default())),
            _ => Ok(Target::Cluster(urls)),
        }
    }

    /// The URL with any password hidden, for logs.
    pub fn describe(&self) -> String {
        let hide = |url: &str| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &url[..scheme], &url[at + 1..])
            }
            _ => url.to_owned(),
        };
        match self {
            Target::Single(url) => hide(url),
            Target::Cluster(urls) => format!(
                "cluster {}",
                urls.iter().map(|u| hide(u)).collect::<Vec<_>>().join(",")
            ),
        }
    }
}

/// How to reach Redis: where, how long to wait, and which CA to trust for `rediss://`.
#[derive(Debug, Clone)]
pub struct Connect {
    /// The server or cluster.
    pub target: Target,
    /// Connect and response timeout of one round trip.
    pub timeout: Duration,
    /// A PEM CA certificate to trust for TLS (a private CA); none trusts the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Connect {
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }
}

/// A live connection of either kind. Both are cheap handles over a multiplexed connection:
/// clones share it.
#[derive(Clone)]
pub enum Conn {
    /// Standalone; reconnects by itself.
    Single(ConnectionManager),
    /// Cluster; reconnects its nodes by itself once it has a slot map.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Opens a connection to `target`. Standalone connections are lazy (they connect on
    /// first use); a cluster connection needs a reachable node to learn the slot map.
    pub async fn open(
        connect: &Connect,
        resp3_push: Option<PushQueue>,
    ) -> redis::RedisResult<Conn> {
        install_crypto_provider();
        let timeout = connect.timeout;
        match &connect.target {
            Target::Single(url) => {
                let url = match &resp3_push {
                    Some(_) => with_resp3(url),
                    None => url.clone(),
                };
                let client = match connect.certificates() {
                    Some(certificates) => redis::Client::build_with_tls(url, certificates)?,
                    None => redis::Client::open(url)?,
                };
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                if let Some(push) = resp3_push {
                    config = config.set_push_sender(push).set_automatic_resubscription();
                }
                Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            Target::Cluster(urls) => {
                let mut builder = ClusterClientBuilder::new(urls.clone());
                if let Some(certificates) = connect.certificates() {
                    builder = builder.certs(certificates);
                }
                let mut builder = builder
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if let Some(push) = resp3_push {
                    builder = builder
                        .use_protocol(redis::ProtocolVersion::RESP3)
                        .push_sender(push);
                }
                Ok(Conn::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }

    /// Sends a pipeline and returns one value per command; server errors come back as
    /// `Value::ServerError` in place.
    pub async fn pipeline(&mut self, pipe: &redis::Pipeline) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Single(conn) => pipe.query_async(conn).await,
            Conn::Cluster(conn) => pipe.query_async(conn).await,
        }
    }

    /// Sends one command.
    pub async fn command<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(conn) => cmd.query_async(conn).await,
            Conn::Cluster(conn) => cmd.query_async(conn).await,
        }
    }

    /// Subscribes (RESP3: the message arrives on the push queue; resubscribed after a
    /// reconnect by the client).
    pub async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.subscribe(channel).await,
            Conn::Cluster(conn) => conn.subscribe(channel).await,
        }
    }

    /// Unsubscribes.
    pub async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.unsubscribe(channel).await,
            Conn::Cluster(conn) => conn.unsubscribe(channel).await,
        }
    }
}

/// `url` asking for RESP3 (push messages), unless it already names a protocol.
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}protocol=resp3")
}

/// `rediss://` needs a process-wide rustls crypto provider; installing it twice is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where RESP3 push messages (Pub/Sub) go: a bounded queue that drops, and counts, what does
/// not fit, rather than letting a flood grow memory.
#[derive(Clone)]
pub struct PushQueue {
    tx: tokio::sync::mpsc::Sender<redis::PushInfo>,
    dropped: Arc<AtomicU64>,
}

impl PushQueue {
    /// A queue of `capacity` messages, and its receiver.
    pub fn new(capacity: usize) -> (PushQueue, tokio::sync::mpsc::Receiver<redis::PushInfo>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (
            PushQueue {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl redis::aio::AsyncPushSender for PushQueue {
    fn send(&self, info: redis::PushInfo) -> Result<(), redis::aio::SendError> {
        match self.tx.try_send(info) {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(redis::aio::SendError),
        }
    }
}

/// Counters for `/metrics` and for measuring round trips per request.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Pipelines sent (one per slot group on a cluster): round trips.
    pub round_trips: AtomicU64,
    /// Batches (script calls) sent.
    pub batches: AtomicU64,
}

/// The Redis store.
pub struct RedisStore {
    connect: Connect,
    timeout: Duration,
    script: redis::Script,
    /// The connection, once one exists (a cluster's first connection needs Redis up).
    /// Written by the health task, read by every call.
    conn: RwLock<Option<Conn>>,
    /// Whether the last ping or command succeeded; `execute` refuses at once while false.
    healthy: AtomicBool,
    /// Redis' clock minus this machine's (ms), measured by the health task; batches carry a
    /// deadline in Redis' clock once it is known.
    clock_offset_ms: AtomicI64,
    /// Whether `clock_offset_ms` was measured.
    clock_known: AtomicBool,
    /// Whether the event feed's subscriptions are in place (see `bus::redis`): until they
    /// are after an outage, the node is not ready and takes no requests, so no write is
    /// made whose events it could miss. True when nothing uses a feed.
    feed_ready: AtomicBool,
    /// Times Redis came back after being unreachable (or was first reached).
    recoveries: AtomicU64,
    /// Wakes the feed when Redis comes back.
    pub recovered: tokio::sync::Notify,
    /// The store's generation (a random id kept at `roster:v1:{leases}:generation`), as
    /// last read: a different one after an outage means Redis lost its data.
    generation: parking_lot::Mutex<Option<String>>,
    /// Times Redis was found to have lost its data.
    resets: AtomicU64,
    /// Counters.
    pub stats: RedisStats,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.connect.target.describe())
            .finish_non_exhaustive()
    }
}

/// This machine's wall clock, ms since the Unix epoch.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    /// A store for `connect`; it connects in the background ([`RedisStore::run_health`]).
    pub fn new(connect: Connect) -> Self {
        RedisStore {
            timeout: connect.timeout,
            connect,
            script: redis::Script::new(BATCH_SCRIPT),
            conn: RwLock::new(None),
            healthy: AtomicBool::new(false),
            clock_offset_ms: AtomicI64::new(0),
            clock_known: AtomicBool::new(false),
            feed_ready: AtomicBool::new(true),
            recoveries: AtomicU64::new(0),
            recovered: tokio::sync::Notify::new(),
            generation: parking_lot::Mutex::new(None),
            resets: AtomicU64::new(0),
            stats: RedisStats::default(),
        }
    }

    /// How this store connects (the event feed connects the same way).
    pub fn connect(&self) -> &Connect {
        &self.connect
    }

    /// Whether Redis answered lately and the event feed is in place: whether requests
    /// are taken.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.feed_ready.load(Ordering::Relaxed)
    }

    /// Sets whether the event feed's subscriptions are in place.
    pub fn set_feed_ready(&self, ready: bool) {
        self.feed_ready.store(ready, Ordering::Relaxed);
    }

    /// Times Redis came back (or was first reached).
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    /// Times Redis was found to have lost its data.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    /// Reads the store's generation, making one when there is none; counts a reset (and
    /// says so) when it is not the one read before.
    async fn check_generation(&self, conn: &mut Conn) -> bool {
        const KEY: &str = "roster:v1:{leases}:generation";
        let fresh = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let set = redis::cmd("SET").arg(KEY).arg(&fresh).arg("NX").clone();
        let _ = tokio::time::timeout(self.timeout, conn.command::<redis::Value>(&set)).await;
        let get = redis::cmd("GET").arg(KEY).clone();
        let Ok(Ok(Some(current))) =
            tokio::time::timeout(self.timeout, conn.command::<Option<String>>(&get)).await
        else {
            return false;
        };
        let mut known = self.generation.lock();
        let reset = known.as_ref().is_some_and(|known| *known != current);
        if reset {
            tracing::warn!(
                redis = %self.connect.target.describe(),
                "Redis came back without its data: every connection, metadata item and message history it held is gone; telling the affected sockets"
            );
            self.resets.fetch_add(1, Ordering::Relaxed);
        }
        *known = Some(current);
        reset
    }

    /// Connects, then pings every [`HEALTH_INTERVAL`] until `shutdown`, keeping the health
    /// flag and reconnecting as needed. Logs transitions only.
    pub async fn run_health(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(HEALTH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_healthy: Option<bool> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let healthy = self.check().await;
            match (was_healthy, healthy) {
                (Some(true), false) => {
                    tracing::warn!(redis = %self.connect.target.describe(), "Redis is unreachable; requests fail with STORE_UNAVAILABLE")
                }
                (Some(false) | None, true) => {
                    tracing::info!(redis = %self.connect.target.describe(), "Redis is reachable")
                }
                (None, false) => {
                    tracing::warn!(redis = %self.connect.target.describe(), "Redis is not reachable yet")
                }
                _ => {}
            }
            was_healthy = Some(healthy);
        }
    }

    /// Measures Redis' clock against this machine's (`TIME`, halfway through the round
    /// trip).
    async fn measure_clock(&self, conn: &mut Conn) {
        let sent = wall_ms();
        let time = tokio::time::timeout(
            self.timeout,
            conn.command::<(String, String)>(&redis::cmd("TIME")),
        )
        .await;
        let received = wall_ms();
        if let Ok(Ok((seconds, micros))) = time
            && let (Ok(seconds), Ok(micros)) = (seconds.parse::<i64>(), micros.parse::<i64>())
        {
            let redis_ms = seconds.saturating_mul(1000).saturating_add(micros / 1000);
            let local_ms = (sent + received) / 2;
            self.clock_offset_ms
                .store(redis_ms.saturating_sub(local_ms), Ordering::Relaxed);
            self.clock_known.store(true, Ordering::Relaxed);
        }
    }

    /// The deadline of a batch sent now, in Redis' clock: half the timeout from now, so
    /// that a batch Redis runs in time has the other half to answer. Past it Redis refuses
    /// the batch: a request this node reported failed (timed out) never lands later.
    fn deadline(&self) -> Option<u64> {
        if !self.clock_known.load(Ordering::Relaxed) {
            return None;
        }
        let half = i64::try_from(self.timeout.as_millis() / 2).unwrap_or(i64::MAX);
        let at = wall_ms()
            .saturating_add(self.clock_offset_ms.load(Ordering::Relaxed))
            .saturating_add(half);
        u64::try_from(at).ok()
    }

    /// One health check: connect if needed, ping, make sure the script is loaded.
    async fn check(&self) -> bool {
        let conn = self.conn.read().await.clone();
        let mut conn = match conn {
            Some(conn) => conn,
            None => match tokio::time::timeout(self.timeout * 2, Conn::open(&self.connect, None))
                .await
            {
                Ok(Ok(conn)) => {
                    *self.conn.write().await = Some(conn.clone());
                    conn
                }
                _ => {
                    self.healthy.store(false, Ordering::Relaxed);
                    return false;
                }
            },
        };
        let ping =
            tokio::time::timeout(self.timeout, conn.command::<String>(&redis::cmd("PING"))).await;
        let healthy = matches!(ping, Ok(Ok(_)));
        if healthy {
            self.measure_clock(&mut conn).await;
        }
        // A restart between two checks can go unseen (the client reconnects by itself):
        // the generation, read at every check, tells a Redis that lost its data.
        let reset = healthy && self.check_generation(&mut conn).await;
        let came_back = healthy && (reset || !self.healthy.load(Ordering::Relaxed));
        if came_back {
            // After an outage the server may have restarted without our script.
            let load = redis::cmd("SCRIPT").arg("LOAD").arg(BATCH_SCRIPT).clone();
            if let Ok(Err(error)) =
                tokio::time::timeout(self.timeout, conn.command::<String>(&load)).await
            {
                tracing::warn!(%error, "could not load the batch script");
            }
            // Requests wait for the event feed to resubscribe (every node has one).
            self.feed_ready.store(false, Ordering::Relaxed);
            self.recoveries.fetch_add(1, Ordering::Relaxed);
        }
        self.healthy.store(healthy, Ordering::Relaxed);
        if came_back {
            self.recovered.notify_waiters();
            self.recovered.notify_one();
        }
        healthy
    }

    async fn execute_batches(&self, batches: Vec<Batch>) -> Result<Vec<BatchOutcome>, StoreError> {
        if !self.is_healthy() {
            return Err(unavailable(format!(
                "Redis ({}) is not reachable",
                self.connect.target.describe()
            )));
        }
        let Some(conn) = self.conn.read().await.clone() else {
            return Err(unavailable("no connection to Redis yet"));
        };
        let mut outcomes: Vec<Option<BatchOutcome>> = vec![None; batches.len()];
        let mut calls = Vec::with_capacity(batches.len());
        for (index, batch) in batches.iter().enumerate() {
            match batch_tag(batch)? {
                None => outcomes[index] = Some(BatchOutcome::Applied(Vec::new())),
                Some(_) => calls.push((index, Encoded::new(batch))),
            }
        }
        self.stats
            .batches
            .fetch_add(calls.len() as u64, Ordering::Relaxed);
        let replies = match tokio::time::timeout(self.timeout, self.run(conn, &calls)).await {
            Ok(Ok(replies)) => replies,
            Ok(Err(error)) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    self.healthy.store(false, Ordering::Relaxed);
                }
                return Err(unavailable(error));
            }
            Err(_) => {
                self.healthy.store(false, Ordering::Relaxed);
                return Err(unavailable(format!(
                    "Redis did not answer within {:?}",
                    self.timeout
                )));
            }
        };
        for ((index, call), reply) in calls.iter().zip(replies) {
            outcomes[*index] = Some(call.decode(flatten(reply)?)?);
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.ok_or_else(|| StoreError::Rejected("a batch got no reply".into()))
            })
            .collect()
    }

    /// Sends the calls (one pipeline, or one per slot on a cluster); replies in call order.
    /// Calls that meet NOSCRIPT are sent again once the script is loaded.
    async fn run(&self, conn: Conn, calls: &[(usize, Encoded)]) -> redis::RedisResult<Vec<Value>> {
        let groups: Vec<Vec<usize>> = match &conn {
            Conn::Single(_) => vec![(0..calls.len()).collect()],
            Conn::Cluster(_) => {
                let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
                for (position, (_, call)) in calls.iter().enumerate() {
                    by_slot
                        .entry(Slot::for_key(call.keys[0].as_bytes()))
                        .or_default()
                        .push(position);
                }
                by_slot.into_values().collect()
            }
        };
        let mut replies = vec![Value::Nil; calls.len()];
        let sends = groups.iter().map(|group| {
            let mut conn = conn.clone();
            let pipe = self.pipeline(group.iter().map(|&p| &calls[p].1));
            self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
            async move { conn.pipeline(&pipe).await }
        });
        let results = futures_util::future::join_all(sends).await;
        let mut missing = Vec::new();
        for (group, result) in groups.iter().zip(results) {
            for (&position, reply) in group.iter().zip(result?) {
                if is_noscript(&reply) {
                    missing.push(position);
                }
                replies[position] = reply;
            }
        }
        if !missing.is_empty() {
            let mut conn = conn.clone();
            let load = redis::cmd("SCRIPT").arg("LOAD").arg(BATCH_SCRIPT).clone();
            conn.command::<String>(&load).await?;
            let pipe = self.pipeline(missing.iter().map(|&p| &calls[p].1));
            self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
            let retried = match &conn {
                // A cluster pipeline must stay on one slot: send them one by one.
                Conn::Cluster(_) => {
                    let mut out = Vec::with_capacity(missing.len());
                    for &p in &missing {
                        out.extend(
                            conn.pipeline(&self.pipeline(std::iter::once(&calls[p].1)))
                                .await?,
                        );
                    }
                    out
                }
                Conn::Single(_) => conn.pipeline(&pipe).await?,
            };
            for (&position, reply) in missing.iter().zip(retried) {
                replies[position] = reply;
            }
        }
        Ok(replies)
    }

    fn pipeline<'a>(&self, calls: impl Iterator<Item = &'a Encoded>) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let deadline = self.deadline();
        for call in calls {
            match &call.plain {
                Some(plain) => {
                    pipe.cmd(plain.command).arg(&plain.args);
                }
                None => {
                    let cmd = pipe
                        .cmd("EVALSHA")
                        .arg(self.script.get_hash())
                        .arg(call.keys.len())
                        .arg(&call.keys);
                    match deadline {
                        Some(deadline) => cmd.arg(call.args_with_deadline(deadline)),
                        None => cmd.arg(&call.args),
                    };
                }
            }
        }
        pipe
    }

    /// Publishes each `(channel, payload)` in order, in one pipeline (cross-node events).
    pub async fn publish_all(&self, messages: &[(String, String)]) -> Result<(), StoreError> {
        if !self.is_healthy() {
            return Err(unavailable("Redis is not reachable"));
        }
        let Some(conn) = self.conn.read().await.clone() else {
            return Err(unavailable("no connection to Redis yet"));
        };
        // A cluster routes PUBLISH by its channel's slot, and a pipeline must stay on one
        // slot: one pipeline per slot there (a message published on any node reaches
        // every node's subscribers).
        let groups: Vec<Vec<&(String, String)>> = match &conn {
            Conn::Single(_) => vec![messages.iter().collect()],
            Conn::Cluster(_) => {
                let mut by_slot: HashMap<Slot, Vec<&(String, String)>> = HashMap::new();
                for message in messages {
                    by_slot
                        .entry(Slot::for_key(message.0.as_bytes()))
                        .or_default()
                        .push(message);
                }
                by_slot.into_values().collect()
            }
        };
        let sends = groups.iter().map(|group| {
            let mut pipe = redis::pipe();
            for (channel, payload) in group {
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
            }
            let mut conn = conn.clone();
            async move { conn.pipeline(&pipe).await }
        });
        match tokio::time::timeout(self.timeout, futures_util::future::join_all(sends)).await {
            Ok(results) => results
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), |error| Err(unavailable(error))),
            Err(_) => Err(unavailable("PUBLISH timed out")),
        }
    }
}

fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(error) if error.kind() == Some(ServerErrorKind::NoScript))
}

impl Store for RedisStore {
    fn execute(
        &self,
        batches: Vec<Batch>,
    ) -> StoreFuture<'_, Result<Vec<BatchOutcome>, StoreError>> {
        Box::pin(self.execute_batches(batches))
    }

    fn ping(&self) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.is_healthy() {
                Ok(())
            } else {
                Err(unavailable(format!(
                    "Redis ({}) is not reachable",
                    self.connect.target.describe()
                )))
            }
        })
    }

    fn kind(&self) -> &'static str {
        match self.connect.target {
            Target::Single(_) => "redis",
            Target::Cluster(_) => "redis-cluster",
        }
    }
}

/// Flattens a reply the way [`Encoded::decode`] reads it: an array's items, or the one
/// value; a server error is the caller's bug.
fn flatten(reply: Value) -> Result<Vec<Flat>, StoreError> {
    fn one(value: Value) -> Result<Flat, StoreError> {
        match value {
            Value::Nil => Ok(Flat::Nil),
            Value::Int(n) => Ok(Flat::Int(n)),
            Value::BulkString(bytes) => Ok(Flat::Text(bytes)),
            Value::SimpleString(text) => Ok(Flat::Text(text.into_bytes())),
            Value::Okay => Ok(Flat::Text(b"OK".to_vec())),
            Value::ServerError(error) => Err(StoreError::Rejected(error.to_string())),
            other => Err(StoreError::Rejected(format!("unexpected reply {other:?}"))),
        }
    }
    match reply {
        Value::Array(items) | Value::Set(items) => items.into_iter().map(one).collect(),
        Value::Map(pairs) => pairs
            .into_iter()
            .flat_map(|(k, v)| [k, v])
            .map(one)
            .collect(),
        Value::ServerError(error) => Err(StoreError::Rejected(format!(
            "the batch script failed: {error}"
        ))),
        other => Ok(vec![one(other)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One URL is a server, several (or the cluster flag) a cluster; passwords stay out of logs.
    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("redis://h:6379", false).unwrap(),
            Target::Single("redis://h:6379".into())
        );
        assert_eq!(
            Target::parse("redis://a:1, redis://b:2", false).unwrap(),
            Target::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert!(matches!(
            Target::parse("redis://a:1", true).unwrap(),
            Target::Cluster(_)
        ));
        assert!(Target::parse("http://nope", false).is_err());
        assert_eq!(
            Target::parse("redis://:secret@h:1", false)
                .unwrap()
                .describe(),
            "redis://***@h:1"
        );
        assert_eq!(with_resp3("redis://h/0"), "redis://h/0?protocol=resp3");
        assert_eq!(
            with_resp3("redis://h/?db=1"),
            "redis://h/?db=1&protocol=resp3"
        );
    }

    /// Keys are listed once each and referenced by index; open score bounds become infinities.
    #[test]
    fn encoding() {
        use crate::runtime::bindings::store::{FieldGuard, Guard, Op, ZrangeOp};
        let batch = Batch {
            guards: vec![Guard::FieldIs(FieldGuard {
                key: "{a}k".into(),
                field: "f".into(),
                value: None,
            })],
            ops: vec![
                Op::Get("{a}k".into()),
                Op::ZrangeByScore(ZrangeOp {
                    key: "{a}z".into(),
                    min: i64::MIN,
                    max: 5,
                    limit: 3,
                }),
            ],
        };
        let encoded = Encoded::new(&batch);
        assert!(encoded.plain.is_none(), "a guarded batch runs as a script");
        assert_eq!(encoded.keys, vec!["{a}k".to_string(), "{a}z".to_string()]);
        assert_eq!(
            encoded.args,
            [
                "1", "1", "2", "F", "1", "f", "0", "", "get", "1", "zrange", "2", "-inf", "5", "3"
            ]
        );
    }

    /// A lone unguarded read is a plain command; its native reply decodes like the script's.
    #[test]
    fn plain_reads() {
        use crate::runtime::bindings::store::{Op, Reply};
        use crate::store::codec::{PlainReply, decode_plain};
        let read = Batch {
            guards: Vec::new(),
            ops: vec![Op::Smembers("{a}s".into())],
        };
        let encoded = Encoded::new(&read);
        let plain = encoded.plain.clone().expect("a plain read");
        assert_eq!((plain.command, plain.args.len()), ("SMEMBERS", 1));
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            encoded
                .decode(flatten(Value::Array(vec![bulk("x"), bulk("y")])).unwrap())
                .unwrap(),
            BatchOutcome::Applied(vec![Reply::Members(vec!["x".into(), "y".into()])])
        );
        assert_eq!(
            decode_plain(
                PlainReply::Texts,
                flatten(Value::Array(vec![bulk("v"), Value::Nil])).unwrap()
            )
            .unwrap(),
            BatchOutcome::Applied(vec![Reply::Texts(vec![Some("v".into()), None])])
        );
        assert_eq!(
            decode_plain(PlainReply::Text, flatten(Value::Nil).unwrap()).unwrap(),
            BatchOutcome::Applied(vec![Reply::None])
        );
    }

    /// Flat replies decode into outcomes.
    #[test]
    fn decoding() {
        use crate::runtime::bindings::store::Reply;
        use crate::store::codec::decode;
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let applied = Value::Array(vec![
            bulk("A"),
            Value::Int(3),
            bulk("I"),
            Value::Int(2),
            bulk("L"),
            Value::Int(2),
            bulk("T"),
            bulk("x"),
            bulk("N"),
            bulk("M"),
            Value::Int(1),
            bulk("m"),
        ]);
        assert_eq!(
            decode(flatten(applied).unwrap()).unwrap(),
            BatchOutcome::Applied(vec![
                Reply::Int(2),
                Reply::Texts(vec![Some("x".into()), None]),
                Reply::Members(vec!["m".into()]),
            ])
        );
        assert_eq!(
            decode(flatten(Value::Array(vec![bulk("R"), Value::Int(1)])).unwrap()).unwrap(),
            BatchOutcome::Refused(1)
        );
        assert!(matches!(
            decode(flatten(Value::Array(vec![bulk("E"), bulk("WRONGTYPE")])).unwrap()),
            Err(StoreError::Rejected(_))
        ));
    }
}
