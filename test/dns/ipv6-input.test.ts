/**
 * IPv6 in the DNS server's configuration, all of it input from outside the
 * process: upstream strings (--dns-upstream, resolv.conf), listen addresses
 * (--dns-listen), client prefixes (--dns-allow). Good spellings come back
 * canonical (a reply's source is compared with that text); bad ones are
 * refused with an error that names the input and says what is wrong.
 * Also: the client ACL with IPv6 prefixes, which upstreams are this server
 * itself per family, and the batch path's address text against Node's.
 */
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { SocketAddress } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { dnsAllowList } from "../../src/agent/dns.js";
import { parseAgentOptions } from "../../src/agent/options.js";
import { ConfigError } from "../../src/common/errors.js";
import { parseUpstream, upstreamsFromResolvConf, withoutSelf } from "../../src/dns/forward/upstreams.js";
import { parseHostPort } from "../../src/dns/hostport.js";
import { ClientAcl, parseAllowPrefix } from "../../src/dns/server/acl.js";
import { wordsToText } from "../../src/dns/server/batch.js";
import { DnsService } from "../../src/dns/service.js";
import { silentLogger } from "../../src/common/log.js";
import { StaticView } from "../helpers/dns.js";
import { parseIpv6 } from "../../src/common/ipv6.js";

/** The error a call throws (it must throw a ConfigError). */
function thrown(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

describe("DNS upstream strings", () => {
  it.each([
    ["198.51.100.1", "198.51.100.1", 53, "198.51.100.1:53"],
    ["198.51.100.1:5353", "198.51.100.1", 5353, "198.51.100.1:5353"],
    ["[2001:db8::53]:53", "2001:db8::53", 53, "[2001:db8::53]:53"],
    ["[2001:db8::53]", "2001:db8::53", 53, "[2001:db8::53]:53"],
    ["2001:db8::53", "2001:db8::53", 53, "[2001:db8::53]:53"],
    [" [2001:DB8:0:0::53]:5353 ", "2001:db8::53", 5353, "[2001:db8::53]:5353"], // canonical: a reply from 2001:db8::53 matches
    ["[2001:0db8:0000:0000:0000:0000:0000:0053]:53", "2001:db8::53", 53, "[2001:db8::53]:53"],
    ["[::ffff:198.51.100.1]:53", "198.51.100.1", 53, "198.51.100.1:53"], // IPv4-mapped: the IPv4 address
    ["[::ffff:c633:6401]:53", "198.51.100.1", 53, "198.51.100.1:53"],
    ["[::1]:53", "::1", 53, "[::1]:53"],
    ["2001:db8::53:53", "2001:db8::53:53", 53, "[2001:db8::53:53]:53"], // bare IPv6: every ":" is the address's
  ])("%j → %s port %d", (text, host, port, label) => {
    expect(parseUpstream(text)).toEqual({ host, port, label, fails: 0, loop: false });
  });

  it.each([
    ["", /is empty/],
    ["[2001:db8::53", /"\[" without a closing "\]"/],
    ["2001:db8::53]:53", /"\]" without an opening "\["/],
    ["[2001:db8::53]:", /port "" is not a number 1-65535/],
    ["[2001:db8::53]53", /"53" after "\]": only ":<port>" may follow/],
    ["[2001:db8::53]:0", /port "0" is not a number 1-65535/],
    ["[2001:db8::53]:65536", /port "65536"/],
    ["[2001:db8::53]:5x", /port "5x"/],
    ["[2001:db8::53]:53:53", /port "53:53"/],
    ["[198.51.100.1]:53", /an IPv4 address in brackets/],
    ["[]:53", /an empty group|not an IPv6 address/],
    ["[2001:db8:::53]:53", /not an IPv6 address/],
    ["[2001:db8::53::1]:53", /"::" appears more than once/],
    ["[2001:db8::12345]:53", /"12345" is not a group of 1-4 hex digits/],
    ["2001:db8::g", /not an IPv6 address.*\[address\]:port/],
    ["[fe80::1%eth0]:53", /a zone \(%interface\) is not supported/],
    ["fe80::1%eth0", /a zone/],
    ["[fe80::1]:53", /link-local address needs an interface/],
    ["[ff02::fb]:53", /multicast/],
    ["[::]:53", /unspecified/],
    ["0.0.0.0:53", /not an address to send to/],
    ["224.0.0.251", /multicast/],
    ["dns.example:53", /not an IPv4 address \(a host name is not accepted/],
    ["198.51.100.256", /not an IPv4 address/],
  ])("%j is refused: %s", (text, why) => {
    const e = thrown(() => parseUpstream(text));
    expect(e.message).toMatch(why);
    expect(e.message).toContain(`DNS upstream "${text}"`);
    expect(e.message, "says how to write it").toContain("[2001:db8::53]:53");
    expect(e.code).toBe("WEFT_CONFIG_INVALID");
  });

  it("resolv.conf: IPv6 nameservers kept (canonical), unusable ones left out with the reason", () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-resolv-"));
    try {
      const f = join(dir, "resolv.conf");
      writeFileSync(f, [
        "# comment", "nameserver 198.51.100.53", "nameserver 2001:DB8::53", "nameserver fe80::1%eth0", "nameserver [2001:db8::54]:53",
        "nameserver 198.51.100.54:53", "nameserver dns.example", "nameserver ff02::1", "search cluster.local", "nameserver ::ffff:198.51.100.55", "",
      ].join("\n"));
      const skipped: [string, string][] = [];
      const ups = upstreamsFromResolvConf(f, (n, why) => skipped.push([n, why]));
      expect(ups.map((u) => u.label)).toEqual(["198.51.100.53:53", "[2001:db8::53]:53", "198.51.100.55:53"]);
      expect(skipped.map(([n]) => n)).toEqual(["fe80::1%eth0", "[2001:db8::54]:53", "198.51.100.54:53", "dns.example", "ff02::1"]);
      expect(skipped[0]?.[1]).toMatch(/zone/);
      expect(skipped[1]?.[1]).toMatch(/not an address as resolv.conf writes one/);
      expect(skipped[3]?.[1]).toMatch(/host name is not accepted/);
      expect(skipped[4]?.[1]).toMatch(/multicast/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("--dns-listen addresses", () => {
  const listen = (t: string): { host: string; port: number } => parseHostPort(t, { what: "--dns-listen", role: "listen" });
  it.each([
    ["169.254.20.10:53", "169.254.20.10", 53],
    ["[2001:db8::a]:53", "2001:db8::a", 53],
    ["[2001:DB8:0::A]", "2001:db8::a", 53],
    ["[::]:53", "::", 53],
    ["0.0.0.0:53", "0.0.0.0", 53],
    ["[::1]:0", "::1", 0], // port 0: any free port (tests)
  ])("%j → %s port %d", (t, host, port) => {
    expect(listen(t)).toEqual({ host, port });
  });
  it.each([
    ["[fe80::1]:53", /link-local/],
    ["[ff02::1]:53", /multicast/],
    ["[2001:db8::a]:99999", /port "99999" is not a number 0-65535/],
    ["[2001:db8::a", /closing/],
    ["[169.254.20.10]:53", /brackets are for IPv6 only/],
  ])("%j is refused: %s", (t, why) => {
    const e = thrown(() => listen(t));
    expect(e.message).toMatch(why);
    expect(e.message).toContain(`--dns-listen "${t}"`);
  });

  it.each([true, false])("an IPv6 address no interface has (batch path: %s): a ConfigError naming it, nothing left bound", async (udpBatch) => {
    const dns = new DnsService({ listen: [{ host: "::1", port: 0 }, { host: "2001:db8:dead::53", port: 53 }], zone: { domain: "cluster.local", ttl: 5, pods: "disabled" },
      upstreams: [], policy: "random", allow: [], udpBatch }, new StaticView([]), silentLogger);
    const e = await dns.start().then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).toMatch(/--dns-listen \[2001:db8:dead::53\]:53: cannot listen: no interface of this node has that address/);
    // What was bound first ([::1]:port) is closed again: the port can be had at once.
    const first = dns.addresses()[0];
    expect(first?.host).toBe("::1");
    const again = createSocket({ type: "udp6", ipv6Only: true });
    await new Promise<void>((res, rej) => {
      again.once("error", rej);
      again.bind(first?.port ?? 0, "::1", () => res());
    });
    again.close();
  });

  it("the agent's options take an IPv6 listen address, both families at once, and IPv6 --dns-allow prefixes", () => {
    const o = parseAgentOptions({ etcdEndpoints: "http://127.0.0.1:2379", etcdPrefix: "/coreos.com/network", backend: "auto", subnetFile: "/run/weft/subnet.env", ipMasq: "false",
      stateDir: "/var/lib/weft", bpffs: "/sys/fs/bpf", bpfAttach: "auto", healthListen: "127.0.0.1:9099", controlSocket: "/run/weft/agent.sock", subnetLeaseTtl: "86400",
      subnetLeaseRenewMargin: "3600", reconcileInterval: "10", ipamReconcileInterval: "60", ipamReleaseGrace: "600", registryPrefix: "/weft/registry",
      dnsListen: "169.254.20.10:53,[2001:db8::a]:53", clusterDomain: "cluster.local", dnsTtl: "5", dnsPods: "insecure", dnsUpstream: "[2001:db8::53]:53,198.51.100.53",
      dnsPolicy: "random", dnsAllow: "192.0.2.0/24,2001:db8:42::/64", dnsCacheSize: "10000" });
    expect(o.dnsListen).toEqual(["169.254.20.10:53", "[2001:db8::a]:53"]);
    expect(o.dnsAllow).toEqual(["192.0.2.0/24", "2001:db8:42::/64"]);
    expect(dnsAllowList("198.18.0.0/15", { addr: 0x20010db8000700000000000000000000n, len: 56 }, o.dnsAllow)).toEqual(["198.18.0.0/15", "2001:db8:7::/56", "192.0.2.0/24", "2001:db8:42::/64"]);
    // An IPv6-only network has no IPv4 half: nothing IPv4 is let in (its 0.0.0.0/0 placeholder would let in every client).
    expect(dnsAllowList(undefined, { addr: 0x20010db8000700000000000000000000n, len: 56 }, [])).toEqual(["2001:db8:7::/56"]);
  });
});

describe("--dns-allow prefixes", () => {
  it.each([["2001:db8:42::/64", "2001:db8:42::/64"], ["2001:DB8:42:0::/64", "2001:db8:42::/64"], ["::/0", "::/0"], ["192.0.2.0/24", "192.0.2.0/24"]])("%s → %s", (t, want) => {
    expect(parseAllowPrefix(t)).toBe(want);
  });
  it.each([
    ["2001:db8:42::1/64", /host bits set/],
    ["2001:db8:42::/129", /prefix length "129"/],
    ["2001:db8:::/64", /not an IPv6 address/],
    ["2001:db8:42::", /not an IPv6 prefix/],
    ["192.0.2.1/24", /host bits set/],
  ])("%s is refused: %s", (t, why) => {
    const e = thrown(() => parseAllowPrefix(t));
    expect(e.message).toMatch(why);
    expect(e.message).toContain(`--dns-allow "${t}"`);
  });
});

describe("the client ACL with IPv6 prefixes", () => {
  const acl = new ClientAcl(["198.18.0.0/15", "2001:db8:42::/64", "2001:db8:7::/56"], () => new Set(["2001:db8:99::1"]));
  it.each([
    ["2001:db8:42::1", true], ["2001:db8:42:0:ffff:ffff:ffff:ffff", true], ["2001:db8:7:ff::5", true], ["::1", true], ["2001:db8:99::1", true],
    ["2001:db8:43::1", false], ["2001:db8:7:100::1", false], ["2001:db8:99::2", false], ["fe80::1", false], ["fe80::1%eth0", false], ["::", false],
    ["::ffff:198.18.0.1", true], ["::ffff:198.20.0.1", false], ["not-an-address", false],
  ] as const)("%s allowed: %s", (addr, ok) => {
    expect(acl.allows(addr)).toBe(ok);
    expect(acl.allows(addr)).toBe(ok);
  });
  it("IPv6 clients are refused when only IPv4 prefixes are given", () => {
    expect(new ClientAcl(["0.0.0.0/0"], () => new Set()).allows("2001:db8:42::1")).toBe(false);
  });
});

describe("upstreams that are this server itself, per family", () => {
  const ups = ["127.0.0.1:53", "[::1]:53", "[2001:db8::a]:53", "198.51.100.9:53", "[2001:db8::b]:53"].map(parseUpstream);
  const local = new Set(["198.51.100.9", "2001:db8::b"]);
  it.each([
    { listen: [{ host: "0.0.0.0", port: 53 }], dropped: ["127.0.0.1:53", "198.51.100.9:53"] },
    { listen: [{ host: "::", port: 53 }], dropped: ["[::1]:53", "[2001:db8::b]:53"] },
    { listen: [{ host: "2001:db8::a", port: 53 }], dropped: ["[2001:db8::a]:53"] },
    { listen: [{ host: "::", port: 5353 }], dropped: [] },
  ])("listening on $listen.0.host port $listen.0.port drops $dropped", ({ listen, dropped }) => {
    const r = withoutSelf(ups, listen, local);
    expect(r.dropped).toEqual(dropped);
    expect(r.kept.length + r.dropped.length).toBe(ups.length);
  });
});

describe("the batch path's IPv6 client text", () => {
  /** Four host-order words of an address, as native/weft_dns.c writes them. */
  const words = (a: bigint): Int32Array => Int32Array.from([96n, 64n, 32n, 0n].map((s) => Number((a >> s) & 0xffffffffn) | 0));
  it.each(["2001:db8::1", "::1", "::", "2001:db8:0:1:0:0:0:1", "2001:0:0:1::1", "fe80::1:2:3:4", "1:0:0:2:0:0:0:3", "2001:db8:1:2:3:4:5:6", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:198.51.100.1", "::2", "::c633:6401", "::1:0:1"])(
    "%s is written as Node writes it", (text) => {
      const canon = new SocketAddress({ address: text, family: "ipv6" }).address;
      expect(wordsToText(words(parseIpv6(text)), 0)).toBe(canon);
    });

  it("10,000 random addresses (runs of zeros likely) come out as Node writes them", () => {
    for (let i = 0; i < 10_000; i++) {
      let n = 0n;
      const groups: string[] = [];
      for (let g = 0; g < 8; g++) {
        const v = Math.random() < 0.5 ? 0 : Math.floor(Math.random() * 0x10000);
        n = (n << 16n) | BigInt(v);
        groups.push(v.toString(16));
      }
      const canon = new SocketAddress({ address: groups.join(":"), family: "ipv6" }).address;
      expect(wordsToText(words(n), 0)).toBe(canon);
    }
  });
});
