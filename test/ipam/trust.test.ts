import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "../../src/common/exec.js";
import { parseCidr, parseIpv4 } from "../../src/common/ipv4.js";
import { silentLogger } from "../../src/common/log.js";
import { parseIpamSpec } from "../../src/ipam/config.js";
import { IpamLockedError, IpamStateError } from "../../src/ipam/errors.js";
import { IpamService } from "../../src/ipam/ipam.js";
import { NetnsReconciler } from "../../src/ipam/reconciler.js";
import { IpamStore } from "../../src/ipam/store.js";
import { encodeAllocation, type Allocation } from "../../src/ipam/table.js";

/**
 * What the IPAM state trusts: its lock (the kernel's, across PID
 * namespaces), its files (a damaged record refuses the state instead of
 * being skipped), and its disk (directory fsyncs, a full disk while
 * compacting).
 */
const root = mkdtempSync(join(tmpdir(), "weft-ipam-trust-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => join(root, `t${n++}`);
const holderScript = join(__dirname, "lock-holder.mjs");

function a(ip: string, id: string, extra: Partial<Allocation> = {}): Allocation {
  return {
    ip: parseIpv4(ip), network: "net", containerId: id, ifname: "eth0", pool: "default", netns: "", netnsInode: 0,
    podNamespace: "", podName: "", hostIf: "", created: 1, requested: false, ...extra,
  };
}
const line = (r: unknown): string => `${JSON.stringify(r)}\n`;
const add = (s: number, ip: string, id: string): string => line({ s, op: "add", a: encodeAllocation(a(ip, id)) });

async function waitFor(child: ChildProcess, text: string): Promise<void> {
  let out = "";
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes(text)) resolve();
    });
    child.once("exit", (code) => reject(new Error(`exited (${code}) before "${text}"`)));
  });
}

describe("damaged state is refused, never skipped", () => {
  const good = add(1, "198.18.5.2", "A") + add(2, "198.18.5.3", "B");
  const tail = add(4, "198.18.5.5", "D") + line({ s: 5, op: "del", key: "net/A/eth0" });
  it.each([
    ["a line that is not JSON", '{"s":3,"op":"add","a":{"ip":"198.18.5.4","netw\n', /line 3 \(byte \d+\) cannot be used: not JSON.*sed -n '3p'/],
    ["binary garbage", "\u0000\u0000\u0000\u0000\n", /line 3 .*not JSON/],
    ["a record without a sequence number", line({ op: "add", a: encodeAllocation(a("198.18.5.4", "C")) }), /line 3 .*"s" undefined is not a sequence number/],
    ["a sequence number going back", add(1, "198.18.5.4", "C"), /line 3 .*sequence number 1 does not follow 2/],
    ["an unknown op", line({ s: 3, op: "move", key: "x" }), /line 3 .*unknown op "move"/],
    ["an allocation with a bad address", line({ s: 3, op: "add", a: { ...encodeAllocation(a("198.18.5.4", "C")), ip: "198.18.5.400" } }), /line 3 .*the allocation: .*198\.18\.5\.400/],
    ["a release without a key", line({ s: 3, op: "del" }), /line 3 .*a release without a key/],
    ["an address held twice", add(3, "198.18.5.2", "C"), /line 3 gives 198\.18\.5\.2 to net\/C\/eth0, which net\/A\/eth0 already holds/],
  ])("%s in the middle of the journal: typed error naming file and line, files untouched, changes refused", async (_what, bad, msg) => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    const text = good + bad + tail + '{"s":6,"op":"add","a":{"ip":"198.1'; // and a torn tail, which must not be cut either
    writeFileSync(join(dir, "journal"), text);
    const s = await IpamStore.open(dir, silentLogger);
    expect(s.problem).toBeInstanceOf(IpamStateError);
    expect(s.problem?.code).toBe("WEFT_IPAM_STATE");
    expect(s.problem?.message).toContain(join(dir, "journal"));
    expect(s.problem?.message).toMatch(msg);
    expect(s.problem?.message).toMatch(/files are left as they are/);
    // What could be read is there (for `weft ipam ls`); nothing after the damage is applied.
    expect(s.table.all().map((x) => x.containerId).sort()).toEqual(["A", "B"]);
    await expect(s.commit({ op: "add", a: a("198.18.5.9", "E") })).rejects.toBe(s.problem);
    await expect(s.commit({ op: "del", key: "net/A/eth0" })).rejects.toBe(s.problem);
    expect(s.table.get("net/E/eth0")).toBeUndefined();
    await s.close();
    expect(readFileSync(join(dir, "journal"), "utf8")).toBe(text);
    // It stays refused until repaired: a restart does not "get used to" it.
    const again = await IpamStore.open(dir, silentLogger);
    expect(again.problem?.message).toMatch(msg);
    await again.close();
  });

  it("a damaged snapshot opens read-only too, the file untouched", async () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "snapshot.json"), "{not json");
    const s = await IpamStore.open(dir, silentLogger);
    expect(s.problem).toBeInstanceOf(IpamStateError);
    expect(s.problem?.message).toMatch(/snapshot .* cannot be read.*left as they are.*restore it from a backup/);
    await expect(s.commit({ op: "add", a: a("198.18.5.9", "E") })).rejects.toThrow(IpamStateError);
    await s.close();
    expect(readFileSync(join(dir, "snapshot.json"), "utf8")).toBe("{not json");
    expect(existsSync(join(dir, "journal"))).toBe(false);
  });

  it("a journal that cannot be read (EISDIR) opens read-only too", async () => {
    const dir = fresh();
    mkdirSync(join(dir, "journal"), { recursive: true });
    const s = await IpamStore.open(dir, silentLogger);
    expect(s.problem?.message).toMatch(/IPAM state in .* cannot be read: EISDIR/);
    await s.close();
  });

  it("a journal that cannot be created (a real tmpfs out of inodes) opens read-only, not a crash", async () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    await run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=2", "tmpfs", dir]); // the root directory and the lock file
    try {
      const s = await IpamStore.open(dir, silentLogger);
      expect(s.problem?.message).toMatch(/journal .* cannot be opened for writing: ENOSPC.*check the disk/);
      await expect(s.commit({ op: "add", a: a("198.18.5.9", "E") })).rejects.toThrow(IpamStateError);
      await s.close();
    } finally {
      await run(["umount", dir]);
    }
  });

  it("the service on damaged state: ADD and GC refused (CNI code 5), DEL succeeds keeping the address, STATUS says why, the reconciler frees nothing", async () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    const text = add(1, "198.18.5.2", "A") + "garbage\n";
    writeFileSync(join(dir, "journal"), text);
    const store = await IpamStore.open(dir, silentLogger);
    const ipam = new IpamService(store, silentLogger);
    ipam.bind(parseCidr("198.18.5.0/24"));
    const spec = parseIpamSpec({});
    const req = { network: "net", containerId: "new", ifname: "eth0", netns: "", hostIf: "", pod: { namespace: "", name: "", labels: {} }, requested: undefined, spec };
    const err = await ipam.allocate(req, "k").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpamStateError);
    expect((err as IpamStateError).cniCode).toBe(5);
    expect(await ipam.allocate({ ...req, containerId: "A" }, "k").catch((e: unknown) => e)).toBeInstanceOf(IpamStateError); // even a repeated ADD
    expect(await ipam.release("net", "A", "eth0", "del")).toBeUndefined();
    expect(ipam.find("net", "A", "eth0")?.ip).toBe(parseIpv4("198.18.5.2"));
    await expect(ipam.gc("net", new Set(), 0)).rejects.toThrow(IpamStateError);
    expect(ipam.unavailable(spec, "k")).toMatch(/journal .* line 2/);
    const rec = new NetnsReconciler(ipam, silentLogger, { intervalMs: 1000, graceMs: 0 });
    expect(await rec.pass(Date.now(), 0)).toBe(0);
    await ipam.close();
    expect(readFileSync(join(dir, "journal"), "utf8")).toBe(text);
  });
});

describe("one agent per state dir: the kernel's lock", () => {
  it("a second open in the same process is refused (the old pid file let it through)", async () => {
    const dir = fresh();
    const s = await IpamStore.open(dir, silentLogger);
    await expect(IpamStore.open(dir, silentLogger)).rejects.toThrow(IpamLockedError);
    await s.close();
    const t = await IpamStore.open(dir, silentLogger);
    await t.close();
  });

  it.each([
    ["the same PID namespace", [] as string[]],
    ["another PID namespace (unshare --pid)", ["unshare", "--pid", "--fork", "--kill-child"]],
  ])("a holder in %s: the second is refused with a clear error; once the holder is SIGKILLed a new one gets the lock", async (_what, wrap) => {
    const dir = fresh();
    const argv = [...wrap, process.execPath, holderScript, dir];
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] }); // stderr: unshare notes its child's death
    try {
      await waitFor(child, "held");
      // The holder itself (under unshare, its child: pid 1 in its own namespace).
      const holder = wrap.length === 0 ? child.pid! : Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, "utf8").trim().split(" ")[0]);
      expect(holder).toBeGreaterThan(0);
      const err = await IpamStore.open(dir, silentLogger).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(IpamLockedError);
      expect((err as Error).message).toMatch(new RegExp(`locked by another running weft agent \\(pid ${holder} here; its lock file says \\{"pid":${wrap.length === 0 ? holder : 1},.*stop the other agent first`));
      process.kill(holder, "SIGKILL");
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once("exit", r)));
    } finally {
      child.kill("SIGKILL");
    }
    const s = await IpamStore.open(dir, silentLogger); // the kernel dropped the lock with its holder
    expect(s.problem).toBeUndefined();
    await s.close();
  });
});

describe("the disk", () => {
  it("creating the state fsyncs the directories it created and the journal's directory (strace)", async () => {
    const dir = join(fresh(), "state", "ipam");
    const out = join(root, `strace-${n}.txt`);
    const dist = (p: string): string => join(__dirname, "../../dist/src", p);
    const script = `const { IpamStore } = await import(${JSON.stringify(dist("ipam/store.js"))}); const { silentLogger } = await import(${JSON.stringify(dist("common/log.js"))});
      const s = await IpamStore.open(process.argv[1], silentLogger); await s.close();`;
    await run(["strace", "-f", "-qq", "-e", "trace=openat,fsync,mkdir", "-o", out, process.execPath, "--input-type=module", "-e", script, dir]);
    const calls = readFileSync(out, "utf8").split("\n").map((l) => l.replace(/^\d+\s+/, ""));
    const fsynced = (path: string, after: number): boolean => {
      const fds = new Set<string>();
      for (const c of calls.slice(after)) {
        const o = /^openat\(AT_FDCWD, "([^"]+)", [^)]*\) = (\d+)/.exec(c);
        if (o && o[1] === path) fds.add(o[2]!);
        const f = /^fsync\((\d+)\)/.exec(c);
        if (f && fds.has(f[1]!)) return true;
      }
      return false;
    };
    const journalAt = calls.findIndex((c) => c.includes(`"${dir}/journal"`) && c.includes("O_CREAT"));
    expect(journalAt, calls.join("\n").slice(0, 3000)).toBeGreaterThan(0);
    expect(fsynced(dir, journalAt), "the directory holding the new journal was not fsync'd").toBe(true);
    expect(fsynced(dirname(dir), 0), "the parent of the new state directory was not fsync'd").toBe(true);
    expect(fsynced(dirname(dirname(dir)), 0)).toBe(true);
  });

  it("a disk that fills up while compacting (a real 64 KiB tmpfs): nothing crashes, the journal stays whole, every acknowledged change survives", async () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    await run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]);
    try {
      const s = await IpamStore.open(dir, silentLogger, { compactEvery: 8 });
      const acked: string[] = [];
      let failure: unknown;
      for (let i = 0; i < 2000 && !failure; i++) {
        try {
          await s.commit({ op: "add", a: a(`198.18.${i >> 8}.${i & 255}`, `c${i}`, { netns: "x".repeat(300) }) });
          acked.push(`c${i}`);
        } catch (e) {
          failure = e;
        }
      }
      expect(s.stats.compactions).toBeGreaterThan(0);
      expect(s.stats.compactionFailures).toBeGreaterThan(0); // the snapshot (all allocations) stopped fitting before the journal did
      expect(acked.length).toBeGreaterThan(20);
      await s.close();
      const t = await IpamStore.open(dir, silentLogger);
      expect(t.problem).toBeUndefined();
      expect(t.table.all().map((x) => x.containerId).sort()).toEqual([...acked].sort());
      await t.close();
    } finally {
      await run(["umount", dir]);
    }
  });
});

describe("hostile volume", () => {
  it("ADDs under hundreds of network names: the per-network plans kept for metrics and STATUS stay bounded, live networks stay listed", async () => {
    const store = await IpamStore.open(fresh(), silentLogger);
    const ipam = new IpamService(store, silentLogger);
    ipam.bind(parseCidr("198.18.6.0/24"));
    const spec = parseIpamSpec({});
    const req = (network: string, id: string) => ({ network, containerId: id, ifname: "eth0", netns: "", hostIf: "", pod: { namespace: "", name: "", labels: {} }, requested: undefined, spec });
    await ipam.allocate(req("keep", "k0"), "k");
    for (let i = 0; i < 300; i++) {
      await ipam.allocate(req(`n${i}`, "c"), "k");
      await ipam.release(`n${i}`, "c", "eth0");
    }
    expect(ipam.lastPlan.size).toBeLessThanOrEqual(64);
    const nets = new Set(ipam.usage().map((u) => u.network));
    expect(nets.size).toBeLessThanOrEqual(64);
    expect(nets.has("keep")).toBe(true);
    await ipam.close();
  });
});
