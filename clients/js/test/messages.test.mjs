// Messages against the real server (docs/protocol.md "Messages"): every subscriber gets a
// channel's messages once, in seq order, whatever races its subscribe; a dropped subscriber
// recovers what it missed; a publish whose ack was lost is delivered once; `resync` when
// history no longer reaches back.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connectErrors, gate, nextEvent, startRoster, testClient, waitFor, withTimeout } from "./harness.mjs";

let server;
let shortHistory;
const clients = [];
function client(s, options) {
  const c = testClient(s, options);
  clients.push(c);
  return c;
}

before(async () => {
  server = await startRoster();
  shortHistory = await startRoster(["--message-history", "5"]);
});
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([server?.stop(), shortHistory?.stop()]);
});

/** Collects what a handler gets; `seqs()` in delivery order. */
function collector() {
  const got = [];
  const handler = (message) => got.push(message);
  return { got, handler, seqs: () => got.map((m) => m.seq) };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Two publishers race; a subscriber from the start gets 1..N in order, once each; one that subscribes mid-stream gets exactly the messages after its ack's seq, pushes racing the ack included. */
test("every subscriber gets each message once, in seq order", async (t) => {
  const channel = "order";
  const [p1, p2, early, late] = ["p1", "p2", "early", "late"].map((userId) => client(server, { userId }));
  // In open mode `from` is the user the publisher's socket joined as, null if it never joined.
  await p1.join("order-room");
  const first = collector();
  const sub = early.subscribe(channel, first.handler);
  await withTimeout(sub.ready, "the early subscription");
  assert.equal(sub.lastSeq, 0, "a new channel starts at seq 0");

  const perPublisher = 40;
  let lateSub;
  const lateGot = collector();
  const publishing = [p1, p2].map((publisher, n) =>
    Promise.all(
      range(1, perPublisher).map((i) => {
        // Subscribe the late client while the stream is running, so pushes race its ack.
        if (n === 0 && i === perPublisher / 2) lateSub = late.subscribe(channel, lateGot.handler);
        return publisher.publish(channel, { n, i });
      }),
    ),
  );
  const [acks1, acks2] = await withTimeout(Promise.all(publishing), "every publish ack");
  const total = 2 * perPublisher;
  // Each socket's requests are handled in order: a publisher's seqs rise in call order.
  for (const acks of [acks1, acks2]) {
    assert.deepEqual(
      acks.map((a) => a.seq),
      [...acks.map((a) => a.seq)].sort((a, b) => a - b),
    );
  }
  assert.deepEqual([...acks1, ...acks2].map((a) => a.seq).sort((a, b) => a - b), range(1, total), "one seq per publish, no gaps");

  await waitFor(() => first.got.length === total, `the early subscriber to get ${total} messages (has ${first.got.length})`);
  assert.deepEqual(first.seqs(), range(1, total));
  const byId = new Map([...acks1, ...acks2].map((a) => [a.id, a.seq]));
  for (const message of first.got) {
    assert.equal(byId.get(message.id), message.seq, "the pushed message is the acked one");
    assert.equal(message.channel, channel);
    assert.equal(message.from, message.payload.n === 0 ? "p1" : null);
    assert.equal(typeof message.ts, "number");
  }

  await withTimeout(lateSub.ready, "the late subscription");
  await waitFor(() => lateSub.lastSeq === total, () => `the late subscriber to reach the end: got ${JSON.stringify(lateGot.seqs())}, at ${lateSub.lastSeq}`);
  const from = lateGot.seqs()[0] ?? total + 1;
  assert.deepEqual(lateGot.seqs(), range(from, total), "the late subscriber: contiguous from its ack's seq + 1");
  t.diagnostic(`the late subscriber joined the stream at seq ${from} of ${total}`);
  // Nothing more trickles in afterwards: a sentinel published last is the next thing seen.
  const sentinel = await p1.publish(channel, "end");
  await waitFor(() => first.got.length === total + 1 && lateGot.got.at(-1)?.seq === sentinel.seq, "the sentinel");
  assert.deepEqual(first.seqs(), range(1, total + 1));
  assert.deepEqual(lateGot.seqs(), range(from, total + 1));
  assert.deepEqual(
    [p1, p2, early, late].flatMap((c) => c.errors),
    [],
  );
});

/** A subscriber whose socket drops re-subscribes with `since` and recovers what it missed, in order, once; its own publishes made while away are queued and delivered once. */
test("recovery after a drop, and publishes queued while away", async () => {
  const channel = "recover";
  const g = gate();
  const publisher = client(server, { userId: "pub" });
  const subscriber = client(server, { userId: "sub", WebSocket: g.WebSocket });
  const got = collector();
  const sub = subscriber.subscribe(channel, got.handler);
  await withTimeout(sub.ready, "the subscription");
  for (const i of [1, 2]) await publisher.publish(channel, { i });
  await waitFor(() => got.got.length === 2, "the first two messages");

  g.block();
  const failures = connectErrors(subscriber);
  subscriber.debug.dropConnection();
  await waitFor(() => subscriber.status === "reconnecting", "the subscriber to notice");
  for (const i of [3, 4, 5]) await publisher.publish(channel, { i });
  const queued = [6, 7].map((i) => subscriber.publish(channel, { i, queued: true }));
  assert.equal(subscriber.getStats().queueSize, 2, "publishes wait in the queue");
  await failures.after(2);

  const resubscribed = nextEvent(sub, "subscribed", "the re-subscription");
  let resynced = false;
  sub.on("resync", () => (resynced = true));
  g.unblock();
  assert.deepEqual((await resubscribed)[0], { channel, seq: 5, recovered: true });
  const acks = await withTimeout(Promise.all(queued), "the queued publishes");
  assert.deepEqual(
    acks.map((a) => a.seq),
    [6, 7],
    "sent in the order they were made",
  );
  await waitFor(() => got.got.length === 7, "all seven messages");
  assert.deepEqual(got.seqs(), range(1, 7));
  assert.deepEqual(
    got.got.map((m) => m.payload.i),
    range(1, 7),
  );
  assert.equal(resynced, false);
  assert.equal(subscriber.getStats().queueSize, 0);
  assert.deepEqual([...publisher.errors, ...subscriber.errors], []);
});

/**
 * The socket drops with publishes in flight: taken by the server but their acks unread, or
 * never sent at all. The client sends them again with the same ids, in the order they were
 * made, ahead of one made while away; each is delivered once.
 */
test("publishes in flight when the socket drops are delivered once, in order", async () => {
  const channel = "lost-ack";
  const g = gate();
  const publisher = client(server, { userId: "pub", WebSocket: g.WebSocket });
  const watcher = client(server, { userId: "watch" });
  const got = collector();
  await withTimeout(watcher.subscribe(channel, got.handler).ready, "the subscription");
  await publisher.ready();

  // Stop reading the publisher's socket: the acks will sit unread in the kernel.
  g.sockets.at(-1).pause();
  const inFlight = [1, 2, 3].map((n) => publisher.publish(channel, { n }, { id: `lost-ack-${n}` }));
  await waitFor(() => got.got.length === 3, "the server to deliver the publishes");
  assert.equal(publisher.getStats().inFlight, 3, "their acks have not been read");
  g.block();
  publisher.debug.dropConnection();
  await waitFor(() => publisher.status === "reconnecting", "the publisher to notice");
  const later = publisher.publish(channel, { n: 4 }, { id: "lost-ack-4" });
  assert.equal(publisher.getStats().queueSize, 4, "the three in flight went back into the queue");
  g.unblock();
  const acks = await withTimeout(Promise.all([...inFlight, later]), "the resent publishes' acks");
  assert.deepEqual(
    acks,
    [1, 2, 3, 4].map((n) => ({ ok: true, channel, seq: n, id: `lost-ack-${n}` })),
    "the original seqs, from the idempotent retries, in order",
  );
  assert.equal(publisher.getStats().reconnects, 1);

  // Now publishes that never leave the client: its socket's writes are held back (corked)
  // and thrown away with the socket.
  g.sockets.at(-1)._socket.cork();
  const unsent = [5, 6, 7].map((n) => publisher.publish(channel, { n }, { id: `lost-ack-${n}` }));
  await waitFor(() => publisher.getStats().inFlight === 3, "the publishes to be in flight");
  g.block();
  publisher.debug.dropConnection();
  await waitFor(() => publisher.status === "reconnecting", "the publisher to notice again");
  const after = publisher.publish(channel, { n: 8 }, { id: "lost-ack-8" });
  g.unblock();
  const acksAgain = await withTimeout(Promise.all([...unsent, after]), "the unsent publishes' acks");
  assert.deepEqual(
    acksAgain.map((a) => a.seq),
    [5, 6, 7, 8],
    "sent in the order they were made",
  );

  const sentinel = await publisher.publish(channel, { sentinel: true });
  await waitFor(() => got.got.at(-1)?.seq === sentinel.seq, "the sentinel");
  assert.deepEqual(got.seqs(), range(1, 9), "no duplicate, no gap");
  assert.deepEqual(
    got.got.map((m) => m.payload.n),
    [1, 2, 3, 4, 5, 6, 7, 8, undefined],
  );
  assert.deepEqual([...publisher.errors, ...watcher.errors], []);
});

/** History holds 5: a subscriber away for 8 messages gets `resync` (with what history still had), not those messages; then it carries on from the newest seq. */
test("resync when history does not reach back", async () => {
  const channel = "short";
  const g = gate();
  const publisher = client(shortHistory, { userId: "pub" });
  const subscriber = client(shortHistory, { userId: "sub", WebSocket: g.WebSocket });
  const got = collector();
  const sub = subscriber.subscribe(channel, got.handler);
  await withTimeout(sub.ready, "the subscription");
  await publisher.publish(channel, 1);
  await waitFor(() => got.got.length === 1, "the first message");

  g.block();
  subscriber.debug.dropConnection();
  await waitFor(() => subscriber.status === "reconnecting", "the subscriber to notice");
  for (let i = 2; i <= 9; i++) await publisher.publish(channel, i);
  const resync = nextEvent(sub, "resync");
  g.unblock();
  const [event] = await resync;
  assert.equal(event.channel, channel);
  assert.equal(event.since, 1);
  assert.equal(event.seq, 9);
  assert.deepEqual(
    event.messages.map((m) => m.seq),
    [5, 6, 7, 8, 9],
    "what history still held comes with the signal",
  );
  assert.equal(sub.lastSeq, 9);
  assert.deepEqual(got.seqs(), [1], "the handler did not get a history with a hole in it");

  const next = await publisher.publish(channel, 10);
  await waitFor(() => got.got.length === 2, "the next message");
  assert.deepEqual(got.seqs(), [1, next.seq]);
  assert.equal(next.seq, 10);

  // Subscribing from a seq history no longer has signals resync too.
  const late = client(shortHistory, { userId: "late" });
  const lateSub = late.subscribe(channel, () => {}, { since: 2 });
  const [lateEvent] = await nextEvent(lateSub, "resync");
  assert.deepEqual(
    { since: lateEvent.since, seq: lateEvent.seq },
    { since: 2, seq: 10 },
  );
  assert.deepEqual([...publisher.errors, ...subscriber.errors], []);
});

/** Unsubscribing stops delivery; a refused subscription rejects `ready` with the server's code. */
test("unsubscribe, and a refused subscription", async () => {
  const a = client(server, { userId: "a" });
  const got = collector();
  const sub = a.subscribe("unsub", got.handler);
  await withTimeout(sub.ready, "the subscription");
  assert.equal(a.getStats().subscriptions, 1);
  await sub.unsubscribe();
  assert.equal(a.getStats().subscriptions, 0);
  assert.equal(sub.status, "unsubscribed");
  const watcher = client(server, { userId: "w" });
  const seen = collector();
  await withTimeout(watcher.subscribe("unsub", seen.handler).ready, "the watcher");
  await a.publish("unsub", "after");
  await waitFor(() => seen.got.length === 1, "the watcher's copy");
  assert.deepEqual(got.got, [], "nothing after unsubscribe");

  await assert.rejects(a.subscribe("").ready, { name: "RosterError", code: "INVALID_PAYLOAD", event: "message:subscribe" });
  await assert.rejects(a.publish("unsub", undefined), { code: "INVALID_PAYLOAD" });
  assert.deepEqual(a.errors, []);
});
