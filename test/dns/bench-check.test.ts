/**
 * bench:dns's answer checks (bench/dns-check.ts) against a real DNS server
 * that answers one name wrongly: the sweep and the checker under way find it,
 * and a round with it, with a foreign rcode or with the wrong NXDOMAIN share
 * does not count.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkWhileRunning, judgeRound, sweep, type Expected } from "../../bench/dns-check.js";
import { silentLogger } from "../../src/common/log.js";
import { DnsService } from "../../src/dns/service.js";
import type { DnsperfResult } from "../../src/harness/dnsperf.js";
import { freeUdpTcpPort } from "../../src/harness/unbound.js";
import { StaticView, WEB_SERVICE } from "../helpers/dns.js";

let dns: DnsService;
let port = 0;
beforeAll(async () => {
  port = await freeUdpTcpPort();
  dns = new DnsService({
    listen: [{ host: "127.0.0.1", port }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" }, upstreams: [], policy: "random", allow: [],
  }, new StaticView([WEB_SERVICE]), silentLogger);
  await dns.start();
});
afterAll(async () => {
  await dns?.close();
});

const right: Expected[] = [
  { name: "web.default.svc.cluster.local.", rcode: "NOERROR", address: "198.18.255.10" },
  { name: "nope.default.svc.cluster.local.", rcode: "NXDOMAIN" },
];
const wrong: Expected[] = [...right, { name: "db.default.svc.cluster.local.", rcode: "NOERROR", address: "198.18.255.11" }];

/** A dnsperf result with these rcodes (the other fields do not take part in the judgement). */
const perf = (rcodes: Record<string, number>): DnsperfResult => {
  const completed = Object.values(rcodes).reduce((a, b) => a + b, 0);
  return { qps: 1, sent: completed, completed, lost: 0, runTimeS: 1, avgLatencyMs: 1, minLatencyMs: 1, maxLatencyMs: 1, stddevLatencyMs: 0, rcodes, output: "" };
};

describe("bench:dns answer checks", () => {
  it("a server that answers every name right passes the sweep and the checker, and the round counts", async () => {
    const checker = checkWhileRunning("127.0.0.1", port, right, 5);
    await new Promise((r) => setTimeout(r, 100));
    const during = await checker.stop();
    const after = await sweep("127.0.0.1", port, right);
    expect(during.checked).toBeGreaterThan(2);
    expect([during.wrong, after.wrong, after.checked]).toEqual([[], [], 2]);
    expect(judgeRound(perf({ NOERROR: 50, NXDOMAIN: 50 }), during, after, 0.5)).toEqual([]);
  });

  it("a wrong answer during or after the round, a foreign rcode, or a wrong NXDOMAIN share excludes the round", async () => {
    const checker = checkWhileRunning("127.0.0.1", port, wrong, 5);
    await new Promise((r) => setTimeout(r, 100));
    const during = await checker.stop();
    const after = await sweep("127.0.0.1", port, wrong);
    expect(after.wrong).toEqual(["db.default.svc.cluster.local. A answered NXDOMAIN [], expected NOERROR 198.18.255.11"]);
    expect(during.wrong.length).toBeGreaterThan(0);
    expect(judgeRound(perf({ NOERROR: 50, NXDOMAIN: 50 }), during, after, 0.5).join("\n")).toMatch(/wrong answers under load.*\n.*wrong answers after the round/);
    const clean = await sweep("127.0.0.1", port, right);
    expect(judgeRound(perf({ NOERROR: 50, NXDOMAIN: 49, SERVFAIL: 1 }), clean, clean, 0.5)).toEqual([expect.stringMatching(/other rcodes: \{"SERVFAIL":1\}/)]);
    expect(judgeRound(perf({ NOERROR: 90, NXDOMAIN: 10 }), clean, clean, 0.5)).toEqual([expect.stringMatching(/NXDOMAIN share 10\.00%, expected 50\.00%/)]);
  });
});
