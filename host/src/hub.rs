//! The hub: the node's shared state and the one request path from every transport into the
//! components.
//!
//! `/ws`, `/v1` (and Socket.IO) decode their requests, then call the same `Hub` methods,
//! which build the call context (`now`, node id, limits) and map component failures to
//! protocol errors. No transport holds a rule of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Backend;
use crate::bus::Bus;
use crate::config::{Clock, Config};
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::protocol::ApiError;
use crate::protocol::auth::{self, Verified, Verifier};
use crate::protocol::ops::Components;
use crate::runtime::bindings::types::{
    Action, CallContext, Channel, ChannelState, ErrorCode, Failure, HeartbeatOk, HeartbeatRequest,
    HistoryRequest, JoinRequest, Joined, Left, LockInfo, LockRequest, MessageHistory,
    MetadataOperation, NodeLease, Occupancy, Principal, PublishRequest, Published, ResumeRequest,
    Resumed, Settings, SnapshotPage, SnapshotRequest, TickOptions, TickReport, WriteRequest,
};
use crate::runtime::{CallError, Runtime};
use crate::store::Store;

/// The node's shared state.
pub struct Hub {
    config: Config,
    clock: Clock,
    node_id: String,
    settings: Settings,
    /// The components.
    pub runtime: Runtime,
    /// The state store.
    pub store: Arc<dyn Store>,
    /// Local fan-out.
    pub bus: Arc<Bus>,
    /// Open sockets, against `max_sockets`.
    sockets: AtomicUsize,
    next_peer: AtomicU64,
    /// Cancelled when the node shuts down; every socket's token is a child of it.
    shutdown: CancellationToken,
    /// Tracks socket tasks, which axum's graceful shutdown does not wait for.
    socket_tasks: TaskTracker,
    /// Since when (clock ms) every lease renewal of this node has succeeded; 0 while the
    /// last one failed. Written by the lease task, read by the reaper.
    renewing_since: AtomicU64,
    /// Connections whose socket went away while the store was unavailable: their leave is
    /// retried once it is back, so no ghost stays until the TTL.
    deferred_leaves: parking_lot::Mutex<Vec<String>>,
    /// The backend, for its metrics.
    pub backend: Backend,
    /// Heartbeats waiting to be coalesced; the batcher task owns the receiver.
    beats: mpsc::Sender<Beat>,
    /// Taken by the batcher task when it starts.
    beats_rx: parking_lot::Mutex<Option<mpsc::Receiver<Beat>>>,
    /// Heartbeat calls made and heartbeats they carried, for `/metrics`.
    pub heartbeat_stats: HeartbeatStats,
    /// Connections closed before their first request (too slow, or to make room).
    pub connection_stats: Arc<crate::transport::linger::PendingStats>,
    /// Requests handled, their failures by code and their latency, for the dashboard.
    pub request_stats: RequestStats,
    /// When the node started (clock ms).
    started_at: u64,
    /// Verifies tokens; none in open mode (no key configured).
    verifier: Option<Verifier>,
    /// `/v1` requests per principal (per address in open mode); none when off.
    http_limiter: Option<DefaultKeyedRateLimiter<String>>,
}

/// A heartbeat waiting for its batch.
struct Beat {
    request: HeartbeatRequest,
    reply: oneshot::Sender<Result<HeartbeatOk, ApiError>>,
}

/// Counters of heartbeat coalescing.
#[derive(Debug, Default)]
pub struct HeartbeatStats {
    /// Heartbeats handled.
    pub beats: AtomicU64,
    /// Component calls that carried them.
    pub calls: AtomicU64,
}

impl From<CallError> for ApiError {
    fn from(error: CallError) -> Self {
        ApiError::new(ErrorCode::ComponentFailed, error.to_string())
    }
}

/// 64 bits from the operating system's cryptographic RNG: connection ids carry them, and
/// on the HTTP API a connection id is all it takes to act on a connection.
fn secure_u64() -> Result<u64, ApiError> {
    getrandom::u64().map_err(|error| {
        ApiError::new(
            ErrorCode::ComponentFailed,
            format!("the system's random number generator failed: {error}"),
        )
    })
}

/// A component call's two layers of failure as one protocol error.
fn flatten<T>(result: Result<Result<T, Failure>, CallError>) -> Result<T, ApiError> {
    Ok(result??)
}

/// Holds one of the node's socket places; frees it when dropped.
#[derive(Debug)]
pub struct SocketPermit {
    hub: Arc<Hub>,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.hub.sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub over a running runtime and store; `shutdown` stops everything it starts.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a part the node was built from"
    )]
    pub fn new(
        config: Config,
        node_id: String,
        runtime: Runtime,
        store: Arc<dyn Store>,
        bus: Arc<Bus>,
        backend: Backend,
        shutdown: CancellationToken,
        verifier: Option<Verifier>,
    ) -> Self {
        let settings = config.settings();
        let http_limiter = NonZeroU32::new(config.http_rate_limit_per_sec).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        // A bounded queue: beyond it a heartbeat waits for room, which is backpressure on
        // its socket.
        let (beats, beats_rx) = mpsc::channel(
            config
                .heartbeat_batch
                .saturating_mul(MAX_BATCHES_IN_FLIGHT)
                .max(64),
        );
        let started_at = config.clock.now_ms();
        Hub {
            clock: config.clock.clone(),
            config,
            node_id,
            settings,
            runtime,
            store,
            bus,
            sockets: AtomicUsize::new(0),
            next_peer: AtomicU64::new(1),
            shutdown,
            socket_tasks: TaskTracker::new(),
            renewing_since: AtomicU64::new(0),
            deferred_leaves: parking_lot::Mutex::new(Vec::new()),
            backend,
            beats,
            beats_rx: parking_lot::Mutex::new(Some(beats_rx)),
            heartbeat_stats: HeartbeatStats::default(),
            connection_stats: Arc::default(),
            request_stats: RequestStats::default(),
            started_at,
            verifier,
            http_limiter,
        }
    }

    /// The token verifier; none in open mode.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// Who a request with `token` is: the verified principal; with no key configured,
    /// the open principal (anyone is whoever they say), whatever the token. With a key,
    /// a missing or bad token is `UNAUTHORIZED`.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Verified, ApiError> {
        match (&self.verifier, token) {
            (None, _) => Ok(Verified {
                principal: auth::open_principal(),
                expires_at_ms: u64::MAX,
            }),
            (Some(verifier), Some(token)) => verifier.verify(token),
            (Some(_), None) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "a token is required: Authorization: Bearer <jwt>",
            )),
        }
    }

    /// Counts a `/v1` request of `key` (a principal, or an address in open mode) against
    /// the HTTP rate limit.
    pub fn admit_http(&self, key: &str) -> Result<(), ApiError> {
        match &self.http_limiter {
            Some(limiter) if limiter.check_key(&key.to_owned()).is_err() => Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} requests per second; slow down",
                    self.config.http_rate_limit_per_sec
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Makes calls as `principal`.
    pub fn caller(&self, principal: Principal) -> Caller<'_> {
        Caller {
            hub: self,
            principal,
        }
    }

    /// Makes the host's own calls (no principal: the reaper, retried leaves, tests).
    pub fn as_host(&self) -> Caller<'_> {
        self.caller(auth::open_principal())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The context of a call made now, on behalf of `principal`.
    pub fn context(&self, principal: &Principal) -> CallContext {
        CallContext {
            now: self.clock.now_ms(),
            node_id: self.node_id.clone(),
            settings: self.settings,
            principal: principal.clone(),
        }
    }

    /// The context of the host's own calls.
    pub fn own_context(&self) -> CallContext {
        self.context(&auth::open_principal())
    }

    /// Takes a socket place, or none when the node is full or shutting down.
    pub fn admit_socket(self: &Arc<Self>) -> Option<SocketPermit> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        let max = self.config.max_sockets;
        self.sockets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| SocketPermit {
                hub: Arc::clone(self),
            })
    }

    /// Open sockets.
    pub fn socket_count(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }

    /// A fresh peer id.
    pub fn next_peer_id(&self) -> u64 {
        self.next_peer.fetch_add(1, Ordering::Relaxed)
    }

    /// The token cancelled at shutdown.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The tracker of socket tasks.
    pub fn socket_tasks(&self) -> &TaskTracker {
        &self.socket_tasks
    }

    /// One heartbeat. Heartbeats that arrive together (from many sockets) are coalesced
    /// into one component call and one store round trip ([`run_heartbeat_batcher`]); each
    /// still gets its own reply.
    pub async fn coalesced_heartbeat(
        &self,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatOk, ApiError> {
        let (reply, replied) = oneshot::channel();
        let stopped = || ApiError::new(ErrorCode::StoreUnavailable, "the node is shutting down");
        self.beats
            .send(Beat { request, reply })
            .await
            .map_err(|_| stopped())?;
        replied.await.map_err(|_| stopped())?
    }

    /// Runs one batch of heartbeats and answers each.
    async fn heartbeat_batch(&self, beats: Vec<Beat>) {
        self.heartbeat_stats.calls.fetch_add(1, Ordering::Relaxed);
        self.heartbeat_stats
            .beats
            .fetch_add(beats.len() as u64, Ordering::Relaxed);
        let (requests, replies): (Vec<HeartbeatRequest>, Vec<_>) = beats
            .into_iter()
            .map(|beat| (beat.request, beat.reply))
            .unzip();
        // The host's own context: these are sockets' heartbeats of the connections they hold
        // (the session checks that), coalesced across sockets and principals.
        match self.runtime.heartbeat(&self.own_context(), &requests).await {
            Ok(results) if results.len() == replies.len() => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result.map_err(ApiError::from));
                }
            }
            Ok(_) => {
                let error = ApiError::new(
                    ErrorCode::ComponentFailed,
                    "the presence component answered a batch of heartbeats with a different number of results",
                );
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(error) => {
                let error = ApiError::from(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Renews this node's lease, and records whether renewals keep succeeding.
    pub async fn renew_lease(&self) -> Result<(), ApiError> {
        let ctx = self.own_context();
        let result = flatten(self.runtime.renew_lease(&ctx).await);
        if result.is_ok() {
            let _ = self.renewing_since.compare_exchange(
                0,
                ctx.now.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.renewing_since.store(0, Ordering::Relaxed);
        }
        result
    }

    /// Counts one request (socket or `/v1`) that took `took` and failed with `failed`, if it
    /// did: in the dashboard's counters and latency window, and in the Prometheus request
    /// histogram of its `event` and `transport`.
    pub fn record_request(
        &self,
        transport: crate::metrics::Transport,
        event: &str,
        took: std::time::Duration,
        failed: Option<ErrorCode>,
    ) {
        self.request_stats.record(took, failed);
        crate::metrics::METRICS.request(transport, event, took);
    }

    /// Every node holding a lease, for operators.
    pub async fn nodes(&self) -> Result<Vec<NodeLease>, ApiError> {
        flatten(self.runtime.nodes(&self.own_context()).await)
    }

    /// The clock's time now (ms since the epoch).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// When this node started (clock ms).
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Whether this node may judge others dead: only once its own lease has been renewed
    /// without a failure for a full lease period. After a store outage every lease looks
    /// expired until its node renews; waiting a lease period gives every live node time to.
    pub fn may_reap_dead_nodes(&self) -> bool {
        let since = self.renewing_since.load(Ordering::Relaxed);
        since != 0 && self.clock.now_ms().saturating_sub(since) >= self.config.node_lease_ms
    }

    /// One reaper tick.
    pub async fn reap(&self) -> Result<TickReport, ApiError> {
        let options = TickOptions {
            reap_dead_nodes: self.may_reap_dead_nodes(),
            at_most_every_ms: None,
        };
        flatten(self.runtime.tick(&self.own_context(), options).await)
    }
}

/// Calls into the components on behalf of one principal.
#[derive(Debug)]
pub struct Caller<'a> {
    hub: &'a Hub,
    principal: Principal,
}

impl Caller<'_> {
    /// A socket's leave of the connection it holds as `binding` (refused when another
    /// socket resumed it).
    pub async fn leave_bound(&self, conn_id: &str, binding: u64) -> Result<Left, ApiError> {
        flatten(
            self.hub
                .runtime
                .leave(&self.context(), conn_id, Some(binding))
                .await,
        )
    }

    /// A socket that held `conn_id` as `binding` dropped: keep it for the resume grace.
    pub async fn detach(&self, conn_id: &str, binding: u64) -> Result<(), ApiError> {
        flatten(
            self.hub
                .runtime
                .detach(&self.context(), conn_id, binding)
                .await,
        )
    }

    /// `presence:resume`: takes the connection over for a new socket.
    pub async fn resume(&self, request: &ResumeRequest) -> Result<Resumed, ApiError> {
        flatten(self.hub.runtime.resume(&self.context(), request).await)
    }

    fn context(&self) -> CallContext {
        self.hub.context(&self.principal)
    }
}

/// The host's calls into its components, for the operation table (`wire/ops.rs`): each
/// builds the call's context (the caller's principal in it) and turns a component's two
/// layers of failure into one protocol error.
impl Components for Caller<'_> {
    fn nonce(&self) -> Result<u64, ApiError> {
        secure_u64()
    }

    /// Asks the policy, when the principal is verified (in open mode anyone may do
    /// anything, so there is no call). A policy that fails to answer denies.
    async fn authorize(&self, action: Action, name: &str) -> Result<(), ApiError> {
        if !self.principal.verified {
            return Ok(());
        }
        match self.hub.runtime.decide(&self.context(), action, name).await {
            Ok(decision) => Ok(decision?),
            Err(error) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("the policy did not decide ({error}); denied"),
            )),
        }
    }

    /// A join; when the store failed after the joined connection existed but before the
    /// one it replaces was removed, that leave is retried.
    async fn join(&self, request: JoinRequest) -> Result<Joined, ApiError> {
        let hub = self.hub;
        let joined = flatten(hub.runtime.join(&self.context(), &request).await)?;
        if joined.replace_pending
            && let Some(old) = request.replaces
        {
            tracing::info!(conn_id = %old, "the store failed before a replaced connection left; its leave will be retried");
            hub.defer_leave(old);
        }
        Ok(joined)
    }

    /// A heartbeat over HTTP, on behalf of its caller (a socket's go through
    /// [`Hub::coalesced_heartbeat`]).
    async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatOk, ApiError> {
        let results = self
            .hub
            .runtime
            .heartbeat(&self.context(), std::slice::from_ref(&request))
            .await?;
        results.into_iter().next().map_or_else(
            || {
                Err(ApiError::new(
                    ErrorCode::ComponentFailed,
                    "the presence component answered a heartbeat with no result",
                ))
            },
            |result| result.map_err(ApiError::from),
        )
    }

    async fn leave(&self, conn_id: &str) -> Result<Left, ApiError> {
        flatten(self.hub.runtime.leave(&self.context(), conn_id, None).await)
    }

    async fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotPage, ApiError> {
        flatten(self.hub.runtime.snapshot(&self.context(), &request).await)
    }

    async fn count(&self, room_id: &str) -> Result<Occupancy, ApiError> {
        flatten(self.hub.runtime.count(&self.context(), room_id).await)
    }

    async fn metadata_write(
        &self,
        operation: MetadataOperation,
        request: WriteRequest,
    ) -> Result<ChannelState, ApiError> {
        let ctx = self.context();
        let runtime = &self.hub.runtime;
        flatten(match operation {
            MetadataOperation::Set => runtime.metadata_set(&ctx, &request).await,
            MetadataOperation::Update => runtime.metadata_update(&ctx, &request).await,
            MetadataOperation::Remove => runtime.metadata_remove(&ctx, &request).await,
        })
    }

    async fn metadata_get(&self, channel: Channel) -> Result<ChannelState, ApiError> {
        flatten(
            self.hub
                .runtime
                .metadata_get(&self.context(), &channel)
                .await,
        )
    }

    async fn acquire_lock(&self, request: LockRequest) -> Result<LockInfo, ApiError> {
        flatten(
            self.hub
                .runtime
                .acquire_lock(&self.context(), &request)
                .await,
        )
    }

    async fn release_lock(&self, request: LockRequest) -> Result<(), ApiError> {
        flatten(
            self.hub
                .runtime
                .release_lock(&self.context(), &request)
                .await,
        )
    }

    async fn tick(&self) -> Result<TickReport, ApiError> {
        self.hub.reap().await
    }

    async fn publish(&self, request: PublishRequest) -> Result<Published, ApiError> {
        flatten(self.hub.runtime.publish(&self.context(), &request).await)
    }

    async fn history(&self, request: HistoryRequest) -> Result<MessageHistory, ApiError> {
        flatten(self.hub.runtime.history(&self.context(), &request).await)
    }
}

impl Hub {
    /// Remembers a connection whose leave failed because the store was unavailable.
    pub fn defer_leave(&self, conn_id: String) {
        self.deferred_leaves.lock().push(conn_id);
    }
}

/// How often deferred leaves are retried.
const DEFERRED_LEAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Retries deferred leaves while the store answers, until the hub shuts down.
pub async fn retry_deferred_leaves(hub: Arc<Hub>) {
    let mut interval = tokio::time::interval(DEFERRED_LEAVE_INTERVAL);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let pending = std::mem::take(&mut *hub.deferred_leaves.lock());
        if pending.is_empty() {
            continue;
        }
        let mut retry = Vec::new();
        let (mut done, mut gone) = (0usize, 0usize);
        for conn_id in pending {
            match hub.as_host().leave(&conn_id).await {
                Ok(_) => done += 1,
                Err(error) if error.code == ErrorCode::StoreUnavailable => retry.push(conn_id),
                // Gone already (reaped, or the store lost it): nothing to announce.
                Err(_) => gone += 1,
            }
        }
        if done > 0 {
            tracing::info!(
                left = done,
                "announced leaves that failed while the store was down"
            );
        }
        if gone > 0 {
            tracing::info!(
                gone,
                "leaves that failed while the store was down found their connections gone (reaped, or lost with the store's data); nothing to announce"
            );
        }
        hub.deferred_leaves.lock().extend(retry);
    }
}

/// The error codes, in the order [`RequestStats`] counts them.
pub const ERROR_CODES: [ErrorCode; 12] = [
    ErrorCode::InvalidPayload,
    ErrorCode::UnknownConnection,
    ErrorCode::StaleEpoch,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::RateLimited,
    ErrorCode::PayloadTooLarge,
    ErrorCode::StoreUnavailable,
    ErrorCode::ComponentFailed,
    ErrorCode::MetadataConflict,
    ErrorCode::MetadataLock,
    ErrorCode::MetadataInvalid,
];

/// How long a latency window lasts before the next one starts.
const LATENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Requests (socket and `/v1`) handled, failures by code, and a rolling window of their
/// latency.
#[derive(Debug)]
pub struct RequestStats {
    /// Requests handled.
    pub total: AtomicU64,
    /// Failures, by [`ERROR_CODES`] position.
    pub errors: [AtomicU64; 12],
    window: parking_lot::Mutex<LatencyWindow>,
}

#[derive(Debug)]
struct LatencyWindow {
    current: Option<hdrhistogram::Histogram<u64>>,
    started: std::time::Instant,
    last: Option<LatencySummary>,
}

/// Request latency percentiles over one window (µs).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Requests in the window.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// 1 µs to 60 s, 2 significant digits: a fixed ~30 KiB. (The bounds are valid constants:
/// `None` cannot happen, and would only leave the latency at zero.)
fn latency_histogram() -> Option<hdrhistogram::Histogram<u64>> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).ok()
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            total: AtomicU64::new(0),
            errors: Default::default(),
            window: parking_lot::Mutex::new(LatencyWindow {
                current: latency_histogram(),
                started: std::time::Instant::now(),
                last: None,
            }),
        }
    }
}

impl RequestStats {
    /// Counts one request that took `took` and failed with `failed`, if it did.
    pub fn record(&self, took: std::time::Duration, failed: Option<ErrorCode>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(code) = failed
            && let Some(at) = ERROR_CODES.iter().position(|c| *c == code)
        {
            self.errors[at].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut window = self.window.lock();
        window.roll();
        if let Some(current) = window.current.as_mut() {
            let _ = current.record(micros.min(60_000_000));
        }
    }

    /// The last complete window's latency (the current one's while there is none).
    pub fn latency(&self) -> LatencySummary {
        let mut window = self.window.lock();
        window.roll();
        window
            .last
            .unwrap_or_else(|| window.current.as_ref().map(summary).unwrap_or_default())
    }
}

impl LatencyWindow {
    fn roll(&mut self) {
        if self.started.elapsed() >= LATENCY_WINDOW {
            self.last = Some(self.current.as_ref().map(summary).unwrap_or_default());
            if let Some(current) = self.current.as_mut() {
                current.reset();
            }
            self.started = std::time::Instant::now();
        }
    }
}

fn summary(h: &hdrhistogram::Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

/// How often idle component instances that no call needed are dropped.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Trims the components' idle instances to what the load used, until the hub shuts down:
/// after a burst, the memory its extra instances touched goes back to the system.
pub async fn trim_idle_instances(hub: Arc<Hub>) {
    let mut interval = tokio::time::interval(TRIM_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let dropped = hub.runtime.trim_idle();
        if dropped > 0 {
            tracing::debug!(dropped, "dropped idle component instances");
        }
    }
}

/// How long a channel's next message may be missing (while later ones wait) before its
/// history is read: far above the spread of Pub/Sub deliveries, far below what a user
/// notices.
const GAP_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Fills lasting gaps in message channels from their history, until the hub shuts down
/// (see `bus`): a message another node published whose Pub/Sub copy was lost, or that is
/// slow to arrive, still reaches this node's subscribers, in order.
pub async fn fill_message_gaps(hub: Arc<Hub>) {
    let mut interval = tokio::time::interval(GAP_WAIT / 2);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        for (channel, after) in hub.bus.gaps(GAP_WAIT) {
            let request = HistoryRequest {
                channel: channel.clone(),
                since: Some(after),
            };
            match hub.as_host().history(request).await {
                Ok(history) => {
                    let latest = history.seq;
                    let messages = history
                        .messages
                        .into_iter()
                        .map(|message| {
                            Arc::new(crate::protocol::Published::from_event(
                                crate::runtime::bindings::events::Event::Message(message),
                            ))
                        })
                        .collect();
                    hub.bus.fill(&channel, messages, latest);
                }
                Err(error) => {
                    tracing::debug!(%error, channel, "cannot read a channel's history to fill a gap yet");
                }
            }
        }
    }
}

/// Batches of heartbeats in flight at once. Few, so that under load heartbeats queue and
/// batches grow (fewer calls, fewer round trips); enough to overlap store round trips.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// Coalesces heartbeats until the hub shuts down: takes the first waiting heartbeat, then
/// whatever else is waiting (up to `ROSTER_HEARTBEAT_BATCH`, after at most
/// `ROSTER_HEARTBEAT_WINDOW_US`), and runs them as one call; at most
/// [`MAX_BATCHES_IN_FLIGHT`] batches run at once.
pub async fn run_heartbeat_batcher(hub: Arc<Hub>) {
    let Some(mut queue) = hub.beats_rx.lock().take() else {
        return;
    };
    let max = hub.config.heartbeat_batch;
    let window = std::time::Duration::from_micros(hub.config.heartbeat_window_us);
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let first = tokio::select! {
            () = hub.shutdown.cancelled() => return,
            beat = queue.recv() => match beat {
                Some(beat) => beat,
                None => return,
            },
        };
        let mut batch = vec![first];
        if !window.is_zero() && max > 1 {
            let deadline = tokio::time::Instant::now() + window;
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(beat)) => batch.push(beat),
                    _ => break,
                }
            }
        }
        while batch.len() < max {
            match queue.try_recv() {
                Ok(beat) => batch.push(beat),
                Err(_) => break,
            }
        }
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            hub.heartbeat_batch(batch).await;
            drop(permit);
        });
    }
}
