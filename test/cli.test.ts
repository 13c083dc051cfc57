import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("`weft svc put` without what to put is a usage error naming the choices", () => {
    const r = weft("svc", "put");
    expect(r.status).toBe(64);
    expect(r.stderr).toMatch(/service|endpoint/);
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
    [["--ipam-release-grace", "-1"], /--ipam-release-grace "-1"/],
    [["--dns-listen", "localhost:53"], /--dns-listen "localhost:53": each must be an address with an optional port/],
    [["--dns-pods", "maybe"], /--dns-pods "maybe": Invalid option: expected one of "disabled"\|"insecure"\|"verified"/],
    [["--dns-allow", "10.0.0.0"], /--dns-allow "10.0.0.0": each must be an IPv4 prefix/],
    [["--cluster-domain", "Cluster_Local"], /--cluster-domain "Cluster_Local": must be a lower-case DNS name/],
    [["--dns-upstream", "dns.example"], /--dns-upstream "dns.example": must be resolv.conf, none, or comma-separated addresses/],
    [["--dns-ttl", "-5"], /--dns-ttl "-5"/],
    [["--tun-busy-poll", "2000"], /--tun-busy-poll "2000": must be at most 1000 µs/],
    [["--ipam-reclaim-threshold", "0"], /--ipam-reclaim-threshold "0": must be above 0/],
    [["--ipam-reclaim-threshold", "1.5"], /--ipam-reclaim-threshold "1.5": must be at most 1/],
    [["--tun-busy-poll", "1.5"], /--tun-busy-poll "1.5": must be a whole number of microseconds/],
    [["--v8-heap", "small"], /--v8-heap "small": Invalid option: expected one of "compact"\|"default"/],
  ])("`weft agent %j` is refused with a message naming the flag", (args, msg) => {
    const r = weft("agent", ...(args as string[]));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(msg as RegExp);
  });

  it("install-cni writes both plugins and a conflist, refuses to clobber a different one, and validates --ipam", () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-install-"));
    const args = ["install-cni", "--bin-dir", join(dir, "bin"), "--conf-dir", join(dir, "net.d")];
    const r = weft(...args);
    expect(r.status, r.stderr).toBe(0);
    for (const p of ["weft", "weft-ipam"]) {
      expect(statSync(join(dir, "bin", p)).mode & 0o777).toBe(0o755);
      const v = spawnSync(join(dir, "bin", p), { env: { CNI_COMMAND: "VERSION" }, input: '{"cniVersion":"1.0.0"}', encoding: "utf8" });
      expect(JSON.parse(v.stdout)).toMatchObject({ cniVersion: "1.0.0", supportedVersions: expect.arrayContaining(["1.1.0"]) });
    }
    const conf = JSON.parse(readFileSync(join(dir, "net.d", "10-weft.conflist"), "utf8")) as { name: string; plugins: { type: string }[] };
    // Debian's portmap (hostPort, chained as flannel's conflist does) speaks CNI up to 1.0.0: the conflist is written at that version.
    expect(conf).toMatchObject({ cniVersion: "1.0.0", name: "weft", plugins: [{ type: "weft", bridge: "cni0", capabilities: { ips: true } }, { type: "portmap", capabilities: { portMappings: true } }] });
    expect(weft(...args).status).toBe(0); // the same again: fine
    const other = weft(...args, "--bridge", "br9");
    expect(other.status).toBe(1);
    expect(other.stderr).toMatch(/exists with other contents.*--force/);
    expect(weft(...args, "--bridge", "br9", "--force").status).toBe(0);
    const bad = weft(...args, "--force", "--ipam", '{"pools":[{"name":"p","range":"+64/31","namespaces":["a"]}]}');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--ipam: .*a pool needs at least 4/);
    expect(weft(...args, "--ipam", "{nope").stderr).toMatch(/--ipam: not JSON/);
    rmSync(dir, { recursive: true, force: true });
  });

  it("`weft cni` speaks the plugin protocol: VERSION locally, code 11 without an agent", () => {
    const env = { ...process.env, WEFT_CONTROL_SOCKET: "/tmp/weft-no-such-agent.sock" };
    const v = spawnSync(process.execPath, ["bin/weft.js", "cni"], { cwd: root, encoding: "utf8", env: { ...env, CNI_COMMAND: "VERSION" }, input: "{}" });
    expect(JSON.parse(v.stdout)).toMatchObject({ supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
    const a = spawnSync(process.execPath, ["bin/weft.js", "cni", "--role", "weft-ipam"], {
      cwd: root, encoding: "utf8", env: { ...env, CNI_COMMAND: "ADD" }, input: '{"cniVersion":"0.4.0","name":"n","type":"x","ipam":{"type":"weft-ipam"}}',
    });
    expect(a.status).toBe(1);
    expect(JSON.parse(a.stdout)).toMatchObject({ cniVersion: "0.4.0", code: 11 });
    // A config past the plugin's limit is refused before anything is read into memory or sent.
    const big = spawnSync(process.execPath, ["bin/weft.js", "cni"], { cwd: root, encoding: "utf8", env: { ...env, CNI_COMMAND: "ADD" }, input: "a".repeat((4 << 20) + 1) });
    expect(big.status).toBe(1);
    expect(JSON.parse(big.stdout)).toMatchObject({ code: 6, msg: expect.stringMatching(/longer than 4194304 bytes/) });
  });

  it("`weft ipam ls` without a running agent says so", () => {
    const r = weft("ipam", "ls", "--control-socket", "/tmp/weft-no-such-agent.sock");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no agent answers on/);
  });

  it("flags can come from WEFT_* environment variables", () => {
    const r = spawnSync(process.execPath, ["bin/weft.js", "agent"], { cwd: root, encoding: "utf8", env: { ...process.env, WEFT_BACKEND: "bogus" } });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--backend "bogus"/);
    // Flags with digits in their name too (the variable once lost everything from the first digit on).
    for (const [name, flag] of [["WEFT_V8_HEAP", "--v8-heap"], ["WEFT_PUBLIC_IPV6", "--public-ipv6"]] as const) {
      const d = spawnSync(process.execPath, ["bin/weft.js", "agent"], { cwd: root, encoding: "utf8", env: { ...process.env, [name]: "bogus" } });
      expect(d.status, name).toBe(1);
      expect(d.stderr).toContain(`${flag} "bogus"`);
    }
  });

  it("bench:dns takes the shared parser's rules: a bad target, value or option exits 2 naming it, before any server starts", () => {
    const dns = (...args: string[]) => spawnSync(process.execPath, ["dist/bench/dns.js", ...args], { cwd: root, encoding: "utf8" });
    for (const [args, msg] of [
      [["--targets", "weft,nope"], /bench:dns: --targets "weft,nope": choose from weft, unbound, dns2/],
      [["--rounds", "0"], /bench:dns: --rounds 0: must be at least 1/],
      [["--bogus"], /bench:dns: Unknown option '--bogus'/],
    ] as const) {
      const r = dns(...args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).toMatch(/usage: npm run bench:dns/);
    }
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
