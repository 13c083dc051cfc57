import type { Command } from "commander";
import { AGENT_DEFAULTS } from "../../agent/options.js";
import { queryIpam } from "../../agent/control.js";

interface Listed {
  subnet: string | null;
  waitingForGrace: number;
  usage: { network: string; pool: string; capacity: number; used: number; reserved: number; family?: number }[];
  subnet6?: string;
  allocations: { ip?: string; ip6?: string; pool: string; network: string; containerId: string; ifname: string; podNamespace: string; podName: string; netns: string; created: number; dead: boolean; stale: boolean }[];
}

function print(r: Listed, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
  console.log(`subnet: ${r.subnet ?? "none (no lease held)"}${r.subnet6 ? `   subnet6: ${r.subnet6}` : ""}   allocations: ${r.allocations.length}   dead, waiting out the grace: ${r.waitingForGrace}`);
  for (const u of r.usage) console.log(`  pool ${u.network}/${u.pool}${u.family === 6 ? " (IPv6)" : ""}: ${u.used} used, ${u.reserved} reserved, ${u.capacity - u.used - u.reserved} free of ${u.capacity}`);
  for (const a of r.allocations) {
    const age = Math.round((Date.now() - a.created) / 1000);
    const flags = [a.dead ? "netns-gone" : "", a.stale ? "old-subnet" : ""].filter(Boolean).join(",");
    const pod = a.podName ? `${a.podNamespace}/${a.podName}` : "-";
    console.log(`${[a.ip, a.ip6].filter(Boolean).join(",").padEnd(15)} ${a.pool.padEnd(10)} ${a.containerId.slice(0, 16).padEnd(16)} ${a.ifname.padEnd(6)} ${pod.padEnd(24)} ${String(age).padStart(6)}s ${flags}`);
  }
}

export function registerIpam(program: Command): void {
  const ipam = program.command("ipam").description("inspect and repair pod address allocations (ls, show, gc)");
  const sock = (): string => process.env["WEFT_CONTROL_SOCKET"] ?? AGENT_DEFAULTS.controlSocket;
  ipam.command("ls").description("list every allocation and pool usage")
    .option("--control-socket <path>", "the agent's control socket", sock())
    .option("--json", "print JSON")
    .action(async (o: { controlSocket: string; json?: boolean }) => print(await queryIpam<Listed>(o.controlSocket, "ipam-ls"), o.json === true));
  ipam.command("show").description("allocations of one address, container ID (prefix) or pod name").argument("<query>")
    .option("--control-socket <path>", "the agent's control socket", sock())
    .option("--json", "print JSON")
    .action(async (q: string, o: { controlSocket: string; json?: boolean }) => {
      const r = await queryIpam<Listed>(o.controlSocket, `ipam-show ${q}`);
      if (r.allocations.length === 0) {
        console.error(`no allocation matches "${q}"`);
        process.exitCode = 1;
      }
      print(r, o.json === true);
    });
  ipam.command("gc").description("release now the addresses whose pod's network namespace is gone past the grace period")
    .option("--control-socket <path>", "the agent's control socket", sock())
    .option("--dead-now", "do not wait out the grace period (the namespace is still checked just before release)")
    .action(async (o: { controlSocket: string; deadNow?: boolean }) => {
      const r = await queryIpam<{ released: number; waitingForGrace: number }>(o.controlSocket, `ipam-gc ${JSON.stringify({ deadNow: o.deadNow === true })}`);
      console.log(`released ${r.released}; ${r.waitingForGrace} more wait out the grace period`);
    });
}
