// A server that stops answering (SIGSTOP: its sockets stay open, nothing is read): requests
// fail with TIMEOUT, and a heartbeat without an answer makes the client drop the half-open
// socket and reconnect, then resume its connection when the server is back.

import { test } from "node:test";
import assert from "node:assert/strict";
import { RosterError } from "../src/index.js";
import { connectErrors, nextEvent, startRoster, testClient, waitFor } from "./harness.mjs";

/** TIMEOUT is a typed error naming the request; a silent heartbeat forces a reconnect, which resumes the connection. */
test("timeouts are typed and a silent heartbeat forces a reconnect", async () => {
  const server = await startRoster();
  // Heartbeats every 300 ms, 300 ms to answer; a connection attempt may take 500 ms.
  const client = testClient(server, { userId: "patient", requestTimeoutMs: 300, heartbeatIntervalMs: 300, connectTimeoutMs: 500 });
  try {
    const room = await client.join("frozen", { n: 1 });
    const connId = room.self.connId;
    await server.freeze();
    const failures = connectErrors(client);
    // Shorter than the heartbeat's timeout, so this request fails before the socket is dropped.
    await assert.rejects(client.metadata("t", "frozen").get({ timeoutMs: 100 }), (error) => {
      assert.ok(error instanceof RosterError);
      assert.equal(error.code, "TIMEOUT");
      assert.equal(error.event, "metadata:get");
      return true;
    });
    await waitFor(() => client.status === "reconnecting", "the heartbeat timeout to drop the socket");
    // The dropped socket's reason, then a connection attempt that gets no answer.
    await failures.after(2, "a connection attempt to time out");

    const rejoined = nextEvent(room, "rejoined");
    server.thaw();
    assert.deepEqual((await rejoined)[0], { reason: "resumed" });
    assert.equal(room.self.connId, connId);
    await client.ready();
    assert.ok(client.getStats().reconnects >= 1);
    // Why the socket was dropped is reported (nothing is swallowed).
    assert.ok(
      failures.seen.some((error) => error.code === "TIMEOUT" && error.event === "presence:heartbeat"),
      failures.seen.map((error) => `${error.code} ${error.event}`).join(", "),
    );
    assert.deepEqual(client.errors, []);
  } finally {
    server.thaw();
    await client.close();
    await server.stop();
  }
});
