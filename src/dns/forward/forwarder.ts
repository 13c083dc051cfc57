import { randomBytes, randomFillSync } from "node:crypto";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { connect } from "node:net";
import { WeftError } from "../../common/errors.js";
import type { Logger } from "../../common/log.js";
import { CLASS_IN, EDNS_DO, EDNS_UDP_SIZE, FLAG, TYPE } from "../wire/constants.js";
import { FrameReader } from "../wire/framing.js";
import { nameToKey } from "../wire/query.js";
import { parseResponse, type ParsedResponse } from "../wire/response.js";
import type { Upstream, UpstreamSet } from "./upstreams.js";

/** No upstream answered in time, or all refused; the caller answers SERVFAIL (or stale). */
export class UpstreamError extends WeftError {
  readonly code = "WEFT_DNS_UPSTREAM";
}

export interface ForwardMetrics {
  upstreamSeconds(upstream: string, rcode: string, seconds: number): void;
  healthCheckFailed(upstream: string): void;
  rejectedReply(reason: string): void;
}

export interface ForwarderOptions {
  readonly upstreams: UpstreamSet;
  /** Upstream queries in flight at most; beyond it a query fails at once. */
  readonly maxConcurrent: number;
  /** Whole-request deadline (ms), across retries on other upstreams. */
  readonly deadlineMs: number;
  /** One attempt's timeout before the next upstream is tried (ms). */
  readonly attemptMs: number;
  /** How often upstreams marked down are probed (ms). */
  readonly healthCheckMs: number;
  readonly log: Logger;
  readonly metrics?: ForwardMetrics | undefined;
}

export interface Answer {
  readonly bytes: Buffer;
  readonly parsed: ParsedResponse;
  readonly upstream: string;
}

interface Pending {
  readonly up: Upstream;
  readonly key: string;
  readonly qtype: number;
  readonly done: (a: Answer | undefined) => void;
}

const SOCKETS = 8;

/**
 * Forwards questions to upstream resolvers over UDP (TCP when the answer is
 * truncated): random IDs over a pool of sockets on random ports, replies
 * accepted only from the upstream asked with the same ID and question,
 * concurrent identical questions coalesced into one upstream query.
 */
export class Forwarder {
  private readonly socks: UdpSocket[] = [];
  /** Each socket's family, known at creation (not asked of the socket per query). */
  private readonly sockV6: boolean[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly inflight = new Map<string, Promise<Answer>>();
  private readonly ids = Buffer.alloc(4096);
  private idPos = this.ids.length;
  private next = 0;
  private health: NodeJS.Timeout | undefined;
  /** Names of loop probes sent, by upstream: a probe that reaches us came back through a loop. */
  readonly loopProbes = new Map<string, Upstream>();
  active = 0;
  upstreamQueries = 0;

  constructor(private readonly opts: ForwarderOptions) {}

  async start(): Promise<void> {
    const v6 = this.opts.upstreams.list.some((u) => u.host.includes(":"));
    const v4 = this.opts.upstreams.list.some((u) => !u.host.includes(":"));
    for (let i = 0; i < SOCKETS; i++) {
      // Sockets of the families the upstreams have: all IPv6 for IPv6 upstreams only, every other one for both.
      const family = v6 && (!v4 || i % 2 === 1) ? "udp6" : "udp4";
      const s = createSocket({ type: family });
      this.sockV6.push(family === "udp6");
      s.on("message", (m, r) => this.onReply(i, m, r.address, r.port));
      s.on("error", (e) => this.opts.log.warn({ err: e.message }, "upstream socket error"));
      await new Promise<void>((res) => s.bind(0, () => res()));
      this.socks.push(s);
    }
    this.health = setInterval(() => void this.healthCheck(), this.opts.healthCheckMs);
    this.health.unref();
  }

  close(): void {
    clearInterval(this.health);
    for (const s of this.socks) s.close();
    for (const p of this.pending.values()) p.done(undefined);
    this.pending.clear();
  }

  private randomId(): number {
    if (this.idPos + 2 > this.ids.length) {
      randomFillSync(this.ids);
      this.idPos = 0;
    }
    const v = this.ids.readUInt16BE(this.idPos);
    this.idPos += 2;
    return v;
  }

  /** What is in flight: upstream queries, coalesced questions, UDP attempts awaiting a reply. */
  load(): { active: number; coalesced: number; pending: number } {
    return { active: this.active, coalesced: this.inflight.size, pending: this.pending.size };
  }

  /** Resolves (key, qtype) upstream; identical concurrent questions share one query. */
  resolve(key: string, qtype: number, dnssecOk: boolean, cd: boolean, coalesceKey: string): Promise<Answer> {
    const running = this.inflight.get(coalesceKey);
    if (running) return running;
    const p = this.query(key, qtype, dnssecOk, cd).finally(() => this.inflight.delete(coalesceKey));
    this.inflight.set(coalesceKey, p);
    return p;
  }

  private async query(key: string, qtype: number, dnssecOk: boolean, cd: boolean): Promise<Answer> {
    if (this.active >= this.opts.maxConcurrent) throw new UpstreamError(`more than ${this.opts.maxConcurrent} upstream queries in flight`, { recoverable: true });
    this.active++;
    try {
      const deadline = Date.now() + this.opts.deadlineMs;
      const order = this.opts.upstreams.order();
      if (order.length === 0) throw new UpstreamError("no DNS upstream is configured (or all loop back to this server)", { hint: "set --dns-upstream" });
      for (let attempt = 0; Date.now() < deadline; attempt++) {
        const up = order[attempt % order.length]!;
        const left = deadline - Date.now();
        const t0 = performance.now();
        const a = await this.udpAttempt(up, key, qtype, dnssecOk, cd, Math.min(this.opts.attemptMs, left));
        if (!a) {
          up.fails++;
          this.opts.metrics?.upstreamSeconds(up.label, "timeout", (performance.now() - t0) / 1000);
          continue;
        }
        up.fails = 0;
        let answer = a;
        if (a.parsed.truncated) {
          // Truncated: the whole answer over TCP. An upstream whose TCP fails (closes early, half a
          // message, another question, no answer in time) failed this attempt: the next one, or
          // SERVFAIL / a stale answer at the deadline — never the truncated answer passed on.
          const left = deadline - Date.now();
          const tcp = left > 0 ? await this.tcpAttempt(up, key, qtype, dnssecOk, cd, Math.min(this.opts.attemptMs, left)).catch((e: unknown) => {
            this.opts.log.debug({ upstream: up.label, err: (e as Error).message }, "TCP retry of a truncated answer failed");
            return undefined;
          }) : undefined;
          if (!tcp) {
            this.opts.metrics?.upstreamSeconds(up.label, "tcp_error", (performance.now() - t0) / 1000);
            continue;
          }
          answer = tcp;
        }
        this.opts.metrics?.upstreamSeconds(up.label, String(answer.parsed.rcode), (performance.now() - t0) / 1000);
        return answer;
      }
      throw new UpstreamError(`no upstream answered within ${this.opts.deadlineMs} ms (${order.map((u) => u.label).join(", ")})`, { recoverable: true });
    } finally {
      this.active--;
    }
  }

  private udpAttempt(up: Upstream, key: string, qtype: number, dnssecOk: boolean, cd: boolean, timeoutMs: number): Promise<Answer | undefined> {
    const sockIndex = this.pickSocket(up);
    const sock = this.socks[sockIndex]!;
    let id = this.randomId();
    for (let i = 0; this.pending.has(sockIndex * 65536 + id) && i < 16; i++) id = this.randomId();
    const slot = sockIndex * 65536 + id;
    const msg = buildQuery(id, key, qtype, dnssecOk, cd);
    this.upstreamQueries++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(slot);
        resolve(undefined);
      }, timeoutMs);
      this.pending.set(slot, {
        up, key, qtype,
        done: (a) => {
          clearTimeout(timer);
          this.pending.delete(slot);
          resolve(a);
        },
      });
      sock.send(msg, up.port, up.host, (err) => {
        if (err) this.pending.get(slot)?.done(undefined);
      });
    });
  }

  private pickSocket(up: Upstream): number {
    const v6 = up.host.includes(":");
    for (let i = 0; i < SOCKETS; i++) {
      const j = (this.next++) % SOCKETS;
      if (this.sockV6[j] === v6) return j;
    }
    return 0;
  }

  private onReply(sockIndex: number, m: Buffer, from: string, port: number): void {
    if (m.length < 12) return this.opts.metrics?.rejectedReply("short");
    const p = this.pending.get(sockIndex * 65536 + m.readUInt16BE(0));
    if (!p) return this.opts.metrics?.rejectedReply("unknown id");
    if (p.up.host !== from.replace(/^::ffff:/, "") || p.up.port !== port) return this.opts.metrics?.rejectedReply("wrong source");
    const parsed = parseResponse(m, m.length);
    if (typeof parsed === "string") return this.opts.metrics?.rejectedReply("malformed");
    if (parsed.key !== p.key || parsed.qtype !== p.qtype || parsed.qclass !== CLASS_IN) return this.opts.metrics?.rejectedReply("question mismatch");
    p.done({ bytes: m, parsed, upstream: p.up.label });
  }

  /**
   * One query over TCP. Settles exactly once: with the answer, or rejected
   * when the upstream closes before a whole message, sends a malformed one
   * or one to another question, errs, or the time is up.
   */
  private tcpAttempt(up: Upstream, key: string, qtype: number, dnssecOk: boolean, cd: boolean, timeoutMs: number): Promise<Answer> {
    const id = this.randomId();
    const msg = buildQuery(id, key, qtype, dnssecOk, cd);
    return new Promise((resolve, reject) => {
      const s = connect({ host: up.host, port: up.port });
      const reader = new FrameReader();
      let settled = false;
      const finish = (err: Error | undefined, a?: Answer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        s.destroy();
        if (a) resolve(a);
        else reject(err ?? new Error("TCP upstream query failed"));
      };
      const timer = setTimeout(() => finish(new Error(`TCP upstream query timed out after ${timeoutMs} ms`)), timeoutMs);
      s.on("connect", () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(msg.length);
        s.write(Buffer.concat([len, msg]));
      });
      s.on("data", (d: Buffer) => {
        reader.feed(d, 0);
        const m = reader.take();
        if (!m) return;
        const parsed = parseResponse(m, m.length);
        if (typeof parsed === "string") return finish(new Error(`malformed TCP answer: ${parsed}`));
        if (parsed.id !== id || parsed.key !== key || parsed.qtype !== qtype) return finish(new Error("TCP answer to another question"));
        finish(undefined, { bytes: m, parsed, upstream: up.label });
      });
      s.on("error", (e) => finish(e));
      s.on("close", () => finish(new Error(reader.inMessage ? "the upstream closed the TCP connection in the middle of its answer" : "the upstream closed the TCP connection without answering")));
    });
  }

  /** Probes upstreams marked down with ". NS"; any answer brings one back. */
  private async healthCheck(): Promise<void> {
    for (const up of this.opts.upstreams.list) {
      if (up.loop || up.fails < 2) continue;
      const a = await this.udpAttempt(up, "", TYPE.NS, false, false, 1000);
      if (a) up.fails = 0;
      else this.opts.metrics?.healthCheckFailed(up.label);
    }
  }

  /**
   * Sends each upstream a query for a random name (HINFO); if one comes back
   * to our own server, that upstream forwards to us: the server calls
   * `loopDetected` and the upstream is never used again.
   */
  probeLoops(): void {
    for (const up of this.opts.upstreams.list) {
      const name = `${randomBytes(6).toString("hex")}.${randomBytes(6).toString("hex")}.weft-loop-probe`;
      const key = nameToKey(name);
      this.loopProbes.set(key, up);
      void this.udpAttempt(up, key, 13, false, false, 2000);
    }
  }

  /** Whether any upstream is up (not marked down by failures, not a loop). */
  anyUpstreamUp(): boolean {
    return this.opts.upstreams.healthy > 0;
  }

  /** Each upstream and whether it is used: up, down (health-checked), or a loop (never again). */
  upstreamStates(): { upstream: string; state: "up" | "down" | "loop" }[] {
    return this.opts.upstreams.list.map((u) => ({ upstream: u.label, state: u.loop ? "loop" : u.fails >= 2 ? "down" : "up" }));
  }

  loopDetected(key: string): Upstream | undefined {
    const up = this.loopProbes.get(key);
    if (up && !up.loop) {
      up.loop = true;
      this.opts.log.error({ upstream: up.label }, "DNS forwarding loop: a query sent to this upstream came back to us; it will not be used");
    }
    return up;
  }
}

/** A recursive query for (key, qtype) with an OPT record advertising our UDP size. */
export function buildQuery(id: number, key: string, qtype: number, dnssecOk: boolean, cd: boolean): Buffer {
  const name = Buffer.from(key, "latin1");
  const b = Buffer.alloc(12 + name.length + 1 + 4 + 11);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(FLAG.RD | (cd ? FLAG.CD : 0), 2);
  b.writeUInt16BE(1, 4);
  b.writeUInt16BE(1, 10);
  name.copy(b, 12);
  let o = 12 + name.length + 1;
  b.writeUInt16BE(qtype, o);
  b.writeUInt16BE(CLASS_IN, o + 2);
  o += 4;
  b.writeUInt16BE(TYPE.OPT, o + 1);
  b.writeUInt16BE(EDNS_UDP_SIZE, o + 3);
  b.writeUInt16BE(dnssecOk ? EDNS_DO : 0, o + 7);
  return b;
}
