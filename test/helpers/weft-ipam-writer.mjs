// Test helper: hammers an IPAM store with concurrent changes and prints each
// one only after its promise resolved (stdout to a pipe is synchronous on
// Linux, so a printed line was acknowledged before any later SIGKILL).
//   node weft-ipam-writer.mjs <dir>
import { IpamStore } from "../../dist/src/ipam/store.js";
import { silentLogger } from "../../dist/src/common/log.js";

const [dir] = process.argv.slice(2);
const store = await IpamStore.open(dir, silentLogger);
const base = 0xc6120000; // 198.18.0.0
let next = 2;
let id = 0;
const live = [];
const one = async () => {
  if (live.length > 20 && Math.random() < 0.25) {
    const key = live.splice(Math.floor(Math.random() * live.length), 1)[0];
    process.stdout.write(`? ${key}\n`); // a delete in flight: after a kill it may or may not have landed
    await store.commit({ op: "del", key });
    process.stdout.write(`- ${key}\n`);
    return;
  }
  let ip;
  do {
    ip = base + next;
    next = next >= 60000 ? 2 : next + 1;
  } while (store.table.holder(ip));
  const a = { ip, network: "net", containerId: `c${id++}`, ifname: "eth0", pool: "default", netns: "", netnsInode: 0, podNamespace: "", podName: "", hostIf: "", created: Date.now(), requested: false };
  const key = `net/${a.containerId}/eth0`;
  await store.commit({ op: "add", a });
  live.push(key);
  process.stdout.write(`+ ${key} ${ip}\n`);
};
process.stdout.write("ready\n");
for (;;) await Promise.all(Array.from({ length: 32 }, one));
