// Protocol fidelity as clients of the Socket.IO presence server use it (issue 12), with the
// real socket.io-client and raw Engine.IO frames: every `leave` carries the last state, a
// refused join changes nothing, malformed packets never cost a socket its presence, and
// oversize frames end with the transport's own clean close.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { join, record, request, sleep, startRoster, withTimeout } from "./harness.mjs";

/** A free TCP port on loopback. */
async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** A private redis-server on a free port; `stop()` kills it. */
async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    const ready = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.on("connect", () => {
        socket.end("PING\r\n");
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (ready) return { url, stop: () => child.kill("SIGKILL") };
    await sleep(25);
  }
  child.kill("SIGKILL");
  throw new Error("redis-server did not start");
}

/** Waits until no event matching `predicate` arrives for `ms`. */
async function noEvent(events, predicate, ms = 200) {
  await sleep(ms);
  assert.equal(events.events.find(predicate), undefined, "an unexpected event arrived");
}

/** A raw Engine.IO v4 WebSocket connected to the `/` namespace. */
class RawSocketIo {
  static async connect(url) {
    const raw = new RawSocketIo(url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket");
    await withTimeout(once(raw.ws, "open"), "the Engine.IO socket");
    const open = await raw.next();
    assert.match(open, /^0\{/);
    raw.send("0");
    assert.match(await raw.next(), /^0\{"sid":"/);
    return raw;
  }
  constructor(url) {
    this.ws = new WebSocket(url);
    this.queue = [];
    this.waiters = [];
    this.closed = false;
    this.ws.on("message", (data, binary) => {
      const text = data.toString();
      if (!binary && text === "2") return this.ws.send("3"); // Engine.IO ping
      this.queue.push(text);
      this.waiters.shift()?.();
    });
    this.ws.on("close", () => {
      this.closed = true;
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }
  /** Sends a Socket.IO packet as an Engine.IO message (the `4` prefix is added). */
  send(packet) {
    this.ws.send(`4${packet}`);
  }
  sendBinary(bytes) {
    this.ws.send(bytes, { binary: true });
  }
  /** The next Engine.IO packet, without the message prefix for messages. */
  async next(what = "a packet") {
    while (this.queue.length === 0) {
      if (this.closed) throw new Error(`the connection closed while waiting for ${what}`);
      await withTimeout(new Promise((resolve) => this.waiters.push(resolve)), what);
    }
    const text = this.queue.shift();
    return text.startsWith("4") ? text.slice(1) : text;
  }
  /** The ack with `id`, skipping pushed events. */
  async ack(id) {
    for (;;) {
      const packet = await this.next(`the ack ${id}`);
      if (packet.startsWith(`3${id}[`)) return JSON.parse(packet.slice(`3${id}`.length))[0];
      assert.ok(packet.startsWith("2"), `unexpected packet ${packet}`);
    }
  }
  /** Emits with an ack id and returns the ack. */
  async request(id, event, data) {
    this.send(`2${id}${JSON.stringify(data === undefined ? [event] : [event, data])}`);
    return this.ack(id);
  }
  close() {
    this.ws.close();
  }
}

describe("leave events carry the last state, over Socket.IO", () => {
  let roster;
  before(async () => {
    roster = await startRoster(["--presence-ttl-ms", "1000", "--reaper-interval-ms", "100", "--reaper-lookback-ms", "3000"]);
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  /** A watcher that keeps its own connection alive. */
  async function watcher(room) {
    const socket = await roster.connect();
    const events = record(socket);
    const { self } = await join(socket, room, "watcher");
    const timer = setInterval(() => socket.emit("presence:heartbeat", { connId: self.connId }), 250);
    return { socket, events, stop: () => clearInterval(timer) };
  }

  it("on an explicit leave, a disconnect and a reap", async () => {
    const w = await watcher("last-state");
    try {
      for (const how of ["leave", "disconnect", "reap"]) {
        const client = await roster.connect();
        const { self } = await join(client, "last-state", `user-${how}`, { status: "idle" });
        const beat = await request(client, "presence:heartbeat", { connId: self.connId, patchState: { status: how } });
        assert.equal(beat.changed, true);
        if (how === "leave") await request(client, "presence:leave");
        if (how === "disconnect") client.disconnect();
        // "reap": it simply stops heart-beating.
        const leave = await w.events.next((e) => e.type === "leave" && e.connId === self.connId, `the ${how} leave`);
        assert.deepEqual(leave.state, { status: how }, `a ${how} carries the last state`);
        assert.equal(leave.state.status, how, "e.state.status reads on every event");
        assert.equal(leave.epoch, self.epoch);
        assert.equal(leave.userId, `user-${how}`);
        client.close();
      }
    } finally {
      w.stop();
    }
  });

  it("across nodes sharing Redis", async () => {
    const redis = await startRedis();
    const a = await startRoster(["--redis-url", redis.url]);
    const b = await startRoster(["--redis-url", redis.url]);
    try {
      const watcher = await b.connect();
      const events = record(watcher);
      await join(watcher, "cross", "watcher");
      const client = await a.connect();
      const { self } = await join(client, "cross", "ada", { cursor: { x: 1 } });
      await request(client, "presence:heartbeat", { connId: self.connId, epoch: self.epoch + 2, patchState: { cursor: { x: 9 } } });
      client.disconnect();
      const leave = await events.next((e) => e.type === "leave" && e.connId === self.connId, "the cross-node leave");
      assert.deepEqual(leave.state, { cursor: { x: 9 } });
      assert.equal(leave.epoch, self.epoch + 2);
    } finally {
      await a.stop();
      await b.stop();
      redis.stop();
    }
  });
});

describe("a refused join changes nothing, over Socket.IO", () => {
  let roster;
  before(async () => {
    roster = await startRoster(["--max-room-members", "2", "--max-state-bytes", "1024"]);
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  it("keeps the socket's connection and tells the room nothing", async () => {
    const watcher = await roster.connect();
    const events = record(watcher);
    await join(watcher, "home", "watcher");
    const client = await roster.connect();
    const { self } = await join(client, "home", "ada", { status: "here" });
    for (const user of ["x", "y"]) await join(await roster.connect(), "full", user);
    const refusals = [
      [{ roomId: "home", userId: "ada", state: "str" }, "INVALID_PAYLOAD"],
      [{ roomId: 5, userId: "ada" }, "INVALID_PAYLOAD"],
      [{ roomId: "home", userId: "ada", state: { blob: "x".repeat(2000) } }, "PAYLOAD_TOO_LARGE"],
      [{ roomId: "full", userId: "ada" }, "FORBIDDEN"],
      [["home", "ada"], "INVALID_PAYLOAD"],
      [Buffer.from("binary"), "INVALID_PAYLOAD"],
    ];
    for (const [data, code] of refusals) {
      const ack = await request(client, "presence:join", data);
      assert.equal(ack.ok, false, JSON.stringify(ack));
      assert.equal(ack.error.code, code, JSON.stringify(ack));
      const beat = await request(client, "presence:heartbeat", { connId: self.connId, patchState: { status: "here" } });
      assert.deepEqual(beat, { ok: true, changed: false }, `after a ${code} join the connection is intact`);
      assert.ok(client.connected);
    }
    await noEvent(events, (e) => e.type === "leave");
  });
});

describe("malformed Socket.IO packets never cost a socket its presence", () => {
  let roster;
  before(async () => {
    roster = await startRoster();
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  // The argument lists of EVENT packets that are not requests.
  const bodies = [
    "[1,{}]",
    "[]",
    "null",
    "{}",
    '"presence:join"',
    " 5", // a number (after a space: digits would read as the ack id)
    "-5",
    "true",
    "[null]",
    "[{}]",
    "[[]]",
    '[1.5,"x"]',
    "[",
    '["presence:join",',
    '["presence:join",{',
    '["presence:join"}',
    "[,]",
    "",
    " ",
    "\u0000",
    "[\"\\ud800\"]",
    '["presence:join",{"roomId":"r","userId":"u"}',
  ];
  const prefixes = [
    (id) => `2${id}`,
    (id) => `2/other,${id}`,
    (id) => `51-${id}`,
    (id) => `52-${id}`,
    (id) => `5-${id}`,
  ];

  it("gets an INVALID_PAYLOAD ack where it has an ack id, and the socket keeps its connection", async () => {
    const raw = await RawSocketIo.connect(roster.url);
    const joined = await raw.request(1, "presence:join", { roomId: "raw", userId: "ada", state: { s: 1 } });
    assert.equal(joined.ok, true);
    const connId = joined.self.connId;
    let id = 10;
    let kinds = 0;
    for (const prefix of prefixes) {
      for (const body of bodies) {
        id += 1;
        raw.send(prefix(id) + body);
        const ack = await raw.ack(id);
        assert.deepEqual(Object.keys(ack), ["ok", "error"], `${prefix(id)}${body}: ${JSON.stringify(ack)}`);
        assert.equal(ack.error.code, "INVALID_PAYLOAD", `${prefix(id)}${body}`);
        kinds += 1;
      }
    }
    // Requests that are well formed but wrong are refused by the rules, with their code.
    for (const [event, data, code] of [
      ["nope", {}, "INVALID_PAYLOAD"],
      ["presence:join", { roomId: 5 }, "INVALID_PAYLOAD"],
      ["presence:heartbeat", { connId: 7 }, "INVALID_PAYLOAD"],
      ["presence:heartbeat", undefined, "INVALID_PAYLOAD"],
      ["metadata:set", { channelType: "t" }, "METADATA_INVALID"],
      ["presence:heartbeat", { connId: "0".repeat(32) }, "UNKNOWN_CONNECTION"],
    ]) {
      id += 1;
      const ack = await raw.request(id, event, data);
      assert.equal(ack.error?.code, code, `${event} ${JSON.stringify(data)}: ${JSON.stringify(ack)}`);
      kinds += 1;
    }
    // Packets without an ack id have no one to answer: they are dropped.
    for (const body of bodies) raw.send(`2${body}`);
    raw.send("3"); // an ack from the client
    raw.send("37[{}]");
    raw.send("4{}"); // CONNECT_ERROR from the client
    raw.send(""); // an empty message
    raw.send("9x"); // no such packet type
    raw.send("é");
    raw.send("1/other,"); // leaving a namespace it never joined
    raw.sendBinary(Buffer.from([1, 2, 3])); // a stray binary frame
    // A binary event whose attachment arrives: refused, its attachment discarded.
    raw.send(`51-99["presence:join",{"_placeholder":true,"num":0}]`);
    raw.sendBinary(Buffer.from("attachment"));
    assert.equal((await raw.ack(99)).error.code, "INVALID_PAYLOAD");
    // An ack id past 2^63 is acked with the same digits.
    const huge = "18446744073709551616";
    raw.send(`2${huge}["presence:count",{"roomId":"raw"}]`);
    assert.deepEqual(await raw.ack(huge), { ok: true, roomId: "raw", connections: 1, users: 1 });
    kinds += bodies.length + 10;
    assert.ok(kinds >= 121, `${kinds} kinds of malformed packets`);

    // Still connected, still in the room, still heart-beating.
    id += 1;
    const beat = await raw.request(id, "presence:heartbeat", { connId, patchState: { s: 2 } });
    assert.deepEqual(beat, { ok: true, changed: true });
    assert.equal(raw.closed, false);
    raw.close();
  });

  it("an npm client's binary or empty emits are refused and it stays connected", async () => {
    const socket = await roster.connect();
    const { self } = await join(socket, "npm-bad", "ada");
    for (const args of [[Buffer.from("x")], [], [{ nested: Buffer.from("y") }], [null], ["string"], [42]]) {
      const ack = await withTimeout(socket.emitWithAck("presence:heartbeat", ...args), "the ack");
      assert.equal(ack.ok, false, JSON.stringify(ack));
      assert.equal(ack.error.code, "INVALID_PAYLOAD");
    }
    assert.ok(socket.connected);
    const beat = await request(socket, "presence:heartbeat", { connId: self.connId });
    assert.equal(beat.ok, true);
    socket.close();
  });
});

describe("oversize frames end with the transport's clean close", () => {
  let roster;
  const maxFrame = 16 * 1024;
  const hard = 4 * maxFrame;
  before(async () => {
    // An oversize Socket.IO packet ends the transport with an error that Engine.IO cannot
    // tell from a network drop, so with the resume grace on its connection would wait the
    // grace before leaving (tests/resume.rs covers the grace); here it leaves at once.
    roster = await startRoster(["--max-frame-bytes", String(maxFrame), "--resume-grace-ms", "0"]);
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  it("/ws closes with 1009 every time, at 1.01x, 2x and 8x the hard limit", async () => {
    for (const factor of [1.01, 2, 8]) {
      const frame = "x".repeat(Math.floor(hard * factor));
      const closes = await Promise.all(
        Array.from({ length: 8 }, async () => {
          const ws = new WebSocket(roster.wsUrl);
          await withTimeout(once(ws, "open"), "the /ws connection");
          ws.send(frame);
          const [code] = await withTimeout(once(ws, "close"), "the close");
          return code;
        }),
      );
      assert.deepEqual(closes, Array(8).fill(1009), `closes at ${factor}x`);
    }
  });

  it("Socket.IO disconnects with a transport close, and the room sees the leave", async () => {
    const watcher = await roster.connect();
    const events = record(watcher);
    await join(watcher, "oversize", "watcher");
    for (let i = 0; i < 4; i++) {
      const socket = await roster.connect();
      const { self } = await join(socket, "oversize", `big-${i}`, { n: i });
      const reason = withTimeout(once(socket, "disconnect"), "the disconnect");
      socket.emit("presence:heartbeat", { connId: self.connId, patchState: { blob: "x".repeat(hard * 2) } });
      const [why] = await reason;
      assert.equal(why, "transport close");
      const leave = await events.next((e) => e.type === "leave" && e.connId === self.connId, "its leave");
      assert.deepEqual(leave.state, { n: i });
    }
    assert.ok(watcher.connected, "other clients are unaffected");
  });
});
