import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Netns, uniqueTag } from "../../src/harness/netns.js";

/**
 * The tun path over an IPv6 underlay with real sockets: in a test namespace
 * with 2001:db8::1 (node A) and 2001:db8::2 (node B) on its loopback, A's
 * core and the shim's IPv6 send carry two IPv6 pod packets as VXLAN over
 * IPv6 to B's IPv6 socket, whose receive writes each sender's address where
 * B's core reads it; B's core hands back the very packets. Hostile offsets
 * (a unit's address, the source table) are refused and counted. Each case
 * runs in its own process (test/backend/udp6-shim.mjs).
 */
const helper = fileURLToPath(new URL("./udp6-shim.mjs", import.meta.url));
let ns: Netns;

interface Result {
  rc: number;
  n: number;
  got: number[];
  src: string[];
  stats: { refused: number; sendErrors: number };
  decap?: Record<string, number>;
}

async function runCase(name: string): Promise<Result> {
  const out = await ns.exec([process.execPath, helper, name], { timeoutMs: 20_000 });
  return JSON.parse(out.trim().split("\n").pop() ?? "{}") as Result;
}

beforeAll(async () => {
  ns = await Netns.create("s6", uniqueTag());
  await ns.ip("-6", "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad");
  await ns.ip("-6", "addr", "add", "2001:db8::2/128", "dev", "lo", "nodad");
});
afterAll(async () => {
  await ns?.destroy();
});

describe("tun path over IPv6 sockets (native shim)", () => {
  it("A's packets reach B's device unchanged, from A's IPv6 address", async () => {
    const r = await runCase("roundtrip");
    expect(r.rc).toBe(2);
    expect(r.n).toBe(2);
    expect(r.got.sort()).toEqual([0, 1]);
    expect(r.src).toEqual(["20010db8000000000000000000000001", "20010db8000000000000000000000001"]);
    expect(r.decap?.["ok"]).toBe(2);
    expect(r.stats.refused).toBe(0);
    expect(r.stats.sendErrors).toBe(0);
  });

  it("a unit whose IPv6 address offset lies past memory is refused and counted; the other is sent", async () => {
    const r = await runCase("send-addr-past-memory");
    expect(r.rc).toBe(1);
    expect(r.stats.refused).toBe(1);
    expect(r.got).toEqual([1]);
  });

  it("a source-address table past memory refuses the receive before anything is read", async () => {
    const r = await runCase("recv-table-past-memory");
    expect(r.rc).toBe(-22);
    expect(r.stats.refused).toBe(1);
  });
});
