import type { ChildProcess } from "node:child_process";

/** A child's stdout as lines, appended as they arrive (stderr goes with them, prefixed "stderr: "). */
export function readLines(child: ChildProcess): string[] {
  const lines: string[] = [];
  const follow = (stream: NodeJS.ReadableStream | null, prefix: string): void => {
    let buf = "";
    stream?.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(prefix + buf.slice(0, nl).replace(/\r$/, ""));
        buf = buf.slice(nl + 1);
      }
    });
  };
  follow(child.stdout, "");
  follow(child.stderr, "stderr: ");
  return lines;
}
