//! The HTTP API under `/v1/`: the protocol's operations as REST, for backends and for the
//! Spin deployment (no inbound WebSockets there). Documented in `docs/openapi.yaml`.
//!
//! Bodies are the event payloads without the parts the path carries; replies are the same
//! acks the sockets get (`{"ok": true, ...}` or `{"ok": false, "error": {...}}`), with an
//! HTTP status per error code. There is no socket, so the acting user of metadata and lock
//! requests is `actorUserId` in the body (or the query, for `DELETE` of a lock).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::hub::Hub;
use crate::protocol::{self, Ack, ApiError, ItemData, JoinData, OptionsData, Reply, WriteData};
use crate::runtime::bindings::types::{
    Channel, ErrorCode, HeartbeatRequest, LockRequest, MetadataOperation,
};

/// The `/v1` routes.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/v1/rooms/{room_id}/connections", post(join).get(snapshot))
        .route("/v1/connections/{conn_id}/heartbeat", post(heartbeat))
        .route("/v1/connections/{conn_id}", axum::routing::delete(leave))
        .route(
            "/v1/channels/{channel_type}/{channel_name}/metadata",
            get(metadata_get)
                .put(metadata_set)
                .patch(metadata_update)
                .delete(metadata_remove),
        )
        .route(
            "/v1/channels/{channel_type}/{channel_name}/locks/{lock_name}",
            post(lock_acquire).delete(lock_release),
        )
        .fallback(not_found)
}

/// The HTTP status of an error code.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidPayload | ErrorCode::MetadataInvalid => StatusCode::BAD_REQUEST,
        ErrorCode::UnknownConnection => StatusCode::NOT_FOUND,
        ErrorCode::StaleEpoch | ErrorCode::MetadataConflict => StatusCode::CONFLICT,
        ErrorCode::MetadataLock => StatusCode::LOCKED,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ComponentFailed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A reply as an HTTP response.
pub fn respond(reply: Reply) -> Response {
    let status = match &reply {
        Ok(_) => StatusCode::OK,
        Err(error) => status(error.code),
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        protocol::reply_json(&reply),
    )
        .into_response()
}

async fn not_found() -> Response {
    let error = ApiError::new(
        ErrorCode::InvalidPayload,
        "no such route; see docs/openapi.yaml",
    );
    let mut response = respond(Err(error));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// Decodes a body as `T`: size-checked, an empty body reads as `{}`.
fn body<T: DeserializeOwned>(hub: &Hub, bytes: &Bytes, code: ErrorCode) -> Result<T, ApiError> {
    let max = hub.config().max_frame_bytes;
    if bytes.len() > max {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is {} bytes; the limit is {max}", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::new(code, "the body is not UTF-8 JSON"))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    let raw: Box<RawValue> = serde_json::from_str(text)
        .map_err(|error| ApiError::new(code, format!("the body is not JSON: {error}")))?;
    protocol::decode(Some(&raw), code)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinBody {
    user_id: String,
    #[serde(default)]
    state: Option<Box<RawValue>>,
}

async fn join(State(hub): State<Arc<Hub>>, Path(room_id): Path<String>, bytes: Bytes) -> Response {
    let reply = async {
        let body: JoinBody = body(&hub, &bytes, ErrorCode::InvalidPayload)?;
        let joined = hub
            .join(JoinData {
                room_id,
                user_id: body.user_id,
                state: body.state,
            })
            .await?;
        Ok(Ack::joined(joined))
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatBody {
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    patch_state: Option<Box<RawValue>>,
}

async fn heartbeat(
    State(hub): State<Arc<Hub>>,
    Path(conn_id): Path<String>,
    bytes: Bytes,
) -> Response {
    let reply = async {
        let body: HeartbeatBody = body(&hub, &bytes, ErrorCode::InvalidPayload)?;
        let ok = hub
            .heartbeat(HeartbeatRequest {
                conn_id,
                epoch: body.epoch,
                patch_state: body.patch_state.map(|raw| String::from(raw.get())),
            })
            .await?;
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteBody {
    #[serde(default)]
    items: Option<Vec<ItemData>>,
    #[serde(default)]
    options: Option<OptionsData>,
    #[serde(default)]
    actor_user_id: Option<String>,
}

async fn metadata_get(State(hub): State<Arc<Hub>>, Path(path): Path<ChannelPath>) -> Response {
    let channel = Channel {
        channel_type: path.channel_type,
        channel_name: path.channel_name,
    };
    respond(hub.metadata_get(channel).await.map(Ack::channel))
}

async fn metadata_write(
    hub: &Hub,
    path: ChannelPath,
    bytes: &Bytes,
    operation: MetadataOperation,
) -> Reply {
    let body: WriteBody = body(hub, bytes, ErrorCode::MetadataInvalid)?;
    let actor = body.actor_user_id.clone();
    let data = WriteData {
        channel_type: path.channel_type,
        channel_name: path.channel_name,
        items: body.items,
        options: body.options,
        actor_user_id: body.actor_user_id,
    };
    let state = hub
        .metadata_write(operation, data.into_request(actor))
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockBody {
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    actor_user_id: Option<String>,
}

impl LockPath {
    fn request(self, ttl_ms: Option<u64>, actor: Option<String>) -> LockRequest {
        LockRequest {
            channel: Channel {
                channel_type: self.channel_type,
                channel_name: self.channel_name,
            },
            lock_name: self.lock_name,
            ttl_ms,
            actor,
        }
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
