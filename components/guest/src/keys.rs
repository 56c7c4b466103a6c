//! The store key layout, version 1.
//!
//! Every key starts `roster:v1:{TAG}:` where `TAG` is a bucket number in three lowercase hex
//! digits (`000`..`3ff`). Redis Cluster hashes only the text inside the braces, so all keys
//! of one bucket live in one slot and a batch over them is atomic there.
//!
//! A room's bucket comes from its *digest*: 64-bit FNV-1a of the UTF-8 room id; the bucket
//! is `digest % 1024`. A connection id is `digest` and the host's 64-bit nonce, both as 16
//! lowercase hex digits, so a heartbeat that carries only the connection id still finds its
//! room's bucket and member set in one round trip.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `roster:v1:{T}:conn:<connId>` | hash | `room`, `user`, `epoch`, `state`, `seen`, `joined`, `node`, `resume`, `bind` |
//! | `roster:v1:{T}:room:<digest>` | set | the room's connection ids |
//! | `roster:v1:{T}:expiry` | sorted set | the bucket's connection ids scored by last heartbeat |
//! | `roster:v1:{T}:node:<node>` | set | the bucket's connection ids created by that node |
//! | `roster:v1:{T}:users:<digest>` | sorted set | the room's users scored by their connection count |
//! | `roster:v1:{T}:epochs:<digest>` | sorted set | the room's users scored by the epoch of their last join |
//! | `roster:v1:{T}:meta:<type>:<name>` | hash | `major`, `items` (JSON), `type`, `name` |
//! | `roster:v1:{T}:lock:<type>:<name>:<lock>` | string | the holder's user id, with a TTL |
//! | `roster:v1:{T}:log:<channel>` | sorted set | a message channel: `#seq` scored by the latest seq, and per message its JSON and `id:<id>`, both scored by its seq |
//! | `roster:v1:{leases}:nodes` | sorted set | node ids scored by when their lease expires (ms) |
//! | `roster:v1:{leases}:tick` | string | the node that last started a paced reaper tick, PX the pace |
//!
//! Channel metadata and locks take the bucket of the channel name (the room their events go
//! to); a message channel takes the bucket of its name. In key segments made of client-chosen names, `%`, `:`, `{`, `}` and control
//! characters are percent-encoded, so segments never run into each other.

use crate::types::Channel;

/// The prefix of every key; the version changes when the layout does.
pub const PREFIX: &str = "roster:v1";

/// How many buckets (hash tags) the keyspace has. Fixed by layout version 1: nodes and Spin
/// deployments sharing one store must agree on it.
pub const BUCKETS: u16 = 1024;

/// 64-bit FNV-1a of `text`: the room digest. Chosen because it is trivial to reimplement
/// anywhere (including Redis Lua) and stable across platforms.
pub fn digest(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The bucket of a room digest.
pub fn bucket(digest: u64) -> u16 {
    // BUCKETS divides 2^64, so the low bits are the bucket; the cast cannot truncate.
    (digest % u64::from(BUCKETS)) as u16
}

/// The connection id for a room digest and a nonce.
pub fn conn_id(room_digest: u64, nonce: u64) -> String {
    format!("{room_digest:016x}{nonce:016x}")
}

/// The room digest inside a connection id, or none when `conn_id` is not one of ours.
pub fn conn_room_digest(conn_id: &str) -> Option<u64> {
    let well_formed = conn_id.len() == 32
        && conn_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return None;
    }
    u64::from_str_radix(conn_id.get(..16)?, 16).ok()
}

fn tagged(bucket: u16) -> String {
    format!("{PREFIX}:{{{bucket:03x}}}")
}

/// The hash of one connection.
pub fn conn_key(room_digest: u64, conn_id: &str) -> String {
    format!("{}:conn:{conn_id}", tagged(bucket(room_digest)))
}

/// The set of a room's connection ids.
pub fn room_key(room_digest: u64) -> String {
    format!("{}:room:{room_digest:016x}", tagged(bucket(room_digest)))
}

/// The sorted set of a room's users, each scored by how many connections it has there:
/// its size is the room's distinct users.
pub fn users_key(room_digest: u64) -> String {
    format!("{}:users:{room_digest:016x}", tagged(bucket(room_digest)))
}

/// The sorted set of a room's users, each scored by the epoch of its last join: what keeps
/// join epochs increasing per user and room whatever the nodes' clocks say.
pub fn epochs_key(room_digest: u64) -> String {
    format!("{}:epochs:{room_digest:016x}", tagged(bucket(room_digest)))
}

/// The sorted set of a bucket's connections by last heartbeat: what the reaper scans.
pub fn expiry_key(bucket: u16) -> String {
    format!("{}:expiry", tagged(bucket))
}

/// The set of a bucket's connections created by `node`: what the reaper of another node
/// reads when `node` dies.
pub fn node_key(bucket: u16, node: &str) -> String {
    format!("{}:node:{}", tagged(bucket), escape(node))
}

/// The sorted set of node leases (node id scored by expiry). Its tag is not a bucket: the
/// registry lives in a slot of its own.
pub fn leases_key() -> String {
    format!("{PREFIX}:{{leases}}:nodes")
}

/// The mark a paced reaper tick sets (`tick-options.at-most-every-ms`), in the leases' slot.
pub fn tick_key() -> String {
    format!("{PREFIX}:{{leases}}:tick")
}

/// The sorted set holding a message channel's sequence, history and idempotency ids.
pub fn log_key(channel: &str) -> String {
    format!(
        "{}:log:{}",
        tagged(bucket(digest(channel))),
        escape(channel)
    )
}

/// The hash holding a channel's metadata.
pub fn meta_key(channel: &Channel) -> String {
    format!(
        "{}:meta:{}:{}",
        tagged(bucket(digest(&channel.channel_name))),
        escape(&channel.channel_type),
        escape(&channel.channel_name)
    )
}

/// The string holding a channel lock's owner.
pub fn lock_key(channel: &Channel, lock_name: &str) -> String {
    format!(
        "{}:lock:{}:{}:{}",
        tagged(bucket(digest(&channel.channel_name))),
        escape(&channel.channel_type),
        escape(&channel.channel_name),
        escape(lock_name)
    )
}

/// Percent-encodes the characters that would let a name break out of its key segment.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        if matches!(c, '%' | ':' | '{' | '}') || c.is_control() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields of a connection hash.
pub mod conn {
    /// The room id.
    pub const ROOM: &str = "room";
    /// The user id.
    pub const USER: &str = "user";
    /// The epoch, decimal.
    pub const EPOCH: &str = "epoch";
    /// The state, JSON text.
    pub const STATE: &str = "state";
    /// The last heartbeat, ms, decimal.
    pub const SEEN: &str = "seen";
    /// When the connection joined, ms, decimal.
    pub const JOINED: &str = "joined";
    /// The node that holds it (the creator, or the last to resume it).
    pub const NODE: &str = "node";
    /// The secret that lets a new socket resume it.
    pub const RESUME: &str = "resume";
    /// The binding (socket) that holds it, decimal.
    pub const BIND: &str = "bind";
}

/// The fields of a metadata hash.
pub mod meta {
    /// The major revision, decimal.
    pub const MAJOR: &str = "major";
    /// The items, a JSON array in write order.
    pub const ITEMS: &str = "items";
    /// The channel type, for people reading the store.
    pub const TYPE: &str = "type";
    /// The channel name, for people reading the store.
    pub const NAME: &str = "name";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a matches its published test vectors, so other implementations can agree.
    #[test]
    fn digest_is_fnv1a_64() {
        assert_eq!(digest(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(digest("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(digest("foobar"), 0x8594_4171_f739_67e8);
    }

    /// A connection id carries its room digest, and only well-formed ids are accepted.
    #[test]
    fn conn_id_round_trip() {
        let d = digest("lobby");
        let id = conn_id(d, 0x1234);
        assert_eq!(id.len(), 32);
        assert_eq!(conn_room_digest(&id), Some(d));
        assert_eq!(conn_room_digest("nope"), None);
        assert_eq!(conn_room_digest(&id.to_uppercase()), None);
        assert_eq!(conn_room_digest(&format!("{id}0")), None);
        assert_eq!(conn_room_digest(&"g".repeat(32)), None);
    }

    /// A room's connection, member set and expiry index share one hash tag.
    #[test]
    fn room_keys_share_a_tag() {
        let d = digest("lobby");
        let id = conn_id(d, 7);
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_string();
        assert_eq!(tag(&conn_key(d, &id)), tag(&room_key(d)));
        assert_eq!(tag(&room_key(d)), tag(&expiry_key(bucket(d))));
        assert_eq!(tag(&room_key(d)), tag(&node_key(bucket(d), "node-1")));
        assert_eq!(tag(&room_key(d)), tag(&users_key(d)));
        assert_eq!(tag(&room_key(d)), tag(&epochs_key(d)));
        assert!(conn_key(d, &id).starts_with("roster:v1:{"));
    }

    /// Buckets stay in range and spread over the keyspace.
    #[test]
    fn buckets_spread() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let b = bucket(digest(&format!("room-{i}")));
            assert!(b < BUCKETS);
            seen.insert(b);
        }
        assert!(seen.len() > 1000, "only {} buckets used", seen.len());
    }

    /// Names cannot break out of their key segment or forge a hash tag.
    #[test]
    fn names_are_escaped() {
        let channel = Channel {
            channel_type: "a:b".into(),
            channel_name: "{x}%".into(),
        };
        let key = meta_key(&channel);
        assert!(key.ends_with(":meta:a%3Ab:%7Bx%7D%25"), "{key}");
        assert_eq!(key.matches('{').count(), 1);
        assert_eq!(escape("tab\there"), "tab%09here");
    }
}
