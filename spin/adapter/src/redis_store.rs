//! Batches on Redis through Spin's `execute`: the shared encoding (`wire/batch.rs`), one
//! command per batch, the script called by its SHA and sent whole when Redis lacks it.

use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

use crate::wit::store::{Batch, BatchOutcome, Guard, Op, Reply, StoreError};

#[path = "../../../wire/batch.rs"]
#[allow(dead_code, reason = "the shared file serves the host's store too")]
mod codec;

use codec::{BATCH_SCRIPT, Encoded, Flat};

/// A Spin Redis error as the store reports it: the store is unreachable (or misconfigured),
/// and a retry later may work.
pub fn unavailable(error: Error) -> StoreError {
    StoreError::Unavailable(match error {
        Error::InvalidAddress => "redis_url is not a valid Redis address".to_owned(),
        Error::TooManyConnections => "too many connections to Redis".to_owned(),
        Error::TypeError => "Redis replied with a type Spin cannot pass on".to_owned(),
        Error::Other(message) => message,
    })
}

fn text(value: &str) -> RedisParameter {
    RedisParameter::Binary(value.as_bytes().to_vec())
}

fn flat(value: RedisResult) -> Flat {
    match value {
        RedisResult::Nil => Flat::Nil,
        RedisResult::Int64(n) => Flat::Int(n),
        RedisResult::Binary(bytes) => Flat::Text(bytes),
        RedisResult::Status(status) => Flat::Text(status.into_bytes()),
    }
}

/// Runs one batch: one round trip (two when Redis has to be given the script first).
pub fn run(conn: &Connection, batch: &Batch) -> Result<BatchOutcome, StoreError> {
    if codec::batch_tag(batch)?.is_none() {
        return Ok(BatchOutcome::Applied(Vec::new()));
    }
    let encoded = Encoded::new(batch);
    let reply = match &encoded.plain {
        Some(plain) => {
            let args: Vec<RedisParameter> = plain.args.iter().map(|a| text(a)).collect();
            conn.execute(plain.command, &args)
        }
        None => eval(conn, &encoded),
    }
    .map_err(unavailable)?;
    encoded.decode(reply.into_iter().map(flat).collect())
}

/// The script's SHA-1, as `EVALSHA` names it: derived from a constant, so computed once per
/// instance (nothing that can go stale between requests).
fn script_sha() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| sha1_smol::Sha1::from(BATCH_SCRIPT).digest().to_string())
}

/// `EVALSHA`, falling back to `EVAL` (which also caches the script) after `NOSCRIPT`.
fn eval(conn: &Connection, encoded: &Encoded) -> Result<Vec<RedisResult>, Error> {
    let mut args = Vec::with_capacity(2 + encoded.keys.len() + encoded.args.len());
    args.push(text(script_sha()));
    args.push(RedisParameter::Int64(
        i64::try_from(encoded.keys.len()).unwrap_or(i64::MAX),
    ));
    args.extend(encoded.keys.iter().map(|k| text(k)));
    args.extend(encoded.args.iter().map(|a| text(a)));
    match conn.execute("EVALSHA", &args) {
        // Spin words server errors as its Redis client does ("NoScript: ..." today).
        Err(Error::Other(message)) if message.to_ascii_uppercase().contains("NOSCRIPT") => {
            args[0] = text(BATCH_SCRIPT);
            conn.execute("EVAL", &args)
        }
        other => other,
    }
}
