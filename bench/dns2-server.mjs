// A bare dns2 (pure-JavaScript DNS library) server, the Node baseline of
// `npm run bench:dns`: UDP on 127.0.0.1 only, A records of a fixed table,
// NXDOMAIN for every other name (and NOERROR/no answer for other types of a
// known name). No cache, no forwarding: the floor of a Node DNS server built
// on a general-purpose packet library.
//
//   node bench/dns2-server.mjs '{"web-1.default.svc.cluster.local":"10.96.0.1"}' [port] [ttl]
//
// Prints "ready <port>" on stdout once listening (port 0 or absent: one is picked).
import dns2 from "dns2";

const { Packet } = dns2;
const table = new Map(Object.entries(JSON.parse(process.argv[2] ?? "{}")).map(([n, a]) => [n.toLowerCase().replace(/\.$/, ""), String(a)]));
const port = Number(process.argv[3] ?? 0);
const ttl = Number(process.argv[4] ?? 30);

const server = dns2.createServer({
  udp: true,
  handle(request, send) {
    const response = Packet.createResponseFromRequest(request);
    response.header.aa = 1;
    const q = request.questions[0];
    const name = q ? String(q.name).toLowerCase().replace(/\.$/, "") : "";
    const address = table.get(name);
    if (!q || address === undefined) response.header.rcode = Packet.RCODE.NXDOMAIN;
    else if (q.type === Packet.TYPE.A) response.answers.push({ name: q.name, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl, address });
    send(response);
  },
});
server.on("requestError", (e) => console.error(`dns2-server: bad request: ${e?.message ?? e}`));
server.on("error", (e) => {
  console.error(`dns2-server: ${e?.message ?? e}`);
  process.exit(1);
});

const addrs = await server.listen({ udp: { port, address: "127.0.0.1" } });
console.log(`ready ${addrs.udp.port}`);

const stop = () => server.close().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
