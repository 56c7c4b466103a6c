//! Many nodes, one presence: `roster` nodes sharing a real `redis-server` (standalone and a
//! three-master Redis Cluster, both started here on free ports), with cross-node events,
//! atomic compare-and-set under concurrency, cleanup after a node crash, and a Redis
//! restart under load.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use roster_host::Backend;
use roster_host::config::{Clock, Config};
use roster_tests::{
    CrashableHost, EPOCH_MS, RedisCluster, RedisServer, TestHost, WsClient, eventually, test_config,
};
use serde_json::{Value, json};

/// A node on `redis_url`, sharing `clock` with its peers.
async fn node(redis_url: &str, clock: &Clock, adjust: impl FnOnce(&mut Config)) -> TestHost {
    let url = redis_url.to_owned();
    let clock = clock.clone();
    TestHost::start_with(move |c| {
        c.redis_url = Some(url);
        c.clock = clock;
        adjust(c);
    })
    .await
}

/// Waits until the node's store answers.
async fn ready(host: &TestHost) {
    eventually("the node to reach Redis", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
}

/// Everything one node does is seen on the others: joins, snapshots, updates both ways,
/// metadata writes, disconnects, and the reaper's removals.
async fn shared_presence(redis_url: &str) {
    let clock = Clock::manual(EPOCH_MS);
    let a = node(redis_url, &clock, |_| {}).await;
    let b = node(redis_url, &clock, |_| {}).await;
    ready(&a).await;
    ready(&b).await;

    let mut on_b = b.connect().await;
    let (b_conn, ..) = on_b.join("lobby", "bea", json!({"on": "b"})).await;
    let mut on_a = a.connect().await;
    let (a_conn, _, ack) = on_a.join("lobby", "al", json!({"on": "a"})).await;
    assert!(
        ack["snapshot"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["connId"] == json!(b_conn)),
        "A's snapshot lists B's connection: {ack}"
    );
    let join = on_b.next_event().await;
    assert_eq!(
        (join["type"].clone(), join["connId"].clone()),
        (json!("join"), json!(a_conn))
    );
    assert_eq!(b.http().members("lobby").await.len(), 2);

    on_a.ok(
        "presence:heartbeat",
        json!({"connId": a_conn, "patchState": {"cursor": 1}}),
    )
    .await;
    let update = on_b
        .next_event_where(|e| e["connId"] == json!(a_conn))
        .await;
    assert_eq!(update["state"], json!({"on": "a", "cursor": 1}));
    on_b.ok(
        "presence:heartbeat",
        json!({"connId": b_conn, "patchState": {"cursor": 2}}),
    )
    .await;
    let update = on_a
        .next_event_where(|e| e["connId"] == json!(b_conn))
        .await;
    assert_eq!(update["state"], json!({"on": "b", "cursor": 2}));

    on_a.ok("metadata:set", json!({"channelType": "room", "channelName": "lobby", "items": [{"key": "topic", "value": "x"}]}))
        .await;
    let event = on_b
        .next_event_where(|e| e["event"] == "metadata:event")
        .await;
    assert_eq!(
        (event["event"].clone(), event["majorRevision"].clone()),
        (json!("metadata:event"), json!(1))
    );
    let got = on_b
        .ok(
            "metadata:get",
            json!({"channelType": "room", "channelName": "lobby"}),
        )
        .await;
    assert_eq!(got["items"][0]["value"], "x");

    // A second client on A goes silent; time passes; the reaper (of either node) removes it.
    let mut silent = a.connect().await;
    let (silent_conn, ..) = silent.join("lobby", "quiet", json!({})).await;
    on_b.next_event_where(|e| e["type"] == "join" && e["connId"] == json!(silent_conn))
        .await;
    for _ in 0..4 {
        clock.advance(Duration::from_secs(10));
        on_a.ok("presence:heartbeat", json!({"connId": a_conn}))
            .await;
        on_b.ok("presence:heartbeat", json!({"connId": b_conn}))
            .await;
    }
    let reaped = on_b.next_event_where(|e| e["type"] == "leave").await;
    assert_eq!(reaped["connId"], json!(silent_conn));
    let reaped_on_a = on_a.next_event_where(|e| e["type"] == "leave").await;
    assert_eq!(
        reaped_on_a["connId"],
        json!(silent_conn),
        "announced once, seen everywhere"
    );

    on_a.close().await;
    let leave = on_b.next_event_where(|e| e["type"] == "leave").await;
    assert_eq!(leave["connId"], json!(a_conn));
    assert_eq!(b.http().members("lobby").await.len(), 1);
}

/// Two nodes on one Redis act as one hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_presence() {
    let redis = RedisServer::start().await;
    shared_presence(&redis.url()).await;
}

/// Two nodes on a three-master Redis Cluster act as one hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_presence_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    shared_presence(&cluster.url()).await;
}

/// Three nodes: a room spread over all of them; every member sees every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_room() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let host = node(&redis.url(), &clock, |_| {}).await;
        ready(&host).await;
        nodes.push(host);
    }
    let mut clients: Vec<WsClient> = Vec::new();
    let mut conns = Vec::new();
    for (i, host) in nodes.iter().enumerate() {
        let mut client = host.connect().await;
        let (conn, _, ack) = client
            .join("triad", &format!("u{i}"), json!({"node": i}))
            .await;
        assert_eq!(ack["snapshot"].as_array().unwrap().len(), i + 1);
        for earlier in &mut clients {
            assert_eq!(earlier.next_event().await["connId"], json!(conn));
        }
        clients.push(client);
        conns.push(conn);
    }
    clients[2]
        .ok(
            "presence:heartbeat",
            json!({"connId": conns[2], "patchState": {"ready": true}}),
        )
        .await;
    for client in &mut clients[..2] {
        assert_eq!(
            client.next_event().await["state"],
            json!({"node": 2, "ready": true})
        );
    }
}

/// Many clients on several nodes race the same expected revision: exactly one wins each
/// round; heartbeats racing with epochs leave the highest epoch stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_across_nodes() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let host = node(&redis.url(), &clock, |_| {}).await;
        ready(&host).await;
        nodes.push(host);
    }
    let mut writers = Vec::new();
    for i in 0..12 {
        let mut client = nodes[i % 3].connect().await;
        client.join("race", &format!("w{i}"), json!({})).await;
        writers.push(client);
    }
    let channel = json!({"channelType": "room", "channelName": "race"});
    let mut set = channel.clone();
    set["items"] = json!([{"key": "n", "value": "0"}]);
    writers[0].ok("metadata:set", set).await;
    for round in 1..=5u64 {
        let tasks: Vec<_> = writers
            .drain(..)
            .enumerate()
            .map(|(i, mut writer)| {
                let mut update = channel.clone();
                update["items"] =
                    json!([{"key": "n", "value": format!("{round}-{i}"), "revision": round}]);
                tokio::spawn(async move {
                    let ack = writer.request("metadata:update", update).await;
                    (writer, ack)
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            let (writer, ack) = task.await.unwrap();
            if ack["ok"] == json!(true) {
                wins += 1;
            } else {
                assert_eq!(ack["error"]["code"], "METADATA_CONFLICT", "{ack}");
            }
            writers.push(writer);
        }
        assert_eq!(wins, 1, "round {round}");
    }

    // One connection, heartbeats with many epochs from three nodes at once (HTTP, so any
    // node may carry any of them): the highest epoch is what stays.
    let joined = nodes[0]
        .http()
        .ok(
            "POST",
            "/v1/rooms/race/connections",
            Some(json!({"userId": "fenced"})),
        )
        .await;
    let conn = joined["self"]["connId"].as_str().unwrap().to_owned();
    let base = joined["self"]["epoch"].as_u64().unwrap();
    let mut beats = Vec::new();
    for i in 0..30u64 {
        let http = nodes[(i % 3) as usize].http();
        let path = format!("/v1/connections/{conn}/heartbeat");
        beats.push(tokio::spawn(async move {
            http.send(
                "POST",
                &path,
                Some(json!({"epoch": base + i, "patchState": {"by": i}})),
            )
            .await
        }));
    }
    for beat in beats {
        let (status, reply) = beat.await.unwrap();
        assert!(
            status == 200 || reply["error"]["code"] == "STALE_EPOCH",
            "{status} {reply}"
        );
    }
    let fenced = nodes[1]
        .http()
        .members("race")
        .await
        .into_iter()
        .find(|c| c["connId"] == json!(conn))
        .unwrap();
    assert_eq!(fenced["epoch"], json!(base + 29), "the highest epoch wins");
    assert_eq!(
        fenced["state"]["by"],
        json!(29),
        "and its patch is the state"
    );
}

/// kill -9 of a node with 100 connections: the survivors announce all 100 leaves soon after
/// its lease expires (well before the TTL), each exactly once. (With no resume grace: with
/// one, they wait for it first; tests/resume.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_cleaned_up_by_the_others() {
    let redis = RedisServer::start().await;
    let lease = Duration::from_millis(1_000);
    let config = || Config {
        redis_url: Some(redis.url()),
        node_lease_ms: lease.as_millis() as u64,
        reaper_interval_ms: 100,
        rate_limit_per_sec: 0,
        resume_grace_ms: 0,
        ..Config::default()
    };
    let mut doomed = CrashableHost::start(config()).await;
    let b = TestHost::try_start(config()).await.unwrap();
    let c = TestHost::try_start(config()).await.unwrap();
    for host in [&b, &c] {
        ready(host).await;
    }
    let mut watcher_b = b.connect().await;
    watcher_b.join("crash", "watcher-b", json!({})).await;
    let mut watcher_c = c.connect().await;
    watcher_c.join("crash", "watcher-c", json!({})).await;
    watcher_b.next_event().await;

    let mut victims = Vec::new();
    let mut conns = Vec::new();
    for i in 0..100 {
        let mut client = doomed.connect().await;
        let (conn, ..) = client.join("crash", &format!("v{i}"), json!({})).await;
        conns.push(conn);
        victims.push(client);
    }
    for watcher in [&mut watcher_b, &mut watcher_c] {
        for conn in &conns {
            watcher
                .next_event_where(|e| e["type"] == "join" && e["connId"] == json!(conn))
                .await;
        }
    }
    // The survivors must have renewed their own leases for a full lease before they judge.
    eventually("the survivors to trust their leases", || async {
        b.hub.may_reap_dead_nodes() && c.hub.may_reap_dead_nodes()
    })
    .await;

    let crashed = Instant::now();
    doomed.crash();
    drop(victims);
    for watcher in [&mut watcher_b, &mut watcher_c] {
        let mut left: HashMap<String, u32> = HashMap::new();
        while left.len() < conns.len() {
            let event = watcher.next_event_where(|e| e["type"] == "leave").await;
            *left
                .entry(event["connId"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert!(
            left.values().all(|count| *count == 1),
            "a leave was announced twice"
        );
        assert!(conns.iter().all(|conn| left.contains_key(conn)));
    }
    let cleanup = crashed.elapsed();
    println!("crash cleanup: 100 leaves announced {cleanup:?} after the crash (lease {lease:?})");
    assert!(
        cleanup < Duration::from_secs(10),
        "took {cleanup:?}, the TTL would have been as quick"
    );
    watcher_b.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(b.http().members("crash").await.len(), 2);
}

/// Redis restarts while clients heartbeat: nothing crashes, requests fail fast with
/// STORE_UNAVAILABLE and /readyz says not ready meanwhile, then everything recovers (events
/// between nodes included) and a client that left during the outage leaves no ghost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load() {
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let clock = Clock::manual(EPOCH_MS);
    let a = node(&redis.url(), &clock, |_| {}).await;
    let b = node(&redis.url(), &clock, |_| {}).await;
    ready(&a).await;
    ready(&b).await;
    let mut beaters = Vec::new();
    for i in 0..4 {
        let mut client = a.connect().await;
        let (conn, ..) = client.join("outage", &format!("beat{i}"), json!({})).await;
        beaters.push((client, conn));
    }
    let mut leaver = a.connect().await;
    leaver.join("outage", "leaver", json!({})).await;
    let mut watcher = b.connect().await;
    watcher.join("outage", "watcher", json!({})).await;

    redis.kill();
    // Requests fail fast, sockets stay, the node says not ready.
    for (client, conn) in &mut beaters {
        let started = Instant::now();
        let ack = client
            .request("presence:heartbeat", json!({"connId": conn}))
            .await;
        assert_eq!(ack["error"]["code"], "STORE_UNAVAILABLE", "{ack}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "failed slowly: {:?}",
            started.elapsed()
        );
    }
    let (status, _) = a.http().send("GET", "/readyz", None).await;
    assert_eq!(status, 503);
    leaver.close().await; // its leave cannot be written now
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.restart().await;
    eventually("the node to be ready again", || async {
        a.http().send("GET", "/readyz", None).await.0 == 200
    })
    .await;
    ready(&b).await;
    for (client, conn) in &mut beaters {
        let mut recovered = false;
        for _ in 0..50 {
            let ack = client
                .request("presence:heartbeat", json!({"connId": conn}))
                .await;
            if ack["ok"] == json!(true) {
                recovered = true;
                break;
            }
            assert_eq!(ack["error"]["code"], "STORE_UNAVAILABLE", "{ack}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recovered, "heartbeats work again");
    }
    eventually("the deferred leave to be written", || async {
        !b.http()
            .members("outage")
            .await
            .iter()
            .any(|c| c["userId"] == "leaver")
    })
    .await;
    // Events flow between the nodes again (the subscriptions were restored).
    let (conn, ..) = {
        let mut late = a.connect().await;
        let joined = late.join("outage", "late", json!({})).await;
        beaters.push((late, joined.0.clone()));
        joined
    };
    watcher
        .next_event_where(|e| e["type"] == "join" && e["connId"] == json!(conn))
        .await;
}

/// A ready node on `redis` whose reaper stays out of round-trip counts.
async fn counting_node(redis: &RedisServer) -> TestHost {
    let url = redis.url();
    let host = TestHost::start_with(move |c| {
        c.redis_url = Some(url);
        c.reaper_interval_ms = 3_600_000;
        c.reaper_lookback_ms = Some(7_200_000);
    })
    .await;
    ready(&host).await;
    host
}

/// A plain heartbeat costs one round trip: one script call, counted by Redis itself and by
/// the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_heartbeat_is_one_round_trip() {
    let redis = RedisServer::start().await;
    let host = counting_node(&redis).await;
    let mut client = host.connect().await;
    let (conn, ..) = client.join("rt", "u", json!({})).await;
    let Backend::Redis(store, _) = &host.hub.backend else {
        panic!("not on Redis");
    };
    let scripts_before = redis.calls("evalsha");
    let trips_before = store.stats.round_trips.load(Ordering::Relaxed);
    let beats = 200;
    for _ in 0..beats {
        client
            .ok("presence:heartbeat", json!({"connId": conn}))
            .await;
    }
    let scripts = redis.calls("evalsha") - scripts_before;
    let trips = store.stats.round_trips.load(Ordering::Relaxed) - trips_before;
    println!("{beats} plain heartbeats: {scripts} script calls, {trips} round trips");
    // Lease renewals may land in the window: at most a few.
    assert!(
        scripts >= beats && scripts <= beats + 5,
        "{scripts} script calls"
    );
    assert!(trips >= beats && trips <= beats + 5, "{trips} round trips");
}

/// Concurrent heartbeats of many sockets are coalesced: fewer component calls and round
/// trips than heartbeats, each heartbeat still answered on its own socket, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_heartbeats_share_round_trips() {
    let redis = RedisServer::start().await;
    let host = counting_node(&redis).await;
    let mut clients = Vec::new();
    for i in 0..50 {
        let mut client = host.connect().await;
        let (conn, epoch, _) = client.join("many", &format!("u{i}"), json!({})).await;
        clients.push((client, conn, epoch));
    }
    let Backend::Redis(store, _) = &host.hub.backend else {
        panic!("not on Redis");
    };
    let trips_before = store.stats.round_trips.load(Ordering::Relaxed);
    let calls_before = host.hub.heartbeat_stats.calls.load(Ordering::Relaxed);
    let rounds = 20u64;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(mut client, conn, epoch)| {
            tokio::spawn(async move {
                for round in 0..rounds {
                    // Each heartbeat raises the epoch: an out-of-order one would be refused.
                    let ack = client
                        .request(
                            "presence:heartbeat",
                            json!({"connId": conn, "epoch": epoch + round}),
                        )
                        .await;
                    assert_eq!(ack, json!({"ok": true, "changed": false}));
                }
                // Kept open until measured: a disconnect is a leave, with round trips of its own.
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    let beats = 50 * rounds;
    let calls = host.hub.heartbeat_stats.calls.load(Ordering::Relaxed) - calls_before;
    let trips = store.stats.round_trips.load(Ordering::Relaxed) - trips_before;

    println!(
        "{beats} concurrent heartbeats: {calls} component calls, {trips} Redis round trips ({:.2} per heartbeat)",
        trips as f64 / beats as f64
    );
    assert!(calls < beats, "no heartbeat was coalesced");
    assert!(
        trips <= calls + 5,
        "a heartbeat call took more than one round trip"
    );
    drop(clients);
}

/// A node whose Redis is down at start-up still starts, reports not ready, and serves once
/// Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_before_its_redis() {
    let port = roster_tests::free_port(false);
    let mut config = test_config();
    config.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let host = TestHost::try_start(config).await.unwrap();
    let (status, _) = host.http().send("GET", "/readyz", None).await;
    assert_eq!(status, 503);
    host.http()
        .fails(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": "u"})),
            503,
            "STORE_UNAVAILABLE",
        )
        .await;
    let _redis = {
        // A server on exactly that port.
        let mut server = RedisServer::start().await;
        server.kill();
        server.port = port;
        server.restart().await;
        server
    };
    eventually("the node to be ready", || async {
        host.http().send("GET", "/readyz", None).await.0 == 200
    })
    .await;
    let joined: Value = host
        .http()
        .ok(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": "u"})),
        )
        .await;
    assert_eq!(joined["ok"], json!(true));
}

/// Redis over TLS (`rediss://`) with a private CA: nodes that trust the CA share presence
/// (commands and Pub/Sub both over TLS); a node that does not trust it is never ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let redis = RedisServer::start_tls().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let clock = Clock::manual(EPOCH_MS);
    let ca = redis.ca_file.clone();
    let a = node(&url, &clock, |c| c.redis_ca_file = ca.clone()).await;
    let b = node(&url, &clock, |c| c.redis_ca_file = ca.clone()).await;
    ready(&a).await;
    ready(&b).await;
    let mut on_b = b.connect().await;
    on_b.join("secure", "bea", json!({})).await;
    let mut on_a = a.connect().await;
    let (conn, ..) = on_a.join("secure", "al", json!({})).await;
    let join = on_b.next_event().await;
    assert_eq!(
        join["connId"],
        json!(conn),
        "the event crossed over TLS Pub/Sub"
    );

    let untrusting = node(&url, &clock, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, body) = untrusting.http().send("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
}
