//! The component runtime: one wasmtime engine, four component slots (presence, metadata,
//! reaper, policy), and the sandbox around every call. Components can be replaced while clients
//! stay connected.
//!
//! **Versions.** A slot holds its current version (and the previous one, for rollback).
//! A version is a compiled, type-checked component with its own pool of live instances. A
//! call takes the slot's current version once and runs on it to the end; a swap replaces
//! the current version atomically, so calls in flight finish on the old one and new calls
//! take the new one, and the old version (and its instances) is freed when its last call
//! ends. No socket is involved.
//!
//! **Swaps** ([`Runtime::swap`]) compile off the async executor (or load a cached
//! artifact), type-check the component against its world (a component that lacks the
//! export, or imports something the host does not provide, is refused with the reason),
//! and instantiate it once as a trial (its start-up code runs) before it may serve.
//!
//! **The sandbox**, per call, with limits per slot: a wall-clock deadline enforced twice
//! (an epoch callback traps wasm that runs past it and yields to the scheduler every epoch
//! tick, so a loop cannot hog a worker thread; a timeout drops a call stuck in an import),
//! a linear-memory cap (growing past it traps), and failure isolation: a trap, a missed
//! deadline or a cap hit fails that call with `COMPONENT_FAILED`, the instance is
//! discarded and the guest's output logged.
//!
//! **Guard rails.** For a probation window after a swap, a version whose calls fail (traps,
//! deadlines) at or above a rate, over a minimum number of calls, is rolled back by itself.

pub mod bindings;
pub mod cache;
mod host;
mod watch;

pub use watch::watch;

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, UpdateDeadline};

use bindings::metadata::{MetadataComponent, MetadataComponentPre};
use bindings::policy::{PolicyComponent, PolicyComponentPre};
use bindings::presence::{PresenceComponent, PresenceComponentPre};
use bindings::reaper::{ReaperComponent, ReaperComponentPre};
use bindings::types::{
    Action, CallContext, Channel, ChannelState, Failure, HeartbeatOk, HeartbeatRequest,
    HistoryRequest, JoinRequest, Joined, Left, LockInfo, LockRequest, MessageHistory, NodeLease,
    Occupancy, PublishRequest, Published, ResumeRequest, Resumed, SnapshotPage, SnapshotRequest,
    TickOptions, TickReport, WriteRequest,
};
use cache::{ArtifactCache, Origin};
pub use host::HostState;

use crate::bus::EventSink;
use crate::config::Profiler;
use crate::store::Store;

/// How often the epoch advances: the granularity of deadlines and of a long call's yields.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Linear memories, tables, fiber stacks and core instances the pooling allocator reserves
/// room for, per live component instance. A Rust `wasm32-wasip2` component instantiates a
/// handful of core modules (its own and WASI adapter shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const TABLES_PER_COMPONENT: u32 = 8;

/// Swap and rollback events kept per slot for the admin API.
const EVENTS_KEPT: usize = 32;

/// Idle instances a slot keeps however quiet it is: a lone call never waits for an
/// instantiation.
pub const KEEP_IDLE: usize = 2;

/// The four slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    /// Exports `roster:hub/presence`.
    Presence,
    /// Exports `roster:hub/metadata`.
    Metadata,
    /// Exports `roster:hub/reaper`.
    Reaper,
    /// Exports `roster:hub/policy`.
    Policy,
}

impl SlotName {
    /// Every slot.
    pub const ALL: [SlotName; 4] = [
        SlotName::Presence,
        SlotName::Metadata,
        SlotName::Reaper,
        SlotName::Policy,
    ];

    /// The slot's name, as in URLs and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::Presence => "presence",
            SlotName::Metadata => "metadata",
            SlotName::Reaper => "reaper",
            SlotName::Policy => "policy",
        }
    }
}

impl std::str::FromStr for SlotName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        SlotName::ALL
            .into_iter()
            .find(|slot| slot.as_str() == name)
            .ok_or_else(|| {
                format!("no component slot {name:?}; slots are presence, metadata, reaper, policy")
            })
    }
}

impl std::fmt::Display for SlotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sandbox limits of one slot's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Wall-clock deadline of one call.
    pub deadline: Duration,
    /// Linear-memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// Live instances (= concurrent calls) of the slot.
    pub instances: u32,
}

/// Sandbox limits of every slot.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The presence slot.
    pub presence: SlotLimits,
    /// The metadata slot.
    pub metadata: SlotLimits,
    /// The reaper slot.
    pub reaper: SlotLimits,
    /// The policy slot.
    pub policy: SlotLimits,
}

impl Limits {
    fn all(&self) -> [SlotLimits; 4] {
        [self.presence, self.metadata, self.reaper, self.policy]
    }
}

/// When a swapped-in version is rolled back by itself.
#[derive(Debug, Clone, Copy)]
pub struct GuardRails {
    /// How long after a swap its failures are watched.
    pub window: Duration,
    /// The failure rate (failed calls / calls) that rolls it back.
    pub failure_rate: f64,
    /// Calls needed before the rate is judged.
    pub min_calls: u64,
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

impl Source {
    fn bytes(&self) -> Result<std::borrow::Cow<'static, [u8]>, String> {
        match self {
            Source::Embedded(bytes) => Ok((*bytes).into()),
            Source::File(path) => std::fs::read(path)
                .map(Into::into)
                .map_err(|error| format!("cannot read {}: {error}", path.display())),
        }
    }
}

/// The four components to run.
#[derive(Debug, Clone)]
pub struct Components {
    /// Exports `roster:hub/presence`.
    pub presence: Source,
    /// Exports `roster:hub/metadata`.
    pub metadata: Source,
    /// Exports `roster:hub/reaper`.
    pub reaper: Source,
    /// Exports `roster:hub/policy`.
    pub policy: Source,
}

impl Components {
    /// The components built into this binary.
    pub fn embedded() -> Self {
        Components {
            presence: Source::Embedded(include_bytes!(env!("ROSTER_PRESENCE_WASM"))),
            metadata: Source::Embedded(include_bytes!(env!("ROSTER_METADATA_WASM"))),
            reaper: Source::Embedded(include_bytes!(env!("ROSTER_REAPER_WASM"))),
            policy: Source::Embedded(include_bytes!(env!("ROSTER_POLICY_WASM"))),
        }
    }

    /// `<dir>/presence.wasm`, `<dir>/metadata.wasm`, `<dir>/reaper.wasm`,
    /// `<dir>/policy.wasm` where present, the embedded build otherwise.
    pub fn from_dir(dir: &Path) -> Self {
        let embedded = Components::embedded();
        let pick = |slot: SlotName, fallback: Source| {
            let path = slot_file(dir, slot);
            if path.is_file() {
                Source::File(path)
            } else {
                fallback
            }
        };
        Components {
            presence: pick(SlotName::Presence, embedded.presence),
            metadata: pick(SlotName::Metadata, embedded.metadata),
            reaper: pick(SlotName::Reaper, embedded.reaper),
            policy: pick(SlotName::Policy, embedded.policy),
        }
    }
}

/// The file of a slot in a components directory.
pub fn slot_file(dir: &Path, slot: SlotName) -> PathBuf {
    dir.join(format!("{slot}.wasm"))
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

/// Why a swap or rollback was refused. The slot keeps serving its current version.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SwapError {
    /// The bytes are not a component, or not one of the slot's world.
    #[error("the {slot} slot refused the component: {reason}")]
    Refused {
        /// The slot.
        slot: SlotName,
        /// Why.
        reason: String,
    },
    /// Nothing to roll back to.
    #[error("the {0} slot has no previous version to roll back to")]
    NoPrevious(SlotName),
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
    /// Calls started (every version).
    pub calls: u64,
    /// Calls that failed with `COMPONENT_FAILED` (every version).
    pub failures: u64,
    /// Live instances of the current version waiting for calls.
    pub idle: usize,
}

/// A version of a slot, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// SHA-256 of the component's bytes.
    pub version: String,
    /// Where it came from (embedded, a file, an upload).
    pub source: String,
    /// When it started serving (ms since the epoch).
    pub loaded_at: u64,
    /// Calls it served.
    pub calls: u64,
    /// Of those, calls that failed (traps, deadlines).
    pub failures: u64,
}

/// A swap, rollback or automatic rollback.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotEvent {
    /// When (ms since the epoch).
    pub at: u64,
    /// `swap`, `rollback` or `auto-rollback`.
    pub kind: &'static str,
    /// The version that stopped serving.
    pub from: String,
    /// The version that serves now.
    pub to: String,
    /// Why, for humans.
    pub detail: String,
}

/// A slot, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotInfo {
    /// The slot.
    pub slot: SlotName,
    /// The version serving now.
    pub current: VersionInfo,
    /// The version a rollback would restore.
    pub previous: Option<VersionInfo>,
    /// Deadline (ms), memory cap (MiB) and instances of the slot's calls.
    pub limits: LimitsInfo,
    /// Recent swaps and rollbacks, newest last.
    pub events: Vec<SlotEvent>,
}

/// A slot's limits, as the admin API shows them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsInfo {
    /// Call deadline, ms.
    pub deadline_ms: u64,
    /// Memory cap, MiB.
    pub memory_mib: u64,
    /// Live instances.
    pub instances: u32,
}

/// A successful swap.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Swapped {
    /// The slot.
    pub slot: SlotName,
    /// The version serving now.
    pub version: String,
    /// The version it replaced.
    pub replaced: String,
    /// Milliseconds from receiving the bytes to serving them.
    pub swap_ms: f64,
    /// Whether the compiled artifact came from the cache.
    pub cached: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A world the host can instantiate: the glue between a generated `*Pre` and the pool.
pub trait World: Sized + Send + Sync + 'static {
    /// The generated pre-instantiated form.
    type Pre: Send + Sync + 'static;
    /// The slot name.
    const SLOT: SlotName;
    /// Type-checks the exports and keeps the `InstancePre`.
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    /// Instantiates into `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut wasmtime::Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;
}

macro_rules! world {
    ($world:ty, $pre:ident, $slot:expr) => {
        impl World for $world {
            type Pre = $pre<HostState>;
            const SLOT: SlotName = $slot;
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

world!(PresenceComponent, PresenceComponentPre, SlotName::Presence);
world!(MetadataComponent, MetadataComponentPre, SlotName::Metadata);
world!(ReaperComponent, ReaperComponentPre, SlotName::Reaper);
world!(PolicyComponent, PolicyComponentPre, SlotName::Policy);

/// A live instance of one version.
struct Instance<W> {
    store: wasmtime::Store<HostState>,
    exports: W,
}

/// One version of a slot: a compiled, type-checked component and its instances.
struct Version<W: World> {
    id: String,
    source: String,
    loaded_at: u64,
    /// When it started serving; none for a version that was there at start-up (no probation).
    swapped_in: Option<Instant>,
    pre: W::Pre,
    /// Idle instances of this version; calls pop one and push it back when they succeed.
    idle: Mutex<Vec<Instance<W>>>,
    /// The fewest idle instances seen since the last trim ([`Runtime::trim_idle`]): that
    /// many were never needed.
    low_water: AtomicUsize,
    calls: AtomicU64,
    failures: AtomicU64,
    /// Set once the guard rails rolled this version back.
    rolled_back: AtomicBool,
}

impl<W: World> Version<W> {
    fn info(&self) -> VersionInfo {
        VersionInfo {
            version: self.id.clone(),
            source: self.source.clone(),
            loaded_at: self.loaded_at,
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// One component slot.
struct Slot<W: World> {
    limits: SlotLimits,
    /// One permit per live instance: bounds the slot's concurrent calls, whatever the
    /// version.
    permits: Semaphore,
    /// The version new calls take. Swapped atomically.
    current: ArcSwap<Version<W>>,
    /// The version a rollback restores. Its lock also serialises swaps and rollbacks of the
    /// slot.
    previous: Mutex<Option<Arc<Version<W>>>>,
    events: Mutex<VecDeque<SlotEvent>>,
    calls: AtomicU64,
    failures: AtomicU64,
}

impl<W: World> Slot<W> {
    fn stats(&self) -> SlotStats {
        SlotStats {
            slot: W::SLOT.as_str(),
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            idle: self.current.load().idle.lock().len(),
        }
    }

    fn record(&self, event: SlotEvent) {
        let mut events = self.events.lock();
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    fn info(&self) -> SlotInfo {
        SlotInfo {
            slot: W::SLOT,
            current: self.current.load().info(),
            previous: self.previous.lock().as_ref().map(|v| v.info()),
            limits: LimitsInfo {
                deadline_ms: u64::try_from(self.limits.deadline.as_millis()).unwrap_or(u64::MAX),
                memory_mib: (self.limits.memory_bytes / (1024 * 1024)) as u64,
                instances: self.limits.instances,
            },
            events: self.events.lock().iter().cloned().collect(),
        }
    }

    /// Makes `next` current, keeping the old current as the previous version.
    fn install(&self, next: Arc<Version<W>>, kind: &'static str, detail: String) -> String {
        let mut previous = self.previous.lock();
        let old = self.current.swap(next.clone());
        let replaced = old.id.clone();
        *previous = Some(old);
        self.record(SlotEvent {
            at: now_ms(),
            kind,
            from: replaced.clone(),
            to: next.id.clone(),
            detail,
        });
        replaced
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
    linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
    guard: GuardRails,
    store: Arc<dyn Store>,
    events: Arc<dyn EventSink>,
    presence: Slot<PresenceComponent>,
    metadata: Slot<MetadataComponent>,
    reaper: Slot<ReaperComponent>,
    policy: Slot<PolicyComponent>,
    _ticker: EpochTicker,
}

fn engine(limits: &Limits, profiler: Profiler) -> Result<Engine, RuntimeError> {
    let all = limits.all();
    // Room for every slot's instances twice (old and new version during a swap), plus the
    // trial instance of a swap.
    let total = all
        .iter()
        .map(|l| l.instances)
        .fold(0u32, u32::saturating_add)
        .saturating_mul(2)
        .saturating_add(4);
    let memory = all.iter().map(|l| l.memory_bytes).max().unwrap_or(0);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(total)
        .total_core_instances(total.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(total)
        .total_tables(total.saturating_mul(TABLES_PER_COMPONENT))
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_stacks(total)
        .max_memory_size(memory);
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if profiler == Profiler::Perfmap {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).map_err(|error| RuntimeError::Engine(format!("{error:#}")))
}

/// A new store for one instance of a slot, with its limits and deadline callback.
fn new_store(
    engine: &Engine,
    store: &Arc<dyn Store>,
    events: &Arc<dyn EventSink>,
    limits: SlotLimits,
) -> wasmtime::Store<HostState> {
    let state = HostState::new(Arc::clone(store), Arc::clone(events), limits.memory_bytes);
    let mut store = wasmtime::Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_callback(|context| {
        if Instant::now() >= context.data().deadline {
            Err(wasmtime::format_err!("the call ran past its deadline"))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.data_mut().deadline = Instant::now() + limits.deadline;
    store.set_epoch_deadline(1);
    store
}

impl Runtime {
    /// Compiles (or loads from the artifact cache under `cache_dir`) and type-checks the
    /// components. Takes a while on a cold cache: call it off the async executor.
    pub fn new(
        components: &Components,
        limits: Limits,
        guard: GuardRails,
        cache_dir: Option<&Path>,
        store: Arc<dyn Store>,
        events: Arc<dyn EventSink>,
        profiler: Profiler,
    ) -> Result<Self, RuntimeError> {
        let engine = engine(&limits, profiler)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| RuntimeError::Engine(format!("linking WASI: {error:#}")))?;
        PresenceComponent::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| {
            state
        })
        .map_err(|error| RuntimeError::Engine(format!("linking Roster's imports: {error:#}")))?;
        let cache = cache_dir.map(|dir| ArtifactCache::new(dir, &engine));
        let ticker = EpochTicker::start(&engine)?;
        let presence = Self::first_slot(
            &engine,
            &linker,
            cache.as_ref(),
            &components.presence,
            limits.presence,
        )?;
        let metadata = Self::first_slot(
            &engine,
            &linker,
            cache.as_ref(),
            &components.metadata,
            limits.metadata,
        )?;
        let reaper = Self::first_slot(
            &engine,
            &linker,
            cache.as_ref(),
            &components.reaper,
            limits.reaper,
        )?;
        let policy = Self::first_slot(
            &engine,
            &linker,
            cache.as_ref(),
            &components.policy,
            limits.policy,
        )?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            guard,
            store,
            events,
            presence,
            metadata,
            reaper,
            policy,
            _ticker: ticker,
        })
    }

    fn first_slot<W: World>(
        engine: &Engine,
        linker: &Linker<HostState>,
        cache: Option<&ArtifactCache>,
        source: &Source,
        limits: SlotLimits,
    ) -> Result<Slot<W>, RuntimeError> {
        let failed = |reason: String| RuntimeError::Load {
            slot: W::SLOT.as_str(),
            source_name: source.to_string(),
            reason,
        };
        let bytes = source.bytes().map_err(failed)?;
        let version = prepare::<W>(engine, linker, cache, &bytes, source.to_string(), None)
            .map_err(failed)?;
        Ok(Slot {
            limits,
            permits: Semaphore::new(usize::try_from(limits.instances).unwrap_or(usize::MAX)),
            current: ArcSwap::from_pointee(version),
            previous: Mutex::new(None),
            events: Mutex::new(VecDeque::new()),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Drops the idle instances no call needed since the last trim (keeping
    /// [`KEEP_IDLE`] per slot), so a node's memory follows its load: each instance holds
    /// the linear memory its calls touched, and the pooling allocator returns a dropped
    /// instance's pages to the system. Returns how many were dropped.
    pub fn trim_idle(&self) -> usize {
        fn trim<W: World>(slot: &Slot<W>) -> usize {
            let version = slot.current.load();
            let unused = version.low_water.swap(usize::MAX, Ordering::Relaxed);
            let dropped: Vec<Instance<W>> = {
                let mut idle = version.idle.lock();
                let surplus = unused.min(idle.len().saturating_sub(KEEP_IDLE));
                let keep = idle.len() - surplus;
                idle.drain(keep..).collect()
            };
            // Dropped here, outside the lock.
            dropped.len()
        }
        trim(&self.presence) + trim(&self.metadata) + trim(&self.reaper) + trim(&self.policy)
    }

    /// Per-slot counters.
    pub fn stats(&self) -> [SlotStats; 4] {
        [
            self.presence.stats(),
            self.metadata.stats(),
            self.reaper.stats(),
            self.policy.stats(),
        ]
    }

    /// Every slot, for the admin API.
    pub fn slots(&self) -> [SlotInfo; 4] {
        [
            self.presence.info(),
            self.metadata.info(),
            self.reaper.info(),
            self.policy.info(),
        ]
    }

    /// Replaces the component of `slot` with `bytes`: compiled off the executor (or loaded
    /// from the cache), type-checked, tried once, then swapped in atomically. On refusal
    /// the slot keeps serving its current version.
    pub async fn swap(
        &self,
        slot: SlotName,
        bytes: Vec<u8>,
        source: String,
    ) -> Result<Swapped, SwapError> {
        match slot {
            SlotName::Presence => self.swap_in(&self.presence, bytes, source).await,
            SlotName::Metadata => self.swap_in(&self.metadata, bytes, source).await,
            SlotName::Reaper => self.swap_in(&self.reaper, bytes, source).await,
            SlotName::Policy => self.swap_in(&self.policy, bytes, source).await,
        }
    }

    /// Restores the previous version of `slot` (the current one becomes the previous).
    pub fn rollback(&self, slot: SlotName) -> Result<Swapped, SwapError> {
        match slot {
            SlotName::Presence => rollback(&self.presence, "rollback", "asked for".into()),
            SlotName::Metadata => rollback(&self.metadata, "rollback", "asked for".into()),
            SlotName::Reaper => rollback(&self.reaper, "rollback", "asked for".into()),
            SlotName::Policy => rollback(&self.policy, "rollback", "asked for".into()),
        }
    }

    /// The version id currently serving `slot`.
    pub fn current_version(&self, slot: SlotName) -> String {
        match slot {
            SlotName::Presence => self.presence.current.load().id.clone(),
            SlotName::Metadata => self.metadata.current.load().id.clone(),
            SlotName::Reaper => self.reaper.current.load().id.clone(),
            SlotName::Policy => self.policy.current.load().id.clone(),
        }
    }

    async fn swap_in<W: World>(
        &self,
        slot: &Slot<W>,
        bytes: Vec<u8>,
        source: String,
    ) -> Result<Swapped, SwapError> {
        let started = Instant::now();
        let refused = |reason: String| SwapError::Refused {
            slot: W::SLOT,
            reason,
        };
        let id = cache::sha256_hex(&bytes);
        if slot.current.load().id == id {
            // Already serving: nothing to do, and the previous version stays the previous.
            return Ok(Swapped {
                slot: W::SLOT,
                version: id.clone(),
                replaced: id,
                swap_ms: started.elapsed().as_secs_f64() * 1000.0,
                cached: true,
            });
        }
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let cache = self.cache.clone();
        let (version, origin) = tokio::task::spawn_blocking(move || {
            let mut origin = Origin::Compiled;
            prepare::<W>(
                &engine,
                &linker,
                cache.as_ref(),
                &bytes,
                source,
                Some(&mut origin),
            )
            .map(|version| (version, origin))
        })
        .await
        .map_err(|error| refused(format!("compiling failed: {error}")))?
        .map_err(refused)?;
        // A trial instance: the component's start-up code runs before it may serve.
        let mut store = new_store(&self.engine, &self.store, &self.events, slot.limits);
        W::instantiate(&version.pre, &mut store)
            .await
            .map_err(|error| refused(format!("it does not instantiate: {:#}", error)))?;
        drop(store);
        let next = Arc::new(version);
        let id = next.id.clone();
        let replaced = slot.install(next, "swap", "a new version".into());
        let swap_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(slot = %W::SLOT, from = %short(&replaced), to = %short(&id), swap_ms, cached = origin == Origin::Cached, "component swapped");
        Ok(Swapped {
            slot: W::SLOT,
            version: id,
            replaced,
            swap_ms,
            cached: origin == Origin::Cached,
        })
    }

    /// Runs `call` on an instance of `slot`'s current version inside the sandbox.
    async fn call<W: World, R>(
        &self,
        slot: &Slot<W>,
        ctx: &CallContext,
        call: impl AsyncFnOnce(&W, &mut wasmtime::Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        slot.calls.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // The semaphore is never closed, so acquiring fails only if it were.
        let _permit = slot
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Instantiate {
                slot: W::SLOT.as_str(),
                reason: "the runtime is shutting down".into(),
            })?;
        // The version is taken once: a swap during the call does not affect it.
        let version = slot.current.load_full();
        version.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_on(slot.limits, &version, ctx.now, call).await;
        crate::metrics::METRICS.component_call(W::SLOT.as_str(), started.elapsed());
        if result.is_err() {
            slot.failures.fetch_add(1, Ordering::Relaxed);
            version.failures.fetch_add(1, Ordering::Relaxed);
            self.judge(slot, &version);
        }
        result
    }

    async fn call_on<W: World, R>(
        &self,
        limits: SlotLimits,
        version: &Version<W>,
        now_ms: u64,
        call: impl AsyncFnOnce(&W, &mut wasmtime::Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let slot = W::SLOT.as_str();
        let idle = {
            let mut idle = version.idle.lock();
            let instance = idle.pop();
            version.low_water.fetch_min(idle.len(), Ordering::Relaxed);
            instance
        };
        let mut instance = match idle {
            Some(instance) => instance,
            None => {
                let mut store = new_store(&self.engine, &self.store, &self.events, limits);
                let exports = W::instantiate(&version.pre, &mut store)
                    .await
                    .map_err(|error| CallError::Instantiate {
                        slot,
                        reason: format!("{error:#}"),
                    })?;
                Instance { store, exports }
            }
        };
        let deadline = limits.deadline;
        // WASI's clocks tell the call's own time, frozen for the call (the host's `now`):
        // the component reads no clock of its own.
        instance.store.data().clock.set(now_ms);
        instance.store.data_mut().deadline = Instant::now() + deadline;
        instance.store.set_epoch_deadline(1);
        let outcome =
            tokio::time::timeout(deadline, call(&instance.exports, &mut instance.store)).await;
        let output = instance.store.data().log.take();
        match outcome {
            Ok(Ok(value)) => {
                if !output.is_empty() {
                    tracing::debug!(slot, output, "component output");
                }
                version.idle.lock().push(instance);
                Ok(value)
            }
            Ok(Err(error)) if Instant::now() >= instance.store.data().deadline => {
                tracing::warn!(slot, version = %short(&version.id), ?deadline, output, "component call ran past its deadline: {error:#}");
                Err(CallError::Deadline { slot, deadline })
            }
            Ok(Err(error)) => {
                tracing::warn!(slot, version = %short(&version.id), output, "component call trapped: {error:#}");
                Err(CallError::Trapped {
                    slot,
                    reason: trap_reason(&error),
                })
            }
            Err(_) => {
                tracing::warn!(slot, version = %short(&version.id), ?deadline, output, "component call timed out in a host import");
                Err(CallError::Deadline { slot, deadline })
            }
        }
    }

    /// The guard rails: rolls a swapped-in version back if, within its probation window,
    /// it failed too often.
    fn judge<W: World>(&self, slot: &Slot<W>, version: &Arc<Version<W>>) {
        let Some(swapped_in) = version.swapped_in else {
            return;
        };
        if swapped_in.elapsed() > self.guard.window || version.rolled_back.load(Ordering::Relaxed) {
            return;
        }
        let calls = version.calls.load(Ordering::Relaxed);
        let failures = version.failures.load(Ordering::Relaxed);
        if calls < self.guard.min_calls
            || (failures as f64) < self.guard.failure_rate * calls as f64
        {
            return;
        }
        if !Arc::ptr_eq(&slot.current.load(), version)
            || version.rolled_back.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let detail = format!(
            "{failures} of {calls} calls failed within {:?} of the swap (threshold {:.0}%)",
            swapped_in.elapsed(),
            self.guard.failure_rate * 100.0
        );
        match rollback(slot, "auto-rollback", detail.clone()) {
            Ok(swapped) => tracing::warn!(
                slot = %W::SLOT,
                from = %short(&version.id),
                to = %short(&swapped.version),
                "rolled back a failing component by itself: {detail}"
            ),
            Err(error) => {
                tracing::error!(slot = %W::SLOT, %error, "a failing component could not be rolled back: {detail}")
            }
        }
    }
}

/// One method per component export, each running the call inside the sandbox of the
/// export's slot: `name(args) -> reply = slot.interface().call_export;`.
macro_rules! component_calls {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty
        = $slot:ident($component:ty).$interface:ident().$export:ident;)*) => {
        impl Runtime {
            $(
                $(#[$doc])*
                pub async fn $name(
                    &self,
                    ctx: &CallContext,
                    $($arg: $ty),*
                ) -> Result<Result<$ret, Failure>, CallError> {
                    self.call(
                        &self.$slot,
                        ctx,
                        async |c: &$component, store: &mut wasmtime::Store<HostState>| {
                            c.$interface().$export(store, ctx, $($arg),*).await
                        },
                    )
                    .await
                }
            )*
        }
    };
}

impl Runtime {
    /// `policy.decide`: whether `principal` may do `action` to `name`. The call's time is
    /// `ctx.now` (the policy takes no context beyond the principal).
    pub async fn decide(
        &self,
        ctx: &CallContext,
        action: Action,
        name: &str,
    ) -> Result<Result<(), Failure>, CallError> {
        self.call(
            &self.policy,
            ctx,
            async |c: &PolicyComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_policy()
                    .call_decide(store, &ctx.principal, action, name)
                    .await
            },
        )
        .await
    }

    /// `presence.heartbeat`: a batch of heartbeats, one result each (the export answers
    /// each request; only the call as a whole can fail).
    pub async fn heartbeat(
        &self,
        ctx: &CallContext,
        requests: &[HeartbeatRequest],
    ) -> Result<Vec<Result<HeartbeatOk, Failure>>, CallError> {
        self.call(
            &self.presence,
            ctx,
            async |c: &PresenceComponent, store: &mut wasmtime::Store<HostState>| {
                c.roster_hub_presence()
                    .call_heartbeat(store, ctx, requests)
                    .await
            },
        )
        .await
    }
}

component_calls! {
    /// `presence.join`.
    join(request: &JoinRequest) -> Joined
        = presence(PresenceComponent).roster_hub_presence().call_join;
    /// `presence.leave`.
    leave(conn_id: &str, binding: Option<u64>) -> Left
        = presence(PresenceComponent).roster_hub_presence().call_leave;
    /// `presence.detach`.
    detach(conn_id: &str, binding: u64) -> ()
        = presence(PresenceComponent).roster_hub_presence().call_detach;
    /// `presence.resume`.
    resume(request: &ResumeRequest) -> Resumed
        = presence(PresenceComponent).roster_hub_presence().call_resume;
    /// `presence.snapshot`.
    snapshot(request: &SnapshotRequest) -> SnapshotPage
        = presence(PresenceComponent).roster_hub_presence().call_snapshot;
    /// `presence.count`.
    count(room_id: &str) -> Occupancy
        = presence(PresenceComponent).roster_hub_presence().call_count;
    /// `metadata.set`.
    metadata_set(request: &WriteRequest) -> ChannelState
        = metadata(MetadataComponent).roster_hub_metadata().call_set;
    /// `metadata.update`.
    metadata_update(request: &WriteRequest) -> ChannelState
        = metadata(MetadataComponent).roster_hub_metadata().call_update;
    /// `metadata.remove`.
    metadata_remove(request: &WriteRequest) -> ChannelState
        = metadata(MetadataComponent).roster_hub_metadata().call_remove;
    /// `metadata.get`.
    metadata_get(channel: &Channel) -> ChannelState
        = metadata(MetadataComponent).roster_hub_metadata().call_get;
    /// `metadata.acquire-lock`.
    acquire_lock(request: &LockRequest) -> LockInfo
        = metadata(MetadataComponent).roster_hub_metadata().call_acquire_lock;
    /// `metadata.release-lock`.
    release_lock(request: &LockRequest) -> ()
        = metadata(MetadataComponent).roster_hub_metadata().call_release_lock;
    /// `messages.publish`.
    publish(request: &PublishRequest) -> Published
        = metadata(MetadataComponent).roster_hub_messages().call_publish;
    /// `messages.history`.
    history(request: &HistoryRequest) -> MessageHistory
        = metadata(MetadataComponent).roster_hub_messages().call_history;
    /// `reaper.tick`.
    tick(options: TickOptions) -> TickReport
        = reaper(ReaperComponent).roster_hub_reaper().call_tick;
    /// `reaper.renew-lease`.
    renew_lease() -> ()
        = reaper(ReaperComponent).roster_hub_reaper().call_renew_lease;
    /// `reaper.nodes`.
    nodes() -> Vec<NodeLease>
        = reaper(ReaperComponent).roster_hub_reaper().call_nodes;
}

/// Compiles (or loads), type-checks and wraps a component as a version of `W`'s slot.
/// `swapped` is filled with where the compiled code came from, for a swap (a version made
/// for a swap is on probation).
fn prepare<W: World>(
    engine: &Engine,
    linker: &Linker<HostState>,
    cache: Option<&ArtifactCache>,
    bytes: &[u8],
    source: String,
    swapped: Option<&mut Origin>,
) -> Result<Version<W>, String> {
    let compiled = cache::compile(engine, cache, bytes)?;
    let instance_pre = linker
        .instantiate_pre(&compiled.component)
        .map_err(|error| format!("its imports do not match the host: {error:#}"))?;
    let pre = W::pre(instance_pre).map_err(|error| {
        format!(
            "it does not export the {} world's interface: {error:#}",
            W::SLOT
        )
    })?;
    tracing::debug!(slot = %W::SLOT, version = %short(&compiled.version), millis = compiled.millis, origin = ?compiled.origin, "component ready");
    let swapped_in = match swapped {
        Some(origin) => {
            *origin = compiled.origin;
            Some(Instant::now())
        }
        None => None,
    };
    Ok(Version {
        id: compiled.version,
        source,
        loaded_at: now_ms(),
        swapped_in,
        pre,
        idle: Mutex::new(Vec::new()),
        low_water: AtomicUsize::new(usize::MAX),
        calls: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        rolled_back: AtomicBool::new(false),
    })
}

/// Restores `slot`'s previous version.
fn rollback<W: World>(
    slot: &Slot<W>,
    kind: &'static str,
    detail: String,
) -> Result<Swapped, SwapError> {
    let started = Instant::now();
    let mut previous = slot.previous.lock();
    let Some(restored) = previous.take() else {
        return Err(SwapError::NoPrevious(W::SLOT));
    };
    let old = slot.current.swap(Arc::clone(&restored));
    let replaced = old.id.clone();
    *previous = Some(old);
    slot.record(SlotEvent {
        at: now_ms(),
        kind,
        from: replaced.clone(),
        to: restored.id.clone(),
        detail,
    });
    Ok(Swapped {
        slot: W::SLOT,
        version: restored.id.clone(),
        replaced,
        swap_ms: started.elapsed().as_secs_f64() * 1000.0,
        cached: true,
    })
}

/// A version id shortened for logs.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// The first line of a trap, without wasmtime's backtrace: enough for a client's message.
fn trap_reason(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    text.lines().next().unwrap_or("trap").to_owned()
}
