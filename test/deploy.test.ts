import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { AGENT_DEFAULTS, parseAgentOptions } from "../src/agent/options.js";

/** The deploy files may only use flags the agent accepts, with values it accepts. */
function flags(text: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const code = text.split("\n").filter((l) => !l.trim().startsWith("#")).join("\n");
  for (const m of code.matchAll(/--([a-z-]+)(?:[ =]([^\s\\"]+))?/g)) {
    const name = (m[1] ?? "").replace(/-([a-z])/g, (_x, c: string) => c.toUpperCase());
    out[name] = m[2] === undefined || m[2].startsWith("--") ? true : m[2];
  }
  return out;
}

describe("deploy files", () => {
  it.each(["deploy/systemd/weft-agent.service", "deploy/kubernetes/weft-agent.yaml"])("%s passes the agent's option parser", (file) => {
    const f = flags(readFileSync(file, "utf8"));
    expect(Object.keys(f).length).toBeGreaterThan(3);
    const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...f });
    expect(opts.subnetFile).toBe("/run/weft/subnet.env");
    expect(opts.healthListen).toBe("127.0.0.1:9099");
  });

  it("a misspelled flag would be caught", () => {
    expect(() => parseAgentOptions({ ...AGENT_DEFAULTS, subnetFiel: "/x" })).toThrow(/unknown option\(s\) --subnet-fiel/);
  });
});
