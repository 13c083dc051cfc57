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
}

/** The built plugin binary (native/weft_cni.c). */
export function pluginBinary(): string {
  return join(projectRoot(), "build", "native", "weft-cni");
}

/** The conflist `weft install-cni` writes. */
export function conflist(o: Pick<InstallOptions, "networkName" | "bridge" | "controlSocket" | "ipam">): Record<string, unknown> {
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
  return {
    cniVersion: "1.1.0",
    cniVersions: ["1.0.0", "1.1.0"],
    name: o.networkName,
    plugins: [{
      type: "weft",
      bridge: o.bridge,
      ...(o.controlSocket ? { controlSocket: o.controlSocket } : {}),
      capabilities: { ips: true },
      ...(ipam ? { ipam } : {}),
    }],
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
  const text = `${JSON.stringify(conflist(o), null, 2)}\n`;
  const confPath = join(o.confDir, o.confName);
  if (existsSync(confPath) && readFileSync(confPath, "utf8") !== text && !o.force) {
    throw new ConfigError(`${confPath} exists with other contents; not overwriting it`, { hint: "compare it with `weft install-cni --print`, then pass --force to replace it" });
  }
  writeFileAtomic(confPath, text, 0o644);
  written.push(confPath);
  return written;
}
