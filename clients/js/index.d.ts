// Type declarations of roster-client (hand-written; the source is plain JavaScript in src/).

/** A JSON object: presence states and patches are objects. */
export type JsonObject = { [key: string]: JsonValue };
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** An event emitter; `on` returns a function that removes the listener. */
export declare class TypedEmitter<Events extends { [E in keyof Events]: (...args: any[]) => void }> {
  on<E extends keyof Events & string>(event: E, listener: Events[E]): () => void;
  once<E extends keyof Events & string>(event: E, listener: Events[E]): () => void;
  off<E extends keyof Events & string>(event: E, listener: Events[E]): void;
  listenerCount(event: keyof Events & string): number;
  removeAllListeners(): void;
}

// ---------------------------------------------------------------- errors

/** Codes the server sends. */
export type ServerErrorCode =
  | "INVALID_PAYLOAD"
  | "UNKNOWN_CONNECTION"
  | "STALE_EPOCH"
  | "UNAUTHORIZED"
  | "FORBIDDEN"
  | "RATE_LIMITED"
  | "PAYLOAD_TOO_LARGE"
  | "STORE_UNAVAILABLE"
  | "COMPONENT_FAILED"
  | "METADATA_CONFLICT"
  | "METADATA_LOCK"
  | "METADATA_INVALID";

/** Codes for failures on the client's side. */
export type ClientErrorCode = "TIMEOUT" | "DISCONNECTED" | "QUEUE_OVERFLOW" | "CLOSED" | "TRANSPORT" | "PROTOCOL";

export type ErrorCode = ServerErrorCode | ClientErrorCode;

export declare const ServerErrorCodes: readonly ServerErrorCode[];
export declare const ClientErrorCodes: readonly ClientErrorCode[];

/** Every failure the SDK reports. */
export declare class RosterError extends Error {
  constructor(code: ErrorCode | (string & {}), message: string, extra?: { event?: string; cause?: unknown; details?: Record<string, unknown> });
  readonly name: "RosterError";
  /** The server's code, or a client code. */
  readonly code: ErrorCode | (string & {});
  /** The request's event name when the error answers a request. */
  readonly event?: string;
  readonly details?: Record<string, unknown>;
  /** True when `code` is one the server sends. */
  readonly fromServer: boolean;
  static fromAck(ack: unknown, event: string): RosterError;
  static wrap(error: unknown, code?: ErrorCode, event?: string): RosterError;
}

// ---------------------------------------------------------------- client

export type Status = "idle" | "connecting" | "connected" | "reconnecting" | "disconnected";

export interface BackoffOptions {
  /** First ceiling of the random delay (ms). Default 1000. */
  baseMs?: number;
  /** Largest ceiling (ms). Default 30000. */
  capMs?: number;
  /** Growth of the ceiling per attempt. Default 2. */
  factor?: number;
  /** Attempts before giving up (status `disconnected`). Default Infinity. */
  maxAttempts?: number;
}

/** A token, or a function (possibly async) that returns the current one. */
export type TokenSource = string | (() => string | undefined | null | Promise<string | undefined | null>);

/** The smallest WebSocket constructor the SDK needs (the browser's, or Node's `ws`). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: any) => any;

export interface ClientOptions {
  /** `"ws"` (plain WebSocket on /ws, default) or `"socketio"`. */
  transport?: "ws" | "socketio";
  /** WebSocket constructor; default `globalThis.WebSocket`. In Node 20 pass the `ws` package. */
  WebSocket?: WebSocketConstructor;
  /** socket.io-client's `io`; imported on demand when absent. */
  io?: (url: string, options?: any) => any;
  /** Extra options for `io()` (e.g. `path`, `transports`). Reconnection is always the SDK's. */
  socketio?: Record<string, unknown>;
  /**
   * The JWT, or a function called on every (re)connect and before the token expires (its
   * result is sent with `auth:refresh`). A fixed string the server refuses stops the client.
   */
  token?: TokenSource;
  /** Where /ws carries the token: `"query"` (`?token=`, default, works in browsers) or `"header"` (Node `ws` only). */
  tokenIn?: "query" | "header";
  /** How long before `exp` the token is refreshed with `auth:refresh` (ms). Default 30000. */
  refreshBeforeMs?: number;
  /** The userId joins use by default (with auth on the server takes it from the token). */
  userId?: string;
  /** Reconnect backoff, or `false` to never reconnect. */
  reconnect?: BackoffOptions | false;
  /** Time an attempt to open the socket may take (ms). Default 10000. */
  connectTimeoutMs?: number;
  /** Time a request waits for its ack before failing with TIMEOUT (ms). Default 10000. */
  requestTimeoutMs?: number;
  /** Requests kept while disconnected; the oldest are dropped past it. Default 100. */
  queueSize?: number;
  /** The server's presence TTL (ms), which paces heartbeats. Default 30000. */
  presenceTtlMs?: number;
  /** Heartbeat interval (ms). Default presenceTtlMs / 3. */
  heartbeatIntervalMs?: number;
  /** A [0, 1) source for the reconnect jitter. Default Math.random (tests pass a fixed one). */
  random?: () => number;
}

export interface RequestOptions {
  /** Overrides `requestTimeoutMs` for this request. */
  timeoutMs?: number;
}

export interface Stats {
  status: Status;
  transport: "ws" | "socketio";
  /** The id of the room this client is in, or null. */
  room: string | null;
  /** Message subscriptions. */
  subscriptions: number;
  /** Requests waiting in the outbound queue. */
  queueSize: number;
  /** Requests sent and not yet answered. */
  inFlight: number;
  /** Requests dropped from the full outbound queue. */
  dropped: number;
  /** Successful reconnects. */
  reconnects: number;
  /** Latency of the last ack (ms), or null before the first. */
  lastAckLatencyMs: number | null;
}

export interface ClientEvents {
  status: (change: { status: Status; previous: Status }) => void;
  connecting: () => void;
  connected: () => void;
  reconnecting: () => void;
  disconnected: () => void;
  /**
   * A failed connection attempt, or a socket closed with a reason: UNAUTHORIZED for an
   * expired token (`/ws` 4401, Socket.IO `auth:expired`), TIMEOUT for a heartbeat with no
   * answer (a half-open socket). The client retries by itself.
   */
  connect_error: (error: RosterError) => void;
  /** The token function's new token was accepted by `auth:refresh`; `expiresAt` in ms (null on an open hub). */
  refresh: (event: { expiresAt: number | null }) => void;
  /** A background failure nobody awaited (refused re-join, failed token refresh, lost lock...). */
  error: (error: RosterError) => void;
  /** Every `metadata:event` this client receives. */
  metadata: (event: MetadataEvent) => void;
  /** Pushes this SDK version does not know. */
  push: (event: string, data: unknown) => void;
}

export declare class RosterClient extends TypedEmitter<ClientEvents> {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly status: Status;
  /** True while a socket is open. */
  readonly isConnected: boolean;
  /** The room this client is in, or null. */
  readonly room: Room | null;
  /** Starts connecting (idempotent). */
  connect(): this;
  /** Resolves once connected; rejects if the client gives up first (with why, e.g. UNAUTHORIZED) or is closed (CLOSED). */
  ready(): Promise<void>;
  /** Closes for good with a goodbye (the server removes the connection at once); pending work fails with CLOSED. */
  close(): Promise<void>;
  /** Joins a room; a client is in one room at a time (a successful join to another room ends the current Room; a refused one keeps it). */
  join<S extends object = JsonObject>(roomId: string, state?: S, options?: { userId?: string }): Promise<Room<S>>;
  /** A handle on a metadata channel. */
  metadata(channelType: string, channelName: string): MetadataChannel;
  /** Subscribes to a message channel. */
  subscribe<P = JsonValue>(channel: string, handler?: (message: Message<P>) => void, options?: { since?: number }): Subscription<P>;
  /**
   * Publishes with an idempotency id (a random UUID unless given): queued while disconnected,
   * resent with the same id when the socket drops before the ack; delivered once.
   */
  publish(channel: string, payload: JsonValue, options?: RequestOptions & { id?: string }): Promise<PublishAck>;
  /** Asks the token function for a new token and sends `auth:refresh` (FORBIDDEN: another user's token; UNAUTHORIZED: a bad one). */
  refreshToken(): Promise<{ expiresAt: number | null }>;
  /** Any request; resolves with the ack when ok, else rejects with a RosterError. */
  request<A extends { ok: true } = { ok: true; [key: string]: unknown }>(
    event: string,
    data?: unknown,
    options?: RequestOptions & { retry?: boolean },
  ): Promise<A>;
  getStats(): Stats;
  /** Test hooks. */
  readonly debug: {
    /** Drops the socket without a goodbye (as a network loss); the client reconnects and resumes. */
    dropConnection(): void;
  };
}

/** Creates a client and starts connecting. */
export declare function connect(url: string, options?: ClientOptions): RosterClient;

export declare const DEFAULTS: Readonly<Required<Pick<ClientOptions, "transport" | "requestTimeoutMs" | "connectTimeoutMs" | "queueSize" | "presenceTtlMs" | "refreshBeforeMs" | "tokenIn">>>;

// ---------------------------------------------------------------- presence

export interface Member<S extends object = JsonObject> {
  connId: string;
  userId: string;
  state: S;
  /** Fences older incarnations of the connection. */
  epoch: number;
  /** Time of the version held (ms): the event's ts, or the snapshot's lastSeen. */
  ts: number;
}

export type MemberChange<S extends object = JsonObject> =
  | { type: "join"; member: Member<S> }
  | { type: "update"; member: Member<S>; previous: Member<S> }
  | { type: "leave"; member: Member<S> };

export type RoomStatus = "joining" | "joined" | "rejoining" | "disconnected" | "left";

export interface RoomEvents<S extends object> {
  join: (member: Member<S>) => void;
  /**
   * A member's state (or epoch) changed. After a fresh re-join (`rejoined` with
   * `reconnected` or `lost`) our own entry moves to the new connection with an `update`
   * whose `previous` has the old `connId`, rather than a leave and a join.
   */
  update: (member: Member<S>, previous: Member<S>) => void;
  leave: (member: Member<S>) => void;
  /** After every batch of changes, with the whole member set. */
  change: (event: { members: Map<string, Member<S>>; changes: MemberChange<S>[] }) => void;
  status: (status: RoomStatus) => void;
  /**
   * Back in the room: `resumed` (the same connection, taken over after a reconnect; nobody
   * saw a leave), `reconnected` (the connection was gone after a reconnect: joined afresh),
   * `reaped` (the server expired it: joined afresh), `lost` (the server's store lost its
   * data, `presence:lost`: joined afresh at once, with the current state).
   */
  rejoined: (event: { reason: "resumed" | "reconnected" | "reaped" | "lost" }) => void;
  /**
   * The room was re-read after a `presence:resync` (the node's link to the other nodes was
   * down; events may have been missed) and the member set reconciled with it. `changes`
   * are the differences found, also emitted as `join`/`leave`/`update`/`change`; `reason`
   * is the server's.
   */
  resynced: (event: { reason: string; changes: MemberChange<S>[] }) => void;
  /** The Room ended: left, replaced by another join, refused, or the client closed. */
  left: (event: { reason: "left" | "replaced" | "refused" | "closed" }) => void;
}

export declare class Room<S extends object = JsonObject> extends TypedEmitter<RoomEvents<S>> {
  readonly id: string;
  readonly userId: string | undefined;
  readonly status: RoomStatus;
  /** Our connection; `resumeToken` lets a reconnect take it over (`presence:resume`). */
  readonly self: { connId: string; epoch: number; resumeToken?: string } | null;
  readonly heartbeatIntervalMs: number;
  /** Settles on the first join. */
  readonly ready: Promise<Room<S>>;
  /** This client's state, pending patches included. */
  readonly state: S;
  /** The members by connId (a copy). */
  members(): Map<string, Member<S>>;
  member(connId: string): Member<S> | undefined;
  /** Counts of the local member set. */
  count(): { connections: number; users: number };
  /** The server's counts (`presence:count`). */
  fetchCount(options?: RequestOptions): Promise<{ roomId: string; connections: number; users: number }>;
  /** Shallow patch, applied locally at once and sent with the next heartbeat (brought forward). */
  setState(patch: Partial<S>): Promise<void>;
  leave(): Promise<void>;
  /** Stops heartbeats (the server reaps the connection after its TTL). */
  pauseHeartbeats(): void;
  /** Resumes heartbeats; a reaped connection re-joins by itself. */
  resumeHeartbeats(): void;
}

/** The member-set rules on their own (snapshot + events, ordered by epoch then ts). */
export declare class MemberSet<S extends object = JsonObject> {
  readonly size: number;
  get(connId: string): Member<S> | undefined;
  toMap(): Map<string, Member<S>>;
  userCount(): number;
  clear(): void;
  /**
   * Replaces the set with a snapshot and returns the real differences; a row older than the
   * version held keeps the held one. `moved`: our own connection replaced by a fresh join
   * (old connId `from`, new `to`), reported as one `update` instead of a leave and a join.
   */
  reset(snapshot: SnapshotRow<S>[], options?: { moved?: { from: string; to: string } }): MemberChange<S>[];
  apply(event: PresenceEvent<S>): MemberChange<S>[];
}

export declare function compareVersions(a: { epoch?: number; ts?: number }, b: { epoch?: number; ts?: number }): number;

/** A row of a join ack's snapshot. */
export interface SnapshotRow<S extends object = JsonObject> {
  connId: string;
  userId: string;
  state: S;
  epoch: number;
  lastSeen: number;
}

/** A `presence:resync` push: the node's link to the other nodes was down and is back; events of the room may have been missed. */
export interface PresenceResyncPush {
  roomId: string;
  reason: string;
}

/** A `presence:lost` push: the store lost its data; this socket's connection `connId` is gone. */
export interface PresenceLostPush {
  roomId: string;
  connId: string;
  reason: string;
}

/** A `presence:event` push. */
export interface PresenceEvent<S extends object = JsonObject> {
  type: "join" | "update" | "leave";
  roomId: string;
  userId: string;
  connId: string;
  /** `null` on leave from servers that do not send the last state. */
  state: S | null;
  ts: number;
  epoch: number;
}

// ---------------------------------------------------------------- metadata

export interface MetadataItem {
  key: string;
  value: string;
  revision: number;
  updated?: number;
  authorUid?: string;
}

export interface MetadataItemInput {
  key: string;
  value?: string;
  /** Expected current revision (0: must not exist); negative or absent skips the check. */
  revision?: number;
}

export interface MetadataOptions {
  /** Expected channel majorRevision; a mismatch is METADATA_CONFLICT. */
  majorRevision?: number;
  /** Write only if this user holds the lock, else METADATA_LOCK. */
  lockName?: string;
  addTimestamp?: boolean;
  addUserId?: boolean;
  /** Request options (timeout). */
  request?: RequestOptions;
}

export interface MetadataResult {
  items: MetadataItem[];
  majorRevision: number;
}

export interface MetadataEvent {
  operation: "set" | "update" | "remove";
  channelName: string;
  channelType: string;
  items: MetadataItem[];
  majorRevision: number;
}

export declare class MetadataChannel {
  readonly channelType: string;
  readonly channelName: string;
  get(options?: RequestOptions): Promise<MetadataResult>;
  /** Replaces the whole item set. Items as an array or a `{key: value}` object. */
  set(items: MetadataItemInput[] | Record<string, string>, options?: MetadataOptions): Promise<MetadataResult>;
  /** Changes existing items only. */
  update(items: MetadataItemInput[] | Record<string, string>, options?: MetadataOptions): Promise<MetadataResult>;
  /** Removes the given keys, or all when none are given. */
  remove(keys?: string | Array<string | { key: string; revision?: number }>, options?: MetadataOptions): Promise<MetadataResult>;
  /** Read, apply `fn`, write with the read revision; retries on METADATA_CONFLICT. */
  updateWith(
    key: string,
    fn: (value: string | undefined, item: MetadataItem | undefined) => string | undefined | Promise<string | undefined>,
    options?: { maxAttempts?: number; options?: Omit<MetadataOptions, "request" | "majorRevision">; request?: RequestOptions },
  ): Promise<MetadataItem | null>;
  /** This channel's `metadata:event`s; returns a function that stops listening. */
  on(listener: (event: MetadataEvent) => void): () => void;
  /** Acquires a lock (METADATA_LOCK when another user holds it). */
  acquire(lockName: string, options?: { ttlMs?: number; autoExtend?: boolean; request?: RequestOptions }): Promise<Lock>;
  /** Acquires (auto-extended), runs `fn`, releases. */
  withLock<T>(lockName: string, fn: (lock: Lock) => T | Promise<T>, options?: { ttlMs?: number; request?: RequestOptions }): Promise<T>;
}

export interface LockEvents {
  /** An auto-extension failed: the lock may be someone else's now. */
  lost: (error: RosterError) => void;
}

export declare class Lock extends TypedEmitter<LockEvents> {
  readonly lockName: string;
  readonly ttlMs: number | undefined;
  readonly owner: string | undefined;
  /** Expiry (ms since the epoch) as the server said. */
  readonly expiresAt: number | undefined;
  readonly held: boolean;
  extend(ttlMs?: number, request?: RequestOptions): Promise<this>;
  release(request?: RequestOptions): Promise<void>;
}

// ---------------------------------------------------------------- messages

export interface Message<P = JsonValue> {
  channel: string;
  seq: number;
  id: string;
  /** The publisher's user id, or null for a backend. */
  from: string | null;
  payload: P;
  ts: number;
}

export interface PublishAck {
  ok: true;
  channel: string;
  seq: number;
  id: string;
}

export interface SubscriptionEvents<P> {
  /** Each message once, in seq order. */
  message: (message: Message<P>) => void;
  /**
   * History did not reach back to `since` (the last seq delivered), or the channel started
   * over: messages were lost; reload. `messages` is what history still held (not delivered
   * to `message` listeners); delivery goes on after `seq`.
   */
  resync: (event: { channel: string; since: number; seq: number; messages: Message<P>[] }) => void;
  /**
   * The channel started over (`message:reset`: the server's store lost its history and
   * sequence): `seq` is 0 and the next message, seq 1, is delivered. Messages after
   * `previousSeq` (the last seq seen) that were not delivered are lost: reload.
   */
  reset: (event: { channel: string; seq: number; previousSeq: number | null }) => void;
  /** Every (re)subscription's ack: `recovered` says whether missed messages were all recovered (undefined on a fresh subscribe). */
  subscribed: (event: { channel: string; seq: number; recovered: boolean | undefined }) => void;
  /** A refused re-subscription (retried by itself). */
  error: (error: RosterError) => void;
}

export declare class Subscription<P = JsonValue> extends TypedEmitter<SubscriptionEvents<P>> {
  readonly channel: string;
  /** The seq of the last message delivered, or null before the first ack. */
  readonly lastSeq: number | null;
  readonly status: "subscribing" | "subscribed" | "unsubscribed";
  /** Settles with the first subscribe ack. */
  readonly ready: Promise<Subscription<P>>;
  publish(payload: JsonValue, options?: RequestOptions & { id?: string }): Promise<PublishAck>;
  unsubscribe(): Promise<void>;
}

/** A `message:reset` push: the channel's history and sequence were lost; its next message is `seq + 1`. */
export interface MessageResetPush {
  channel: string;
  seq: 0;
}

// ---------------------------------------------------------------- helpers

export declare const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>>;

/** Exponential backoff with full jitter. */
export declare class Backoff {
  constructor(options?: BackoffOptions, random?: () => number);
  readonly options: Required<BackoffOptions>;
  attempt: number;
  ceiling(): number;
  /** The next delay (ms), or null when attempts are used up. */
  next(): number | null;
  reset(): void;
}

/** A JWT's `exp` in ms (decoded, not verified), or undefined. */
export declare function jwtExpiresAt(token: string | undefined): number | undefined;
