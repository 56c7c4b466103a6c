//! Channel metadata over `/ws`: set / update / remove / get, item and major revisions,
//! stamps, locks, `metadata:event` delivery, and compare-and-set under concurrency.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::time::Duration;

use roster_tests::{EPOCH_MS, TestHost, WsClient};
use serde_json::{Value, json};

fn channel(extra: Value) -> Value {
    let mut data = json!({"channelType": "room", "channelName": "lobby"});
    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
        data.extend(extra.clone());
    }
    data
}

async fn joined(host: &TestHost, user: &str) -> WsClient {
    let mut client = host.connect().await;
    client.join("lobby", user, json!({})).await;
    client
}

/// `set` replaces the whole item set, `get` reads it, and room members get `metadata:event`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_and_events() {
    let host = TestHost::start().await;
    let mut ada = joined(&host, "ada").await;
    let mut bob = joined(&host, "bob").await;
    ada.next_event().await; // bob's join

    let ack = ada
        .ok("metadata:set", channel(json!({"items": [{"key": "topic", "value": "hello"}, {"key": "mode", "value": "quiet"}]})))
        .await;
    assert_eq!(
        ack,
        json!({"ok": true, "items": [
            {"key": "topic", "value": "hello", "revision": 1},
            {"key": "mode", "value": "quiet", "revision": 1},
        ], "majorRevision": 1})
    );
    let event = bob.next_event().await;
    assert_eq!(
        event,
        json!({"event": "metadata:event", "operation": "set", "channelName": "lobby", "channelType": "room",
               "items": ack["items"], "majorRevision": 1})
    );
    assert_eq!(
        ada.next_event().await["operation"],
        "set",
        "the writer is a member too"
    );

    let ack = ada
        .ok(
            "metadata:set",
            channel(json!({"items": [{"key": "topic", "value": "bye"}]})),
        )
        .await;
    assert_eq!(
        ack["items"],
        json!([{"key": "topic", "value": "bye", "revision": 2}]),
        "mode was removed"
    );
    assert_eq!(ack["majorRevision"], 2);
    let got = bob.ok("metadata:get", channel(json!({}))).await;
    assert_eq!(got, ack);
    let empty = bob
        .ok(
            "metadata:get",
            json!({"channelType": "room", "channelName": "nowhere"}),
        )
        .await;
    assert_eq!(empty, json!({"ok": true, "items": [], "majorRevision": 0}));
}

/// `update` changes only the given items, which must exist; the value may be kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_given_items() {
    let host = TestHost::start().await;
    let mut ada = joined(&host, "ada").await;
    ada.ok(
        "metadata:set",
        channel(json!({"items": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]})),
    )
    .await;
    let ack = ada
        .ok(
            "metadata:update",
            channel(json!({"items": [{"key": "b", "value": "3"}, {"key": "a"}]})),
        )
        .await;
    assert_eq!(
        ack["items"],
        json!([{"key": "a", "value": "1", "revision": 2}, {"key": "b", "value": "3", "revision": 2}])
    );
    assert_eq!(ack["majorRevision"], 2);
    ada.next_event().await;
    let event = ada.next_event().await;
    assert_eq!(event["operation"], "update");
    assert_eq!(
        event["items"],
        json!([{"key": "b", "value": "3", "revision": 2}, {"key": "a", "value": "1", "revision": 2}])
    );

    ada.fails(
        "metadata:update",
        channel(json!({"items": [{"key": "zz", "value": "x"}]})),
        "METADATA_INVALID",
    )
    .await;
    ada.fails(
        "metadata:update",
        channel(json!({"items": []})),
        "METADATA_INVALID",
    )
    .await;
    assert_eq!(
        ada.ok("metadata:get", channel(json!({}))).await["majorRevision"],
        2,
        "refusals wrote nothing"
    );
}

/// `remove` drops the given keys or everything; removing nothing writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_given_or_all() {
    let host = TestHost::start().await;
    let mut ada = joined(&host, "ada").await;
    let mut bob = joined(&host, "bob").await;
    ada.ok(
        "metadata:set",
        channel(json!({"items": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"key": "c", "value": "3"}]})),
    )
    .await;
    bob.next_event().await;
    let ack = ada
        .ok("metadata:remove", channel(json!({"items": [{"key": "b"}]})))
        .await;
    assert_eq!(ack["items"].as_array().unwrap().len(), 2);
    assert_eq!(ack["majorRevision"], 2);
    let event = bob.next_event().await;
    assert_eq!(
        (event["operation"].clone(), event["items"].clone()),
        (
            json!("remove"),
            json!([{"key": "b", "value": "2", "revision": 1}])
        )
    );

    let noop = ada
        .ok(
            "metadata:remove",
            channel(json!({"items": [{"key": "nope"}]})),
        )
        .await;
    assert_eq!(noop["majorRevision"], 2, "removing nothing is no write");
    bob.expect_silence(Duration::from_millis(200)).await;

    let all = ada.ok("metadata:remove", channel(json!({}))).await;
    assert_eq!(all, json!({"ok": true, "items": [], "majorRevision": 3}));
    assert_eq!(bob.next_event().await["items"].as_array().unwrap().len(), 2);
}

/// A revision that does not match is METADATA_CONFLICT and writes nothing; -1 skips the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_are_compared() {
    let host = TestHost::start().await;
    let mut ada = joined(&host, "ada").await;
    ada.ok(
        "metadata:set",
        channel(json!({"items": [{"key": "a", "value": "1"}]})),
    )
    .await;
    ada.fails(
        "metadata:update",
        channel(json!({"items": [{"key": "a", "value": "2", "revision": 7}]})),
        "METADATA_CONFLICT",
    )
    .await;
    ada.fails(
        "metadata:set",
        channel(json!({"items": [{"key": "a", "value": "2"}], "options": {"majorRevision": 0}})),
        "METADATA_CONFLICT",
    )
    .await;
    ada.fails(
        "metadata:remove",
        channel(json!({"items": [{"key": "a", "revision": 0}]})),
        "METADATA_CONFLICT",
    )
    .await;
    ada.fails(
        "metadata:set",
        channel(json!({"items": [{"key": "new", "value": "x", "revision": 1}]})),
        "METADATA_CONFLICT",
    )
    .await;
    let got = ada.ok("metadata:get", channel(json!({}))).await;
    assert_eq!(
        got["items"],
        json!([{"key": "a", "value": "1", "revision": 1}])
    );
    assert_eq!(got["majorRevision"], 1);

    ada.ok("metadata:update", channel(json!({"items": [{"key": "a", "value": "2", "revision": 1}], "options": {"majorRevision": 1}}))).await;
    ada.ok("metadata:update", channel(json!({"items": [{"key": "a", "value": "3", "revision": -1}], "options": {"majorRevision": -1}}))).await;
    assert_eq!(
        ada.ok("metadata:get", channel(json!({}))).await["majorRevision"],
        3
    );
}

/// `addTimestamp` stamps the host's time, `addUserId` the user the socket joined as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps() {
    let host = TestHost::start().await;
    let mut ada = joined(&host, "ada").await;
    host.advance(Duration::from_millis(42));
    let ack = ada
        .ok("metadata:set", channel(json!({"items": [{"key": "a", "value": "1"}], "options": {"addTimestamp": true, "addUserId": true}})))
        .await;
    assert_eq!(
        ack["items"],
        json!([{"key": "a", "value": "1", "revision": 1, "updated": EPOCH_MS + 42, "authorUid": "ada"}])
    );
    // A socket cannot act as someone else: actorUserId in a socket payload is ignored.
    let mut bob = joined(&host, "bob").await;
    let ack = bob
        .ok("metadata:update", channel(json!({"items": [{"key": "a", "value": "2"}], "options": {"addUserId": true}, "actorUserId": "ada"})))
        .await;
    assert_eq!(ack["items"][0]["authorUid"], "bob");
    assert_eq!(
        ack["items"][0]["updated"],
        json!(EPOCH_MS + 42),
        "update keeps earlier stamps"
    );
}

/// Locks: one holder at a time, writes naming a lock need it, release by the holder only,
/// expiry frees it, and anonymous sockets cannot lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks() {
    let host = TestHost::start().await;
    let mut ada = joined(&host, "ada").await;
    let mut bob = joined(&host, "bob").await;
    let lock = |extra: Value| {
        let mut data = channel(json!({"lockName": "editor"}));
        if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
            data.extend(extra.clone());
        }
        data
    };
    let ack = ada.ok("lock:acquire", lock(json!({"ttlMs": 5_000}))).await;
    assert_eq!(
        ack,
        json!({"ok": true, "lockName": "editor", "owner": "ada", "expiresAt": EPOCH_MS + 5_000})
    );
    ada.ok("lock:acquire", lock(json!({"ttlMs": 5_000}))).await; // re-entrant: extends
    let message = bob
        .fails("lock:acquire", lock(json!({})), "METADATA_LOCK")
        .await;
    assert!(message.contains("ada"), "{message}");

    let guarded = |value: &str| {
        channel(
            json!({"items": [{"key": "doc", "value": value}], "options": {"lockName": "editor"}}),
        )
    };
    bob.fails("metadata:set", guarded("bob's"), "METADATA_LOCK")
        .await;
    ada.ok("metadata:set", guarded("ada's")).await;
    bob.fails("lock:release", lock(json!({})), "METADATA_LOCK")
        .await;
    ada.ok("lock:release", lock(json!({}))).await;
    ada.fails("metadata:set", guarded("again"), "METADATA_LOCK")
        .await;
    ada.ok("lock:release", lock(json!({}))).await; // releasing a free lock is fine

    bob.ok("lock:acquire", lock(json!({"ttlMs": 1_000}))).await;
    host.advance(Duration::from_millis(1_001));
    ada.ok("lock:acquire", lock(json!({}))).await;

    let mut anonymous = host.connect().await;
    anonymous
        .fails("lock:acquire", lock(json!({})), "UNAUTHORIZED")
        .await;
    ada.fails(
        "lock:acquire",
        lock(json!({"ttlMs": 0})),
        "METADATA_INVALID",
    )
    .await;
}

/// Metadata events go to the room named like the channel, and only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_the_channel_room() {
    let host = TestHost::start().await;
    let mut member = joined(&host, "ada").await;
    let mut outsider = host.connect().await;
    outsider.join("other", "bob", json!({})).await;
    outsider
        .ok("metadata:set", json!({"channelType": "room", "channelName": "lobby", "items": [{"key": "k", "value": "v"}]}))
        .await;
    assert_eq!(member.next_event().await["event"], "metadata:event");
    outsider.expect_silence(Duration::from_millis(200)).await;
}

/// Many writers racing an update with the same expected revision: exactly one wins each
/// round, the rest get METADATA_CONFLICT, and the revision advances by one per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_under_concurrency() {
    let host = TestHost::start().await;
    let mut writers = Vec::new();
    for i in 0..8 {
        writers.push(joined(&host, &format!("w{i}")).await);
    }
    writers[0]
        .ok(
            "metadata:set",
            channel(json!({"items": [{"key": "n", "value": "0"}]})),
        )
        .await;
    for round in 1..=5u64 {
        let tasks: Vec<_> = writers
            .drain(..)
            .enumerate()
            .map(|(i, mut writer)| {
                tokio::spawn(async move {
                    let ack = writer
                        .request(
                            "metadata:update",
                            channel(json!({"items": [{"key": "n", "value": format!("{round}-{i}"), "revision": round}]})),
                        )
                        .await;
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
        let got = writers[0].ok("metadata:get", channel(json!({}))).await;
        assert_eq!(got["items"][0]["revision"], json!(round + 1));
        assert_eq!(got["majorRevision"], json!(round + 1));
    }
}
