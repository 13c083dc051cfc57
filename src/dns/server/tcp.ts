import type { Socket } from "node:net";
import type { Logger } from "../../common/log.js";
import { HEADER_LEN } from "../wire/constants.js";
import { FrameReader, MAX_TCP_MESSAGE } from "../wire/framing.js";
import type { DnsCounters, TcpCloseReason } from "./counters.js";
import type { DnsHandler } from "./handler.js";

/** Limits of DNS over TCP (RFC 7766 §6.2.3: servers should limit and time out connections). */
export interface TcpLimits {
  /** Connections at most; at the cap the longest-idle one is closed for a new one. */
  readonly maxConnections: number;
  /** Connections per client address at most; at the cap that client's longest-idle one is closed. */
  readonly maxPerClient: number;
  /** A connection with nothing to do (no message being read, none in flight, nothing unsent) is closed after this long. */
  readonly idleMs: number;
  /** A message must be complete this long after its first byte. */
  readonly readTimeoutMs: number;
  /** Unsent answer bytes past which the connection is not read; stuck there for `idleMs`, it is closed. */
  readonly maxPendingBytes: number;
  /** Queries of one connection waiting for an upstream at most; beyond it the connection is not read. */
  readonly maxInflight: number;
}

/** Defaults: unbound's tcp-idle-timeout is 30 s, CoreDNS's idle timeout 10 s and its read timeout 2-5 s. */
export const TCP_DEFAULTS: TcpLimits = {
  maxConnections: 256, maxPerClient: 16, idleMs: 10_000, readTimeoutMs: 2_000, maxPendingBytes: 64 * 1024, maxInflight: 64,
};

interface Conn {
  readonly s: Socket;
  readonly addr: string;
  readonly client: string;
  readonly reader: FrameReader;
  /** Last accept, complete message, answer written or drain (ms). */
  lastActive: number;
  /** When the message being read began (ms), or -1. */
  msgStart: number;
  inflight: number;
  /** Reading is stopped (backpressure); `rest` holds what is left of the chunk being read. */
  paused: boolean;
  rest: Buffer | undefined;
  restAt: number;
  /** The client sent its FIN: end ours once the answers are out. */
  ended: boolean;
  /** Closed by us (counted under a reason). */
  closed: boolean;
}

/**
 * The TCP side of the DNS server: one instance for all listening sockets.
 * Every connection is checked against the ACL at accept, counted per client
 * address and overall (at a cap, the longest-idle connection goes — at the
 * total cap, of the client holding the most — so new clients are never
 * starved by idle ones), read through a FrameReader (one
 * message buffered at most), answered in any order (RFC 7766 §6.2.1.1),
 * timed by a sweep on an injectable clock, and stops being read while its
 * unsent answers or its queries in flight are over their bounds.
 */
export class TcpConnections {
  /** Every connection, least recently active first. */
  private readonly all = new Map<Socket, Conn>();
  /** Per client address, least recently active first. */
  private readonly byClient = new Map<string, Map<Socket, Conn>>();
  private readonly sweep: NodeJS.Timeout;
  private readonly out = Buffer.alloc(MAX_TCP_MESSAGE);

  constructor(
    private readonly handler: DnsHandler,
    private readonly counters: DnsCounters,
    private readonly log: Logger,
    private readonly limits: TcpLimits = TCP_DEFAULTS,
    private readonly now: () => number = () => performance.now(),
  ) {
    const tick = Math.max(10, Math.min(1000, Math.min(limits.idleMs, limits.readTimeoutMs) / 4));
    this.sweep = setInterval(() => this.check(), tick);
    this.sweep.unref();
  }

  get size(): number {
    return this.all.size;
  }

  /** A new connection from a net.Server (created with allowHalfOpen). */
  accept(s: Socket): void {
    s.on("error", () => undefined);
    const addr = s.remoteAddress;
    if (!addr || !this.handler.allows(addr)) {
      if (addr) this.counters.tcpClosed.acl++;
      s.destroy();
      return;
    }
    const client = addr.startsWith("::ffff:") ? addr.slice(7) : addr;
    const before = this.byClient.get(client);
    if (before && before.size >= this.limits.maxPerClient) this.evict(before, "client_cap");
    if (this.all.size >= this.limits.maxConnections) this.evict(this.fullest() ?? this.all, "total_cap");
    const c: Conn = {
      s, addr, client, reader: new FrameReader(), lastActive: this.now(), msgStart: -1, inflight: 0,
      paused: false, rest: undefined, restAt: 0, ended: false, closed: false,
    };
    this.all.set(s, c);
    const mine = this.byClient.get(client); // asked again: an eviction may have emptied and dropped it
    if (mine) mine.set(s, c);
    else this.byClient.set(client, new Map([[s, c]]));
    s.setNoDelay(true);
    s.on("data", (d: Buffer) => this.read(c, d, 0));
    s.on("drain", () => {
      this.touch(c);
      this.resume(c);
    });
    s.on("end", () => this.onEnd(c));
    s.on("close", () => this.forget(c));
  }

  /** Closes every connection. */
  close(): void {
    clearInterval(this.sweep);
    for (const c of this.all.values()) c.s.destroy();
    this.all.clear();
    this.byClient.clear();
  }

  /**
   * The connections of the client holding the most, when it holds more than
   * one: at the total cap a client's share goes first, so one with a single
   * connection is evicted only when every client is down to one.
   */
  private fullest(): Map<Socket, Conn> | undefined {
    let best: Map<Socket, Conn> | undefined;
    for (const m of this.byClient.values()) if (m.size > (best?.size ?? 1)) best = m;
    return best;
  }

  /** Closes the least recently active connection of `set`, preferring one with no query in flight. */
  private evict(set: Map<Socket, Conn>, reason: TcpCloseReason): void {
    let victim: Conn | undefined;
    let k = 0;
    for (const c of set.values()) {
      victim ??= c;
      if (c.inflight === 0) {
        victim = c;
        break;
      }
      if (++k >= 16) break;
    }
    if (victim) this.drop(victim, reason);
  }

  private drop(c: Conn, reason: TcpCloseReason): void {
    if (c.closed) return;
    c.closed = true;
    this.counters.tcpClosed[reason]++;
    c.s.destroy();
    this.forget(c);
  }

  private forget(c: Conn): void {
    if (!c.closed && c.reader.inMessage) this.counters.tcpClosed.partial++;
    c.closed = true;
    c.rest = undefined;
    this.all.delete(c.s);
    const mine = this.byClient.get(c.client);
    mine?.delete(c.s);
    if (mine?.size === 0) this.byClient.delete(c.client);
  }

  /** Marks activity: the connection moves to the most recently active end. */
  private touch(c: Conn): void {
    c.lastActive = this.now();
    if (c.closed) return;
    this.all.delete(c.s);
    this.all.set(c.s, c);
    const mine = this.byClient.get(c.client);
    if (mine) {
      mine.delete(c.s);
      mine.set(c.s, c);
    }
  }

  private blocked(c: Conn): boolean {
    return c.inflight >= this.limits.maxInflight || c.s.writableLength >= this.limits.maxPendingBytes;
  }

  /** Takes messages from `chunk` (from `at`) until it is used up or the connection must stop being read. */
  private read(c: Conn, chunk: Buffer, at: number): void {
    let p = at;
    while (p < chunk.length && !c.closed) {
      if (this.blocked(c)) {
        c.paused = true;
        c.rest = chunk;
        c.restAt = p;
        c.s.pause();
        return;
      }
      p = c.reader.feed(chunk, p);
      const m = c.reader.take();
      if (m) {
        if (m.length < HEADER_LEN) {
          // Not a DNS message: it must not keep the connection alive (two zero bytes every few seconds would).
          this.drop(c, "malformed");
          return;
        }
        c.msgStart = -1;
        this.touch(c);
        this.answer(c, m);
      } else if (c.reader.inMessage && c.msgStart < 0) {
        c.msgStart = this.now();
      }
    }
  }

  /** Reads again once the connection is under its bounds. */
  private resume(c: Conn): void {
    if (!c.paused || c.closed || this.blocked(c)) return;
    c.paused = false;
    if (c.reader.inMessage) c.msgStart = this.now(); // the read timeout does not run while we were not reading
    const rest = c.rest;
    c.rest = undefined;
    if (rest) this.read(c, rest, c.restAt);
    if (!c.paused && !c.closed) c.s.resume();
  }

  private answer(c: Conn, msg: Buffer): void {
    let r: number | Promise<Buffer | undefined>;
    try {
      r = this.handler.handle(msg, msg.length, c.addr, true, this.out);
    } catch (e) {
      this.log.error({ err: (e as Error).stack }, "DNS handler failed on a TCP message");
      return;
    }
    if (typeof r === "number") {
      if (r > 0) this.write(c, this.out, r);
      return;
    }
    c.inflight++;
    r.then((b) => {
      c.inflight--;
      if (b) this.write(c, b, b.length);
      this.settled(c);
    }, (e: unknown) => {
      c.inflight--;
      this.log.error({ err: (e as Error).stack }, "DNS handler failed");
      this.settled(c);
    });
  }

  private settled(c: Conn): void {
    if (c.closed) return;
    if (c.ended && c.inflight === 0) c.s.end();
    else this.resume(c);
  }

  /** Sends one answer; past the pending bound plus one message, the connection is closed (backpressure). */
  private write(c: Conn, b: Buffer, n: number): void {
    if (c.closed) return;
    if (c.s.writableLength + 2 + n > this.limits.maxPendingBytes + 2 + MAX_TCP_MESSAGE) {
      this.drop(c, "backpressure");
      return;
    }
    const f = Buffer.allocUnsafe(2 + n);
    f.writeUInt16BE(n, 0);
    b.copy(f, 2, 0, n);
    c.s.write(f);
    this.touch(c);
  }

  /** The client sent its FIN: a message it left incomplete never will be; else our side ends once its answers are out. */
  private onEnd(c: Conn): void {
    c.ended = true;
    if (c.reader.inMessage) this.drop(c, "partial");
    else if (c.inflight === 0) c.s.end();
  }

  /** The sweep: read timeouts, idle and stuck connections. */
  private check(): void {
    const now = this.now();
    const { idleMs, readTimeoutMs } = this.limits;
    for (const c of this.all.values()) {
      if (c.msgStart >= 0 && !c.paused && now - c.msgStart >= readTimeoutMs) this.drop(c, "deadline");
      else if (c.inflight === 0 && (c.paused || !c.reader.inMessage) && now - c.lastActive >= idleMs) {
        this.drop(c, c.s.writableLength > 0 ? "backpressure" : "idle");
      }
    }
  }
}
