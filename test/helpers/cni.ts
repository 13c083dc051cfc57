import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { installCni } from "../../src/cni/install.js";

/** Installs weft's plugins into a fresh bin dir; CNI_PATH puts Debian's plugins after them. */
export function installPlugins(): { binDir: string; confDir: string; cniPath: string } {
  const dir = mkdtempSync(join(tmpdir(), "weft-cni-"));
  const binDir = join(dir, "bin");
  const confDir = join(dir, "net.d");
  installCni({ binDir, confDir, networkName: "weft", confName: "10-weft.conflist", bridge: "cni0", controlSocket: undefined, ipam: undefined, force: false });
  return { binDir, confDir, cniPath: `${binDir}:/usr/lib/cni` };
}

export interface CniCall {
  readonly command: string;
  readonly containerId?: string;
  readonly netns?: string;
  readonly ifname?: string;
  readonly args?: string;
  /** An object is sent as JSON; a string as is (for broken input). */
  readonly conf: unknown;
  /** Extra or overriding environment (undefined removes a variable). */
  readonly env?: Record<string, string | undefined>;
}

export interface CniOut {
  readonly exit: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed, when it is JSON. */
  readonly json: Record<string, unknown> | undefined;
  readonly ms: number;
}

/**
 * Execs a plugin as a runtime does: CNI_* in the environment, the config on
 * stdin, inside the node's namespace (`ip netns exec`) when one is given.
 */
export function execPlugin(plugin: string, call: CniCall, ctx: { cniPath: string; socket: string; nodeNs?: string }): Promise<CniOut> {
  const env: Record<string, string> = { PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin", CNI_PATH: ctx.cniPath, WEFT_CONTROL_SOCKET: ctx.socket };
  env["CNI_COMMAND"] = call.command;
  if (call.containerId !== undefined) env["CNI_CONTAINERID"] = call.containerId;
  if (call.netns !== undefined) env["CNI_NETNS"] = call.netns;
  if (call.ifname !== undefined) env["CNI_IFNAME"] = call.ifname;
  if (call.args !== undefined) env["CNI_ARGS"] = call.args;
  for (const [k, v] of Object.entries(call.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const argv = ctx.nodeNs ? ["ip", "netns", "exec", ctx.nodeNs, plugin] : [plugin];
  const input = typeof call.conf === "string" ? call.conf : JSON.stringify(call.conf);
  return spawnJson(argv, env, input);
}

/**
 * Runs argv with `env`, `input` on stdin; resolves with the exit code, the
 * output, stdout parsed as JSON when it is JSON, and the time taken.
 */
export function spawnJson(argv: readonly string[], env: Record<string, string>, input: string): Promise<CniOut> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0] as string, argv.slice(1), { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    p.on("error", reject);
    p.on("close", (code) => {
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      resolve({ exit: code ?? -1, stdout, stderr, json, ms: performance.now() - t0 });
    });
    p.stdin.on("error", () => undefined);
    p.stdin.end(input);
  });
}

/** The first IPv4 address of a result. */
export function resultIp(out: CniOut): string {
  const ips = (out.json?.["ips"] ?? []) as { address: string }[];
  const a = ips[0]?.address;
  if (!a) throw new Error(`no address in result (exit ${out.exit}): ${out.stdout} ${out.stderr}`);
  return a;
}
