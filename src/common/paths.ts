import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/**
 * The weft checkout or package directory (the one whose package.json is
 * named "weft"), found from this file: the same from src/ (tests) and from
 * dist/src/ (the built CLI).
 */
export function projectRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "weft") {
      root = dir;
      return dir;
    }
    dir = dirname(dir);
  }
  throw new Error("cannot find weft's package.json above " + fileURLToPath(import.meta.url));
}
