//! Protocol fidelity as clients of the Socket.IO presence server rely on it (issue 12):
//! `leave` events carry the last state on every path, a refused join changes nothing, epochs
//! stay where every client and both stores agree on them, and no room can be jammed by the
//! size of its members' states. Over `/ws`, HTTP and, for what crosses nodes, Redis; the
//! Socket.IO side is in `tests/socketio/fidelity.test.mjs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use roster_host::protocol::ops::Components as _;
use std::collections::BTreeSet;
use std::time::Duration;

use roster_host::config::{Clock, Config};
use roster_tests::{EPOCH_MS, RedisServer, TestHost, WsClient, eventually};
use serde_json::{Value, json};

/// A state with a marker of `bytes` characters.
fn big_state(tag: usize, bytes: usize) -> Value {
    json!({"tag": tag, "blob": "x".repeat(bytes)})
}

/// The `leave` of `conn` that `watcher` receives next (other events are skipped).
async fn leave_of(watcher: &mut WsClient, conn: &str) -> Value {
    watcher
        .next_event_where(|e| e["type"] == "leave" && e["connId"] == json!(conn))
        .await
}

/// Every way a connection ends announces its last state and epoch: an explicit leave, a
/// disconnect, a reap, an HTTP delete, and a second join that replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_events_carry_the_last_state_on_every_path() {
    let host = TestHost::start().await;
    let http = host.http();
    let mut watcher = host.connect().await;
    let (watcher_conn, _, _) = watcher.join("lobby", "watcher", json!({})).await;

    // Explicit leave, after a patch: the last state, not the first.
    let mut ada = host.connect().await;
    let (conn, epoch, _) = ada.join("lobby", "ada", json!({"status": "idle"})).await;
    ada.ok(
        "presence:heartbeat",
        json!({"connId": conn, "patchState": {"status": "busy"}}),
    )
    .await;
    ada.ok("presence:leave", json!(null)).await;
    let leave = leave_of(&mut watcher, &conn).await;
    assert_eq!(leave["state"], json!({"status": "busy"}));
    assert_eq!(leave["epoch"], json!(epoch));
    assert_eq!(leave["userId"], "ada");

    // A raised epoch is the one the leave carries.
    let mut bob = host.connect().await;
    let (conn, epoch, _) = bob.join("lobby", "bob", json!({"seat": 2})).await;
    bob.ok(
        "presence:heartbeat",
        json!({"connId": conn, "epoch": epoch + 5}),
    )
    .await;
    bob.drop_connection();
    let leave = leave_of(&mut watcher, &conn).await;
    assert_eq!(leave["state"], json!({"seat": 2}));
    assert_eq!(leave["epoch"], json!(epoch + 5));

    // Reaped: its socket stays, its heartbeats stop. The watcher heartbeats half-way, so
    // only cid is stale when the reaper runs.
    let mut cid = host.connect().await;
    let (conn, epoch, _) = cid.join("lobby", "cid", json!({"away": true})).await;
    let ttl = host.hub.config().presence_ttl_ms;
    host.advance(Duration::from_millis(ttl / 2));
    watcher
        .ok("presence:heartbeat", json!({"connId": watcher_conn}))
        .await;
    host.advance(Duration::from_millis(ttl / 2 + 1_000));
    let leave = leave_of(&mut watcher, &conn).await;
    assert_eq!(leave["state"], json!({"away": true}));
    assert_eq!(leave["epoch"], json!(epoch));
    let members = http.members("lobby").await;
    assert!(members.iter().all(|c| c["connId"] != json!(conn)));
    drop(cid);

    // Deleted over HTTP.
    let mut dee = host.connect().await;
    let (conn, epoch, _) = dee.join("lobby", "dee", json!({"n": 1})).await;
    http.ok("DELETE", &format!("/v1/connections/{conn}"), None)
        .await;
    let leave = leave_of(&mut watcher, &conn).await;
    assert_eq!(
        (leave["state"].clone(), leave["epoch"].clone()),
        (json!({"n": 1}), json!(epoch))
    );

    // Replaced by a second join on the same socket: its leave, then the new join.
    let (old, epoch, _) = dee.join("lobby", "dee", json!({"n": 2})).await;
    watcher
        .next_event_where(|e| e["connId"] == json!(old))
        .await;
    let ack = dee
        .ok(
            "presence:join",
            json!({"roomId": "lobby", "userId": "dee", "state": {"n": 3}}),
        )
        .await;
    let new = ack["self"]["connId"].as_str().unwrap().to_owned();
    let leave = watcher
        .next_event_where(|e| e["connId"] == json!(old) || e["connId"] == json!(new))
        .await;
    assert_eq!(
        leave["type"], "leave",
        "the replaced connection leaves first"
    );
    assert_eq!(
        (leave["state"].clone(), leave["epoch"].clone()),
        (json!({"n": 2}), json!(epoch))
    );
    let join = watcher
        .next_event_where(|e| e["connId"] == json!(new))
        .await;
    assert_eq!(join["type"], "join");
}

/// A leave made on one node reaches the other node's watchers with the last state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_leaves_carry_the_last_state() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let node = |clock: Clock| {
        let url = redis.url();
        TestHost::start_with(move |c| {
            c.redis_url = Some(url);
            c.clock = clock;
        })
    };
    let a = node(clock.clone()).await;
    let b = node(clock.clone()).await;
    for host in [&a, &b] {
        eventually("the node to reach Redis", || async {
            host.hub.store.ping().await.is_ok()
        })
        .await;
    }
    let mut watcher = b.connect().await;
    watcher.join("lobby", "watcher", json!({})).await;
    let mut ada = a.connect().await;
    let (conn, epoch, _) = ada.join("lobby", "ada", json!({"cursor": 1})).await;
    ada.ok(
        "presence:heartbeat",
        json!({"connId": conn, "patchState": {"cursor": 2}}),
    )
    .await;
    ada.drop_connection();
    let leave = leave_of(&mut watcher, &conn).await;
    assert_eq!(leave["state"], json!({"cursor": 2}));
    assert_eq!(leave["epoch"], json!(epoch));
}

/// One socket, a live connection in `home`, and a watcher there.
struct Scene {
    socket: WsClient,
    conn: String,
    watcher: WsClient,
}

async fn scene(host: &TestHost) -> Scene {
    let mut watcher = host.connect().await;
    watcher.join("home", "watcher", json!({})).await;
    let mut socket = host.connect().await;
    let (conn, _, _) = socket.join("home", "ada", json!({"status": "here"})).await;
    watcher
        .next_event_where(|e| e["connId"] == json!(conn))
        .await;
    Scene {
        socket,
        conn,
        watcher,
    }
}

/// After a refused join: the socket still holds its connection (it heartbeats, its state
/// is intact), and the room saw nothing.
async fn nothing_changed(scene: &mut Scene, host: &TestHost) {
    let ack = scene
        .socket
        .ok(
            "presence:heartbeat",
            json!({"connId": scene.conn, "patchState": {"status": "here"}}),
        )
        .await;
    assert_eq!(ack["changed"], json!(false), "the state is untouched");
    scene
        .watcher
        .expect_silence(Duration::from_millis(150))
        .await;
    let members = host.http().members("home").await;
    assert!(
        members.iter().any(|c| c["connId"] == json!(scene.conn)),
        "still in the room: {members:?}"
    );
}

/// Every kind of refused join on a socket that holds a connection: the error ack, and
/// nothing else; the socket still heartbeats and the room sees no `leave`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_changes_nothing() {
    let host = TestHost::start_with(|c| {
        c.max_room_members = 2;
        c.max_state_bytes = 1024;
    })
    .await;
    let mut scene = scene(&host).await;
    // A full room elsewhere.
    for user in ["x", "y"] {
        host.http()
            .ok(
                "POST",
                "/v1/rooms/full/connections",
                Some(json!({"userId": user})),
            )
            .await;
    }
    let refusals = [
        (json!({"roomId": 5, "userId": "ada"}), "INVALID_PAYLOAD"),
        (json!({"roomId": "", "userId": "ada"}), "INVALID_PAYLOAD"),
        (json!(["home", "ada"]), "INVALID_PAYLOAD"),
        (
            json!({"roomId": "home", "userId": "ada", "state": "str"}),
            "INVALID_PAYLOAD",
        ),
        (
            json!({"roomId": "home", "userId": "ada", "state": [1, 2]}),
            "INVALID_PAYLOAD",
        ),
        (
            json!({"roomId": "home", "userId": "ada", "state": {"blob": "x".repeat(2000)}}),
            "PAYLOAD_TOO_LARGE",
        ),
        (json!({"roomId": "full", "userId": "ada"}), "FORBIDDEN"),
    ];
    for (data, code) in refusals {
        scene.socket.fails("presence:join", data, code).await;
        nothing_changed(&mut scene, &host).await;
    }
}

/// A room at its limit still takes a socket's re-join: the connection it replaces frees
/// its place in the same step, so the room never holds neither or both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_into_a_full_room_replaces_in_place() {
    let host = TestHost::start_with(|c| c.max_room_members = 2).await;
    let mut scene = scene(&host).await;
    let ack = scene
        .socket
        .ok(
            "presence:join",
            json!({"roomId": "home", "userId": "ada", "state": {"status": "back"}}),
        )
        .await;
    let new = ack["self"]["connId"].as_str().unwrap().to_owned();
    assert_eq!(ack["snapshot"].as_array().unwrap().len(), 2, "{ack}");
    let leave = leave_of(&mut scene.watcher, &scene.conn).await;
    assert_eq!(leave["state"], json!({"status": "here"}));
    let members = host.http().members("home").await;
    let ids: BTreeSet<String> = members
        .iter()
        .map(|c| c["connId"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&new) && !ids.contains(&scene.conn), "{ids:?}");
    assert_eq!(
        host.hub.as_host().count("home").await.unwrap().connections,
        2
    );
}

/// With Redis not answering, a join on a socket that holds a connection fails with
/// STORE_UNAVAILABLE; once Redis answers again the old connection is still the socket's
/// and heartbeats, and nobody saw a leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_refused_by_a_down_store_changes_nothing() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let host = TestHost::start_with(move |c| {
        c.redis_url = Some(url);
        c.redis_timeout_ms = 200;
    })
    .await;
    eventually("the node to reach Redis", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    let mut scene = scene(&host).await;
    redis.pause();
    scene
        .socket
        .fails(
            "presence:join",
            json!({"roomId": "elsewhere", "userId": "ada"}),
            "STORE_UNAVAILABLE",
        )
        .await;
    redis.resume();
    eventually("the node to reach Redis again", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    nothing_changed(&mut scene, &host).await;
}

/// The epoch answers of the embedded store and of Redis, for one sequence of heartbeats.
async fn epoch_answers(config: Config) -> Vec<String> {
    let host = TestHost::try_start(config).await.unwrap();
    eventually("the node's store", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    let mut client = host.connect().await;
    let (conn, epoch, _) = client.join("epochs", "ada", json!({})).await;
    let step: u64 = 1 << 32;
    let max_safe: u64 = (1 << 53) - 1;
    let mut answers = Vec::new();
    let now = host.now();
    for given in [
        json!(u64::MAX),
        json!(max_safe + 1),
        json!(max_safe),
        json!(now + step + 10),
        json!(epoch + 7),
        json!(epoch + 3),
        json!(now + step),
        json!(now + 2 * step),
        json!(-1),
        json!(1.5),
        json!("5"),
    ] {
        let ack = client
            .request(
                "presence:heartbeat",
                json!({"connId": conn, "epoch": given}),
            )
            .await;
        answers.push(match ack["ok"].as_bool() {
            Some(true) => "ok".to_owned(),
            _ => ack["error"]["code"].as_str().unwrap().to_owned(),
        });
    }
    // The connection still works with its real epoch (none was poisoned).
    let last = client
        .ok("presence:heartbeat", json!({"connId": conn}))
        .await;
    answers.push(last["ok"].to_string());
    answers
}

/// Epochs past JavaScript's safe integers, or jumping more than 2^32 above both the stored
/// epoch and now, are refused and leave the connection usable; the embedded store and
/// Redis give the same answer to every heartbeat of the same sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_bounds_agree_on_both_stores() {
    let memory = epoch_answers(roster_tests::test_config()).await;
    let redis = RedisServer::start().await;
    let mut config = roster_tests::test_config();
    config.redis_url = Some(redis.url());
    let on_redis = epoch_answers(config).await;
    assert_eq!(memory, on_redis);
    assert_eq!(
        memory,
        [
            "INVALID_PAYLOAD", // u64::MAX
            "INVALID_PAYLOAD", // 2^53
            "INVALID_PAYLOAD", // 2^53 - 1, a jump of ~2^53 above the stored epoch
            "INVALID_PAYLOAD", // now + 2^32 + 10: too far above now and the stored epoch
            "ok",              // epoch + 7
            "STALE_EPOCH",     // epoch + 3 < epoch + 7
            "ok",              // now + 2^32: within a step of now
            "ok",              // now + 2^33: within a step of the stored now + 2^32
            "INVALID_PAYLOAD", // -1
            "INVALID_PAYLOAD", // 1.5
            "INVALID_PAYLOAD", // "5"
            "true",
        ]
    );
}

/// Join epochs of a user in a room increase across nodes even when a node's clock is
/// behind, and within one millisecond on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_epochs_increase_whatever_the_clocks() {
    let redis = RedisServer::start().await;
    let ahead = Clock::manual(EPOCH_MS + 10_000);
    let behind = Clock::manual(EPOCH_MS);
    let node = |clock: Clock| {
        let url = redis.url();
        TestHost::start_with(move |c| {
            c.redis_url = Some(url);
            c.clock = clock;
        })
    };
    let a = node(ahead).await;
    let b = node(behind).await;
    for host in [&a, &b] {
        eventually("the node to reach Redis", || async {
            host.hub.store.ping().await.is_ok()
        })
        .await;
    }
    let mut on_a = a.connect().await;
    let (_, first, _) = on_a.join("game", "ada", json!({})).await;
    assert_eq!(first, EPOCH_MS + 10_000);
    on_a.ok("presence:leave", json!(null)).await;
    let mut on_b = b.connect().await;
    let (_, second, _) = on_b.join("game", "ada", json!({})).await;
    assert!(second > first, "{second} after {first}");
    // The same millisecond, the same node: still later.
    let (_, third, _) = on_b.join("game", "ada", json!({})).await;
    assert!(third > second, "{third} after {second}");
    // Another user, another room: unaffected (the node's own time).
    let (_, other, _) = on_b.join("game", "bob", json!({})).await;
    assert_eq!(other, EPOCH_MS);
    let (_, elsewhere, _) = on_b.join("lobby", "ada", json!({})).await;
    assert_eq!(elsewhere, EPOCH_MS);
}

/// A room filled with large states: joins and snapshots keep working under a memory cap
/// the whole room's states would blow (they used to trap, after creating the joiner's
/// connection and announcing it); the join's snapshot is a partial first page; paging
/// returns every member exactly once; the counts are exact without listing the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_of_large_states_stay_usable() {
    const MEMBERS: usize = 300;
    const STATE: usize = 60 * 1024;
    let host = TestHost::start_with(|c| {
        c.presence_memory_mib = Some(16);
        c.max_room_members = 1_000;
        c.max_snapshot_bytes = 1024 * 1024;
        c.max_snapshot_members = 100;
        c.heartbeat_batch = 16;
    })
    .await;
    let http = host.http();
    for i in 0..MEMBERS {
        http.ok(
            "POST",
            "/v1/rooms/stage/connections",
            Some(json!({"userId": format!("user-{}", i % 40), "state": big_state(i, STATE)})),
        )
        .await;
    }
    // 300 states of 60 KiB are 18 MB, more than the component's 16 MiB.
    let mut joiner = host.connect().await;
    let ack = joiner
        .ok(
            "presence:join",
            json!({"roomId": "stage", "userId": "late", "state": {"small": true}}),
        )
        .await;
    assert_eq!(ack["partial"], json!(true), "{}", ack["cursor"]);
    let first = ack["snapshot"].as_array().unwrap();
    let bytes: usize = first.iter().map(|c| c["state"].to_string().len()).sum();
    assert!(!first.is_empty() && first.len() <= 100);
    assert!(
        bytes <= 1024 * 1024,
        "a page holds at most the byte budget: {bytes}"
    );

    // Page through the socket API and the HTTP API: every member exactly once.
    let mut seen = Vec::new();
    let mut cursor = ack["cursor"].clone();
    seen.extend(
        first
            .iter()
            .map(|c| c["connId"].as_str().unwrap().to_owned()),
    );
    while cursor.is_string() {
        let page = joiner
            .ok(
                "presence:snapshot",
                json!({"roomId": "stage", "cursor": cursor, "limit": 37}),
            )
            .await;
        let conns = page["snapshot"].as_array().unwrap();
        assert!(conns.len() <= 37);
        seen.extend(
            conns
                .iter()
                .map(|c| c["connId"].as_str().unwrap().to_owned()),
        );
        cursor = page["cursor"].clone();
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "no member twice");
    assert_eq!(
        unique.len(),
        MEMBERS + 1,
        "every member once, the joiner included"
    );

    let mut via_http = BTreeSet::new();
    let mut query = String::from("limit=64");
    loop {
        let page = http
            .ok("GET", &format!("/v1/rooms/stage/connections?{query}"), None)
            .await;
        for conn in page["snapshot"].as_array().unwrap() {
            assert!(via_http.insert(conn["connId"].as_str().unwrap().to_owned()));
        }
        match page["cursor"].as_str() {
            Some(cursor) => query = format!("limit=64&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(via_http, unique);

    let count = joiner
        .ok("presence:count", json!({"roomId": "stage"}))
        .await;
    assert_eq!(
        count,
        json!({"ok": true, "roomId": "stage", "connections": MEMBERS + 1, "users": 41})
    );
    let occupancy = http.ok("GET", "/v1/rooms/stage/occupancy", None).await;
    assert_eq!(occupancy, count);

    // Leaving keeps the counts exact.
    joiner.ok("presence:leave", json!(null)).await;
    let occupancy = http.ok("GET", "/v1/rooms/stage/occupancy", None).await;
    assert_eq!(
        (occupancy["connections"].clone(), occupancy["users"].clone()),
        (json!(MEMBERS), json!(40))
    );
    assert_eq!(
        host.hub.runtime.stats()[0].failures,
        0,
        "no presence call failed"
    );
}

/// A small room's snapshot is whole: no `partial`, no `cursor`, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_rooms_list_whole() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    let (_, _, ack) = ada.join("small", "ada", json!({})).await;
    assert!(
        ack.get("partial").is_none() && ack.get("cursor").is_none(),
        "{ack}"
    );
    let page = host
        .http()
        .ok("GET", "/v1/rooms/small/connections", None)
        .await;
    assert!(page.get("cursor").is_none(), "{page}");
    assert_eq!(page["snapshot"].as_array().unwrap().len(), 1);
}

/// Where no reaper runs, the expiry index does not grow without bound: a join drops the
/// entries of its bucket that are older than twice the lookback (their records expired by
/// the store's lookback long before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_index_is_trimmed_where_nothing_reaps() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let host = TestHost::start_with(move |c| {
        c.redis_url = Some(url);
        c.reaper_interval_ms = 3_600_000;
        c.reaper_lookback_ms = Some(3_700_000);
    })
    .await;
    eventually("the node to reach Redis", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    let http = host.http();
    http.ok(
        "POST",
        "/v1/rooms/r/connections",
        Some(json!({"userId": "old"})),
    )
    .await;
    let keys = redis.cli(&["KEYS", "roster:v1:*:expiry"]);
    let expiry = keys.trim();
    assert_eq!(redis.cli(&["ZCARD", expiry]).trim(), "1");
    host.advance(Duration::from_millis(2 * 3_700_000 + 1));
    http.ok(
        "POST",
        "/v1/rooms/r/connections",
        Some(json!({"userId": "new"})),
    )
    .await;
    assert_eq!(
        redis.cli(&["ZCARD", expiry]).trim(),
        "1",
        "the old entry is gone, the new one indexed"
    );
}
