// Test harness: starts the real `roster` binary on a free port (or a given one, to restart
// it in place), and waits for conditions with timeouts so a failure says what was missing
// instead of hanging. Same approach as tests/socketio/harness.mjs.

import { spawn } from "node:child_process";
import { once } from "node:events";
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
    /** SIGKILL: a crash; the embedded store's state is gone with it. */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await withTimeout(exited, "roster to die");
    },
    log: () => log,
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
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
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
