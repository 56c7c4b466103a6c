// When the store fails (docs/protocol.md "When the store fails"), against real nodes on a
// private Redis: a Redis that comes back empty (`presence:lost`, `message:reset`) and a node
// cut off Redis while another goes on (`presence:resync`). The app does nothing: the SDK
// re-joins, restarts the channel's sequence and reconciles the member set by itself.

import { test } from "node:test";
import assert from "node:assert/strict";
import { MemberSet } from "../src/index.js";
import {
  converged,
  nextEvent,
  readyz,
  recordEvents,
  startRedis,
  startRoster,
  tcpRelay,
  testClient,
  view,
  waitFor,
  withTimeout,
} from "./harness.mjs";

/** Roster flags for a node on `redisUrl`; a long lease, so no node is judged dead while cut off. */
const onRedis = (redisUrl) => ["--redis-url", redisUrl, "--node-lease-ms", "20000"];

/** Every background error of `clients` (none is expected). */
const errorsOf = (clients) => clients.flatMap((c) => c.errors.map((e) => `${e.code}: ${e.message}`));

/**
 * Redis is killed and an empty one starts on its port. Each socket that held a connection
 * gets `presence:lost`: the rooms (one per node, over both transports) join again at once
 * with their state, without a leave and a join of themselves, and see each other again
 * under their new connIds. Each subscription gets `message:reset`: the next message is
 * seq 1, and it is delivered.
 */
test("a Redis that comes back empty: rooms re-join, channels start over", async () => {
  const redis = await startRedis();
  const nodeA = await startRoster(onRedis(redis.url));
  const nodeB = await startRoster(onRedis(redis.url));
  const ada = testClient(nodeA, { userId: "ada" });
  const bob = testClient(nodeB, { userId: "bob", transport: "socketio" });
  const clients = [ada, bob];
  try {
    const adaRoom = await ada.join("lost", { name: "ada" });
    const bobRoom = await bob.join("lost", { name: "bob" });
    const rooms = [adaRoom, bobRoom];
    await adaRoom.setState({ mood: "calm" });
    await converged(rooms, ['ada:{"mood":"calm","name":"ada"}', 'bob:{"name":"bob"}']);
    const inboxes = [[], []];
    const subs = clients.map((c, i) => c.subscribe("lost-chat", (m) => inboxes[i].push(m)));
    await withTimeout(Promise.all(subs.map((s) => s.ready)), "the subscriptions");
    for (const n of [1, 2, 3]) await ada.publish("lost-chat", `before ${n}`);
    await waitFor(() => inboxes.every((inbox) => inbox.length === 3), "the first messages everywhere");

    const oldConnIds = rooms.map((room) => room.self.connId);
    const events = rooms.map(recordEvents);
    const moves = rooms.map((room) => {
      const seen = [];
      room.on("update", (member, previous) => {
        if (previous.connId !== member.connId) seen.push({ from: previous.connId, to: member.connId });
      });
      return seen;
    });
    const rejoined = rooms.map((room) => nextEvent(room, "rejoined", "a re-join after presence:lost"));
    const resets = subs.map((sub) => nextEvent(sub, "reset", "message:reset"));
    const started = Date.now();
    await redis.restart();

    assert.deepEqual(
      (await Promise.all(rejoined)).map(([event]) => event.reason),
      ["lost", "lost"],
    );
    // At once, not at the next heartbeat (every 10 s here).
    assert.ok(Date.now() - started < 5000, `re-joined after ${Date.now() - started} ms`);
    for (const [i, room] of rooms.entries()) {
      assert.equal(room.status, "joined");
      assert.notEqual(room.self.connId, oldConnIds[i], "a new connection");
    }
    await converged(rooms, ['ada:{"mood":"calm","name":"ada"}', 'bob:{"name":"bob"}'], "both back, with their state");
    assert.ok(bobRoom.member(adaRoom.self.connId), "bob sees ada's new connection");
    assert.ok(adaRoom.member(bobRoom.self.connId), "ada sees bob's new connection");
    for (const [i, room] of rooms.entries()) {
      assert.ok(!room.member(oldConnIds[0]) && !room.member(oldConnIds[1]), `room ${i}: the old connections are gone`);
      const own = room.userId;
      assert.deepEqual(
        events[i].filter((e) => e.userId === own).map((e) => e.type),
        ["update"],
        `room ${i}: its own connection moved, with no leave or join of itself`,
      );
      assert.deepEqual(moves[i], [{ from: oldConnIds[i], to: room.self.connId }]);
    }

    for (const [i, [event]] of (await Promise.all(resets)).entries()) {
      assert.deepEqual(event, { channel: "lost-chat", seq: 0, previousSeq: 3 }, `subscription ${i}`);
    }
    assert.deepEqual(
      subs.map((s) => s.lastSeq),
      [0, 0],
    );
    const ack = await bob.publish("lost-chat", "after");
    assert.equal(ack.seq, 1, "the channel counts from 1 again");
    await waitFor(() => inboxes.every((inbox) => inbox.length === 4), () => `the first message after the reset everywhere: ${JSON.stringify(inboxes)}`);
    for (const inbox of inboxes) {
      assert.deepEqual(
        inbox.map((m) => `${m.seq}:${m.payload}`),
        ["1:before 1", "2:before 2", "3:before 3", "1:after"],
      );
    }
    // The new connections work.
    await bobRoom.setState({ name: "bob", mood: "fine" });
    await converged(rooms, ['ada:{"mood":"calm","name":"ada"}', 'bob:{"mood":"fine","name":"bob"}']);
    assert.deepEqual(errorsOf(clients), []);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([nodeA.stop(), nodeB.stop()]);
    await redis.stop();
  }
});

/**
 * Node A is cut off Redis (through a relay) while node B keeps it: what B's clients do
 * meanwhile (a patch, a leave, a join) never reaches A's clients. When the link is back, A
 * sends `presence:resync`; its clients (both transports) re-read the room, paged (two
 * members a page on A), and report exactly the missed changes, nothing for what did not
 * change.
 */
test("presence:resync after a node was cut off Redis: the missed changes, once", async () => {
  const redis = await startRedis();
  const relay = await tcpRelay(redis.port);
  const nodeA = await startRoster([...onRedis(relay.url), "--max-snapshot-members", "2"]);
  const nodeB = await startRoster(onRedis(redis.url));
  const watchers = [testClient(nodeA, { userId: "w-ws" }), testClient(nodeA, { userId: "w-sio", transport: "socketio" })];
  const stay = testClient(nodeB, { userId: "stay" });
  const goner = testClient(nodeB, { userId: "goner" });
  const newcomer = testClient(nodeB, { userId: "newcomer" });
  const clients = [...watchers, stay, goner, newcomer];
  try {
    const watched = [];
    for (const [i, w] of watchers.entries()) watched.push(await w.join("resync", { w: i }));
    const stayRoom = await stay.join("resync", { v: 1 });
    const gonerRoom = await goner.join("resync", {});
    const before = ['goner:{}', 'stay:{"v":1}', 'w-sio:{"w":1}', 'w-ws:{"w":0}'];
    await converged([...watched, stayRoom, gonerRoom], before);
    const events = watched.map(recordEvents);
    const resynced = watched.map((room) => nextEvent(room, "resynced", "presence:resync", 15_000));
    const connIds = watched.map((room) => room.self.connId);
    // Count the first watcher's snapshot pages.
    const pages = [];
    const call = watchers[0]._call.bind(watchers[0]);
    watchers[0]._call = (event, data, options) => {
      if (event === "presence:snapshot") pages.push(data.cursor ?? "first");
      return call(event, data, options);
    };

    relay.cut();
    await waitFor(async () => (await readyz(nodeA)) === 503, "node A to lose Redis");
    await stayRoom.setState({ v: 2 });
    await gonerRoom.leave();
    await newcomer.join("resync", { hello: true });
    const after = ['newcomer:{"hello":true}', 'stay:{"v":2}', 'w-sio:{"w":1}', 'w-ws:{"w":0}'];
    await converged([stayRoom], after, "node B's side to see the changes");
    for (const room of watched) assert.deepEqual(view(room), before, "A's clients missed them");

    relay.mend();
    const reconciled = (await Promise.all(resynced)).map(([event]) => event);
    await converged(watched, after, "A's clients after the resync");
    assert.equal(pages.length, 2, `the re-read's pages: ${JSON.stringify(pages)}`);
    for (const [i, event] of reconciled.entries()) {
      assert.equal(typeof event.reason, "string");
      assert.deepEqual(
        event.changes.map((c) => `${c.type}:${c.member.userId}`).sort(),
        ["join:newcomer", "leave:goner", "update:stay"],
        `watcher ${i}: the changes found`,
      );
      assert.deepEqual(
        events[i].map((e) => `${e.type}:${e.userId}`).sort(),
        ["join:newcomer", "leave:goner", "update:stay"],
        `watcher ${i}: each missed change once, nothing else`,
      );
      assert.equal(watched[i].status, "joined");
      assert.equal(watched[i].self.connId, connIds[i], "the same connection: a re-read, not a re-join");
    }
    // The link works again: a change on B reaches A's clients as an event.
    await stayRoom.setState({ v: 3 });
    await converged(watched, ['newcomer:{"hello":true}', 'stay:{"v":3}', 'w-sio:{"w":1}', 'w-ws:{"w":0}']);
    // The watchers' re-read may have raced the node's readiness (STORE_UNAVAILABLE, retried).
    assert.deepEqual(
      errorsOf(clients).filter((e) => !e.startsWith("STORE_UNAVAILABLE")),
      [],
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([nodeA.stop(), nodeB.stop()]);
    await relay.close();
    await redis.stop();
  }
});

/**
 * The reconciliation rules on a real server's snapshot: a snapshot read before an update
 * the room already applied does not undo it, one read after reports nothing new, and one
 * that no longer lists a member removes it (a late copy of its join stays ignored).
 */
test("a stale snapshot cannot undo a newer event", async () => {
  const server = await startRoster();
  const watcher = testClient(server, { userId: "watcher" });
  const mover = testClient(server, { userId: "mover" });
  try {
    const watched = await watcher.join("stale", {});
    const moving = await mover.join("stale", { v: 1 });
    await converged([watched, moving], ['mover:{"v":1}', "watcher:{}"]);
    const read = async () => (await watcher.request("presence:snapshot", { roomId: "stale" })).snapshot;
    const stale = await read();

    const updated = nextEvent(watched, "update");
    await moving.setState({ v: 2 });
    const [member] = await updated;
    const set = new MemberSet();
    set.reset(stale);
    assert.deepEqual(
      set.apply({ type: "update", roomId: "stale", ...member }).map((c) => c.type),
      ["update"],
    );

    assert.deepEqual(set.reset(stale), [], "the older row keeps the newer update");
    assert.deepEqual(set.get(member.connId).state, { v: 2 });
    assert.deepEqual(set.reset(await read()), [], "a fresh snapshot agrees: nothing to report");

    const join = { type: "join", roomId: "stale", ...member, state: { v: 1 }, ts: member.epoch };
    await moving.leave();
    await waitFor(() => !watched.member(member.connId), "the leave");
    const changes = set.reset(await read());
    assert.deepEqual(
      changes.map((c) => `${c.type}:${c.member.userId}`),
      ["leave:mover"],
    );
    assert.deepEqual(set.apply(join), [], "a late join of a member the snapshot dropped stays ignored");
  } finally {
    await Promise.all([watcher.close(), mover.close()]);
    await server.stop();
  }
});
