import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../src/common/paths.js";

/**
 * The layers of src/, low to high. A file imports only from its own folder
 * or from a lower layer; backends do not import one another; only harness,
 * cli, bench and tests import the harness. This walks every import.
 */
const LAYERS: readonly (readonly string[])[] = [
  ["common", "client"],
  ["dataplane", "subnet", "registry", "native"],
  ["routes", "dns", "ipam", "discovery"],
  ["backend"],
  ["cni"],
  ["agent"],
  ["harness"],
  ["cli"],
];

const root = projectRoot();
const src = join(root, "src");

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** Relative imports of a file, resolved to paths under the project. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']\s*\)/g)) {
    const spec = m[1] ?? m[2];
    if (spec) out.push(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
  }
  return out;
}

/** The top folder under src/ ("backend"), and for backends the backend ("backend/vxlan"). */
function unit(path: string): { top: string; sub: string } {
  const parts = relative(src, path).split("/");
  const top = parts.length > 1 ? (parts[0] ?? "") : "";
  const sub = top === "backend" && parts.length > 2 ? `backend/${parts[1]}` : top;
  return { top, sub };
}

function layerOf(top: string): number {
  return LAYERS.findIndex((l) => l.includes(top));
}

describe("layers", () => {
  it("every folder of src/ has a layer", () => {
    const tops = readdirSync(src).filter((f) => statSync(join(src, f)).isDirectory());
    expect(tops.filter((t) => layerOf(t) < 0)).toEqual([]);
  });

  it("a file imports only from its own folder or from lower layers; backends do not import one another", () => {
    const bad: string[] = [];
    for (const f of files(src)) {
      const from = unit(f);
      for (const target of importsOf(f)) {
        if (target === join(root, "asm", "abi.ts")) continue; // the WASM core's ABI, shared with TypeScript: below every layer
        if (!target.startsWith(src)) {
          bad.push(`${relative(root, f)} imports ${relative(root, target)} (outside src/)`);
          continue;
        }
        const to = unit(target);
        if (to.top === from.top) {
          if (from.top === "backend" && from.sub !== to.sub && from.sub !== "backend" && to.sub !== "backend") {
            bad.push(`${relative(root, f)} imports another backend: ${relative(root, target)}`);
          }
          continue;
        }
        if (layerOf(to.top) >= layerOf(from.top)) bad.push(`${relative(root, f)} (${from.top}) imports ${relative(root, target)} (${to.top})`);
      }
    }
    expect(bad).toEqual([]);
  });

  it("only harness, cli, bench and tests import the harness", () => {
    const bench = join(root, "bench");
    const importers = [...files(src), ...files(bench)].filter((f) => importsOf(f).some((t) => t.startsWith(join(src, "harness"))));
    const allowed = (f: string): boolean => f.startsWith(join(src, "harness")) || f.startsWith(join(src, "cli")) || f.startsWith(bench);
    expect(importers.filter((f) => !allowed(f)).map((f) => relative(root, f))).toEqual([]);
  });

  it("the walker sees imports (a guard against a test that cannot fail)", () => {
    const agent = importsOf(join(src, "agent", "agent.ts")).map((p) => relative(root, p));
    expect(agent).toContain("src/routes/table.ts");
    expect(agent).toContain("src/subnet/registry.ts"); // a dynamic import()
  });
});
