import { existsSync } from "node:fs";
import koffi from "koffi";
import type { Logger } from "../../common/log.js";
import { parseIpv4 } from "../../common/ipv4.js";
import { shimPath } from "../../backend/tun/shim.js";
import type { DnsHandler } from "./handler.js";

interface AsyncFn {
  async(...args: unknown[]): void;
}
interface DnsShim {
  open(ip: number, port: number, rcvbuf: number): number;
  recv: AsyncFn & ((fd: number, buf: Buffer, slot: number, max: number, meta: Int32Array, timeoutMs: number) => number);
  send(fd: number, buf: Buffer, slot: number, n: number, meta: Int32Array): number;
  port(fd: number): number;
  close(fd: number): number;
}

let shim: DnsShim | undefined | null;

/** The native batch functions (native/weft_dns.c), or undefined when the shim is not built. */
function loadDnsShim(): DnsShim | undefined {
  if (shim !== undefined) return shim ?? undefined;
  const path = shimPath();
  if (!existsSync(path)) {
    shim = null;
    return undefined;
  }
  const l = koffi.load(path);
  shim = {
    open: l.func("int weft_dns_open(uint32_t ip, uint16_t port, int rcvbuf)"),
    recv: l.func("int weft_dns_recv(int fd, _Inout_ uint8_t *buf, uint32_t slot, int max, _Inout_ int32_t *meta, int timeout_ms)") as DnsShim["recv"],
    send: l.func("int weft_dns_send(int fd, const uint8_t *buf, uint32_t slot, int n, const int32_t *meta)"),
    port: l.func("int weft_udp_port(int fd)"),
    close: l.func("int weft_close(int fd)"),
  };
  return shim;
}

/** Queries taken per receive call; answers sent per send call. */
const BATCH = 64;
/** A query slot: bigger than any query a client sends over UDP (EDNS payloads go up to 4096). */
const IN_SLOT = 4096;
/** An answer slot: the largest UDP answer we send (EDNS 1232 capped) with room to spare. */
const OUT_SLOT = 2048;
/** Batches answered in a row before the event loop gets a turn. */
const YIELD_EVERY = 8;
/** How long one receive waits before it returns (and `close` can finish). */
const WAIT_MS = 200;

/**
 * The UDP hot path for an IPv4 listen address: batches of queries arrive by
 * recvmmsg on a libuv threadpool thread (koffi async), are answered on the
 * main thread — cluster names and cache hits synchronously, into the answer
 * slots — and leave by one sendmmsg. Answers that need an upstream are sent
 * on their own when they are ready. Buffers are allocated once.
 */
export class BatchUdpListener {
  private readonly inBuf = Buffer.alloc(BATCH * IN_SLOT);
  private readonly inMeta = new Int32Array(BATCH * 3);
  private readonly outBuf = Buffer.alloc(BATCH * OUT_SLOT);
  private readonly outMeta = new Int32Array(BATCH * 3);
  private readonly oneMeta = new Int32Array(3);
  private closed = false;
  private running: Promise<void> | undefined;
  batches = 0;
  sendDrops = 0;

  private constructor(private readonly s: DnsShim, private readonly fd: number, private readonly handler: DnsHandler, private readonly log: Logger) {}

  /** Opens host:port, or returns undefined when the native shim is not available (the caller uses dgram). */
  static open(host: string, port: number, handler: DnsHandler, log: Logger): BatchUdpListener | undefined {
    const s = loadDnsShim();
    if (!s) return undefined;
    const fd = s.open(parseIpv4(host), port, 4 << 20);
    if (fd < 0) {
      const e = new Error(`cannot bind DNS UDP ${host}:${port}: errno ${-fd}${-fd === 98 ? " (address in use)" : -fd === 99 ? " (address not on this host)" : ""}`);
      throw e;
    }
    const l = new BatchUdpListener(s, fd, handler, log);
    l.running = l.loop();
    return l;
  }

  get port(): number {
    return this.s.port(this.fd);
  }

  private recv(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.s.recv.async(this.fd, this.inBuf, IN_SLOT, BATCH, this.inMeta, WAIT_MS, (err: unknown, n: number) => (err ? reject(err as Error) : resolve(n)));
    });
  }

  /**
   * While queries keep coming, the main thread takes them itself with a
   * non-blocking receive after each batch (no thread hop), yielding to the
   * event loop every few batches so upstream replies, timers and TCP still
   * run; once the socket is empty it waits on the threadpool again.
   */
  private async loop(): Promise<void> {
    let streak = 0;
    while (!this.closed) {
      let n = this.s.recv(this.fd, this.inBuf, IN_SLOT, BATCH, this.inMeta, 0);
      if (n > 0) {
        this.answer(n);
        if (++streak % YIELD_EVERY === 0) await new Promise<void>((r) => setImmediate(r));
        continue;
      }
      streak = 0;
      try {
        n = await this.recv();
      } catch (e) {
        this.log.error({ err: (e as Error).message }, "DNS batch receive failed");
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (n < 0) {
        if (this.closed) break;
        this.log.error({ errno: -n }, "DNS batch receive failed");
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (n > 0) this.answer(n);
    }
  }

  private answer(n: number): void {
    this.batches++;
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
      const sent = this.s.send(this.fd, this.outBuf, OUT_SLOT, m, outMeta);
      if (sent < m) this.sendDrops += m - Math.max(0, sent);
    }
  }

  private sendOne(b: Buffer, addr: number, port: number): void {
    if (this.closed) return;
    this.oneMeta[0] = b.length;
    this.oneMeta[1] = addr;
    this.oneMeta[2] = port;
    if (this.s.send(this.fd, b, b.length, 1, this.oneMeta) < 1) this.sendDrops++;
  }

  /** Stops receiving (within one wait) and closes the socket. */
  async close(): Promise<void> {
    this.closed = true;
    await this.running;
    this.s.close(this.fd);
  }
}
