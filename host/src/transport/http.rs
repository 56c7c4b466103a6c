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
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};

use secrecy::ExposeSecret;

use super::linger::PeerAddr;
use crate::hub::Hub;
use crate::protocol::auth;
use crate::protocol::ops::{self, OpId};
use crate::protocol::{self, ApiError, Reply};
use crate::runtime::bindings::types::ErrorCode;

/// The `/v1` routes: every one goes through the operation table's router, the one the
/// Spin gateway uses too.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/v1/{*path}", any(v1))
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

/// An error response with `status` (and an `Allow` header for a 405).
fn refuse(status: u16, error: ApiError, allow: Option<&str>) -> Response {
    let mut response = respond(Err(error));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if let Some(allow) = allow.and_then(|allow| header::HeaderValue::from_str(allow).ok()) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// A route that answers other methods with 405, an `Allow` header and an error body.
pub fn allow<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S>,
    allowed: &'static str,
) -> MethodRouter<S> {
    route.fallback(move |method: Method| async move {
        refuse(
            405,
            protocol::method_not_allowed(method.as_str(), allowed),
            Some(allowed),
        )
    })
}

/// The reply to a path no route serves.
pub async fn not_found() -> Response {
    refuse(404, protocol::no_such_route(), None)
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
    // A body that stops short of its Content-Length would otherwise hold the request (and
    // its connection) forever.
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(request.into_body(), max))
        .await
        .map_err(|_| {
            ApiError::new(
                code,
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            )
        })?;
    read.map_err(|error| {
        let over_limit = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large(String::from("more than that"))
        } else {
            ApiError::new(code, format!("the body could not be read: {error}"))
        }
    })
}

/// How long a request body may take to arrive in full.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every `/v1` request: routed, authenticated, counted against its principal's rate,
/// read, decoded and run as the operation table says.
async fn v1(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    request: Request,
) -> Response {
    let method = request.method().as_str().to_owned();
    let routed = match ops::route(&method, request.uri().path()) {
        Ok(routed) => routed,
        Err(refusal) => {
            return refuse(refusal.status(), refusal.error(&method), refusal.allow());
        }
    };
    let query = request.uri().query().unwrap_or_default().to_owned();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut unread = false;
    let op = routed.op;
    let started = std::time::Instant::now();
    let reply = async {
        let principal = if routed.op.id == OpId::ReaperTick {
            // Schedulers only: the node reaps by itself; the route lets one scheduler drive
            // Spin deployments and nodes alike.
            protocol::check_bearer(
                hub.config()
                    .tick_token
                    .as_ref()
                    .map(|token| token.expose_secret()),
                authorization.as_deref(),
                "ROSTER_TICK_TOKEN",
            )?;
            auth::open_principal()
        } else {
            let principal = hub
                .authenticate(auth::bearer(authorization.as_deref()))?
                .principal;
            let key = match &principal.user_id {
                Some(user) => format!("user:{user}"),
                None => format!("ip:{}", peer.ip()),
            };
            hub.admit_http(&key)?;
            principal
        };
        let max = hub.config().max_frame_bytes;
        let body = read_body(request, max, routed.op.invalid)
            .await
            .inspect_err(|_| unread = true)?;
        let request = ops::Request::from_http(&routed, &query, &body, max)?;
        ops::execute(request, &hub.caller(principal)).await
    };
    let reply = reply.await;
    hub.record_request(
        crate::metrics::Transport::Http,
        crate::metrics::operation_label(op),
        started.elapsed(),
        reply.as_ref().err().map(|error| error.code),
    );
    let mut response = respond(reply);
    if unread {
        // The body was refused unread (or could not be read): the connection cannot carry
        // another request, and the client must not try to reuse it.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}
