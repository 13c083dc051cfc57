/**
 * A packet loop of the userspace data path, one worker thread per direction:
 *   tx: TUN device -> WASM encap (in place) -> sendmmsg over UDP
 *   rx: recvmmsg -> WASM decap (in place) -> TUN device
 * Each worker owns a WASM core (its own memory and tables). Packets are read
 * and written straight into the core's linear memory by the native shim;
 * one shim call and one WASM call handle a whole batch, so JavaScript does
 * nothing per packet. Route and peer changes arrive on a MessagePort and
 * are applied between batches (receiveMessageOnPort: no event-loop turn),
 * so the loop never stops for them; an idle loop wakes every 50 ms to look.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";
import * as abi from "../../../asm/abi.js";
import { WasmCore } from "../../dataplane/core/wasm-core.js";
import { DEFAULT_TUNNEL } from "../../dataplane/core/types.js";
import { SHIM_STATS, checked, loadShim, type ShimStats } from "./shim.js";
import type { Ipv6Prefix } from "../../common/ipv6.js";

export type WorkerControl =
  | {
    readonly t: "peer"; readonly idx: number; readonly underlay: number; readonly mac: number[]; readonly subnet: number; readonly len: number; readonly local: boolean;
    /** The node's IPv6 underlay (LeaseAttrs.publicIpv6) and IPv6 pod subnet (Lease.subnet6), when it has them. */
    readonly underlay6?: bigint | undefined; readonly subnet6?: Ipv6Prefix | undefined;
    /** Its IPv6 VTEP MAC (BackendV6Data), when it differs from `mac`. */
    readonly mac6?: number[] | undefined;
  }
  | { readonly t: "unpeer"; readonly idx: number }
  | { readonly t: "route"; readonly addr: number; readonly len: number; readonly nh: number }
  | { readonly t: "unroute"; readonly addr: number; readonly len: number }
  | { readonly t: "route6"; readonly addr: bigint; readonly len: number; readonly nh: number }
  | { readonly t: "unroute6"; readonly addr: bigint; readonly len: number }
  | { readonly t: "tun"; readonly fd: number }
  | { readonly t: "stop" };

export type Underlay = "ipv4" | "ipv6" | "dual";

export interface WorkerInit {
  readonly mode: "tx" | "rx";
  readonly tunFd: number;
  /** tx: the sending sockets (flows spread over them); rx: the receiving socket. */
  readonly sockFds: number[];
  readonly vni: number;
  readonly localIp: number;
  readonly localMac: number[];
  readonly dstPort: number;
  readonly hashSeed: number;
  readonly ctl: MessagePort;
  readonly maxBatch: number;
  readonly slotSize: number;
  readonly mtu: number;
  readonly busyPollUs: number;
  /** Datagrams per UDP_SEGMENT send (the kernel's limit, probed once). */
  readonly udpSegs: number;
  /**
   * The underlay ("ipv4" when absent): "ipv6", every packet over IPv6 sockets
   * to peers' IPv6 underlay; "dual", inner IPv4 over IPv4 and inner IPv6 over
   * IPv6 (tx: sockFds and sockFds6). A receiving worker's is its socket's family.
   */
  readonly underlay?: Underlay;
  /** tx over a dual underlay: the IPv6 sending sockets. */
  readonly sockFds6?: number[];
  /** This node's IPv6 underlay address (underlay "ipv6" or "dual"). */
  readonly localIp6?: bigint | undefined;
}

export interface WorkerReport {
  readonly t: "counters";
  readonly mode: "tx" | "rx";
  readonly counters: Record<string, string>;
  readonly batches: number;
}

const HEADROOM = 64;
const POLL_MS = 50;
/** Units (and 2x iovecs, and header-arena blocks) per tun batch call; a super-packet that needs more (a small MSS) takes several calls. */
const UNITS = abi.MAX_UNITS;

function main(init: WorkerInit): void {
  const shim = loadShim();
  checked(shim.setSpin(init.busyPollUs), `setting busy polling to ${init.busyPollUs} µs`);
  const core = WasmCore.create({
    maxPeers: 65536, maxRules: 65536, maxRules6: 65536, maxBatch: init.maxBatch, slots: init.maxBatch, slotSize: init.slotSize, headroom: HEADROOM, units: UNITS,
  });
  core.setTunMtu(init.mtu);
  core.setUdpSegs(init.udpSegs);
  const outer6 = init.underlay === "ipv6";
  const split6 = init.underlay === "dual";
  core.configure({
    ...DEFAULT_TUNNEL, vni: init.vni, localIp: init.localIp, localMac: Uint8Array.from(init.localMac), dstPort: init.dstPort, hashSeed: init.hashSeed,
    outer6, split6, ...(init.localIp6 === undefined ? {} : { localIp6: init.localIp6 }),
  });
  const fds6 = Int32Array.from(init.sockFds6 ?? []);
  const slot0 = core.slot(0);
  const room = init.slotSize - HEADROOM;
  const fds = Int32Array.from(init.sockFds);
  let tun = init.tunFd;
  let batches = 0;
  const shimTotals: ShimStats = { sendErrors: 0, lastErrno: 0, refused: 0, dropped: 0, retries: 0 };
  let lastReport = 0;
  const dir = init.mode === "tx" ? abi.DIR_ENCAP : abi.DIR_DECAP;

  const apply = (m: WorkerControl): boolean => {
    switch (m.t) {
      case "peer":
        core.setPeer(m.idx, {
          underlay: m.underlay, vtepMac: Uint8Array.from(m.mac), subnet: { addr: m.subnet, len: m.len }, local: m.local,
          ...(m.underlay6 === undefined ? {} : { underlay6: m.underlay6 }), ...(m.subnet6 === undefined ? {} : { subnet6: m.subnet6 }),
          ...(m.mac6 === undefined ? {} : { vtepMac6: Uint8Array.from(m.mac6) }),
        });
        return true;
      case "unpeer":
        core.clearPeer(m.idx);
        return true;
      case "route":
        core.lpmInsert({ addr: m.addr, len: m.len }, m.nh);
        return true;
      case "unroute":
        core.lpmDelete({ addr: m.addr, len: m.len });
        return true;
      case "route6":
        core.lpm6.insert({ addr: m.addr, len: m.len }, m.nh);
        return true;
      case "unroute6":
        core.lpm6.delete({ addr: m.addr, len: m.len });
        return true;
      case "tun":
        tun = m.fd;
        return true;
      case "stop":
        return false;
    }
  };

  for (;;) {
    for (let msg = receiveMessageOnPort(init.ctl); msg; msg = receiveMessageOnPort(init.ctl)) {
      try {
        if (!apply(msg.message as WorkerControl)) return;
      } catch (e) {
        parentPort?.postMessage({ t: "error", mode: init.mode, error: (e as Error).message });
      }
    }
    const mem = core.bytes().buffer as ArrayBuffer;
    if (init.mode === "tx") {
      const n = shim.tunReadBatch(tun, mem, core.descBase, slot0, init.slotSize, room, init.maxBatch, POLL_MS);
      for (let from = 0; from < n; ) {
        const next = core.tunTx(from, n);
        const units = core.tunUnits();
        const buf = core.bytes().buffer as ArrayBuffer;
        // Each send takes its family's units (UNIT_FAMILY); over a dual underlay both run.
        if (outer6) shim.udpSendUnits6(fds, buf, core.unitBase, core.iovBase, 2 * UNITS, units);
        else shim.udpSendUnits(fds, buf, core.unitBase, core.iovBase, 2 * UNITS, units);
        if (split6 && fds6.length > 0) shim.udpSendUnits6(fds6, buf, core.unitBase, core.iovBase, 2 * UNITS, units);
        batches++;
        if (next === from && units === 0) break; // no progress (the core promises some): never spin
        from = next;
      }
      if (n < 0 && n !== -9) {
        // EBADF (-9): the device is being replaced; anything else is worth knowing
        parentPort?.postMessage({ t: "error", mode: init.mode, error: `reading the TUN device: errno ${-n}` });
      }
    } else {
      const n = outer6
        ? shim.udpRecvBatch6(fds[0] ?? -1, mem, core.descBase, slot0, init.slotSize, room, init.maxBatch, POLL_MS, core.lpm6.addrBase)
        : shim.udpRecvBatch(fds[0] ?? -1, mem, core.descBase, slot0, init.slotSize, room, init.maxBatch, POLL_MS);
      for (let from = 0; from < n; ) {
        const next = core.tunRx(from, n);
        const units = core.tunUnits();
        shim.tunWriteUnits(tun, core.bytes().buffer as ArrayBuffer, core.unitBase, core.iovBase, 2 * UNITS, units);
        batches++;
        if (next === from && units === 0) break;
        from = next;
      }
    }
    const now = Date.now();
    if (now - lastReport >= 500) {
      lastReport = now;
      const c = core.counters(dir);
      const st = shim.takeStats();
      for (const k of SHIM_STATS) if (k !== "lastErrno") shimTotals[k] += st[k];
      if (st.lastErrno !== 0) shimTotals.lastErrno = st.lastErrno;
      const shimCounters: Record<string, string> = {};
      if (shimTotals.sendErrors > 0) shimCounters["send_errors"] = String(shimTotals.sendErrors);
      if (shimTotals.lastErrno !== 0) shimCounters["send_errno"] = String(shimTotals.lastErrno);
      if (shimTotals.refused > 0) shimCounters["shim_refused"] = String(shimTotals.refused);
      if (shimTotals.dropped > 0) shimCounters["send_dropped"] = String(shimTotals.dropped);
      if (shimTotals.retries > 0) shimCounters["send_retries"] = String(shimTotals.retries);
      const report: WorkerReport = {
        t: "counters", mode: init.mode, batches,
        counters: { ...Object.fromEntries(Object.entries(c).map(([k, v]) => [k, v.toString()])), ...shimCounters },
      };
      parentPort?.postMessage(report);
    }
  }
}

if (parentPort && workerData) main(workerData as WorkerInit);
