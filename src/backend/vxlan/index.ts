import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { formatMac, parseMac } from "../../common/ipv4.js";
import { writeFileAtomic } from "../../common/fs-atomic.js";
import type { Backend, RegisterContext, Network } from "../types.js";
import { ensureDevice, type DeviceSpec } from "./kernel.js";
import { VxlanNetwork } from "./network.js";

/** VXLAN header overhead on IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD = 50;

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
      mtu: (b.mtu ?? ctx.iface.mtu) - VXLAN_OVERHEAD,
    };
    const macFile = join(ctx.stateDir, `vtep-mac.${b.vni}`);
    const mac = await ensureDevice(spec, storedMac(macFile) ?? randomMac(), (why) =>
      ctx.log.warn({ device: spec.name, why }, "existing device does not fit; recreating it"));
    writeFileAtomic(macFile, `${formatMac(mac)}\n`);
    ctx.log.info({ device: spec.name, mac: formatMac(mac), mtu: spec.mtu }, "vxlan device ready");
    const attrs = { publicIp: ctx.iface.publicIp, backendType: "vxlan", vni: b.vni, vtepMac: mac };
    return new VxlanNetwork(spec, attrs, ctx.config, ctx.iface, ctx.log);
  },
};

/** The VTEP MAC a backend kept in the state dir, if any. */
export function storedMac(path: string): Uint8Array | undefined {
  try {
    return parseMac(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
}

/** A random locally administered unicast MAC. */
export function randomMac(): Uint8Array {
  const m = randomBytes(6);
  m[0] = ((m[0] ?? 0) & 0xfe) | 0x02;
  return new Uint8Array(m);
}
