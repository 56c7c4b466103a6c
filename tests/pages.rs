//! The pages the node serves (the demo, the dashboard, their assets and the SDK) and the
//! admin endpoints the dashboard reads: what they return, and that the data stays behind
//! the admin token. The pages themselves are driven in a real browser by `web/test/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use roster_host::config::{Clock, Config};
use roster_tests::{RedisServer, TestHost, eventually};
use serde_json::{Value, json};

const TOKEN: &str = "test-admin-token-0123456789";

async fn admin_host(adjust: impl FnOnce(&mut Config)) -> TestHost {
    TestHost::start_with(|c| {
        c.admin_token = Some(TOKEN.into());
        adjust(c);
    })
    .await
}

async fn get(url: String, etag: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    request.send().await.unwrap()
}

/// `/` and `/dashboard` are HTML kept to their own origin, the SDK and the assets are
/// served with their types, a repeat load with the ETag is a 304, a missing file is the
/// JSON 404, and `ROSTER_DEMO=false` turns off `/` but not the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_are_served_from_the_binary() {
    let host = admin_host(|_| {}).await;
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/dashboard", "text/html; charset=utf-8"),
        ("/sdk/index.js", "text/javascript; charset=utf-8"),
        ("/sdk/transports/ws.js", "text/javascript; charset=utf-8"),
        ("/assets/demo.js", "text/javascript; charset=utf-8"),
        ("/assets/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let response = get(host.url(path), None).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], kind, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        let etag = headers["etag"].to_str().unwrap().to_owned();
        assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
        let again = get(host.url(path), Some(&etag)).await;
        assert_eq!(again.status(), 304, "{path} with its ETag");
    }
    let page = get(host.url("/"), None).await.text().await.unwrap();
    assert!(page.contains("/sdk/index.js") || page.contains("demo.js"));

    for path in ["/assets/nope.js", "/sdk/nope.js", "/assets/../Cargo.toml"] {
        let (status, body) = host.http().send("GET", path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["ok"], json!(false), "{path}");
    }
    let (status, _) = host.http().send("POST", "/dashboard", None).await;
    assert_eq!(status, 405);

    let quiet = admin_host(|c| c.demo = false).await;
    assert_eq!(get(quiet.url("/"), None).await.status(), 404);
    assert_eq!(get(quiet.url("/dashboard"), None).await.status(), 200);
}

/// Without a token configured the dashboard's endpoints refuse everything; with one,
/// a request without it or with a wrong one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_data_needs_the_admin_token() {
    let paths = [
        "/admin/stats",
        "/admin/nodes",
        "/admin/rooms",
        "/admin/rooms/lobby",
    ];
    let open = TestHost::start().await;
    for path in paths {
        open.http().fails("GET", path, None, 403, "FORBIDDEN").await;
    }
    let host = admin_host(|_| {}).await;
    for path in paths {
        host.http()
            .fails("GET", path, None, 401, "UNAUTHORIZED")
            .await;
        host.http()
            .bearer("not-the-token-at-all")
            .fails("GET", path, None, 401, "UNAUTHORIZED")
            .await;
        host.http().bearer(TOKEN).ok("GET", path, None).await;
    }
}

/// The stats count sockets, rooms, requests and their failures by code, and heartbeats;
/// the rooms list and a room's details show what clients made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_sees_what_clients_do() {
    let host = admin_host(|_| {}).await;
    let admin = host.http().bearer(TOKEN);
    let before = admin.ok("GET", "/admin/stats", None).await;
    assert_eq!(before["sockets"], json!(0));
    assert_eq!(before["store"], json!("memory"));
    assert_eq!(before["auth"], json!("open"));

    let mut ada = host.connect().await;
    let (conn_id, epoch, _) = ada.join("standup", "ada", json!({"status": "busy"})).await;
    let mut bob = host.connect().await;
    bob.join("standup", "bob", json!({})).await;
    ada.ok(
        "presence:heartbeat",
        json!({"connId": conn_id, "epoch": epoch}),
    )
    .await;
    ada.fails("presence:join", json!({"roomId": 5}), "INVALID_PAYLOAD")
        .await;
    ada.fails(
        "presence:heartbeat",
        json!({"connId": "no-such-conn", "epoch": 1}),
        "UNKNOWN_CONNECTION",
    )
    .await;
    ada.ok(
        "metadata:set",
        json!({"channelType": "room", "channelName": "standup",
               "items": [{"key": "topic", "value": "Ship it"}]}),
    )
    .await;

    let stats = admin.ok("GET", "/admin/stats", None).await;
    assert_eq!(stats["sockets"], json!(2));
    assert_eq!(stats["rooms"], json!(1));
    let total = stats["requests"]["total"].as_u64().unwrap()
        - before["requests"]["total"].as_u64().unwrap();
    assert_eq!(total, 6, "{stats}");
    assert_eq!(stats["requests"]["errors"]["INVALID_PAYLOAD"], json!(1));
    assert_eq!(stats["requests"]["errors"]["UNKNOWN_CONNECTION"], json!(1));
    assert_eq!(stats["requests"]["errors"]["FORBIDDEN"], json!(0));
    assert_eq!(
        stats["requests"]["errors"].as_object().unwrap().len(),
        12,
        "every code is listed"
    );
    assert!(stats["heartbeats"]["beats"].as_u64().unwrap() >= 1);
    assert!(stats["latency"]["count"].as_u64().unwrap() >= 6, "{stats}");
    assert!(
        stats["latency"]["p99Us"].as_u64().unwrap() >= stats["latency"]["p50Us"].as_u64().unwrap()
    );
    let slots: Vec<&str> = stats["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slot"].as_str().unwrap())
        .collect();
    assert_eq!(slots, ["presence", "metadata", "reaper", "policy"]);
    assert!(stats["components"][0]["calls"].as_u64().unwrap() >= 3);

    let rooms = admin.ok("GET", "/admin/rooms", None).await;
    assert_eq!(
        rooms["rooms"],
        json!([{"roomId": "standup", "sockets": 2, "connections": 2, "users": 2}])
    );
    let room = admin.ok("GET", "/admin/rooms/standup", None).await;
    assert_eq!(room["occupancy"], json!({"connections": 2, "users": 2}));
    let mut users: Vec<&str> = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["ada", "bob"]);
    let ada_state = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["userId"] == "ada")
        .unwrap()["state"]
        .clone();
    assert_eq!(ada_state, json!({"status": "busy"}));
    assert_eq!(room["metadata"]["channelType"], json!("room"));
    assert_eq!(room["metadata"]["items"][0]["key"], json!("topic"));
    assert_eq!(room["metadata"]["items"][0]["value"], json!("Ship it"));
    assert_eq!(room["metadata"]["majorRevision"], json!(1));

    // A room name that needs escaping in the path reads the same room.
    let mut carol = host.connect().await;
    carol.join("team a/b", "carol", json!({})).await;
    let room = admin.ok("GET", "/admin/rooms/team%20a%2Fb", None).await;
    assert_eq!(room["roomId"], json!("team a/b"));
    assert_eq!(room["occupancy"]["connections"], json!(1));

    ada.close().await;
    bob.close().await;
    carol.close().await;
    eventually("the sockets to be gone from the stats", || async {
        admin.ok("GET", "/admin/stats", None).await["sockets"] == json!(0)
    })
    .await;
    let rooms = admin.ok("GET", "/admin/rooms", None).await;
    assert_eq!(rooms["rooms"], json!([]));
}

/// With Redis, `/admin/nodes` lists every node holding a lease, and marks the one asked;
/// a node that started before it could reach Redis is listed as soon as it can (its first
/// renewal is retried within a quarter of a second, not a third of a lease later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_every_node() {
    let redis = RedisServer::start().await;
    let clock = Clock::System;
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b"] {
        let url = redis.url();
        let clock = clock.clone();
        nodes.push(
            admin_host(move |c| {
                c.redis_url = Some(url);
                c.clock = clock;
                c.node_id = Some(id.into());
            })
            .await,
        );
    }
    let admin = nodes[0].http().bearer(TOKEN);
    let listed = |reply: &Value| -> Vec<(String, bool)> {
        let mut listed: Vec<(String, bool)> = reply["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["nodeId"].as_str().unwrap().to_owned(),
                    n["self"].as_bool().unwrap(),
                )
            })
            .collect();
        listed.sort();
        listed
    };
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, reply) = admin.send("GET", "/admin/nodes", None).await;
        last = reply;
        if status == 200 && listed(&last).len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed(&last).len(), 2, "both leases are listed: {last}");
    let reply = admin.ok("GET", "/admin/nodes", None).await;
    assert_eq!(reply["store"], json!("redis"));
    assert_eq!(
        listed(&reply),
        [("node-a".to_owned(), true), ("node-b".to_owned(), false)]
    );
    let now = reply["now"].as_u64().unwrap();
    for node in reply["nodes"].as_array().unwrap() {
        assert!(node["expiresAt"].as_u64().unwrap() > now, "{reply}");
    }
}
