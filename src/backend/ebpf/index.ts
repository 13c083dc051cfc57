import { join } from "node:path";
import { formatMac } from "../../common/ipv4.js";
import type { Backend, Network, RegisterContext } from "../types.js";
import { deviceMtu, keepVtepMac, knownVtepMac } from "../device.js";
import { deleteDevice, ensureExternalDevice } from "./device.js";
import { Datapath } from "./loader.js";
import { EbpfNetwork } from "./network.js";

/**
 * The ebpf backend: tc programs move pod traffic in the kernel (pod veth ->
 * collect_md VXLAN device -> wire, and back straight into the pod), VXLAN
 * on the wire exactly as the vxlan backend and flannel send it.
 * Registration: load (reusing pinned maps), the device, the VTEP MAC kept in
 * the state dir, config and overlay programs. Work done before a failure is
 * undone: a device created here is deleted, loaded programs are freed.
 */
export const ebpfBackend: Backend = {
  name: "ebpf",
  async register(ctx: RegisterContext): Promise<Network> {
    const b = ctx.config.backend;
    const dp = Datapath.load(ctx.bpffs, ctx.log, ctx.bpfAttach);
    let created: string | undefined;
    try {
      // With an IPv6 underlay any packet may go over IPv6, whose header is 20 bytes longer: pods get the smaller MTU.
      const mtu = deviceMtu(ctx.config, ctx.iface, ctx.iface.publicIpv6 !== undefined ? 6 : 4);
      const spec = { name: `weft.${b.vni}`, port: b.port, mtu };
      const dev = await ensureExternalDevice(spec, knownVtepMac(ctx.stateDir, b.vni), (why) =>
        ctx.log.warn({ device: spec.name, why }, "existing device does not fit; recreating it"));
      if (dev.created) created = spec.name;
      keepVtepMac(ctx.stateDir, b.vni, dev.mac);
      // One device carries both families: over IPv6 it is the VTEP of flannel's BackendV6Data, with the same VNI and MAC.
      const v6 = ctx.iface.publicIpv6 !== undefined ? { publicIpv6: ctx.iface.publicIpv6, v6: { vni: b.vni, vtepMac: dev.mac } } : {};
      const attrs = { publicIp: ctx.iface.publicIp, backendType: "vxlan", vni: b.vni, vtepMac: dev.mac, ...v6 };
      const net = new EbpfNetwork(dp, spec, dev.ifindex, attrs, ctx.config, join(ctx.stateDir, "endpoints.json"), ctx.log);
      await net.start();
      ctx.log.info({ device: spec.name, mac: formatMac(dev.mac), mtu: spec.mtu }, "ebpf data path ready");
      return net;
    } catch (e) {
      if (created) await deleteDevice(created);
      dp.close();
      throw e;
    }
  },
};
