// Runs inside a test namespace: binds a UDP socket, optionally sends some
// datagrams (hex), and prints each datagram it receives as a JSON line.
// usage: node udp-peer.mjs <bindIp> <bindPort> <expect> <timeoutMs> [<dstIp> <dstPort> <hex>...]
import dgram from "node:dgram";

const [bindIp, bindPort, expect, timeoutMs, dstIp, dstPort, ...send] = process.argv.slice(2);
const sock = dgram.createSocket("udp4");
let got = 0;
const done = (code) => {
  sock.close();
  process.exit(code);
};
setTimeout(() => done(got >= Number(expect) ? 0 : 3), Number(timeoutMs));
sock.on("message", (msg, rinfo) => {
  console.log(JSON.stringify({ hex: msg.toString("hex"), from: rinfo.address, port: rinfo.port }));
  if (++got >= Number(expect)) done(0);
});
sock.bind(Number(bindPort), bindIp, () => {
  console.log(JSON.stringify({ ready: true }));
  for (const h of send) sock.send(Buffer.from(h, "hex"), Number(dstPort), dstIp);
});
