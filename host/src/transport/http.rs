//! The HTTP API under `/v1/`: the protocol's operations as REST, for backends and for the
//! Spin deployment (no inbound WebSockets there). Documented in `docs/openapi.yaml`.
//!
//! Bodies are the event payloads without the parts the path carries; replies are the same
//! acks the sockets get (`{"ok": true, ...}` or `{"ok": false, "error": {...}}`), with an
//! HTTP status per error code. There is no socket, so the acting user of metadata and lock
//! requests is `actorUserId` in the body (or the query, for `DELETE` of a lock).
//!
//! The bodies, statuses and messages come from the shared `wire/json.rs`; the Spin gateway
//! (`spin/gateway`) serves the same routes through the same code.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::hub::Hub;
use crate::protocol::{self, Ack, ApiError, HeartbeatBody, JoinBody, LockBody, Reply, WriteBody};
use crate::runtime::bindings::types::{Channel, ErrorCode, MetadataOperation};

/// The `/v1` routes.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route(
            "/v1/rooms/{room_id}/connections",
            allow(post(join).get(snapshot), "GET, POST"),
        )
        .route(
            "/v1/connections/{conn_id}/heartbeat",
            allow(post(heartbeat), "POST"),
        )
        .route(
            "/v1/connections/{conn_id}",
            allow(axum::routing::delete(leave), "DELETE"),
        )
        .route(
            "/v1/channels/{channel_type}/{channel_name}/metadata",
            allow(
                get(metadata_get)
                    .put(metadata_set)
                    .patch(metadata_update)
                    .delete(metadata_remove),
                "GET, PUT, PATCH, DELETE",
            ),
        )
        .route(
            "/v1/channels/{channel_type}/{channel_name}/locks/{lock_name}",
            allow(post(lock_acquire).delete(lock_release), "POST, DELETE"),
        )
        .route("/v1/reaper/tick", allow(post(reaper_tick), "POST"))
        .fallback(not_found)
}

/// A reply as an HTTP response.
pub fn respond(reply: Reply) -> Response {
    let status = StatusCode::from_u16(protocol::reply_status(&reply))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        protocol::reply_json(&reply),
    )
        .into_response()
}

/// A route that answers other methods with 405, an `Allow` header and an error body.
fn allow(route: MethodRouter<Arc<Hub>>, allowed: &'static str) -> MethodRouter<Arc<Hub>> {
    route.fallback(move |method: Method| async move {
        let mut response = respond(Err(protocol::method_not_allowed(method.as_str(), allowed)));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
        response
    })
}

async fn not_found() -> Response {
    let mut response = respond(Err(protocol::no_such_route()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// Decodes a body as `T` (see [`protocol::decode_body`]).
fn body<T: DeserializeOwned>(hub: &Hub, bytes: &Bytes, code: ErrorCode) -> Result<T, ApiError> {
    protocol::decode_body(bytes, hub.config().max_frame_bytes, code)
}

async fn join(State(hub): State<Arc<Hub>>, Path(room_id): Path<String>, bytes: Bytes) -> Response {
    let reply = async {
        let body: JoinBody = body(&hub, &bytes, ErrorCode::InvalidPayload)?;
        Ok(Ack::joined(hub.join(body.into_data(room_id)).await?))
    };
    respond(reply.await)
}

async fn snapshot(State(hub): State<Arc<Hub>>, Path(room_id): Path<String>) -> Response {
    let reply = hub
        .snapshot(&room_id)
        .await
        .map(|conns| Ack::Snapshot(conns.into_iter().map(protocol::ConnView::from).collect()));
    respond(reply)
}

async fn heartbeat(
    State(hub): State<Arc<Hub>>,
    Path(conn_id): Path<String>,
    bytes: Bytes,
) -> Response {
    let reply = async {
        let body: HeartbeatBody = body(&hub, &bytes, ErrorCode::InvalidPayload)?;
        let ok = hub.heartbeat(body.into_request(conn_id)).await?;
        Ok(Ack::Heartbeat {
            changed: ok.changed,
        })
    };
    respond(reply.await)
}

async fn leave(State(hub): State<Arc<Hub>>, Path(conn_id): Path<String>) -> Response {
    respond(hub.leave(&conn_id).await.map(|_| Ack::Done))
}

#[derive(Deserialize)]
struct ChannelPath {
    channel_type: String,
    channel_name: String,
}

impl ChannelPath {
    fn channel(self) -> Channel {
        Channel {
            channel_type: self.channel_type,
            channel_name: self.channel_name,
        }
    }
}

async fn metadata_get(State(hub): State<Arc<Hub>>, Path(path): Path<ChannelPath>) -> Response {
    respond(hub.metadata_get(path.channel()).await.map(Ack::channel))
}

async fn metadata_write(
    hub: &Hub,
    path: ChannelPath,
    bytes: &Bytes,
    operation: MetadataOperation,
) -> Reply {
    let body: WriteBody = body(hub, bytes, ErrorCode::MetadataInvalid)?;
    let state = hub
        .metadata_write(operation, body.into_request(path.channel()))
        .await?;
    Ok(Ack::channel(state))
}

async fn metadata_set(
    State(hub): State<Arc<Hub>>,
    Path(path): Path<ChannelPath>,
    bytes: Bytes,
) -> Response {
    respond(metadata_write(&hub, path, &bytes, MetadataOperation::Set).await)
}

async fn metadata_update(
    State(hub): State<Arc<Hub>>,
    Path(path): Path<ChannelPath>,
    bytes: Bytes,
) -> Response {
    respond(metadata_write(&hub, path, &bytes, MetadataOperation::Update).await)
}

async fn metadata_remove(
    State(hub): State<Arc<Hub>>,
    Path(path): Path<ChannelPath>,
    bytes: Bytes,
) -> Response {
    respond(metadata_write(&hub, path, &bytes, MetadataOperation::Remove).await)
}

#[derive(Deserialize)]
struct LockPath {
    channel_type: String,
    channel_name: String,
    lock_name: String,
}

impl LockPath {
    fn request(self, ttl_ms: Option<u64>, actor: Option<String>) -> crate::wit::types::LockRequest {
        protocol::lock_request(
            Channel {
                channel_type: self.channel_type,
                channel_name: self.channel_name,
            },
            self.lock_name,
            ttl_ms,
            actor,
        )
    }
}

async fn lock_acquire(
    State(hub): State<Arc<Hub>>,
    Path(path): Path<LockPath>,
    bytes: Bytes,
) -> Response {
    let reply = async {
        let body: LockBody = body(&hub, &bytes, ErrorCode::MetadataInvalid)?;
        let info = hub
            .acquire_lock(path.request(body.ttl_ms, body.actor_user_id))
            .await?;
        Ok(Ack::lock(info))
    };
    respond(reply.await)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActorQuery {
    #[serde(default)]
    actor_user_id: Option<String>,
}

async fn lock_release(
    State(hub): State<Arc<Hub>>,
    Path(path): Path<LockPath>,
    Query(query): Query<ActorQuery>,
    bytes: Bytes,
) -> Response {
    let reply = async {
        let body: LockBody = body(&hub, &bytes, ErrorCode::MetadataInvalid)?;
        let actor = body.actor_user_id.or(query.actor_user_id);
        hub.release_lock(path.request(None, actor)).await?;
        Ok(Ack::Done)
    };
    respond(reply.await)
}

/// `POST /v1/reaper/tick`: one reaper pass now, for external schedulers. A node runs its
/// reaper by itself; the route exists so that one scheduler can drive Spin deployments and
/// nodes alike. Needs the admin token.
async fn reaper_tick(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let reply = async {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        protocol::check_bearer(
            hub.config().admin_token.as_deref(),
            authorization,
            "ROSTER_ADMIN_TOKEN",
        )?;
        Ok(Ack::Tick(hub.reap().await?))
    };
    respond(reply.await)
}
