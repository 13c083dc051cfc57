import { join } from "node:path";
import { run } from "../common/exec.js";
import { EtcdServer } from "./etcd.js";
import type { Netns } from "./netns.js";

/** The member addresses on the hub bridge: 192.0.2.251-253. */
export const MEMBER_HOSTS = ["192.0.2.251", "192.0.2.252", "192.0.2.253"] as const;

/**
 * A real 3-member etcd cluster in the hub namespace: member k serves clients
 * on 192.0.2.(251 + k):2379 and its peers on :2380 of the same address, each
 * with its own data dir, log and unix socket (reached from this process
 * through its forwarder, as EtcdServer does). Members are killed and started
 * again one by one (leader loss) or two at a time (quorum loss); a member
 * started again rejoins with its data.
 */
export class EtcdCluster {
  private constructor(readonly members: readonly EtcdServer[]) {}

  /** Adds the member addresses to `bridge` in `hub` and starts all three (together: each waits for a quorum). */
  static async start(dir: string, hub: Netns, bridge = "br0"): Promise<EtcdCluster> {
    for (const h of MEMBER_HOSTS) await hub.ip("addr", "add", `${h}/24`, "dev", bridge);
    const initialCluster = MEMBER_HOSTS.map((h, k) => `m${k}=http://${h}:2380`).join(",");
    // Together: a member answers its health check only once a quorum is up.
    const started = await Promise.allSettled(MEMBER_HOSTS.map((h, k) =>
      EtcdServer.start({ dir: join(dir, `m${k}`), netns: hub, host: h, port: 2379, peerPort: 2380, name: `m${k}`, peerHost: h, initialCluster })));
    const servers = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = started.find((r) => r.status === "rejected");
    if (failed) {
      await Promise.all(servers.map((m) => m.close()));
      throw failed.reason;
    }
    return new EtcdCluster(servers);
  }

  /** Every member's client URL, comma-separated (for --etcd-endpoints). */
  get endpoints(): string {
    return this.members.map((m) => m.endpoint).join(",");
  }

  /** Every member's forwarded endpoint in this process. */
  get localEndpoints(): string[] {
    return this.members.map((m) => m.localEndpoint);
  }

  member(k: number): EtcdServer {
    const m = this.members[k];
    if (!m) throw new Error(`no etcd member ${k}`);
    return m;
  }

  /** The index of the member that is leader now, asked of the running members; undefined when none knows one. */
  async leader(): Promise<number | undefined> {
    for (const m of this.members.filter((x) => x.running)) {
      const out = await run(["etcdctl", "--endpoints", m.localEndpoint, "--command-timeout", "2s", "endpoint", "status", "-w", "json"]).catch(() => "");
      const leader = /"leader":(\d+)/.exec(out)?.[1];
      if (!leader || leader === "0") continue;
      for (let k = 0; k < this.members.length; k++) {
        const mine = await run(["etcdctl", "--endpoints", this.member(k).localEndpoint, "--command-timeout", "2s", "endpoint", "status", "-w", "json"]).catch(() => "");
        if (/"member_id":(\d+)/.exec(mine)?.[1] === leader) return k;
      }
    }
    return undefined;
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.close()));
  }
}
