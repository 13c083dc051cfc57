import { execFile, spawn } from "node:child_process";
import { connect } from "node:net";
import { promisify } from "node:util";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { subscribe, type SubscriptionEvent } from "../../src/client/index.js";
import type { EtcdServer } from "../../src/harness/etcd.js";
import { forwardTcpToUnix } from "../../src/harness/forward.js";
import type { ServiceInput } from "../../src/registry/types.js";
import { startEtcd } from "../helpers/etcd.js";
import { http, rawStream, sseEvents, startDiscovery, until, type DiscoveryEnv } from "./env.js";

/**
 * The subscription side of the discovery API against a real etcd: snapshots
 * and filters, streams read by curl and by the client, resumption by
 * Last-Event-ID (from the replay log; a snapshot when the revision is older
 * than the log, compacted in etcd, or unknown), a slow consumer dropped
 * while the others go on, limits, and refusals with their reasons.
 */
let env: Awaited<ReturnType<typeof startEtcd>>;
let etcd: EtcdServer;
let n = 0;
let prefix = "";
const open: DiscoveryEnv[] = [];

beforeAll(async () => {
  env = await startEtcd();
  etcd = env.etcd;
});
afterAll(async () => {
  for (const d of open) await d.close();
  await env.close();
});
beforeEach(() => {
  prefix = `/d${++n}/registry`;
});

async function discovery(opts: Parameters<typeof startDiscovery>[2] = {}): Promise<DiscoveryEnv> {
  const d = await startDiscovery(etcd.localEndpoint, prefix, opts);
  open.push(d);
  return d;
}

const WEB: ServiceInput = { type: "ClusterIP", clusterIPs: ["198.18.255.10"], ports: [{ name: "http", protocol: "TCP", port: 80 }] };
const HEADLESS: ServiceInput = { type: "Headless" };
const ep = (i: number) => ({ addresses: [`198.18.1.${i}`], hostname: `web-${i}` });

describe("snapshots and refusals", () => {
  it("GET /v1/services returns the view at a revision, filtered by namespace and name", async () => {
    const d = await discovery();
    await d.registry.putService("default", "web", WEB);
    await d.registry.putEndpoint("default", "web", "web-1", ep(1));
    await d.registry.putService("prod", "db", HEADLESS);
    await until(() => d.watcher.services().size === 2 && d.watcher.allEndpoints().length === 1);
    const all = await http({ port: d.port }, "GET", "/v1/services");
    expect(all.status).toBe(200);
    expect(all.json["revision"]).toBe(d.watcher.revision);
    expect((all.json["services"] as { name: string }[]).map((s) => s.name).sort()).toEqual(["db", "web"]);
    expect(all.json["endpoints"]).toEqual([{ namespace: "default", service: "web", id: "web-1", addresses: ["198.18.1.1"], hostname: "web-1", ready: true, ports: [] }]);
    const prod = await http({ socketPath: d.socket }, "GET", "/v1/services?namespace=prod");
    expect((prod.json["services"] as { name: string }[]).map((s) => s.name)).toEqual(["db"]);
    expect(prod.json["endpoints"]).toEqual([]);
    const web = await http({ port: d.port }, "GET", "/v1/services?name=web");
    expect((web.json["services"] as unknown[]).length).toBe(1);
    expect((web.json["endpoints"] as unknown[]).length).toBe(1);
    // label selectors: entries without labels pass none; labelled ones pass key=value and key alone
    expect((await http({ port: d.port }, "GET", "/v1/services?label=app=web")).json).toMatchObject({ services: [], endpoints: [] });
    await d.registry.putService("default", "api", { ...WEB, clusterIPs: ["198.18.255.11"], labels: { app: "web", "example.com/tier": "front" } });
    await d.registry.putEndpoint("default", "api", "api-1", { ...ep(7), labels: { app: "web" } });
    await until(() => d.watcher.services().size === 3 && d.watcher.allEndpoints().length === 2);
    const labelled = await http({ port: d.port }, "GET", "/v1/services?label=app=web");
    expect((labelled.json["services"] as { name: string }[]).map((s) => s.name)).toEqual(["api"]);
    expect((labelled.json["endpoints"] as { id: string }[]).map((e) => e.id)).toEqual(["api-1"]);
    const tier = await http({ port: d.port }, "GET", "/v1/services?label=example.com/tier&label=app=web");
    expect((tier.json["services"] as { name: string }[]).map((s) => s.name)).toEqual(["api"]);
    expect(tier.json["endpoints"]).toEqual([]); // the endpoint has no tier label
    expect((await http({ port: d.port }, "GET", "/v1/services?label=app=db")).json).toMatchObject({ services: [], endpoints: [] });
  });

  it("refuses what it does not take with a 4xx, a reason and a count: query, path, method, Last-Event-ID, header size", async () => {
    const d = await discovery();
    const cases: [string, string, Record<string, string>, number, string][] = [
      ["GET", "/v1/services?nmespace=x", {}, 400, "bad_query"],
      ["GET", "/v1/services?namespace=Bad_NS", {}, 400, "bad_query"],
      ["GET", "/v1/services?name=a&name=b", {}, 400, "bad_query"],
      ["GET", "/v1/services?watch=maybe", {}, 400, "bad_query"],
      ["GET", "/v1/services?label=%00", {}, 400, "bad_query"],
      ["GET", `/v1/services?${Array.from({ length: 17 }, (_, i) => `label=k${i}`).join("&")}`, {}, 400, "bad_query"],
      ["GET", "/v1/services?watch=1", { "last-event-id": "12abc" }, 400, "bad_last_event_id"],
      ["GET", "/v1/services?watch=1", { "last-event-id": "1".repeat(25) }, 400, "bad_last_event_id"],
      ["POST", "/v1/services", {}, 405, "method"],
      ["GET", "/v2/anything", {}, 404, "not_found"],
      ["GET", "/v1/endpoints?x=1", {}, 400, "bad_query"],
      ["POST", "/v1/endpoints", { "content-type": "application/json" }, 503, "publication_off"],
    ];
    for (const [method, path, headers, status, reason] of cases) {
      const r = await http({ port: d.port }, method, path, { headers });
      expect([path, r.status, r.json["reason"]]).toEqual([path, status, reason]);
      expect(typeof r.json["error"]).toBe("string");
    }
    const r405 = await http({ port: d.port }, "DELETE", "/v1/services");
    expect(r405.headers["allow"]).toBe("GET");
    const big = await http({ port: d.port }, "GET", "/v1/services", { headers: { "x-pad": "y".repeat(10_000) } });
    expect([big.status, big.json["reason"]]).toEqual([431, "too_large"]);
    const refused = d.discovery.summary().refused;
    expect(refused).toEqual({ bad_query: 7, bad_last_event_id: 2, method: 2, not_found: 1, publication_off: 1, too_large: 1 });
  });

  it("answers 503 until the registry has been listed", async () => {
    const d = await discovery({ startWatcher: false });
    const r = await http({ port: d.port }, "GET", "/v1/services?watch=1");
    expect(r.status).toBe(503);
    expect(r.json["reason"]).toBe("not_synced");
    expect(r.headers["retry-after"]).toBe("1");
    await d.watcher.start();
    expect((await http({ port: d.port }, "GET", "/v1/services")).status).toBe(200);
  });
});

describe("streams", () => {
  it("curl -N over the Unix socket and the client over TCP get the snapshot, then every change in order, one id per revision", async () => {
    const d = await discovery();
    await d.registry.putService("default", "web", WEB);
    await until(() => d.watcher.services().size === 1);
    const curl = spawn("curl", ["-sN", "--unix-socket", d.socket, "http://agent/v1/services?watch=1"]);
    let curlText = "";
    curl.stdout.on("data", (b: Buffer) => (curlText += b.toString()));
    const sub = subscribe({ target: `http://127.0.0.1:${d.port}`, namespace: "default" });
    const got: SubscriptionEvent[] = [];
    sub.on("event", (e) => got.push(e));
    await sub.ready();
    await until(() => curlText.includes("event: snapshot"));
    expect(got[0]).toMatchObject({ type: "snapshot", snapshot: { reason: "initial", services: [{ name: "web" }] } });

    const lat: number[] = [];
    const timed = async (what: () => Promise<unknown>, count: number): Promise<void> => {
      const want = got.length + count;
      const arrived = new Promise<void>((resolve) => {
        const on = (): void => {
          if (got.length < want) return;
          sub.off("event", on);
          resolve();
        };
        sub.on("event", on);
      });
      const t0 = performance.now();
      await what();
      if (count > 0) await arrived;
      lat.push(performance.now() - t0);
    };
    for (let i = 1; i <= 3; i++) await timed(() => d.registry.putEndpoint("default", "web", `web-${i}`, ep(i)), 1);
    await timed(() => d.registry.putService("other", "skip", HEADLESS), 0); // filtered out for the client
    await timed(() => d.registry.removeService("default", "web"), 4); // one transaction: 3 endpoints and the service
    const changes = got.slice(1).map((e) => (e.type === "change" ? `${e.change.op} ${e.change.kind} ${e.change.name}${"id" in e.change ? `/${e.change.id}` : ""}` : e.type));
    expect(changes).toEqual(["put endpoint web/web-1", "put endpoint web/web-2", "put endpoint web/web-3",
      "delete endpoint web/web-1", "delete endpoint web/web-2", "delete endpoint web/web-3", "delete service web"]);
    expect(sub.services.size).toBe(0);
    expect(sub.endpoints.size).toBe(0);
    console.log(`discovery stream latency ms (write to client): ${lat.map((l) => l.toFixed(1)).join(" ")}`);
    for (const l of lat) expect(l).toBeLessThan(1000);

    // curl saw the same stream unfiltered: every event carries its revision; the transaction's four share one id line
    await until(() => sseEvents(curlText).length >= 9);
    curl.kill();
    const ev = sseEvents(curlText);
    expect(ev.map((e) => e.event)).toEqual(["snapshot", "put", "put", "put", "put", "delete", "delete", "delete", "delete"]);
    const txn = ev.slice(5);
    expect(new Set(txn.map((e) => e.data["revision"])).size).toBe(1);
    expect(txn.map((e) => e.id)).toEqual([undefined, undefined, undefined, txn[0]!.data["revision"]]);
    for (const e of ev.slice(1, 5)) expect(e.id).toBe(e.data["revision"]);
    sub.close();
  });

  it("a client that loses its stream resumes with Last-Event-ID and gets only what it missed", async () => {
    const d = await discovery({ limits: { retryMs: 200 } });
    await d.registry.putService("default", "web", WEB);
    await until(() => d.watcher.services().size === 1);
    const fwd = await forwardTcpToUnix(d.socket); // a path we can cut: TCP to the API's Unix socket
    const sub = subscribe({ target: `http://127.0.0.1:${fwd.port}` });
    const got: SubscriptionEvent[] = [];
    sub.on("event", (e) => got.push(e));
    await sub.ready();
    const lost = new Promise((r) => sub.once("disconnected", r));
    fwd.pause(); // the stream breaks; changes happen meanwhile
    await lost;
    const idBefore = sub.lastEventId;
    await d.registry.putEndpoint("default", "web", "web-1", ep(1));
    await d.registry.putEndpoint("default", "web", "web-2", ep(2));
    await d.registry.removeEndpoint("default", "web", "web-1");
    await until(() => d.watcher.allEndpoints().length === 1 && d.watcher.version >= 4);
    fwd.resume();
    await until(() => got.length >= 4, 10_000, "the missed changes");
    expect(got.map((e) => e.type)).toEqual(["snapshot", "change", "change", "change"]);
    expect(got.slice(1).map((e) => (e.type === "change" ? `${e.change.op} ${"id" in e.change ? e.change.id : ""}` : ""))).toEqual(["put web-1", "put web-2", "delete web-1"]);
    expect(BigInt(sub.lastEventId)).toBeGreaterThan(BigInt(idBefore));
    expect([...sub.endpoints.keys()]).toEqual(["default/web/web-2"]);
    expect(sub.connects).toBe(2);
    const s = d.discovery.summary();
    expect(s.resumed).toBe(1);
    expect(s.replayed).toBe(3);
    expect(s.snapshots.initial).toBe(1);
    sub.close();
    await fwd.close();
  });

  it("a Last-Event-ID older than the replay log, compacted away in etcd, or unknown gets a snapshot saying why", async () => {
    const d = await discovery({ limits: { retryMs: 200, replayEntries: 3 } });
    await d.registry.putService("default", "web", WEB);
    await until(() => d.watcher.services().size === 1);
    const fwd = await forwardTcpToUnix(d.socket);
    const sub = subscribe({ target: `http://127.0.0.1:${fwd.port}` });
    const got: SubscriptionEvent[] = [];
    sub.on("event", (e) => got.push(e));
    await sub.ready();
    const resync = async (change: () => Promise<void>): Promise<SubscriptionEvent> => {
      const lost = new Promise((r) => sub.once("disconnected", r));
      fwd.pause();
      await lost;
      const n = got.length;
      await change();
      fwd.resume();
      await until(() => got.length > n, 10_000, "the stream to come back");
      return got[n]!;
    };
    // five changes while away: the log keeps three, so it no longer reaches back
    const old = await resync(async () => {
      for (let i = 1; i <= 5; i++) await d.registry.putEndpoint("default", "web", `web-${i}`, ep(i));
      await until(() => d.watcher.allEndpoints().length === 5);
    });
    expect(old).toMatchObject({ type: "snapshot", snapshot: { reason: "outside_replay", revision: d.watcher.revision } });
    expect(sub.endpoints.size).toBe(5);
    // one change while away, then etcd compacts its history past the client's revision
    const compacted = await resync(async () => {
      await d.registry.removeEndpoint("default", "web", "web-5");
      await until(() => d.watcher.allEndpoints().length === 4);
      await d.registry.client.kv.compact({ revision: d.watcher.revision, physical: true });
    });
    expect(compacted).toMatchObject({ type: "snapshot", snapshot: { reason: "compacted" } });
    expect(sub.endpoints.size).toBe(4);
    sub.close();
    await fwd.close();
    // a revision this agent never sent (another cluster's, or a future one), raw
    const future = rawStream(d.port, "/v1/services?watch=1", { "last-event-id": "99999999" });
    await until(() => future.text().includes("event: snapshot"));
    future.sock.destroy();
    expect(sseEvents(future.text())[0]?.data).toMatchObject({ reason: "unknown_revision" });
    expect(d.discovery.summary().snapshots).toEqual({ initial: 1, outside_replay: 1, compacted: 1, unknown_revision: 1 });
  });

  it("a consumer that stops reading is dropped with a reason it sees; the others get every change", async () => {
    const d = await discovery({ limits: { maxPendingBytes: 16 << 10, lingerMs: 5000 } });
    await d.registry.putService("default", "web", WEB);
    await until(() => d.watcher.services().size === 1);
    const slow = connect(d.socket); // a Unix socket: small kernel buffers, so the agent's share fills soon
    slow.on("error", () => undefined);
    slow.write("GET /v1/services?watch=1 HTTP/1.1\r\nhost: x\r\n\r\n");
    slow.pause();
    const good = subscribe({ target: { socketPath: d.socket } });
    const seen: string[] = [];
    good.on("event", (e) => e.type === "change" && "id" in e.change && seen.push(e.change.id));
    await good.ready();
    await until(() => d.discovery.summary().subscribers.unix === 2);
    // ~2 KiB per change: 100 addresses per endpoint
    const big = (i: number) => ({ addresses: Array.from({ length: 100 }, (_, k) => `198.18.${i % 200}.${k + 1}`) });
    const N = 400;
    for (let i = 0; i < N; i += 20) await Promise.all(Array.from({ length: 20 }, (_, k) => d.registry.putEndpoint("default", "web", `e${i + k}`, big(i + k))));
    await until(() => seen.length === N, 20_000, "the good consumer to get every change");
    expect(new Set(seen).size).toBe(N);
    const s = d.discovery.summary();
    expect(s.ended.slow).toBe(1);
    expect(s.subscribers.unix).toBe(1); // the good one still streams
    // the slow one reads at last: what was sent, then the reason, then the end
    let text = "";
    const ended = new Promise((r) => slow.on("end", r));
    slow.on("data", (b: Buffer) => (text += b.toString()));
    slow.resume();
    await ended;
    const last = sseEvents(text).at(-1);
    expect(last?.event).toBe("dropped");
    expect(String(last?.data["reason"])).toMatch(/too far behind: \d+ bytes unread, the limit is 16384( \(\+\d+ of the first snapshot\))?; reconnect with Last-Event-ID \d+/);
    good.close();
  }, 60_000);

  it("caps streams in all and per client address (429 with the limit)", async () => {
    const d = await discovery({ limits: { maxSubscribers: 3, maxPerClient: 2 } });
    const a = rawStream(d.port);
    const b = rawStream(d.port);
    await until(() => d.discovery.summary().subscribers.tcp === 2);
    const c = await http({ port: d.port }, "GET", "/v1/services?watch=1");
    expect([c.status, c.json["reason"]]).toEqual([429, "too_many_subscribers"]);
    expect(String(c.json["error"])).toMatch(/127\.0\.0\.1 holds 2 streams/);
    const u = rawStream(d.port); // still over the per-client cap
    await until(() => u.text().includes("429"));
    const viaUnix = spawn("curl", ["-sN", "--unix-socket", d.socket, "http://agent/v1/services?watch=1"]);
    await until(() => d.discovery.summary().subscribers.unix === 1);
    const full = await promisify(execFile)("curl", ["-s", "--unix-socket", d.socket, "http://agent/v1/services?watch=1"]);
    expect(JSON.parse(full.stdout)).toMatchObject({ reason: "too_many_subscribers" });
    for (const s of [a, b, u]) s.sock.destroy();
    viaUnix.kill();
    await until(() => d.discovery.summary().subscribers.tcp + d.discovery.summary().subscribers.unix === 0);
  });
});
