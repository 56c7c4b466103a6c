// Identity (DESIGN.md §7) with the real socket.io-client, tokens signed by the npm
// `jsonwebtoken` as a Node backend signs them: refused handshakes are `connect_error`s with
// `data.code`, the token may travel in `auth` (object or callback), the query or a header,
// joins are the token's user, refresh works, and an expiring token leaves then disconnects.

import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import jwt from "jsonwebtoken";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { record, request, startRoster, withTimeout } from "./harness.mjs";

const SECRET = "roster-node-auth-tests-secret-0123456789abcdef";
/** An HS256 token for `sub`: ten minutes, or `expiresIn`, unless `claims` set `exp`. */
const sign = (sub, claims = {}, expiresIn = "10m") =>
  jwt.sign({ sub, ...claims }, SECRET, { algorithm: "HS256", ...("exp" in claims ? {} : { expiresIn }) });

const TRANSPORTS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
};

describe("tokens on Socket.IO", () => {
  let roster;
  before(async () => {
    roster = await startRoster(["--jwt-secret", SECRET, "--jwt-leeway-ms", "0"]);
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  /** A socket that must be refused; resolves with the connect_error. */
  async function refused(options) {
    const socket = io(roster.url, { forceNew: true, reconnection: false, ...options });
    try {
      const [error] = await withTimeout(once(socket, "connect_error"), "a connect_error");
      return error;
    } finally {
      socket.close();
    }
  }

  for (const [name, options] of Object.entries(TRANSPORTS)) {
    it(`refuses missing and bad tokens over ${name} with data.code`, async () => {
      const cases = [
        [{}, /token is required/],
        [{ auth: { token: "garbage" } }, /not a JWT/],
        [{ auth: { token: jwt.sign({ sub: "ada" }, "another-secret-of-thirty-two-bytes!!", { expiresIn: "1m" }) } }, /signature/],
        [{ auth: { token: sign("ada", { exp: Math.floor(Date.now() / 1000) - 60 }) } }, /expired/],
        [{ auth: { token: sign("ada", { nbf: Math.floor(Date.now() / 1000) + 3600 }) } }, /nbf/],
      ];
      for (const [extra, says] of cases) {
        const error = await refused({ ...options, ...extra });
        assert.equal(error.data?.code, "UNAUTHORIZED", JSON.stringify(error.data));
        assert.match(error.message, says);
        assert.doesNotMatch(error.message, new RegExp(SECRET));
      }
    });

    it(`joins as the token's user over ${name}`, async () => {
      const ada = await roster.connect({ ...options, auth: { token: sign("ada") } });
      const joined = await request(ada, "presence:join", { roomId: `lobby-${name}`, state: { s: 1 } });
      assert.equal(joined.ok, true, JSON.stringify(joined));
      assert.equal(joined.snapshot[0].userId, "ada");
      const forbidden = await request(ada, "presence:join", { roomId: `lobby-${name}`, userId: "bob" });
      assert.equal(forbidden.error.code, "FORBIDDEN");
      const count = await request(ada, "presence:count", { roomId: `lobby-${name}` });
      assert.equal(count.connections, 1, "the refused join changed nothing");
    });
  }

  it("reads the token from an auth callback, the query and a header", async () => {
    const token = sign("ada");
    await roster.connect({ transports: ["websocket"], auth: (cb) => cb({ token }) });
    await roster.connect({ transports: ["websocket"], query: { token } });
    await roster.connect({ transports: ["polling"], extraHeaders: { Authorization: `Bearer ${token}` } });
  });

  it("refreshes for the same user only", async () => {
    const ada = await roster.connect({ transports: ["websocket"], auth: { token: sign("ada") } });
    const later = Math.floor(Date.now() / 1000) + 3600;
    const refreshed = await request(ada, "auth:refresh", { token: sign("ada", { exp: later }) });
    assert.deepEqual(refreshed, { ok: true, expiresAt: later * 1000 });
    const other = await request(ada, "auth:refresh", { token: sign("bob") });
    assert.equal(other.error.code, "FORBIDDEN");
  });

  it("an expiring token leaves with its state, then auth:expired and a server disconnect", async () => {
    const watcher = await roster.connect({ transports: ["websocket"], auth: { token: sign("bob") } });
    const events = record(watcher);
    await request(watcher, "presence:join", { roomId: "expiry" });
    await events.next((e) => e.userId === "bob", "bob's own join");

    const ada = await roster.connect({ transports: ["websocket"], auth: { token: sign("ada", {}, "2s") } });
    const expired = once(ada, "auth:expired");
    const disconnected = once(ada, "disconnect");
    await request(ada, "presence:join", { roomId: "expiry", state: { status: "typing" } });
    const leave = await events.next((e) => e.userId === "ada" && e.type === "leave", "ada's leave");
    assert.equal(leave.state.status, "typing", "a leave carries the last state");
    const [why] = await withTimeout(expired, "auth:expired");
    assert.equal(why.code, "UNAUTHORIZED");
    const [reason] = await withTimeout(disconnected, "the disconnect");
    assert.equal(reason, "io server disconnect");
  });
});

describe("tokens on /ws", () => {
  let roster;
  before(async () => {
    roster = await startRoster(["--jwt-secret", SECRET]);
  });
  after(async () => {
    assert.equal(await roster.stop(), 0);
  });

  it("is refused with 401 and the contract's body without a good token", async () => {
    for (const url of [roster.wsUrl, `${roster.wsUrl}?token=garbage`]) {
      const socket = new WebSocket(url);
      const [, response] = await withTimeout(once(socket, "unexpected-response"), "the refusal");
      assert.equal(response.statusCode, 401);
      let body = "";
      for await (const chunk of response) body += chunk;
      assert.equal(JSON.parse(body).error.code, "UNAUTHORIZED");
    }
  });

  it("lets a browser-style ?token= in", async () => {
    const socket = new WebSocket(`${roster.wsUrl}?token=${sign("ada")}`);
    await withTimeout(once(socket, "open"), "the /ws connection");
    socket.close();
  });
});
