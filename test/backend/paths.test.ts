/**
 * The words for the data path's fast and slow variants (NetworkStatus.paths)
 * and the weft_datapath_variant gauge made from them at scrape time, on a
 * real prom-client registry. The cluster tests (ebpf, tun) check what real
 * agents report on this kernel.
 */
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { registerDatapathVariants } from "../../src/backend/paths-metric.js";
import { TUN_FAST_PATHS, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6, slowPathWarnings, tunPaths } from "../../src/backend/tun/paths.js";

describe("tun path variants", () => {
  it("names the offloads the kernel took and the GRO state; only the full set is the fast path", () => {
    const all = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
    expect(tunPaths(all, true, 128)).toEqual(TUN_FAST_PATHS);
    expect(slowPathWarnings(tunPaths(all, true, 128))).toEqual([]);
    const old = tunPaths(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, false, 64); // a kernel before 6.2, GRO refused
    expect(old).toEqual({ offloads: "csum,tso4,tso6", udp_gro: "off", udp_gso_segs: "64" });
    expect(tunPaths(all & ~TUN_F_TSO6, true, 128).offloads).toBe("csum,tso4,uso4,uso6"); // IPv6 super-packets refused: said, not hidden
    expect(slowPathWarnings(old)).toEqual([
      expect.objectContaining({ path: "offloads", variant: "csum,tso4,tso6", why: expect.stringMatching(/USO4\/USO6 need Linux 6\.2/) }),
      expect.objectContaining({ path: "udp_gro", variant: "off", why: expect.stringMatching(/UDP_GRO/) }),
      expect.objectContaining({ path: "udp_gso_segs", variant: "64", why: expect.stringMatching(/at most 64 datagrams/) }),
    ]);
    expect(tunPaths(0, true, 128).offloads).toBe("none");
  });
});

describe("weft_datapath_variant", () => {
  it("has one series per path with the variant in use, read at every scrape", async () => {
    const registry = new Registry();
    let paths: Record<string, string> | undefined;
    registerDatapathVariants(registry, () => paths);
    expect(await registry.metrics()).not.toMatch(/^weft_datapath_variant\{/m); // no backend yet
    paths = { attach: "tcx" };
    expect(await registry.metrics()).toMatch(/^weft_datapath_variant\{path="attach",variant="tcx"\} 1$/m);
    paths = { attach: "tc" }; // e.g. the programs were attached again with tc filters
    const text = await registry.metrics();
    expect(text).toMatch(/^weft_datapath_variant\{path="attach",variant="tc"\} 1$/m);
    expect(text).not.toMatch(/variant="tcx"/);
  });
});
