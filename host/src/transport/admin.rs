//! The admin API under `/admin/`: the running components, swaps and rollbacks.
//!
//! Every request needs `Authorization: Bearer <ROSTER_ADMIN_TOKEN>`; with no token
//! configured the admin API refuses everything (403), so it is never open by accident.
//!
//! - `GET /admin/components`: each slot's current and previous version (id = SHA-256 of the
//!   component), when it was loaded, its calls and failures, its limits, recent events.
//! - `PUT /admin/components/{slot}` (body: the component's bytes): swap it in.
//! - `POST /admin/components/{slot}/rollback`: restore the previous version.
//! - `GET /admin/stats`: sockets, rooms, requests and their failures by code, request
//!   latency percentiles, heartbeats, component calls: cumulative counters the dashboard
//!   turns into rates.
//! - `GET /admin/nodes`: every node holding a lease (with Redis, every live node).
//! - `GET /admin/rooms`: rooms with a member or watcher on this node, with occupancy.
//! - `GET /admin/rooms/{room}`: a room's members (its snapshot) and its metadata.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;

use crate::hub::Hub;
use crate::protocol::{self, ApiError};
use crate::runtime::bindings::types::ErrorCode;
use crate::runtime::{SlotName, SwapError};

/// The admin routes (behind the token), with their own body limit: components are larger
/// than requests.
pub fn routes(hub: &Arc<Hub>) -> Router<Arc<Hub>> {
    use super::http::allow;
    Router::new()
        .route("/admin/components", allow(get(list), "GET"))
        .route("/admin/components/{slot}", allow(put(swap), "PUT"))
        .route(
            "/admin/components/{slot}/rollback",
            allow(post(rollback), "POST"),
        )
        .route("/admin/stats", allow(get(stats), "GET"))
        .route("/admin/nodes", allow(get(nodes), "GET"))
        .route("/admin/rooms", allow(get(rooms), "GET"))
        .route("/admin/rooms/{room}", allow(get(room), "GET"))
        .route_layer(middleware::from_fn_with_state(Arc::clone(hub), authorize))
}

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = crate::protocol::reply_json(&Err(ApiError::new(code, message)));
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn authorize(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match protocol::check_bearer(
        hub.config()
            .admin_token
            .as_ref()
            .map(secrecy::ExposeSecret::expose_secret),
        presented,
        "ROSTER_ADMIN_TOKEN",
    ) {
        Ok(()) => next.run(request).await,
        Err(refused) => super::http::respond(Err(refused)),
    }
}

fn ok<T: Serialize>(value: &T) -> Response {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        ok: bool,
        #[serde(flatten)]
        value: &'a T,
    }
    match serde_json::to_string(&Ok { ok: true, value }) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ComponentFailed,
            e.to_string(),
        ),
    }
}

fn unknown_slot(why: String) -> Response {
    error(StatusCode::NOT_FOUND, ErrorCode::InvalidPayload, why)
}

fn refused(why: SwapError) -> Response {
    match why {
        SwapError::Refused { .. } => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPayload,
            why.to_string(),
        ),
        SwapError::NoPrevious(_) => error(
            StatusCode::CONFLICT,
            ErrorCode::InvalidPayload,
            why.to_string(),
        ),
    }
}

async fn list(State(hub): State<Arc<Hub>>) -> Response {
    #[derive(Serialize)]
    struct Components {
        node: String,
        components: [crate::runtime::SlotInfo; 4],
    }
    ok(&Components {
        node: hub.node_id().to_owned(),
        components: hub.runtime.slots(),
    })
}

async fn swap(State(hub): State<Arc<Hub>>, Path(name): Path<String>, request: Request) -> Response {
    let slot: SlotName = match name.parse() {
        Ok(slot) => slot,
        Err(why) => return unknown_slot(why),
    };
    let max = hub.config().max_component_bytes;
    let body = match super::http::read_body(request, max, ErrorCode::InvalidPayload).await {
        Ok(body) => body,
        Err(refused) => return super::http::respond(Err(refused)),
    };
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPayload,
            "the body must be the component's bytes",
        );
    }
    match hub
        .runtime
        .swap(slot, body.to_vec(), "admin upload".into())
        .await
    {
        Ok(swapped) => ok(&swapped),
        Err(why) => {
            tracing::warn!(%slot, reason = %why, "refused a component upload");
            refused(why)
        }
    }
}

async fn rollback(State(hub): State<Arc<Hub>>, Path(name): Path<String>) -> Response {
    let slot: SlotName = match name.parse() {
        Ok(slot) => slot,
        Err(why) => return unknown_slot(why),
    };
    match hub.runtime.rollback(slot) {
        Ok(swapped) => {
            tracing::info!(%slot, to = %swapped.version, "component rolled back on request");
            ok(&swapped)
        }
        Err(why) => refused(why),
    }
}

/// The most rooms `GET /admin/rooms` lists.
const MAX_LISTED_ROOMS: usize = 500;

async fn stats(State(hub): State<Arc<Hub>>) -> Response {
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering::Relaxed;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Stats {
        node: String,
        store: &'static str,
        auth: &'static str,
        now: u64,
        uptime_ms: u64,
        sockets: usize,
        rooms: usize,
        channels: usize,
        requests: Requests,
        latency: crate::hub::LatencySummary,
        heartbeats: Heartbeats,
        components: Vec<Component>,
    }
    #[derive(Serialize)]
    struct Requests {
        total: u64,
        errors: BTreeMap<&'static str, u64>,
    }
    #[derive(Serialize)]
    struct Heartbeats {
        beats: u64,
        calls: u64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Component {
        slot: crate::runtime::SlotName,
        version: String,
        /// The current version's calls and failures.
        calls: u64,
        failures: u64,
        /// Every version's, since the node started: rates stay right across a swap.
        total_calls: u64,
        total_failures: u64,
    }
    let requests = &hub.request_stats;
    let now = hub.now_ms();
    ok(&Stats {
        node: hub.node_id().to_owned(),
        store: hub.store.kind(),
        auth: if hub.config().auth_on() {
            "jwt"
        } else {
            "open"
        },
        now,
        uptime_ms: now.saturating_sub(hub.started_at()),
        sockets: hub.socket_count(),
        rooms: hub.bus.room_count(),
        channels: hub.bus.channel_count(),
        requests: Requests {
            total: requests.total.load(Relaxed),
            errors: crate::hub::ERROR_CODES
                .iter()
                .zip(&requests.errors)
                .map(|(code, count)| (protocol::code_name(*code), count.load(Relaxed)))
                .collect(),
        },
        latency: requests.latency(),
        heartbeats: Heartbeats {
            beats: hub.heartbeat_stats.beats.load(Relaxed),
            calls: hub.heartbeat_stats.calls.load(Relaxed),
        },
        components: hub
            .runtime
            .slots()
            .into_iter()
            .zip(hub.runtime.stats())
            .map(|(info, totals)| Component {
                slot: info.slot,
                version: info.current.version,
                calls: info.current.calls,
                failures: info.current.failures,
                total_calls: totals.calls,
                total_failures: totals.failures,
            })
            .collect(),
    })
}

async fn nodes(State(hub): State<Arc<Hub>>) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Node {
        node_id: String,
        expires_at: u64,
        #[serde(rename = "self")]
        this: bool,
    }
    #[derive(Serialize)]
    struct Nodes {
        node: String,
        store: &'static str,
        now: u64,
        nodes: Vec<Node>,
    }
    let leases = match hub.nodes().await {
        Ok(leases) => leases,
        Err(refused) => return super::http::respond(Err(refused)),
    };
    ok(&Nodes {
        node: hub.node_id().to_owned(),
        store: hub.store.kind(),
        now: hub.now_ms(),
        nodes: leases
            .into_iter()
            .map(|lease| Node {
                this: lease.node_id == hub.node_id(),
                node_id: lease.node_id,
                expires_at: lease.expires_at,
            })
            .collect(),
    })
}

/// The principal of the dashboard's reads: an admin, whom every channel rule lets read.
fn operator() -> crate::runtime::bindings::types::Principal {
    crate::runtime::bindings::types::Principal {
        user_id: None,
        verified: true,
        role: Some("admin".into()),
        permissions: Vec::new(),
        rooms: None,
    }
}

/// Runs `event` with `data` as the operator, and returns its ack as JSON.
async fn run_as_operator(
    hub: &Hub,
    event: &str,
    data: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    use crate::protocol::ops;
    let raw = serde_json::value::to_raw_value(&data)
        .map_err(|e| ApiError::new(ErrorCode::InvalidPayload, e.to_string()))?;
    let (_, request) = ops::Request::from_event(event, Some(&raw))?;
    let reply = ops::execute(request, &hub.caller(operator())).await;
    let ack = protocol::reply_json(&Ok(reply?));
    serde_json::from_str(&ack).map_err(|e| ApiError::new(ErrorCode::ComponentFailed, e.to_string()))
}

async fn rooms(State(hub): State<Arc<Hub>>) -> Response {
    #[derive(Serialize)]
    struct Room {
        #[serde(rename = "roomId")]
        room_id: String,
        sockets: usize,
        connections: Option<u32>,
        users: Option<u32>,
    }
    #[derive(Serialize)]
    struct Rooms {
        node: String,
        rooms: Vec<Room>,
    }
    let caller = hub.caller(operator());
    let mut rooms = Vec::new();
    for (room_id, sockets) in hub.bus.rooms(MAX_LISTED_ROOMS) {
        // A room the store cannot count is still listed, with its counts unknown.
        let occupancy = crate::protocol::ops::Components::count(&caller, &room_id)
            .await
            .ok();
        rooms.push(Room {
            room_id,
            sockets,
            connections: occupancy.as_ref().map(|o| o.connections),
            users: occupancy.as_ref().map(|o| o.users),
        });
    }
    ok(&Rooms {
        node: hub.node_id().to_owned(),
        rooms,
    })
}

async fn room(State(hub): State<Arc<Hub>>, Path(room_id): Path<String>) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Room {
        room_id: String,
        occupancy: serde_json::Value,
        members: serde_json::Value,
        metadata: serde_json::Value,
    }
    let details = async {
        let snapshot = run_as_operator(
            &hub,
            "presence:snapshot",
            serde_json::json!({ "roomId": room_id }),
        )
        .await?;
        let count = run_as_operator(
            &hub,
            "presence:count",
            serde_json::json!({ "roomId": room_id }),
        )
        .await?;
        let mut metadata = run_as_operator(
            &hub,
            "metadata:get",
            serde_json::json!({ "channelType": "room", "channelName": room_id }),
        )
        .await?;
        if let Some(fields) = metadata.as_object_mut() {
            fields.remove("ok");
            fields.insert("channelType".into(), "room".into());
            fields.insert("channelName".into(), room_id.clone().into());
        }
        Ok::<_, ApiError>(Room {
            occupancy: serde_json::json!({
                "connections": count.get("connections"),
                "users": count.get("users"),
            }),
            members: snapshot
                .get("snapshot")
                .cloned()
                .unwrap_or(serde_json::Value::Array(Vec::new())),
            metadata,
            room_id: room_id.clone(),
        })
    };
    match details.await {
        Ok(room) => ok(&room),
        Err(refused) => super::http::respond(Err(refused)),
    }
}
