/**
 * The soak's DNS upstream, run as its own process in the hub namespace:
 * `node upstream-server.js <listenIp> <answerIp>`. Every name under
 * example.test has one A record (answerIp, TTL 1); any other name is
 * NXDOMAIN. Prints {"ready":true} once bound. Killing the process is the
 * "DNS upstream down" fault.
 */
import { createSocket } from "node:dgram";

const ZONE = "example.test";
const [listen, answer] = process.argv.slice(2);
if (!listen || !answer) {
  console.error("usage: upstream-server.js <listenIp> <answerIp>");
  process.exit(2);
}

/** The question's name (lower case) and where the question ends; undefined for anything else. */
function question(msg: Buffer): { name: string; type: number; end: number } | undefined {
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    const len = msg[at];
    if (len === undefined || len > 63) return undefined;
    at++;
    if (len === 0) break;
    labels.push(msg.subarray(at, at + len).toString("latin1").toLowerCase());
    at += len;
  }
  if (at + 4 > msg.length) return undefined;
  return { name: labels.join("."), type: msg.readUInt16BE(at), end: at + 4 };
}

const sock = createSocket("udp4");
sock.on("message", (msg, rinfo) => {
  if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return;
  const q = question(msg);
  if (!q) return;
  const inZone = q.name === ZONE || q.name.endsWith(`.${ZONE}`);
  const withA = inZone && q.type === 1;
  const head = Buffer.alloc(12);
  head.writeUInt16BE(msg.readUInt16BE(0), 0);
  head.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | 0x0080 | (inZone ? 0 : 3), 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(withA ? 1 : 0, 6);
  const parts = [head, msg.subarray(12, q.end)];
  if (withA) {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(1, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(1, 6);
    rr.writeUInt16BE(4, 10);
    answer.split(".").forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
    parts.push(rr);
  }
  sock.send(Buffer.concat(parts), rinfo.port, rinfo.address);
});
sock.bind(53, listen, () => console.log(JSON.stringify({ ready: true })));
