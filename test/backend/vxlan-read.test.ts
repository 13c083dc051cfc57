import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandError } from "../../src/common/exec.js";
import { batch, outputLines } from "../../src/common/iproute.js";
import { fdbLine, neighLine, routeLine } from "../../src/backend/vxlan/kernel.js";
import { Netns } from "../../src/harness/netns.js";

/**
 * The vxlan backend's reconcile reads the kernel from iproute2's text,
 * line by line (not `-json`): the text reading must find exactly what the
 * JSON reading found, on real devices of both families.
 */
let ns: Netns;
beforeAll(async () => {
  ns = await Netns.create("vr");
  await ns.ip("link", "add", "u0", "type", "veth", "peer", "name", "u1");
  await ns.ip("link", "set", "u0", "up");
  await ns.ip("link", "set", "u1", "up");
  await ns.ip("addr", "add", "192.0.2.1/24", "dev", "u0");
  await ns.ip("-6", "addr", "add", "2001:db8:ff::1/64", "dev", "u0", "nodad");
  await ns.ip("link", "add", "weft.1", "type", "vxlan", "id", "1", "local", "192.0.2.1", "dev", "u0", "dstport", "8472", "nolearning");
  await ns.ip("link", "add", "weft-v6.1", "type", "vxlan", "id", "1", "local", "2001:db8:ff::1", "dev", "u0", "dstport", "8472", "nolearning");
  await ns.ip("link", "set", "weft.1", "up");
  await ns.ip("link", "set", "weft-v6.1", "up");
  const ip: string[] = [];
  const br: string[] = [];
  for (let i = 1; i <= 300; i++) {
    const mac = `02:5e:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
    const gw4 = `198.18.${i >> 6}.${(i & 63) * 4}`;
    ip.push(`neigh replace ${gw4} lladdr ${mac} dev weft.1 nud permanent`, `route replace ${gw4}/30 via ${gw4} dev weft.1 onlink`);
    br.push(`fdb replace ${mac} dev weft.1 dst 198.51.100.${(i % 250) + 1} self permanent`);
    const gw6 = `2001:db8:1:${i.toString(16)}::`;
    ip.push(`neigh replace ${gw6} lladdr ${mac} dev weft-v6.1 nud permanent`, `route replace ${gw6}/64 via ${gw6} dev weft-v6.1 onlink`);
    br.push(`fdb replace ${mac} dev weft-v6.1 dst 2001:db8:fe::${i.toString(16)} self permanent`);
  }
  // A host route, a neighbour that is not permanent, and an FDB entry without a destination: the readings skip or keep them alike.
  ip.push("route replace 198.18.200.1 via 198.18.200.1 dev weft.1 onlink", "neigh replace 198.18.200.9 lladdr 02:00:00:00:00:09 dev weft.1 nud reachable");
  br.push("fdb append 00:00:00:00:00:00 dev weft.1 dst 198.51.100.250 self permanent");
  expect((await batch("ip", ip, ns.name)).failed).toEqual([]);
  expect((await batch("bridge", br, ns.name)).failed).toEqual([]);
});
afterAll(async () => {
  await ns?.destroy();
});

/** What the JSON reading (before) made of the same objects. */
async function viaJson(dev: string, f: "-4" | "-6"): Promise<{ neigh: Map<string, string>; fdb: Map<string, string>; routes: Map<string, string> }> {
  const j = async <T>(argv: string[]): Promise<T[]> => JSON.parse((await ns.exec(argv)) || "[]") as T[];
  const neigh = await j<{ dst: string; lladdr?: string; state?: string[] }>(["ip", "-json", f, "neigh", "show", "dev", dev]);
  const fdb = await j<{ mac: string; dst?: string }>(["bridge", "-json", "fdb", "show", "dev", dev]);
  const routes = await j<{ dst: string; gateway?: string }>(["ip", "-json", f, "route", "show", "dev", dev]);
  return {
    neigh: new Map(neigh.filter((n) => n.state?.includes("PERMANENT") && n.lladdr).map((n) => [n.dst, n.lladdr ?? ""])),
    fdb: new Map(fdb.filter((e) => e.dst !== undefined).map((e) => [e.mac, e.dst ?? ""])),
    routes: new Map(routes.filter((r) => r.gateway !== undefined).map((r) => [r.dst, r.gateway ?? ""])),
  };
}

async function viaText(dev: string, f: "-4" | "-6"): Promise<{ neigh: Map<string, string>; fdb: Map<string, string>; routes: Map<string, string> }> {
  const out = { neigh: new Map<string, string>(), fdb: new Map<string, string>(), routes: new Map<string, string>() };
  for (const l of (await ns.exec(["ip", f, "neigh", "show", "dev", dev])).split("\n")) neighLine(l, out.neigh);
  for (const l of (await ns.exec(["bridge", "fdb", "show", "dev", dev])).split("\n")) fdbLine(l, out.fdb);
  for (const l of (await ns.exec(["ip", f, "route", "show", "dev", dev])).split("\n")) routeLine(l, out.routes);
  return out;
}

describe("vxlan backend: reading the kernel from iproute2's text", () => {
  it.each([["weft.1", "-4"], ["weft-v6.1", "-6"]] as const)("%s: neighbours, FDB entries and routes as the JSON reading found them", async (dev, f) => {
    const text = await viaText(dev, f);
    const json = await viaJson(dev, f);
    expect(json.routes.size).toBeGreaterThanOrEqual(300);
    expect(json.neigh.size).toBe(300);
    expect([...text.neigh].sort()).toEqual([...json.neigh].sort());
    expect([...text.fdb].sort()).toEqual([...json.fdb].sort());
    expect([...text.routes].sort()).toEqual([...json.routes].sort());
  });

  it("lines that are not entries are skipped, not misread", () => {
    const m = new Map<string, string>();
    for (const l of ["", "   ", "garbage", "lladdr", "198.18.0.1 lladdr", "198.18.0.2 lladdr 02:00:00:00:00:02 STALE"]) neighLine(l, m);
    for (const l of ["", "dst", "02:00:00:00:00:01 self permanent"]) fdbLine(l, m);
    for (const l of ["", "via", "198.18.0.0/24 proto kernel scope link src 198.18.0.1", "\tnexthop via 198.18.0.9 dev weft.1 weight 1"]) routeLine(l, m);
    expect([...m]).toEqual([]);
    routeLine("198.18.4.0/24 via inet 198.18.4.0 onlink", m);
    expect(m.get("198.18.4.0/24")).toBe("198.18.4.0");
  });

  it("outputLines: every line in order (the last without a newline too); a failing command or callback rejects", async () => {
    const seen: string[] = [];
    await outputLines(["printf", "a\\nbb\\n\\nccc"], (l) => seen.push(l));
    expect(seen).toEqual(["a", "bb", "", "ccc"]);
    await expect(outputLines(["ip", "link", "show", "dev", "wft-no-such-dev"], () => undefined)).rejects.toBeInstanceOf(CommandError);
    await expect(outputLines(["printf", "x\\ny\\n"], () => {
      throw new Error("bad line");
    })).rejects.toThrow("bad line");
  });
});
