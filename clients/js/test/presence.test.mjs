// Presence against the real server: convergence of several clients over both transports,
// a member killed hard, a member reaped and healing itself, typed errors.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { RosterError } from "../src/index.js";
import { FAST_REAP, converged, nextEvent, sleep, startRoster, testClient, view, waitFor, withTimeout } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
let server;
const clients = [];
const client = (options) => {
  const c = testClient(server, { presenceTtlMs: 1500, ...options });
  clients.push(c);
  return c;
};

/**
 * Follows a room the way an app does: the members when join() resolves, then only the
 * events. Checks each event against what came before (no join for a member already there,
 * no update or leave for one that is not), so events racing the snapshot must be neither
 * lost nor repeated for the mirror to end equal to the room's member set.
 */
function mirror(room) {
  const members = new Map([...room.members()].map(([connId, m]) => [connId, m.state]));
  const problems = [];
  room.on("join", (m) => {
    if (members.has(m.connId)) problems.push(`join of ${m.userId}, already there`);
    members.set(m.connId, m.state);
  });
  room.on("update", (m) => {
    if (!members.has(m.connId)) problems.push(`update of ${m.userId}, not there`);
    members.set(m.connId, m.state);
  });
  room.on("leave", (m) => {
    if (!members.delete(m.connId)) problems.push(`leave of ${m.userId}, not there`);
  });
  return {
    check() {
      assert.deepEqual(problems, []);
      assert.deepEqual(new Map([...room.members()].map(([connId, m]) => [connId, m.state])), members, "events replayed over the first snapshot give the member set");
    },
  };
}

before(async () => {
  server = await startRoster(FAST_REAP);
});
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

for (const transports of [
  ["ws", "ws", "ws"],
  ["socketio", "socketio", "ws"],
]) {
  /** Three clients converge to one member set through joins, patches and leaves, with events racing each join's snapshot. */
  test(`three clients converge (${transports.join(", ")})`, async () => {
    const roomId = `converge-${transports.join("-")}`;
    // The first Socket.IO client gets no `io`: the SDK imports socket.io-client by itself.
    const [a, b, c] = transports.map((transport, i) => client({ transport, userId: `user-${i}`, ...(i === 0 ? { io: undefined } : {}) }));
    const ra = await a.join(roomId, { n: 0 });
    const ma = mirror(ra);
    const rb = await b.join(roomId, { n: 0 });
    const mb = mirror(rb);
    // Keep A and B patching while C joins, so events land before and after C's snapshot.
    let churn = true;
    const churning = Promise.all(
      [ra, rb].map(async (room) => {
        for (let n = 1; churn && n < 1000; n++) await room.setState({ n });
      }),
    );
    await sleep(30);
    const rc = await c.join(roomId, { n: 0 });
    const mc = mirror(rc);
    await sleep(50);
    churn = false;
    await churning;
    const final = { a: ra.state.n, b: rb.state.n };
    await converged([ra, rb, rc], [`user-0:{"n":${final.a}}`, `user-1:{"n":${final.b}}`, `user-2:{"n":0}`]);

    // Patches from several clients at once.
    await Promise.all([rc.setState({ mood: "happy" }), ra.setState({ n: -1, extra: true })]);
    await converged([ra, rb, rc], [`user-0:{"extra":true,"n":-1}`, `user-1:{"n":${final.b}}`, `user-2:{"mood":"happy","n":0}`]);
    for (const m of [ma, mb, mc]) m.check();

    // A leave, seen by the others as a leave event.
    const leaveSeen = nextEvent(ra, "leave");
    await rb.leave();
    const [left] = await leaveSeen;
    assert.equal(left.userId, "user-1");
    assert.equal(typeof left.state, "object", "leave listeners always get a state object");
    await converged([ra, rc], [`user-0:{"extra":true,"n":-1}`, `user-2:{"mood":"happy","n":0}`]);
    assert.equal(rb.status, "left");
    assert.deepEqual(ra.count(), { connections: 2, users: 2 });
    for (const m of [ma, mc]) m.check();
    assert.deepEqual(
      [a, b, c].flatMap((x) => x.errors),
      [],
    );
  });
}

/** A member whose process dies without a close disappears from the others after the server notices. */
test("a client killed hard disappears from the others", async () => {
  const watcher = client({ userId: "watcher" });
  const room = await watcher.join("hard-kill", { name: "watcher" });
  const child = spawn(process.execPath, [path.join(here, "fixtures", "member.mjs"), server.wsUrl, "hard-kill", "doomed"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    let out = "";
    const connId = await withTimeout(
      new Promise((resolve) => {
        child.stdout.on("data", (chunk) => {
          out += chunk;
          const match = /joined (\w+)/.exec(out);
          if (match) resolve(match[1]);
        });
      }),
      "the child to join",
    );
    await waitFor(() => room.member(connId), "the watcher to see the child");
    child.kill("SIGKILL");
    await waitFor(() => !room.member(connId), "the killed child to disappear");
    assert.deepEqual(view(room), ['watcher:{"name":"watcher"}']);
  } finally {
    child.kill("SIGKILL");
  }
});

/** Heartbeats paused past the TTL: the server reaps the member, which re-joins by itself with its current state on resume. */
test("a reaped client re-joins by itself", async () => {
  const a = client({ userId: "steady" });
  const b = client({ userId: "sleepy" });
  const ra = await a.join("reap", { name: "steady" });
  const rb = await b.join("reap", { name: "sleepy" });
  await converged([ra, rb], ['sleepy:{"name":"sleepy"}', 'steady:{"name":"steady"}']);
  const oldConnId = rb.self.connId;

  rb.pauseHeartbeats();
  // The other side sees the reaper's leave (TTL 1.5 s, reaper every 0.3 s).
  await waitFor(() => !ra.member(oldConnId), "the paused member to be reaped");
  // A patch made while paused must travel with the re-join.
  const patched = rb.setState({ name: "awake" });
  const rejoined = nextEvent(rb, "rejoined");
  rb.resumeHeartbeats();
  const [{ reason }] = await rejoined;
  assert.equal(reason, "reaped");
  await withTimeout(patched, "the paused patch to land");
  assert.notEqual(rb.self.connId, oldConnId);
  await converged([ra, rb], ['sleepy:{"name":"awake"}', 'steady:{"name":"steady"}']);
  assert.ok(!rb.member(oldConnId), "the reaped connection is gone from its own view too");
});

/** A refused request rejects with a RosterError carrying the server's code. */
test("errors are typed", async () => {
  const a = client({ userId: "typed" });
  await assert.rejects(a.join("", {}), (error) => {
    assert.ok(error instanceof RosterError);
    assert.equal(error.code, "INVALID_PAYLOAD");
    assert.equal(error.event, "presence:join");
    assert.match(error.message, /roomId/);
    return true;
  });
  assert.equal(a.room, null, "a refused join leaves no room behind");
  await assert.rejects(a.request("no:such-event", {}), { name: "RosterError", code: "INVALID_PAYLOAD" });
  const room = await a.join("typed", {});
  await assert.rejects(room.setState([1, 2]), { code: "INVALID_PAYLOAD" });
  await assert.rejects(a.metadata("t", "typed").update([{ key: "missing", value: "x" }]), { code: "METADATA_INVALID" });
  await room.leave();
  await assert.rejects(room.setState({ x: 1 }), { code: "CLOSED" });
});

/** A refused join keeps the client in the room it was in; a successful one switches rooms. */
test("switching rooms, and a refused switch", async () => {
  const watcher = client({ userId: "watcher-2" });
  const mover = client({ userId: "mover" });
  const watched = await watcher.join("switch-a", { name: "w" });
  const first = await mover.join("switch-a", { name: "m" });
  await converged([watched, first], ['mover:{"name":"m"}', 'watcher-2:{"name":"w"}']);

  await assert.rejects(mover.join("", {}), { code: "INVALID_PAYLOAD" });
  assert.equal(mover.room, first, "still in the first room");
  assert.notEqual(first.status, "left");
  // Whether the server kept the connection or dropped it, the member is (back) in the room.
  await waitFor(() => first.status === "joined", "the first room to be joined");
  await converged([watched, first], ['mover:{"name":"m"}', 'watcher-2:{"name":"w"}']);

  const left = nextEvent(first, "left");
  const second = await mover.join("switch-b", { name: "m2" });
  assert.equal((await left)[0].reason, "replaced");
  assert.equal(mover.room, second);
  await converged([watched], ['watcher-2:{"name":"w"}']);
  assert.deepEqual(view(second), ['mover:{"name":"m2"}']);
  assert.deepEqual(mover.errors, []);
});
