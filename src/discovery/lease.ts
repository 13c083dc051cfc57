import type { Etcd3, Lease } from "etcd3";
import type { Logger } from "../common/log.js";

/**
 * The one etcd lease every endpoint this agent publishes for its pods is
 * written on, kept alive while the agent runs: if the node dies, its pods'
 * endpoints expire with it after the TTL. Granted on first use. When etcd
 * says the lease is gone (an outage longer than the TTL), a new one is
 * granted and `rewrite` puts every publication on it again.
 */
export class PublicationLease {
  private lease: Lease | undefined;
  private granting: Promise<Lease> | undefined;
  private closed = false;
  /** Leases granted again after a loss. */
  replaced = 0;

  constructor(
    private readonly client: Etcd3,
    readonly ttlSec: number,
    private readonly log: Logger,
    private readonly rewrite: (lease: Lease) => Promise<void>,
  ) {}

  /** The lease's id, once granted. */
  async id(): Promise<string | undefined> {
    return this.lease?.grant();
  }

  /** The lease (granted now if need be); throws when etcd cannot grant one. */
  current(): Promise<Lease> {
    if (this.lease) return Promise.resolve(this.lease);
    this.granting ??= this.grant().finally(() => (this.granting = undefined));
    return this.granting;
  }

  private async grant(): Promise<Lease> {
    const lease = this.client.lease(this.ttlSec);
    try {
      await lease.grant();
    } catch (e) {
      lease.release();
      throw e;
    }
    lease.on("lost", (err) => {
      if (this.closed || this.lease !== lease) return;
      this.lease = undefined;
      this.log.warn({ err: err.message }, "discovery: the publications' etcd lease was lost; granting a new one and publishing again");
      void this.regrant();
    });
    this.lease = lease;
    return lease;
  }

  private async regrant(): Promise<void> {
    for (let delay = 500; !this.closed; delay = Math.min(delay * 2, 5000)) {
      try {
        const l = await this.current();
        await this.rewrite(l);
        this.replaced++;
        return;
      } catch (e) {
        this.log.warn({ err: (e as Error).message, retryInMs: delay }, "discovery: publishing on a new lease failed; retrying");
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /** Revokes a lease of an earlier run by id (its keys go at once); false when etcd did not have it. */
  async revokeId(id: string): Promise<boolean> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: id });
      return true;
    } catch {
      return false;
    }
  }

  /** Stops the keepalive; the keys stay until the TTL runs out (a restarted agent takes them over). */
  close(): void {
    this.closed = true;
    this.lease?.release();
  }
}
