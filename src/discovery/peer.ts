import { statSync } from "node:fs";
import type { Socket } from "node:net";
import koffi from "koffi";

/**
 * Who is at the other end of a Unix socket: the kernel's peer credentials
 * (SO_PEERCRED, taken at connect) give the peer's pid, and
 * /proc/<pid>/ns/net its network namespace, as the inode of that namespace
 * (what IPAM recorded at ADD for a pod's CNI_NETNS). The pid is as this
 * process's PID namespace sees it: the agent must see the host's processes
 * (0 when the peer is not visible, and then no namespace is known).
 */

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;

type GetSockOpt = (fd: number, level: number, name: number, val: Buffer, len: number[]) => number;
let getsockopt: GetSockOpt | null | undefined;

function bind(): GetSockOpt | null {
  if (getsockopt !== undefined) return getsockopt;
  try {
    const libc = koffi.load("libc.so.6");
    getsockopt = libc.func("int getsockopt(int fd, int level, int name, _Out_ uint8_t *val, _Inout_ uint32_t *len)") as GetSockOpt;
  } catch {
    getsockopt = null;
  }
  return getsockopt;
}

/** The peer's pid by SO_PEERCRED, or undefined when it cannot be read. */
export function peerPid(sock: Socket): number | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  const f = bind();
  if (typeof fd !== "number" || fd < 0 || !f) return undefined;
  const buf = Buffer.alloc(12);
  const len = [12];
  if (f(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0 || len[0] !== 12) return undefined;
  const pid = buf.readInt32LE(0);
  return pid > 0 ? pid : undefined;
}

/** The inode of the peer's network namespace, or undefined when it cannot be known. */
export function peerNetns(sock: Socket): number | undefined {
  const pid = peerPid(sock);
  if (pid === undefined) return undefined;
  try {
    return statSync(`/proc/${pid}/ns/net`).ino;
  } catch {
    return undefined; // the peer is gone already
  }
}
