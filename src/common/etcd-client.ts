import { rootCertificates } from "node:tls";
import { ExponentialBackoff } from "cockatiel";
import { Etcd3, type IKeyValue, type IOptions, type Watcher } from "etcd3";
import { ConfigError } from "./errors.js";
import { loadEtcdTls, type EtcdTlsFiles } from "./etcd-tls.js";

type WatchBackoff = NonNullable<NonNullable<IOptions["faultHandling"]>["watchBackoff"]>;

export interface EtcdClientOptions extends EtcdTlsFiles {
  /** Client URLs, e.g. ["http://127.0.0.1:2379"]. */
  readonly endpoints: readonly string[];
  /** Deadline of each unary request (ms); default 5000. */
  readonly requestTimeoutMs?: number | undefined;
  /**
   * gRPC keepalive: a ping every `timeMs` on a connection with a call open
   * (a watch), the connection dropped when no answer comes in `timeoutMs`.
   * Default 10000 / 5000; see KEEPALIVE.
   */
  readonly keepalive?: { readonly timeMs: number; readonly timeoutMs: number } | undefined;
}

/**
 * How the client finds a connection that went silent. A watch stream on a TCP
 * connection whose packets are dropped (a partition between this node and one
 * member, a frozen member host, a firewall that lost its state) sees no error
 * and no event, ever (etcd-io/etcd#8980): grpc-js notices a dead transport
 * only by keepalive pings. Then the stream fails, the watch resumes on a
 * member drawn anew, and ListWatch abandons one that does not come back.
 *
 * The values are bounded by what etcd accepts: its server enforces
 * --grpc-keepalive-min-time (default 5 s; a client pinging more often is
 * sent GOAWAY "too_many_pings" and loses every stream on the connection) and
 * does not permit pings on a connection with no open stream
 * (PermitWithoutStream false), so pings are sent only while a call is open
 * (grpc-js's default without grpc.keepalive_permit_without_calls). 10 s keeps
 * twice the enforced minimum between pings (timers drift on a loaded
 * machine); 5 s for the answer is generous for a LAN and still notices a
 * silent member within 15 s. One ping per 10 s per connection costs nothing.
 */
export const KEEPALIVE = { timeMs: 10_000, timeoutMs: 5_000 } as const;
/** etcd's default --grpc-keepalive-min-time: pinging more often than this gets the connection closed. */
const ETCD_KEEPALIVE_MIN_MS = 5_000;

/**
 * A client made elsewhere and shared (the agent's one client for leases and
 * the registry): a registry given one uses it and leaves closing it to its
 * owner. `endpoints` are the ones it was made with, for messages.
 */
export interface SharedEtcdClient {
  readonly client: Etcd3;
  readonly endpoints: readonly string[];
  /** The deadline it was made with (for what the registry times itself); default 5000. */
  readonly requestTimeoutMs?: number | undefined;
}

/** Where a registry gets its client: options to make its own (closed with it), or a shared one. */
export type EtcdClientSource = EtcdClientOptions | SharedEtcdClient;

/** The client of `src` (made now, or the shared one) and whether the caller owns it (closes it). */
export function clientFrom(src: EtcdClientSource): { client: Etcd3; owned: boolean } {
  return "client" in src ? { client: src.client, owned: false } : { client: createEtcdClient(src), owned: true };
}

/**
 * An etcd client as every part of weft uses it (subnet leases, the service
 * registry): endpoints checked, a deadline on unary calls, a watch that
 * retries within 2 s after an outage, optional TLS from the --etcd-* files
 * (read and checked here: a key that does not match its certificate fails at
 * once). Throws ConfigError naming the flag for bad input.
 */
export function createEtcdClient(opts: EtcdClientOptions): Etcd3 {
  if (opts.endpoints.length === 0) throw new ConfigError("no etcd endpoints given", { hint: "pass --etcd-endpoints http://host:2379" });
  for (const e of opts.endpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(e)) throw new ConfigError(`etcd endpoint "${e}" is not a URL like http://host:2379 or https://host:2379`, { hint: "fix --etcd-endpoints (WEFT_ETCD_ENDPOINTS)" });
  }
  const https = opts.endpoints.filter((e) => e.startsWith("https:"));
  if (https.length > 0 && https.length < opts.endpoints.length) {
    throw new ConfigError(`--etcd-endpoints mixes http:// and https:// (${opts.endpoints.join(",")}): one client speaks TLS to all or to none`, { hint: "use https:// for every endpoint of a TLS etcd" });
  }
  const tls = loadEtcdTls(opts);
  if (tls && https.length === 0) {
    throw new ConfigError(`TLS files are given (--etcd-cafile/--etcd-certfile/--etcd-keyfile) but --etcd-endpoints ${opts.endpoints.join(",")} are http://`, {
      hint: "use https:// endpoints for a TLS etcd, or drop the TLS flags for a plain one",
    });
  }
  const timeout = opts.requestTimeoutMs ?? 5000;
  const keepalive = opts.keepalive ?? KEEPALIVE;
  if (!(keepalive.timeMs >= ETCD_KEEPALIVE_MIN_MS) || !(keepalive.timeoutMs > 0)) {
    throw new ConfigError(`etcd keepalive ${keepalive.timeMs} ms / ${keepalive.timeoutMs} ms: pings must be at least ${ETCD_KEEPALIVE_MIN_MS} ms apart (etcd's --grpc-keepalive-min-time) with a positive timeout`);
  }
  const options: IOptions = {
    hosts: [...opts.endpoints],
    dialTimeout: timeout,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    // The client's default watch backoff grows to 30 s: after an etcd outage the
    // watch would stay away that long. Retry every 2 s at most instead.
    // (etcd3 types this as a backoff instance but calls .next() on it, as on cockatiel's factory.)
    faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }) as unknown as WatchBackoff },
    // gRPC refuses answers past 4 MB by default; listings come in pages (listPrefix), and a page of
    // LIST_PAGE keys stays far below this unless values are huge (etcd takes up to 1.5 MB each).
    grpcOptions: {
      "grpc.max_receive_message_length": MAX_ANSWER_BYTES,
      "grpc.keepalive_time_ms": keepalive.timeMs,
      "grpc.keepalive_timeout_ms": keepalive.timeoutMs,
    },
  };
  if (tls) {
    muteIpServernameWarning();
    options.credentials = {
      // Without --etcd-cafile the server is checked against the system's CAs.
      rootCertificate: tls.ca ?? Buffer.from(rootCertificates.join("\n")),
      ...(tls.cert ? { certChain: tls.cert } : {}),
      ...(tls.key ? { privateKey: tls.key } : {}),
    };
  }
  return new Etcd3(options);
}

let muted = false;

/**
 * grpc-js sets the TLS server name (SNI) to the endpoint's host even when it
 * is an IP address; Node ignores it and warns once per process (DEP0123),
 * into the agent's JSON log and a command's error output, with nothing the
 * user can act on. That one warning is dropped; every other passes.
 */
function muteIpServernameWarning(): void {
  if (muted) return;
  muted = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const opt = args[1];
    const code = typeof opt === "object" && opt !== null ? (opt as { code?: unknown }).code : args[2];
    if (code === "DEP0123") return;
    emit(...args);
  }) as typeof process.emitWarning;
}

/**
 * Watches every key under `prefix` from `fromRevision`, calling `onKv` for
 * each event in order. The client resumes a broken stream from the last
 * revision it saw (reported through `onConnection`); `onError` is called once
 * when the watch cannot go on (the revision was compacted, the watch was
 * cancelled): the caller lists again and watches anew.
 *
 * Each watch has a gRPC stream of its own: etcd3 multiplexes every watch of
 * a namespace object on one stream, so a watch created again on the client
 * would join the old stream, which may be stuck connecting to a silent member
 * (a TCP connect with its SYNs dropped takes the kernel's ~2 min to fail).
 * A fresh (empty-prefix) namespace shares the client's connections but has
 * its own stream, started on a member drawn anew.
 */
export async function watchPrefix(
  client: Etcd3,
  prefix: string,
  fromRevision: string,
  onKv: (kind: "put" | "delete", kv: IKeyValue) => void,
  onError: (e: Error) => void,
  onConnection: (connected: boolean) => void,
): Promise<Watcher> {
  const w = await client.namespace("").watch().prefix(prefix).startRevision(fromRevision).create();
  w.on("disconnected", () => onConnection(false));
  w.on("connected", () => onConnection(true));
  w.on("data", (res) => {
    for (const ev of res.events) onKv(ev.type === "Delete" ? "delete" : "put", ev.kv);
  });
  let failed = false;
  w.on("error", (e: Error) => {
    if (failed) return;
    failed = true;
    onError(e);
  });
  return w;
}

/** Keys a listing asks for per page: a page of ordinary leases or registry entries is well under 1 MB. */
export const LIST_PAGE = 1000;
/** The largest answer the client takes from etcd (gRPC's default is 4 MB). */
export const MAX_ANSWER_BYTES = 64 * 2 ** 20;

/**
 * Every key under `prefix` at one revision, in pages: a large cluster's
 * listing is past gRPC's 4 MB message limit in one range (24,000 IPv6
 * leases are about 5 MB), and a page of hostile huge values halves the page
 * until it fits. The pages after the first read at the first one's
 * revision, so the whole is one consistent snapshot and a watch resumes
 * right after it.
 */
export async function listPrefix(client: Etcd3, prefix: string, page = LIST_PAGE): Promise<{ kvs: IKeyValue[]; revision: string }> {
  const end = prefixEnd(Buffer.from(prefix));
  const kvs: IKeyValue[] = [];
  let start = Buffer.from(prefix);
  let revision: string | undefined;
  let size = page;
  for (;;) {
    const q = client.getAll().inRange({ start, end }).limit(size);
    if (revision !== undefined) q.revision(revision);
    let res;
    try {
      res = await q.exec();
    } catch (e) {
      if (size > 1 && /larger than max|RESOURCE_EXHAUSTED/i.test((e as Error).message)) {
        size = Math.max(1, Math.floor(size / 2));
        continue;
      }
      throw e;
    }
    revision ??= res.header.revision;
    kvs.push(...res.kvs);
    const last = res.kvs[res.kvs.length - 1];
    if (!res.more || !last) return { kvs, revision };
    start = Buffer.concat([last.key, Buffer.of(0)]);
  }
}

/** The first key after every key that starts with `p` (etcd's prefix range end). */
function prefixEnd(p: Buffer): Buffer {
  const end = Buffer.from(p);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] ?? 0) < 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.of(0); // every key
}
