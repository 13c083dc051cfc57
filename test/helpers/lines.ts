import type { ChildProcess } from "node:child_process";

/** Collects a child's stdout JSON lines; `ready()` resolves at the first {"ready":true}. */
export function jsonLines(child: ChildProcess): { ready: Promise<void>; done: Promise<Record<string, unknown>[]> } {
  const lines: Record<string, unknown>[] = [];
  let buf = "";
  let stderr = "";
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((res) => (onReady = res));
  child.stdout?.on("data", (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const obj = JSON.parse(line) as Record<string, unknown>;
      if (obj["ready"]) onReady();
      else lines.push(obj);
    }
  });
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Record<string, unknown>[]>((res, rej) => {
    child.on("close", (code) => (code === 0 ? res(lines) : rej(new Error(`child exited ${code}: ${stderr}`))));
  });
  return { ready, done };
}
