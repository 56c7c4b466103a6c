// The member-set rules on their own: snapshot + events in any order give the same set, and
// only real changes are reported.

import { test } from "node:test";
import assert from "node:assert/strict";
import { MemberSet } from "../src/index.js";

const ev = (type, connId, epoch, ts, state = {}, userId = `u-${connId}`) => ({ type, roomId: "r", userId, connId, state, epoch, ts });
const row = (connId, epoch, lastSeen, state = {}, userId = `u-${connId}`) => ({ connId, userId, state, epoch, lastSeen });
const ids = (set) => [...set.toMap().keys()].sort();

/** A duplicate event changes nothing and reports nothing. */
test("duplicates are ignored", () => {
  const set = new MemberSet();
  assert.equal(set.apply(ev("join", "a", 1, 1, { x: 1 })).length, 1);
  assert.equal(set.apply(ev("join", "a", 1, 1, { x: 1 })).length, 0);
  assert.equal(set.apply(ev("update", "a", 1, 5, { x: 2 })).length, 1);
  assert.equal(set.apply(ev("update", "a", 1, 5, { x: 2 })).length, 0);
  assert.deepEqual(set.get("a").state, { x: 2 });
});

/** An update older than the one held (by epoch, then ts) is dropped. */
test("out-of-order updates are ordered by epoch then ts", () => {
  const set = new MemberSet();
  set.apply(ev("join", "a", 10, 10, { v: 0 }));
  set.apply(ev("update", "a", 10, 30, { v: 2 }));
  assert.equal(set.apply(ev("update", "a", 10, 20, { v: 1 })).length, 0);
  assert.deepEqual(set.get("a").state, { v: 2 });
  // A higher epoch wins over a later ts of an older epoch.
  set.apply(ev("update", "a", 11, 5, { v: 3 }));
  assert.equal(set.apply(ev("update", "a", 10, 99, { v: 4 })).length, 0);
  assert.deepEqual(set.get("a").state, { v: 3 });
});

/** A join that arrives after the leave of the same connection (same or older version) stays dead. */
test("a late join after a leave is ignored", () => {
  const set = new MemberSet();
  set.apply(ev("join", "a", 1, 1));
  const [left] = set.apply({ ...ev("leave", "a", 1, 9), state: null });
  assert.equal(left.type, "leave");
  assert.deepEqual(left.member.state, {}, "a null leave state is replaced by the last one held");
  assert.equal(set.apply(ev("join", "a", 1, 1)).length, 0);
  assert.equal(set.apply(ev("update", "a", 1, 9)).length, 0);
  assert.equal(set.size, 0);
  // A leave we never saw the join of is remembered too.
  set.apply(ev("leave", "b", 1, 5));
  assert.equal(set.apply(ev("join", "b", 1, 1)).length, 0);
});

/** An update for an unknown connection is a join to us (its join event was missed). */
test("update of an unknown member adds it", () => {
  const set = new MemberSet();
  const [change] = set.apply(ev("update", "a", 1, 3, { x: 1 }));
  assert.equal(change.type, "join");
  assert.equal(set.size, 1);
});

/** Events buffered before the snapshot, replayed after it, give the right set whatever their timing. */
test("events around the snapshot", () => {
  const set = new MemberSet();
  // Snapshot taken at t=50: a (updated at 40), b (joined at 45), c (joined at 20).
  set.reset([row("a", 10, 40, { v: 2 }), row("b", 45, 45), row("c", 20, 48)]);
  const buffered = [
    ev("join", "a", 10, 10, { v: 0 }), // before the snapshot: older than the row
    ev("update", "a", 10, 30, { v: 1 }), // before: older
    ev("join", "b", 45, 45), // the row's own join: equal, no change
    ev("leave", "c", 20, 55), // after: c is gone
    ev("join", "d", 60, 60, { v: 9 }), // after: d is new
    ev("update", "a", 10, 70, { v: 3 }), // after: newer state
  ];
  const changes = buffered.flatMap((e) => set.apply(e));
  assert.deepEqual(ids(set), ["a", "b", "d"]);
  assert.deepEqual(set.get("a").state, { v: 3 });
  assert.deepEqual(
    changes.map((c) => `${c.type}:${c.member.connId}`),
    ["leave:c", "join:d", "update:a"],
  );
});

/** A re-sync reports only what really differs from the set held before it. */
test("reset reports only real differences", () => {
  const set = new MemberSet();
  set.reset([row("a", 1, 1, { x: 1 }), row("b", 1, 1, { y: 1 }), row("c", 1, 1)]);
  const changes = set.reset([row("a", 1, 5, { x: 1 }), row("b", 1, 6, { y: 2 }), row("d", 2, 2)]);
  assert.deepEqual(
    changes.map((c) => `${c.type}:${c.member.connId}`).sort(),
    ["join:d", "leave:c", "update:b"],
  );
  // Key order does not make a difference.
  assert.equal(set.reset([row("a", 1, 7, { x: 1 }), row("b", 1, 8, { y: 2 }), row("d", 2, 2)]).length, 0);
});

/** A leave seen before a snapshot that still lists the member (read earlier) keeps it out. */
test("a snapshot row older than a known leave is skipped", () => {
  const set = new MemberSet();
  set.apply(ev("leave", "a", 1, 100));
  set.reset([row("a", 1, 90), row("b", 1, 90)]);
  assert.deepEqual(ids(set), ["b"]);
});

/** A row older than the version held (read before an event we applied) does not undo it. */
test("a snapshot row older than the version held keeps the held one", () => {
  const set = new MemberSet();
  set.reset([row("a", 1, 10, { v: 1 }), row("b", 1, 10)]);
  set.apply(ev("update", "a", 1, 20, { v: 2 }));
  assert.deepEqual(set.reset([row("a", 1, 15, { v: 1 }), row("b", 1, 30)]), []);
  assert.deepEqual(set.get("a").state, { v: 2 });
  // A newer row wins, and a new epoch is a difference even with the same state.
  const [change] = set.reset([row("a", 2, 2, { v: 2 }), row("b", 1, 30)]);
  assert.equal(change.type, "update");
  assert.equal(change.member.epoch, 2);
});

/** A member the snapshot lacks leaves, and a late copy of its events does not bring it back. */
test("a member missing from the snapshot leaves for good", () => {
  const set = new MemberSet();
  set.reset([row("a", 1, 10), row("b", 1, 10)]);
  assert.deepEqual(
    set.reset([row("b", 1, 12)]).map((c) => `${c.type}:${c.member.connId}`),
    ["leave:a"],
  );
  assert.deepEqual(set.apply(ev("update", "a", 1, 10)), []);
  assert.deepEqual(ids(set), ["b"]);
});

/** After a fresh join our own entry moves to the new connId: one update, no leave and join of ourselves. */
test("our own connection replaced by a fresh join is one update", () => {
  const set = new MemberSet();
  set.reset([row("old-self", 1, 10, { me: 1 }, "me"), row("b", 1, 10)]);
  const changes = set.reset([row("c", 5, 5), row("new-self", 6, 6, { me: 1 }, "me")], { moved: { from: "old-self", to: "new-self" } });
  assert.deepEqual(
    changes.map((c) => `${c.type}:${c.member.connId}${c.previous ? `<-${c.previous.connId}` : ""}`),
    ["leave:b", "join:c", "update:new-self<-old-self"],
  );
  assert.deepEqual(ids(set), ["c", "new-self"]);
  // Without `moved` (or when the old connection is still listed) it is a leave and a join.
  const plain = new MemberSet();
  plain.reset([row("old-self", 1, 10, {}, "me")]);
  assert.deepEqual(
    plain.reset([row("new-self", 6, 6, {}, "me")]).map((c) => c.type),
    ["leave", "join"],
  );
});
