import { ConfigError } from "../../common/errors.js";
import { formatIpv4, formatMac } from "../../common/ipv4.js";
import { formatIpv6 } from "../../common/ipv6.js";
import type { Backend, RegisterContext, Network } from "../types.js";
import { deviceMtu, keepVtepMac, knownVtepMac } from "../device.js";
import { ensureDevice, type DeviceSpec } from "./kernel.js";
import { VxlanNetwork } from "./network.js";

/**
 * The kernel "vxlan" backend: flannel's vxlan backend, object for object, so
 * that weft and flannel nodes share the wire and the etcd leases.
 * Registration: the device spec from the network config, a VTEP MAC kept in
 * the state dir (so a reboot publishes the same MAC and peers need not
 * re-learn it), then the device: weft.<VNI> over IPv4 when the network runs
 * IPv4, weft-v6.<VNI> over IPv6 when it runs IPv6 (each with its own MAC,
 * published as BackendData and BackendV6Data). A device that fails to come
 * up is removed by ensureDevice; one already up stays for the next start to
 * adopt (removing it would cut the traffic it carries).
 */
export const vxlanBackend: Backend = {
  name: "vxlan",
  async register(ctx: RegisterContext): Promise<Network> {
    const b = ctx.config.backend;
    const device = async (family: 4 | 6, localAddr: string): Promise<{ spec: DeviceSpec; mac: Uint8Array }> => {
      const spec: DeviceSpec = {
        name: family === 6 ? `weft-v6.${b.vni}` : `weft.${b.vni}`,
        family, vni: b.vni, port: b.port, localAddr, iface: ctx.iface.name, mtu: deviceMtu(ctx.config, ctx.iface, family),
      };
      const mac = await ensureDevice(spec, knownVtepMac(ctx.stateDir, b.vni, family), (why) =>
        ctx.log.warn({ device: spec.name, why }, "existing device does not fit; recreating it"));
      keepVtepMac(ctx.stateDir, b.vni, mac, family);
      ctx.log.info({ device: spec.name, mac: formatMac(mac), mtu: spec.mtu }, "vxlan device ready");
      return { spec, mac };
    };
    {
      const v4 = ctx.config.enableIpv4 ? await device(4, formatIpv4(ctx.iface.addr)) : undefined;
      let v6;
      if (ctx.config.ipv6) {
        const a6 = ctx.iface.addr6;
        if (a6 === undefined) throw new ConfigError(`the network runs IPv6 but interface ${ctx.iface.name} has no global IPv6 address`, { hint: "give it one, or choose another with --iface" });
        v6 = await device(6, formatIpv6(a6));
      }
      const main = v4 ?? v6;
      if (!main) throw new ConfigError("the network config enables no address family");
      const attrs = {
        publicIp: v4 ? ctx.iface.publicIp : 0, backendType: "vxlan", vni: b.vni, vtepMac: main.mac,
        ...(v6 ? { publicIpv6: ctx.iface.publicIpv6 ?? ctx.iface.addr6, v6: { vni: b.vni, vtepMac: v6.mac } } : {}),
      };
      return new VxlanNetwork({ v4, v6 }, attrs, ctx.config, ctx.iface, ctx.log);
    }
  },
};
