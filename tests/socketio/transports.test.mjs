// What Socket.IO shares with the other transports and with the node's lifecycle: the
// polling-to-WebSocket upgrade, Socket.IO and /ws clients in one room, bad payloads that
// never disconnect, the reaper, and shutdown.

import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { io } from "socket.io-client";
import { join, record, request, sleep, startRoster, withTimeout } from "./harness.mjs";

describe("Socket.IO alongside /ws", () => {
  let roster;
  before(async () => {
    roster = await startRoster(["--max-frame-bytes", "4096"]);
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  it("long-polling upgrades to WebSocket and keeps its session", async () => {
    const socket = io(roster.url, { forceNew: true, reconnection: false, transports: ["polling", "websocket"] });
    const opened = withTimeout(once(socket.io, "open"), "the engine to open");
    await opened;
    assert.equal(socket.io.engine.transport.name, "polling", "it starts on long-polling");
    const upgraded = withTimeout(once(socket.io.engine, "upgrade"), "the transport upgrade");
    const { self } = await join(socket, "upgrade", "u");
    await upgraded;
    assert.equal(socket.io.engine.transport.name, "websocket");
    const beat = await request(socket, "presence:heartbeat", { connId: self.connId, patchState: { upgraded: true } });
    assert.deepEqual(beat, { ok: true, changed: true });
    socket.close();
  });

  it("a Socket.IO client and a /ws client in one room see each other", async () => {
    const sio = await roster.connect();
    const sioEvents = record(sio);
    const sioJoin = await join(sio, "mixed", "sio-user");
    const ws = await roster.connectWs();
    const wsEvents = record(ws);
    const wsJoin = await join(ws, "mixed", "ws-user", { via: "ws" });
    assert.ok(wsJoin.snapshot.some((c) => c.connId === sioJoin.self.connId));

    const joined = await sioEvents.next((e) => e.type === "join" && e.connId === wsJoin.self.connId, "the /ws join");
    assert.deepEqual(joined.state, { via: "ws" });
    await request(sio, "presence:heartbeat", { connId: sioJoin.self.connId, patchState: { via: "sio" } });
    const update = await wsEvents.next((e) => e.type === "update", "the Socket.IO update");
    assert.deepEqual(update.state, { via: "sio" });
    await request(ws, "metadata:set", { channelType: "room", channelName: "mixed", items: [{ key: "k", value: "v" }] });
    await sioEvents.next((e) => e.event === "metadata:event", "the /ws metadata write");
    ws.close();
    await sioEvents.next((e) => e.type === "leave" && e.connId === wsJoin.self.connId, "the /ws disconnect");
  });

  it("bad payloads get error acks and never disconnect", async () => {
    const socket = await roster.connect();
    const cases = [
      ["presence:join", { roomId: 5, userId: "u" }, "INVALID_PAYLOAD"],
      ["presence:join", "not an object", "INVALID_PAYLOAD"],
      ["presence:join", undefined, "INVALID_PAYLOAD"],
      ["presence:join", { roomId: "r", userId: "u", state: [1, 2] }, "INVALID_PAYLOAD"],
      ["presence:heartbeat", { connId: "nope" }, "UNKNOWN_CONNECTION"],
      ["presence:heartbeat", { connId: "c", epoch: -3 }, "INVALID_PAYLOAD"],
      ["presence:leave", undefined, "UNKNOWN_CONNECTION"],
      ["presence:join", { roomId: "r", userId: "u", state: { blob: "x".repeat(5000) } }, "PAYLOAD_TOO_LARGE"],
      ["metadata:set", { channelType: "t", channelName: "n", items: [{ key: "k", value: 1 }] }, "METADATA_INVALID"],
      ["metadata:update", { channelType: "t", channelName: "n", items: [{ key: "k", value: "v" }] }, "METADATA_INVALID"],
      ["lock:acquire", { channelType: "t", channelName: "n" }, "METADATA_INVALID"],
      ["what:ever", {}, "INVALID_PAYLOAD"],
    ];
    for (const [event, data, code] of cases) {
      const ack = await request(socket, event, data);
      assert.equal(ack.ok, false, `${event} ${JSON.stringify(data)}`);
      assert.equal(ack.error.code, code, `${event} ${JSON.stringify(data)}: ${JSON.stringify(ack)}`);
      assert.equal(typeof ack.error.message, "string");
      assert.ok(socket.connected, `still connected after ${event}`);
    }
    // Emits without an ack callback are handled too, silently.
    socket.emit("presence:join", { roomId: 7 });
    socket.emit("no:such:event");
    const { self } = await join(socket, "after-bad-input", "u");
    assert.equal((await request(socket, "presence:heartbeat", { connId: self.connId })).ok, true);
  });
});

describe("the reaper, seen from Socket.IO", () => {
  let roster;
  before(async () => {
    roster = await startRoster(["--presence-ttl-ms", "800", "--reaper-interval-ms", "100", "--reaper-lookback-ms", "5000"]);
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  it("removes a silent connection and announces it; heart-beating ones stay", async () => {
    const live = await roster.connect();
    const seen = record(live);
    const liveJoin = await join(live, "reaped", "live");
    const silent = await roster.connect();
    const silentJoin = await join(silent, "reaped", "silent");
    const beating = setInterval(() => {
      request(live, "presence:heartbeat", { connId: liveJoin.self.connId }).catch(() => {});
    }, 150);
    try {
      const left = await seen.next((e) => e.type === "leave", "the silent connection's leave");
      assert.equal(left.connId, silentJoin.self.connId);
      await sleep(1000);
      assert.ok(!seen.events.some((e) => e.type === "leave" && e.connId === liveJoin.self.connId), "the live one stays");
    } finally {
      clearInterval(beating);
    }
    const stale = await request(silent, "presence:heartbeat", { connId: silentJoin.self.connId });
    assert.equal(stale.error.code, "UNKNOWN_CONNECTION");
    assert.ok(silent.connected, "the socket of a reaped connection stays open");
    assert.equal((await join(silent, "reaped", "silent")).ok, true);
  });
});

describe("shutdown, seen from Socket.IO", () => {
  it("exits cleanly and drops transports so clients reconnect elsewhere", async () => {
    const roster = await startRoster();
    const sockets = await Promise.all([roster.connect(), roster.connect({ transports: ["polling"] })]);
    for (const [i, socket] of sockets.entries()) {
      await join(socket, "closing", `u${i}`);
    }
    const reasons = sockets.map((socket) => withTimeout(once(socket, "disconnect"), "the disconnect"));
    assert.equal(await roster.terminate(), 0, "a clean exit on SIGTERM");
    for (const reason of await Promise.all(reasons)) {
      assert.notEqual(reason[0], "io server disconnect", "not a deliberate kick: clients may reconnect");
    }
  });
});
