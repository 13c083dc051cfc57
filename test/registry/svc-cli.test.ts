import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ServiceRegistry } from "../../src/registry/store.js";
import { endpointKey } from "../../src/registry/types.js";
import { startEtcd } from "../helpers/etcd.js";

// Runs the built CLI (dist/): build with `npx tsc -p .` first.
const root = fileURLToPath(new URL("../..", import.meta.url));
let env: Awaited<ReturnType<typeof startEtcd>>;
let n = 0;
let prefix = "";
const registries: ServiceRegistry[] = [];

beforeAll(async () => {
  env = await startEtcd();
});
afterAll(async () => {
  registries.forEach((r) => r.close());
  await env?.close();
});
beforeEach(() => {
  prefix = `/cli${++n}/registry`;
});

const cleanEnv = (): NodeJS.ProcessEnv => {
  const e = { ...process.env };
  delete e["WEFT_ETCD_ENDPOINTS"];
  delete e["WEFT_REGISTRY_PREFIX"];
  return e;
};
function start(args: string[], extraEnv: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ["bin/weft.js", "svc", ...args], { cwd: root, env: { ...cleanEnv(), ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
}
/** Async on purpose: etcd is reached through a forwarder that runs in this process's event loop. */
function weft(args: string[], extraEnv: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = start(args, extraEnv);
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}
const ep = (): string[] => ["--etcd-endpoints", env.etcd.localEndpoint, "--registry-prefix", prefix];
function registry(): ServiceRegistry {
  const r = new ServiceRegistry({ endpoints: [env.etcd.localEndpoint], prefix, requestTimeoutMs: 2000 });
  registries.push(r);
  return r;
}
async function until(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("weft svc put / ls / rm", () => {
  it("publishes from flags and from --json, lists them (with skipped entries), removes them", async () => {
    let r = await weft(["put", "service", "default/web", ...ep(), "--type", "clusterip", "--cluster-ip", "198.18.255.10", "--cluster-ip", "FD00::A", "--port", "http:TCP:80", "--port", "dns:udp:53"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(`${prefix}/services/default/web = {"type":"ClusterIP","clusterIPs":["198.18.255.10","fd00::a"],"ports":[{"name":"http","protocol":"TCP","port":80},{"name":"dns","protocol":"UDP","port":53}],"publishNotReadyAddresses":false}`);
    r = await weft(["put", "endpoint", "default/web/web-0", ...ep(), "--address", "198.18.1.5", "--hostname", "web-0", "--node-name", "node-1", "--port", "http:8080"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`${prefix}/endpoints/default/web/web-0 = {"addresses":["198.18.1.5"],"hostname":"web-0","ready":true,"nodeName":"node-1","ports":[{"name":"http","protocol":"TCP","port":8080}]}`);
    r = await weft(["put", "endpoint", "default/web/web-1", ...ep(), "--address", "198.18.2.5", "--not-ready"]);
    expect(r.status).toBe(0);
    r = await weft(["put", "service", "default/db", ...ep(), "--json", '{"type":"ExternalName","externalName":"DB.example.com."}']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('"externalName":"db.example.com"');
    r = await weft(["put", "endpoint", "other/api/x", ...ep(), "--json", '{"addresses":["fd00::5"],"ports":[{"port":9000}]}']);
    expect(r.status).toBe(0);
    await registry().client.put(`${prefix}/services/default/broken`).value("{nope");

    r = await weft(["ls", ...ep()]);
    expect(r.status).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(/^SERVICE +TYPE +ADDRESS +PORTS$/);
    expect(r.stdout).toMatch(/default\/db +ExternalName +db\.example\.com +-\n/);
    expect(r.stdout).toMatch(/default\/web +ClusterIP +198\.18\.255\.10,fd00::a +http:TCP:80,dns:UDP:53\n +web-0 +ready +198\.18\.1\.5 +http:TCP:8080 +hostname=web-0 +node=node-1\n +web-1 +not-ready +198\.18\.2\.5 +-\n/);
    expect(r.stdout).toMatch(/endpoints of services that do not exist:\n +other\/api\/x +ready +fd00::5 +TCP:9000/);
    expect(r.stdout).toMatch(new RegExp(`skipped 1 entry weft cannot use:\\n +${prefix}/services/default/broken: value: is not JSON`));

    r = await weft(["ls", "--json"], { WEFT_ETCD_ENDPOINTS: env.etcd.localEndpoint, WEFT_REGISTRY_PREFIX: prefix }); // defaults from the environment
    expect(r.status).toBe(0);
    const snap = JSON.parse(r.stdout) as { services: { name: string }[]; endpoints: unknown[]; skipped: unknown[]; revision: string };
    expect(snap.services.map((s) => s.name)).toEqual(["db", "web"]);
    expect(snap.endpoints).toHaveLength(3);
    expect(snap.skipped).toHaveLength(1);

    r = await weft(["rm", "endpoint", "default/web/web-1", ...ep()]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("removed endpoint default/web/web-1");
    r = await weft(["rm", "endpoint", "default/web/web-1", ...ep()]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/endpoint default\/web\/web-1 does not exist/);
    r = await weft(["rm", "service", "default/web", ...ep()]);
    expect(r.stdout).toContain("removed service default/web and 1 endpoint");
    r = await weft(["ls", "--json", ...ep()]);
    expect((JSON.parse(r.stdout) as { services: { name: string }[] }).services.map((s) => s.name)).toEqual(["db"]);
  }, 60_000);

  const IP = ["--cluster-ip", "198.18.255.10"];
  it.each([
    [["put", "service", "default/web", "--cluster-ip", "198.18.255"], /--cluster-ip: "198\.18\.255" is not an IPv4 or IPv6 address/],
    [["put", "service", "default/web"], /--cluster-ip: is required for type ClusterIP: give at least one/],
    [["put", "service", "default/web", "--type", "LoadBalancer", ...IP], /--type: "LoadBalancer" is not a service type: ClusterIP, Headless or ExternalName/],
    [["put", "service", "default/web", "--type", "Headless", ...IP], /--cluster-ip: must be empty for type Headless/],
    [["put", "service", "default/web", "--type", "ExternalName"], /--external-name: is required for type ExternalName/],
    [["put", "service", "default/web", "--type", "ExternalName", "--external-name", "bad_name"], /--external-name: "bad_name" is not a DNS name/],
    [["put", "service", "default/web", ...IP, "--port", "http:TCP:0"], /--port "http:TCP:0": port must be 1-65535 \(got 0\)/],
    [["put", "service", "default/web", ...IP, "--port", "HTTP:TCP:80"], /--port "HTTP:TCP:80": name "HTTP" is not a DNS-1123 label/],
    [["put", "service", "default/web", ...IP, "--port", "http:80", "--port", "http:81"], /--port "http:81": name "http" is used by two ports/],
    [["put", "service", "default/web", ...IP, "--port", "http:HTTP:80"], /--port "http:HTTP:80": protocol "HTTP" is not TCP, UDP or SCTP/],
    [["put", "service", "default/web", ...IP, "--port", "x"], /--port "x": port "x" is not a number.*\[name:\]\[protocol:\]port/],
    [["put", "service", "web", ...IP], /service "web" must be written <namespace>\/<name>/],
    [["put", "service", "Default/web", ...IP], /service Default\/web: namespace "Default" is not a DNS-1123 label/],
    [["put", "service", "default/web", "--json", "{nope"], /--json is not JSON/],
    [["put", "service", "default/web", "--json", '{"type":"ClusterIP"}'], /service default\/web: clusterIPs is required for type ClusterIP/],
    [["put", "service", "default/web", "--json", '{"type":"Headless","clusterIp":[]}'], /clusterIp is not a field of a service/],
    [["put", "service", "default/web", "--json", '{"type":"Headless"}', "--port", "80"], /--json gives the whole entry; do not combine it with --port/],
    [["put", "endpoint", "default/web/web-0"], /--address: must list at least one IPv4 or IPv6 address/],
    [["put", "endpoint", "default/web/web-0", "--address", "198.18.1.5", "--address", "10.0.0.256"], /--address: "10\.0\.0\.256" is not an IPv4 or IPv6 address/],
    [["put", "endpoint", "default/web/web-0", "--address", "198.18.1.5", "--hostname", "Web_0"], /--hostname: "Web_0" is not a DNS-1123 label/],
    [["put", "endpoint", "default/web/web-0", "--address", "198.18.1.5", "--ttl", "x"], /--ttl must be a whole number of seconds/],
    [["put", "endpoint", "default/web", "--address", "198.18.1.5"], /endpoint "default\/web" must be written <namespace>\/<service>\/<id>/],
    [["put", "endpoint", "default/web/web-0", "--json", '{"addresses":["198.18.1.5"],"ready":"yes"}'], /ready must be true or false \(got "yes"\)/],
    [["rm", "service", "default/Web"], /name "Web" is not a DNS-1123 label/],
    [["ls", "--etcd-endpoints", "nope"], /etcd endpoint "nope" is not a URL like http:\/\/host:2379/],
  ])("refuses %j with exit 1 and a message naming the flag or field; writes nothing", async (args, msg) => {
    const a = args as string[];
    const r = await weft([...a, ...(a.includes("--etcd-endpoints") ? ["--registry-prefix", prefix] : ep())]);
    expect(r.stderr).toMatch(msg as RegExp);
    expect(r.stderr).not.toMatch(/unexpected error|at .*\.js:\d+/);
    expect(r.status).toBe(1);
    expect((await registry().snapshot()).services).toEqual([]);
  });

  it("--label puts labels on services and endpoints (what discovery subscribers select by); a bad one is refused naming the flag", async () => {
    let r = await weft(["put", "service", "default/lab", ...ep(), "--cluster-ip", "198.18.255.12", "--label", "app=web", "--label", "example.com/tier=front"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('"labels":{"app":"web","example.com/tier":"front"}');
    r = await weft(["put", "endpoint", "default/lab/lab-0", ...ep(), "--address", "198.18.1.9", "--label", "app=web"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('"labels":{"app":"web"}');
    r = await weft(["put", "service", "default/lab", ...ep(), "--cluster-ip", "198.18.255.12", "--label", "app"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--label "app": write key=value/);
    r = await weft(["put", "service", "default/lab", ...ep(), "--cluster-ip", "198.18.255.12", "--label", "app=we b"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--label.*is not a label value/);
  });

  it("an unreachable etcd: exit 1 with a message saying so", async () => {
    const r = await weft(["ls", "--etcd-endpoints", "http://127.0.0.1:9", "--registry-prefix", prefix]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/weft: service registry: listing .* failed: etcd at http:\/\/127\.0\.0\.1:9 cannot be reached.*--etcd-endpoints/);
  }, 30_000);
});

describe("weft svc watch", () => {
  it("prints existing entries, {\"synced\":true}, then live changes as JSON lines; exits 0 on SIGINT", async () => {
    const reg = registry();
    await reg.putService("default", "web", { type: "Headless" });
    const child = start(["watch", ...ep()]);
    const lines: Record<string, unknown>[] = [];
    let buf = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
        buf = buf.slice(nl + 1);
      }
    });
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    await until(() => lines.some((l) => l["synced"] === true), 15_000).catch(() => { throw new Error(`no synced line: ${stderr}`); });
    expect(lines).toEqual([
      { kind: "service", op: "put", namespace: "default", name: "web", value: { namespace: "default", name: "web", type: "Headless", clusterIPs: [], ports: [], publishNotReadyAddresses: false } },
      { synced: true },
    ]);
    await reg.putEndpoint("default", "web", "web-0", { addresses: ["198.18.1.5"] });
    await reg.removeService("default", "web");
    await until(() => lines.length === 5);
    expect(lines.slice(2)).toEqual([
      { kind: "endpoint", op: "put", namespace: "default", name: "web", id: "web-0", value: { namespace: "default", service: "web", id: "web-0", addresses: ["198.18.1.5"], ready: true, ports: [] } },
      { kind: "endpoint", op: "delete", namespace: "default", name: "web", id: "web-0" },
      { kind: "service", op: "delete", namespace: "default", name: "web" },
    ]);
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(stderr).toBe("");
  }, 30_000);
});

describe("weft svc put endpoint --ttl", () => {
  it("stays in the foreground keeping the lease alive; SIGTERM revokes it and the endpoint goes", async () => {
    const reg = registry();
    const key = endpointKey(prefix, "default", "web", "t");
    const child = start(["put", "endpoint", "default/web/t", ...ep(), "--address", "198.18.1.9", "--ttl", "2"]);
    let out = "";
    child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    await until(() => /keeping the lease alive/.test(out), 15_000).catch(() => { throw new Error(`no foreground line: ${out}`); });
    expect(out).toMatch(new RegExp(`${key} = \\{"addresses":\\["198\\.18\\.1\\.9"\\],"ready":true,"ports":\\[\\]\\} on lease [0-9]+ \\(ttl 2 s\\)`));
    expect(out).toMatch(/SIGINT \(Ctrl-C\) or SIGTERM revokes it/);
    await new Promise((r) => setTimeout(r, 3500)); // past the TTL: the keepalive holds it
    expect(await reg.client.get(key).string()).not.toBeNull();
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(out).toMatch(/SIGTERM: revoked lease [0-9]+; .* removed/);
    expect(await reg.client.get(key).string()).toBeNull();
  }, 30_000);
});
