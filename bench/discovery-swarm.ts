/**
 * The subscriber side of `bench:discovery` (and of the 1,000-stream cluster
 * test): N concurrent event streams from one process, as a node's pods would
 * open them. Prints one JSON line when every stream has its snapshot
 * ({"type":"ready"}), and for each endpoint put (by its id) one line once all
 * N streams have it, with the CLOCK_MONOTONIC time (ns, comparable across
 * processes) each stream got it. Any other line is a failure
 * ({"type":"refused"|"error"|"ended"}).
 *
 *   node dist/bench/discovery-swarm.js --target http://169.254.20.10:8053 --count 1000
 */
import { request } from "node:http";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { target: { type: "string", default: "http://169.254.20.10:8053" }, count: { type: "string", default: "1000" } }, strict: true });
const target = values.target;
const count = Number(values.count);
if (!Number.isInteger(count) || count < 1) throw new Error(`--count ${values.count}: a whole number of streams`);
const base = target.startsWith("unix:") ? { socketPath: target.slice(5) } : { host: new URL(target).hostname, port: Number(new URL(target).port) };
const seen = new Map<string, string[]>();
let ready = 0;
const say = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

function open(i: number): void {
  const req = request({ ...base, path: "/v1/services?watch=1", headers: { accept: "text/event-stream" }, agent: false }, (res) => {
    if (res.statusCode !== 200) {
      say({ type: "refused", index: i, status: res.statusCode });
      res.resume();
      return;
    }
    let buf = "";
    let got = false;
    res.setEncoding("utf8");
    res.on("data", (d: string) => {
      buf += d;
      for (let cut = buf.indexOf("\n\n"); cut >= 0; cut = buf.indexOf("\n\n")) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (!got && block.startsWith("event: snapshot")) {
          got = true;
          if (++ready === count) say({ type: "ready", count });
        }
        const m = /^event: put\ndata: .*"kind":"endpoint".*?"id":"([^"]+)"/.exec(block);
        if (!m?.[1]) continue;
        const t = process.hrtime.bigint().toString();
        let list = seen.get(m[1]);
        if (!list) seen.set(m[1], (list = []));
        list.push(t);
        if (list.length === count) {
          say({ type: "change", id: m[1], times: list });
          seen.delete(m[1]);
        }
      }
    });
    res.on("end", () => say({ type: "ended", index: i }));
  });
  req.on("error", (e) => say({ type: "error", index: i, message: e.message }));
  req.end();
}

for (let i = 0; i < count; i++) open(i);
process.on("SIGTERM", () => process.exit(0));
