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
  private child: ChildProcess | undefined;
  private line = 0;
  private errBuf = "";
  private lastMsg = "";
  private pending: { first: number; sentinel: number; failed: { line: number; error: string }[]; resolve: (r: BatchResult) => void; reject: (e: Error) => void } | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  /** `netns`: run inside that namespace (tests); the agent runs in its node's own. */
  constructor(readonly tool: "ip" | "bridge", readonly netns?: string) {}

  run(lines: readonly string[]): Promise<BatchResult> {
    const p = this.chain.then(() => this.runNow(lines));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private spawn(): ChildProcess {
    const argv = [...(this.netns ? ["ip", "netns", "exec", this.netns] : []), this.tool, "-force", "-batch", "-"];
    const child = spawn(argv[0] ?? this.tool, argv.slice(1), { stdio: ["pipe", "ignore", "pipe"] });
    this.line = 0;
    this.errBuf = "";
    child.stderr?.on("data", (d: Buffer) => this.onStderr(d.toString()));
    child.on("exit", () => {
      if (this.child === child) this.child = undefined;
      this.pending?.reject(new Error(`${this.tool} -batch exited`));
      this.pending = undefined;
    });
    child.stdin?.on("error", () => undefined);
    return child;
  }

  private runNow(lines: readonly string[]): Promise<BatchResult> {
    if (lines.length === 0) return Promise.resolve({ failed: [] });
    this.child ??= this.spawn();
    const first = this.line + 1;
    this.line += lines.length + 1;
    const sentinel = this.line;
    return new Promise<BatchResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        this.child?.kill();
        reject(new Error(`${this.tool} -batch did not finish ${lines.length} commands in 120 s`));
      }, 120_000);
      this.pending = {
        first, sentinel, failed: [],
        resolve: (r) => { clearTimeout(timer); resolve(r); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this.child?.stdin?.write(`${lines.join("\n")}\n${SENTINEL[this.tool]}\n`);
    });
  }

  private onStderr(text: string): void {
    this.errBuf += text;
    let nl: number;
    while ((nl = this.errBuf.indexOf("\n")) >= 0) {
      const l = this.errBuf.slice(0, nl);
      this.errBuf = this.errBuf.slice(nl + 1);
      const m = /^Command failed -:(\d+)/.exec(l);
      if (!m) {
        if (l.trim()) this.lastMsg = l.trim();
        continue;
      }
      const n = Number(m[1]);
      const p = this.pending;
      if (!p) continue;
      if (n === p.sentinel) {
        this.pending = undefined;
        // A device that went away and came back has a new index the process does not know: start afresh.
        if (p.failed.some((f) => /unknown ifindex|Cannot find device/.test(f.error))) this.close();
        p.resolve({ failed: p.failed });
      } else if (n >= p.first) {
        p.failed.push({ line: n - p.first, error: this.lastMsg });
      }
      this.lastMsg = "";
    }
  }

  close(): void {
    this.child?.stdin?.end();
    this.child = undefined;
  }

  /** The running process (tests kill it to check the restart). */
  get pid(): number | undefined {
    return this.child?.pid;
  }
}
