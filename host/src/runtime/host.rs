//! The state one component instance carries, and the host side of its imports (`store`,
//! `events`, and the minimal WASI that Rust's standard library imports).
//!
//! What a component can reach is what this file hands it: the store batches and event
//! publishing of the WIT imports, and WASI with no environment, no arguments, no files, no
//! sockets, stdout and stderr into a bounded log, clocks that tell the call's own `now`
//! (frozen for the call, the time the host passed in), and a random source seeded by the
//! host (only std's hash seeds use it: what must be unguessable, a connection id's
//! nonce, the host passes in).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{events, store, types};
use crate::bus::EventSink;
use crate::store::Store;

/// `T` of every `wasmtime::Store` the host creates: one per live instance.
pub struct HostState {
    /// WASI for std's imports: no environment, no files, no sockets; stdout and stderr
    /// go to [`GuestLog`].
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap; installed as the store's limiter.
    pub(super) limits: StoreLimits,
    /// The backend of the `store` import.
    store: Arc<dyn Store>,
    /// Where the `events` import publishes.
    events: Arc<dyn EventSink>,
    /// When the call in progress must have finished; read by the epoch callback.
    pub(super) deadline: Instant,
    /// What the guest printed (panic messages land here before a trap).
    pub(super) log: GuestLog,
    /// The time WASI's clocks tell: the current call's `now`.
    pub(super) clock: CallClock,
}

/// A clock that tells the time of the call in progress (ms since the Unix epoch), set by
/// the runtime before each call: the component's WASI wall and monotonic clocks.
#[derive(Clone, Default)]
pub struct CallClock(Arc<AtomicU64>);

impl CallClock {
    /// Sets the time the clocks tell.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::Relaxed);
    }

    fn ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.ms())
    }
}

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.ms().saturating_mul(1_000_000)
    }
}

impl HostState {
    /// State for a new instance capped at `memory_bytes` of linear memory.
    pub fn new(store: Arc<dyn Store>, events: Arc<dyn EventSink>, memory_bytes: usize) -> Self {
        let log = GuestLog::default();
        let clock = CallClock::default();
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            store,
            events,
            deadline: Instant::now(),
            log,
            clock,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl store::Host for HostState {
    async fn execute(
        &mut self,
        batches: Vec<store::Batch>,
    ) -> Result<Vec<store::BatchOutcome>, store::StoreError> {
        let started = std::time::Instant::now();
        let count = batches.len();
        let outcome = self.store.execute(batches).await;
        crate::metrics::METRICS.store_execution(count, started.elapsed());
        outcome
    }
}

impl events::Host for HostState {
    async fn publish(&mut self, event: events::Event) {
        self.events.publish(event);
    }
}

/// Most bytes of guest output kept between reads; the rest is dropped, never an error (a
/// failing write would make Rust's `eprintln!` panic inside the guest).
const GUEST_LOG_LIMIT: usize = 4096;

/// A bounded buffer for a guest's stdout and stderr, read after each call.
#[derive(Clone, Default)]
pub struct GuestLog(Arc<Mutex<Vec<u8>>>);

impl GuestLog {
    /// Takes what was written since the last take.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock());
        String::from_utf8_lossy(&bytes).trim_end().to_owned()
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut log = self.0.lock();
        let room = GUEST_LOG_LIMIT.saturating_sub(log.len());
        log.extend_from_slice(&buf[..buf.len().min(room)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
