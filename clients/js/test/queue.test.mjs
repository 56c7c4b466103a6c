// The outbound queue: requests made while disconnected wait (bounded, oldest dropped first)
// and go out in order once the client is back.

import { test } from "node:test";
import assert from "node:assert/strict";
import { gate, startRoster, testClient, waitFor, withTimeout } from "./harness.mjs";

/** Past its bound the queue drops its oldest requests (rejected QUEUE_OVERFLOW, counted in getStats()); the rest, publishes included, run in order after the reconnect, each once. */
test("the outbound queue is bounded and flushed in order after a reconnect", async () => {
  const server = await startRoster();
  const g = gate();
  const client = testClient(server, { userId: "queued", queueSize: 100, WebSocket: g.WebSocket });
  const reader = testClient(server, { userId: "reader" });
  try {
    await client.join("queue-room");
    await client.metadata("q", "queue-room").set({ n: "0" });
    const inbox = [];
    await withTimeout(reader.subscribe("queue-chat", (m) => inbox.push(m.payload)).ready, "the reader's subscription");

    g.block();
    client.debug.dropConnection();
    await waitFor(() => client.status === "reconnecting", "the client to notice");
    const channel = client.metadata("q", "queue-room");
    // 105 requests: even ones publish, odd ones read metadata.
    const results = Array.from({ length: 105 }, (_, i) =>
      (i % 2 === 0 ? client.publish("queue-chat", i) : channel.get()).then(
        (ack) => ({ i, ok: true, seq: ack.seq }),
        (error) => ({ i, code: error.code }),
      ),
    );
    const stats = client.getStats();
    assert.equal(stats.queueSize, 100);
    assert.equal(stats.dropped, 5);
    assert.equal(stats.status, "reconnecting");

    g.unblock();
    const settled = await withTimeout(Promise.all(results), "every queued request");
    assert.deepEqual(
      settled.filter((r) => !r.ok).map((r) => `${r.i}:${r.code}`),
      ["0:QUEUE_OVERFLOW", "1:QUEUE_OVERFLOW", "2:QUEUE_OVERFLOW", "3:QUEUE_OVERFLOW", "4:QUEUE_OVERFLOW"],
      "the five oldest were dropped",
    );
    assert.equal(settled.filter((r) => r.ok).length, 100);
    const published = settled.filter((r) => r.ok && r.i % 2 === 0);
    assert.deepEqual(
      published.map((r) => r.seq),
      published.map((_, n) => n + 1),
      "publishes went out in the order they were made",
    );
    await waitFor(() => inbox.length === published.length, "every queued publish delivered");
    assert.deepEqual(
      inbox,
      published.map((r) => r.i),
    );
    const after = client.getStats();
    assert.equal(after.queueSize, 0);
    assert.equal(after.dropped, 5);
    assert.equal(after.reconnects, 1);
    assert.equal(typeof after.lastAckLatencyMs, "number");
    assert.deepEqual(client.errors, []);
  } finally {
    await Promise.all([client.close(), reader.close()]);
    await server.stop();
  }
});

/** close() fails whatever still waits with CLOSED. */
test("close rejects queued requests", async () => {
  const server = await startRoster();
  const client = testClient(server, { userId: "closer" });
  await server.stop();
  try {
    await waitFor(() => client.status === "reconnecting" || client.status === "connecting", "no connection");
    const pending = client.metadata("q", "x").get();
    const publish = client.publish("x", 1);
    await client.close();
    await assert.rejects(pending, { code: "CLOSED" });
    await assert.rejects(publish, { code: "CLOSED" });
    assert.equal(client.status, "disconnected");
  } finally {
    await client.close();
  }
});
