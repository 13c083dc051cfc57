import { readFileSync } from "node:fs";

/** Resident memory of a process in MiB (VmRSS), undefined when it is gone. */
export function rssMib(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m?.[1] ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface MemoryTrend {
  /** Least-squares slope over the samples after warm-up, MiB per minute. */
  readonly slopeMibPerMin: number;
  /** Median of the last third minus median of the first third (after warm-up), MiB. */
  readonly riseMib: number;
  readonly samples: number;
  readonly grows: boolean;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : (s[Math.floor(s.length / 2)] as number);
};

/**
 * Whether a process's memory trends upward: samples one per second as
 * [seconds, MiB]; the first `warmupS` (60) are left out (start-up, JIT, the
 * heap finding its size: a 10-minute soak showed agents' RSS still settling
 * by ±5 MiB two minutes in, so shorter verdicts were noise); it grows
 * when both the fitted slope exceeds `maxSlope` MiB/min and the last third
 * sits `minRise` MiB above the first (one noisy burst is not a trend).
 * Undefined with fewer than `minSamples` (120) samples after warm-up.
 */
export function memoryTrend(samples: readonly (readonly [number, number])[], o: { warmupS?: number; minSamples?: number; maxSlope?: number; minRise?: number } = {}): MemoryTrend | undefined {
  const t0 = samples[0]?.[0] ?? 0;
  const xs = samples.filter(([t]) => t - t0 >= (o.warmupS ?? 60));
  if (xs.length < (o.minSamples ?? 120)) return undefined;
  const n = xs.length;
  const mt = xs.reduce((a, [t]) => a + t, 0) / n;
  const mv = xs.reduce((a, [, v]) => a + v, 0) / n;
  const num = xs.reduce((a, [t, v]) => a + (t - mt) * (v - mv), 0);
  const den = xs.reduce((a, [t]) => a + (t - mt) ** 2, 0);
  const slopeMibPerMin = den === 0 ? 0 : (num / den) * 60;
  const third = Math.max(1, Math.floor(n / 3));
  const riseMib = median(xs.slice(n - third).map(([, v]) => v)) - median(xs.slice(0, third).map(([, v]) => v));
  return { slopeMibPerMin, riseMib, samples: n, grows: slopeMibPerMin > (o.maxSlope ?? 2) && riseMib > (o.minRise ?? 10) };
}
