import { spawn, type ChildProcess } from "node:child_process";
import { run, CommandError } from "./exec.js";

/**
 * Kernel objects through iproute2: `ip -json` to read, `ip -batch` /
 * `bridge -batch` to write many objects with one process (a netlink message
 * each). Measured in bench/RESULTS.md (5,000 peers).
 */
export interface BatchResult {
  /** Zero-based indexes of the lines that failed, with the kernel's message. */
  readonly failed: readonly { readonly line: number; readonly error: string }[];
}

/** Runs `<tool> -force -batch -` over `lines`; never throws for failed lines. */
export async function batch(tool: "ip" | "bridge", lines: readonly string[], netns?: string): Promise<BatchResult> {
  if (lines.length === 0) return { failed: [] };
  const argv = [...(netns ? ["ip", "netns", "exec", netns] : []), tool, "-force", "-batch", "-"];
  try {
    await run(argv, { input: `${lines.join("\n")}\n`, timeoutMs: 120_000 });
    return { failed: [] };
  } catch (e) {
    if (!(e instanceof CommandError)) throw e;
    return { failed: parseFailures(e.stderr) };
  }
}

/** iproute2 prints the error, then "Command failed -:<line>" (1-based). */
function parseFailures(stderr: string): { line: number; error: string }[] {
  const out: { line: number; error: string }[] = [];
  let last = "";
  for (const l of stderr.split("\n")) {
    const m = /^Command failed -:(\d+)/.exec(l);
    if (m) {
      out.push({ line: Number(m[1]) - 1, error: last.trim() });
      last = "";
    } else if (l.trim()) last = l;
  }
  if (out.length === 0 && stderr.trim()) out.push({ line: -1, error: stderr.trim() });
  return out;
}

/** `ip -json ...` parsed; [] when ip prints nothing. */
export async function ipJson<T>(args: readonly string[]): Promise<T[]> {
  const out = await run(["ip", "-json", ...args]);
  return out.trim() ? (JSON.parse(out) as T[]) : [];
}

/**
 * Runs a command (iproute2's text output) and hands each line of its stdout
 * to `onLine` as it arrives. Reading 20,000 routes, neighbours or FDB
 * entries this way holds one pipe chunk at a time; `-json` held the whole
 * output as one string, then an object per entry, on the main thread.
 * Rejects with CommandError when the command fails; an exception from
 * `onLine` stops the command and rejects with it.
 */
export function outputLines(argv: readonly string[], onLine: (line: string) => void, timeoutMs = 30_000): Promise<void> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new Error("outputLines: empty command"));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs });
    let rest = "";
    let err = "";
    let failed: unknown;
    const each = (text: string, last: boolean): void => {
      if (failed !== undefined) return;
      let start = 0;
      try {
        for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
          onLine(text.slice(start, nl));
          start = nl + 1;
        }
        if (last && start < text.length) onLine(text.slice(start));
      } catch (e) {
        failed = e;
        child.kill();
      }
      rest = last ? "" : text.slice(start);
    };
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => each(rest + d, false));
    child.stderr.on("data", (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.on("error", (e) => reject(new CommandError(argv, null, e.message)));
    child.on("close", (status) => {
      each(rest, true);
      if (failed !== undefined) reject(failed instanceof Error ? failed : new Error(String(failed)));
      else if (status === 0) resolve();
      else reject(new CommandError(argv, status, err));
    });
  });
}

/** `bridge -json ...` parsed. */
export async function bridgeJson<T>(args: readonly string[]): Promise<T[]> {
  const out = await run(["bridge", "-json", ...args]);
  return out.trim() ? (JSON.parse(out) as T[]) : [];
}

/** Runs batches of iproute2 commands: a one-shot process or a BatchSession. */
export type BatchRunner = (tool: "ip" | "bridge", lines: readonly string[]) => Promise<BatchResult>;

/** Reads the (fixed, absent) sentinel device: the error it causes marks the end of a batch. */
const SENTINEL: Record<"ip" | "bridge", string> = { ip: "link show dev weft-sync-none", bridge: "fdb show dev weft-sync-none" };

/**
 * A long-lived `<tool> -force -batch -` process fed over stdin, so that a
 * route change costs a netlink message, not a process start. After each
 * batch a command that must fail is sent: iproute2 reports failures on
 * unbuffered stderr, in order, as "Command failed -:<line>", so seeing the
 * sentinel's line means every earlier line is done, and earlier failures map
 * back to their lines. A session that dies is started again on next use.
 */
export class BatchSession {
  /** The running process and what belongs to it: line numbers, stderr, the batch waiting for its sentinel. */
  private proc: Proc | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  /** `netns`: run inside that namespace (tests); the agent runs in its node's own. */
  constructor(readonly tool: "ip" | "bridge", readonly netns?: string) {}

  run(lines: readonly string[]): Promise<BatchResult> {
    const p = this.chain.then(() => this.runNow(lines));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private spawn(): Proc {
    const argv = [...(this.netns ? ["ip", "netns", "exec", this.netns] : []), this.tool, "-force", "-batch", "-"];
    const child = spawn(argv[0] ?? this.tool, argv.slice(1), { stdio: ["pipe", "ignore", "pipe"] });
    const proc: Proc = { child, line: 0, errBuf: "", lastMsg: "", pending: undefined };
    // Everything below concerns this process only: an old process that exits or prints after the
    // session moved on to a new one touches nothing of the new one's.
    child.stderr?.on("data", (d: Buffer) => this.onStderr(proc, d.toString()));
    child.on("exit", () => {
      if (this.proc === proc) this.proc = undefined;
      proc.pending?.reject(new Error(`${this.tool} -batch exited`));
      proc.pending = undefined;
    });
    child.stdin?.on("error", () => undefined);
    return proc;
  }

  private runNow(lines: readonly string[]): Promise<BatchResult> {
    if (lines.length === 0) return Promise.resolve({ failed: [] });
    const proc = (this.proc ??= this.spawn());
    const first = proc.line + 1;
    proc.line += lines.length + 1;
    const sentinel = proc.line;
    return new Promise<BatchResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.pending = undefined;
        if (this.proc === proc) this.proc = undefined;
        proc.child.kill();
        reject(new Error(`${this.tool} -batch did not finish ${lines.length} commands in 120 s`));
      }, 120_000);
      proc.pending = {
        first, sentinel, failed: [],
        resolve: (r) => { clearTimeout(timer); resolve(r); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      proc.child.stdin?.write(`${lines.join("\n")}\n${SENTINEL[this.tool]}\n`);
    });
  }

  private onStderr(proc: Proc, text: string): void {
    proc.errBuf += text;
    let nl: number;
    while ((nl = proc.errBuf.indexOf("\n")) >= 0) {
      const l = proc.errBuf.slice(0, nl);
      proc.errBuf = proc.errBuf.slice(nl + 1);
      const m = /^Command failed -:(\d+)/.exec(l);
      if (!m) {
        if (l.trim()) proc.lastMsg = l.trim();
        continue;
      }
      const n = Number(m[1]);
      const p = proc.pending;
      if (!p) continue;
      if (n === p.sentinel) {
        proc.pending = undefined;
        // A device that went away and came back has a new index the process does not know: start afresh.
        if (p.failed.some((f) => /unknown ifindex|Cannot find device/.test(f.error)) && this.proc === proc) this.close();
        p.resolve({ failed: p.failed });
      } else if (n >= p.first) {
        p.failed.push({ line: n - p.first, error: proc.lastMsg });
      }
      proc.lastMsg = "";
    }
  }

  close(): void {
    this.proc?.child.stdin?.end();
    this.proc = undefined;
  }

  /** The running process (tests kill it to check the restart). */
  get pid(): number | undefined {
    return this.proc?.child.pid;
  }
}

interface Proc {
  readonly child: ChildProcess;
  line: number;
  errBuf: string;
  lastMsg: string;
  pending: { first: number; sentinel: number; failed: { line: number; error: string }[]; resolve: (r: BatchResult) => void; reject: (e: Error) => void } | undefined;
}
