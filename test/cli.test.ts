import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { capabilityTable } from "../src/cli/capabilities.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const weft = (...args: string[]) => spawnSync(process.execPath, ["bin/weft.js", ...args], { cwd: root, encoding: "utf8" });

describe("README and CLI", () => {
  it("the README's status table is the CLI's capability table", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    const m = /<!-- status:begin -->\n([\s\S]*?)\n<!-- status:end -->/.exec(readme);
    expect(m?.[1]).toBe(capabilityTable());
  });

  it("the README starts with the two set-up commands", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    const block = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? "";
    expect(block.split("\n").filter(Boolean).map((l) => l.split(/\s+#/)[0]?.trim())).toEqual(["npm run setup", "npm test"]);
  });

  it("--help lists every subcommand", () => {
    const r = weft("--help");
    expect(r.status).toBe(0);
    for (const c of ["agent", "status", "demo", "bench", "network", "cni", "install-cni", "ipam", "svc"]) {
      expect(r.stdout).toMatch(new RegExp(`^  ${c}\\b`, "m"));
    }
  });

  it.each([["agent"], ["network", "init"], ["cni"], ["ipam", "ls"], ["svc", "put"], ["status"]])(
    "`weft %s` says it is not built yet and exits 2", (...args) => {
      const r = weft(...args);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/not built yet/);
    });

  it("`weft demo` checks the core, then says the cluster demo is not built (exit 2)", () => {
    const r = weft("demo");
    expect(r.stdout).toMatch(/WASM core self-check: encap 1\/1, decap 1\/1 -> ok/);
    expect(r.stderr).toMatch(/not built yet/);
    expect(r.status).toBe(2);
  });

  it("an unknown benchmark or subcommand is a usage error naming the choices", () => {
    const b = weft("bench", "nope");
    expect(b.status).toBe(1);
    expect(b.stderr).toMatch(/unknown benchmark "nope".*wasm/);
    const u = weft("frobnicate");
    expect(u.status).toBe(64);
    expect(u.stderr).toMatch(/unknown command 'frobnicate'/);
  });
});
