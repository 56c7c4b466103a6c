//! The Spin deployment, tested on the exact artifact Spin runs (`target/spin/roster.wasm`,
//! built by this crate's build script as `spin build` builds it), hosted the way Spin hosts
//! it (`roster_tests::spin::SpinApp`) over a real `redis-server`:
//! - the presence, metadata and reaper components inside are the host's, byte for byte;
//! - the HTTP API answers every request of a script exactly as a `roster` node does;
//! - the reaper tick, configuration errors and Redis outages;
//! - a `roster` node and the Spin API on one Redis see each other;
//! - `spin.toml` and the documented cron variant hold together.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use roster_host::runtime::{Components, Source};
use roster_tests::spin::SpinApp;
use roster_tests::{EPOCH_MS, Http, RedisServer, TestHost, WsClient};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOKEN: &str = "tick-secret-for-tests";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn spin_wasm() -> PathBuf {
    PathBuf::from(env!("ROSTER_SPIN_WASM"))
}

/// The Spin component on `redis`, its clock at [`EPOCH_MS`], with `extra` variables.
async fn spin_app(redis: &RedisServer, extra: &[(&str, &str)]) -> SpinApp {
    let mut variables = HashMap::from([
        ("redis_url".to_owned(), redis.url()),
        ("tick_token".to_owned(), TOKEN.to_owned()),
    ]);
    for (name, value) in extra {
        variables.insert((*name).to_owned(), (*value).to_owned());
    }
    SpinApp::start_at(&spin_wasm(), variables, vec![redis.url()], EPOCH_MS).await
}

/// A node on `redis` with the test clock and the same token for its tick route.
async fn node(redis: &RedisServer) -> TestHost {
    let url = redis.url();
    let host = TestHost::start_with(move |c| {
        c.redis_url = Some(url);
        c.tick_token = Some(TOKEN.into());
    })
    .await;
    let http = host.http();
    roster_tests::eventually("the node's Redis is ready", || {
        let http = &http;
        async move { http.send("GET", "/readyz", None).await.0 == 200 }
    })
    .await;
    host
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A component's exports and imports, by name.
fn shape(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
    let ty = component.component_type();
    let names = |items: &mut dyn Iterator<Item = &str>| items.map(str::to_owned).collect();
    (
        names(&mut ty.exports(&engine).map(|(name, _)| name)),
        names(&mut ty.imports(&engine).map(|(name, _)| name)),
    )
}

/// Every nested component of a composed component, at any depth.
fn nested_components(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut nested = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::ComponentSection {
            unchecked_range, ..
        } = payload.unwrap()
        {
            let range = usize::try_from(unchecked_range.start).unwrap()
                ..usize::try_from(unchecked_range.end).unwrap();
            nested.push(bytes[range].to_vec());
        }
    }
    nested
}

/// The presence, metadata and reaper components inside the Spin component are the ones the
/// host embeds, byte for byte; the composition exports the HTTP handler and imports only
/// what Spin provides.
#[test]
fn the_spin_component_embeds_the_hosts_components() {
    let composed = std::fs::read(spin_wasm()).unwrap();
    let inside: HashSet<String> = nested_components(&composed)
        .iter()
        .map(|c| sha256(c))
        .collect();
    let embedded = Components::embedded();
    for (slot, source) in [
        ("presence", embedded.presence),
        ("metadata", embedded.metadata),
        ("reaper", embedded.reaper),
    ] {
        let Source::Embedded(bytes) = source else {
            panic!("the host's {slot} is not embedded");
        };
        assert!(
            inside.contains(&sha256(bytes)),
            "the Spin component holds no byte-identical copy of the host's {slot} component"
        );
    }

    let (exports, imports) = shape(&composed);
    assert_eq!(exports, ["wasi:http/incoming-handler@0.2.0"]);
    for import in imports {
        assert!(
            import.starts_with("wasi:") || import.starts_with("fermyon:spin/"),
            "the Spin component imports {import}, which Spin does not provide"
        );
        if import.starts_with("fermyon:spin/") {
            assert!(
                import.ends_with("@2.0.0"),
                "{import}: Spin 3.x and 4.x give @2.0.0"
            );
        }
    }
}

/// The cron variant's component has the plugin's shape: it exports `handle-cron-event`,
/// imports only what Spin and the plugin give, and holds the host's reaper byte for byte.
#[test]
fn the_cron_component_has_the_plugins_shape() {
    let composed = std::fs::read(env!("ROSTER_SPIN_CRON_WASM")).unwrap();
    let Source::Embedded(reaper) = Components::embedded().reaper else {
        panic!("the host's reaper is not embedded");
    };
    assert!(
        nested_components(&composed)
            .iter()
            .any(|c| sha256(c) == sha256(reaper)),
        "the cron component holds no byte-identical copy of the host's reaper"
    );
    let (exports, imports) = shape(&composed);
    assert_eq!(exports, ["handle-cron-event"]);
    for import in imports {
        assert!(
            import.starts_with("wasi:")
                || import.starts_with("fermyon:spin/")
                || import == "fermyon:spin-cron/cron-types@2.0.0",
            "the cron component imports {import}"
        );
    }
}

/// One run of the cron component removes what went stale, like a tick, and a run against an
/// unreachable Redis reports an error to the plugin rather than trapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_component_reaps() {
    let redis = RedisServer::start().await;
    let app = spin_app(&redis, &[("presence_ttl_ms", "10000")]).await;
    let http = Http::new(app.url(""));
    for user in ["ada", "bob"] {
        http.ok(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": user})),
        )
        .await;
    }
    let cron = PathBuf::from(env!("ROSTER_SPIN_CRON_WASM"));
    let variables = || {
        HashMap::from([
            ("redis_url".to_owned(), redis.url()),
            ("presence_ttl_ms".to_owned(), "10000".to_owned()),
        ])
    };
    roster_tests::spin::run_cron(&cron, variables(), vec![redis.url()], EPOCH_MS + 5_000)
        .await
        .unwrap();
    assert_eq!(http.members("r").await.len(), 2, "nothing was stale yet");
    roster_tests::spin::run_cron(&cron, variables(), vec![redis.url()], EPOCH_MS + 10_001)
        .await
        .unwrap();
    assert!(http.members("r").await.is_empty(), "both went stale");

    let gone = format!("redis://127.0.0.1:{}", roster_tests::free_port(false));
    let down = HashMap::from([("redis_url".to_owned(), gone.clone())]);
    let error = roster_tests::spin::run_cron(&cron, down, vec![gone], EPOCH_MS)
        .await
        .unwrap_err();
    assert!(
        error.contains("store") || error.contains("Redis"),
        "{error}"
    );
}

/// Replaces the connection ids a script met by their names, and puts snapshots in user
/// order (Redis lists a set in no fixed order).
fn normalise(value: &mut Value, ids: &BTreeMap<String, String>) {
    match value {
        Value::String(text) => {
            for (id, name) in ids {
                if text.contains(id.as_str()) {
                    *text = text.replace(id.as_str(), name);
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                normalise(item, ids);
            }
            items.sort_by_key(|item| item["userId"].as_str().unwrap_or_default().to_owned());
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                normalise(item, ids);
            }
        }
        _ => {}
    }
}

/// One request of the parity script: method, path (`{c1}`… stand for connections joined
/// earlier in the script), body, and the name under which to remember a join's connection.
struct Step {
    method: &'static str,
    path: String,
    body: Option<Value>,
    raw: Option<String>,
    remember: Option<&'static str>,
    token: Option<&'static str>,
}

fn step(method: &'static str, path: &str, body: Option<Value>) -> Step {
    Step {
        method,
        path: path.to_owned(),
        body,
        raw: None,
        remember: None,
        token: None,
    }
}

/// The script: presence, metadata, locks, the tick, probes, and bad input of every kind.
fn script() -> Vec<Step> {
    let big_state = "x".repeat(70 * 1024);
    let huge_body = format!(
        r#"{{"userId":"u","state":{{"s":"{}"}}}}"#,
        "y".repeat(300 * 1024)
    );
    vec![
        Step {
            remember: Some("{c1}"),
            ..step(
                "POST",
                "/v1/rooms/lobby/connections",
                Some(json!({"userId": "ada", "state": {"s": 1}})),
            )
        },
        Step {
            remember: Some("{c2}"),
            ..step(
                "POST",
                "/v1/rooms/lobby/connections",
                Some(json!({"userId": "bob"})),
            )
        },
        step("GET", "/v1/rooms/lobby/connections", None),
        step("POST", "/v1/connections/{c1}/heartbeat", None),
        step(
            "POST",
            "/v1/connections/{c1}/heartbeat",
            Some(json!({"patchState": {"s": 2, "t": "x"}})),
        ),
        step(
            "POST",
            "/v1/connections/{c1}/heartbeat",
            Some(json!({"epoch": EPOCH_MS + 1})),
        ),
        step(
            "POST",
            "/v1/connections/{c1}/heartbeat",
            Some(json!({"epoch": EPOCH_MS})),
        ),
        step(
            "POST",
            "/v1/connections/{c1}/heartbeat",
            Some(json!({"patchState": [1]})),
        ),
        step(
            "POST",
            "/v1/connections/{c1}/heartbeat",
            Some(json!({"epoch": "soon"})),
        ),
        step(
            "POST",
            "/v1/connections/00000000000000000000000000000000/heartbeat",
            None,
        ),
        step("POST", "/v1/connections/not-an-id/heartbeat", None),
        Step {
            raw: Some("{not json".into()),
            ..step("POST", "/v1/rooms/lobby/connections", None)
        },
        step(
            "POST",
            "/v1/rooms/lobby/connections",
            Some(json!({"userId": 5})),
        ),
        step("POST", "/v1/rooms/lobby/connections", Some(json!({}))),
        step(
            "POST",
            "/v1/rooms/lobby/connections",
            Some(json!({"userId": "big", "state": {"s": big_state}})),
        ),
        Step {
            raw: Some(huge_body),
            ..step("POST", "/v1/rooms/lobby/connections", None)
        },
        step(
            "POST",
            "/v1/rooms/lobby/connections",
            Some(json!({"userId": "eve", "state": "not an object"})),
        ),
        step("GET", "/v1/rooms/a%20room/connections", None),
        step("GET", "/v1/rooms/lobby/connections", None),
        step(
            "PUT",
            "/v1/channels/doc/lobby/metadata",
            Some(
                json!({"items": [{"key": "topic", "value": "hi"}, {"key": "mode", "value": "a"}],
                        "actorUserId": "ada", "options": {"addUserId": true, "addTimestamp": true}}),
            ),
        ),
        step(
            "PATCH",
            "/v1/channels/doc/lobby/metadata",
            Some(json!({"items": [{"key": "topic", "value": "yo", "revision": 7}]})),
        ),
        step(
            "PATCH",
            "/v1/channels/doc/lobby/metadata",
            Some(
                json!({"items": [{"key": "topic", "value": "yo", "revision": 1}],
                        "options": {"majorRevision": 1}}),
            ),
        ),
        step(
            "PATCH",
            "/v1/channels/doc/lobby/metadata",
            Some(json!({"items": [{"key": "absent", "value": "v"}]})),
        ),
        step("GET", "/v1/channels/doc/lobby/metadata", None),
        step(
            "PUT",
            "/v1/channels/doc/lobby/metadata",
            Some(json!({"items": [{"key": 1}]})),
        ),
        step(
            "POST",
            "/v1/channels/doc/lobby/locks/editor",
            Some(json!({"actorUserId": "ada", "ttlMs": 5000})),
        ),
        step(
            "POST",
            "/v1/channels/doc/lobby/locks/editor",
            Some(json!({"actorUserId": "bob"})),
        ),
        step(
            "PATCH",
            "/v1/channels/doc/lobby/metadata",
            Some(
                json!({"items": [{"key": "mode", "value": "b"}], "actorUserId": "bob",
                        "options": {"lockName": "editor"}}),
            ),
        ),
        step(
            "PATCH",
            "/v1/channels/doc/lobby/metadata",
            Some(
                json!({"items": [{"key": "mode", "value": "b"}], "actorUserId": "ada",
                        "options": {"lockName": "editor"}}),
            ),
        ),
        step(
            "DELETE",
            "/v1/channels/doc/lobby/locks/editor?actorUserId=bob",
            None,
        ),
        step(
            "DELETE",
            "/v1/channels/doc/lobby/locks/editor?actorUserId=ada",
            None,
        ),
        step(
            "DELETE",
            "/v1/channels/doc/lobby/metadata",
            Some(json!({"items": [{"key": "topic"}]})),
        ),
        step("DELETE", "/v1/channels/doc/lobby/metadata", None),
        step("DELETE", "/v1/connections/{c2}", None),
        step("DELETE", "/v1/connections/{c2}", None),
        step("GET", "/v1/rooms/lobby/connections", None),
        step("GET", "/v1/nowhere", None),
        step("PATCH", "/v1/rooms/lobby/connections", None),
        step("GET", "/v1/connections/{c1}/heartbeat", None),
        step("POST", "/v1/reaper/tick", None),
        Step {
            token: Some("wrong"),
            ..step("POST", "/v1/reaper/tick", None)
        },
        Step {
            token: Some(TOKEN),
            ..step("POST", "/v1/reaper/tick", None)
        },
        step("GET", "/healthz", None),
        step("GET", "/readyz", None),
    ]
}

/// Runs the script against `base`; returns each (status, normalised reply).
async fn run_script(base: &str) -> Vec<(String, u16, Value)> {
    let client = reqwest::Client::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut results = Vec::new();
    for step in script() {
        let mut path = step.path.clone();
        for (id, name) in &ids {
            path = path.replace(name.as_str(), id);
        }
        let method = reqwest::Method::from_bytes(step.method.as_bytes()).unwrap();
        let mut request = client.request(method, format!("{base}{path}"));
        if let Some(body) = &step.body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(raw) = &step.raw {
            request = request.body(raw.clone());
        }
        if let Some(token) = step.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let mut reply: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{} {path}: not JSON: {text}", step.method));
        if let Some(name) = step.remember {
            let id = reply["self"]["connId"].as_str().unwrap().to_owned();
            ids.insert(id, name.to_owned());
        }
        // Resume tokens are random: each is 32 hex digits, nothing more to compare.
        if let Some(token) = reply["self"].get_mut("resumeToken") {
            assert_eq!(token.as_str().map(str::len), Some(32), "{token}");
            *token = json!("<resume token>");
        }
        normalise(&mut reply, &ids);
        // The one intended difference: the tick's token is a different setting on each.
        if let Some(message) = reply["error"]["message"].as_str() {
            let named = message
                .replace("ROSTER_TICK_TOKEN", "the token setting")
                .replace("the tick_token variable", "the token setting");
            reply["error"]["message"] = json!(named);
        }
        if let Some(allow) = allow {
            reply["(allow header)"] = json!(allow);
        }
        results.push((format!("{} {}", step.method, step.path), status, reply));
    }
    results
}

/// The Spin API answers the whole script (every route, every error) exactly as a node's
/// `/v1` does: same statuses, same bodies, same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spin_api_answers_like_a_node() {
    let node_redis = RedisServer::start().await;
    let spin_redis = RedisServer::start().await;
    let host = node(&node_redis).await;
    let app = spin_app(&spin_redis, &[]).await;
    let from_node = run_script(&host.url("")).await;
    let from_spin = run_script(&app.url("")).await;
    assert_eq!(from_node.len(), from_spin.len());
    for (node_step, spin_step) in from_node.iter().zip(&from_spin) {
        assert_eq!(node_step, spin_step, "the node and Spin differ");
    }
    // The script exercised what it claims to.
    let statuses: HashSet<u16> = from_spin.iter().map(|(_, status, _)| *status).collect();
    for expected in [200, 400, 401, 404, 405, 409, 413, 423] {
        assert!(
            statuses.contains(&expected),
            "the script never got {expected}"
        );
    }
    let snapshot = &from_spin[2].2["snapshot"];
    assert_eq!(snapshot.as_array().map(Vec::len), Some(2), "{snapshot}");
}

/// The tick removes connections that stopped heart-beating, announces nothing it should
/// not, and needs its token; without a token configured the route is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_tick_removes_stale_connections() {
    let redis = RedisServer::start().await;
    let app = spin_app(&redis, &[("presence_ttl_ms", "10000")]).await;
    let http = Http::new(app.url(""));
    let joined = http
        .ok(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": "ada"})),
        )
        .await;
    let conn = joined["self"]["connId"].as_str().unwrap().to_owned();
    let tick = || {
        let client = reqwest::Client::new();
        let url = app.url("/v1/reaper/tick");
        async move {
            let response = client.post(url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        tick().await,
        json!({"ok": true, "reaped": 0, "orphans": 0, "more": false})
    );
    app.advance(Duration::from_millis(10_001));
    assert_eq!(tick().await["reaped"], json!(1));
    assert!(http.members("r").await.is_empty());
    http.fails(
        "POST",
        &format!("/v1/connections/{conn}/heartbeat"),
        None,
        404,
        "UNKNOWN_CONNECTION",
    )
    .await;
    assert_eq!(tick().await["reaped"], json!(0));
    // Redis was given the script once (after the first EVALSHA met NOSCRIPT); later script
    // batches named it by the adapter's SHA and found it, so that SHA is Redis's own (a
    // wrong one would send every batch whole).
    assert_eq!(redis.calls("eval"), 1);
    assert!(redis.calls("evalsha") >= 2, "{}", redis.calls("evalsha"));

    let closed = spin_app(&redis, &[("tick_token", "")]).await;
    Http::new(closed.url(""))
        .fails("POST", "/v1/reaper/tick", None, 403, "FORBIDDEN")
        .await;
}

/// A Spin deployment nobody schedules still reaps: membership traffic runs the reaper at
/// most every `reaper_interval_ms` across the deployment, so a silent connection is
/// removed (and announced) rather than left to vanish by the store's lookback; with the
/// interval at 0 traffic does not tick. Spin indexes no connection by node (it has no
/// lease, so no node set is ever read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_traffic_runs_the_reaper() {
    for (interval, expected) in [("1", 1), ("0", 2)] {
        let redis = RedisServer::start().await;
        let app = spin_app(
            &redis,
            &[
                ("presence_ttl_ms", "10000"),
                ("reaper_interval_ms", interval),
            ],
        )
        .await;
        let http = Http::new(app.url(""));
        http.ok(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": "silent"})),
        )
        .await;
        app.advance(Duration::from_millis(10_001));
        // The next join is the traffic that ticks (paced ticks mark the store in its time).
        tokio::time::sleep(Duration::from_millis(5)).await;
        http.ok(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": "late"})),
        )
        .await;
        let occupancy = http.ok("GET", "/v1/rooms/r/occupancy", None).await;
        assert_eq!(
            occupancy["connections"],
            json!(expected),
            "reaper_interval_ms = {interval}: {occupancy}"
        );
        assert_eq!(redis.cli(&["KEYS", "roster:v1:*:node:*"]).trim(), "");
    }
}

/// A variable that is not a number names itself; Redis down is STORE_UNAVAILABLE and
/// `/readyz` says so; an address outside `allowed_outbound_hosts` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_outages_are_reported() {
    let redis = RedisServer::start().await;
    let bad = spin_app(&redis, &[("presence_ttl_ms", "thirty")]).await;
    let reply = Http::new(bad.url(""))
        .fails(
            "GET",
            "/v1/rooms/r/connections",
            None,
            500,
            "COMPONENT_FAILED",
        )
        .await;
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("presence_ttl_ms"),
        "{reply}"
    );

    let port = roster_tests::free_port(false);
    let gone = format!("redis://127.0.0.1:{port}");
    let variables = HashMap::from([("redis_url".to_owned(), gone.clone())]);
    let down = SpinApp::start_at(&spin_wasm(), variables, vec![gone], EPOCH_MS).await;
    let http = Http::new(down.url(""));
    http.fails(
        "POST",
        "/v1/rooms/r/connections",
        Some(json!({"userId": "u"})),
        503,
        "STORE_UNAVAILABLE",
    )
    .await;
    let (status, ready) = http.send("GET", "/readyz", None).await;
    assert_eq!((status, &ready["ok"]), (503, &json!(false)), "{ready}");

    let variables = HashMap::from([("redis_url".to_owned(), redis.url())]);
    let other = "redis://127.0.0.2:6379".to_owned();
    let fenced = SpinApp::start_at(&spin_wasm(), variables, vec![other], EPOCH_MS).await;
    Http::new(fenced.url(""))
        .fails(
            "GET",
            "/v1/rooms/r/connections",
            None,
            503,
            "STORE_UNAVAILABLE",
        )
        .await;
}

/// Browsers: every answer carries `Access-Control-Allow-Origin` for allowed origins (all by
/// default), and a preflight names the API's methods and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_follows_cors_origins() {
    let redis = RedisServer::start().await;
    let client = reqwest::Client::new();
    let origin_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let open = spin_app(&redis, &[]).await;
    let response = client
        .get(open.url("/v1/rooms/r/connections"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(origin_of(&response).as_deref(), Some("*"));
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            open.url("/v1/rooms/r/connections"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(origin_of(&preflight).as_deref(), Some("*"));
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );

    let narrow = spin_app(
        &redis,
        &[("cors_origins", "https://a.example, https://b.example")],
    )
    .await;
    for (origin, allowed) in [
        ("https://b.example", Some("https://b.example")),
        ("https://evil.example", None),
    ] {
        let response = client
            .get(narrow.url("/healthz"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(origin_of(&response).as_deref(), allowed, "{origin}");
    }
}

/// `redis_password` reaches a Redis that requires one, while `redis_url` (the allowed
/// outbound host) stays `scheme://host:port`; without it the store is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_authenticates() {
    let redis = RedisServer::start().await;
    redis.cli(&["CONFIG", "SET", "requirepass", "s3cret p@ss"]);
    let with = spin_app(&redis, &[("redis_password", "s3cret p@ss")]).await;
    Http::new(with.url(""))
        .ok(
            "POST",
            "/v1/rooms/r/connections",
            Some(json!({"userId": "ada"})),
        )
        .await;
    let without = spin_app(&redis, &[]).await;
    Http::new(without.url(""))
        .fails(
            "GET",
            "/v1/rooms/r/connections",
            None,
            503,
            "STORE_UNAVAILABLE",
        )
        .await;
}

/// A node and the Spin API on one Redis: a join, an update, a metadata write and a leave
/// made through Spin reach a WebSocket client on the node; the node's client shows in the
/// Spin API's snapshot with its state as it changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_spin_share_one_redis() {
    let redis = RedisServer::start().await;
    let host = node(&redis).await;
    let app = spin_app(&redis, &[]).await;
    let spin = Http::new(app.url(""));

    let mut ws: WsClient = host.connect().await;
    let (node_conn, _, _) = ws.join("mixed", "nina", json!({"at": "node"})).await;

    let joined = spin
        .ok(
            "POST",
            "/v1/rooms/mixed/connections",
            Some(json!({"userId": "sam", "state": {"at": "spin"}})),
        )
        .await;
    let spin_conn = joined["self"]["connId"].as_str().unwrap().to_owned();
    let users: HashSet<&str> = joined["snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["userId"].as_str().unwrap())
        .collect();
    assert_eq!(users, HashSet::from(["nina", "sam"]));
    let nina = joined["snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["userId"] == "nina")
        .unwrap();
    assert_eq!(
        (&nina["connId"], &nina["state"]),
        (&json!(node_conn), &json!({"at": "node"}))
    );

    let event = ws
        .next_event_where(|e| e["event"] == "presence:event" && e["userId"] == "sam")
        .await;
    assert_eq!(event["type"], "join");
    assert_eq!(event["connId"], json!(spin_conn));
    assert_eq!(event["state"], json!({"at": "spin"}));

    spin.ok(
        "POST",
        &format!("/v1/connections/{spin_conn}/heartbeat"),
        Some(json!({"patchState": {"typing": true}})),
    )
    .await;
    let event = ws
        .next_event_where(|e| e["event"] == "presence:event" && e["type"] == "update")
        .await;
    assert_eq!(event["state"], json!({"at": "spin", "typing": true}));

    spin.ok(
        "PUT",
        "/v1/channels/doc/mixed/metadata",
        Some(json!({"items": [{"key": "topic", "value": "launch"}], "actorUserId": "sam"})),
    )
    .await;
    let event = ws
        .next_event_where(|e| e["event"] == "metadata:event")
        .await;
    assert_eq!(
        event,
        json!({"event": "metadata:event", "operation": "set", "channelName": "mixed",
               "channelType": "doc", "items": [{"key": "topic", "value": "launch", "revision": 1}],
               "majorRevision": 1})
    );

    ws.ok(
        "presence:heartbeat",
        json!({"connId": node_conn, "patchState": {"at": "desk"}}),
    )
    .await;
    let members = spin.members("mixed").await;
    let nina = members.iter().find(|c| c["userId"] == "nina").unwrap();
    assert_eq!(nina["state"], json!({"at": "desk"}));

    spin.ok("DELETE", &format!("/v1/connections/{spin_conn}"), None)
        .await;
    let event = ws
        .next_event_where(|e| e["event"] == "presence:event" && e["type"] == "leave")
        .await;
    assert_eq!(event["userId"], "sam");
    assert_eq!(host.http().members("mixed").await.len(), 1);
}

/// A manifest table by dotted path.
fn table<'a>(value: &'a toml::Value, path: &str) -> &'a toml::Value {
    path.split('.').fold(value, |v, key| {
        v.get(key).unwrap_or_else(|| panic!("no {path}"))
    })
}

/// `spin.toml` holds together: version 2, every source built, one HTTP route serving every
/// operation of the OpenAPI file (host-only ones aside), Redis the only outbound host and
/// templated from `redis_url`, every variable a component reads declared, no plugin
/// trigger. The cron variant in docs/spin.md parses and points at a built component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_matches_the_build_and_the_api() {
    let text = std::fs::read_to_string(root().join("spin.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    check_manifest(&manifest, "http");

    let docs = std::fs::read_to_string(root().join("docs/spin.md")).unwrap();
    let variant = docs
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("[[trigger.cron]]"))
        .expect("docs/spin.md shows a cron variant");
    let cron: toml::Value = toml::from_str(variant).unwrap();
    check_manifest(&cron, "cron");
    let cron_trigger = &table(&cron, "trigger")["cron"][0];
    assert!(cron_trigger["cron_expression"].as_str().is_some());

    // The one route serves every documented operation.
    let redis = RedisServer::start().await;
    let app = spin_app(&redis, &[]).await;
    let http = Http::new(app.url(""));
    let operations = roster_tests::openapi_operations_for(true);
    assert!(operations.len() >= 13, "{operations:?}");
    for (method, path) in operations {
        let (status, body) = http
            .send(&method, &roster_tests::concrete_path(&path), None)
            .await;
        let unrouted = body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such route"));
        assert!(
            status != 405 && !unrouted,
            "{method} {path} is documented but Spin does not serve it"
        );
    }
}

fn check_manifest(manifest: &toml::Value, trigger: &str) {
    assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
    let declared: HashSet<&String> = table(manifest, "variables")
        .as_table()
        .unwrap()
        .keys()
        .collect();
    assert!(
        table(manifest, "variables.redis_url")
            .get("required")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false),
        "redis_url must be required"
    );
    let triggers = table(manifest, "trigger").as_table().unwrap();
    assert_eq!(
        triggers.keys().collect::<Vec<_>>(),
        [trigger],
        "triggers other than {trigger}"
    );
    let components = table(manifest, "component").as_table().unwrap();
    for entry in triggers[trigger].as_array().unwrap() {
        let name = entry["component"].as_str().unwrap();
        assert!(components.contains_key(name), "trigger names {name}");
        if trigger == "http" {
            assert_eq!(
                entry["route"].as_str(),
                Some("/..."),
                "one route for the API"
            );
        }
    }
    for (name, component) in components {
        let source = component["source"].as_str().unwrap();
        let path = root().join(source);
        assert!(
            path.is_file(),
            "{name}: {source} is not built (the build script builds it)"
        );
        if trigger == "http" {
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(spin_wasm()).unwrap(),
                "{source} is not the component the tests run"
            );
        }
        assert_eq!(
            component["allowed_outbound_hosts"],
            toml::Value::Array(vec![toml::Value::String("{{ redis_url }}".into())]),
            "{name}: Redis, from redis_url, is the one outbound host"
        );
        let command = component["build"]["command"].as_str().unwrap();
        assert!(command.contains("roster-spin-compose"), "{command}");
        for (variable, value) in component["variables"].as_table().unwrap() {
            let value = value.as_str().unwrap();
            let used = value
                .trim()
                .strip_prefix("{{")
                .and_then(|v| v.strip_suffix("}}"))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{name}.{variable} = {value:?} is not a template"));
            assert!(
                declared.contains(&used.to_owned()),
                "{name}.{variable} uses undeclared {used}"
            );
        }
    }
}

/// Every operation of the table (`wire/ops.rs`) is served on every transport it names:
/// its socket event over `/ws` and Socket.IO, its route on a node's `/v1` and on the Spin
/// API, none of them "no such route" or "wrong method"; and the same bad input gets the
/// same code everywhere (a payload that is an array, or a path segment that is not UTF-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_served_on_every_transport_it_names() {
    use roster_host::protocol::ops::{OPERATIONS, OpId};
    let redis = RedisServer::start().await;
    let spin = spin_app(&redis, &[]).await;
    let node = node(&redis).await;
    let mut ws = node.connect().await;
    let mut sio = roster_tests::SioClient::connect(&node).await.unwrap();
    let mut served = 0;
    for op in &OPERATIONS {
        let expected = roster_host::protocol::code_name(op.invalid);
        if let Some(event) = op.event {
            // `presence:leave` takes no data: on a socket without a connection it says so.
            let expected = if op.id == OpId::Leave {
                "UNKNOWN_CONNECTION"
            } else {
                expected
            };
            let ack = ws.request(event, json!([1])).await;
            assert_eq!(ack["error"]["code"], json!(expected), "/ws {event}: {ack}");
            let ack = sio.request(event, json!([1])).await;
            assert_eq!(
                ack["error"]["code"],
                json!(expected),
                "Socket.IO {event}: {ack}"
            );
            served += 1;
        }
        let Some(route) = op.http else { continue };
        // A body that is an array where the route takes a body; a path parameter that is
        // not UTF-8 where it takes none; the tick without its token.
        let takes_body = matches!(route.method, "POST" | "PUT" | "PATCH");
        let path = if takes_body {
            roster_tests::concrete_path(route.path)
        } else {
            route
                .path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "%FF"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        let body = takes_body.then(|| json!([1]));
        let (node_status, node_reply) = node.http().send(route.method, &path, body.clone()).await;
        let (spin_status, spin_reply) = Http::new(spin.url(""))
            .send(route.method, &path, body)
            .await;
        let expected = match op.id {
            OpId::ReaperTick => "UNAUTHORIZED",
            // No parameter: the array body reaches the decoder.
            _ => expected,
        };
        for (who, status, reply) in [
            ("node", node_status, &node_reply),
            ("Spin", spin_status, &spin_reply),
        ] {
            assert!(
                status != 404 && status != 405,
                "{who} does not serve {} {}: {reply}",
                route.method,
                route.path
            );
            assert_eq!(
                reply["error"]["code"],
                json!(expected),
                "{who} {} {path}: {reply}",
                route.method
            );
        }
        assert_eq!(node_status, spin_status, "{} {}", route.method, route.path);
        if op.id != OpId::ReaperTick {
            // (The tick's message names each deployment's own token setting.)
            assert_eq!(node_reply, spin_reply, "{} {}", route.method, route.path);
        }
        served += 1;
    }
    let named: usize = OPERATIONS
        .iter()
        .map(|op| usize::from(op.event.is_some()) + usize::from(op.http.is_some()))
        .sum();
    assert_eq!(
        served, named,
        "every event and route of the table was tried"
    );
    assert!(named >= 29, "the table lost operations: {named}");
}
