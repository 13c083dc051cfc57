import type { ChildProcess } from "node:child_process";
import { formatIpv4 } from "../common/ipv4.js";
import type { Netns } from "./netns.js";

/**
 * A sequence-numbered traffic probe for restart tests: `ping -D` every
 * `interval` from a namespace, its replies read as they arrive (iputils
 * flushes every line). `across()` opens a window (e.g. "old agent stopped"),
 * runs what happens inside it, closes it ("new agent ready"), and reports
 * which of the requests sent inside the window went unanswered. It refuses to
 * report when the probe did not cover the window: no reply before it opened,
 * the ping no longer running when it closed, or no request sent after it
 * closed answered — so a test built on it cannot pass with a ping that ended
 * before the restart.
 */

/** The probe did not cover the window it was asked about, or traffic never came back. */
export class ProbeWindowError extends Error {
  readonly code = "WEFT_PROBE_WINDOW";
  constructor(readonly reason: "no_traffic_before" | "ended_early" | "not_resumed", message: string) {
    super(message);
    this.name = "ProbeWindowError";
  }
}

export interface ProbeWindow {
  /** Highest sequence number answered before the window opened. */
  readonly before: number;
  /** First sequence number sent after the window closed and answered. */
  readonly after: number;
  /** Requests strictly between `before` and `after`: the ones the window holds. */
  readonly sent: number;
  /** Of those, the ones never answered. */
  readonly lost: number[];
  /** Time from the reply to `before` to the reply to `after` (ping's -D clock), seconds. */
  readonly seconds: number;
}

interface Reply {
  readonly seq: number;
  /** Receive time (realtime clock, seconds) and round trip (seconds): sent at at - rtt. */
  readonly at: number;
  readonly rtt: number;
}

const REPLY = /^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms/;

export class PingProbe {
  private readonly replies = new Map<number, Reply>();
  private highest = 0;
  private out = "";
  private buf = "";
  private listeners: ((r: Reply) => void)[] = [];
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcess, readonly target: string, readonly intervalSec: number) {
    child.stdout?.on("data", (d: Buffer) => this.take(d.toString()));
    child.stderr?.on("data", (d: Buffer) => (this.out += d.toString()));
    this.exited = new Promise((r) => child.once("exit", () => r()));
  }

  /**
   * Starts `ping -D -i <interval> -w <deadline>` from `ns` to `to` and waits
   * for its first reply. The deadline only bounds a test that forgets stop().
   */
  static async start(ns: Netns, to: number, opts: { intervalSec?: number; /** whole seconds (ping -w) */ deadlineSec?: number; firstReplyMs?: number } = {}): Promise<PingProbe> {
    const interval = opts.intervalSec ?? 0.01;
    const target = formatIpv4(to);
    const child = ns.spawn(["ping", "-n", "-D", "-i", String(interval), "-w", String(Math.max(1, Math.ceil(opts.deadlineSec ?? 60))), target]);
    const p = new PingProbe(child, target, interval);
    try {
      await p.nextReply(opts.firstReplyMs ?? 5000);
    } catch (e) {
      await p.stop();
      throw new ProbeWindowError("no_traffic_before", `ping ${target} got no first reply: ${(e as Error).message}; output: ${p.out.slice(-500)}`);
    }
    return p;
  }

  /** True while the ping process runs. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Everything the ping printed so far. */
  get output(): string {
    return this.out;
  }

  private take(s: string): void {
    this.out += s;
    this.buf += s;
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      const m = REPLY.exec(line);
      if (!m) continue;
      const r: Reply = { seq: Number(m[2]), at: Number(m[1]), rtt: Number(m[3]) / 1000 };
      if (this.replies.has(r.seq)) continue; // a duplicate answers nothing new
      this.replies.set(r.seq, r);
      this.highest = Math.max(this.highest, r.seq);
      const ls = this.listeners;
      this.listeners = [];
      for (const l of ls) l(r);
    }
  }

  /** The next reply line read from now on. */
  private nextReply(timeoutMs: number): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners = this.listeners.filter((l) => l !== on);
        reject(new Error(`no reply in ${timeoutMs} ms${this.running ? "" : " (ping has exited)"}`));
      }, timeoutMs);
      const on = (r: Reply): void => {
        clearTimeout(timer);
        resolve(r);
      };
      this.listeners.push(on);
    });
  }

  /**
   * Opens the window, runs `open` (e.g. stop the old agent) and `close` (e.g.
   * start the new one and wait until it is ready), and reports the requests
   * sent in between. Throws ProbeWindowError when the probe did not cover the
   * window, or no request sent after it closed is answered within `resumeMs`.
   */
  async across(open: () => Promise<void>, close: () => Promise<void>, opts: { resumeMs?: number } = {}): Promise<ProbeWindow> {
    if (!this.running || this.highest === 0) {
      throw new ProbeWindowError("no_traffic_before", `the probe to ${this.target} had no reply before the window opened (running: ${this.running})`);
    }
    const before = this.highest; // replies read so far were all received (so sent) before the window opened
    await open();
    await close();
    const closedAt = Date.now() / 1000;
    if (!this.running) {
      throw new ProbeWindowError("ended_early",
        `the probe to ${this.target} ended before the window closed (exit ${this.child.exitCode ?? this.child.signalCode}): the window is not covered; ping said: ${this.out.slice(-300)}`);
    }
    // The first reply to a request sent after the window closed (send time = receive time - rtt).
    const resumeMs = opts.resumeMs ?? 5000;
    const deadline = Date.now() + resumeMs;
    let after: Reply | undefined;
    for (const r of this.replies.values()) {
      if (r.at - r.rtt > closedAt && (after === undefined || r.seq < after.seq)) after = r;
    }
    while (after === undefined) {
      const left = deadline - Date.now();
      const r = left > 0 ? await this.nextReply(left).catch(() => undefined) : undefined;
      if (r === undefined) {
        throw new ProbeWindowError("not_resumed",
          `no request to ${this.target} sent after the window closed was answered within ${resumeMs} ms (highest answered icmp_seq=${this.highest}, ${this.highest - before} after the window opened)`);
      }
      if (r.at - r.rtt > closedAt) after = r;
    }
    const lost: number[] = [];
    for (let s = before + 1; s < after.seq; s++) if (!this.replies.has(s)) lost.push(s);
    const first = this.replies.get(before);
    return { before, after: after.seq, sent: after.seq - before - 1, lost, seconds: first ? after.at - first.at : NaN };
  }

  /** Stops the ping (SIGINT, so it prints its summary) and waits for it to exit. */
  async stop(): Promise<void> {
    if (this.running) this.child.kill("SIGINT");
    await this.exited;
  }
}
