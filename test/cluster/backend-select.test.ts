import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../../src/harness/cluster.js";

/**
 * --backend auto picks ebpf when the host allows it and otherwise the
 * userspace tun path, logging exactly why. Tested for real: no bpffs, and
 * CAP_BPF + CAP_SYS_ADMIN taken away with setpriv (a restricted host).
 */
let c: Cluster;
beforeAll(async () => {
  c = await Cluster.create({ nodes: 3, podsPerNode: 1, manualNodes: [0, 1, 2] });
}, 120_000);
afterAll(async () => {
  await c?.destroy();
});

async function startWith(i: number, extra: string[], wrap: string[] = []): Promise<string> {
  c.startAgent(i, ["--backend", "auto", ...extra], wrap);
  const st = await c.waitReady(i);
  await c.addPods(c.node(i));
  return st.backendChoice;
}

describe("--backend auto", () => {
  it("uses ebpf where it can, and tun (saying why) where it cannot; the three nodes reach each other", async () => {
    expect(await startWith(0, [])).toBe("auto: ebpf");

    const notBpffs = join(c.dir, "plain-dir");
    mkdirSync(notBpffs);
    expect(await startWith(1, ["--bpffs", notBpffs])).toBe("auto: tun");
    expect(c.agentLog(1)).toMatch(/"reasons":\["[^"]*plain-dir is not a bpffs[^"]*"\],"msg":"auto: the ebpf backend cannot run here; using tun/);

    // A restricted host: root, but without CAP_BPF and CAP_SYS_ADMIN.
    const drop = ["setpriv", "--bounding-set", "-bpf,-sys_admin", "--inh-caps", "-bpf,-sys_admin", "--"];
    expect(await startWith(2, [], drop)).toBe("auto: tun");
    expect(c.agentLog(2)).toMatch(/"reasons":\["neither CAP_BPF nor CAP_SYS_ADMIN is held[^"]*"\],"msg":"auto: the ebpf backend cannot run here; using tun/);

    expect(await c.pingAll()).toEqual([]);
  }, 90_000);

  it("--backend ebpf on a host that cannot run it refuses to start, saying why", async () => {
    const child = c.startAgent(2, ["--backend", "ebpf", "--bpffs", join(c.dir, "plain-dir"), "--control-socket", join(c.dir, "other.sock"), "--health-listen", "off"]);
    const code = await new Promise<number | null>((r) => child.on("exit", r));
    expect(code).toBe(1);
    expect(c.agentLog(2)).toMatch(/--backend ebpf cannot run here: .*plain-dir is not a bpffs/);
  });
});
