// Messages with the real socket.io-client: subscribe, the `message` event, recovery with
// `since` after a reconnect, idempotent publishing, and errors that keep the socket.

import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { request, startRoster, withTimeout } from "./harness.mjs";

/** Collects `message` events. */
function inbox(socket) {
  const got = [];
  socket.on("message", (m) => got.push(m));
  return {
    got,
    async until(count) {
      await withTimeout(
        (async () => {
          while (got.length < count) await new Promise((r) => setTimeout(r, 5));
        })(),
        `${count} messages`,
      );
      return got.slice(0, count);
    },
  };
}

for (const transports of [["websocket"], ["polling"]]) {
  describe(`messages over ${transports[0]}`, () => {
    let roster;
    before(async () => {
      roster = await startRoster();
    });
    after(async () => {
      assert.equal(await roster.stop(), 0);
    });

    it("delivers every message in order, recovers with since, and publishes once per id", async () => {
      const reader = await roster.connect({ transports });
      const box = inbox(reader);
      assert.deepEqual(await request(reader, "message:subscribe", { channel: "chat" }), { ok: true, channel: "chat", seq: 0 });
      const writer = await roster.connect({ transports });
      await request(writer, "presence:join", { roomId: "lobby", userId: "ada" });
      for (let i = 0; i < 20; i++) {
        const ack = await request(writer, "message:publish", { channel: "chat", payload: { i }, id: `m-${i}` });
        assert.equal(ack.seq, i + 1);
      }
      const retry = await request(writer, "message:publish", { channel: "chat", payload: { i: 0 }, id: "m-0" });
      assert.deepEqual(retry, { ok: true, channel: "chat", seq: 1, id: "m-0" });
      const got = await box.until(20);
      assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 20 }, (_, i) => i + 1));
      assert.deepEqual(got[0], { channel: "chat", seq: 1, id: "m-0", from: "ada", payload: { i: 0 }, ts: got[0].ts });

      // The reader's network drops; five messages later it is back and asks since 20.
      reader.disconnect();
      for (let i = 20; i < 25; i++) await request(writer, "message:publish", { channel: "chat", payload: { i } });
      reader.connect();
      await withTimeout(once(reader, "connect"), "the reconnect");
      const ack = await request(reader, "message:subscribe", { channel: "chat", since: 20 });
      assert.equal(ack.recovered, true);
      assert.deepEqual(ack.messages.map((m) => m.seq), [21, 22, 23, 24, 25]);

      // Bad requests answer with their code and the socket keeps its subscription.
      const big = await request(writer, "message:publish", { channel: "chat", payload: "x".repeat(70_000) });
      assert.equal(big.error.code, "PAYLOAD_TOO_LARGE");
      const nameless = await request(writer, "message:publish", { channel: "", payload: 1 });
      assert.equal(nameless.error.code, "INVALID_PAYLOAD");
      await request(writer, "message:publish", { channel: "chat", payload: "still here" });
      const [last] = (await box.until(21)).slice(20);
      assert.equal(last.seq, 26);
      assert.equal(last.payload, "still here");
    });
  });
}
