/**
 * bench:dns's answer checks: what each name of the query file must get back,
 * a sweep that asks every name once, a checker that keeps asking while
 * dnsperf runs, and the judgement of a round (./dns.ts). Answers are compared
 * by rcode and address; a query that times out under load is not an answer
 * and counts as unchecked, never as right.
 */
import { query } from "../src/harness/dnswire.js";
import type { DnsperfResult } from "../src/harness/dnsperf.js";

/** What one name must answer: NOERROR with exactly `address`, or NXDOMAIN. */
export interface Expected {
  readonly name: string;
  readonly rcode: "NOERROR" | "NXDOMAIN";
  readonly address?: string;
}

export interface CheckTally {
  checked: number;
  unanswered: number;
  /** The first few wrong answers, as text. */
  readonly wrong: string[];
}

const newTally = (): CheckTally => ({ checked: 0, unanswered: 0, wrong: [] });

/** Asks `e` once; a wrong answer goes into `t.wrong`. */
async function askOne(host: string, port: number, e: Expected, t: CheckTally, timeoutMs: number): Promise<void> {
  let r;
  try {
    r = await query(host, port, e.name, "A", { timeoutMs });
  } catch {
    t.unanswered++;
    return;
  }
  t.checked++;
  const got = r.answers.filter((a) => a.type === 1).map((a) => a.data);
  const ok = r.rcodeName === e.rcode && (e.address === undefined ? got.length === 0 : got.length === 1 && got[0] === e.address);
  if (!ok && t.wrong.length < 5) t.wrong.push(`${e.name} A answered ${r.rcodeName} [${got.join(", ")}], expected ${e.rcode}${e.address ? ` ${e.address}` : ""}`);
  else if (!ok) t.wrong.push("…");
}

/** Every name once, in order (an idle server must answer every one). */
export async function sweep(host: string, port: number, all: readonly Expected[]): Promise<CheckTally> {
  const t = newTally();
  for (const e of all) await askOne(host, port, e, t, 3000);
  return t;
}

/**
 * Asks the names in turn, one at a time every `everyMs`, until stopped: the
 * answers a target gives under dnsperf's load are checked too (a few dozen
 * queries per second against ~100k: no weight on the figures).
 */
export function checkWhileRunning(host: string, port: number, all: readonly Expected[], everyMs = 50): { stop(): Promise<CheckTally> } {
  const t = newTally();
  let stopped = false;
  const loop = (async () => {
    for (let i = 0; !stopped; i++) {
      const e = all[i % all.length];
      if (e) await askOne(host, port, e, t, 1000);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return t;
    },
  };
}

/**
 * Why a round does not count (empty: it does): wrong answers seen during or
 * after it, rcodes other than NOERROR/NXDOMAIN, or a NXDOMAIN share that is
 * not the query file's (`nxShare`, within 2 points).
 */
export function judgeRound(r: DnsperfResult, during: CheckTally, after: CheckTally, nxShare: number): string[] {
  const why: string[] = [];
  if (during.wrong.length > 0) why.push(`wrong answers under load: ${during.wrong.join("; ")}`);
  if (after.wrong.length > 0) why.push(`wrong answers after the round: ${after.wrong.join("; ")}`);
  if (after.unanswered > 0) why.push(`${after.unanswered} names unanswered after the round`);
  if (during.checked === 0) why.push("no answer checked while dnsperf ran");
  const other = Object.entries(r.rcodes).filter(([k, v]) => k !== "NOERROR" && k !== "NXDOMAIN" && v > 0);
  if (other.length > 0) why.push(`dnsperf saw other rcodes: ${JSON.stringify(Object.fromEntries(other))}`);
  const share = (r.rcodes["NXDOMAIN"] ?? 0) / Math.max(1, r.completed);
  if (Math.abs(share - nxShare) > 0.02) why.push(`NXDOMAIN share ${(share * 100).toFixed(2)}%, expected ${(nxShare * 100).toFixed(2)}%`);
  return why;
}
