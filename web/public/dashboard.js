// The operator dashboard (served at `/dashboard`): what a running hub holds, from its admin
// API (every request carries `Authorization: Bearer <ROSTER_ADMIN_TOKEN>`, entered once and
// kept in this tab's session storage).
//   - /admin/stats every second: the "Now" tiles and the charts (rates are deltas of the
//     cumulative counters between two polls), the last 5 minutes;
//   - /admin/nodes and /admin/rooms every 2 s, the chosen room (/admin/rooms/{id}) too;
//   - /admin/components every 5 s and after each swap or rollback.
// Lists are updated in place (keyed rows), so focus and a chosen file survive the polls.

import uPlot from "/assets/vendor/uPlot.esm.js";
import { ServerErrorCodes } from "/sdk/errors.js";

const TOKEN_KEY = "roster.admin.token";
const POLL_MS = 1000;
/** Points kept per chart: 5 minutes at one poll a second. */
const WINDOW_POINTS = 300;
/** The server's error codes, from the SDK (one list for both). */
const CODES = ServerErrorCodes;
const SLOTS = ["presence", "metadata", "reaper", "policy"];
/** Twelve colours that stay apart on light and dark backgrounds. */
const COLORS = ["#2f6fdb", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#0c8599", "#c2255c", "#5c940d", "#7048e8", "#a61e4d", "#1098ad", "#868e96"];

const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat();
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

// ---------------------------------------------------------------- the admin API

/** The token was refused (401/403): the dashboard asks for another. */
class TokenRefused extends Error {}

/** The API refused a request; `message` is the server's own text. */
class ApiRefused extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let token = null;

function readToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function keepToken(value) {
  try {
    if (value === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    // Storage off: the token lives until the page is closed.
  }
}

async function api(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    cache: "no-store",
    headers: { ...init.headers, Authorization: `Bearer ${token}` },
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: reported below with the status.
  }
  const message = body?.error?.message ?? `HTTP ${response.status} ${response.statusText}`;
  if (response.status === 401 || response.status === 403) throw new TokenRefused(message);
  if (!response.ok || body?.ok !== true) throw new ApiRefused(response.status, body?.error?.code, message);
  return body;
}

// ---------------------------------------------------------------- sign in / out

/** Shows the token form; `why` says what went wrong with the last token, if anything. */
function showLogin(why) {
  stopPolling();
  $("board").hidden = true;
  $("summary").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why ?? "";
  $("login-token").focus();
}

/** The token was refused (401/403): forget it and ask again, with the server's reason. */
function refused(error) {
  token = null;
  keepToken(null);
  showLogin(`Refused: ${error.message}. Check the token and try again.`);
}

async function signIn(candidate) {
  token = candidate;
  try {
    const stats = await api("/admin/stats");
    keepToken(candidate);
    $("login").hidden = true;
    $("login-error").textContent = "";
    $("board").hidden = false;
    $("summary").hidden = false;
    $("sign-out").hidden = false;
    showProblem("");
    startCharts();
    onStats(stats);
    startPolling();
  } catch (error) {
    if (error instanceof TokenRefused) {
      refused(error);
    } else {
      // The hub is down or unreachable: the token may be right; ask again to retry.
      token = null;
      showLogin(`The hub did not answer (${error.message}). Try again in a moment.`);
    }
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const candidate = $("login-token").value.trim();
  if (!candidate) return;
  $("login-token").value = "";
  signIn(candidate);
});

$("sign-out").addEventListener("click", () => {
  token = null;
  keepToken(null);
  showLogin();
});

function showProblem(text) {
  $("problem").textContent = text;
  $("problem").hidden = !text;
}

// ---------------------------------------------------------------- polling

let timer = null;
let tick = 0;
let running = false;

function startPolling() {
  stopPolling();
  running = true;
  tick = 0;
  Promise.all([refreshSlow(), refreshComponents()]).catch(pollFailed);
  timer = setTimeout(poll, POLL_MS);
}

/** A failed read: a refused token signs out; anything else is shown until a poll works. */
function pollFailed(error) {
  if (!running) return;
  if (error instanceof TokenRefused) refused(error);
  else showProblem(`Cannot read the hub: ${error.message}. Retrying every second.`);
}

function stopPolling() {
  running = false;
  clearTimeout(timer);
}

async function poll() {
  if (!running) return;
  tick++;
  const started = performance.now();
  const work = [api("/admin/stats").then(onStats)];
  if (tick % 2 === 0) work.push(refreshSlow());
  if (tick % 5 === 0) work.push(refreshComponents());
  const results = await Promise.allSettled(work);
  if (!running) return;
  const failure = results.find((result) => result.status === "rejected")?.reason;
  if (failure) pollFailed(failure);
  else showProblem("");
  if (!running) return;
  timer = setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
}

function refreshSlow() {
  const work = [api("/admin/nodes").then(renderNodes), api("/admin/rooms").then(renderRooms)];
  if (selectedRoom !== null) work.push(refreshRoom());
  return Promise.all(work);
}

// ---------------------------------------------------------------- stats: tiles and charts

function formatDuration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function formatUs(us) {
  if (typeof us !== "number") return "–";
  return us >= 1000 ? `${decimal.format(us / 1000)} ms` : `${number.format(us)} µs`;
}

/** Per-second rate of a cumulative counter; a counter that went back (a restart) counts from 0. */
function rate(now, before, seconds) {
  if (typeof now !== "number" || typeof before !== "number" || seconds <= 0) return null;
  return Math.max(0, now >= before ? now - before : now) / seconds;
}

const CHARTS = [
  {
    id: "sockets",
    title: "Sockets and rooms",
    series: ["sockets", "rooms"],
    values: (s) => [s.sockets, s.rooms],
  },
  {
    id: "acks",
    title: "Heartbeat acks per second",
    series: ["acks/s", "component calls/s"],
    values: (s, p, dt) => [rate(s.heartbeats?.beats, p?.heartbeats?.beats, dt), rate(s.heartbeats?.calls, p?.heartbeats?.calls, dt)],
  },
  {
    id: "latency",
    title: "Request latency, ms (last 5 s)",
    series: ["p50", "p90", "p99"],
    values: (s) => {
      const l = s.latency ?? {};
      const ms = (us) => (l.count > 0 && typeof us === "number" ? us / 1000 : null);
      return [ms(l.p50Us), ms(l.p90Us), ms(l.p99Us)];
    },
  },
  {
    id: "errors",
    title: "Errors per second, by code",
    // All codes together, then one line per code that has happened since the hub started
    // (twelve empty lines would only hide the ones that matter).
    series: (s) => ["all codes", ...CODES.filter((code) => (s.requests?.errors?.[code] ?? 0) > 0)],
    values: (s, p, dt, labels) => {
      const count = (stats, code) => stats?.requests?.errors?.[code] ?? 0;
      const total = (stats) => CODES.reduce((sum, code) => sum + count(stats, code), 0);
      return labels.map((label) => (label === "all codes" ? rate(total(s), total(p), dt) : rate(count(s, label), count(p, label), dt)));
    },
  },
  {
    id: "failures",
    title: "Component failures per second",
    series: SLOTS,
    values: (s, p, dt) =>
      SLOTS.map((slot) => {
        const now = s.components?.find((c) => c.slot === slot);
        const before = p?.components?.find((c) => c.slot === slot);
        if (!now || !before || dt <= 0) return null;
        // Every version's failures since the node started: right across swaps and rollbacks.
        return rate(now.totalFailures, before.totalFailures, dt);
      }),
  },
];

/** id -> {chart, data, figure, now} */
const charts = new Map();
let previousStats = null;
let previousAt = 0;

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function seriesOptions(label, index) {
  return { label, stroke: COLORS[index % COLORS.length], width: 2, spanGaps: false, points: { size: 4 } };
}

function startCharts() {
  if (charts.size > 0) return;
  const grid = $("chart-grid");
  const text = cssColor("--muted");
  const line = cssColor("--line");
  for (const spec of CHARTS) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.id = `chart-${spec.id}`;
    figure.dataset.points = "0";
    const caption = document.createElement("figcaption");
    const title = document.createElement("span");
    title.className = "chart-title";
    title.textContent = spec.title;
    const now = document.createElement("span");
    now.className = "chart-now";
    caption.append(title, now);
    const plot = document.createElement("div");
    plot.className = "chart-plot";
    plot.setAttribute("role", "img");
    plot.setAttribute("aria-label", `${spec.title}, chart of the last 5 minutes`);
    figure.append(caption, plot);
    grid.append(figure);
    const labels = typeof spec.series === "function" ? spec.series({}) : [...spec.series];
    const data = [[], ...labels.map(() => [])];
    const chart = new uPlot(
      {
        width: Math.max(200, plot.clientWidth),
        height: 170,
        legend: { show: true, live: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          // The data's own span (up to the 5-minute window), but at least 30 s, so the first
          // seconds do not get sub-second ticks. From the data itself: uPlot widens a single
          // point's range by 86400 / ms units, which with seconds is years.
          x: {
            time: true,
            range: (u, min, max) => {
              const first = u.data[0][0] ?? min;
              const last = u.data[0].at(-1) ?? max;
              return [first, Math.max(last, first + 30)];
            },
          },
          y: { range: (u, min, max) => [0, Math.max(1, (max ?? 0) * 1.1)] },
        },
        axes: [
          { stroke: text, grid: { stroke: line, width: 1 }, ticks: { stroke: line } },
          { stroke: text, grid: { stroke: line, width: 1 }, ticks: { stroke: line }, size: 48 },
        ],
        series: [{ label: "time" }, ...labels.map((label, i) => seriesOptions(label, i))],
      },
      data,
      plot,
    );
    charts.set(spec.id, { spec, chart, data, figure, now, plot, labels });
  }
  new ResizeObserver(() => {
    for (const { chart, plot } of charts.values()) {
      const width = Math.max(200, plot.clientWidth);
      if (width !== chart.width) chart.setSize({ width, height: 170 });
    }
  }).observe(grid);
}

function onStats(stats) {
  // The hub's clock when it has one: rates are then exact whatever the poll's own delay.
  const at = typeof stats.now === "number" ? stats.now : Date.now();
  const dt = previousStats ? (at - previousAt) / 1000 : 0;
  $("sum-node").textContent = stats.node ?? "–";
  $("sum-store").textContent = stats.store ?? "–";
  $("sum-auth").textContent = stats.auth === "open" ? "open (no tokens)" : (stats.auth ?? "–");
  $("sum-uptime").textContent = typeof stats.uptimeMs === "number" ? formatDuration(stats.uptimeMs) : "–";
  $("now-sockets").textContent = number.format(stats.sockets ?? 0);
  $("now-rooms").textContent = number.format(stats.rooms ?? 0);
  $("now-channels").textContent = number.format(stats.channels ?? 0);
  $("now-requests").textContent = number.format(stats.requests?.total ?? 0);
  const errors = Object.values(stats.requests?.errors ?? {}).reduce((sum, n) => sum + (Number(n) || 0), 0);
  $("now-errors").textContent = number.format(errors);
  $("now-p99").textContent = stats.latency?.count > 0 ? formatUs(stats.latency.p99Us) : "–";
  const acks = previousStats ? rate(stats.heartbeats?.beats, previousStats.heartbeats?.beats, dt) : null;
  $("now-acks").textContent = acks === null ? "–" : decimal.format(acks);

  const seconds = at / 1000;
  for (const entry of charts.values()) {
    const { spec, chart, data, figure, now } = entry;
    if (typeof spec.series === "function") {
      // New lines (an error code seen for the first time) join with an empty past.
      for (const label of spec.series(stats)) {
        if (entry.labels.includes(label)) continue;
        entry.labels.push(label);
        data.push(data[0].map(() => null));
        chart.addSeries(seriesOptions(label, entry.labels.length - 1), entry.labels.length);
      }
    }
    const values = spec.values(stats, previousStats, dt, entry.labels);
    data[0].push(seconds);
    values.forEach((value, i) => data[i + 1].push(typeof value === "number" && Number.isFinite(value) ? value : null));
    if (data[0].length > WINDOW_POINTS) for (const column of data) column.splice(0, column.length - WINDOW_POINTS);
    chart.setData(data);
    figure.dataset.points = String(data[0].length);
    now.textContent = latestText(spec, entry.labels, values);
  }
  previousStats = stats;
  previousAt = at;
}

/** The newest values, as text beside the chart's title (the chart itself is a picture). */
function latestText(spec, labels, values) {
  const parts = [];
  values.forEach((value, i) => {
    if (typeof value !== "number") return;
    if (spec.id === "errors" || spec.id === "failures") {
      if (value > 0) parts.push(`${labels[i]} ${decimal.format(value)}`);
    } else {
      parts.push(`${labels[i]} ${decimal.format(value)}`);
    }
  });
  if (parts.length === 0) return spec.id === "errors" || spec.id === "failures" ? "none now" : "";
  return parts.join(" · ");
}

// ---------------------------------------------------------------- nodes

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderNodes(body) {
  const now = typeof body.now === "number" ? body.now : Date.now();
  const rows = (body.nodes ?? []).map((node) => {
    const tr = document.createElement("tr");
    tr.dataset.nodeId = node.nodeId;
    const left = typeof node.expiresAt === "number" ? node.expiresAt - now : null;
    tr.append(
      cell(node.nodeId, "mono"),
      cell(left === null ? "–" : left >= 0 ? `${decimal.format(left / 1000)} s` : `expired ${decimal.format(-left / 1000)} s ago`),
      cell(node.self ? "this node" : ""),
    );
    return tr;
  });
  $("nodes-body").replaceChildren(...rows);
}

// ---------------------------------------------------------------- rooms

/** roomId -> <tr>, kept across polls so a focused room button keeps its focus. */
const roomRows = new Map();
let selectedRoom = null;

function renderRooms(body) {
  const rooms = [...(body.rooms ?? [])].sort((a, b) => (a.roomId < b.roomId ? -1 : a.roomId > b.roomId ? 1 : 0));
  const tbody = $("rooms-body");
  const ids = new Set(rooms.map((room) => room.roomId));
  for (const [roomId, tr] of roomRows) {
    if (!ids.has(roomId)) {
      tr.remove();
      roomRows.delete(roomId);
    }
  }
  // Rows stay sorted, so existing ones never move (moving a node would drop its focus).
  let cursor = tbody.firstElementChild;
  for (const room of rooms) {
    let tr = roomRows.get(room.roomId);
    if (!tr) {
      tr = roomRow(room.roomId);
      roomRows.set(room.roomId, tr);
    }
    if (tr !== cursor) tbody.insertBefore(tr, cursor);
    cursor = tr.nextElementSibling;
    const [name, connections, users, sockets] = tr.children;
    connections.textContent = number.format(room.connections ?? 0);
    users.textContent = number.format(room.users ?? 0);
    sockets.textContent = number.format(room.sockets ?? 0);
    name.firstElementChild.setAttribute("aria-current", String(room.roomId === selectedRoom));
  }
  $("rooms-count").textContent = `(${rooms.length})`;
  $("rooms-empty").hidden = rooms.length > 0;
}

function roomRow(roomId) {
  const tr = document.createElement("tr");
  tr.dataset.roomId = roomId;
  const name = document.createElement("th");
  name.scope = "row";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  button.textContent = roomId;
  button.setAttribute("aria-controls", "room");
  button.addEventListener("click", () => selectRoom(roomId));
  name.append(button);
  tr.append(name, cell("", "num"), cell("", "num"), cell("", "num"));
  return tr;
}

function selectRoom(roomId) {
  selectedRoom = roomId;
  for (const [id, tr] of roomRows) tr.firstElementChild.firstElementChild.setAttribute("aria-current", String(id === roomId));
  $("room-heading").textContent = `Room ${roomId}`;
  $("room").hidden = false;
  refreshRoom().catch(pollFailed);
  $("room").focus();
}

async function refreshRoom() {
  const roomId = selectedRoom;
  const body = await api(`/admin/rooms/${encodeURIComponent(roomId)}`);
  if (roomId !== selectedRoom) return;
  const occupancy = body.occupancy ?? {};
  $("room-occupancy").textContent = `${number.format(occupancy.connections ?? 0)} connection(s), ${number.format(occupancy.users ?? 0)} user(s)`;
  const members = (body.members ?? []).map((member) => {
    const tr = document.createElement("tr");
    tr.dataset.connId = member.connId;
    const state = JSON.stringify(member.state ?? {});
    const code = document.createElement("code");
    code.textContent = state.length > 300 ? `${state.slice(0, 300)}…` : state;
    const stateCell = document.createElement("td");
    stateCell.className = "state";
    stateCell.append(code);
    tr.append(cell(member.userId, "mono"), cell(member.connId, "mono"), cell(String(member.epoch ?? ""), "num"), stateCell);
    return tr;
  });
  $("room-members").replaceChildren(...(members.length ? members : [emptyRow(4, "No members.")]));
  const metadata = body.metadata ?? {};
  $("room-major").textContent = typeof metadata.majorRevision === "number" ? `(major revision ${metadata.majorRevision})` : "";
  const items = (metadata.items ?? []).map((item) => {
    const tr = document.createElement("tr");
    tr.dataset.key = item.key;
    tr.append(
      cell(item.key, "mono"),
      cell(item.value),
      cell(String(item.revision ?? ""), "num"),
      cell(item.authorUid ?? ""),
      cell(typeof item.updated === "number" ? new Date(item.updated).toLocaleString() : ""),
    );
    return tr;
  });
  $("room-metadata").replaceChildren(...(items.length ? items : [emptyRow(5, "No metadata.")]));
}

function emptyRow(columns, text) {
  const tr = document.createElement("tr");
  const td = cell(text, "hint");
  td.colSpan = columns;
  tr.append(td);
  return tr;
}

// ---------------------------------------------------------------- components

/** slot -> the card's live parts, built once so a chosen file survives the polls. */
const cards = new Map();

function short(version) {
  return typeof version === "string" ? version.slice(0, 12) : "–";
}

function buildCard(slot) {
  const article = document.createElement("article");
  article.className = "component";
  article.id = `component-${slot}`;
  article.dataset.slot = slot;
  article.setAttribute("aria-labelledby", `component-${slot}-heading`);
  article.innerHTML = `
    <h3 id="component-${slot}-heading"></h3>
    <dl class="facts">
      <div><dt>Version</dt><dd class="version mono"></dd></div>
      <div><dt>Source</dt><dd class="source"></dd></div>
      <div><dt>Loaded</dt><dd class="loaded"></dd></div>
      <div><dt>Calls</dt><dd class="calls num"></dd></div>
      <div><dt>Failures</dt><dd class="failures num"></dd></div>
      <div><dt>Previous</dt><dd class="previous mono"></dd></div>
      <div><dt>Limits</dt><dd class="limits"></dd></div>
    </dl>
    <h4>Swap history</h4>
    <ol class="history"></ol>
    <form class="swap">
      <label for="upload-${slot}"></label>
      <input id="upload-${slot}" name="component" type="file" accept=".wasm,application/wasm" required>
      <div class="row">
        <button type="submit" class="do-swap">Swap</button>
        <button type="button" class="secondary do-rollback">Roll back</button>
      </div>
    </form>
    <p class="result" role="status"></p>`;
  article.querySelector("h3").textContent = slot;
  article.querySelector("label").textContent = `New ${slot} component (.wasm)`;
  const parts = {
    article,
    version: article.querySelector(".version"),
    source: article.querySelector(".source"),
    loaded: article.querySelector(".loaded"),
    calls: article.querySelector(".calls"),
    failures: article.querySelector(".failures"),
    previous: article.querySelector(".previous"),
    limits: article.querySelector(".limits"),
    history: article.querySelector(".history"),
    form: article.querySelector("form"),
    file: article.querySelector("input[type=file]"),
    swap: article.querySelector(".do-swap"),
    rollback: article.querySelector(".do-rollback"),
    result: article.querySelector(".result"),
    hasPrevious: false,
  };
  parts.form.addEventListener("submit", (event) => {
    event.preventDefault();
    swap(slot, parts);
  });
  parts.rollback.addEventListener("click", () => rollback(slot, parts));
  return parts;
}

async function refreshComponents() {
  const body = await api("/admin/components");
  const list = $("component-list");
  for (const info of body.components ?? []) {
    let parts = cards.get(info.slot);
    if (!parts) {
      parts = buildCard(info.slot);
      cards.set(info.slot, parts);
      list.append(parts.article);
    }
    const current = info.current ?? {};
    parts.version.textContent = short(current.version);
    parts.version.title = current.version ?? "";
    parts.article.dataset.version = current.version ?? "";
    parts.source.textContent = current.source ?? "–";
    parts.loaded.textContent = typeof current.loadedAt === "number" ? new Date(current.loadedAt).toLocaleString() : "–";
    parts.calls.textContent = number.format(current.calls ?? 0);
    parts.failures.textContent = number.format(current.failures ?? 0);
    parts.previous.textContent = info.previous ? short(info.previous.version) : "none";
    parts.previous.title = info.previous?.version ?? "";
    const limits = info.limits;
    parts.limits.textContent = limits ? `${limits.deadlineMs} ms, ${limits.memoryMib} MiB, ${limits.instances} instances` : "–";
    parts.hasPrevious = Boolean(info.previous);
    if (!parts.busy) parts.rollback.disabled = !parts.hasPrevious;
    const events = [...(info.events ?? [])].reverse();
    const items = events.map((event) => {
      const li = document.createElement("li");
      li.dataset.kind = event.kind;
      const time = document.createElement("time");
      time.dateTime = new Date(event.at).toISOString();
      time.textContent = new Date(event.at).toLocaleString();
      const what = document.createElement("span");
      what.textContent = ` ${event.kind}: ${short(event.from)} → ${short(event.to)}`;
      li.append(time, what);
      if (event.detail) {
        const detail = document.createElement("span");
        detail.className = "hint";
        detail.textContent = ` (${event.detail})`;
        li.append(detail);
      }
      return li;
    });
    if (items.length === 0) {
      const li = document.createElement("li");
      li.className = "hint";
      li.textContent = "No swaps since the hub started.";
      items.push(li);
    }
    parts.history.replaceChildren(...items);
  }
}

function setBusy(parts, busy) {
  parts.busy = busy;
  parts.swap.disabled = busy;
  parts.rollback.disabled = busy || !parts.hasPrevious;
}

async function swap(slot, parts) {
  const file = parts.file.files?.[0];
  if (!file) {
    parts.result.textContent = "Choose a .wasm file first.";
    return;
  }
  setBusy(parts, true);
  parts.result.textContent = `Swapping ${slot} with ${file.name}…`;
  parts.result.dataset.outcome = "busy";
  try {
    const done = await api(`/admin/components/${encodeURIComponent(slot)}`, {
      method: "PUT",
      headers: { "Content-Type": "application/wasm" },
      body: file,
    });
    parts.result.textContent = `Swapped: ${slot} now runs ${short(done.version)} (was ${short(done.replaced)}), in ${decimal.format(done.swapMs ?? 0)} ms.`;
    parts.result.dataset.outcome = "ok";
    parts.form.reset();
  } catch (error) {
    parts.result.textContent = `Swap refused: ${error.message}`;
    parts.result.dataset.outcome = "refused";
    if (error instanceof TokenRefused) refused(error);
  } finally {
    setBusy(parts, false);
  }
  await refreshComponents().catch(() => {});
}

async function rollback(slot, parts) {
  setBusy(parts, true);
  parts.result.textContent = `Rolling ${slot} back…`;
  parts.result.dataset.outcome = "busy";
  try {
    const done = await api(`/admin/components/${encodeURIComponent(slot)}/rollback`, { method: "POST" });
    parts.result.textContent = `Rolled back: ${slot} now runs ${short(done.version)} (was ${short(done.replaced)}).`;
    parts.result.dataset.outcome = "ok";
  } catch (error) {
    parts.result.textContent = `Rollback refused: ${error.message}`;
    parts.result.dataset.outcome = "refused";
    if (error instanceof TokenRefused) refused(error);
  } finally {
    setBusy(parts, false);
  }
  await refreshComponents().catch(() => {});
}

// ---------------------------------------------------------------- start

const stored = readToken();
if (stored) signIn(stored);
else showLogin();
