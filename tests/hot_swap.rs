//! Hot swap and the sandbox: components replaced while clients stay connected, refused
//! when they cannot run, rolled back by the guard rails when they fail, and the admin API
//! that drives it all.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use roster_host::admin_client::{AdminClient, AdminError};
use roster_host::config::Config;
use roster_host::runtime::cache::sha256_hex;
use roster_host::runtime::{Components, SlotName, Source};
use roster_tests::{TestHost, always_trap, chaos_presence, eventually, presence_v1, presence_v2};
use serde_json::{Value, json};

const TOKEN: &str = "test-admin-token-0123456789";

async fn admin_host(adjust: impl FnOnce(&mut Config)) -> (TestHost, AdminClient) {
    let host = TestHost::start_with(|c| {
        c.admin_token = Some(TOKEN.into());
        adjust(c);
    })
    .await;
    let client = AdminClient::new(&host.url(""), TOKEN).unwrap();
    (host, client)
}

fn json_of(reply: &str) -> Value {
    serde_json::from_str(reply).unwrap()
}

async fn components(admin: &AdminClient) -> Value {
    json_of(&admin.list().await.unwrap())
}

async fn presence_info(admin: &AdminClient) -> Value {
    components(admin).await["components"][0].clone()
}

/// Without a token configured the admin API refuses everything; with one, requests without
/// it or with a wrong one are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token() {
    let open = TestHost::start().await;
    for (method, path) in [
        ("GET", "/admin/components"),
        ("PUT", "/admin/components/presence"),
        ("POST", "/admin/components/presence/rollback"),
    ] {
        open.http()
            .fails(method, path, None, 403, "FORBIDDEN")
            .await;
    }

    let (host, admin) = admin_host(|_| {}).await;
    host.http()
        .fails("GET", "/admin/components", None, 401, "UNAUTHORIZED")
        .await;
    let wrong = AdminClient::new(&host.url(""), "not-the-token-at-all").unwrap();
    assert!(matches!(
        wrong.list().await,
        Err(AdminError::Refused { status: 401, .. })
    ));
    let listing = components(&admin).await;
    let slots: Vec<&str> = listing["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slot"].as_str().unwrap())
        .collect();
    assert_eq!(slots, ["presence", "metadata", "reaper", "policy"]);
    let presence = &listing["components"][0];
    assert_eq!(
        presence["current"]["version"],
        json!(sha256_hex(&presence_v1())),
        "the version id is the content hash"
    );
    assert_eq!(presence["current"]["source"], "embedded");
    assert!(presence["current"]["loadedAt"].as_u64().unwrap() > 0);
    assert_eq!(presence["limits"]["instances"], 64);
}

/// Garbage and components of the wrong world are refused with the reason, and the slot
/// keeps serving its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_swaps_keep_the_current_version() {
    let (host, admin) = admin_host(|_| {}).await;
    let before = presence_info(&admin).await["current"]["version"].clone();
    let Err(AdminError::Refused { status, body }) =
        admin.swap("presence", b"\0asm but not really").await
    else {
        panic!("garbage was accepted");
    };
    assert_eq!(status, 400);
    assert!(body.contains("not a valid component"), "{body}");
    let metadata = match Components::embedded().metadata {
        Source::Embedded(bytes) => bytes.to_vec(),
        Source::File(_) => unreachable!(),
    };
    let Err(AdminError::Refused { status, body }) = admin.swap("presence", &metadata).await else {
        panic!("a metadata component was accepted as presence");
    };
    assert_eq!(status, 400);
    assert!(body.contains("does not export"), "{body}");
    let Err(AdminError::Refused { status, .. }) = admin.swap("nonsense", &metadata).await else {
        panic!("an unknown slot was accepted");
    };
    assert_eq!(status, 404);
    let Err(AdminError::Refused { status, .. }) = admin.rollback("presence").await else {
        panic!("a rollback with nothing to restore was accepted");
    };
    assert_eq!(status, 409);
    assert_eq!(presence_info(&admin).await["current"]["version"], before);
    // Uploading the version that serves changes nothing.
    let same = json_of(&admin.swap("presence", &presence_v1()).await.unwrap());
    assert_eq!(same["replaced"], same["version"]);
    let info = presence_info(&admin).await;
    assert!(
        info["previous"].is_null() && info["events"].as_array().unwrap().is_empty(),
        "{info}"
    );
    let mut client = host.connect().await;
    client.join("still", "works", json!({})).await;
}

/// A component that type-checks but traps on every call is swapped in, fails, and the
/// guard rails roll it back by themselves; the admin API says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_always_traps_is_rolled_back() {
    let (host, admin) = admin_host(|c| c.swap_guard_min_calls = 5).await;
    let good = sha256_hex(&presence_v1());
    let swapped = json_of(
        &admin
            .swap("presence", &std::fs::read(always_trap()).unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(swapped["replaced"], json!(good));
    let mut client = host.connect().await;
    let mut failed = 0;
    loop {
        let ack = client
            .request("presence:join", json!({"roomId": "r", "userId": "u"}))
            .await;
        if ack["ok"] == json!(true) {
            break;
        }
        assert_eq!(ack["error"]["code"], "COMPONENT_FAILED", "{ack}");
        failed += 1;
        assert!(failed <= 5, "not rolled back after {failed} failures");
    }
    assert_eq!(failed, 5, "rolled back at the threshold");
    let info = presence_info(&admin).await;
    assert_eq!(info["current"]["version"], json!(good));
    let event = info["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["kind"], "auto-rollback");
    assert!(
        event["detail"]
            .as_str()
            .unwrap()
            .contains("5 of 5 calls failed"),
        "{event}"
    );
}

/// A component whose calls loop until the deadline, or allocate until the memory cap, fail
/// fast and are rolled back too; the slot's own limits apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_and_hoarding_are_stopped_and_rolled_back() {
    let (host, admin) = admin_host(|c| {
        c.presence_deadline_ms = Some(200);
        c.presence_memory_mib = Some(16);
        // Limits that fit the small cap (the host refuses to start otherwise).
        c.max_snapshot_bytes = 1024 * 1024;
        c.heartbeat_batch = 16;
        c.swap_guard_min_calls = 3;
    })
    .await;
    let info = presence_info(&admin).await;
    assert_eq!(
        (
            info["limits"]["deadlineMs"].clone(),
            info["limits"]["memoryMib"].clone()
        ),
        (json!(200), json!(16))
    );
    let chaos = std::fs::read(chaos_presence()).unwrap();
    for user in ["loop", "alloc"] {
        admin.swap("presence", &chaos).await.unwrap();
        let started = Instant::now();
        let joins: Vec<_> = (0..3)
            .map(|i| {
                let host_url = format!("ws://{}/ws", host.addr);
                let user = format!("{user}-{i}");
                tokio::spawn(async move {
                    let mut client = roster_tests::WsClient::connect(&host_url).await;
                    client
                        .request("presence:join", json!({"roomId": "r", "userId": user}))
                        .await
                })
            })
            .collect();
        for join in joins {
            let ack = join.await.unwrap();
            assert_eq!(ack["error"]["code"], "COMPONENT_FAILED", "{user}: {ack}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{user} took {:?}",
            started.elapsed()
        );
        let info = presence_info(&admin).await;
        assert_eq!(
            info["events"].as_array().unwrap().last().unwrap()["kind"],
            "auto-rollback",
            "{user}: {info}"
        );
        assert_eq!(
            info["current"]["version"],
            json!(sha256_hex(&presence_v1()))
        );
    }
}

/// Hundreds of clients heartbeat and patch state while the presence component is swapped
/// to a build with another rule and back, ten times: no disconnect, no failed or lost
/// ack, every update made by exactly one version, and the new rule visible right after
/// each swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load() {
    let (host, admin) = admin_host(|c| c.component_instances = 32).await;
    let v1 = presence_v1();
    let v2 = std::fs::read(presence_v2()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..200 {
        let mut client = host.connect().await;
        let (conn, ..) = client
            .join(&format!("room-{}", i % 40), &format!("u{i}"), json!({}))
            .await;
        let stop = Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            let (mut acks, mut rules) = (0u64, [0u64; 2]);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let ack = client
                    .request(
                        "presence:heartbeat",
                        json!({"connId": conn, "patchState": {"lastRule": "v1", "n": n}}),
                    )
                    .await;
                assert_eq!(
                    ack,
                    json!({"ok": true, "changed": true}),
                    "client {i}, heartbeat {n}"
                );
                acks += 1;
                for event in client.drain_events() {
                    match event["state"]["lastRule"].as_str() {
                        Some("v1") => rules[0] += 1,
                        Some("v2") => rules[1] += 1,
                        _ if event["type"] != "update" => {}
                        other => {
                            panic!("an update made by no version or several: {other:?} in {event}")
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50 + (i % 50))).await;
            }
            // Still connected: one more request answers.
            client
                .ok(
                    "metadata:get",
                    json!({"channelType": "t", "channelName": "n"}),
                )
                .await;
            (acks, rules)
        }));
    }
    let mut probe = host.connect().await;
    let (probe_conn, ..) = probe.join("probe", "probe", json!({})).await;
    let mut n = 0u64;
    let mut swap_times = Vec::new();
    for round in 0..10 {
        for (bytes, rule) in [(&v2, "v2"), (&v1, "v1")] {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let started = Instant::now();
            let swapped = json_of(&admin.swap("presence", bytes).await.unwrap());
            assert_eq!(
                swapped["version"],
                json!(sha256_hex(bytes)),
                "round {round}"
            );
            n += 1;
            probe
                .ok(
                    "presence:heartbeat",
                    json!({"connId": probe_conn, "patchState": {"lastRule": "v1", "n": n}}),
                )
                .await;
            let update = probe
                .next_event_where(|e| e["type"] == "update" && e["connId"] == json!(probe_conn))
                .await;
            swap_times.push(started.elapsed());
            assert_eq!(
                update["state"]["lastRule"], rule,
                "round {round}: the new rule right after the swap"
            );
        }
    }
    assert_eq!(
        host.hub.socket_count(),
        201,
        "nobody was disconnected during the swaps"
    );
    stop.store(true, Ordering::Relaxed);
    let (mut acks, mut rules) = (0u64, [0u64; 2]);
    for worker in workers {
        let (a, r) = worker.await.unwrap();
        acks += a;
        rules[0] += r[0];
        rules[1] += r[1];
    }
    swap_times.sort();
    println!(
        "200 clients, 20 swaps: {acks} heartbeats acked (all ok), updates seen: v1 {} v2 {}; \
         swap (upload to the first heartbeat on the new version): median {:?}, max {:?}",
        rules[0],
        rules[1],
        swap_times[swap_times.len() / 2],
        swap_times.last().unwrap()
    );
    assert!(
        rules[0] > 0 && rules[1] > 0,
        "both versions served the load"
    );
    let info = presence_info(&admin).await;
    assert_eq!(info["current"]["failures"], 0);
}

/// A watched components directory swaps in a changed file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_swaps_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("presence.wasm"), presence_v1()).unwrap();
    let path = dir.path().to_path_buf();
    let host = TestHost::start_with(move |c| {
        c.components_dir = Some(path);
        c.watch_components = true;
    })
    .await;
    let v2 = std::fs::read(presence_v2()).unwrap();
    let staged = dir.path().join("presence.wasm.new");
    std::fs::write(&staged, &v2).unwrap();
    std::fs::rename(&staged, dir.path().join("presence.wasm")).unwrap();
    let expected = sha256_hex(&v2);
    eventually("the changed file to be swapped in", || async {
        host.hub.runtime.current_version(SlotName::Presence) == expected
    })
    .await;
    let mut client = host.connect().await;
    let (_, _, ack) = client.join("watched", "u", json!({"a": 1})).await;
    assert_eq!(
        ack["snapshot"][0]["state"],
        json!({"a": 1, "lastRule": "v2"})
    );
}

/// Compiled components are cached: swapping a version in again, and restarting, load the
/// artifact instead of compiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_path_buf();
    let (_host, admin) = admin_host(move |c| c.cache_dir = Some(dir)).await;
    let v2 = std::fs::read(presence_v2()).unwrap();
    let first = json_of(&admin.swap("presence", &v2).await.unwrap());
    assert_eq!(first["cached"], false);
    admin.rollback("presence").await.unwrap();
    let again = json_of(&admin.swap("presence", &v2).await.unwrap());
    assert_eq!(again["cached"], true);
    println!(
        "swap of a new component: {} ms; of a cached one: {} ms",
        first["swapMs"], again["swapMs"]
    );
    let artifacts = walk(cache.path())
        .into_iter()
        .filter(|p| p.ends_with(".cwasm"))
        .count();
    assert_eq!(
        artifacts, 5,
        "four components at start-up and the swapped one"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path.display().to_string()]
            }
        })
        .collect()
}
