// The README's "Who's here" example, run as written (the URL and the import substituted)
// against the real server, with another member already in the room.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { startRoster, testClient, waitFor } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** The README example runs, sees the room, patches its state and leaves cleanly. */
test("the README example runs", async () => {
  const readme = await readFile(path.join(here, "..", "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Who's here"));
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code, "the README has a js block under 'Who's here'");
  assert.ok(code.split("\n").length <= 20, "the example stays short");

  const server = await startRoster();
  const watcher = testClient(server, { userId: "grace" });
  const dir = await mkdtemp(path.join(os.tmpdir(), "roster-readme-"));
  try {
    const room = await watcher.join("lobby", { name: "Grace", status: "online" });
    const program =
      // Node 20 has no global WebSocket; browsers and Node 22+ do.
      `import WebSocket from ${JSON.stringify(pathToFileURL(require.resolve("ws")).href)};\n` +
      `globalThis.WebSocket ??= WebSocket;\n` +
      code
        .replace(`from "roster-client"`, `from ${JSON.stringify(pathToFileURL(path.join(here, "..", "src", "index.js")).href)}`)
        .replaceAll("http://localhost:3000", server.url);
    const file = path.join(dir, "example.mjs");
    await writeFile(file, program);
    const seen = [];
    room.on("join", (m) => seen.push(`join:${m.userId}`));
    room.on("update", (m) => seen.push(`update:${m.userId}:${m.state.status}`));
    room.on("leave", (m) => seen.push(`leave:${m.userId}`));

    const { stdout } = await new Promise((resolve, reject) => {
      execFile(process.execPath, [file], { timeout: 10_000 }, (error, out, err) =>
        error ? reject(new Error(`${error.message}\n${out}\n${err}`)) : resolve({ stdout: out }),
      );
    });
    assert.match(stdout, /here: (Grace \(online\), Ada \(online\)|Ada \(online\), Grace \(online\))/);
    assert.match(stdout, /2 user\(s\) here; we are away/);
    await waitFor(() => seen.includes("leave:ada"), "the watcher to see Ada leave");
    assert.deepEqual(seen, ["join:ada", "update:ada:away", "leave:ada"]);
  } finally {
    await watcher.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
