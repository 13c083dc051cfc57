// Runs inside a test namespace with 2001:db8::1 and 2001:db8::2 on its
// loopback: node A's WASM core turns a packet from "its TUN device" into
// VXLAN, the shim sends it from an IPv6 socket (weft_udp_send_units6), the
// shim receives it on node B's IPv6 socket (weft_udp_recv_batch6) and B's
// core turns it back into a packet for its device. Prints one JSON line.
// usage: node udp6-shim.mjs <case>   (roundtrip | send-addr-past-memory | recv-table-past-memory)
import * as abi from "../../dist/asm/abi.js";
import { WasmCore } from "../../dist/src/dataplane/core/wasm-core.js";
import { DEFAULT_TUNNEL } from "../../dist/src/dataplane/core/types.js";
import { loadShim } from "../../dist/src/backend/tun/shim.js";
import { ipv6Bytes, parseCidr6, parseIpv6 } from "../../dist/src/common/ipv6.js";
import { parseCidr, parseIpv4, parseMac } from "../../dist/src/common/ipv4.js";
import { sum16 } from "../../dist/src/dataplane/reference/checksum.js";

const [name] = process.argv.slice(2);
const shim = loadShim();
const UNITS = 64;
const NODES = [0, 1].map((i) => ({
  underlay: parseIpv4(`192.0.2.${i + 1}`), vtepMac: parseMac(`02:00:00:00:00:0${i + 1}`), subnet: parseCidr(`198.18.${i + 1}.0/24`),
  underlay6: parseIpv6(`2001:db8::${i + 1}`), subnet6: parseCidr6(`2001:db8:${i + 1}::/64`),
}));

function core(self) {
  const c = WasmCore.create({ maxPeers: 4, maxRules: 8, maxRules6: 8, maxBatch: 8, slots: 8, slotSize: 4096, headroom: 128, units: UNITS });
  c.configure({ ...DEFAULT_TUNNEL, localIp: NODES[self].underlay, localMac: NODES[self].vtepMac, outer6: true, localIp6: NODES[self].underlay6 });
  NODES.forEach((n, i) => {
    c.setPeer(i, { ...n, local: i === self });
    c.lpm6.insert(n.subnet6, i);
  });
  return c;
}

/** An IPv6 UDP packet from A's pod to B's pod, checksum right, behind a zero virtio_net_hdr. */
function packet(n) {
  const p = new Uint8Array(40 + 8 + n);
  const v = new DataView(p.buffer);
  v.setUint32(0, 0x60000000);
  v.setUint16(4, 8 + n);
  v.setUint8(6, 17);
  v.setUint8(7, 64);
  p.set(ipv6Bytes(parseIpv6("2001:db8:1::5")), 8);
  p.set(ipv6Bytes(parseIpv6("2001:db8:2::7")), 24);
  v.setUint16(40, 40000);
  v.setUint16(42, 5353);
  v.setUint16(44, 8 + n);
  for (let i = 0; i < n; i++) p[48 + i] = i & 0xff;
  const ps = sum16(p, 8, 32) + 8 + n + 17;
  const c = ~sum16(p, 40, 8 + n, ps) & 0xffff;
  v.setUint16(46, c || 0xffff);
  return p;
}

const hex = (b) => Buffer.from(b).toString("hex");
const a = core(0), b = core(1);
const rx = shim.udpOpen6(ipv6Bytes(NODES[1].underlay6), 8472, 1 << 20, 1 << 20, 1);
const tx = shim.udpOpen6(ipv6Bytes(NODES[0].underlay6), 0, 1 << 20, 1 << 20, 0);
if (rx < 0 || tx < 0) throw new Error(`opening IPv6 sockets: ${rx} ${tx}`);
shim.takeStats();
const out = { rc: 0, n: 0, got: [], src: [], stats: {} };
const pkts = [packet(100), packet(1000)];

pkts.forEach((p, i) => {
  const frame = new Uint8Array(10 + p.length);
  frame.set(p, 10);
  a.setDesc(i, a.writeSlot(i, frame), frame.length);
});
if (a.tunTx(0, pkts.length) !== pkts.length) throw new Error("tunTx did not finish");
const units = a.tunUnits();
if (name === "send-addr-past-memory") {
  // Unit 0's address offset points past the end of memory: refused, never sent; unit 1 still goes.
  a.view().setUint32(a.unitBase + abi.UNIT_ADDR, a.memoryBytes() - 8, true);
}
if (name === "recv-table-past-memory") {
  out.rc = shim.udpRecvBatch6(rx, b.bytes().buffer, b.descBase, b.slot(0), 4096, 4096 - 128, 8, 10, b.memoryBytes() - 16);
} else {
  out.rc = shim.udpSendUnits6(Int32Array.of(tx), a.bytes().buffer, a.unitBase, a.iovBase, 2 * UNITS, units);
  const deadline = Date.now() + 2000;
  while (out.n < out.rc && Date.now() < deadline) {
    const n = shim.udpRecvBatch6(rx, b.bytes().buffer, b.descBase, b.slot(0), 4096, 4096 - 128, 8, 200, b.lpm6.addrBase);
    if (n < 0) throw new Error(`receive: ${n}`);
    for (let i = 0; i < n; i++) out.src.push(hex(b.bytes().slice(b.lpm6.addrBase + 16 * i, b.lpm6.addrBase + 16 * i + 16)));
    if (n > 0 && b.tunRx(0, n) !== n) throw new Error("tunRx did not finish");
    for (let u = 0; n > 0 && u < b.tunUnits(); u++) {
      const unit = b.unit(u);
      const [[o, l]] = unit.iovs;
      const bytes = b.bytes().slice(o, o + l);
      out.got.push(pkts.findIndex((p) => hex(p) === hex(bytes.subarray(10))) + (bytes.subarray(0, 10).every((x) => x === 0) ? 0 : 100));
    }
    out.n += n;
  }
  out.decap = b.counters(abi.DIR_DECAP);
  for (const k of Object.keys(out.decap)) out.decap[k] = Number(out.decap[k]);
}
out.stats = shim.takeStats();
shim.close(rx);
shim.close(tx);
console.log(JSON.stringify(out));
