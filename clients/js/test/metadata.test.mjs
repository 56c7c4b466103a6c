// Channel metadata and locks against the real server.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { RosterError } from "../src/index.js";
import { nextEvent, startRoster, testClient, waitFor } from "./harness.mjs";

let server;
const clients = [];
const client = (options) => {
  const c = testClient(server, options);
  clients.push(c);
  return c;
};

before(async () => {
  server = await startRoster();
});
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

/** set / get / update / remove round trips, and members of the room named like the channel get metadata events. */
test("set, get, update, remove and events", async () => {
  const a = client({ userId: "alice" });
  const b = client({ userId: "bob" });
  await a.join("doc-1");
  const doc = a.metadata("document", "doc-1");
  const events = [];
  const off = doc.on((event) => events.push(event));
  const clientEvent = nextEvent(a, "metadata");

  const set = await b.metadata("document", "doc-1").set({ title: "Draft", owner: "bob" }, { addUserId: true });
  assert.equal(set.majorRevision, 1);
  assert.deepEqual(
    set.items.map((i) => [i.key, i.value, i.revision]),
    [
      ["title", "Draft", 1],
      ["owner", "bob", 1],
    ],
  );
  const [event] = await clientEvent;
  assert.equal(event.operation, "set");
  assert.equal(event.channelName, "doc-1");

  const updated = await doc.update([{ key: "title", value: "Final", revision: 1 }], { addTimestamp: true });
  const title = updated.items.find((i) => i.key === "title");
  assert.equal(title.value, "Final");
  assert.equal(title.revision, 2);
  assert.equal(typeof title.updated, "number");
  await assert.rejects(doc.update([{ key: "title", value: "Stale", revision: 1 }]), { code: "METADATA_CONFLICT" });
  await assert.rejects(doc.set({ x: "1" }, { majorRevision: 0 }), { code: "METADATA_CONFLICT" });

  const removed = await doc.remove(["owner"]);
  assert.deepEqual(
    removed.items.map((i) => i.key),
    ["title"],
  );
  const got = await b.metadata("document", "doc-1").get();
  assert.equal(got.majorRevision, 3);
  await waitFor(() => events.length === 3, "three metadata events");
  assert.deepEqual(
    events.map((e) => e.operation),
    ["set", "update", "remove"],
  );
  off();
});

/** Two clients race updateWith on one counter: every increment that reported success is counted exactly once. */
test("updateWith keeps a raced counter exact", async () => {
  const a = client({ userId: "racer-a" });
  const b = client({ userId: "racer-b" });
  const counterA = a.metadata("game", "counter");
  const counterB = b.metadata("game", "counter");
  await counterA.set({ other: "keep" });
  const increments = 15;
  let ok = 0;
  let gaveUp = 0;
  let reads = 0;
  const racer = async (channel) => {
    for (let n = 0; n < increments; n++) {
      try {
        await channel.updateWith(
          "count",
          (value) => {
            reads++;
            return String(Number(value ?? "0") + 1);
          },
          { maxAttempts: 50 },
        );
        ok++;
      } catch (error) {
        assert.ok(error instanceof RosterError && error.code === "METADATA_CONFLICT", `unexpected ${error}`);
        gaveUp++;
      }
    }
  };
  await Promise.all([racer(counterA), racer(counterB), racer(counterA), racer(counterB)]);
  const { items } = await counterB.get();
  const count = items.find((i) => i.key === "count");
  assert.equal(Number(count.value), ok, `${ok} successful increments (${gaveUp} gave up)`);
  assert.ok(ok > 0);
  console.log(`updateWith race: ${ok} increments, ${reads - ok} conflicts retried, ${gaveUp} gave up`);
  assert.ok(reads > ok, "the racers did conflict (otherwise this test proves nothing)");
  assert.equal(items.find((i) => i.key === "other")?.value, "keep", "creating the key kept the others");
});

/** Locks: held by one user, METADATA_LOCK for another, free again after release; lock-guarded writes. */
test("locks", async () => {
  const a = client({ userId: "lock-a" });
  const b = client({ userId: "lock-b" });
  await a.join("locks");
  await b.join("locks");
  const channelA = a.metadata("board", "locks");
  const channelB = b.metadata("board", "locks");

  const lock = await channelA.acquire("editor", { ttlMs: 5000 });
  assert.equal(lock.owner, "lock-a");
  assert.ok(lock.held);
  assert.ok(lock.expiresAt > Date.now() - 60_000);
  await assert.rejects(channelB.acquire("editor"), (error) => error instanceof RosterError && error.code === "METADATA_LOCK");
  await channelA.set({ body: "by a" }, { lockName: "editor" });
  await assert.rejects(channelB.set({ body: "by b" }, { lockName: "editor" }), { code: "METADATA_LOCK" });
  await lock.release();
  assert.equal(lock.held, false);

  const result = await channelB.withLock("editor", async (held) => {
    assert.equal(held.owner, "lock-b");
    await channelB.update({ body: "by b" }, { lockName: "editor" });
    return "done";
  });
  assert.equal(result, "done");
  // withLock released it: a can take it again.
  const again = await channelA.acquire("editor", { autoExtend: true, ttlMs: 1000 });
  await new Promise((resolve) => setTimeout(resolve, 1600)); // past the TTL: only auto-extension keeps it
  await assert.rejects(channelB.acquire("editor"), { code: "METADATA_LOCK" });
  await again.release();

  // A socket that has not joined has no acting user.
  const loner = client({ userId: "loner" });
  await assert.rejects(loner.metadata("board", "locks").acquire("x"), { code: "UNAUTHORIZED" });
});
