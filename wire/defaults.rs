//! The defaults of the settings the rules enforce, shared by the host's configuration and
//! the Spin gateway's variables, so that both deployments behave alike out of the box.
//! Each says why that number.

/// 30 s: long enough for clients that heartbeat every 10 s to miss two beats.
pub const DEFAULT_TTL_MS: u64 = 30_000;
/// Room for a 64 KiB state written with generous JSON escaping, plus the envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 * 1024;
/// The protocol's state limit.
pub const DEFAULT_MAX_STATE_BYTES: u32 = 64 * 1024;
/// A room large enough for a big live event; its snapshot is paged (below).
pub const DEFAULT_MAX_ROOM_MEMBERS: u32 = 10_000;
/// Connections in one snapshot page, a join's included: every room of up to a thousand
/// members is listed whole, as clients of the Socket.IO presence server expect, and a
/// larger one's join stays as cheap as a thousand-member room's.
pub const DEFAULT_MAX_SNAPSHOT_MEMBERS: u32 = 1_000;
/// Bytes of member states in one snapshot page: a thousand members of 4 KiB each, and a
/// page of 64 full-size states; a few MiB of component memory whatever the room holds.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u32 = 4 * 1024 * 1024;
/// Channel metadata is settings and topics, not a database.
pub const DEFAULT_MAX_METADATA_ITEMS: u32 = 256;
/// Keeps every metadata write and `metadata:event` small.
pub const DEFAULT_MAX_METADATA_BYTES: u32 = 64 * 1024;
/// A lock outlives a crashed holder by at most 30 s when it named no TTL.
pub const DEFAULT_LOCK_TTL_MS: u64 = 30_000;
/// One hour: longer holds are better served by metadata than by a lock.
pub const DEFAULT_MAX_LOCK_TTL_MS: u64 = 3_600_000;
/// The protocol's message payload limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 64 * 1024;
/// Messages a channel keeps for recovery: a reconnect after a short outage in a busy chat.
pub const DEFAULT_MESSAGE_HISTORY: u32 = 100;
/// Five minutes: longer outages resynchronise rather than replay.
pub const DEFAULT_MESSAGE_HISTORY_TTL_MS: u64 = 300_000;
/// Ten seconds: a phone switching networks or a laptop waking comes back well within it,
/// and a tab that closed is announced gone soon enough.
pub const DEFAULT_RESUME_GRACE_MS: u64 = 10_000;
/// 64 KiB of kernel send buffer per socket: a few hundred events in flight; past it a
/// socket's own queue holds what waits, and a reader that stops is noticed (1008) within
/// `ROSTER_MAX_PENDING_MESSAGES` events instead of after megabytes.
pub const DEFAULT_SEND_BUFFER_BYTES: usize = 64 * 1024;
/// Channels one socket may subscribe to.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100;
/// A node that stops renewing is declared dead this long after its last renewal: far below
/// the TTL, far above a scheduling hiccup (renewals come every third of it).
pub const DEFAULT_NODE_LEASE_MS: u64 = 5_000;
