import { describe, expect, it } from "vitest";
import { formatIpv4, parseCidr } from "../../src/common/ipv4.js";
import { formatCidr6, formatIpv6, parseCidr6 } from "../../src/common/ipv6.js";
import { encodeLeaseAttrs, NO_IPV4, parseLeaseAttrs, parseLeaseKey, subnetKey } from "../../src/subnet/lease.js";
import { formatNetworkConfig, parseNetworkConfig } from "../../src/subnet/network-config.js";
import { formatSubnetFile } from "../../src/subnet/subnet-file.js";

// flannel's formats for IPv6 (pkg/subnet/config.go CheckNetworkConfig, subnet.go MakeSubnetKey /
// ParseSubnetKey / WriteSubnetFile, pkg/lease LeaseAttrs): keys join the families with "&", the v6
// part as Go's net.IP.String() prints it; values carry PublicIPv6 and BackendV6Data.

describe("IPv6 network config (flannel's rules at 128 bits)", () => {
  it.each([
    // json, v6 network, v6 subnet length, min, max
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1::/48","Backend":{"Type":"vxlan"}}', "2001:db8:1::/48", 64, "2001:db8:1:1::", "2001:db8:1:ffff::"],
    ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8::/120","Backend":{"Type":"vxlan"}}', "2001:db8::/120", 122, "2001:db8::40", "2001:db8::c0"],
    ['{"Network":"198.18.0.0/16","enableipv6":true,"ipv6network":"2001:db8:1::/56","IPv6SubnetLen":60,"IPv6SubnetMin":"2001:db8:1:10::","IPv6SubnetMax":"2001:db8:1:f0::","Backend":{"Type":"vxlan"}}', "2001:db8:1::/56", 60, "2001:db8:1:10::", "2001:db8:1:f0::"],
  ])("%s", (json, net, len, min, max) => {
    const c = parseNetworkConfig(json);
    expect(c.ipv6 && formatCidr6(c.ipv6.network)).toBe(net);
    expect(c.ipv6?.subnetLen).toBe(len);
    expect(formatIpv6(c.ipv6?.subnetMin ?? 0n)).toBe(min);
    expect(formatIpv6(c.ipv6?.subnetMax ?? 0n)).toBe(max);
  });

  it("an IPv6-only config needs no Network; the IPv4 half is empty", () => {
    const c = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1::/48","Backend":{"Type":"vxlan"}}');
    expect(c.enableIpv4).toBe(false);
    expect(c.network).toEqual(NO_IPV4);
    expect(parseNetworkConfig('{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}').ipv6).toBeUndefined();
  });

  it.each([
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"}}', /IPv6Network/],
    ['{"EnableIPv4":false,"EnableIPv6":false,"Backend":{"Type":"vxlan"}}', /no address family/],
    ['{"EnableIPv4":false,"Backend":{"Type":"vxlan"}}', /no address family/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":"yes","IPv6Network":"2001:db8::/48","Backend":{"Type":"vxlan"}}', /EnableIPv6 must be true or false/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/126","Backend":{"Type":"vxlan"}}', /too small.*\/124/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/48","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}', /less than \/127/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/48","IPv6SubnetLen":49,"Backend":{"Type":"vxlan"}}', /at least four subnets/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/48","IPv6SubnetMin":"2001:db9::","Backend":{"Type":"vxlan"}}', /IPv6SubnetMin.*not in the range/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/48","IPv6SubnetMax":"2001:db8:0:1::1","Backend":{"Type":"vxlan"}}', /IPv6SubnetMax.*boundary/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/48","IPv6SubnetMin":"2001:db8:0:9::","IPv6SubnetMax":"2001:db8:0:2::","Backend":{"Type":"vxlan"}}', /above IPv6SubnetMax/],
    ['{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::zz/48","Backend":{"Type":"vxlan"}}', /not an IPv6 address/],
  ])("refuses %s", (json, msg) => {
    expect(() => parseNetworkConfig(json)).toThrow(msg);
  });

  it("weft network init writes what parses back, IPv6 fields by flannel's names", () => {
    const text = formatNetworkConfig({ network: parseCidr("198.18.0.0/16"), ipv6Network: parseCidr6("2001:db8:1::/48"), ipv6SubnetLen: 64 });
    expect(JSON.parse(text)).toMatchObject({ Network: "198.18.0.0/16", EnableIPv6: true, IPv6Network: "2001:db8:1::/48", IPv6SubnetLen: 64 });
    const only6 = formatNetworkConfig({ ipv6Network: parseCidr6("2001:db8:1::/48") });
    expect(JSON.parse(only6)).toMatchObject({ EnableIPv4: false, EnableIPv6: true });
    expect(parseNetworkConfig(only6).enableIpv4).toBe(false);
  });
});

describe("dual-stack lease keys and values", () => {
  const v6 = parseCidr6("2001:db8:0:5::/64");
  it("keys: v4-v6 joined by &, the v6 part as Go prints it; IPv6-only keeps 0.0.0.0-0", () => {
    expect(subnetKey(parseCidr("198.18.5.0/24"), v6)).toBe("198.18.5.0-24&2001:db8:0:5::-64");
    expect(subnetKey(NO_IPV4, parseCidr6("2001:db8:0:0:1::/80"))).toBe("0.0.0.0-0&2001:db8:0:0:1::-80");
    const k = parseLeaseKey("198.18.5.0-24&2001:db8:0:5::-64");
    expect(k && formatCidr6(k.subnet6 ?? { addr: 0n, len: 0 })).toBe("2001:db8:0:5::/64");
    expect(parseLeaseKey("198.18.5.0-24")?.subnet6).toBeUndefined();
  });

  it.each(["198.18.5.0-24&2001:db8::-", "198.18.5.0-24&2001:db8::-064", "198.18.5.0-24&2001:DB8::-64", "198.18.5.0-24&1:2:3:4:5:6:7:8:9-64", "198.18.5.0-24&:::-64", "198.18.5.0-24&2001:db8::-64&x"])(
    "malformed v6 key %j names nothing", (k) => {
      expect(parseLeaseKey(k)).toBeUndefined();
    });

  it("a dual-stack value, field for field as flannel's LeaseAttrs marshals, byte for byte both ways", () => {
    const flannel = '{"PublicIP":"192.0.2.3","PublicIPv6":"2001:db8:ff::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}';
    const a = parseLeaseAttrs(flannel);
    expect(formatIpv6(a.publicIpv6 ?? 0n)).toBe("2001:db8:ff::3");
    expect(a.v6?.vni).toBe(1);
    expect(encodeLeaseAttrs(a)).toBe(flannel);
  });

  it("an IPv6-only value: PublicIP 0.0.0.0, no BackendData, as flannel writes for a node without IPv4", () => {
    const flannel = '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:ff::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}';
    const a = parseLeaseAttrs(flannel);
    expect(formatIpv4(a.publicIp)).toBe("0.0.0.0");
    expect(encodeLeaseAttrs(a)).toBe(flannel);
  });
});

describe("subnet.env with IPv6", () => {
  it("dual-stack: flannel's line order, first usable address of each subnet", () => {
    expect(formatSubnetFile({
      network: parseCidr("198.18.0.0/16"), subnet: parseCidr("198.18.5.0/24"),
      network6: parseCidr6("2001:db8:1::/48"), subnet6: parseCidr6("2001:db8:1:5::/64"), mtu: 1430, ipMasq: true,
    })).toBe("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:1::/48\nFLANNEL_IPV6_SUBNET=2001:db8:1:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n");
  });
  it("IPv6-only: no IPv4 lines", () => {
    expect(formatSubnetFile({ network: undefined, subnet: undefined, network6: parseCidr6("2001:db8:1::/48"), subnet6: parseCidr6("2001:db8:1:5::/64"), mtu: 1430, ipMasq: false }))
      .toBe("FLANNEL_IPV6_NETWORK=2001:db8:1::/48\nFLANNEL_IPV6_SUBNET=2001:db8:1:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n");
  });
});
