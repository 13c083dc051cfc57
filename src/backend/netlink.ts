import { run, CommandError } from "../harness/exec.js";

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
