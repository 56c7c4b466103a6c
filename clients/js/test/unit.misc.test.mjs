// Small pure pieces: backoff, JWT expiry, URLs, errors.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Backoff, RosterError, jwtExpiresAt } from "../src/index.js";
import { refreshDelay } from "../src/auth.js";
import { newId, toHttpUrl, toWsUrl } from "../src/client.js";

/** Full jitter: each delay is uniform in [0, min(cap, base * 2^attempt)); maxAttempts stops it. */
test("backoff is exponential with full jitter, capped", () => {
  const top = new Backoff({ baseMs: 1000, capMs: 30000 }, () => 0.999999);
  const ceilings = Array.from({ length: 8 }, () => top.next());
  assert.deepEqual(ceilings, [999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  const bottom = new Backoff({}, () => 0);
  assert.equal(bottom.next(), 0);
  const limited = new Backoff({ maxAttempts: 2 }, () => 0.5);
  assert.equal(limited.next(), 500);
  assert.equal(limited.next(), 1000);
  assert.equal(limited.next(), null);
  limited.reset();
  assert.equal(limited.next(), 500);
  // A very long outage neither overflows nor exceeds the cap.
  const long = new Backoff({}, () => 0.5);
  long.attempt = 5000;
  assert.equal(long.next(), 15000);
});

/** The JWT's exp is read without verifying; junk gives undefined. */
test("jwt exp is decoded", () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const token = `${b64({ alg: "HS256" })}.${b64({ sub: "ada", exp: 1700000000, name: "Ädä" })}.sig`;
  assert.equal(jwtExpiresAt(token), 1700000000 * 1000);
  assert.equal(jwtExpiresAt("not-a-jwt"), undefined);
  assert.equal(jwtExpiresAt(`${b64({})}.${b64({ sub: "x" })}.s`), undefined);
  // Refresh ahead of expiry, at most half the remaining life, never sooner than 1 s.
  assert.equal(refreshDelay(100_000, 0, 30_000), 70_000);
  assert.equal(refreshDelay(10_000, 0, 30_000), 5_000);
  assert.equal(refreshDelay(-5, 0, 30_000), 1_000);
});

/** URLs: http(s) and ws(s) are accepted for either transport. */
test("urls", () => {
  assert.equal(toWsUrl("http://h:1"), "ws://h:1/ws");
  assert.equal(toWsUrl("https://h"), "wss://h/ws");
  assert.equal(toWsUrl("ws://h:1/ws"), "ws://h:1/ws");
  assert.equal(toWsUrl("ws://h:1/custom/ws"), "ws://h:1/custom/ws");
  assert.equal(toHttpUrl("ws://h:1/ws"), "http://h:1");
  assert.equal(toHttpUrl("https://h"), "https://h");
});

/** A refused ack becomes a RosterError with the server's code and message. */
test("RosterError from an ack", () => {
  const error = RosterError.fromAck({ ok: false, error: { code: "STALE_EPOCH", message: "epoch 1 < 2" } }, "presence:heartbeat");
  assert.ok(error instanceof RosterError && error instanceof Error);
  assert.equal(error.code, "STALE_EPOCH");
  assert.equal(error.message, "epoch 1 < 2");
  assert.equal(error.event, "presence:heartbeat");
  assert.equal(error.fromServer, true);
  assert.equal(RosterError.fromAck({ weird: true }, "x").code, "PROTOCOL");
  assert.equal(new RosterError("TIMEOUT", "t").fromServer, false);
});

/** Publish ids are UUIDs, also where crypto.randomUUID is missing (a browser page over plain http). */
test("publish ids", () => {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(newId(), uuid);
  const real = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  const { getRandomValues } = globalThis.crypto;
  Object.defineProperty(globalThis, "crypto", {
    configurable: true,
    value: { getRandomValues: (bytes) => getRandomValues.call(real.get.call(globalThis), bytes) },
  });
  try {
    const ids = new Set(Array.from({ length: 100 }, () => newId()));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, uuid);
  } finally {
    Object.defineProperty(globalThis, "crypto", real);
  }
});
