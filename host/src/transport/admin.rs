//! The admin API under `/admin/`: the running components, swaps and rollbacks.
//!
//! Every request needs `Authorization: Bearer <ROSTER_ADMIN_TOKEN>`; with no token
//! configured the admin API refuses everything (403), so it is never open by accident.
//!
//! - `GET /admin/components`: each slot's current and previous version (id = SHA-256 of the
//!   component), when it was loaded, its calls and failures, its limits, recent events.
//! - `PUT /admin/components/{slot}` (body: the component's bytes): swap it in.
//! - `POST /admin/components/{slot}/rollback`: restore the previous version.

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
