// The client: one connection to a Roster hub, kept alive across drops, that carries a
// presence room, metadata requests, locks and message subscriptions.
//
// Connection loop (one at a time, #run):
//   connecting/reconnecting --open--> restore (room, subscriptions) --> connected
//        ^                                                                 |
//        '------ backoff (full jitter) <------- socket closed <-----------'
// Requests the app makes while the connection is not usable wait in a bounded outbound
// queue (oldest dropped first) and are sent in order once the room is restored, so a
// metadata write after a reconnect acts as the re-joined user. Requests in flight when the
// socket drops fail with DISCONNECTED, except those safe to resend (publishes carry an
// idempotency id), which go back into the queue in the order they were first made.
//
// How a socket ends matters to the server (docs/protocol.md "Resume"): close() sends a
// goodbye (a Close frame, a Socket.IO disconnect packet) and the connection leaves at once;
// a drop keeps it for the resume grace, and the reconnect resumes it with no leave/join.

import { Emitter } from "./emitter.js";
import { RosterError } from "./errors.js";
import { Backoff } from "./backoff.js";
import { jwtExpiresAt, refreshDelay, resolveToken } from "./auth.js";
import { Room } from "./room.js";
import { MetadataChannel } from "./metadata.js";
import { Subscription } from "./messages.js";
import { WsTransport } from "./transports/ws.js";
import { SocketIoTransport } from "./transports/socketio.js";

export const DEFAULTS = Object.freeze({
  transport: "ws",
  requestTimeoutMs: 10000,
  connectTimeoutMs: 10000,
  queueSize: 100,
  presenceTtlMs: 30000,
  refreshBeforeMs: 30000,
  tokenIn: "query",
});

/** Starts a client and returns it at once (it connects in the background). */
export function connect(url, options = {}) {
  const client = new RosterClient(url, options);
  client.connect();
  return client;
}

export class RosterClient extends Emitter {
  #options;
  #backoff;
  /** The URL the transport opens: `ws(s)://…/ws`, or the http(s) origin for Socket.IO. */
  #endpoint;
  #transport = null;
  /** "idle" | "connecting" | "connected" | "reconnecting" | "disconnected" */
  #status = "idle";
  /** True while the app wants a connection (connect() until close()). */
  #wanted = false;
  /** True once the socket is open and the room and subscriptions are restored. */
  #ready = false;
  #everConnected = false;
  #runId = 0;
  #wakeUp = null;
  /** Outbound queue: requests waiting for a usable connection, oldest first. */
  #queue = [];
  #inFlight = 0;
  #room = null;
  /** The room a join in flight is about to replace; it still gets its events until then. */
  #replacing = null;
  /** channel -> Subscription */
  #subscriptions = new Map();
  /** "type\0name" -> Emitter of metadata:event for that channel. */
  #metadataListeners = new Emitter();
  #refreshTimer = null;
  /** The token the socket was opened or last refreshed with. */
  #currentToken;
  /** Its expiry (ms) as last known: the server's `expiresAt`, else the JWT's `exp`. */
  #tokenExpiresAt = undefined;
  /** Why the client stopped by itself (gave up), for ready() callers that come later. */
  #lastError = null;
  /** Orders requests as the app made them, so resent publishes keep their place. */
  #requestOrder = 0;
  #stats = { dropped: 0, reconnects: 0, lastAckLatencyMs: null };
  /** Counts opened sockets, so a room can tell whether it already synced on this one. */
  #connectionId = 0;

  /**
   * @param {string} url the hub: `http(s)://host:port` or `ws(s)://host:port[/ws]`
   * @param {object} [options] see README.md "Options"
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.#options = { ...DEFAULTS, ...options };
    const reconnect = this.#options.reconnect;
    this.#backoff = new Backoff(reconnect === false ? { maxAttempts: 0 } : (reconnect ?? {}), this.#options.random);
    this.#options.heartbeatIntervalMs ??= Math.max(100, Math.floor(this.#options.presenceTtlMs / 3));
    // Mistakes in the arguments throw here, at once, rather than in a reconnect loop.
    if (this.#options.transport !== "ws" && this.#options.transport !== "socketio") {
      throw new TypeError(`roster-client: unknown transport ${JSON.stringify(this.#options.transport)} (use "ws" or "socketio")`);
    }
    this.#endpoint = this.#options.transport === "socketio" ? toHttpUrl(url) : toWsUrl(url);
  }

  /** The connection's status: idle, connecting, connected, reconnecting, disconnected. */
  get status() {
    return this.#status;
  }

  /** True while a socket is open (the room may still be restoring). */
  get isConnected() {
    return this.#transportOpen;
  }

  /** The room this client is in, or null. */
  get room() {
    return this.#room;
  }

  /** Starts connecting (idempotent); `connect()` the function calls it for you. */
  connect() {
    if (this.#wanted) return this;
    this.#wanted = true;
    this.#lastError = null;
    this.#backoff.reset();
    const runId = ++this.#runId;
    // Start on the next microtask, so listeners added right after connect() see `connecting`.
    queueMicrotask(() => this.#run(runId));
    return this;
  }

  /**
   * Resolves when the client is connected (now or later); rejects if it gives up first (with
   * the reason, e.g. UNAUTHORIZED for a refused token) or is closed (CLOSED).
   */
  ready() {
    if (this.#status === "connected") return Promise.resolve();
    if (!this.#wanted) return Promise.reject(this.#lastError ?? new RosterError("CLOSED", "the client is not connecting"));
    return new Promise((resolve, reject) => {
      const off = this.on("status", ({ status }) => {
        if (status === "connected") {
          off();
          resolve();
        } else if (status === "disconnected") {
          off();
          reject(this.#lastError ?? new RosterError("CLOSED", "the client was closed before it connected"));
        }
      });
    });
  }

  /**
   * Closes for good: the socket is closed with a goodbye (the server removes the presence
   * connection at once, a normal `leave`), queued and pending requests fail with CLOSED,
   * the room and subscriptions end. `connect()` starts over afresh.
   */
  async close() {
    this.#wanted = false;
    this.#everConnected = false; // a later connect() is a fresh start: `connecting`, not `reconnecting`
    this.#runId++;
    this.#wakeUp?.();
    clearTimeout(this.#refreshTimer);
    this.#replacing?._close("closed");
    this.#room?._close("closed");
    for (const subscription of [...this.#subscriptions.values()]) subscription._close();
    this.#failQueue(new RosterError("CLOSED", "the client was closed"));
    this.#lastError = null;
    const transport = this.#transport;
    this.#transport = null;
    this.#ready = false;
    transport?.close();
    this.#setStatus("disconnected");
  }

  // ---- presence ----

  /**
   * Joins `roomId` with `state` and resolves with the Room once its snapshot is in. A client
   * is in one room at a time (the server gives a socket one presence connection): joining
   * another room closes the current Room.
   */
  async join(roomId, state = {}, { userId = this.#options.userId } = {}) {
    if (!this.#wanted) throw new RosterError("CLOSED", "the client is closed");
    // The server replaces the socket's connection only when the new join succeeds (a refused
    // join changes nothing), so the current room lives on until then, heartbeats held.
    const previous = this.#room;
    this.#replacing?._close("replaced");
    this.#replacing = previous;
    previous?._hold(true);
    const room = new Room(this, roomId, { userId, state, heartbeatIntervalMs: this.#options.heartbeatIntervalMs });
    this.#room = room;
    if (this.#transportOpen) room._restore();
    try {
      await room.ready;
      previous?._close("replaced");
      return room;
    } catch (error) {
      if (previous && previous.status !== "left" && this.#room === null) {
        this.#room = previous;
        previous._hold(false);
      }
      throw error;
    } finally {
      if (this.#replacing === previous) this.#replacing = null;
    }
  }

  // ---- metadata ----

  /** A handle on the metadata and locks of channel `(channelType, channelName)`. */
  metadata(channelType, channelName) {
    return new MetadataChannel(this, channelType, channelName);
  }

  // ---- messages (DESIGN.md §8) ----

  /**
   * Subscribes to `channel`; `handler(message)` gets each message once, in seq order. Returns
   * the Subscription at once (`await sub.ready` for the ack). Subscribing to a channel already
   * subscribed adds the handler to the existing Subscription.
   */
  subscribe(channel, handler, options = {}) {
    let subscription = this.#subscriptions.get(channel);
    if (!subscription) {
      subscription = new Subscription(this, channel, options);
      if (!this.#wanted) {
        subscription._close(new RosterError("CLOSED", "the client is closed"));
        return subscription;
      }
      this.#subscriptions.set(channel, subscription);
      if (this.#transportOpen) subscription._restore();
    }
    if (handler) subscription.on("message", handler);
    return subscription;
  }

  /**
   * `message:publish` with an idempotency id (a random UUID unless given). Made while
   * disconnected, it waits in the outbound queue; if the socket drops before the ack, it is
   * sent again (same id) after the reconnect, and the server delivers it once.
   */
  publish(channel, payload, { id = newId(), ...request } = {}) {
    return this.request("message:publish", { channel, payload, id }, { ...request, retry: true });
  }

  // ---- generic ----

  /**
   * Sends any request and resolves with its ack when `ok`, else rejects with a RosterError.
   * While the connection is not usable the request waits in the outbound queue.
   * @param {{timeoutMs?: number, retry?: boolean}} [options] `retry`: resend after a reconnect
   *   if the socket dropped before the ack (only for requests that are safe to repeat)
   */
  request(event, data, options = {}) {
    if (!this.#wanted) return Promise.reject(new RosterError("CLOSED", "the client is closed", { event }));
    return new Promise((resolve, reject) => {
      const entry = {
        event,
        data,
        resolve,
        reject,
        retry: options.retry === true,
        timeoutMs: options.timeoutMs,
        order: ++this.#requestOrder,
      };
      if (this.#ready) this.#send(entry);
      else this.#enqueue(entry);
    });
  }

  /** Counters for dashboards and tests. */
  getStats() {
    return {
      status: this.#status,
      transport: this.#options.transport,
      room: this.#room ? this.#room.id : null,
      subscriptions: this.#subscriptions.size,
      queueSize: this.#queue.length,
      inFlight: this.#inFlight,
      dropped: this.#stats.dropped,
      reconnects: this.#stats.reconnects,
      lastAckLatencyMs: this.#stats.lastAckLatencyMs,
    };
  }

  /** Test hooks: simulate failures that an app cannot cause on purpose. */
  get debug() {
    return {
      /** Drops the socket without a close frame (as a network loss); the client reconnects. */
      dropConnection: () => this.#transport?.terminate(),
    };
  }

  // ---- internal, for Room / Subscription / MetadataChannel ----

  /** A request that bypasses the queue: fails with DISCONNECTED when no socket is open. */
  _call(event, data, options = {}) {
    return new Promise((resolve, reject) => {
      this.#send({ event, data, resolve, reject, retry: false, timeoutMs: options.timeoutMs, order: ++this.#requestOrder });
    });
  }

  get _connectionId() {
    return this.#connectionId;
  }

  /** A failure nobody awaits: emitted as `error` on the client, never dropped. */
  _backgroundError(error) {
    const wrapped = RosterError.wrap(error);
    if (!this.emit("error", wrapped)) {
      // No listener: make it visible anyway (like an unhandled rejection), without crashing.
      console.error("roster-client: unhandled error (add client.on('error', ...)):", wrapped);
    }
  }

  /**
   * A request got no answer: the socket is probably half-open; replace it without a goodbye
   * (the connection is resumed). `error` is reported as the close's reason (`connect_error`).
   */
  _connectionSuspect(error) {
    this.#transport?.terminate(error);
  }

  _roomClosed(room) {
    if (this.#room === room) this.#room = null;
    if (this.#replacing === room) this.#replacing = null;
  }

  _subscriptionClosed(subscription) {
    if (this.#subscriptions.get(subscription.channel) === subscription) this.#subscriptions.delete(subscription.channel);
  }

  _onMetadata(channelType, channelName, listener) {
    return this.#metadataListeners.on(`${channelType}\u0000${channelName}`, listener);
  }

  // ---- connection loop ----

  get #transportOpen() {
    return this.#transport !== null && !this.#transport.closed && this.#transport.opened === true;
  }

  async #run(runId) {
    while (this.#wanted && runId === this.#runId) {
      this.#setStatus(this.#everConnected ? "reconnecting" : "connecting");
      let transport;
      try {
        const token = await resolveToken(this.#options.token);
        if (runId !== this.#runId) return;
        this.#currentToken = token;
        transport = this.#makeTransport(token);
        this.#transport = transport;
        await withTimeout(transport.open(), this.#options.connectTimeoutMs, () => transport.terminate());
        if (runId !== this.#runId) {
          transport.close();
          return;
        }
      } catch (error) {
        if (runId !== this.#runId) return;
        const rosterError = RosterError.wrap(error);
        this.emit("connect_error", rosterError);
        // A fixed token the server refuses will be refused again: stop instead of hammering.
        if (rosterError.code === "UNAUTHORIZED" && typeof this.#options.token !== "function") {
          this.#giveUp(rosterError);
          return;
        }
        const delay = this.#backoff.next();
        if (delay === null) {
          this.#giveUp(new RosterError("TRANSPORT", `gave up after ${this.#backoff.attempt} reconnect attempts: ${rosterError.message}`, { cause: rosterError }));
          return;
        }
        await this.#sleep(delay);
        continue;
      }

      // Open. Wire it up, restore the session, then let the queue through.
      transport.opened = true;
      this.#connectionId++;
      // Synchronously, before the rejections of the requests in flight run: a publish put
      // back in the queue must not be flushed into the dead socket.
      transport.on("close", () => {
        this.#ready = false;
      });
      const closed = transport.closed
        ? Promise.resolve(transport.closeInfo)
        : new Promise((resolve) => transport.on("close", resolve));
      transport.on("push", (event, data) => this.#onPush(event, data));
      transport.on("error", (error) => this._backgroundError(error));
      if (this.#everConnected) this.#stats.reconnects++;
      // From here a lost socket is a reconnect, even if it drops before the restore is over
      // (a join may already have resolved with it).
      this.#everConnected = true;
      await this.#restore();
      if (transport.closed || runId !== this.#runId) {
        // Dropped while restoring: go round again.
      } else {
        this.#backoff.reset();
        this.#ready = true;
        this.#setStatus("connected");
        this.#flushQueue();
        this.#scheduleTokenRefresh(jwtExpiresAt(this.#currentToken));
      }
      const info = await closed;
      this.#ready = false;
      clearTimeout(this.#refreshTimer);
      if (runId !== this.#runId || !this.#wanted) return;
      // A socket that dropped mid-switch holds nothing: the app asked for the new room.
      this.#replacing?._close("replaced");
      this.#room?._onDisconnect();
      if (info.error) this.emit("connect_error", info.error);
      // Straight after a drop the first retry is immediate-ish too (full jitter from 0).
      const delay = this.#backoff.next();
      if (delay === null) {
        this.#giveUp(info.error ?? new RosterError("TRANSPORT", "connection lost and reconnecting is off"));
        return;
      }
      this.#setStatus("reconnecting");
      await this.#sleep(delay);
    }
  }

  /** Re-binds what lived on the old socket: the room first (metadata and locks act as its user), then subscriptions. */
  async #restore() {
    await this.#room?._restore();
    await Promise.all([...this.#subscriptions.values()].map((subscription) => subscription._restore()));
  }

  /** Stops for good after a failure (attempts used up, token refused): everything waiting learns why. */
  #giveUp(error) {
    this.#wanted = false;
    this.#everConnected = false;
    this.#lastError = error;
    this.#transport = null;
    clearTimeout(this.#refreshTimer);
    this.#replacing?._close("closed", error);
    this.#room?._close("closed", error);
    for (const subscription of [...this.#subscriptions.values()]) subscription._close(error);
    this.#failQueue(error);
    this.#setStatus("disconnected");
    this._backgroundError(error);
  }

  #makeTransport(token) {
    const options = this.#options;
    if (options.transport === "socketio") {
      return new SocketIoTransport({ url: this.#endpoint, token, io: options.io, socketOptions: options.socketio });
    }
    return new WsTransport({ url: this.#endpoint, token, tokenIn: options.tokenIn, WebSocket: options.WebSocket });
  }

  #onPush(event, data) {
    switch (event) {
      case "presence:event":
        for (const room of this.#roomsOf(data)) room._handleEvent(data);
        break;
      case "presence:resync":
        // The node's link to the other nodes was back: events may have been missed.
        for (const room of this.#roomsOf(data)) room._resync(data);
        break;
      case "presence:lost":
        // The store lost its data: the room whose connection it was joins again.
        for (const room of this.#roomsOf(data)) room._lost(data);
        break;
      case "metadata:event":
        this.#metadataListeners.emit(`${data?.channelType}\u0000${data?.channelName}`, data);
        this.emit("metadata", data);
        break;
      case "message":
        this.#subscriptions.get(data?.channel)?._handle(data);
        break;
      case "message:reset":
        this.#subscriptions.get(data?.channel)?._reset(data);
        break;
      default:
        this.emit("push", event, data);
    }
  }

  /** The rooms a push about `data.roomId` concerns: the current one, and one a join in flight replaces. */
  #roomsOf(data) {
    return [this.#room, this.#replacing].filter((room) => room !== null && room.id === data?.roomId);
  }

  // ---- token refresh (DESIGN.md §7) ----

  /**
   * Plans the next refresh before the socket's token expires. After a failed refresh the
   * same expiry is used again, which retries at half the remaining life (at least 1 s apart)
   * until the token runs out; then the server closes the socket and the reconnect asks the
   * token function afresh.
   */
  #scheduleTokenRefresh(expiresAt = this.#tokenExpiresAt) {
    clearTimeout(this.#refreshTimer);
    this.#tokenExpiresAt = expiresAt;
    // Only a token function can hand out a fresh token; a fixed string just expires.
    if (typeof this.#options.token !== "function" || typeof expiresAt !== "number") return;
    const delay = refreshDelay(expiresAt, Date.now(), this.#options.refreshBeforeMs);
    this.#refreshTimer = setTimeout(() => {
      if (!this.#ready) return; // the reconnect fetches a new token anyway
      this.refreshToken().catch((error) => {
        // A socket lost meanwhile needs no refresh: the reconnect gets a fresh token.
        if (error instanceof RosterError && (error.code === "DISCONNECTED" || error.code === "CLOSED")) return;
        this._backgroundError(error);
        if (this.#ready) this.#scheduleTokenRefresh();
      });
    }, delay);
  }

  /**
   * Asks the token function for a new token (a fixed string is sent again) and hands it to
   * the server (`auth:refresh`); resolves with the server's `{expiresAt}` (ms; null on an
   * open hub). Runs by itself before the token expires; call it after a permission change.
   * A token of another user is refused (FORBIDDEN), a bad one UNAUTHORIZED: the socket keeps
   * its old token.
   */
  async refreshToken() {
    const token = await resolveToken(this.#options.token);
    if (!token) {
      // No token at all: an open hub, nothing to refresh. A function that hands out nothing
      // while the socket holds a token is a failure the app must hear about.
      if (this.#currentToken === undefined) return { expiresAt: null };
      throw new RosterError("UNAUTHORIZED", "the token function returned no token", { event: "auth:refresh" });
    }
    const ack = await this._call("auth:refresh", { token });
    this.#currentToken = token;
    const expiresAt = typeof ack.expiresAt === "number" ? ack.expiresAt : jwtExpiresAt(token);
    this.#scheduleTokenRefresh(expiresAt);
    this.emit("refresh", { expiresAt: expiresAt ?? null });
    return { expiresAt: expiresAt ?? null };
  }

  // ---- sending ----

  #send(entry) {
    const transport = this.#transport;
    if (!transport || !this.#transportOpen) {
      if (entry.retry && this.#wanted) {
        this.#enqueue(entry, true);
        return;
      }
      entry.reject(new RosterError("DISCONNECTED", `not connected: ${entry.event} was not sent`, { event: entry.event }));
      return;
    }
    const timeoutMs = entry.timeoutMs ?? this.#options.requestTimeoutMs;
    const started = Date.now();
    let done = false;
    this.#inFlight++;
    const finish = () => {
      done = true;
      this.#inFlight--;
      clearTimeout(timer);
    };
    const timer = setTimeout(() => {
      if (done) return;
      finish();
      entry.reject(new RosterError("TIMEOUT", `no ack for ${entry.event} within ${timeoutMs} ms`, { event: entry.event }));
    }, timeoutMs);
    transport.request(entry.event, entry.data).then(
      (ack) => {
        if (done) return;
        finish();
        this.#stats.lastAckLatencyMs = Date.now() - started;
        if (ack && ack.ok === true) entry.resolve(ack);
        else entry.reject(RosterError.fromAck(ack, entry.event));
      },
      (error) => {
        if (done) return;
        finish();
        const rosterError = RosterError.wrap(error, "DISCONNECTED", entry.event);
        if (rosterError.code === "DISCONNECTED" && entry.retry && this.#wanted) this.#enqueue(entry, true);
        else entry.reject(rosterError);
      },
    );
  }

  #enqueue(entry, resent = false) {
    if (resent) {
      // Back where it was among what waits: requests in flight fail in send order, and a
      // publish made before a queued one must still go out first.
      const at = this.#queue.findIndex((queued) => queued.order > entry.order);
      if (at === -1) this.#queue.push(entry);
      else this.#queue.splice(at, 0, entry);
    } else {
      this.#queue.push(entry);
    }
    while (this.#queue.length > this.#options.queueSize) {
      const dropped = this.#queue.shift();
      this.#stats.dropped++;
      dropped.reject(
        new RosterError("QUEUE_OVERFLOW", `${dropped.event} dropped: more than ${this.#options.queueSize} requests queued while disconnected`, {
          event: dropped.event,
        }),
      );
    }
    // A request queued while connected (during a restore) goes out as soon as it is over.
    if (this.#ready) this.#flushQueue();
  }

  #flushQueue() {
    // Sent back to back: a socket's requests are handled in order, so order is kept.
    while (this.#ready && this.#transportOpen && this.#queue.length > 0) this.#send(this.#queue.shift());
  }

  #failQueue(error) {
    for (const entry of this.#queue.splice(0)) entry.reject(error);
  }

  #setStatus(status) {
    if (status === this.#status) return;
    const previous = this.#status;
    this.#status = status;
    this.emit("status", { status, previous });
    this.emit(status);
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeUp = done;
    });
  }
}

/**
 * A random id for publishes: a UUID. `crypto.randomUUID` exists only in secure contexts
 * (https, localhost) in browsers; `getRandomValues` exists everywhere.
 */
export function newId() {
  const crypto = globalThis.crypto;
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** `http(s)://host` → `ws(s)://host/ws`; a ws URL with a path is kept as given. */
export function toWsUrl(url) {
  const parsed = new URL(url);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.pathname === "/" || parsed.pathname === "") parsed.pathname = "/ws";
  return parsed.toString();
}

/** `ws(s)://host/ws` → `http(s)://host` (Socket.IO takes the origin and its own path). */
export function toHttpUrl(url) {
  const parsed = new URL(url);
  if (parsed.protocol === "ws:") parsed.protocol = "http:";
  else if (parsed.protocol === "wss:") parsed.protocol = "https:";
  if (parsed.pathname === "/ws") parsed.pathname = "/";
  return parsed.origin + (parsed.pathname === "/" ? "" : parsed.pathname);
}

function withTimeout(promise, ms, onTimeout) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => {
        onTimeout?.();
        reject(new RosterError("TIMEOUT", `could not connect within ${ms} ms`));
      }, ms);
    }),
  ]);
}
