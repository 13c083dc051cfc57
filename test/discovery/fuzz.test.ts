import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DiscoveryRequestError } from "../../src/discovery/errors.js";
import type { PodRef } from "../../src/discovery/pods.js";
import { planPublication } from "../../src/discovery/publish-request.js";
import { startEtcd } from "../helpers/etcd.js";
import { fuzz, mutateBytes, mutateJson, mutateText, randomJson, type Rng } from "../fuzz/lib.js";
import { http, startDiscovery, type DiscoveryEnv } from "./env.js";

/**
 * The discovery API's doors, fuzzed: HTTP requests (methods, paths, query
 * strings, Last-Event-ID, bodies, and raw bytes) to a running server over a
 * real etcd must each get an HTTP answer (a 4xx with a reason from the fixed
 * vocabulary, or a 200 snapshot or stream), and the server must keep
 * answering; publication bodies must be refused with the API's own error or
 * planned only for the calling pod's namespace and addresses.
 */
let env: Awaited<ReturnType<typeof startEtcd>>;
let d: DiscoveryEnv;

beforeAll(async () => {
  env = await startEtcd();
  d = await startDiscovery(env.etcd.localEndpoint, "/fuzz/registry");
  await d.registry.putService("default", "web", { type: "ClusterIP", clusterIPs: ["198.18.255.10"] });
  await d.registry.putEndpoint("default", "web", "web-0", { addresses: ["198.18.1.5"] });
}, 30_000);
afterAll(async () => {
  await d?.close();
  await env?.close();
});

const PATHS = ["/v1/services", "/v1/services?watch=1", "/v1/services?namespace=default&name=web", "/v1/services?label=app=web&watch=1",
  "/v1/endpoints", "/v1/endpoints/default/web/web-0", "/v1/services?watch=true&namespace=default"];
const REASONS = new Set(["acl", "not_found", "method", "bad_query", "bad_last_event_id", "bad_body", "too_large", "media_type", "not_a_pod",
  "not_own_address", "other_namespace", "not_owner", "conflict", "too_many_publications", "too_many_subscribers", "not_synced", "unavailable", "publication_off"]);

function request(rng: Rng): string {
  const method = rng.pick(["GET", "GET", "GET", "POST", "DELETE", "PUT", "HEAD", rng.string(rng.length(8))]);
  const path = rng.bool(0.5) ? rng.pick(PATHS) : mutateText(rng, rng.pick(PATHS));
  const headers: string[] = ["host: agent"];
  if (rng.bool(0.4)) headers.push(`last-event-id: ${rng.bool() ? String(rng.int(0, 2 ** 31)) : rng.string(rng.length(30))}`);
  if (rng.bool(0.3)) headers.push(`content-type: ${rng.pick(["application/json", "text/plain", rng.string(rng.length(20))])}`);
  const body = rng.bool(0.3) ? JSON.stringify(mutateJson(rng, { service: "web", ports: [{ port: 80 }] })) : "";
  if (body) headers.push(`content-length: ${Buffer.byteLength(body)}`);
  return `${method} ${path.replace(/[\r\n ]/g, "")} HTTP/1.1\r\n${headers.map((h) => h.replace(/[\r\n]/g, "")).join("\r\n")}\r\nconnection: close\r\n\r\n${body}`;
}

/**
 * Sends bytes, reads until the first event of a stream or the end: the
 * status line and body. The write side is closed only after `quietMs` without
 * an answer (so that an incomplete request is answered at its end of file):
 * a client that closes its side at once gives up the answer to a stream that
 * starts after an etcd question (a Last-Event-ID to check), as with Node's
 * HTTP server any request whose client is gone.
 */
function exchange(bytes: Uint8Array, quietMs = 100): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(d.port, "127.0.0.1");
    let text = "";
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer in 5 s to ${JSON.stringify(Buffer.from(bytes).toString().slice(0, 200))}`));
    }, 5000);
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    };
    s.on("data", (b: Buffer) => {
      text += b.toString();
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) return;
      const len = /^content-length: (\d+)$/im.exec(text.slice(0, end))?.[1];
      if (Buffer.from(bytes).subarray(0, 5).toString() === "HEAD ") done(); // no body follows
      else if (len !== undefined && Buffer.byteLength(text.slice(end + 4)) >= Number(len)) done(); // a whole answer (the connection may stay open)
      else if (/event: snapshot[\s\S]*\n\n/.test(text.slice(end))) done(); // a stream: its first event is enough
    });
    s.on("end", done);
    s.on("error", done);
    s.write(bytes);
    const quiet = setTimeout(() => text === "" && s.end(), quietMs);
    s.on("close", () => clearTimeout(quiet));
  });
}

describe("fuzz: the discovery API", () => {
  it("every request gets an HTTP answer with a reason from the vocabulary, and the server keeps answering", async () => {
    const report = await fuzz("discovery-http", { iterations: 1_500 }, async (rng) => {
      const req = Buffer.from(request(rng));
      const bytes = rng.bool(0.25) ? mutateBytes(rng, req) : req;
      const r = await exchange(bytes);
      if (r.status === 0) {
        // only bytes that were not one whole request may go unanswered (the peer's close)
        expect(bytes).not.toEqual(req);
        return "refused";
      }
      expect([200, 201, 204, 400, 403, 404, 405, 413, 415, 429, 431, 503]).toContain(r.status);
      if (r.status >= 400) {
        if (Buffer.from(bytes).subarray(0, 5).toString() === "HEAD ") return "refused"; // an answer to HEAD has no body
        // the first answer (a mutated request can hold more than one)
        const head = r.text.slice(0, r.text.indexOf("\r\n\r\n"));
        const len = Number(/^content-length: (\d+)$/im.exec(head)?.[1]);
        const body = JSON.parse(r.text.slice(head.length + 4, head.length + 4 + len)) as { reason?: string; error?: string };
        expect(REASONS.has(body.reason ?? ""), body.reason).toBe(true);
        expect(typeof body.error).toBe("string");
        return "refused";
      }
      return "accepted";
    });
    expect(report.refused).toBeGreaterThan(0);
    expect(report.accepted).toBeGreaterThan(0);
    const after = await http({ port: d.port }, "GET", "/v1/services?name=web");
    expect(after.json).toMatchObject({ services: [{ name: "web" }], endpoints: [{ id: "web-0" }] });
    expect(d.discovery.summary().subscribers).toEqual({ tcp: 0, unix: 0 });
  }, 120_000);

  it("a publication body is refused with the API's error, or planned for the calling pod's own namespace and addresses only", async () => {
    const pod: PodRef = { containerId: "c0ffee0123456789", namespace: "shop", name: "web-0", addresses: ["198.18.1.5", "198.18.2.5"] };
    const valid = { service: "web", namespace: "shop", id: "web-0", addresses: ["198.18.1.5"], hostname: "web-0", ready: true, ports: [{ name: "http", protocol: "TCP", port: 8080 }] };
    const report = await fuzz("discovery-publish", { iterations: 10_000 }, (rng) => {
      const body = rng.bool(0.1) ? randomJson(rng) : mutateJson(rng, rng.bool(0.5) ? valid : mutateJson(rng, valid));
      try {
        const plan = planPublication(pod, body);
        expect(plan.namespace).toBe("shop");
        for (const a of plan.spec.addresses) expect(pod.addresses).toContain(a);
        return "accepted";
      } catch (e) {
        if (!(e instanceof DiscoveryRequestError)) throw e;
        expect(e.status === 400 || e.status === 403).toBe(true);
        return "refused";
      }
    });
    expect(report.accepted).toBeGreaterThan(0);
    expect(report.refused).toBeGreaterThan(0);
  }, 60_000);
});
