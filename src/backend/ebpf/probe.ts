import { existsSync, readFileSync, statfsSync } from "node:fs";
import { objectPath } from "./loader.js";

const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;
const CAP_BPF = 39;
const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * Can this host run the ebpf backend? Every reason it cannot, in words an
 * operator can act on (empty = yes, as far as can be known without loading;
 * the load itself, with the verifier, is the last check).
 */
export function ebpfObstacles(bpffs: string): string[] {
  const out: string[] = [];
  const caps = effectiveCaps();
  if (!has(caps, CAP_NET_ADMIN)) out.push("CAP_NET_ADMIN is missing (needed to attach tc programs)");
  if (!has(caps, CAP_BPF) && !has(caps, CAP_SYS_ADMIN)) out.push("neither CAP_BPF nor CAP_SYS_ADMIN is held (needed to load BPF programs)");
  if (!existsSync(objectPath())) out.push(`${objectPath()} is missing (run npm run build)`);
  let isBpffs = false;
  try {
    isBpffs = statfsSync(bpffs).type === BPF_FS_MAGIC;
  } catch {
    // missing directory: same answer
  }
  if (!isBpffs) out.push(`${bpffs} is not a bpffs (mount one, or pass --bpffs)`);
  if (!existsSync("/usr/lib/x86_64-linux-gnu/libbpf.so.1") && !existsSync("/usr/lib/libbpf.so.1") && !existsSync("/lib/x86_64-linux-gnu/libbpf.so.1")) {
    out.push("libbpf.so.1 is not installed (Debian package libbpf1)");
  }
  return out;
}

function effectiveCaps(): bigint {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    return m?.[1] ? BigInt(`0x${m[1]}`) : 0n;
  } catch {
    return 0n;
  }
}

function has(caps: bigint, cap: number): boolean {
  return (caps & (1n << BigInt(cap))) !== 0n;
}
