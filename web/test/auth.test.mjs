// The demo on a hub with authentication on: it asks for a token (or takes it from
// `#token=...`), and the token's user is who joins.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { checkedPage, launchBrowser, shown, signJwt, startRoster, waitFor } from "./harness.mjs";

const SECRET = "a-test-secret-that-is-at-least-32-bytes-long";
let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startRoster({ env: { ROSTER_JWT_SECRET: SECRET } }), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

function selfUser(page) {
  return page.waitForFunction(() => document.querySelector("#members li[data-self]")?.dataset.userId, { timeout: 10_000 }).then((h) => h.jsonValue());
}

/** Without a token the page asks for one; with it, the token's `sub` joins. From the fragment, no form, and the token leaves the address bar. */
test("with auth on the demo asks for a token or takes it from the URL fragment", async () => {
  const asked = await checkedPage(browser);
  await asked.goto(`${server.url}/?room=secure`);
  await asked.waitForSelector("#auth:not([hidden])");
  assert.equal(await asked.evaluate(() => document.activeElement?.id), "auth-token", "the token field has focus");
  await asked.type("#auth-token", signJwt(SECRET, { sub: "ada" }));
  await asked.keyboard.press("Enter");
  await asked.waitForSelector('#connection[data-status="connected"]');
  assert.equal(await selfUser(asked), "ada");

  const given = await checkedPage(browser);
  await given.goto(`${server.url}/?room=secure#token=${signJwt(SECRET, { sub: "grace" })}`);
  await given.waitForSelector('#connection[data-status="connected"]');
  assert.equal(await selfUser(given), "grace");
  assert.equal(await shown(given, "#auth"), false, "no form when the URL carries the token");
  assert.equal(new URL(given.url()).hash, "", "the token is dropped from the address bar");
  await waitFor(() => asked.$$eval("#members li", (items) => items.some((li) => li.dataset.userId === "grace")), "ada to see grace");

  asked.assertClean();
  given.assertClean();
  await asked.closeAll();
  await given.closeAll();
});
