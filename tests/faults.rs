//! Faults lose nothing (issue 13): a store that stalls or restarts, and clients that stall.
//! A real `redis-server` is paused (SIGSTOP / SIGCONT) and restarted under a node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::time::{Duration, Instant};

use roster_host::config::{Clock, Config};
use roster_tests::{EPOCH_MS, RedisServer, TestHost, eventually};
use serde_json::json;

/// A node on `redis` with a short store timeout.
async fn node(redis: &RedisServer, adjust: impl FnOnce(&mut Config)) -> TestHost {
    let url = redis.url();
    let host = TestHost::start_with(move |c| {
        c.redis_url = Some(url);
        c.clock = Clock::manual(EPOCH_MS);
        c.redis_timeout_ms = 300;
        adjust(c);
    })
    .await;
    eventually("the node reaches Redis", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    // The health task has measured Redis' clock once it answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    host
}

/// A write whose ack said it failed (the store timed out) never lands later: joins,
/// heartbeats, metadata writes and publishes sent while Redis is frozen all fail, and none
/// of them is in the store once Redis thaws. The client's retry then appears once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reported_failed_never_lands_later() {
    let redis = RedisServer::start().await;
    let host = node(&redis, |_| {}).await;
    let mut watcher = host.connect().await;
    let (watcher_conn, ..) = watcher.join("lobby", "wat", json!({"v": 0})).await;
    let http = host.http();

    let beat_path = format!("/v1/connections/{watcher_conn}/heartbeat");
    redis.pause();
    // Sent at once, before the node knows Redis froze: these reach Redis' socket and would
    // run when it thaws.
    let (join, beat, meta, publish) = tokio::join!(
        http.send(
            "POST",
            "/v1/rooms/lobby/connections",
            Some(json!({"userId": "ada"}))
        ),
        http.send("POST", &beat_path, Some(json!({"patchState": {"v": 1}}))),
        http.send(
            "PUT",
            "/v1/channels/room/lobby/metadata",
            Some(json!({"items": [{"key": "topic", "value": "lost"}], "actorUserId": "ada"}))
        ),
        http.send(
            "POST",
            "/v1/channels/chat/messages",
            Some(json!({"payload": "lost"}))
        ),
    );
    for (what, (status, reply)) in [
        ("join", join),
        ("heartbeat", beat),
        ("metadata", meta),
        ("publish", publish),
    ] {
        assert_eq!(status, 503, "{what}: {reply}");
        assert_eq!(reply["error"]["code"], json!("STORE_UNAVAILABLE"), "{what}");
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.resume();
    eventually("the node is ready again", || async {
        http.send("GET", "/readyz", None).await.0 == 200
    })
    .await;
    // Whatever Redis had queued ran now, after its deadline: refused, nothing applied.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let members = http.members("lobby").await;
    assert_eq!(members.len(), 1, "only the watcher: {members:?}");
    assert_eq!(members[0]["state"], json!({"v": 0}));
    let meta = http
        .ok("GET", "/v1/channels/room/lobby/metadata", None)
        .await;
    assert_eq!(meta["items"], json!([]));
    let history = http.ok("GET", "/v1/channels/chat/messages", None).await;
    assert_eq!(history["seq"], json!(0));
    // Nothing happened in the room: the watcher hears at most that events may have been
    // missed while Redis was frozen (`presence:resync`), never a join.
    while let Ok(event) =
        tokio::time::timeout(Duration::from_millis(300), watcher.next_event()).await
    {
        assert_eq!(event["event"], json!("presence:resync"), "{event}");
    }

    // The retry lands, once.
    http.ok(
        "POST",
        "/v1/rooms/lobby/connections",
        Some(json!({"userId": "ada"})),
    )
    .await;
    assert_eq!(http.members("lobby").await.len(), 2);
    let join = watcher
        .next_event_where(|e| e["event"] == json!("presence:event"))
        .await;
    assert_eq!(join["userId"], json!("ada"));
}

/// Once the node knows the store is down, every request fails at once (not after a
/// timeout): joins into new rooms, heartbeats, reads, metadata, publishes, subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_fails_fast_while_the_store_is_down() {
    let redis = RedisServer::start().await;
    let host = node(&redis, |_| {}).await;
    let mut client = host.connect().await;
    let (conn, ..) = client.join("lobby", "ada", json!({})).await;
    let http = host.http();
    redis.pause();
    eventually("/readyz says 503", || async {
        http.send("GET", "/readyz", None).await.0 == 503
    })
    .await;
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let requests = [
            (
                "presence:join",
                json!({"roomId": format!("new-{i}"), "userId": "bob"}),
            ),
            ("presence:heartbeat", json!({"connId": conn})),
            ("presence:count", json!({"roomId": "lobby"})),
            (
                "metadata:get",
                json!({"channelType": "room", "channelName": "lobby"}),
            ),
            ("message:publish", json!({"channel": "chat", "payload": i})),
            ("message:subscribe", json!({"channel": format!("ch-{i}")})),
        ];
        for (event, data) in requests {
            let started = Instant::now();
            client.fails(event, data, "STORE_UNAVAILABLE").await;
            slowest = slowest.max(started.elapsed());
        }
        let started = Instant::now();
        let (status, _) = http
            .send(
                "POST",
                &format!("/v1/rooms/http-{i}/connections"),
                Some(json!({"userId": "bob"})),
            )
            .await;
        assert_eq!(status, 503);
        slowest = slowest.max(started.elapsed());
    }
    // The store timeout is 300 ms: a request that waited for it would show here.
    assert!(
        slowest < Duration::from_millis(100),
        "the slowest request took {slowest:?}"
    );
    redis.resume();
}

/// Floods room "flood" with 1 KiB state patches from one member until the node closes a
/// slow reader, timing another member's heartbeat every 50 updates; returns how many
/// updates it took and the slowest of those heartbeats.
async fn flood_until_a_slow_reader(host: &TestHost) -> (usize, Duration) {
    let mut normal = host.connect().await;
    let (normal_conn, ..) = normal.join("flood", "normal", json!({})).await;
    let mut sender = host.connect().await;
    let (sender_conn, ..) = sender.join("flood", "sender", json!({})).await;
    let blob = "x".repeat(1024);
    let mut sent = 0;
    let mut slowest_beat = Duration::ZERO;
    while host.slow_readers() == 0 {
        assert!(
            sent < 4_000,
            "the stalled reader was not closed after {sent} events"
        );
        sender
            .ok(
                "presence:heartbeat",
                json!({"connId": sender_conn, "patchState": {"n": sent, "blob": blob}}),
            )
            .await;
        sent += 1;
        if sent % 50 == 0 {
            let started = Instant::now();
            normal
                .ok("presence:heartbeat", json!({"connId": normal_conn}))
                .await;
            slowest_beat = slowest_beat.max(started.elapsed());
            normal.drain_events();
        }
        sender.drain_events();
    }
    (sent, slowest_beat)
}

/// A `/ws` reader that stops reading is closed as a slow reader within a bounded number of
/// events (its queue plus a bounded kernel buffer, not megabytes), gets the documented 1008
/// once it reads again, and a normal client's heartbeats stay fast meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_with_1008_within_bounds() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let host = TestHost::start().await;
    // The stalled client: a small receive buffer of its own, so what it holds is the
    // server's doing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(host.addr).await.unwrap();
    let (mut stalled, _) =
        tokio_tungstenite::client_async(format!("ws://{}/ws", host.addr), stream)
            .await
            .unwrap();
    {
        use futures_util::SinkExt;
        stalled
            .send(Message::text(
                json!({"id": 1, "event": "presence:join", "data": {"roomId": "flood", "userId": "slow"}})
                    .to_string(),
            ))
            .await
            .unwrap();
    }
    // Read the join's frames, then stop reading.
    for _ in 0..2 {
        stalled.next().await.unwrap().unwrap();
    }

    let (sent, slowest_beat) = flood_until_a_slow_reader(&host).await;
    // Its queue (1,024) plus ~130 KiB of kernel buffers on each side, at ~1.1 KiB each.
    assert!(sent < 1_600, "closed only after {sent} events");
    assert!(
        slowest_beat < Duration::from_millis(250),
        "a normal client's heartbeat took {slowest_beat:?}"
    );
    // Reading again, it finds the 1008 close after what was in flight.
    let mut close = None;
    let mut events = 0;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), stalled.next()).await
    {
        match message {
            Ok(Message::Close(frame)) => {
                close = frame;
                break;
            }
            Ok(_) => events += 1,
            Err(_) => break,
        }
    }
    let close = close.unwrap_or_else(|| panic!("no Close frame after {events} events"));
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
}

/// A Socket.IO reader that stops reading is closed the same way: its events go straight on
/// the engine's bounded queue (no queue of ours in between), a full one closes it as a slow
/// reader after a bounded backlog, and a normal client's heartbeats stay fast meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_socketio_reader_is_closed_within_bounds() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let host = TestHost::start().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(host.addr).await.unwrap();
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", host.addr);
    let (mut stalled, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    // The next packet, answering Engine.IO's pings (the first comes right after the open).
    let text = async |stalled: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>| loop {
        match stalled.next().await.unwrap().unwrap() {
            Message::Text(text) if text.as_str() == "2" => {
                stalled.send(Message::text("3")).await.unwrap();
            }
            Message::Text(text) => return text.to_string(),
            _ => continue,
        }
    };
    assert!(
        text(&mut stalled).await.starts_with('0'),
        "an Engine.IO open packet"
    );
    stalled.send(Message::text("40")).await.unwrap();
    let connected = text(&mut stalled).await;
    assert!(connected.starts_with("40"), "connected: {connected}");
    let join = json!(["presence:join", {"roomId": "flood", "userId": "slow"}]);
    stalled
        .send(Message::text(format!("421{join}")))
        .await
        .unwrap();
    // Read up to the join's ack, then stop reading.
    while !text(&mut stalled).await.starts_with("431") {}

    let (sent, slowest_beat) = flood_until_a_slow_reader(&host).await;
    // The engine's queue (1,024 packets) plus the kernel buffers, at ~1.1 KiB each.
    assert!(sent < 1_600, "closed only after {sent} events");
    assert!(
        slowest_beat < Duration::from_millis(250),
        "a normal client's heartbeat took {slowest_beat:?}"
    );
    // Reading again, it finds what was in flight, then the end of the connection.
    let mut events = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = stalled.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
            events += 1;
        }
    })
    .await;
    assert!(ended.is_ok(), "still open after {events} events");
    assert!(events <= sent + 4, "{events} frames for {sent} events");
}

/// Connections that never finish a request are closed: one that sends nothing, one that
/// sends half a request line, one whose body stops short of its Content-Length; a normal
/// client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_request_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = TestHost::start().await;
    let open = |bytes: &'static [u8]| {
        let addr = host.addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            stream
        }
    };
    let silent = open(b"").await;
    let half_line = open(b"GET /healthz HT").await;
    let short_body = open(
        b"POST /v1/rooms/lobby/connections HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"userId\":",
    )
    .await;
    let started = Instant::now();
    let mut normal = host.connect().await;
    let (conn, ..) = normal.join("lobby", "ada", json!({})).await;
    // Each of the three ends (EOF, reset or a 408/400 answer) within the bounds.
    let mut ended = Vec::new();
    for (what, mut stream) in [
        ("silent", silent),
        ("half a line", half_line),
        ("short body", short_body),
    ] {
        let mut buf = vec![0u8; 4096];
        let mut answer = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => panic!("{what}: still open after {:?}", started.elapsed()),
            }
        }
        ended.push((
            what,
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        ));
        // The normal client is served throughout.
        let beat = Instant::now();
        normal
            .ok("presence:heartbeat", json!({"connId": conn}))
            .await;
        assert!(beat.elapsed() < Duration::from_millis(250));
    }
    for (what, after, answer) in &ended {
        assert!(
            *after < Duration::from_secs(13),
            "{what} closed only after {after:?}"
        );
        if *what == "short body" {
            assert!(answer.contains(" 400 "), "{what}: {answer}");
            assert!(answer.contains("did not arrive"), "{what}: {answer}");
        }
    }
    let (_, metrics) = host.http().send("GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("roster_connections_timed_out_total 2"),
        "{metrics}"
    );
}

/// A flood of connections that send nothing cannot lock clients out: past the cap of
/// waiting connections the oldest are closed, and `/healthz` and new sockets are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_does_not_lock_clients_out() {
    let host = TestHost::start().await;
    let mut idle = Vec::new();
    for _ in 0..1_200 {
        idle.push(tokio::net::TcpStream::connect(host.addr).await.unwrap());
    }
    let started = Instant::now();
    let (status, _) = host.http().send("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let mut client = host.connect().await;
    client.join("lobby", "ada", json!({})).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    eventually(
        "the oldest idle connections are closed to make room",
        || async {
            host.hub
                .connection_stats
                .evicted
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1_200 - 1_024
        },
    )
    .await;
}

/// The event a socket gets named `name`, skipping others.
async fn event_named(client: &mut roster_tests::WsClient, name: &str) -> serde_json::Value {
    client.next_event_where(|e| e["event"] == json!(name)).await
}

/// Redis comes back without its data: every socket that held a connection is told at once
/// (`presence:lost`) and may join again; channels' subscribers get `message:reset` and the
/// sequence starts over, delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_comes_back_empty_tells_every_socket() {
    let mut redis = RedisServer::start().await;
    let host = node(&redis, |_| {}).await;
    let mut ada = host.connect().await;
    let (conn, ..) = ada.join("lobby", "ada", json!({"s": 1})).await;
    let mut reader = host.connect().await;
    reader
        .ok("message:subscribe", json!({"channel": "chat"}))
        .await;
    for n in 0..3 {
        host.http()
            .ok(
                "POST",
                "/v1/channels/chat/messages",
                Some(json!({"payload": n})),
            )
            .await;
    }
    for _ in 0..3 {
        event_named(&mut reader, "message").await;
    }

    redis.restart().await;
    let started = Instant::now();
    let lost = event_named(&mut ada, "presence:lost").await;
    assert_eq!(
        (lost["roomId"].as_str(), lost["connId"].as_str()),
        (Some("lobby"), Some(conn.as_str()))
    );
    let reset = event_named(&mut reader, "message:reset").await;
    assert_eq!(reset["channel"], json!("chat"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    ada.fails(
        "presence:heartbeat",
        json!({"connId": conn}),
        "UNKNOWN_CONNECTION",
    )
    .await;
    // It joins again, and the channel goes on from seq 1.
    ada.join("lobby", "ada", json!({"s": 1})).await;
    assert_eq!(host.http().members("lobby").await.len(), 1);
    host.http()
        .ok(
            "POST",
            "/v1/channels/chat/messages",
            Some(json!({"payload": "after"})),
        )
        .await;
    let message = event_named(&mut reader, "message").await;
    assert_eq!(
        (message["seq"].clone(), message["payload"].clone()),
        (json!(1), json!("after"))
    );
}

/// After Redis restarts, a node takes no request until its subscriptions are back, so a
/// watcher that re-joins on it misses nothing the other node does: every join made on the
/// other node is in the watcher's snapshot or reaches it as an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_events_survive_a_store_restart() {
    const JOINS: usize = 60;
    let mut redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let (a_clock, b_clock) = (clock.clone(), clock.clone());
    let a = node(&redis, move |c| c.clock = a_clock).await;
    let b = node(&redis, move |c| c.clock = b_clock).await;
    let mut watcher = b.connect().await;
    watcher.join("lobby", "wat", json!({})).await;

    redis.restart().await;
    // Node A joins clients as soon as it takes requests again.
    let http = a.http();
    let joins = tokio::spawn(async move {
        let mut joined = Vec::new();
        while joined.len() < JOINS {
            let (status, reply) = http
                .send(
                    "POST",
                    "/v1/rooms/lobby/connections",
                    Some(json!({"userId": format!("u{}", joined.len())})),
                )
                .await;
            if status == 200 {
                joined.push(reply["self"]["connId"].as_str().unwrap().to_owned());
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        joined
    });
    // The watcher learns its connection is gone and joins again on B.
    event_named(&mut watcher, "presence:lost").await;
    let mut known: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let ack = watcher
            .request(
                "presence:join",
                json!({"roomId": "lobby", "userId": "wat", "state": {}}),
            )
            .await;
        if ack["ok"] == json!(true) {
            for member in ack["snapshot"].as_array().unwrap() {
                known.insert(member["connId"].as_str().unwrap().to_owned());
            }
            break;
        }
        assert_eq!(ack["error"]["code"], json!("STORE_UNAVAILABLE"), "{ack}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let joined = joins.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !joined.iter().all(|id| known.contains(id)) {
        assert!(
            Instant::now() < deadline,
            "the watcher never heard of {} joins",
            joined.iter().filter(|id| !known.contains(*id)).count()
        );
        let event = watcher.next_event().await;
        if event["event"] == "presence:event" && event["type"] == "join" {
            known.insert(event["connId"].as_str().unwrap().to_owned());
        }
    }
}

/// A Redis pause (data intact) cuts the nodes' Pub/Sub link: when it is back, sockets are
/// told to re-read their rooms (`presence:resync`), since events may have been missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_outage_asks_watchers_to_resync() {
    let redis = RedisServer::start().await;
    let host = node(&redis, |_| {}).await;
    let mut watcher = host.connect().await;
    let (conn, ..) = watcher.join("lobby", "wat", json!({})).await;
    redis.pause();
    eventually("the node notices", || async {
        host.http().send("GET", "/readyz", None).await.0 == 503
    })
    .await;
    redis.resume();
    let resync = event_named(&mut watcher, "presence:resync").await;
    assert_eq!(resync["roomId"], json!("lobby"));
    // Its connection is intact.
    watcher
        .ok("presence:heartbeat", json!({"connId": conn}))
        .await;
}

/// The Pub/Sub connection alone is cut (`CLIENT KILL TYPE pubsub`; Redis keeps running):
/// the node resubscribes on a fresh connection at once and asks its watchers to re-read
/// their rooms, and events from another node flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_resubscribes_and_resyncs() {
    let redis = RedisServer::start().await;
    let a = node(&redis, |_| {}).await;
    let b = node(&redis, |_| {}).await;
    let mut watcher = a.connect().await;
    let (conn, ..) = watcher.join("lobby", "wat", json!({})).await;
    let mut other = b.connect().await;
    other.join("lobby", "oth", json!({})).await;
    event_named(&mut watcher, "presence:event").await;

    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(
        killed.trim(),
        "0",
        "a Pub/Sub connection was killed: {killed}"
    );
    let resync = event_named(&mut watcher, "presence:resync").await;
    assert_eq!(resync["roomId"], json!("lobby"));

    // Node B's events reach the watcher on node A again, and its connection is intact.
    let mut late = b.connect().await;
    late.join("lobby", "late", json!({})).await;
    let joined = event_named(&mut watcher, "presence:event").await;
    assert_eq!(joined["userId"], json!("late"), "{joined}");
    watcher
        .ok("presence:heartbeat", json!({"connId": conn}))
        .await;
}
