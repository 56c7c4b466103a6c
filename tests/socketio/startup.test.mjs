// Start-up as a supervisor or a test harness sees it: a node whose configuration is
// refused exits with the reason and never logs that it listens.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, it } from "node:test";
import { rosterBin, withTimeout } from "./harness.mjs";

/** Runs roster with `env` added until it exits; resolves to its exit code and output. */
function runToExit(env) {
  const child = spawn(rosterBin, ["--host", "127.0.0.1", "--port", "0"], {
    env: { ...process.env, NO_COLOR: "1", RUST_LOG: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, output })));
}

describe("start-up", () => {
  it("a refused configuration exits with its reason, never 'listening'", async () => {
    const { code, output } = await withTimeout(runToExit({ ROSTER_ADMIN_TOKEN: "tiny-secret" }), "roster to exit");
    assert.notEqual(code, 0, output);
    assert.match(output, /ROSTER_ADMIN_TOKEN = \(hidden\): must be at least 16 characters/);
    assert.doesNotMatch(output, /roster listening/);
    assert.doesNotMatch(output, /tiny-secret/, "the secret is not echoed");
  });
});
