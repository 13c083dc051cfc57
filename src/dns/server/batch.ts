import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import type { Logger } from "../../common/log.js";
import { parseIpv4 } from "../../common/ipv4.js";
import { nativeLibrary, nativeLibraryPath, pollAddonPath } from "../../native/library.js";
import type { DnsHandler } from "./handler.js";

interface DnsShim {
  open(ip: number, port: number, rcvbuf: number): number;
  recv(fd: number, buf: Buffer, slot: number, max: number, meta: Int32Array, timeoutMs: number): number;
  send(fd: number, buf: Buffer, slot: number, n: number, meta: Int32Array): number;
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
      port: l.func("int weft_udp_port(int fd)"),
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

/**
 * The UDP hot path for an IPv4 listen address: when the socket is readable
 * (a libuv poll handle on the main loop, native/weft_poll.c), batches of
 * queries are taken by recvmmsg, answered — cluster names and cache hits
 * synchronously, into the answer slots — and leave by one sendmmsg (koffi
 * calls into native/weft_dns.c). Answers that need an upstream are sent on
 * their own when they are ready. Buffers are allocated once; no thread is
 * involved.
 */
export class BatchUdpListener {
  private readonly inBuf = Buffer.alloc(BATCH * IN_SLOT);
  private readonly inMeta = new Int32Array(BATCH * 3);
  private readonly outBuf = Buffer.alloc(BATCH * OUT_SLOT);
  private readonly outMeta = new Int32Array(BATCH * 3);
  private readonly oneMeta = new Int32Array(3);
  private closed = false;
  private watch: object | undefined;

  private constructor(private readonly s: DnsShim, private readonly fd: number, private readonly handler: DnsHandler, private readonly log: Logger) {}

  /** Opens host:port; the caller first asks batchPathUnavailable() (this throws when the shim is missing). */
  static open(host: string, port: number, handler: DnsHandler, log: Logger): BatchUdpListener {
    const s = loadDnsShim();
    if (typeof s === "string") throw new Error(`DNS batch path: ${s}`);
    const fd = s.open(parseIpv4(host), port, 4 << 20);
    if (fd < 0) {
      const e = new Error(`cannot bind DNS UDP ${host}:${port}: errno ${-fd}${-fd === 98 ? " (address in use)" : -fd === 99 ? " (address not on this host)" : ""}`);
      throw e;
    }
    const l = new BatchUdpListener(s, fd, handler, log);
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
      const n = this.s.recv(this.fd, this.inBuf, IN_SLOT, BATCH, this.inMeta, 0);
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
    let m = 0;
    for (let i = 0; i < n; i++) {
      const len = inMeta[3 * i]!;
      const addr = inMeta[3 * i + 1]!;
      const port = inMeta[3 * i + 2]!;
      const msg = this.inBuf.subarray(i * IN_SLOT, i * IN_SLOT + len);
      let r: number | Promise<Buffer | undefined>;
      try {
        r = this.handler.handle(msg, len, addr, false, this.outBuf.subarray(m * OUT_SLOT, (m + 1) * OUT_SLOT));
      } catch (e) {
        this.log.error({ err: (e as Error).stack }, "DNS handler failed on a datagram");
        continue;
      }
      if (typeof r === "number") {
        if (r <= 0) continue;
        outMeta[3 * m] = r;
        outMeta[3 * m + 1] = addr;
        outMeta[3 * m + 2] = port;
        m++;
      } else {
        r.then((b) => b && this.sendOne(b, addr, port), (e: unknown) => this.log.error({ err: (e as Error).stack }, "DNS handler failed"));
      }
    }
    if (m > 0) {
      this.s.send(this.fd, this.outBuf, OUT_SLOT, m, outMeta); // what the socket cannot take now is dropped: clients retry
    }
  }

  private sendOne(b: Buffer, addr: number, port: number): void {
    if (this.closed) return;
    this.oneMeta[0] = b.length;
    this.oneMeta[1] = addr;
    this.oneMeta[2] = port;
    this.s.send(this.fd, b, b.length, 1, this.oneMeta);
  }

  /** Stops receiving and closes the socket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watch) this.s.poll.unwatch(this.watch);
    this.s.close(this.fd);
  }
}
