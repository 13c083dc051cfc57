// Test helper: opens an IPAM store (taking its lock) and holds it until killed.
//   node lock-holder.mjs <dir>
// Prints "held" once the lock is taken. A timer keeps the process alive (an
// await that never settles would not: Node exits when nothing is pending).
import { IpamStore } from "../../dist/src/ipam/store.js";
import { silentLogger } from "../../dist/src/common/log.js";

const store = await IpamStore.open(process.argv[2], silentLogger);
process.stdout.write(`held ${store.dir}\n`);
setInterval(() => undefined, 1 << 30);
