import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { start } from "../common/exec.js";
import { forwardTcpToUnix, type Forwarder } from "./forward.js";
import type { Netns } from "./netns.js";

export interface EtcdOptions {
  /** Directory for the data dir, the log and the unix socket. */
  readonly dir: string;
  /** Run inside this namespace (else the current one). */
  readonly netns?: Netns | undefined;
  /** Client address and port inside that namespace. */
  readonly host?: string;
  readonly port?: number;
  /** Peer port (chosen once, so a restarted server finds the address its data dir records). */
  readonly peerPort?: number;
  /**
   * Serve host:port with TLS (https://) from these files; with `clientCertAuth`
   * every client there must present a certificate signed by `trustedCa`. The
   * unix socket stays plain (etcd 3.4 serves unix:// without TLS), for the
   * harness's own use through `localEndpoint`.
   */
  readonly tls?: EtcdServerTls | undefined;
  /** Member name and peer address (default "weft" on 127.0.0.1), and the initial cluster (default: this member alone); see EtcdCluster. */
  readonly name?: string;
  readonly peerHost?: string;
  readonly initialCluster?: string;
}

export interface EtcdServerTls {
  readonly cert: string;
  readonly key: string;
  readonly trustedCa?: string | undefined;
  readonly clientCertAuth?: boolean | undefined;
}

/**
 * A real etcd server for tests, benchmarks and the demo. It serves clients on
 * host:port inside its namespace and on a unix socket in `dir`; unix sockets
 * cross network namespaces, so `localEndpoint` (a TCP forwarder in this
 * process) reaches it from anywhere.
 */
export class EtcdServer {
  private child: ChildProcess | undefined;
  private fwd: Forwarder | undefined;
  readonly endpoint: string;
  readonly socket: string;

  private constructor(readonly opts: EtcdOptions) {
    this.endpoint = `${opts.tls ? "https" : "http"}://${opts.host ?? "127.0.0.1"}:${opts.port ?? 2379}`;
    this.socket = join(opts.dir, "etcd.sock:0");
  }

  static async start(opts: EtcdOptions): Promise<EtcdServer> {
    const port = opts.port ?? (opts.netns ? 2379 : await freePort());
    // In its own namespace the next port is free; beside other runs it may not be: ask for one.
    const peerPort = opts.peerPort ?? (opts.netns ? port + 1 : await freePort());
    const s = new EtcdServer({ ...opts, port, peerPort });
    await s.run();
    s.fwd = await forwardTcpToUnix(s.socket);
    return s;
  }

  /** http://127.0.0.1:<port> in this process's namespace, forwarded to the server. */
  get localEndpoint(): string {
    if (!this.fwd) throw new Error("etcd forwarder not started");
    return `http://127.0.0.1:${this.fwd.port}`;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the server process (again, after stop(): same data, same address). */
  async run(): Promise<void> {
    const { dir, netns, tls } = this.opts;
    const port = this.opts.port ?? 2379;
    mkdirSync(dir, { recursive: true });
    rmSync(this.socket, { force: true }); // left by a killed server: etcd would fail to bind it
    const peer = this.opts.peerPort ?? port + 1;
    const name = this.opts.name ?? "weft";
    const peerUrl = `http://${this.opts.peerHost ?? "127.0.0.1"}:${peer}`;
    const argv = [
      ...(netns ? ["ip", "netns", "exec", netns.name] : []),
      "etcd", "--name", name, "--data-dir", join(dir, "data"),
      "--listen-client-urls", `${this.endpoint},unix://etcd.sock:0`,
      "--advertise-client-urls", this.endpoint,
      ...(tls ? ["--cert-file", tls.cert, "--key-file", tls.key] : []),
      ...(tls?.trustedCa ? ["--trusted-ca-file", tls.trustedCa] : []),
      ...(tls?.clientCertAuth ? ["--client-cert-auth"] : []),
      "--listen-peer-urls", peerUrl,
      "--initial-advertise-peer-urls", peerUrl,
      "--initial-cluster", this.opts.initialCluster ?? `${name}=${peerUrl}`,
      "--log-outputs", join(dir, "etcd.log"), "--logger", "zap",
      // Tests compact on purpose; keep etcd itself from doing it behind their back.
      "--auto-compaction-retention", "0",
    ];
    this.child = start(argv, { cwd: dir, stdio: ["ignore", "ignore", "ignore"] });
    const child = this.child;
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode}; see ${join(dir, "etcd.log")}`);
      if (existsSync(this.socket) && (await answers(this.socket))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd did not come up in 15 s; see ${join(dir, "etcd.log")}`);
  }

  /** Kills the server (SIGKILL: as a crash would). */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c || !this.running) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await exited;
  }

  async close(): Promise<void> {
    await this.stop();
    await this.fwd?.close();
  }
}

/** True when an HTTP GET /health over the unix socket gets a reply. */
async function answers(socket: string): Promise<boolean> {
  const { request } = await import("node:http");
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: "/health", timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}
