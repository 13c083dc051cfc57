// Runs inside a test namespace: drives the native shim (native/weft_shim.c)
// with units and descriptors written by hand into a real WASM core's memory,
// one case per process (a shim that dereferences a hostile offset kills
// this process, not the test), and prints one JSON line: what the call
// returned, the shim's counters, what arrived, and how long it took.
// usage: node udp-shim.mjs <case>   (cases: see CASES below)
import dgram from "node:dgram";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as abi from "../../dist/asm/abi.js";
import { WasmCore } from "../../dist/src/dataplane/core/wasm-core.js";
import { loadShim } from "../../dist/src/backend/tun/shim.js";

const [name] = process.argv.slice(2);
const shim = loadShim();
const UNITS = 16;
const core = WasmCore.create({ maxPeers: 4, maxRules: 8, maxBatch: 8, slots: 32, slotSize: 65536, headroom: 64, units: UNITS });
const mem = () => core.bytes().buffer;
const view = () => core.view();
const size = () => mem().byteLength;
const iovCap = 2 * UNITS;

/** Writes unit u: iovecs [first, first + iovs.length) of the table, each [offset, length]. */
function unit(u, iovs, { first = u * 2, niov = iovs.length, gso = 0, sport = 0, addr = 0x7f000001, dport = 0, res = 0 } = {}) {
  const v = view();
  const p = core.unitBase + u * abi.UNIT_SIZE;
  v.setUint32(p + abi.UNIT_IOV, first >>> 0, true);
  v.setUint32(p + abi.UNIT_NIOV, niov >>> 0, true);
  v.setUint32(p + abi.UNIT_ADDR, addr >>> 0, true);
  v.setUint16(p + abi.UNIT_SPORT, sport, true);
  v.setUint16(p + abi.UNIT_DPORT, dport, true);
  v.setUint16(p + abi.UNIT_GSO, gso, true);
  v.setInt32(p + abi.UNIT_RES, res, true);
  iovs.forEach(([o, l], k) => {
    const q = core.iovBase + ((first + k) >>> 0) * abi.IOV_SIZE;
    if (q + 8 <= size()) {
      v.setUint32(q, o >>> 0, true);
      v.setUint32(q + 4, l >>> 0, true);
    }
  });
}

/** Puts `text` (padded to `len` bytes) in slot i and returns its offset. */
function payload(i, text, len = text.length) {
  const b = new Uint8Array(len);
  b.set(new TextEncoder().encode(text));
  return core.writeSlot(i, b);
}

async function receiver() {
  const got = [];
  const sock = dgram.createSocket("udp4");
  sock.on("message", (m) => got.push(m.subarray(0, 12).toString().replace(/\0+$/, "")));
  await new Promise((r) => sock.bind(0, "127.0.0.1", r));
  return { port: sock.address().port, got, close: () => sock.close() };
}

function tunPackets(dev) {
  return Number(readFileSync(`/sys/class/net/${dev}/statistics/rx_packets`, "utf8"));
}

/** An IPv4/UDP packet 192.0.2.1 -> 192.0.2.9 behind a zeroed virtio_net_hdr, in slot i. */
function tunPacket(i) {
  const b = new Uint8Array(10 + 28 + 4);
  const v = new DataView(b.buffer);
  v.setUint8(10, 0x45);
  v.setUint16(12, 32);
  v.setUint8(18, 64);
  v.setUint8(19, 17);
  v.setUint32(22, 0xc0000201);
  v.setUint32(26, 0xc0000209);
  let s = 0;
  for (let k = 10; k < 30; k += 2) s += v.getUint16(k);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  v.setUint16(20, ~s & 0xffff);
  v.setUint16(30, 1000);
  v.setUint16(32, 2000);
  v.setUint16(34, 12);
  return [core.writeSlot(i, b), b.length];
}

const huge = 0xffffff00;
const CASES = {
  // --- udpSendUnits: every offset and count read from memory is checked
  async "send-valid"() {
    return sendCase((port) => [unit(0, [[payload(0, "ok-0"), 4]], { dport: port }), unit(1, [[payload(1, "ok-1"), 4]], { dport: port })], 2);
  },
  async "send-iov-past-memory"() {
    return sendCase((port) => [
      unit(0, [[payload(0, "ok-0"), 4]], { dport: port }),
      unit(1, [[size() - 2, 64]], { dport: port }),
      unit(2, [[huge, 0x200]], { dport: port }), // wraps around 2^32 when added in 32 bits
      unit(3, [[payload(3, "ok-3"), 4], [size(), 1]], { dport: port }),
      unit(4, [[payload(4, "ok-4"), 4]], { dport: port }),
    ], 5);
  },
  async "send-iov-table-past-capacity"() {
    return sendCase((port) => [
      unit(0, [[payload(0, "ok-0"), 4]], { dport: port }),
      unit(1, [[payload(1, "no-1"), 4]], { dport: port, first: iovCap }),
      unit(2, [], { dport: port, first: 0, niov: 0xffffffff }),
      unit(3, [], { dport: port, first: 0x1fffffff, niov: 2 }), // (first + k) * 8 wraps in 32 bits
      unit(4, [], { dport: port, niov: 0 }),
      unit(5, [[payload(5, "ok-5"), 4]], { dport: port, first: iovCap - 1 }),
    ], 6);
  },
  async "send-unit-table-past-memory"() {
    return sendCase(() => [], 1, { units: size() - 8 });
  },
  async "send-unit-count-hostile"() {
    const a = await sendCase(() => [], -1);
    const b = await sendCase(() => [], 1 << 30);
    return { rc: [a.rc, b.rc], stats: [a.stats, b.stats], got: [...a.got, ...b.got] };
  },
  async "send-iov-table-past-memory"() {
    return sendCase(() => [], 1, { iovs: size() - 4 });
  },
  async "send-no-sockets"() {
    return sendCase((port) => [unit(0, [[payload(0, "ok-0"), 4]], { dport: port })], 1, { fds: new Int32Array(0) });
  },
  // --- tunWriteUnits: the same checks on the way to the TUN device
  async "tun-write"() {
    const offl = new Int32Array(1);
    const fd = shim.tunOpen("wftshim0", offl);
    if (fd < 0) throw new Error(`tunOpen: ${fd}`);
    execFileSync("ip", ["link", "set", "wftshim0", "up"]);
    const before = tunPackets("wftshim0");
    const [o0, l0] = tunPacket(0);
    const [o1, l1] = tunPacket(1);
    unit(0, [[o0, l0]]);
    unit(1, [[size() - 8, 42]]);
    unit(2, [[o1, 20], [huge, 0x200]]);
    unit(3, [], { niov: 0xffffffff });
    unit(4, [[o1, l1]]);
    unit(5, [[o1, l1]], { first: iovCap });
    const rc = shim.tunWriteUnits(fd, mem(), core.unitBase, core.iovBase, iovCap, 6);
    const bad = shim.tunWriteUnits(fd, mem(), size() - 16, core.iovBase, iovCap, 1);
    const packets = tunPackets("wftshim0") - before;
    shim.tunUnpersist(fd);
    shim.close(fd);
    return { rc: [rc, bad], stats: shim.takeStats(), got: [packets] };
  },
  // --- receive batches: descriptor tables and slots must lie in memory
  async "recv-desc-past-memory"() {
    const fd = shim.udpOpen(0x7f000001, 0, 1 << 20, 1 << 20, 0);
    const port = shim.udpPort(fd);
    const tx = dgram.createSocket("udp4");
    await new Promise((r) => tx.send("x".repeat(100), port, "127.0.0.1", r));
    const slot0 = core.slot(0);
    const rcs = [
      shim.udpRecvBatch(fd, mem(), size() - 16, slot0, 65536, 65472, 8, 100), // descriptors past the end
      shim.udpRecvBatch(fd, mem(), core.descBase, size() - 50, 65536, 65472, 8, 100), // slots past the end
      shim.udpRecvBatch(fd, mem(), core.descBase, slot0, 1024, 4096, 8, 100), // room bigger than a slot
      shim.udpRecvBatch(fd, mem(), core.descBase, slot0, 65536, 65472, -1, 100),
      shim.udpRecvBatch(fd, mem(), huge, huge, 65536, 65472, 8, 100),
    ];
    const ok = shim.udpRecvBatch(fd, mem(), core.descBase, slot0, 65536, 65472, 8, 100);
    tx.close();
    shim.close(fd);
    return { rc: [...rcs, ok], stats: shim.takeStats(), got: [view().getUint32(core.descBase + abi.DESC_LEN, true)] };
  },
  async "tun-read-past-memory"() {
    const fd = shim.tunOpen("wftshim1", new Int32Array(1));
    execFileSync("ip", ["link", "set", "wftshim1", "up"]);
    execFileSync("ip", ["addr", "add", "198.51.100.1/24", "dev", "wftshim1"]);
    const tx = dgram.createSocket("udp4");
    await new Promise((r) => tx.send("x".repeat(100), 9999, "198.51.100.9", r)); // routed into the TUN device
    const slot0 = core.slot(0);
    const rcs = [
      shim.tunReadBatch(fd, mem(), size() - 16, slot0, 65536, 65472, 8, 100),
      shim.tunReadBatch(fd, mem(), core.descBase, size() - 100, 65536, 65472, 8, 100),
      shim.tunReadBatch(fd, mem(), core.descBase, huge, 65536, 65472, 8, 100),
    ];
    const ok = shim.tunReadBatch(fd, mem(), core.descBase, slot0, 65536, 65472, 8, 1000);
    tx.close();
    shim.tunUnpersist(fd);
    shim.close(fd);
    return { rc: [...rcs, ok], stats: shim.takeStats(), got: [view().getUint32(core.descBase + abi.DESC_LEN, true)] };
  },
  // --- backpressure, produced for real (the test sets the namespace up: v0 192.0.2.1/24, 192.0.2.2 a static neighbour)
  async "enobufs"() {
    // 20 KB datagrams sent whole over a 1500-byte link from a socket with the smallest send buffer:
    // the kernel fails the fragments' allocation with ENOBUFS, every time.
    return backpressure(8, 20_000, 1);
  },
  async "stuck"() {
    // 64 datagrams over 4 sockets into a device whose qdisc drains 1 KB a second (tbf 8kbit):
    // the send buffers fill and stay full (EAGAIN).
    return backpressure(64, 1000, 4);
  },
};

async function sendCase(fill, n, o = {}) {
  const r = await receiver();
  const fd = shim.udpOpen(0x7f000001, 0, 1 << 20, 1 << 20, 0);
  fill(r.port);
  const rc = shim.udpSendUnits(o.fds ?? Int32Array.of(fd), mem(), o.units ?? core.unitBase, o.iovs ?? core.iovBase, iovCap, n);
  await new Promise((res) => setTimeout(res, 100));
  r.close();
  shim.close(fd);
  return { rc, stats: shim.takeStats(), got: r.got.sort() };
}

async function backpressure(n, len, nsock) {
  const fds = Int32Array.from({ length: nsock }, () => shim.udpOpen(0xc0000201, 0, 1, 1, 0));
  const off = payload(0, "bp", len);
  for (let u = 0; u < n; u++) unit(u % UNITS, [[off, len]], { addr: 0xc0000202, dport: 8472, sport: u, first: (u % UNITS) * 2 });
  let rc = 0;
  const t0 = performance.now();
  for (let done = 0; done < n; done += UNITS) rc += shim.udpSendUnits(fds, mem(), core.unitBase, core.iovBase, iovCap, Math.min(UNITS, n - done));
  const ms = performance.now() - t0;
  for (const fd of fds) shim.close(fd);
  return { rc, stats: shim.takeStats(), ms: Math.round(ms), got: [] };
}

const fn = CASES[name];
if (!fn) {
  console.error(`unknown case ${name}; cases: ${Object.keys(CASES).join(", ")}`);
  process.exit(2);
}
console.log(JSON.stringify({ case: name, ...(await fn()) }));
process.exit(0);
