import { readFileSync } from "node:fs";
import type { Lease } from "etcd3";
import { writeFileAtomic } from "../common/fs-atomic.js";
import type { Logger } from "../common/log.js";
import { RegistryConflictError, type ServiceRegistry } from "../registry/store.js";
import { endpointKey, validateEndpoint, type Endpoint, type EndpointSpec } from "../registry/types.js";
import type { Publication } from "../client/types.js";
import type { DiscoveryCounters } from "./counters.js";
import { refuse } from "./errors.js";
import { PublicationLease } from "./lease.js";
import { podLabel, type PodDirectory, type PodRef } from "./pods.js";
import { planPublication } from "./publish-request.js";
import { KeyedSerial } from "../common/keyed-serial.js";

export interface PublicationOptions {
  /** TTL of the agent's lease under every publication (s). */
  readonly ttlSec: number;
  readonly maxPerPod: number;
  /** Where publications are kept across agent restarts (<state-dir>/discovery.json). */
  readonly stateFile: string;
}

interface Owned {
  readonly key: string;
  readonly namespace: string;
  readonly service: string;
  readonly id: string;
  readonly spec: EndpointSpec;
  readonly pod: { readonly containerId: string; readonly namespace: string; readonly name: string };
}

/** What is kept in the state file. */
interface Saved {
  readonly leaseId: string | undefined;
  readonly publications: readonly Owned[];
}

/** Anything that can tell whether a registry entry exists (the agent's RegistryWatcher). */
export interface EntryView {
  endpointsOf(namespace: string, name: string): readonly Endpoint[];
}

/**
 * The publication side of the discovery API: endpoints pods publish for
 * themselves through their node's agent, bound to the pod. Each is written
 * on the agent's one etcd lease (the node dies: they expire), removed when
 * the pod's address is released (CNI DEL, GC, the netns reconciler), and
 * kept in the state dir so a restarted agent publishes them again on its new
 * lease (and revokes the old one, taking with it what no pod holds anymore).
 * Operations on one pod run one at a time.
 */
export class Publications {
  private readonly byKey = new Map<string, Owned>();
  private readonly lease: PublicationLease;
  /** One operation at a time per key. */
  private readonly serial = new KeyedSerial();
  private closed = false;

  constructor(
    private readonly registry: ServiceRegistry,
    private readonly view: EntryView,
    private readonly pods: PodDirectory,
    private readonly opts: PublicationOptions,
    private readonly counters: DiscoveryCounters,
    private readonly log: Logger,
  ) {
    this.lease = new PublicationLease(registry.client, opts.ttlSec, log, (l) => this.rewrite(l));
    pods.onReleased((containerId, ip) => this.released(containerId, ip));
  }

  /** Publications per pod ("ns/name" → count), for status and metrics. */
  perPod(): Map<string, number> {
    const out = new Map<string, number>();
    for (const o of this.byKey.values()) out.set(podLabel(o.pod), (out.get(podLabel(o.pod)) ?? 0) + 1);
    return out;
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Publishes (or replaces) the pod's endpoint; `created` is false for a replacement. */
  publish(pod: PodRef, body: unknown): Promise<{ publication: Publication; created: boolean }> {
    const plan = planPublication(pod, body);
    return this.serial.run(pod.containerId, async () => {
      const current = this.pods.byContainer(pod.containerId);
      if (!current || plan.spec.addresses.some((a) => !current.addresses.includes(a))) {
        throw refuse(403, "not_a_pod", "the pod's address was released while publishing; nothing was published");
      }
      const key = endpointKey(this.registry.prefix, plan.namespace, plan.service, plan.id);
      const held = this.byKey.get(key);
      if (held && held.pod.containerId !== pod.containerId) {
        throw refuse(409, "conflict", `${plan.namespace}/${plan.service}/${plan.id} is published by another pod on this node (${podLabel(held.pod)}); choose another id`);
      }
      const mine = [...this.byKey.values()].filter((o) => o.pod.containerId === pod.containerId).length;
      if (!held && mine >= this.opts.maxPerPod) {
        throw refuse(429, "too_many_publications", `this pod has ${mine} publications, the limit per pod; remove one first (DELETE /v1/endpoints/<namespace>/<service>/<id>)`);
      }
      if (!held && this.view.endpointsOf(plan.namespace, plan.service).some((e) => e.id === plan.id)) {
        throw refuse(409, "conflict", `${plan.namespace}/${plan.service}/${plan.id} is already in the registry, written by another publisher; choose another id`);
      }
      const o: Owned = { key, ...plan, pod: { containerId: pod.containerId, namespace: pod.namespace, name: pod.name } };
      await this.write(o, await this.currentLease(), true);
      this.byKey.set(key, o);
      this.save();
      this.counters.published++;
      return { publication: toPublication(o), created: !held };
    });
  }

  /** Removes one of the pod's publications; false when the pod has none by that name. */
  unpublish(pod: PodRef, namespace: string, service: string, id: string): Promise<boolean> {
    return this.serial.run(pod.containerId, async () => {
      const key = endpointKey(this.registry.prefix, namespace, service, id);
      const o = this.byKey.get(key);
      if (!o) return false;
      if (o.pod.containerId !== pod.containerId) throw refuse(403, "not_owner", `${namespace}/${service}/${id} was published by another pod (${podLabel(o.pod)}); a pod removes only its own`);
      await this.remove(o);
      this.counters.unpublished++;
      return true;
    });
  }

  list(pod: PodRef): Publication[] {
    return [...this.byKey.values()].filter((o) => o.pod.containerId === pod.containerId).map(toPublication);
  }

  /** The pod's address is released: its publications that name the address go (etcd is not waited for past 2 s). */
  private released(containerId: string, ip: string): Promise<void> {
    if (this.closed) return Promise.resolve(); // stopping: the next run's restore() judges what is left
    return this.serial.run(containerId, async () => {
      const gone = [...this.byKey.values()].filter((o) => o.pod.containerId === containerId && (o.spec.addresses.includes(ip) || !this.pods.byContainer(containerId)));
      for (const o of gone) {
        this.byKey.delete(o.key);
        this.counters.releasedWithPod++;
      }
      if (gone.length === 0) return;
      this.save();
      this.log.info({ pod: podLabel(gone[0]!.pod), endpoints: gone.map((o) => o.key) }, "discovery: the pod's address was released; removing its published endpoints");
      const deletes = Promise.all(gone.map((o) => this.deleteKey(o.key)));
      await Promise.race([deletes, new Promise((r) => setTimeout(r, 2000).unref())]);
    });
  }

  /** Restores the last run's publications once etcd answers (retrying in the background). */
  start(): void {
    void (async () => {
      for (let delay = 1000; !this.closed; delay = Math.min(delay * 2, 10_000)) {
        try {
          await this.restore();
          return;
        } catch (e) {
          this.log.warn({ err: (e as Error).message, retryInMs: delay }, "discovery: restoring the last run's publications failed; retrying");
          await new Promise((r) => setTimeout(r, delay).unref());
        }
      }
    })();
  }

  /**
   * At start: publishes again, on a new lease, what the last run published
   * for pods that still hold their addresses; revokes the last run's lease,
   * which removes the rest at once.
   */
  async restore(): Promise<void> {
    const saved = readSaved(this.opts.stateFile, this.log);
    if (!saved) return;
    const live = saved.publications.map((o) => ({ ...o, key: endpointKey(this.registry.prefix, o.namespace, o.service, o.id) })).filter((o) => {
      const p = this.pods.byContainer(o.pod.containerId);
      return p !== undefined && o.spec.addresses.every((a) => p.addresses.includes(a));
    });
    for (const o of live) this.byKey.set(o.key, o);
    if (live.length > 0) {
      const lease = await this.currentLease();
      for (const o of live) await this.write(o, lease, false);
    }
    if (saved.leaseId && saved.leaseId !== (await this.lease.id())) await this.lease.revokeId(saved.leaseId);
    this.save();
    this.log.info({ republished: live.length, dropped: saved.publications.length - live.length }, "discovery: publications of the last run restored");
  }

  private async currentLease(): Promise<Lease> {
    try {
      return await this.lease.current();
    } catch (e) {
      throw refuse(503, "unavailable", `etcd cannot grant the publications' lease now: ${(e as Error).message}; try again`);
    }
  }

  private async write(o: Owned, lease: Lease, exclusive: boolean): Promise<void> {
    try {
      await this.registry.putEndpoint(o.namespace, o.service, o.id, o.spec, { lease, exclusive });
    } catch (e) {
      if (e instanceof RegistryConflictError) throw refuse(409, "conflict", e.message);
      throw refuse(503, "unavailable", `the registry cannot be written now: ${(e as Error).message}; try again`);
    }
  }

  private async remove(o: Owned): Promise<void> {
    await this.deleteKey(o.key, 1);
    this.byKey.delete(o.key);
    this.save();
  }

  /** Deletes a published key, retrying while etcd is away (at most `tries`; then its lease takes it eventually). */
  private async deleteKey(key: string, tries = 30): Promise<void> {
    for (let i = 0, delay = 500; i < tries && !this.closed; i++, delay = Math.min(delay * 2, 5000)) {
      try {
        await this.registry.client.delete().key(key);
        return;
      } catch (e) {
        if (i + 1 >= tries) throw refuse(503, "unavailable", `the registry cannot be written now: ${(e as Error).message}; try again`);
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  /** After a lost lease: every publication again, on the new one (what another publisher took meanwhile is dropped). */
  private async rewrite(lease: Lease): Promise<void> {
    for (const o of [...this.byKey.values()]) {
      try {
        await this.write(o, lease, true);
      } catch (e) {
        if ((e as { reason?: string }).reason !== "conflict") throw e;
        this.byKey.delete(o.key);
        this.log.warn({ key: o.key }, "discovery: a publication was taken by another publisher while the lease was lost; dropped");
      }
    }
    this.save();
  }

  private save(): void {
    void this.lease.id().then((leaseId) => {
      const s: Saved = { leaseId, publications: [...this.byKey.values()] };
      try {
        writeFileAtomic(this.opts.stateFile, `${JSON.stringify(s)}\n`, 0o600);
      } catch (e) {
        this.log.warn({ err: (e as Error).message, file: this.opts.stateFile }, "discovery: cannot keep the publications in the state dir (they still work; a restart loses them)");
      }
    });
  }

  /** Stops the lease's keepalive: the publications stay in etcd until its TTL (a restarted agent takes them over). */
  close(): void {
    this.closed = true;
    this.lease.close();
  }
}

function toPublication(o: Owned): Publication {
  return { key: o.key, endpoint: { namespace: o.namespace, service: o.service, id: o.id, ...o.spec }, pod: o.pod };
}

/** The last run's publications; a file that does not read is logged and ignored (its lease expires on its own). */
function readSaved(file: string, log: Logger): Saved | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  try {
    const raw = JSON.parse(text) as { leaseId?: unknown; publications?: unknown };
    const list = Array.isArray(raw.publications) ? raw.publications as Record<string, unknown>[] : [];
    const publications = list.map((p) => {
      const pod = p["pod"] as Record<string, unknown>;
      const [namespace, service, id, key] = [p["namespace"], p["service"], p["id"], p["key"]].map(String) as [string, string, string, string];
      const spec = validateEndpoint(p["spec"], `endpoint ${namespace}/${service}/${id}`);
      return { key, namespace, service, id, spec, pod: { containerId: String(pod["containerId"]), namespace: String(pod["namespace"]), name: String(pod["name"]) } };
    });
    return { leaseId: typeof raw.leaseId === "string" && /^\d+$/.test(raw.leaseId) ? raw.leaseId : undefined, publications };
  } catch (e) {
    log.warn({ file, err: (e as Error).message }, "discovery: the kept publications do not read; ignoring them (their lease expires on its own)");
    return undefined;
  }
}
