/**
 * A tiny authoritative DNS server for tests and the soak, run as its own
 * process inside a test namespace:
 * `node dns-responder.js [--ttl S] <listenIp>=<answerIp> [...]`.
 * `example.test.` and every name under it has one A record (the address
 * given for the local address the query came in on, TTL S, default 30);
 * any other name is NXDOMAIN. Prints {"ready":true} once every address is
 * bound, then each query as a JSON line ({ at, from, name, type }), so a
 * test sees which server was asked, by whom, for what. Killing the process
 * is the soak's "DNS upstream down" fault.
 */
import { createSocket } from "node:dgram";

const ZONE = "example.test";
const args = process.argv.slice(2);
let ttl = 30;
if (args[0] === "--ttl") {
  ttl = Number(args[1]);
  args.splice(0, 2);
}
const pairs = args.map((a) => a.split("="));
if (pairs.length === 0 || !Number.isInteger(ttl) || ttl < 0 || pairs.some((p) => p.length !== 2 || !p[0] || !p[1])) {
  console.error("usage: dns-responder.js [--ttl S] <listenIp>=<answerIp> [...]");
  process.exit(2);
}

/** The question's name (lower case, no trailing dot) and where the question ends, or undefined. */
function question(msg: Buffer): { name: string; type: number; end: number } | undefined {
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    const len = msg[at];
    if (len === undefined || len > 63) return undefined; // no compression in a question we accept
    at++;
    if (len === 0) break;
    labels.push(msg.subarray(at, at + len).toString("latin1").toLowerCase());
    at += len;
  }
  if (at + 4 > msg.length) return undefined;
  return { name: labels.join("."), type: msg.readUInt16BE(at), end: at + 4 };
}

let ready = 0;
for (const [listen = "", answer = ""] of pairs) {
  const sock = createSocket("udp4");
  sock.on("message", (msg, rinfo) => {
    if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return;
    const q = question(msg);
    if (!q) return;
    console.log(JSON.stringify({ at: listen, from: rinfo.address, name: q.name, type: q.type }));
    const inZone = q.name === ZONE || q.name.endsWith(`.${ZONE}`);
    const withA = inZone && (q.type === 1 || q.type === 255);
    const head = Buffer.alloc(12);
    head.writeUInt16BE(msg.readUInt16BE(0), 0); // ID
    // QR, opcode 0, AA, RD as asked; RA; rcode NOERROR or NXDOMAIN.
    head.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | 0x0080 | (inZone ? 0 : 3), 2);
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(withA ? 1 : 0, 6);
    const parts = [head, msg.subarray(12, q.end)];
    if (withA) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // the question's name
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(ttl, 6);
      rr.writeUInt16BE(4, 10);
      answer.split(".").forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
      parts.push(rr);
    }
    sock.send(Buffer.concat(parts), rinfo.port, rinfo.address);
  });
  sock.bind(53, listen, () => {
    if (++ready === pairs.length) console.log(JSON.stringify({ ready: true }));
  });
}
