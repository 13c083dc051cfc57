import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/common/log.js";
import { projectRoot } from "../../src/common/paths.js";
import { run } from "../../src/common/exec.js";
import { BpfError, BpfObject, bpf } from "../../src/backend/ebpf/libbpf.js";
import { Datapath } from "../../src/backend/ebpf/loader.js";
import { MAP_LAYOUT } from "../../src/backend/ebpf/maps.js";
import { parseIpv4 } from "../../src/common/ipv4.js";

let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-bpffs-"));
  await run(["mount", "-t", "bpf", "bpf", dir]);
});
afterAll(async () => {
  await run(["umount", "-l", dir]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe("loading", () => {
  it("a verifier rejection is a BpfError carrying the verifier's log", () => {
    let err: unknown;
    try {
      BpfObject.load(join(projectRoot(), "build", "bpf", "rejected.bpf.o"));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfError);
    const msg = (err as BpfError).message;
    expect(msg).toMatch(/loading .*rejected\.bpf\.o into the kernel: EACCES \(the verifier refused the program\)/);
    expect(msg).toMatch(/verifier log[\s\S]*invalid access to packet/);
  });

  it("refuses a directory that is not a bpffs, saying how to fix it", () => {
    expect(() => Datapath.load(tmpdir(), silentLogger)).toThrow(/is not a bpffs.*mount -t bpf bpf/);
  });

  it("pins the maps, reuses them on the next load, and keeps their contents", () => {
    const root = join(dir, "reuse");
    const a = Datapath.load(root, silentLogger);
    a.maps.setEndpoint(0xc6120105, { ifindex: 7, mac: new Uint8Array(6).fill(1), hostMac: new Uint8Array(6).fill(2) });
    a.close();
    const b = Datapath.load(root, silentLogger);
    expect(b.migrated).toEqual([]);
    expect(b.maps.endpoint(0xc6120105)?.ifindex).toBe(7);
    b.close();
  });

  it("a pinned map with another layout is replaced (migrated), not reused", async () => {
    const root = join(dir, "migrate");
    await run(["mkdir", "-p", join(root, "weft", "maps")]);
    // An older build's endpoint map: 8-byte values.
    await run(["bpftool", "map", "create", join(root, "weft", "maps", "weft_endpoints"), "type", "hash", "key", "4", "value", "8", "entries", "16", "name", "weft_endpoints"]);
    const d = Datapath.load(root, silentLogger);
    expect(d.migrated).toEqual(["weft_endpoints"]);
    d.finishMigration();
    const fd = bpf.get(join(root, "weft", "maps", "weft_endpoints"));
    expect(bpf.mapInfo(fd).valueSize).toBe(MAP_LAYOUT.weft_endpoints.value);
    bpf.close(fd);
    d.close();
  });

  it("layout 1's routes and nodes are carried over into layout 2 (no IPv6 part), so traffic keeps its routes across the upgrade", async () => {
    const root = join(dir, "layout1");
    const maps = join(root, "weft", "maps");
    await run(["mkdir", "-p", maps]);
    await run(["bpftool", "map", "create", join(maps, "weft_routes"), "type", "lpm_trie", "key", "8", "value", "20", "entries", "16", "name", "weft_routes", "flags", "1"]);
    await run(["bpftool", "map", "create", join(maps, "weft_nodes"), "type", "hash", "key", "4", "value", "20", "entries", "16", "name", "weft_nodes"]);
    // 198.18.2.0/24 -> 192.0.2.2, VTEP 02:00:c0:00:02:02, subnet 198.18.2.0 mask 255.255.255.0 (layout 1's struct node_info)
    const value = ["c0", "00", "02", "02", "02", "00", "c0", "00", "02", "02", "00", "00", "c6", "12", "02", "00", "ff", "ff", "ff", "00"];
    await run(["bpftool", "map", "update", "pinned", join(maps, "weft_routes"), "key", "hex", "18", "00", "00", "00", "c6", "12", "02", "00", "value", "hex", ...value]);
    await run(["bpftool", "map", "update", "pinned", join(maps, "weft_nodes"), "key", "hex", "c0", "00", "02", "02", "value", "hex", ...value]);
    const d = Datapath.load(root, silentLogger);
    expect(d.migrated).toEqual(["weft_routes", "weft_nodes"]);
    const want = { underlay: parseIpv4("192.0.2.2"), subnet: parseIpv4("198.18.2.0"), prefixLen: 24 };
    expect(d.maps.route(parseIpv4("198.18.2.0"), 24)).toMatchObject(want);
    expect(d.maps.node(parseIpv4("192.0.2.2"))).toMatchObject(want);
    expect([...(d.maps.route(parseIpv4("198.18.2.0"), 24)?.vtepMac6 ?? [])]).toEqual([2, 0, 0xc0, 0, 2, 2]);
    expect(d.maps.route(parseIpv4("198.18.2.0"), 24)?.subnet6).toBeUndefined();
    d.finishMigration();
    d.close();
  });
});
