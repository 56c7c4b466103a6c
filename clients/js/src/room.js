// A presence room: one presence connection of this client, its member set, its heartbeats and
// its own state. The server gives a socket one presence connection, so a client has at most
// one live Room; a successful join of another room ends this one (docs/protocol.md "Presence").
//
// Life of a room:
//   joining --ack--> joined --socket lost--> disconnected --reconnected--> joined
//                      |  \--heartbeat UNKNOWN_CONNECTION (reaped)--> rejoining --> joined
//                      \--leave() / replaced / client closed--> left
// Every (re)sync buffers the room's events until its snapshot is in, then replays them over
// it (MemberSet decides what is stale), so listeners see each real change exactly once.

import { Emitter } from "./emitter.js";
import { RosterError } from "./errors.js";
import { MemberSet } from "./members.js";

/** Errors of a heartbeat that mean "the server no longer has this connection for us". */
const GONE = new Set(["UNKNOWN_CONNECTION", "STALE_EPOCH"]);
/**
 * Errors of `presence:resume` after which a fresh join is the answer: the connection is gone
 * (left, reaped, past the grace), the token does not match or the connection is another
 * user's (FORBIDDEN), or the server has no resume (INVALID_PAYLOAD: an unknown event).
 */
const RESUME_FALLBACK = new Set(["UNKNOWN_CONNECTION", "FORBIDDEN", "INVALID_PAYLOAD"]);

export class Room extends Emitter {
  #client;
  #members = new MemberSet();
  /** Events received while a sync waits for its snapshot; null when not syncing. */
  #buffer = null;
  /** The state the server has confirmed (join state plus acked patches). */
  #serverState;
  /** Patch sent with the heartbeat in flight, not yet acked. */
  #inflightPatch = null;
  /** Patches waiting for the next heartbeat, merged shallowly. */
  #pendingPatch = {};
  /** setState() callers waiting for their patch to be confirmed: {resolve, reject}. */
  #patchWaiters = [];
  #heartbeatTimer = null;
  #heartbeatInFlight = false;
  #heartbeatAgain = false;
  #paused = false;
  /** Heartbeats held by the client while another join on this socket is in flight. */
  #held = false;
  /** The sync (join / rejoin / resume) in progress, so two never overlap. */
  #syncing = null;
  #retryTimer = null;
  #resolveReady;
  #rejectReady;
  /** The client's connection id of the last successful sync. */
  #syncedOn = -1;

  /**
   * @param {import("./client.js").RosterClient} client
   * @param {string} roomId
   * @param {{userId?: string, state?: object, heartbeatIntervalMs: number}} options
   */
  constructor(client, roomId, options) {
    super();
    this.#client = client;
    this.id = roomId;
    this.userId = options.userId;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
    this.#serverState = { ...(options.state ?? {}) };
    /** "joining" | "joined" | "rejoining" | "disconnected" | "left" */
    this.status = "joining";
    /** {connId, epoch, resumeToken?} of this client's connection once joined. */
    this.self = null;
    /** Settles on the first join: with the room, or with the refusal. */
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // join() callers always await `ready`; this keeps a refusal nobody awaits from being "unhandled".
    this.ready.catch(() => {});
  }

  /** This client's own state as it will be once pending patches land (merged shallowly). */
  get state() {
    return { ...this.#serverState, ...(this.#inflightPatch ?? {}), ...this.#pendingPatch };
  }

  /** The members by connId (a copy): `{connId, userId, state, epoch, ts}`. */
  members() {
    return this.#members.toMap();
  }

  /** One member, or undefined. */
  member(connId) {
    return this.#members.get(connId);
  }

  /** Counts of the local member set (no request). */
  count() {
    return { connections: this.#members.size, users: this.#members.userCount() };
  }

  /** The server's counts, which need no listing (for rooms too large to hold): `presence:count`. */
  async fetchCount(options) {
    const ack = await this.#client.request("presence:count", { roomId: this.id }, options);
    return { roomId: ack.roomId ?? this.id, connections: ack.connections, users: ack.users };
  }

  /**
   * Merges `patch` shallowly into this client's state (locally at once) and sends it with the
   * next heartbeat, which is brought forward; calls in the same tick share one heartbeat.
   * Resolves when the server has the patch (or a re-join carried it).
   */
  setState(patch) {
    if (this.status === "left") return Promise.reject(new RosterError("CLOSED", `room ${this.id} was left`));
    if (!patch || typeof patch !== "object" || Array.isArray(patch)) {
      return Promise.reject(new RosterError("INVALID_PAYLOAD", "setState takes an object (a shallow patch)"));
    }
    Object.assign(this.#pendingPatch, patch);
    const done = new Promise((resolve, reject) => this.#patchWaiters.push({ resolve, reject }));
    if (this.status === "joined") this.#scheduleHeartbeat(0);
    return done;
  }

  /** Leaves the room (`presence:leave`); the Room is done afterwards. */
  async leave() {
    if (this.status === "left") return;
    this._close("left");
    // Sent even while the first join is in flight: the server handles a socket's requests
    // in order, so this leave comes after that join. Without a socket there is nothing to leave.
    if (!this.#client.isConnected) return;
    try {
      await this.#client._call("presence:leave", undefined);
    } catch (error) {
      // Already reaped or replaced: the server no longer holds it, which is what we wanted.
      if (error instanceof RosterError && (error.code === "UNKNOWN_CONNECTION" || error.code === "DISCONNECTED")) return;
      throw error;
    }
  }

  /**
   * Stops sending heartbeats (the server reaps the connection after its TTL) until
   * resumeHeartbeats(); meant for tests and for apps that idle a hidden tab.
   */
  pauseHeartbeats() {
    this.#paused = true;
    clearTimeout(this.#heartbeatTimer);
  }

  /** Sends a heartbeat now and resumes the schedule; a reaped connection re-joins by itself. */
  resumeHeartbeats() {
    this.#paused = false;
    if (this.status === "joined") this.#scheduleHeartbeat(0);
  }

  // ---- called by the client ----

  /**
   * The socket is (again) open: the first join, or after a reconnect a resume of the old
   * connection when the server gave a token, else a re-join. Never rejects: failures go to
   * `ready` (first join) or to the client's `error` event.
   */
  _restore() {
    if (this.status === "left") return Promise.resolve();
    return this.#sync("restore");
  }

  /**
   * Holds (or releases) heartbeats while another join on this socket is in flight: once that
   * join lands, the socket no longer holds this connection, and a heartbeat would get
   * UNKNOWN_CONNECTION and start a re-join that undoes the switch.
   */
  _hold(held) {
    this.#held = held;
    if (held) clearTimeout(this.#heartbeatTimer);
    else if (this.status === "joined") this.#scheduleHeartbeat(0);
  }

  /** The socket is gone: stop heartbeating; the member set stays as last known until restored. */
  _onDisconnect() {
    if (this.status === "left") return;
    clearTimeout(this.#heartbeatTimer);
    clearTimeout(this.#retryTimer);
    this.#setStatus("disconnected");
  }

  /** A `presence:event` for this room. */
  _handleEvent(event) {
    if (this.status === "left") return;
    if (this.#buffer) {
      this.#buffer.push(event);
      return;
    }
    this.#publish(this.#members.apply(event));
    // Our own leave while we think we are joined: the reaper took us (a paused or starved
    // heartbeat). Heartbeat now; its UNKNOWN_CONNECTION starts the re-join.
    if (event.type === "leave" && event.connId === this.self?.connId && this.status === "joined" && !this.#paused && !this.#held) {
      this.#scheduleHeartbeat(0);
    }
  }

  /**
   * Ends the room without a request (replaced by another join, left, or client closed).
   * `error` is why, when the client gave up (e.g. UNAUTHORIZED); else waiters get CLOSED.
   */
  _close(reason, error) {
    if (this.status === "left") return;
    this.status = "left";
    clearTimeout(this.#heartbeatTimer);
    clearTimeout(this.#retryTimer);
    this.#buffer = null;
    const waiters = this.#patchWaiters.splice(0);
    for (const { reject } of waiters) reject(error ?? new RosterError("CLOSED", `room ${this.id} was ${reason}`));
    this.#rejectReady(error ?? new RosterError("CLOSED", `room ${this.id} was ${reason} before it was joined`));
    this.#client._roomClosed(this);
    this.emit("status", this.status);
    this.emit("left", { reason });
  }

  // ---- sync: join, re-join, resume ----

  #sync(kind) {
    // Chain behind a sync in progress: the later one sees its outcome (self, status).
    const run = (this.#syncing ?? Promise.resolve()).catch(() => {}).then(() => this.#runSync(kind));
    const tracked = run.finally(() => {
      if (this.#syncing === tracked) this.#syncing = null;
    });
    this.#syncing = tracked;
    return tracked;
  }

  async #runSync(kind) {
    if (this.status === "left") return undefined;
    if (kind === "restore") {
      // Decided now, not when queued: a sync that ran meanwhile on this very socket is enough.
      if (this.status === "joined" && this.#syncedOn === this.#client._connectionId) return undefined;
      kind = this.self ? "reconnect" : "join";
    }
    const connection = this.#client._connectionId;
    clearTimeout(this.#heartbeatTimer);
    clearTimeout(this.#retryTimer);
    if (kind !== "join") {
      this.#setStatus("rejoining");
    }
    this.#buffer = this.#buffer ?? [];
    try {
      let ack;
      if (kind === "reconnect" && this.self?.resumeToken) ack = await this.#resume();
      const resumed = ack !== undefined;
      if (!resumed) ack = await this.#sendJoin();
      const snapshot = await this.#readSnapshot(ack);
      if (this.status === "left") return ack;
      if (connection !== this.#client._connectionId) {
        // The socket changed under us: what we got belongs to the old one. The restore that
        // the new socket triggers (queued behind this sync) starts over.
        throw new RosterError("DISCONNECTED", "the connection changed during the sync");
      }
      this.self = {
        connId: ack.self?.connId,
        epoch: ack.self?.epoch,
        ...(ack.self?.resumeToken ? { resumeToken: ack.self.resumeToken } : {}),
      };
      const changes = this.#members.reset(snapshot);
      for (const event of this.#buffer) changes.push(...this.#members.apply(event));
      this.#buffer = null;
      this.#syncedOn = this.#client._connectionId;
      this.#setStatus("joined");
      this.#resolveReady(this);
      this.#publish(changes);
      if (kind !== "join") this.emit("rejoined", { reason: resumed ? "resumed" : kind === "reconnect" ? "reconnected" : "reaped" });
      this.#scheduleHeartbeat(Object.keys(this.#pendingPatch).length > 0 ? 0 : this.heartbeatIntervalMs);
      return ack;
    } catch (error) {
      this.#buffer = null;
      if (this.status === "left") return undefined;
      if (error instanceof RosterError && error.code === "DISCONNECTED") {
        // The socket dropped mid-sync; the client restores the room when it is back.
        this.#setStatus("disconnected");
        return undefined;
      }
      if (this.self === null) {
        // The first join was refused: its caller (client.join) gets the error; the room is done.
        this.#rejectReady(error);
        this._close("refused");
        return undefined;
      }
      // A resume or re-join was refused (store down, room full, ...): say so, and try the
      // same again after a heartbeat interval for as long as the room is wanted.
      this.#client._backgroundError(error);
      if (this.#client.isConnected) {
        this.#retryTimer = setTimeout(() => this.#sync(kind).catch(() => {}), this.heartbeatIntervalMs);
      }
      return undefined;
    }
  }

  /**
   * `presence:join` with everything we want the server to hold, pending patches included, so
   * those patches (and their setState callers) are settled by the join itself.
   */
  async #sendJoin() {
    const state = this.state;
    const covered = this.#patchWaiters.splice(0);
    this.#serverState = state;
    this.#pendingPatch = {};
    this.#inflightPatch = null;
    const data = { roomId: this.id, state };
    if (this.userId !== undefined) data.userId = this.userId;
    try {
      const ack = await this.#client._call("presence:join", data);
      for (const { resolve } of covered) resolve();
      return ack;
    } catch (error) {
      // Nothing landed; the next join carries the same state (serverState is the wanted base).
      this.#patchWaiters.unshift(...covered);
      throw error;
    }
  }

  /**
   * `presence:resume` (DESIGN.md §9): re-binds our connection to this socket with no
   * leave/join broadcast; state and epoch stay as they were. No epoch is sent: the server
   * already fences the old socket (its heartbeats get UNKNOWN_CONNECTION once resumed
   * elsewhere). Resolves with the ack, or undefined when a fresh join is needed.
   */
  async #resume() {
    const { connId, resumeToken } = this.self;
    try {
      const ack = await this.#client._call("presence:resume", { connId, resumeToken });
      // The heartbeat lost with the old socket never landed: send its patch again.
      if (this.#inflightPatch) {
        this.#pendingPatch = { ...this.#inflightPatch, ...this.#pendingPatch };
        this.#inflightPatch = null;
      }
      return ack;
    } catch (error) {
      if (error instanceof RosterError && RESUME_FALLBACK.has(error.code)) return undefined;
      throw error;
    }
  }

  /** The join/resume ack's snapshot, paged with `presence:snapshot` when it says partial. */
  async #readSnapshot(ack) {
    const rows = [...(ack.snapshot ?? [])];
    let cursor = ack.partial ? ack.cursor : undefined;
    while (cursor && this.status !== "left") {
      const page = await this.#client._call("presence:snapshot", { roomId: this.id, cursor });
      rows.push(...(page.snapshot ?? []));
      cursor = page.cursor;
    }
    return rows;
  }

  // ---- heartbeats ----

  #scheduleHeartbeat(delay) {
    clearTimeout(this.#heartbeatTimer);
    if (this.#paused || this.#held || this.status !== "joined") return;
    this.#heartbeatTimer = setTimeout(() => this.#heartbeat(), delay);
  }

  async #heartbeat() {
    if (this.#paused || this.#held || this.status !== "joined") return;
    if (this.#heartbeatInFlight) {
      this.#heartbeatAgain = true;
      return;
    }
    this.#heartbeatInFlight = true;
    this.#heartbeatAgain = false;
    const patch = this.#pendingPatch;
    const waiters = this.#patchWaiters.splice(0);
    this.#pendingPatch = {};
    const hasPatch = Object.keys(patch).length > 0;
    this.#inflightPatch = hasPatch ? patch : null;
    const connId = this.self.connId;
    const data = { connId, epoch: this.self.epoch };
    if (hasPatch) data.patchState = patch;
    let next = this.heartbeatIntervalMs;
    try {
      await this.#client._call("presence:heartbeat", data);
      this.#serverState = { ...this.#serverState, ...patch };
      this.#inflightPatch = null;
      for (const { resolve } of waiters) resolve();
    } catch (error) {
      this.#inflightPatch = null;
      const code = error instanceof RosterError ? error.code : "TRANSPORT";
      if (GONE.has(code) || code === "DISCONNECTED" || code === "TIMEOUT") {
        // Not applied: keep the patch (under newer ones) and its callers for whatever comes
        // next (a re-join carries the whole state; a resume resends it).
        this.#pendingPatch = { ...patch, ...this.#pendingPatch };
        this.#patchWaiters.unshift(...waiters);
      } else if (waiters.length > 0) {
        // Refused (e.g. PAYLOAD_TOO_LARGE): the callers learn why; the patch is dropped so the
        // local state matches the server's again.
        for (const { reject } of waiters) reject(error);
      } else {
        this.#client._backgroundError(error);
      }
      if (GONE.has(code)) {
        if (code === "STALE_EPOCH") this.#client._backgroundError(error);
        this.#heartbeatInFlight = false;
        // Reaped, expired or fenced: join again with our current state (unless a sync
        // already replaced the connection this heartbeat was for).
        if (connId === this.self?.connId && this.status === "joined") this.#sync("rejoin").catch(() => {});
        return;
      }
      if (code === "TIMEOUT") {
        // A heartbeat that gets no answer means a half-open socket: drop it and reconnect.
        this.#client._connectionSuspect(error);
      }
      next = Math.max(1000, this.heartbeatIntervalMs);
    } finally {
      this.#heartbeatInFlight = false;
    }
    if (this.status === "joined") {
      this.#scheduleHeartbeat(this.#heartbeatAgain || Object.keys(this.#pendingPatch).length > 0 ? 0 : next);
    }
  }

  #setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit("status", status);
  }

  #publish(changes) {
    if (changes.length === 0) return;
    for (const change of changes) {
      if (change.type === "update") this.emit("update", change.member, change.previous);
      else this.emit(change.type, change.member);
    }
    this.emit("change", { members: this.#members.toMap(), changes });
  }
}
