// Runs a command as a node's container runtime would: with the node's own
// view of the filesystem. Usage (inside `ip netns exec <node>`, which gives
// this process a private mount namespace that ends with it):
//   node node-exec.mjs <dir-on-this-machine>:<path-on-the-node>... -- <argv...>
// Each dir is bound over its path (created if missing), then argv runs with
// this process's stdin, stdout, stderr and environment; its exit status is ours.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";

const sep = process.argv.indexOf("--");
if (sep < 0 || sep === process.argv.length - 1) {
  console.error("usage: node-exec.mjs <dir>:<path>... -- <argv...>");
  process.exit(2);
}
for (const b of process.argv.slice(2, sep)) {
  const i = b.indexOf(":");
  const [from, to] = [b.slice(0, i), b.slice(i + 1)];
  mkdirSync(to, { recursive: true });
  execFileSync("mount", ["--bind", from, to]);
}
const [cmd, ...args] = process.argv.slice(sep + 1);
const r = spawnSync(cmd, args, { stdio: "inherit" });
if (r.error) {
  console.error(`node-exec: ${cmd}: ${r.error.message}`);
  process.exit(127);
}
process.exit(r.status ?? 128);
