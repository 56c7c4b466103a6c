//! The state one component instance carries, and the host side of its imports (`store`,
//! `events`, and the minimal WASI that Rust's standard library imports).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use parking_lot::Mutex;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
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
}

impl HostState {
    /// State for a new instance capped at `memory_bytes` of linear memory.
    pub fn new(store: Arc<dyn Store>, events: Arc<dyn EventSink>, memory_bytes: usize) -> Self {
        let log = GuestLog::default();
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
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
        self.store.execute(batches).await
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
