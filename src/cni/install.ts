import { spawnSync } from "node:child_process";
import { copyFileSync, chmodSync, existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../common/errors.js";
import { projectRoot } from "../common/paths.js";
import { writeFileAtomic } from "../common/fs-atomic.js";
import { parseIpamSpec } from "../ipam/config.js";
import { IpamError } from "../ipam/errors.js";
import { IFNAME_RULE, ifnameProblem, show } from "./names.js";

export interface InstallOptions {
  readonly binDir: string;
  readonly confDir: string;
  readonly networkName: string;
  readonly confName: string;
  readonly bridge: string;
  readonly controlSocket: string | undefined;
  /** The ipam section as JSON text (pools, exclude, reservations, routes). */
  readonly ipam: string | undefined;
  readonly force: boolean;
  /** Chain the standard portmap plugin for hostPort (default true; left out, with a warning, when no portmap binary is found). */
  readonly portmap?: boolean | undefined;
  /** Told what install-cni left out and why. */
  readonly warn?: ((msg: string) => void) | undefined;
}

/** The CNI versions weft's conflist may be written for, newest first. */
const CONFLIST_VERSIONS = ["1.1.0", "1.0.0"] as const;

/** Where install-cni looks for the standard portmap plugin besides --bin-dir: Debian's containernetworking-plugins. */
export const PORTMAP_DIRS = ["/usr/lib/cni", "/opt/cni/bin"];

/**
 * The CNI versions the plugin binary at `path` supports (its VERSION
 * answer), or undefined when it is not there or does not answer.
 */
export function pluginVersions(path: string): string[] | undefined {
  if (!existsSync(path)) return undefined;
  const r = spawnSync(path, [], { env: { CNI_COMMAND: "VERSION", PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, input: '{"cniVersion":"1.0.0"}', timeout: 10_000, encoding: "utf8" });
  try {
    const v = (JSON.parse(r.stdout) as { supportedVersions?: unknown }).supportedVersions;
    return Array.isArray(v) && v.every((x) => typeof x === "string") ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/** The portmap binary a runtime would find: in `binDir`, else in PORTMAP_DIRS; undefined when none. */
export function findPortmap(binDir: string): string | undefined {
  return [binDir, ...PORTMAP_DIRS].map((d) => join(d, "portmap")).find((p) => existsSync(p));
}

/** The built plugin binary (native/weft_cni.c). */
export function pluginBinary(): string {
  return join(projectRoot(), "build", "native", "weft-cni");
}

/**
 * The conflist `weft install-cni` writes: the weft plugin, then (unless
 * `portmap` is false) the standard portmap plugin for hostPort, as
 * flannel's conflist chains it. A runtime sends every plugin of the list the
 * conflist's cniVersion, so with `portmapVersions` (what the installed
 * portmap answers to VERSION) the conflist is written for the newest version
 * both support: Debian's portmap 1.1.1 stops at 1.0.0 (no GC or STATUS).
 */
export function conflist(o: Pick<InstallOptions, "networkName" | "bridge" | "controlSocket" | "ipam" | "portmap"> & { readonly portmapVersions?: readonly string[] | undefined }): Record<string, unknown> {
  // What the plugin would refuse at every ADD is refused here, once.
  const bridgeWhy = ifnameProblem(o.bridge);
  if (bridgeWhy) throw new ConfigError(`--bridge ${show(o.bridge)} is not a usable interface name: ${bridgeWhy}`, { hint: IFNAME_RULE });
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,255}$/.test(o.networkName)) {
    throw new ConfigError(`--network-name ${show(o.networkName)} is not a network name`, { hint: "1-256 characters: a letter or digit, then letters, digits, _ . -" });
  }
  let ipam: Record<string, unknown> | undefined;
  if (o.ipam !== undefined) {
    try {
      ipam = JSON.parse(o.ipam) as Record<string, unknown>;
      parseIpamSpec(ipam);
    } catch (e) {
      throw new ConfigError(`--ipam: ${e instanceof IpamError ? e.message : `not JSON: ${(e as Error).message}`}`, {
        hint: `e.g. --ipam '{"exclude":["+2-+9"]}'`,
      });
    }
  }
  const portmap = o.portmap !== false;
  const known = portmap ? o.portmapVersions : undefined;
  const versions = CONFLIST_VERSIONS.filter((v) => !known || known.includes(v));
  if (versions.length === 0) {
    throw new ConfigError(`the portmap plugin supports CNI ${show((known ?? []).join(", "), 120)}, none of ${CONFLIST_VERSIONS.join(", ")}`, {
      hint: "install a newer containernetworking-plugins, or pass --no-portmap (hostPort then does nothing)",
    });
  }
  return {
    cniVersion: versions[0],
    cniVersions: [...versions].reverse(),
    name: o.networkName,
    plugins: [{
      type: "weft",
      bridge: o.bridge,
      ...(o.controlSocket ? { controlSocket: o.controlSocket } : {}),
      capabilities: { ips: true },
      ...(ipam ? { ipam } : {}),
    }, ...(portmap ? [{ type: "portmap", capabilities: { portMappings: true }, snat: true }] : [])],
  };
}

/**
 * Installs the plugin binary as `weft` and `weft-ipam` (each written beside
 * its target and renamed over it, so a runtime exec'ing the old one is never
 * disturbed) and the conflist. A different existing conflist is kept unless
 * `force`. Returns what was written.
 */
export function installCni(o: InstallOptions): string[] {
  const src = pluginBinary();
  if (!existsSync(src)) throw new ConfigError(`the plugin binary ${src} is not built`, { hint: "run `npm run build` (or `npm run setup`)" });
  const written: string[] = [];
  mkdirSync(o.binDir, { recursive: true });
  for (const name of ["weft", "weft-ipam"]) {
    const dst = join(o.binDir, name);
    const tmp = join(o.binDir, `.${name}.${process.pid}.tmp`);
    copyFileSync(src, tmp);
    chmodSync(tmp, 0o755);
    renameSync(tmp, dst);
    written.push(dst);
  }
  let portmapVersions: string[] | undefined;
  let portmap = o.portmap !== false;
  if (portmap) {
    const pm = findPortmap(o.binDir);
    if (pm) portmapVersions = pluginVersions(pm);
    else {
      // Chaining a plugin the runtime cannot find would fail every ADD: without it, pods work and hostPort does not.
      portmap = false;
      o.warn?.(`no portmap plugin in ${[o.binDir, ...PORTMAP_DIRS].join(", ")}: the conflist leaves it out, so hostPort does nothing; ` +
        "install the standard plugins (Debian: apt-get install containernetworking-plugins) and run install-cni again");
    }
  }
  const text = `${JSON.stringify(conflist({ ...o, portmap, portmapVersions }), null, 2)}\n`;
  const confPath = join(o.confDir, o.confName);
  if (existsSync(confPath) && readFileSync(confPath, "utf8") !== text && !o.force) {
    throw new ConfigError(`${confPath} exists with other contents; not overwriting it`, { hint: "compare it with `weft install-cni --print`, then pass --force to replace it" });
  }
  writeFileAtomic(confPath, text, 0o644);
  written.push(confPath);
  return written;
}
