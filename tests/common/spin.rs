//! A stand-in for `spin up`: runs the exact `.wasm` of a Spin HTTP component (one that exports
//! `wasi:http/incoming-handler@0.2.x`, as spin-sdk builds it) the way Spin 3 would, with
//! wasmtime, so tests can drive it over real HTTP against a real `redis-server`.
//!
//! What the component gets:
//! - WASI 0.2 (`wasmtime_wasi::p2`), with a wall clock the test sets ([`SpinApp::advance`])
//!   and the real monotonic clock; its stderr is the test's stderr (panic messages show),
//!   its stdout is discarded.
//! - `wasi:http` types and `outgoing-handler`; every outbound HTTP request is refused
//!   (`http-request-denied`), as Spin refuses a host missing from `allowed_outbound_hosts`.
//! - `fermyon:spin/redis@2.0.0` and `fermyon:spin/variables@2.0.0` (see `tests/spin/wit`),
//!   with Spin's semantics: a Redis address must match an allowed outbound host, and each
//!   `connection.open` opens a connection of its own, closed when the guest drops it or the
//!   request ends (a shared connection would let one request's WATCH/MULTI see another's
//!   commands, which cannot happen under Spin).
//!
//! Every request gets a fresh `Store` and instance, as in Spin 3, and the `spin-*` headers
//! Spin adds for a component on the route `/...`. A guest that traps, or returns without
//! setting a response, makes that request a 500; the server carries on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use redis::aio::MultiplexedConnection;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

mod bindings {
    wasmtime::component::bindgen!({
        world: "harness",
        path: "spin/wit",
        imports: { default: async },
        with: {
            "fermyon:spin/redis.connection": super::resources::RedisConnection,
        },
        additional_derives: [PartialEq],
    });
}

use bindings::fermyon::spin::redis as spin_redis;
use bindings::fermyon::spin::variables as spin_variables;
use spin_redis::{RedisParameter, RedisResult};

/// A Spin HTTP component served on `127.0.0.1`; the server stops when this is dropped.
pub struct SpinApp {
    /// Where it listens.
    pub addr: SocketAddr,
    clock: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SpinApp {
    /// Serves `wasm` over HTTP on `127.0.0.1:<free port>` with these Spin variables (names as
    /// Spin spells them: lowercase, e.g. `"redis_url"`). A Redis address the guest opens must
    /// match one of `allowed_outbound_hosts` (entries like `"redis://127.0.0.1:6379"`: scheme,
    /// host and port are compared; `*` stands for any scheme, host or port, `*.example.com`
    /// for any subdomain). The guest's wall clock starts at the real time and then stands
    /// still until the test moves it.
    pub async fn start(
        wasm: &Path,
        variables: HashMap<String, String>,
        allowed_outbound_hosts: Vec<String>,
    ) -> SpinApp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        SpinApp::start_at(wasm, variables, allowed_outbound_hosts, now).await
    }

    /// Like [`SpinApp::start`], with the guest's wall clock at `start_ms` (ms since the Unix
    /// epoch, e.g. [`crate::EPOCH_MS`]).
    pub async fn start_at(
        wasm: &Path,
        variables: HashMap<String, String>,
        allowed_outbound_hosts: Vec<String>,
        start_ms: u64,
    ) -> SpinApp {
        let allowed_hosts = allowed_outbound_hosts
            .iter()
            .map(|entry| {
                Origin::parse(entry).unwrap_or_else(|| {
                    panic!("allowed outbound host {entry:?} is not scheme://host[:port]")
                })
            })
            .collect();
        let config = Arc::new(AppConfig {
            variables,
            allowed_hosts,
        });
        let pre = prepare(wasm);
        let clock = Arc::new(AtomicU64::new(start_ms));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = Arc::new(Server {
            pre,
            config,
            clock: Arc::clone(&clock),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, server, stopped));
        SpinApp {
            addr,
            clock,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets the wall clock the guest sees (ms since the Unix epoch).
    pub fn set_now(&self, ms: u64) {
        self.clock.store(ms, Ordering::SeqCst);
    }

    /// Moves the guest's wall clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.clock.fetch_add(by, Ordering::SeqCst);
    }

    /// The guest's `now` (ms since the Unix epoch).
    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Stops the server and waits until it has (connections are closed; a guest already
    /// running finishes in the background).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(crate::WAIT, task).await;
        }
    }
}

impl Drop for SpinApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The one engine of this test process: components compiled for it are cached.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(&wasmtime::Config::new()).expect("a wasmtime engine"))
}

/// Compiles `wasm` once per process (per path, size and modification time).
fn component(wasm: &Path) -> Component {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static COMPILED: OnceLock<Mutex<HashMap<Key, Component>>> = OnceLock::new();
    let metadata = std::fs::metadata(wasm)
        .unwrap_or_else(|error| panic!("the component {} reads: {error}", wasm.display()));
    let key = (wasm.to_path_buf(), metadata.len(), metadata.modified().ok());
    let mut compiled = COMPILED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    compiled
        .entry(key)
        .or_insert_with(|| {
            Component::from_file(engine(), wasm).unwrap_or_else(|error| {
                panic!("the component {} compiles: {error:?}", wasm.display())
            })
        })
        .clone()
}

/// What every Spin component may import: WASI, `wasi:http`, Spin's Redis and variables.
fn linker() -> Linker<Instance> {
    let mut linker = Linker::<Instance>::new(engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI links");
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("wasi:http links");
    spin_redis::add_to_linker::<Instance, HasSelf<Instance>>(&mut linker, |state| state)
        .expect("fermyon:spin/redis links");
    spin_variables::add_to_linker::<Instance, HasSelf<Instance>>(&mut linker, |state| state)
        .expect("fermyon:spin/variables links");
    linker
}

/// Runs a cron component (the spin-trigger-cron plugin's world `fermyon:spin-cron@2.0.0`)
/// once, as the plugin does: a fresh instance, `handle-cron-event({timestamp})`, with these
/// variables and outbound hosts and the wall clock at `now_ms`. Returns the guest's
/// `result<_, error>` (`error::other`'s text on failure); a trap panics.
pub async fn run_cron(
    wasm: &Path,
    variables: HashMap<String, String>,
    allowed_outbound_hosts: Vec<String>,
    now_ms: u64,
) -> Result<(), String> {
    use wasmtime::component::Val;
    let allowed_hosts = allowed_outbound_hosts
        .iter()
        .map(|entry| Origin::parse(entry).expect("allowed outbound host"))
        .collect();
    let config = Arc::new(AppConfig {
        variables,
        allowed_hosts,
    });
    let mut store = Store::new(
        engine(),
        Instance::new(config, Arc::new(AtomicU64::new(now_ms))),
    );
    let instance = linker()
        .instantiate_async(&mut store, &component(wasm))
        .await
        .unwrap_or_else(|error| panic!("{} instantiates: {error:?}", wasm.display()));
    let handler = instance
        .get_func(&mut store, "handle-cron-event")
        .expect("the component exports handle-cron-event");
    let metadata = Val::Record(vec![("timestamp".to_owned(), Val::U64(now_ms / 1000))]);
    let mut results = [Val::Bool(false)];
    handler
        .call_async(&mut store, &[metadata], &mut results)
        .await
        .unwrap_or_else(|error| panic!("handle-cron-event trapped: {error:?}"));
    match &results[0] {
        Val::Result(Ok(_)) => Ok(()),
        Val::Result(Err(Some(error))) => Err(format!("{error:?}")),
        other => panic!("handle-cron-event returned {other:?}"),
    }
}

/// Links everything a Spin HTTP component may import and pre-instantiates `wasm`.
fn prepare(wasm: &Path) -> ProxyPre<Instance> {
    let component = component(wasm);
    let linker = linker();
    let pre = linker.instantiate_pre(&component).unwrap_or_else(|error| {
        panic!("every import of {} is provided: {error:?}", wasm.display())
    });
    ProxyPre::new(pre).unwrap_or_else(|error| {
        panic!(
            "{} exports wasi:http/incoming-handler: {error:?}",
            wasm.display()
        )
    })
}

/// What every request of one app shares.
struct AppConfig {
    variables: HashMap<String, String>,
    allowed_hosts: Vec<Origin>,
}

impl AppConfig {
    fn allows(&self, address: &str) -> bool {
        Origin::parse(address).is_some_and(|origin| {
            self.allowed_hosts
                .iter()
                .any(|allowed| allowed.admits(&origin))
        })
    }
}

struct Server {
    pre: ProxyPre<Instance>,
    config: Arc<AppConfig>,
    clock: Arc<AtomicU64>,
}

async fn serve(listener: TcpListener, server: Arc<Server>, mut stopped: oneshot::Receiver<()>) {
    // Dropping the set (when the loop ends) aborts every connection still open.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, client)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let server = Arc::clone(&server);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let server = Arc::clone(&server);
                        async move { Ok::<_, Infallible>(server.handle(request, client).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

impl Server {
    async fn handle(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        client: SocketAddr,
    ) -> hyper::Response<HyperOutgoingBody> {
        match self.run_guest(request, client).await {
            Ok(response) => response,
            Err(message) => {
                eprintln!("spin harness: 500: {message}");
                let body = Full::new(Bytes::from(message))
                    .map_err(|never: Infallible| match never {})
                    .boxed_unsync();
                let mut response = hyper::Response::new(body);
                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }

    /// Runs `wasi:http/incoming-handler.handle` in a fresh instance; the guest keeps running
    /// in its own task after it sets the response, to stream the body.
    async fn run_guest(
        &self,
        mut request: hyper::Request<hyper::body::Incoming>,
        client: SocketAddr,
    ) -> Result<hyper::Response<HyperOutgoingBody>, String> {
        add_spin_headers(&mut request, client);
        let mut store = Store::new(
            self.pre.engine(),
            Instance::new(Arc::clone(&self.config), Arc::clone(&self.clock)),
        );
        let (sender, receiver) = oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|error| format!("the request cannot be given to the guest: {error:?}"))?;
        let response = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|error| format!("no response-outparam: {error:?}"))?;
        let pre = self.pre.clone();
        let guest = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, response)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(format!("the guest set an error response: {code:?}")),
            // The guest ended (and dropped the outparam) without setting a response.
            Err(_) => match guest.await {
                Ok(Ok(())) => Err("the guest returned without setting a response".to_owned()),
                Ok(Err(trap)) => Err(format!("the guest failed: {trap:?}")),
                Err(join) => Err(format!("the guest task failed: {join}")),
            },
        }
    }
}

/// The headers Spin adds for a component whose route is `/...` (the whole app).
fn add_spin_headers(request: &mut hyper::Request<hyper::body::Incoming>, client: SocketAddr) {
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let path = request.uri().path().to_owned();
    let headers = [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", path),
        ("spin-matched-route", "/...".to_owned()),
        ("spin-raw-component-route", "/...".to_owned()),
        ("spin-component-route", String::new()),
        ("spin-base-path", "/".to_owned()),
        ("spin-client-addr", client.to_string()),
    ];
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            request
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
}

/// The wall clock the guest reads: ms since the Unix epoch, set by the test.
struct ManualWallClock(Arc<AtomicU64>);

impl HostWallClock for ManualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Refuses every outbound HTTP request, as Spin does for hosts the app does not allow.
struct NoOutboundHttp;

impl WasiHttpHooks for NoOutboundHttp {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(std::future::ready(Err(
            wasmtime_wasi_http::Error::HttpRequestDenied,
        )))
    }
}

/// The state of one request's `Store`.
struct Instance {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutboundHttp,
    config: Arc<AppConfig>,
}

impl Instance {
    fn new(config: Arc<AppConfig>, clock: Arc<AtomicU64>) -> Instance {
        let wasi = WasiCtx::builder()
            .inherit_stderr()
            .wall_clock(ManualWallClock(clock))
            .build();
        Instance {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutboundHttp,
            config,
        }
    }

    /// The Redis connection behind a guest's handle.
    fn connection(
        &self,
        handle: &Resource<RedisConnection>,
    ) -> Result<MultiplexedConnection, spin_redis::Error> {
        self.table
            .get(handle)
            .map(|connection| connection.0.clone())
            .map_err(|error| spin_redis::Error::Other(format!("no such connection: {error}")))
    }
}

impl WasiView for Instance {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Instance {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

mod resources {
    /// What a `fermyon:spin/redis.connection` handle stands for (public only to the bindings).
    pub struct RedisConnection(pub(super) redis::aio::MultiplexedConnection);
}

use resources::RedisConnection;

fn other(error: redis::RedisError) -> spin_redis::Error {
    spin_redis::Error::Other(error.to_string())
}

impl spin_redis::Host for Instance {}

impl spin_redis::HostConnection for Instance {
    async fn open(
        &mut self,
        address: String,
    ) -> Result<Resource<RedisConnection>, spin_redis::Error> {
        if !self.config.allows(&address) {
            return Err(spin_redis::Error::InvalidAddress);
        }
        let client =
            redis::Client::open(address.as_str()).map_err(|_| spin_redis::Error::InvalidAddress)?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(other)?;
        self.table
            .push(RedisConnection(connection))
            .map_err(|_| spin_redis::Error::TooManyConnections)
    }

    async fn publish(
        &mut self,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<(), spin_redis::Error> {
        query(
            self.connection(&this)?,
            redis::cmd("PUBLISH").arg(channel).arg(payload),
        )
        .await
    }

    async fn get(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Result<Option<Vec<u8>>, spin_redis::Error> {
        query(self.connection(&this)?, redis::cmd("GET").arg(key)).await
    }

    async fn set(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), spin_redis::Error> {
        query(
            self.connection(&this)?,
            redis::cmd("SET").arg(key).arg(value),
        )
        .await
    }

    async fn incr(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Result<i64, spin_redis::Error> {
        query(self.connection(&this)?, redis::cmd("INCR").arg(key)).await
    }

    async fn del(
        &mut self,
        this: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> Result<u32, spin_redis::Error> {
        query(self.connection(&this)?, redis::cmd("DEL").arg(keys)).await
    }

    async fn sadd(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, spin_redis::Error> {
        let mut connection = self.connection(&this)?;
        redis::cmd("SADD")
            .arg(key)
            .arg(values)
            .query_async(&mut connection)
            .await
            .map_err(|error| match error.kind() {
                redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse => {
                    spin_redis::Error::TypeError
                }
                _ => other(error),
            })
    }

    async fn smembers(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Result<Vec<String>, spin_redis::Error> {
        query(self.connection(&this)?, redis::cmd("SMEMBERS").arg(key)).await
    }

    async fn srem(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, spin_redis::Error> {
        query(
            self.connection(&this)?,
            redis::cmd("SREM").arg(key).arg(values),
        )
        .await
    }

    async fn execute(
        &mut self,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Result<Vec<RedisResult>, spin_redis::Error> {
        let mut connection = self.connection(&this)?;
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(value) => cmd.arg(value),
                RedisParameter::Binary(bytes) => cmd.arg(bytes),
            };
        }
        // A server error reply, even inside an array, arrives here as an `Err`.
        let reply = cmd
            .query_async::<redis::Value>(&mut connection)
            .await
            .map_err(other)?;
        flatten(reply)
    }

    async fn drop(&mut self, this: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// Sends `cmd` on `connection`; errors as Spin reports them.
async fn query<T: redis::FromRedisValue>(
    mut connection: MultiplexedConnection,
    cmd: &redis::Cmd,
) -> Result<T, spin_redis::Error> {
    cmd.query_async(&mut connection).await.map_err(other)
}

/// An `execute` reply as Spin hands it to the guest: one flat list, arrays (and sets) at any
/// depth spliced in place, a single value as a one-element list.
fn flatten(reply: redis::Value) -> Result<Vec<RedisResult>, spin_redis::Error> {
    fn push(out: &mut Vec<RedisResult>, value: redis::Value) -> Result<(), spin_redis::Error> {
        use redis::Value;
        match value {
            Value::Nil => out.push(RedisResult::Nil),
            Value::Int(value) => out.push(RedisResult::Int64(value)),
            Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
            Value::SimpleString(status) => out.push(RedisResult::Status(status)),
            Value::Okay => out.push(RedisResult::Status("OK".to_owned())),
            Value::Array(items) | Value::Set(items) => {
                for item in items {
                    push(out, item)?;
                }
            }
            // RESP3 only (the harness speaks RESP2), converted as Spin does.
            Value::Double(value) => out.push(RedisResult::Binary(value.to_string().into_bytes())),
            Value::Boolean(value) => out.push(RedisResult::Int64(i64::from(value))),
            Value::ServerError(error) => {
                return Err(spin_redis::Error::Other(error.to_string()));
            }
            // Maps, attributes, verbatim strings, big numbers, pushes.
            _ => return Err(spin_redis::Error::TypeError),
        }
        Ok(())
    }
    let mut out = Vec::new();
    push(&mut out, reply)?;
    Ok(out)
}

impl spin_variables::Host for Instance {
    async fn get(&mut self, name: String) -> Result<String, spin_variables::Error> {
        if !valid_variable_name(&name) {
            return Err(spin_variables::Error::InvalidName(format!(
                "invalid variable name {name:?}: use lowercase letters, digits and underscores, starting with a letter"
            )));
        }
        self.config
            .variables
            .get(&name)
            .cloned()
            .ok_or_else(|| spin_variables::Error::Undefined(format!("no variable for {name:?}")))
    }
}

/// Spin's variable names: lowercase ASCII letters, digits and single underscores, starting
/// with a letter and not ending with an underscore.
fn valid_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_')
}

/// The scheme, host and port of an address or of an allowed-outbound-host entry; in an entry,
/// `None` stands for `*` (anything).
#[derive(Debug, PartialEq)]
struct Origin {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://[user[:password]@]host[:port][/...]`. Without a port, Redis
    /// schemes mean 6379; other schemes need one.
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            Some("*") => None,
            Some(port) => Some(port.parse().ok()?),
            None if matches!(scheme.as_str(), "redis" | "rediss" | "*") => Some(6379),
            None => return None,
        };
        let wildcard = |text: &str| (text != "*").then(|| text.to_ascii_lowercase());
        Some(Origin {
            scheme: wildcard(&scheme),
            host: wildcard(host),
            port,
        })
    }

    /// Whether this allowed-host entry admits `address`.
    fn admits(&self, address: &Origin) -> bool {
        let scheme = self.scheme.is_none() || self.scheme == address.scheme;
        let host = match (&self.host, &address.host) {
            (None, _) => true,
            (Some(allowed), Some(host)) => match allowed.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                None => allowed == host,
            },
            (Some(_), None) => false,
        };
        let port = self.port.is_none() || self.port == address.port;
        scheme && host && port
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn allows(entries: &[&str], address: &str) -> bool {
        AppConfig {
            variables: HashMap::new(),
            allowed_hosts: entries.iter().map(|e| Origin::parse(e).unwrap()).collect(),
        }
        .allows(address)
    }

    #[test]
    fn flattening_keeps_scalars_in_order() {
        assert_eq!(flatten(Value::Nil), Ok(vec![RedisResult::Nil]));
        assert_eq!(flatten(Value::Int(-7)), Ok(vec![RedisResult::Int64(-7)]));
        assert_eq!(
            flatten(Value::BulkString(b"ab\0".to_vec())),
            Ok(vec![RedisResult::Binary(b"ab\0".to_vec())])
        );
        assert_eq!(
            flatten(Value::SimpleString("QUEUED".into())),
            Ok(vec![RedisResult::Status("QUEUED".into())])
        );
        assert_eq!(
            flatten(Value::Okay),
            Ok(vec![RedisResult::Status("OK".into())])
        );
    }

    #[test]
    fn flattening_splices_nested_arrays() {
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::Array(vec![Value::Nil, Value::Okay]),
                Value::Array(vec![]),
            ]),
            Value::Set(vec![Value::Int(2)]),
            Value::BulkString(b"z".to_vec()),
        ]);
        assert_eq!(
            flatten(reply),
            Ok(vec![
                RedisResult::Int64(1),
                RedisResult::Binary(b"a".to_vec()),
                RedisResult::Nil,
                RedisResult::Status("OK".into()),
                RedisResult::Int64(2),
                RedisResult::Binary(b"z".to_vec()),
            ])
        );
        assert_eq!(flatten(Value::Array(vec![])), Ok(vec![]));
    }

    #[test]
    fn flattening_refuses_maps_and_reports_server_errors() {
        let map = Value::Map(vec![(Value::Int(1), Value::Int(2))]);
        assert_eq!(flatten(map.clone()), Err(spin_redis::Error::TypeError));
        assert_eq!(
            flatten(Value::Array(vec![Value::Int(1), map])),
            Err(spin_redis::Error::TypeError)
        );
        // A server error reply as the parser hands it over (inside an array: `query_async`
        // turns a top-level one into an `Err` before `flatten` sees it).
        let error = redis::parse_redis_value(b"*2\r\n:1\r\n-WRONGTYPE bad kind\r\n").unwrap();
        match flatten(error) {
            Err(spin_redis::Error::Other(message)) => {
                assert!(message.contains("WRONGTYPE"), "{message}");
                assert!(message.contains("bad kind"), "{message}");
            }
            other => panic!("expected other(...), got {other:?}"),
        }
    }

    #[test]
    fn flattening_real_resp2_replies() {
        // EXEC of [SET, INCR, LRANGE]: +OK, :1, and an array of two bulk strings.
        let exec = b"*3\r\n+OK\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n";
        assert_eq!(
            flatten(redis::parse_redis_value(exec).unwrap()),
            Ok(vec![
                RedisResult::Status("OK".into()),
                RedisResult::Int64(1),
                RedisResult::Binary(b"a".to_vec()),
                RedisResult::Nil,
            ])
        );
    }

    #[test]
    fn hosts_match_on_scheme_host_and_port() {
        let entry = ["redis://127.0.0.1:6379"];
        assert!(allows(&entry, "redis://127.0.0.1:6379"));
        assert!(allows(&entry, "redis://127.0.0.1:6379/0"));
        assert!(allows(&entry, "redis://127.0.0.1"));
        assert!(allows(&entry, "redis://user:secret@127.0.0.1:6379"));
        assert!(allows(&entry, "REDIS://127.0.0.1:6379"));
        assert!(!allows(&entry, "redis://127.0.0.1:6380"));
        assert!(!allows(&entry, "rediss://127.0.0.1:6379"));
        assert!(!allows(&entry, "redis://localhost:6379"));
        assert!(!allows(&entry, "redis://127.0.0.10:6379"));
        assert!(!allows(&entry, "127.0.0.1:6379"));
        assert!(!allows(&entry, "redis://:6379"));
        assert!(!allows(&entry, "redis://127.0.0.1:notaport"));
        assert!(!allows(&[], "redis://127.0.0.1:6379"));
        assert!(allows(
            &["redis://10.0.0.1:1", "redis://127.0.0.1:7000"],
            "redis://127.0.0.1:7000"
        ));
    }

    #[test]
    fn hosts_allow_wildcards_and_ipv6() {
        assert!(allows(&["redis://127.0.0.1:*"], "redis://127.0.0.1:7001"));
        assert!(allows(&["redis://*:6379"], "redis://cache.internal"));
        assert!(allows(&["*://*:*"], "rediss://anything:1"));
        assert!(allows(
            &["redis://*.example.com:6379"],
            "redis://a.example.com"
        ));
        assert!(!allows(
            &["redis://*.example.com:6379"],
            "redis://example.com"
        ));
        assert!(!allows(
            &["redis://*.example.com:6379"],
            "redis://badexample.com"
        ));
        assert!(allows(&["redis://[::1]:6379"], "redis://[::1]:6379"));
        assert!(!allows(&["redis://[::1]:6379"], "redis://[::2]:6379"));
        assert_eq!(Origin::parse("http://example.com"), None);
    }

    #[test]
    fn variable_names_follow_spin() {
        for good in ["redis_url", "a", "a1_b2"] {
            assert!(valid_variable_name(good), "{good}");
        }
        for bad in ["", "REDIS_URL", "1a", "_a", "a_", "a__b", "a-b"] {
            assert!(!valid_variable_name(bad), "{bad}");
        }
    }
}
