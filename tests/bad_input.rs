//! Bad input never takes a socket down: malformed frames, unknown events, wrong types,
//! oversize frames and states, unknown connections, floods and full rooms each get an
//! error ack with a stable code, and the socket keeps working. Only a frame past the hard
//! limit, a reader that stops reading, or silence closes a socket, each with its code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roster_tests::{Ended, TestHost, WsClient, eventually};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The socket still serves a normal request.
async fn still_works(client: &mut WsClient) {
    client
        .ok(
            "metadata:get",
            json!({"channelType": "t", "channelName": "n"}),
        )
        .await;
}

async fn raw_reply(client: &mut WsClient, frame: &str) -> Value {
    client.send_text(frame).await;
    client.next_reply().await
}

/// Frames that are not requests get INVALID_PAYLOAD, with the id echoed when readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames() {
    let host = TestHost::start().await;
    let mut client = host.connect().await;
    for (frame, id) in [
        ("{not json", json!(null)),
        ("[1,2,3]", json!(null)),
        (r#"{"id": 4, "data": {}}"#, json!(4)),
        (r#"{"id": "abc", "event": 7}"#, json!("abc")),
    ] {
        let reply = raw_reply(&mut client, frame).await;
        assert_eq!(reply["id"], id, "{frame}: {reply}");
        assert_eq!(
            reply["ack"]["error"]["code"], "INVALID_PAYLOAD",
            "{frame}: {reply}"
        );
        still_works(&mut client).await;
    }
    client.send(Message::binary(vec![1u8, 2, 3])).await;
    let reply = client.next_reply().await;
    assert_eq!(reply["ack"]["error"]["code"], "INVALID_PAYLOAD");
    still_works(&mut client).await;
}

/// Unknown events name the events that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_events() {
    let host = TestHost::start().await;
    let mut client = host.connect().await;
    let message = client
        .fails("presence:teleport", json!({}), "INVALID_PAYLOAD")
        .await;
    assert!(message.contains("presence:join"), "{message}");
    still_works(&mut client).await;
    // An event name written with JSON escapes is still that event.
    let reply = raw_reply(
        &mut client,
        r#"{"id": 1, "event": "metadata\u003aget", "data": {"channelType": "t", "channelName": "n"}}"#,
    )
    .await;
    assert_eq!(reply["ack"]["ok"], json!(true), "{reply}");
}

/// Fields of the wrong type are refused with the field named; presence events get
/// INVALID_PAYLOAD and metadata events METADATA_INVALID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types() {
    let host = TestHost::start().await;
    let mut client = host.connect().await;
    let cases = [
        (
            "presence:join",
            json!({"roomId": 5, "userId": "u"}),
            "INVALID_PAYLOAD",
            "roomId",
        ),
        (
            "presence:join",
            json!({"userId": "u"}),
            "INVALID_PAYLOAD",
            "roomId",
        ),
        (
            "presence:join",
            json!({"roomId": "", "userId": "u"}),
            "INVALID_PAYLOAD",
            "roomId",
        ),
        (
            "presence:join",
            json!({"roomId": "r", "userId": "u", "state": [1]}),
            "INVALID_PAYLOAD",
            "state",
        ),
        (
            "presence:join",
            json!({"roomId": "r", "userId": "u", "state": "x"}),
            "INVALID_PAYLOAD",
            "state",
        ),
        (
            "presence:join",
            json!("not an object"),
            "INVALID_PAYLOAD",
            "data",
        ),
        (
            "presence:heartbeat",
            json!({"connId": "c", "epoch": -1}),
            "INVALID_PAYLOAD",
            "epoch",
        ),
        (
            "presence:heartbeat",
            json!({"connId": "c", "epoch": 1.5}),
            "INVALID_PAYLOAD",
            "epoch",
        ),
        (
            "presence:heartbeat",
            json!({"connId": 9}),
            "INVALID_PAYLOAD",
            "connId",
        ),
        (
            "metadata:set",
            json!({"channelType": "t", "channelName": "n", "items": {}}),
            "METADATA_INVALID",
            "items",
        ),
        (
            "metadata:set",
            json!({"channelType": "t", "channelName": "n", "items": [{"key": "k", "value": true}]}),
            "METADATA_INVALID",
            "value",
        ),
        (
            "metadata:set",
            json!({"channelType": "t", "channelName": "n", "items": [{"key": "k", "value": "v"}, {"key": "k", "value": "w"}]}),
            "METADATA_INVALID",
            "twice",
        ),
        (
            "metadata:update",
            json!({"channelType": "t", "channelName": "n", "options": {"majorRevision": "1"}}),
            "METADATA_INVALID",
            "majorRevision",
        ),
        (
            "metadata:get",
            json!({"channelType": "t"}),
            "METADATA_INVALID",
            "channelName",
        ),
        (
            "lock:acquire",
            json!({"channelType": "t", "channelName": "n", "lockName": 1}),
            "METADATA_INVALID",
            "lockName",
        ),
    ];
    for (event, data, code, field) in cases {
        let message = client.fails(event, data.clone(), code).await;
        assert!(message.contains(field), "{event} {data}: {message}");
    }
    still_works(&mut client).await;
}

/// Patches that are not objects are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_patch_types() {
    let host = TestHost::start().await;
    let mut client = host.connect().await;
    let (conn, ..) = client.join("r", "u", json!({"a": 1})).await;
    for patch in [json!([1]), json!("x"), json!(3)] {
        client
            .fails(
                "presence:heartbeat",
                json!({"connId": conn, "patchState": patch}),
                "INVALID_PAYLOAD",
            )
            .await;
    }
    let beat = client
        .ok(
            "presence:heartbeat",
            json!({"connId": conn, "patchState": {"a": 1}}),
        )
        .await;
    assert_eq!(beat["changed"], false);
}

/// Frames over the limit get PAYLOAD_TOO_LARGE (id echoed); states over the state limit
/// too, including a patch that would grow the state past it; the socket keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_and_states() {
    let host = TestHost::start_with(|c| {
        c.max_frame_bytes = 8 * 1024;
        c.max_state_bytes = 1024;
    })
    .await;
    let mut client = host.connect().await;
    let frame = json!({"id": 77, "event": "presence:join", "data": {"roomId": "r", "userId": "u", "state": {"x": "y".repeat(9000)}}});
    let reply = raw_reply(&mut client, &frame.to_string()).await;
    assert_eq!(reply["id"], 77);
    assert_eq!(reply["ack"]["error"]["code"], "PAYLOAD_TOO_LARGE");
    still_works(&mut client).await;

    client
        .fails(
            "presence:join",
            json!({"roomId": "r", "userId": "u", "state": {"x": "y".repeat(2000)}}),
            "PAYLOAD_TOO_LARGE",
        )
        .await;
    let (conn, ..) = client.join("r", "u", json!({"x": "y".repeat(600)})).await;
    let message = client
        .fails(
            "presence:heartbeat",
            json!({"connId": conn, "patchState": {"z": "w".repeat(600)}}),
            "PAYLOAD_TOO_LARGE",
        )
        .await;
    assert!(message.contains("after patchState"), "{message}");
    let snapshot = host.http().ok("GET", "/v1/rooms/r/connections", None).await;
    assert!(
        snapshot["snapshot"][0]["state"].get("z").is_none(),
        "the oversize patch was not applied"
    );
    client
        .ok(
            "presence:heartbeat",
            json!({"connId": conn, "patchState": {"z": 1}}),
        )
        .await;
}

/// A frame past the hard limit (four times the frame limit) closes the socket with 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_past_the_hard_limit_close_with_1009() {
    let host = TestHost::start_with(|c| c.max_frame_bytes = 2 * 1024).await;
    let mut client = host.connect().await;
    client.send_text("x".repeat(9 * 1024)).await;
    match client.ended().await {
        Ended::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
}

/// Frames far past the hard limit (1.01x, 2x and 8x the default 1 MiB), sent at once by many
/// clients, are answered with a 1009 Close that the client reads every time, and the
/// connection then ends cleanly: the server discards what the client still sends instead
/// of resetting the connection under it (a reset makes browsers and Node's `ws` drop the
/// Close they had not read yet and report 1006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_frames_read_1009_every_time() {
    let host = TestHost::start().await;
    let hard = host.hub.config().hard_frame_limit();
    let url = host.url("/ws").replace("http://", "ws://");
    for factor in [1.01, 2.0, 8.0] {
        let frame = "x".repeat((hard as f64 * factor) as usize);
        let clients: Vec<_> = (0..12)
            .map(|_| {
                let url = url.clone();
                let frame = frame.clone();
                tokio::spawn(async move {
                    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
                    // The send may fail once the server closed its side; the close must
                    // still be readable.
                    let _ = socket.send(Message::text(frame)).await;
                    let mut closed = None;
                    while let Ok(Some(message)) =
                        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
                    {
                        match message {
                            Ok(Message::Close(frame)) => closed = frame.map(|f| f.code),
                            Ok(_) => {}
                            Err(error) => {
                                return Err(format!(
                                    "the connection broke ({error}) after {closed:?}"
                                ));
                            }
                        }
                    }
                    closed.ok_or_else(|| "no Close frame".to_owned())
                })
            })
            .collect();
        for client in clients {
            assert_eq!(
                client.await.unwrap(),
                Ok(CloseCode::Size),
                "a frame of {factor}x the hard limit"
            );
        }
    }
    // Nothing leaked: every socket left.
    eventually("the sockets to close", || async {
        host.hub.socket_count() == 0
    })
    .await;
}

/// Connection ids that do not exist (never joined, malformed, someone else's) are
/// UNKNOWN_CONNECTION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_connections() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    let mut bob = host.connect().await;
    let (ada_conn, ..) = ada.join("r", "ada", json!({})).await;
    for conn in [
        "nope",
        "0123456789abcdef0123456789abcdef",
        ada_conn.as_str(),
    ] {
        bob.fails(
            "presence:heartbeat",
            json!({"connId": conn}),
            "UNKNOWN_CONNECTION",
        )
        .await;
    }
    bob.fails("presence:leave", json!(null), "UNKNOWN_CONNECTION")
        .await;
    host.http()
        .fails(
            "POST",
            "/v1/connections/0123456789abcdef0123456789abcdef/heartbeat",
            None,
            404,
            "UNKNOWN_CONNECTION",
        )
        .await;
    ada.ok("presence:heartbeat", json!({"connId": ada_conn}))
        .await;
}

/// A socket sending faster than its rate gets RATE_LIMITED, and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited() {
    let host = TestHost::start_with(|c| c.rate_limit_per_sec = 5).await;
    let mut client = host.connect().await;
    let mut limited = 0;
    for _ in 0..30 {
        let ack = client
            .request(
                "metadata:get",
                json!({"channelType": "t", "channelName": "n"}),
            )
            .await;
        if ack["ok"] == json!(false) {
            assert_eq!(ack["error"]["code"], "RATE_LIMITED");
            limited += 1;
        }
    }
    assert!(limited >= 15, "only {limited} of 30 were limited");
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_works(&mut client).await;
}

/// A full room refuses joins with FORBIDDEN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rooms_refuse_joins() {
    let host = TestHost::start_with(|c| c.max_room_members = 2).await;
    let mut clients = Vec::new();
    for user in ["a", "b"] {
        let mut client = host.connect().await;
        client.join("small", user, json!({})).await;
        clients.push(client);
    }
    let mut third = host.connect().await;
    let message = third
        .fails(
            "presence:join",
            json!({"roomId": "small", "userId": "c"}),
            "FORBIDDEN",
        )
        .await;
    assert!(message.contains("full"), "{message}");
    third.join("other", "c", json!({})).await;
}

/// A socket that stops reading is closed once its queue fills; memory stays bounded and
/// everyone else carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_closed() {
    let host = TestHost::start_with(|c| {
        c.max_pending_messages = 8;
        c.max_state_bytes = 64 * 1024;
    })
    .await;
    let mut slow = host.connect().await;
    slow.join("busy", "slow", json!({})).await;
    let mut writer = host.connect().await;
    let (conn, ..) = writer.join("busy", "writer", json!({})).await;
    // Each update pushes ~60 KB to every member; the slow client reads none of them, so
    // its TCP buffers fill, then its queue of 8, and the server closes it.
    let mut updates = 0u64;
    while host.slow_readers() == 0 {
        updates += 1;
        assert!(updates < 5_000, "the slow reader was never closed");
        let patch =
            json!({"connId": conn, "patchState": {"n": updates, "blob": "z".repeat(60_000)}});
        writer.ok("presence:heartbeat", patch).await;
    }
    // The slow socket's presence left like any disconnect.
    writer
        .next_event_where(|e| e["type"] == "leave" && e["userId"] == "slow")
        .await;
    // It ends (after the data already in flight) instead of growing a backlog.
    slow.ended().await;
    assert_eq!(host.slow_readers(), 1);
}

/// A socket that sends nothing, not even pongs, is closed after two ping intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_closed() {
    let host = TestHost::start_with(|c| c.ping_interval_ms = 100).await;
    let mut idle = host.connect().await;
    // Not reading means not answering pings: the server drops the socket.
    eventually("the idle socket to be closed", || async {
        host.hub.socket_count() == 0
    })
    .await;
    // Reading now may answer a queued ping into the closed socket and meet a reset before
    // the Close frame; when the frame is read, it says why.
    if let Ended::Closed(Some(frame)) = idle.ended().await {
        assert_eq!(frame.code, CloseCode::Away);
    }
    let mut active = host.connect().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        still_works(&mut active).await;
    }
}
