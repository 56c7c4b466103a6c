//! Presence over `/ws` with real sockets and the real components: join, snapshot,
//! heartbeat, epoch fencing, leave, disconnect, replacement, the reaper, and shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use roster_host::protocol::ops::Components as _;
use std::time::Duration;

use roster_tests::{EPOCH_MS, Ended, TestHost, eventually};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Two clients in a room see each other's join, update and leave with every field right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_members_see_join_update_leave() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    let mut bob = host.connect().await;
    let (ada_conn, ada_epoch, _) = ada.join("lobby", "ada", json!({"status": "idle"})).await;
    let (bob_conn, bob_epoch, ack) = bob.join("lobby", "bob", json!({})).await;
    assert_eq!(bob_epoch, EPOCH_MS, "a join's epoch is its time");
    assert_eq!(ack["snapshot"].as_array().unwrap().len(), 2);

    let join = ada.next_event().await;
    assert_eq!(
        join,
        json!({
            "event": "presence:event", "type": "join", "roomId": "lobby", "userId": "bob",
            "connId": bob_conn, "state": {}, "ts": EPOCH_MS, "epoch": bob_epoch,
        })
    );

    host.advance(Duration::from_millis(500));
    let ack = bob
        .ok(
            "presence:heartbeat",
            json!({"connId": bob_conn, "patchState": {"cursor": {"x": 3}}}),
        )
        .await;
    assert_eq!(ack, json!({"ok": true, "changed": true}));
    let update = ada.next_event().await;
    assert_eq!(update["type"], "update");
    assert_eq!(update["connId"], json!(bob_conn));
    assert_eq!(update["userId"], "bob");
    assert_eq!(update["state"], json!({"cursor": {"x": 3}}));
    assert_eq!(update["ts"], json!(EPOCH_MS + 500));
    assert_eq!(update["epoch"], json!(bob_epoch));

    assert_eq!(
        bob.ok("presence:leave", json!(null)).await,
        json!({"ok": true})
    );
    let leave = ada.next_event().await;
    assert_eq!(leave["type"], "leave");
    assert_eq!(leave["connId"], json!(bob_conn));
    assert_eq!(
        leave["state"],
        json!({"cursor": {"x": 3}}),
        "a leave carries the last state"
    );
    assert_eq!(leave["epoch"], json!(bob_epoch));

    let conns = host.http().members("lobby").await;
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["connId"], json!(ada_conn));
    assert_eq!(conns[0]["epoch"], json!(ada_epoch));
}

/// The join ack's snapshot lists every live member (self included) with state, epoch and
/// lastSeen, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_returns_a_snapshot() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    let (ada_conn, ..) = ada.join("lobby", "ada", json!({"seat": 1})).await;
    host.advance(Duration::from_millis(10));
    let mut bob = host.connect().await;
    let (bob_conn, _, ack) = bob.join("lobby", "bob", json!({"seat": 2})).await;
    assert_eq!(
        ack,
        json!({
            "ok": true,
            "snapshot": [
                {"connId": ada_conn, "userId": "ada", "state": {"seat": 1}, "epoch": EPOCH_MS, "lastSeen": EPOCH_MS},
                {"connId": bob_conn, "userId": "bob", "state": {"seat": 2}, "epoch": EPOCH_MS + 10, "lastSeen": EPOCH_MS + 10},
            ],
            "self": {"connId": bob_conn, "epoch": EPOCH_MS + 10, "resumeToken": ack["self"]["resumeToken"]},
        })
    );
    assert!(
        ack["self"]["resumeToken"]
            .as_str()
            .is_some_and(|token| token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit())),
        "{ack}"
    );
    let mut solo = host.connect().await;
    let (_, _, ack) = solo.join("elsewhere", "cy", json!(null)).await;
    assert_eq!(
        ack["snapshot"][0]["state"],
        json!({}),
        "a join without state has {{}}"
    );
}

/// `changed` is true only when a top-level key changed, and only then is `update` broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_reports_changes_and_broadcasts_only_them() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    let mut bob = host.connect().await;
    ada.join("lobby", "ada", json!({})).await;
    let (bob_conn, ..) = bob
        .join("lobby", "bob", json!({"status": "idle", "n": 1}))
        .await;
    ada.next_event().await; // bob's join

    let beat = |patch: serde_json::Value| json!({"connId": bob_conn, "patchState": patch});
    assert_eq!(
        bob.ok("presence:heartbeat", beat(json!({"status": "idle"})))
            .await["changed"],
        false
    );
    assert_eq!(
        bob.ok("presence:heartbeat", beat(json!({"n": 1.0}))).await["changed"],
        false
    );
    assert_eq!(
        bob.ok("presence:heartbeat", json!({"connId": bob_conn}))
            .await["changed"],
        false
    );
    assert_eq!(
        bob.ok("presence:heartbeat", beat(json!({}))).await["changed"],
        false
    );
    ada.expect_silence(Duration::from_millis(200)).await;

    assert_eq!(
        bob.ok("presence:heartbeat", beat(json!({"status": "busy"})))
            .await["changed"],
        true
    );
    let update = ada.next_event().await;
    assert_eq!(
        update["state"],
        json!({"status": "busy", "n": 1}),
        "the merge is shallow and keeps other keys"
    );
    assert_eq!(
        bob.ok("presence:heartbeat", beat(json!({"extra": null})))
            .await["changed"],
        true
    );
    assert_eq!(
        ada.next_event().await["state"],
        json!({"status": "busy", "n": 1, "extra": null})
    );
}

/// A lower epoch is STALE_EPOCH and applies nothing; an equal or higher one is accepted
/// and the higher stored; events carry the current epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_fence_stale_writers() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    let mut bob = host.connect().await;
    ada.join("lobby", "ada", json!({})).await;
    let (conn, epoch, _) = bob.join("lobby", "bob", json!({"v": 0})).await;
    ada.next_event().await;

    let beat = |epoch: u64, v: u64| json!({"connId": conn, "epoch": epoch, "patchState": {"v": v}});
    bob.ok("presence:heartbeat", beat(epoch, 1)).await;
    assert_eq!(ada.next_event().await["epoch"], json!(epoch));
    bob.ok("presence:heartbeat", beat(epoch + 5, 2)).await;
    let update = ada.next_event().await;
    assert_eq!(
        (update["epoch"].clone(), update["state"].clone()),
        (json!(epoch + 5), json!({"v": 2}))
    );

    let message = bob
        .fails("presence:heartbeat", beat(epoch + 4, 3), "STALE_EPOCH")
        .await;
    assert!(message.contains("nothing was applied"), "{message}");
    bob.fails("presence:heartbeat", beat(epoch, 3), "STALE_EPOCH")
        .await;
    ada.expect_silence(Duration::from_millis(200)).await;

    let bob_entry = host
        .http()
        .members("lobby")
        .await
        .into_iter()
        .find(|c| c["connId"] == json!(conn))
        .unwrap();
    assert_eq!(
        bob_entry["state"],
        json!({"v": 2}),
        "the stale patch was not applied"
    );
    assert_eq!(bob_entry["epoch"], json!(epoch + 5));
    // The socket stayed usable throughout.
    bob.ok("presence:heartbeat", beat(epoch + 5, 4)).await;
}

/// Leave acks, broadcasts, and ends the connection; the socket stays usable and may join again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_ends_the_connection_not_the_socket() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    let (conn, ..) = ada.join("lobby", "ada", json!({})).await;
    ada.ok("presence:leave", json!(null)).await;
    assert_eq!(
        ada.next_event().await["type"],
        "leave",
        "the leaver sees its own leave"
    );
    ada.fails("presence:leave", json!(null), "UNKNOWN_CONNECTION")
        .await;
    ada.fails(
        "presence:heartbeat",
        json!({"connId": conn}),
        "UNKNOWN_CONNECTION",
    )
    .await;
    let (again, ..) = ada.join("lobby", "ada", json!({})).await;
    assert_ne!(again, conn);
}

/// A socket that disconnects without `presence:leave` leaves as if it had sent it, whether
/// it closes politely or its TCP connection just drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_is_leave() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    ada.join("lobby", "ada", json!({})).await;
    for (user, polite) in [("bob", true), ("cy", false)] {
        let mut other = host.connect().await;
        let (conn, ..) = other.join("lobby", user, json!({})).await;
        assert_eq!(ada.next_event().await["connId"], json!(conn));
        if polite {
            other.close().await;
        } else {
            other.drop_connection();
        }
        let leave = ada.next_event().await;
        assert_eq!(
            (leave["type"].clone(), leave["connId"].clone()),
            (json!("leave"), json!(conn))
        );
    }
    assert_eq!(host.http().members("lobby").await.len(), 1);
}

/// A second join on one socket replaces the first: the old room sees a leave, the socket
/// follows the new room only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_join_replaces_the_first() {
    let host = TestHost::start().await;
    let mut watcher_a = host.connect().await;
    let mut watcher_b = host.connect().await;
    watcher_a.join("room-a", "wa", json!({})).await;
    watcher_b.join("room-b", "wb", json!({})).await;
    let mut mover = host.connect().await;
    let (first, ..) = mover.join("room-a", "mo", json!({})).await;
    assert_eq!(watcher_a.next_event().await["type"], "join");

    let ack = mover
        .ok(
            "presence:join",
            json!({"roomId": "room-b", "userId": "mo", "state": {"moved": true}}),
        )
        .await;
    let second = ack["self"]["connId"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let leave = watcher_a.next_event().await;
    assert_eq!(
        (leave["type"].clone(), leave["connId"].clone()),
        (json!("leave"), json!(first))
    );
    let join = watcher_b.next_event().await;
    assert_eq!(
        (join["type"].clone(), join["connId"].clone()),
        (json!("join"), json!(second))
    );

    mover
        .fails(
            "presence:heartbeat",
            json!({"connId": first}),
            "UNKNOWN_CONNECTION",
        )
        .await;
    // The mover hears room B, not room A.
    mover
        .next_event_where(|e| e["type"] == "join" && e["connId"] == json!(second))
        .await;
    watcher_a.ok("presence:leave", json!(null)).await;
    watcher_b.ok("presence:leave", json!(null)).await;
    let heard = mover.next_event().await;
    assert_eq!(heard["roomId"], "room-b", "{heard}");
}

/// The reaper removes a silent connection and announces its leave, while heart-beating ones
/// stay; the silent socket stays open, gets UNKNOWN_CONNECTION, and may join again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_removes_silent_connections() {
    let host = TestHost::start().await;
    let mut live = host.connect().await;
    let mut silent = host.connect().await;
    let (live_conn, ..) = live.join("lobby", "live", json!({})).await;
    let (silent_conn, ..) = silent.join("lobby", "silent", json!({})).await;
    live.next_event().await;

    // Time passes in steps shorter than the TTL; only `live` heartbeats.
    for _ in 0..4 {
        host.advance(Duration::from_secs(10));
        live.ok("presence:heartbeat", json!({"connId": live_conn}))
            .await;
    }
    let leave = live.next_event_where(|e| e["type"] == "leave").await;
    assert_eq!(leave["connId"], json!(silent_conn));
    assert_eq!(leave["userId"], "silent");

    let conns = host.http().members("lobby").await;
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["connId"], json!(live_conn));

    silent
        .fails(
            "presence:heartbeat",
            json!({"connId": silent_conn}),
            "UNKNOWN_CONNECTION",
        )
        .await;
    let (rejoined, ..) = silent.join("lobby", "silent", json!({})).await;
    assert_ne!(rejoined, silent_conn);
}

/// A connection past its TTL refuses heartbeats even before the reaper runs: the TTL means
/// the same whatever the reaper's timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_holds_without_the_reaper() {
    let host = TestHost::start_with(|c| {
        c.reaper_interval_ms = 3_600_000;
        c.reaper_lookback_ms = Some(7_200_000);
    })
    .await;
    let mut ada = host.connect().await;
    let (conn, ..) = ada.join("lobby", "ada", json!({})).await;
    host.advance(Duration::from_millis(30_000));
    ada.ok("presence:heartbeat", json!({"connId": conn})).await;
    host.advance(Duration::from_millis(30_001));
    ada.fails(
        "presence:heartbeat",
        json!({"connId": conn}),
        "UNKNOWN_CONNECTION",
    )
    .await;
    assert_eq!(
        host.http().members("lobby").await,
        Vec::<serde_json::Value>::new(),
        "a stale connection is not in snapshots"
    );
}

/// Graceful shutdown announces the leave of every local connection, removes them from the
/// store, and closes sockets with 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_and_closes_sockets() {
    let host = TestHost::start().await;
    let hub = std::sync::Arc::clone(&host.hub);
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = host.connect().await;
        client.join("lobby", &format!("user-{i}"), json!({})).await;
        clients.push(client);
    }
    host.stop().await;
    for client in &mut clients {
        match client.ended().await {
            Ended::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    let occupancy = hub.as_host().count("lobby").await.unwrap();
    assert_eq!((occupancy.connections, occupancy.users), (0, 0));
    assert_eq!(hub.socket_count(), 0);
}

/// Events of one room never reach another room's members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let host = TestHost::start().await;
    let mut a = host.connect().await;
    let mut b = host.connect().await;
    a.join("room-a", "a", json!({})).await;
    let (b_conn, ..) = b.join("room-b", "b", json!({})).await;
    b.ok(
        "presence:heartbeat",
        json!({"connId": b_conn, "patchState": {"x": 1}}),
    )
    .await;
    a.expect_silence(Duration::from_millis(200)).await;
    eventually("the bus to list two rooms", || async {
        host.hub.bus.room_count() == 2
    })
    .await;
}
