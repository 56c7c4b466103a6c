// Channel metadata and locks (docs/protocol.md "Channel metadata"): a MetadataChannel is a
// handle on one `(channelType, channelName)`; it holds no data itself, so handles are cheap
// and any number may exist for the same channel.

import { Emitter } from "./emitter.js";
import { RosterError } from "./errors.js";

export class MetadataChannel {
  #client;

  constructor(client, channelType, channelName) {
    this.#client = client;
    this.channelType = channelType;
    this.channelName = channelName;
  }

  /** `metadata:get` → `{items, majorRevision}`. */
  async get(options) {
    return pick(await this.#client.request("metadata:get", this.#channel(), options));
  }

  /** `metadata:set`: replaces the whole item set (keys not given are removed). */
  async set(items, options = {}) {
    return this.#write("metadata:set", normalizeItems(items), options);
  }

  /** `metadata:update`: changes only the given items, which must exist. */
  async update(items, options = {}) {
    return this.#write("metadata:update", normalizeItems(items), options);
  }

  /**
   * `metadata:remove`: the given keys (strings or `{key, revision}`), or all when called
   * without keys. An empty list removes nothing (on the wire an empty list means "all", which
   * a computed list that happens to be empty must not trigger).
   */
  async remove(keys, options = {}) {
    if (keys === undefined) return this.#write("metadata:remove", undefined, options);
    const items = [].concat(keys).map((k) => (typeof k === "string" ? { key: k } : k));
    if (items.length === 0) return this.get(options.request);
    return this.#write("metadata:remove", items, options);
  }

  /**
   * Read-modify-write of one key with compare-and-set: reads the item, computes
   * `fn(value, item)`, writes it with the revision it read, and on METADATA_CONFLICT (someone
   * wrote in between) starts over, up to `maxAttempts` times with a short random pause.
   * `fn` returning undefined writes nothing. Resolves with the written item (or the current
   * one when nothing was written; null when absent).
   *
   * A key that does not exist yet is created with `metadata:set` of the whole channel, fenced
   * by `majorRevision` (`update` refuses missing keys): that write also bumps the other keys'
   * revisions, so it may make a concurrent updateWith of another key retry once.
   */
  async updateWith(key, fn, { maxAttempts = 10, options = {}, request } = {}) {
    let lastError;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const { items, majorRevision } = await this.get(request);
      const current = items.find((item) => item.key === key);
      const value = await fn(current?.value, current);
      if (value === undefined) return current ?? null;
      try {
        let written;
        if (current) {
          written = await this.update([{ key, value, revision: current.revision }], { ...options, request });
        } else {
          const all = items.map(({ key: k, value: v, revision }) => ({ key: k, value: v, revision }));
          all.push({ key, value, revision: 0 });
          written = await this.set(all, { ...options, majorRevision, request });
        }
        return written.items.find((item) => item.key === key) ?? null;
      } catch (error) {
        if (!(error instanceof RosterError) || error.code !== "METADATA_CONFLICT") throw error;
        lastError = error;
        // Spread the racers out so the next round has a winner instead of another tie.
        await sleep(Math.random() * Math.min(200, 5 * 2 ** attempt));
      }
    }
    throw new RosterError("METADATA_CONFLICT", `updateWith(${key}) gave up after ${maxAttempts} conflicts: ${lastError.message}`, {
      event: "metadata:update",
      cause: lastError,
      details: { attempts: maxAttempts },
    });
  }

  /** Listens to this channel's `metadata:event`s (sent to members of the room named like the channel). */
  on(listener) {
    return this.#client._onMetadata(this.channelType, this.channelName, listener);
  }

  /**
   * `lock:acquire`: resolves with a Lock handle, or rejects with METADATA_LOCK when another
   * user holds it. `autoExtend` re-acquires (which extends) at half the TTL until released.
   * The socket must have joined a room (locks belong to the joined user).
   */
  async acquire(lockName, { ttlMs, autoExtend = false, request } = {}) {
    const lock = new Lock(this.#client, this, lockName, ttlMs);
    await lock.extend(ttlMs, request);
    if (autoExtend) lock._startAutoExtend();
    return lock;
  }

  /** Acquires, runs `fn(lock)`, and releases whatever happens (auto-release). */
  async withLock(lockName, fn, options = {}) {
    const lock = await this.acquire(lockName, { autoExtend: true, ...options });
    try {
      return await fn(lock);
    } finally {
      await lock.release().catch((error) => this.#client._backgroundError(error));
    }
  }

  #channel() {
    return { channelType: this.channelType, channelName: this.channelName };
  }

  async #write(event, items, { request, ...options }) {
    const data = this.#channel();
    if (items !== undefined) data.items = items;
    if (Object.keys(options).length > 0) data.options = options;
    return pick(await this.#client.request(event, data, request));
  }
}

/** A held lock; emits `lost` (with the error) when an auto-extension fails. */
export class Lock extends Emitter {
  #client;
  #channel;
  #timer = null;

  constructor(client, channel, lockName, ttlMs) {
    super();
    this.#client = client;
    this.#channel = channel;
    this.lockName = lockName;
    this.ttlMs = ttlMs;
    this.owner = undefined;
    this.expiresAt = undefined;
    this.held = false;
  }

  /** Acquires again, which extends a lock this user holds. */
  async extend(ttlMs = this.ttlMs, request) {
    const data = { ...this.#target(), ...(ttlMs !== undefined ? { ttlMs } : {}) };
    const ack = await this.#client.request("lock:acquire", data, request);
    this.owner = ack.owner;
    this.expiresAt = ack.expiresAt;
    this.held = true;
    return this;
  }

  /** `lock:release`; stops auto-extension. */
  async release(request) {
    clearTimeout(this.#timer);
    this.#timer = null;
    if (!this.held) return;
    this.held = false;
    await this.#client.request("lock:release", this.#target(), request);
  }

  _startAutoExtend() {
    const tick = () => {
      // Half the lifetime left: one failed extension still leaves time for the next try.
      const lifetime = this.ttlMs ?? Math.max(1000, (this.expiresAt ?? Date.now()) - Date.now());
      this.#timer = setTimeout(async () => {
        if (!this.held) return;
        try {
          await this.extend();
          tick();
        } catch (error) {
          this.held = false;
          if (!this.emit("lost", error)) this.#client._backgroundError(error);
        }
      }, Math.max(500, lifetime / 2));
    };
    tick();
  }

  #target() {
    return { channelType: this.#channel.channelType, channelName: this.#channel.channelName, lockName: this.lockName };
  }
}

/** Items as an array `[{key, value, revision?}]` or an object `{key: value}`. */
function normalizeItems(items) {
  if (Array.isArray(items)) return items;
  if (items && typeof items === "object") return Object.entries(items).map(([key, value]) => ({ key, value }));
  throw new RosterError("METADATA_INVALID", "items must be an array of {key, value, revision?} or an object of key: value");
}

function pick(ack) {
  return { items: ack.items ?? [], majorRevision: ack.majorRevision };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
