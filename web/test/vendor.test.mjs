// The vendored copies in public/vendor/ are the installed packages' files, byte for byte
// (`npm run vendor` refreshes them after a version bump in package.json).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { VENDORED, nodeModules, vendorDir } from "../vendor.mjs";

/** Every vendored file equals its source in node_modules (run `npm run vendor` if not). */
test("public/vendor holds the installed packages' files", () => {
  for (const [from, to] of VENDORED) {
    const installed = readFileSync(join(nodeModules, from));
    const vendored = readFileSync(join(vendorDir, to));
    assert.ok(installed.equals(vendored), `public/vendor/${to} differs from node_modules/${from}: run \`npm run vendor\``);
  }
});
