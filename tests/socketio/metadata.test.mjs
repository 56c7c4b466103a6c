// Channel metadata and locks over Socket.IO with the real socket.io-client.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { join, record, request, startRoster } from "./harness.mjs";

describe("metadata over Socket.IO", () => {
  let roster;
  before(async () => {
    roster = await startRoster();
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  const channel = (name, extra = {}) => ({ channelType: "room", channelName: name, ...extra });

  it("set, update, remove and get, with metadata:event to the room", async () => {
    const ada = await roster.connect();
    const bob = await roster.connect();
    await join(ada, "meta-1", "ada");
    const bobEvents = record(bob);
    await join(bob, "meta-1", "bob");

    const set = await request(ada, "metadata:set", channel("meta-1", { items: [{ key: "topic", value: "hi" }, { key: "mode", value: "x" }], options: { addUserId: true } }));
    assert.deepEqual(set, {
      ok: true,
      items: [
        { key: "topic", value: "hi", revision: 1, authorUid: "ada" },
        { key: "mode", value: "x", revision: 1, authorUid: "ada" },
      ],
      majorRevision: 1,
    });
    const event = await bobEvents.next((e) => e.event === "metadata:event", "the set event");
    assert.deepEqual(event, { event: "metadata:event", operation: "set", channelName: "meta-1", channelType: "room", items: set.items, majorRevision: 1 });

    const update = await request(bob, "metadata:update", channel("meta-1", { items: [{ key: "topic", value: "yo", revision: 1 }] }));
    assert.equal(update.items[0].revision, 2);
    assert.equal(update.majorRevision, 2);
    const conflict = await request(bob, "metadata:update", channel("meta-1", { items: [{ key: "topic", value: "no", revision: 1 }] }));
    assert.equal(conflict.error.code, "METADATA_CONFLICT");
    const major = await request(bob, "metadata:set", channel("meta-1", { items: [], options: { majorRevision: 1 } }));
    assert.equal(major.error.code, "METADATA_CONFLICT");

    const removed = await request(ada, "metadata:remove", channel("meta-1", { items: [{ key: "mode" }] }));
    assert.deepEqual(removed.items.map((i) => i.key), ["topic"]);
    const removal = await bobEvents.next((e) => e.event === "metadata:event" && e.operation === "remove", "the remove event");
    assert.deepEqual(removal.items, [{ key: "mode", value: "x", revision: 1, authorUid: "ada" }]);
    const got = await request(bob, "metadata:get", channel("meta-1"));
    assert.deepEqual(got, removed);
  });

  it("locks guard writes and belong to one user at a time", async () => {
    const ada = await roster.connect();
    const bob = await roster.connect();
    await join(ada, "meta-2", "ada");
    await join(bob, "meta-2", "bob");
    const lock = channel("meta-2", { lockName: "editor" });
    const held = await request(ada, "lock:acquire", { ...lock, ttlMs: 60_000 });
    assert.equal(held.ok, true);
    assert.equal(held.owner, "ada");
    assert.equal((await request(bob, "lock:acquire", lock)).error.code, "METADATA_LOCK");
    const guarded = channel("meta-2", { items: [{ key: "doc", value: "v" }], options: { lockName: "editor" } });
    assert.equal((await request(bob, "metadata:set", guarded)).error.code, "METADATA_LOCK");
    assert.equal((await request(ada, "metadata:set", guarded)).ok, true);
    assert.equal((await request(bob, "lock:release", lock)).error.code, "METADATA_LOCK");
    assert.deepEqual(await request(ada, "lock:release", lock), { ok: true });
    assert.equal((await request(bob, "lock:acquire", lock)).ok, true);

    const anonymous = await roster.connect();
    assert.equal((await request(anonymous, "lock:acquire", lock)).error.code, "UNAUTHORIZED");
  });
});
