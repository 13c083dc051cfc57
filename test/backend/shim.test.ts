import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as abi from "../../asm/abi.js";
import { Netns, uniqueTag } from "../../src/harness/netns.js";
import { run } from "../../src/common/exec.js";
import { SHIM_STATS, type ShimStats } from "../../src/backend/tun/shim.js";

const h = readFileSync(new URL("../../native/abi.h", import.meta.url), "utf8");

/** native/abi.h (the shim's copy of the descriptor and unit layouts) must match asm/abi.ts. */
describe("the native shim's ABI header", () => {
  const defs = Object.fromEntries([...h.matchAll(/^#define WEFT_((?!ST_)\w+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
  it.each(Object.keys(defs))("WEFT_%s", (name) => {
    expect(defs[name]).toBe((abi as Record<string, number>)[name]);
  });
  it("covers every field the shim reads", () => {
    expect(Object.keys(defs).sort()).toEqual([
      "DESC_ADDR", "DESC_DPORT", "DESC_GSO", "DESC_LEN", "DESC_OFF", "DESC_RES", "DESC_SIZE", "DESC_SPORT", "DESC_TOS",
      "IOV_SIZE", "MAX_UNITS", "UNIT_ADDR", "UNIT_DPORT", "UNIT_FAMILY", "UNIT_GSO", "UNIT_IOV", "UNIT_NIOV", "UNIT_RES", "UNIT_SEGS", "UNIT_SIZE", "UNIT_SPORT", "VNET_HLEN",
    ]);
  });
  it("lists its counters in the order src/backend/tun/shim.ts reads them", () => {
    const st = [...h.matchAll(/^#define WEFT_ST_(\w+) (\d+)/gm)].map((m) => [m[1]!, Number(m[2])] as const);
    const camel = (s: string): string => s.toLowerCase().replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
    expect(st.filter(([k]) => k !== "COUNT").map(([k, i]) => [camel(k), i])).toEqual(SHIM_STATS.map((k, i) => [k, i]));
    expect(st.find(([k]) => k === "COUNT")?.[1]).toBe(SHIM_STATS.length);
  });
});

/**
 * The shim against hostile tables in WASM memory and against backpressure.
 * Each case runs in its own process (test/helpers/udp-shim.mjs) inside a
 * test namespace, so a shim that dereferenced a bad offset would kill that
 * process (SIGSEGV, SIGFPE), and one that spun would be killed by the
 * timeout, both failing the case. Backpressure is real: ENOBUFS from a
 * socket with the smallest send buffer sending 20 KB datagrams over a
 * 1500-byte link, EAGAIN from a device whose tbf qdisc drains 1 KB/s.
 */
const helper = fileURLToPath(new URL("../helpers/udp-shim.mjs", import.meta.url));
const EINVAL = -22;
const tag = uniqueTag();
let io: Netns, nb: Netns, bp: Netns;

async function link(ns: Netns, tbf: boolean): Promise<void> {
  await ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1");
  await ns.ip("link", "set", "v0", "up");
  await ns.ip("link", "set", "v1", "up");
  await ns.ip("addr", "add", "192.0.2.1/24", "dev", "v0");
  await ns.ip("neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "v0", "nud", "permanent");
  if (tbf) await run(["tc", "-n", ns.name, "qdisc", "add", "dev", "v0", "root", "tbf", "rate", "8kbit", "burst", "1600", "limit", "1000000"]);
}

/** Every case's process, started at once (each takes a Node start-up); the tests await their own. */
const started = new Map<string, Promise<CaseResult>>();
const IO_CASES = [
  "send-valid", "send-iov-past-memory", "send-iov-table-past-capacity", "send-unit-table-past-memory", "send-iov-table-past-memory",
  "send-no-sockets", "send-unit-count-hostile", "tun-write", "recv-desc-past-memory", "tun-read-past-memory",
];

beforeAll(async () => {
  [io, nb, bp] = await Promise.all([Netns.create("io", tag), Netns.create("nb", tag), Netns.create("bp", tag)]);
  await Promise.all([link(nb, false), link(bp, true)]);
  for (const name of IO_CASES) started.set(name, runCase(io, name));
  started.set("enobufs", runCase(nb, "enobufs"));
  started.set("stuck", runCase(bp, "stuck"));
  for (const p of started.values()) p.catch(() => undefined); // each test reports its own failure
});
afterAll(async () => {
  await Promise.all([io, nb, bp].map((ns) => ns?.destroy()));
});

interface CaseResult {
  rc: number | number[];
  stats: ShimStats | ShimStats[];
  got: (string | number)[];
  ms?: number;
}

async function runCase(ns: Netns, name: string): Promise<CaseResult> {
  const out = await ns.exec([process.execPath, helper, name], { timeoutMs: 20_000 });
  return JSON.parse(out.trim().split("\n").pop() ?? "{}") as CaseResult;
}

function result(name: string): Promise<CaseResult> {
  const p = started.get(name);
  if (!p) throw new Error(`case ${name} was not started`);
  return p;
}

const stats = (r: CaseResult): ShimStats => r.stats as ShimStats;

describe("the shim checks every offset, length and count it takes from WASM memory", () => {
  it.each([
    ["send-valid", 2, ["ok-0", "ok-1"], 0],
    ["send-iov-past-memory", 2, ["ok-0", "ok-4"], 3],
    ["send-iov-table-past-capacity", 2, ["ok-0", "ok-5"], 4],
    ["send-unit-table-past-memory", EINVAL, [], 1],
    ["send-iov-table-past-memory", EINVAL, [], 1],
    ["send-no-sockets", EINVAL, [], 1],
  ] as const)("sendmmsg: %s -> %i, sends %j, refuses %i", async (name, rc, got, refused) => {
    const r = await result(name);
    expect(r.rc).toBe(rc);
    expect(r.got).toEqual(got);
    expect(stats(r).refused).toBe(refused);
    expect(stats(r).sendErrors).toBe(0);
  });

  it("sendmmsg: a negative or huge unit count is refused", async () => {
    const r = await result("send-unit-count-hostile");
    expect(r.rc).toEqual([EINVAL, EINVAL]);
    expect((r.stats as ShimStats[]).map((s) => s.refused)).toEqual([1, 1]);
  });

  it("writev to the TUN device: bad units are refused, good ones written", async () => {
    const r = await result("tun-write");
    expect(r.rc).toEqual([2, EINVAL]);
    expect(r.got).toEqual([2]);
    expect(stats(r)).toMatchObject({ refused: 5, sendErrors: 0 });
  });

  it("recvmmsg: descriptor tables and slots outside memory, room bigger than a slot, a negative count: refused before receiving", async () => {
    const r = await result("recv-desc-past-memory");
    expect(r.rc).toEqual([EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, 1]);
    expect(r.got).toEqual([100]);
    expect(stats(r).refused).toBe(5);
  });

  it("TUN reads: descriptor tables and slots outside memory are refused before reading", async () => {
    const r = await result("tun-read-past-memory");
    expect((r.rc as number[]).slice(0, 3)).toEqual([EINVAL, EINVAL, EINVAL]);
    expect((r.rc as number[])[3]).toBeGreaterThanOrEqual(1);
    expect(r.got[0]).toBeGreaterThan(0);
    expect(stats(r).refused).toBe(3);
  });
});

describe("the shim bounds its waits under backpressure", () => {
  it("ENOBUFS on every try: each unit is given up after a few retries and counted, and the call returns", async () => {
    const r = await result("enobufs");
    expect(r.rc).toBe(0);
    expect(stats(r)).toMatchObject({ dropped: 8, sendErrors: 0, lastErrno: 105 });
    expect(stats(r).retries).toBeGreaterThanOrEqual(8);
    expect(stats(r).retries).toBeLessThanOrEqual(8 * 4);
  });

  it("a device that does not drain (EAGAIN): what cannot go within the call's budget is dropped and counted", async () => {
    const r = await result("stuck");
    expect((r.rc as number) + stats(r).dropped).toBe(64);
    expect(stats(r).dropped).toBeGreaterThan(0);
    expect(stats(r)).toMatchObject({ sendErrors: 0, lastErrno: 11 });
  });
});
