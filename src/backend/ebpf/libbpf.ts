import koffi, { type LibraryHandle, type TypeObject } from "koffi";
import { WeftError } from "../../common/errors.js";

/**
 * libbpf (Debian's libbpf1) through koffi, in-process: load objects, pin,
 * read and write maps, attach with tcx links, run programs on crafted
 * packets. One concept: the C library's surface, with errno turned into
 * BpfError. Struct layouts follow libbpf 1.1's headers.
 */
export class BpfError extends WeftError {
  readonly code = "WEFT_BPF_FAILED";
  constructor(what: string, readonly errno: number, opts: { hint?: string; detail?: string } = {}) {
    super(`${what}: ${errnoText(errno)}${opts.detail ? `\n${opts.detail}` : ""}`, opts.hint === undefined ? {} : { hint: opts.hint });
  }
}

const ERRNO: Record<number, string> = {
  1: "EPERM (not permitted: needs CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN)", 2: "ENOENT (no such object)",
  7: "E2BIG", 9: "EBADF", 12: "ENOMEM", 13: "EACCES (the verifier refused the program)", 16: "EBUSY",
  17: "EEXIST", 19: "ENODEV (no such device)", 22: "EINVAL (invalid argument)", 28: "ENOSPC (map full or log buffer too small)",
  95: "EOPNOTSUPP (not supported by this kernel)", 524: "ENOTSUPP (not supported by this kernel)",
};

function errnoText(e: number): string {
  return ERRNO[e] ?? `errno ${e}`;
}

/** Attach types (enum bpf_attach_type, from the running kernel's BTF). */
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
/** bpf_map_update_elem flags. */
export const BPF_ANY = 0;

export interface TestRunResult {
  readonly retval: number;
  readonly data: Buffer;
  /** Average time per repetition, ns. */
  readonly durationNs: number;
}

interface Lib {
  open(path: string, opts: object): unknown;
  load(obj: unknown): number;
  close(obj: unknown): void;
  findProg(obj: unknown, name: string): unknown;
  progFd(prog: unknown): number;
  findMap(obj: unknown, name: string): unknown;
  mapFd(map: unknown): number;
  reuseFd(map: unknown, fd: number): number;
  objPin(fd: number, path: string): number;
  objGet(path: string): number;
  update(fd: number, key: Buffer, value: Buffer, flags: number): number;
  lookup(fd: number, key: Buffer, value: Buffer): number;
  del(fd: number, key: Buffer): number;
  nextKey(fd: number, key: Buffer | null, next: Buffer): number;
  linkCreate(progFd: number, target: number, type: number, opts: null): number;
  linkUpdate(linkFd: number, progFd: number, opts: null): number;
  testRun(fd: number, opts: Record<string, unknown>): number;
  objInfo(fd: number, info: Buffer, len: Buffer): number;
  closeFd(fd: number): number;
}

let lib: Lib | undefined;
let OpenOpts: TypeObject;
let TestRunOpts: TypeObject;

function bind(): Lib {
  if (lib) return lib;
  let l: LibraryHandle;
  try {
    l = koffi.load("libbpf.so.1");
  } catch (e) {
    throw new BpfError(`loading libbpf.so.1 failed (${(e as Error).message})`, 0, { hint: "install Debian's libbpf1 (npm run setup does)" });
  }
  const c = koffi.load("libc.so.6");
  OpenOpts = koffi.struct("weft_bpf_object_open_opts", {
    sz: "size_t", object_name: "const char *", relaxed_maps: "bool", pin_root_path: "const char *", _pad: "uint32_t",
    kconfig: "const char *", btf_custom_path: "const char *", kernel_log_buf: "void *", kernel_log_size: "size_t", kernel_log_level: "uint32_t",
  });
  TestRunOpts = koffi.struct("weft_bpf_test_run_opts", {
    sz: "size_t", data_in: "void *", data_out: "void *", data_size_in: "uint32_t", data_size_out: "uint32_t",
    ctx_in: "void *", ctx_out: "void *", ctx_size_in: "uint32_t", ctx_size_out: "uint32_t",
    retval: "uint32_t", repeat: "int", duration: "uint32_t", flags: "uint32_t", cpu: "uint32_t", batch_size: "uint32_t",
  });
  lib = {
    open: l.func("void *bpf_object__open_file(const char *path, weft_bpf_object_open_opts *opts)"),
    load: l.func("int bpf_object__load(void *obj)"),
    close: l.func("void bpf_object__close(void *obj)"),
    findProg: l.func("void *bpf_object__find_program_by_name(void *obj, const char *name)"),
    progFd: l.func("int bpf_program__fd(void *prog)"),
    findMap: l.func("void *bpf_object__find_map_by_name(void *obj, const char *name)"),
    mapFd: l.func("int bpf_map__fd(void *map)"),
    reuseFd: l.func("int bpf_map__reuse_fd(void *map, int fd)"),
    objPin: l.func("int bpf_obj_pin(int fd, const char *path)"),
    objGet: l.func("int bpf_obj_get(const char *path)"),
    update: l.func("int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)"),
    lookup: l.func("int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)"),
    del: l.func("int bpf_map_delete_elem(int fd, const void *key)"),
    nextKey: l.func("int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next)"),
    linkCreate: l.func("int bpf_link_create(int prog_fd, int target_fd, int type, void *opts)"),
    linkUpdate: l.func("int bpf_link_update(int link_fd, int new_prog_fd, void *opts)"),
    testRun: l.func("int bpf_prog_test_run_opts(int fd, _Inout_ weft_bpf_test_run_opts *opts)"),
    objInfo: l.func("int bpf_obj_get_info_by_fd(int fd, _Out_ void *info, _Inout_ void *len)"),
    closeFd: c.func("int close(int fd)"),
  };
  return lib;
}

/** libbpf 1.x returns -errno from every call that returns an int. */
function check(rc: number, what: string, hint?: string): number {
  if (rc >= 0) return rc;
  throw new BpfError(what, -rc, hint === undefined ? {} : { hint });
}

/** A loaded BPF object (programs + maps). */
export class BpfObject {
  private constructor(private readonly obj: unknown, readonly path: string) {}

  /**
   * Opens `path` and lets `prepare` reuse pinned maps (by name) before the
   * kernel loads it. A verifier rejection becomes a BpfError carrying the
   * verifier's log.
   */
  static load(path: string, prepare: (obj: BpfObject) => void = () => undefined): BpfObject {
    const l = bind();
    const log = Buffer.alloc(4 << 20);
    const obj = l.open(path, {
      sz: koffi.sizeof(OpenOpts), object_name: null, relaxed_maps: false, pin_root_path: null, _pad: 0,
      kconfig: null, btf_custom_path: null, kernel_log_buf: log, kernel_log_size: log.length, kernel_log_level: 0,
    });
    if (!obj) throw new BpfError(`opening ${path}`, koffi.errno(), { hint: "run `npm run build` (it compiles bpf/)" });
    const o = new BpfObject(obj, path);
    try {
      prepare(o);
      const rc = l.load(obj);
      if (rc < 0) {
        const text = log.toString("utf8", 0, Math.max(0, log.indexOf(0))).trim();
        throw new BpfError(`loading ${path} into the kernel`, -rc, {
          detail: text ? `verifier log (last lines):\n${text.split("\n").slice(-40).join("\n")}` : undefined,
        });
      }
      return o;
    } catch (e) {
      l.close(obj);
      throw e;
    }
  }

  progFd(name: string): number {
    const l = bind();
    const p = l.findProg(this.obj, name);
    if (!p) throw new BpfError(`${this.path} has no program ${name}`, 2);
    return check(l.progFd(p), `fd of program ${name}`);
  }

  mapFd(name: string): number {
    const l = bind();
    const m = l.findMap(this.obj, name);
    if (!m) throw new BpfError(`${this.path} has no map ${name}`, 2);
    return check(l.mapFd(m), `fd of map ${name}`);
  }

  /** Before load: use an existing map (a pinned one) instead of creating it. */
  reuseMap(name: string, fd: number): void {
    const l = bind();
    const m = l.findMap(this.obj, name);
    if (!m) throw new BpfError(`${this.path} has no map ${name}`, 2);
    check(l.reuseFd(m, fd), `reusing the pinned map ${name}`);
  }

  /** Frees libbpf's object; programs and maps live on while something (a link, a pin) holds them. */
  close(): void {
    bind().close(this.obj);
  }
}

export const bpf = {
  pin(fd: number, path: string): void {
    check(bind().objPin(fd, path), `pinning at ${path}`);
  },
  /** The fd of a pinned object, or -1 when nothing is pinned there. */
  get(path: string): number {
    const fd = bind().objGet(path);
    if (fd >= 0) return fd;
    if (fd === -2) return -1; // ENOENT
    throw new BpfError(`opening the pin ${path}`, -fd);
  },
  update(fd: number, key: Buffer, value: Buffer, what: string): void {
    check(bind().update(fd, key, value, BPF_ANY), what);
  },
  /** True when found (value filled). */
  lookup(fd: number, key: Buffer, value: Buffer): boolean {
    const rc = bind().lookup(fd, key, value);
    if (rc >= 0) return true;
    if (rc === -2) return false;
    throw new BpfError("map lookup", -rc);
  },
  /** True when it existed. */
  delete(fd: number, key: Buffer): boolean {
    const rc = bind().del(fd, key);
    if (rc >= 0) return true;
    if (rc === -2) return false;
    throw new BpfError("map delete", -rc);
  },
  /** Every key of a map (keySize bytes each). */
  keys(fd: number, keySize: number): Buffer[] {
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(keySize);
      const rc = bind().nextKey(fd, prev, next);
      if (rc < 0) break;
      out.push(next);
      prev = next;
    }
    return out;
  },
  linkCreate(progFd: number, ifindex: number, type: number, what: string): number {
    return check(bind().linkCreate(progFd, ifindex, type, null), what, "tcx needs Linux 6.6 or later");
  },
  linkUpdate(linkFd: number, progFd: number, what: string): void {
    check(bind().linkUpdate(linkFd, progFd, null), what);
  },
  /** BPF_PROG_TEST_RUN on one packet; `ctx` is a struct __sk_buff image (or null). */
  testRun(progFd: number, packet: Buffer, ctx: Buffer | null = null, repeat = 1): TestRunResult {
    bind();
    const out = Buffer.alloc(packet.length + 256);
    const opts: Record<string, unknown> = {
      sz: koffi.sizeof(TestRunOpts), data_in: packet, data_out: out, data_size_in: packet.length, data_size_out: out.length,
      ctx_in: ctx, ctx_out: null, ctx_size_in: ctx?.length ?? 0, ctx_size_out: 0,
      retval: 0, repeat, duration: 0, flags: 0, cpu: 0, batch_size: 0,
    };
    check(bind().testRun(progFd, opts), "BPF_PROG_TEST_RUN");
    return { retval: opts["retval"] as number, data: out.subarray(0, opts["data_size_out"] as number), durationNs: opts["duration"] as number };
  },
  /** struct bpf_map_info's type, key_size, value_size, max_entries, map_flags. */
  mapInfo(fd: number): { type: number; keySize: number; valueSize: number; maxEntries: number; flags: number } {
    const info = Buffer.alloc(128);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(info.length);
    check(bind().objInfo(fd, info, len), "reading map info");
    return { type: info.readUInt32LE(0), keySize: info.readUInt32LE(8), valueSize: info.readUInt32LE(12), maxEntries: info.readUInt32LE(16), flags: info.readUInt32LE(20) };
  },
  close(fd: number): void {
    if (fd >= 0) bind().closeFd(fd);
  },
};
