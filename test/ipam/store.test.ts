import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseIpv4 } from "../../src/common/ipv4.js";
import { createLogger, silentLogger } from "../../src/common/log.js";
import { run } from "../../src/common/exec.js";
import { IpamIoError } from "../../src/ipam/errors.js";
import { IpamStore } from "../../src/ipam/store.js";
import { encodeAllocation, type Allocation } from "../../src/ipam/table.js";

const root = mkdtempSync(join(tmpdir(), "weft-ipam-store-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => join(root, `s${n++}`);

function a(ip: string, id: string, extra: Partial<Allocation> = {}): Allocation {
  return {
    ip: parseIpv4(ip), network: "net", containerId: id, ifname: "eth0", pool: "default", netns: "", netnsInode: 0,
    podNamespace: "", podName: "", hostIf: "", created: 1, requested: false, ...extra,
  };
}

const summary = (s: IpamStore): string[] => s.table.all().map((x) => `${x.containerId}=${x.ip}`).sort();

describe("IPAM store", () => {
  it("keeps allocations and cursors across a reopen", async () => {
    const dir = fresh();
    const s = await IpamStore.open(dir, silentLogger);
    await Promise.all([s.commit({ op: "add", a: a("198.18.0.2", "x") }), s.commit({ op: "add", a: a("198.18.0.3", "y") }), s.commit({ op: "add", a: a("198.18.0.4", "z") })]);
    await s.commit({ op: "del", key: "net/y/eth0" });
    const before = summary(s);
    await s.close();
    const t = await IpamStore.open(dir, silentLogger);
    expect(summary(t)).toEqual(before);
    expect(before).toHaveLength(2);
    expect(t.table.cursors.get("net/default")).toBe(parseIpv4("198.18.0.4"));
    await t.close();
  });

  it("group commit: 2000 concurrent changes share far fewer syncs", async () => {
    const s = await IpamStore.open(fresh(), silentLogger);
    await Promise.all(Array.from({ length: 2000 }, (_x, i) => s.commit({ op: "add", a: a(`198.18.${i >> 8}.${i & 255}`, `c${i}`) })));
    expect(s.table.size).toBe(2000);
    expect(s.stats.records).toBe(2000);
    expect(s.stats.syncs).toBeLessThan(200);
    await s.close();
  });

  it("cuts a torn last line (a change nobody was told about) and keeps the rest", async () => {
    const dir = fresh();
    const s = await IpamStore.open(dir, silentLogger);
    await s.commit({ op: "add", a: a("198.18.0.2", "x") });
    await s.close();
    appendFileSync(join(dir, "journal"), '{"s":99,"op":"add","a":{"ip":"198.18.0.9","netw');
    const t = await IpamStore.open(dir, silentLogger);
    expect(summary(t)).toEqual([`x=${parseIpv4("198.18.0.2")}`]);
    expect(readFileSync(join(dir, "journal"), "utf8").endsWith("\n")).toBe(true);
    await t.commit({ op: "add", a: a("198.18.0.3", "y") }); // appends after the cut, not onto the torn line
    await t.close();
    const u = await IpamStore.open(dir, silentLogger);
    expect(u.table.size).toBe(2);
    await u.close();
  });

  it("compacts into a snapshot; a crash between snapshot and journal truncation replays nothing twice", async () => {
    const dir = fresh();
    const s = await IpamStore.open(dir, silentLogger, { compactEvery: 10 });
    for (let i = 0; i < 35; i++) await s.commit({ op: "add", a: a(`198.18.0.${i + 2}`, `c${i}`) });
    for (let i = 0; i < 5; i++) await s.commit({ op: "del", key: `net/c${i}/eth0` });
    expect(s.stats.compactions).toBeGreaterThanOrEqual(3);
    const before = summary(s);
    await s.close();
    expect(existsSync(join(dir, "snapshot.json"))).toBe(true);
    const t = await IpamStore.open(dir, silentLogger);
    expect(summary(t)).toEqual(before);
    await t.close();

    // The crash: a snapshot saying B holds .50, and a journal still holding the older history of .50.
    const d2 = fresh();
    mkdirSync(d2, { recursive: true });
    writeFileSync(join(d2, "snapshot.json"), JSON.stringify({ version: 1, seq: 3, allocations: [encodeAllocation(a("198.18.0.50", "B"))], cursors: {} }));
    writeFileSync(join(d2, "journal"), [
      { s: 1, op: "add", a: encodeAllocation(a("198.18.0.50", "A")) },
      { s: 2, op: "del", key: "net/A/eth0" },
      { s: 3, op: "add", a: encodeAllocation(a("198.18.0.50", "B")) },
      { s: 4, op: "add", a: encodeAllocation(a("198.18.0.51", "C")) },
    ].map((r) => JSON.stringify(r)).join("\n") + "\n");
    const u = await IpamStore.open(d2, silentLogger);
    expect(summary(u)).toEqual([`B=${parseIpv4("198.18.0.50")}`, `C=${parseIpv4("198.18.0.51")}`]);
    await u.close();
  });

  it("a full disk (a real 64 KiB tmpfs): the failed change is undone, acknowledged ones survive", async () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    await run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]);
    try {
      const s = await IpamStore.open(dir, silentLogger);
      const acked: string[] = [];
      let failure: unknown;
      for (let i = 0; i < 2000 && !failure; i++) {
        try {
          await s.commit({ op: "add", a: a(`198.18.${i >> 8}.${i & 255}`, `c${i}`, { netns: "x".repeat(200) }) });
          acked.push(`c${i}`);
        } catch (e) {
          failure = e;
          expect(s.table.get(`net/c${i}/eth0`)).toBeUndefined(); // undone in memory
        }
      }
      expect(failure).toBeInstanceOf(IpamIoError);
      expect((failure as Error).message).toMatch(/could not be written.*ENOSPC|no space/i);
      expect(s.table.size).toBe(acked.length);
      await s.close();
      const t = await IpamStore.open(dir, silentLogger);
      expect(t.table.all().map((x) => x.containerId).sort()).toEqual([...acked].sort());
      await t.close();
    } finally {
      await run(["umount", dir]);
    }
  });

  it.each([60, 150, 400])("SIGKILL after %i ms of concurrent changes: every acknowledged change survives, nothing is held twice", async (ms) => {
    const dir = fresh();
    const child = spawn(process.execPath, [join(__dirname, "../helpers/weft-ipam-writer.mjs"), dir], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    await new Promise((r) => setTimeout(r, ms));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r)); // "close": its stdout has been read to the end
    const acked = new Map<string, number>();
    const deleting = new Set<string>();
    for (const line of out.split("\n")) {
      const [op, key, ip] = line.split(" ");
      if (op === "+" && key) acked.set(key, Number(ip));
      if (op === "?" && key) deleting.add(key);
      if (op === "-" && key) {
        acked.delete(key);
        deleting.delete(key);
      }
    }
    expect(acked.size).toBeGreaterThan(20);
    const errors: string[] = [];
    const log = createLogger("t", {});
    log.error = ((o: unknown) => errors.push(JSON.stringify(o))) as typeof log.error;
    const s = await IpamStore.open(dir, log);
    for (const [key, ip] of acked) {
      if (deleting.has(key)) expect([ip, undefined], key).toContain(s.table.get(key)?.ip); // its delete was in flight
      else expect(s.table.get(key)?.ip, key).toBe(ip);
    }
    const ips = s.table.all().map((x) => x.ip);
    expect(new Set(ips).size).toBe(ips.length);
    // Anything beyond the acknowledged set is a change in flight at the kill (at most one batch of 32 and its deletes).
    expect(s.table.size - acked.size).toBeLessThanOrEqual(32);
    expect(errors).toEqual([]);
    await s.close();
  });
});
