import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { formatIpv4, formatMac, parseIpv4 } from "../../src/common/ipv4.js";
import { pcapFile } from "../../src/dataplane/pcap.js";
import { icmpEcho, ipv4, udp } from "../helpers/packets.js";
import { NODES, coreAs } from "../helpers/tunnel.js";

/**
 * Wireshark's VXLAN dissector is the judge: frames built by the core's frame
 * mode are written to a pcap and read back field by field by tshark.
 */
const dir = mkdtempSync(join(tmpdir(), "weft-tshark-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FIELDS = [
  "ip.src", "ip.dst", "ip.checksum.status", "ip.ttl", "udp.srcport", "udp.dstport", "udp.checksum.status",
  "vxlan.flag_i", "vxlan.vni", "eth.dst", "eth.src", "eth.type", "ip.proto", "udp.length",
];

function dissect(frames: Uint8Array[], extra: string[] = []): Record<string, string[]>[] {
  const file = join(dir, `f${Math.random().toString(36).slice(2)}.pcap`);
  writeFileSync(file, pcapFile(frames));
  const out = execFileSync("tshark", [
    "-r", file, "-n", "-d", "udp.port==8472,vxlan", "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
    ...extra, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|",
    ...FIELDS.flatMap((f) => ["-e", f]),
  ], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  return out.trim().split("\n").map((line) => {
    const cols = line.split("\t");
    return Object.fromEntries(FIELDS.map((f, i) => [f, (cols[i] ?? "").split("|").filter((x) => x !== "")]));
  });
}

describe("tshark reads the core's frames as intended", () => {
  it("VNI, ports, inner MACs, inner and outer IPv4 and checksums", () => {
    const core = coreAs(0, {}, { vni: 4242, udpChecksum: true });
    const src = parseIpv4("198.18.1.5");
    const frames: Uint8Array[] = [];
    const want: { dst: number; node: number }[] = [];
    for (let i = 0; i < 8; i++) {
      const node = 1 + (i % 2);
      const dst = parseIpv4(`198.18.${node + 1}.${10 + i}`);
      const inner = i % 2
        ? ipv4({ src, dst, proto: 1, payload: icmpEcho(9, i, new Uint8Array(48)) })
        : ipv4({ src, dst, proto: 17, payload: udp(30000 + i, 5353, new Uint8Array(100 + i)) });
      core.setDesc(i, core.writeSlot(i, inner), inner.length);
      want.push({ dst, node });
    }
    expect(core.encap(8, abi.ENCAP_MODE_FRAME)).toBe(8);
    const descs = want.map((_, i) => core.desc(i));
    for (const d of descs) frames.push(core.bytes().slice(d.off, d.off + d.len));
    const rows = dissect(frames);
    expect(rows).toHaveLength(8);
    rows.forEach((row, i) => {
      const w = want[i]!;
      const d = descs[i]!;
      expect(row["ip.src"]).toEqual([formatIpv4(NODES[0].underlay), formatIpv4(src)]);
      expect(row["ip.dst"]).toEqual([formatIpv4(NODES[w.node]!.underlay), formatIpv4(w.dst)]);
      // Wireshark's checksum status: 0 = Bad, 1 = Good, 2 = Unverified.
      expect(row["ip.checksum.status"]).toEqual(["1", "1"]);
      expect(row["ip.ttl"]?.[0]).toBe("64");
      expect(row["udp.srcport"]?.[0]).toBe(String(d.sport));
      expect(row["udp.dstport"]?.[0]).toBe("8472");
      expect(row["udp.checksum.status"]?.[0]).toBe("1");
      expect(row["udp.length"]?.[0]).toBe(String(d.len - 20));
      expect(row["vxlan.flag_i"]).toEqual(["1"]);
      expect(row["vxlan.vni"]).toEqual(["4242"]);
      expect(row["eth.dst"]).toEqual([formatMac(NODES[w.node]!.vtepMac)]);
      expect(row["eth.src"]).toEqual([formatMac(NODES[0].vtepMac)]);
      expect(row["eth.type"]).toEqual(["0x0800"]);
      expect(row["ip.proto"]).toEqual(["17", i % 2 ? "1" : "17"]);
    });
  });

  it("tshark sees a corrupted outer header checksum as bad (the check can fail)", () => {
    const core = coreAs(0);
    const inner = ipv4({ src: parseIpv4("198.18.1.5"), dst: parseIpv4("198.18.2.5"), proto: 1, payload: icmpEcho(1, 1, new Uint8Array(8)) });
    core.setDesc(0, core.writeSlot(0, inner), inner.length);
    core.encap(1, abi.ENCAP_MODE_FRAME);
    const d = core.desc(0);
    const f = core.bytes().slice(d.off, d.off + d.len);
    f[11]! ^= 0xff;
    expect(dissect([f])[0]?.["ip.checksum.status"]?.[0]).toBe("0"); // 0 = Bad
  });
});
