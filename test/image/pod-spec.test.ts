import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IDaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPodSpec } from "kubernetes-models/v1/PodSpec";
import { afterAll, describe, expect, it } from "vitest";
import { daemonSetPod, findObject, podmanRunArgs, quantityBytes, quantityCores, readManifest, type NodeView, type RunSpec } from "../../src/harness/pod-spec.js";
import { MANIFEST } from "./image.js";

/** The manifest -> podman mapping itself, on the real DaemonSet, without running anything. */
const dir = mkdtempSync(join(tmpdir(), "weft-podspec-"));
mkdirSync(join(dir, "host/sys/fs/bpf"), { recursive: true }); // a Directory hostPath must exist
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const objects = readManifest(MANIFEST);
const freshPod = (): IPodSpec => daemonSetPod(structuredClone(findObject<IDaemonSet>(objects, "DaemonSet", "weft-agent")));
const agentOf = (pod: IPodSpec): IContainer => pod.containers.find((c) => c.name === "agent")!;
const node = (over: Partial<NodeView> = {}): NodeView => ({
  nodeName: "n0", hostIP: "192.0.2.1", netnsPath: "/run/netns/wftx-n0",
  hostPath: (p) => (p === "/dev/net/tun" ? "/dev/net/tun" : join(dir, "host", p)),
  configMaps: { "weft-config": { "etcd-endpoints": "http://192.0.2.254:2379", backend: "vxlan" } }, secrets: {}, volumeDir: join(dir, "volumes"),
  ...over,
});
const spec: RunSpec = { name: "wftx-n0-agent", labels: { "dev.weft.test": "x" }, podName: "weft-agent-n0", podNamespace: "kube-system", podmanArgs: ["--runtime", "runc"] };
/** The values of every `flag value` pair of an argv. */
const values = (argv: string[], flag: string): string[] => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));

describe("pod spec -> podman run", () => {
  it("the agent: command and args, env from the ConfigMap and fields, exactly the added capabilities, host network, limits, mounts", () => {
    const pod = freshPod();
    const argv = podmanRunArgs(pod, agentOf(pod), node(), spec);
    const image = argv.indexOf("weft:0.1.0");
    expect(argv.slice(image + 1)).toEqual(agentOf(pod).args);
    expect(values(argv, "--entrypoint")).toEqual(['["weft","agent"]']);
    expect(values(argv, "--network")).toEqual(["ns:/run/netns/wftx-n0"]);
    // Optional ConfigMap keys that are absent set nothing; status.hostIP is the node's address.
    expect(values(argv, "--env").sort()).toEqual(["WEFT_BACKEND=vxlan", "WEFT_ETCD_ENDPOINTS=http://192.0.2.254:2379", "WEFT_PUBLIC_IP=192.0.2.1"]);
    expect(argv.filter((a) => a.startsWith("--cap-"))).toEqual(["--cap-drop=all", "--cap-add=BPF", "--cap-add=NET_ADMIN", "--cap-add=NET_BIND_SERVICE", "--cap-add=PERFMON", "--cap-add=SYS_ADMIN"]);
    expect(argv).toEqual(expect.arrayContaining(["--read-only", "--read-only-tmpfs=false", "no-new-privileges", "seccomp=unconfined"]));
    expect(values(argv, "--memory")).toEqual([`${256 * 2 ** 20}b`]);
    expect(values(argv, "--stop-timeout")).toEqual(["10"]);
    expect(values(argv, "--volume")).toEqual([
      `${dir}/host/run/weft:/run/weft:rw,rprivate`, `${dir}/host/var/lib/weft:/var/lib/weft:rw,rprivate`, `${dir}/host/sys/fs/bpf:/sys/fs/bpf:rw,rslave`,
      `${dir}/host/var/run/netns:/var/run/netns:rw,rslave`, `${dir}/volumes/etcd-tls:/etc/weft/etcd:ro,rprivate`,
    ]);
    expect(values(argv, "--device")).toEqual(["/dev/net/tun:/dev/net/tun"]);
  });

  it("Secret volumes are written with their mode, env takes optional keys when present", () => {
    const pod = freshPod();
    const n = node({
      secrets: { "weft-etcd-tls": { "ca.crt": "CA", "tls.key": "KEY" } },
      configMaps: { "weft-config": { "etcd-endpoints": "https://192.0.2.254:2379", "etcd-cafile": "/etc/weft/etcd/ca.crt" } },
    });
    const argv = podmanRunArgs(pod, agentOf(pod), n, spec);
    expect(values(argv, "--env")).toContain("WEFT_ETCD_CAFILE=/etc/weft/etcd/ca.crt");
    expect(readFileSync(join(dir, "volumes/etcd-tls/tls.key"), "utf8")).toBe("KEY");
    expect(statSync(join(dir, "volumes/etcd-tls/tls.key")).mode & 0o777).toBe(0o400);
  });

  it("refuses what the kubelet would refuse: a missing required ConfigMap key, a hostPath that is not of its type", () => {
    const pod = freshPod();
    expect(() => podmanRunArgs(pod, agentOf(pod), node({ configMaps: { "weft-config": {} } }), spec))
      .toThrow(/WEFT_ETCD_ENDPOINTS: ConfigMap weft-config has no key etcd-endpoints \(the kubelet would refuse to start it: CreateContainerConfigError\)/);
    expect(() => podmanRunArgs(pod, agentOf(pod), node({ hostPath: (p) => (p === "/dev/net/tun" ? dir : join(dir, "host", p)) }), spec))
      .toThrow(/volume tun: hostPath \/dev\/net\/tun .* is not a character device \(type CharDevice\)/);
    expect(() => podmanRunArgs(pod, agentOf(pod), node({ hostPath: (p) => join(dir, "h2", p) }), spec))
      .toThrow(/volume bpffs: hostPath \/sys\/fs\/bpf .* is not a directory \(type Directory\): the kubelet would not start the pod/);
  });

  it("refuses, by name, a field it does not implement instead of ignoring it", () => {
    const pod = freshPod();
    (pod as unknown as Record<string, unknown>)["hostPID"] = true;
    expect(() => podmanRunArgs(pod, agentOf(pod), node(), spec)).toThrow(/pod field hostPID: the test runner .* does not implement it/);
    const pod2 = freshPod();
    (agentOf(pod2) as unknown as Record<string, unknown>)["lifecycle"] = { preStop: {} };
    expect(() => podmanRunArgs(pod2, agentOf(pod2), node(), spec)).toThrow(/container agent field lifecycle/);
    const pod3 = freshPod();
    pod3.hostNetwork = false;
    expect(() => podmanRunArgs(pod3, agentOf(pod3), node(), spec)).toThrow(/a pod without hostNetwork/);
  });

  it("a container that does not drop ALL gets the runtime's default capabilities plus its own", () => {
    const pod = freshPod();
    const c = agentOf(pod);
    c.securityContext = { capabilities: { add: ["NET_ADMIN"], drop: ["MKNOD"] } };
    const caps = podmanRunArgs(pod, c, node(), spec).filter((a) => a.startsWith("--cap-add=")).map((a) => a.slice(10));
    expect(caps).toContain("NET_ADMIN");
    expect(caps).toContain("NET_RAW");
    expect(caps).not.toContain("MKNOD");
    expect(caps).not.toContain("SYS_ADMIN");
  });

  it("reads Kubernetes quantities", () => {
    expect(quantityBytes("96Mi")).toBe(96 * 2 ** 20);
    expect(quantityBytes("1G")).toBe(1e9);
    expect(quantityCores("50m")).toBe(0.05);
    expect(quantityCores(2)).toBe(2);
    expect(() => quantityBytes("lots")).toThrow(/memory quantity lots/);
  });
});
