import { execFileSync } from "node:child_process";
import { cpus, release, totalmem } from "node:os";
import type { Machine } from "./schema.js";

/** What the figures were measured on: they mean nothing without it. */
export function machine(): Machine {
  let commit: string | undefined;
  try {
    commit = execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim() || undefined;
  } catch {
    commit = undefined; // not a git checkout
  }
  return {
    kernel: release(),
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    commit,
  };
}
