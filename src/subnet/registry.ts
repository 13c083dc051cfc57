import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import { flat } from "../common/flat.js";
import { ConfigError } from "../common/errors.js";
import { clientFrom, listPrefix, watchPrefix, type EtcdClientOptions, type SharedEtcdClient } from "../common/etcd-client.js";
import { RegistryUnavailableError } from "./errors.js";

export { RegistryUnavailableError };
import type { Ipv4Prefix } from "../common/ipv4.js";
import type { Ipv6Prefix } from "../common/ipv6.js";
import { encodeLeaseAttrs, parseLeaseAttrs, parseLeaseKey, subnetKey, LeaseFormatError, type Lease, type LeaseAttrs, type LeaseDecodeReason } from "./lease.js";



/**
 * Where the registry's client comes from: endpoints (and TLS files) to make
 * its own, closed by close(); or `client`, shared with others (the agent's
 * one client) and left open by close().
 */
export type RegistryOptions = (EtcdClientOptions | SharedEtcdClient) & {
  /** Key prefix; flannel's default is /coreos.com/network. */
  readonly prefix: string;
};

/** A lease key whose name or value could not be used: reported and skipped. */
export interface SkippedKey {
  /** The key relative to the subnets prefix. */
  readonly key: string;
  readonly reason: LeaseDecodeReason;
  /** What was wrong, for the log and `weft status`. */
  readonly detail: string;
}

export interface LeaseSnapshot {
  readonly leases: Lease[];
  readonly skipped: SkippedKey[];
  /** The store revision the snapshot was read at: watch from revision + 1. */
  readonly revision: string;
}

export type LeaseEvent =
  | { readonly type: "put"; readonly lease: Lease }
  /** A key was deleted (or expired with its etcd lease); `key` is relative to the subnets prefix. */
  | { readonly type: "delete"; readonly key: string }
  | { readonly type: "skip"; readonly skipped: SkippedKey };

/**
 * flannel's etcd layout, read and written through the etcd v3 API:
 * `<prefix>/config` and `<prefix>/subnets/<a.b.c.d-len>`. One concept: the
 * store. Acquisition policy lives in SubnetManager.
 */
export class SubnetRegistry {
  readonly client: Etcd3;
  readonly configKey: string;
  readonly subnetsPrefix: string;
  /** The client was made here (and is closed here), not shared. */
  private readonly ownsClient: boolean;

  constructor(readonly opts: RegistryOptions) {
    const prefix = opts.prefix.replace(/\/+$/, "");
    if (!prefix.startsWith("/")) throw new ConfigError(`etcd prefix "${opts.prefix}" must start with /`, { hint: "fix --etcd-prefix (WEFT_ETCD_PREFIX), e.g. /coreos.com/network" });
    this.configKey = `${prefix}/config`;
    this.subnetsPrefix = `${prefix}/subnets/`;
    const c = clientFrom(opts);
    this.client = c.client;
    this.ownsClient = c.owned;
  }

  /** Closes the client if it was made here; a shared one stays open for its owner to close. */
  close(): void {
    if (this.ownsClient) this.client.close();
  }

  // ------------------------------------------------------------------ config

  async getNetworkConfig(): Promise<string | undefined> {
    try {
      return (await this.client.get(this.configKey).string()) ?? undefined;
    } catch (e) {
      throw new RegistryUnavailableError(`reading ${this.configKey}`, e);
    }
  }

  /** Writes the config; without `force` only when the key does not exist (returns false then). */
  async putNetworkConfig(json: string, force: boolean): Promise<boolean> {
    try {
      if (force) {
        await this.client.put(this.configKey).value(json);
        return true;
      }
      const r = await this.client.if(this.configKey, "Version", "==", 0).then(this.client.put(this.configKey).value(json)).commit();
      return r.succeeded;
    } catch (e) {
      throw new RegistryUnavailableError(`writing ${this.configKey}`, e);
    }
  }

  // ------------------------------------------------------------------ leases

  async listLeases(): Promise<LeaseSnapshot> {
    let res;
    try {
      res = await listPrefix(this.client, this.subnetsPrefix);
    } catch (e) {
      throw new RegistryUnavailableError(`listing ${this.subnetsPrefix}`, e);
    }
    const leases: Lease[] = [];
    const skipped: SkippedKey[] = [];
    for (const kv of res.kvs) {
      const r = this.decode(kv);
      if ("reason" in r) skipped.push(r);
      else leases.push(r);
    }
    return { leases, skipped, revision: res.revision };
  }

  /** One lease key (relative to the subnets prefix): the lease, undefined when absent or unreadable. */
  async getLease(key: string): Promise<Lease | undefined> {
    let res;
    try {
      res = await this.client.get(this.subnetsPrefix + key).exec();
    } catch (e) {
      throw new RegistryUnavailableError(`reading ${key}`, e);
    }
    const kv = res.kvs[0];
    if (!kv) return undefined;
    const d = this.decode(kv);
    return "reason" in d ? undefined : d;
  }

  /** A lease from a key-value, or why it is skipped. */
  decode(kv: IKeyValue): Lease | SkippedKey {
    const key = this.relative(kv);
    const k = parseLeaseKey(key);
    if (!k) return { key, reason: "bad_key", detail: "the key does not name a subnet (a.b.c.d-len, or a.b.c.d-len&<ipv6>-len)" };
    try {
      return {
        key, subnet: k.subnet, ...(k.subnet6 ? { subnet6: k.subnet6 } : {}), attrs: parseLeaseAttrs(kv.value.toString()),
        // Kept per lease for the agent's life: flat copies (the client builds the lease ID by concatenation).
        leaseId: flat(kv.lease), modRevision: kv.mod_revision, createRevision: kv.create_revision,
      };
    } catch (e) {
      if (e instanceof LeaseFormatError) return { key, reason: e.reason, detail: e.message };
      throw e;
    }
  }

  /** A key relative to the subnets prefix; control characters escaped, so a hostile key cannot forge log lines. */
  private relative(kv: IKeyValue): string {
    // Decoded from the prefix's end: a fresh string, not a slice that keeps the whole key alive.
    return kv.key.toString("utf8", Buffer.byteLength(this.subnetsPrefix)).replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  }

  /**
   * Creates the key for `subnet` attached to a new etcd lease of `ttlSec`,
   * only if the key does not exist (Version == 0). Returns undefined when
   * another node holds it; the granted lease is then revoked.
   */
  async create(subnet: Ipv4Prefix, subnet6: Ipv6Prefix | undefined, attrs: LeaseAttrs, ttlSec: number): Promise<Lease | undefined> {
    const key = this.subnetsPrefix + subnetKey(subnet, subnet6);
    let id: string | undefined;
    try {
      id = await this.grant(ttlSec);
      const r = await this.client.if(key, "Version", "==", 0)
        .then(this.client.put(key).value(encodeLeaseAttrs(attrs)).lease(id)).commit();
      if (!r.succeeded) {
        await this.revoke(id).catch(() => undefined);
        return undefined;
      }
      return {
        key: subnetKey(subnet, subnet6), subnet, ...(subnet6 ? { subnet6 } : {}), attrs, leaseId: id, modRevision: r.header.revision, createRevision: r.header.revision,
      };
    } catch (e) {
      if (id !== undefined) await this.revoke(id).catch(() => undefined);
      throw new RegistryUnavailableError(`creating ${key}`, e);
    }
  }

  /**
   * Rewrites our existing key (new attributes, and for a leased key a fresh
   * lease of `ttlSec`; a reservation stays without a lease), only if nobody
   * changed it since we read it (ModRevision unchanged). Undefined otherwise.
   */
  async rewrite(old: Lease, attrs: LeaseAttrs, ttlSec: number): Promise<Lease | undefined> {
    const key = this.subnetsPrefix + old.key;
    const reservation = old.leaseId === "0";
    let id: string | undefined;
    try {
      id = reservation ? "0" : await this.grant(ttlSec);
      const put = this.client.put(key).value(encodeLeaseAttrs(attrs));
      if (!reservation) put.lease(id);
      const r = await this.client.if(key, "Mod", "==", old.modRevision).then(put).commit();
      if (!r.succeeded) {
        if (!reservation) await this.revoke(id).catch(() => undefined);
        return undefined;
      }
      return { ...old, attrs, leaseId: id, modRevision: r.header.revision };
    } catch (e) {
      if (id !== undefined && !reservation) await this.revoke(id).catch(() => undefined);
      throw new RegistryUnavailableError(`rewriting ${key}`, e);
    }
  }

  /** Deletes a lease key (used to drop an incompatible lease of ours), only if it is still the one we read. */
  async deleteLease(l: Lease): Promise<void> {
    const key = this.subnetsPrefix + l.key;
    try {
      await this.client.if(key, "Mod", "==", l.modRevision).then(this.client.delete().key(key)).commit();
    } catch (e) {
      throw new RegistryUnavailableError(`deleting ${l.key}`, e);
    }
  }

  async grant(ttlSec: number): Promise<string> {
    const r = await this.client.leaseClient.leaseGrant({ TTL: ttlSec, ID: 0 });
    return r.ID;
  }

  async revoke(id: string): Promise<void> {
    await this.client.leaseClient.leaseRevoke({ ID: id });
  }

  /** Seconds an etcd lease has left; -1 when it no longer exists. */
  async timeToLive(id: string): Promise<number> {
    try {
      const r = await this.client.leaseClient.leaseTimeToLive({ ID: id, keys: false });
      return Number(r.TTL);
    } catch (e) {
      throw new RegistryUnavailableError(`reading the TTL of lease ${id}`, e);
    }
  }

  /** One keepalive for an existing etcd lease: its TTL again, or -1 when it no longer exists. */
  async keepAlive(id: string): Promise<number> {
    try {
      const stream = await this.client.leaseClient.leaseKeepAlive();
      try {
        const reply = new Promise<number>((resolve, reject) => {
          stream.on("data", (r: { TTL: string }) => resolve(Number(r.TTL) > 0 ? Number(r.TTL) : -1));
          stream.on("error", reject);
          stream.on("end", () => reject(new Error("keepalive stream ended")));
        });
        stream.write({ ID: id });
        const timeout = new Promise<number>((_, reject) =>
          setTimeout(() => reject(new Error("keepalive timed out")), this.opts.requestTimeoutMs ?? 5000).unref());
        return await Promise.race([reply, timeout]);
      } finally {
        stream.end();
      }
    } catch (e) {
      throw new RegistryUnavailableError(`renewing lease ${id}`, e);
    }
  }

  /**
   * Watches every lease key from `fromRevision`. Events are delivered in
   * order; `onError` is called once when the watch cannot go on (for
   * instance the revision was compacted): the caller re-lists and watches
   * again. Stream reconnects are handled inside the client and reported
   * through `onConnection`.
   */
  async watch(
    fromRevision: string,
    onEvent: (e: LeaseEvent, revision: string) => void,
    onError: (e: Error) => void,
    onConnection: (connected: boolean) => void = () => undefined,
  ): Promise<Watcher> {
    return watchPrefix(this.client, this.subnetsPrefix, fromRevision, (kind, kv) => {
      if (kind === "delete") {
        onEvent({ type: "delete", key: this.relative(kv) }, kv.mod_revision);
        return;
      }
      const d = this.decode(kv);
      onEvent("reason" in d ? { type: "skip", skipped: d } : { type: "put", lease: d }, kv.mod_revision);
    }, onError, onConnection);
  }
}

