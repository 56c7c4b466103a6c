//! The host's configuration: one typed struct, read from flags and the environment.
//!
//! The names users already have in their deployments (`PORT`, `REDIS_URL`, `PRESENCE_*`)
//! keep their meaning; everything Roster adds is `ROSTER_*`. Every default is a
//! `DEFAULT_*` constant whose doc says why that number.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};

#[path = "../../wire/defaults.rs"]
mod defaults;
pub use defaults::*;

/// The port of the original Node server, which clients and load balancers expect.
pub const DEFAULT_PORT: u16 = 3000;
/// 3 s: a silent connection is announced gone at most this long after its TTL.
pub const DEFAULT_REAPER_INTERVAL_MS: u64 = 3_000;
/// Messages queued for one socket before it is closed as a slow reader: a 1,000-member
/// room's join storm fits, a stalled reader's backlog stays bounded.
pub const DEFAULT_MAX_PENDING_MESSAGES: usize = 1024;
/// Below the 20,000 open files one process may hold on these machines, with headroom.
pub const DEFAULT_MAX_SOCKETS: usize = 16_384;
/// Requests per second one socket may send (bursts of twice that): far above any real
/// heartbeat cadence, low enough that one client cannot monopolise a core.
pub const DEFAULT_RATE_LIMIT_PER_SEC: u32 = 50;
/// WebSocket pings keep NATs open and find dead peers; a socket silent for two intervals
/// is closed.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 25_000;
/// Socket.IO's own default ping interval: clients that set none expect it.
pub const DEFAULT_SOCKETIO_PING_INTERVAL_MS: u64 = 25_000;
/// Socket.IO's own default ping timeout.
pub const DEFAULT_SOCKETIO_PING_TIMEOUT_MS: u64 = 20_000;
/// Clock skew forgiven on a token's `exp` and `nbf`: clients and issuers are rarely more
/// than seconds apart, and a refresh arrives well within it.
pub const DEFAULT_JWT_LEEWAY_MS: u64 = 30_000;
/// `/v1` requests per second per principal (per address in open mode), bursts of twice
/// that: a backend's steady use, not a flood.
pub const DEFAULT_HTTP_RATE_LIMIT_PER_SEC: u32 = 200;
/// A Redis round trip takes well under a millisecond on a LAN; half a second means Redis is
/// in trouble, and leaves room inside the component deadline for a write and a retry.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 500;
/// A component call normally takes microseconds plus store round trips; a second is
/// generous for a slow store and still bounds a runaway loop.
pub const DEFAULT_COMPONENT_DEADLINE_MS: u64 = 1_000;
/// The components need well under 2 MiB; 64 MiB bounds a leak without starving a big room's
/// snapshot.
pub const DEFAULT_COMPONENT_MEMORY_MIB: u64 = 64;
/// Live instances per component: concurrent calls beyond this wait for one.
pub const DEFAULT_COMPONENT_INSTANCES: u32 = 64;
/// Heartbeats coalesced into one component call and one store round trip at most: large
/// enough to amortise a call, small enough that a failed call touches few clients.
pub const DEFAULT_HEARTBEAT_BATCH: usize = 64;
/// A swapped-in component is watched this long: long enough to see real traffic, short
/// enough that a later, unrelated incident does not undo a good swap.
pub const DEFAULT_SWAP_GUARD_WINDOW_MS: u64 = 30_000;
/// Half the calls failing is no flake.
pub const DEFAULT_SWAP_GUARD_FAILURE_RATE: f64 = 0.5;
/// Fewer calls say little about a version.
pub const DEFAULT_SWAP_GUARD_MIN_CALLS: u64 = 10;
/// Components are ~150 KB; 32 MiB leaves room for any honest component.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 32 * 1024 * 1024;
/// Time to announce every local `leave` and close sockets on SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// The host's configuration.
#[derive(Debug, Clone, Parser)]
#[command(name = "roster", version, about = "Roster: a realtime presence hub")]
pub struct Config {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "ROSTER_HOST", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,

    /// Redis URL (`redis://`, `rediss://` for TLS); unset means the embedded in-memory
    /// store. Several comma-separated URLs are the seed nodes of a Redis Cluster.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Treat a single `REDIS_URL` as the seed node of a Redis Cluster.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false)]
    pub redis_cluster: bool,

    /// A PEM file with the CA certificate to trust for `rediss://` (a private CA); unset
    /// trusts the public web roots.
    #[arg(long, env = "ROSTER_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Time one Redis round trip may take before the request fails with
    /// `STORE_UNAVAILABLE` (ms).
    #[arg(long, env = "ROSTER_REDIS_TIMEOUT_MS", default_value_t = DEFAULT_REDIS_TIMEOUT_MS)]
    pub redis_timeout_ms: u64,

    /// A connection whose last heartbeat is older than this (ms) is gone.
    #[arg(long, env = "PRESENCE_TTL_MS", default_value_t = DEFAULT_TTL_MS)]
    pub presence_ttl_ms: u64,

    /// How often the reaper looks for stale connections (ms).
    #[arg(long, env = "PRESENCE_REAPER_INTERVAL_MS", default_value_t = DEFAULT_REAPER_INTERVAL_MS)]
    pub reaper_interval_ms: u64,

    /// How long the store keeps a connection record nobody refreshes (ms): the backstop when
    /// no reaper runs. Default: twice the TTL.
    #[arg(long, env = "PRESENCE_REAPER_LOOKBACK_MS")]
    pub reaper_lookback_ms: Option<u64>,

    /// How long this node's lease lasts (ms); it is renewed every third of that. When a node
    /// dies without a goodbye, the others remove its connections once its lease expires.
    #[arg(long, env = "ROSTER_NODE_LEASE_MS", default_value_t = DEFAULT_NODE_LEASE_MS)]
    pub node_lease_ms: u64,

    /// This node's id, stored with the connections it creates. Default: random.
    #[arg(long, env = "ROSTER_NODE_ID")]
    pub node_id: Option<String>,

    /// A directory of components to run instead of the embedded ones: `presence.wasm`,
    /// `metadata.wasm`, `reaper.wasm`, `policy.wasm`; missing files fall back to the
    /// embedded build.
    #[arg(long, env = "ROSTER_COMPONENTS_DIR")]
    pub components_dir: Option<PathBuf>,

    /// Largest request (WebSocket frame or HTTP body) in bytes: larger ones get
    /// `PAYLOAD_TOO_LARGE`. A frame over four times this closes the socket (code 1009).
    #[arg(long, env = "ROSTER_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Largest presence state in bytes of JSON.
    #[arg(long, env = "ROSTER_MAX_STATE_BYTES", default_value_t = DEFAULT_MAX_STATE_BYTES)]
    pub max_state_bytes: u32,

    /// Most connections per room.
    #[arg(long, env = "ROSTER_MAX_ROOM_MEMBERS", default_value_t = DEFAULT_MAX_ROOM_MEMBERS)]
    pub max_room_members: u32,

    /// Most connections one snapshot page lists (a join's snapshot is the first page); a
    /// larger room's join ack says its snapshot is partial.
    #[arg(long, env = "ROSTER_MAX_SNAPSHOT_MEMBERS", default_value_t = DEFAULT_MAX_SNAPSHOT_MEMBERS)]
    pub max_snapshot_members: u32,

    /// Most bytes of member states one snapshot page carries.
    #[arg(long, env = "ROSTER_MAX_SNAPSHOT_BYTES", default_value_t = DEFAULT_MAX_SNAPSHOT_BYTES)]
    pub max_snapshot_bytes: u32,

    /// Largest message payload (JSON), in bytes.
    #[arg(long, env = "ROSTER_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: u32,

    /// Messages a channel's history keeps for recovery (at least 1).
    #[arg(long, env = "ROSTER_MESSAGE_HISTORY", default_value_t = DEFAULT_MESSAGE_HISTORY)]
    pub message_history: u32,

    /// How long a message stays in history (ms).
    #[arg(long, env = "ROSTER_MESSAGE_HISTORY_TTL_MS", default_value_t = DEFAULT_MESSAGE_HISTORY_TTL_MS)]
    pub message_history_ttl_ms: u64,

    /// How long a connection whose socket dropped without a goodbye (a network loss, a
    /// missed ping) waits for `presence:resume` before it leaves (ms); 0: it leaves at
    /// once. At most `PRESENCE_TTL_MS` counts (a detached connection leaves no later than
    /// a silent one would). With it, a shutdown (SIGTERM) announces no leaves: clients
    /// resume on another node.
    #[arg(long, env = "ROSTER_RESUME_GRACE_MS", default_value_t = DEFAULT_RESUME_GRACE_MS)]
    pub resume_grace_ms: u64,

    /// Kernel send buffer of each accepted connection (bytes; 0: the kernel's default,
    /// which grows to megabytes for a reader that stopped).
    #[arg(long, env = "ROSTER_SEND_BUFFER_BYTES", default_value_t = DEFAULT_SEND_BUFFER_BYTES)]
    pub send_buffer_bytes: usize,

    /// Channels one socket may subscribe to; more is `FORBIDDEN`.
    #[arg(long, env = "ROSTER_MAX_SUBSCRIPTIONS", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,

    /// Most metadata items per channel.
    #[arg(long, env = "ROSTER_MAX_METADATA_ITEMS", default_value_t = DEFAULT_MAX_METADATA_ITEMS)]
    pub max_metadata_items: u32,

    /// Largest total of a channel's metadata keys and values, in bytes.
    #[arg(long, env = "ROSTER_MAX_METADATA_BYTES", default_value_t = DEFAULT_MAX_METADATA_BYTES)]
    pub max_metadata_bytes: u32,

    /// Lock lifetime when `lock:acquire` names none (ms).
    #[arg(long, env = "ROSTER_LOCK_TTL_MS", default_value_t = DEFAULT_LOCK_TTL_MS)]
    pub lock_ttl_ms: u64,

    /// Longest lock lifetime a client may ask for (ms).
    #[arg(long, env = "ROSTER_MAX_LOCK_TTL_MS", default_value_t = DEFAULT_MAX_LOCK_TTL_MS)]
    pub max_lock_ttl_ms: u64,

    /// Messages queued for one socket before it is closed as a slow reader.
    #[arg(long, env = "ROSTER_MAX_PENDING_MESSAGES", default_value_t = DEFAULT_MAX_PENDING_MESSAGES)]
    pub max_pending_messages: usize,

    /// Most sockets this node serves; more are refused with 503.
    #[arg(long, env = "ROSTER_MAX_SOCKETS", default_value_t = DEFAULT_MAX_SOCKETS)]
    pub max_sockets: usize,

    /// Requests per second one socket may send (bursts of twice that); 0 turns it off.
    #[arg(long, env = "ROSTER_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT_PER_SEC)]
    pub rate_limit_per_sec: u32,

    /// Interval of WebSocket pings (ms); a socket silent for two intervals is closed.
    #[arg(long, env = "ROSTER_PING_INTERVAL_MS", default_value_t = DEFAULT_PING_INTERVAL_MS)]
    pub ping_interval_ms: u64,

    /// Socket.IO ping interval (ms), sent to clients in the handshake.
    #[arg(long, env = "ROSTER_SOCKETIO_PING_INTERVAL_MS", default_value_t = DEFAULT_SOCKETIO_PING_INTERVAL_MS)]
    pub socketio_ping_interval_ms: u64,

    /// Socket.IO ping timeout (ms): a client that does not answer a ping within it is gone.
    #[arg(long, env = "ROSTER_SOCKETIO_PING_TIMEOUT_MS", default_value_t = DEFAULT_SOCKETIO_PING_TIMEOUT_MS)]
    pub socketio_ping_timeout_ms: u64,

    /// Origins browsers may call the HTTP API, Socket.IO and `/ws` from: `*`, or a
    /// comma-separated list. Unset: any origin in open mode, none (same-origin pages only)
    /// with authentication on.
    #[arg(long, env = "ROSTER_CORS_ORIGINS")]
    pub cors_origins: Option<String>,

    /// The HS256/384/512 secret tokens are signed with (at least 32 bytes). Setting this,
    /// `ROSTER_JWT_PUBLIC_KEY_FILE` or `ROSTER_JWT_JWKS_FILE` turns authentication on.
    #[arg(long, env = "ROSTER_JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<SecretString>,

    /// A PEM public key tokens are signed with (RS256/384/512, PS*, ES256/384, EdDSA).
    #[arg(long, env = "ROSTER_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// A JWKS document; a token's `kid` picks its key.
    #[arg(long, env = "ROSTER_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// The `iss` tokens must have (checked when set).
    #[arg(long, env = "ROSTER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` tokens must have (checked when set).
    #[arg(long, env = "ROSTER_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew forgiven on `exp` and `nbf` (ms); a socket's token expires this long
    /// after its `exp`.
    #[arg(long, env = "ROSTER_JWT_LEEWAY_MS", default_value_t = DEFAULT_JWT_LEEWAY_MS)]
    pub jwt_leeway_ms: u64,

    /// `/v1` requests per second per principal (per client address in open mode), bursts
    /// of twice that; 0 turns the limit off.
    #[arg(long, env = "ROSTER_HTTP_RATE_LIMIT", default_value_t = DEFAULT_HTTP_RATE_LIMIT_PER_SEC)]
    pub http_rate_limit_per_sec: u32,

    /// Most heartbeats coalesced into one component call (and one store round trip); 1
    /// turns coalescing off.
    #[arg(long, env = "ROSTER_HEARTBEAT_BATCH", default_value_t = DEFAULT_HEARTBEAT_BATCH)]
    pub heartbeat_batch: usize,

    /// How long a heartbeat may wait for others to join its batch (µs). 0: a batch takes
    /// only what is already waiting, so nothing waits when the node is not busy.
    #[arg(long, env = "ROSTER_HEARTBEAT_WINDOW_US", default_value_t = 0)]
    pub heartbeat_window_us: u64,

    /// Wall-clock deadline of one component call (ms); past it the call fails with
    /// `COMPONENT_FAILED`.
    #[arg(long, env = "ROSTER_COMPONENT_DEADLINE_MS", default_value_t = DEFAULT_COMPONENT_DEADLINE_MS)]
    pub component_deadline_ms: u64,

    /// Memory cap of one component instance (MiB).
    #[arg(long, env = "ROSTER_COMPONENT_MEMORY_MIB", default_value_t = DEFAULT_COMPONENT_MEMORY_MIB)]
    pub component_memory_mib: u64,

    /// Live instances per component.
    #[arg(long, env = "ROSTER_COMPONENT_INSTANCES", default_value_t = DEFAULT_COMPONENT_INSTANCES)]
    pub component_instances: u32,

    /// Names the components' compiled functions for `perf`: `perfmap` writes
    /// `/tmp/perf-<pid>.map` (see docs/benchmarks.md). Off by default.
    #[arg(long, env = "ROSTER_PROFILER", value_enum, default_value_t = Profiler::None)]
    pub profiler: Profiler,

    /// The presence component's call deadline (ms); default: the component deadline.
    #[arg(long, env = "ROSTER_PRESENCE_DEADLINE_MS")]
    pub presence_deadline_ms: Option<u64>,
    /// The presence component's memory cap (MiB); default: the component memory cap.
    #[arg(long, env = "ROSTER_PRESENCE_MEMORY_MIB")]
    pub presence_memory_mib: Option<u64>,
    /// The presence component's live instances; default: the component instances.
    #[arg(long, env = "ROSTER_PRESENCE_INSTANCES")]
    pub presence_instances: Option<u32>,
    /// The metadata component's call deadline (ms).
    #[arg(long, env = "ROSTER_METADATA_DEADLINE_MS")]
    pub metadata_deadline_ms: Option<u64>,
    /// The metadata component's memory cap (MiB).
    #[arg(long, env = "ROSTER_METADATA_MEMORY_MIB")]
    pub metadata_memory_mib: Option<u64>,
    /// The metadata component's live instances.
    #[arg(long, env = "ROSTER_METADATA_INSTANCES")]
    pub metadata_instances: Option<u32>,
    /// The reaper component's call deadline (ms).
    #[arg(long, env = "ROSTER_REAPER_DEADLINE_MS")]
    pub reaper_deadline_ms: Option<u64>,
    /// The reaper component's memory cap (MiB).
    #[arg(long, env = "ROSTER_REAPER_MEMORY_MIB")]
    pub reaper_memory_mib: Option<u64>,
    /// The reaper component's live instances.
    #[arg(long, env = "ROSTER_REAPER_INSTANCES")]
    pub reaper_instances: Option<u32>,
    /// The policy component's call deadline (ms).
    #[arg(long, env = "ROSTER_POLICY_DEADLINE_MS")]
    pub policy_deadline_ms: Option<u64>,
    /// The policy component's memory cap (MiB).
    #[arg(long, env = "ROSTER_POLICY_MEMORY_MIB")]
    pub policy_memory_mib: Option<u64>,
    /// The policy component's live instances.
    #[arg(long, env = "ROSTER_POLICY_INSTANCES")]
    pub policy_instances: Option<u32>,

    /// Serve the demo page at `/` (turn it off in production with `false`; the dashboard
    /// at `/dashboard` stays, its data behind `ROSTER_ADMIN_TOKEN`).
    #[arg(long, env = "ROSTER_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,

    /// Bearer token of the admin API (`/admin/...`); without one the admin API refuses
    /// every request.
    #[arg(long, env = "ROSTER_ADMIN_TOKEN", hide_env_values = true, value_parser = secret)]
    pub admin_token: Option<SecretString>,

    /// Bearer token of `POST /v1/reaper/tick`, for schedulers; without one the route
    /// refuses every request.
    #[arg(long, env = "ROSTER_TICK_TOKEN", hide_env_values = true, value_parser = secret)]
    pub tick_token: Option<SecretString>,

    /// Watch `ROSTER_COMPONENTS_DIR`: a changed `presence.wasm`, `metadata.wasm`,
    /// `reaper.wasm` or `policy.wasm` is swapped in.
    #[arg(long, env = "ROSTER_WATCH_COMPONENTS", default_value_t = false)]
    pub watch_components: bool,

    /// Where compiled components are cached (so restarts and rollbacks skip compiling);
    /// `off` disables the cache. Default: `$XDG_CACHE_HOME/roster`, else
    /// `$HOME/.cache/roster`.
    #[arg(long, env = "ROSTER_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Largest component the admin API accepts, in bytes.
    #[arg(long, env = "ROSTER_MAX_COMPONENT_BYTES", default_value_t = DEFAULT_MAX_COMPONENT_BYTES)]
    pub max_component_bytes: usize,

    /// How long after a swap the new component's failures are watched (ms).
    #[arg(long, env = "ROSTER_SWAP_GUARD_WINDOW_MS", default_value_t = DEFAULT_SWAP_GUARD_WINDOW_MS)]
    pub swap_guard_window_ms: u64,

    /// The failure rate (traps and deadline hits over calls) that rolls a swap back.
    #[arg(long, env = "ROSTER_SWAP_GUARD_FAILURE_RATE", default_value_t = DEFAULT_SWAP_GUARD_FAILURE_RATE)]
    pub swap_guard_failure_rate: f64,

    /// Calls a swapped-in component must serve before its failure rate is judged.
    #[arg(long, env = "ROSTER_SWAP_GUARD_MIN_CALLS", default_value_t = DEFAULT_SWAP_GUARD_MIN_CALLS)]
    pub swap_guard_min_calls: u64,

    /// Time to announce local leaves and close sockets on shutdown (ms).
    #[arg(long, env = "ROSTER_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// The clock components see as `now`. Tests drive a manual one.
    #[arg(skip)]
    pub clock: Clock,
}

/// A secret from a flag or the environment; kept out of `Debug` and logs.
fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value))
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value out of range.
    #[error("{name} = {value}: {why}")]
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        why: &'static str,
    },
    /// `REDIS_URL` cannot be used.
    #[error("REDIS_URL: {0}")]
    RedisUrl(String),
    /// The token keys cannot be used.
    #[error("authentication: {0}")]
    Auth(String),
    /// The limits let one call of a component need more memory than its cap.
    #[error(
        "the {slot} component may need {need_mib} MiB for one call at these limits, over its \
         {cap_mib} MiB cap: raise ROSTER_COMPONENT_MEMORY_MIB (or the slot's own), or lower \
         ROSTER_MAX_ROOM_MEMBERS / ROSTER_MAX_SNAPSHOT_BYTES / ROSTER_MAX_SNAPSHOT_MEMBERS / \
         ROSTER_MAX_STATE_BYTES / ROSTER_HEARTBEAT_BATCH / ROSTER_MAX_METADATA_BYTES"
    )]
    MemoryCap {
        /// The component.
        slot: &'static str,
        /// What one call may need.
        need_mib: usize,
        /// Its cap.
        cap_mib: usize,
    },
}

/// Linear memory a component uses whatever the call: code, stack, allocator and the
/// runtime's own data.
const COMPONENT_BASE_BYTES: usize = 4 * 1024 * 1024;

/// What one listed connection id costs a call, lowered, sorted and compared (32 bytes of
/// text in several copies plus their headers).
const LISTED_ID_BYTES: usize = 256;

/// What one snapshot entry costs beyond its state (ids, fields, their copies).
const SNAPSHOT_ENTRY_BYTES: usize = 1024;

/// Copies of a text a call holds at once: the store's reply, the parsed or moved value, the
/// result being lowered back to the host.
const COPIES: usize = 4;

impl Default for Config {
    /// The defaults, ignoring flags and the environment (what tests start from).
    fn default() -> Self {
        Config {
            port: DEFAULT_PORT,
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            redis_url: None,
            redis_cluster: false,
            redis_ca_file: None,

            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            presence_ttl_ms: DEFAULT_TTL_MS,
            reaper_interval_ms: DEFAULT_REAPER_INTERVAL_MS,
            reaper_lookback_ms: None,
            node_lease_ms: DEFAULT_NODE_LEASE_MS,
            node_id: None,
            components_dir: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_room_members: DEFAULT_MAX_ROOM_MEMBERS,
            max_snapshot_members: DEFAULT_MAX_SNAPSHOT_MEMBERS,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            message_history: DEFAULT_MESSAGE_HISTORY,
            message_history_ttl_ms: DEFAULT_MESSAGE_HISTORY_TTL_MS,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            resume_grace_ms: DEFAULT_RESUME_GRACE_MS,
            send_buffer_bytes: DEFAULT_SEND_BUFFER_BYTES,
            max_metadata_items: DEFAULT_MAX_METADATA_ITEMS,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            lock_ttl_ms: DEFAULT_LOCK_TTL_MS,
            max_lock_ttl_ms: DEFAULT_MAX_LOCK_TTL_MS,
            max_pending_messages: DEFAULT_MAX_PENDING_MESSAGES,
            max_sockets: DEFAULT_MAX_SOCKETS,
            rate_limit_per_sec: DEFAULT_RATE_LIMIT_PER_SEC,
            ping_interval_ms: DEFAULT_PING_INTERVAL_MS,
            heartbeat_batch: DEFAULT_HEARTBEAT_BATCH,
            heartbeat_window_us: 0,
            socketio_ping_interval_ms: DEFAULT_SOCKETIO_PING_INTERVAL_MS,
            socketio_ping_timeout_ms: DEFAULT_SOCKETIO_PING_TIMEOUT_MS,
            cors_origins: None,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_ms: DEFAULT_JWT_LEEWAY_MS,
            http_rate_limit_per_sec: DEFAULT_HTTP_RATE_LIMIT_PER_SEC,
            component_deadline_ms: DEFAULT_COMPONENT_DEADLINE_MS,
            component_memory_mib: DEFAULT_COMPONENT_MEMORY_MIB,
            component_instances: DEFAULT_COMPONENT_INSTANCES,
            profiler: Profiler::None,
            presence_deadline_ms: None,
            presence_memory_mib: None,
            presence_instances: None,
            metadata_deadline_ms: None,
            metadata_memory_mib: None,
            metadata_instances: None,
            reaper_deadline_ms: None,
            reaper_memory_mib: None,
            reaper_instances: None,
            policy_deadline_ms: None,
            policy_memory_mib: None,
            policy_instances: None,
            demo: true,
            admin_token: None,
            tick_token: None,
            watch_components: false,
            cache_dir: None,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            swap_guard_window_ms: DEFAULT_SWAP_GUARD_WINDOW_MS,
            swap_guard_failure_rate: DEFAULT_SWAP_GUARD_FAILURE_RATE,
            swap_guard_min_calls: DEFAULT_SWAP_GUARD_MIN_CALLS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            clock: Clock::System,
        }
    }
}

impl Config {
    /// The limits and windows every component call receives.
    pub fn settings(&self) -> crate::runtime::bindings::types::Settings {
        crate::runtime::bindings::types::Settings {
            ttl_ms: self.presence_ttl_ms,
            lookback_ms: self.lookback_ms(),
            max_state_bytes: self.max_state_bytes,
            max_room_members: self.max_room_members,
            max_metadata_items: self.max_metadata_items,
            max_metadata_bytes: self.max_metadata_bytes,
            default_lock_ttl_ms: self.lock_ttl_ms,
            max_lock_ttl_ms: self.max_lock_ttl_ms,
            node_lease_ms: self.node_lease_ms,
            max_snapshot_members: self.max_snapshot_members,
            max_snapshot_bytes: self.max_snapshot_bytes,
            max_message_bytes: self.max_message_bytes,
            message_history: self.message_history.max(1),
            message_history_ttl_ms: self.message_history_ttl_ms,
            resume_grace_ms: self.resume_grace_ms,
        }
    }

    /// The connection-record lifetime: the lookback, or twice the TTL.
    pub fn lookback_ms(&self) -> u64 {
        self.reaper_lookback_ms
            .unwrap_or_else(|| self.presence_ttl_ms.saturating_mul(2))
    }

    /// The sandbox limits of each slot: its own setting, else the component-wide one.
    pub fn limits(&self) -> crate::runtime::Limits {
        let slot = |deadline_ms: Option<u64>, memory_mib: Option<u64>, instances: Option<u32>| {
            crate::runtime::SlotLimits {
                deadline: Duration::from_millis(deadline_ms.unwrap_or(self.component_deadline_ms)),
                memory_bytes: usize::try_from(
                    memory_mib
                        .unwrap_or(self.component_memory_mib)
                        .saturating_mul(1024 * 1024),
                )
                .unwrap_or(usize::MAX),
                instances: instances.unwrap_or(self.component_instances),
            }
        };
        crate::runtime::Limits {
            presence: slot(
                self.presence_deadline_ms,
                self.presence_memory_mib,
                self.presence_instances,
            ),
            metadata: slot(
                self.metadata_deadline_ms,
                self.metadata_memory_mib,
                self.metadata_instances,
            ),
            reaper: slot(
                self.reaper_deadline_ms,
                self.reaper_memory_mib,
                self.reaper_instances,
            ),
            policy: slot(
                self.policy_deadline_ms,
                self.policy_memory_mib,
                self.policy_instances,
            ),
        }
    }

    /// When a swap is rolled back by itself.
    pub fn guard_rails(&self) -> crate::runtime::GuardRails {
        crate::runtime::GuardRails {
            window: Duration::from_millis(self.swap_guard_window_ms),
            failure_rate: self.swap_guard_failure_rate,
            min_calls: self.swap_guard_min_calls,
        }
    }

    /// The artifact cache directory, or none when disabled.
    pub fn component_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(dir) if dir.as_os_str() == "off" => None,
            Some(dir) => Some(dir.clone()),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .map(|dir| dir.join("roster")),
        }
    }

    /// The Redis round-trip timeout.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The component call deadline.
    pub fn component_deadline(&self) -> Duration {
        Duration::from_millis(self.component_deadline_ms)
    }

    /// The most linear memory one presence call can need at these limits: listing the
    /// largest room, one snapshot page at its byte and member limits, or one heartbeat
    /// batch of largest patches, whichever is largest, on top of the base.
    pub fn presence_memory_need(&self) -> usize {
        let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        let listing = size(self.max_room_members).saturating_mul(LISTED_ID_BYTES);
        let page = size(self.max_snapshot_bytes)
            .saturating_mul(COPIES)
            .saturating_add(size(self.max_snapshot_members).saturating_mul(SNAPSHOT_ENTRY_BYTES));
        let beats = self
            .heartbeat_batch
            .saturating_mul(size(self.max_state_bytes))
            .saturating_mul(COPIES);
        COMPONENT_BASE_BYTES.saturating_add(listing.saturating_add(page).max(beats))
    }

    /// The most linear memory one metadata call can need: a channel's items at their limit.
    pub fn metadata_memory_need(&self) -> usize {
        let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        let metadata = size(self.max_metadata_bytes)
            .saturating_add(size(self.max_metadata_items).saturating_mul(SNAPSHOT_ENTRY_BYTES));
        // A history read holds a channel's whole history.
        let history = size(self.message_history.max(1))
            .saturating_mul(size(self.max_message_bytes).saturating_add(SNAPSHOT_ENTRY_BYTES));
        COMPONENT_BASE_BYTES.saturating_add(metadata.max(history).saturating_mul(COPIES))
    }

    /// Frames above this close the socket instead of getting an error ack.
    pub fn hard_frame_limit(&self) -> usize {
        self.max_frame_bytes.saturating_mul(4)
    }

    /// Whether tokens are verified (a key is configured).
    pub fn auth_on(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_file.is_some()
    }

    /// The token verifier, none in open mode. Reads the key files.
    pub fn verifier(&self) -> Result<Option<crate::protocol::auth::Verifier>, ConfigError> {
        use crate::protocol::auth::{Checks, Verifier};
        let checks = Checks {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway_ms: self.jwt_leeway_ms,
        };
        let keys = [
            self.jwt_secret.is_some(),
            self.jwt_public_key_file.is_some(),
            self.jwt_jwks_file.is_some(),
        ];
        if keys.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::Auth(
                "set one of ROSTER_JWT_SECRET, ROSTER_JWT_PUBLIC_KEY_FILE and ROSTER_JWT_JWKS_FILE"
                    .into(),
            ));
        }
        let read = |name: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|error| {
                ConfigError::Auth(format!("{name}: cannot read {}: {error}", path.display()))
            })
        };
        let verifier = if let Some(secret) = &self.jwt_secret {
            Verifier::from_secret(secret.expose_secret().as_bytes(), checks)
                .map_err(|why| ConfigError::Auth(format!("ROSTER_JWT_SECRET: {why}")))?
        } else if let Some(path) = &self.jwt_public_key_file {
            let pem = read("ROSTER_JWT_PUBLIC_KEY_FILE", path)?;
            Verifier::from_pem(&pem, checks)
                .map_err(|why| ConfigError::Auth(format!("ROSTER_JWT_PUBLIC_KEY_FILE: {why}")))?
        } else if let Some(path) = &self.jwt_jwks_file {
            let json = read("ROSTER_JWT_JWKS_FILE", path)?;
            Verifier::from_jwks(&String::from_utf8_lossy(&json), checks)
                .map_err(|why| ConfigError::Auth(format!("ROSTER_JWT_JWKS_FILE: {why}")))?
        } else {
            return Ok(None);
        };
        Ok(Some(verifier))
    }

    /// The allowed CORS origins: none means any. Unset: any in open mode, none with
    /// authentication on.
    pub fn cors_origin_list(&self) -> Result<Option<Vec<axum::http::HeaderValue>>, String> {
        let origins = match &self.cors_origins {
            Some(origins) => origins.trim(),
            None if self.auth_on() => return Ok(Some(Vec::new())),
            None => return Ok(None),
        };
        if origins == "*" {
            return Ok(None);
        }
        origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| axum::http::HeaderValue::from_str(origin).map_err(|_| origin.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn out_of_range(
            name: &'static str,
            value: impl ToString,
            why: &'static str,
        ) -> Result<(), ConfigError> {
            Err(ConfigError::OutOfRange {
                name,
                value: value.to_string(),
                why,
            })
        }
        if let Some(url) = &self.redis_url {
            crate::store::redis::Target::parse(url, self.redis_cluster)
                .map_err(ConfigError::RedisUrl)?;
        }
        if self.redis_timeout_ms == 0 {
            return out_of_range("ROSTER_REDIS_TIMEOUT_MS", 0, "must be positive");
        }
        if self.presence_ttl_ms == 0 {
            return out_of_range("PRESENCE_TTL_MS", 0, "must be positive");
        }
        if self.reaper_interval_ms == 0 {
            return out_of_range("PRESENCE_REAPER_INTERVAL_MS", 0, "must be positive");
        }
        if self.lookback_ms() < self.presence_ttl_ms.saturating_add(self.reaper_interval_ms) {
            return out_of_range(
                "PRESENCE_REAPER_LOOKBACK_MS",
                self.lookback_ms(),
                "must be at least PRESENCE_TTL_MS + PRESENCE_REAPER_INTERVAL_MS, or records \
                 would vanish before the reaper announces them",
            );
        }
        if self.node_lease_ms < 300 {
            return out_of_range(
                "ROSTER_NODE_LEASE_MS",
                self.node_lease_ms,
                "must be at least 300 (it is renewed every third of it)",
            );
        }
        if self.max_frame_bytes < 1024 {
            return out_of_range(
                "ROSTER_MAX_FRAME_BYTES",
                self.max_frame_bytes,
                "must be at least 1024",
            );
        }
        if self.heartbeat_batch == 0 || self.heartbeat_batch > 4096 {
            return out_of_range(
                "ROSTER_HEARTBEAT_BATCH",
                self.heartbeat_batch,
                "must be between 1 and 4096",
            );
        }
        if self.heartbeat_window_us > 100_000 {
            return out_of_range(
                "ROSTER_HEARTBEAT_WINDOW_US",
                self.heartbeat_window_us,
                "must be at most 100000",
            );
        }
        if self.max_pending_messages == 0 {
            return out_of_range("ROSTER_MAX_PENDING_MESSAGES", 0, "must be positive");
        }
        if self.component_deadline_ms == 0 {
            return out_of_range("ROSTER_COMPONENT_DEADLINE_MS", 0, "must be positive");
        }
        for (name, limits) in [
            ("presence", self.limits().presence),
            ("metadata", self.limits().metadata),
            ("reaper", self.limits().reaper),
            ("policy", self.limits().policy),
        ] {
            if limits.deadline.is_zero()
                || limits.memory_bytes == 0
                || limits.memory_bytes > 4096 * 1024 * 1024
                || limits.instances == 0
                || limits.instances > 1024
            {
                return out_of_range(
                    "ROSTER_<SLOT>_DEADLINE_MS / _MEMORY_MIB / _INSTANCES",
                    name,
                    "a slot needs a positive deadline, 1 to 4096 MiB and 1 to 1024 instances",
                );
            }
        }
        if !(self.swap_guard_failure_rate > 0.0 && self.swap_guard_failure_rate <= 1.0) {
            return out_of_range(
                "ROSTER_SWAP_GUARD_FAILURE_RATE",
                self.swap_guard_failure_rate,
                "must be above 0 and at most 1",
            );
        }
        if self.watch_components && self.components_dir.is_none() {
            return out_of_range(
                "ROSTER_WATCH_COMPONENTS",
                true,
                "needs ROSTER_COMPONENTS_DIR, the directory to watch",
            );
        }
        for (name, token) in [
            ("ROSTER_ADMIN_TOKEN", &self.admin_token),
            ("ROSTER_TICK_TOKEN", &self.tick_token),
        ] {
            if token
                .as_ref()
                .is_some_and(|token| token.expose_secret().len() < 16)
            {
                return out_of_range(name, "(hidden)", "must be at least 16 characters");
            }
        }
        self.verifier()?;
        if self.max_snapshot_members == 0 {
            return out_of_range("ROSTER_MAX_SNAPSHOT_MEMBERS", 0, "must be positive");
        }
        if self.max_snapshot_bytes < self.max_state_bytes {
            return out_of_range(
                "ROSTER_MAX_SNAPSHOT_BYTES",
                self.max_snapshot_bytes,
                "must be at least ROSTER_MAX_STATE_BYTES, so a snapshot page holds a member",
            );
        }
        let limits = self.limits();
        for (name, need, cap) in [
            (
                "presence",
                self.presence_memory_need(),
                limits.presence.memory_bytes,
            ),
            (
                "metadata",
                self.metadata_memory_need(),
                limits.metadata.memory_bytes,
            ),
        ] {
            if need > cap {
                return Err(ConfigError::MemoryCap {
                    slot: name,
                    need_mib: need.div_ceil(1024 * 1024),
                    cap_mib: cap / (1024 * 1024),
                });
            }
        }
        if self.component_memory_mib == 0 || self.component_memory_mib > 4096 {
            return out_of_range(
                "ROSTER_COMPONENT_MEMORY_MIB",
                self.component_memory_mib,
                "must be between 1 and 4096",
            );
        }
        if self.component_instances == 0 || self.component_instances > 1024 {
            return out_of_range(
                "ROSTER_COMPONENT_INSTANCES",
                self.component_instances,
                "must be between 1 and 1024",
            );
        }
        if self.ping_interval_ms == 0 {
            return out_of_range("ROSTER_PING_INTERVAL_MS", 0, "must be positive");
        }
        if self.socketio_ping_interval_ms == 0 || self.socketio_ping_timeout_ms == 0 {
            return out_of_range(
                "ROSTER_SOCKETIO_PING_INTERVAL_MS / ROSTER_SOCKETIO_PING_TIMEOUT_MS",
                format!(
                    "{} / {}",
                    self.socketio_ping_interval_ms, self.socketio_ping_timeout_ms
                ),
                "must be positive",
            );
        }
        if let Err(origin) = self.cors_origin_list() {
            return out_of_range(
                "ROSTER_CORS_ORIGINS",
                origin,
                "must be `*` or a comma-separated list of origins",
            );
        }
        Ok(())
    }
}

/// A profiler the components' compiled code reports to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profiler {
    /// None.
    #[default]
    None,
    /// A perf map (`/tmp/perf-<pid>.map`) that `perf report` reads to name JIT code.
    Perfmap,
}

/// The clock behind every `now` the components see and every TTL the embedded store keeps.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// Wall-clock time.
    #[default]
    System,
    /// Time that moves only when told to (tests).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start_ms`.
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                }),
            Clock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; the system clock ignores this.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(now) = self {
            let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            now.fetch_add(by, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults validate; the documented environment names parse.
    #[test]
    fn defaults_and_environment_names() {
        Config::default().validate().unwrap();
        let parsed =
            Config::try_parse_from(["roster", "--port", "4000", "--presence-ttl-ms", "1000"])
                .unwrap();
        assert_eq!(parsed.port, 4000);
        assert_eq!(parsed.lookback_ms(), 2000);
    }

    /// Values that cannot work are refused with their name.
    #[test]
    fn invalid_values_are_refused() {
        let config = Config {
            reaper_lookback_ms: Some(10),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("PRESENCE_REAPER_LOOKBACK_MS"), "{err}");
        let config = Config {
            redis_url: Some("http://localhost".into()),
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(ConfigError::RedisUrl(_))));
        let config = Config {
            redis_url: Some("redis://localhost:6379".into()),
            ..Config::default()
        };
        config.validate().unwrap();
    }

    /// Limits one call could need more memory for than its component's cap are refused at
    /// start, naming the slot; lowering the limits makes the same cap fit.
    #[test]
    fn limits_must_fit_the_memory_cap() {
        let tight = Config {
            presence_memory_mib: Some(16),
            ..Config::default()
        };
        let err = tight.validate().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::MemoryCap {
                    slot: "presence",
                    cap_mib: 16,
                    ..
                }
            ),
            "{err}"
        );
        let fitted = Config {
            max_snapshot_bytes: 1024 * 1024,
            heartbeat_batch: 16,
            ..tight
        };
        fitted.validate().unwrap();
        let metadata = Config {
            metadata_memory_mib: Some(8),
            max_metadata_bytes: 4 * 1024 * 1024,
            ..Config::default()
        };
        assert!(matches!(
            metadata.validate(),
            Err(ConfigError::MemoryCap {
                slot: "metadata",
                ..
            })
        ));
    }

    /// A manual clock moves only when advanced.
    #[test]
    fn manual_clock() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.now_ms(), 1_500);
        assert!(Clock::System.now_ms() > 1_600_000_000_000);
    }
}
