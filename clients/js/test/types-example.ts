// Compiled (never run) by `npm run typecheck`: exercises the declarations the way an app
// would, imported by the package name, so a wrong or missing type fails the build.

import {
  connect,
  RosterError,
  type Member,
  type MetadataEvent,
  type Room,
  type Stats,
  type WebSocketConstructor,
} from "roster-client";

declare const WebSocket: WebSocketConstructor;
// The declarations need no DOM or Node types; this file only needs a console.
declare const console: { log(...values: unknown[]): void };

interface Cursor {
  name: string;
  x: number;
  y: number;
  color?: string;
}

export async function example(): Promise<void> {
  const client = connect("https://roster.example.com", {
    WebSocket,
    token: async () => "a.jwt.token",
    userId: "ada",
    reconnect: { baseMs: 500, capMs: 10_000 },
    requestTimeoutMs: 5000,
    queueSize: 50,
  });
  client.on("status", ({ status, previous }) => console.log(previous, "->", status));
  client.on("error", (error) => console.log(error.code, error.message));
  client.on("connect_error", (error) => console.log(error.code === "UNAUTHORIZED"));
  client.on("refresh", ({ expiresAt }) => console.log(expiresAt === null ? "open hub" : new Date(expiresAt)));
  await client.ready();
  const { expiresAt } = await client.refreshToken();
  console.log(expiresAt);

  const room: Room<Cursor> = await client.join<Cursor>("doc-42", { name: "Ada", x: 0, y: 0 });
  room.on("join", (member: Member<Cursor>) => console.log(member.state.name));
  room.on("update", (member, previous) => console.log(member.state.x - previous.state.x));
  room.on("change", ({ members, changes }) => console.log(members.size, changes.length));
  room.on("rejoined", ({ reason }) => console.log(reason === "lost" ? "the store lost our connection" : reason));
  room.on("resynced", ({ reason, changes }) => console.log(reason, changes.map((c) => `${c.type}:${c.member.connId}`)));
  await room.setState({ x: 10 });
  const { connections, users } = room.count();
  const server = await room.fetchCount({ timeoutMs: 2000 });
  console.log(connections + users + server.connections, room.state.name, room.self?.connId);
  for (const [connId, member] of room.members()) console.log(connId, member.userId, member.epoch);

  const doc = client.metadata("document", "doc-42");
  const off = doc.on((event: MetadataEvent) => console.log(event.operation, event.majorRevision));
  await doc.set({ title: "Draft" }, { addTimestamp: true });
  await doc.update([{ key: "title", value: "Final", revision: 1 }]);
  const counter = await doc.updateWith("views", (value) => String(Number(value ?? "0") + 1), { maxAttempts: 5 });
  console.log(counter?.revision);
  const { items, majorRevision } = await doc.get();
  console.log(items.map((item) => item.key), majorRevision);
  await doc.remove(["title"]);
  off();

  const lock = await doc.acquire("editor", { ttlMs: 10_000, autoExtend: true });
  lock.on("lost", (error) => console.log(error.code));
  await lock.release();
  const result: number = await doc.withLock("editor", async (held) => (held.held ? 1 : 0));
  console.log(result);

  const sub = client.subscribe<{ text: string }>("chat:doc-42", (message) => console.log(message.seq, message.payload.text));
  sub.on("resync", ({ since, seq, messages }) => console.log(since, seq, messages.map((m) => m.payload.text)));
  sub.on("subscribed", ({ seq, recovered }) => console.log(seq, recovered === true));
  sub.on("reset", ({ channel, seq, previousSeq }) => console.log(channel, seq, previousSeq ?? "none"));
  await sub.ready;
  console.log(sub.lastSeq, sub.status);
  const ack = await client.publish("chat:doc-42", { text: "hi" });
  console.log(ack.seq, ack.id);
  await sub.unsubscribe();

  try {
    await client.join("");
  } catch (error) {
    if (error instanceof RosterError && error.code === "INVALID_PAYLOAD") console.log(error.message, error.fromServer);
  }

  // The types are not `any`: these must be errors.
  // @ts-expect-error x is a number
  await room.setState({ x: "left" });
  // @ts-expect-error no such room event
  room.on("joined", () => {});
  // @ts-expect-error metadata values are strings
  await doc.set([{ key: "n", value: 1 }]);
  // @ts-expect-error unknown transport
  connect("http://localhost:3000", { transport: "sse" });

  const stats: Stats = client.getStats();
  console.log(stats.queueSize, stats.dropped, stats.reconnects, stats.lastAckLatencyMs);
  await room.leave();
  await client.close();
}
