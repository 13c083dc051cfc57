import { request } from "node:http";
import { connect, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Registry } from "prom-client";
import { silentLogger, type Logger } from "../../src/common/log.js";
import { HUB_DEFAULTS, type HubLimits } from "../../src/discovery/hub.js";
import type { PodDirectory } from "../../src/discovery/pods.js";
import { NodeDiscovery } from "../../src/discovery/service.js";
import { freePort } from "../../src/harness/etcd.js";
import { ServiceRegistry } from "../../src/registry/store.js";
import { RegistryWatcher } from "../../src/registry/watch.js";

/**
 * A discovery API as the agent runs it, minus the agent: a real registry in
 * a real etcd, its RegistryWatcher, and NodeDiscovery on 127.0.0.1:<port>
 * and a Unix socket in a temporary directory.
 */
export interface DiscoveryEnv {
  readonly registry: ServiceRegistry;
  readonly watcher: RegistryWatcher;
  readonly discovery: NodeDiscovery;
  readonly port: number;
  readonly socket: string;
  readonly dir: string;
  close(): Promise<void>;
}

export async function startDiscovery(endpoint: string, prefix: string, opts: {
  limits?: Partial<HubLimits>; pods?: PodDirectory; ttlSec?: number; maxPerPod?: number; metrics?: Registry; log?: Logger; startWatcher?: boolean; dir?: string;
} = {}): Promise<DiscoveryEnv> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "weft-disc-"));
  const registry = new ServiceRegistry({ endpoints: [endpoint], prefix, requestTimeoutMs: 2000 }, opts.log ?? silentLogger);
  const watcher = new RegistryWatcher(registry, opts.log ?? silentLogger, { retryMs: 100 });
  const port = await freePort();
  const socket = join(dir, "discovery.sock");
  const discovery = await NodeDiscovery.start(registry, watcher, opts.pods, {
    listen: [{ host: "127.0.0.1", port }], socket, allows: (a) => a.startsWith("127."),
    limits: { ...HUB_DEFAULTS, ...opts.limits },
    publication: { ttlSec: opts.ttlSec ?? 30, maxPerPod: opts.maxPerPod ?? 16, stateFile: join(dir, "discovery.json") },
  }, opts.metrics, opts.log ?? silentLogger);
  if (opts.startWatcher !== false) await watcher.start();
  return {
    registry, watcher, discovery, port, socket, dir,
    close: async () => {
      discovery.close();
      await watcher.close();
      registry.close();
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
  readonly json: Record<string, unknown>;
}

/** One HTTP request to the API (TCP port or Unix socket). */
export function http(target: { port: number } | { socketPath: string }, method: string, path: string, opts: { headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ ...("port" in target ? { host: "127.0.0.1", port: target.port } : target), method, path, headers: opts.headers }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(body) as Record<string, unknown>;
        } catch {
          json = {};
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
      });
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** The events of an SSE text, parsed plainly (type, data as JSON, id line if any). */
export function sseEvents(text: string): { event: string; data: Record<string, unknown>; id: string | undefined }[] {
  return text.split("\n\n").filter((b) => /^event: /m.test(b)).map((b) => {
    const event = /^event: (.*)$/m.exec(b)?.[1] ?? "";
    const data = JSON.parse(/^data: (.*)$/m.exec(b)?.[1] ?? "{}") as Record<string, unknown>;
    const id = /^id: (.*)$/m.exec(b)?.[1];
    return { event, data, id };
  });
}

/** A raw stream: a TCP connection that sends a watch request and collects what comes back (or reads nothing, `paused`). */
export function rawStream(port: number, path = "/v1/services?watch=1", headers: Record<string, string> = {}, paused = false): { sock: Socket; text: () => string } {
  let text = "";
  const sock = connect(port, "127.0.0.1");
  sock.on("error", () => undefined);
  const h = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  sock.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n${h}\r\n`);
  if (paused) sock.pause();
  else sock.on("data", (d: Buffer) => (text += d.toString()));
  return { sock, text: () => text };
}

export async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} not met in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
