import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { formatIpv4, formatMac, parseIpv4 } from "../../src/common/ipv4.js";
import { formatIpv6, parseIpv6 } from "../../src/common/ipv6.js";
import { pcapFile } from "../../src/dataplane/pcap.js";
import { icmpEcho, ipv4, udp } from "../helpers/packets.js";
import { NODES6, core6As, icmp6Echo, ipv6, pseudo6 } from "./v6-nodes.js";
import { sum16 } from "../../src/dataplane/reference/checksum.js";

/**
 * Wireshark's dissectors judge the core's IPv6 frames: IPv6 inside IPv4,
 * IPv4 inside IPv6 and IPv6 inside IPv6, written by frame mode to a pcap and
 * read back field by field, every checksum verified by tshark itself.
 */
const dir = mkdtempSync(join(tmpdir(), "weft-tshark6-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FIELDS = [
  "ip.src", "ip.dst", "ip.checksum.status", "ipv6.src", "ipv6.dst", "ipv6.hlim", "ipv6.flow", "ipv6.plen", "ipv6.nxt",
  "udp.srcport", "udp.dstport", "udp.length", "udp.checksum.status", "vxlan.flag_i", "vxlan.vni", "eth.dst", "eth.src", "eth.type",
  "icmpv6.type", "icmpv6.checksum.status", "icmp.type", "_ws.expert.severity",
];

function dissect(frames: Uint8Array[]): Record<string, string[]>[] {
  const file = join(dir, `f${Math.random().toString(36).slice(2)}.pcap`);
  writeFileSync(file, pcapFile(frames));
  const out = execFileSync("tshark", [
    "-r", file, "-n", "-d", "udp.port==8472,vxlan", "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
    "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|",
    ...FIELDS.flatMap((f) => ["-e", f]),
  ], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  // Only the trailing newline goes: a row may start with empty (tab-separated) columns.
  return out.replace(/\n+$/, "").split("\n").map((line) => {
    const cols = line.split("\t");
    return Object.fromEntries(FIELDS.map((f, i) => [f, (cols[i] ?? "").split("|").filter((x) => x !== "")]));
  });
}

const pod6A = parseIpv6("2001:db8:1::5");
const pod6B = (i: number): bigint => parseIpv6(`2001:db8:2::${(10 + i).toString(16)}`);

/** An IPv6 UDP datagram with a correct checksum. */
function udp6(src: bigint, dst: bigint, sport: number, n: number): Uint8Array {
  const u = udp(sport, 5353, new Uint8Array(n).fill(7));
  const p = ipv6({ src, dst, nh: 17, payload: u });
  const c = ~sum16(p, 40, u.length, pseudo6(p, u.length, 17)) & 0xffff;
  new DataView(p.buffer).setUint16(46, c === 0 ? 0xffff : c);
  return p;
}

function frames(core: ReturnType<typeof core6As>, inners: Uint8Array[]): { frames: Uint8Array[]; sports: number[] } {
  inners.forEach((p, i) => core.setDesc(i, core.writeSlot(i, p), p.length));
  expect(core.encap(inners.length, abi.ENCAP_MODE_FRAME)).toBe(inners.length);
  const ds = inners.map((_, i) => core.desc(i));
  return { frames: ds.map((d) => core.bytes().slice(d.off, d.off + d.len)), sports: ds.map((d) => d.sport) };
}

describe("tshark reads the core's IPv6 frames as intended", () => {
  it("IPv6 in IPv4: outer IPv4 + UDP + VXLAN, inner Ethernet type 0x86dd, inner ICMPv6/UDP checksums good", () => {
    const core = core6As(0, { vni: 4242, udpChecksum: true });
    const inners = Array.from({ length: 6 }, (_, i) => (i % 2 ? icmp6Echo(pod6A, pod6B(i), 9, i, new Uint8Array(48)) : udp6(pod6A, pod6B(i), 30000 + i, 100 + i)));
    const { frames: fs, sports } = frames(core, inners);
    const rows = dissect(fs);
    expect(rows).toHaveLength(6);
    rows.forEach((row, i) => {
      expect(row["ip.src"]).toEqual([formatIpv4(NODES6[0]!.underlay)]);
      expect(row["ip.dst"]).toEqual([formatIpv4(NODES6[1]!.underlay)]);
      expect(row["ip.checksum.status"]).toEqual(["1"]);
      expect(row["ipv6.src"]).toEqual([formatIpv6(pod6A)]);
      expect(row["ipv6.dst"]).toEqual([formatIpv6(pod6B(i))]);
      expect(row["udp.srcport"]?.[0]).toBe(String(sports[i]));
      expect(row["udp.dstport"]?.[0]).toBe("8472");
      expect(row["udp.checksum.status"]?.[0]).toBe("1");
      expect(row["vxlan.flag_i"]).toEqual(["1"]);
      expect(row["vxlan.vni"]).toEqual(["4242"]);
      expect(row["eth.dst"]).toEqual([formatMac(NODES6[1]!.vtepMac)]);
      expect(row["eth.src"]).toEqual([formatMac(NODES6[0]!.vtepMac)]);
      expect(row["eth.type"]).toEqual(["0x86dd"]);
      if (i % 2) {
        expect(row["icmpv6.type"]).toEqual(["128"]);
        expect(row["icmpv6.checksum.status"]).toEqual(["1"]);
      } else expect(row["udp.checksum.status"]).toEqual(["1", "1"]);
    });
  });

  it("IPv4 in IPv6 and IPv6 in IPv6: outer IPv6 hop limit, flow label, mandatory UDP checksum good", () => {
    const core = core6As(0, { outer6: true, hopLimit: 17, flowLabel: true });
    const inner4 = ipv4({ src: parseIpv4("198.18.1.5"), dst: parseIpv4("198.18.2.9"), proto: 1, payload: icmpEcho(3, 4, new Uint8Array(32)) });
    const inner6 = icmp6Echo(pod6A, pod6B(1), 5, 6, new Uint8Array(40));
    const { frames: fs, sports } = frames(core, [inner4, inner6]);
    const rows = dissect(fs);
    expect(rows).toHaveLength(2);
    rows.forEach((row, i) => {
      expect(row["ipv6.src"]?.[0]).toBe(formatIpv6(NODES6[0]!.underlay6));
      expect(row["ipv6.dst"]?.[0]).toBe(formatIpv6(NODES6[1]!.underlay6));
      expect(row["ipv6.hlim"]?.[0]).toBe("17");
      expect(row["ipv6.nxt"]?.[0]).toBe("17");
      expect(row["ipv6.plen"]?.[0]).toBe(String(fs[i]!.length - 40));
      expect(Number(row["ipv6.flow"]?.[0])).toBeGreaterThan(0);
      expect(row["udp.srcport"]?.[0]).toBe(String(sports[i]));
      expect(row["udp.length"]?.[0]).toBe(String(fs[i]!.length - 40));
      expect(row["udp.checksum.status"]?.[0]).toBe("1");
      expect(row["vxlan.vni"]).toEqual(["1"]);
      expect(row["eth.dst"]).toEqual([formatMac(NODES6[1]!.vtepMac)]);
    });
    expect(rows[0]!["eth.type"]).toEqual(["0x0800"]);
    expect(rows[0]!["ip.src"]).toEqual(["198.18.1.5"]);
    expect(rows[0]!["ip.checksum.status"]).toEqual(["1"]);
    expect(rows[0]!["icmp.type"]).toEqual(["8"]);
    expect(rows[1]!["eth.type"]).toEqual(["0x86dd"]);
    expect(rows[1]!["ipv6.dst"]?.[1]).toBe(formatIpv6(pod6B(1)));
    expect(rows[1]!["icmpv6.checksum.status"]).toEqual(["1"]);
  });

  it("tshark sees a corrupted outer IPv6 UDP datagram's checksum as bad (the check can fail)", () => {
    const core = core6As(0, { outer6: true });
    const { frames: fs } = frames(core, [icmp6Echo(pod6A, pod6B(2), 1, 1, new Uint8Array(8))]);
    const f = fs[0]!;
    f[60]! ^= 0x10; // inside the VXLAN-carried inner packet
    expect(dissect([f])[0]?.["udp.checksum.status"]?.[0]).toBe("0");
  });
});
