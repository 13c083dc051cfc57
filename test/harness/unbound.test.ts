import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { query } from "../../src/harness/dnswire.js";
import { UnboundServer } from "../../src/harness/unbound.js";

const zone = UnboundServer.testZone();

describe("unbound harness", () => {
  let dir: string;
  let u: UnboundServer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "weft-unbound-test-"));
    u = await UnboundServer.start({ dir: join(dir, "upstream"), authZones: [{ name: zone.name, zonefile: zone.text }] });
  });
  afterAll(async () => {
    await u?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const ask = (name: string, type: string, opts: { tcp?: boolean; edns?: number } = {}) => query(u.address.host, u.address.port, name, type, opts);

  it("serves the test zone authoritatively on 127.0.0.1", async () => {
    expect(u.address.host).toBe("127.0.0.1");
    const a = await ask(zone.a.name, "A");
    expect(a.rcodeName).toBe("NOERROR");
    expect(a.flags.aa).toBe(true);
    expect(a.answers).toEqual([{ name: zone.a.name, type: 1, ttl: zone.a.ttl, data: zone.a.address }]);

    const aaaa = await ask(zone.aaaa.name, "AAAA");
    expect(aaaa.answers.map((r) => r.data)).toEqual([zone.aaaa.address]);

    const multi = await ask(zone.multiA.name, "A");
    expect(multi.answers.map((r) => r.data).sort()).toEqual([...zone.multiA.addresses].sort());

    const txt = await ask(zone.txt.name, "TXT");
    expect(txt.answers.map((r) => r.data)).toEqual([zone.txt.text]);

    const cname = await ask(zone.cname.name, "A");
    expect(cname.answers.map((r) => [r.name, r.type, r.data])).toEqual([
      [zone.cname.name, 5, zone.cname.target],
      [zone.cname.target, 1, zone.a.address],
    ]);

    const short = await ask(zone.shortTtl.name, "A");
    expect(short.answers).toEqual([{ name: zone.shortTtl.name, type: 1, ttl: 30, data: zone.shortTtl.address }]);
  });

  it("answers NXDOMAIN, NODATA, and REFUSED outside its zones (no iteration to the Internet)", async () => {
    for (const n of zone.nxdomain) {
      const r = await ask(n, "A");
      expect(r.rcodeName, n).toBe("NXDOMAIN");
      expect(r.ancount).toBe(0);
      expect(r.nscount).toBe(1); // the SOA, for negative caching
    }
    const nodata = await ask(zone.nodata.name, zone.nodata.type);
    expect(nodata.rcodeName).toBe("NOERROR");
    expect(nodata.ancount).toBe(0);
    expect((await ask("example.com.", "A")).rcodeName).toBe("REFUSED");
  });

  it("sets TC=1 on the big TXT RRset over UDP without EDNS, and sends it whole over TCP", async () => {
    const udp = await ask(zone.bigTxt.name, "TXT");
    expect(udp.flags.tc).toBe(true);
    expect(udp.size).toBeLessThanOrEqual(512);
    expect(udp.ancount).toBe(0);

    const tcp = await ask(zone.bigTxt.name, "TXT", { tcp: true });
    expect(tcp.flags.tc).toBe(false);
    expect(tcp.size).toBeGreaterThan(512);
    expect(tcp.answers.map((r) => r.data).sort()).toEqual([...zone.bigTxt.strings].sort());

    const edns = await ask(zone.bigTxt.name, "TXT", { edns: 1232 });
    expect(edns.flags.tc).toBe(false);
    expect(edns.answers).toHaveLength(zone.bigTxt.strings.length);
  });

  it("forwards to another loopback unbound", async () => {
    const fwd = await UnboundServer.start({ dir: join(dir, "forwarder"), forwardTo: [{ servers: [u.address] }] });
    try {
      const r = await query(fwd.address.host, fwd.address.port, zone.shortTtl.name, "A");
      expect(r.answers.map((a) => a.data)).toEqual([zone.shortTtl.address]);
      expect(r.answers[0]?.ttl).toBeLessThanOrEqual(30);
      expect((await query(fwd.address.host, fwd.address.port, zone.nxdomain[0] ?? "", "A")).rcodeName).toBe("NXDOMAIN");
    } finally {
      await fwd.close();
    }
  });

  it("stops and runs again on the same port", async () => {
    const { port } = u.address;
    await u.stop();
    expect(u.running).toBe(false);
    await expect(query("127.0.0.1", port, zone.a.name, "A", { timeoutMs: 300 })).rejects.toThrow(/no reply/);
    await u.run();
    expect(u.running).toBe(true);
    expect(u.address.port).toBe(port);
    expect((await ask(zone.a.name, "A")).answers[0]?.data).toBe(zone.a.address);
  });

  it("reports the log tail when unbound cannot start", async () => {
    await expect(UnboundServer.start({ dir: join(dir, "broken"), extraConfig: "no-such-option: yes" })).rejects.toThrow(/no-such-option/);
  });
});
