// The protocol parts the server does not have yet (DESIGN.md §7–§10: partial snapshots,
// presence:count, resume, messages, token refresh), and failures the real server will not
// produce on demand (no ack at all), against a scripted in-process fake of the /ws endpoint.
// When the server gains these, the same scenarios belong in the real-server suites.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocketServer } from "ws";
import { RosterError } from "../src/index.js";
import { nextEvent, testClient, waitFor, withTimeout } from "./harness.mjs";

/**
 * A fake /ws server. `handlers[event](data, conn)` returns the ack (`undefined`: never answer).
 * Every request is logged as {conn, event, data}; `conn` numbers the sockets from 1.
 */
async function fakeServer(handlers) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => wss.once("listening", resolve));
  const state = { requests: [], sockets: [], urls: [] };
  wss.on("connection", (socket, request) => {
    state.sockets.push(socket);
    state.urls.push(request.url);
    const conn = state.sockets.length;
    socket.on("message", async (raw) => {
      const { id, event, data } = JSON.parse(raw.toString());
      state.requests.push({ conn, event, data });
      const handler = handlers[event];
      const ack = handler ? await handler(data, conn, socket) : { ok: false, error: { code: "INVALID_PAYLOAD", message: `unknown event ${event}` } };
      if (ack !== undefined && socket.readyState === 1) socket.send(JSON.stringify({ id, ack }));
    });
  });
  const { port } = wss.address();
  return {
    ...state,
    state,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    url: `http://127.0.0.1:${port}`,
    push(socket, event, data) {
      socket.send(JSON.stringify({ event, data }));
    },
    /** Kills the newest socket without a close frame. */
    dropLatest() {
      state.sockets.at(-1).terminate();
    },
    events: (name) => state.requests.filter((r) => r.event === name),
    close: () =>
      new Promise((resolve) => {
        for (const socket of state.sockets) socket.terminate();
        wss.close(resolve);
      }),
  };
}

const row = (connId, userId, state = {}, epoch = 1) => ({ connId, userId, state, epoch, lastSeen: epoch });
const fast = { reconnect: { baseMs: 10, capMs: 50 }, requestTimeoutMs: 2000 };

/** A partial join snapshot is paged with presence:snapshot until no cursor; presence:count gives the server's counts. */
test("partial snapshots are paged; fetchCount", async () => {
  const server = await fakeServer({
    "presence:join": () => ({ ok: true, partial: true, cursor: "p2", snapshot: [row("a", "ua")], self: { connId: "c", epoch: 5 } }),
    "presence:snapshot": (data) =>
      data.cursor === "p2" ? { ok: true, snapshot: [row("b", "ub")], cursor: "p3" } : { ok: true, snapshot: [row("c", "me", { hi: 1 }, 5)] },
    "presence:heartbeat": () => ({ ok: true, changed: false }),
    "presence:count": (data) => ({ ok: true, roomId: data.roomId, connections: 3000, users: 2500 }),
  });
  const client = testClient(server, { ...fast, userId: "me" });
  try {
    const room = await client.join("big", { hi: 1 });
    assert.deepEqual([...room.members().keys()].sort(), ["a", "b", "c"]);
    assert.deepEqual(
      server.events("presence:snapshot").map((r) => r.data),
      [
        { roomId: "big", cursor: "p2" },
        { roomId: "big", cursor: "p3" },
      ],
    );
    assert.deepEqual(await room.fetchCount(), { roomId: "big", connections: 3000, users: 2500 });
    assert.deepEqual(room.count(), { connections: 3, users: 3 });
  } finally {
    await client.close();
    await server.close();
  }
});

/** After a drop, a room with a resumeToken resumes (fenced by a higher epoch); when resume says UNKNOWN_CONNECTION it joins afresh. */
test("resume after a reconnect, and falling back to a join", async () => {
  let resumeAnswer = "ok";
  const server = await fakeServer({
    "presence:join": (data, conn) => ({
      ok: true,
      snapshot: [row("other", "u-other"), row(`me-${conn}`, "me", data.state, 100 * conn)],
      self: { connId: `me-${conn}`, epoch: 100 * conn, resumeToken: `secret-${conn}` },
    }),
    "presence:resume": (data) =>
      resumeAnswer === "ok"
        ? { ok: true, snapshot: [row("other", "u-other"), row(data.connId, "me", { n: 1 }, data.epoch)], self: { connId: data.connId, epoch: data.epoch, resumeToken: "secret-2" } }
        : { ok: false, error: { code: "UNKNOWN_CONNECTION", message: "gone" } },
    "presence:heartbeat": () => ({ ok: true, changed: true }),
  });
  const client = testClient(server, { ...fast, userId: "me" });
  try {
    const room = await client.join("r", { n: 1 });
    const changes = [];
    room.on("change", (event) => changes.push(...event.changes));
    let rejoined = nextEvent(room, "rejoined");
    server.dropLatest();
    assert.equal((await rejoined)[0].reason, "resumed");
    const [resume] = server.events("presence:resume");
    assert.equal(resume.data.connId, "me-1");
    assert.equal(resume.data.resumeToken, "secret-1");
    assert.ok(resume.data.epoch > 100, "resume raises the epoch to fence the old socket");
    assert.equal(server.events("presence:join").length, 1, "no second join");
    assert.equal(room.self.connId, "me-1");
    assert.deepEqual(changes, [], "a resume with the same members changes nothing");

    resumeAnswer = "gone";
    rejoined = nextEvent(room, "rejoined");
    server.dropLatest();
    assert.equal((await rejoined)[0].reason, "reconnected");
    assert.equal(server.events("presence:join").length, 2);
    assert.deepEqual(server.events("presence:join")[1].data, { roomId: "r", state: { n: 1 }, userId: "me" });
    assert.equal(room.self.connId, "me-3");
    assert.deepEqual(
      changes.map((c) => `${c.type}:${c.member.connId}`).sort(),
      ["join:me-3", "leave:me-1"],
      "only the real difference is reported",
    );
  } finally {
    await client.close();
    await server.close();
  }
});

/** Messages: duplicates dropped, recovery from the last seq after a drop, `resync` when history is gone, publish resent with its id. */
test("messages: order, recovery, resync, idempotent publish", async () => {
  let subscribeAnswer;
  let holdPublish = true;
  const server = await fakeServer({
    "message:subscribe": (data) => subscribeAnswer(data),
    "message:publish": (data) => (holdPublish ? undefined : { ok: true, channel: data.channel, seq: 42, id: data.id }),
    "message:unsubscribe": () => ({ ok: true }),
  });
  const client = testClient(server, { ...fast, userId: "me" });
  const msg = (seq) => ({ channel: "chat", seq, id: `m${seq}`, from: "u", payload: { seq }, ts: seq });
  try {
    subscribeAnswer = () => ({ ok: true, channel: "chat", seq: 5 });
    const seen = [];
    const sub = client.subscribe("chat", (m) => seen.push(m.seq));
    await withTimeout(sub.ready, "the subscription");
    assert.equal(sub.lastSeq, 5);
    const socket1 = server.sockets[0];
    for (const seq of [4, 6, 6, 7]) server.push(socket1, "message", msg(seq));
    await waitFor(() => seen.length === 2, "two messages");
    assert.deepEqual(seen, [6, 7]);

    subscribeAnswer = (data) => {
      assert.equal(data.since, 7);
      return { ok: true, channel: "chat", seq: 9, recovered: true, messages: [msg(8), msg(9)] };
    };
    let subscribed = nextEvent(sub, "subscribed");
    server.dropLatest();
    await subscribed;
    server.push(server.sockets[1], "message", msg(9));
    server.push(server.sockets[1], "message", msg(10));
    await waitFor(() => seen.length === 5, "recovered messages");
    assert.deepEqual(seen, [6, 7, 8, 9, 10]);

    subscribeAnswer = () => ({ ok: true, channel: "chat", seq: 50, recovered: false });
    const resync = nextEvent(sub, "resync");
    server.dropLatest();
    assert.deepEqual((await resync)[0], { channel: "chat", since: 10, seq: 50 });
    assert.equal(sub.lastSeq, 50);

    // A publish whose ack is lost with the socket is sent again, with the same id.
    subscribed = nextEvent(sub, "subscribed");
    const published = client.publish("chat", { text: "hi" });
    await waitFor(() => server.events("message:publish").length === 1, "the publish");
    holdPublish = false;
    server.dropLatest();
    const ack = await withTimeout(published, "the publish ack");
    const sends = server.events("message:publish");
    assert.equal(sends.length, 2);
    assert.equal(sends[0].data.id, sends[1].data.id);
    assert.match(sends[0].data.id, /^[0-9a-f-]{36}$/);
    assert.equal(ack.seq, 42);
    await subscribed;
    assert.equal(client.getStats().subscriptions, 1);
    await sub.unsubscribe();
    assert.equal(client.getStats().subscriptions, 0);
  } finally {
    await client.close();
    await server.close();
  }
});

/** The token function is asked on every connect, travels as ?token=, is refreshed before `exp` with auth:refresh; close 4401 reconnects with a new one. */
test("tokens: per connect, refresh before expiry, 4401", async () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  let issued = 0;
  const token = async () => {
    issued++;
    // Expires in 3 s: refreshed at half its life.
    return `${b64({ alg: "HS256" })}.${b64({ sub: "me", exp: Math.floor(Date.now() / 1000) + 3, n: issued })}.sig`;
  };
  const server = await fakeServer({
    "auth:refresh": () => ({ ok: true, expiresAt: Date.now() + 60_000 }),
  });
  const client = testClient(server, { ...fast, token, userId: "me" });
  try {
    await client.ready();
    assert.equal(issued, 1);
    assert.match(server.urls[0], /^\/ws\?token=[\w-]+\.[\w-]+\.sig$/);
    await waitFor(() => server.events("auth:refresh").length === 1, "the refresh", 5000);
    assert.equal(issued, 2);
    const [refresh] = server.events("auth:refresh");
    assert.notEqual(refresh.data.token, new URL(`http://x${server.urls[0]}`).searchParams.get("token"));

    const reconnected = nextEvent(client, "connected");
    server.sockets[0].close(4401, "token expired");
    const [error] = await nextEvent(client, "connect_error");
    assert.equal(error.code, "UNAUTHORIZED");
    await reconnected;
    assert.equal(issued, 3, "a fresh token for the new connection");
  } finally {
    await client.close();
    await server.close();
  }
});

/** A request without an ack rejects with TIMEOUT; a heartbeat without one makes the client drop the half-open socket and reconnect. */
test("timeouts are typed and a silent heartbeat forces a reconnect", async () => {
  let answerHeartbeats = true;
  const server = await fakeServer({
    "metadata:get": () => undefined,
    "presence:join": (data, conn) => ({ ok: true, snapshot: [row(`c${conn}`, "me")], self: { connId: `c${conn}`, epoch: 1 } }),
    "presence:heartbeat": () => (answerHeartbeats ? { ok: true, changed: false } : undefined),
  });
  const client = testClient(server, { ...fast, userId: "me", requestTimeoutMs: 300, presenceTtlMs: 600 });
  try {
    await assert.rejects(client.metadata("t", "n").get(), (error) => {
      assert.ok(error instanceof RosterError);
      assert.equal(error.code, "TIMEOUT");
      assert.equal(error.event, "metadata:get");
      return true;
    });
    const room = await client.join("r");
    answerHeartbeats = false;
    const rejoined = nextEvent(room, "rejoined");
    await waitFor(() => server.sockets.length === 2, "a new socket");
    answerHeartbeats = true;
    await rejoined;
    assert.equal(room.self.connId, "c2");
    assert.ok(client.getStats().reconnects >= 1);
  } finally {
    await client.close();
    await server.close();
  }
});
