import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** The image `npm run image` builds from this checkout, and its OCI archive. */
export const VERSION = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;
export const IMAGE = `localhost/weft:${VERSION}`;
export const ARCHIVE = `build/image/weft-${VERSION}.oci.tar`;
export const MANIFEST = "deploy/kubernetes/weft-agent.yaml";

let built: string | undefined;

/**
 * Builds the image unless the one in the local storage was built from exactly
 * this build (`npm run image -- --if-changed` compares a hash of every input),
 * so image tests always run the code they are next to. Once per test process.
 * Returns the image's ID: tests run that, not the tag, which another checkout's
 * build on the same machine may move.
 */
export function ensureImage(): string {
  if (built) return built;
  const t0 = Date.now();
  const r = spawnSync("bash", ["scripts/image.sh", "--if-changed"], { encoding: "utf8", timeout: 900_000 });
  if (r.status !== 0) throw new Error(`npm run image failed (exit ${r.status}):\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  const took = ((Date.now() - t0) / 1000).toFixed(1);
  if (!/is up to date/.test(r.stdout)) console.log(`image built in ${took} s:\n${r.stdout.split("\n").filter((l) => !/^(Chrooting|Setting up|removed|rmdir)/.test(l)).join("\n")}`);
  const id = spawnSync("podman", ["image", "inspect", "--format", "{{.Id}}", IMAGE], { encoding: "utf8" }).stdout.trim();
  if (!id) throw new Error(`${IMAGE} is not in the local storage after npm run image`);
  built = id;
  return id;
}
