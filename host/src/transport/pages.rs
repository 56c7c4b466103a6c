//! The pages the node serves itself: the demo at `/` (off with `ROSTER_DEMO=false`), the
//! operator dashboard at `/dashboard`, their assets under `/assets/` and the JS SDK they
//! are built on under `/sdk/`.
//!
//! The files are compiled into the binary (release builds; debug builds read them from
//! `web/public/` and `clients/js/src/` at run time, so a page can be edited without a
//! rebuild). There is no build step: the pages are plain HTML, CSS and ES modules, and the
//! libraries they use are vendored from npm into `web/public/vendor/` (see `docs/dashboard.md`).
//! The dashboard's data comes from the admin API, behind `ROSTER_ADMIN_TOKEN`; the page
//! itself holds no secret.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;

use crate::hub::Hub;

/// `web/public/`: the pages, their scripts and styles, vendored libraries.
#[derive(Embed)]
#[folder = "../web/public/"]
struct Pages;

/// `clients/js/src/`: the SDK, as the browser imports it.
#[derive(Embed)]
#[folder = "../clients/js/src/"]
struct Sdk;

/// What a page may load and connect to: this origin only (its own scripts, styles and
/// sockets; `ws:`/`wss:` name the same host's WebSocket for browsers that do not match it
/// with `'self'`). uPlot sizes its canvas through inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The page routes.
pub fn routes() -> Router<Arc<Hub>> {
    use super::http::allow;
    Router::new()
        .route("/", allow(get(demo), "GET, HEAD"))
        .route("/dashboard", allow(get(dashboard), "GET, HEAD"))
        .route("/assets/{*path}", allow(get(asset), "GET, HEAD"))
        .route("/sdk/{*path}", allow(get(sdk), "GET, HEAD"))
}

async fn demo(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    if !hub.config().demo {
        return super::http::not_found().await;
    }
    serve(Pages::get("index.html"), &headers).await
}

async fn dashboard(headers: HeaderMap) -> Response {
    serve(Pages::get("dashboard.html"), &headers).await
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(Pages::get(&path), &headers).await
}

async fn sdk(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(Sdk::get(&path), &headers).await
}

/// A file as a response: its type from its name, revalidated on every load (an `ETag` of
/// its hash answers a repeat with 304), kept to this origin by the security headers.
async fn serve(file: Option<rust_embed::EmbeddedFile>, headers: &HeaderMap) -> Response {
    let Some(file) = file else {
        return super::http::not_found().await;
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex(&hash[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let set = response.headers_mut();
    let mimetype = file.metadata.mimetype();
    let charset = if mimetype.starts_with("text/") || mimetype.ends_with("javascript") {
        "; charset=utf-8"
    } else {
        ""
    };
    if let Ok(value) = HeaderValue::from_str(&format!("{mimetype}{charset}")) {
        set.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        set.insert(header::ETAG, value);
    }
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}
