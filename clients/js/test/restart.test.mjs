// The server crashes (SIGKILL: the embedded store's state is gone) and comes back on the same
// port: clients reconnect with backoff, re-join with their current state, and converge.

import { test } from "node:test";
import assert from "node:assert/strict";
import { converged, nextEvent, sleep, startRoster, testClient, waitFor } from "./harness.mjs";

/** After a crash and restart every client is back in the room with its latest state. */
test("clients survive a server crash and restart", async () => {
  let server = await startRoster();
  const port = server.port;
  const clients = ["ws", "ws", "socketio"].map((transport, i) =>
    testClient(server, { transport, userId: `u${i}`, reconnect: { baseMs: 200, capMs: 1000 } }),
  );
  try {
    const rooms = await Promise.all(clients.map((c, i) => c.join("crash", { i })));
    await converged(rooms, ['u0:{"i":0}', 'u1:{"i":1}', 'u2:{"i":2}']);
    // A join resolves while the first connect is still restoring; wait for `connected` itself.
    await Promise.all(clients.map((c) => c.ready()));
    const statuses = clients.map((c) => {
      const seen = [];
      c.on("status", ({ status }) => seen.push(status));
      return seen;
    });

    await server.kill();
    await waitFor(() => clients.every((c) => c.status === "reconnecting"), "every client to notice the crash");
    // State changed while the server is down travels with the re-join.
    const patched = rooms[1].setState({ i: 10 });
    await sleep(500); // let a few reconnect attempts fail
    const rejoined = rooms.map((room) => nextEvent(room, "rejoined", "a re-join", 15_000));
    server = await restartOn(port);

    const reasons = (await Promise.all(rejoined)).map(([event]) => event.reason);
    assert.deepEqual(reasons, ["reconnected", "reconnected", "reconnected"]);
    await patched;
    await converged(rooms, ['u0:{"i":0}', 'u1:{"i":10}', 'u2:{"i":2}'], "convergence after the restart", 15_000);
    for (const [i, c] of clients.entries()) {
      assert.equal(c.status, "connected");
      assert.ok(c.getStats().reconnects >= 1, `client ${i} counted its reconnect`);
      assert.deepEqual(statuses[i].slice(0, 1), ["reconnecting"]);
      assert.ok(statuses[i].includes("connected"));
    }
    // The new connections work: a patch after the restart reaches everyone.
    await rooms[0].setState({ i: 100 });
    await converged(rooms, ['u0:{"i":100}', 'u1:{"i":10}', 'u2:{"i":2}']);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await server.stop();
  }
});

/** Restarts roster on `port`, retrying while the port is still being released. */
async function restartOn(port) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRoster([], { port });
    } catch (error) {
      if (attempt >= 10) throw error;
      await sleep(200);
    }
  }
}
