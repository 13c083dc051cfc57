import type { Command } from "commander";
import * as abi from "../../../asm/abi.js";
import { NotBuiltError } from "../../common/errors.js";
import { parseCidr, parseIpv4, parseMac } from "../../common/ipv4.js";
import { WasmCore } from "../../dataplane/core/wasm-core.js";
import { DEFAULT_TUNNEL } from "../../dataplane/core/types.js";
import { inetChecksum } from "../../dataplane/reference/checksum.js";
import { capabilityTable } from "../capabilities.js";

/**
 * `weft demo` (`npm start`). The embedded-default cluster (local etcd, netns
 * nodes, agents) needs the control plane (issue 3). Until then it checks the
 * part that is built, the WASM core, says so, and exits non-zero.
 */
export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("run the main job on the embedded default: a local etcd and a small netns cluster")
    .action(() => {
      console.log(capabilityTable());
      console.log("");
      console.log(selfCheck());
      throw new NotBuiltError("demo: the netns cluster demo is not built yet (issue 3: control plane). Only the WASM core above runs today");
    });
}

/** Encapsulates one packet node A -> node B and decapsulates it on B: the core works end to end. */
function selfCheck(): string {
  const macA = parseMac("02:00:c0:00:02:01");
  const macB = parseMac("02:00:c0:00:02:02");
  const nodes = [
    { underlay: parseIpv4("192.0.2.1"), vtepMac: macA, subnet: parseCidr("198.18.1.0/24") },
    { underlay: parseIpv4("192.0.2.2"), vtepMac: macB, subnet: parseCidr("198.18.2.0/24") },
  ];
  const mk = (self: number): WasmCore => {
    const c = WasmCore.create({ maxPeers: 4, maxRules: 16, slots: 2, maxBatch: 4 });
    c.configure({ ...DEFAULT_TUNNEL, localIp: nodes[self]!.underlay, localMac: nodes[self]!.vtepMac });
    nodes.forEach((n, i) => {
      c.setPeer(i, { ...n, local: i === self });
      c.lpmInsert(n.subnet, i);
    });
    return c;
  };
  const a = mk(0);
  const b = mk(1);
  const pkt = new Uint8Array(84);
  const v = new DataView(pkt.buffer);
  v.setUint8(0, 0x45);
  v.setUint16(2, pkt.length);
  v.setUint8(8, 64);
  v.setUint8(9, 1);
  v.setUint32(12, parseIpv4("198.18.1.5"));
  v.setUint32(16, parseIpv4("198.18.2.5"));
  v.setUint16(10, inetChecksum(pkt, 0, 20));
  a.setDesc(0, a.writeSlot(0, pkt), pkt.length);
  const enc = a.encap(1, abi.ENCAP_MODE_PAYLOAD);
  const d = a.desc(0);
  const wire = a.bytes().slice(d.off, d.off + d.len);
  b.setDesc(0, b.writeSlot(0, wire), wire.length, nodes[0]!.underlay);
  const dec = b.decap(1);
  const ok = enc === 1 && dec === 1 && b.desc(0).len === pkt.length;
  return `WASM core self-check: encap ${enc}/1, decap ${dec}/1 -> ${ok ? "ok" : "FAILED"}`;
}
