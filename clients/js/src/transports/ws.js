// The plain WebSocket transport: `/ws`, one JSON text frame per request, reply and push
// (docs/protocol.md "/ws framing"). One instance is one socket; the client makes a new one
// for every (re)connect, so no state leaks from a dead socket into a live one.

import { Emitter } from "../emitter.js";
import { RosterError } from "../errors.js";
import { withTokenQuery } from "../auth.js";

/** Close code the server uses when the socket's token expired without a refresh (DESIGN.md §7). */
const CLOSE_TOKEN_EXPIRED = 4401;

export class WsTransport extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.url the `/ws` URL (ws: or wss:)
   * @param {string} [options.token]
   * @param {"query" | "header"} [options.tokenIn] `header` needs a constructor that takes
   *   Node's `ws` options (browsers cannot set headers on a WebSocket)
   * @param {any} [options.WebSocket] a WebSocket constructor; defaults to globalThis.WebSocket
   */
  constructor({ url, token, tokenIn = "query", WebSocket }) {
    super();
    this.name = "ws";
    this.url = url;
    this.token = token;
    this.tokenIn = tokenIn;
    this.WebSocketImpl = WebSocket ?? globalThis.WebSocket;
    this.nextId = 1;
    /** id -> {resolve, reject}: requests waiting for their ack; emptied (rejected) on close. */
    this.pending = new Map();
    this.socket = null;
    this.closed = false;
  }

  /** Opens the socket; resolves once it is open, rejects with a RosterError when it cannot. */
  open() {
    if (typeof this.WebSocketImpl !== "function") {
      return Promise.reject(
        new RosterError("TRANSPORT", "no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package in Node < 22)"),
      );
    }
    return new Promise((resolve, reject) => {
      let opened = false;
      let lastError;
      try {
        if (this.token && this.tokenIn === "header") {
          this.socket = new this.WebSocketImpl(this.url, [], { headers: { Authorization: `Bearer ${this.token}` } });
        } else {
          this.socket = new this.WebSocketImpl(withTokenQuery(this.url, this.token));
        }
      } catch (error) {
        reject(RosterError.wrap(error));
        return;
      }
      const socket = this.socket;
      socket.onopen = () => {
        opened = true;
        resolve();
      };
      socket.onmessage = (event) => this.#onFrame(event.data);
      socket.onerror = (event) => {
        // Browsers say nothing about why; Node's `ws` names the HTTP status of a refused
        // upgrade ("Unexpected server response: 401"), which tells a bad token apart.
        lastError = event?.error ?? event;
      };
      socket.onclose = (event) => {
        const code = event?.code ?? 1006;
        const reason = event?.reason ?? "";
        if (!opened) {
          reject(upgradeError(lastError, code, reason));
          this.#finish({ code, reason, wasOpen: false });
          return;
        }
        this.#finish({ code, reason, wasOpen: true, error: closeError(code, reason) });
      };
    });
  }

  /** Sends a request; resolves with the raw ack (ok or not). The caller owns the timeout. */
  request(event, data) {
    if (this.closed || !this.socket || this.socket.readyState !== 1) {
      return Promise.reject(new RosterError("DISCONNECTED", `not connected: ${event} was not sent`, { event }));
    }
    const id = this.nextId++;
    const frame = data === undefined ? { id, event } : { id, event, data };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, event });
      try {
        this.socket.send(JSON.stringify(frame));
      } catch (error) {
        this.pending.delete(id);
        reject(RosterError.wrap(error, "DISCONNECTED", event));
      }
    });
  }

  /** Closes with a close frame: the server treats it as a leave (DESIGN.md §9). */
  close() {
    if (this.closed) return;
    try {
      this.socket?.close(1000, "client closed");
    } catch {
      // Already closing; the close event finishes the job.
    }
    this.#finish({ code: 1000, reason: "client closed", wasOpen: true });
  }

  /**
   * Drops the socket without a close frame, as a crash or a network loss would (Node's `ws`
   * `terminate()`; browsers have only `close()`, which sends a Close frame: the server then
   * treats it as a goodbye, if the frame gets through). For tests and for dead-connection
   * recovery; `error` is why, reported as the close's reason.
   */
  terminate(error) {
    if (this.closed) return;
    const socket = this.socket;
    if (socket && typeof socket.terminate === "function") socket.terminate();
    else socket?.close(4000, "terminated");
    this.#finish({ code: 1006, reason: "terminated", wasOpen: true, error });
  }

  #onFrame(raw) {
    let text = raw;
    if (typeof raw !== "string") {
      text = raw instanceof ArrayBuffer ? new TextDecoder().decode(raw) : String(raw);
    }
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.emit("error", new RosterError("PROTOCOL", `unreadable frame: ${text.slice(0, 200)}`));
      return;
    }
    if (frame && typeof frame === "object" && "ack" in frame) {
      const entry = this.pending.get(frame.id);
      if (entry) {
        this.pending.delete(frame.id);
        entry.resolve(frame.ack);
      } else if (frame.id === null) {
        // The server could not read one of our frames at all: report it rather than lose it.
        this.emit("error", RosterError.fromAck(frame.ack, "(unreadable frame)"));
      }
      return;
    }
    if (frame && typeof frame.event === "string") this.emit("push", frame.event, frame.data);
  }

  #finish(info) {
    if (this.closed) return;
    this.closed = true;
    /** Why it closed: {code, reason, wasOpen, error?}. */
    this.closeInfo = info;
    if (this.socket) {
      this.socket.onopen = this.socket.onmessage = this.socket.onclose = null;
      // Keep a no-op error handler: Node's `ws` throws on an 'error' without a listener.
      this.socket.onerror = () => {};
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const { reject, event } of pending) {
      reject(new RosterError("DISCONNECTED", `connection lost before the ack of ${event}`, { event }));
    }
    this.emit("close", info);
  }
}

function upgradeError(error, code, reason) {
  const message = error?.message ?? (reason || `WebSocket closed (${code}) before it opened`);
  if (/\b401\b/.test(message)) return new RosterError("UNAUTHORIZED", message, { cause: error });
  if (/\b403\b/.test(message)) return new RosterError("FORBIDDEN", message, { cause: error });
  return new RosterError("TRANSPORT", message, { cause: error });
}

function closeError(code, reason) {
  if (code === CLOSE_TOKEN_EXPIRED) return new RosterError("UNAUTHORIZED", reason || "token expired");
  if (code === 1008) return new RosterError("TRANSPORT", reason || "closed by the server as a slow reader (1008)");
  if (code === 1009) return new RosterError("PAYLOAD_TOO_LARGE", reason || "frame too large (1009)");
  return undefined;
}
