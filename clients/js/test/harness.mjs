// Test harness: starts the real `roster` binary on a free port (or a given one, to restart
// it in place) and a private `redis-server` (restartable empty, or reached through a relay
// that can cut one node off it), gates clients' connections, signs tokens, and
// waits for conditions with timeouts so a failure says what was missing instead of
// hanging. Same approach as tests/socketio/harness.mjs.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { once } from "node:events";
import { readdir, readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { connect } from "../src/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));

/** The roster binary: $ROSTER_BIN, else the workspace's debug build. */
export const rosterBin = process.env.ROSTER_BIN ?? path.join(here, "..", "..", "..", "target", "debug", "roster");

/** How long any wait may take before the test fails. */
export const WAIT_MS = 10_000;

/** Flags that make presence expire and get reaped within about two seconds. */
export const FAST_REAP = ["--presence-ttl-ms", "1500", "--reaper-interval-ms", "300", "--reaper-lookback-ms", "2000"];

/** Starts roster with extra flags (on `port`, or a free one); resolves once it listens. */
export async function startRoster(flags = [], { port = 0 } = {}) {
  const child = spawn(
    rosterBin,
    ["--host", "127.0.0.1", "--port", String(port), "--rate-limit-per-sec", "0", "--cache-dir", "off", ...flags],
    {
      env: { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG ?? "warn,roster=info" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let log = "";
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`roster did not start:\n${log}`)), WAIT_MS);
    const onData = (chunk) => {
      log += chunk;
      const match = /roster listening address=([\d.]+:\d+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (error) => reject(new Error(`cannot run ${rosterBin}: ${error.message} (set ROSTER_BIN)`)));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`roster exited with ${code}:\n${log}`));
    });
  });
  return {
    address,
    port: Number(address.split(":")[1]),
    url: `http://${address}`,
    wsUrl: `ws://${address}/ws`,
    /** SIGTERM (clean stop: leaves are announced); resolves with the exit code. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      try {
        const [code] = await withTimeout(exited, "roster to exit");
        return code;
      } catch (error) {
        child.kill("SIGKILL");
        throw error;
      }
    },
    /** SIGKILL: a crash; the embedded store's state is gone with it (Redis keeps its own). */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await withTimeout(exited, "roster to die");
    },
    /**
     * SIGSTOP: the process freezes; its sockets stay open and nothing is answered. Resolves
     * once every thread has stopped (a signal reaches a thread running on another core a
     * little later), read from /proc on Linux.
     */
    async freeze() {
      child.kill("SIGSTOP");
      await waitFor(async () => {
        const tasks = await readdir(`/proc/${child.pid}/task`);
        const states = await Promise.all(tasks.map((task) => readFile(`/proc/${child.pid}/task/${task}/stat`, "utf8")));
        // The state follows the parenthesised command name: "T" is stopped.
        return states.every((stat) => /\) T /.test(stat));
      }, "roster to stop");
    },
    /** SIGCONT after freeze(). */
    thaw() {
      child.kill("SIGCONT");
    },
    log: () => log,
  };
}

/** Starts roster on `port` again after a kill, retrying while the port is still being released. */
export async function restartOn(port, flags = []) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRoster(flags, { port });
    } catch (error) {
      if (attempt >= 20 || !/address|in use/i.test(error.message)) throw error;
      await sleep(100);
    }
  }
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Starts a private, non-persistent `redis-server` (on `port`, or a free one); resolves once
 * it accepts connections. `restart()` kills it (SIGKILL) and starts an empty one on the
 * same port: a Redis that came back without its data.
 */
export async function startRedis({ port } = {}) {
  for (let attempt = 1; ; attempt++) {
    const chosen = port ?? (await freePort());
    let child;
    try {
      child = await spawnRedis(chosen);
    } catch (error) {
      // Someone took the port between freePort() and the bind: pick another.
      if (port === undefined && attempt < 5 && /Address already in use/.test(error.message)) continue;
      throw error;
    }
    const redis = {
      port: chosen,
      url: `redis://127.0.0.1:${chosen}`,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, "exit");
        child.kill("SIGKILL");
        await withTimeout(exited, "redis-server to exit");
      },
      /** SIGKILL, then a new, empty redis-server on the same port. */
      async restart() {
        await redis.stop();
        for (let tries = 1; ; tries++) {
          try {
            child = await spawnRedis(chosen);
            return;
          } catch (error) {
            if (tries >= 20 || !/Address already in use/.test(error.message)) throw error;
            await sleep(100);
          }
        }
      },
    };
    return redis;
  }
}

/** Runs redis-server on `port`; resolves with the child once it is ready, else rejects with its log. */
async function spawnRedis(port) {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  try {
    await withTimeout(
      new Promise((resolve, reject) => {
        const onData = (chunk) => {
          log += chunk;
          if (/Ready to accept connections/.test(log)) resolve();
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
        child.on("error", (error) => reject(new Error(`cannot run redis-server: ${error.message}`)));
        child.on("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${log}`)));
      }),
      "redis-server to start",
    );
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return child;
}

/**
 * A TCP relay to `127.0.0.1:targetPort`, to cut one node off Redis while the others keep
 * it: `cut()` drops every relayed connection and refuses new ones until `mend()`. The
 * node sees Redis go away and come back with its data (its Pub/Sub link included).
 */
export async function tcpRelay(targetPort) {
  const sockets = new Set();
  let cut = false;
  const server = net.createServer((incoming) => {
    if (cut) {
      incoming.destroy();
      return;
    }
    const outgoing = net.connect(targetPort, "127.0.0.1");
    for (const [socket, other] of [
      [incoming, outgoing],
      [outgoing, incoming],
    ]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        sockets.delete(socket);
        other.destroy();
      });
      socket.pipe(other);
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  const cutOff = () => {
    cut = true;
    for (const socket of sockets) socket.destroy();
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cut: cutOff,
    mend() {
      cut = false;
    },
    async close() {
      cutOff();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The HTTP status of a node's `/readyz` (503 while its store or event feed is down). */
export async function readyz(server) {
  const response = await fetch(`${server.url}/readyz`);
  await response.body?.cancel();
  return response.status;
}

/** An HS256 JWT of `claims` signed with `secret` (what the hub verifies with --jwt-secret). */
export function signToken(claims, secret) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${unsigned}.${crypto.createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/** A URL where nothing listens: a connection attempt there is refused at once. */
const NOWHERE = "127.0.0.1:1";

/**
 * A switch in front of a client's connections, to keep it away from the server for as
 * long as a test needs (a network outage) without touching the server: while blocked, new
 * sockets (both transports) go where nothing listens and fail. `WebSocket` also records
 * every socket it makes, so a test can pause one's reading (an ack lost in flight).
 */
export function gate() {
  let blocked = false;
  const sockets = [];
  class GatedWebSocket extends WebSocket {
    constructor(url, protocols, options) {
      super(blocked ? String(url).replace(/\/\/[^/]+/, `//${NOWHERE}`) : url, protocols, options);
      sockets.push(this);
    }
  }
  return {
    WebSocket: GatedWebSocket,
    io: (url, options) => io(blocked ? String(url).replace(/\/\/[^/]+/, `//${NOWHERE}`) : url, options),
    sockets,
    block() {
      blocked = true;
    },
    unblock() {
      blocked = false;
    },
  };
}

/** Collects a client's `connect_error`s; `after(n)` waits until at least n more have come. */
export function connectErrors(client) {
  const seen = [];
  client.on("connect_error", (error) => seen.push(error));
  return {
    seen,
    after(n, what = `${n} failed connection attempts`) {
      const start = seen.length;
      return waitFor(() => seen.length >= start + n, what);
    },
  };
}

/** Rejects when `promise` takes longer than `ms`. */
export function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  return Promise.race([
    Promise.resolve(promise).finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]);
}

/**
 * Polls `check` (sync or async) until it returns a truthy value, which it resolves with. Used
 * to wait for convergence, which is a condition over several objects rather than one event.
 * `what` may be a function, called on timeout to describe the state then.
 */
export async function waitFor(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const described = typeof what === "function" ? what() : what;
      throw new Error(`timed out waiting for ${described}${last ? `: ${last.message}` : ""}`);
    }
    await sleep(25);
  }
}

/** Resolves with the arguments of the next `event` of `emitter` (an SDK Emitter). */
export function nextEvent(emitter, event, what = event, ms = WAIT_MS) {
  return withTimeout(
    new Promise((resolve) => {
      emitter.once(event, (...args) => resolve(args));
    }),
    what,
    ms,
  );
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A client for tests: the `ws` constructor (Node 20 has no global WebSocket), socket.io-client's
 * `io`, quick reconnects, and every background error collected instead of printed.
 */
export function testClient(server, options = {}) {
  const client = connect(options.transport === "socketio" ? server.url : server.wsUrl, {
    WebSocket,
    io,
    reconnect: { baseMs: 100, capMs: 1000 },
    requestTimeoutMs: 5000,
    ...options,
  });
  client.errors = [];
  client.on("error", (error) => client.errors.push(error));
  return client;
}

/** The member sets of several rooms as comparable sorted lists of `userId:state-json`. */
export function view(room) {
  return [...room.members().values()].map((m) => `${m.userId}:${stableJson(m.state)}`).sort();
}

export function stableJson(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  return `{${Object.keys(value)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableJson(value[k])}`)
    .join(",")}}`;
}

/** Waits until every room holds `expected` (a list from view()). */
export function converged(rooms, expected, what = "the member sets to converge", ms = WAIT_MS) {
  const want = [...expected].sort();
  return waitFor(
    () => rooms.every((room) => JSON.stringify(view(room)) === JSON.stringify(want)),
    `${what}: want ${JSON.stringify(want)}, have ${JSON.stringify(rooms.map(view))}`,
    ms,
  );
}

/** Records a room's member events as `{type, userId, connId, state}`, in order. */
export function recordEvents(room) {
  const events = [];
  for (const type of ["join", "update", "leave"]) {
    room.on(type, (member) => events.push({ type, userId: member.userId, connId: member.connId, state: member.state }));
  }
  return events;
}
