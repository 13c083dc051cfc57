import { WeftError } from "../../common/errors.js";
import { nativeLibrary } from "../../native/library.js";

/** A system call in the shim failed. */
export class ShimError extends WeftError {
  readonly code = "WEFT_SHIM_FAILED";
}

/** The shim's per-thread counters, in native/abi.h's WEFT_ST_* order. */
export const SHIM_STATS = ["sendErrors", "lastErrno", "refused", "dropped", "retries"] as const;
export type ShimStats = Record<(typeof SHIM_STATS)[number], number>;

/**
 * The shim's functions (native/weft_shim.c), bound once per thread. `mem` is
 * the WASM core's linear memory: the shim is told its size with every call
 * (from the buffer itself, so no caller can get it wrong) and checks every
 * offset, length and count it reads from it against that size and its own
 * tables before use; what does not fit is refused and counted, never
 * dereferenced.
 */
export interface Shim {
  /** Opens the TUN device with offloads; `offloads[0]` gets the TUN_F_* flags in force. */
  tunOpen(name: string, offloads: Int32Array): number;
  tunUnpersist(fd: number): number;
  tunReadBatch(fd: number, mem: ArrayBuffer, desc: number, slot0: number, slotSize: number, room: number, max: number, timeoutMs: number): number;
  /** Writes units [0, n) of the unit table at `units` (iovec table at `iovs`, `iovCap` entries) to the TUN device. */
  tunWriteUnits(fd: number, mem: ArrayBuffer, units: number, iovs: number, iovCap: number, n: number): number;
  udpOpen(bindIp: number, port: number, rcvbuf: number, sndbuf: number, gro: number): number;
  /** An IPv6 (v6-only) UDP socket bound to the 16 bytes of `bindIp` (wire order). */
  udpOpen6(bindIp: Uint8Array, port: number, rcvbuf: number, sndbuf: number, gro: number): number;
  udpGro(fd: number): number;
  udpPort(fd: number): number;
  udpRecvBatch(fd: number, mem: ArrayBuffer, desc: number, slot0: number, slotSize: number, room: number, max: number, timeoutMs: number): number;
  /** udpRecvBatch on an IPv6 socket: sources go to the 16 bytes at addr6 + 16 i (the core's IPv6 scratch region). */
  udpRecvBatch6(fd: number, mem: ArrayBuffer, desc: number, slot0: number, slotSize: number, room: number, max: number, timeoutMs: number, addr6: number): number;
  /** Sends units [0, n), each out of fds[sport % fds.length]. */
  udpSendUnits(fds: Int32Array, mem: ArrayBuffer, units: number, iovs: number, iovCap: number, n: number): number;
  /** udpSendUnits on IPv6 sockets: a unit's address is the offset of its peer's 16-byte IPv6 address in `mem`. */
  udpSendUnits6(fds: Int32Array, mem: ArrayBuffer, units: number, iovs: number, iovCap: number, n: number): number;
  /** Datagrams one UDP_SEGMENT send may carry on this kernel (128 or 64), or -errno. */
  udpGsoMaxSegs(bindIp: number): number;
  /** This thread's busy-poll budget after a packet, µs (0: off; at most 1000). */
  setSpin(us: number): number;
  /** This thread's counters since the last call (then reset). */
  takeStats(): ShimStats;
  close(fd: number): number;
}

let shim: Shim | undefined;

export function loadShim(): Shim {
  if (shim) return shim;
  const l = nativeLibrary();
  const tunWrite = l.func("int weft_tun_write_units(int fd, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)");
  const tunRead = l.func("int weft_tun_read_batch(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)");
  const udpRecv = l.func("int weft_udp_recv_batch(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)");
  const udpRecv6 = l.func("int weft_udp_recv_batch6(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms, uint32_t addr6)");
  const udpSend6 = l.func("int weft_udp_send_units6(const int32_t *fds, int nfds, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)");
  const udpSend = l.func("int weft_udp_send_units(const int32_t *fds, int nfds, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)");
  const stats = l.func("int weft_shim_stats(_Out_ int32_t *out, int n)");
  const out = new Int32Array(SHIM_STATS.length);
  shim = {
    tunOpen: l.func("int weft_tun_open(const char *name, _Out_ int32_t *offloads)"),
    tunUnpersist: l.func("int weft_tun_unpersist(int fd)"),
    tunReadBatch: (fd, mem, desc, slot0, slotSize, room, max, timeoutMs) => tunRead(fd, mem, mem.byteLength, desc, slot0, slotSize, room, max, timeoutMs),
    tunWriteUnits: (fd, mem, units, iovs, iovCap, n) => tunWrite(fd, mem, mem.byteLength, units, iovs, iovCap, n),
    udpOpen: l.func("int weft_udp_open(uint32_t bind_ip, uint16_t port, int rcvbuf, int sndbuf, int gro)"),
    udpOpen6: l.func("int weft_udp_open6(const uint8_t *bind_ip, uint16_t port, int rcvbuf, int sndbuf, int gro)"),
    udpRecvBatch6: (fd, mem, desc, slot0, slotSize, room, max, timeoutMs, addr6) => udpRecv6(fd, mem, mem.byteLength, desc, slot0, slotSize, room, max, timeoutMs, addr6),
    udpSendUnits6: (fds, mem, units, iovs, iovCap, n) => udpSend6(fds, fds.length, mem, mem.byteLength, units, iovs, iovCap, n),
    udpGro: l.func("int weft_udp_gro(int fd)"),
    udpPort: l.func("int weft_udp_port(int fd)"),
    udpRecvBatch: (fd, mem, desc, slot0, slotSize, room, max, timeoutMs) => udpRecv(fd, mem, mem.byteLength, desc, slot0, slotSize, room, max, timeoutMs),
    udpSendUnits: (fds, mem, units, iovs, iovCap, n) => udpSend(fds, fds.length, mem, mem.byteLength, units, iovs, iovCap, n),
    setSpin: l.func("int weft_shim_set_spin(int us)"),
    udpGsoMaxSegs: l.func("int weft_udp_gso_max_segs(uint32_t bind_ip)"),
    takeStats: () => {
      stats(out, out.length);
      return Object.fromEntries(SHIM_STATS.map((k, i) => [k, out[i] ?? 0])) as ShimStats;
    },
    close: l.func("int weft_close(int fd)"),
  };
  return shim;
}

/** A negative return is -errno: turn it into an error that names the call. */
export function checked(rc: number, what: string): number {
  if (rc >= 0) return rc;
  throw new ShimError(`${what} failed: errno ${-rc}`);
}
