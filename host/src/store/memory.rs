//! The embedded in-memory store: Redis' data structures (strings, hashes, sets, sorted
//! sets, TTLs) with Redis' semantics for the operations the components use.
//!
//! The keyspace is split into shards by hash tag, so a batch (which has one tag) locks one
//! shard and runs under that lock: atomic, like a Lua script on one Redis Cluster slot.
//! Batches of different rooms run in parallel. Before applying anything a batch is checked
//! for keys of the wrong type, so a rejected batch leaves no partial write behind.
//!
//! Expiry follows the host's [`Clock`]: expired keys read as absent at once and are freed
//! by [`MemoryStore::sweep`], which the host runs periodically.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;

use super::{
    Batch, BatchOutcome, Guard, Op, Reply, Store, StoreError, StoreFuture, batch_tag, guard_key,
    op_key,
};
use crate::config::Clock;

/// Shards of the keyspace: enough that two cores rarely contend, few enough to sweep fast.
const SHARDS: usize = 64;

/// The embedded store.
pub struct MemoryStore {
    clock: Clock,
    /// Each shard owns the keys whose hash tag hashes to it; a batch holds one shard's
    /// lock for its whole run and never takes a second.
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
}

struct Entry {
    value: Value,
    /// Clock time (ms) at which the key disappears.
    expires_at: Option<u64>,
}

enum Value {
    Str(String),
    Hash(HashMap<String, String>),
    Set(HashSet<String>),
    Zset(Zset),
}

/// A sorted set: scores by member, and members ordered by (score, member) as Redis orders
/// them.
#[derive(Default)]
struct Zset {
    scores: HashMap<String, i64>,
    order: BTreeSet<(i64, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Str,
    Hash,
    Set,
    Zset,
}

impl Value {
    fn kind(&self) -> Kind {
        match self {
            Value::Str(_) => Kind::Str,
            Value::Hash(_) => Kind::Hash,
            Value::Set(_) => Kind::Set,
            Value::Zset(_) => Kind::Zset,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::Zset(z) => z.scores.is_empty(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Value::Str(_) => 1,
            Value::Hash(h) => h.len(),
            Value::Set(s) => s.len(),
            Value::Zset(z) => z.scores.len(),
        }
    }
}

impl MemoryStore {
    /// An empty store on `clock`.
    pub fn new(clock: Clock) -> Self {
        MemoryStore {
            clock,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, tag: &str) -> &Mutex<Shard> {
        let mut hasher = DefaultHasher::new();
        tag.hash(&mut hasher);
        // The modulo keeps the index below SHARDS, so the cast and the index are in range.
        let index = (hasher.finish() % SHARDS as u64) as usize;
        &self.shards[index]
    }

    /// Runs batches now; the synchronous core of [`Store::execute`].
    pub fn execute_now(&self, batches: Vec<Batch>) -> Result<Vec<BatchOutcome>, StoreError> {
        let now = self.clock.now_ms();
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in batches {
            let Some(tag) = batch_tag(&batch)? else {
                outcomes.push(BatchOutcome::Applied(Vec::new()));
                continue;
            };
            let mut shard = self.shard(tag).lock();
            outcomes.push(shard.run(batch, now)?);
        }
        Ok(outcomes)
    }

    /// Frees expired keys; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock();
                let before = shard.entries.len();
                shard
                    .entries
                    .retain(|_, entry| entry.expires_at.is_none_or(|at| at > now));
                before - shard.entries.len()
            })
            .sum()
    }

    /// How many keys are held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().entries.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &SHARDS)
            .finish_non_exhaustive()
    }
}

impl Store for MemoryStore {
    fn execute(
        &self,
        batches: Vec<Batch>,
    ) -> StoreFuture<'_, Result<Vec<BatchOutcome>, StoreError>> {
        let result = self.execute_now(batches);
        Box::pin(std::future::ready(result))
    }

    fn ping(&self) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// A stored number as Redis' scripts read it (`tonumber`): a double, none when not a number.
fn as_double(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
}

fn wrong_type(key: &str, found: Kind, wanted: Kind) -> StoreError {
    StoreError::Rejected(format!(
        "WRONGTYPE: key {key:?} holds a {found:?}, the operation needs a {wanted:?}"
    ))
}

/// What kind an op needs its key to be, and what kind the key has after it.
fn op_kinds(op: &Op) -> (Option<Kind>, Effect) {
    match op {
        Op::Get(_) => (Some(Kind::Str), Effect::Keep),
        Op::Set(_) => (None, Effect::Becomes(Kind::Str)),
        Op::Del(_) => (None, Effect::Removed),
        Op::Pexpire(_) => (None, Effect::Keep),
        Op::Hget(_) | Op::Hmget(_) | Op::Hgetall(_) | Op::Hdel(_) => {
            (Some(Kind::Hash), Effect::Keep)
        }
        Op::Hset(_) => (Some(Kind::Hash), Effect::Becomes(Kind::Hash)),
        Op::Srem(_) | Op::Smembers(_) | Op::Scard(_) => (Some(Kind::Set), Effect::Keep),
        Op::Sadd(_) => (Some(Kind::Set), Effect::Becomes(Kind::Set)),
        Op::Zrem(_)
        | Op::ZrangeByScore(_)
        | Op::Zscore(_)
        | Op::ZremRangeByScore(_)
        | Op::ZrangeWithScores(_)
        | Op::Zcard(_) => (Some(Kind::Zset), Effect::Keep),
        Op::Zadd(_) | Op::Zincrby(_) | Op::Zappend(_) => {
            (Some(Kind::Zset), Effect::Becomes(Kind::Zset))
        }
        Op::Hstrlen(_) => (Some(Kind::Hash), Effect::Keep),
    }
}

enum Effect {
    Keep,
    Becomes(Kind),
    Removed,
}

fn guard_kind(guard: &Guard) -> Option<Kind> {
    match guard {
        Guard::Exists(_) | Guard::Absent(_) | Guard::SizeBelow(_) => None,
        Guard::ValueIs(_) => Some(Kind::Str),
        Guard::FieldIs(_) | Guard::FieldAtMost(_) | Guard::FieldAtLeast(_) => Some(Kind::Hash),
        Guard::ScoreAtMost(_) | Guard::ScoreAbsentOrBelow(_) => Some(Kind::Zset),
    }
}

impl Shard {
    /// The live entry at `key`, dropping it first if it has expired.
    fn live(&mut self, key: &str, now: u64) -> Option<&mut Entry> {
        let expired = self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires_at.is_some_and(|at| at <= now));
        if expired {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn kind_of(&mut self, key: &str, now: u64) -> Option<Kind> {
        self.live(key, now).map(|entry| entry.value.kind())
    }

    /// Refuses the batch if any op or guard would meet a key of the wrong type, following
    /// the kinds the ops themselves create and remove.
    fn check_types(&mut self, batch: &Batch, now: u64) -> Result<(), StoreError> {
        for guard in &batch.guards {
            let key = guard_key(guard);
            if let (Some(wanted), Some(found)) = (guard_kind(guard), self.kind_of(key, now))
                && wanted != found
            {
                return Err(wrong_type(key, found, wanted));
            }
        }
        let mut kinds: HashMap<&str, Option<Kind>> = HashMap::new();
        for op in &batch.ops {
            let key = op_key(op);
            let current = match kinds.get(key) {
                Some(kind) => *kind,
                None => self.kind_of(key, now),
            };
            let (wanted, effect) = op_kinds(op);
            if let (Some(wanted), Some(found)) = (wanted, current)
                && wanted != found
            {
                return Err(wrong_type(key, found, wanted));
            }
            match effect {
                Effect::Keep => {}
                Effect::Becomes(kind) => {
                    kinds.insert(key, Some(kind));
                }
                Effect::Removed => {
                    kinds.insert(key, None);
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, batch: Batch, now: u64) -> Result<BatchOutcome, StoreError> {
        self.check_types(&batch, now)?;
        for (index, guard) in batch.guards.iter().enumerate() {
            if !self.holds(guard, now) {
                // The index is below the guard count, which a WIT list bounds by u32.
                return Ok(BatchOutcome::Refused(
                    u32::try_from(index).unwrap_or(u32::MAX),
                ));
            }
        }
        let replies = batch
            .ops
            .into_iter()
            .map(|op| self.apply(op, now))
            .collect();
        Ok(BatchOutcome::Applied(replies))
    }

    fn holds(&mut self, guard: &Guard, now: u64) -> bool {
        match guard {
            Guard::Exists(key) => self.live(key, now).is_some(),
            Guard::Absent(key) => self.live(key, now).is_none(),
            Guard::ValueIs(g) => {
                let current = match self.live(&g.key, now).map(|e| &e.value) {
                    Some(Value::Str(s)) => Some(s.as_str()),
                    _ => None,
                };
                current == g.value.as_deref()
            }
            Guard::FieldIs(g) => self.field(&g.key, &g.field, now) == g.value.as_deref(),
            // Numbers compare as Redis' scripts compare them (`tonumber`: doubles), so both
            // stores give the same answer for any text, even past 2^53.
            Guard::FieldAtMost(g) => self
                .field(&g.key, &g.field, now)
                .and_then(as_double)
                .is_some_and(|v| v <= g.bound as f64),
            Guard::FieldAtLeast(g) => self
                .field(&g.key, &g.field, now)
                .and_then(as_double)
                .is_some_and(|v| v >= g.bound as f64),
            Guard::SizeBelow(g) => {
                let len = self.live(&g.key, now).map_or(0, |e| e.value.len());
                len < usize::try_from(g.limit).unwrap_or(usize::MAX)
            }
            Guard::ScoreAtMost(g) => match self.live(&g.key, now).map(|e| &e.value) {
                Some(Value::Zset(z)) => z.scores.get(&g.member).is_some_and(|s| *s <= g.bound),
                _ => false,
            },
            Guard::ScoreAbsentOrBelow(g) => match self.live(&g.key, now).map(|e| &e.value) {
                Some(Value::Zset(z)) => z.scores.get(&g.member).is_none_or(|s| *s < g.bound),
                _ => true,
            },
        }
    }

    /// The sorted set at `key`, if there is one.
    fn zset(&mut self, key: &str, now: u64) -> Option<&mut Zset> {
        match self.live(key, now).map(|e| &mut e.value) {
            Some(Value::Zset(z)) => Some(z),
            _ => None,
        }
    }

    fn field(&mut self, key: &str, field: &str, now: u64) -> Option<&str> {
        match self.live(key, now).map(|e| &e.value) {
            Some(Value::Hash(h)) => h.get(field).map(String::as_str),
            _ => None,
        }
    }

    /// The entry at `key`, created empty with `make` when absent. Types were checked.
    fn entry(&mut self, key: String, now: u64, make: fn() -> Value) -> &mut Entry {
        // Drops an expired entry first, so the key starts afresh (without its old TTL).
        self.live(&key, now);
        self.entries.entry(key).or_insert_with(|| Entry {
            value: make(),
            expires_at: None,
        })
    }

    /// Removes `key` when its collection became empty, as Redis does.
    fn drop_if_empty(&mut self, key: &str) {
        if self.entries.get(key).is_some_and(|e| e.value.is_empty()) {
            self.entries.remove(key);
        }
    }

    fn apply(&mut self, op: Op, now: u64) -> Reply {
        match op {
            Op::Get(key) => match self.live(&key, now).map(|e| &e.value) {
                Some(Value::Str(s)) => Reply::Text(s.clone()),
                _ => Reply::None,
            },
            Op::Set(o) => {
                self.entries.insert(
                    o.key,
                    Entry {
                        value: Value::Str(o.value),
                        expires_at: o.ttl_ms.map(|ttl| now.saturating_add(ttl)),
                    },
                );
                Reply::None
            }
            Op::Del(key) => {
                let existed = self.live(&key, now).is_some();
                self.entries.remove(&key);
                Reply::Int(i64::from(existed))
            }
            Op::Pexpire(o) => match self.live(&o.key, now) {
                Some(entry) => {
                    entry.expires_at = Some(now.saturating_add(o.ttl_ms));
                    Reply::Int(1)
                }
                None => Reply::Int(0),
            },
            Op::Hget(o) => match self.field(&o.key, &o.field, now) {
                Some(v) => Reply::Text(v.to_owned()),
                None => Reply::None,
            },
            Op::Hmget(o) => {
                let texts = match self.live(&o.key, now).map(|e| &e.value) {
                    Some(Value::Hash(h)) => o.fields.iter().map(|f| h.get(f).cloned()).collect(),
                    _ => vec![None; o.fields.len()],
                };
                Reply::Texts(texts)
            }
            Op::Hgetall(key) => match self.live(&key, now).map(|e| &e.value) {
                Some(Value::Hash(h)) => {
                    let mut pairs: Vec<(String, String)> =
                        h.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    pairs.sort();
                    Reply::Pairs(pairs)
                }
                _ => Reply::Pairs(Vec::new()),
            },
            Op::Hset(o) => {
                let mut added = 0;
                if let Value::Hash(h) =
                    &mut self.entry(o.key, now, || Value::Hash(HashMap::new())).value
                {
                    for (field, value) in o.entries {
                        added += i64::from(h.insert(field, value).is_none());
                    }
                }
                Reply::Int(added)
            }
            Op::Hdel(o) => {
                let mut removed = 0;
                if let Some(Value::Hash(h)) = self.live(&o.key, now).map(|e| &mut e.value) {
                    for field in &o.fields {
                        removed += i64::from(h.remove(field).is_some());
                    }
                }
                self.drop_if_empty(&o.key);
                Reply::Int(removed)
            }
            Op::Sadd(o) => {
                let mut added = 0;
                if let Value::Set(s) =
                    &mut self.entry(o.key, now, || Value::Set(HashSet::new())).value
                {
                    for member in o.members {
                        added += i64::from(s.insert(member));
                    }
                }
                Reply::Int(added)
            }
            Op::Srem(o) => {
                let mut removed = 0;
                if let Some(Value::Set(s)) = self.live(&o.key, now).map(|e| &mut e.value) {
                    for member in &o.members {
                        removed += i64::from(s.remove(member));
                    }
                }
                self.drop_if_empty(&o.key);
                Reply::Int(removed)
            }
            Op::Smembers(key) => match self.live(&key, now).map(|e| &e.value) {
                Some(Value::Set(s)) => Reply::Members(s.iter().cloned().collect()),
                _ => Reply::Members(Vec::new()),
            },
            Op::Scard(key) => {
                let len = self.live(&key, now).map_or(0, |e| e.value.len());
                Reply::Int(i64::try_from(len).unwrap_or(i64::MAX))
            }
            Op::Zadd(o) => {
                let mut added = 0;
                if let Value::Zset(z) = &mut self
                    .entry(o.key, now, || Value::Zset(Zset::default()))
                    .value
                {
                    for (member, score) in o.entries {
                        match z.scores.insert(member.clone(), score) {
                            Some(old) => {
                                z.order.remove(&(old, member.clone()));
                            }
                            None => added += 1,
                        }
                        z.order.insert((score, member));
                    }
                }
                Reply::Int(added)
            }
            Op::Zrem(o) => {
                let mut removed = 0;
                if let Some(Value::Zset(z)) = self.live(&o.key, now).map(|e| &mut e.value) {
                    for member in o.members {
                        if let Some(score) = z.scores.remove(&member) {
                            z.order.remove(&(score, member));
                            removed += 1;
                        }
                    }
                }
                self.drop_if_empty(&o.key);
                Reply::Int(removed)
            }
            Op::Zscore(o) => match self.zset(&o.key, now).and_then(|z| z.scores.get(&o.member)) {
                Some(score) => Reply::Int(*score),
                None => Reply::None,
            },
            Op::Zincrby(o) => {
                let mut next = o.delta;
                if let Value::Zset(z) = &mut self
                    .entry(o.key, now, || Value::Zset(Zset::default()))
                    .value
                {
                    let old = z.scores.get(&o.member).copied();
                    if let Some(old) = old {
                        z.order.remove(&(old, o.member.clone()));
                        next = old.saturating_add(o.delta);
                    }
                    z.scores.insert(o.member.clone(), next);
                    z.order.insert((next, o.member));
                }
                Reply::Int(next)
            }
            Op::ZremRangeByScore(o) => {
                let mut removed = 0;
                if let Some(z) = self.zset(&o.key, now)
                    && o.min <= o.max
                {
                    let doomed: Vec<(i64, String)> = z
                        .order
                        .range((o.min, String::new())..)
                        .take_while(|(score, _)| *score <= o.max)
                        .cloned()
                        .collect();
                    for (score, member) in doomed {
                        z.order.remove(&(score, member.clone()));
                        z.scores.remove(&member);
                        removed += 1;
                    }
                }
                self.drop_if_empty(&o.key);
                Reply::Int(removed)
            }
            Op::Zcard(key) => {
                let len = self.zset(&key, now).map_or(0, |z| z.scores.len());
                Reply::Int(i64::try_from(len).unwrap_or(i64::MAX))
            }
            Op::Hstrlen(o) => {
                let len = self.field(&o.key, &o.field, now).map_or(0, str::len);
                Reply::Int(i64::try_from(len).unwrap_or(i64::MAX))
            }
            Op::Zappend(o) => {
                let mut next = 1;
                if let Value::Zset(z) = &mut self
                    .entry(o.key, now, || Value::Zset(Zset::default()))
                    .value
                {
                    if let Some(old) = z.scores.get(&o.counter).copied() {
                        z.order.remove(&(old, o.counter.clone()));
                        next = old.saturating_add(1);
                    }
                    z.scores.insert(o.counter.clone(), next);
                    z.order.insert((next, o.counter));
                    for member in o.members {
                        if let Some(old) = z.scores.insert(member.clone(), next) {
                            z.order.remove(&(old, member.clone()));
                        }
                        z.order.insert((next, member));
                    }
                    let floor = next.saturating_sub(i64::from(o.keep.max(1)));
                    while let Some((score, member)) = z.order.first().cloned()
                        && score <= floor
                    {
                        z.order.pop_first();
                        z.scores.remove(&member);
                    }
                }
                Reply::Int(next)
            }
            Op::ZrangeWithScores(o) => match self.live(&o.key, now).map(|e| &e.value) {
                Some(Value::Zset(z)) if o.min <= o.max => Reply::Pairs(
                    z.order
                        .range((o.min, String::new())..)
                        .take_while(|(score, _)| *score <= o.max)
                        .take(usize::try_from(o.limit).unwrap_or(usize::MAX))
                        .map(|(score, member)| (member.clone(), score.to_string()))
                        .collect(),
                ),
                _ => Reply::Pairs(Vec::new()),
            },
            Op::ZrangeByScore(o) => match self.live(&o.key, now).map(|e| &e.value) {
                Some(Value::Zset(z)) if o.min <= o.max => Reply::Members(
                    z.order
                        .range((o.min, String::new())..)
                        .take_while(|(score, _)| *score <= o.max)
                        .take(usize::try_from(o.limit).unwrap_or(usize::MAX))
                        .map(|(_, member)| member.clone())
                        .collect(),
                ),
                _ => Reply::Members(Vec::new()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::bindings::store::{
        BoundGuard, ExpireOp, FieldGuard, FieldOp, HsetOp, MembersOp, ScoreGuard, SetOp, SizeGuard,
        ValueGuard, ZaddOp, ZrangeOp,
    };

    const K: &str = "t:{a}:h";

    fn batch(guards: Vec<Guard>, ops: Vec<Op>) -> Batch {
        Batch { guards, ops }
    }

    fn run(store: &MemoryStore, b: Batch) -> BatchOutcome {
        store.execute_now(vec![b]).unwrap().pop().unwrap()
    }

    fn replies(store: &MemoryStore, ops: Vec<Op>) -> Vec<Reply> {
        match run(store, batch(Vec::new(), ops)) {
            BatchOutcome::Applied(replies) => replies,
            BatchOutcome::Refused(i) => panic!("unguarded batch refused at {i}"),
        }
    }

    fn hset(key: &str, entries: &[(&str, &str)]) -> Op {
        Op::Hset(HsetOp {
            key: key.into(),
            entries: entries
                .iter()
                .map(|(f, v)| ((*f).into(), (*v).into()))
                .collect(),
        })
    }

    fn hget(key: &str, field: &str) -> Op {
        Op::Hget(FieldOp {
            key: key.into(),
            field: field.into(),
        })
    }

    fn members(key: &str, members: &[&str]) -> MembersOp {
        MembersOp {
            key: key.into(),
            members: members.iter().map(|m| (*m).into()).collect(),
        }
    }

    /// Guards decide all-or-nothing; the failing guard's index is reported.
    #[test]
    fn guards_gate_the_whole_batch() {
        let store = MemoryStore::new(Clock::manual(0));
        let outcome = run(
            &store,
            batch(
                vec![Guard::Absent(K.into())],
                vec![hset(K, &[("epoch", "5")])],
            ),
        );
        assert_eq!(outcome, BatchOutcome::Applied(vec![Reply::Int(1)]));
        let bound = |bound| BoundGuard {
            key: K.into(),
            field: "epoch".into(),
            bound,
        };
        let refused = run(
            &store,
            batch(
                vec![Guard::Exists(K.into()), Guard::FieldAtMost(bound(4))],
                vec![hset(K, &[("epoch", "4")])],
            ),
        );
        assert_eq!(refused, BatchOutcome::Refused(1));
        assert_eq!(
            replies(&store, vec![hget(K, "epoch")]),
            vec![Reply::Text("5".into())]
        );
        let held = run(
            &store,
            batch(
                vec![Guard::FieldAtMost(bound(5)), Guard::FieldAtLeast(bound(5))],
                vec![hget(K, "epoch")],
            ),
        );
        assert_eq!(held, BatchOutcome::Applied(vec![Reply::Text("5".into())]));
        let field_is = |value: Option<&str>| {
            Guard::FieldIs(FieldGuard {
                key: K.into(),
                field: "state".into(),
                value: value.map(str::to_owned),
            })
        };
        assert!(matches!(
            run(&store, batch(vec![field_is(None)], Vec::new())),
            BatchOutcome::Applied(_)
        ));
        assert_eq!(
            run(&store, batch(vec![field_is(Some("{}"))], Vec::new())),
            BatchOutcome::Refused(0)
        );
    }

    /// Keys expire on the store's clock; expired keys read as absent and are swept.
    #[test]
    fn ttls_follow_the_clock() {
        let clock = Clock::manual(1_000);
        let store = MemoryStore::new(clock.clone());
        let lock = "t:{a}:lock";
        replies(
            &store,
            vec![
                Op::Set(SetOp {
                    key: lock.into(),
                    value: "ada".into(),
                    ttl_ms: Some(100),
                }),
                hset(K, &[("f", "1")]),
                Op::Pexpire(ExpireOp {
                    key: K.into(),
                    ttl_ms: 200,
                }),
            ],
        );
        let value_is = Guard::ValueIs(ValueGuard {
            key: lock.into(),
            value: Some("ada".into()),
        });
        assert!(matches!(
            run(&store, batch(vec![value_is.clone()], Vec::new())),
            BatchOutcome::Applied(_)
        ));
        clock.advance(Duration::from_millis(100));
        assert_eq!(
            run(&store, batch(vec![value_is], Vec::new())),
            BatchOutcome::Refused(0)
        );
        assert_eq!(
            replies(&store, vec![Op::Get(lock.into())]),
            vec![Reply::None]
        );
        assert_eq!(
            replies(&store, vec![hget(K, "f")]),
            vec![Reply::Text("1".into())]
        );
        clock.advance(Duration::from_millis(100));
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
    }

    /// Sorted sets order by score then member, update scores in place, and honour limits.
    #[test]
    fn sorted_sets() {
        let store = MemoryStore::new(Clock::manual(0));
        let z = "t:{a}:z";
        let zadd = |member: &str, score| {
            Op::Zadd(ZaddOp {
                key: z.into(),
                entries: vec![(member.into(), score)],
            })
        };
        let range = |min, max, limit| {
            Op::ZrangeByScore(ZrangeOp {
                key: z.into(),
                min,
                max,
                limit,
            })
        };
        let got = replies(
            &store,
            vec![
                zadd("c", 3),
                zadd("b", 1),
                zadd("a", 1),
                zadd("c", 0),
                range(i64::MIN, 1, 10),
                range(i64::MIN, i64::MAX, 2),
            ],
        );
        assert_eq!(got[3], Reply::Int(0), "re-adding updates the score");
        assert_eq!(
            got[4],
            Reply::Members(vec!["c".into(), "a".into(), "b".into()])
        );
        assert_eq!(got[5], Reply::Members(vec!["c".into(), "a".into()]));
        let score = |bound| {
            Guard::ScoreAtMost(ScoreGuard {
                key: z.into(),
                member: "b".into(),
                bound,
            })
        };
        assert_eq!(
            run(&store, batch(vec![score(0)], Vec::new())),
            BatchOutcome::Refused(0)
        );
        assert!(matches!(
            run(&store, batch(vec![score(1)], Vec::new())),
            BatchOutcome::Applied(_)
        ));
        replies(&store, vec![Op::Zrem(members(z, &["a", "b", "c"]))]);
        assert!(store.is_empty(), "an emptied sorted set is removed");
    }

    /// Sets count toward size guards and vanish when emptied.
    #[test]
    fn sets_and_size_guards() {
        let store = MemoryStore::new(Clock::manual(0));
        let s = "t:{a}:s";
        let below = |limit| {
            Guard::SizeBelow(SizeGuard {
                key: s.into(),
                limit,
            })
        };
        assert!(matches!(
            run(
                &store,
                batch(vec![below(1)], vec![Op::Sadd(members(s, &["x", "y"]))])
            ),
            BatchOutcome::Applied(_)
        ));
        assert_eq!(
            run(&store, batch(vec![below(2)], Vec::new())),
            BatchOutcome::Refused(0)
        );
        let got = replies(
            &store,
            vec![
                Op::Scard(s.into()),
                Op::Srem(members(s, &["x", "y", "z"])),
                Op::Smembers(s.into()),
            ],
        );
        assert_eq!(
            got,
            vec![Reply::Int(2), Reply::Int(2), Reply::Members(Vec::new())]
        );
        assert!(matches!(
            run(&store, batch(vec![Guard::Absent(s.into())], Vec::new())),
            BatchOutcome::Applied(_)
        ));
    }

    /// A batch that would meet a key of the wrong type is rejected before any write.
    #[test]
    fn wrong_types_reject_without_partial_writes() {
        let store = MemoryStore::new(Clock::manual(0));
        let result = store.execute_now(vec![batch(
            Vec::new(),
            vec![hset(K, &[("f", "1")]), Op::Sadd(members(K, &["x"]))],
        )]);
        assert!(matches!(result, Err(StoreError::Rejected(why)) if why.contains("WRONGTYPE")));
        assert!(store.is_empty());
        // Deleting and re-creating as another type inside one batch is fine.
        replies(
            &store,
            vec![
                hset(K, &[("f", "1")]),
                Op::Del(K.into()),
                Op::Sadd(members(K, &["x"])),
            ],
        );
    }

    /// Batches mixing hash tags are rejected.
    #[test]
    fn cross_slot_batches_are_rejected() {
        let store = MemoryStore::new(Clock::manual(0));
        let result = store.execute_now(vec![batch(
            Vec::new(),
            vec![Op::Get("{a}x".into()), Op::Get("{b}y".into())],
        )]);
        assert!(matches!(result, Err(StoreError::Rejected(_))));
    }
}
