import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statfsSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../../common/log.js";
import { projectRoot } from "../../common/paths.js";
import { BpfError, BpfObject, BPF_TCX_EGRESS, BPF_TCX_INGRESS, bpf } from "./libbpf.js";
import { MAP_LAYOUT, MAP_NAMES, WeftMaps, carryOver, possibleCpus, type MapName } from "./maps.js";

const BPF_FS_MAGIC = 0xcafe4a11;

export type ProgName = "weft_from_pod" | "weft_from_overlay" | "weft_to_overlay";
export type Hook = "ingress" | "egress";
/** tcx: bpf_link per hook (Linux 6.6+). tc: a clsact filter with a pinned program (older kernels). */
export type AttachMode = "auto" | "tcx" | "tc";

/** Where each program runs. */
const HOOK: Record<ProgName, Hook> = { weft_from_pod: "ingress", weft_from_overlay: "ingress", weft_to_overlay: "egress" };

/** build/bpf/weft.bpf.o of this checkout (WEFT_BPF_OBJECT overrides). */
export function objectPath(): string {
  return process.env["WEFT_BPF_OBJECT"] ?? join(projectRoot(), "build", "bpf", "weft.bpf.o");
}

/**
 * The loaded data path and its pins under `<bpffs>/weft/`:
 *   maps/<name>           the maps, reused by the next agent
 *   links/<prog>_if<ifindex> tcx links: programs stay attached after the agent exits
 * (bpffs refuses dots in names.)
 *
 * Start-up (load()): every pinned map whose type and sizes still match this
 * build is reused, so routes, endpoints and counters survive a restart and
 * traffic never sees an empty table. A pinned map whose layout changed
 * cannot be reused: a new map is created, the agent fills it from its own
 * desired state (`migrated` lists them), attach() swaps the programs onto
 * it, and only then is the old pin replaced; until the swap, the running
 * programs keep using the old map, so traffic stops for no longer than the
 * atomic program replacement. Programs are replaced atomically with
 * bpf_link_update on the pinned tcx link; on kernels without tcx, with
 * `tc filter replace` of the same preference and handle (progs/<name> pins
 * the program for tc). Switching a live node between the two leaves the old
 * attachment in place until the node restarts.
 */
export class Datapath {
  readonly maps: WeftMaps;
  /** Maps created fresh although a pin existed (layout changed): the caller must refill them. */
  readonly migrated: MapName[];

  private constructor(
    private readonly obj: BpfObject,
    readonly root: string,
    fds: Record<MapName, number>,
    migrated: MapName[],
    private readonly log: Logger,
    private mode: AttachMode,
  ) {
    this.maps = new WeftMaps(fds, possibleCpus(readFileSync("/sys/devices/system/cpu/possible", "utf8")));
    this.migrated = migrated;
  }

  static load(bpffs: string, log: Logger, mode: AttachMode = "auto"): Datapath {
    ensureBpffs(bpffs);
    const root = join(bpffs, "weft");
    mkdirSync(join(root, "maps"), { recursive: true });
    mkdirSync(join(root, "links"), { recursive: true });
    const reuse: Partial<Record<MapName, number>> = {};
    const migrated: MapName[] = [];
    const carried: [MapName, [Buffer, Buffer][]][] = [];
    for (const name of MAP_NAMES) {
      const fd = bpf.get(join(root, "maps", name));
      if (fd < 0) continue;
      const info = bpf.mapInfo(fd);
      const want = MAP_LAYOUT[name];
      if (info.keySize === want.key && info.valueSize === want.value) {
        reuse[name] = fd;
      } else {
        log.warn({ map: name, pinned: { key: info.keySize, value: info.valueSize }, build: want }, "pinned map has an old layout; migrating");
        migrated.push(name);
        const entries = carryOver(name, fd, info.keySize, info.valueSize);
        if (entries) carried.push([name, entries]);
        bpf.close(fd);
      }
    }
    const obj = BpfObject.load(objectPath(), (o) => {
      for (const [name, fd] of Object.entries(reuse)) o.reuseMap(name, fd);
    });
    const fds = {} as Record<MapName, number>;
    for (const name of MAP_NAMES) {
      fds[name] = obj.mapFd(name);
      const pin = join(root, "maps", name);
      if (reuse[name] === undefined && !migrated.includes(name)) bpf.pin(fds[name], pin);
    }
    for (const [name, entries] of carried) {
      for (const [k, v] of entries) bpf.update(fds[name], k, v, `carrying ${name} over to the new layout`);
      log.info({ map: name, entries: entries.length }, "entries carried over from the old layout");
    }
    log.info({ reused: Object.keys(reuse), migrated, root }, "BPF programs loaded");
    return new Datapath(obj, root, fds, migrated, log, mode);
  }

  /** After the caller refilled migrated maps and attached: pin them in place of the old ones. */
  finishMigration(): void {
    for (const name of this.migrated) {
      const pin = join(this.root, "maps", name);
      const tmp = `${pin}_new`;
      bpf.pin(this.maps.fds[name], tmp);
      renameSync(tmp, pin);
      this.log.info({ map: name }, "migrated map pinned");
    }
  }

  private linkPin(prog: ProgName, ifindex: number): string {
    return join(this.root, "links", `${prog}_if${ifindex}`);
  }

  /**
   * Attaches `prog` at the tc hook of `ifindex` with a tcx link pinned in
   * bpffs. An existing pinned link gets the new program atomically.
   */
  attach(prog: ProgName, ifindex: number, hook: Hook): void {
    if (this.mode === "tc") {
      if (this.attachWhy === undefined) {
        this.attachWhy = "--bpf-attach tc asks for tc filters";
        this.log.warn({ attach: "tc", why: this.attachWhy }, "attaching BPF programs with tc filters, not tcx links");
      }
      return this.attachTc(prog, ifindex, hook);
    }
    try {
      this.attachTcx(prog, ifindex, hook);
    } catch (e) {
      const unsupported = e instanceof BpfError && [22, 95, 524].includes(e.errno);
      if (this.mode !== "auto" || !unsupported) throw e;
      this.attachWhy = `this kernel has no tcx links (${(e as Error).message})`;
      this.log.warn({ attach: "tc", why: this.attachWhy }, "attaching BPF programs with tc filters, not tcx links");
      this.mode = "tc";
      this.attachTc(prog, ifindex, hook);
    }
  }

  /** Why programs are attached with tc filters (undefined with tcx links). */
  private attachWhy: string | undefined;

  /** How programs are attached now: tcx links (the fast, atomic path) or tc filters, with the reason for tc. */
  attachment(): { readonly mode: "tcx" | "tc"; readonly why?: string } {
    return this.mode === "tc" ? { mode: "tc", ...(this.attachWhy ? { why: this.attachWhy } : {}) } : { mode: "tcx" };
  }

  private attachTcx(prog: ProgName, ifindex: number, hook: Hook): void {
    const fd = this.obj.progFd(prog);
    const pin = this.linkPin(prog, ifindex);
    const existing = bpf.get(pin);
    if (existing >= 0) {
      try {
        bpf.linkUpdate(existing, fd, `replacing ${prog} on ifindex ${ifindex}`);
        return;
      } catch (e) {
        // A link whose device went away cannot be updated: make a new one.
        if (!(e instanceof BpfError)) throw e;
        unlinkSync(pin);
      } finally {
        bpf.close(existing);
      }
    }
    const link = bpf.linkCreate(fd, ifindex, hook === "ingress" ? BPF_TCX_INGRESS : BPF_TCX_EGRESS, `attaching ${prog} to ifindex ${ifindex} (${hook})`);
    try {
      bpf.pin(link, pin);
    } finally {
      bpf.close(link);
    }
  }

  private readonly pinnedProgs = new Set<ProgName>();

  /** tc mode: the program pinned once per load, then a clsact filter replaced in place. */
  private attachTc(prog: ProgName, ifindex: number, hook: Hook): void {
    const pin = join(this.root, "progs", prog);
    if (!this.pinnedProgs.has(prog)) {
      mkdirSync(join(this.root, "progs"), { recursive: true });
      if (existsSync(pin)) unlinkSync(pin);
      bpf.pin(this.obj.progFd(prog), pin);
      this.pinnedProgs.add(prog);
    }
    const dev = ifname(ifindex);
    execFileSync("tc", ["qdisc", "replace", "dev", dev, "clsact"], { stdio: "pipe" });
    execFileSync("tc", ["filter", "replace", "dev", dev, hook, "pref", "1", "handle", "1", "bpf", "direct-action", "object-pinned", pin], { stdio: "pipe" });
  }

  /** tc mode: the program name (the kernel keeps 15 characters) of the bpf filter at pref 1 of a hook, if any. */
  private tcFilter(ifindex: number, hook: Hook): string | undefined {
    try {
      const out = execFileSync("tc", ["-json", "filter", "show", "dev", ifname(ifindex), hook], { encoding: "utf8", stdio: "pipe" });
      const filters = JSON.parse(out || "[]") as { pref?: number; options?: { prog?: { name?: string } } }[];
      return filters.find((f) => f.pref === 1 && f.options?.prog?.name)?.options?.prog?.name;
    } catch {
      return undefined;
    }
  }

  private tcOwns(prog: ProgName, ifindex: number): boolean {
    const name = this.tcFilter(ifindex, HOOK[prog]);
    return name !== undefined && name.length > 0 && prog.startsWith(name);
  }

  /** Detaches by removing the pinned link (the last reference), or the tc filter. */
  detach(prog: ProgName, ifindex: number): boolean {
    if (this.mode === "tc") {
      const hook = HOOK[prog];
      if (!this.tcOwns(prog, ifindex)) return false;
      execFileSync("tc", ["filter", "del", "dev", ifname(ifindex), hook, "pref", "1", "handle", "1", "bpf"], { stdio: "pipe" });
      return true;
    }
    const pin = this.linkPin(prog, ifindex);
    if (!existsSync(pin)) return false;
    unlinkSync(pin);
    return true;
  }

  /** Pinned links: [program, ifindex]. */
  links(): [ProgName, number][] {
    return readdirSync(join(this.root, "links")).flatMap((f) => {
      const m = /^(weft_[a-z_]+)_if(\d+)$/.exec(f);
      return m ? [[m[1] as ProgName, Number(m[2])] as [ProgName, number]] : [];
    });
  }

  isAttached(prog: ProgName, ifindex: number): boolean {
    if (this.mode === "tc") return this.tcOwns(prog, ifindex);
    return existsSync(this.linkPin(prog, ifindex));
  }

  /** Frees libbpf's object; pins keep programs and maps alive. */
  close(): void {
    this.obj.close();
  }
}

function ifname(ifindex: number): string {
  const links = JSON.parse(execFileSync("ip", ["-json", "link", "show"], { encoding: "utf8" })) as { ifindex: number; ifname: string }[];
  const l = links.find((x) => x.ifindex === ifindex);
  if (!l) throw new BpfError(`no interface with index ${ifindex}`, 19);
  return l.ifname;
}

/**
 * `path` must be a bpffs. The agent does not mount one itself: inside
 * `ip netns exec` (or a container) a bpffs mounted by the agent would vanish
 * with it, and the pins with it.
 */
function ensureBpffs(path: string): void {
  mkdirSync(path, { recursive: true });
  if (statfsSync(path).type === BPF_FS_MAGIC) return;
  throw new BpfError(`${path} is not a bpffs`, 22, {
    hint: `mount one (mount -t bpf bpf ${path}) or pass --bpffs <dir> where one is mounted; inside \`ip netns exec\` /sys/fs/bpf is not the host's`,
  });
}
