import { existsSync } from "node:fs";
import { join } from "node:path";
import koffi from "koffi";
import { WeftError } from "../../common/errors.js";
import { projectRoot } from "../../common/paths.js";

/** A system call in the shim failed. */
export class ShimError extends WeftError {
  readonly code = "WEFT_SHIM_FAILED";
}

/** build/native/libweft_shim.so of this checkout. */
export function shimPath(): string {
  return join(projectRoot(), "build", "native", "libweft_shim.so");
}

/** The shim's functions (native/weft_shim.c), bound once per thread. */
export interface Shim {
  /** Opens the TUN device with offloads; `offloads[0]` gets the TUN_F_* flags in force. */
  tunOpen(name: string, offloads: Int32Array): number;
  tunUnpersist(fd: number): number;
  tunReadBatch(fd: number, base: ArrayBuffer, desc: number, slot0: number, slotSize: number, room: number, max: number, timeoutMs: number): number;
  tunWriteUnits(fd: number, base: ArrayBuffer, units: number, iovs: number, n: number): number;
  udpOpen(bindIp: number, port: number, rcvbuf: number, sndbuf: number, gro: number): number;
  udpGro(fd: number): number;
  udpPort(fd: number): number;
  udpRecvBatch(fd: number, base: ArrayBuffer, desc: number, slot0: number, slotSize: number, room: number, max: number, timeoutMs: number): number;
  udpSendUnits(fds: Int32Array, nfds: number, base: ArrayBuffer, units: number, iovs: number, n: number): number;
  /** Send failures of this thread since the last call; `last[0]` gets the last errno. */
  sendErrors(last: Int32Array): number;
  close(fd: number): number;
}

let shim: Shim | undefined;

export function loadShim(): Shim {
  if (shim) return shim;
  const path = shimPath();
  if (!existsSync(path)) throw new ShimError(`${path} is missing`, { hint: "run `npm run build`" });
  const l = koffi.load(path);
  shim = {
    tunOpen: l.func("int weft_tun_open(const char *name, _Out_ int32_t *offloads)"),
    tunUnpersist: l.func("int weft_tun_unpersist(int fd)"),
    tunReadBatch: l.func("int weft_tun_read_batch(int fd, uint8_t *base, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)"),
    tunWriteUnits: l.func("int weft_tun_write_units(int fd, uint8_t *base, uint32_t units, uint32_t iovtab, int n)"),
    udpOpen: l.func("int weft_udp_open(uint32_t bind_ip, uint16_t port, int rcvbuf, int sndbuf, int gro)"),
    udpGro: l.func("int weft_udp_gro(int fd)"),
    udpPort: l.func("int weft_udp_port(int fd)"),
    udpRecvBatch: l.func("int weft_udp_recv_batch(int fd, uint8_t *base, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)"),
    udpSendUnits: l.func("int weft_udp_send_units(const int32_t *fds, int nfds, uint8_t *base, uint32_t units, uint32_t iovtab, int n)"),
    sendErrors: l.func("int weft_send_errors(_Out_ int32_t *last_errno)"),
    close: l.func("int weft_close(int fd)"),
  };
  return shim;
}

/** A negative return is -errno: turn it into an error that names the call. */
export function checked(rc: number, what: string): number {
  if (rc >= 0) return rc;
  throw new ShimError(`${what} failed: errno ${-rc}`);
}
