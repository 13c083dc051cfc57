/**
 * No silent fallback on the DNS UDP path: which path each listen address is
 * served by (the recvmmsg/sendmmsg batch path or Node's dgram socket) is in
 * the summary `weft status` prints, in weft_dns_udp_path, and, for the slow
 * one, in a warning that says why. Real sockets, real dig.
 */
import { Writable } from "node:stream";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, describe, expect, it } from "vitest";
import { DnsService } from "../../src/dns/service.js";
import { freeUdpTcpPort } from "../../src/harness/unbound.js";
import { digServer, StaticView, WEB_SERVICE } from "../helpers/dns.js";

const services: DnsService[] = [];
afterAll(async () => {
  await Promise.all(services.map((s) => s.close()));
});

/** A DnsService on `host` with its own metrics registry and a logger whose lines are kept. */
async function serve(host: string, udpBatch?: boolean): Promise<{ dns: DnsService; port: number; metrics: Registry; logs: { level: number; msg: string; why?: string }[] }> {
  const logs: { level: number; msg: string; why?: string }[] = [];
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split("\n").filter(Boolean)) logs.push(JSON.parse(l)); cb(); } });
  const metrics = new Registry();
  const port = await freeUdpTcpPort();
  const dns = new DnsService({
    listen: [{ host, port }], zone: { domain: "cluster.local", ttl: 30, pods: "disabled" }, upstreams: [], policy: "random", allow: [],
    ...(udpBatch === undefined ? {} : { udpBatch }),
  }, new StaticView([WEB_SERVICE]), pino({ level: "info" }, sink), metrics);
  await dns.start();
  services.push(dns);
  return { dns, port, metrics, logs };
}

const slowWarnings = (logs: { level: number; msg: string }[]) => logs.filter((l) => l.level === 40 && /dgram/.test(l.msg));

describe("the DNS UDP path in use is visible", () => {
  it.each([
    { label: "an IPv4 address", host: "127.0.0.1" },
    { label: "an IPv6 address", host: "::1" },
  ])("$label gets the batch path by default: summary, metric, no warning, and it answers", async ({ host }) => {
    const { dns, port, metrics, logs } = await serve(host);
    const listen = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    expect(dns.summary().udp).toEqual([{ listen, path: "batch" }]);
    expect(await metrics.metrics()).toContain(`weft_dns_udp_path{listen="${listen}",path="batch"} 1`);
    expect(await metrics.metrics()).not.toMatch(/weft_dns_udp_path\{[^}]*path="dgram"/);
    expect(slowWarnings(logs)).toEqual([]);
    expect(logs.find((l) => l.msg === "DNS server listening")).toMatchObject({ udp: { [listen]: "batch" } });
    expect((await digServer(host, port, "web.default.svc.cluster.local", "A")).answer.map((r) => r.data)).toEqual(["198.18.255.10"]);
  });

  it.each([
    { label: "IPv4 with the batch path turned off", host: "127.0.0.1", udpBatch: false, why: /turned off/ },
    { label: "IPv6 with the batch path turned off", host: "::1", udpBatch: false, why: /turned off/ },
  ])("$label: dgram in the summary and the metric, with a warning saying why", async ({ host, udpBatch, why }) => {
    const { dns, port, metrics, logs } = await serve(host, udpBatch);
    const listen = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    expect(dns.summary().udp).toEqual([{ listen, path: "dgram", why: expect.stringMatching(why) }]);
    expect(await metrics.metrics()).toContain(`weft_dns_udp_path{listen="${listen}",path="dgram"} 1`);
    expect(slowWarnings(logs)).toEqual([expect.objectContaining({ listen, why: expect.stringMatching(why) })]);
    expect((await digServer(host, port, "web.default.svc.cluster.local", "A")).answer.map((r) => r.data)).toEqual(["198.18.255.10"]);
  });
});
