import type { Command } from "commander";
import { AGENT_DEFAULTS } from "../../agent/options.js";
import { queryStatus } from "../../agent/control.js";
import type { AgentStatus } from "../../agent/status.js";
import type { DiscoverySummary } from "../../discovery/service.js";
import { ConfigError } from "../../common/errors.js";
import { capabilityTable } from "../capabilities.js";

/** Peers `weft status` lists unless told otherwise: past a few dozen the list says little and costs the agent a large answer. */
const PEERS_SHOWN = 20;

export function registerStatus(program: Command): void {
  program
    .command("status")
    .description("ask the running agent for subnet, backend, peers and counters; --capabilities: what weft can do today")
    .option("--capabilities", "print the capability status table and exit")
    .option("--control-socket <path>", "the agent's control socket", process.env["WEFT_CONTROL_SOCKET"] ?? AGENT_DEFAULTS.controlSocket)
    .option("--json", "print the raw status document")
    .option("--peers <n|all>", `how many peers to list (all: every one); --json lists every peer unless this is given`)
    .option("--peers-from <n>", "list peers from this position (sorted by subnet)", "0")
    .action(async (opts: { capabilities?: boolean; controlSocket: string; json?: boolean; peers?: string; peersFrom: string }) => {
      if (opts.capabilities) {
        console.log(capabilityTable());
        return;
      }
      const whole = (v: string): number => (/^\d+$/.test(v.trim()) ? Number(v) : NaN);
      const limit = opts.peers === undefined ? (opts.json ? Infinity : PEERS_SHOWN) : opts.peers === "all" ? Infinity : whole(opts.peers);
      const offset = whole(opts.peersFrom);
      if (!(limit === Infinity || (Number.isInteger(limit) && limit >= 0))) throw new ConfigError(`--peers ${opts.peers}: a whole number or all`);
      if (!Number.isInteger(offset) || offset < 0) throw new ConfigError(`--peers-from ${opts.peersFrom}: a whole number of 0 or more`);
      const st = await queryStatus(opts.controlSocket, 10_000, limit === Infinity && offset === 0 ? undefined : { offset, limit: limit === Infinity ? 2 ** 31 : limit });
      if (opts.json) {
        console.log(JSON.stringify(st, null, 2));
        return;
      }
      const failing = Object.entries(st.readiness).filter(([, v]) => !v).map(([k]) => k);
      console.log(`ready:    ${st.ready ? "yes" : `no (waiting for: ${failing.join(", ")})`}`);
      for (const w of st.waiting) console.log(`waiting:  ${w.what} since ${w.since} (${w.attempts} attempts): ${w.error}`);
      console.log(`network:  ${st.network ?? "-"}   subnet: ${st.subnet ?? "-"}   lease: ${st.leaseSecondsLeft === -1 ? "reservation" : `${st.leaseSecondsLeft ?? "-"} s left`}`);
      console.log(`backend:  ${st.backendChoice}   device: ${st.device ?? "-"}   mtu: ${st.mtu ?? "-"}`);
      const paths = Object.entries(st.paths ?? {});
      if (paths.length > 0) console.log(`paths:    ${paths.map(([k, v]) => `${k} ${v}`).join("   ")}`);
      console.log(`node:     public ${st.publicIp ?? "-"}   vtep ${st.vtepMac ?? "-"}`);
      const peerCount = st.peerCount ?? st.peers.length; // an agent from before peer windows lists every peer
      console.log(`peers:    ${peerCount}${st.peers.length < peerCount ? ` (${st.peers.length === 0 ? "none" : `${st.peersFrom + 1}-${st.peersFrom + st.peers.length}`} shown; weft status --peers all, or --peers N --peers-from K)` : ""}`);
      for (const p of st.peers) console.log(`  ${p.subnet.padEnd(18)} via ${p.publicIp.padEnd(15)} ${p.vtepMac}`);
      if (st.rejectedLeaseCount > 0) {
        console.log(`rejected: ${st.rejectedLeaseCount} lease keys not used${st.rejectedLeaseCount > st.rejectedLeases.length ? ` (first ${st.rejectedLeases.length} shown)` : ""}`);
        for (const r of st.rejectedLeases) console.log(`  ${r.key.padEnd(18)} ${r.reason}: ${r.detail}`);
      }
      const plain = Object.entries(st.counters).filter(([k]) => !k.startsWith("bpf_"));
      const bpfCounters = Object.entries(st.counters).filter(([k]) => k.startsWith("bpf_"));
      console.log(`counters: ${plain.map(([k, v]) => `${k}=${v}`).join(" ")}`);
      if (bpfCounters.length > 0) console.log(`bpf packets by reason: ${bpfCounters.map(([k, v]) => `${k.slice(4)}=${v}`).join(" ")}`);
      const d = st.dns;
      if (d) {
        console.log(`dns:      ${d.listen.join(", ")}   registry ${d.synced ? "synced" : "not synced yet"}   zone serial ${d.zoneSerial}, ${d.zoneNames} names`);
        // The UDP path per address: batch is the fast one; dgram says why.
        for (const u of d.udp ?? []) console.log(`          udp ${u.listen} ${u.path}${u.why ? ` (${u.why})` : ""}`);
        console.log(`          queries ${d.queries} (noerror ${d.answered.noerror}, nxdomain ${d.answered.nxdomain}, servfail ${d.answered.servfail}, refused ${d.answered.refused})   cache ${d.cache.entries} entries, ${d.cache.hits} hits, ${d.cache.misses} misses, ${d.cache.stale} stale`);
        console.log(`          upstreams ${d.upstreams.length ? d.upstreams.map((u) => `${u.upstream} ${u.state}`).join(", ") : "none (forwarding off)"}`);
      }
      const disc = (st as AgentStatus & { discovery?: DiscoverySummary }).discovery;
      if (disc) for (const line of discoveryLines(disc)) console.log(line);
    });
}

/** The discovery API's lines of `weft status`. */
export function discoveryLines(d: DiscoverySummary): string[] {
  const snaps = Object.entries(d.snapshots).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ");
  const refused = Object.entries(d.refused).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ");
  const pubs = d.publications.reduce((n, p) => n + p.count, 0);
  return [
    `discovery: ${d.listen.join(", ") || "-"}   revision ${d.revision}   replay ${d.replay.entries} changes (complete after revision ${d.replay.floor})`,
    `          subscribers ${d.subscribers.tcp + d.subscribers.unix} (tcp ${d.subscribers.tcp}, unix ${d.subscribers.unix})   events sent ${d.eventsSent}   ` +
      `snapshots ${snaps || "0"}   resumed ${d.resumed} (${d.replayed} events)   dropped slow ${d.ended.slow}`,
    `          publications ${d.publication ? pubs : "off"}${d.publications.length ? `: ${d.publications.map((p) => `${p.pod} ${p.count}`).join(", ")}` : ""}` +
      `${refused ? `   refused ${refused}` : ""}`,
  ];
}
