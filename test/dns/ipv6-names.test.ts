/**
 * IPv6 names of the cluster zone, asked with the real `dig`: pod records
 * spelled with dashes for colons (2001-db8--1.<ns>.pod.<zone>, by the rules
 * of CoreDNS's kubernetes plugin), ip6.arpa PTRs of IPv6 service and
 * endpoint addresses, and names that cannot exist — pod labels that spell
 * no address, ip6.arpa names that are not nibbles — answered NXDOMAIN and
 * counted (weft_dns_invalid_names_total), never forwarded.
 */
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { podLabelAddress } from "../../src/dns/cluster/podname.js";
import type { ZoneEndpoint, ZoneService } from "../../src/dns/cluster/records.js";
import { ip6ArpaProblem } from "../../src/dns/cluster/reverse.js";
import { DnsService } from "../../src/dns/service.js";
import { nameToKey } from "../../src/dns/wire/query.js";
import { freeUdpTcpPort } from "../../src/harness/unbound.js";
import { dig, rr, StaticView, type DigResult } from "../helpers/dns.js";

const Z = "cluster.local";
const TTL = 17; // only the zone options say 17

const svc = (name: string, type: ZoneService["type"], clusterIPs: string[]): ZoneService => ({
  namespace: "default", name, type, clusterIPs, ports: [{ name: "http", protocol: "TCP", port: 80 }], publishNotReadyAddresses: false,
});
const SERVICES: ZoneService[] = [
  svc("web6", "ClusterIP", ["2001:db8:5::a"]),
  svc("dual", "ClusterIP", ["198.18.255.20", "2001:db8:5::14"]),
  svc("db6", "Headless", []),
];
const ENDPOINTS: ZoneEndpoint[] = [
  { namespace: "default", service: "db6", id: "db6-0", addresses: ["2001:db8:1::5"], hostname: "db6-0", ready: true, ports: [] },
  { namespace: "default", service: "db6", id: "db6-1", addresses: ["2001:db8:1::6", "198.18.1.6"], ready: true, ports: [] },
];

type Mode = "insecure" | "verified" | "disabled";
const servers = new Map<Mode, { dns: DnsService; port: number; metrics: Registry }>();

beforeAll(async () => {
  for (const pods of ["insecure", "verified", "disabled"] as const) {
    const port = await freeUdpTcpPort();
    const metrics = new Registry();
    // No upstream: a name that is forwarded fails at once (SERVFAIL), which tells it from one answered here.
    const dns = new DnsService({ listen: [{ host: "127.0.0.1", port }], zone: { domain: Z, ttl: TTL, pods }, upstreams: [], policy: "random", allow: [] },
      new StaticView(SERVICES, ENDPOINTS), silentLogger, metrics);
    await dns.start();
    servers.set(pods, { dns, port, metrics });
  }
});
afterAll(async () => {
  await Promise.all([...servers.values()].map((s) => s.dns.close()));
});

const pod = (label: string, ns = "default"): string => `${label}.${ns}.pod.${Z}.`;
/** The ip6.arpa name of an address, nibble by nibble (written here, not taken from the code under test). */
function ptr6(ip: string): string {
  const [head = "", tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return `${groups.map((g) => g.padStart(4, "0")).join("").split("").reverse().join(".")}.ip6.arpa.`;
}

async function invalidCount(m: Mode, kind: string): Promise<number> {
  const text = await servers.get(m)!.metrics.metrics();
  const line = new RegExp(`^weft_dns_invalid_names_total\\{kind="${kind}"\\} (\\d+)$`, "m").exec(text);
  if (!line) throw new Error(`no weft_dns_invalid_names_total{kind="${kind}"} in\n${text}`);
  return Number(line[1]);
}

describe("podLabelAddress: CoreDNS's rules for the address a pod label spells", () => {
  it.each([
    ["198-18-1-5", { ok: true, family: 4, address: "198.18.1.5", text: "198.18.1.5" }],
    ["2001-db8--1", { ok: true, family: 6, address: "2001:db8::1", text: "2001:db8::1" }], // three dashes, but one "--": IPv6
    ["2001-db8-0-0-0-0-0-1", { ok: true, family: 6, address: "2001:db8::1", text: "2001:db8:0:0:0:0:0:1" }],
    ["2001-0db8-0000-0000-0000-0000-0000-0001", { ok: true, family: 6, address: "2001:db8::1", text: "2001:0db8:0000:0000:0000:0000:0000:0001" }],
    ["--1", { ok: true, family: 6, address: "::1", text: "::1" }],
    ["--", { ok: true, family: 6, address: "::", text: "::" }],
    ["--ffff-c000-201", { ok: true, family: 4, address: "192.0.2.1", text: "::ffff:c000:201" }], // IPv4-mapped: an A record, as Go's To4
    ["--c000-201", { ok: true, family: 6, address: "::c000:201", text: "::c000:201" }], // IPv4-compatible is not mapped
  ] as const)("%s → %j", (label, want) => {
    expect(podLabelAddress(label)).toEqual(want);
  });

  it.each([
    ["1-2-3-256", /not an IPv4 address/],
    ["01-2-3-4", /not an IPv4 address/],
    ["a-b-c-d", /not an IPv4 address/],
    ["-1-2-3", /not an IPv4 address/],
    ["db-0", /not an address with dashes/],
    ["abc", /not an address with dashes/],
    ["2001-db8---1", /IPv6 "2001:db8:::1"/],
    ["2001-db8--1--2", /"::" appears more than once/],
    ["2001-db8-1-2-3-4-5-6-7", /9 groups, not 8/],
    ["2001-db8--12345", /"12345" is not a group of 1-4 hex digits/],
    ["2001-db8--g", /"g" is not a group/],
    ["1-2-3-4-5", /5 groups, not 8/],
  ])("%s spells no address: %s", (label, why) => {
    const r = podLabelAddress(label);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.why).toMatch(why);
      expect(r.why).toContain(`"${label}"`);
    }
  });
});

describe("ip6ArpaProblem", () => {
  const nibbles = (n: number): string => Array.from({ length: n }, (_, i) => (i % 16).toString(16)).join(".");
  it.each([
    [`${nibbles(32)}.ip6.arpa`, undefined],
    [`${nibbles(8)}.ip6.arpa`, undefined], // a prefix: a delegation point, not malformed
    ["ip6.arpa", undefined],
    ["web.default.svc.cluster.local", undefined],
    ["x.in-addr.arpa", undefined],
    [`${nibbles(33)}.ip6.arpa`, /more than 32 nibbles/],
    ["x.ip6.arpa", /label 1 \("x"\) is not a hex digit/],
    ["1.10.ip6.arpa", /label 2 \("10"\) is not one hex digit/],
    ["g.8.b.d.0.1.0.0.2.ip6.arpa", /label 1 \("g"\)/],
    ["-.ip6.arpa", /is not a hex digit/],
  ])("%s: %s", (name, want) => {
    const r = ip6ArpaProblem(nameToKey(name));
    if (want === undefined) expect(r).toBeUndefined();
    else expect(r).toMatch(want);
  });
});

interface Want { status: "NOERROR" | "NXDOMAIN" | "SERVFAIL"; answer?: string[]; aa?: boolean }
interface Case { title: string; mode?: Mode; args: string[]; want: Want; invalid?: "pod" | "ip6_arpa" }
const NODATA: Want = { status: "NOERROR", answer: [] };
const NX: Want = { status: "NXDOMAIN", answer: [] };
const FORWARDED: Want = { status: "SERVFAIL", answer: [], aa: false };

const CASES: Case[] = [
  // Pod records, insecure: any address the label spells.
  { title: "AAAA of an IPv6 pod name", args: [pod("2001-db8--1"), "AAAA"], want: { status: "NOERROR", answer: [`${pod("2001-db8--1")} ${TTL} AAAA 2001:db8::1`] } },
  { title: "A of an IPv6 pod name: NODATA (the name exists)", args: [pod("2001-db8--1"), "A"], want: NODATA },
  { title: "a non-canonical spelling answers with the canonical address", args: [pod("2001-0db8-0000-0000-0000-0000-0000-0001"), "AAAA"], want: { status: "NOERROR", answer: [`${pod("2001-0db8-0000-0000-0000-0000-0000-0001")} ${TTL} AAAA 2001:db8::1`] } },
  { title: "upper case: answered, the question's case kept", args: [pod("2001-DB8--A"), "AAAA"], want: { status: "NOERROR", answer: [`${pod("2001-DB8--A")} ${TTL} AAAA 2001:db8::a`] } },
  // A name starting with "-" is given to dig with -q (else dig takes it for an option).
  { title: "IPv4-mapped spelling: an A record, as CoreDNS", args: ["-q", pod("--ffff-c000-201"), "-t", "A"], want: { status: "NOERROR", answer: [`${pod("--ffff-c000-201")} ${TTL} A 192.0.2.1`] } },
  { title: "IPv4-mapped spelling has no AAAA", args: ["-q", pod("--ffff-c000-201"), "-t", "AAAA"], want: NODATA },
  { title: "'--' is '::' to CoreDNS's rules: AAAA ::", args: ["-q", pod("--"), "-t", "AAAA"], want: { status: "NOERROR", answer: [`${pod("--")} ${TTL} AAAA ::`] } },
  { title: "the IPv4 form still works", args: [pod("198-18-1-5"), "A"], want: { status: "NOERROR", answer: [`${pod("198-18-1-5")} ${TTL} A 198.18.1.5`] } },
  { title: "':::' spelled: NXDOMAIN, counted", args: [pod("2001-db8---1"), "AAAA"], want: NX, invalid: "pod" },
  { title: "two '::': NXDOMAIN, counted", args: [pod("2001-db8--1--2"), "AAAA"], want: NX, invalid: "pod" },
  { title: "nine groups: NXDOMAIN, counted", args: [pod("2001-db8-1-2-3-4-5-6-7"), "AAAA"], want: NX, invalid: "pod" },
  { title: "a five-digit group: NXDOMAIN, counted", args: [pod("2001-db8--12345"), "AAAA"], want: NX, invalid: "pod" },
  { title: "a non-hex group: NXDOMAIN, counted", args: [pod("2001-db8--zz"), "AAAA"], want: NX, invalid: "pod" },
  { title: "three dashes, bad IPv4: NXDOMAIN, counted", args: [pod("1-2-3-256"), "A"], want: NX, invalid: "pod" },
  { title: "a word: NXDOMAIN, counted", args: [pod("db-0"), "A"], want: NX, invalid: "pod" },
  { title: "an invalid label asked again is counted again (not kept as a remembered answer)", args: [pod("db-0"), "A"], want: NX, invalid: "pod" },
  // Verified: only an address an endpoint of the namespace has, spelled as the registry writes it.
  { title: "verified: an IPv6 endpoint address of the namespace", mode: "verified", args: [pod("2001-db8-1--5"), "AAAA"], want: { status: "NOERROR", answer: [`${pod("2001-db8-1--5")} ${TTL} AAAA 2001:db8:1::5`] } },
  { title: "verified: a dual-stack endpoint's IPv6 address", mode: "verified", args: [pod("2001-db8-1--6"), "AAAA"], want: { status: "NOERROR", answer: [`${pod("2001-db8-1--6")} ${TTL} AAAA 2001:db8:1::6`] } },
  { title: "verified: a non-canonical spelling is not the pod's IP (as CoreDNS): NXDOMAIN", mode: "verified", args: [pod("2001-db8-1-0-0-0-0-5"), "AAAA"], want: NX },
  { title: "verified: another namespace: NXDOMAIN", mode: "verified", args: [pod("2001-db8-1--5", "other"), "AAAA"], want: NX },
  { title: "verified: an address no endpoint has: NXDOMAIN", mode: "verified", args: [pod("2001-db8-1--7"), "AAAA"], want: NX },
  { title: "verified: an invalid label: NXDOMAIN, counted", mode: "verified", args: [pod("2001-db8-1---5"), "AAAA"], want: NX, invalid: "pod" },
  { title: "disabled: NXDOMAIN, not counted as invalid", mode: "disabled", args: [pod("2001-db8--1"), "AAAA"], want: NX },
  { title: "disabled: an invalid label is not counted either", mode: "disabled", args: [pod("2001-db8---1"), "AAAA"], want: NX },
  // Reverse lookups (dig -x writes the ip6.arpa name itself).
  { title: "PTR of an IPv6 ClusterIP", args: ["-x", "2001:db8:5::a"], want: { status: "NOERROR", answer: [`${ptr6("2001:db8:5::a")} ${TTL} PTR web6.default.svc.${Z}.`] } },
  { title: "PTR of a dual-stack service's IPv6 ClusterIP", args: ["-x", "2001:db8:5::14"], want: { status: "NOERROR", answer: [`${ptr6("2001:db8:5::14")} ${TTL} PTR dual.default.svc.${Z}.`] } },
  { title: "PTR of a dual-stack service's IPv4 ClusterIP", args: ["-x", "198.18.255.20"], want: { status: "NOERROR", answer: [`20.255.18.198.in-addr.arpa. ${TTL} PTR dual.default.svc.${Z}.`] } },
  { title: "PTR of a headless IPv6 endpoint with a hostname", args: ["-x", "2001:db8:1::5"], want: { status: "NOERROR", answer: [`${ptr6("2001:db8:1::5")} ${TTL} PTR db6-0.db6.default.svc.${Z}.`] } },
  { title: "PTR with upper-case nibbles", args: [ptr6("2001:db8:5::a").toUpperCase().replace("IP6.ARPA", "ip6.arpa"), "PTR"], want: { status: "NOERROR", answer: [`${ptr6("2001:db8:5::a").toUpperCase().replace("IP6.ARPA", "ip6.arpa")} ${TTL} PTR web6.default.svc.${Z}.`] } },
  { title: "AAAA of the dual-stack headless endpoint without hostname, by its dashed IPv6", args: [`2001-db8-1--6.db6.default.svc.${Z}.`, "AAAA"], want: { status: "NOERROR", answer: [`2001-db8-1--6.db6.default.svc.${Z}. ${TTL} AAAA 2001:db8:1::6`] } },
  // ip6.arpa names we do not hold are forwarded (SERVFAIL here: no upstream); impossible ones are not.
  { title: "an address we do not know: forwarded", args: ["-x", "2001:db8::99"], want: FORWARDED },
  { title: "a prefix (fewer nibbles): forwarded", args: ["8.b.d.0.1.0.0.2.ip6.arpa.", "PTR"], want: FORWARDED },
  { title: "ip6.arpa itself: forwarded", args: ["ip6.arpa.", "SOA"], want: FORWARDED },
  { title: "a label that is not a nibble: NXDOMAIN, counted, not forwarded", args: ["x.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR"], want: { ...NX, aa: false }, invalid: "ip6_arpa" },
  { title: "a two-digit label: NXDOMAIN, counted", args: ["10.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR"], want: { ...NX, aa: false }, invalid: "ip6_arpa" },
  { title: "33 nibbles: NXDOMAIN, counted", args: [`0.${ptr6("2001:db8:5::a")}`, "PTR"], want: { ...NX, aa: false }, invalid: "ip6_arpa" },
  { title: "a bad nibble with pods disabled too", mode: "disabled", args: ["g.ip6.arpa.", "PTR"], want: { ...NX, aa: false }, invalid: "ip6_arpa" },
];

describe("IPv6 names with dig", () => {
  it.each(CASES)("$title", async (c) => {
    const mode = c.mode ?? "insecure";
    const s = servers.get(mode)!;
    const before = { pod: await invalidCount(mode, "pod"), ip6_arpa: await invalidCount(mode, "ip6_arpa") };
    const r: DigResult = await dig(s.port, ...c.args);
    expect(r.status, r.text).toBe(c.want.status);
    if (c.want.answer) expect(r.answer.map(rr).sort(), r.text).toEqual([...c.want.answer].sort());
    if (c.want.aa ?? true) expect(r.flags, r.text).toContain("aa");
    else expect(r.flags, r.text).not.toContain("aa");
    if (c.want.status === "NXDOMAIN" && (c.want.aa ?? true)) expect(r.authority.map((a) => a.type), r.text).toEqual(["SOA"]);
    const after = { pod: await invalidCount(mode, "pod"), ip6_arpa: await invalidCount(mode, "ip6_arpa") };
    expect(after).toEqual({ pod: before.pod + (c.invalid === "pod" ? 1 : 0), ip6_arpa: before.ip6_arpa + (c.invalid === "ip6_arpa" ? 1 : 0) });
  });
});
