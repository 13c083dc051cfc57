import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** The image `npm run image` builds from this checkout, and its OCI archive. */
export const VERSION = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;
export const IMAGE = `localhost/weft:${VERSION}`;
export const ARCHIVE = `build/image/weft-${VERSION}.oci.tar`;
export const MANIFEST = "deploy/kubernetes/weft-agent.yaml";

let built = false;

/**
 * Builds the image unless the one in the local storage was built from exactly
 * this build (`npm run image -- --if-changed` compares a hash of every input),
 * so image tests always run the code they are next to. Once per test process.
 */
export function ensureImage(): void {
  if (built) return;
  const t0 = Date.now();
  const r = spawnSync("bash", ["scripts/image.sh", "--if-changed"], { encoding: "utf8", timeout: 900_000 });
  if (r.status !== 0) throw new Error(`npm run image failed (exit ${r.status}):\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  const took = ((Date.now() - t0) / 1000).toFixed(1);
  if (!/is up to date/.test(r.stdout)) console.log(`image built in ${took} s:\n${r.stdout.split("\n").filter((l) => !/^(Chrooting|Setting up|removed|rmdir)/.test(l)).join("\n")}`);
  built = true;
}
