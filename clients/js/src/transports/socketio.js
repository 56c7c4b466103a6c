// The Socket.IO v4 transport (`/socket.io/`), on the app's socket.io-client. Socket.IO's own
// reconnection is switched off: the client runs one reconnect loop (backoff, token, resume)
// for both transports, and makes a fresh socket for each attempt.

import { Emitter } from "../emitter.js";
import { RosterError } from "../errors.js";

export class SocketIoTransport extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.url the server's http(s) origin
   * @param {string} [options.token] sent as the handshake's `auth: {token}` (DESIGN.md §7)
   * @param {Function} [options.io] socket.io-client's `io`; imported on demand when absent
   * @param {object} [options.socketOptions] passed through to `io()`
   */
  constructor({ url, token, io, socketOptions }) {
    super();
    this.name = "socketio";
    this.url = url;
    this.token = token;
    this.io = io;
    this.socketOptions = socketOptions ?? {};
    this.nextId = 1;
    /** id -> {reject, event}: acks owed; Socket.IO drops ack callbacks on disconnect, so we reject them. */
    this.pending = new Map();
    this.socket = null;
    this.closed = false;
    /** The server's `auth:expired` notice, reported as the reason of the disconnect that follows. */
    this.expired = undefined;
  }

  async open() {
    let io = this.io;
    if (!io) {
      try {
        ({ io } = await import("socket.io-client"));
      } catch (error) {
        throw new RosterError("TRANSPORT", "transport \"socketio\" needs socket.io-client: install it or pass options.io", {
          cause: error,
        });
      }
    }
    await new Promise((resolve, reject) => {
      const socket = io(this.url, {
        transports: ["websocket"],
        ...this.socketOptions,
        forceNew: true,
        reconnection: false,
        ...(this.token ? { auth: { ...(this.socketOptions.auth ?? {}), token: this.token } } : {}),
      });
      this.socket = socket;
      let opened = false;
      socket.on("connect", () => {
        opened = true;
        resolve();
      });
      socket.on("connect_error", (error) => {
        // A refused handshake carries {code, message} in `data` (DESIGN.md §7).
        const data = error?.data;
        const rosterError =
          data && typeof data.code === "string"
            ? new RosterError(data.code, String(data.message ?? data.code), { cause: error })
            : RosterError.wrap(error, "TRANSPORT");
        if (!opened) {
          socket.disconnect(); // no retry of its own: the client's loop decides
          reject(rosterError);
          this.#finish({ code: "connect_error", reason: rosterError.message, wasOpen: false });
        }
      });
      socket.on("auth:expired", (data) => {
        // The token ran out without a refresh; the server disconnects next (DESIGN.md §7).
        this.expired = new RosterError(typeof data?.code === "string" ? data.code : "UNAUTHORIZED", String(data?.message ?? "token expired"));
      });
      socket.on("disconnect", (reason) => {
        this.#finish({ code: reason, reason, wasOpen: true, error: this.expired });
      });
      socket.onAny((event, data) => {
        if (event !== "auth:expired") this.emit("push", event, data);
      });
    });
  }

  request(event, data) {
    if (this.closed || !this.socket?.connected) {
      return Promise.reject(new RosterError("DISCONNECTED", `not connected: ${event} was not sent`, { event }));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { reject, event });
      const onAck = (ack) => {
        if (!this.pending.delete(id)) return;
        resolve(ack);
      };
      if (data === undefined) this.socket.emit(event, onAck);
      else this.socket.emit(event, data, onAck);
    });
  }

  close() {
    if (this.closed) return;
    // A disconnect packet: the server treats it as a leave (DESIGN.md §9).
    this.socket?.disconnect();
    this.#finish({ code: "io client disconnect", reason: "client closed", wasOpen: true });
  }

  /**
   * Drops the underlying connection without a disconnect packet (tests, dead connections): the
   * server keeps the presence connection for the resume grace. `error` is why.
   */
  terminate(error) {
    if (this.closed) return;
    try {
      // Closing the engine drops the connection without a Socket.IO disconnect packet.
      this.socket?.io?.engine?.close();
    } catch {
      // Nothing left to close.
    }
    this.#finish({ code: "transport close", reason: "terminated", wasOpen: true, error });
  }

  #finish(info) {
    if (this.closed) return;
    this.closed = true;
    /** Why it closed: {code, reason, wasOpen, error?}. */
    this.closeInfo = info;
    this.socket?.offAny();
    this.socket?.removeAllListeners?.();
    // socket.io-client rejects nothing by itself on disconnect; we owe every caller an answer.
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const { reject, event } of pending) {
      reject(new RosterError("DISCONNECTED", `connection lost before the ack of ${event}`, { event }));
    }
    this.emit("close", info);
  }
}
