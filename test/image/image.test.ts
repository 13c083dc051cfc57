import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { machineArgs, podman } from "../../src/harness/podman.js";
import { ARCHIVE, ensureImage, IMAGE, VERSION } from "./image.js";

/**
 * What `npm run image` builds: its size, its annotations, a rootfs with what
 * the agent runs and nothing to build with, the build's own Node, weft's
 * files, and an OCI archive that is a whole image on its own.
 */
const LIMIT_BYTES = 250e6;
let root: string;

beforeAll(async () => {
  ensureImage();
  const m = await podman(["image", "mount", IMAGE]);
  if (m.status !== 0) throw new Error(`podman image mount ${IMAGE}: ${m.stderr}`);
  root = m.stdout.trim();
}, 900_000);
afterAll(async () => {
  await podman(["image", "unmount", IMAGE]);
});

/** Files in a rootfs that only building needs: compilers, assemblers, linkers, headers, -dev packages. */
function buildTools(rootfs: string): string[] {
  const out: string[] = [];
  for (const bin of ["gcc", "cc", "c++", "g++", "clang", "as", "ld", "make", "cpp", "tsc", "asc"]) {
    for (const dir of ["usr/bin", "usr/local/bin"]) if (existsSync(join(rootfs, dir, bin))) out.push(`/${dir}/${bin}`);
  }
  for (const dir of ["usr/include", "usr/lib/gcc", "usr/local/include"]) {
    if (existsSync(join(rootfs, dir)) && readdirSync(join(rootfs, dir)).length > 0) out.push(`/${dir}`);
  }
  const status = join(rootfs, "var/lib/dpkg/status");
  if (existsSync(status)) {
    for (const m of readFileSync(status, "utf8").matchAll(/^Package: (\S+)$/gm)) {
      if (/-dev$|^(gcc|g\+\+|clang|llvm|binutils|cpp|make)(-\d+)?$/.test(m[1]!)) out.push(`package ${m[1]}`);
    }
  }
  return out;
}

describe("the image", () => {
  it(`is at most 250 MB uncompressed`, async () => {
    const size = Number((await podman(["image", "inspect", "--format", "{{.Size}}", IMAGE])).stdout.trim());
    console.log(`${IMAGE}: ${(size / 1e6).toFixed(1)} MB uncompressed, archive ${(statSync(ARCHIVE).size / 1e6).toFixed(1)} MB`);
    expect(size).toBeGreaterThan(50e6);
    expect(size).toBeLessThanOrEqual(LIMIT_BYTES);
  });

  it("holds no compilers, headers or -dev packages (the build machine, which has them, is refused by the same check)", () => {
    expect(buildTools(root)).toEqual([]);
    expect(buildTools("/")).toEqual(expect.arrayContaining(["/usr/bin/gcc", "/usr/include"]));
  });

  it("has the runtime the agent execs and loads: ip, bridge, tc, nft, nsenter, mount, libbpf", () => {
    for (const f of ["usr/bin/ip", "usr/sbin/bridge", "usr/sbin/tc", "usr/sbin/nft", "usr/bin/nsenter", "usr/bin/mount", "usr/bin/findmnt", "usr/lib/x86_64-linux-gnu/libbpf.so.1"]) {
      expect(existsSync(join(root, f)), f).toBe(true);
    }
  });

  it("has weft's build (code, production dependencies, WASM core, native artifacts, BPF object) and nothing of its tests or benchmarks", () => {
    const w = join(root, "opt/weft");
    for (const f of ["bin/weft.js", "dist/src/cli/main.js", "dist/asm/abi.js", "build/weft-core.wasm", "build/native/libweft_shim.so",
      "build/native/weft_poll.node", "build/native/weft-cni", "build/bpf/weft.bpf.o", "node_modules/etcd3", "node_modules/koffi"]) {
      expect(existsSync(join(w, f)), f).toBe(true);
    }
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { devDependencies: Record<string, string> };
    expect(Object.keys(pkg.devDependencies).filter((d) => existsSync(join(w, "node_modules", d)))).toEqual([]);
    for (const f of ["dist/bench", "test", "src", "asm", "native", "bpf", "build/bpf/vmlinux.h"]) expect(existsSync(join(w, f)), f).toBe(false);
  });

  it("runs the build's own Node, with weft as its entrypoint", async () => {
    const cfg = JSON.parse((await podman(["image", "inspect", "--format", "{{json .Config}}", IMAGE])).stdout) as { Entrypoint: string[] };
    expect(cfg.Entrypoint).toEqual(["weft"]);
    const run = (args: string[]): string => execFileSync("podman", ["run", "--rm", "--network", "none", ...machineArgs(), ...args], { encoding: "utf8" }).trim();
    expect(run([IMAGE, "--version"])).toBe(VERSION);
    expect(run(["--entrypoint", "node", IMAGE, "--version"])).toBe(process.version);
  });

  it("carries OCI annotations for version, revision and source, in the archive too, which loads into an empty storage as the same image", async () => {
    const revision = execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8" }).trim();
    const want = { "org.opencontainers.image.version": VERSION, "org.opencontainers.image.revision": revision, "org.opencontainers.image.source": expect.stringMatching(/^(https?|git|ssh|file):\/\/\S+$/) };
    const local = JSON.parse((await podman(["image", "inspect", "--format", "{{json .Annotations}}", IMAGE])).stdout) as Record<string, string>;
    expect(local).toMatchObject(want);
    // The archive on its own: index -> manifest (annotations) -> config.
    const tar = (member: string): string => execFileSync("tar", ["-xOf", ARCHIVE, member], { encoding: "utf8", maxBuffer: 1 << 20 });
    const index = JSON.parse(tar("index.json")) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(tar(`blobs/sha256/${index.manifests[0]!.digest.slice(7)}`)) as { annotations: Record<string, string>; layers: unknown[] };
    expect(manifest.annotations).toMatchObject(want);
    expect(manifest.layers).toHaveLength(3);
    const store = mkdtempSync(join(tmpdir(), "weft-image-store-"));
    try {
      const p = ["--root", join(store, "root"), "--runroot", join(store, "run"), "--storage-driver", "vfs"];
      const load = await podman([...p, "load", "-i", ARCHIVE], 300_000);
      expect(load.status, load.stderr).toBe(0);
      const id = (await podman([...p, "image", "inspect", "--format", "{{.Id}}", IMAGE])).stdout.trim();
      expect(id).toBe((await podman(["image", "inspect", "--format", "{{.Id}}", IMAGE])).stdout.trim());
      await podman([...p, "rmi", "-a", "-f"]);
    } finally {
      rmSync(store, { recursive: true, force: true });
    }
  }, 300_000);
});
