/**
 * The cluster zone updated service by service (what the agent does on each
 * registry change) answers exactly as a zone built from scratch from the same
 * view: a model-based check over random changes (services of every type,
 * shared addresses, hostnames, not-ready endpoints), comparing every name
 * either zone knows, for every record type, after each change.
 */
import { describe, expect, it } from "vitest";
import { ClusterZone, type ZoneOptions } from "../../src/dns/cluster/zone.js";
import type { ZoneEndpoint, ZoneService } from "../../src/dns/cluster/records.js";
import { TYPE } from "../../src/dns/wire/constants.js";
import { nameToKey } from "../../src/dns/wire/query.js";
import { decodeAnswers } from "../../src/dns/wire/response.js";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

const TYPES = [TYPE.A, TYPE.AAAA, TYPE.SRV, TYPE.PTR, TYPE.TXT, TYPE.CNAME, TYPE.SOA, TYPE.NS, TYPE.ANY];

/** What a client can tell from an answer: rcode, section sizes, the answer records (order aside). */
function observe(z: ClusterZone, name: string, qtype: number): string {
  const a = z.answer(nameToKey(name), qtype);
  if (a.kind !== "wire") return JSON.stringify(a.kind === "cname" ? ["cname", a.target, a.cname.name] : ["forward"]);
  const b = a.response.bytes;
  const answers = decodeAnswers(b, b.length).map((r) => JSON.stringify(r)).sort();
  return JSON.stringify([b[3]! & 0xf, b.readUInt16BE(6), b.readUInt16BE(8), b.readUInt16BE(10), answers]);
}

describe("incremental zone updates", () => {
  it.each([1, 2, 3])("match a zone built from scratch after every one of 60 random changes (seed %i)", (seed) => {
    const r = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    const opts: ZoneOptions = { domain: "cluster.local", ttl: 5, pods: pick(["insecure", "verified"] as const) };
    const services = new Map<string, ZoneService>();
    const endpoints = new Map<string, ZoneEndpoint[]>();
    const ips = ["198.18.1.1", "198.18.1.2", "198.18.2.1", "198.18.2.2", "fd00::1", "fd00::2"]; // few: services share them
    const epsOf = (ns: string, n: string): ZoneEndpoint[] => endpoints.get(`${ns}/${n}`) ?? [];
    const zone = new ClusterZone(opts, [], epsOf, 1);
    for (let step = 0; step < 60; step++) {
      const ns = pick(["default", "db", "web"]);
      const name = pick(["a", "b", "c", "d"]);
      const key = `${ns}/${name}`;
      const what = r();
      if (what < 0.35) {
        const type = pick(["ClusterIP", "Headless", "ExternalName"] as const);
        services.set(key, {
          namespace: ns, name, type,
          clusterIPs: type === "ClusterIP" ? [pick(ips)] : [],
          externalName: type === "ExternalName" ? "example.org" : undefined,
          ports: r() < 0.7 ? [{ name: "http", protocol: "TCP", port: 80 }] : [],
          publishNotReadyAddresses: r() < 0.3,
        });
      } else if (what < 0.5) {
        services.delete(key);
      } else if (what < 0.85) {
        const list = (endpoints.get(key) ?? []).filter(() => r() < 0.8);
        list.push({ namespace: ns, service: name, id: `e${step}`, addresses: [pick(ips)], hostname: r() < 0.5 ? `h${step % 3}` : undefined, ready: r() < 0.75, ports: [] });
        endpoints.set(key, list);
      } else {
        endpoints.delete(key);
      }
      zone.update(ns, name, services.get(key), epsOf(ns, name));
      const fresh = new ClusterZone(opts, services.values(), epsOf, zone.serial);
      const names = new Set<string>(["cluster.local", "svc.cluster.local", "nope.default.svc.cluster.local", "dns-version.cluster.local"]);
      for (const s of ["default", "db", "web"]) {
        names.add(`${s}.svc.cluster.local`);
        names.add(`198-18-1-1.${s}.pod.cluster.local`);
        for (const n of ["a", "b", "c", "d"]) {
          const base = `${n}.${s}.svc.cluster.local`;
          for (const x of [base, `_http._tcp.${base}`, `_tcp.${base}`, `h0.${base}`, `h1.${base}`, `h2.${base}`, `198-18-1-1.${base}`, `fd00--1.${base}`]) names.add(x);
        }
      }
      for (const ip of ["1.1.18.198.in-addr.arpa", "2.1.18.198.in-addr.arpa", "1.2.18.198.in-addr.arpa"]) names.add(ip);
      for (const n of names) {
        for (const t of TYPES) expect(observe(zone, n, t), `step ${step}: ${n} type ${t}`).toBe(observe(fresh, n, t));
      }
    }
  });
});
