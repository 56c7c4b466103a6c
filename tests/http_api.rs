//! The `/v1` HTTP API: the same operations with the same results as the sockets, HTTP
//! statuses per error code, and HTTP and WebSocket clients seeing each other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::time::Duration;

use roster_tests::{EPOCH_MS, TestHost};
use serde_json::json;

/// Presence over HTTP: join, snapshot, heartbeat with `changed`, epoch fencing, leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_over_http() {
    let host = TestHost::start().await;
    let http = host.http();
    let joined = http
        .ok(
            "POST",
            "/v1/rooms/lobby/connections",
            Some(json!({"userId": "ada", "state": {"s": 1}})),
        )
        .await;
    let conn = joined["self"]["connId"].as_str().unwrap().to_owned();
    let token = joined["self"]["resumeToken"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32);
    assert_eq!(
        joined,
        json!({"ok": true,
               "snapshot": [{"connId": conn, "userId": "ada", "state": {"s": 1}, "epoch": EPOCH_MS, "lastSeen": EPOCH_MS}],
               "self": {"connId": conn, "epoch": EPOCH_MS, "resumeToken": token}})
    );
    let beat = format!("/v1/connections/{conn}/heartbeat");
    assert_eq!(
        http.ok("POST", &beat, None).await,
        json!({"ok": true, "changed": false})
    );
    assert_eq!(
        http.ok("POST", &beat, Some(json!({"patchState": {"s": 2}})))
            .await,
        json!({"ok": true, "changed": true})
    );
    http.ok("POST", &beat, Some(json!({"epoch": EPOCH_MS + 1})))
        .await;
    http.fails(
        "POST",
        &beat,
        Some(json!({"epoch": EPOCH_MS})),
        409,
        "STALE_EPOCH",
    )
    .await;

    let snapshot = http.ok("GET", "/v1/rooms/lobby/connections", None).await;
    assert_eq!(snapshot["snapshot"][0]["state"], json!({"s": 2}));
    assert_eq!(snapshot["snapshot"][0]["epoch"], json!(EPOCH_MS + 1));

    assert_eq!(
        http.ok("DELETE", &format!("/v1/connections/{conn}"), None)
            .await,
        json!({"ok": true})
    );
    http.fails(
        "DELETE",
        &format!("/v1/connections/{conn}"),
        None,
        404,
        "UNKNOWN_CONNECTION",
    )
    .await;
    http.fails("POST", &beat, None, 404, "UNKNOWN_CONNECTION")
        .await;
}

/// Metadata and locks over HTTP, with `actorUserId` as the acting user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_over_http() {
    let host = TestHost::start().await;
    let http = host.http();
    let path = "/v1/channels/room/lobby/metadata";
    let set = http
        .ok("PUT", path, Some(json!({"items": [{"key": "topic", "value": "hi"}], "options": {"addUserId": true}, "actorUserId": "ada"})))
        .await;
    assert_eq!(
        set,
        json!({"ok": true, "items": [{"key": "topic", "value": "hi", "revision": 1, "authorUid": "ada"}], "majorRevision": 1})
    );
    assert_eq!(http.ok("GET", path, None).await, set);
    let updated = http
        .ok(
            "PATCH",
            path,
            Some(json!({"items": [{"key": "topic", "value": "yo", "revision": 1}]})),
        )
        .await;
    assert_eq!(updated["items"][0]["revision"], 2);
    http.fails(
        "PATCH",
        path,
        Some(json!({"items": [{"key": "topic", "value": "x", "revision": 1}]})),
        409,
        "METADATA_CONFLICT",
    )
    .await;
    http.fails(
        "PUT",
        path,
        Some(json!({"items": [{"key": "topic"}]})),
        400,
        "METADATA_INVALID",
    )
    .await;

    let lock = "/v1/channels/room/lobby/locks/editor";
    let acquired = http
        .ok(
            "POST",
            lock,
            Some(json!({"actorUserId": "ada", "ttlMs": 1000})),
        )
        .await;
    assert_eq!(acquired["owner"], "ada");
    http.fails(
        "POST",
        lock,
        Some(json!({"actorUserId": "bob"})),
        423,
        "METADATA_LOCK",
    )
    .await;
    http.fails("POST", lock, None, 401, "UNAUTHORIZED").await;
    let guarded = json!({"items": [{"key": "doc", "value": "v"}], "options": {"lockName": "editor"}, "actorUserId": "bob"});
    http.fails("PATCH", path, Some(guarded), 423, "METADATA_LOCK")
        .await;
    http.fails(
        "DELETE",
        &format!("{lock}?actorUserId=bob"),
        None,
        423,
        "METADATA_LOCK",
    )
    .await;
    http.ok("DELETE", &format!("{lock}?actorUserId=ada"), None)
        .await;

    let removed = http.ok("DELETE", path, None).await;
    assert_eq!(
        removed,
        json!({"ok": true, "items": [], "majorRevision": 3})
    );
}

/// An HTTP join is a `presence:event` for WebSocket members, and a WebSocket member is in
/// the HTTP snapshot: one semantics across transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_websocket_clients_see_each_other() {
    let host = TestHost::start().await;
    let mut ws = host.connect().await;
    let (ws_conn, ..) = ws.join("lobby", "ws-user", json!({"via": "ws"})).await;
    let http = host.http();
    let joined = http
        .ok(
            "POST",
            "/v1/rooms/lobby/connections",
            Some(json!({"userId": "http-user"})),
        )
        .await;
    let http_conn = joined["self"]["connId"].as_str().unwrap().to_owned();
    let event = ws.next_event().await;
    assert_eq!(
        (event["type"].clone(), event["connId"].clone()),
        (json!("join"), json!(http_conn))
    );
    assert!(
        joined["snapshot"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["connId"] == json!(ws_conn))
    );

    http.ok(
        "POST",
        &format!("/v1/connections/{http_conn}/heartbeat"),
        Some(json!({"patchState": {"via": "http"}})),
    )
    .await;
    assert_eq!(ws.next_event().await["state"], json!({"via": "http"}));
    http.ok(
        "PUT",
        "/v1/channels/room/lobby/metadata",
        Some(json!({"items": [{"key": "k", "value": "v"}]})),
    )
    .await;
    assert_eq!(ws.next_event().await["event"], "metadata:event");
    // The HTTP API may end a socket's connection; the socket learns it from the leave.
    http.ok("DELETE", &format!("/v1/connections/{ws_conn}"), None)
        .await;
    let leave = ws.next_event().await;
    assert_eq!(
        (leave["type"].clone(), leave["connId"].clone()),
        (json!("leave"), json!(ws_conn))
    );
    ws.fails(
        "presence:heartbeat",
        json!({"connId": ws_conn}),
        "UNKNOWN_CONNECTION",
    )
    .await;
    ws.expect_silence(Duration::from_millis(100)).await;
}

/// Bad requests get JSON errors with their HTTP status; health and metrics answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_and_health() {
    let host = TestHost::start_with(|c| c.max_frame_bytes = 4096).await;
    let http = host.http();
    http.fails(
        "POST",
        "/v1/rooms/lobby/connections",
        Some(json!({"userId": 5})),
        400,
        "INVALID_PAYLOAD",
    )
    .await;
    let (status, body) = http.send("POST", "/v1/rooms/lobby/connections", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("INVALID_PAYLOAD"))
    );
    let big = json!({"userId": "ada", "state": {"blob": "x".repeat(5000)}});
    http.fails(
        "POST",
        "/v1/rooms/lobby/connections",
        Some(big),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    http.fails("GET", "/v1/nope", None, 404, "INVALID_PAYLOAD")
        .await;

    assert_eq!(
        http.send("GET", "/healthz", None).await,
        (200, json!({"ok": true}))
    );
    assert_eq!(
        http.send("GET", "/readyz", None).await,
        (200, json!({"ok": true, "store": "memory", "auth": "open"}))
    );
    let (status, metrics) = http.send("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("roster_component_calls_total{component=\"presence\"}"),
        "{text}"
    );
}

/// `/metrics` is OpenMetrics text from the Prometheus client library, with the latency
/// histograms filled by what clients did: requests by event and transport, component
/// calls by slot, store executions and their sizes, event fan-out by transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_the_latency_histograms() {
    let host = TestHost::start().await;
    let mut watcher = host.connect().await;
    watcher.join("metrics-room", "ada", json!({})).await;
    let mut sio = roster_tests::SioClient::connect(&host).await.unwrap();
    let joined = sio
        .request(
            "presence:join",
            json!({"roomId": "metrics-room", "userId": "bob", "state": {}}),
        )
        .await;
    assert_eq!(joined["ok"], json!(true), "{joined}");
    watcher.next_event().await;
    host.http()
        .ok("GET", "/v1/rooms/metrics-room/connections", None)
        .await;

    let response = reqwest::get(host.url("/metrics")).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let count = |series: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    // Histograms are process-wide: other tests in this binary add to them, never less.
    for series in [
        r#"roster_request_duration_seconds_count{event="presence:join",transport="ws"}"#,
        r#"roster_request_duration_seconds_count{event="presence:join",transport="socketio"}"#,
        r#"roster_request_duration_seconds_count{event="presence:snapshot",transport="http"}"#,
        r#"roster_component_call_duration_seconds_count{component="presence"}"#,
        r#"roster_fanout_delay_seconds_count{transport="ws"}"#,
        "roster_store_round_trip_seconds_count",
        "roster_store_batch_size_count",
    ] {
        assert!(count(series) >= 1, "{series}");
    }
    assert!(text.contains("# TYPE roster_request_duration_seconds histogram"));
    assert!(text.contains(
        r#"roster_request_duration_seconds_bucket{le="+Inf",event="presence:join",transport="ws"}"#
    ));
    assert!(count("roster_requests_total") >= 3);
    assert_eq!(
        count(r#"roster_request_errors_total{code="FORBIDDEN"}"#),
        0,
        "every code is listed, at zero too"
    );
    assert_eq!(count("roster_sockets"), 2);
}

/// Sends `request` (a raw HTTP/1.1 request) over a fresh connection and returns the
/// status and the body as JSON, reading until the server closes.
async fn raw(host: &TestHost, request: &[u8]) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    // The server may answer before it read everything: keep sending, ignore a refusal.
    let _ = tcp.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let head_end = text
        .find("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head end in {text:?}"));
    let body = &text[head_end + 4..];
    // A chunked response: take the JSON between the chunk sizes.
    let json = body
        .find('{')
        .and_then(|start| body.rfind('}').map(|end| &body[start..=end]))
        .unwrap_or_else(|| panic!("no JSON body in {text:?}"));
    (status, serde_json::from_str(json).unwrap())
}

/// Every error no handler sees has the contract's JSON shape too: bodies over the limit
/// (declared or streamed), bodies that cannot be read (a broken chunked encoding), paths
/// that are not UTF-8, wrong methods on the operational routes and `/ws`, a plain GET of
/// `/ws`. JSON arrays are not object bodies, and `actorUserId` is an id like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_contract_shape() {
    let host = TestHost::start_with(|c| c.max_frame_bytes = 16 * 1024).await;
    let http = host.http();
    let error = |status: u16, code: &str, got: (u16, serde_json::Value)| {
        assert_eq!(got.0, status, "{}", got.1);
        assert_eq!(got.1["ok"], json!(false), "{}", got.1);
        assert_eq!(got.1["error"]["code"], json!(code), "{}", got.1);
        assert!(got.1["error"]["message"].is_string(), "{}", got.1);
    };

    // Far over the limit, declared: refused before the body is read, and the client reads
    // the refusal while it is still sending.
    let mut declared = b"POST /v1/rooms/r/connections HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n".to_vec();
    declared.extend(std::iter::repeat_n(b'x', 2_000_000));
    error(413, "PAYLOAD_TOO_LARGE", raw(&host, &declared).await);
    // Over the limit, streamed in chunks with no length.
    let mut chunked = b"POST /v1/rooms/r/connections HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..24 {
        chunked.extend(b"400\r\n");
        chunked.extend(std::iter::repeat_n(b' ', 1024));
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    error(413, "PAYLOAD_TOO_LARGE", raw(&host, &chunked).await);
    // A chunked body that breaks off with garbage.
    let broken = b"POST /v1/rooms/r/connections HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\nnot a chunk\r\n\r\n";
    error(400, "INVALID_PAYLOAD", raw(&host, broken).await);
    // A path that is not UTF-8 once decoded, on a presence and a metadata route.
    let path = b"GET /v1/rooms/%FF%FE/connections HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    error(400, "INVALID_PAYLOAD", raw(&host, path).await);
    let path =
        b"GET /v1/channels/t/%C3%28/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    error(400, "METADATA_INVALID", raw(&host, path).await);

    // Wrong methods: 405 with Allow and the JSON error.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/ws",
        "/v1/rooms/r/occupancy",
    ] {
        let request = format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        error(405, "INVALID_PAYLOAD", raw(&host, request.as_bytes()).await);
    }
    // A GET of /ws that is not a WebSocket upgrade.
    error(400, "INVALID_PAYLOAD", http.send("GET", "/ws", None).await);

    // Arrays are not object bodies, however their elements line up with the fields.
    let (status, reply) = http
        .send("POST", "/v1/rooms/r/connections", Some(json!(["u", {}])))
        .await;
    error(400, "INVALID_PAYLOAD", (status, reply));
    let joined = http
        .ok(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": "u"})),
        )
        .await;
    let conn = joined["self"]["connId"].as_str().unwrap();
    let heartbeat = format!("/v1/connections/{conn}/heartbeat");
    error(
        400,
        "INVALID_PAYLOAD",
        http.send("POST", &heartbeat, Some(json!([]))).await,
    );
    error(
        400,
        "METADATA_INVALID",
        http.send("PUT", "/v1/channels/t/r/metadata", Some(json!([])))
            .await,
    );

    // actorUserId is an id: not empty, not huge, no control characters.
    for actor in [json!(""), json!("x".repeat(10_000)), json!("a\nb")] {
        let body = json!({"items": [{"key": "k", "value": "v"}], "actorUserId": actor});
        error(
            400,
            "METADATA_INVALID",
            http.send("PUT", "/v1/channels/t/r/metadata", Some(body))
                .await,
        );
        error(
            400,
            "METADATA_INVALID",
            http.send(
                "POST",
                "/v1/channels/t/r/locks/l",
                Some(json!({"actorUserId": actor})),
            )
            .await,
        );
    }
    // Still serving.
    http.ok("GET", "/v1/rooms/r/occupancy", None).await;
}

/// Every path and method that `docs/openapi.yaml` documents is served: the spec and the
/// router cannot drift apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_file_matches_the_routes() {
    let operations = roster_tests::openapi_operations();
    assert!(
        operations.len() >= 13,
        "only {} operations found in the spec",
        operations.len()
    );
    let host = TestHost::start().await;
    let http = host.http();
    for (method, path) in operations {
        let concrete = roster_tests::concrete_path(&path);
        let (status, body) = http.send(&method, &concrete, None).await;
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        let unrouted = body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such route"));
        assert!(!unrouted, "{method} {path} is documented but not routed");
    }
    // And the other way: every route of the operation table is documented.
    let documented = roster_tests::openapi_operations();
    for op in &roster_host::protocol::ops::OPERATIONS {
        if let Some(route) = op.http {
            assert!(
                documented
                    .iter()
                    .any(|(method, path)| method.eq_ignore_ascii_case(route.method)
                        && path == route.path),
                "{} {} is routed but not in docs/openapi.yaml",
                route.method,
                route.path
            );
        }
    }
}
