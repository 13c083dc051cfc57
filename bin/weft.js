#!/usr/bin/env node
// The `weft` command. Runs the compiled CLI (npm run build writes dist/).
import { existsSync } from "node:fs";

const entry = new URL("../dist/src/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  console.error("weft: dist/ is missing; run `npm run setup` (new machine) or `npm run build` first");
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
