import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEtcdClient, watchPrefix } from "../../src/common/etcd-client.js";
import { ConfigError } from "../../src/common/errors.js";
import { startEtcd } from "../helpers/etcd.js";

/**
 * The etcd client's keepalive pings (what notices a member gone silent) must
 * be ones etcd accepts: its server closes a connection that pings more often
 * than --grpc-keepalive-min-time (5 s by default) with GOAWAY
 * "too_many_pings", which would drop every watch on it. A real etcd with its
 * default enforcement, a watch held open across several pings 6 s apart
 * (near the 5 s the client allows at least; the default is 10 s). etcd
 * (grpc-go) counts a ping that comes too soon as a strike and sends GOAWAY
 * on the third strike, so the watch is held for 4.5 ping periods.
 */
const PINGS = { timeMs: 6_000, timeoutMs: 5_000 };
let e: Awaited<ReturnType<typeof startEtcd>>;
beforeAll(async () => {
  e = await startEtcd();
}, 30_000);
afterAll(async () => {
  await e?.close();
});

describe("etcd client keepalive", () => {
  it("refuses pings closer than etcd's --grpc-keepalive-min-time, or no timeout, with a ConfigError", () => {
    expect(() => createEtcdClient({ endpoints: [e.etcd.localEndpoint], keepalive: { timeMs: 1000, timeoutMs: 5000 } })).toThrow(ConfigError);
    expect(() => createEtcdClient({ endpoints: [e.etcd.localEndpoint], keepalive: { timeMs: 4999, timeoutMs: 5000 } })).toThrow(/grpc-keepalive-min-time/);
    expect(() => createEtcdClient({ endpoints: [e.etcd.localEndpoint], keepalive: { timeMs: 10_000, timeoutMs: 0 } })).toThrow(ConfigError);
  });

  it("a watch held open across several keepalive pings is never dropped by etcd, and still sees changes", async () => {
    const client = createEtcdClient({ endpoints: [e.etcd.localEndpoint], keepalive: PINGS });
    try {
      const events: string[] = [];
      const drops: boolean[] = [];
      const errors: Error[] = [];
      const w = await watchPrefix(client, "/ka/", "1", (_kind, kv) => events.push(kv.key.toString()), (err) => errors.push(err), (up) => void (!up && drops.push(up)));
      // Four pings are answered (or, refused, the connection is closed after the third strike).
      await new Promise((r) => setTimeout(r, PINGS.timeMs * 4.5));
      await client.put("/ka/after").value("x");
      await expect.poll(() => events, { timeout: 5000 }).toContain("/ka/after");
      expect(drops).toEqual([]);
      expect(errors).toEqual([]);
      await w.cancel();
    } finally {
      client.close();
    }
  }, 60_000);
});
