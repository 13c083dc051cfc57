import { readFileSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../../src/common/paths.js";
import { BpfObject, bpf } from "../../src/backend/ebpf/libbpf.js";
import { MAP_NAMES, WeftMaps, possibleCpus, type MapName, type Reason } from "../../src/backend/ebpf/maps.js";

/**
 * The tc programs on crafted packets, with BPF_PROG_TEST_RUN: the kernel
 * runs the verified program on our bytes and returns its verdict and the
 * packet as it left. No device is touched (ifindex 1 is loopback, which
 * every namespace has). The test object (bpf/test/weft_test.bpf.c) shares
 * the main object's maps.
 */
export const TC_ACT_OK = 0, TC_ACT_SHOT = 2, TC_ACT_REDIRECT = 7;

export interface RunResult {
  readonly verdict: number;
  readonly out: Buffer;
  /** Counter changes by reason (packets). */
  readonly delta: Partial<Record<Reason, bigint>>;
}

/** What test_from_pod read back with bpf_skb_get_tunnel_key after the program ran. */
export interface TunnelSeen {
  /** Return codes without / with BPF_F_TUNINFO_IPV6 (0: a key of that family is set). */
  readonly rc4: number;
  readonly rc6: number;
  readonly vni: number;
  /**
   * The destination the program set, read back: the helper reports a key's
   * destination as local_ipv4 / local_ipv6 (it reads keys as received, where
   * the destination is the local end), host order / the 16 bytes.
   */
  readonly dst4: number;
  readonly dst6: Buffer;
  readonly ttl: number;
  /** tunnel_flags as the legacy big-endian TUNNEL_* bits (TUNNEL_CSUM = 1). */
  readonly flags: number;
}

export class ProgramBench {
  readonly maps: WeftMaps;
  private readonly prog: Record<string, number> = {};

  private constructor(private readonly main: BpfObject, private readonly test: BpfObject) {
    const fds = Object.fromEntries(MAP_NAMES.map((n) => [n, main.mapFd(n)])) as Record<MapName, number>;
    for (const p of ["weft_from_pod", "weft_from_overlay", "weft_to_overlay"]) this.prog[p] = main.progFd(p);
    for (const p of ["test_overlay", "test_overlay6", "test_from_pod"]) this.prog[p] = test.progFd(p);
    this.maps = new WeftMaps(fds, possibleCpus(readFileSync("/sys/devices/system/cpu/possible", "utf8")));
  }

  static load(): ProgramBench {
    const dir = join(projectRoot(), "build", "bpf");
    const main = BpfObject.load(join(dir, "weft.bpf.o"));
    const test = BpfObject.load(join(dir, "weft_test.bpf.o"), (o) => MAP_NAMES.forEach((n) => o.reuseMap(n, main.mapFd(n))));
    return new ProgramBench(main, test);
  }

  progFd(name: string): number {
    const fd = this.prog[name];
    if (fd === undefined) throw new Error(`no program ${name}`);
    return fd;
  }

  run(name: string, pkt: Buffer, ctx: Buffer | null = skb(1)): RunResult {
    const before = this.maps.counters();
    const r = bpf.testRun(this.progFd(name), pkt, ctx);
    const after = this.maps.counters();
    const delta: Partial<Record<Reason, bigint>> = {};
    for (const k of Object.keys(after) as Reason[]) {
      const d = after[k].packets - before[k].packets;
      if (d !== 0n) delta[k] = d;
    }
    return { verdict: r.retval, out: r.data, delta };
  }

  /** The tunnel key test_from_pod found on the skb after its last run. */
  tunnelSeen(): TunnelSeen {
    const v = Buffer.alloc(52);
    if (!bpf.lookup(this.test.mapFd("weft_test_tunnel"), Buffer.alloc(4), v)) throw new Error("weft_test_tunnel is empty");
    return {
      rc4: v.readInt32LE(0), rc6: v.readInt32LE(4), vni: v.readUInt32LE(8), dst4: v.readUInt32LE(36),
      dst6: Buffer.from(v.subarray(36, 52)), ttl: v.readUInt8(29), flags: v.readUInt16BE(30),
    };
  }

  close(): void {
    this.test.close();
    this.main.close();
  }
}

/** struct __sk_buff up to cb[]: ifindex at 40, cb[0..4] at 48..68. */
export function skb(ifindex: number, ...cb: number[]): Buffer {
  const b = Buffer.alloc(72);
  b.writeUInt32LE(ifindex, 40);
  cb.slice(0, 5).forEach((v, i) => b.writeUInt32LE(v >>> 0, 48 + 4 * i));
  return b;
}

/** Bytes as the program reads a network-order u32 from cb[] (a little-endian load). */
export function cbWord(bytes: Uint8Array, off = 0): number {
  return Buffer.from(bytes.subarray(off, off + 4)).readUInt32LE(0);
}
