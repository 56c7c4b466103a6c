//! The component runtime: one wasmtime engine, three component slots (presence, metadata,
//! reaper), a pool of live instances per slot, and the sandbox around every call.
//!
//! Components are compiled once at start-up and type-checked against their world (a
//! component that lacks an export or imports something the host does not provide fails
//! here, with the reason). Calls take a live instance from the slot's pool, or instantiate
//! one when none is idle; at most `instances` calls run per slot at once.
//!
//! The sandbox, per call:
//! - **deadline**: wall-clock time, enforced twice: an epoch callback traps wasm that runs
//!   past it (and yields to the scheduler at every epoch tick, so a loop cannot hog a
//!   worker thread), and a timeout drops a call stuck in a host import;
//! - **memory cap**: linear memory cannot grow past the cap; growing traps;
//! - **failure isolation**: a trap, a missed deadline or a cap hit fails that call with
//!   `COMPONENT_FAILED`; the instance is discarded (its memory may be inconsistent) and the
//!   pool makes a fresh one for the next call. What the guest printed is logged.
//!
//! Components are stateless between calls (DESIGN.md §4), so reusing an instance is only an
//! optimisation: any call may land on any instance.

pub mod bindings;
mod host;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, UpdateDeadline};

use bindings::metadata::{MetadataComponent, MetadataComponentPre};
use bindings::presence::{PresenceComponent, PresenceComponentPre};
use bindings::reaper::{ReaperComponent, ReaperComponentPre};
use bindings::types::{
    CallContext, Channel, ChannelState, Conn, Failure, HeartbeatOk, HeartbeatRequest, JoinRequest,
    Joined, Left, LockInfo, LockRequest, TickOptions, TickReport, WriteRequest,
};
pub use host::HostState;

use crate::bus::EventSink;
use crate::store::Store;

/// How often the epoch advances: the granularity of deadlines and of a long call's yields.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Linear memories, tables, fiber stacks and core instances the pooling allocator reserves
/// room for, per live component instance. A Rust `wasm32-wasip2` component instantiates a
/// handful of core modules (its own and WASI adapter shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const TABLES_PER_COMPONENT: u32 = 8;

/// Sandbox limits of every call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock deadline of one call.
    pub deadline: Duration,
    /// Linear-memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// Live instances (= concurrent calls) per slot.
    pub instances: u32,
}

/// Where a component comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Built into the `roster` binary.
    Embedded(&'static [u8]),
    /// A file given at start-up.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Embedded(_) => f.write_str("embedded"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The three components to run.
#[derive(Debug, Clone)]
pub struct Components {
    /// Exports `roster:hub/presence`.
    pub presence: Source,
    /// Exports `roster:hub/metadata`.
    pub metadata: Source,
    /// Exports `roster:hub/reaper`.
    pub reaper: Source,
}

impl Components {
    /// The components built into this binary.
    pub fn embedded() -> Self {
        Components {
            presence: Source::Embedded(include_bytes!(env!("ROSTER_PRESENCE_WASM"))),
            metadata: Source::Embedded(include_bytes!(env!("ROSTER_METADATA_WASM"))),
            reaper: Source::Embedded(include_bytes!(env!("ROSTER_REAPER_WASM"))),
        }
    }

    /// `<dir>/presence.wasm`, `<dir>/metadata.wasm`, `<dir>/reaper.wasm` where present, the
    /// embedded build otherwise.
    pub fn from_dir(dir: &Path) -> Self {
        let embedded = Components::embedded();
        let pick = |name: &str, fallback: Source| {
            let path = dir.join(format!("{name}.wasm"));
            if path.is_file() {
                Source::File(path)
            } else {
                fallback
            }
        };
        Components {
            presence: pick("presence", embedded.presence),
            metadata: pick("metadata", embedded.metadata),
            reaper: pick("reaper", embedded.reaper),
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine refused its configuration.
    #[error("the wasmtime engine could not be configured: {0}")]
    Engine(String),
    /// A component does not load: unreadable, not a component, or not of its world.
    #[error("the {slot} component ({source_name}) cannot run: {reason}")]
    Load {
        /// The slot.
        slot: &'static str,
        /// Where it came from.
        source_name: String,
        /// Why.
        reason: String,
    },
}

/// Why a call failed (the request gets `COMPONENT_FAILED`).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The component trapped: a panic, a memory cap hit, a bad canonical-ABI value.
    #[error("the {slot} component failed: {reason}")]
    Trapped {
        /// The slot.
        slot: &'static str,
        /// The trap.
        reason: String,
    },
    /// The call ran past its deadline.
    #[error("the {slot} component did not answer within {deadline:?}")]
    Deadline {
        /// The slot.
        slot: &'static str,
        /// The deadline.
        deadline: Duration,
    },
    /// No instance could be made.
    #[error("the {slot} component could not be instantiated: {reason}")]
    Instantiate {
        /// The slot.
        slot: &'static str,
        /// Why.
        reason: String,
    },
}

/// What a slot has done, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStats {
    /// The slot.
    pub slot: &'static str,
    /// Calls started.
    pub calls: u64,
    /// Calls that failed with `COMPONENT_FAILED`.
    pub failures: u64,
    /// Live instances waiting for calls.
    pub idle: usize,
}

/// A world the host can instantiate: the glue between a generated `*Pre` and the pool.
pub trait World: Sized + Send + Sync + 'static {
    /// The generated pre-instantiated form.
    type Pre: Send + Sync + 'static;
    /// The slot name.
    const SLOT: &'static str;
    /// Type-checks the exports and keeps the `InstancePre`.
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    /// Instantiates into `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut wasmtime::Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;
}

macro_rules! world {
    ($world:ty, $pre:ident, $slot:literal) => {
        impl World for $world {
            type Pre = $pre<HostState>;
            const SLOT: &'static str = $slot;
            fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
                $pre::new(pre)
            }
            async fn instantiate(
                pre: &Self::Pre,
                store: &mut wasmtime::Store<HostState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate_async(store).await
            }
        }
    };
}

world!(PresenceComponent, PresenceComponentPre, "presence");
world!(MetadataComponent, MetadataComponentPre, "metadata");
world!(ReaperComponent, ReaperComponentPre, "reaper");

/// A live instance.
struct Instance<W> {
    store: wasmtime::Store<HostState>,
    exports: W,
}

/// One component slot: its compiled component and its pool.
struct Slot<W: World> {
    pre: W::Pre,
    /// Idle instances; calls pop one and push it back when they succeed.
    idle: Mutex<Vec<Instance<W>>>,
    /// One permit per live instance: bounds concurrent calls, and so the pool.
    permits: Semaphore,
    calls: AtomicU64,
    failures: AtomicU64,
}

impl<W: World> Slot<W> {
    fn stats(&self) -> SlotStats {
        SlotStats {
            slot: W::SLOT,
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            idle: self.idle.lock().len(),
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("roster-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|error| {
                RuntimeError::Engine(format!("cannot start the epoch thread: {error}"))
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The component runtime.
pub struct Runtime {
    engine: Engine,
    limits: Limits,
    store: Arc<dyn Store>,
    events: Arc<dyn EventSink>,
    presence: Slot<PresenceComponent>,
    metadata: Slot<MetadataComponent>,
    reaper: Slot<ReaperComponent>,
    _ticker: EpochTicker,
}

fn engine(limits: &Limits) -> Result<Engine, RuntimeError> {
    let total = limits.instances.saturating_mul(3);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(total)
        .total_core_instances(total.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(total)
        .total_tables(total.saturating_mul(TABLES_PER_COMPONENT))
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_stacks(total)
        .max_memory_size(limits.memory_bytes);
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|error| RuntimeError::Engine(format!("{error:#}")))
}

fn load<W: World>(
    engine: &Engine,
    linker: &Linker<HostState>,
    source: &Source,
    instances: u32,
) -> Result<Slot<W>, RuntimeError> {
    let failed = |reason: String| RuntimeError::Load {
        slot: W::SLOT,
        source_name: source.to_string(),
        reason,
    };
    let bytes: std::borrow::Cow<'_, [u8]> = match source {
        Source::Embedded(bytes) => (*bytes).into(),
        Source::File(path) => std::fs::read(path)
            .map_err(|error| failed(format!("cannot read it: {error}")))?
            .into(),
    };
    let component = Component::new(engine, &bytes)
        .map_err(|error| failed(format!("not a valid component: {error:#}")))?;
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|error| failed(format!("its imports do not match the host: {error:#}")))?;
    let pre = W::pre(instance_pre).map_err(|error| {
        failed(format!(
            "it does not export the {} world's interface: {error:#}",
            W::SLOT
        ))
    })?;
    Ok(Slot {
        pre,
        idle: Mutex::new(Vec::new()),
        permits: Semaphore::new(usize::try_from(instances).unwrap_or(usize::MAX)),
        calls: AtomicU64::new(0),
        failures: AtomicU64::new(0),
    })
}

impl Runtime {
    /// Compiles and type-checks the components. Takes a while (Cranelift): call it off the
    /// async executor.
    pub fn new(
        components: &Components,
        limits: Limits,
        store: Arc<dyn Store>,
        events: Arc<dyn EventSink>,
    ) -> Result<Self, RuntimeError> {
        let engine = engine(&limits)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| RuntimeError::Engine(format!("linking WASI: {error:#}")))?;
        PresenceComponent::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| {
            state
        })
        .map_err(|error| RuntimeError::Engine(format!("linking Roster's imports: {error:#}")))?;
        let presence = load(&engine, &linker, &components.presence, limits.instances)?;
        let metadata = load(&engine, &linker, &components.metadata, limits.instances)?;
        let reaper = load(&engine, &linker, &components.reaper, limits.instances)?;
        let ticker = EpochTicker::start(&engine)?;
        Ok(Runtime {
            engine,
            limits,
            store,
            events,
            presence,
            metadata,
            reaper,
            _ticker: ticker,
        })
    }

    /// Per-slot counters.
    pub fn stats(&self) -> [SlotStats; 3] {
        [
            self.presence.stats(),
            self.metadata.stats(),
            self.reaper.stats(),
        ]
    }

    async fn instantiate<W: World>(&self, slot: &Slot<W>) -> Result<Instance<W>, CallError> {
        let state = HostState::new(
            Arc::clone(&self.store),
            Arc::clone(&self.events),
            self.limits.memory_bytes,
        );
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|context| {
            if Instant::now() >= context.data().deadline {
                Err(wasmtime::format_err!("the call ran past its deadline"))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.data_mut().deadline = Instant::now() + self.limits.deadline;
        store.set_epoch_deadline(1);
        let exports = W::instantiate(&slot.pre, &mut store)
            .await
            .map_err(|error| CallError::Instantiate {
                slot: W::SLOT,
                reason: format!("{error:#}"),
            })?;
        Ok(Instance { store, exports })
    }

    /// Runs `call` on an instance of `slot` inside the sandbox.
    async fn call<W: World, R>(
        &self,
        slot: &Slot<W>,
        call: impl AsyncFnOnce(&W, &mut wasmtime::Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        slot.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_inner(slot, call).await;
        if result.is_err() {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn call_inner<W: World, R>(
        &self,
        slot: &Slot<W>,
        call: impl AsyncFnOnce(&W, &mut wasmtime::Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        // The semaphore is never closed, so acquiring fails only if it were.
        let _permit = slot
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Instantiate {
                slot: W::SLOT,
                reason: "the runtime is shutting down".into(),
            })?;
        let idle = slot.idle.lock().pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate(slot).await?,
        };
        let deadline = self.limits.deadline;
        instance.store.data_mut().deadline = Instant::now() + deadline;
        instance.store.set_epoch_deadline(1);
        let outcome =
            tokio::time::timeout(deadline, call(&instance.exports, &mut instance.store)).await;
        let output = instance.store.data().log.take();
        match outcome {
            Ok(Ok(value)) => {
                if !output.is_empty() {
                    tracing::debug!(slot = W::SLOT, output, "component output");
                }
                slot.idle.lock().push(instance);
                Ok(value)
            }
            Ok(Err(error)) if Instant::now() >= instance.store.data().deadline => {
                tracing::warn!(
                    slot = W::SLOT,
                    ?deadline,
                    output,
                    "component call ran past its deadline: {error:#}"
                );
                Err(CallError::Deadline {
                    slot: W::SLOT,
                    deadline,
                })
            }
            Ok(Err(error)) => {
                tracing::warn!(slot = W::SLOT, output, "component call trapped: {error:#}");
                Err(CallError::Trapped {
                    slot: W::SLOT,
                    reason: trap_reason(&error),
                })
            }
            Err(_) => {
                tracing::warn!(
                    slot = W::SLOT,
                    ?deadline,
                    output,
                    "component call timed out in a host import"
                );
                Err(CallError::Deadline {
                    slot: W::SLOT,
                    deadline,
                })
            }
        }
    }

    /// `presence.join`.
    pub async fn join(
        &self,
        ctx: &CallContext,
        request: &JoinRequest,
    ) -> Result<Result<Joined, Failure>, CallError> {
        self.call(
            &self.presence,
            async |c: &PresenceComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_presence().call_join(store, ctx, request).await
            },
        )
        .await
    }

    /// `presence.heartbeat`.
    pub async fn heartbeat(
        &self,
        ctx: &CallContext,
        requests: &[HeartbeatRequest],
    ) -> Result<Vec<Result<HeartbeatOk, Failure>>, CallError> {
        self.call(
            &self.presence,
            async |c: &PresenceComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_presence()
                    .call_heartbeat(store, ctx, requests)
                    .await
            },
        )
        .await
    }

    /// `presence.leave`.
    pub async fn leave(
        &self,
        ctx: &CallContext,
        conn_id: &str,
    ) -> Result<Result<Left, Failure>, CallError> {
        self.call(
            &self.presence,
            async |c: &PresenceComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_presence()
                    .call_leave(store, ctx, conn_id)
                    .await
            },
        )
        .await
    }

    /// `presence.snapshot`.
    pub async fn snapshot(
        &self,
        ctx: &CallContext,
        room_id: &str,
    ) -> Result<Result<Vec<Conn>, Failure>, CallError> {
        self.call(
            &self.presence,
            async |c: &PresenceComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_presence()
                    .call_snapshot(store, ctx, room_id)
                    .await
            },
        )
        .await
    }

    /// `metadata.set`, `metadata.update` or `metadata.remove`.
    pub async fn metadata_write(
        &self,
        ctx: &CallContext,
        operation: bindings::types::MetadataOperation,
        request: &WriteRequest,
    ) -> Result<Result<ChannelState, Failure>, CallError> {
        use bindings::types::MetadataOperation as Op;
        self.call(
            &self.metadata,
            async |c: &MetadataComponent, store: &mut wasmtime::Store<HostState>| {
                let guest = c.roster_hub_metadata();
                match operation {
                    Op::Set => guest.call_set(store, ctx, request).await,
                    Op::Update => guest.call_update(store, ctx, request).await,
                    Op::Remove => guest.call_remove(store, ctx, request).await,
                }
            },
        )
        .await
    }

    /// `metadata.get`.
    pub async fn metadata_get(
        &self,
        ctx: &CallContext,
        channel: &Channel,
    ) -> Result<Result<ChannelState, Failure>, CallError> {
        self.call(
            &self.metadata,
            async |c: &MetadataComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_metadata().call_get(store, ctx, channel).await
            },
        )
        .await
    }

    /// `metadata.acquire-lock`.
    pub async fn acquire_lock(
        &self,
        ctx: &CallContext,
        request: &LockRequest,
    ) -> Result<Result<LockInfo, Failure>, CallError> {
        self.call(
            &self.metadata,
            async |c: &MetadataComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_metadata()
                    .call_acquire_lock(store, ctx, request)
                    .await
            },
        )
        .await
    }

    /// `metadata.release-lock`.
    pub async fn release_lock(
        &self,
        ctx: &CallContext,
        request: &LockRequest,
    ) -> Result<Result<(), Failure>, CallError> {
        self.call(
            &self.metadata,
            async |c: &MetadataComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_metadata()
                    .call_release_lock(store, ctx, request)
                    .await
            },
        )
        .await
    }

    /// `reaper.tick`.
    pub async fn tick(
        &self,
        ctx: &CallContext,
        options: TickOptions,
    ) -> Result<Result<TickReport, Failure>, CallError> {
        self.call(
            &self.reaper,
            async |c: &ReaperComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_reaper().call_tick(store, ctx, options).await
            },
        )
        .await
    }

    /// `reaper.renew-lease`.
    pub async fn renew_lease(&self, ctx: &CallContext) -> Result<Result<(), Failure>, CallError> {
        self.call(
            &self.reaper,
            async |c: &ReaperComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_reaper().call_renew_lease(store, ctx).await
            },
        )
        .await
    }
}

/// The first line of a trap, without wasmtime's backtrace: enough for a client's message.
fn trap_reason(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    text.lines().next().unwrap_or("trap").to_owned()
}
