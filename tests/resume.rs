//! Resume (DESIGN.md §9): a reconnect is not a leave. A socket that drops keeps its
//! connection for the grace, silently; `presence:resume` on any node takes it over with
//! its state and epoch; a client that does not come back leaves once when the grace ends;
//! a client that says goodbye leaves at once; a rolling restart announces no leaves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::time::Duration;

use roster_host::config::{Clock, Config};
use roster_tests::{EPOCH_MS, RedisServer, TestHost, WsClient, eventually};
use serde_json::{Value, json};

const GRACE_MS: u64 = 10_000;
const QUIET: Duration = Duration::from_millis(300);

/// A node on `redis_url` with the resume grace on, sharing `clock`.
async fn node(redis_url: &str, clock: &Clock, adjust: impl FnOnce(&mut Config)) -> TestHost {
    let url = redis_url.to_owned();
    let clock = clock.clone();
    let host = TestHost::start_with(move |c| {
        c.redis_url = Some(url);
        c.clock = clock;
        c.resume_grace_ms = GRACE_MS;
        adjust(c);
    })
    .await;
    eventually("the node reaches Redis", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    host
}

/// Joins `room` as `user` and returns (connId, epoch, resumeToken).
async fn join(
    client: &mut WsClient,
    room: &str,
    user: &str,
    state: Value,
) -> (String, u64, String) {
    let (conn, epoch, ack) = client.join(room, user, state).await;
    let token = ack["self"]["resumeToken"]
        .as_str()
        .expect("a join ack carries a resume token")
        .to_owned();
    assert_eq!(token.len(), 32, "128 random bits: {token}");
    (conn, epoch, token)
}

/// Waits until `host` holds `count` sockets (it noticed a drop, and detached its
/// connection).
async fn sockets(host: &TestHost, count: usize) {
    eventually("the node notices the dropped socket", || async {
        host.hub.socket_count() == count
    })
    .await;
}

async fn resume(client: &mut WsClient, conn: &str, token: &str) -> Value {
    client
        .request(
            "presence:resume",
            json!({"connId": conn, "resumeToken": token}),
        )
        .await
}

/// A socket cut on one node is resumed on the other within the grace: the room sees no
/// `leave` and no `join`, the connection keeps its state and epoch and works as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_resumes_on_another_node() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let a = node(&redis.url(), &clock, |_| {}).await;
    let b = node(&redis.url(), &clock, |_| {}).await;
    let mut watcher = a.connect().await;
    let (watcher_conn, ..) = join(&mut watcher, "lobby", "wat", json!({})).await;
    let mut ada = a.connect().await;
    let (conn, epoch, token) = join(&mut ada, "lobby", "ada", json!({"cursor": 3})).await;
    watcher.next_event().await; // ada's join

    ada.drop_connection();
    sockets(&a, 1).await;
    watcher.expect_silence(QUIET).await;
    clock.advance(Duration::from_millis(GRACE_MS - 1_000));

    let mut back = b.connect().await;
    let ack = resume(&mut back, &conn, &token).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    assert_eq!(
        ack["self"],
        json!({"connId": conn, "epoch": epoch, "resumeToken": token})
    );
    let mine = ack["snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connId"] == json!(conn))
        .cloned()
        .expect("the resumed connection is in the snapshot");
    assert_eq!(mine["state"], json!({"cursor": 3}));
    assert_eq!(mine["userId"], json!("ada"));
    assert_eq!(ack["snapshot"].as_array().unwrap().len(), 2);
    watcher.expect_silence(QUIET).await;

    // It works as before: heartbeats with its epoch, updates the room sees.
    back.ok(
        "presence:heartbeat",
        json!({"connId": conn, "epoch": epoch, "patchState": {"cursor": 4}}),
    )
    .await;
    let update = watcher.next_event().await;
    assert_eq!(
        (update["type"].as_str(), update["state"].clone()),
        (Some("update"), json!({"cursor": 4}))
    );
    // Long past the grace: still there (its new socket keeps it alive).
    clock.advance(Duration::from_millis(GRACE_MS * 2));
    back.ok("presence:heartbeat", json!({"connId": conn})).await;
    watcher
        .ok("presence:heartbeat", json!({"connId": watcher_conn}))
        .await;
    clock.advance(Duration::from_millis(GRACE_MS));
    watcher.expect_silence(QUIET).await;
    assert_eq!(a.http().members("lobby").await.len(), 2);
    // And it leaves like any connection when its new socket says goodbye.
    back.close().await;
    let leave = watcher.next_event().await;
    assert_eq!(
        (leave["type"].as_str(), leave["connId"].as_str()),
        (Some("leave"), Some(conn.as_str()))
    );
    assert_eq!(leave["state"], json!({"cursor": 4}));
}

/// A client that does not come back is announced `leave`, with its last state, once the
/// grace ends: exactly once, whichever node's reaper gets there. Then it cannot be resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_return_leaves_after_the_grace_once() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let a = node(&redis.url(), &clock, |_| {}).await;
    let b = node(&redis.url(), &clock, |_| {}).await;
    let mut on_a = a.connect().await;
    join(&mut on_a, "lobby", "wat", json!({})).await;
    let mut on_b = b.connect().await;
    join(&mut on_b, "lobby", "bea", json!({})).await;
    on_a.next_event().await;
    let mut ada = a.connect().await;
    let (conn, _, token) = join(&mut ada, "lobby", "ada", json!({"mood": "ok"})).await;
    on_a.next_event().await;
    on_b.next_event().await;

    ada.drop_connection();
    sockets(&a, 1).await;
    clock.advance(Duration::from_millis(GRACE_MS - 500));
    on_a.expect_silence(QUIET).await;
    on_b.expect_silence(Duration::from_millis(50)).await;
    clock.advance(Duration::from_millis(1_000));
    for watcher in [&mut on_a, &mut on_b] {
        let leave = watcher.next_event().await;
        assert_eq!(
            (leave["type"].as_str(), leave["connId"].as_str()),
            (Some("leave"), Some(conn.as_str()))
        );
        assert_eq!(leave["state"], json!({"mood": "ok"}));
    }
    clock.advance(Duration::from_millis(GRACE_MS));
    on_a.expect_silence(QUIET).await;
    on_b.expect_silence(Duration::from_millis(50)).await;

    let mut late = b.connect().await;
    let ack = resume(&mut late, &conn, &token).await;
    assert_eq!(ack["error"]["code"], json!("UNKNOWN_CONNECTION"), "{ack}");
}

/// A wrong token is FORBIDDEN and changes nothing; so is another user's connection with
/// tokens on; an unknown connection is UNKNOWN_CONNECTION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_resume_token_is_forbidden() {
    let host = TestHost::start_with(|c| c.resume_grace_ms = GRACE_MS).await;
    let mut watcher = host.connect().await;
    join(&mut watcher, "lobby", "wat", json!({})).await;
    let mut ada = host.connect().await;
    let (conn, _, token) = join(&mut ada, "lobby", "ada", json!({})).await;
    watcher.next_event().await;
    ada.drop_connection();
    sockets(&host, 1).await;

    let mut thief = host.connect().await;
    let mut wrong = token.clone();
    wrong.replace_range(0..1, if token.starts_with('0') { "1" } else { "0" });
    let ack = resume(&mut thief, &conn, &wrong).await;
    assert_eq!(ack["error"]["code"], json!("FORBIDDEN"), "{ack}");
    let ack = resume(&mut thief, &conn, "").await;
    assert_eq!(ack["error"]["code"], json!("FORBIDDEN"), "{ack}");
    let ack = resume(&mut thief, "0123456789abcdef0123456789abcdef", &token).await;
    assert_eq!(ack["error"]["code"], json!("UNKNOWN_CONNECTION"), "{ack}");
    let ack = thief
        .request("presence:resume", json!({"connId": conn}))
        .await;
    assert_eq!(ack["error"]["code"], json!("INVALID_PAYLOAD"), "{ack}");
    // The thief holds nothing; the owner still can resume.
    thief
        .fails(
            "presence:heartbeat",
            json!({"connId": conn}),
            "UNKNOWN_CONNECTION",
        )
        .await;
    let mut back = host.connect().await;
    assert_eq!(resume(&mut back, &conn, &token).await["ok"], json!(true));
    watcher.expect_silence(QUIET).await;
}

/// A client that says goodbye (a Close frame, `presence:leave`) leaves at once, grace or
/// not; a late goodbye from a socket whose connection another socket resumed removes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goodbye_leaves_at_once_but_only_its_own() {
    let host = TestHost::start_with(|c| c.resume_grace_ms = GRACE_MS).await;
    let mut watcher = host.connect().await;
    join(&mut watcher, "lobby", "wat", json!({})).await;

    let mut ada = host.connect().await;
    let (conn, ..) = join(&mut ada, "lobby", "ada", json!({})).await;
    watcher.next_event().await;
    ada.close().await;
    let leave = watcher.next_event().await;
    assert_eq!(
        (leave["type"].as_str(), leave["connId"].as_str()),
        (Some("leave"), Some(conn.as_str()))
    );

    // Bob's old socket is still open when a new one takes his connection over.
    let mut old = host.connect().await;
    let (conn, _, token) = join(&mut old, "lobby", "bob", json!({"v": 1})).await;
    watcher.next_event().await;
    let mut new = host.connect().await;
    assert_eq!(resume(&mut new, &conn, &token).await["ok"], json!(true));
    // The old socket no longer holds it: its heartbeat, leave and goodbye change nothing.
    old.fails(
        "presence:heartbeat",
        json!({"connId": conn}),
        "UNKNOWN_CONNECTION",
    )
    .await;
    old.close().await;
    watcher.expect_silence(QUIET).await;
    new.ok("presence:heartbeat", json!({"connId": conn})).await;
    assert_eq!(host.http().members("lobby").await.len(), 2);
    // Resuming the connection a socket already holds is refused.
    let ack = resume(&mut new, &conn, &token).await;
    assert_eq!(ack["error"]["code"], json!("INVALID_PAYLOAD"), "{ack}");
}

/// With tokens on, only the connection's user resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_user_resumes_a_connection() {
    use jsonwebtoken::{EncodingKey, Header};
    const SECRET: &str = "roster-resume-tests-secret-0123456789abc";
    let jwt = |sub: &str| {
        jsonwebtoken::encode(
            &Header::default(),
            &json!({"sub": sub, "exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let host = TestHost::start_with(|c| {
        c.resume_grace_ms = GRACE_MS;
        c.jwt_secret = Some(SECRET.into());
    })
    .await;
    let url = format!("ws://{}/ws", host.addr);
    let connect = |sub: &str| {
        let header = format!("Bearer {}", jwt(sub));
        let url = url.clone();
        async move {
            WsClient::try_connect(&url, &[("authorization", &header)])
                .await
                .unwrap()
        }
    };
    let mut ada = connect("ada").await;
    let ack = ada
        .ok("presence:join", json!({"roomId": "lobby", "state": {}}))
        .await;
    let conn = ack["self"]["connId"].as_str().unwrap().to_owned();
    let token = ack["self"]["resumeToken"].as_str().unwrap().to_owned();
    ada.drop_connection();
    sockets(&host, 0).await;
    let mut bob = connect("bob").await;
    let ack = resume(&mut bob, &conn, &token).await;
    assert_eq!(ack["error"]["code"], json!("FORBIDDEN"), "{ack}");
    let mut again = connect("ada").await;
    assert_eq!(resume(&mut again, &conn, &token).await["ok"], json!(true));
}

/// A rolling restart: one of two nodes gets SIGTERM (a graceful stop) while 100 clients
/// are in rooms; they resume on the other node; the watchers there see no `leave` (and no
/// `join`), not even after the stopped node's lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_announces_no_leaves() {
    const CLIENTS: usize = 100;
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let a = node(&redis.url(), &clock, |c| c.node_lease_ms = 1_000).await;
    let b = node(&redis.url(), &clock, |c| c.node_lease_ms = 1_000).await;
    let rooms = ["r0", "r1", "r2", "r3"];
    let mut watchers = Vec::new();
    for room in rooms {
        let mut watcher = b.connect().await;
        join(&mut watcher, room, "wat", json!({})).await;
        watchers.push(watcher);
    }
    let mut held = Vec::new();
    for i in 0..CLIENTS {
        let mut client = a.connect().await;
        let room = rooms[i % rooms.len()];
        let (conn, epoch, token) = join(&mut client, room, &format!("u{i}"), json!({"i": i})).await;
        held.push((client, conn, epoch, token, i));
    }
    for watcher in &mut watchers {
        for _ in 0..CLIENTS / rooms.len() {
            assert_eq!(watcher.next_event().await["type"], json!("join"));
        }
    }

    a.stop().await;
    for (client, ..) in &mut held {
        client.ended().await;
    }
    let mut resumed = Vec::new();
    for (_, conn, epoch, token, i) in &held {
        let mut back = b.connect().await;
        let ack = resume(&mut back, conn, token).await;
        assert_eq!(ack["ok"], json!(true), "{ack}");
        assert_eq!(ack["self"]["epoch"], json!(epoch));
        let me = ack["snapshot"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["connId"] == json!(conn))
            .cloned()
            .unwrap();
        assert_eq!(me["state"], json!({"i": i}));
        resumed.push(back); // stays connected until the test ends
    }
    // The stopped node's lease runs out; the survivor's reaper looks for its orphans.
    clock.advance(Duration::from_millis(2_000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for watcher in &mut watchers {
        watcher.expect_silence(QUIET).await;
    }
    for room in rooms {
        assert_eq!(
            b.http().members(room).await.len(),
            1 + CLIENTS / rooms.len(),
            "{room}"
        );
    }
    drop(resumed);
}

/// kill -9 of a node: its clients' connections get the resume grace too (not just its
/// lease): a client that comes back on another node after the lease ran out resumes; the
/// others are announced `leave` once when the grace ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_clients_resume_elsewhere() {
    use roster_tests::CrashableHost;
    let redis = RedisServer::start().await;
    let grace = Duration::from_millis(3_000);
    let config = || Config {
        redis_url: Some(redis.url()),
        node_lease_ms: 1_000,
        reaper_interval_ms: 100,
        rate_limit_per_sec: 0,
        resume_grace_ms: grace.as_millis() as u64,
        ..Config::default()
    };
    let mut doomed = CrashableHost::start(config()).await;
    let b = TestHost::try_start(config()).await.unwrap();
    eventually(
        "the survivor reaches Redis and trusts its lease",
        || async { b.hub.store.ping().await.is_ok() && b.hub.may_reap_dead_nodes() },
    )
    .await;
    let mut watcher = b.connect().await;
    join(&mut watcher, "crash", "wat", json!({})).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut client = doomed.connect().await;
        let (conn, _, token) = join(&mut client, "crash", &format!("v{i}"), json!({"i": i})).await;
        held.push((client, conn, token));
    }
    for _ in 0..3 {
        watcher.next_event().await;
    }
    doomed.crash();
    // Past the dead node's lease: its connections are detached, not gone.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let (_, conn, token) = &held[0];
    let mut back = b.connect().await;
    let ack = resume(&mut back, conn, token).await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    // The two that did not come back leave once, after the grace; the resumed one stays.
    let mut left = Vec::new();
    while left.len() < 2 {
        let event = watcher.next_event_where(|e| e["type"] == "leave").await;
        left.push(event["connId"].as_str().unwrap().to_owned());
    }
    left.sort();
    let mut expected = vec![held[1].1.clone(), held[2].1.clone()];
    expected.sort();
    assert_eq!(left, expected);
    watcher.expect_silence(Duration::from_millis(500)).await;
    back.ok("presence:heartbeat", json!({"connId": conn})).await;
}
