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

  it.each([["cni"], ["install-cni"], ["ipam", "ls"], ["svc", "put"]])(
    "`weft %j` says it is not built yet and exits 2", (...args) => {
      const r = weft(...args);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/not built yet/);
    });

  it("`weft status` without a running agent says so and how to fix it", () => {
    const r = weft("status", "--control-socket", "/tmp/weft-no-such-agent.sock");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no agent answers on \/tmp\/weft-no-such-agent\.sock.*is `weft agent` running/);
  });

  it.each([
    [["--backend", "nope"], /--backend "nope": Invalid option: expected one of "auto"\|"ebpf"\|"vxlan"\|"tun"/],
    [["--etcd-endpoints", "etcd:2379"], /--etcd-endpoints "etcd:2379": each endpoint must be a URL/],
    [["--public-ip", "1.2.3"], /--public-ip "1.2.3": must be an IPv4 address/],
    [["--subnet-lease-ttl", "60", "--subnet-lease-renew-margin", "90"], /--subnet-lease-renew-margin "90": must be shorter than --subnet-lease-ttl/],
    [["--health-listen", "9099"], /--health-listen "9099": must be host:port/],
    [["--reconcile-interval", "soon"], /--reconcile-interval "soon"/],
  ])("`weft agent %j` is refused with a message naming the flag", (args, msg) => {
    const r = weft("agent", ...(args as string[]));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(msg as RegExp);
  });

  it("flags can come from WEFT_* environment variables", () => {
    const r = spawnSync(process.execPath, ["bin/weft.js", "agent"], { cwd: root, encoding: "utf8", env: { ...process.env, WEFT_BACKEND: "bogus" } });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--backend "bogus"/);
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
