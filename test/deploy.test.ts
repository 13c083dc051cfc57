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

/** The mountPath of volume `volume` in a container, as the DaemonSet writes it: `- { name: <volume>, mountPath: <path>, ... }`. */
function mountPath(part: string, volume: string): string | undefined {
  return new RegExp(`\\{ name: ${volume}, mountPath: (\\S+?)[,\\s}]`).exec(part)?.[1];
}

/**
 * What the agent's flags in the DaemonSet must agree with elsewhere in the same
 * file: the probes' port, the install-cni container's control socket, and the
 * host directories mounted where the agent keeps its files. Empty: all agree.
 */
function daemonSetMismatches(yaml: string): string[] {
  const agent = container(yaml, "agent");
  const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...flags(agent) });
  const out: string[] = [];
  const port = opts.healthListen === "off" ? undefined : opts.healthListen.split(":")[1];
  for (const probe of ["livenessProbe", "readinessProbe"]) {
    const m = new RegExp(`${probe}:\\s*\\n\\s*httpGet: \\{[^}]*port: (\\d+)`).exec(agent);
    if (m?.[1] !== port) out.push(`${probe} port ${m?.[1]} but --health-listen ${opts.healthListen}`);
  }
  const cniSocket = /--control-socket=(\S+)/.exec(container(yaml, "install-cni"))?.[1];
  if (cniSocket !== opts.controlSocket) out.push(`install-cni --control-socket ${cniSocket} but the agent's is ${opts.controlSocket}`);
  const inside = (file: string, dir: string | undefined): boolean => dir !== undefined && file.startsWith(`${dir.replace(/\/$/, "")}/`);
  if (!inside(opts.controlSocket, mountPath(agent, "run"))) out.push(`--control-socket ${opts.controlSocket} is outside the run mount ${mountPath(agent, "run")}`);
  if (!inside(opts.subnetFile, mountPath(agent, "run"))) out.push(`--subnet-file ${opts.subnetFile} is outside the run mount ${mountPath(agent, "run")}`);
  if (mountPath(agent, "state") !== opts.stateDir) out.push(`--state-dir ${opts.stateDir} but the state mount is ${mountPath(agent, "state")}`);
  if (mountPath(agent, "bpffs") !== opts.bpffs) out.push(`--bpffs ${opts.bpffs} but the bpffs mount is ${mountPath(agent, "bpffs")}`);
  return out;
}

/** The deploy files may only use flags the agent accepts, with values it accepts. */
describe("deploy files", () => {
  it.each([
    ["deploy/systemd/weft-agent.service", (t: string) => t],
    [YAML, (t: string) => container(t, "agent")],
  ])("%s passes the agent's option parser, and every flag it sets reaches the options", (file, part) => {
    const f = flags(part(readFileSync(file, "utf8")));
    expect(Object.keys(f).length).toBeGreaterThan(3);
    const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...f }) as Record<string, unknown>;
    // Each flag lands on the option of its name with the file's value (a flag the parser
    // renamed or a value it rewrote would differ); the defaults are only underneath.
    for (const [k, v] of Object.entries(f)) expect(v === true ? opts[k] : String(opts[k]), `--${k}`).toBe(v);
  });

  it("the systemd unit's directories are the ones systemd creates for it", () => {
    const unit = readFileSync("deploy/systemd/weft-agent.service", "utf8");
    const opts = parseAgentOptions({ ...AGENT_DEFAULTS, ...flags(unit) });
    const runtime = /^RuntimeDirectory=(\S+)$/m.exec(unit)?.[1];
    const state = /^StateDirectory=(\S+)$/m.exec(unit)?.[1];
    expect(opts.controlSocket.startsWith(`/run/${runtime}/`), opts.controlSocket).toBe(true);
    expect(opts.subnetFile.startsWith(`/run/${runtime}/`), opts.subnetFile).toBe(true);
    expect(opts.stateDir).toBe(`/var/lib/${state}`);
  });

  it("the DaemonSet's agent flags agree with its probes, its install-cni container and its mounts", () => {
    const yaml = readFileSync(YAML, "utf8");
    expect(daemonSetMismatches(yaml)).toEqual([]);
    // and each disagreement is caught, so the check above can fail
    const broken = yaml.replace("- --health-listen=127.0.0.1:9099", "- --health-listen=127.0.0.1:9098")
      .replace("- --state-dir=/var/lib/weft", "- --state-dir=/var/lib/weft2")
      .replace("- --control-socket=/run/weft/agent.sock\n            - --force", "- --control-socket=/run/weft/other.sock\n            - --force")
      .replace("mountPath: /sys/fs/bpf,", "mountPath: /sys/fs/bpf2,");
    expect(broken).not.toBe(yaml);
    expect(daemonSetMismatches(broken)).toEqual([
      "livenessProbe port 9099 but --health-listen 127.0.0.1:9098",
      "readinessProbe port 9099 but --health-listen 127.0.0.1:9098",
      "install-cni --control-socket /run/weft/other.sock but the agent's is /run/weft/agent.sock",
      "--state-dir /var/lib/weft2 but the state mount is /var/lib/weft",
      "--bpffs /sys/fs/bpf but the bpffs mount is /sys/fs/bpf2",
    ]);
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
