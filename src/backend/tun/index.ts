import { accessSync, constants } from "node:fs";
import * as abi from "../../../asm/abi.js";
import { run } from "../../common/exec.js";
import { formatIpv4 } from "../../common/ipv4.js";
import { formatIpv6, ipv6Bytes } from "../../common/ipv6.js";
import type { Backend, Network, RegisterContext } from "../types.js";
import { deviceMtu, keepVtepMac, knownVtepMac, readDevice } from "../device.js";
import { NativeError, nativeLibraryPath } from "../../native/library.js";
import { checked, loadShim } from "./shim.js";
import { TunNetwork } from "./network.js";
import type { Underlay } from "./worker.js";
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6, slowPathWarnings, tunPaths } from "./paths.js";

/** Sockets the sender spreads flows over (each has its own source port). */
const TX_SOCKETS = 8;
const SOCKET_BUFFER = 8 << 20;
/** A slot: headroom 64 + virtio_net_hdr + 65535-byte packet, rounded up to 64. */
const SLOT = 65664;

/**
 * The tun backend, for hosts where eBPF is not allowed: the kernel routes
 * the cluster network into a TUN device, two worker threads move packets
 * between it and UDP sockets, encapsulating and decapsulating in the WASM
 * core. VXLAN on the wire, exactly as the kernel sends it, so it talks to
 * kernel-vxlan, ebpf and flannel nodes. Registration undoes its work if a
 * step fails (sockets closed, a device it created deleted).
 */
export const tunBackend: Backend = {
  name: "tun",
  async register(ctx: RegisterContext): Promise<Network> {
    const shim = loadShim();
    const b = ctx.config.backend;
    const device = `weft.${b.vni}`;
    // The cluster runs IPv6 when the agent set publicIpv6: IPv6 VXLAN goes over IPv6 sockets bound to
    // addr6 (outer header 20 bytes longer than IPv4's), alone on an IPv6-only node (no IPv4 address),
    // else next to the IPv4 sockets, each inner family over its own underlay (flannel's two devices).
    const addr6 = ctx.iface.publicIpv6 !== undefined ? ctx.iface.addr6 : undefined;
    const underlay: Underlay = addr6 === undefined ? "ipv4" : !ctx.config.enableIpv4 || ctx.iface.addr === 0 ? "ipv6" : "dual";
    const mtu = deviceMtu(ctx.config, ctx.iface) - (addr6 !== undefined ? abi.ENCAP_FRAME6_OVERHEAD - abi.ENCAP_FRAME_OVERHEAD : 0);
    const existing = await readDevice(device);
    if (existing && existing.linkinfo?.info_kind !== "tun") {
      ctx.log.warn({ device, kind: existing.linkinfo?.info_kind }, "a non-TUN device has our name (another backend ran here); replacing it");
      await run(["ip", "link", "del", "dev", device]);
    }
    const fds: number[] = [];
    try {
      const offloads = new Int32Array(1);
      const tunFd = checked(shim.tunOpen(device, offloads), `opening the TUN device ${device} (/dev/net/tun, CAP_NET_ADMIN)`);
      fds.push(tunFd);
      /** The receiving socket and the sending ones of one family. */
      const sockets = (v6: bigint | undefined): { rx: number; tx: number[] } => {
        const open = (port: number, gro: number): number => v6 !== undefined
          ? shim.udpOpen6(ipv6Bytes(v6), port, SOCKET_BUFFER, SOCKET_BUFFER, gro)
          : shim.udpOpen(ctx.iface.addr, port, SOCKET_BUFFER, SOCKET_BUFFER, gro);
        const where = v6 !== undefined ? `[${formatIpv6(v6)}]` : formatIpv4(ctx.iface.addr);
        const rx = checked(open(b.port, 1), `binding UDP port ${where}:${b.port}`);
        fds.push(rx);
        const tx: number[] = [];
        for (let i = 0; i < TX_SOCKETS; i++) {
          const fd = checked(open(0, 0), `opening a sending UDP socket on ${where}`);
          fds.push(fd);
          tx.push(fd);
        }
        return { rx, tx };
      };
      const main = sockets(underlay === "ipv6" ? addr6 : undefined);
      const six = underlay === "dual" ? sockets(addr6) : undefined;
      const rxFd = main.rx;
      const txFds = main.tx;
      // The TUN device's MAC does not exist (layer 3); the VTEP MAC others put on frames to us is ours to choose.
      const mac = knownVtepMac(ctx.stateDir, b.vni);
      keepVtepMac(ctx.stateDir, b.vni, mac);
      await run(["ip", "link", "set", "dev", device, "mtu", String(mtu), "up"]);
      // One VTEP MAC for both families: the WASM core checks one (BackendV6Data carries it again).
      const attrs = {
        publicIp: ctx.iface.publicIp, backendType: "vxlan", vni: b.vni, vtepMac: mac,
        ...(addr6 !== undefined ? { publicIpv6: ctx.iface.publicIpv6, v6: { vni: b.vni, vtepMac: mac } } : {}),
      };
      // 16 slots of a 64 KiB super-packet each (+ virtio_net_hdr and headroom), per worker.
      const udpGro = shim.udpGro(rxFd) === 1;
      const probed = shim.udpGsoMaxSegs(ctx.iface.addr);
      const udpSegs = probed > 0 ? probed : abi.UDP_MAX_SEGS; // UDP_SEGMENT itself failing shows at the first send, counted
      const paths = tunPaths(offloads[0]!, udpGro, udpSegs);
      for (const w of slowPathWarnings(paths)) ctx.log.warn({ device, ...w }, "tun data path runs a slow variant");
      const net = new TunNetwork({
        device, mtu, tunFd, txFds, rxFd, maxBatch: 16, slotSize: SLOT, busyPollUs: ctx.tunBusyPollUs, udpSegs, paths, underlay,
        ...(six ? { txFds6: six.tx, rxFd6: six.rx } : {}),
      }, attrs, ctx.config, ctx.iface, ctx.log);
      net.start();
      ctx.log.info({
        device, mtu, port: b.port, underlay, busyPollUs: ctx.tunBusyPollUs, txPorts: txFds.map((fd) => shim.udpPort(fd)),
        offloads: {
          csum: (offloads[0]! & TUN_F_CSUM) !== 0, tso4: (offloads[0]! & TUN_F_TSO4) !== 0, tso6: (offloads[0]! & TUN_F_TSO6) !== 0,
          uso4: (offloads[0]! & TUN_F_USO4) !== 0, uso6: (offloads[0]! & TUN_F_USO6) !== 0, udpGro,
        },
        paths,
      }, "tun data path ready");
      return net;
    } catch (e) {
      for (const fd of fds) shim.close(fd);
      throw e;
    }
  },
};

/** Why the tun backend cannot run here (empty: it can). */
export function tunObstacles(): string[] {
  const out: string[] = [];
  try {
    accessSync("/dev/net/tun", constants.R_OK | constants.W_OK);
  } catch {
    out.push("/dev/net/tun is not available");
  }
  try {
    loadShim();
  } catch (e) {
    out.push(e instanceof NativeError ? e.message : `${nativeLibraryPath()} cannot be loaded`);
  }
  return out;
}
