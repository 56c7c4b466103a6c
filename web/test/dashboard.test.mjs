// The dashboard (`/dashboard`) in a real headless Chromium against the real roster binary:
// a wrong admin token is refused; the room two demo pages are in is listed with its
// occupancy, members and metadata; component versions, a swap by upload, a refused upload
// and a rollback; charts that draw; phone width; keyboard.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import {
  ADMIN_TOKEN,
  adminGet,
  checkedPage,
  horizontalOverflow,
  launchBrowser,
  pageWeight,
  screenshot,
  sha256,
  shown,
  startRoster,
  tabOrder,
  waitFor,
  wasmDir,
} from "./harness.mjs";

let server;
let browser;
/** The two demo pages that stay open through the dashboard tests. */
const demos = [];

before(async () => {
  [server, browser] = await Promise.all([startRoster(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A 401 from the admin API: what a wrong token provokes on purpose. */
const refusedToken = (problem) =>
  (problem.kind === "http" && problem.status === 401 && problem.url.includes("/admin/")) ||
  (problem.kind === "console" && /status of 401/.test(problem.text));

async function openDashboard(options = {}) {
  const page = await checkedPage(browser, options);
  await page.goto(`${server.url}/dashboard`);
  return page;
}

async function signIn(page, token = ADMIN_TOKEN) {
  await page.waitForSelector("#login:not([hidden])");
  await page.type("#login-token", token);
  await page.keyboard.press("Enter");
}

async function openDemo(room) {
  const page = await checkedPage(browser);
  await page.goto(`${server.url}/?room=${encodeURIComponent(room)}`);
  await page.waitForSelector('#connection[data-status="connected"]');
  const handle = await page.waitForFunction(() => document.querySelector("#members li[data-self]")?.dataset.userId);
  return { page, userId: await handle.jsonValue() };
}

function text(page, selector) {
  return page.$eval(selector, (el) => el.textContent);
}

/** A wrong token shows the server's refusal and asks again; the right one opens the board and is kept for the tab. */
test("the dashboard refuses a wrong token and keeps the right one", async () => {
  const page = await openDashboard({ allow: refusedToken });
  await signIn(page, "not-the-token");
  await waitFor(async () => (await text(page, "#login-error")).includes("Refused"), "the refusal");
  assert.equal(await shown(page, "#login"), true, "the form is shown again");
  assert.equal(await shown(page, "#board"), false, "nothing is shown without a token");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("roster.admin.token")), null, "a refused token is not kept");
  await screenshot(page, "dashboard-refused");

  await signIn(page);
  await page.waitForSelector("#board:not([hidden])");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("roster.admin.token")), ADMIN_TOKEN);
  // Entered once: a reload goes straight to the board.
  await page.reload();
  await page.waitForSelector("#board:not([hidden])");
  assert.equal(await shown(page, "#login"), false);
  page.assertClean();
  await page.closeAll();
});

/** Two demo pages in a room: the dashboard lists it with occupancy 2, and opening it (keyboard) shows both members and the topic. */
test("the dashboard lists the demo room with its occupancy, members and metadata", async () => {
  demos.push(await openDemo("standup"), await openDemo("standup"));
  // One page sets the topic: the room's metadata.
  const [first] = demos;
  await first.page.click("#topic-input", { clickCount: 3 });
  await first.page.type("#topic-input", "Sprint review");
  await first.page.click("#topic-save");
  await waitFor(async () => (await text(first.page, "#topic-status")).includes("saved"), "the topic");

  const page = await openDashboard();
  await signIn(page);
  const row = '#rooms-body tr[data-room-id="standup"]';
  await page.waitForSelector(row);
  await waitFor(
    () => page.$eval(row, (tr) => [...tr.children].slice(1, 3).map((td) => td.textContent).join(",") === "2,2"),
    "standup with 2 connections of 2 users",
  );
  await waitFor(async () => Number(await text(page, "#now-sockets")) >= 2, "the socket count");

  // Keyboard: focus the room's button and press Enter.
  await page.focus(`${row} button`);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#room:not([hidden])");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "room", "focus moves to the room's details");
  await waitFor(
    async () => {
      const users = await page.$$eval("#room-members tr", (rows) => rows.map((tr) => tr.children[0].textContent));
      return demos.every(({ userId }) => users.includes(userId));
    },
    "both members in the room's details",
  );
  assert.match(await text(page, "#room-occupancy"), /2 connection\(s\), 2 user\(s\)/);
  await waitFor(() => page.$eval('#room-metadata tr[data-key="topic"]', (tr) => tr.textContent.includes("Sprint review")), "the topic in the metadata");
  await screenshot(page, "dashboard-room");

  for (const demo of demos) demo.page.assertClean();
  page.assertClean();
  await page.closeAll();
});

/** Every chart gets a point a second and draws it on its canvas. */
test("the charts receive data and draw it", async () => {
  const page = await openDashboard();
  await signIn(page);
  await page.waitForSelector("#board:not([hidden])");
  const ids = ["sockets", "acks", "latency", "errors", "failures"];
  await waitFor(
    () => page.evaluate((list) => list.every((id) => Number(document.getElementById(`chart-${id}`)?.dataset.points) >= 4), ids),
    "four points on every chart",
  );
  // Something is drawn: each chart's canvas has pixels of its series' colours (read from
  // the legend's markers; a line of zeros is drawn too, and latency has no value while no
  // request ran in its window).
  const painted = await page.evaluate((list) =>
    list.map((id) => {
      const colours = [...document.querySelectorAll(`#chart-${id} .u-legend .u-marker`)]
        .map((marker) => getComputedStyle(marker).borderColor.match(/\d+/g)?.slice(0, 3).map(Number))
        .filter((rgb) => rgb?.length === 3);
      const canvas = document.querySelector(`#chart-${id} canvas`);
      const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      let line = 0;
      for (let i = 0; i < pixels.length; i += 4) {
        if (pixels[i + 3] < 200) continue;
        if (colours.some(([r, g, b]) => Math.abs(pixels[i] - r) < 24 && Math.abs(pixels[i + 1] - g) < 24 && Math.abs(pixels[i + 2] - b) < 24)) line++;
      }
      return [id, line, colours.length];
    }),
  ids.filter((id) => id !== "latency"));
  for (const [id, line, series] of painted) assert.ok(series > 0 && line > 10, `chart ${id} drew no line (${line} pixels of ${series} series)`);
  // The demo pages' heartbeats and requests show: sockets >= 2, and latency once requests ran.
  assert.match(await text(page, "#chart-sockets .chart-now"), /sockets [2-9]/);
  await screenshot(page, "dashboard-charts");
  page.assertClean();
  await page.closeAll();
});

/** Versions as the API says; a swap by upload, a refused upload with the server's reason, and a rollback, each in the history. */
test("the dashboard shows component versions, swaps from an upload and rolls back", async () => {
  const fixture = path.join(wasmDir, "roster_fixture_presence_v2.wasm");
  let bytes;
  try {
    bytes = readFileSync(fixture);
  } catch {
    assert.fail(`missing ${fixture}: build the test fixtures (cargo test builds them) or set ROSTER_WASM_DIR`);
  }
  const bogus = path.join(mkdtempSync(path.join(tmpdir(), "roster-web-")), "broken.wasm");
  writeFileSync(bogus, "this is not a component");
  const page = await openDashboard({
    // The refused upload answers 400 on purpose.
    allow: (p) => (p.kind === "http" && p.status === 400 && p.url.includes("/admin/components/")) || (p.kind === "console" && /status of 400/.test(p.text)),
  });
  await signIn(page);
  const card = "#component-presence";
  await page.waitForSelector(card);

  // The versions shown are the running ones.
  const before = await adminGet(server, "/admin/components");
  for (const info of before.components) {
    await waitFor(() => page.$eval(`#component-${info.slot}`, (el, v) => el.dataset.version === v, info.current.version), `${info.slot}'s version`);
    assert.equal(await text(page, `#component-${info.slot} .version`), info.current.version.slice(0, 12));
  }
  const original = before.components.find((c) => c.slot === "presence").current.version;

  // A refused upload says why, in the server's words.
  const input = await page.$(`${card} input[type=file]`);
  await input.uploadFile(bogus);
  await page.click(`${card} .do-swap`);
  await waitFor(() => page.$eval(`${card} .result`, (el) => el.dataset.outcome === "refused"), "the refusal");
  const refusal = await text(page, `${card} .result`);
  assert.match(refusal, /^Swap refused: .+/);
  assert.equal(await page.$eval(card, (el) => el.dataset.version), original, "a refused upload changes nothing");

  // A good upload swaps: new version, a `swap` in the history.
  await input.uploadFile(fixture);
  await page.click(`${card} .do-swap`);
  await waitFor(() => page.$eval(`${card} .result`, (el) => el.dataset.outcome === "ok"), "the swap", 60_000);
  const swapped = sha256(bytes);
  await waitFor(() => page.$eval(card, (el, v) => el.dataset.version === v, swapped), "the new version");
  assert.equal((await adminGet(server, "/admin/components")).components.find((c) => c.slot === "presence").current.version, swapped);
  assert.equal(await page.$eval(`${card} .history li`, (li) => li.dataset.kind), "swap");
  assert.equal(await page.$eval(`${card} .do-rollback`, (el) => el.disabled), false);
  await screenshot(page, "dashboard-swapped");

  // Roll back through the UI: the original version again, a `rollback` on top of the history.
  await page.click(`${card} .do-rollback`);
  await waitFor(() => page.$eval(card, (el, v) => el.dataset.version === v, original), "the rolled-back version", 30_000);
  const kinds = await page.$$eval(`${card} .history li`, (items) => items.map((li) => li.dataset.kind));
  assert.deepEqual(kinds.slice(0, 2), ["rollback", "swap"]);
  assert.match(await text(page, `${card} .result`), /Rolled back/);

  page.assertClean();
  await page.closeAll();
});

/** At 375 px nothing scrolls sideways; Tab reaches the form, the room list and the component controls. */
test("the dashboard fits a phone and is keyboard-navigable", async () => {
  const page = await openDashboard({ width: 375, height: 667 });
  await page.waitForSelector("#login:not([hidden])");
  assert.deepEqual((await tabOrder(page, 10)).slice(0, 3), ["a.skip[Skip to the dashboard]", "#login-token", "button[Open the dashboard]"]);
  await signIn(page);
  await page.waitForSelector('#rooms-body tr[data-room-id="standup"]');
  await page.waitForSelector("#component-policy");
  await page.click('#rooms-body tr[data-room-id="standup"] button');
  await page.waitForSelector('#room-members tr[data-conn-id]');
  const overflow = await horizontalOverflow(page);
  assert.equal(overflow.overflow, false, `the dashboard scrolls sideways at 375 px: ${JSON.stringify(overflow)}`);
  await screenshot(page, "dashboard-phone");

  const order = await tabOrder(page, 80);
  for (const control of ["#sign-out", "button.link[standup]", "#upload-presence", "button.do-swap[Swap]", "#upload-policy"]) {
    assert.ok(order.includes(control), `Tab never reaches ${control}: ${order.join(" ")}`);
  }
  page.assertClean();
  await page.closeAll();

  for (const demo of demos) {
    demo.page.assertClean();
    await demo.page.closeAll();
  }
});

/** The dashboard stays small: its HTML, CSS, JS and uPlot, uncompressed, under a budget (admin JSON not counted). */
test("the dashboard page's weight", async (t) => {
  const { bytes, requests } = await pageWeight(browser, `${server.url}/dashboard`);
  t.diagnostic(`dashboard: ${bytes} bytes in ${requests} requests`);
  assert.ok(bytes < 256_000, `the dashboard loads ${bytes} bytes`);
});
