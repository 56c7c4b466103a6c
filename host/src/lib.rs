//! Roster's host: owns every socket and every store connection, and runs the presence,
//! metadata and reaper components sandboxed. It knows nothing of presence rules.
//!
//! - [`config`]: the typed configuration (flags and environment) and the clock.
//! - [`runtime`]: the wasmtime engine, the three component slots, their instance pools, and
//!   the sandbox (deadline, memory cap, failure isolation) around every call.
//! - [`store`]: the `Store` trait behind the components' `store` import;
//!   [`store::memory`] is the embedded backend, [`store::redis`] Redis and Redis Cluster.
//! - [`bus`]: fan-out of events to the sockets of a room, bounded per socket;
//!   [`bus::redis`] carries events between nodes over Redis Pub/Sub.
//! - [`protocol`]: the wire JSON: payloads, acks, events, error codes.
//! - [`hub`]: the node's shared state and the one request path into the components.
//! - [`session`]: one socket's presence binding and per-socket rules, for every transport.
//! - [`transport`]: Socket.IO at `/socket.io/`, `/ws`, the `/v1` HTTP API, `/healthz`,
//!   `/readyz`, `/metrics`.
//! - [`reaper`]: the periodic reaper tick.
//! - [`shutdown`]: signals and the graceful drain of sockets.
//! - [`admin_client`]: the client of the admin API behind `roster components ...`.
//!
//! [`run`] is the whole server; `main.rs` only parses flags and calls it, so tests run the
//! real server in-process on `127.0.0.1:0`.

pub mod admin_client;
pub mod bus;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod reaper;
pub mod runtime;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod transport;

/// The WIT bindings under the name the shared `wire/` code uses.
pub(crate) use runtime::bindings as wit;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::bus::redis::RedisFeed;
use crate::bus::{Bus, EventSink};
use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::runtime::{Components, Runtime, RuntimeError};
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::{Connect, RedisStore, Target};

/// How often the embedded store frees expired keys.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The components could not be loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Serving failed.
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
    /// A start-up task panicked.
    #[error("start-up failed: {0}")]
    Startup(String),
}

/// The state backend a node runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded store (one node).
    Memory(Arc<MemoryStore>),
    /// Redis, shared with other nodes; events cross nodes through the feed.
    Redis(Arc<RedisStore>, Arc<RedisFeed>),
}

/// A node, built and ready to serve.
#[derive(Debug)]
pub struct Node {
    /// The shared state and request path.
    pub hub: Arc<Hub>,
    /// Tasks that run until shutdown (store health, event feed, reaper, ...).
    background: TaskTracker,
}

/// Builds the node: store, bus, runtime (compiling the components off the executor). With
/// Redis, the connection is made in the background: the node starts (not ready) while
/// Redis is down.
pub async fn start(config: Config) -> Result<Node, Error> {
    config.validate()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let background = TaskTracker::new();
    let bus = Arc::new(Bus::new());
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{:08x}", fastrand::u32(..)));
    let (store, events, backend): (Arc<dyn Store>, Arc<dyn EventSink>, Backend) = match &config
        .redis_url
    {
        None => {
            let memory = Arc::new(MemoryStore::new(config.clock.clone()));
            let sweeper = Arc::clone(&memory);
            let stop = shutdown.clone();
            background.spawn(async move {
                let mut interval = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = interval.tick() => { sweeper.sweep(); }
                    }
                }
            });
            (memory.clone(), bus.clone(), Backend::Memory(memory))
        }
        Some(url) => {
            let target = Target::parse(url, config.redis_cluster).map_err(ConfigError::RedisUrl)?;
            let ca_pem = match &config.redis_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|error| {
                    ConfigError::RedisUrl(format!(
                        "cannot read ROSTER_REDIS_CA_FILE {}: {error}",
                        path.display()
                    ))
                })?),
                None => None,
            };
            tracing::info!(redis = %target.describe(), "using Redis");
            let redis = Arc::new(RedisStore::new(Connect {
                target,
                timeout: config.redis_timeout(),
                ca_pem,
            }));
            background.spawn(Arc::clone(&redis).run_health(shutdown.clone()));
            let feed = RedisFeed::start(
                node_id.clone(),
                Arc::clone(&bus),
                Arc::clone(&redis),
                shutdown.clone(),
                &background,
            );
            (redis.clone(), feed.clone(), Backend::Redis(redis, feed))
        }
    };
    let components = match &config.components_dir {
        Some(dir) => Components::from_dir(dir),
        None => Components::embedded(),
    };
    let limits = config.limits();
    let guard = config.guard_rails();
    let cache_dir = config.component_cache_dir();
    let profiler = config.profiler;
    let runtime_store = Arc::clone(&store);
    let loaded = components.clone();
    let runtime = tokio::task::spawn_blocking(move || {
        Runtime::new(
            &loaded,
            limits,
            guard,
            cache_dir.as_deref(),
            runtime_store,
            events,
            profiler,
        )
    })
    .await
    .map_err(|error| Error::Startup(error.to_string()))??;
    tracing::info!(
        node = %node_id,
        presence = %components.presence,
        metadata = %components.metadata,
        reaper = %components.reaper,
        policy = %components.policy,
        store = store.kind(),
        "components loaded"
    );
    let verifier = config.verifier()?;
    if verifier.is_none() {
        tracing::warn!(
            "authentication is OFF (open mode): no ROSTER_JWT_SECRET, ROSTER_JWT_PUBLIC_KEY_FILE \
             or ROSTER_JWT_JWKS_FILE is set, so anyone is whoever they say; do not expose this \
             node to untrusted clients"
        );
    }
    let hub = Arc::new(Hub::new(
        config, node_id, runtime, store, bus, backend, shutdown, verifier,
    ));
    Ok(Node { hub, background })
}

impl Node {
    /// Serves on `listener` until `shutdown` resolves, then drains: stops accepting, closes
    /// every socket (announcing each `leave`) and waits up to the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Node { hub, background } = self;
        background.spawn(reaper::run(Arc::clone(&hub)));
        background.spawn(reaper::renew_leases(Arc::clone(&hub)));
        background.spawn(hub::retry_deferred_leaves(Arc::clone(&hub)));
        background.spawn(hub::run_heartbeat_batcher(Arc::clone(&hub)));
        background.spawn(hub::fill_message_gaps(Arc::clone(&hub)));
        background.spawn(hub::trim_idle_instances(Arc::clone(&hub)));
        if let (true, Some(dir)) = (
            hub.config().watch_components,
            hub.config().components_dir.clone(),
        ) {
            let watcher = Arc::clone(&hub);
            background.spawn(async move {
                runtime::watch(&watcher.runtime, &dir, watcher.shutdown_token().clone()).await;
            });
        }
        background.close();

        let (app, socketio) = transport::router(Arc::clone(&hub));
        let stopping = Arc::clone(&hub);
        let (drained, on_drained) = tokio::sync::oneshot::channel::<()>();
        // TCP_NODELAY (Nagle's delay was the benchmarks' whole p99) and lingering closes
        // (a peer still sending reads the server's last frame instead of a reset).
        let listener = transport::linger::Listener::new(
            listener,
            hub.config().send_buffer_bytes,
            Arc::clone(&hub.connection_stats),
        );
        let app = app.into_make_service_with_connect_info::<transport::linger::PeerAddr>();
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            // Drain before axum waits for in-flight requests: a Socket.IO long-poll is one,
            // and ends only when its transport is closed.
            let grace = Duration::from_millis(stopping.config().shutdown_grace_ms);
            shutdown::drain(&stopping, &socketio, grace).await;
            let _ = drained.send(());
        });
        // After the drain, requests still in flight are API calls (bounded by the component
        // deadline) or long-polls of sessions that already left: wait for the former only.
        let in_flight = hub.config().component_deadline() + Duration::from_secs(1);
        let cut_off = async move {
            match on_drained.await {
                Ok(()) => tokio::time::sleep(in_flight).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            served = served.into_future() => served?,
            () = cut_off => tracing::warn!(?in_flight, "HTTP requests still open after the drain; stopping anyway"),
        }
        background.wait().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Builds a node from `config` and serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    start(config).await?.serve(listener, shutdown).await
}
