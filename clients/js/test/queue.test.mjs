// The outbound queue: requests made while disconnected wait (bounded, oldest dropped first)
// and go out once the client is back.

import { test } from "node:test";
import assert from "node:assert/strict";
import { startRoster, testClient, waitFor } from "./harness.mjs";

/** Past its bound the queue drops its oldest requests (rejected QUEUE_OVERFLOW, counted); the rest run after the reconnect. */
test("the outbound queue is bounded and flushed after a reconnect", async () => {
  let server = await startRoster();
  const port = server.port;
  const client = testClient(server, { userId: "queued", queueSize: 100, reconnect: { baseMs: 100, capMs: 300 } });
  try {
    await client.join("queue-room");
    await client.metadata("q", "queue-room").set({ n: "0" });
    await server.kill();
    await waitFor(() => client.status === "reconnecting", "the client to notice");

    const channel = client.metadata("q", "queue-room");
    const results = Array.from({ length: 105 }, (_, i) =>
      channel.get().then(
        () => ({ i, ok: true }),
        (error) => ({ i, code: error.code }),
      ),
    );
    const stats = client.getStats();
    assert.equal(stats.queueSize, 100);
    assert.equal(stats.dropped, 5);
    assert.equal(stats.status, "reconnecting");

    server = await startRoster([], { port });
    const settled = await Promise.all(results);
    assert.deepEqual(
      settled.filter((r) => !r.ok).map((r) => `${r.i}:${r.code}`),
      ["0:QUEUE_OVERFLOW", "1:QUEUE_OVERFLOW", "2:QUEUE_OVERFLOW", "3:QUEUE_OVERFLOW", "4:QUEUE_OVERFLOW"],
      "the five oldest were dropped",
    );
    assert.equal(settled.filter((r) => r.ok).length, 100);
    const after = client.getStats();
    assert.equal(after.queueSize, 0);
    assert.equal(after.dropped, 5);
    assert.equal(after.reconnects, 1);
    assert.equal(typeof after.lastAckLatencyMs, "number");
  } finally {
    await client.close();
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
    await client.close();
    await assert.rejects(pending, { code: "CLOSED" });
    assert.equal(client.status, "disconnected");
  } finally {
    await client.close();
  }
});
