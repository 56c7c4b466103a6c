//! Running batches against the host's store and reading the replies.
//!
//! The rules build [`Batch`]es with the small builders here, call [`execute`] once per
//! round trip, and read each reply with the typed accessors, which turn a reply of the
//! wrong shape into a `COMPONENT_FAILED` failure rather than a panic.

use crate::bindings::roster::hub::store::{
    Batch, BatchOutcome, BoundGuard, ExpireOp, FieldGuard, FieldsOp, Guard, HsetOp, MembersOp, Op,
    Reply, ScoreGuard, SizeGuard, StoreError, ValueGuard, ZaddOp, ZrangeOp,
};
use crate::fail;
use crate::types::{ErrorCode, Failure};

/// Runs `batches` in one round trip. A store that cannot be reached becomes
/// `STORE_UNAVAILABLE`; a refused call (a bug here) becomes `COMPONENT_FAILED`.
pub fn execute(batches: &[Batch]) -> Result<Vec<BatchOutcome>, Failure> {
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
    Ok(outcomes)
}

/// Runs one batch.
pub fn execute_one(batch: Batch) -> Result<BatchOutcome, Failure> {
    let mut outcomes = execute(std::slice::from_ref(&batch))?;
    outcomes
        .pop()
        .ok_or_else(|| fail::internal("the store returned no outcome"))
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

    /// Adds a guard; guards are numbered from 0 in the order added.
    pub fn guard(mut self, guard: Guard) -> Self {
        self.batch.guards.push(guard);
        self
    }

    /// Adds an operation; replies come back in the order added.
    pub fn op(mut self, op: Op) -> Self {
        self.batch.ops.push(op);
        self
    }

    /// Adds an operation when `condition` holds.
    pub fn op_if(self, condition: bool, op: impl FnOnce() -> Op) -> Self {
        if condition { self.op(op()) } else { self }
    }

    /// Adds a guard when `condition` holds.
    pub fn guard_if(self, condition: bool, guard: impl FnOnce() -> Guard) -> Self {
        if condition { self.guard(guard()) } else { self }
    }

    /// The finished batch.
    pub fn build(self) -> Batch {
        self.batch
    }
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

/// Op: HMGET.
pub fn hmget(key: &str, fields: &[&str]) -> Op {
    Op::Hmget(FieldsOp {
        key: key.to_owned(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
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

/// Op: ZRANGEBYSCORE with a limit.
pub fn zrange_by_score(key: &str, min: i64, max: i64, limit: u32) -> Op {
    Op::ZrangeByScore(ZrangeOp {
        key: key.to_owned(),
        min,
        max,
        limit,
    })
}

/// Millisecond timestamps and counters as store scores: saturate rather than wrap, far
/// beyond any real clock.
pub fn score(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The replies of an applied batch, or the index of the guard that refused it.
pub fn applied(outcome: BatchOutcome) -> Result<Vec<Reply>, u32> {
    match outcome {
        BatchOutcome::Applied(replies) => Ok(replies),
        BatchOutcome::Refused(guard) => Err(guard),
    }
}

/// Reads the replies of one batch in order, checking their shapes.
pub struct Replies {
    replies: std::vec::IntoIter<Reply>,
}

impl Replies {
    /// Wraps the replies of an applied batch.
    pub fn new(replies: Vec<Reply>) -> Self {
        Self {
            replies: replies.into_iter(),
        }
    }

    fn next(&mut self, expected: &str) -> Result<Reply, Failure> {
        self.replies.next().ok_or_else(|| {
            fail::internal(format!("the store sent no reply where {expected} was due"))
        })
    }

    /// Skips a reply whose value does not matter (a write's count).
    pub fn skip(&mut self) -> Result<(), Failure> {
        self.next("a reply").map(drop)
    }

    /// An HMGET reply.
    pub fn texts(&mut self) -> Result<Vec<Option<String>>, Failure> {
        match self.next("texts")? {
            Reply::Texts(texts) => Ok(texts),
            other => Err(shape("texts", &other)),
        }
    }

    /// A GET / HGET reply.
    pub fn text(&mut self) -> Result<Option<String>, Failure> {
        match self.next("a text")? {
            Reply::Text(text) => Ok(Some(text)),
            Reply::None => Ok(None),
            other => Err(shape("a text", &other)),
        }
    }

    /// An SMEMBERS / ZRANGEBYSCORE reply.
    pub fn members(&mut self) -> Result<Vec<String>, Failure> {
        match self.next("members")? {
            Reply::Members(members) => Ok(members),
            other => Err(shape("members", &other)),
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

/// Parses a decimal integer field written by the rules; absent or garbled reads as none.
pub fn parse_u64(text: Option<&str>) -> Option<u64> {
    text.and_then(|t| t.parse().ok())
}
