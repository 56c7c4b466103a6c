// The live demo (served at `/`): one room, from `?room=` (default `lobby`), shown four ways,
// all through the JS SDK (served at /sdk/):
//   - who is here: each tab is a user with a name and a status (its presence state);
//   - cursors: every other tab's pointer in a shared area (presence state patches, at most
//     ten a second, the last position always sent);
//   - chat: message channel = the room id, subscribed from seq 0 so a reload shows history;
//   - topic: metadata channel {room, <roomId>} key `topic`, written with compare-and-set: a
//     save carries the revision the user started from, and a conflict is shown, never
//     overwritten silently.
// With auth on (`/readyz` says "jwt") the token comes from `#token=...` or a form.

import { connect, RosterError } from "/sdk/index.js";

const ROOM_ID = new URLSearchParams(location.search).get("room") || "lobby";
const TOPIC_KEY = "topic";
/** Cursor patches per second at most: enough to look live, well under the hub's rate limit. */
const CURSOR_INTERVAL_MS = 100;
/** Chat lines kept on screen (the hub's history holds 100 by default). */
const MAX_MESSAGES = 200;
const STATUSES = { available: "Available", busy: "Busy", away: "Away" };

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $("connection"),
  notice: $("notice"),
  auth: $("auth"),
  authWhy: $("auth-why"),
  authForm: $("auth-form"),
  authToken: $("auth-token"),
  app: $("app"),
  name: $("name"),
  status: $("status"),
  youForm: $("you-form"),
  members: $("members"),
  count: $("count"),
  topicText: $("topic-text"),
  topicBy: $("topic-by"),
  topicForm: $("topic-form"),
  topicInput: $("topic-input"),
  topicSave: $("topic-save"),
  topicStatus: $("topic-status"),
  conflict: $("topic-conflict"),
  conflictText: $("topic-conflict-text"),
  retry: $("topic-retry"),
  theirs: $("topic-theirs"),
  area: $("area"),
  messages: $("messages"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  chatSend: $("chat-send"),
};

// ---------------------------------------------------------------- identity (per tab)

/** sessionStorage is per tab, which makes each tab its own user; it may be unavailable. */
const storage = {
  get(key) {
    try {
      return sessionStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, value);
    } catch {
      // Private mode or storage off: this tab just forgets on reload.
    }
  },
};

const ADJECTIVES = ["Brave", "Calm", "Clever", "Eager", "Gentle", "Happy", "Jolly", "Kind", "Lively", "Lucky", "Merry", "Nimble", "Proud", "Quick", "Quiet", "Swift", "Witty", "Bold"];
const ANIMALS = ["Otter", "Fox", "Heron", "Lynx", "Panda", "Robin", "Seal", "Tiger", "Wombat", "Yak", "Koala", "Falcon", "Badger", "Beaver", "Crane", "Moose", "Owl", "Hare"];

function randomInt(n) {
  return crypto.getRandomValues(new Uint32Array(1))[0] % n;
}

function identity() {
  let userId = storage.get("roster.demo.user");
  if (!userId) {
    userId = `guest-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
    storage.set("roster.demo.user", userId);
  }
  let name = storage.get("roster.demo.name");
  if (!name) {
    name = `${ADJECTIVES[randomInt(ADJECTIVES.length)]} ${ANIMALS[randomInt(ANIMALS.length)]}`;
    storage.set("roster.demo.name", name);
  }
  const status = STATUSES[storage.get("roster.demo.status")] ? storage.get("roster.demo.status") : "available";
  return { userId, name, status };
}

/** A stable colour per user, so a person's avatar, cursor and chat lines match. */
function hue(userId) {
  let hash = 0;
  for (const char of String(userId)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? words[0][0] + words[1][0] : (words[0] ?? "?").slice(0, 2);
  return letters.toUpperCase();
}

/** A member's display name: its state's `name` if it is a string, else its user id. */
function nameOf(member) {
  const name = member?.state?.name;
  return typeof name === "string" && name.trim() ? name.trim().slice(0, 40) : String(member?.userId ?? "someone");
}

function avatar(userId, name) {
  const span = document.createElement("span");
  span.className = "avatar";
  span.style.setProperty("--hue", hue(userId));
  span.textContent = initials(name);
  span.setAttribute("aria-hidden", "true");
  return span;
}

// ---------------------------------------------------------------- small helpers

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

function describe(error) {
  if (error instanceof RosterError) return `${error.code}: ${error.message}`;
  return String(error?.message ?? error);
}

/** Calls `fn` at most once per `ms`; the last call in a burst always runs (trailing). */
function throttle(fn, ms) {
  let last = -Infinity;
  let timer = null;
  let latest = null;
  const run = () => {
    timer = null;
    last = performance.now();
    const args = latest;
    latest = null;
    fn(...args);
  };
  return (...args) => {
    latest = args;
    if (timer) return;
    const wait = last + ms - performance.now();
    if (wait <= 0) run();
    else timer = setTimeout(run, wait);
  };
}

/** Whether the hub verifies tokens (`/readyz` says "jwt"); an unreachable hub counts as open. */
async function authMode() {
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const body = await response.json();
    return body?.auth === "jwt" ? "jwt" : "open";
  } catch {
    return "open";
  }
}

/** The token from `#token=...` (then dropped from the address bar), else this tab's last one. */
function takeToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    storage.set("roster.demo.token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
    return fromHash;
  }
  return storage.get("roster.demo.token");
}

function askToken(why) {
  if (why) ui.authWhy.textContent = why;
  ui.auth.hidden = false;
  return new Promise((resolve) => {
    ui.authForm.onsubmit = (event) => {
      event.preventDefault();
      const token = ui.authToken.value.trim();
      if (!token) return;
      storage.set("roster.demo.token", token);
      ui.authToken.value = "";
      ui.auth.hidden = true;
      resolve(token);
    };
    ui.authToken.focus();
  });
}

// ---------------------------------------------------------------- the page

const me = identity();
let client = null;
let room = null;
let token = null;
let mode = "open";

const STATUS_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
};

function setConnection(status) {
  ui.connection.dataset.status = status;
  ui.connection.textContent = STATUS_TEXT[status] ?? status;
}

function setControls(enabled) {
  for (const element of [ui.topicInput, ui.topicSave, ui.chatInput, ui.chatSend]) element.disabled = !enabled;
}

async function start() {
  document.title = `${ROOM_ID} · Roster live demo`;
  $("room-name").textContent = ROOM_ID;
  $("share-link").href = location.pathname + location.search;
  ui.name.value = me.name;
  ui.status.value = me.status;
  setConnection("connecting");

  mode = await authMode();
  if (mode === "jwt") {
    token = takeToken() ?? (await askToken());
  }
  open();
}

/** Connects, joins the room, subscribes to the chat and reads the topic. */
function open() {
  const current = connect(location.origin, {
    transport: "ws",
    // Open hub: we are whoever we say. With auth the token's `sub` is the user.
    userId: mode === "jwt" ? undefined : me.userId,
    token: mode === "jwt" ? () => token : undefined,
    // A browser cannot tell a refused token from a network error: retry calmly.
    reconnect: { baseMs: 500, capMs: 10000 },
  });
  client = current;
  current.on("status", ({ status }) => {
    if (client !== current) return; // a client being replaced says nothing
    setConnection(status);
    if (status === "connected") {
      showNotice("");
      ui.auth.hidden = true;
      // Metadata events missed while away are not replayed: read the topic again.
      if (room) loadTopic();
    }
  });
  current.on("error", (error) => showNotice(describe(error)));
  current.on("connect_error", (error) => {
    if (mode === "jwt") {
      ui.authWhy.textContent = `Could not connect (${describe(error)}). The token may be wrong or expired: paste another, or wait while we retry.`;
      ui.auth.hidden = false;
      ui.authForm.onsubmit = (event) => {
        event.preventDefault();
        const next = ui.authToken.value.trim();
        if (!next) return;
        token = next;
        storage.set("roster.demo.token", token);
        ui.authToken.value = "";
        ui.auth.hidden = true;
        restart();
      };
    }
  });
  current.on("metadata", onMetadata);

  const subscription = current.subscribe(ROOM_ID, addMessage, { since: 0 });
  subscription.on("resync", ({ messages }) => {
    // History no longer reaches what we saw: show what it still holds.
    ui.messages.replaceChildren();
    for (const message of messages) addMessage(message);
  });
  subscription.ready.catch((error) => showNotice(`Chat unavailable: ${describe(error)}`));

  current
    .join(ROOM_ID, { name: me.name, status: me.status, cursor: null })
    .then((joined) => {
      if (client !== current) return; // replaced meanwhile (a new token)
      room = joined;
      room.on("change", ({ changes }) => applyChanges(changes));
      room.on("rejoined", () => renderAll());
      renderAll();
      setControls(true);
      loadTopic();
    })
    .catch((error) => {
      if (error instanceof RosterError && error.code === "CLOSED") return;
      showNotice(`Could not join ${ROOM_ID}: ${describe(error)}`);
    });
}

async function restart() {
  const old = client;
  client = null;
  room = null;
  metadata = null;
  major = -1;
  setControls(false);
  ui.members.replaceChildren();
  ui.messages.replaceChildren();
  clearCursors();
  await old?.close();
  open();
}

// ---------------------------------------------------------------- who is here

/** connId -> <li> */
const memberItems = new Map();

function selfConnId() {
  return room?.self?.connId;
}

function renderAll() {
  ui.members.replaceChildren();
  memberItems.clear();
  clearCursors();
  const members = room.members();
  for (const member of members.values()) upsertMember(member);
  updateCount();
}

function applyChanges(changes) {
  for (const change of changes) {
    if (change.type === "leave") {
      memberItems.get(change.member.connId)?.remove();
      memberItems.delete(change.member.connId);
      removeCursor(change.member.connId);
    } else {
      upsertMember(change.member);
    }
  }
  updateCount();
}

function updateCount() {
  const { users } = room.count();
  ui.count.textContent = `(${users})`;
}

function upsertMember(member) {
  const name = nameOf(member);
  const status = STATUSES[member.state?.status] ? member.state.status : "available";
  const self = member.connId === selfConnId();
  let li = memberItems.get(member.connId);
  const key = `${name}\u0000${status}\u0000${self}`;
  if (!li) {
    li = document.createElement("li");
    li.className = "member";
    li.dataset.connId = member.connId;
    li.dataset.userId = member.userId;
    memberItems.set(member.connId, li);
    if (self) ui.members.prepend(li);
    else ui.members.append(li);
  }
  if (li.dataset.key !== key) {
    li.dataset.key = key;
    li.toggleAttribute("data-self", self);
    const label = document.createElement("span");
    label.className = "member-name";
    label.textContent = self ? `${name} (you)` : name;
    const badge = document.createElement("span");
    badge.className = "member-status";
    badge.dataset.status = status;
    badge.textContent = STATUSES[status];
    li.replaceChildren(avatar(member.userId, name), label, badge);
  }
  if (!self) drawCursor(member);
}

// Own name and status: presence state patches.
ui.youForm.addEventListener("submit", (event) => {
  event.preventDefault();
  saveName();
});
ui.name.addEventListener("change", saveName);
ui.status.addEventListener("change", () => {
  const status = STATUSES[ui.status.value] ? ui.status.value : "available";
  storage.set("roster.demo.status", status);
  patch({ status });
});

function saveName() {
  const name = ui.name.value.trim().slice(0, 40);
  if (!name) {
    ui.name.value = me.name;
    return;
  }
  me.name = name;
  storage.set("roster.demo.name", name);
  patch({ name });
}

function patch(state) {
  if (!room) return;
  room.setState(state).catch((error) => {
    if (error instanceof RosterError && error.code === "CLOSED") return;
    showNotice(`Could not update your state: ${describe(error)}`);
  });
}

// ---------------------------------------------------------------- cursors

/** connId -> cursor element in the area */
const cursors = new Map();

function clearCursors() {
  for (const element of cursors.values()) element.remove();
  cursors.clear();
}

function removeCursor(connId) {
  cursors.get(connId)?.remove();
  cursors.delete(connId);
}

function validFraction(value) {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 && value <= 1;
}

function drawCursor(member) {
  const cursor = member.state?.cursor;
  if (!cursor || !validFraction(cursor.x) || !validFraction(cursor.y)) {
    removeCursor(member.connId);
    return;
  }
  let element = cursors.get(member.connId);
  if (!element) {
    element = document.createElement("div");
    element.className = "cursor";
    element.setAttribute("aria-hidden", "true");
    element.dataset.connId = member.connId;
    element.dataset.userId = member.userId;
    element.style.setProperty("--hue", hue(member.userId));
    const label = document.createElement("span");
    element.append(label);
    ui.area.append(element);
    cursors.set(member.connId, element);
  }
  element.firstChild.textContent = nameOf(member);
  element.style.left = `${cursor.x * 100}%`;
  element.style.top = `${cursor.y * 100}%`;
  element.dataset.x = String(cursor.x);
  element.dataset.y = String(cursor.y);
}

const sendCursor = throttle((cursor) => patch({ cursor }), CURSOR_INTERVAL_MS);
/** Our own position, for the arrow keys. */
let myCursor = { x: 0.5, y: 0.5 };

function round(value) {
  return Math.round(Math.min(1, Math.max(0, value)) * 1000) / 1000;
}

ui.area.addEventListener("pointermove", (event) => {
  const box = ui.area.getBoundingClientRect();
  if (box.width === 0 || box.height === 0) return;
  myCursor = { x: round((event.clientX - box.left) / box.width), y: round((event.clientY - box.top) / box.height) };
  sendCursor(myCursor);
});
ui.area.addEventListener("pointerleave", () => sendCursor(null));
ui.area.addEventListener("keydown", (event) => {
  const step = event.shiftKey ? 0.1 : 0.02;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  const move = moves[event.key];
  if (!move) return;
  event.preventDefault();
  myCursor = { x: round(myCursor.x + move[0]), y: round(myCursor.y + move[1]) };
  sendCursor(myCursor);
});
ui.area.addEventListener("blur", () => sendCursor(null));

// ---------------------------------------------------------------- chat

/** The id of the message being composed: a retry after a failure is not posted twice. */
let draftId = null;

function addMessage(message) {
  const payload = message.payload;
  if (!payload || typeof payload !== "object" || typeof payload.text !== "string") return;
  const from = String(message.from ?? "server");
  const name = typeof payload.name === "string" && payload.name.trim() ? payload.name.trim().slice(0, 40) : from;
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.seq = String(message.seq);
  const who = document.createElement("span");
  who.className = "message-from";
  who.style.setProperty("--hue", hue(from));
  who.textContent = name;
  const time = document.createElement("time");
  const at = new Date(typeof message.ts === "number" ? message.ts : Date.now());
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const text = document.createElement("span");
  text.className = "message-text";
  text.textContent = payload.text.slice(0, 500);
  li.append(who, " ", time, text);
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  while (list.childElementCount > MAX_MESSAGES) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

ui.chatInput.addEventListener("input", () => {
  draftId = null;
});
ui.chatForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = ui.chatInput.value.trim();
  if (!text || !client) return;
  draftId ??= crypto.getRandomValues(new Uint32Array(4)).join("-");
  ui.chatSend.disabled = true;
  try {
    await client.publish(ROOM_ID, { text, name: me.name }, { id: `${me.userId}:${draftId}` });
    ui.chatInput.value = "";
    draftId = null;
  } catch (error) {
    showNotice(`Message not sent: ${describe(error)}`);
  } finally {
    ui.chatSend.disabled = false;
    ui.chatInput.focus();
  }
});

// ---------------------------------------------------------------- topic (compare-and-set)

let metadata = null;
/** The topic as last read: {value, revision, authorUid?, updated?}; revision 0 = none yet. */
let topic = { value: "", revision: 0 };
/** The other items of the channel, kept for the first `set` (which replaces them all). */
let otherItems = [];
/** The channel's majorRevision as last seen: older events (a race with an ack) are ignored. */
let major = -1;
/** While the user edits: the revision the edit started from; null when not editing. */
let editBase = null;
/** The revision of the other writer's topic that the conflict notice shows. */
let conflictBase = null;

function channel() {
  metadata ??= client.metadata("room", ROOM_ID);
  return metadata;
}

async function loadTopic() {
  try {
    const { items, majorRevision } = await channel().get();
    // A fresh read wins even if older: the store may have started over (an embedded hub restarted).
    major = -1;
    setItems(items, majorRevision);
  } catch (error) {
    showNotice(`Could not read the topic: ${describe(error)}`);
  }
}

/** Takes the channel's whole item set (a read, an ack, a `set` event) unless it is older than what we hold. */
function setItems(items, majorRevision) {
  if (typeof majorRevision === "number") {
    if (majorRevision < major) return;
    major = majorRevision;
  }
  const item = items.find((i) => i.key === TOPIC_KEY);
  otherItems = items.filter((i) => i.key !== TOPIC_KEY);
  showTopic(item ? { ...item } : { value: "", revision: 0 });
}

function authorName(uid) {
  if (!uid) return "";
  for (const member of room?.members().values() ?? []) {
    if (member.userId === uid) return nameOf(member);
  }
  return uid;
}

function showTopic(next) {
  topic = next;
  ui.topicText.textContent = topic.value ? `“${topic.value}”` : "No topic yet.";
  ui.topicBy.textContent = topic.value && topic.authorUid ? `set by ${authorName(topic.authorUid)}` : "";
  // Nobody editing here: the field follows the topic, and a save starts from this revision.
  if (editBase === null) ui.topicInput.value = topic.value;
}

function onMetadata(event) {
  if (event?.channelType !== "room" || event.channelName !== ROOM_ID || !Array.isArray(event.items)) return;
  if (typeof event.majorRevision === "number") {
    if (event.majorRevision <= major) return; // already applied (our own ack) or older
    major = event.majorRevision;
  }
  if (event.operation === "set") {
    setItems(event.items);
  } else if (event.operation === "update") {
    const item = event.items.find((i) => i.key === TOPIC_KEY);
    if (item) showTopic({ ...topic, ...item });
  } else if (event.operation === "remove") {
    if (event.items.length === 0 || event.items.some((i) => i.key === TOPIC_KEY)) showTopic({ value: "", revision: 0 });
  }
}

ui.topicInput.addEventListener("input", () => {
  // The edit starts from the topic the user saw: that revision goes with the save.
  editBase ??= topic.revision;
});

ui.topicForm.addEventListener("submit", (event) => {
  event.preventDefault();
  saveTopic(editBase ?? topic.revision);
});
// Retry from the revision the notice showed: a newer write meanwhile is another conflict.
ui.retry.addEventListener("click", () => saveTopic(conflictBase ?? topic.revision));
ui.theirs.addEventListener("click", () => {
  editBase = null;
  conflictBase = null;
  ui.conflict.hidden = true;
  ui.topicInput.value = topic.value;
  ui.topicStatus.textContent = "Kept their topic.";
  ui.topicInput.focus();
});

async function saveTopic(revision) {
  const value = ui.topicInput.value.trim().slice(0, 200);
  if (!client || value === "") return;
  ui.topicSave.disabled = ui.retry.disabled = true;
  ui.topicStatus.textContent = "Saving…";
  const options = { addUserId: true, addTimestamp: true };
  try {
    let result;
    if (revision > 0) {
      result = await channel().update([{ key: TOPIC_KEY, value, revision }], options);
    } else {
      // No topic yet: `update` needs an existing key, so create it with `set`, which
      // replaces the item set: keep the other items, each fenced by its revision too.
      const items = otherItems.map(({ key, value: v, revision: r }) => ({ key, value: v, revision: r }));
      result = await channel().set([...items, { key: TOPIC_KEY, value, revision: 0 }], options);
    }
    editBase = null;
    conflictBase = null;
    ui.conflict.hidden = true;
    setItems(result.items, result.majorRevision);
    ui.topicStatus.textContent = "Topic saved.";
  } catch (error) {
    if (error instanceof RosterError && error.code === "METADATA_CONFLICT") {
      await showConflict(value);
    } else {
      ui.topicStatus.textContent = "";
      showNotice(`Topic not saved: ${describe(error)}`);
    }
  } finally {
    ui.topicSave.disabled = ui.retry.disabled = false;
  }
}

/** Someone saved first: show what they wrote; keep the user's text until they choose. */
async function showConflict(mine) {
  try {
    const { items, majorRevision } = await channel().get();
    setItems(items, majorRevision);
  } catch (error) {
    showNotice(`Could not read the topic: ${describe(error)}`);
  }
  conflictBase = topic.revision;
  const who = authorName(topic.authorUid) || "Someone";
  ui.conflictText.textContent = topic.value
    ? `Conflict: ${who} changed the topic to “${topic.value}” while you were editing. Your text “${mine}” was not saved.`
    : `Conflict: the topic changed while you were editing. Your text “${mine}” was not saved.`;
  ui.conflict.hidden = false;
  ui.topicStatus.textContent = "";
  ui.topicInput.value = mine;
}

// ---------------------------------------------------------------- leaving

// Closing the tab says goodbye (the others see us leave at once, not after the resume grace).
addEventListener("pagehide", () => {
  client?.close();
});
// Back from the back/forward cache: the closed client cannot come back; start a new one.
addEventListener("pageshow", (event) => {
  if (event.persisted) restart();
});

start().catch((error) => showNotice(describe(error)));
