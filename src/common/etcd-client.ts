import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { ExponentialBackoff } from "cockatiel";
import { Etcd3, type IKeyValue, type IOptions, type Watcher } from "etcd3";
import { ConfigError } from "./errors.js";

type WatchBackoff = NonNullable<NonNullable<IOptions["faultHandling"]>["watchBackoff"]>;

export interface EtcdClientOptions {
  /** Client URLs, e.g. ["http://127.0.0.1:2379"]. */
  readonly endpoints: readonly string[];
  /** Deadline of each unary request (ms); default 5000. */
  readonly requestTimeoutMs?: number | undefined;
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

/**
 * An etcd client as every part of weft uses it (subnet leases, the service
 * registry): endpoints checked, a deadline on unary calls, a watch that
 * retries within 2 s after an outage, optional TLS from the --etcd-* files.
 * Throws ConfigError naming the flag for bad input.
 */
export function createEtcdClient(opts: EtcdClientOptions): Etcd3 {
  if (opts.endpoints.length === 0) throw new ConfigError("no etcd endpoints given", { hint: "pass --etcd-endpoints http://host:2379" });
  for (const e of opts.endpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(e)) throw new ConfigError(`etcd endpoint "${e}" is not a URL like http://host:2379`);
  }
  const timeout = opts.requestTimeoutMs ?? 5000;
  const options: IOptions = {
    hosts: [...opts.endpoints],
    dialTimeout: timeout,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    // The client's default watch backoff grows to 30 s: after an etcd outage the
    // watch would stay away that long. Retry every 2 s at most instead.
    // (etcd3 types this as a backoff instance but calls .next() on it, as on cockatiel's factory.)
    faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }) as unknown as WatchBackoff },
  };
  if (opts.certFile || opts.keyFile || opts.caFile) {
    if (!opts.certFile !== !opts.keyFile) {
      throw new ConfigError("--etcd-certfile and --etcd-keyfile go together", { hint: "give both, or neither for server-only TLS with --etcd-cafile" });
    }
    const cert = readPem(opts.certFile, "--etcd-certfile");
    const key = readPem(opts.keyFile, "--etcd-keyfile");
    options.credentials = {
      // Without --etcd-cafile the server is checked against the system's CAs.
      rootCertificate: readPem(opts.caFile, "--etcd-cafile") ?? Buffer.from(rootCertificates.join("\n")),
      ...(cert ? { certChain: cert } : {}),
      ...(key ? { privateKey: key } : {}),
    };
  }
  return new Etcd3(options);
}

function readPem(path: string | undefined, flag: string): Buffer | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ConfigError(`${flag} ${path} cannot be read: ${(e as Error).message}`);
  }
}

/**
 * Watches every key under `prefix` from `fromRevision`, calling `onKv` for
 * each event in order. The client resumes a broken stream from the last
 * revision it saw (reported through `onConnection`); `onError` is called once
 * when the watch cannot go on (the revision was compacted, the watch was
 * cancelled): the caller lists again and watches anew.
 */
export async function watchPrefix(
  client: Etcd3,
  prefix: string,
  fromRevision: string,
  onKv: (kind: "put" | "delete", kv: IKeyValue) => void,
  onError: (e: Error) => void,
  onConnection: (connected: boolean) => void,
): Promise<Watcher> {
  const w = await client.watch().prefix(prefix).startRevision(fromRevision).create();
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
