//! Messages (DESIGN.md §8) end to end: subscribe, publish, the `message` push, recovery
//! with `since`, idempotent publishing, the HTTP routes, the limits and their error codes,
//! the policy's subscribe / publish decisions, and order across nodes on Redis and Redis
//! Cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use roster_host::config::{Clock, Config};
use roster_tests::{EPOCH_MS, RedisCluster, RedisServer, TestHost, WsClient, eventually};
use serde_json::{Value, json};

/// Subscribes and returns the ack.
async fn subscribe(client: &mut WsClient, channel: &str, since: Option<u64>) -> Value {
    let mut data = json!({ "channel": channel });
    if let Some(since) = since {
        data["since"] = json!(since);
    }
    client.ok("message:subscribe", data).await
}

/// The next `count` `message` pushes (other events are skipped).
async fn messages(client: &mut WsClient, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let event = client.next_event().await;
        if event["event"] == "message" {
            out.push(event);
        }
    }
    out
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// Every subscriber gets every message once, in seq order, with every field; the publisher
/// gets its own when subscribed; `from` is the publisher's user (none for a socket that
/// never joined, in open mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_every_message_in_order() {
    let host = TestHost::start().await;
    let mut ada = host.connect().await;
    ada.join("lobby", "ada", json!({})).await;
    let mut bob = host.connect().await;
    let ack = subscribe(&mut ada, "chat", None).await;
    assert_eq!(ack, json!({"ok": true, "channel": "chat", "seq": 0}));
    subscribe(&mut bob, "chat", None).await;

    let ack = ada
        .ok(
            "message:publish",
            json!({"channel": "chat", "payload": {"text": "hi"}, "id": "m-1"}),
        )
        .await;
    assert_eq!(
        ack,
        json!({"ok": true, "channel": "chat", "seq": 1, "id": "m-1"})
    );
    let got = messages(&mut bob, 1).await;
    assert_eq!(
        got[0],
        json!({"event": "message", "channel": "chat", "seq": 1, "id": "m-1", "from": "ada",
               "payload": {"text": "hi"}, "ts": EPOCH_MS})
    );
    assert_eq!(messages(&mut ada, 1).await[0]["seq"], json!(1));

    // Any JSON value is a payload; ids are made when none is given.
    for payload in [json!(null), json!(7), json!("text"), json!([1, {"a": 2}])] {
        bob.ok(
            "message:publish",
            json!({"channel": "chat", "payload": payload}),
        )
        .await;
    }
    let got = messages(&mut ada, 4).await;
    assert_eq!(seqs(&got), vec![2, 3, 4, 5]);
    assert_eq!(got[0]["payload"], json!(null));
    assert_eq!(got[3]["payload"], json!([1, {"a": 2}]));
    assert_eq!(got[0]["from"], json!(null), "bob never joined: no user");
    assert!(got[1]["id"].as_str().is_some_and(|id| id.len() == 16));
    assert_ne!(got[1]["id"], got[2]["id"]);
    messages(&mut bob, 4).await;

    // Many at once, from two publishers: still dense and ordered for everyone.
    let mut carol = host.connect().await;
    subscribe(&mut carol, "chat", None).await;
    for i in 0..100 {
        let publisher = if i % 2 == 0 { &mut ada } else { &mut bob };
        publisher
            .ok(
                "message:publish",
                json!({"channel": "chat", "payload": {"i": i}}),
            )
            .await;
    }
    let got = messages(&mut carol, 100).await;
    assert_eq!(seqs(&got), (6..=105).collect::<Vec<_>>());

    // Unsubscribed: nothing more.
    carol
        .ok("message:unsubscribe", json!({"channel": "chat"}))
        .await;
    ada.ok(
        "message:publish",
        json!({"channel": "chat", "payload": "after"}),
    )
    .await;
    carol.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(host.hub.bus.channel_count(), 1);
    drop((ada, bob));
    eventually("the channel is unwatched", || async {
        host.hub.bus.channel_count() == 0
    })
    .await;
}

/// A subscriber that missed messages resubscribes with `since` and gets exactly those
/// (`recovered: true`); one that missed more than history keeps gets `recovered: false`
/// and what history still has; history also ends at its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_recovers_what_was_missed() {
    let host = TestHost::start_with(|c| c.message_history = 100).await;
    let http = host.http();
    let publish = |n: u64| {
        let http = &http;
        async move {
            for i in 0..n {
                http.ok(
                    "POST",
                    "/v1/channels/room-7/messages",
                    Some(json!({"payload": {"i": i}})),
                )
                .await;
            }
        }
    };
    let mut reader = host.connect().await;
    subscribe(&mut reader, "room-7", None).await;
    publish(10).await;
    let seen = messages(&mut reader, 10).await;
    assert_eq!(seqs(&seen), (1..=10).collect::<Vec<_>>());
    reader.drop_connection();

    publish(50).await;
    let mut back = host.connect().await;
    let ack = subscribe(&mut back, "room-7", Some(10)).await;
    assert_eq!(ack["seq"], json!(60));
    assert_eq!(ack["recovered"], json!(true));
    let missed = ack["messages"].as_array().unwrap();
    assert_eq!(seqs(missed), (11..=60).collect::<Vec<_>>());
    assert_eq!(missed[0]["payload"], json!({"i": 0}));
    assert_eq!(missed[0]["channel"], json!("room-7"));
    // Up to date: nothing to send, nothing missed.
    let mut current = host.connect().await;
    let ack = subscribe(&mut current, "room-7", Some(60)).await;
    assert_eq!(
        (&ack["recovered"], ack["messages"].as_array().map(Vec::len)),
        (&json!(true), Some(0))
    );

    // Missed more than history keeps.
    publish(150).await;
    let mut late = host.connect().await;
    let ack = subscribe(&mut late, "room-7", Some(60)).await;
    assert_eq!(ack["seq"], json!(210));
    assert_eq!(ack["recovered"], json!(false));
    assert_eq!(
        seqs(ack["messages"].as_array().unwrap()),
        (111..=210).collect::<Vec<_>>()
    );
    // A since beyond the channel's seq (a channel that started over): not recovered.
    let mut confused = host.connect().await;
    let ack = subscribe(&mut confused, "room-7", Some(500)).await;
    assert_eq!(ack["recovered"], json!(false));

    // Over HTTP, the same read.
    let got = http
        .ok("GET", "/v1/channels/room-7/messages?since=200", None)
        .await;
    assert_eq!(got["recovered"], json!(true));
    assert_eq!(
        seqs(got["messages"].as_array().unwrap()),
        (201..=210).collect::<Vec<_>>()
    );
    let whole = http.ok("GET", "/v1/channels/room-7/messages", None).await;
    assert_eq!(whole["recovered"], json!(false), "seq 1 left history");
    assert_eq!(whole["messages"].as_array().unwrap().len(), 100);

    // Past the TTL, history is empty; a reader that saw seq 205 missed 5.
    host.advance(Duration::from_millis(300_001));
    let got = http
        .ok("GET", "/v1/channels/room-7/messages?since=205", None)
        .await;
    assert_eq!(
        (&got["seq"], &got["recovered"], &got["messages"]),
        (&json!(210), &json!(false), &json!([]))
    );
    // The sequence goes on.
    let ack = http
        .ok(
            "POST",
            "/v1/channels/room-7/messages",
            Some(json!({"payload": 1})),
        )
        .await;
    assert_eq!(ack["seq"], json!(211));
}

/// A publish retried with the same id (a lost ack) is delivered once and answers the
/// original seq, over sockets and HTTP alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_is_delivered_once() {
    let host = TestHost::start().await;
    let mut reader = host.connect().await;
    subscribe(&mut reader, "orders", None).await;
    let mut writer = host.connect().await;
    let first = writer
        .ok(
            "message:publish",
            json!({"channel": "orders", "payload": {"n": 1}, "id": "order-1"}),
        )
        .await;
    writer
        .ok(
            "message:publish",
            json!({"channel": "orders", "payload": {"n": 2}}),
        )
        .await;
    let again = writer
        .ok(
            "message:publish",
            json!({"channel": "orders", "payload": {"n": 1}, "id": "order-1"}),
        )
        .await;
    assert_eq!(again, first);
    let http_again = host
        .http()
        .ok(
            "POST",
            "/v1/channels/orders/messages",
            Some(json!({"payload": {"n": 1}, "id": "order-1"})),
        )
        .await;
    assert_eq!(http_again, first);
    // The same id on another channel is another message.
    let other = writer
        .ok(
            "message:publish",
            json!({"channel": "invoices", "payload": 1, "id": "order-1"}),
        )
        .await;
    assert_eq!(other["seq"], json!(1));
    let got = messages(&mut reader, 2).await;
    assert_eq!(seqs(&got), vec![1, 2]);
    reader.expect_silence(Duration::from_millis(200)).await;
}

/// Bad requests get their documented codes, and the socket keeps its subscriptions and
/// its presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_codes_and_lose_nothing() {
    let host = TestHost::start_with(|c| {
        c.max_subscriptions = 3;
        c.max_message_bytes = 1024;
    })
    .await;
    let mut client = host.connect().await;
    client.join("lobby", "ada", json!({})).await;
    subscribe(&mut client, "a", None).await;
    subscribe(&mut client, "b", None).await;
    let big = "x".repeat(2000);
    let cases = [
        (
            "message:publish",
            json!({"channel": "a", "payload": big}),
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "message:publish",
            json!({"channel": "a"}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:publish",
            json!({"channel": "", "payload": 1}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:publish",
            json!({"channel": "a\u{1}", "payload": 1}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:publish",
            json!({"channel": "x".repeat(257), "payload": 1}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:publish",
            json!({"channel": 5, "payload": 1}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:publish",
            json!({"channel": "a", "payload": 1, "id": "i".repeat(129)}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:publish",
            json!({"channel": "a", "payload": 1, "id": ""}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:publish",
            json!({"channel": "a", "payload": 1, "id": 7}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:subscribe",
            json!({"channel": ""}),
            "INVALID_PAYLOAD",
        ),
        (
            "message:subscribe",
            json!({"channel": "a", "since": -1}),
            "INVALID_PAYLOAD",
        ),
        ("message:subscribe", json!({}), "INVALID_PAYLOAD"),
        (
            "message:unsubscribe",
            json!({"channel": 1}),
            "INVALID_PAYLOAD",
        ),
    ];
    for (event, data, code) in cases {
        client.fails(event, data, code).await;
    }
    subscribe(&mut client, "c", None).await;
    subscribe(&mut client, "c", Some(0)).await; // again: still three
    let message = client
        .fails("message:subscribe", json!({"channel": "d"}), "FORBIDDEN")
        .await;
    assert!(message.contains('3'), "{message}");
    // Still subscribed to a, b and c, still in the lobby.
    client
        .ok("message:publish", json!({"channel": "b", "payload": "ok"}))
        .await;
    let got = messages(&mut client, 1).await;
    assert_eq!(
        (got[0]["channel"].as_str(), got[0]["seq"].as_u64()),
        (Some("b"), Some(1))
    );
    assert_eq!(host.http().members("lobby").await.len(), 1);
    // HTTP: the same codes with their statuses.
    let http = host.http();
    http.fails(
        "POST",
        "/v1/channels/a/messages",
        Some(json!({"payload": "y".repeat(2000)})),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    http.fails(
        "POST",
        "/v1/channels/a/messages",
        Some(json!({})),
        400,
        "INVALID_PAYLOAD",
    )
    .await;
    http.fails(
        "GET",
        "/v1/channels/a/messages?since=x",
        None,
        400,
        "INVALID_PAYLOAD",
    )
    .await;
    // Unsubscribing frees a place.
    client
        .ok("message:unsubscribe", json!({"channel": "a"}))
        .await;
    subscribe(&mut client, "d", None).await;
}

/// With tokens, the policy decides who subscribes and publishes (DESIGN.md §7), `from` is
/// the token's user, and a refusal changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_subscribe_and_publish() {
    use jsonwebtoken::{EncodingKey, Header};
    const SECRET: &str = "roster-messages-tests-secret-0123456789ab";
    let token = |sub: &str, extra: Value| {
        let mut claims = json!({"sub": sub, "exp": 4_000_000_000u64});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let host = TestHost::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    let connect = |token: String| {
        let url = format!("ws://{}/ws", host.addr);
        async move {
            WsClient::try_connect(&url, &[("authorization", &format!("Bearer {token}"))])
                .await
                .unwrap()
        }
    };
    let mut ada = connect(token("ada", json!({}))).await;
    let mut root = connect(token("root", json!({"role": "admin"}))).await;
    // system:* — anyone subscribes, only admins publish.
    subscribe(&mut ada, "system:status", None).await;
    ada.fails(
        "message:publish",
        json!({"channel": "system:status", "payload": 1}),
        "FORBIDDEN",
    )
    .await;
    root.ok(
        "message:publish",
        json!({"channel": "system:status", "payload": "up"}),
    )
    .await;
    let got = messages(&mut ada, 1).await;
    assert_eq!(got[0]["from"], json!("root"));
    // private:* needs the permission; user:<id> is that user's.
    ada.fails(
        "message:subscribe",
        json!({"channel": "private:ops"}),
        "FORBIDDEN",
    )
    .await;
    ada.fails(
        "message:subscribe",
        json!({"channel": "user:bob"}),
        "FORBIDDEN",
    )
    .await;
    subscribe(&mut ada, "user:ada", None).await;
    ada.fails(
        "message:publish",
        json!({"channel": "user:bob", "payload": 1}),
        "FORBIDDEN",
    )
    .await;
    let mut ops = connect(token(
        "ops",
        json!({"permissions": ["private_channel_access"]}),
    ))
    .await;
    subscribe(&mut ops, "private:ops", None).await;
    // The rooms claim narrows subscribe and publish.
    let mut narrow = connect(token("nel", json!({"rooms": ["game-*"]}))).await;
    subscribe(&mut narrow, "game-1", None).await;
    narrow
        .fails("message:subscribe", json!({"channel": "chat"}), "FORBIDDEN")
        .await;
    narrow
        .fails(
            "message:publish",
            json!({"channel": "chat", "payload": 1}),
            "FORBIDDEN",
        )
        .await;
    // HTTP publish and history follow the same rules; `from` is the token's user.
    let http = host.http().bearer(&token("ada", json!({})));
    http.fails(
        "POST",
        "/v1/channels/system:status/messages",
        Some(json!({"payload": 1})),
        403,
        "FORBIDDEN",
    )
    .await;
    http.fails(
        "GET",
        "/v1/channels/private:ops/messages",
        None,
        403,
        "FORBIDDEN",
    )
    .await;
    http.ok(
        "POST",
        "/v1/channels/user:ada/messages",
        Some(json!({"payload": "note to self"})),
    )
    .await;
    let got = messages(&mut ada, 1).await;
    assert_eq!(
        (got[0]["channel"].as_str(), got[0]["from"].as_str()),
        (Some("user:ada"), Some("ada"))
    );
    host.http()
        .fails(
            "GET",
            "/v1/channels/chat/messages",
            None,
            401,
            "UNAUTHORIZED",
        )
        .await;
}

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

/// Subscribers and publishers on two nodes: 10,000 messages on 10 channels from 4
/// publishers; each subscriber gets every message of its channels exactly once, in seq
/// order, seqs dense from 1.
async fn ordered_across_nodes(redis_url: &str) {
    const CHANNELS: usize = 10;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 2_500;
    let clock = Clock::manual(EPOCH_MS);
    let a = node(redis_url, &clock, |_| {}).await;
    let b = node(redis_url, &clock, |_| {}).await;
    for host in [&a, &b] {
        eventually("the node reaches Redis", || async {
            host.hub.store.ping().await.is_ok()
        })
        .await;
    }
    let channel = |i: usize| format!("ch-{i}");
    let mut subscribers = Vec::new();
    for host in [&a, &b] {
        let mut client = host.connect().await;
        for i in 0..CHANNELS {
            subscribe(&mut client, &channel(i), None).await;
        }
        subscribers.push(client);
    }
    // Subscribers read as the messages come, as clients do (a socket that stops reading is
    // closed as a slow reader).
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let got = messages(&mut client, PUBLISHERS * EACH).await;
                (client, got)
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let url = format!("ws://{}/ws", if p % 2 == 0 { a.addr } else { b.addr });
        tasks.push(tokio::spawn(async move {
            let mut client = WsClient::connect(&url).await;
            for n in 0..EACH {
                let ch = format!("ch-{}", (n + p) % CHANNELS);
                client
                    .ok(
                        "message:publish",
                        json!({"channel": ch, "payload": {"p": p, "n": n}}),
                    )
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for reader in readers {
        let (mut client, got) = reader.await.unwrap();
        let mut per_channel: HashMap<String, Vec<u64>> = HashMap::new();
        for message in &got {
            per_channel
                .entry(message["channel"].as_str().unwrap().to_owned())
                .or_default()
                .push(message["seq"].as_u64().unwrap());
        }
        assert_eq!(per_channel.len(), CHANNELS);
        for (name, seqs) in per_channel {
            let expected: Vec<u64> = (1..=(PUBLISHERS * EACH / CHANNELS) as u64).collect();
            assert_eq!(seqs, expected, "channel {name}");
        }
        client.expect_silence(Duration::from_millis(200)).await;
    }
    // Nothing was dropped between the nodes, and no message was lost to a node.
    for host in [&a, &b] {
        if let roster_host::Backend::Redis(_, feed) = &host.hub.backend {
            assert_eq!(feed.stats.dropped.load(Ordering::Relaxed), 0);
        }
        assert_eq!(host.hub.bus.stats.messages_lost.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_across_nodes_on_redis() {
    let redis = RedisServer::start().await;
    ordered_across_nodes(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_across_nodes_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    ordered_across_nodes(&cluster.url()).await;
}

/// One publish is one round trip to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_one_round_trip() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    // No reaper ticks or lease renewals while counting.
    let host = node(&redis.url(), &clock, |c| c.reaper_interval_ms = 20_000).await;
    eventually("the node reaches Redis", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    let http = host.http();
    http.ok(
        "POST",
        "/v1/channels/c/messages",
        Some(json!({"payload": 0})),
    )
    .await;
    // Let the start-up work (the first reaper tick, the lease) finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let round_trips = || match &host.hub.backend {
        roster_host::Backend::Redis(store, _) => store.stats.round_trips.load(Ordering::Relaxed),
        roster_host::Backend::Memory(_) => panic!("a Redis node"),
    };
    let before = round_trips();
    for n in 0..20 {
        http.ok(
            "POST",
            "/v1/channels/c/messages",
            Some(json!({"payload": n, "id": format!("m{n}")})),
        )
        .await;
    }
    let after = round_trips();
    assert_eq!(after - before, 20, "one round trip per publish");
}

/// Spin publishes and reads history through the same component binaries: a node's
/// subscribers get its messages, in one sequence with the node's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_publishes_to_node_subscribers() {
    use roster_tests::Http;
    use roster_tests::spin::SpinApp;
    let redis = RedisServer::start().await;
    let clock = Clock::manual(EPOCH_MS);
    let host = node(&redis.url(), &clock, |_| {}).await;
    eventually("the node reaches Redis", || async {
        host.hub.store.ping().await.is_ok()
    })
    .await;
    let variables = HashMap::from([("redis_url".to_owned(), redis.url())]);
    let spin = SpinApp::start_at(
        &std::path::PathBuf::from(env!("ROSTER_SPIN_WASM")),
        variables,
        vec![redis.url()],
        EPOCH_MS,
    )
    .await;
    let edge = Http::new(spin.url(""));
    let mut reader = host.connect().await;
    subscribe(&mut reader, "news", None).await;
    for n in 1..=3 {
        let ack = edge
            .ok(
                "POST",
                "/v1/channels/news/messages",
                Some(json!({"payload": {"n": n}, "id": format!("edge-{n}")})),
            )
            .await;
        assert_eq!(ack["seq"], json!(n));
    }
    let again = edge
        .ok(
            "POST",
            "/v1/channels/news/messages",
            Some(json!({"payload": {"n": 1}, "id": "edge-1"})),
        )
        .await;
    assert_eq!(again["seq"], json!(1), "idempotent on Spin too");
    reader
        .ok(
            "message:publish",
            json!({"channel": "news", "payload": "node"}),
        )
        .await;
    let got = messages(&mut reader, 4).await;
    assert_eq!(seqs(&got), vec![1, 2, 3, 4]);
    assert_eq!(got[0]["from"], json!(null));
    assert_eq!(got[0]["payload"], json!({"n": 1}));
    let history = edge
        .ok("GET", "/v1/channels/news/messages?since=2", None)
        .await;
    assert_eq!(history["recovered"], json!(true));
    assert_eq!(seqs(history["messages"].as_array().unwrap()), vec![3, 4]);
    assert_eq!(
        history,
        host.http()
            .ok("GET", "/v1/channels/news/messages?since=2", None)
            .await
    );
    spin.stop().await;
}
