//! Socket.IO behaviour the Node suite (tests/socketio) cannot pin down: requests queued
//! while a socket's previous request runs, what shutdown leaves in the store, and refusal
//! at the socket limit. Driven by a raw Engine.IO client, so packet timing is exact.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use roster_host::protocol::ops::Components as _;
use std::sync::Arc;

use roster_tests::{SioClient, TestHost, chaos_presence};
use serde_json::json;

/// Requests that arrive while one is running wait in order; past the inbox's 64 places they
/// get RATE_LIMITED at once, and the socket keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_keep_order_and_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(chaos_presence(), dir.path().join("presence.wasm")).unwrap();
    let dir_path = dir.path().to_path_buf();
    let host = TestHost::start_with(move |c| {
        c.components_dir = Some(dir_path);
        c.component_deadline_ms = 500;
    })
    .await;
    let mut client = SioClient::connect(&host).await.unwrap();
    // This join spins until its deadline, holding the socket's session for ~500 ms.
    let busy = client
        .emit("presence:join", &json!({"roomId": "r", "userId": "loop"}))
        .await;
    // Until the session takes the join out of the inbox, the join holds one of its places:
    // give it time to start (it then runs ~500 ms) so the 64 places are the gets'.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let channel = json!({"channelType": "t", "channelName": "n"});
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(client.emit("metadata:get", &channel).await);
    }
    assert_eq!(client.ack(busy).await["error"]["code"], "COMPONENT_FAILED");
    let mut answered = 0;
    let mut limited = 0;
    for id in ids {
        let ack = client.ack(id).await;
        if ack["ok"] == json!(true) {
            answered += 1;
        } else {
            assert_eq!(ack["error"]["code"], "RATE_LIMITED", "{ack}");
            limited += 1;
        }
    }
    assert!(answered >= 64, "only {answered} waited their turn");
    assert!(limited > 0, "the inbox never overflowed");
    let join = client
        .request("presence:join", json!({"roomId": "r", "userId": "ada"}))
        .await;
    assert_eq!(join["ok"], json!(true), "{join}");
}

/// Shutdown removes every Socket.IO connection from the store (each left) and then ends
/// the transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_then_closes_transports() {
    let host = TestHost::start().await;
    let hub = Arc::clone(&host.hub);
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut client = SioClient::connect(&host).await.unwrap();
        let ack = client
            .request(
                "presence:join",
                json!({"roomId": "closing", "userId": format!("u{i}")}),
            )
            .await;
        assert_eq!(ack["ok"], json!(true));
        clients.push(client);
    }
    assert_eq!(hub.as_host().count("closing").await.unwrap().connections, 3);
    host.stop().await;
    for client in &mut clients {
        client.ended().await;
    }
    assert_eq!(hub.as_host().count("closing").await.unwrap().connections, 0);
    assert_eq!(hub.socket_count(), 0);
}

/// A node at its socket limit refuses a Socket.IO connection with a connect_error that
/// says why; /ws and Socket.IO share the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_limit_refuses_with_connect_error() {
    let host = TestHost::start_with(|c| c.max_sockets = 1).await;
    let _holder = host.connect().await;
    let refused = SioClient::connect(&host).await.err().expect("refused");
    assert!(refused.contains("socket limit"), "{refused}");
}
