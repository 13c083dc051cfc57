import { execFile, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

/** A command that exited non-zero, with what it printed. */
export class CommandError extends Error {
  readonly code = "WEFT_COMMAND_FAILED";
  constructor(readonly argv: readonly string[], readonly status: number | null, readonly stderr: string) {
    super(`\`${argv.join(" ")}\` failed (exit ${status}): ${stderr.trim() || "no output"}`);
  }
}

/** Runs a command without a shell; resolves with stdout, rejects with CommandError. */
export async function run(argv: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error("run: empty command");
  try {
    if (opts.input !== undefined) return await runWithInput(cmd, args, opts.input, opts.timeoutMs);
    const { stdout } = await execFileP(cmd, args, { encoding: "utf8", timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    if (e instanceof CommandError) throw e;
    const err = e as { code?: number | string; stderr?: string; message?: string };
    throw new CommandError(argv, typeof err.code === "number" ? err.code : null, err.stderr || err.message || "");
  }
}

function runWithInput(cmd: string, args: string[], input: string, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", (e) => reject(new CommandError([cmd, ...args], null, e.message)));
    child.on("close", (status) => (status === 0 ? resolve(out) : reject(new CommandError([cmd, ...args], status, err))));
    // A child that exits without reading all of its input makes the write fail (EPIPE): its exit
    // status and stderr say what happened; the error must not escape as an unhandled event.
    child.stdin.on("error", () => undefined);
    child.stdin.end(input);
  });
}

/** Starts a long-running command; the caller owns the child. */
export function start(argv: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error("start: empty command");
  return spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
}
