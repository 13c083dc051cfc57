import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/common/errors.js";
import { conflist } from "../../src/cni/install.js";

/** install-cni refuses, once and clearly, a conflist every ADD would refuse. */
describe("install-cni's conflist", () => {
  const ok = { networkName: "weft", bridge: "cni0", controlSocket: undefined, ipam: undefined };
  it("is written for good values", () => {
    expect(conflist(ok)).toMatchObject({ name: "weft", plugins: [{ type: "weft", bridge: "cni0" }] });
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
