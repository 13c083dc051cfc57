import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/common/errors.js";
import { conflist, pluginVersions } from "../../src/cni/install.js";

/** install-cni refuses, once and clearly, a conflist every ADD would refuse. */
describe("install-cni's conflist", () => {
  const ok = { networkName: "weft", bridge: "cni0", controlSocket: undefined, ipam: undefined };
  it("is written for good values", () => {
    expect(conflist(ok)).toMatchObject({ name: "weft", plugins: [{ type: "weft", bridge: "cni0" }, { type: "portmap" }] });
  });
  it("chains portmap (portMappings capability) for the newest CNI version it and weft both speak", () => {
    expect(conflist({ ...ok, portmapVersions: ["0.4.0", "1.0.0"] })).toMatchObject({
      cniVersion: "1.0.0", cniVersions: ["1.0.0"], plugins: [{ type: "weft" }, { type: "portmap", capabilities: { portMappings: true } }],
    });
    expect(conflist({ ...ok, portmapVersions: ["1.0.0", "1.1.0"] })).toMatchObject({ cniVersion: "1.1.0", cniVersions: ["1.0.0", "1.1.0"] });
    expect((conflist({ ...ok, portmap: false })["plugins"] as unknown[]).length).toBe(1);
    expect(conflist({ ...ok, portmap: false, portmapVersions: ["0.4.0"] })).toMatchObject({ cniVersion: "1.1.0" });
    expect(() => conflist({ ...ok, portmapVersions: ["0.3.1", "0.4.0"] })).toThrow(/portmap plugin supports CNI "0\.3\.1, 0\.4\.0", none of 1\.1\.0, 1\.0\.0.*|--no-portmap/);
  });

  it("asks the installed portmap which versions it speaks (its VERSION answer)", () => {
    const v = pluginVersions("/usr/lib/cni/portmap");
    expect(v).toContain("1.0.0");
    expect(pluginVersions("/nonexistent/portmap")).toBeUndefined();
  });

  it.each([
    [{ bridge: "br 0" }, /--bridge "br 0" is not a usable interface name: it holds a space/],
    [{ bridge: "br;id>x" }, /--bridge .* it holds ";"/],
    [{ bridge: "bridge-name-too-long" }, /--bridge .* at most 15/],
    [{ networkName: "my net" }, /--network-name "my net" is not a network name/],
    [{ networkName: "" }, /--network-name/],
  ])("%j is refused", (bad, msg) => {
    expect(() => conflist({ ...ok, ...bad })).toThrow(ConfigError);
    expect(() => conflist({ ...ok, ...bad })).toThrow(msg);
  });
});
