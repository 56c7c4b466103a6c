// Browser test harness: starts the real `roster` binary on a free port, launches the
// system Chromium headless through puppeteer-core, and opens pages that record every
// console error or warning, page error and failed request, so each test can end with
// "nothing went wrong in the browser". Waits are for conditions, with bounds.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";

const here = path.dirname(fileURLToPath(import.meta.url));

/** The roster binary: $ROSTER_BIN, else the workspace's debug build. */
export const rosterBin = process.env.ROSTER_BIN ?? path.join(here, "..", "..", "target", "debug", "roster");

/** Where screenshots go (gitignored). */
export const outputDir = path.join(here, "..", "test-output");

/** The fixture components of the swap tests, built by the workspace (`cargo xtask build-components`). */
export const wasmDir = process.env.ROSTER_WASM_DIR ?? path.join(here, "..", "..", "target", "wasm", "wasm32-wasip2", "component");

/** How long any wait may take before the test fails. */
export const WAIT_MS = 10_000;

/** The admin token every test server gets. */
export const ADMIN_TOKEN = "test-admin-token";

/** The resume grace of test servers: a closed page leaves the others' lists within it. */
export const GRACE_MS = 1000;

/** Chromium: $CHROMIUM_PATH, else the first of the usual places that exists. */
export function chromiumPath() {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  const found = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find((candidate) => existsSync(candidate));
  if (!found) throw new Error("no Chromium found: install Debian's `chromium` package or set CHROMIUM_PATH");
  return found;
}

/** Starts roster with `env` added (and extra flags); resolves once it listens. */
export async function startRoster({ env = {}, flags = [] } = {}) {
  const child = spawn(rosterBin, ["--host", "127.0.0.1", "--port", "0", "--cache-dir", "off", ...flags], {
    env: {
      ...process.env,
      NO_COLOR: "1",
      RUST_LOG: process.env.RUST_LOG ?? "warn,roster=info",
      ROSTER_ADMIN_TOKEN: ADMIN_TOKEN,
      ROSTER_RESUME_GRACE_MS: String(GRACE_MS),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`roster did not start:\n${log}`)), 30_000);
    const onData = (chunk) => {
      log += chunk;
      const match = /roster listening address=([\d.]+:\d+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (error) => reject(new Error(`cannot run ${rosterBin}: ${error.message} (set ROSTER_BIN)`)));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`roster exited with ${code}:\n${log}`));
    });
  });
  return {
    url: `http://${address}`,
    log: () => log,
    /** SIGTERM, then SIGKILL if it lingers. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Headless Chromium (no sandbox: the tests may run as root). */
export function launchBrowser() {
  return puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run", "--no-default-browser-check"],
  });
}

/**
 * A page that records what went wrong in it: console errors and warnings, uncaught errors,
 * failed requests and HTTP errors. `allow(problem)` may excuse what a test provokes on
 * purpose (a wrong token's 401). `page.problems()` lists the rest.
 */
export async function checkedPage(browser, { width = 1280, height = 900, allow = () => false } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width, height });
  const problems = [];
  const record = (problem) => {
    if (!allow(problem)) problems.push(problem);
  };
  page.on("console", (message) => {
    const type = message.type();
    if (type === "error" || type === "warn" || type === "warning") {
      record({ kind: "console", type, text: message.text(), url: message.location()?.url ?? "" });
    }
  });
  page.on("pageerror", (error) => record({ kind: "pageerror", text: String(error?.message ?? error) }));
  page.on("requestfailed", (request) => {
    const reason = request.failure()?.errorText ?? "";
    // A page closed or navigated away mid-request aborts it: that is not the page's fault.
    if (reason === "net::ERR_ABORTED") return;
    record({ kind: "requestfailed", url: request.url(), text: reason });
  });
  page.on("response", (response) => {
    if (response.status() >= 400) record({ kind: "http", url: response.url(), status: response.status(), text: `${response.status()} ${response.url()}` });
  });
  page.problems = () => problems;
  page.assertClean = () => assert.deepEqual(problems, [], `the page logged problems:\n${JSON.stringify(problems, null, 2)}`);
  page.closeAll = () => context.close();
  return page;
}

/** Polls `condition` (sync or async) until it returns a truthy value, which it resolves with. */
export async function waitFor(condition, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await condition();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Writes a full-page screenshot to web/test-output/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(outputDir, { recursive: true });
  const file = path.join(outputDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Whether the page scrolls sideways (it must not, at any width). */
export function horizontalOverflow(page) {
  return page.evaluate(() => {
    const root = document.documentElement;
    return { scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, overflow: root.scrollWidth > root.clientWidth };
  });
}

/**
 * Presses Tab up to `max` times and returns a description of each element focused, in
 * order: `#id`, or `tag.class[text]` for elements without an id.
 */
export async function tabOrder(page, max = 60) {
  // Tab moves on from the focused (or last clicked) node: start from a marker put first in
  // the page, so the walk starts at the top.
  await page.evaluate(() => {
    const start = document.createElement("span");
    start.id = "tab-order-start";
    start.tabIndex = -1;
    document.body.prepend(start);
    start.focus();
  });
  const seen = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (i === 0) await page.evaluate(() => document.getElementById("tab-order-start")?.remove());
    const label = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return null;
      if (el.id) return `#${el.id}`;
      return `${el.tagName.toLowerCase()}${el.className ? `.${String(el.className).split(" ")[0]}` : ""}[${(el.textContent ?? "").trim().slice(0, 40)}]`;
    });
    if (label === null) continue;
    if (seen.length > 0 && label === seen[0]) break; // wrapped around
    seen.push(label);
  }
  return seen;
}

/** Whether the element is shown (not hidden by itself or an ancestor). */
export function shown(page, selector) {
  return page.$eval(selector, (el) => el.checkVisibility());
}

/** The SHA-256 of a file's bytes, hex: the version id the hub gives a component. */
export function sha256(bytes) {
  return crypto.createHash("sha256").update(bytes).digest("hex");
}

/** An HS256 JWT for `sub` signed with `secret`, valid for `seconds`. */
export function signJwt(secret, claims, seconds = 3600) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ iat: now, exp: now + seconds, ...claims })}`;
  const signature = crypto.createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}

/** GET an admin endpoint from the test itself (to compare with what the page shows). */
export async function adminGet(server, pathname) {
  const response = await fetch(`${server.url}${pathname}`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  const body = await response.json();
  assert.equal(response.status, 200, `${pathname}: ${JSON.stringify(body)}`);
  return body;
}

/**
 * What loading `url` costs: the bytes received over HTTP (headers included, as the network
 * counted them) and the requests made, until the network is idle. The WebSocket is not
 * counted (its frames are the app's data, not the page).
 */
export async function pageWeight(browser, url, { afterLoad } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const session = await page.createCDPSession();
  await session.send("Network.enable");
  await session.send("Network.setCacheDisabled", { cacheDisabled: true });
  const urls = new Map();
  let bytes = 0;
  session.on("Network.requestWillBeSent", ({ requestId, request }) => urls.set(requestId, request.url));
  session.on("Network.loadingFinished", ({ requestId, encodedDataLength }) => {
    bytes += encodedDataLength;
  });
  await page.goto(url, { waitUntil: "networkidle0" });
  if (afterLoad) {
    await afterLoad(page);
    await page.waitForNetworkIdle({ idleTime: 300 });
  }
  const files = [...urls.values()].filter((u) => !u.startsWith("data:") && !u.startsWith("ws"));
  await context.close();
  return { bytes, requests: files.length, files };
}
