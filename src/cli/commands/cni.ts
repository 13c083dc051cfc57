import type { Command } from "commander";
import { readSync } from "node:fs";
import { AGENT_DEFAULTS } from "../../agent/options.js";
import { requestCni } from "../../agent/control.js";
import { MAX_STDIN, versionOf } from "../../cni/request.js";
import { CNI_CODE, CniError, versionInfo } from "../../cni/spec.js";
import { conflist, findPortmap, installCni, pluginVersions } from "../../cni/install.js";

/**
 * `weft cni`: the plugin protocol in Node, for debugging and for hosts where
 * the C client (build/native/weft-cni, what install-cni installs) cannot be
 * built. It forwards exactly as the C client does; it only starts slower.
 */
export function registerCni(program: Command): void {
  program
    .command("cni")
    .description("run as the CNI plugin (reads CNI_* and stdin; the installed plugin is the faster C client of the same protocol)")
    .option("--role <role>", "weft (main plugin) or weft-ipam", "weft")
    .action(async (opts: { role: string }) => {
      if (opts.role !== "weft" && opts.role !== "weft-ipam") throw new CniError(CNI_CODE.INVALID_ENV, `--role ${opts.role}: use weft or weft-ipam`);
      const stdin = process.stdin.isTTY ? "" : readStdin(MAX_STDIN);
      if (stdin === undefined) {
        console.log(JSON.stringify(new CniError(CNI_CODE.DECODE, `the network config on stdin is longer than ${MAX_STDIN} bytes`).toJSON("1.1.0")));
        process.exitCode = 1;
        return;
      }
      const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith("CNI_") && e[1] !== undefined));
      if (env["CNI_COMMAND"] === "VERSION") {
        console.log(JSON.stringify(versionInfo(versionOf(stdin))));
        return;
      }
      const socket = (/"controlSocket"\s*:\s*"([^"\\]+)"/.exec(stdin)?.[1]) ?? process.env["WEFT_CONTROL_SOCKET"] ?? AGENT_DEFAULTS.controlSocket;
      try {
        const r = await requestCni(socket, { role: opts.role, env, stdin });
        if (r.stdout) console.log(r.stdout);
        process.exitCode = r.exit;
      } catch (e) {
        const code = env["CNI_COMMAND"] === "STATUS" ? CNI_CODE.NOT_AVAILABLE : CNI_CODE.TRY_AGAIN_LATER;
        console.log(JSON.stringify(new CniError(code, (e as Error).message).toJSON(versionOf(stdin))));
        process.exitCode = 1;
      }
    });

  program
    .command("install-cni")
    .description("install the weft and weft-ipam plugins and a conflist for the weft plugin")
    .option("--bin-dir <dir>", "where the runtime looks for plugins", "/opt/cni/bin")
    .option("--conf-dir <dir>", "where the runtime reads network configs", "/etc/cni/net.d")
    .option("--conf-name <file>", "the conflist's file name", "10-weft.conflist")
    .option("--network-name <name>", "the network's name", "weft")
    .option("--bridge <name>", "the bridge pods hang off", "cni0")
    .option("--control-socket <path>", "the agent's control socket, if not /run/weft/agent.sock")
    .option("--ipam <json>", 'the ipam section, e.g. \'{"exclude":["+2-+9"]}\'')
    .option("--force", "replace a conflist with other contents")
    .option("--no-portmap", "do not chain the standard portmap plugin (hostPort)")
    .option("--print", "print the conflist and install nothing")
    .action((o: { binDir: string; confDir: string; confName: string; networkName: string; bridge: string; controlSocket?: string; ipam?: string; force?: boolean; print?: boolean; portmap: boolean }) => {
      const opts = { ...o, controlSocket: o.controlSocket, ipam: o.ipam, force: o.force === true, portmap: o.portmap };
      if (o.print) {
        const pm = o.portmap ? findPortmap(o.binDir) : undefined;
        console.log(JSON.stringify(conflist({ ...opts, portmapVersions: pm ? pluginVersions(pm) : undefined }), null, 2));
        return;
      }
      for (const f of installCni({ ...opts, warn: (m) => console.error(`warning: ${m}`) })) console.log(`wrote ${f}`);
    });
}

/** Standard input as UTF-8, or undefined when it is longer than `max` bytes (read no further). */
function readStdin(max: number): string | undefined {
  const chunks: Buffer[] = [];
  let total = 0;
  const buf = Buffer.alloc(1 << 16);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buf, 0, buf.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
      if ((e as NodeJS.ErrnoException).code === "EOF") break;
      throw e;
    }
    if (n === 0) break;
    total += n;
    if (total > max) return undefined;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString("utf8");
}
