//! Identity and permissions (DESIGN.md §7) on every transport, with tokens signed here by
//! `jsonwebtoken` as a backend would sign them and keys from `tests/fixtures/keys`:
//! - every bad token is refused with `UNAUTHORIZED` on `/ws`, Socket.IO, `/v1` and Spin, and
//!   tokens of every supported algorithm (and of a JWKS, by `kid`) are accepted;
//! - identity is the token's: joins, metadata authors, lock owners, HTTP connection owners;
//! - the default policy's channel rules, narrowed by the `rooms` claim;
//! - refresh, and expiry closing the socket after a normal `leave`;
//! - a swapped policy decides at once without dropping a socket, and a trapping one denies;
//! - the rest of the door: origins, the HTTP rate limit, secrets kept out of `Debug`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roster_host::admin_client::AdminClient;
use roster_host::config::Config;
use roster_tests::spin::SpinApp;
use roster_tests::{
    Ended, Http, RedisServer, SioClient, TestHost, WsClient, eventually, policy_public_only,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "roster-auth-tests-hs-secret-0123456789abcdef";
const ISSUER: &str = "https://auth.roster.test";
const AUDIENCE: &str = "roster";
const ADMIN_TOKEN: &str = "roster-auth-tests-admin-token-0123456789";

// ---------------------------------------------------------------------------------------
// Tokens, as a backend issues them.

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/keys")).join(name)
}

/// Claims of a valid ten-minute token for `sub`, with `extra` merged in (a `null` removes
/// a claim).
fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now_s(),
        "exp": now_s() + 600,
    });
    let object = claims.as_object_mut().unwrap();
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// A token of `claims` signed with `alg` (HMAC with [`SECRET`], else the fixture key of
/// its family), naming `kid` when given.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let pem = |name: &str| std::fs::read(key_file(name)).unwrap();
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(SECRET.as_bytes())
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("ec.key.pem")).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&pem("ec384.key.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("ed25519.key.pem")).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem("rsa.key.pem")).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// An HS256 token for `sub` with `extra` claims.
fn token(sub: &str, extra: Value) -> String {
    sign(Algorithm::HS256, None, &claims(sub, extra))
}

// ---------------------------------------------------------------------------------------
// Hosts and the three ways in.

/// A host verifying HS* tokens with [`SECRET`], [`ISSUER`] and [`AUDIENCE`], then `adjust`.
async fn jwt_host(adjust: impl FnOnce(&mut Config)) -> TestHost {
    TestHost::start_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = Some(AUDIENCE.into());
        adjust(c);
    })
    .await
}

/// `/ws` with the token in `Authorization: Bearer`.
async fn ws(host: &TestHost, token: Option<&str>) -> Result<WsClient, (u16, Value)> {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| vec![("authorization", value)])
        .unwrap_or_default();
    WsClient::try_connect(&format!("ws://{}/ws", host.addr), &headers).await
}

/// `/ws` with the token in `?token=` (what browsers do).
async fn ws_query(host: &TestHost, token: &str) -> Result<WsClient, (u16, Value)> {
    WsClient::try_connect(&format!("ws://{}/ws?token={token}", host.addr), &[]).await
}

/// A `/ws` client that must be let in.
async fn ws_as(host: &TestHost, token: &str) -> WsClient {
    ws(host, Some(token))
        .await
        .unwrap_or_else(|refusal| panic!("the token was refused: {refusal:?}"))
}

/// Socket.IO with the token in the CONNECT packet's `auth: { token }`.
async fn sio(host: &TestHost, token: Option<&str>) -> Result<SioClient, Value> {
    let auth = token.map(|token| json!({ "token": token }));
    SioClient::connect_with(host, "", &[], auth.as_ref()).await
}

/// A refused `/ws` upgrade is 401 with the contract's body; returns the message.
fn assert_unauthorized_upgrade(what: &str, refused: Result<WsClient, (u16, Value)>) -> String {
    let Err((status, body)) = refused else {
        panic!("{what}: /ws let the socket in");
    };
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["ok"], json!(false), "{what}: {body}");
    assert_eq!(
        body["error"]["code"],
        json!("UNAUTHORIZED"),
        "{what}: {body}"
    );
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// A refused Socket.IO connection is a `connect_error` with `data.code`; returns the message.
fn assert_connect_error(what: &str, refused: Result<SioClient, Value>) -> String {
    let Err(error) = refused else {
        panic!("{what}: Socket.IO let the socket in");
    };
    assert_eq!(
        error["data"]["code"],
        json!("UNAUTHORIZED"),
        "{what}: {error}"
    );
    let message = error["data"]["message"].as_str().unwrap().to_owned();
    assert_eq!(error["message"], json!(message), "{what}: {error}");
    message
}

/// A refused `/v1` request is 401 with the contract's body; returns the message.
async fn assert_unauthorized_http(what: &str, http: &Http) -> String {
    let (status, body) = http.send("GET", "/v1/rooms/lobby/occupancy", None).await;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(
        body["error"]["code"],
        json!("UNAUTHORIZED"),
        "{what}: {body}"
    );
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// Every way a token can be bad, with what the refusal must mention.
fn bad_tokens() -> Vec<(&'static str, Option<String>, &'static str)> {
    let other_secret = EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long!!");
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let payload =
        jsonwebtoken::encode(&Header::default(), &claims("ada", json!({})), &other_secret)
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
    vec![
        ("no token", None, "token is required"),
        ("garbage", Some("not-a-jwt".into()), "not a JWT"),
        (
            "alg none",
            Some(format!("{none_header}.{payload}.")),
            "not a JWT",
        ),
        (
            "a wrong signature",
            Some(
                jsonwebtoken::encode(&Header::default(), &claims("ada", json!({})), &other_secret)
                    .unwrap(),
            ),
            "signature",
        ),
        (
            "expired",
            Some(token("ada", json!({"exp": now_s() - 3_600}))),
            "expired",
        ),
        (
            "not yet valid",
            Some(token("ada", json!({"nbf": now_s() + 3_600}))),
            "nbf",
        ),
        (
            "a wrong issuer",
            Some(token("ada", json!({"iss": "https://elsewhere.test"}))),
            "iss",
        ),
        (
            "a wrong audience",
            Some(token("ada", json!({"aud": "someone-else"}))),
            "aud",
        ),
        ("no exp", Some(token("ada", json!({"exp": null}))), "exp"),
        ("no sub", Some(token("ada", json!({"sub": null}))), "sub"),
        (
            "an RS256 token on an HMAC key",
            Some(sign(Algorithm::RS256, None, &claims("ada", json!({})))),
            "algorithm",
        ),
    ]
}

/// Each transport refuses every bad token with `UNAUTHORIZED` and a message saying which
/// check failed (never the key), and lets a good one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_on_every_transport() {
    let host = jwt_host(|_| {}).await;
    for (what, bad, says) in bad_tokens() {
        let bad = bad.as_deref();
        let mut messages = vec![
            assert_unauthorized_upgrade(what, ws(&host, bad).await),
            assert_connect_error(what, sio(&host, bad).await),
        ];
        let http = match bad {
            Some(bad) => host.http().bearer(bad),
            None => host.http(),
        };
        messages.push(assert_unauthorized_http(what, &http).await);
        if let Some(bad) = bad {
            messages.push(assert_unauthorized_upgrade(
                what,
                ws_query(&host, bad).await,
            ));
            messages.push(assert_connect_error(
                what,
                SioClient::connect_with(&host, &format!("&token={bad}"), &[], None).await,
            ));
            let header = format!("Bearer {bad}");
            messages.push(assert_connect_error(
                what,
                SioClient::connect_with(&host, "", &[("authorization", &header)], None).await,
            ));
        }
        for message in messages {
            assert!(
                message.contains(says),
                "{what}: {message:?} should say {says:?}"
            );
            assert!(
                !message.contains(SECRET),
                "{what}: the key leaked: {message}"
            );
        }
    }
    assert!(
        host.hub.socket_count() == 0,
        "no refused socket holds a session"
    );

    // A good token gets in everywhere it may travel.
    let good = token("ada", json!({}));
    ws_as(&host, &good).await;
    ws_query(&host, &good).await.expect("?token= is read");
    sio(&host, Some(&good)).await.expect("auth.token is read");
    SioClient::connect_with(&host, &format!("&token={good}"), &[], None)
        .await
        .expect("the token query parameter is read");
    let header = format!("bearer {good}");
    SioClient::connect_with(&host, "", &[("authorization", &header)], None)
        .await
        .expect("Authorization is read (the scheme in any case)");
    host.http()
        .bearer(&good)
        .ok("GET", "/v1/rooms/lobby/occupancy", None)
        .await;

    // Socket.IO reads auth.token first, then the query, then the header (§7).
    let garbage = "not-a-jwt";
    sio(&host, Some(&good))
        .await
        .map(|_| ())
        .expect("auth.token wins over nothing");
    SioClient::connect_with(
        &host,
        &format!("&token={garbage}"),
        &[],
        Some(&json!({"token": good})),
    )
    .await
    .expect("auth.token wins over the query");
    let header = format!("Bearer {garbage}");
    SioClient::connect_with(
        &host,
        &format!("&token={good}"),
        &[("authorization", &header)],
        None,
    )
    .await
    .expect("the query wins over the header");
    // `/ws` reads the header first.
    let bearer = format!("Bearer {good}");
    WsClient::try_connect(
        &format!("ws://{}/ws?token={garbage}", host.addr),
        &[("authorization", &bearer)],
    )
    .await
    .expect("Authorization wins over ?token=");
}

/// Every algorithm §7 names verifies with its kind of key, and the same token is useless
/// against a key of another kind (no algorithm confusion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_every_algorithm_verify() {
    let cases: [(&str, &[Algorithm]); 5] = [
        ("", &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
        (
            "rsa.pub.pem",
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
            ],
        ),
        ("ec.pub.pem", &[Algorithm::ES256]),
        ("ec384.pub.pem", &[Algorithm::ES384]),
        ("ed25519.pub.pem", &[Algorithm::EdDSA]),
    ];
    for (key, algorithms) in cases {
        let host = jwt_host(|c| {
            if !key.is_empty() {
                c.jwt_secret = None;
                c.jwt_public_key_file = Some(key_file(key));
            }
        })
        .await;
        for alg in algorithms {
            let good = sign(*alg, None, &claims("ada", json!({})));
            let mut client = ws_as(&host, &good).await;
            let ack = client
                .ok("presence:join", json!({"roomId": "lobby", "state": {}}))
                .await;
            assert_eq!(ack["snapshot"][0]["userId"], json!("ada"), "{alg:?}");
            sio(&host, Some(&good)).await.expect("Socket.IO lets it in");
            host.http()
                .bearer(&good)
                .ok("GET", "/v1/rooms/lobby/occupancy", None)
                .await;
        }
        if !key.is_empty() {
            // An HMAC token keyed with the public key's own bytes is refused.
            let pem = std::fs::read(key_file(key)).unwrap();
            let confused = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims("ada", json!({})),
                &EncodingKey::from_secret(&pem),
            )
            .unwrap();
            let message = assert_unauthorized_upgrade(key, ws(&host, Some(&confused)).await);
            assert!(message.contains("algorithm"), "{message}");
        }
        host.stop().await;
    }
}

/// With a JWKS file the token's `kid` picks the key; an unknown or missing `kid`, or a
/// token signed by another key than its `kid` names, is refused on every transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_picks_the_key_by_kid() {
    let host = jwt_host(|c| {
        c.jwt_secret = None;
        c.jwt_jwks_file = Some(key_file("jwks.json"));
    })
    .await;
    for good in [
        sign(Algorithm::RS256, Some("rsa-1"), &claims("ada", json!({}))),
        sign(Algorithm::ES256, Some("ec-1"), &claims("ada", json!({}))),
    ] {
        ws_as(&host, &good).await;
        sio(&host, Some(&good)).await.expect("Socket.IO lets it in");
        host.http()
            .bearer(&good)
            .ok("GET", "/v1/rooms/lobby/occupancy", None)
            .await;
    }
    let refused = [
        (
            "an unknown kid",
            sign(Algorithm::RS256, Some("rsa-2"), &claims("ada", json!({}))),
            "kid",
        ),
        (
            "no kid",
            sign(Algorithm::RS256, None, &claims("ada", json!({}))),
            "kid",
        ),
        (
            "the EC kid on an RSA signature",
            sign(Algorithm::RS256, Some("ec-1"), &claims("ada", json!({}))),
            "algorithm",
        ),
    ];
    for (what, bad, says) in refused {
        let messages = [
            assert_unauthorized_upgrade(what, ws(&host, Some(&bad)).await),
            assert_connect_error(what, sio(&host, Some(&bad)).await),
            assert_unauthorized_http(what, &host.http().bearer(&bad)).await,
        ];
        for message in messages {
            assert!(message.contains(says), "{what}: {message:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Identity.

fn channel(name: &str, extra: Value) -> Value {
    let mut data = json!({"channelType": "room", "channelName": name});
    data.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    data
}

/// The user a join names must be the token's; omitted, it is the token's. A refused join
/// leaves the socket's connection as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_the_tokens_user() {
    let host = jwt_host(|_| {}).await;
    let ada = token("ada", json!({}));
    let mut socket = ws_as(&host, &ada).await;
    let ack = socket
        .ok(
            "presence:join",
            json!({"roomId": "lobby", "state": {"s": 1}}),
        )
        .await;
    assert_eq!(ack["snapshot"][0]["userId"], json!("ada"));
    let message = socket
        .fails(
            "presence:join",
            json!({"roomId": "lobby", "userId": "bob", "state": {}}),
            "FORBIDDEN",
        )
        .await;
    assert!(message.contains("bob"), "{message}");
    let members = host.http().bearer(&ada).members("lobby").await;
    assert_eq!(
        members.len(),
        1,
        "the refused join changed nothing: {members:?}"
    );
    assert_eq!(members[0]["state"], json!({"s": 1}));
    socket
        .ok(
            "presence:join",
            json!({"roomId": "lobby", "userId": "ada", "state": {}}),
        )
        .await;

    let mut sio = sio(&host, Some(&ada)).await.unwrap();
    let ack = sio
        .request("presence:join", json!({"roomId": "lobby", "userId": "bob"}))
        .await;
    assert_eq!(ack["error"]["code"], json!("FORBIDDEN"), "{ack}");
    let ack = sio
        .request("presence:join", json!({"roomId": "lobby"}))
        .await;
    assert!(ack["self"]["connId"].is_string(), "{ack}");

    let http = host.http().bearer(&ada);
    http.fails(
        "POST",
        "/v1/rooms/lobby/connections",
        Some(json!({"userId": "bob"})),
        403,
        "FORBIDDEN",
    )
    .await;
    let joined = http
        .ok("POST", "/v1/rooms/lobby/connections", Some(json!({})))
        .await;
    let conn = joined["self"]["connId"].as_str().unwrap();
    let members = http.members("lobby").await;
    let mine = members.iter().find(|m| m["connId"] == json!(conn)).unwrap();
    assert_eq!(mine["userId"], json!("ada"));

    // An admin may join as anyone.
    let admin = token("root", json!({"role": "admin"}));
    host.http()
        .bearer(&admin)
        .ok(
            "POST",
            "/v1/rooms/lobby/connections",
            Some(json!({"userId": "bob"})),
        )
        .await;
}

/// Metadata authors and lock owners are the token's `sub`; `actorUserId` over HTTP is an
/// admin's alone; a non-admin touches only its own connections over HTTP, an admin any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_users_are_the_tokens() {
    let host = jwt_host(|_| {}).await;
    let (ada, bob, admin) = (
        token("ada", json!({})),
        token("bob", json!({})),
        token("root", json!({"role": "admin"})),
    );
    let mut socket = ws_as(&host, &ada).await;
    let stamped =
        json!({"items": [{"key": "topic", "value": "hi"}], "options": {"addUserId": true}});
    let ack = socket
        .ok("metadata:set", channel("lobby", stamped.clone()))
        .await;
    assert_eq!(ack["items"][0]["authorUid"], json!("ada"), "{ack}");
    // A socket that never joined still acts as its token's user.
    let ack = socket
        .ok(
            "lock:acquire",
            channel("lobby", json!({"lockName": "editor", "ttlMs": 5_000})),
        )
        .await;
    assert_eq!(ack["owner"], json!("ada"), "{ack}");
    let mut bobs = ws_as(&host, &bob).await;
    bobs.fails(
        "lock:release",
        channel("lobby", json!({"lockName": "editor"})),
        "METADATA_LOCK",
    )
    .await;

    let path = "/v1/channels/room/lobby/metadata";
    let http = host.http().bearer(&bob);
    let ack = http.ok("PUT", path, Some(stamped.clone())).await;
    assert_eq!(ack["items"][0]["authorUid"], json!("bob"), "{ack}");
    let mut as_ada = stamped.clone();
    as_ada["actorUserId"] = json!("ada");
    http.fails("PUT", path, Some(as_ada.clone()), 403, "FORBIDDEN")
        .await;
    http.fails(
        "POST",
        "/v1/channels/room/lobby/locks/other",
        Some(json!({"actorUserId": "ada"})),
        403,
        "FORBIDDEN",
    )
    .await;
    let ack = host
        .http()
        .bearer(&admin)
        .ok("PUT", path, Some(as_ada))
        .await;
    assert_eq!(ack["items"][0]["authorUid"], json!("ada"), "{ack}");

    // Connections over HTTP: ada's is ada's.
    let joined = host
        .http()
        .bearer(&ada)
        .ok("POST", "/v1/rooms/lobby/connections", Some(json!({})))
        .await;
    let conn = joined["self"]["connId"].as_str().unwrap().to_owned();
    let beat = format!("/v1/connections/{conn}/heartbeat");
    let gone = format!("/v1/connections/{conn}");
    http.fails("POST", &beat, None, 403, "FORBIDDEN").await;
    http.fails(
        "POST",
        &beat,
        Some(json!({"patchState": {"hacked": true}})),
        403,
        "FORBIDDEN",
    )
    .await;
    http.fails("DELETE", &gone, None, 403, "FORBIDDEN").await;
    let members = http.members("lobby").await;
    assert_eq!(members[0]["state"], json!({}), "bob changed nothing");
    host.http().bearer(&ada).ok("POST", &beat, None).await;
    let root = host.http().bearer(&admin);
    root.ok("POST", &beat, Some(json!({"patchState": {"by": "admin"}})))
        .await;
    root.ok("DELETE", &gone, None).await;
    assert!(http.members("lobby").await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Channel rules.

/// What a principal tries on a name, and whether the default policy allows it.
struct Rule {
    who: &'static str,
    claims: Value,
    name: &'static str,
    join: bool,
    read: bool,
    metadata_read: bool,
    metadata_write: bool,
    lock: bool,
}

fn rules() -> Vec<Rule> {
    let rule = |who, claims, name, join, read, metadata_read, metadata_write, lock| Rule {
        who,
        claims,
        name,
        join,
        read,
        metadata_read,
        metadata_write,
        lock,
    };
    let user = json!({});
    let private = json!({"permissions": ["private_channel_access"]});
    let admin = json!({"role": "admin"});
    let narrowed = json!({"rooms": ["game-42", "team:7:*"]});
    vec![
        rule(
            "ada",
            user.clone(),
            "public:lobby",
            true,
            true,
            true,
            true,
            true,
        ),
        rule("ada", user.clone(), "lobby", true, true, true, true, true),
        rule(
            "ada",
            user.clone(),
            "private:ops",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            private.clone(),
            "private:ops",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "ada",
            user.clone(),
            "user:ada",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "ada",
            user.clone(),
            "user:ada:inbox",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "ada",
            user.clone(),
            "user:bob",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            user.clone(),
            "user:bob:inbox",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            user.clone(),
            "user:adam",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            user.clone(),
            "system:status",
            true,
            true,
            true,
            false,
            false,
        ),
        rule(
            "ada",
            private.clone(),
            "system:status",
            true,
            true,
            true,
            false,
            false,
        ),
        rule(
            "root",
            admin.clone(),
            "system:status",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "root",
            admin.clone(),
            "private:ops",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "root",
            admin.clone(),
            "user:bob",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "ada",
            narrowed.clone(),
            "game-42",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "ada",
            narrowed.clone(),
            "game-43",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            narrowed.clone(),
            "team:7:chat",
            true,
            true,
            true,
            true,
            true,
        ),
        rule(
            "ada",
            narrowed.clone(),
            "team:8:chat",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            narrowed.clone(),
            "public:lobby",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            json!({"rooms": ["private:*"]}),
            "private:ops",
            false,
            false,
            false,
            false,
            false,
        ),
        rule(
            "ada",
            json!({"rooms": ["system:*"]}),
            "system:status",
            true,
            true,
            true,
            false,
            false,
        ),
    ]
}

/// Each outcome must be `ok`, or `FORBIDDEN` when the rule refuses.
fn check(rule: &Rule, what: &str, allowed: bool, ack: &Value) {
    let context = format!("{} {} {what} {}: {ack}", rule.who, rule.claims, rule.name);
    if allowed {
        assert_eq!(ack["ok"], json!(true), "{context}");
    } else {
        assert_eq!(ack["error"]["code"], json!("FORBIDDEN"), "{context}");
    }
}

/// Every rule of §7 for join, room reads, metadata read / write and locks, over `/ws`,
/// Socket.IO and `/v1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_channel_rules() {
    let host = jwt_host(|_| {}).await;
    for (i, rule) in rules().into_iter().enumerate() {
        let token = token(rule.who, rule.claims.clone());
        let mut socket = ws_as(&host, &token).await;
        let room = json!({"roomId": rule.name, "state": {}});
        check(
            &rule,
            "join",
            rule.join,
            &socket.request("presence:join", room.clone()).await,
        );
        check(
            &rule,
            "snapshot",
            rule.read,
            &socket
                .request("presence:snapshot", json!({"roomId": rule.name}))
                .await,
        );
        check(
            &rule,
            "count",
            rule.read,
            &socket
                .request("presence:count", json!({"roomId": rule.name}))
                .await,
        );
        check(
            &rule,
            "metadata:get",
            rule.metadata_read,
            &socket
                .request("metadata:get", channel(rule.name, json!({})))
                .await,
        );
        let items = json!({"items": [{"key": "k", "value": "v"}]});
        for write in ["metadata:set", "metadata:update"] {
            check(
                &rule,
                write,
                rule.metadata_write,
                &socket
                    .request(write, channel(rule.name, items.clone()))
                    .await,
            );
        }
        check(
            &rule,
            "metadata:remove",
            rule.metadata_write,
            &socket
                .request(
                    "metadata:remove",
                    channel(rule.name, json!({"keys": ["k"]})),
                )
                .await,
        );
        for lock in ["lock:acquire", "lock:release"] {
            check(
                &rule,
                lock,
                rule.lock,
                &socket
                    .request(
                        lock,
                        channel(rule.name, json!({"lockName": format!("ws-{i}")})),
                    )
                    .await,
            );
        }
        // The socket is still open and answering after every refusal.
        socket
            .fails(
                "presence:heartbeat",
                json!({"connId": "c-unknown"}),
                "UNKNOWN_CONNECTION",
            )
            .await;

        // Socket.IO takes the same decisions.
        let mut sio = sio(&host, Some(&token)).await.unwrap();
        check(
            &rule,
            "Socket.IO join",
            rule.join,
            &sio.request("presence:join", room).await,
        );
        check(
            &rule,
            "Socket.IO metadata:set",
            rule.metadata_write,
            &sio.request("metadata:set", channel(rule.name, items.clone()))
                .await,
        );

        // And so does HTTP, with 403.
        let http = host.http().bearer(&token);
        let expect = |allowed: bool| if allowed { 200 } else { 403 };
        let calls = [
            (
                "POST",
                format!("/v1/rooms/{}/connections", rule.name),
                Some(json!({})),
                rule.join,
            ),
            (
                "GET",
                format!("/v1/rooms/{}/connections", rule.name),
                None,
                rule.read,
            ),
            (
                "GET",
                format!("/v1/rooms/{}/occupancy", rule.name),
                None,
                rule.read,
            ),
            (
                "GET",
                format!("/v1/channels/room/{}/metadata", rule.name),
                None,
                rule.metadata_read,
            ),
            (
                "PUT",
                format!("/v1/channels/room/{}/metadata", rule.name),
                Some(items.clone()),
                rule.metadata_write,
            ),
            (
                "POST",
                format!("/v1/channels/room/{}/locks/http-{i}", rule.name),
                Some(json!({})),
                rule.lock,
            ),
        ];
        for (method, path, body, allowed) in calls {
            let (status, reply) = http.send(method, &path, body).await;
            assert_eq!(
                status,
                expect(allowed),
                "{} {method} {path}: {reply}",
                rule.who
            );
            check(&rule, &format!("{method} {path}"), allowed, &reply);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Token lifetime.

/// `auth:refresh` replaces a socket's token for the same user (and its expiry); another
/// user's or a bad token is refused and the socket keeps what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_the_user() {
    let host = jwt_host(|c| c.jwt_leeway_ms = 0).await;
    let short = token("ada", json!({"exp": now_s() + 2}));
    let mut socket = ws_as(&host, &short).await;
    let (conn, _, _) = {
        let ack = socket
            .ok(
                "presence:join",
                json!({"roomId": "lobby", "state": {"s": 1}}),
            )
            .await;
        (ack["self"]["connId"].as_str().unwrap().to_owned(), 0, ack)
    };
    let later = now_s() + 600;
    let fresh = token("ada", json!({"exp": later}));
    let ack = socket.ok("auth:refresh", json!({"token": fresh})).await;
    assert_eq!(ack["expiresAt"], json!(later * 1000), "{ack}");

    socket
        .fails(
            "auth:refresh",
            json!({"token": token("bob", json!({}))}),
            "FORBIDDEN",
        )
        .await;
    socket
        .fails(
            "auth:refresh",
            json!({"token": "not-a-jwt"}),
            "UNAUTHORIZED",
        )
        .await;
    socket
        .fails(
            "auth:refresh",
            json!({"token": token("ada", json!({"exp": now_s() - 3_600}))}),
            "UNAUTHORIZED",
        )
        .await;
    socket
        .fails("auth:refresh", json!({}), "INVALID_PAYLOAD")
        .await;

    // Past the first token's expiry the socket is still open and still ada's.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    socket
        .ok("presence:heartbeat", json!({"connId": conn}))
        .await;
    let members = host.http().bearer(&fresh).members("lobby").await;
    assert_eq!(members.len(), 1);

    // Over Socket.IO too.
    let mut sio = sio(&host, Some(&token("ada", json!({"exp": now_s() + 5}))))
        .await
        .unwrap();
    let ack = sio
        .request("auth:refresh", json!({"token": token("ada", json!({}))}))
        .await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    let ack = sio
        .request("auth:refresh", json!({"token": token("bob", json!({}))}))
        .await;
    assert_eq!(ack["error"]["code"], json!("FORBIDDEN"), "{ack}");
}

/// A `/ws` socket whose token expires leaves (the room sees a normal `leave` with the
/// last state) and is closed with 4401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_the_socket_after_a_leave() {
    let host = jwt_host(|c| c.jwt_leeway_ms = 0).await;
    let mut watcher = ws_as(&host, &token("bob", json!({}))).await;
    watcher
        .ok("presence:join", json!({"roomId": "lobby", "state": {}}))
        .await;
    watcher.next_event().await; // bob's own join

    let mut socket = ws_as(&host, &token("ada", json!({"exp": now_s() + 2}))).await;
    socket
        .ok(
            "presence:join",
            json!({"roomId": "lobby", "state": {"s": 1}}),
        )
        .await;
    let join = watcher.next_event().await;
    assert_eq!(
        (join["type"].as_str(), join["userId"].as_str()),
        (Some("join"), Some("ada"))
    );

    let leave = watcher.next_event().await;
    assert_eq!(leave["type"], json!("leave"), "{leave}");
    assert_eq!(leave["userId"], json!("ada"));
    assert_eq!(
        leave["state"],
        json!({"s": 1}),
        "a leave carries the last state"
    );
    match socket.ended().await {
        Ended::Closed(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::from(4401), "{frame:?}");
            assert!(frame.reason.contains("expired"), "{frame:?}");
        }
        other => panic!("expected a 4401 close, got {other:?}"),
    }
}

/// A Socket.IO socket whose token expires leaves, gets `auth:expired`, then a server
/// disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_disconnects_socketio_after_a_leave() {
    let host = jwt_host(|c| c.jwt_leeway_ms = 0).await;
    let mut watcher = ws_as(&host, &token("bob", json!({}))).await;
    watcher
        .ok("presence:join", json!({"roomId": "lobby", "state": {}}))
        .await;
    watcher.next_event().await;

    let mut socket = sio(&host, Some(&token("ada", json!({"exp": now_s() + 2}))))
        .await
        .unwrap();
    let ack = socket
        .request(
            "presence:join",
            json!({"roomId": "lobby", "state": {"s": 1}}),
        )
        .await;
    assert_eq!(ack["ok"], json!(true), "{ack}");
    watcher.next_event().await; // ada's join
    let leave = watcher.next_event().await;
    assert_eq!(
        (leave["type"].as_str(), leave["userId"].as_str()),
        (Some("leave"), Some("ada")),
        "{leave}"
    );
    assert_eq!(leave["state"], json!({"s": 1}));

    let packets = socket.packets_until_end().await;
    let expired = packets
        .iter()
        .position(|p| p.starts_with(r#"42["auth:expired""#))
        .unwrap_or_else(|| panic!("no auth:expired in {packets:?}"));
    let body: Value = serde_json::from_str(&packets[expired][2..]).unwrap();
    assert_eq!(body[1]["code"], json!("UNAUTHORIZED"));
    assert!(
        packets[expired + 1..].iter().any(|p| p == "41"),
        "a server disconnect follows auth:expired: {packets:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Swapping the policy.

/// A different policy swapped in decides the next request, while sockets stay connected
/// and keep their presence; a policy that traps denies; a rollback restores the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_policy_decides_at_once() {
    let host = jwt_host(|c| {
        c.admin_token = Some(ADMIN_TOKEN.into());
        c.swap_guard_min_calls = 1_000;
    })
    .await;
    let admin = AdminClient::new(&host.url(""), ADMIN_TOKEN).unwrap();
    let ada = token("ada", json!({}));
    let mut socket = ws_as(&host, &ada).await;
    let ack = socket
        .ok("presence:join", json!({"roomId": "lobby", "state": {}}))
        .await;
    let conn = ack["self"]["connId"].as_str().unwrap().to_owned();
    socket.next_event().await;

    let fixture = std::fs::read(policy_public_only()).unwrap();
    admin.swap("policy", &fixture).await.unwrap();
    // The same socket: the old room is now refused, public:* allowed, presence kept.
    socket
        .fails(
            "presence:join",
            json!({"roomId": "lobby2", "state": {}}),
            "FORBIDDEN",
        )
        .await;
    socket
        .ok("presence:heartbeat", json!({"connId": conn}))
        .await;
    let members = host.http().bearer(&token("root", json!({"role": "admin"})));
    assert!(
        members
            .send("GET", "/v1/rooms/lobby/connections", None)
            .await
            .0
            == 403,
        "the new policy refuses even admins outside public:*"
    );
    socket
        .ok(
            "presence:join",
            json!({"roomId": "public:lobby", "state": {}}),
        )
        .await;
    socket
        .ok(
            "metadata:set",
            channel(
                "public:lobby",
                json!({"items": [{"key": "a", "value": "1"}]}),
            ),
        )
        .await;

    // A policy that traps fails closed, and the socket survives it.
    let failures_before = policy_failures(&host);
    let message = socket
        .fails(
            "presence:join",
            json!({"roomId": "trap:x", "state": {}}),
            "FORBIDDEN",
        )
        .await;
    assert!(message.contains("did not decide"), "{message}");
    host.http()
        .bearer(&ada)
        .fails("GET", "/v1/rooms/trap:x/occupancy", None, 403, "FORBIDDEN")
        .await;
    assert_eq!(policy_failures(&host), failures_before + 2);
    socket
        .ok("presence:count", json!({"roomId": "public:lobby"}))
        .await;

    admin.rollback("policy").await.unwrap();
    socket
        .ok("presence:join", json!({"roomId": "lobby2", "state": {}}))
        .await;
    assert_eq!(host.hub.socket_count(), 1, "no socket was dropped");
}

fn policy_failures(host: &TestHost) -> u64 {
    host.hub
        .runtime
        .stats()
        .iter()
        .find(|slot| slot.slot == "policy")
        .unwrap()
        .failures
}

fn policy_calls(host: &TestHost) -> u64 {
    host.hub
        .runtime
        .stats()
        .iter()
        .find(|slot| slot.slot == "policy")
        .unwrap()
        .calls
}

/// Heartbeats and leaves ask no policy (the connection was judged when it joined), and in
/// open mode nothing does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_cost_no_policy_call() {
    let host = jwt_host(|_| {}).await;
    let mut socket = ws_as(&host, &token("ada", json!({}))).await;
    let before = policy_calls(&host);
    let ack = socket
        .ok("presence:join", json!({"roomId": "lobby", "state": {}}))
        .await;
    assert_eq!(
        policy_calls(&host),
        before + 1,
        "a join asks the policy once"
    );
    let conn = ack["self"]["connId"].as_str().unwrap().to_owned();
    for i in 0..20 {
        socket
            .ok(
                "presence:heartbeat",
                json!({"connId": conn, "patchState": {"i": i}}),
            )
            .await;
    }
    socket.ok("presence:leave", json!({"connId": conn})).await;
    assert_eq!(
        policy_calls(&host),
        before + 1,
        "heartbeats and leaves ask nothing"
    );

    let open = TestHost::start().await;
    let mut client = open.connect().await;
    client.join("lobby", "ada", json!({})).await;
    assert_eq!(policy_calls(&open), 0, "open mode asks no policy");
}

// ---------------------------------------------------------------------------------------
// The rest of the door.

/// With auth on and no `ROSTER_CORS_ORIGINS`, browser pages of other origins cannot open
/// sockets (pages this host serves can); a listed origin can; non-browser clients send no
/// `Origin` and are judged by their token alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_are_checked_with_auth_on() {
    let good = token("ada", json!({}));
    let bearer = format!("Bearer {good}");
    let host = jwt_host(|_| {}).await;
    let url = format!("ws://{}/ws", host.addr);
    let (status, body) = WsClient::try_connect(
        &url,
        &[
            ("authorization", &bearer),
            ("origin", "https://evil.example"),
        ],
    )
    .await
    .err()
    .expect("a foreign page is refused");
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("FORBIDDEN")),
        "{body}"
    );
    let refused = SioClient::connect_with(
        &host,
        "",
        &[("origin", "https://evil.example")],
        Some(&json!({"token": good})),
    )
    .await
    .err()
    .expect("a foreign page is refused on Socket.IO too");
    assert_eq!(refused["data"]["code"], json!("FORBIDDEN"), "{refused}");
    let own = format!("http://{}", host.addr);
    WsClient::try_connect(&url, &[("authorization", &bearer), ("origin", &own)])
        .await
        .expect("a page this host serves connects");
    WsClient::try_connect(&url, &[("authorization", &bearer)])
        .await
        .expect("no Origin: not a browser");
    // CORS: no Access-Control-Allow-Origin for the foreign page.
    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            host.url("/v1/rooms/lobby/occupancy"),
        )
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        preflight.headers()
    );
    host.stop().await;

    let host = jwt_host(|c| c.cors_origins = Some("https://app.example".into())).await;
    let url = format!("ws://{}/ws", host.addr);
    WsClient::try_connect(
        &url,
        &[
            ("authorization", &bearer),
            ("origin", "https://app.example"),
        ],
    )
    .await
    .expect("a listed origin connects");
    assert_eq!(
        WsClient::try_connect(
            &url,
            &[
                ("authorization", &bearer),
                ("origin", "https://evil.example")
            ],
        )
        .await
        .err()
        .map(|(status, _)| status),
        Some(403)
    );
    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            host.url("/v1/rooms/lobby/occupancy"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://app.example"
    );
    host.stop().await;

    // An unparsable list refuses to start rather than fail open.
    let error = TestHost::try_start(Config {
        jwt_secret: Some(SECRET.into()),
        cors_origins: Some("https://ok.example, bad\norigin".into()),
        ..roster_tests::test_config()
    })
    .await
    .err()
    .expect("the host refuses to start");
    assert!(error.to_string().contains("ROSTER_CORS_ORIGINS"), "{error}");

    // Open mode keeps accepting any page.
    let open = TestHost::start().await;
    WsClient::try_connect(
        &format!("ws://{}/ws", open.addr),
        &[("origin", "https://evil.example")],
    )
    .await
    .expect("open mode checks no origin");
}

/// `/v1` is rate limited per principal: one user past the limit gets 429 `RATE_LIMITED`
/// while another carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_rate_limit_is_per_principal() {
    let host = jwt_host(|c| c.http_rate_limit_per_sec = 2).await;
    let ada = host.http().bearer(&token("ada", json!({})));
    let bob = host.http().bearer(&token("bob", json!({})));
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(ada.send("GET", "/v1/rooms/lobby/occupancy", None).await.0);
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let (_, body) = ada.send("GET", "/v1/rooms/lobby/occupancy", None).await;
    assert_eq!(body["error"]["code"], json!("RATE_LIMITED"), "{body}");
    bob.ok("GET", "/v1/rooms/lobby/occupancy", None).await;
    eventually("ada's budget refills", || {
        let ada = &ada;
        async move { ada.send("GET", "/v1/rooms/lobby/occupancy", None).await.0 == 200 }
    })
    .await;
}

/// Secrets are never printed: not in the configuration's `Debug`, not in `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_secret() {
    let host = jwt_host(|c| {
        c.admin_token = Some(ADMIN_TOKEN.into());
        c.tick_token = Some("roster-auth-tests-tick-token-0123456789".into());
    })
    .await;
    let printed = format!("{:?}", host.hub.config());
    for secret in [
        SECRET,
        ADMIN_TOKEN,
        "roster-auth-tests-tick-token-0123456789",
    ] {
        assert!(!printed.contains(secret), "a secret in Debug: {printed}");
    }
    let (status, ready) = host.http().send("GET", "/readyz", None).await;
    assert_eq!((status, &ready["auth"]), (200, &json!("jwt")), "{ready}");
    let open = TestHost::start().await;
    let (_, ready) = open.http().send("GET", "/readyz", None).await;
    assert_eq!(ready["auth"], json!("open"), "{ready}");
    let (_, metrics) = open.http().send("GET", "/metrics", None).await;
    assert!(
        metrics.as_str().unwrap().contains("roster_auth_open 1"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------
// Spin.

/// The Spin deployment verifies tokens from its variables and applies the same policy:
/// the same refusals, identities and channel rules as a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_is_exactly_as_closed() {
    let redis = RedisServer::start().await;
    let variables = HashMap::from([
        ("redis_url".to_owned(), redis.url()),
        ("jwt_secret".to_owned(), SECRET.to_owned()),
        ("jwt_issuer".to_owned(), ISSUER.to_owned()),
        ("jwt_audience".to_owned(), AUDIENCE.to_owned()),
    ]);
    let app = SpinApp::start(
        &PathBuf::from(env!("ROSTER_SPIN_WASM")),
        variables,
        vec![redis.url()],
    )
    .await;
    let base = app.url("");
    let anonymous = Http::new(base.trim_end_matches('/').to_owned());
    for (what, bad, says) in bad_tokens() {
        let http = match &bad {
            Some(bad) => anonymous.bearer(bad),
            None => anonymous.bearer(""),
        };
        let (status, body) = http.send("GET", "/v1/rooms/lobby/occupancy", None).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(
            body["error"]["code"],
            json!("UNAUTHORIZED"),
            "{what}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        if bad.is_some() {
            assert!(message.contains(says), "{what}: {message}");
        }
    }
    let ada = anonymous.bearer(&token("ada", json!({})));
    ada.fails(
        "POST",
        "/v1/rooms/lobby/connections",
        Some(json!({"userId": "bob"})),
        403,
        "FORBIDDEN",
    )
    .await;
    let joined = ada
        .ok("POST", "/v1/rooms/lobby/connections", Some(json!({})))
        .await;
    assert_eq!(joined["snapshot"][0]["userId"], json!("ada"));
    let conn = joined["self"]["connId"].as_str().unwrap();
    let bob = anonymous.bearer(&token("bob", json!({})));
    bob.fails(
        "DELETE",
        &format!("/v1/connections/{conn}"),
        None,
        403,
        "FORBIDDEN",
    )
    .await;
    bob.fails(
        "POST",
        "/v1/rooms/private:ops/connections",
        Some(json!({})),
        403,
        "FORBIDDEN",
    )
    .await;
    bob.fails(
        "PUT",
        "/v1/channels/room/system:status/metadata",
        Some(json!({"items": []})),
        403,
        "FORBIDDEN",
    )
    .await;
    bob.ok("GET", "/v1/channels/room/system:status/metadata", None)
        .await;
    let narrowed = anonymous.bearer(&token("bob", json!({"rooms": ["game-*"]})));
    narrowed
        .ok("POST", "/v1/rooms/game-1/connections", Some(json!({})))
        .await;
    narrowed
        .fails("GET", "/v1/rooms/lobby/occupancy", None, 403, "FORBIDDEN")
        .await;
    ada.ok("DELETE", &format!("/v1/connections/{conn}"), None)
        .await;
    app.stop().await;
}

/// `docs/openapi.yaml` lists the JWT scheme (or none, for open mode) on every `/v1`
/// operation but the reaper tick, which has its own token.
#[test]
fn the_openapi_document_names_the_jwt_scheme_everywhere() {
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
            .unwrap();
    let mut checked = 0;
    for block in spec.split("\n  /v1/").skip(1) {
        let path = block.lines().next().unwrap();
        let block = block.split("\n  /").next().unwrap();
        let methods = [
            "\n    get:",
            "\n    post:",
            "\n    put:",
            "\n    patch:",
            "\n    delete:",
        ];
        let mut starts: Vec<usize> = methods
            .iter()
            .flat_map(|method| block.match_indices(method).map(|(at, _)| at))
            .collect();
        starts.sort_unstable();
        starts.push(block.len());
        for pair in starts.windows(2) {
            let operation = &block[pair[0]..pair[1]];
            let wanted = if path.starts_with("reaper/tick") {
                "- bearer: []"
            } else {
                "- jwt: []\n        - {}"
            };
            assert!(operation.contains(wanted), "/v1/{path}{operation}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        roster_tests::openapi_operations()
            .iter()
            .filter(|(_, p)| p.starts_with("/v1/"))
            .count()
    );
}
