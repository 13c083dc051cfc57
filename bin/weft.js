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
// Every command has finished its work when main returns (the agent and `svc watch` return only on a
// signal). What can still hold the process is a TCP connect the etcd client left pending to a member
// that does not answer (its SYNs dropped: the kernel gives up after ~2 min, and closing the client
// does not abort it), so a command that already answered through another member would hang on.
// Stdout and stderr are written synchronously to files, pipes and terminals on Linux: nothing is lost.
setTimeout(() => process.exit(), 500).unref();
