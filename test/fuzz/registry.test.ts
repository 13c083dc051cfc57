import { describe, expect, it } from "vitest";
import { RegistryEntryError } from "../../src/registry/errors.js";
import { classifyRegistryKey, encodeEndpoint, encodeService, parseEndpointJson, parseServiceJson } from "../../src/registry/types.js";
import { fuzz, mutateJson, mutateText, type Rng } from "./lib.js";

/**
 * Registry keys and values as any etcd writer can put them: valid services
 * and endpoints mutated at the JSON and byte level. Reads must refuse with
 * RegistryEntryError (never anything else), and whatever is accepted must
 * encode and parse back to itself.
 */
const SERVICES = [
  { type: "ClusterIP", clusterIPs: ["198.18.255.10"], ports: [{ name: "http", protocol: "TCP", port: 80 }], publishNotReadyAddresses: false },
  { type: "Headless", ports: [{ name: "pg", protocol: "TCP", port: 5432 }] },
  { type: "ExternalName", externalName: "db.example.org" },
  { type: "ClusterIP", clusterIPs: ["198.18.255.11", "2001:db8::11"], ports: [] },
];
const ENDPOINTS = [
  { addresses: ["198.18.1.5"], hostname: "web-0", ready: true, nodeName: "node-1", ports: [{ name: "http", protocol: "TCP", port: 8080 }] },
  { addresses: ["2001:db8::5", "198.18.1.6"], ready: false },
];

function text(rng: Rng, base: unknown): string {
  switch (rng.int(0, 3)) {
    case 0: return JSON.stringify(mutateJson(rng, base));
    case 1: return mutateText(rng, JSON.stringify(base));
    case 2: return JSON.stringify(mutateJson(rng, mutateJson(rng, mutateJson(rng, base))));
    default: return JSON.stringify(base);
  }
}

function key(rng: Rng): string {
  const base = rng.bool() ? "/weft/registry/services/default/web" : "/weft/registry/endpoints/default/web/web-0";
  return rng.bool(0.7) ? mutateText(rng, base) : `/weft/registry/${rng.string(rng.length(30))}`;
}

describe("fuzz: registry JSON and keys", () => {
  it("refuses with RegistryEntryError or accepts values that round-trip", async () => {
    const report = await fuzz("registry", { iterations: 6_000 }, (rng) => {
      const k = classifyRegistryKey("/weft/registry", key(rng));
      if (!("reason" in k)) {
        // An accepted key has DNS-label parts and a plain id: nothing a log line or a DNS name could misread.
        for (const [field, part] of Object.entries(k)) {
          if (field === "kind") continue;
          expect(part).toMatch(field === "id" ? /^[A-Za-z0-9._-]{1,253}$/ : /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/);
        }
      }
      const svc = rng.bool();
      const input = text(rng, svc ? rng.pick(SERVICES) : rng.pick(ENDPOINTS));
      try {
        if (svc) {
          const s = parseServiceJson(input);
          expect(parseServiceJson(encodeService(s))).toEqual(s);
        } else {
          const e = parseEndpointJson(input);
          expect(parseEndpointJson(encodeEndpoint(e))).toEqual(e);
        }
        return "accepted";
      } catch (e) {
        if (e instanceof RegistryEntryError) {
          expect(e.message.length).toBeGreaterThan(0);
          return "refused";
        }
        throw e;
      }
    });
    expect(report.refused).toBeGreaterThan(0);
    expect(report.accepted).toBeGreaterThan(0);
  });
});
