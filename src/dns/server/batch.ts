import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { isIPv6 } from "node:net";
import type { Logger } from "../../common/log.js";
import { parseIpv4 } from "../../common/ipv4.js";
import { formatGroups, ipv6Bytes, parseIpv6 } from "../../common/ipv6.js";
import { nativeLibrary, nativeLibraryPath, pollAddonPath } from "../../native/library.js";
import type { DnsHandler } from "./handler.js";

interface DnsShim {
  open(ip: number, port: number, rcvbuf: number): number;
  recv(fd: number, buf: Buffer, slot: number, max: number, meta: Int32Array, timeoutMs: number): number;
  send(fd: number, buf: Buffer, slot: number, n: number, meta: Int32Array): number;
  open6(ip16: Uint8Array, port: number, rcvbuf: number): number;
  recv6(fd: number, buf: Buffer, slot: number, max: number, meta: Int32Array, timeoutMs: number): number;
  send6(fd: number, buf: Buffer, slot: number, n: number, meta: Int32Array): number;
  port(fd: number): number;
  close(fd: number): number;
  /** weft_poll.node: readiness callbacks on the main event loop. */
  poll: { watch(fd: number, cb: (status: number) => void): object; unwatch(handle: object): void };
}

let shim: DnsShim | undefined;
/** Why the batch path cannot be had here (set once loading failed). */
let unavailable: string | undefined;

/**
 * The native batch functions (native/weft_dns.c) and the poll addon, or the
 * reason they cannot be used (not built, or not loadable).
 */
function loadDnsShim(): DnsShim | string {
  if (shim) return shim;
  if (unavailable !== undefined) return unavailable;
  const addon = pollAddonPath();
  for (const f of [nativeLibraryPath(), addon]) {
    if (!existsSync(f)) return (unavailable = `${f} is not built (npm run build)`);
  }
  try {
    const l = nativeLibrary();
    shim = {
      poll: createRequire(import.meta.url)(addon) as DnsShim["poll"],
      open: l.func("int weft_dns_open(uint32_t ip, uint16_t port, int rcvbuf)"),
      recv: l.func("int weft_dns_recv(int fd, _Inout_ uint8_t *buf, uint32_t slot, int max, _Inout_ int32_t *meta, int timeout_ms)"),
      send: l.func("int weft_dns_send(int fd, const uint8_t *buf, uint32_t slot, int n, const int32_t *meta)"),
      open6: l.func("int weft_dns_open6(const uint8_t *ip16, uint16_t port, int rcvbuf)"),
      recv6: l.func("int weft_dns_recv6(int fd, _Inout_ uint8_t *buf, uint32_t slot, int max, _Inout_ int32_t *meta, int timeout_ms)"),
      send6: l.func("int weft_dns_send6(int fd, const uint8_t *buf, uint32_t slot, int n, const int32_t *meta)"),
      port: l.func("int weft_dns_port(int fd)"),
      close: l.func("int weft_close(int fd)"),
    };
  } catch (e) {
    return (unavailable = `the native batch functions cannot be loaded: ${(e as Error).message}`);
  }
  return shim;
}

/** Why the recvmmsg/sendmmsg path is not available in this process, or undefined when it is. */
export function batchPathUnavailable(): string | undefined {
  const s = loadDnsShim();
  return typeof s === "string" ? s : undefined;
}

/** Queries taken per receive call; answers sent per send call. */
const BATCH = 64;
/** A query slot: bigger than any query a client sends over UDP (EDNS payloads go up to 4096). */
const IN_SLOT = 4096;
/** An answer slot: the largest UDP answer we send (EDNS 1232 capped) with room to spare. */
const OUT_SLOT = 2048;
/** Batches answered per readiness callback before the event loop gets a turn (epoll is level-triggered: it calls again). */
const YIELD_EVERY = 8;

/** int32 per message in meta, as native/weft_dns.c lays them out: DNS4_META (IPv4), DNS6_META (IPv6). */
const META4 = 5;
const META6 = 12;

/**
 * The UDP hot path for a listen address of either family: when the socket
 * is readable (a libuv poll handle on the main loop, native/weft_poll.c),
 * batches of queries are taken by recvmmsg, answered — cluster names and
 * cache hits synchronously, into the answer slots — and leave by one
 * sendmmsg (koffi calls into native/weft_dns.c). Answers that need an
 * upstream are sent on their own when they are ready. On a wildcard
 * socket (0.0.0.0, ::) an answer leaves from the address its query was
 * sent to (IP_PKTINFO / IPV6_PKTINFO); an IPv6 one goes to the client's
 * address, port and scope. Buffers are allocated once; no thread
 * is involved.
 */
export class BatchUdpListener {
  private readonly meta: number;
  private readonly inBuf = Buffer.alloc(BATCH * IN_SLOT);
  private readonly inMeta: Int32Array;
  private readonly outBuf = Buffer.alloc(BATCH * OUT_SLOT);
  private readonly outMeta: Int32Array;
  private closed = false;
  private watch: object | undefined;

  private constructor(private readonly s: DnsShim, private readonly fd: number, private readonly v6: boolean, private readonly handler: DnsHandler, private readonly log: Logger) {
    this.meta = v6 ? META6 : META4;
    this.inMeta = new Int32Array(BATCH * this.meta);
    this.outMeta = new Int32Array(BATCH * this.meta);
  }

  /** Opens host:port (IPv4 or IPv6 text); the caller first asks batchPathUnavailable() (this throws when the shim is missing). */
  static open(host: string, port: number, handler: DnsHandler, log: Logger): BatchUdpListener {
    const s = loadDnsShim();
    if (typeof s === "string") throw new Error(`DNS batch path: ${s}`);
    const v6 = isIPv6(host);
    const fd = v6 ? s.open6(ipv6Bytes(parseIpv6(host)), port, 4 << 20) : s.open(parseIpv4(host), port, 4 << 20);
    if (fd < 0) {
      const where = v6 ? `[${host}]:${port}` : `${host}:${port}`;
      throw new Error(`cannot bind DNS UDP ${where}: errno ${-fd}${-fd === 98 ? " (address in use)" : -fd === 99 ? " (address not on this host)" : ""}`);
    }
    const l = new BatchUdpListener(s, fd, v6, handler, log);
    l.watch = s.poll.watch(fd, (status) => l.onReadable(status));
    return l;
  }

  get port(): number {
    return this.s.port(this.fd);
  }

  /** Up to YIELD_EVERY batches, then back to the event loop (which calls again while queries wait). */
  private onReadable(status: number): void {
    if (this.closed) return;
    if (status < 0) {
      this.log.error({ status }, "DNS socket poll failed");
      return;
    }
    for (let k = 0; k < YIELD_EVERY; k++) {
      const n = this.v6 ? this.s.recv6(this.fd, this.inBuf, IN_SLOT, BATCH, this.inMeta, 0) : this.s.recv(this.fd, this.inBuf, IN_SLOT, BATCH, this.inMeta, 0);
      if (n < 0) {
        this.log.error({ errno: -n }, "DNS batch receive failed");
        return;
      }
      if (n === 0) return;
      this.answer(n);
    }
  }

  private answer(n: number): void {
    const inMeta = this.inMeta;
    const outMeta = this.outMeta;
    const S = this.meta;
    let m = 0;
    for (let i = 0; i < n; i++) {
      const at = S * i;
      const len = inMeta[at]!;
      // The client: an IPv4 address as a host-order number (the ACL's fast path), an IPv6 one as canonical text.
      const from = this.v6 ? wordsToText(inMeta, at + 3) : inMeta[at + 1]!;
      const msg = this.inBuf.subarray(i * IN_SLOT, i * IN_SLOT + len);
      let r: number | Promise<Buffer | undefined>;
      try {
        r = this.handler.handle(msg, len, from, false, this.outBuf.subarray(m * OUT_SLOT, (m + 1) * OUT_SLOT));
      } catch (e) {
        this.log.error({ err: (e as Error).stack }, "DNS handler failed on a datagram");
        continue;
      }
      if (typeof r === "number") {
        if (r <= 0) continue;
        const o = S * m;
        for (let k = 1; k < S; k++) outMeta[o + k] = inMeta[at + k]!; // element by element: no view allocated per answer
        outMeta[o] = r;
        m++;
      } else {
        const meta = inMeta.slice(at, at + S); // the slots are reused before the upstream answers
        r.then((b) => b && this.sendOne(b, meta), (e: unknown) => this.log.error({ err: (e as Error).stack }, "DNS handler failed"));
      }
    }
    if (m > 0) {
      // What the socket cannot take now is dropped: clients retry.
      if (this.v6) this.s.send6(this.fd, this.outBuf, OUT_SLOT, m, outMeta);
      else this.s.send(this.fd, this.outBuf, OUT_SLOT, m, outMeta);
    }
  }

  private sendOne(b: Buffer, meta: Int32Array): void {
    if (this.closed) return;
    meta[0] = b.length;
    if (this.v6) this.s.send6(this.fd, b, b.length, 1, meta);
    else this.s.send(this.fd, b, b.length, 1, meta);
  }

  /** Stops receiving and closes the socket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watch) this.s.poll.unwatch(this.watch);
    this.s.close(this.fd);
  }
}

/**
 * An IPv6 address given as four host-order 32-bit words (w[at..at+3]) as
 * RFC 5952 text — the form os.networkInterfaces() and Node's sockets use,
 * which the ACL compares with — without a bigint per query.
 */
export function wordsToText(w: Int32Array, at: number): string {
  const g = [0, 0, 0, 0, 0, 0, 0, 0];
  for (let k = 0; k < 4; k++) {
    const v = w[at + k]! >>> 0;
    g[2 * k] = v >>> 16;
    g[2 * k + 1] = v & 0xffff;
  }
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && (g[5] === 0xffff || (g[5] === 0 && g[6] !== 0))) {
    // IPv4-mapped, and (as inet_ntop, so Node, writes it) IPv4-compatible ::a.b.c.d
    return `::${g[5] ? "ffff:" : ""}${g[6]! >>> 8}.${g[6]! & 255}.${g[7]! >>> 8}.${g[7]! & 255}`;
  }
  return formatGroups(g);
}
