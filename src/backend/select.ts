import { ConfigError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { ebpfBackend } from "./ebpf/index.js";
import { ebpfObstacles } from "./ebpf/probe.js";
import { tunBackend, tunObstacles } from "./tun/index.js";
import type { Backend, Network, RegisterContext } from "./types.js";
import { vxlanBackend } from "./vxlan/index.js";

/** What `--backend` may name. */
export type BackendRequest = "auto" | "vxlan" | "ebpf" | "tun";

/**
 * The backends to try, in order. A named backend is the only one (refused
 * with the reasons when this host cannot run it). auto: ebpf when the host
 * allows it, else tun (restricted hosts), else the kernel vxlan device; each
 * one left out is logged with why.
 */
export function backendCandidates(want: BackendRequest, bpffs: string, log: Logger): Backend[] {
  if (want === "vxlan") return [vxlanBackend];
  if (want === "tun") {
    const why = tunObstacles();
    if (why.length > 0) throw new ConfigError(`--backend tun cannot run here: ${why.join("; ")}`);
    return [tunBackend];
  }
  const obstacles = ebpfObstacles(bpffs);
  if (want === "ebpf") {
    if (obstacles.length > 0) throw new ConfigError(`--backend ebpf cannot run here: ${obstacles.join("; ")}`, { hint: "fix those, or use --backend vxlan, tun or auto" });
    return [ebpfBackend];
  }
  const tunWhy = tunObstacles();
  if (obstacles.length > 0) {
    log.info({ reasons: obstacles }, `auto: the ebpf backend cannot run here; using ${tunWhy.length === 0 ? "tun" : "vxlan"}`);
    if (tunWhy.length > 0) log.info({ reasons: tunWhy }, "auto: the tun backend cannot run here either");
    return tunWhy.length === 0 ? [tunBackend, vxlanBackend] : [vxlanBackend];
  }
  return tunWhy.length === 0 ? [ebpfBackend, tunBackend, vxlanBackend] : [ebpfBackend, vxlanBackend];
}

/**
 * Registers the first candidate that starts; under auto a failure falls
 * through to the next, logged with why. Returns the network and the choice
 * in words ("auto: tun (ebpf failed to start)", "vxlan (asked for)").
 */
export async function registerFirst(
  candidates: readonly Backend[], want: BackendRequest, ctx: Omit<RegisterContext, "log">, log: Logger,
): Promise<{ network: Network; choice: string }> {
  for (const [i, b] of candidates.entries()) {
    try {
      const network = await b.register({ ...ctx, log: log.child({ backend: b.name }) });
      const choice = want === "auto" ? `auto: ${b.name}${i > 0 ? ` (${candidates[0]?.name} failed to start)` : ""}` : `${b.name} (asked for)`;
      log.info({ choice }, "backend selected");
      return { network, choice };
    } catch (e) {
      if (i === candidates.length - 1) throw e;
      log.warn({ backend: b.name, err: (e as Error).message }, "auto: backend failed to start; trying the next");
    }
  }
  throw new ConfigError("no backend to start");
}
