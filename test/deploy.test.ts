import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { AGENT_DEFAULTS, parseAgentOptions } from "../src/agent/options.js";

/** The flags in a piece of a deploy file. */
function flags(text: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const code = text.split("\n").filter((l) => !l.trim().startsWith("#")).join("\n");
  for (const m of code.matchAll(/--([a-z-]+)(?:[ =]([^\s\\"]+))?/g)) {
    const name = (m[1] ?? "").replace(/-([a-z])/g, (_x, c: string) => c.toUpperCase());
    out[name] = m[2] === undefined || m[2].startsWith("--") ? true : m[2];
  }
  return out;
}

/** The text of one container of the DaemonSet, from its `- name:` line to the next container or section. */
function container(yaml: string, name: string): string {
  const lines = yaml.split("\n");
  const start = lines.findIndex((l) => l.trim() === `- name: ${name}`);
  expect(start, `container ${name}`).toBeGreaterThanOrEqual(0);
  const indent = lines[start]!.indexOf("-");
  const rest = lines.slice(start + 1);
  const end = rest.findIndex((l) => l.trim() !== "" && l.search(/\S/) <= indent);
  return lines.slice(start, end < 0 ? undefined : start + 1 + end).join("\n");
}

const YAML = "deploy/kubernetes/weft-agent.yaml";

/** The deploy files may only use flags the agent accepts, with values it accepts. */
describe("deploy files", () => {
  it.each([
    ["deploy/systemd/weft-agent.service", (t: string) => t],
    [YAML, (t: string) => container(t, "agent")],
  ])("%s passes the agent's option parser", (file, part) => {
    const f = flags(part(readFileSync(file, "utf8")));
    expect(Object.keys(f).length).toBeGreaterThan(3);
    const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...f });
    expect(opts.subnetFile).toBe("/run/weft/subnet.env");
    expect(opts.healthListen).toBe("127.0.0.1:9099");
  });

  it("the DaemonSet's install-cni init container runs with its own arguments", () => {
    const init = container(readFileSync(YAML, "utf8"), "install-cni");
    const args = [...init.matchAll(/^\s*- (--\S+)$/gm)].map((m) => m[1]!);
    expect(args).toContain("--bin-dir=/host/opt/cni/bin");
    const r = spawnSync("node", ["bin/weft.js", "install-cni", ...args, "--print"], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: "1.1.0", plugins: [{ type: "weft", controlSocket: "/run/weft/agent.sock" }] });
    // and a flag it does not have is refused, so the check above can fail
    const bad = spawnSync("node", ["bin/weft.js", "install-cni", "--bin-dri=/x", "--print"], { encoding: "utf8" });
    expect(bad.status).not.toBe(0);
  });

  it("a misspelled flag would be caught", () => {
    expect(() => parseAgentOptions({ ...AGENT_DEFAULTS, subnetFiel: "/x" })).toThrow(/unknown option\(s\) --subnet-fiel/);
  });
});
