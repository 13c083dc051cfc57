import { describe, expect, it } from "vitest";
import { formatCidr, formatIpv4, parseCidr } from "../../src/common/ipv4.js";
import { encodeLeaseAttrs, parseLeaseAttrs, parseSubnetKey, subnetKey } from "../../src/subnet/lease.js";
import { formatNetworkConfig, parseNetworkConfig } from "../../src/subnet/network-config.js";
import { formatSubnetFile } from "../../src/subnet/subnet-file.js";

describe("network config (flannel's rules)", () => {
  const ok: [string, string, number, string, string, number, number][] = [
    // json, network, subnetLen, min, max, vni, port
    ['{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}', "10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0", 1, 8472],
    ['{"network":"198.18.0.0/15","backend":{"type":"VXLAN","vni":7,"port":4789}}', "198.18.0.0/15", 24, "198.18.1.0", "198.19.255.0", 7, 4789],
    ['{"Network":"198.18.0.0/24","Backend":{"Type":"vxlan","Port":0}}', "198.18.0.0/24", 26, "198.18.0.64", "198.18.0.192", 1, 8472],
    ['{"Network":"198.18.0.0/16","SubnetLen":20,"SubnetMin":"198.18.32.0","SubnetMax":"198.18.64.0","Backend":{"Type":"vxlan"}}', "198.18.0.0/16", 20, "198.18.32.0", "198.18.64.0", 1, 8472],
    ['{"Network":"198.18.7.9/16","Backend":{"Type":"vxlan"}}', "198.18.0.0/16", 24, "198.18.1.0", "198.18.255.0", 1, 8472],
  ];
  it.each(ok)("%s", (json, net, len, min, max, vni, port) => {
    const c = parseNetworkConfig(json);
    expect(formatCidr(c.network)).toBe(net);
    expect(c.subnetLen).toBe(len);
    expect(formatIpv4(c.subnetMin)).toBe(min);
    expect(formatIpv4(c.subnetMax)).toBe(max);
    expect(c.backend.vni).toBe(vni);
    expect(c.backend.port).toBe(port);
  });

  const bad: [string, RegExp][] = [
    ["{", /not valid JSON/],
    ["[]", /JSON object/],
    ['{"Backend":{"Type":"vxlan"}}', /correct Network/],
    ['{"Network":"198.18.0.0/16"}', /no Backend.*udp/],
    ['{"Network":"198.18.0.0/16","Backend":{"Type":"host-gw"}}', /not supported.*vxlan/],
    ['{"Network":"198.18.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}', /less than \/31/],
    ['{"Network":"198.18.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}', /at least four subnets.*at least 18/],
    ['{"Network":"198.18.0.0/29","Backend":{"Type":"vxlan"}}', /too small/],
    ['{"Network":"198.18.0.0/16","SubnetMin":"10.0.0.0","Backend":{"Type":"vxlan"}}', /SubnetMin 10.0.0.0 is not in the range/],
    ['{"Network":"198.18.0.0/16","SubnetMax":"198.18.3.7","Backend":{"Type":"vxlan"}}', /not on a SubnetLen/],
    ['{"Network":"198.18.0.0/16","SubnetMin":"198.18.9.0","SubnetMax":"198.18.3.0","Backend":{"Type":"vxlan"}}', /above SubnetMax/],
    ['{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}', /VNI must be a non-negative integer/],
    ['{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan","Port":70000}}', /Port must be at most 65535/],
    ['{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan","DirectRouting":"yes"}}', /DirectRouting must be true or false/],
    ['{"Network":"nope","Backend":{"Type":"vxlan"}}', /not a prefix/],
  ];
  it.each(bad)("rejects %s", (json, msg) => {
    expect(() => parseNetworkConfig(json)).toThrow(msg);
  });

  it("formats what weft network init writes, and it parses back", () => {
    const text = formatNetworkConfig({ network: parseCidr("198.18.0.0/16"), subnetLen: 24, vni: 1, port: 8472 });
    expect(text).toBe('{"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}');
    expect(() => formatNetworkConfig({ network: parseCidr("198.18.0.0/16"), subnetLen: 40 })).toThrow(/less than \/31/);
  });
});

describe("lease keys and values (flannel's format)", () => {
  it("reads and writes flannel's documented lease value byte for byte", () => {
    const flannel = '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';
    const a = parseLeaseAttrs(flannel);
    expect(formatIpv4(a.publicIp)).toBe("192.168.64.3");
    expect(a.vni).toBe(1);
    expect(encodeLeaseAttrs(a)).toBe(flannel);
  });

  it.each([
    ["not json", /not JSON/],
    ['"str"', /not a JSON object/],
    ['{"BackendType":"vxlan"}', /no PublicIP/],
    ['{"PublicIP":"300.1.1.1","BackendType":"vxlan"}', /PublicIP/],
    ['{"PublicIP":"192.0.2.1","BackendType":"host-gw","BackendData":null}', /not "vxlan"/],
    ['{"PublicIP":"192.0.2.1","BackendType":"vxlan"}', /no BackendData/],
    ['{"PublicIP":"192.0.2.1","BackendType":"vxlan","BackendData":{"VNI":1}}', /no BackendData.VtepMAC/],
    ['{"PublicIP":"192.0.2.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}', /VtepMAC/],
    ['{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::zz","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}', /PublicIPv6.*not an IPv6 address/],
    ['{"PublicIP":"192.0.2.1","PublicIPv6":7,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}', /PublicIPv6 7 is not a string/],
    ['{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}', /BackendV6Data but no PublicIPv6/],
    ['{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"},"BackendV6Data":{"VNI":1}}', /no BackendV6Data.VtepMAC/],
    ['{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendV6Data":[]}', /no BackendV6Data object/],
  ])("rejects %s", (v, msg) => {
    expect(() => parseLeaseAttrs(v)).toThrow(msg);
  });

  it.each([
    ["198.18.5.0-24", "198.18.5.0/24"],
    ["10.5.34.0-24&fc00::-64", "10.5.34.0/24"],
    ["0.0.0.0-0", "0.0.0.0/0"],
  ])("key %s names %s", (k, want) => {
    const p = parseSubnetKey(k);
    expect(p && formatCidr(p)).toBe(want);
  });
  it.each([
    "junk", "198.18.5.0-40", "198.18.5.0", "300.18.5.0-24",
    // Whole keys only: flannel's pattern is unanchored, weft's is not.
    "/coreos.com/network/subnets/198.18.0.64-26", "x/198.18.1.0-24", "198.18.1.0-24junk", "198.18.1.0-24\n", " 198.18.1.0-24",
    "198.18.01.0-24", "198.18.1.0-024", "198.18.1.0-24&zz::-64", "198.18.1.0-24&fc00::-129", "198.18.1.0-24&",
  ])("key %j is not a subnet", (k) => {
    expect(parseSubnetKey(k)).toBeUndefined();
  });
  it("formats keys", () => expect(subnetKey(parseCidr("198.18.5.0/24"))).toBe("198.18.5.0-24"));

  it("subnet.env as flannel writes it", () => {
    expect(formatSubnetFile({ network: parseCidr("198.18.0.0/16"), subnet: parseCidr("198.18.5.0/24"), mtu: 1450, ipMasq: false }))
      .toBe("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
  });
});
