// ROSTER_DEMO=false (production): `/` is a 404 while `/dashboard` and its assets still work.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { ADMIN_TOKEN, checkedPage, launchBrowser, startRoster } from "./harness.mjs";

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startRoster({ env: { ROSTER_DEMO: "false" } }), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The demo is off: `/` answers 404; the dashboard loads and signs in without a console error. */
test("ROSTER_DEMO=false turns the demo off but not the dashboard", async () => {
  const root = await fetch(`${server.url}/`);
  assert.equal(root.status, 404);
  await root.body?.cancel();

  const page = await checkedPage(browser);
  const response = await page.goto(`${server.url}/dashboard`);
  assert.equal(response.status(), 200);
  await page.waitForSelector("#login:not([hidden])");
  await page.type("#login-token", ADMIN_TOKEN);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#board:not([hidden])");
  await page.waitForSelector("#component-presence");
  page.assertClean();
  await page.closeAll();
});
