// Test harness for Roster's Socket.IO endpoint: starts the real `roster` binary on a free
// port, connects real `socket.io-client` sockets (and plain `/ws` clients), and waits for
// events with timeouts so a failure reports what was missing instead of hanging.

import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));

/** The roster binary: $ROSTER_BIN, else the workspace's debug build. */
export const rosterBin = process.env.ROSTER_BIN ?? path.join(here, "..", "..", "target", "debug", "roster");

/** How long any wait may take before the test fails. */
export const WAIT_MS = 10_000;

/** Starts roster with extra flags; resolves once it listens. */
export async function startRoster(flags = []) {
  const child = spawn(rosterBin, ["--host", "127.0.0.1", "--port", "0", "--rate-limit-per-sec", "0", ...flags], {
    env: { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG ?? "warn,roster=info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
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
    child.on("exit", (code) => reject(new Error(`roster exited with ${code}:\n${log}`)));
  });
  const sockets = [];
  return {
    url: `http://${address}`,
    wsUrl: `ws://${address}/ws`,
    /** A socket.io-client socket; `transports` as in socket.io-client's options. */
    async connect(options = {}) {
      const socket = io(`http://${address}`, { forceNew: true, reconnection: false, ...options });
      sockets.push(socket);
      if (!socket.connected) {
        await withTimeout(once(socket, "connect"), "the Socket.IO connection");
      }
      return socket;
    },
    /** A plain `/ws` client. */
    async connectWs() {
      const client = new WsClient(`ws://${address}/ws`);
      sockets.push(client);
      await client.opened;
      return client;
    },
    /** Sends SIGTERM and waits for the process to exit; resolves with its exit code. */
    async stop() {
      for (const socket of sockets) socket.close();
      return this.terminate();
    },
    /** Sends SIGTERM without closing the clients first. */
    async terminate() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      try {
        const [code] = await withTimeout(exited, "roster to exit");
        return code;
      } catch (error) {
        child.kill("SIGKILL");
        throw new Error(`${error.message}; its log:\n${log}`);
      }
    },
    log: () => log,
  };
}

/** Rejects when `promise` takes longer than WAIT_MS. */
export function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]);
}

/** Emits with an ack and resolves with the ack. */
export function request(socket, event, data) {
  const ack = data === undefined ? socket.emitWithAck(event) : socket.emitWithAck(event, data);
  return withTimeout(ack, `the ack of ${event}`);
}

/** Collects every `presence:event` and `metadata:event` a client receives. */
export function record(socket) {
  const events = [];
  const waiters = [];
  const push = (name) => (data) => {
    events.push({ event: name, ...data });
    for (const waiter of [...waiters]) waiter();
  };
  socket.on("presence:event", push("presence:event"));
  socket.on("metadata:event", push("metadata:event"));
  return {
    events,
    /** Resolves with the first recorded event (from now or already) matching `predicate`, and drops it and those before. */
    next(predicate = () => true, what = "an event") {
      return withTimeout(
        new Promise((resolve) => {
          const check = () => {
            const index = events.findIndex(predicate);
            if (index >= 0) {
              const [found] = events.splice(0, index + 1).slice(-1);
              waiters.splice(waiters.indexOf(check), 1);
              resolve(found);
              return true;
            }
            return false;
          };
          if (!check()) waiters.push(check);
        }),
        what,
      );
    },
  };
}

/** Joins and returns the ack; `self` holds the connection. */
export async function join(socket, roomId, userId, state) {
  const ack = await request(socket, "presence:join", state === undefined ? { roomId, userId } : { roomId, userId, state });
  if (!ack.ok) throw new Error(`join failed: ${JSON.stringify(ack)}`);
  return ack;
}

/** A plain `/ws` client with the same shape as a socket.io-client socket for these tests. */
export class WsClient {
  constructor(url) {
    this.socket = new WebSocket(url);
    this.nextId = 1;
    this.pending = new Map();
    this.handlers = new Map();
    this.opened = withTimeout(once(this.socket, "open"), "the /ws connection");
    this.socket.on("message", (raw) => {
      const frame = JSON.parse(raw.toString());
      if ("ack" in frame) {
        this.pending.get(frame.id)?.(frame.ack);
        this.pending.delete(frame.id);
      } else {
        for (const handler of this.handlers.get(frame.event) ?? []) handler(frame.data);
      }
    });
  }
  on(event, handler) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
  }
  emitWithAck(event, data) {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.socket.send(JSON.stringify({ id, event, data }));
    });
  }
  close() {
    this.socket.close();
  }
}

/** Sleeps. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
