//! The HTTP API under `/v1/`: the protocol's operations as REST, for backends and for the
//! Spin deployment (no inbound WebSockets there). Documented in `docs/openapi.yaml`.
//!
//! Bodies are the event payloads without the parts the path carries; replies are the same
//! acks the sockets get (`{"ok": true, ...}` or `{"ok": false, "error": {...}}`), with an
//! HTTP status per error code. There is no socket, so the acting user of metadata and lock
//! requests is `actorUserId` in the body (or the query, for `DELETE` of a lock).
//!
//! Every failure has the contract's shape, including those no handler sees: a body over the
//! limit or that cannot be read (a broken chunked encoding), a path that is not UTF-8, a
//! wrong method (405 with `Allow`), a path no route serves (404). The extractors here turn
//! each into the JSON error rather than axum's plain-text rejections.
//!
//! The bodies, statuses and messages come from the shared `wire/json.rs`; the Spin gateway
//! (`spin/gateway`) serves the same routes through the same code.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::hub::Hub;
use crate::protocol::{
    self, Ack, ApiError, HeartbeatBody, JoinBody, LockBody, Reply, SnapshotData, WriteBody,
};
use crate::runtime::bindings::types::{Channel, ErrorCode, MetadataOperation};

/// The `/v1` routes.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route(
            "/v1/rooms/{room_id}/connections",
            allow(post(join).get(snapshot), "GET, POST"),
        )
        .route(
            "/v1/rooms/{room_id}/occupancy",
            allow(get(occupancy), "GET"),
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
pub fn allow<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S>,
    allowed: &'static str,
) -> MethodRouter<S> {
    route.fallback(move |method: Method| async move {
        let mut response = respond(Err(protocol::method_not_allowed(method.as_str(), allowed)));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
        response
    })
}

/// The reply to a path no route serves.
pub async fn not_found() -> Response {
    let mut response = respond(Err(protocol::no_such_route()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// Reads a request body of at most `max` bytes: more is `PAYLOAD_TOO_LARGE` (without
/// reading the rest), a body that cannot be read (a broken chunked encoding, a connection
/// cut mid-body) is `code`.
pub async fn read_body(request: Request, max: usize, code: ErrorCode) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let too_large = |size: String| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is {size} bytes; the limit is {max}"),
        )
    };
    if let Some(declared) = declared
        && declared > max as u64
    {
        return Err(too_large(declared.to_string()));
    }
    axum::body::to_bytes(request.into_body(), max)
        .await
        .map_err(|error| {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                too_large(String::from("more than that"))
            } else {
                ApiError::new(code, format!("the body could not be read: {error}"))
            }
        })
}

/// A `/v1` body, read within the request limit. A failure is already the JSON response.
pub struct Body(Bytes);

impl FromRequest<Arc<Hub>> for Body {
    type Rejection = Response;

    async fn from_request(request: Request, hub: &Arc<Hub>) -> Result<Self, Response> {
        let code = if request.uri().path().starts_with("/v1/channels/") {
            ErrorCode::MetadataInvalid
        } else {
            ErrorCode::InvalidPayload
        };
        read_body(request, hub.config().max_frame_bytes, code)
            .await
            .map(Body)
            .map_err(|error| respond(Err(error)))
    }
}

/// The path's parameters, or the contract's error for a path that cannot be read (not
/// UTF-8 once percent-decoded).
fn path<T>(path: Result<Path<T>, PathRejection>, code: ErrorCode) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| ApiError::new(code, format!("the path is not valid: {rejection}")))
}

/// The query's parameters, or the contract's error.
fn query<T>(query: Result<Query<T>, QueryRejection>, code: ErrorCode) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::new(code, format!("the query is not valid: {rejection}")))
}

/// Decodes a body as `T` (see [`protocol::decode_body`]).
fn body<T: DeserializeOwned>(hub: &Hub, body: &Body, code: ErrorCode) -> Result<T, ApiError> {
    protocol::decode_body(&body.0, hub.config().max_frame_bytes, code)
}

const INVALID: ErrorCode = ErrorCode::InvalidPayload;
const METADATA_INVALID: ErrorCode = ErrorCode::MetadataInvalid;

async fn join(
    State(hub): State<Arc<Hub>>,
    room_id: Result<Path<String>, PathRejection>,
    bytes: Body,
) -> Response {
    let reply = async {
        let room_id = path(room_id, INVALID)?;
        let body: JoinBody = body(&hub, &bytes, INVALID)?;
        Ok(Ack::joined(hub.join(body.into_data(room_id), None).await?))
    };
    respond(reply.await)
}

/// The query of a paged snapshot.
#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn snapshot(
    State(hub): State<Arc<Hub>>,
    room_id: Result<Path<String>, PathRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let reply = async {
        let room_id = path(room_id, INVALID)?;
        let page = query(page, INVALID)?;
        let request = SnapshotData {
            room_id,
            cursor: page.cursor,
            limit: page.limit,
        };
        Ok(Ack::snapshot(hub.snapshot(request.into_request()).await?))
    };
    respond(reply.await)
}

async fn occupancy(
    State(hub): State<Arc<Hub>>,
    room_id: Result<Path<String>, PathRejection>,
) -> Response {
    let reply = async {
        let room_id = path(room_id, INVALID)?;
        let occupancy = hub.count(&room_id).await?;
        Ok(Ack::Count { room_id, occupancy })
    };
    respond(reply.await)
}

async fn heartbeat(
    State(hub): State<Arc<Hub>>,
    conn_id: Result<Path<String>, PathRejection>,
    bytes: Body,
) -> Response {
    let reply = async {
        let conn_id = path(conn_id, INVALID)?;
        let body: HeartbeatBody = body(&hub, &bytes, INVALID)?;
        let ok = hub.heartbeat(body.into_request(conn_id)).await?;
        Ok(Ack::Heartbeat {
            changed: ok.changed,
        })
    };
    respond(reply.await)
}

async fn leave(
    State(hub): State<Arc<Hub>>,
    conn_id: Result<Path<String>, PathRejection>,
) -> Response {
    let reply = async {
        let conn_id = path(conn_id, INVALID)?;
        hub.leave(&conn_id).await?;
        Ok(Ack::Done)
    };
    respond(reply.await)
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

async fn metadata_get(
    State(hub): State<Arc<Hub>>,
    channel: Result<Path<ChannelPath>, PathRejection>,
) -> Response {
    let reply = async {
        let channel = path(channel, METADATA_INVALID)?.channel();
        Ok(Ack::channel(hub.metadata_get(channel).await?))
    };
    respond(reply.await)
}

async fn metadata_write(
    hub: &Hub,
    channel: Result<Path<ChannelPath>, PathRejection>,
    bytes: &Body,
    operation: MetadataOperation,
) -> Reply {
    let channel = path(channel, METADATA_INVALID)?.channel();
    let body: WriteBody = body(hub, bytes, METADATA_INVALID)?;
    let state = hub
        .metadata_write(operation, body.into_request(channel))
        .await?;
    Ok(Ack::channel(state))
}

async fn metadata_set(
    State(hub): State<Arc<Hub>>,
    channel: Result<Path<ChannelPath>, PathRejection>,
    bytes: Body,
) -> Response {
    respond(metadata_write(&hub, channel, &bytes, MetadataOperation::Set).await)
}

async fn metadata_update(
    State(hub): State<Arc<Hub>>,
    channel: Result<Path<ChannelPath>, PathRejection>,
    bytes: Body,
) -> Response {
    respond(metadata_write(&hub, channel, &bytes, MetadataOperation::Update).await)
}

async fn metadata_remove(
    State(hub): State<Arc<Hub>>,
    channel: Result<Path<ChannelPath>, PathRejection>,
    bytes: Body,
) -> Response {
    respond(metadata_write(&hub, channel, &bytes, MetadataOperation::Remove).await)
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
    lock: Result<Path<LockPath>, PathRejection>,
    bytes: Body,
) -> Response {
    let reply = async {
        let lock = path(lock, METADATA_INVALID)?;
        let body: LockBody = body(&hub, &bytes, METADATA_INVALID)?;
        let info = hub
            .acquire_lock(lock.request(body.ttl_ms, body.actor_user_id))
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
    lock: Result<Path<LockPath>, PathRejection>,
    actor: Result<Query<ActorQuery>, QueryRejection>,
    bytes: Body,
) -> Response {
    let reply = async {
        let lock = path(lock, METADATA_INVALID)?;
        let actor = query(actor, METADATA_INVALID)?;
        let body: LockBody = body(&hub, &bytes, METADATA_INVALID)?;
        let actor = body.actor_user_id.or(actor.actor_user_id);
        hub.release_lock(lock.request(None, actor)).await?;
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
