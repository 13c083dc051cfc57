// Runs inside a test namespace: sends `count` datagrams to host:port as fast
// as it can, a mix of random bytes and VXLAN packets broken in every way
// (as a fuzzer would), and prints how many it sent.
// usage: node udp-flood.mjs <host> <port> <count> <seed> <vni> <dstMacHex>
import dgram from "node:dgram";

const [host, port, count, seed, vni, macHex] = process.argv.slice(2);
let s = Number(seed) >>> 0 || 1;
const rnd = () => {
  s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
  return s / 4294967296;
};
const mac = Buffer.from(macHex, "hex");
function vxlan() {
  const b = Buffer.alloc(22 + 20 + Math.floor(rnd() * 200));
  b.writeUInt32BE(0x08000000, 0);
  b.writeUInt32BE((Number(vni) << 8) >>> 0, 4);
  mac.copy(b, 8);
  b.writeUInt16BE(0x0800, 20);
  b[22] = 0x45;
  b.writeUInt16BE(b.length - 22, 24);
  b.writeUInt32BE(0xc6120000 + Math.floor(rnd() * 65536), 34);
  b.writeUInt32BE(0xc6120000 + Math.floor(rnd() * 65536), 38);
  // break something
  const k = Math.floor(rnd() * 6);
  if (k === 0) b[Math.floor(rnd() * 8)] ^= 1 << Math.floor(rnd() * 8);
  else if (k === 1) return b.subarray(0, Math.floor(rnd() * b.length));
  else if (k === 2) b[22 + Math.floor(rnd() * 20)] = Math.floor(rnd() * 256);
  else if (k === 3) b.writeUInt32BE(Math.floor(rnd() * 2 ** 32), 8);
  return b;
}
const sock = dgram.createSocket("udp4");
let sent = 0;
const total = Number(count);
function burst() {
  for (let i = 0; i < 500 && sent < total; i++, sent++) {
    const b = rnd() < 0.5 ? Buffer.from(Array.from({ length: Math.floor(rnd() * 1500) }, () => Math.floor(rnd() * 256))) : vxlan();
    sock.send(b, Number(port), host);
  }
  if (sent < total) setImmediate(burst);
  else setTimeout(() => { console.log(JSON.stringify({ sent })); sock.close(); }, 200);
}
burst();
