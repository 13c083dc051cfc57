import { formatMac } from "../../common/ipv4.js";
import type { Backend, RegisterContext, Network } from "../types.js";
import { deviceMtu, keepVtepMac, knownVtepMac } from "../device.js";
import { ensureDevice, type DeviceSpec } from "./kernel.js";
import { VxlanNetwork } from "./network.js";

/**
 * The kernel "vxlan" backend: flannel's vxlan backend, object for object, so
 * that weft and flannel nodes share the wire and the etcd leases.
 * Registration: the device spec from the network config, a VTEP MAC kept in
 * the state dir (so a reboot publishes the same MAC and peers need not
 * re-learn it), then the device.
 */
export const vxlanBackend: Backend = {
  name: "vxlan",
  async register(ctx: RegisterContext): Promise<Network> {
    const b = ctx.config.backend;
    const spec: DeviceSpec = {
      name: `weft.${b.vni}`,
      vni: b.vni,
      port: b.port,
      localAddr: ctx.iface.addr,
      iface: ctx.iface.name,
      mtu: deviceMtu(ctx.config, ctx.iface),
    };
    const mac = await ensureDevice(spec, knownVtepMac(ctx.stateDir, b.vni), (why) =>
      ctx.log.warn({ device: spec.name, why }, "existing device does not fit; recreating it"));
    keepVtepMac(ctx.stateDir, b.vni, mac);
    ctx.log.info({ device: spec.name, mac: formatMac(mac), mtu: spec.mtu }, "vxlan device ready");
    const attrs = { publicIp: ctx.iface.publicIp, backendType: "vxlan", vni: b.vni, vtepMac: mac };
    return new VxlanNetwork(spec, attrs, ctx.config, ctx.iface, ctx.log);
  },
};
