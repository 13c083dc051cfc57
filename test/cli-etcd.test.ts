import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../src/common/exec.js";
import { startEtcd, startTlsEtcd, type TlsEtcd } from "./helpers/etcd.js";

const root = fileURLToPath(new URL("..", import.meta.url));
let env: Awaited<ReturnType<typeof startEtcd>>;
let tls: TlsEtcd;
beforeAll(async () => {
  [env, tls] = await Promise.all([startEtcd(), startTlsEtcd()]);
}, 60_000);
afterAll(async () => {
  await env?.close();
  await tls?.close();
});
/** Async on purpose: etcd is reached through a forwarder that runs in this process's event loop. */
function weft(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return weftEnv({}, ...args);
}
function weftEnv(extraEnv: Record<string, string>, ...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WEFT_") || k === "WEFT_NO_SWEEP"));
    const child = spawn(process.execPath, ["bin/weft.js", ...args], { cwd: root, env: { ...clean, ...extraEnv } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

describe("weft network init/show against a real etcd", () => {
  it("writes the config once, refuses to overwrite without --force, shows it", async () => {
    const ep = ["--etcd-endpoints", env.etcd.localEndpoint, "--etcd-prefix", "/cli/network"];
    let r = await weft("network", "init", ...ep, "--network", "198.18.0.0/16", "--subnet-len", "24", "--vni", "7");
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain('/cli/network/config = {"Network":"198.18.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":7,"Port":8472}}');
    r = await weft("network", "init", ...ep, "--network", "198.19.0.0/16");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/already holds a config.*pass --force/);
    r = await weft("network", "init", ...ep, "--network", "198.19.0.0/16", "--force");
    expect(r.status).toBe(0);
    r = await weft("network", "show", ...ep);
    expect(r.stdout).toMatch(/"Network":"198.19.0.0\/16"/);
    expect(r.stdout).toMatch(/"subnetLen":24/);
  });

  it.each([
    [["--network", "198.18.0.1/16"], /has host bits set.*did you mean 198\.18\.0\.0\/16/],
    [["--network", "198.18.0.0/16", "--subnet-len", "17"], /at least four subnets/],
    [["--network", "nope"], /"nope" is not a prefix/],
    [["--network", "198.18.0.0/16", "--vni", "x"], /--vni must be a whole number/],
  ])("refuses %j with a clear message, writing nothing", async (args, msg) => {
    const r = await weft("network", "init", "--etcd-endpoints", env.etcd.localEndpoint, "--etcd-prefix", "/cli2/network", ...(args as string[]));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(msg as RegExp);
    expect((await weft("network", "show", "--etcd-endpoints", env.etcd.localEndpoint, "--etcd-prefix", "/cli2/network")).stderr).toMatch(/does not exist.*weft network init/);
  });
});

describe("every etcd command against an etcd that requires TLS and a client certificate", () => {
  it("network init and show, svc put and ls: the same TLS flags everywhere, or WEFT_ETCD_* in the environment", async () => {
    let r = await weft("network", "init", ...tls.flags, "--etcd-prefix", "/tls/network", "--network", "198.18.0.0/16");
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain('/tls/network/config = {"Network":"198.18.0.0/16"');
    const [show, put] = await Promise.all([
      weftEnv({
        WEFT_ETCD_ENDPOINTS: tls.etcd.endpoint, WEFT_ETCD_CAFILE: tls.pki.ca.cert, WEFT_ETCD_CERTFILE: tls.client.cert,
        WEFT_ETCD_KEYFILE: tls.client.key, WEFT_ETCD_PREFIX: "/tls/network",
      }, "network", "show"),
      weft("svc", "put", "service", "default/web", ...tls.flags, "--registry-prefix", "/tls/registry", "--cluster-ip", "198.18.200.1", "--port", "http:TCP:80"),
    ]);
    expect(show.stderr).toBe("");
    expect(show.stdout).toMatch(/"Network":"198\.18\.0\.0\/16"/);
    expect(put.stderr).toBe("");
    r = await weftEnv({ WEFT_REGISTRY_PREFIX: "/tls/registry" }, "svc", "ls", ...tls.flags);
    expect(r.stdout).toMatch(/^default\/web +ClusterIP +198\.18\.200\.1 +http:TCP:80/m);
    // The same command without the client certificate is refused: the flags above are what made it work.
    r = await weft("svc", "ls", "--etcd-endpoints", tls.etcd.endpoint, "--etcd-cafile", tls.pki.ca.cert, "--registry-prefix", "/tls/registry");
    expect(r.status).toBe(1);
  }, 30_000);

  it("each wrong file fails the command with exit 1 and says which file and what to do", async () => {
    const ca2 = await tls.pki.newCa("cli-ca2");
    const expired = await tls.pki.issue("cli-expired", { usage: "client", expired: true });
    const base = ["--etcd-endpoints", tls.etcd.endpoint];
    const [wrongCa, noCert, old, mismatch] = await Promise.all([
      weft("network", "show", ...base, "--etcd-cafile", ca2.cert, "--etcd-certfile", tls.client.cert, "--etcd-keyfile", tls.client.key),
      weft("svc", "ls", ...base, "--etcd-cafile", tls.pki.ca.cert),
      weft("network", "init", ...base, "--etcd-cafile", tls.pki.ca.cert, "--etcd-certfile", expired.cert, "--etcd-keyfile", expired.key, "--network", "198.18.0.0/16"),
      weft("svc", "put", "service", "default/x", ...base, "--etcd-cafile", tls.pki.ca.cert, "--etcd-certfile", tls.client.cert, "--etcd-keyfile", expired.key),
    ]);
    for (const r of [wrongCa, noCert, old, mismatch]) expect(r.status).toBe(1);
    expect(wrongCa.stderr).toContain(`--etcd-cafile ${ca2.cert} (CN=weft-test-cli-ca2): unable to verify the first certificate (wrong --etcd-cafile?)`);
    expect(noCert.stderr).toMatch(/service registry: listing .* failed[\s\S]*why, per endpoint:\n  https:\/\/127\.0\.0\.1:\d+: TLS: the server requires a client certificate: give --etcd-certfile and --etcd-keyfile/);
    expect(old.stderr).toContain(`the server refused the client certificate --etcd-certfile ${expired.cert}: it expired on `);
    expect(old.stderr).toContain("(certificate has expired); renew it");
    expect(mismatch.stderr).toContain(`weft: --etcd-keyfile ${expired.key} does not match --etcd-certfile ${tls.client.cert}`);
  }, 30_000);
});

describe("weft demo (npm start)", () => {
  it("builds the cluster, shows every pod reaching every other and resolving the others by name, and removes everything on Ctrl-C", async () => {
    const child = spawn(process.execPath, ["bin/weft.js", "demo", "--interval", "1"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const end = Date.now() + 90_000;
    // Converged: every pair pings, and every pod resolved the next pod by name through its node's DNS.
    while (!/all 30 pod pairs reach each other\n\nservice discovery[^\n]*\n(\d+ [\d.]+ +pod-\d+\.pods\.default\.svc\.cluster\.local -> [\d.]+  ok\n){6}/.test(out)) {
      if (Date.now() > end || child.exitCode !== null) throw new Error(`demo did not converge: ${out.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(out).toMatch(/n0 +192\.0\.2\.1 +198\.18\.\d+\.0\/24 +ebpf +yes +2 /); // auto picks ebpf here
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(out).toMatch(/nothing left behind/);
    expect((await run(["ip", "netns", "list"])).split("\n").filter((l) => l.startsWith("wft"))).toEqual([]);
  }, 120_000);
});
