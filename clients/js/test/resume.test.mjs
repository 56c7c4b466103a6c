// Resume against the real server (docs/protocol.md "Resume: a reconnect is not a leave"): a
// dropped socket resumes its connection and nobody sees it leave; past the grace the client
// joins afresh; close() is a goodbye the others see at once.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  FAST_REAP,
  connectErrors,
  converged,
  gate,
  nextEvent,
  recordEvents,
  startRoster,
  testClient,
  waitFor,
} from "./harness.mjs";

const servers = [];
const clients = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.stop()));
});
async function server(flags = []) {
  const s = await startRoster(flags);
  servers.push(s);
  return s;
}
function client(s, options) {
  const c = testClient(s, options);
  clients.push(c);
  return c;
}

for (const transport of ["ws", "socketio"]) {
  /** A socket that drops (no goodbye) resumes its connection: same connId, no leave or join for the others, the patch made offline lands. */
  test(`a dropped socket resumes without a leave (${transport})`, async () => {
    const s = await server();
    const g = gate();
    const watcher = client(s, { userId: "watcher" });
    const mover = client(s, { transport, userId: "mover", WebSocket: g.WebSocket, io: g.io });
    const watched = await watcher.join(`resume-${transport}`, { name: "w" });
    const room = await mover.join(`resume-${transport}`, { name: "m", away: false });
    await converged([watched, room], ['mover:{"away":false,"name":"m"}', 'watcher:{"name":"w"}']);
    const seen = recordEvents(watched);
    const { connId, epoch, resumeToken } = room.self;
    assert.match(resumeToken, /^[0-9a-f]{32}$/, "the join ack's resumeToken is kept");

    // The network goes: the socket dies without a Close frame, and reconnecting fails for a while.
    g.block();
    const failures = connectErrors(mover);
    mover.debug.dropConnection();
    await waitFor(() => mover.status === "reconnecting", "the mover to notice");
    const patched = room.setState({ away: true });
    await failures.after(3);
    assert.equal(room.status, "disconnected");
    assert.equal(mover.getStats().status, "reconnecting");

    const rejoined = nextEvent(room, "rejoined");
    g.unblock();
    assert.deepEqual((await rejoined)[0], { reason: "resumed" });
    await patched;
    assert.equal(room.self.connId, connId, "the same connection");
    assert.equal(room.self.epoch, epoch, "its epoch as it was");
    await converged([watched, room], ['mover:{"away":true,"name":"m"}', 'watcher:{"name":"w"}']);
    assert.deepEqual(
      seen.map((e) => `${e.type}:${e.userId}`),
      ["update:mover"],
      "the watcher saw the patch, and no leave or join",
    );
    assert.equal(mover.getStats().reconnects, 1);
    assert.deepEqual([...watcher.errors, ...mover.errors], []);
  });
}

/** Past the resume grace the server announces the leave (once, with the last state); the client then joins afresh with its current state. */
test("past the grace the connection is gone and the client re-joins", async () => {
  const s = await server(["--resume-grace-ms", "300", ...FAST_REAP]);
  const g = gate();
  const watcher = client(s, { userId: "watcher", presenceTtlMs: 1500 });
  const mover = client(s, { userId: "mover", presenceTtlMs: 1500, WebSocket: g.WebSocket });
  const watched = await watcher.join("grace", { name: "w" });
  const room = await mover.join("grace", { name: "m" });
  await converged([watched, room], ['mover:{"name":"m"}', 'watcher:{"name":"w"}']);
  const seen = recordEvents(watched);
  const oldConnId = room.self.connId;

  g.block();
  const left = nextEvent(watched, "leave", "the leave after the grace");
  mover.debug.dropConnection();
  const [gone] = await left;
  assert.equal(gone.connId, oldConnId);
  assert.deepEqual(gone.state, { name: "m" }, "the leave carries the last state");
  const patched = room.setState({ name: "m2" });

  const rejoined = nextEvent(room, "rejoined");
  g.unblock();
  assert.deepEqual((await rejoined)[0], { reason: "reconnected" }, "resume said UNKNOWN_CONNECTION: joined afresh");
  await patched;
  assert.notEqual(room.self.connId, oldConnId);
  await converged([watched, room], ['mover:{"name":"m2"}', 'watcher:{"name":"w"}']);
  assert.deepEqual(
    seen.map((e) => `${e.type}:${e.userId}`),
    ["leave:mover", "join:mover"],
  );
  assert.ok(!room.member(oldConnId), "the old connection is gone from the mover's own view");
  assert.deepEqual([...watcher.errors, ...mover.errors], []);
});

for (const transport of ["ws", "socketio"]) {
  /** close() says goodbye (a Close frame, a Socket.IO disconnect packet): the others see the leave at once, not after the grace. */
  test(`close() is a goodbye (${transport})`, async () => {
    const s = await server(); // default grace: 10 s
    const watcher = client(s, { userId: "watcher" });
    const leaver = client(s, { transport, userId: "leaver" });
    const watched = await watcher.join(`goodbye-${transport}`);
    const room = await leaver.join(`goodbye-${transport}`, { bye: true });
    await converged([watched, room], ['leaver:{"bye":true}', "watcher:{}"]);
    const started = Date.now();
    const left = nextEvent(watched, "leave", "the goodbye's leave", 5000);
    await leaver.close();
    const [gone] = await left;
    assert.equal(gone.userId, "leaver");
    assert.ok(Date.now() - started < 5000, "well within the 10 s grace");
    assert.equal(room.status, "left");
    assert.equal(leaver.status, "disconnected");
  });
}
