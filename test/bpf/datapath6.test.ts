import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bpfScratch } from "./scratch.js";
import { projectRoot } from "../../src/common/paths.js";
import { Netns, uniqueTag, veth } from "../../src/harness/netns.js";

/**
 * Real pods pinging each other through the ebpf data path, two nodes
 * programmed by the built Network (test/bpf/network-driver.mjs, which exits:
 * programs stay attached and maps pinned, as after an agent stops). The
 * nodes do not forward (ip_forward and IPv6 forwarding stay off), so every
 * packet that crosses went through the programs; tshark on the underlay
 * shows which family carried it. Per underlay: both families, IPv4 only
 * (v6-in-v4), IPv6 only (v4-in-v6).
 */
const DRIVER = join(projectRoot(), "test", "bpf", "network-driver.mjs");
const scratch = bpfScratch("weft-bpffs6dp-");
const { made, dirs } = scratch;

interface Underlay {
  readonly v4: boolean;
  readonly v6: boolean;
}

interface Pair {
  readonly nodes: Netns[];
  readonly pods: Netns[];
  readonly mtu: number;
  /** Runs `argv` in pod 0 while tshark watches node 1's underlay; returns the command's success and the VXLAN frames' outer family, protocols and UDP checksum. */
  capture(argv: string[]): Promise<{ ok: boolean; frames: { protocols: string; udpChecksum: string }[] }>;
}

async function driver(ns: Netns, stateDir: string, bpf: string, iface: object, steps: object[]): Promise<unknown[]> {
  const out = await ns.exec([process.execPath, DRIVER, stateDir, bpf], { input: JSON.stringify({ iface, steps }), timeoutMs: 60_000 });
  const r = JSON.parse(out.trim().split("\n").pop() ?? "[]") as unknown[];
  for (const x of r) if (x && typeof x === "object" && "error" in x) throw new Error(`driver: ${JSON.stringify(x)}`);
  return r;
}

/** Two nodes joined by an underlay veth, one dual-stack pod each (routed wiring: the gateway on the host side of the pod's veth). */
async function pair(u: Underlay): Promise<Pair> {
  const tag = uniqueTag();
  const nodes = [await Netns.create("n0", tag), await Netns.create("n1", tag)];
  const pods = [await Netns.create("p0", tag), await Netns.create("p1", tag)];
  made.push(...nodes, ...pods);
  await veth(nodes[0]!, "u0", nodes[1]!, "u1");
  const leases: object[] = [];
  for (const i of [0, 1]) {
    const n = nodes[i]!, p = pods[i]!, s = i + 1;
    if (u.v4) await n.ip("addr", "add", `192.0.2.${s}/24`, "dev", `u${i}`);
    if (u.v6) await n.ip("-6", "addr", "add", `2001:db8:ff::${s}/64`, "dev", `u${i}`, "nodad");
    await veth(p, "eth0", n, "p0");
    await n.ip("addr", "add", `198.18.${s}.1/32`, "dev", "p0");
    await n.ip("-6", "addr", "add", `2001:db8:${s}::1/128`, "dev", "p0", "nodad");
    await n.ip("route", "add", `198.18.${s}.5/32`, "dev", "p0");
    await n.ip("-6", "route", "add", `2001:db8:${s}::5/128`, "dev", "p0");
    await p.ip("addr", "add", `198.18.${s}.5/32`, "dev", "eth0");
    await p.ip("-6", "addr", "add", `2001:db8:${s}::5/128`, "dev", "eth0", "nodad");
    await p.ip("route", "add", `198.18.${s}.1`, "dev", "eth0", "scope", "link");
    await p.ip("route", "add", "default", "via", `198.18.${s}.1`, "dev", "eth0");
    await p.ip("-6", "route", "add", `2001:db8:${s}::1`, "dev", "eth0");
    await p.ip("-6", "route", "add", "default", "via", `2001:db8:${s}::1`, "dev", "eth0");
    leases.push({
      key: `198.18.${s}.0-24&2001:db8:${s}::-64`, subnet: `198.18.${s}.0/24`, subnet6: `2001:db8:${s}::/64`,
      publicIp: u.v4 ? `192.0.2.${s}` : "0.0.0.0", ...(u.v6 ? { publicIpv6: `2001:db8:ff::${s}` } : {}),
    });
  }
  const iface = (i: number) => ({ publicIp: u.v4 ? `192.0.2.${i + 1}` : "0.0.0.0", ...(u.v6 ? { publicIpv6: `2001:db8:ff::${i + 1}` } : {}) });
  const state = [0, 1].map(() => mkdtempSync(join(tmpdir(), "weft-state6dp-")));
  dirs.push(...state);
  const bpfDir = (i: number) => join(scratch.bpffs(), `${tag}-${i}`);
  // First run: device (its MAC is the node's VTEP MAC), own subnet, the pod.
  const macs: string[] = [];
  let mtu = 0;
  for (const i of [0, 1]) {
    const [link] = JSON.parse(await pods[i]!.ip("-json", "link", "show", "dev", "eth0")) as { address: string }[];
    const r = await driver(nodes[i]!, state[i]!, bpfDir(i), iface(i), [
      { op: "configureLocal", lease: { ...leases[i], mac: "02:00:00:00:00:00" } },
      { op: "addEndpoint", ip: `198.18.${i + 1}.5`, ip6: `2001:db8:${i + 1}::5`, ifname: "p0", mac: link?.address },
      { op: "dump" }, { op: "status" },
    ]);
    macs.push((r[2] as { leaseAttrs: { mac: string } }).leaseAttrs.mac);
    mtu = (r[3] as { mtu: number }).mtu;
  }
  // Second run: the peer (a restart: maps and programs are reused).
  for (const i of [0, 1]) {
    const peer = 1 - i;
    await driver(nodes[i]!, state[i]!, bpfDir(i), iface(i), [{ op: "apply", added: [{ ...leases[peer], mac: macs[peer], mac6: macs[peer] }] }]);
  }
  for (const p of pods) await p.ip("link", "set", "eth0", "mtu", String(mtu));
  return {
    nodes, pods, mtu,
    async capture(argv) {
      const t = await tshark(nodes[1]!, ["-i", "u1", "-a", "duration:8", "-c", "2", "-f", "udp port 8472", "-d", "udp.port==8472,vxlan", "-T", "fields", "-e", "frame.protocols", "-e", "udp.checksum"]);
      let ok = true;
      try {
        await pods[0]!.exec(argv, { timeoutMs: 20_000 });
      } catch {
        ok = false;
      }
      const out = await t.finished;
      const frames = out.trim().split("\n").filter(Boolean).map((l) => {
        const [protocols = "", udpChecksum = ""] = l.split("\t");
        return { protocols, udpChecksum: udpChecksum.split(",")[0] ?? "" };
      });
      return { ok, frames };
    },
  };
}

/** Starts tshark in `ns` and resolves once it captures (its "Capture started" line, plus a moment: the line comes before the socket sees packets). */
async function tshark(ns: Netns, args: string[]): Promise<{ finished: Promise<string> }> {
  const t = ns.spawn(["tshark", "-l", "-n", ...args]);
  let out = "";
  let err = "";
  t.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  const finished = new Promise<string>((resolve) => t.on("exit", () => resolve(out)));
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 10_000);
    t.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
      if (/Capture started|Capturing on/.test(err)) {
        clearTimeout(timer);
        setTimeout(resolve, 700);
      }
    });
  });
  return { finished };
}

const ping6 = (extra: string[] = []) => ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "3", "-q", ...extra, "2001:db8:2::5"];
const ping4 = ["ping", "-c", "3", "-i", "0.2", "-W", "3", "-q", "198.18.2.5"];

describe("pods over the ebpf data path, dual-stack", () => {
  it("both underlays: IPv6 pods over IPv6 (outer UDP checksum set), IPv4 pods over IPv4 (zero checksum), full-size IPv6 packets fit", async () => {
    const p = await pair({ v4: true, v6: true });
    const six = await p.capture(ping6());
    expect(six.ok, "ping -6").toBe(true);
    expect(six.frames[0]?.protocols).toMatch(/^eth:ethertype:ipv6:udp:vxlan:eth:ethertype:ipv6:icmpv6/);
    expect(six.frames[0]?.udpChecksum).not.toBe("0x0000");
    const four = await p.capture(ping4);
    expect(four.ok, "ping").toBe(true);
    expect(four.frames[0]?.protocols).toMatch(/^eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:icmp/);
    expect(four.frames[0]?.udpChecksum).toBe("0x0000");
    // The pods' MTU leaves room for the IPv6 encapsulation (70 bytes): a packet of exactly that size crosses unfragmented.
    expect(p.mtu).toBe(1500 - 70);
    expect((await p.capture(ping6(["-s", String(p.mtu - 48), "-M", "do"]))).ok, "full-size ping -6").toBe(true);
    // The node itself reaches a remote pod over IPv6: host route into the device, the egress program, from the device's address.
    await p.nodes[0]!.exec(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "-q", "2001:db8:2::5"]);
    await p.nodes[0]!.exec(["ping", "-6", "-c", "1", "-W", "2", "-q", "-I", "2001:db8:1::", "2001:db8:2::5"]);
  }, 90_000);

  it("a pod's neighbour solicitation for its gateway passes the program and the kernel answers it with a valid NA (as it answers ARP)", async () => {
    const p = await pair({ v4: true, v6: true });
    const pod = p.pods[0]!;
    await pod.ip("-6", "neigh", "flush", "dev", "eth0");
    const t = await tshark(pod, ["-i", "eth0", "-a", "duration:4", "-f", "icmp6 and ip6[40] == 136",
      "-T", "fields", "-e", "icmpv6.nd.na.target_address", "-e", "icmpv6.checksum.status", "-e", "ipv6.hlim"]);
    await pod.exec(["ping", "-6", "-c", "1", "-W", "3", "-q", "2001:db8:2::5"]);
    const out = await t.finished;
    // The NA for the gateway (the pod's own NAs, answering the node, are there too): checksum verified good (1), hop limit 255 (RFC 4861: on-link only).
    const na = out.trim().split("\n").map((l) => l.split("\t")).find((f) => f[0] === "2001:db8:1::1");
    expect(na, out).toEqual(["2001:db8:1::1", "1", "255"]);
    const neigh = await pod.ip("-6", "neigh", "show", "dev", "eth0");
    expect(neigh).toMatch(/^2001:db8:1::1 lladdr [0-9a-f:]{17} (REACHABLE|STALE|DELAY)/m);
  }, 90_000);

  it("IPv4 underlay only: IPv6 pods cross inside IPv4 (v6-in-v4)", async () => {
    const p = await pair({ v4: true, v6: false });
    const six = await p.capture(ping6());
    expect(six.ok).toBe(true);
    expect(six.frames[0]?.protocols).toMatch(/^eth:ethertype:ip:udp:vxlan:eth:ethertype:ipv6:icmpv6/);
    expect(p.mtu).toBe(1500 - 50);
  }, 90_000);

  it("IPv6 underlay only: IPv4 pods cross inside IPv6 (v4-in-v6), and IPv6 pods too", async () => {
    const p = await pair({ v4: false, v6: true });
    const four = await p.capture(ping4);
    expect(four.ok).toBe(true);
    expect(four.frames[0]?.protocols).toMatch(/^eth:ethertype:ipv6:udp:vxlan:eth:ethertype:ip:icmp/);
    expect((await p.capture(ping6())).ok).toBe(true);
  }, 90_000);
});
