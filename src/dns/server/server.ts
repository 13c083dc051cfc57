import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { isIPv6 } from "node:net";
import { createServer, type Server } from "node:net";
import { ConfigError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { formatHostPort } from "../hostport.js";
import { BatchUdpListener, batchPathUnavailable } from "./batch.js";
import type { DnsCounters } from "./counters.js";
import type { DnsHandler } from "./handler.js";
import { TCP_DEFAULTS, TcpConnections, type TcpLimits } from "./tcp.js";

export interface ListenAddr {
  readonly host: string;
  readonly port: number;
}

/**
 * How the UDP socket of a listen address is served: "batch" (recvmmsg /
 * sendmmsg on a poll handle, the fast path) or "dgram" (Node's socket, one
 * read and one send per query), with the reason when it is the slow one.
 */
export interface UdpPath {
  readonly listen: string;
  readonly path: "batch" | "dgram";
  readonly why?: string;
}

export interface ListenerOptions {
  readonly tcp: TcpLimits;
  /** Clock of the TCP timeouts (ms). */
  readonly now?: () => number;
  /** false: Node's dgram for UDP even where the native batch path is available. */
  readonly batch?: boolean;
}

/**
 * The DNS server's sockets: UDP — the native batch path (recvmmsg/sendmmsg,
 * ./batch.ts) for IPv4 and IPv6 alike, else Node's dgram — and TCP (RFC
 * 7766, ./tcp.ts: length-prefixed messages, several per connection,
 * answered as they complete, within limits). An IPv6 listen address serves
 * IPv6 only (IPV6_V6ONLY on UDP and TCP, :: included): IPv4 clients are
 * served by an IPv4 listen address of their own, so 0.0.0.0 and :: can be
 * listed together on one port.
 */
export class DnsListener {
  private readonly udp: UdpSocket[] = [];
  private readonly tcp: Server[] = [];
  private readonly batch: BatchUdpListener[] = [];
  private readonly bound: ListenAddr[] = [];
  private readonly paths: UdpPath[] = [];
  private readonly out = Buffer.alloc(65535);
  private readonly conns: TcpConnections;

  constructor(private readonly handler: DnsHandler, counters: DnsCounters, private readonly log: Logger, private readonly opts: ListenerOptions = { tcp: TCP_DEFAULTS }) {
    this.conns = new TcpConnections(handler, counters, log, opts.tcp, opts.now);
  }

  /** Open TCP connections. */
  get tcpConnections(): number {
    return this.conns.size;
  }

  /** Binds every address (UDP and TCP on the same port); throws ConfigError naming the address that cannot be had. */
  async listen(addrs: readonly ListenAddr[]): Promise<void> {
    for (const a of addrs) {
      try {
        await this.listenOne(a);
      } catch (e) {
        const msg = (e as NodeJS.ErrnoException).code === "EADDRINUSE" || /errno 98/.test((e as Error).message) ? "the address is in use (another DNS server on this node?)"
          : (e as NodeJS.ErrnoException).code === "EADDRNOTAVAIL" || /errno 99/.test((e as Error).message) ? "no interface of this node has that address"
          : (e as Error).message;
        throw new ConfigError(`--dns-listen ${formatHostPort(a.host, a.port)}: cannot listen: ${msg}`, {
          hint: "choose another --dns-listen address, stop the other server, or --dns-listen off",
        });
      }
    }
  }

  /** Why `a` cannot have the batch path (undefined: it can). */
  private slowPathReason(a: ListenAddr): string | undefined {
    if (this.opts.batch === false) return "the batch path is turned off for this server (udpBatch: false)";
    return batchPathUnavailable();
  }

  private async listenOne(a: ListenAddr): Promise<void> {
    let port = a.port;
    const why = this.slowPathReason(a);
    if (why === undefined) {
      const batch = BatchUdpListener.open(a.host, a.port, this.handler, this.log);
      this.batch.push(batch);
      port = batch.port;
    } else {
      const u = isIPv6(a.host) ? createSocket({ type: "udp6", ipv6Only: true, recvBufferSize: 4 << 20 }) : createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
      u.on("message", (m, r) => this.onDatagram(u, m, r.address, r.port));
      u.on("error", (e) => this.log.warn({ err: e.message }, "DNS UDP socket error"));
      await new Promise<void>((res, rej) => {
        u.once("error", rej);
        u.bind(a.port, a.host, () => res());
      });
      this.udp.push(u);
      port = u.address().port;
    }
    const t = createServer({ allowHalfOpen: true }, (s) => this.conns.accept(s));
    await new Promise<void>((res, rej) => {
      t.once("error", rej);
      // A deep accept queue: under a connection flood a new client waits in it, not for a SYN retry.
      t.listen({ port, host: a.host, backlog: 4096, ipv6Only: isIPv6(a.host) }, () => res());
    });
    this.tcp.push(t);
    this.bound.push({ host: a.host, port });
    const listen = formatHostPort(a.host, port);
    if (why === undefined) {
      this.paths.push({ listen, path: "batch" });
    } else {
      this.paths.push({ listen, path: "dgram", why });
      // Never a silent fallback: the slow path is said aloud (and in weft status and weft_dns_udp_path).
      this.log.warn({ listen, udp: "dgram", why }, "DNS UDP on Node's dgram socket, not the recvmmsg/sendmmsg batch path");
    }
  }


  private onDatagram(u: UdpSocket, m: Buffer, addr: string, port: number): void {
    let r: number | Promise<Buffer | undefined>;
    try {
      r = this.handler.handle(m, m.length, addr, false, this.out);
    } catch (e) {
      this.log.error({ err: (e as Error).stack }, "DNS handler failed on a datagram");
      return;
    }
    if (typeof r === "number") {
      if (r > 0) u.send(Buffer.from(this.out.subarray(0, r)), port, addr);
      return;
    }
    r.then((b) => b && u.send(b, port, addr), (e: unknown) => this.log.error({ err: (e as Error).stack }, "DNS handler failed"));
  }

  /** The UDP path of every bound address, in listen order. */
  udpPaths(): UdpPath[] {
    return [...this.paths];
  }

  /** The bound addresses (port 0 resolved; UDP and TCP share it). */
  addresses(): ListenAddr[] {
    return [...this.bound];
  }

  close(): void {
    for (const u of this.udp) u.close();
    for (const t of this.tcp) t.close();
    this.conns.close();
    for (const b of this.batch) b.close();
  }
}
