// The demo page (`/`) in a real headless Chromium against the real roster binary: two tabs
// see each other, their cursors, their chat and their topic edits (with a conflict shown
// on the losing tab); history after a reload; a closed tab leaves; phone width; keyboard.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { GRACE_MS, checkedPage, horizontalOverflow, launchBrowser, pageWeight, screenshot, shown, startRoster, tabOrder, waitFor } from "./harness.mjs";

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startRoster(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Opens the demo in its own browser context (its own session storage: its own user); resolves once joined. */
async function openDemo(room, options = {}) {
  const page = await checkedPage(browser, options);
  await page.goto(`${server.url}/?room=${encodeURIComponent(room)}`);
  await page.waitForSelector('#connection[data-status="connected"]', { timeout: 10_000 });
  const self = await page.waitForFunction(
    () => {
      const li = document.querySelector("#members li[data-self]");
      return li && { connId: li.dataset.connId, userId: li.dataset.userId, name: document.getElementById("name").value };
    },
    { timeout: 10_000 },
  );
  return { page, ...(await self.jsonValue()) };
}

/** The user ids a page lists under "Who's here". */
function listed(page) {
  return page.$$eval("#members li", (items) => items.map((li) => li.dataset.userId));
}

function text(page, selector) {
  return page.$eval(selector, (el) => el.textContent);
}

async function typeInto(page, selector, value) {
  await page.click(selector, { clickCount: 3 });
  await page.type(selector, value);
}

/** Two tabs in one room: presence, cursors, chat, a topic conflict, history after a reload, a closed tab leaving. */
test("two pages in the same room see each other, their cursors, chat and topic conflicts", async () => {
  const room = "standup";
  const a = await openDemo(room);
  const b = await openDemo(room);
  assert.notEqual(a.userId, b.userId, "each tab is its own user");

  // Each sees the other within a second of both being in.
  const started = Date.now();
  await waitFor(async () => (await listed(a.page)).includes(b.userId), "A to list B", 1000);
  await waitFor(async () => (await listed(b.page)).includes(a.userId), "B to list A", 1000);
  assert.ok(Date.now() - started <= 1000);
  assert.match(await text(a.page, `#members li[data-user-id="${b.userId}"]`), new RegExp(b.name));

  // A status change is seen by the other.
  await b.page.select("#status", "busy");
  await waitFor(
    () => a.page.$eval(`#members li[data-user-id="${b.userId}"] .member-status`, (el) => el.dataset.status === "busy"),
    "A to see B busy",
  );

  // A cursor move on B shows on A, at the same place in the shared area.
  const box = await b.page.$eval("#area", (el) => {
    const r = el.getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height };
  });
  await b.page.mouse.move(box.x + box.width * 0.25, box.y + box.height * 0.75, { steps: 5 });
  const cursor = await waitFor(
    () =>
      a.page.evaluate((userId) => {
        const el = document.querySelector(`#area .cursor[data-user-id="${userId}"]`);
        return el && { x: Number(el.dataset.x), y: Number(el.dataset.y), label: el.textContent };
      }, b.userId),
    "B's cursor on A",
  );
  await waitFor(
    () =>
      a.page.evaluate((userId) => {
        const el = document.querySelector(`#area .cursor[data-user-id="${userId}"]`);
        return el && Math.abs(Number(el.dataset.x) - 0.25) < 0.02 && Math.abs(Number(el.dataset.y) - 0.75) < 0.02;
      }, b.userId),
    "B's cursor to settle at (0.25, 0.75) on A",
  );
  assert.equal(cursor.label, b.name);

  // A chat line appears on both.
  await typeInto(a.page, "#chat-input", "hello from A");
  await a.page.keyboard.press("Enter");
  for (const { page } of [a, b]) {
    await waitFor(() => page.$$eval("#messages li", (items) => items.some((li) => li.textContent.includes("hello from A"))), "the chat line");
  }
  await screenshot(a.page, "demo-desktop"); // B's cursor, both users, the chat line

  // Topic: A starts editing; B saves first; A's save carries the revision A started from
  // and is refused: A sees B's topic in a conflict notice, and A's text is kept.
  await typeInto(a.page, "#topic-input", "Topic by A");
  await typeInto(b.page, "#topic-input", "Topic by B");
  await b.page.click("#topic-save");
  await waitFor(async () => (await text(b.page, "#topic-status")).includes("saved"), "B's save");
  await waitFor(async () => (await text(a.page, "#topic-text")).includes("Topic by B"), "A to show B's topic");
  assert.equal(await a.page.$eval("#topic-input", (el) => el.value), "Topic by A", "A's draft is not overwritten");
  await a.page.click("#topic-save");
  await a.page.waitForSelector("#topic-conflict:not([hidden])");
  const notice = await text(a.page, "#topic-conflict-text");
  assert.match(notice, /Topic by B/);
  assert.match(notice, new RegExp(b.name));
  assert.match(notice, /Topic by A/);
  assert.equal(await a.page.$eval("#topic-conflict", (el) => el.getAttribute("role")), "alert");
  await screenshot(a.page, "demo-conflict");
  // Nothing was overwritten: B still shows its own topic.
  assert.match(await text(b.page, "#topic-text"), /Topic by B/);

  // A chooses to save anyway: now it wins, and B sees it.
  await a.page.click("#topic-retry");
  await waitFor(async () => (await text(a.page, "#topic-status")).includes("saved"), "A's retry");
  assert.equal(await shown(a.page, "#topic-conflict"), false);
  await waitFor(async () => (await text(b.page, "#topic-text")).includes("Topic by A"), "B to show A's topic");

  // And the other way round over an existing topic (an `update` with a stale revision).
  await typeInto(b.page, "#topic-input", "B again");
  await typeInto(a.page, "#topic-input", "A again");
  await a.page.click("#topic-save");
  await waitFor(async () => (await text(b.page, "#topic-text")).includes("A again"), "B to show A's second topic");
  await b.page.click("#topic-save");
  await b.page.waitForSelector("#topic-conflict:not([hidden])");
  assert.match(await text(b.page, "#topic-conflict-text"), /A again/);
  await b.page.click("#topic-theirs");
  assert.equal(await b.page.$eval("#topic-input", (el) => el.value), "A again");

  b.page.assertClean();

  // A reload shows the chat history and the topic again.
  await a.page.reload();
  await a.page.waitForSelector('#connection[data-status="connected"]');
  await waitFor(() => a.page.$$eval("#messages li", (items) => items.some((li) => li.textContent.includes("hello from A"))), "the history after a reload");
  await waitFor(async () => (await text(a.page, "#topic-text")).includes("A again"), "the topic after a reload");
  assert.equal(await a.page.$eval("#name", (el) => el.value), a.name, "the name is kept across reloads");
  await waitFor(async () => (await listed(a.page)).includes(b.userId), "B again after A's reload");

  // B closes its tab: A stops listing it (at once with the goodbye, at worst after the grace).
  await b.page.closeAll();
  await waitFor(async () => !(await listed(a.page)).includes(b.userId), "B to leave A's list", GRACE_MS + 5000);
  assert.equal(await a.page.$$eval("#area .cursor", (items) => items.length), 0, "B's cursor is gone too");

  a.page.assertClean();
  await a.page.closeAll();
});

/** At 375 px: nothing scrolls sideways, even with a long word in the chat and topic; Tab reaches every control. */
test("the demo fits a phone and is keyboard-navigable", async () => {
  const { page } = await openDemo("phone-room", { width: 375, height: 667 });
  const long = "W".repeat(120);
  await typeInto(page, "#chat-input", long);
  await page.keyboard.press("Enter");
  await waitFor(() => page.$$eval("#messages li", (items) => items.length > 0), "the long line");
  await typeInto(page, "#topic-input", long.slice(0, 90));
  await page.click("#topic-save");
  await waitFor(async () => (await text(page, "#topic-text")).includes("WWW"), "the long topic");
  const overflow = await horizontalOverflow(page);
  assert.equal(overflow.overflow, false, `the page scrolls sideways at 375 px: ${JSON.stringify(overflow)}`);
  await screenshot(page, "demo-phone");

  const order = await tabOrder(page);
  for (const control of ["#name", "#status", "#topic-input", "#topic-save", "#area", "#chat-input", "#chat-send"]) {
    assert.ok(order.includes(control), `Tab never reaches ${control}: ${order.join(" ")}`);
  }
  assert.ok(order.indexOf("#name") < order.indexOf("#chat-input"), "the tab order follows the page");

  // The cursor area works from the keyboard: arrows move our cursor, which a second tab sees.
  const other = await openDemo("phone-room");
  const me = await page.$eval("#members li[data-self]", (li) => li.dataset.userId);
  await page.focus("#area");
  for (let i = 0; i < 5; i++) await page.keyboard.press("ArrowRight");
  await waitFor(
    () =>
      other.page.evaluate((userId) => {
        const el = document.querySelector(`#area .cursor[data-user-id="${userId}"]`);
        return el && Math.abs(Number(el.dataset.x) - 0.6) < 0.001 && Math.abs(Number(el.dataset.y) - 0.5) < 0.001;
      }, me),
    "the keyboard-moved cursor on the other tab",
  );

  page.assertClean();
  other.page.assertClean();
  await other.page.closeAll();
  await page.closeAll();
});

/** The demo stays small: everything it loads (HTML, CSS, JS, the SDK), uncompressed, under a budget. */
test("the demo page's weight", async (t) => {
  const { bytes, requests } = await pageWeight(browser, `${server.url}/?room=weight`);
  t.diagnostic(`demo: ${bytes} bytes in ${requests} requests`);
  assert.ok(bytes < 200_000, `the demo loads ${bytes} bytes`);
});
