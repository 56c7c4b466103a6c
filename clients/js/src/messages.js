// Message channels (DESIGN.md §8, docs/protocol.md "Messages"): subscribe with recovery.
// Publishing lives on the client (it needs the outbound queue); this file is the receiving
// side.
//
// Recovery: a subscription remembers the seq and id of the last message it delivered. After
// a reconnect it subscribes again from there and gets what it missed, or, when history no
// longer reaches back, emits `resync` so the app reloads its state, and carries on from the
// channel's newest seq. Pushes may arrive before the subscribe ack: they are held until it
// is in and replayed after the recovered messages; anything at or below lastSeq is a
// duplicate and dropped, so the handler sees each message once, in seq order.
//
// A channel can also start over: a server on the embedded store that restarted, or a
// channel whose history expired, counts from 1 again. Its seq alone cannot tell the client
// (after a restart and N new messages, "since N" looks fully recovered), so the client asks
// from one message earlier, `since: lastSeq - 1`, and checks that the message at lastSeq is
// still the one it delivered (same id). A different one means a new stream: resync.
//
// When the server knows the channel started over (its Redis came back without its data), it
// says so: `message:reset {channel, seq: 0}`, in order with the pushes. The subscription
// then forgets its last seq and id (the next message is seq 1, delivered, not dropped as a
// duplicate) and emits `reset`.

import { Emitter } from "./emitter.js";
import { RosterError } from "./errors.js";

/** Pause before retrying a refused re-subscription (the store may be down). */
const RETRY_MS = 5000;

/** A `message:reset` held with the pushes while a subscribe waits for its ack, in order. */
class ResetMark {
  constructor(seq) {
    this.seq = seq;
  }
}

export class Subscription extends Emitter {
  #client;
  /** Pushes received while the subscribe on this socket waits for its ack; null otherwise. */
  #buffer = null;
  #resolveReady;
  #rejectReady;
  #subscribedOnce = false;
  #retryTimer = null;
  /** The client's connection id this subscription last subscribed (or is subscribing) on. */
  #subscribedOn = -1;
  /** The id of the message at lastSeq when this subscription delivered it, else undefined. */
  #lastId = undefined;

  constructor(client, channel, { since } = {}) {
    super();
    this.#client = client;
    this.channel = channel;
    /** The seq of the last message delivered (or the channel's seq at subscribe time). */
    this.lastSeq = typeof since === "number" ? since : null;
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
    if (!this.#client.isConnected) return; // the next socket never subscribes it
    try {
      await this.#client._call("message:unsubscribe", { channel: this.channel });
    } catch (error) {
      // The socket dropped meanwhile: the server forgot the subscription with it.
      if (error instanceof RosterError && error.code === "DISCONNECTED") return;
      throw error;
    }
  }

  /**
   * Subscribes on the current socket (once per socket), with `since` after a first ack.
   * Never rejects: failures go to `ready` (first subscribe) or to `error`.
   */
  async _restore() {
    if (this.status === "unsubscribed") return;
    const connection = this.#client._connectionId;
    if (this.#subscribedOn === connection) return;
    this.#subscribedOn = connection;
    clearTimeout(this.#retryTimer);
    this.status = "subscribing";
    this.#buffer = [];
    const since = this.lastSeq;
    // From one earlier when we know the id at `since`, to check the stream is the same one.
    const anchored = since !== null && since > 0 && this.#lastId !== undefined;
    const data = since === null ? { channel: this.channel } : { channel: this.channel, since: anchored ? since - 1 : since };
    let ack;
    try {
      ack = await this.#client._call("message:subscribe", data);
    } catch (error) {
      if (connection !== this.#client._connectionId || this.status === "unsubscribed") return;
      this.#buffer = null;
      this.#subscribedOn = -1;
      if (error instanceof RosterError && error.code === "DISCONNECTED") return; // restored on reconnect
      if (!this.#subscribedOnce) {
        // A refused first subscription (FORBIDDEN, ...) is final: subscribe()'s caller learns why.
        this._close(error);
        return;
      }
      // A refused re-subscription (store down, ...): say so and try again shortly.
      if (!this.emit("error", error)) this.#client._backgroundError(error);
      this.#retryTimer = setTimeout(() => {
        if (this.#client.isConnected) this._restore();
      }, RETRY_MS);
      return;
    }
    if (connection !== this.#client._connectionId || this.status === "unsubscribed") return;
    const seq = typeof ack.seq === "number" ? ack.seq : (since ?? 0);
    const messages = Array.isArray(ack.messages) ? ack.messages : [];
    let recovered;
    if (since === null) {
      // Fresh: everything after the channel's current seq is pushed.
      this.lastSeq = seq;
      this.#lastId = undefined;
    } else {
      recovered = anchored ? this.#continues(since, seq, messages) : ack.recovered !== false;
      if (recovered) {
        for (const message of messages) this.#deliver(message);
      } else {
        // History no longer reaches `since`, or the channel started over: messages were
        // lost. The app reloads; what history still had comes along for it to use.
        this.lastSeq = seq;
        const newest = messages.at(-1);
        this.#lastId = newest?.seq === seq ? newest.id : undefined;
        this.emit("resync", { channel: this.channel, since, seq, messages });
      }
    }
    const held = this.#buffer ?? [];
    this.#buffer = null;
    this.status = "subscribed";
    for (const item of held) {
      if (item instanceof ResetMark) this.#reset(item.seq);
      else this.#deliver(item);
    }
    this.#subscribedOnce = true;
    this.#resolveReady(this);
    this.emit("subscribed", { channel: this.channel, seq: this.lastSeq, recovered });
  }

  /** A pushed `message` of this channel. */
  _handle(message) {
    if (this.status === "unsubscribed") return;
    if (this.#buffer) this.#buffer.push(message);
    else this.#deliver(message);
  }

  /**
   * A `message:reset`: the channel's history and sequence were lost; its next message is
   * `seq + 1` (seq is 0). Held in order with the pushes while a subscribe waits for its ack.
   */
  _reset(data) {
    if (this.status === "unsubscribed") return;
    const seq = typeof data?.seq === "number" ? data.seq : 0;
    if (this.#buffer) this.#buffer.push(new ResetMark(seq));
    else this.#reset(seq);
  }

  /** Ends the subscription locally; `error` is why when the client gave up (else CLOSED). */
  _close(error) {
    if (this.status === "unsubscribed") return;
    this.status = "unsubscribed";
    this.#buffer = null;
    clearTimeout(this.#retryTimer);
    this.#rejectReady(error ?? new RosterError("CLOSED", `unsubscribed from ${this.channel}`));
    this.#client._subscriptionClosed(this);
  }

  /**
   * Whether the history answering `since: since - 1` continues the stream this subscription
   * saw up to `since`: the message at `since` is the one delivered (same id), or, when it has
   * left history, nothing after it is missing.
   */
  #continues(since, seq, messages) {
    if (seq < since) return false; // the channel counts from 1 again
    const anchor = messages.find((message) => message.seq === since);
    if (anchor) return anchor.id === this.#lastId;
    const next = messages.find((message) => message.seq > since);
    return next ? next.seq === since + 1 : seq === since;
  }

  /** Starts over at `seq`: what recovery knew of the old stream (its last seq and id) is void. */
  #reset(seq) {
    const previousSeq = this.lastSeq;
    this.lastSeq = seq;
    this.#lastId = undefined;
    this.emit("reset", { channel: this.channel, seq, previousSeq });
  }

  #deliver(message) {
    if (typeof message?.seq !== "number") {
      this.#client._backgroundError(new RosterError("PROTOCOL", `a message of ${this.channel} without a seq`));
      return;
    }
    if (this.lastSeq !== null && message.seq <= this.lastSeq) return;
    this.lastSeq = message.seq;
    this.#lastId = message.id;
    this.emit("message", message);
  }
}
