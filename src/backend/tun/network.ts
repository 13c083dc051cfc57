import { MessageChannel, Worker } from "node:worker_threads";
import { formatCidr, formatIpv4 } from "../../common/ipv4.js";
import { formatCidr6, formatIpv6, type Ipv6Prefix } from "../../common/ipv6.js";
import type { Logger } from "../../common/log.js";
import { run } from "../../common/exec.js";
import type { RouteDiff } from "../../routes/table.js";
import type { Lease, LeaseAttrs } from "../../subnet/lease.js";
import type { NetworkConfig } from "../../subnet/network-config.js";
import { ipJson } from "../../common/iproute.js";
import type { ExternalInterface, Network, NetworkStatus } from "../types.js";
import { setDeviceAddress } from "../device.js";
import { slowPathWarnings, tunPaths } from "./paths.js";
import { loadShim } from "./shim.js";
import type { Underlay, WorkerControl, WorkerInit, WorkerReport } from "./worker.js";

const WORKER = new URL("./worker.js", import.meta.url);
/** Peer index 0 is this node (its subnet is delivered by the kernel, never encapsulated). */
const SELF = 0;

export interface TunSetup {
  readonly device: string;
  readonly mtu: number;
  readonly tunFd: number;
  readonly txFds: number[];
  readonly rxFd: number;
  readonly maxBatch: number;
  readonly slotSize: number;
  /** Busy-poll budget of each worker after a packet, µs (0: sleep in poll() at once); native/weft_shim.c. */
  readonly busyPollUs: number;
  /** Datagrams per UDP_SEGMENT send: the kernel's limit (paths.ts, udp_gso_segs). */
  readonly udpSegs: number;
  /** Which variant of each fast/slow path the device and sockets got (./paths.ts). */
  readonly paths: Readonly<Record<string, string>>;
  /** "ipv4" (absent), "ipv6" (txFds and rxFd are IPv6 sockets bound to iface.addr6), or "dual" (txFds6/rxFd6 too). */
  readonly underlay?: Underlay;
  /** dual: the IPv6 sending sockets and the IPv6 receiving socket (its own receive worker, "rx6"). */
  readonly txFds6?: number[];
  readonly rxFd6?: number;
}

type Mode = "tx" | "rx" | "rx6";

/** A lease of an IPv6-only network: its IPv4 part is 0.0.0.0/0 (flannel's key has none), never a route. */
function ipv6Only(l: Lease): boolean {
  return l.subnet.len === 0 && l.subnet.addr === 0 && l.subnet6 !== undefined;
}

/** The subnet a peer is known by: its IPv4 one, or on an IPv6-only network its IPv6 one. */
function peerKey(l: Lease): string {
  return ipv6Only(l) && l.subnet6 ? formatCidr6(l.subnet6) : formatCidr(l.subnet);
}

/** The cluster's IPv6 network (flannel's "IPv6Network"), routed into the device like the IPv4 one. */
export function network6Of(config: NetworkConfig): Ipv6Prefix | undefined {
  return config.ipv6?.network;
}

interface Running {
  readonly worker: Worker;
  readonly port: MessageChannel["port1"];
}

/**
 * The tun backend's event loop on the main thread: it owns the TUN device
 * and the sockets, runs the two packet workers, and turns route-table diffs
 * into peer and route messages for them. A worker that dies is started again
 * with the whole current state.
 */
export class TunNetwork implements Network {
  readonly backend = "tun" as const;
  readonly mtu: number;
  private local: Lease | undefined;
  /** subnet -> (peer index, lease) */
  private readonly peers = new Map<string, { idx: number; lease: Lease }>();
  private readonly freeIdx: number[] = [];
  private nextIdx = 1;
  private readonly workers: { tx?: Running; rx?: Running; rx6?: Running } = {};
  private readonly reports: { tx?: WorkerReport; rx?: WorkerReport; rx6?: WorkerReport } = {};
  private stopping = false;
  recreated = 0;
  workerRestarts = 0;

  constructor(
    private setup: TunSetup,
    readonly leaseAttrs: LeaseAttrs,
    private readonly config: NetworkConfig,
    private readonly iface: ExternalInterface,
    private readonly log: Logger,
  ) {
    this.mtu = setup.mtu;
  }

  /** The workers this underlay runs: a sender, and a receiver per socket family. */
  private modes(): Mode[] {
    return this.setup.underlay === "dual" ? ["tx", "rx", "rx6"] : ["tx", "rx"];
  }

  start(): void {
    for (const m of this.modes()) this.spawn(m);
  }

  private spawn(mode: Mode): void {
    const { port1, port2 } = new MessageChannel();
    const underlay: Underlay = mode === "rx6" ? "ipv6" : mode === "rx" && this.setup.underlay === "dual" ? "ipv4" : this.setup.underlay ?? "ipv4";
    const init: WorkerInit = {
      mode: mode === "tx" ? "tx" : "rx", tunFd: this.setup.tunFd,
      sockFds: mode === "tx" ? this.setup.txFds : mode === "rx6" ? [this.setup.rxFd6 ?? -1] : [this.setup.rxFd],
      underlay, sockFds6: mode === "tx" ? this.setup.txFds6 ?? [] : [],
      vni: this.config.backend.vni, localIp: this.iface.addr, localMac: [...this.leaseAttrs.vtepMac],
      dstPort: this.config.backend.port, hashSeed: 0, ctl: port2, maxBatch: this.setup.maxBatch, slotSize: this.setup.slotSize, mtu: this.mtu,
      busyPollUs: this.setup.busyPollUs, udpSegs: this.setup.udpSegs,
      localIp6: this.iface.addr6,
    };
    const worker = new Worker(WORKER, { workerData: init, transferList: [port2] });
    this.workers[mode] = { worker, port: port1 };
    worker.on("message", (m: WorkerReport | { t: "error"; error: string }) => {
      if (m.t === "counters") this.reports[mode] = m;
      else this.log.warn({ worker: mode, err: m.error }, "packet worker reported an error");
    });
    worker.on("error", (e) => this.log.error({ worker: mode, err: e.message }, "packet worker failed"));
    worker.on("exit", (code) => {
      if (this.stopping) return;
      this.log.error({ worker: mode, code }, "packet worker exited; starting it again");
      this.workerRestarts++;
      this.spawn(mode);
    });
    for (const m of this.replay(mode)) port1.postMessage(m);
  }

  /** Everything a fresh worker needs to know. */
  private replay(mode: Mode): WorkerControl[] {
    const out: WorkerControl[] = [];
    if (this.local) out.push(...this.peerMsgs(SELF, this.local, true, mode));
    for (const { idx, lease } of this.peers.values()) out.push(...this.peerMsgs(idx, lease, false, mode));
    return out;
  }

  private peerMsgs(idx: number, l: Lease, local: boolean, mode: Mode): WorkerControl[] {
    const peer: WorkerControl = {
      t: "peer", idx, underlay: l.attrs.publicIp, mac: [...l.attrs.vtepMac], subnet: l.subnet.addr, len: l.subnet.len, local,
      underlay6: l.attrs.publicIpv6, subnet6: l.subnet6, mac6: l.attrs.v6 ? [...l.attrs.v6.vtepMac] : undefined,
    };
    // Only the sending side routes; the receiving side checks peers (anti-spoofing).
    if (mode !== "tx") return [peer];
    const out: WorkerControl[] = [peer];
    if (!ipv6Only(l)) out.push({ t: "route", addr: l.subnet.addr, len: l.subnet.len, nh: idx });
    if (l.subnet6) out.push({ t: "route6", addr: l.subnet6.addr, len: l.subnet6.len, nh: idx });
    return out;
  }

  private send(mode: Mode, m: WorkerControl): void {
    this.workers[mode]?.port.postMessage(m);
  }

  async configureLocal(lease: Lease): Promise<void> {
    const before = this.local;
    if (before) {
      if (!ipv6Only(before)) this.send("tx", { t: "unroute", addr: before.subnet.addr, len: before.subnet.len });
      if (before.subnet6) this.send("tx", { t: "unroute6", addr: before.subnet6.addr, len: before.subnet6.len });
    }
    this.local = lease;
    for (const mode of this.modes()) for (const m of this.peerMsgs(SELF, lease, true, mode)) this.send(mode, m);
    if (!ipv6Only(lease)) {
      await setDeviceAddress(this.setup.device, lease.subnet, this.config.network);
      await run(["ip", "route", "replace", formatCidr(this.config.network), "dev", this.setup.device, "src", formatIpv4(lease.subnet.addr)]);
    }
    if (before?.subnet6 && before.subnet6.addr !== lease.subnet6?.addr) {
      await run(["ip", "-6", "addr", "del", `${formatIpv6(before.subnet6.addr)}/128`, "dev", this.setup.device]).catch(() => undefined);
    }
    if (lease.subnet6) await this.configureLocal6(lease.subnet6);
  }

  /** The node's IPv6 subnet on the device, as the IPv4 one: its first address (/128), and the cluster's IPv6 network routed in. */
  private async configureLocal6(subnet6: Ipv6Prefix): Promise<void> {
    const addr = formatIpv6(subnet6.addr);
    await run(["ip", "-6", "addr", "replace", `${addr}/128`, "dev", this.setup.device, "nodad"]);
    const net6 = network6Of(this.config);
    if (!net6) {
      this.log.warn({ device: this.setup.device, subnet6: formatCidr6(subnet6) }, "the network config has no IPv6 network: no IPv6 route into the TUN device");
      return;
    }
    await run(["ip", "-6", "route", "replace", formatCidr6(net6), "dev", this.setup.device, "src", addr]);
  }

  async apply(diff: RouteDiff): Promise<void> {
    for (const l of [...diff.removed, ...diff.changed.map((c) => c.before)]) {
      const k = peerKey(l);
      const p = this.peers.get(k);
      if (!p) continue;
      this.peers.delete(k);
      if (!ipv6Only(l)) this.send("tx", { t: "unroute", addr: l.subnet.addr, len: l.subnet.len });
      if (l.subnet6) this.send("tx", { t: "unroute6", addr: l.subnet6.addr, len: l.subnet6.len });
      for (const mode of this.modes()) this.send(mode, { t: "unpeer", idx: p.idx });
      this.freeIdx.push(p.idx);
    }
    for (const l of [...diff.added, ...diff.changed.map((c) => c.after)]) {
      const idx = this.freeIdx.pop() ?? this.nextIdx++;
      this.peers.set(peerKey(l), { idx, lease: l });
      for (const mode of this.modes()) for (const m of this.peerMsgs(idx, l, false, mode)) this.send(mode, m);
    }
  }

  /** The TUN device is back if someone deleted it (the workers get the new fd), with its address and route. */
  async reconcile(_routes: readonly Lease[]): Promise<number> {
    const [dev] = await ipJson<{ flags?: string[] }>(["link", "show", "dev", this.setup.device]).catch(() => []);
    if (dev && dev.flags?.includes("UP")) return 0;
    this.log.warn({ device: this.setup.device }, dev ? "TUN device is down; bringing it up" : "TUN device disappeared; recreating it");
    if (!dev) {
      const shim = loadShim();
      const old = this.setup.tunFd;
      const offloads = new Int32Array(1);
      const fd = shim.tunOpen(this.setup.device, offloads);
      if (fd < 0) throw new Error(`reopening ${this.setup.device}: errno ${-fd}`);
      const paths = tunPaths(offloads[0]!, this.setup.paths["udp_gro"] === "on", this.setup.udpSegs);
      for (const w of slowPathWarnings(paths)) this.log.warn({ device: this.setup.device, ...w }, "tun data path runs a slow variant");
      this.setup = { ...this.setup, tunFd: fd, paths };
      for (const mode of this.modes()) this.send(mode, { t: "tun", fd });
      setTimeout(() => shim.close(old), 500).unref(); // after the workers moved on
    }
    await run(["ip", "link", "set", "dev", this.setup.device, "mtu", String(this.mtu), "up"]);
    if (this.local) await this.configureLocal(this.local);
    this.recreated++;
    return 1;
  }

  status(): NetworkStatus {
    const counters: Record<string, number> = { device_recreated: this.recreated, worker_restarts: this.workerRestarts };
    for (const mode of this.modes()) {
      const r = this.reports[mode];
      if (!r) continue;
      counters[`tun_${mode}_batches`] = r.batches;
      for (const [k, v] of Object.entries(r.counters)) if (v !== "0" || k === "ok") counters[`tun_${mode}_${k}`] = Number(v);
    }
    return { backend: "tun", device: this.setup.device, mtu: this.mtu, peers: { programmed: this.peers.size, failed: 0 }, counters, paths: this.setup.paths };
  }

  /**
   * Stops the workers and closes the sockets and our TUN fd. The device is
   * persistent, so its address and routes stay for the next agent; packets
   * wait for it (no userspace, no forwarding).
   */
  async close(): Promise<void> {
    this.stopping = true;
    const shim = loadShim();
    await Promise.all(this.modes().map(async (mode) => {
      const w = this.workers[mode];
      if (!w) return;
      w.port.postMessage({ t: "stop" } satisfies WorkerControl);
      const exited = new Promise((r) => w.worker.once("exit", r));
      const t = setTimeout(() => void w.worker.terminate(), 1000);
      await exited;
      clearTimeout(t);
    }));
    for (const fd of [...this.setup.txFds, this.setup.rxFd, ...(this.setup.txFds6 ?? []), this.setup.rxFd6 ?? -1, this.setup.tunFd]) if (fd >= 0) shim.close(fd);
  }
}
