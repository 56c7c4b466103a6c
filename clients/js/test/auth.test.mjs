// Tokens against the real server with authentication on (DESIGN.md §7): a token function
// keeps a socket alive past its first token's expiry with `auth:refresh`; a refused token is
// a typed UNAUTHORIZED; a socket whose token runs out is closed and the client comes back
// with a fresh one.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { RosterError } from "../src/index.js";
import { converged, nextEvent, recordEvents, signToken, startRoster, testClient, waitFor, withTimeout } from "./harness.mjs";

const SECRET = "roster-client-tests-secret-0123456789abcdef";
let server;
const clients = [];
function client(options) {
  const c = testClient(server, options);
  clients.push(c);
  return c;
}

before(async () => {
  // No leeway: a socket's token expires at its `exp`, so the tests need not wait 30 s more.
  server = await startRoster(["--jwt-secret", SECRET, "--jwt-leeway-ms", "0"]);
});
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

/** A token function handing out `sub` tokens that live `seconds` (exp has a 1 s grain), recording each. */
function tokenSource(sub, seconds) {
  const issued = [];
  const source = async () => {
    const exp = Math.floor(Date.now() / 1000) + seconds;
    issued.push({ sub, exp: exp * 1000 });
    return signToken({ sub: source.sub ?? sub, exp }, SECRET);
  };
  source.issued = issued;
  return source;
}

/** Tokens that live 3-4 s are refreshed (at half the life left: 1.5 s or more before expiry) before they run out: the socket, its connection and its room outlive several tokens. */
test("a token function refreshes before expiry and keeps the socket", async () => {
  const watcher = client({ token: tokenSource("watcher", 60) });
  const watched = await watcher.join("refresh", { name: "w" });
  const runs = ["ws", "socketio"].map(async (transport) => {
    const token = tokenSource(`ada-${transport}`, 4);
    const c = client({ transport, token });
    const refreshes = [];
    c.on("refresh", (event) => refreshes.push(event));
    const room = await c.join("refresh", { name: transport });
    await c.ready();
    const statuses = [];
    c.on("status", ({ status }) => statuses.push(status));
    assert.equal(room.userId, undefined, "no userId sent: the server takes the token's sub");
    const firstExpiry = token.issued[0].exp;
    const connId = room.self.connId;
    // Two refreshes, and past the first token's expiry (when the server would close the socket).
    await waitFor(() => refreshes.length >= 2 && Date.now() > firstExpiry + 300, "two refreshes and the first token's expiry", 15_000);
    assert.ok(refreshes.every((r) => typeof r.expiresAt === "number" && r.expiresAt > firstExpiry), "the server said when each new token expires");
    assert.deepEqual(statuses, [], "never disconnected");
    assert.equal(c.status, "connected");
    assert.equal(c.getStats().reconnects, 0);
    assert.equal(room.self.connId, connId);
    // The socket still works, as the same connection.
    await room.setState({ name: `${transport}-after` });
    return c;
  });
  const seen = recordEvents(watched);
  const refreshed = await Promise.all(runs);
  await converged([watched], ['ada-socketio:{"name":"socketio-after"}', 'ada-ws:{"name":"ws-after"}', 'watcher:{"name":"w"}']);
  assert.deepEqual(
    seen.filter((e) => e.type === "leave"),
    [],
    "nobody left",
  );
  assert.deepEqual(
    [watcher, ...refreshed].flatMap((c) => c.errors),
    [],
  );
});

for (const [transport, tokenIn] of [
  ["ws", "query"],
  ["ws", "header"],
  ["socketio", undefined],
]) {
  /** A bad token (garbage, or signed with another key) is refused at the handshake: connect_error, ready(), join() and the `error` event all carry UNAUTHORIZED, and the client stops. */
  test(`a refused token is UNAUTHORIZED (${transport}${tokenIn ? `, ${tokenIn}` : ""})`, async () => {
    for (const token of ["not-a-jwt", signToken({ sub: "mallory", exp: Math.floor(Date.now() / 1000) + 60 }, "another-secret-another-secret-0123")]) {
      const c = client({ transport, tokenIn, token });
      const connectError = nextEvent(c, "connect_error");
      const joining = c.join("refused");
      await assert.rejects(c.ready(), (error) => {
        assert.ok(error instanceof RosterError);
        assert.equal(error.code, "UNAUTHORIZED");
        assert.equal(error.fromServer, true);
        return true;
      });
      assert.equal((await connectError)[0].code, "UNAUTHORIZED");
      await assert.rejects(joining, { code: "UNAUTHORIZED" });
      assert.equal(c.status, "disconnected", "a fixed token that is refused is not retried");
      assert.deepEqual(
        c.errors.map((e) => e.code),
        ["UNAUTHORIZED"],
      );
    }
  });
}

for (const transport of ["ws", "socketio"]) {
  /** A refresh the server refuses (another user's token) is reported; the socket's token then runs out: the server closes it after a leave (4401 / auth:expired), and the client reconnects with a fresh token and joins again. */
  test(`an expired socket comes back with a fresh token (${transport})`, async () => {
    // 3 s: the refresh (at half the life left) goes out at least a second before expiry.
    const token = tokenSource("bob", 3);
    const c = client({ transport, token });
    const room = await c.join(`expiry-${transport}`, { n: 1 });
    const oldConnId = room.self.connId;
    // From now on the function hands out another user's tokens: the refresh is refused.
    token.sub = "mallory";
    const [refused] = await nextEvent(c, "error", "the refused refresh");
    assert.equal(refused.code, "FORBIDDEN");
    assert.equal(refused.event, "auth:refresh");
    // The socket's token runs out; the server says why as it closes the socket.
    const [expired] = await nextEvent(c, "connect_error", "the expiry close");
    assert.equal(expired.code, "UNAUTHORIZED");
    token.sub = undefined; // bob again
    const [{ reason }] = await nextEvent(room, "rejoined", "the re-join");
    assert.equal(reason, "reconnected", "the connection left at expiry: joined afresh");
    assert.notEqual(room.self.connId, oldConnId);
    assert.deepEqual(room.state, { n: 1 });
    await c.ready();
    assert.ok(token.issued.length >= 3, "asked for a token again to reconnect");
    assert.ok(c.errors.every((e) => e.code === "FORBIDDEN"), c.errors.map(String).join(", "));
  });
}

/** A fixed token that expires: the socket is closed, the reconnect is refused, and the client stops with UNAUTHORIZED. */
test("a fixed token that expires stops the client", async () => {
  const c = client({ token: signToken({ sub: "carol", exp: Math.floor(Date.now() / 1000) + 2 }, SECRET) });
  const room = await c.join("fixed");
  const stopped = nextEvent(c, "disconnected", "the client to stop", 10_000);
  await stopped;
  assert.equal(room.status, "left");
  await assert.rejects(c.ready(), { code: "UNAUTHORIZED" });
  assert.ok(c.errors.length >= 1 && c.errors.every((e) => e.code === "UNAUTHORIZED"));
  await assert.rejects(withTimeout(c.join("again"), "join"), { code: "CLOSED" });
});
