import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4, formatMac, parseIpv4 } from "../../src/common/ipv4.js";
import { Netns, uniqueTag, veth } from "../../src/harness/netns.js";
import { resultName } from "../../src/dataplane/results.js";
import { icmpEcho, ipv4 } from "../helpers/packets.js";
import { jsonLines } from "../helpers/lines.js";
import { NODES, coreAs } from "../helpers/tunnel.js";

/**
 * Interop with the real Linux vxlan driver, programmed exactly as flanneld
 * programs it (device per VNI, learning off, /32 address, permanent neighbour,
 * FDB entry, onlink route). Node A is the kernel; node B is the WASM core
 * behind a plain UDP socket in another namespace.
 */
const peerScript = fileURLToPath(new URL("../helpers/udp-peer.mjs", import.meta.url));
const tag = uniqueTag();
let a: Netns;
let b: Netns;
const ipA = formatIpv4(NODES[0].underlay);
const ipB = formatIpv4(NODES[1].underlay);

beforeAll(async () => {
  a = await Netns.create("a", tag);
  b = await Netns.create("b", tag);
  await veth(a, "eth0", b, "eth0");
  await a.ip("addr", "add", `${ipA}/24`, "dev", "eth0");
  await b.ip("addr", "add", `${ipB}/24`, "dev", "eth0");
  await a.ip("link", "add", "weft.1", "address", formatMac(NODES[0].vtepMac), "type", "vxlan", "id", "1",
    "local", ipA, "dev", "eth0", "dstport", "8472", "nolearning");
  await a.ip("addr", "add", "198.18.1.0/32", "dev", "weft.1");
  await a.ip("link", "set", "weft.1", "up");
  await a.ip("neigh", "add", "198.18.2.0", "lladdr", formatMac(NODES[1].vtepMac), "dev", "weft.1", "nud", "permanent");
  await a.exec(["bridge", "fdb", "append", formatMac(NODES[1].vtepMac), "dev", "weft.1", "dst", ipB]);
  await a.ip("route", "add", "198.18.2.0/24", "via", "198.18.2.0", "dev", "weft.1", "onlink");
});

afterAll(async () => {
  await a?.destroy();
  await b?.destroy();
});

describe("the Linux vxlan driver and the WASM core", () => {
  it("a frame the kernel encapsulates is accepted by decap", async () => {
    const peer = b.spawn(["node", peerScript, ipB, "8472", "1", "5000"]);
    const { ready, done } = jsonLines(peer);
    await ready;
    await a.exec(["ping", "-c", "1", "-W", "1", "198.18.2.5"]).catch(() => undefined); // no reply expected
    const [msg] = await done;
    expect(msg?.["from"]).toBe(ipA);
    const payload = Buffer.from(String(msg?.["hex"]), "hex");

    const core = coreAs(1);
    core.setDesc(0, core.writeSlot(0, payload), payload.length, parseIpv4(ipA));
    expect(core.decap(1)).toBe(1);
    const d = core.desc(0);
    expect(resultName(d.res)).toBe("ok");
    expect(d.res).toBe(0); // peer index of node A
    const inner = Buffer.from(core.bytes().slice(d.off, d.off + d.len));
    expect(formatIpv4(inner.readUInt32BE(12))).toBe("198.18.1.0"); // the vxlan device's address
    expect(formatIpv4(inner.readUInt32BE(16))).toBe("198.18.2.5");
    expect(inner[9]).toBe(1); // ICMP
    expect(inner[20]).toBe(8); // echo request
  });

  it("a frame the core encapsulates is accepted by the kernel, which answers through the tunnel", async () => {
    // Pod 198.18.2.5 on node B pings node A's vxlan address; A's kernel replies to B over VXLAN.
    const core = coreAs(1);
    const request = ipv4({ src: parseIpv4("198.18.2.5"), dst: parseIpv4("198.18.1.0"), proto: 1,
      payload: icmpEcho(0x77, 1, new Uint8Array(32).fill(0x61)) });
    core.setDesc(0, core.writeSlot(0, request), request.length);
    expect(core.encap(1)).toBe(1);
    const d = core.desc(0);
    expect(d.addr).toBe(NODES[0].underlay);
    const payload = Buffer.from(core.bytes().slice(d.off, d.off + d.len)).toString("hex");

    const peer = b.spawn(["node", peerScript, ipB, "8472", "1", "5000", ipA, "8472", payload]);
    const { done } = jsonLines(peer);
    const [msg] = await done;
    const reply = Buffer.from(String(msg?.["hex"]), "hex");
    core.setDesc(0, core.writeSlot(1, reply), reply.length, parseIpv4(ipA));
    expect(core.decap(1)).toBe(1);
    const r = core.desc(0);
    const inner = Buffer.from(core.bytes().slice(r.off, r.off + r.len));
    expect(formatIpv4(inner.readUInt32BE(12))).toBe("198.18.1.0");
    expect(formatIpv4(inner.readUInt32BE(16))).toBe("198.18.2.5");
    expect(inner[20]).toBe(0); // echo reply
    expect(inner.readUInt16BE(24)).toBe(0x77); // our identifier
  });
});
