// Copies the browser libraries the pages use from node_modules into public/vendor/, where
// the roster binary embeds them (served at /assets/vendor/...). The copies are committed,
// so building the server needs no npm; `npm test` (test/vendor.test.mjs) fails when they
// differ from the installed packages, so a bumped version in package.json is not forgotten.
//
//   npm install && npm run vendor

import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** [from (under node_modules), to (under public/vendor)]: what the pages load, and the licence. */
export const VENDORED = [
  ["uplot/dist/uPlot.esm.js", "uPlot.esm.js"],
  ["uplot/dist/uPlot.min.css", "uPlot.min.css"],
  ["uplot/LICENSE", "uPlot.LICENSE.txt"],
];

export const nodeModules = join(here, "node_modules");
export const vendorDir = join(here, "public", "vendor");

/** The version of an installed package, for the log line. */
function versionOf(name) {
  return JSON.parse(readFileSync(join(nodeModules, name, "package.json"), "utf8")).version;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  mkdirSync(vendorDir, { recursive: true });
  for (const [from, to] of VENDORED) {
    copyFileSync(join(nodeModules, from), join(vendorDir, to));
    console.log(`${from} (${versionOf(from.split("/")[0])}) -> public/vendor/${to}`);
  }
}
