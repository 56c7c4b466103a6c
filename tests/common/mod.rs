//! Helpers shared by Roster's end-to-end tests: a real host in-process on `127.0.0.1:0`
//! ([`TestHost`]), a real WebSocket client speaking the `/ws` protocol ([`WsClient`]), and
//! an HTTP client for `/v1` ([`Http`]). Everything cleans up on drop.
//!
//! Tests drive time with the host's manual clock ([`TestHost::advance`]) instead of
//! sleeping through TTLs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

pub mod spin;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roster_host::config::{Clock, Config};
use roster_host::hub::Hub;
use roster_host::runtime::{Components, Source};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Where the manual clock of every test host starts (2023-11-14).
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// The chaos fixture (see `tests/fixtures/chaos-presence`).
pub fn chaos_presence() -> PathBuf {
    PathBuf::from(env!("ROSTER_FIXTURE_CHAOS_PRESENCE"))
}

/// The presence component built into the host.
pub fn presence_v1() -> Vec<u8> {
    match Components::embedded().presence {
        Source::Embedded(bytes) => bytes.to_vec(),
        Source::File(path) => std::fs::read(path).expect("the presence component reads"),
    }
}

/// The presence component with a visibly different rule (`tests/fixtures/presence-v2`).
pub fn presence_v2() -> PathBuf {
    PathBuf::from(env!("ROSTER_FIXTURE_PRESENCE_V2"))
}

/// A presence component that traps on every call (`tests/fixtures/always-trap`).
pub fn always_trap() -> PathBuf {
    PathBuf::from(env!("ROSTER_FIXTURE_ALWAYS_TRAP"))
}

/// A policy that lets verified users touch only `public:*` names and traps on `trap:*`
/// names (`tests/fixtures/policy-public-only`).
pub fn policy_public_only() -> PathBuf {
    PathBuf::from(env!("ROSTER_FIXTURE_POLICY_PUBLIC_ONLY"))
}

/// The configuration tests start from: a manual clock, a fast reaper, no rate limit, no
/// resume grace, and node leases longer than any clock jump a test makes (a lease is judged by the clock;
/// tests of node death set their own short lease on the real clock).
pub fn test_config() -> Config {
    Config {
        port: 0,
        clock: Clock::manual(EPOCH_MS),
        reaper_interval_ms: 20,
        rate_limit_per_sec: 0,
        node_lease_ms: 3_600_000,
        // A dropped socket leaves at once, as before resume existed; the resume tests
        // (tests/resume.rs) turn the grace on.
        resume_grace_ms: 0,
        ..Config::default()
    }
}

/// A host running in-process; stopped (gracefully) on drop.
pub struct TestHost {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state, for assertions on what the server holds.
    pub hub: Arc<Hub>,
    /// Its clock.
    pub clock: Clock,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), roster_host::Error>>>,
}

impl TestHost {
    /// A host with [`test_config`].
    pub async fn start() -> TestHost {
        TestHost::start_with(|_| {}).await
    }

    /// A host with [`test_config`] changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestHost {
        let mut config = test_config();
        adjust(&mut config);
        TestHost::try_start(config).await.expect("the host starts")
    }

    /// A host with exactly `config`, or why it did not start.
    pub async fn try_start(config: Config) -> Result<TestHost, roster_host::Error> {
        let clock = config.clock.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let node = roster_host::start(config).await?;
        let hub = Arc::clone(&node.hub);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(TestHost {
            addr,
            hub,
            clock,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Sockets this node has closed as slow readers.
    pub fn slow_readers(&self) -> u64 {
        self.hub
            .bus
            .stats
            .slow_readers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves the host's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The host's `now`.
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A WebSocket client on `/ws`.
    pub async fn connect(&self) -> WsClient {
        WsClient::connect(&format!("ws://{}/ws", self.addr)).await
    }

    /// An HTTP client for `/v1`.
    pub fn http(&self) -> Http {
        Http::new(self.url(""))
    }

    /// Shuts the host down gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the host stops in time")
                .expect("the host task")
                .expect("the host stops cleanly");
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A `/ws` client: sends requests with ids, matches replies, and buffers pushed events.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: VecDeque<Value>,
}

/// How a socket ended.
#[derive(Debug)]
pub enum Ended {
    /// A Close frame arrived (if the server sent one) and then the stream ended.
    Closed(Option<CloseFrame>),
    /// The connection broke without a Close frame.
    Broken(String),
}

impl WsClient {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> WsClient {
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("the WebSocket handshake succeeds");
        WsClient {
            socket,
            next_id: 1,
            events: VecDeque::new(),
        }
    }

    /// Connects with `headers` (e.g. `Authorization`, `Origin`) added to the upgrade
    /// request; a refused upgrade is `Err((status, body))`, the body parsed as JSON when it is.
    pub async fn try_connect(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, (u16, Value)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
        {
            Ok((socket, _)) => Ok(WsClient {
                socket,
                next_id: 1,
                events: VecDeque::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .map(|bytes| {
                        serde_json::from_slice(bytes).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(bytes).into())
                        })
                    })
                    .unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(other) => panic!("the WebSocket handshake failed without a response: {other}"),
        }
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket
            .send(Message::text(text.into()))
            .await
            .expect("send a frame");
    }

    /// Sends a frame.
    pub async fn send(&mut self, message: Message) {
        self.socket.send(message).await.expect("send a frame");
    }

    /// The next JSON frame, whatever it is.
    async fn next_frame(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame arrives in time")
                .expect("the socket is open")
                .expect("the frame reads");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("frames are JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next reply (a frame with an `ack`), buffering events that arrive before it.
    pub async fn next_reply(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame.get("ack").is_some() {
                return frame;
            }
            self.events.push_back(frame);
        }
    }

    /// Sends `event` with `data` and returns its ack.
    pub async fn request(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(json!({"id": id, "event": event, "data": data}).to_string())
            .await;
        let reply = self.next_reply().await;
        assert_eq!(
            reply["id"],
            json!(id),
            "replies come back in order: {reply}"
        );
        reply["ack"].clone()
    }

    /// Like [`Self::request`], asserting `ok: true`.
    pub async fn ok(&mut self, event: &str, data: Value) -> Value {
        let ack = self.request(event, data.clone()).await;
        assert_eq!(ack["ok"], json!(true), "{event} {data} failed: {ack}");
        ack
    }

    /// Like [`Self::request`], asserting the error code and returning the message.
    pub async fn fails(&mut self, event: &str, data: Value, code: &str) -> String {
        let ack = self.request(event, data.clone()).await;
        assert_eq!(
            ack["ok"],
            json!(false),
            "{event} {data} should fail with {code}: {ack}"
        );
        assert_eq!(ack["error"]["code"], json!(code), "{event} {data}: {ack}");
        ack["error"]["message"]
            .as_str()
            .expect("errors have a message")
            .to_owned()
    }

    /// Joins `room` as `user` with `state`; returns (connId, epoch, ack).
    pub async fn join(&mut self, room: &str, user: &str, state: Value) -> (String, u64, Value) {
        let ack = self
            .ok(
                "presence:join",
                json!({"roomId": room, "userId": user, "state": state}),
            )
            .await;
        let conn_id = ack["self"]["connId"].as_str().expect("connId").to_owned();
        let epoch = ack["self"]["epoch"].as_u64().expect("epoch");
        // The joiner sees its own join event; take it so tests see only what follows.
        let own = self
            .next_event_where(|e| e["connId"] == json!(conn_id))
            .await;
        assert_eq!(own["type"], "join");
        (conn_id, epoch, ack)
    }

    /// The next pushed event: `data` of `{"event": ..., "data": ...}`, with the event name
    /// under `"event"` added to it.
    pub async fn next_event(&mut self) -> Value {
        let frame = match self.events.pop_front() {
            Some(frame) => frame,
            None => {
                let frame = self.next_frame().await;
                assert!(
                    frame.get("ack").is_none(),
                    "a reply arrived while waiting for an event: {frame}"
                );
                frame
            }
        };
        let mut data = frame["data"].clone();
        data["event"] = frame["event"].clone();
        data
    }

    /// Takes the events buffered so far (pushed while waiting for replies).
    pub fn drain_events(&mut self) -> Vec<Value> {
        self.events
            .drain(..)
            .map(|frame| {
                let mut data = frame["data"].clone();
                data["event"] = frame["event"].clone();
                data
            })
            .collect()
    }

    /// Skips events until one matches.
    pub async fn next_event_where(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let event = self.next_event().await;
            if matches(&event) {
                return event;
            }
        }
    }

    /// Asserts that no event arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        if let Some(frame) = self.events.pop_front() {
            panic!("expected no event, got {frame}");
        }
        match tokio::time::timeout(window, self.socket.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected no event, got {other:?}"),
        }
    }

    /// Reads until the socket ends; how it ended.
    pub async fn ended(&mut self) -> Ended {
        let mut close = None;
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Err(_) => panic!("the socket did not end within {WAIT:?}"),
                Ok(None) => return Ended::Closed(close),
                Ok(Some(Err(error))) => {
                    return match close {
                        Some(frame) => Ended::Closed(Some(frame)),
                        None => Ended::Broken(error.to_string()),
                    };
                }
                Ok(Some(Ok(Message::Close(frame)))) => close = frame,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Closes the socket from the client side, like a browser tab going away.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.socket.next()).await {}
    }

    /// Drops the TCP connection without a Close frame, like a crashed client.
    pub fn drop_connection(self) {
        drop(self);
    }
}

/// An HTTP client for the `/v1` API.
pub struct Http {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Http {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: String) -> Http {
        Http {
            base,
            client: reqwest::Client::new(),
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>` with every request.
    pub fn bearer(&self, token: &str) -> Http {
        Http {
            base: self.base.clone(),
            client: self.client.clone(),
            token: Some(token.to_owned()),
        }
    }

    /// Sends `method path` with an optional JSON body; returns (status, body).
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("the response arrives in time")
            .expect("the request succeeds");
        let status = response.status().as_u16();
        let text = response.text().await.expect("the body reads");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// The snapshot of `room` (`GET /v1/rooms/{room}/connections`).
    pub async fn members(&self, room: &str) -> Vec<Value> {
        let reply = self
            .ok("GET", &format!("/v1/rooms/{room}/connections"), None)
            .await;
        reply["snapshot"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no snapshot array: {reply}"))
    }

    /// Like [`Self::send`], asserting 200 and `ok: true`.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, reply) = self.send(method, path, body).await;
        assert_eq!(
            (status, &reply["ok"]),
            (200, &json!(true)),
            "{method} {path}: {reply}"
        );
        reply
    }

    /// Like [`Self::send`], asserting the status and error code.
    pub async fn fails(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        code: &str,
    ) -> Value {
        let (got, reply) = self.send(method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {reply}");
        assert_eq!(reply["ok"], json!(false), "{method} {path}: {reply}");
        assert_eq!(
            reply["error"]["code"],
            json!(code),
            "{method} {path}: {reply}"
        );
        reply
    }
}

/// The operations `docs/openapi.yaml` documents, as (method, path template), in order.
/// Operations marked `x-roster-host-only: true` are left out when `spin` is set.
pub fn openapi_operations_for(spin: bool) -> Vec<(String, String)> {
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
            .unwrap();
    let paths = spec
        .split("\npaths:\n")
        .nth(1)
        .unwrap()
        .split("\ncomponents:\n")
        .next()
        .unwrap();
    let mut operations: Vec<(String, String)> = Vec::new();
    let mut current = None;
    for line in paths.lines() {
        if let Some(path) = line
            .strip_prefix("  /")
            .and_then(|rest| rest.strip_suffix(':'))
        {
            current = Some(format!("/{path}"));
        } else if let Some(method) = ["get", "post", "put", "patch", "delete"]
            .iter()
            .find(|method| line == format!("    {method}:"))
        {
            operations.push((method.to_uppercase(), current.clone().unwrap()));
        } else if spin && line.trim() == "x-roster-host-only: true" {
            operations.pop();
        }
    }
    operations
}

/// Every operation of `docs/openapi.yaml` (see [`openapi_operations_for`]).
pub fn openapi_operations() -> Vec<(String, String)> {
    openapi_operations_for(false)
}

/// A documented path with `x` for each parameter.
pub fn concrete_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Polls `check` until it holds (or fails the test after [`WAIT`]).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A minimal Socket.IO v4 client over a raw WebSocket (Engine.IO v4 framing), for what the
/// Node suite cannot drive: exact packet timing, raw packets, and the server's internals.
pub struct SioClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ack: u64,
    /// Acks that arrived while waiting for another: ack id -> payload.
    acks: std::collections::HashMap<u64, Value>,
    /// Events that arrived while waiting for an ack: (name, data).
    pub events: VecDeque<(String, Value)>,
}

impl SioClient {
    /// Opens the Engine.IO session and connects to the `/` namespace; `Err` carries the
    /// message of a `connect_error`.
    pub async fn connect(host: &TestHost) -> Result<SioClient, String> {
        SioClient::connect_with(host, "", &[], None)
            .await
            .map_err(|error| error["message"].as_str().unwrap_or_default().to_owned())
    }

    /// Opens the Engine.IO session with `query` appended to the handshake URL (`&token=...`)
    /// and `headers` on the upgrade request, and connects to `/` with `auth` as the CONNECT
    /// payload; `Err` carries the whole `connect_error` payload (`{message, data}`).
    pub async fn connect_with(
        host: &TestHost,
        query: &str,
        headers: &[(&str, &str)],
        auth: Option<&Value>,
    ) -> Result<SioClient, Value> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket{query}",
            host.addr
        );
        let mut request = url.into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("the Engine.IO handshake succeeds");
        let mut client = SioClient {
            socket,
            next_ack: 1,
            acks: std::collections::HashMap::new(),
            events: VecDeque::new(),
        };
        let open = client.next_text().await;
        assert!(
            open.starts_with('0'),
            "expected an Engine.IO open packet, got {open}"
        );
        match auth {
            Some(auth) => client.send_raw(&format!("40{auth}")).await,
            None => client.send_raw("40").await,
        }
        let connect = client.next_text().await;
        if let Some(error) = connect.strip_prefix("44") {
            return Err(serde_json::from_str(error).expect("connect_error is JSON"));
        }
        assert!(connect.starts_with("40"), "expected CONNECT, got {connect}");
        Ok(client)
    }

    /// The next event named `name`, buffering others; panics if the session ends first.
    pub async fn next_event(&mut self, name: &str) -> Value {
        loop {
            if let Some(at) = self.events.iter().position(|(n, _)| n == name) {
                return self.events.remove(at).map(|(_, data)| data).expect("found");
            }
            self.read_one().await;
        }
    }

    /// Sends one Engine.IO message as is (`42...` is a Socket.IO event).
    pub async fn send_raw(&mut self, text: &str) {
        self.socket
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    async fn next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a packet arrives in time")
                .expect("the socket is open")
                .expect("the packet reads");
            match message {
                // Engine.IO ping: answer with pong.
                Message::Text(text) if text.as_str() == "2" => self.send_raw("3").await,
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Emits `event` with `data` and an ack id, without waiting; returns the id.
    pub async fn emit(&mut self, event: &str, data: &Value) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send_raw(&format!("42{id}{}", json!([event, data])))
            .await;
        id
    }

    /// The ack for `id`, buffering what arrives before it.
    pub async fn ack(&mut self, id: u64) -> Value {
        loop {
            if let Some(ack) = self.acks.remove(&id) {
                return ack;
            }
            self.read_one().await;
        }
    }

    /// Reads one packet: an ack or an event is buffered; a close panics.
    async fn read_one(&mut self) {
        let text = self.next_text().await;
        if let Some(rest) = text.strip_prefix("43") {
            let split = rest.find('[').expect("an ack has arguments");
            let ack_id: u64 = rest[..split].parse().expect("an ack id");
            let mut arguments: Vec<Value> = serde_json::from_str(&rest[split..]).expect("ack JSON");
            self.acks.insert(ack_id, arguments.remove(0));
        } else if let Some(rest) = text.strip_prefix("42") {
            let mut arguments: Vec<Value> = serde_json::from_str(rest).expect("event JSON");
            let data = arguments.pop().expect("event data");
            let name = arguments
                .pop()
                .and_then(|n| n.as_str().map(str::to_owned))
                .expect("event name");
            self.events.push_back((name, data));
        } else if text.starts_with('1') || text.starts_with("41") {
            panic!("the server closed the session: {text}");
        }
    }

    /// Emits and waits for the ack.
    pub async fn request(&mut self, event: &str, data: Value) -> Value {
        let id = self.emit(event, &data).await;
        self.ack(id).await
    }

    /// Every text packet until the transport ends (answering pings), in order.
    pub async fn packets_until_end(&mut self) -> Vec<String> {
        let mut packets = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Err(_) => {
                    panic!("the Socket.IO transport did not end within {WAIT:?}: {packets:?}")
                }
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return packets,
                Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "2" => {
                    let _ = self.socket.send(Message::text("3")).await;
                }
                Ok(Some(Ok(Message::Text(text)))) => packets.push(text.to_string()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Reads until the transport ends.
    pub async fn ended(&mut self) {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await {
                Err(_) => panic!("the Socket.IO transport did not end within {WAIT:?}"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// A real `redis-server` on a free port, for this test only; killed on drop.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<std::process::Child>,
    extra: Vec<String>,
    /// With TLS: the CA certificate (PEM) that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
}

/// A free TCP port on loopback (and, with `cluster_bus`, its +10000 cluster-bus port too).
pub fn free_port(cluster_bus: bool) -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if !cluster_bus {
            return port;
        }
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// Starts a standalone server without persistence.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// Starts a server with extra `redis-server` arguments.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(extra.contains(&"--cluster-enabled")),
            dir: tempfile::tempdir().expect("a temp dir"),
            process: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            ca_file: None,
        };
        server.spawn().await;
        server
    }

    /// Starts a server that speaks only TLS, with a certificate for 127.0.0.1 signed by a CA
    /// made for this test (its PEM is [`RedisServer::ca_file`]).
    pub async fn start_tls() -> RedisServer {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "roster test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().expect("a server key");
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .expect("the server certificate");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(path("server.pem"), server_cert.pem()).expect("write");
        std::fs::write(path("server.key"), server_key.serialize_pem()).expect("write");
        let port = free_port(false);
        let extra = vec![
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path("server.pem").display().to_string(),
            "--tls-key-file".to_owned(),
            path("server.key").display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            path("ca.pem").display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let mut redis = RedisServer {
            port,
            ca_file: Some(path("ca.pem")),
            dir,
            process: None,
            extra,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (install it: apt-get install redis-server)");
        self.process = Some(child);
        eventually("redis-server to answer PING", || async {
            self.cli(&["PING"]).trim() == "PONG"
        })
        .await;
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (like a crash or a restart's first half).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered, the data
    /// stays.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.process {
            let status = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill -{signal} failed");
        }
    }

    /// Starts it again on the same port (with the same data directory).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        match &self.ca_file {
            Some(ca) => {
                let ca = ca.display().to_string();
                let mut tls = vec!["--tls", "--cacert", ca.as_str()];
                tls.extend_from_slice(args);
                redis_cli(self.port, &tls)
            }
            None => redis_cli(self.port, args),
        }
    }

    /// The `calls` of `cmdstat_<command>` in `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// A real three-master Redis Cluster (`redis-server --cluster-enabled yes` and
/// `redis-cli --cluster create`), for this test only.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters and forms the cluster; returns once it reports `ok`.
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                    "--appendonly",
                    "no",
                ])
                .await,
            );
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            "0".into(),
            "--cluster-yes".into(),
        ]);
        let output = std::process::Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        for node in &nodes {
            let port = node.port;
            eventually("the cluster to be ok", || async move {
                redis_cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })
            .await;
        }
        RedisCluster { nodes }
    }

    /// The `REDIS_URL` of the cluster: every master, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `calls` of a command summed over the masters.
    pub fn calls(&self, command: &str) -> u64 {
        self.nodes.iter().map(|n| n.calls(command)).sum()
    }
}

/// A node on a runtime of its own, so a test can crash it: [`CrashableHost::crash`] drops
/// every task of the node at once, without a goodbye, as `kill -9` would.
pub struct CrashableHost {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state.
    pub hub: Arc<Hub>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CrashableHost {
    /// Starts a node with `config` on its own two-thread runtime.
    pub async fn start(config: Config) -> CrashableHost {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (ready, started) = oneshot::channel();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let node = roster_host::start(config).await.expect("the node starts");
            let _ = ready.send(Arc::clone(&node.hub));
            let _ = node.serve(listener, std::future::pending()).await;
        });
        let hub = tokio::time::timeout(WAIT, started)
            .await
            .expect("start in time")
            .expect("started");
        CrashableHost {
            addr,
            hub,
            runtime: Some(runtime),
        }
    }

    /// A WebSocket client on its `/ws`.
    pub async fn connect(&self) -> WsClient {
        WsClient::connect(&format!("ws://{}/ws", self.addr)).await
    }

    /// Kills the node: its tasks are dropped mid-flight, its sockets close, nothing leaves.
    pub fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for CrashableHost {
    fn drop(&mut self) {
        self.crash();
    }
}
