import { chmodSync, mkdirSync, rmSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { dirname } from "node:path";
import { ConfigError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { labelProblem, idProblem } from "../registry/types.js";
import type { DiscoveryCounters } from "./counters.js";
import { DiscoveryRequestError, refuse } from "./errors.js";
import { parseServicesQuery, printable } from "./filter.js";
import type { DiscoveryHub } from "./hub.js";
import { peerNetns } from "./peer.js";
import type { PodDirectory, PodRef } from "./pods.js";
import type { Publications } from "./publications.js";

export interface ListenAddr {
  readonly host: string;
  readonly port: number;
}

export interface DiscoveryServerOptions {
  readonly listen: readonly ListenAddr[];
  /** The Unix socket (mode 0666, for mounting into pods), or undefined for none. */
  readonly socket: string | undefined;
  /** The DNS server's client ACL: the cluster network, node addresses, loopback, --dns-allow. */
  readonly allows: (addr: string) => boolean;
  /** Publication (undefined: the API is read-only here, and POST answers 503). */
  readonly publications: Publications | undefined;
  readonly pods: PodDirectory | undefined;
  /** TCP connections at most, over all listen addresses. */
  readonly maxConnections: number;
}

/** Largest publication body. */
export const MAX_BODY_BYTES = 64 << 10;

type Via = "tcp" | "unix";

/**
 * The discovery API over HTTP/1.1, on the node-local address(es) and a Unix
 * socket: `GET /v1/services` (a snapshot; `?watch=1`: a Server-Sent Events
 * stream), and a pod's own endpoints at `/v1/endpoints` (GET, POST, DELETE
 * /v1/endpoints/<ns>/<service>/<id>). TCP clients outside the ACL get 403;
 * every refusal is a 4xx with `{error, reason}`, counted by reason.
 */
export class DiscoveryServer {
  private readonly servers: Server[] = [];
  private readonly bound: string[] = [];
  /** The inode of our socket file: on close it is removed only if it is still ours. */
  private socketIno = 0;

  constructor(private readonly hub: DiscoveryHub, private readonly opts: DiscoveryServerOptions, private readonly counters: DiscoveryCounters, private readonly log: Logger) {}

  /** Where it listens ("host:port" and the socket path). */
  addresses(): string[] {
    return [...this.bound];
  }

  async start(): Promise<void> {
    try {
      for (const l of this.opts.listen) {
        const s = this.server("tcp");
        s.maxConnections = this.opts.maxConnections;
        await listen(s, () => s.listen({ host: l.host, port: l.port, backlog: 4096 }), `--discovery-listen ${l.host}:${l.port}`);
        this.bound.push(`${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port}`);
      }
      const path = this.opts.socket;
      if (path) {
        mkdirSync(dirname(path), { recursive: true });
        rmSync(path, { force: true }); // a stale socket of a killed agent
        const s = this.server("unix");
        await listen(s, () => s.listen(path), `--discovery-socket ${path}`);
        // Pods mount it, and their processes need not run as root: anyone may connect. What
        // a connection may do is decided per request (reads: anyone; writes: a pod, by its netns).
        chmodSync(path, 0o666);
        this.socketIno = statSync(path).ino;
        this.bound.push(path);
      }
    } catch (e) {
      this.close();
      throw e;
    }
    this.log.info({ listen: this.bound }, "discovery API listening");
  }

  private server(via: Via): Server {
    // No Host check: the API has one name per listener, and a refusal from Node itself would carry no reason.
    const s = createServer({ maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5000, keepAliveTimeout: 5000, requireHostHeader: false }, (req, res) => {
      void this.handle(req, res, via).catch((e: unknown) => this.fail(res, e));
    });
    s.on("clientError", (err: NodeJS.ErrnoException, sock: Socket) => {
      // Not HTTP, or headers past --max-header-size (8 KiB): answered and closed, never handled.
      if (err.code === "ECONNRESET" || !sock.writable) return void sock.destroy(); // the client went away: nothing to answer
      const big = err.code === "HPE_HEADER_OVERFLOW";
      this.counters.refuse(big ? "too_large" : "bad_query");
      const body = `${JSON.stringify(big ? { error: "request headers larger than 8 KiB", reason: "too_large" } : { error: `not an HTTP/1.1 request this API takes (${err.code ?? "malformed"})`, reason: "bad_query" })}\n`;
      sock.end(`HTTP/1.1 ${big ? "431 Request Header Fields Too Large" : "400 Bad Request"}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    this.servers.push(s);
    return s;
  }

  private async handle(req: IncomingMessage, res: ServerResponse, via: Via): Promise<void> {
    const client = via === "unix" ? "unix" : stripV4Mapped(req.socket.remoteAddress ?? "");
    if (via === "tcp" && !this.opts.allows(client)) {
      throw refuse(403, "acl", `${client} may not use this API: it answers the cluster network, the node's own addresses, loopback and --dns-allow`);
    }
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://agent");
    } catch {
      throw refuse(400, "bad_query", "the request target is not a URL path");
    }
    const path = url.pathname;
    const method = req.method ?? "GET";
    if (path === "/v1/services") {
      allow(method, ["GET"]);
      const q = parseServicesQuery(url.searchParams);
      if (!q.watch) {
        this.counters.gets++;
        return json(res, 200, this.hub.snapshotJson(q.filter));
      }
      const last = req.headers["last-event-id"];
      await this.hub.subscribe(res, q.filter, Array.isArray(last) ? last[0] : last, client);
      return;
    }
    if (path === "/v1/endpoints") {
      allow(method, ["GET", "POST"]);
      if ([...url.searchParams.keys()].length > 0) throw refuse(400, "bad_query", "/v1/endpoints takes no query parameters");
      const { pubs, pod } = this.caller(req, via, client);
      if (method === "GET") return json(res, 200, JSON.stringify({ publications: pubs.list(pod) }));
      const body = await readJson(req);
      const r = await pubs.publish(pod, body);
      return json(res, r.created ? 201 : 200, JSON.stringify(r.publication));
    }
    const m = /^\/v1\/endpoints\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(path);
    if (m) {
      allow(method, ["DELETE"]);
      const [ns, svc, id] = [m[1], m[2], m[3]].map((x) => decode(x ?? "")) as [string, string, string];
      const bad = labelProblem(ns) ?? labelProblem(svc) ?? idProblem(id);
      if (bad) throw refuse(400, "bad_query", `${printable(`${ns}/${svc}/${id}`)}: ${printable(bad)}`);
      const { pubs, pod } = this.caller(req, via, client);
      if (!(await pubs.unpublish(pod, ns, svc, id))) throw refuse(404, "not_found", `this pod has published no ${ns}/${svc}/${id}`);
      res.writeHead(204).end();
      return;
    }
    throw refuse(404, "not_found", `no ${printable(path)} here; the API is GET /v1/services[?watch=1], GET|POST /v1/endpoints, DELETE /v1/endpoints/<namespace>/<service>/<id>`);
  }

  /** The pod making a request: by its source address (TCP) or its network namespace (Unix socket peer credentials). */
  private caller(req: IncomingMessage, via: Via, client: string): { pubs: Publications; pod: PodRef } {
    const pubs = this.opts.publications;
    const pods = this.opts.pods;
    if (!pubs || !pods) throw refuse(503, "publication_off", "publication is not available on this agent (it has no pods service)");
    if (via === "tcp") {
      const pod = pods.byAddress(client);
      if (!pod) throw refuse(403, "not_a_pod", `${client} is not the address of a pod this node attached through CNI; only pods publish, and only for themselves`);
      return { pubs, pod };
    }
    const ino = peerNetns(req.socket);
    const pod = ino === undefined ? undefined : pods.byNetns(ino);
    if (!pod) {
      throw refuse(403, "not_a_pod", ino === undefined
        ? "the caller's network namespace cannot be known (peer credentials unreadable, or the agent does not see the caller's PID namespace)"
        : "the caller is not in the network namespace of a pod this node attached through CNI; only pods publish, and only for themselves");
    }
    return { pubs, pod };
  }

  private fail(res: ServerResponse, e: unknown): void {
    if (e instanceof DiscoveryRequestError) {
      this.counters.refuse(e.reason);
      if (!res.headersSent) {
        const headers: Record<string, string> = { ...e.headers };
        if (e.status === 503 || e.status === 429) headers["retry-after"] = "1";
        if (e.reason === "too_large" || e.reason === "acl") {
          // the rest of the request is not read: the connection ends with the answer
          headers["connection"] = "close";
          const sock = res.req.socket;
          res.on("finish", () => sock.destroySoon());
        }
        json(res, e.status, JSON.stringify(e.body()), headers);
      } else res.destroy();
      return;
    }
    this.log.error({ err: (e as Error).stack ?? String(e) }, "discovery: a request failed (a bug: please report it)");
    if (!res.headersSent) json(res, 500, JSON.stringify({ error: (e as Error).message, reason: "internal" }));
    else res.destroy();
  }

  close(): void {
    for (const s of this.servers) {
      s.close();
      s.closeAllConnections();
    }
    const path = this.opts.socket;
    if (path && this.socketIno !== 0 && inodeOf(path) === this.socketIno) rmSync(path, { force: true });
  }
}

function json(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) + 1, ...headers }).end(`${body}\n`);
}

function allow(method: string, methods: string[]): void {
  if (methods.includes(method)) return;
  throw refuse(405, "method", `${printable(method)} is not allowed here; use ${methods.join(" or ")}`, { allow: methods.join(", ") });
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw refuse(400, "bad_query", `${printable(s)} is not percent-encoded correctly`);
  }
}

function inodeOf(path: string): number {
  try {
    return statSync(path).ino;
  } catch {
    return 0;
  }
}

function stripV4Mapped(a: string): string {
  return a.startsWith("::ffff:") ? a.slice(7) : a;
}

/** The request body as JSON: at most MAX_BODY_BYTES, application/json. */
function readJson(req: IncomingMessage): Promise<unknown> {
  const type = (req.headers["content-type"] ?? "application/json").split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") {
    req.resume();
    throw refuse(415, "media_type", `the body must be JSON: send content-type: application/json (got ${printable(type ?? "")})`);
  }
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > MAX_BODY_BYTES) {
    throw refuse(413, "too_large", `a body of ${declared} bytes; at most ${MAX_BODY_BYTES}`);
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    req.on("data", (d: Buffer) => {
      n += d.length;
      if (n > MAX_BODY_BYTES) {
        req.pause();
        reject(refuse(413, "too_large", `a body of more than ${MAX_BODY_BYTES} bytes`));
      } else parts.push(d);
    });
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(parts).toString("utf8")));
      } catch (e) {
        reject(refuse(400, "bad_body", `the body is not JSON: ${printable((e as Error).message)}`));
      }
    });
    req.on("error", () => reject(refuse(400, "bad_body", "the body did not arrive whole")));
  });
}

async function listen(s: Server, start: () => void, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    s.once("error", (e: NodeJS.ErrnoException) => reject(new ConfigError(`${what}: ${e.code === "EADDRINUSE" ? "the address is in use" : e.message}`, {
      hint: "choose another address (or off)",
    })));
    s.once("listening", () => resolve());
    start();
  });
}
