// The live member set of a room, kept from a snapshot plus `presence:event`s.
//
// Events can arrive before or after the join ack's snapshot, twice, or out of order (several
// nodes publish them). A member's `(epoch, ts)` orders its versions: the epoch fences older
// incarnations, the ts orders updates within one. A snapshot row's version is
// `(epoch, lastSeen)`: lastSeen moves with every accepted heartbeat, so any update already
// folded into the row has a ts <= lastSeen. The rules:
//   - an event older than the version held for its connId is ignored (equal is applied: it
//     is a duplicate, or the same-millisecond change the snapshot may not include);
//   - `leave` removes the member and leaves a tombstone with its version;
//   - a `join`/`update` no newer than the tombstone of its connId is ignored (it is a late
//     copy of something that happened before the leave);
//   - `reset(snapshot)` replaces the set and returns only the real differences (a member
//     that appeared, vanished, or whose user, state or epoch changed). A row older than the
//     version held for its connId keeps the held one (the row was read before an event that
//     was applied), so a stale snapshot cannot undo a newer event; a member the snapshot
//     lacks leaves a tombstone, so a late copy of one of its events does not bring it back.
//     Used after every join or resume, and after a `presence:resync` (events were missed).
// Pure logic with no timers or I/O, so it is unit-tested on its own.

/** Tombstones kept (oldest forgotten first): enough to absorb late duplicates after churn. */
const MAX_TOMBSTONES = 10000;

/** Orders two versions `{epoch, ts}`: negative when a is older. */
export function compareVersions(a, b) {
  return (a.epoch ?? 0) - (b.epoch ?? 0) || (a.ts ?? 0) - (b.ts ?? 0);
}

export class MemberSet {
  /** connId -> Member ({connId, userId, state, epoch, ts}); insertion order = join order. */
  #members = new Map();
  /** connId -> {epoch, ts} of its leave. */
  #tombstones = new Map();

  get size() {
    return this.#members.size;
  }

  get(connId) {
    return this.#members.get(connId);
  }

  /** A copy, so callers cannot corrupt the set. */
  toMap() {
    return new Map(this.#members);
  }

  /** Distinct user ids. */
  userCount() {
    return new Set([...this.#members.values()].map((m) => m.userId)).size;
  }

  clear() {
    this.#members.clear();
  }

  /**
   * Replaces the set with an authoritative snapshot (`[{connId, userId, state, epoch,
   * lastSeen}]`) and returns the differences as changes ({type, member, previous?}).
   *
   * `moved: {from, to}` names the room's own connection when a fresh join replaced it
   * (`from` the old connId, `to` the new one): the entry moves to the new connId with one
   * `update` (its previous has the old connId) rather than a leave and a join, as long as
   * the old one is held and left the room and the new one is in the snapshot.
   */
  reset(snapshot, { moved } = {}) {
    const next = new Map();
    for (const row of snapshot) {
      const member = {
        connId: row.connId,
        userId: row.userId,
        state: row.state ?? {},
        epoch: row.epoch,
        ts: row.lastSeen ?? row.epoch,
      };
      const tombstone = this.#tombstones.get(member.connId);
      // A leave we already saw that is newer than the row wins (the row was read before it).
      if (tombstone && compareVersions(member, tombstone) <= 0) continue;
      const held = this.#members.get(member.connId);
      // So does an event newer than the row: the snapshot is older than what we hold.
      next.set(member.connId, held && compareVersions(held, member) > 0 ? held : member);
    }
    const moving =
      moved !== undefined &&
      moved.from !== moved.to &&
      this.#members.has(moved.from) &&
      !next.has(moved.from) &&
      next.has(moved.to) &&
      !this.#members.has(moved.to);
    const changes = [];
    for (const [connId, member] of this.#members) {
      if (next.has(connId)) continue;
      this.#tombstone(connId, { epoch: member.epoch, ts: member.ts });
      if (!(moving && connId === moved.from)) changes.push({ type: "leave", member });
    }
    for (const [connId, member] of next) {
      const previous = moving && connId === moved.to ? this.#members.get(moved.from) : this.#members.get(connId);
      if (!previous) changes.push({ type: "join", member });
      else if (!sameVersion(previous, member)) changes.push({ type: "update", member, previous });
    }
    this.#members = next;
    return changes;
  }

  /** Applies one `presence:event`; returns the changes it made (none when it was stale or a duplicate). */
  apply(event) {
    const { connId } = event;
    if (typeof connId !== "string") return [];
    const version = { epoch: event.epoch, ts: event.ts };
    const held = this.#members.get(connId);
    if (held && compareVersions(version, held) < 0) return [];

    if (event.type === "leave") {
      this.#tombstone(connId, version);
      if (!held) return [];
      this.#members.delete(connId);
      // The server sends `state: null` on leave today and the last state later: keep the
      // state we hold when it sends none, so listeners always get an object.
      const state = event.state && typeof event.state === "object" ? event.state : held.state;
      return [{ type: "leave", member: { ...held, state, epoch: version.epoch, ts: version.ts } }];
    }
    if (event.type !== "join" && event.type !== "update") return [];

    const tombstone = this.#tombstones.get(connId);
    if (!held && tombstone && compareVersions(version, tombstone) <= 0) return [];

    const member = {
      connId,
      userId: event.userId ?? held?.userId,
      state: event.state && typeof event.state === "object" ? event.state : (held?.state ?? {}),
      epoch: version.epoch,
      ts: version.ts,
    };
    this.#members.set(connId, member);
    // An update for someone we do not hold means we missed its join: it is a join to us.
    if (!held) return [{ type: "join", member }];
    if (held.userId === member.userId && deepEqual(held.state, member.state)) return [];
    return [{ type: "update", member, previous: held }];
  }

  #tombstone(connId, version) {
    const previous = this.#tombstones.get(connId);
    if (previous && compareVersions(previous, version) >= 0) return;
    this.#tombstones.delete(connId);
    this.#tombstones.set(connId, version);
    if (this.#tombstones.size > MAX_TOMBSTONES) {
      this.#tombstones.delete(this.#tombstones.keys().next().value);
    }
  }
}

/** Whether two holdings of a member look the same to the app: connId, user, epoch and state. */
function sameVersion(a, b) {
  return a.connId === b.connId && a.userId === b.userId && a.epoch === b.epoch && deepEqual(a.state, b.state);
}

/** Structural equality of JSON values; object key order does not matter (as on the server). */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && deepEqual(a[key], b[key]));
}
