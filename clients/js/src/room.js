// A presence room: one presence connection of this client, its member set, its heartbeats and
// its own state. The server gives a socket one presence connection, so a client has at most
// one live Room; a successful join of another room ends this one (docs/protocol.md "Presence").
//
// Life of a room:
//   joining --ack--> joined --socket lost--> disconnected --reconnected--> joined
//                      |  \--heartbeat UNKNOWN_CONNECTION (reaped)--> rejoining --> joined
//                      |  \--presence:lost (the store lost its data)--> rejoining --> joined
//                      \--leave() / replaced / client closed--> left
// Every (re)sync buffers the room's events until its snapshot is in, then replays them over
// it (MemberSet decides what is stale), so listeners see each real change exactly once.
// A `presence:resync` (the node's link to the others was down: events may have been
// missed) re-reads the room the same way while it stays joined, heartbeats going on.
// Syncs and re-reads run one at a time, in order (#sync).

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
  /** Failed attempts of the sync or re-read being retried (paces the retries); 0 after a success. */
  #failures = 0;

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
   * A `presence:resync` for this room: the node's link to the other nodes was down, and
   * events of the room may have been missed. Re-reads the room and reconciles the member
   * set (only real differences are emitted), after any sync in progress.
   */
  _resync(data) {
    if (this.status === "left") return;
    const reason = typeof data?.reason === "string" ? data.reason : "events may have been missed";
    this.#sync("resync", reason).catch(() => {});
  }

  /**
   * A `presence:lost`: the store lost its data and the socket no longer holds connection
   * `connId`. If it is ours, join again at once with our current state. Decided when the
   * sync runs (after any in progress): a join that was in flight may be the one lost, and a
   * re-join that already happened makes this one moot.
   */
  _lost(data) {
    if (this.status === "left" || typeof data?.connId !== "string") return;
    this.#sync("lost", data.connId).catch(() => {});
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

  /**
   * Runs a sync after the one in progress, if any: `kind` is "join", "restore", "rejoin"
   * (reaped), "lost" (`arg`: the connId the server said is gone) or "resync" (`arg`: the
   * server's reason; a re-read without a join).
   */
  #sync(kind, arg) {
    // Chain behind a sync in progress: the later one sees its outcome (self, status).
    const step = () => (kind === "resync" ? this.#runResync(arg) : this.#runSync(kind, arg));
    const run = (this.#syncing ?? Promise.resolve()).catch(() => {}).then(step);
    const tracked = run.finally(() => {
      if (this.#syncing === tracked) this.#syncing = null;
    });
    this.#syncing = tracked;
    return tracked;
  }

  async #runSync(kind, lostConnId) {
    if (this.status === "left") return undefined;
    if (kind === "restore") {
      // Decided now, not when queued: a sync that ran meanwhile on this very socket is enough.
      if (this.status === "joined" && this.#syncedOn === this.#client._connectionId) return undefined;
      kind = this.self ? "reconnect" : "join";
    }
    if (kind === "lost") {
      // Only our connection (not one a re-join already replaced), not after the socket
      // dropped (the restore's resume finds it gone and joins afresh), and not while another
      // join of this client is in flight (the heartbeat finds out if that join is refused).
      if (this.self?.connId !== lostConnId || this.status === "disconnected" || this.#held) return undefined;
    }
    const previousConnId = this.self?.connId;
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
      const snapshot = await this.#readSnapshot(ack.snapshot, ack.partial ? ack.cursor : undefined);
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
      // A fresh join replaced our connection: our own entry moves to the new connId (no
      // leave and join of ourselves).
      const moved = previousConnId === undefined ? undefined : { from: previousConnId, to: this.self.connId };
      const changes = this.#members.reset(snapshot, { moved });
      for (const event of this.#buffer) changes.push(...this.#members.apply(event));
      this.#buffer = null;
      this.#syncedOn = this.#client._connectionId;
      this.#failures = 0;
      this.#setStatus("joined");
      this.#resolveReady(this);
      this.#publish(changes);
      if (kind !== "join") this.emit("rejoined", { reason: rejoinReason(kind, resumed) });
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
      // same again for as long as the room is wanted; the status stays `rejoining` until then.
      this.#client._backgroundError(error);
      if (this.#client.isConnected) {
        this.#retryTimer = setTimeout(() => this.#sync(kind, lostConnId).catch(() => {}), this.#retryDelay(error));
      }
      return undefined;
    }
  }

  /**
   * Re-reads the room (`presence:snapshot`, paged) and reconciles the member set with it,
   * while the room stays joined: events received meanwhile are held and replayed over the
   * snapshot, and a row older than what we hold does not replace it (MemberSet.reset).
   */
  async #runResync(reason) {
    // Not joined: a sync is due anyway (restore, re-join), and it reads a fresh snapshot.
    if (this.status !== "joined") return;
    const connection = this.#client._connectionId;
    this.#buffer = [];
    let rows;
    try {
      const page = await this.#client._call("presence:snapshot", { roomId: this.id });
      rows = await this.#readSnapshot(page.snapshot, page.cursor);
    } catch (error) {
      // What was held meanwhile still counts; the re-read is tried again later.
      const held = this.#buffer ?? [];
      this.#buffer = null;
      if (this.status !== "joined") return;
      this.#publish(held.flatMap((event) => this.#members.apply(event)));
      if (error instanceof RosterError && error.code === "DISCONNECTED") return; // the restore re-reads
      this.#client._backgroundError(error);
      if (this.#client.isConnected) {
        this.#retryTimer = setTimeout(() => this.#sync("resync", reason).catch(() => {}), this.#retryDelay(error));
      }
      return;
    }
    const held = this.#buffer ?? [];
    this.#buffer = null;
    // The socket changed or the room ended meanwhile: the restore's own snapshot decides.
    if (this.status !== "joined" || connection !== this.#client._connectionId) return;
    this.#failures = 0;
    const changes = this.#members.reset(rows);
    for (const event of held) changes.push(...this.#members.apply(event));
    this.#publish(changes);
    this.emit("resynced", { reason, changes });
    // Our own connection is not in the room any more (reaped meanwhile): the heartbeat's
    // UNKNOWN_CONNECTION starts the re-join.
    if (this.self && !this.#members.get(this.self.connId)) this.#scheduleHeartbeat(0);
  }

  /**
   * The pause before retrying a refused sync or re-read: a store that is coming back
   * (STORE_UNAVAILABLE) is tried again soon, 250 ms doubling up to a heartbeat interval;
   * anything else (a full room...) after a heartbeat interval.
   */
  #retryDelay(error) {
    this.#failures++;
    if (!(error instanceof RosterError && error.code === "STORE_UNAVAILABLE")) return this.heartbeatIntervalMs;
    return Math.min(this.heartbeatIntervalMs, 250 * 2 ** Math.min(this.#failures - 1, 10));
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

  /**
   * All the rows of a snapshot, from its first page and the cursor of the next (a join or
   * resume ack has one when it says `partial`; a `presence:snapshot` page while more follow).
   */
  async #readSnapshot(firstPage, cursor) {
    const rows = [...(firstPage ?? [])];
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

/** The `rejoined` reason of a sync of `kind` ("reconnect", "rejoin", "lost"). */
function rejoinReason(kind, resumed) {
  if (resumed) return "resumed";
  if (kind === "reconnect") return "reconnected";
  if (kind === "lost") return "lost";
  return "reaped";
}
