// Presence over Socket.IO with the real socket.io-client, on each transport: WebSocket
// only, long-polling only, and long-polling upgraded to WebSocket (the client default).

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { join, record, request, startRoster } from "./harness.mjs";

const TRANSPORTS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  "polling with upgrade": { transports: ["polling", "websocket"] },
};

for (const [name, options] of Object.entries(TRANSPORTS)) {
  describe(`presence over ${name}`, () => {
    let roster;
    before(async () => {
      roster = await startRoster();
    });
    after(async () => {
      assert.equal(await roster.stop(), 0);
    });

    it("members see join, update and leave with every field", async () => {
      const room = `room-${name}-1`;
      const ada = await roster.connect(options);
      const adaEvents = record(ada);
      const adaJoin = await join(ada, room, "ada", { status: "idle" });
      await adaEvents.next((e) => e.connId === adaJoin.self.connId, "ada's own join");

      const bob = await roster.connect(options);
      const bobJoin = await join(bob, room, "bob", { seat: 2 });
      assert.equal(bobJoin.snapshot.length, 2);
      assert.deepEqual(bobJoin.snapshot[0], {
        connId: adaJoin.self.connId,
        userId: "ada",
        state: { status: "idle" },
        epoch: adaJoin.self.epoch,
        lastSeen: adaJoin.self.epoch,
      });
      const joined = await adaEvents.next((e) => e.type === "join", "bob's join");
      assert.deepEqual(
        { ...joined, ts: 0 },
        {
          event: "presence:event",
          type: "join",
          roomId: room,
          userId: "bob",
          connId: bobJoin.self.connId,
          state: { seat: 2 },
          ts: 0,
          epoch: bobJoin.self.epoch,
        },
      );

      const beat = await request(bob, "presence:heartbeat", { connId: bobJoin.self.connId, patchState: { seat: 3, ready: true } });
      assert.deepEqual(beat, { ok: true, changed: true });
      const update = await adaEvents.next((e) => e.type === "update", "bob's update");
      assert.deepEqual(update.state, { seat: 3, ready: true });
      assert.equal(update.epoch, bobJoin.self.epoch);

      assert.deepEqual(await request(bob, "presence:leave"), { ok: true });
      const left = await adaEvents.next((e) => e.type === "leave", "bob's leave");
      assert.equal(left.connId, bobJoin.self.connId);
      // Clients of the Socket.IO presence server read `e.state` on every event.
      assert.deepEqual(left.state, { seat: 3, ready: true });
      assert.equal(left.epoch, bobJoin.self.epoch);
    });

    it("heartbeats report changes and broadcast only them", async () => {
      const room = `room-${name}-2`;
      const watcher = await roster.connect(options);
      const seen = record(watcher);
      await join(watcher, room, "w");
      const actor = await roster.connect(options);
      const { self } = await join(actor, room, "a", { n: 1 });
      await seen.next((e) => e.connId === self.connId, "the actor's join");

      assert.equal((await request(actor, "presence:heartbeat", { connId: self.connId, patchState: { n: 1 } })).changed, false);
      assert.equal((await request(actor, "presence:heartbeat", { connId: self.connId })).changed, false);
      assert.equal((await request(actor, "presence:heartbeat", { connId: self.connId, patchState: { n: 2 } })).changed, true);
      const update = await seen.next((e) => e.type === "update", "the update");
      assert.deepEqual(update.state, { n: 2 });
      assert.equal(seen.events.length, 0, "unchanged heartbeats broadcast nothing");
    });

    it("epochs fence stale writers", async () => {
      const socket = await roster.connect(options);
      const { self } = await join(socket, `room-${name}-3`, "u", { v: 0 });
      const beat = (epoch, v) => request(socket, "presence:heartbeat", { connId: self.connId, epoch, patchState: { v } });
      assert.equal((await beat(self.epoch + 10, 1)).ok, true);
      const stale = await beat(self.epoch + 9, 2);
      assert.equal(stale.ok, false);
      assert.equal(stale.error.code, "STALE_EPOCH");
      assert.equal((await beat(self.epoch + 10, 3)).changed, true);
    });

    it("a second join replaces the first; disconnect is leave", async () => {
      const room = `room-${name}-4`;
      const watcher = await roster.connect(options);
      const seen = record(watcher);
      await join(watcher, room, "w");
      const mover = await roster.connect(options);
      const first = await join(mover, room, "m");
      await seen.next((e) => e.type === "join" && e.connId === first.self.connId, "the first join");
      const second = await join(mover, room, "m", { again: true });
      assert.notEqual(second.self.connId, first.self.connId);
      await seen.next((e) => e.type === "leave" && e.connId === first.self.connId, "the replaced connection's leave");
      await seen.next((e) => e.type === "join" && e.connId === second.self.connId, "the second join");
      const stale = await request(mover, "presence:heartbeat", { connId: first.self.connId });
      assert.equal(stale.error.code, "UNKNOWN_CONNECTION");

      mover.disconnect();
      await seen.next((e) => e.type === "leave" && e.connId === second.self.connId, "the disconnect's leave");
    });

    it("a socket's requests are answered in order", async () => {
      const socket = await roster.connect(options);
      const { self } = await join(socket, `room-${name}-5`, "u");
      const acks = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          request(socket, "presence:heartbeat", { connId: self.connId, epoch: self.epoch + i, patchState: { i } }),
        ),
      );
      assert.ok(
        acks.every((ack) => ack.ok && ack.changed),
        "each heartbeat ran after the previous one (no STALE_EPOCH from reordering)",
      );
    });
  });
}
