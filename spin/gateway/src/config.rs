//! The gateway's configuration: Spin variables (declared in `spin.toml`), with the host's
//! defaults (`wire/defaults.rs`) for any left unset.

use spin_sdk::variables;

use crate::protocol::{
    DEFAULT_LOCK_TTL_MS, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_LOCK_TTL_MS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_METADATA_ITEMS,
    DEFAULT_MAX_ROOM_MEMBERS, DEFAULT_MAX_SNAPSHOT_BYTES, DEFAULT_MAX_SNAPSHOT_MEMBERS,
    DEFAULT_MAX_STATE_BYTES, DEFAULT_MESSAGE_HISTORY, DEFAULT_MESSAGE_HISTORY_TTL_MS,
    DEFAULT_TTL_MS,
};
use crate::wit::types::{CallContext, Principal, Settings};

/// The node id a Spin deployment stores with the connections it creates, and publishes
/// events under, when `node_id` is not set.
pub const DEFAULT_NODE_ID: &str = "spin";

/// How often traffic may run the reaper when `reaper_interval_ms` is not set: a node's
/// reaper interval.
pub const DEFAULT_REAPER_INTERVAL_MS: u64 = 3_000;

/// What one request runs with.
pub struct Config {
    /// The limits and windows the rules enforce.
    pub settings: Settings,
    /// `node_id`.
    pub node_id: String,
    /// `max_body_bytes`: the largest request body.
    pub max_body_bytes: usize,
    /// `tick_token`: the bearer token of `POST /v1/reaper/tick`; unset disables the route.
    pub tick_token: Option<String>,
    /// `cors_origins`: `*`, a comma-separated list of allowed origins, or empty (any in open
    /// mode, none with tokens).
    pub cors_origins: String,
    /// `reaper_interval_ms`: joins, leaves, snapshots and counts run the reaper at most this
    /// often across the deployment (0: never; a scheduler or the cron trigger ticks).
    pub reaper_interval_ms: u64,
}

/// A variable's value, none when unset or empty (Spin gives undeclared variables as errors).
pub fn var(name: &str) -> Option<String> {
    variables::get(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// A numeric variable, its default when unset; an unreadable value is a configuration error
/// naming the variable.
pub fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("the Spin variable {name} is {text:?}, not a number")),
    }
}

impl Config {
    /// Reads the variables.
    pub fn load() -> Result<Config, String> {
        let ttl_ms = number("presence_ttl_ms", DEFAULT_TTL_MS)?;
        let lookback_ms = number("presence_reaper_lookback_ms", ttl_ms.saturating_mul(2))?;
        if ttl_ms == 0 || lookback_ms < ttl_ms {
            return Err(format!(
                "presence_ttl_ms ({ttl_ms}) must be positive and presence_reaper_lookback_ms \
                 ({lookback_ms}) at least as long"
            ));
        }
        let settings = Settings {
            ttl_ms,
            lookback_ms,
            max_state_bytes: number("max_state_bytes", DEFAULT_MAX_STATE_BYTES)?,
            max_room_members: number("max_room_members", DEFAULT_MAX_ROOM_MEMBERS)?,
            max_metadata_items: number("max_metadata_items", DEFAULT_MAX_METADATA_ITEMS)?,
            max_metadata_bytes: number("max_metadata_bytes", DEFAULT_MAX_METADATA_BYTES)?,
            default_lock_ttl_ms: number("lock_ttl_ms", DEFAULT_LOCK_TTL_MS)?,
            max_lock_ttl_ms: number("max_lock_ttl_ms", DEFAULT_MAX_LOCK_TTL_MS)?,
            // No lease: a Spin deployment is not a node that others could find dead.
            node_lease_ms: 0,
            max_snapshot_members: number("max_snapshot_members", DEFAULT_MAX_SNAPSHOT_MEMBERS)?
                .max(1),
            max_snapshot_bytes: number("max_snapshot_bytes", DEFAULT_MAX_SNAPSHOT_BYTES)?,
            max_message_bytes: number("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)?,
            message_history: number("message_history", DEFAULT_MESSAGE_HISTORY)?.max(1),
            message_history_ttl_ms: number(
                "message_history_ttl_ms",
                DEFAULT_MESSAGE_HISTORY_TTL_MS,
            )?,
            // No sockets: nothing is ever detached here.
            resume_grace_ms: 0,
        };
        Ok(Config {
            settings,
            node_id: var("node_id").unwrap_or_else(|| DEFAULT_NODE_ID.to_owned()),
            max_body_bytes: number("max_body_bytes", DEFAULT_MAX_FRAME_BYTES)?,
            tick_token: var("tick_token"),
            cors_origins: var("cors_origins").unwrap_or_default(),
            reaper_interval_ms: number("reaper_interval_ms", DEFAULT_REAPER_INTERVAL_MS)?,
        })
    }

    /// The context of a call made now, on behalf of the open principal (the host's own
    /// calls: the tick, `/readyz`).
    pub fn context(&self) -> CallContext {
        self.context_for(Principal {
            user_id: None,
            verified: false,
            role: None,
            permissions: Vec::new(),
            rooms: None,
        })
    }

    /// The context of a call made now, on behalf of `principal`.
    pub fn context_for(&self, principal: Principal) -> CallContext {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        CallContext {
            now,
            node_id: self.node_id.clone(),
            settings: self.settings,
            principal,
        }
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`, if it is allowed:
    /// unset means any origin in open mode and none with tokens verified (`auth_on`).
    pub fn allowed_origin(&self, origin: Option<&str>, auth_on: bool) -> Option<String> {
        if self.cors_origins.is_empty() && auth_on {
            return None;
        }
        if self.cors_origins.is_empty() || self.cors_origins == "*" {
            return Some("*".to_owned());
        }
        let origin = origin?;
        self.cors_origins
            .split(',')
            .map(str::trim)
            .any(|allowed| allowed == origin)
            .then(|| origin.to_owned())
    }
}
