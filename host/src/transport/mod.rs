//! The network surface: one axum router for every transport.
//!
//! - [`socketio`]: Socket.IO v4 at `/socket.io/`;
//! - [`ws`]: the plain WebSocket transport at `/ws`;
//! - [`http`]: the REST API under `/v1/`;
//! - [`admin`]: the admin API under `/admin/` (components: list, swap, rollback; stats,
//!   nodes, rooms for the dashboard);
//! - [`pages`]: the demo page at `/`, the dashboard at `/dashboard`, their assets and the
//!   JS SDK;
//! - [`linger`]: accepted connections: `TCP_NODELAY`, and closes that let a peer still
//!   sending read the server's last frame;
//! - here: `/healthz` (alive), `/readyz` (store reachable, not shutting down) and
//!   `/metrics` (Prometheus text).

pub mod admin;
pub mod http;
pub mod linger;
pub mod pages;
pub mod socketio;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::hub::Hub;
use crate::protocol;

/// Bytes a WebSocket (`/ws` or Socket.IO) reads at once. tungstenite allocates and
/// zero-fills this buffer per connection: its default (128 KiB) made an idle socket cost
/// ~138 KiB of RSS. Presence frames are a few hundred bytes, and a larger frame still grows
/// the buffer as far as the frame limit allows.
pub const WS_READ_BUFFER_BYTES: usize = 512;

/// The node's router, and the Socket.IO handle that closes its transports at shutdown.
pub fn router(hub: Arc<Hub>) -> (Router, socketio::Transports) {
    let (socketio, io) = socketio::layer(&hub);
    let cors = match hub.config().cors_origin_list() {
        Ok(Some(origins)) => CorsLayer::new().allow_origin(AllowOrigin::list(origins)),
        // Validated at start-up; `*` (or an unreadable list) allows any origin.
        Ok(None) | Err(_) => CorsLayer::new().allow_origin(AllowOrigin::any()),
    }
    .allow_methods(AllowMethods::mirror_request())
    .allow_headers(AllowHeaders::mirror_request());
    let router = Router::new()
        .route("/ws", http::allow(get(ws::upgrade), "GET"))
        .route("/healthz", http::allow(get(healthz), "GET"))
        .route("/readyz", http::allow(get(readyz), "GET"))
        .route("/metrics", http::allow(get(metrics), "GET"))
        .merge(http::routes())
        .merge(admin::routes(&hub))
        .merge(pages::routes())
        .layer(socketio)
        .layer(axum::middleware::map_request(socketio::own_head))
        .layer(cors)
        .with_state(hub);
    (router, io)
}

/// Whether a browser page from `origin` may open a socket: always in open mode (CORS
/// decides the HTTP API); with authentication on, only pages served by this host (the
/// `Origin`'s authority is the request's `Host`) and listed origins (a page elsewhere could
/// otherwise use a visitor's token that the browser sends). No `Origin`: not a browser page.
pub fn check_origin(hub: &Hub, headers: &HeaderMap) -> Result<(), protocol::ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    let (Some(origin), true) = (origin, hub.config().auth_on()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    let same_origin = origin
        .split_once("://")
        .is_some_and(|(_, authority)| Some(authority) == host);
    match hub.config().cors_origin_list() {
        _ if same_origin => Ok(()),
        Ok(None) => Ok(()),
        Ok(Some(allowed)) if allowed.iter().any(|allowed| allowed == origin) => Ok(()),
        _ => Err(protocol::ApiError::new(
            crate::runtime::bindings::types::ErrorCode::Forbidden,
            format!("pages from {origin} may not connect here (ROSTER_CORS_ORIGINS)"),
        )),
    }
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"ok":true}"#,
    )
        .into_response()
}

async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    let (status, body) = if hub.shutdown_token().is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"ok":false,"reason":"shutting down"}"#.to_owned(),
        )
    } else {
        // `auth` says whether tokens are verified: "open" means anyone is whoever they say.
        let auth = if hub.config().auth_on() {
            "jwt"
        } else {
            "open"
        };
        match hub.store.ping().await {
            Ok(()) => (
                StatusCode::OK,
                format!(
                    r#"{{"ok":true,"store":"{}","auth":"{auth}"}}"#,
                    hub.store.kind()
                ),
            ),
            Err(error) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "ok": false,
                    "reason": format!("store unavailable: {error:?}"),
                    "auth": auth,
                })
                .to_string(),
            ),
        }
    };
    (status, [("content-type", "application/json")], body).into_response()
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    use crate::metrics::Sample::{Counter, Gauge};
    let bus = &hub.bus.stats;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
    let mut samples = vec![
        Gauge(
            "roster_auth_open",
            "1 when no token key is configured (open mode: anyone is whoever they say).",
            Vec::new(),
            i64::from(!hub.config().auth_on()),
        ),
        Gauge(
            "roster_sockets",
            "Open sockets (WebSocket and Socket.IO).",
            Vec::new(),
            gauge(hub.socket_count()),
        ),
        Gauge(
            "roster_rooms",
            "Rooms with a subscriber on this node.",
            Vec::new(),
            gauge(hub.bus.room_count()),
        ),
        Counter(
            "roster_events_published",
            "Events delivered to this node's bus.",
            Vec::new(),
            load(&bus.published),
        ),
        Counter(
            "roster_event_deliveries",
            "Event copies queued to sockets.",
            Vec::new(),
            load(&bus.delivered),
        ),
        Counter(
            "roster_slow_readers",
            "Sockets closed because their outbound queue overflowed.",
            Vec::new(),
            load(&bus.slow_readers),
        ),
        Counter(
            "roster_connections_timed_out",
            "Connections closed for sending no complete request head within 10 s.",
            Vec::new(),
            load(&hub.connection_stats.timed_out),
        ),
        Counter(
            "roster_connections_evicted",
            "Connections closed before their first request to make room for newer ones.",
            Vec::new(),
            load(&hub.connection_stats.evicted),
        ),
        Counter(
            "roster_message_gaps_filled",
            "Gaps in a message channel's order filled from its history.",
            Vec::new(),
            load(&bus.gaps_filled),
        ),
        Counter(
            "roster_messages_lost",
            "Messages this node's subscribers missed: gone from history before a gap was filled.",
            Vec::new(),
            load(&bus.messages_lost),
        ),
        Counter(
            "roster_heartbeats",
            "Heartbeats handled.",
            Vec::new(),
            load(&hub.heartbeat_stats.beats),
        ),
        Counter(
            "roster_heartbeat_calls",
            "Component calls that carried heartbeats (coalesced: fewer than heartbeats under load).",
            Vec::new(),
            load(&hub.heartbeat_stats.calls),
        ),
        Counter(
            "roster_requests",
            "Requests handled (sockets and /v1).",
            Vec::new(),
            load(&hub.request_stats.total),
        ),
    ];
    for (code, count) in crate::hub::ERROR_CODES
        .iter()
        .zip(&hub.request_stats.errors)
    {
        samples.push(Counter(
            "roster_request_errors",
            "Requests that failed, by error code.",
            vec![("code", protocol::code_name(*code))],
            load(count),
        ));
    }
    if let crate::Backend::Redis(store, feed) = &hub.backend {
        samples.extend([
            Counter(
                "roster_redis_round_trips",
                "Pipelines sent to Redis (one per call; one per slot on a cluster).",
                Vec::new(),
                load(&store.stats.round_trips),
            ),
            Counter(
                "roster_redis_batches",
                "Atomic batches sent to Redis.",
                Vec::new(),
                load(&store.stats.batches),
            ),
            Counter(
                "roster_redis_events_published",
                "Events published to other nodes.",
                Vec::new(),
                load(&feed.stats.published),
            ),
            Counter(
                "roster_redis_events_relayed",
                "Events from other nodes delivered here.",
                Vec::new(),
                load(&feed.stats.relayed),
            ),
            Counter(
                "roster_redis_events_dropped",
                "Events that could not be published to other nodes.",
                Vec::new(),
                load(&feed.stats.dropped),
            ),
        ]);
    }
    let stats = hub.runtime.stats();
    for slot in &stats {
        samples.push(Counter(
            "roster_component_calls",
            "Component calls started.",
            vec![("component", slot.slot)],
            slot.calls,
        ));
    }
    for slot in &stats {
        samples.push(Counter(
            "roster_component_failures",
            "Component calls that failed (trap, deadline).",
            vec![("component", slot.slot)],
            slot.failures,
        ));
    }
    for slot in &stats {
        samples.push(Gauge(
            "roster_component_idle_instances",
            "Live component instances waiting for calls.",
            vec![("component", slot.slot)],
            gauge(slot.idle),
        ));
    }
    match crate::metrics::encode(samples) {
        Ok(text) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
