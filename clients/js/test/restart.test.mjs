// The server crashes (SIGKILL) and comes back on the same port. With the embedded store its
// state is gone: clients re-join and their subscriptions resync. With Redis behind it the
// connections survive: clients resume them (nobody sees a leave), re-subscribe, recover the
// messages published meanwhile on another node, and send what they queued, once.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  converged,
  nextEvent,
  recordEvents,
  restartOn,
  startRedis,
  startRoster,
  testClient,
  waitFor,
  withTimeout,
} from "./harness.mjs";

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Clients on one node over both transports, each in the room and subscribed to a channel. */
async function crew(server, roomId, channel, transports) {
  const clients = transports.map((transport, i) => testClient(server, { transport, userId: `u${i}`, reconnect: { baseMs: 100, capMs: 500 } }));
  const rooms = await Promise.all(clients.map((c, i) => c.join(roomId, { i })));
  const inboxes = clients.map(() => []);
  const subs = clients.map((c, i) => c.subscribe(channel, (m) => inboxes[i].push(m)));
  await withTimeout(Promise.all(subs.map((s) => s.ready)), "the subscriptions");
  await Promise.all(clients.map((c) => c.ready()));
  return { clients, rooms, inboxes, subs };
}

/**
 * Embedded store: after a crash the connections and the channel are gone; every client
 * re-joins with its latest state, and its subscription signals resync (the channel counts
 * from 1 again, which the client tells from the id of the last message it saw) and carries
 * on. A publish queued while the server was down is sent once.
 */
test("clients survive a crash of a server without Redis", async () => {
  let server = await startRoster();
  const port = server.port;
  const { clients, rooms, inboxes, subs } = await crew(server, "crash", "crash-chat", ["ws", "ws", "socketio"]);
  try {
    await converged(rooms, ['u0:{"i":0}', 'u1:{"i":1}', 'u2:{"i":2}']);
    await clients[0].publish("crash-chat", "before");
    await waitFor(() => inboxes.every((inbox) => inbox.length === 1), "the first message everywhere");
    const statuses = clients.map((c) => {
      const seen = [];
      c.on("status", ({ status }) => seen.push(status));
      return seen;
    });

    await server.kill();
    await waitFor(() => clients.every((c) => c.status === "reconnecting"), "every client to notice the crash");
    // State changed and messages published while the server is down travel after the reconnect.
    const patched = rooms[1].setState({ i: 10 });
    const queued = clients[2].publish("crash-chat", "while down");
    const rejoined = rooms.map((room) => nextEvent(room, "rejoined", "a re-join", 15_000));
    const resyncs = subs.map((sub, i) => nextEvent(sub, "resync", `a resync of client ${i}`, 15_000));
    server = await restartOn(port);

    const reasons = (await Promise.all(rejoined)).map(([event]) => event.reason);
    assert.deepEqual(reasons, ["reconnected", "reconnected", "reconnected"], "the connections were gone: joined afresh");
    const resynced = (await Promise.all(resyncs)).map(([event]) => event);
    await patched;
    const ack = await withTimeout(queued, "the queued publish");
    assert.equal(ack.seq, 1, "the new channel's first message");
    for (const [i, event] of resynced.entries()) {
      assert.equal(event.since, 1);
      // Client 2 re-subscribes, then sends its queued publish; the others re-subscribe before
      // or after it lands: then the new seq 1 is pushed, or comes with the resync.
      assert.ok(event.seq === 0 || event.seq === 1, `client ${i}: seq ${event.seq}`);
      await waitFor(
        () => [...inboxes[i], ...event.messages].some((m) => m.payload === "while down"),
        `client ${i} to get the queued message (pushed or with its resync)`,
      );
      assert.deepEqual(
        [...inboxes[i], ...event.messages].map((m) => m.payload),
        ["before", "while down"],
        `client ${i}: each message once`,
      );
    }
    await converged(rooms, ['u0:{"i":0}', 'u1:{"i":10}', 'u2:{"i":2}'], "convergence after the restart", 15_000);
    for (const [i, c] of clients.entries()) {
      assert.equal(c.status, "connected");
      assert.equal(c.getStats().reconnects, 1, `client ${i} counted its reconnect`);
      assert.deepEqual(statuses[i].slice(0, 1), ["reconnecting"]);
      assert.ok(statuses[i].includes("connected"));
    }
    // The new connections work: a patch after the restart reaches everyone.
    await rooms[0].setState({ i: 100 });
    await converged(rooms, ['u0:{"i":100}', 'u1:{"i":10}', 'u2:{"i":2}']);
    assert.deepEqual(
      clients.flatMap((c) => c.errors),
      [],
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await server.stop();
  }
});

/**
 * Redis, two nodes: node A crashes and restarts while a watcher on node B publishes. A's
 * clients resume (same connections, no leave seen by anyone, B's watcher included),
 * recover B's messages from their last seq, and the publishes they queued while A was down
 * are delivered exactly once.
 */
test("clients resume across a crash of a server with Redis", async () => {
  const redis = await startRedis();
  // A dead node's connections are removed when its lease runs out (5 s by default), whatever
  // the resume grace: a long lease keeps this test from racing that removal on a slow machine.
  const flags = ["--redis-url", redis.url, "--node-lease-ms", "20000"];
  let nodeA = await startRoster(flags);
  const nodeB = await startRoster(flags);
  const port = nodeA.port;
  const { clients, rooms, inboxes, subs } = await crew(nodeA, "crash", "crash-chat", ["ws", "ws", "socketio"]);
  const watcher = testClient(nodeB, { userId: "watcher" });
  const all = [...clients, watcher];
  try {
    const watched = await watcher.join("crash", { i: "w" });
    const watcherInbox = [];
    await withTimeout(watcher.subscribe("crash-chat", (m) => watcherInbox.push(m)).ready, "the watcher's subscription");
    const everyone = [...rooms, watched];
    const inboxesAll = [...inboxes, watcherInbox];
    await converged(everyone, ['u0:{"i":0}', 'u1:{"i":1}', 'u2:{"i":2}', 'watcher:{"i":"w"}']);
    for (const c of all) await c.publish("crash-chat", `hello from ${c.getStats().transport}`);
    await waitFor(() => inboxesAll.every((inbox) => inbox.length === 4), "the first four messages everywhere");
    const events = everyone.map(recordEvents);
    const connIds = rooms.map((room) => room.self.connId);

    await nodeA.kill();
    await waitFor(() => clients.every((c) => c.status === "reconnecting"), "A's clients to notice the crash");
    // Meanwhile: B's watcher publishes (A's clients must recover these), A's clients queue
    // publishes and a patch.
    for (const n of [1, 2, 3]) await watcher.publish("crash-chat", `while A is down ${n}`);
    const queued = [clients[1].publish("crash-chat", "queued 1"), clients[1].publish("crash-chat", "queued 2"), clients[2].publish("crash-chat", "queued 3")];
    assert.equal(clients[1].getStats().queueSize, 2);
    const patched = rooms[0].setState({ i: 10 });
    const rejoined = rooms.map((room) => nextEvent(room, "rejoined", "a resume", 15_000));
    const resubscribed = subs.map((sub) => nextEvent(sub, "subscribed", "a re-subscription", 15_000));

    nodeA = await restartOn(port, flags);
    assert.deepEqual(
      (await Promise.all(rejoined)).map(([event]) => event.reason),
      ["resumed", "resumed", "resumed"],
    );
    assert.deepEqual(
      rooms.map((room) => room.self.connId),
      connIds,
      "the same connections",
    );
    for (const [event] of await Promise.all(resubscribed)) {
      assert.equal(event.recovered, true, "history reached back to the last seen seq");
    }
    const acks = await withTimeout(Promise.all(queued), "the queued publishes");
    assert.deepEqual(
      acks.slice(0, 2).map((a) => a.seq),
      [...acks.slice(0, 2).map((a) => a.seq)].sort((a, b) => a - b),
      "one client's publishes keep their order",
    );
    await patched;

    const total = 4 + 3 + 3;
    await waitFor(() => inboxesAll.every((inbox) => inbox.length >= total), () => `${total} messages everywhere: ${JSON.stringify(inboxesAll.map((i) => i.length))}`);
    const payloads = inboxesAll[0].map((m) => m.payload);
    for (const inbox of inboxesAll) {
      assert.deepEqual(
        inbox.map((m) => m.seq),
        range(1, total),
        "every message once, in order",
      );
      assert.deepEqual(
        inbox.map((m) => m.payload),
        payloads,
      );
    }
    assert.deepEqual(
      [...payloads].sort(),
      [
        "hello from socketio",
        "hello from ws",
        "hello from ws",
        "hello from ws",
        "queued 1",
        "queued 2",
        "queued 3",
        "while A is down 1",
        "while A is down 2",
        "while A is down 3",
      ],
      "nothing lost, nothing twice",
    );

    await converged(everyone, ['u0:{"i":10}', 'u1:{"i":1}', 'u2:{"i":2}', 'watcher:{"i":"w"}']);
    for (const [i, seen] of events.entries()) {
      assert.deepEqual(
        seen.map((e) => `${e.type}:${e.userId}`),
        ["update:u0"],
        `member set ${i} saw the patch and no leave or join`,
      );
    }
    assert.deepEqual(
      all.flatMap((c) => c.errors),
      [],
    );
  } finally {
    await Promise.all(all.map((c) => c.close()));
    await Promise.all([nodeA.stop(), nodeB.stop()]);
    await redis.stop();
  }
});
