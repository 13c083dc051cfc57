import { existsSync } from "node:fs";
import { join } from "node:path";
import koffi, { type LibraryHandle } from "koffi";
import { WeftError } from "../common/errors.js";
import { projectRoot } from "../common/paths.js";

/**
 * The one place weft's own native code is found and loaded: the shared
 * library build/native/libweft_shim.so (native/weft_shim.c and weft_units.c
 * for the tun data path, native/weft_dns.c for the DNS batches) and the poll
 * addon weft_poll.node. Each user binds its own functions from the library;
 * the library is loaded once per thread.
 */

/** The native code is missing (not built) or cannot be loaded. */
export class NativeError extends WeftError {
  readonly code = "WEFT_NATIVE_MISSING";
}

/** build/native of this checkout. */
export function nativeDir(): string {
  return join(projectRoot(), "build", "native");
}

export function nativeLibraryPath(): string {
  return join(nativeDir(), "libweft_shim.so");
}

/** The N-API addon that turns a file descriptor's readiness into callbacks on the event loop. */
export function pollAddonPath(): string {
  return join(nativeDir(), "weft_poll.node");
}

let lib: LibraryHandle | undefined;

/** The shared library, loaded on first use. Throws NativeError saying how to build it. */
export function nativeLibrary(): LibraryHandle {
  if (lib) return lib;
  const path = nativeLibraryPath();
  if (!existsSync(path)) throw new NativeError(`${path} is missing`, { hint: "run `npm run build`" });
  try {
    lib = koffi.load(path);
  } catch (e) {
    throw new NativeError(`${path} cannot be loaded: ${(e as Error).message}`, { hint: "run `npm run build` again", cause: e });
  }
  return lib;
}
