import type { Watcher } from "etcd3";
import { describe, expect, it } from "vitest";
import { ListWatch, type ListWatchSource } from "../../src/common/list-watch.js";
import { silentLogger } from "../../src/common/log.js";

/**
 * The list-then-watch loop when etcd calls never return (seen in the chaos
 * soak: an agent started again stayed not ready, its lease and registry
 * watches never up and nothing retried): a listing or a watch that hangs
 * is given up after a deadline and tried again.
 */
const never = <T>(): Promise<T> => new Promise<T>(() => undefined);
const fakeWatcher = (cancelled: string[], name: string): Watcher => ({ cancel: async () => void cancelled.push(name) }) as unknown as Watcher;

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return cond();
}

describe("ListWatch with calls that never return", () => {
  it("a listing that hangs is abandoned after the deadline and listed again", async () => {
    let lists = 0;
    const cancelled: string[] = [];
    const source: ListWatchSource<number, never> = {
      list: () => (++lists === 1 ? never() : Promise.resolve({ snapshot: lists, revision: "7" })),
      watch: async () => fakeWatcher(cancelled, "w"),
    };
    const snaps: number[] = [];
    const lw = new ListWatch("test", source, { snapshot: (s) => snaps.push(s), event: () => undefined }, silentLogger, 20, 200);
    void lw.start();
    expect(await until(() => lw.connected, 3000)).toBe(true);
    expect(lists).toBe(2);
    expect(snaps).toEqual([2]);
    await lw.close();
  });

  it("a watch whose creation hangs is abandoned, listed and watched again; a late watcher of the abandoned try is cancelled", async () => {
    let watches = 0;
    const cancelled: string[] = [];
    let late: ((w: Watcher) => void) | undefined;
    const source: ListWatchSource<number, never> = {
      list: async () => ({ snapshot: 1, revision: "3" }),
      watch: () => {
        watches++;
        if (watches === 1) return new Promise<Watcher>((r) => (late = r));
        return Promise.resolve(fakeWatcher(cancelled, `w${watches}`));
      },
    };
    const lw = new ListWatch("test", source, { snapshot: () => undefined, event: () => undefined }, silentLogger, 20, 200);
    void lw.start();
    expect(await until(() => lw.connected, 3000)).toBe(true);
    expect(watches).toBe(2);
    late?.(fakeWatcher(cancelled, "w1"));
    expect(await until(() => cancelled.includes("w1"), 1000)).toBe(true);
    expect(cancelled).not.toContain("w2");
    await lw.close();
  });

  it("a watch that drops and stays disconnected past stallMs is abandoned (cancelled), listed again and watched on a new stream; one that comes back in time is kept", async () => {
    let lists = 0;
    const cancelled: string[] = [];
    const conn: ((up: boolean) => void)[] = [];
    const source: ListWatchSource<number, never> = {
      list: async () => ({ snapshot: ++lists, revision: "5" }),
      watch: async (_from, _ev, _err, onConnection) => {
        conn.push(onConnection);
        return fakeWatcher(cancelled, `w${conn.length}`);
      },
    };
    const snaps: number[] = [];
    const lw = new ListWatch("test", source, { snapshot: (s) => snaps.push(s), event: () => undefined }, silentLogger, 20, 2000, 150);
    void lw.start();
    expect(await until(() => lw.connected, 3000)).toBe(true);
    // Drops and resumes within stallMs: kept.
    conn[0]?.(false);
    expect(lw.connected).toBe(false);
    conn[0]?.(true);
    await new Promise((r) => setTimeout(r, 400));
    expect(lw.stalls).toBe(0);
    expect(conn.length).toBe(1);
    // Drops and never resumes (the client resumed it on a member that does not answer).
    conn[0]?.(false);
    expect(await until(() => conn.length === 2 && lw.connected, 3000)).toBe(true);
    expect(lw.stalls).toBe(1);
    expect(snaps).toEqual([1, 2]);
    expect(cancelled).toEqual(["w1"]);
    // The abandoned watch is not heard any more: its late "connected" changes nothing.
    conn[1]?.(false);
    conn[0]?.(true);
    expect(lw.connected).toBe(false);
    await lw.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(lw.stalls).toBe(1); // close stops the stall timer
  });
});
