//! Running batches against the host's store and reading the replies through typed handles.
//!
//! The rules build a [`Batch`] with a [`BatchBuilder`], which hands back a [`GuardId`] for
//! every guard and a [`Slot`] for every reply they want to read; the reply's type comes from
//! the read that produced it ([`Read`]). After [`execute`], an applied batch's replies are
//! taken through the slots and a refused batch is matched against the guard ids, so adding
//! an op or a guard cannot shift what another reply or refusal is read as. A reply of the
//! wrong shape becomes a `COMPONENT_FAILED` failure, never a panic.

use std::marker::PhantomData;

use crate::bindings::roster::hub::store::{
    Batch, BatchOutcome, BoundGuard, ExpireOp, FieldGuard, FieldOp, FieldsOp, Guard, HsetOp,
    MemberOp, MembersOp, Op, Reply, ScoreGuard, SetOp, SizeGuard, StoreError, ValueGuard, ZaddOp,
    ZappendOp, ZincrOp, ZrangeOp, ZremRangeOp,
};
use crate::fail;
use crate::types::{ErrorCode, Failure};

/// Runs `batches` in one round trip. A store that cannot be reached becomes
/// `STORE_UNAVAILABLE`; a refused call (a bug here) becomes `COMPONENT_FAILED`.
pub fn execute(batches: &[Batch]) -> Result<Vec<Outcome>, Failure> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let outcomes = crate::host::execute(batches).map_err(|error| match error {
        StoreError::Unavailable(why) => fail::failure(
            ErrorCode::StoreUnavailable,
            format!("the store is unavailable: {why}"),
        ),
        StoreError::Rejected(why) => fail::internal(format!("the store refused a batch: {why}")),
    })?;
    if outcomes.len() != batches.len() {
        return Err(fail::internal(format!(
            "the store answered {} batches with {} outcomes",
            batches.len(),
            outcomes.len()
        )));
    }
    Ok(outcomes.into_iter().map(Outcome::from).collect())
}

/// Runs one batch.
pub fn execute_one(batch: Batch) -> Result<Outcome, Failure> {
    let mut outcomes = execute(std::slice::from_ref(&batch))?;
    outcomes
        .pop()
        .ok_or_else(|| fail::internal("the store returned no outcome"))
}

/// Runs one batch that has no guards, so it always applies.
pub fn execute_read(batch: Batch) -> Result<Applied, Failure> {
    execute_one(batch)?.unguarded()
}

/// The index of a guard in its batch, as a refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardId(u32);

/// Where the reply of a [`Read`] lands in its applied batch.
#[derive(Debug)]
pub struct Slot<T> {
    index: usize,
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Slot<T> {}

/// An operation whose reply is read as a `T`.
#[derive(Debug)]
pub struct Read<T> {
    op: Op,
    kind: PhantomData<fn() -> T>,
}

impl<T> Read<T> {
    fn new(op: Op) -> Self {
        Read {
            op,
            kind: PhantomData,
        }
    }
}

/// A batch under construction.
pub struct BatchBuilder {
    batch: Batch,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            batch: Batch {
                guards: Vec::new(),
                ops: Vec::new(),
            },
        }
    }
}

impl BatchBuilder {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a guard; a refusal by it is matched with the returned id.
    pub fn guard(&mut self, guard: Guard) -> GuardId {
        self.batch.guards.push(guard);
        // A batch holds a handful of guards; the count never nears u32::MAX.
        GuardId(u32::try_from(self.batch.guards.len() - 1).unwrap_or(u32::MAX))
    }

    /// Adds a write whose reply (a count) does not matter.
    pub fn op(&mut self, op: Op) {
        self.batch.ops.push(op);
    }

    /// Adds a read; its reply is taken from the applied batch through the returned slot.
    pub fn read<T: ReplyKind>(&mut self, read: Read<T>) -> Slot<T> {
        self.batch.ops.push(read.op);
        Slot {
            index: self.batch.ops.len() - 1,
            kind: PhantomData,
        }
    }

    /// The finished batch.
    pub fn build(self) -> Batch {
        self.batch
    }
}

/// What became of one batch.
#[derive(Debug)]
pub enum Outcome {
    /// Every guard held; the replies, to take through slots.
    Applied(Applied),
    /// This guard failed; nothing was applied.
    Refused(GuardId),
}

impl From<BatchOutcome> for Outcome {
    fn from(outcome: BatchOutcome) -> Self {
        match outcome {
            BatchOutcome::Applied(replies) => Outcome::Applied(Applied {
                replies: replies.into_iter().map(Some).collect(),
            }),
            BatchOutcome::Refused(index) => Outcome::Refused(GuardId(index)),
        }
    }
}

impl Outcome {
    /// The replies of a batch without guards: a refusal is the store breaking its contract.
    pub fn unguarded(self) -> Result<Applied, Failure> {
        match self {
            Outcome::Applied(applied) => Ok(applied),
            Outcome::Refused(_) => Err(fail::internal("an unguarded batch was refused")),
        }
    }

    /// Whether the batch applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied(_))
    }
}

/// The replies of an applied batch.
#[derive(Debug)]
pub struct Applied {
    replies: Vec<Option<Reply>>,
}

impl Applied {
    /// Takes the reply in `slot` (each slot once).
    pub fn take<T: ReplyKind>(&mut self, slot: Slot<T>) -> Result<T, Failure> {
        let reply = self
            .replies
            .get_mut(slot.index)
            .and_then(Option::take)
            .ok_or_else(|| {
                fail::internal(format!("the store sent no reply where {} was due", T::NAME))
            })?;
        T::from_reply(reply)
    }
}

/// A type a reply is read as.
pub trait ReplyKind: Sized {
    /// What the reply is, for messages.
    const NAME: &'static str;
    /// The reply as `Self`, or the shape failure.
    fn from_reply(reply: Reply) -> Result<Self, Failure>;
}

/// A GET / HGET reply.
impl ReplyKind for Option<String> {
    const NAME: &'static str = "a text";
    fn from_reply(reply: Reply) -> Result<Self, Failure> {
        match reply {
            Reply::Text(text) => Ok(Some(text)),
            Reply::None => Ok(None),
            other => Err(shape(Self::NAME, &other)),
        }
    }
}

/// An HMGET reply.
impl ReplyKind for Vec<Option<String>> {
    const NAME: &'static str = "texts";
    fn from_reply(reply: Reply) -> Result<Self, Failure> {
        match reply {
            Reply::Texts(texts) => Ok(texts),
            other => Err(shape(Self::NAME, &other)),
        }
    }
}

/// An SMEMBERS / ZRANGEBYSCORE reply.
impl ReplyKind for Vec<String> {
    const NAME: &'static str = "members";
    fn from_reply(reply: Reply) -> Result<Self, Failure> {
        match reply {
            Reply::Members(members) => Ok(members),
            other => Err(shape(Self::NAME, &other)),
        }
    }
}

/// An integer reply, or none (ZSCORE).
impl ReplyKind for Option<i64> {
    const NAME: &'static str = "an int or none";
    fn from_reply(reply: Reply) -> Result<Self, Failure> {
        match reply {
            Reply::Int(value) => Ok(Some(value)),
            Reply::None => Ok(None),
            other => Err(shape(Self::NAME, &other)),
        }
    }
}

/// A pairs reply (HGETALL, ZRANGEBYSCORE WITHSCORES).
impl ReplyKind for Vec<(String, String)> {
    const NAME: &'static str = "pairs";
    fn from_reply(reply: Reply) -> Result<Self, Failure> {
        match reply {
            Reply::Pairs(pairs) => Ok(pairs),
            other => Err(shape(Self::NAME, &other)),
        }
    }
}

/// An integer reply (SCARD, ZCARD, HSTRLEN).
impl ReplyKind for i64 {
    const NAME: &'static str = "an int";
    fn from_reply(reply: Reply) -> Result<Self, Failure> {
        match reply {
            Reply::Int(value) => Ok(value),
            other => Err(shape(Self::NAME, &other)),
        }
    }
}

fn shape(expected: &str, got: &Reply) -> Failure {
    let got = match got {
        Reply::None => "none",
        Reply::Int(_) => "an int",
        Reply::Text(_) => "a text",
        Reply::Texts(_) => "texts",
        Reply::Pairs(_) => "pairs",
        Reply::Members(_) => "members",
    };
    fail::internal(format!(
        "the store replied {got} where {expected} was expected"
    ))
}

/// Guard: `key` exists.
pub fn exists(key: &str) -> Guard {
    Guard::Exists(key.to_owned())
}

/// Guard: `key` is absent.
pub fn absent(key: &str) -> Guard {
    Guard::Absent(key.to_owned())
}

/// Guard: the string at `key` is `value` (none: absent).
pub fn value_is(key: &str, value: Option<&str>) -> Guard {
    Guard::ValueIs(ValueGuard {
        key: key.to_owned(),
        value: value.map(str::to_owned),
    })
}

/// Guard: hash field `key.field` is `value` (none: absent).
pub fn field_is(key: &str, field: &str, value: Option<&str>) -> Guard {
    Guard::FieldIs(FieldGuard {
        key: key.to_owned(),
        field: field.to_owned(),
        value: value.map(str::to_owned),
    })
}

/// Guard: integer hash field `key.field` is at most `bound`.
pub fn field_at_most(key: &str, field: &str, bound: i64) -> Guard {
    Guard::FieldAtMost(BoundGuard {
        key: key.to_owned(),
        field: field.to_owned(),
        bound,
    })
}

/// Guard: integer hash field `key.field` is at least `bound`.
pub fn field_at_least(key: &str, field: &str, bound: i64) -> Guard {
    Guard::FieldAtLeast(BoundGuard {
        key: key.to_owned(),
        field: field.to_owned(),
        bound,
    })
}

/// Guard: the collection at `key` holds fewer than `limit` entries.
pub fn size_below(key: &str, limit: u32) -> Guard {
    Guard::SizeBelow(SizeGuard {
        key: key.to_owned(),
        limit,
    })
}

/// Guard: `member` is in the sorted set `key` with a score of at most `bound`.
pub fn score_at_most(key: &str, member: &str, bound: i64) -> Guard {
    Guard::ScoreAtMost(ScoreGuard {
        key: key.to_owned(),
        member: member.to_owned(),
        bound,
    })
}

/// Guard: `member` is absent from the sorted set `key`, or scored below `bound`.
pub fn score_absent_or_below(key: &str, member: &str, bound: i64) -> Guard {
    Guard::ScoreAbsentOrBelow(ScoreGuard {
        key: key.to_owned(),
        member: member.to_owned(),
        bound,
    })
}

/// Read: GET.
pub fn get(key: &str) -> Read<Option<String>> {
    Read::new(Op::Get(key.to_owned()))
}

/// Read: HGET.
pub fn hget(key: &str, field: &str) -> Read<Option<String>> {
    Read::new(Op::Hget(FieldOp {
        key: key.to_owned(),
        field: field.to_owned(),
    }))
}

/// Read: HMGET, one text (or none) per field.
pub fn hmget(key: &str, fields: &[&str]) -> Read<Vec<Option<String>>> {
    Read::new(Op::Hmget(FieldsOp {
        key: key.to_owned(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }))
}

/// Read: SMEMBERS.
pub fn smembers(key: &str) -> Read<Vec<String>> {
    Read::new(Op::Smembers(key.to_owned()))
}

/// Read: SCARD.
pub fn scard(key: &str) -> Read<i64> {
    Read::new(Op::Scard(key.to_owned()))
}

/// Read: ZRANGEBYSCORE with a limit.
pub fn zrange_by_score(key: &str, min: i64, max: i64, limit: u32) -> Read<Vec<String>> {
    Read::new(Op::ZrangeByScore(ZrangeOp {
        key: key.to_owned(),
        min,
        max,
        limit,
    }))
}

/// Read: ZRANGEBYSCORE WITHSCORES with a limit: (member, score) pairs.
pub fn zrange_with_scores(
    key: &str,
    min: i64,
    max: i64,
    limit: u32,
) -> Read<Vec<(String, String)>> {
    Read::new(Op::ZrangeWithScores(ZrangeOp {
        key: key.to_owned(),
        min,
        max,
        limit,
    }))
}

/// Op with a reply: appends `members` to the log `key` at the counter's next value, keeping
/// the last `keep` values (see `zappend-op`); the reply is that value.
pub fn zappend(key: &str, counter: &str, members: Vec<String>, keep: u32) -> Read<i64> {
    Read::new(Op::Zappend(ZappendOp {
        key: key.to_owned(),
        counter: counter.to_owned(),
        members,
        keep,
    }))
}

/// Read: ZSCORE.
pub fn zscore(key: &str, member: &str) -> Read<Option<i64>> {
    Read::new(Op::Zscore(MemberOp {
        key: key.to_owned(),
        member: member.to_owned(),
    }))
}

/// Read: ZCARD.
pub fn zcard(key: &str) -> Read<i64> {
    Read::new(Op::Zcard(key.to_owned()))
}

/// Read: HSTRLEN.
pub fn hstrlen(key: &str, field: &str) -> Read<i64> {
    Read::new(Op::Hstrlen(FieldOp {
        key: key.to_owned(),
        field: field.to_owned(),
    }))
}

/// Op: ZINCRBY.
pub fn zincrby(key: &str, member: &str, delta: i64) -> Op {
    Op::Zincrby(ZincrOp {
        key: key.to_owned(),
        member: member.to_owned(),
        delta,
    })
}

/// Op: ZREMRANGEBYSCORE (bounds inclusive; `i64::MIN` / `i64::MAX` are open ends).
pub fn zrem_range_by_score(key: &str, min: i64, max: i64) -> Op {
    Op::ZremRangeByScore(ZremRangeOp {
        key: key.to_owned(),
        min,
        max,
    })
}

/// Op: HSET.
pub fn hset(key: &str, entries: Vec<(&str, String)>) -> Op {
    Op::Hset(HsetOp {
        key: key.to_owned(),
        entries: entries
            .into_iter()
            .map(|(field, value)| (field.to_owned(), value))
            .collect(),
    })
}

/// Op: PEXPIRE.
pub fn pexpire(key: &str, ttl_ms: u64) -> Op {
    Op::Pexpire(ExpireOp {
        key: key.to_owned(),
        ttl_ms,
    })
}

/// Op: SET, with a TTL when given.
pub fn set(key: &str, value: &str, ttl_ms: Option<u64>) -> Op {
    Op::Set(SetOp {
        key: key.to_owned(),
        value: value.to_owned(),
        ttl_ms,
    })
}

/// Op: DEL.
pub fn del(key: &str) -> Op {
    Op::Del(key.to_owned())
}

/// Op: SADD of one member.
pub fn sadd(key: &str, member: &str) -> Op {
    Op::Sadd(MembersOp {
        key: key.to_owned(),
        members: vec![member.to_owned()],
    })
}

/// Op: SREM of one member.
pub fn srem(key: &str, member: &str) -> Op {
    Op::Srem(MembersOp {
        key: key.to_owned(),
        members: vec![member.to_owned()],
    })
}

/// Op: ZADD of one member.
pub fn zadd(key: &str, member: &str, score: i64) -> Op {
    Op::Zadd(ZaddOp {
        key: key.to_owned(),
        entries: vec![(member.to_owned(), score)],
    })
}

/// Op: ZREM of one member.
pub fn zrem(key: &str, member: &str) -> Op {
    Op::Zrem(MembersOp {
        key: key.to_owned(),
        members: vec![member.to_owned()],
    })
}

/// Millisecond timestamps and counters as store scores: saturate rather than wrap, far
/// beyond any real clock.
pub fn score(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Parses a decimal integer field written by the rules; absent or garbled reads as none.
pub fn parse_u64(text: Option<&str>) -> Option<u64> {
    text.and_then(|t| t.parse().ok())
}
