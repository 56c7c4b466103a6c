// Message channels (DESIGN.md §8): subscribe with recovery, publish with idempotency.
// The server side is not built yet; this file is the whole client side of it, so it can be
// switched on or fixed in one place.
//
// Recovery: a subscription remembers the last seq it delivered. After a reconnect it
// subscribes again with `since: lastSeq`; the server returns what was missed
// (`recovered: true, messages`) or says history no longer reaches back (`recovered: false`),
// and then the subscription emits `resync` so the app reloads its state. Messages that arrive
// while a (re)subscribe waits for its ack are held and replayed after it; anything at or
// below lastSeq is a duplicate and dropped.

import { Emitter } from "./emitter.js";
import { RosterError } from "./errors.js";

/** Pause before retrying a refused re-subscription. */
const RETRY_MS = 5000;

export class Subscription extends Emitter {
  #client;
  #buffer = null;
  #resolveReady;
  #rejectReady;
  #subscribedOnce = false;
  #retryTimer = null;

  constructor(client, channel, { since } = {}) {
    super();
    this.#client = client;
    this.channel = channel;
    /** The seq of the last message delivered (or the channel's seq at subscribe time). */
    this.lastSeq = since ?? null;
    /** "subscribing" | "subscribed" | "unsubscribed" */
    this.status = "subscribing";
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {});
  }

  /** Publishes to this channel (see RosterClient.publish). */
  publish(payload, options) {
    return this.#client.publish(this.channel, payload, options);
  }

  /** `message:unsubscribe`; no more messages are delivered. */
  async unsubscribe() {
    if (this.status === "unsubscribed") return;
    this._close();
    if (this.#client.isConnected) await this.#client._call("message:unsubscribe", { channel: this.channel });
  }

  /** (Re)subscribes on the current socket. Never rejects: failures go to `ready` or `error`. */
  async _restore() {
    if (this.status === "unsubscribed") return;
    this.status = "subscribing";
    this.#buffer = this.#buffer ?? [];
    const since = this.lastSeq;
    try {
      const ack = await this.#client._call("message:subscribe", since === null ? { channel: this.channel } : { channel: this.channel, since });
      if (this.status === "unsubscribed") return;
      if (since === null) {
        this.lastSeq = ack.seq ?? 0;
      } else if (ack.recovered === false) {
        // History no longer reaches `since`: messages were lost; the app must reload.
        this.lastSeq = ack.seq ?? since;
        this.emit("resync", { channel: this.channel, since, seq: this.lastSeq });
      } else {
        for (const message of ack.messages ?? []) this.#deliver(message);
      }
      const held = this.#buffer ?? [];
      this.#buffer = null;
      this.status = "subscribed";
      for (const message of held) this.#deliver(message);
      this.#subscribedOnce = true;
      this.#resolveReady(this);
      this.emit("subscribed", { channel: this.channel, seq: this.lastSeq });
    } catch (error) {
      this.#buffer = null;
      if (error instanceof RosterError && error.code === "DISCONNECTED") return; // restored on reconnect
      if (!this.#subscribedOnce) {
        // A refused first subscription (FORBIDDEN, ...) is final: subscribe()'s caller learns why.
        this.#rejectReady(error);
        this._close();
        return;
      }
      // A refused re-subscription (store down, ...): say so and try again shortly.
      if (!this.emit("error", error)) this.#client._backgroundError(error);
      this.#retryTimer = setTimeout(() => {
        if (this.#client.isConnected) this._restore();
      }, RETRY_MS);
    }
  }

  /** A pushed `message` of this channel. */
  _handle(message) {
    if (this.status === "unsubscribed") return;
    if (this.#buffer) this.#buffer.push(message);
    else this.#deliver(message);
  }

  _close() {
    if (this.status === "unsubscribed") return;
    this.status = "unsubscribed";
    this.#buffer = null;
    clearTimeout(this.#retryTimer);
    this.#rejectReady(new RosterError("CLOSED", `unsubscribed from ${this.channel}`));
    this.#client._subscriptionClosed(this);
  }

  #deliver(message) {
    if (typeof message?.seq === "number" && this.lastSeq !== null && message.seq <= this.lastSeq) return;
    if (typeof message?.seq === "number") this.lastSeq = message.seq;
    this.emit("message", message);
  }
}
