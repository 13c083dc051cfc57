import type { ServerResponse } from "node:http";
import type { Logger } from "../common/log.js";
import type { Endpoint, Service } from "../registry/types.js";
import type { RegistryChange } from "../registry/watch.js";
import type { DiscoveryCounters, SnapshotReason } from "./counters.js";
import { refuse } from "./errors.js";
import { isOpen, labelsOf, matches, type Filter } from "./filter.js";
import { changeFrame, heartbeat, retryFrame, snapshotEvent } from "./frames.js";
import { render } from "./render.js";
import { ReplayLog } from "./replay.js";
import { Subscriber, type StreamEnd } from "./subscriber.js";

/** The live registry view the hub serves from: the agent's RegistryWatcher fits. */
export interface RegistryView {
  readonly isSynced: boolean;
  /** The etcd revision the view is current through. */
  readonly revision: string;
  services(): ReadonlyMap<string, Service>;
  allEndpoints(): Endpoint[];
  on(event: "change", f: (c: RegistryChange, revision: string) => void): unknown;
  on(event: "synced", f: () => void): unknown;
}

/** Whether etcd still has `revision` (not compacted away). "unknown": etcd could not say. */
export type RevisionCheck = (revision: string) => Promise<"available" | "compacted" | "unknown">;

export interface HubLimits {
  /** Changes kept for reconnecting clients, and their bytes. */
  readonly replayEntries: number;
  readonly replayBytes: number;
  /** Unread bytes the agent holds for one consumer before dropping it. */
  readonly maxPendingBytes: number;
  readonly maxSubscribers: number;
  /** Streams per client address (TCP; the Unix socket has no address). */
  readonly maxPerClient: number;
  readonly heartbeatMs: number;
  /** The `retry` the streams announce (ms). */
  readonly retryMs: number;
  /** How long a dropped consumer may take to read its last event before it is cut. */
  readonly lingerMs: number;
}

export const HUB_DEFAULTS: HubLimits = {
  replayEntries: 10_000, replayBytes: 16 << 20, maxPendingBytes: 1 << 20, maxSubscribers: 10_000, maxPerClient: 1024,
  heartbeatMs: 15_000, retryMs: 1000, lingerMs: 10_000,
};

const REVISION = /^\d{1,19}$/;

/**
 * The subscription side of the discovery API: every stream is served from
 * the one registry view (one etcd watch per node, however many streams).
 * Changes are encoded once, kept in a replay log by revision, and written to
 * each stream whose filter they pass (streams with equal filters share the
 * bytes). Changes of one turn of the event loop go out together, so a
 * transaction reaches a stream as one write.
 */
export class DiscoveryHub {
  private readonly log: ReplayLog;
  private pending: { c: RegistryChange; rev: string }[] = [];
  private queued = false;
  private readonly groups = new Map<string, Set<Subscriber>>();
  private readonly perClient = new Map<string, number>();
  private count = 0;
  private synced = false;
  private rev = "0";
  /** Labels of entries that have them, for label-filtered deletes ("ns/name" or "ns/name/id"). */
  private readonly labels = new Map<string, Readonly<Record<string, unknown>>>();
  private snapCache: { rev: string; body: string } | undefined;
  /** Encoded snapshot events of the current revision, by filter and reason: streams that start together share the bytes. */
  private readonly snapEvents = new Map<string, Buffer>();
  private snapEventsRev = "";
  private readonly checks = new Map<string, { at: number; p: ReturnType<RevisionCheck> }>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly view: RegistryView,
    private readonly checkRevision: RevisionCheck,
    readonly counters: DiscoveryCounters,
    private readonly logger: Logger,
    readonly limits: HubLimits = HUB_DEFAULTS,
  ) {
    this.log = new ReplayLog(limits.replayEntries, limits.replayBytes);
    view.on("change", (c, rev) => this.onChange(c, rev));
    view.on("synced", () => this.onSynced());
    if (view.isSynced) this.onSynced();
    this.timer = setInterval(() => this.beat(), limits.heartbeatMs);
    this.timer.unref();
  }

  /** The revision every stream has been given everything through. */
  get revision(): string {
    return this.rev;
  }

  get subscribers(): number {
    return this.count;
  }

  /** Subscribers by transport. */
  subscriberCounts(): { tcp: number; unix: number } {
    const unix = this.perClient.get("unix") ?? 0;
    return { tcp: this.count - unix, unix };
  }

  replayWindow(): { entries: number; bytes: number; floor: string; evicted: number } {
    return { entries: this.log.size, bytes: this.log.byteSize, floor: this.log.floor.toString(), evicted: this.log.evicted };
  }

  private onSynced(): void {
    if (this.synced) return;
    this.synced = true;
    this.pending = [];
    this.rev = this.view.revision;
    this.log.reset(BigInt(this.rev));
    for (const s of this.view.services().values()) this.remember(`${s.namespace}/${s.name}`, labelsOf(s));
    for (const e of this.view.allEndpoints()) this.remember(`${e.namespace}/${e.service}/${e.id}`, labelsOf(e));
  }

  private remember(key: string, l: Readonly<Record<string, unknown>> | undefined): void {
    if (l) this.labels.set(key, l);
    else this.labels.delete(key);
  }

  private onChange(c: RegistryChange, rev: string): void {
    if (!this.synced) return; // the first list: a stream starts from the view once synced
    this.pending.push({ c, rev });
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(() => this.flush());
  }

  /** Encodes the pending changes, logs them, and writes them to every stream they pass. */
  flush(): void {
    this.queued = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    const entries = batch.map(({ c, rev }) => {
      const key = c.kind === "service" ? `${c.namespace}/${c.name}` : `${c.namespace}/${c.name}/${c.id}`;
      const prevLabels = this.labels.get(key);
      this.remember(key, c.op === "put" ? labelsOf(c.value) : undefined);
      const e = { revision: BigInt(rev), rev, change: c, frame: changeFrame(c, rev), prevLabels };
      this.log.append(e);
      return e;
    });
    const last = entries[entries.length - 1]!.rev;
    if (BigInt(last) > BigInt(this.rev)) this.rev = last;
    for (const group of this.groups.values()) {
      const first = group.values().next().value;
      if (!first) continue;
      const r = render(entries, first.filter);
      if (!r) continue;
      for (const s of [...group]) {
        if (s.write(r.bytes, r.lastId ?? s.revision, r.events)) this.counters.eventsSent += r.events;
      }
    }
  }

  /** `GET /v1/services`: the filtered view as JSON. */
  snapshotJson(filter: Filter, reason?: SnapshotReason): string {
    this.notSyncedYet();
    this.flush();
    const head = `{"revision":${JSON.stringify(this.rev)}${reason ? `,"reason":${JSON.stringify(reason)}` : ""},`;
    if (isOpen(filter)) {
      if (this.snapCache?.rev !== this.rev) this.snapCache = { rev: this.rev, body: body([...this.view.services().values()], this.view.allEndpoints()) };
      return `${head}${this.snapCache.body}}`;
    }
    const services = [...this.view.services().values()].filter((s) => matches(filter, s.namespace, s.name, s));
    const endpoints = this.view.allEndpoints().filter((e) => matches(filter, e.namespace, e.service, e));
    return `${head}${body(services, endpoints)}}`;
  }

  private notSyncedYet(): void {
    if (!this.synced) throw refuse(503, "not_synced", "the agent has not listed the service registry yet (etcd not reached); try again in a moment");
  }

  /**
   * `GET /v1/services?watch=1`: opens a stream. Without Last-Event-ID it
   * starts with a snapshot; with one it starts with what changed since that
   * revision, or with a snapshot (and its reason) when the revision is
   * unknown here, older than the replay log, or compacted away in etcd.
   */
  async subscribe(res: ServerResponse, filter: Filter, lastEventId: string | undefined, client: string): Promise<void> {
    this.notSyncedYet();
    this.admit(client);
    let from: bigint | undefined;
    let reason: SnapshotReason = "initial";
    if (lastEventId !== undefined) {
      const id = lastEventId.trim();
      if (!REVISION.test(id)) throw refuse(400, "bad_last_event_id", `Last-Event-ID ${JSON.stringify(id.slice(0, 40))} is not a revision this API sent (a decimal number); leave it out for a snapshot`);
      const r = BigInt(id);
      this.flush();
      if (r > BigInt(this.rev)) reason = "unknown_revision";
      else if (r < this.log.floor) reason = "outside_replay";
      else if (r < BigInt(this.rev) && (await this.check(id)) === "compacted") reason = "compacted";
      else from = r;
      if (res.destroyed || this.closed) return;
      this.admit(client); // the check took a moment: the limits again
      if (from !== undefined && from < this.log.floor) {
        from = undefined;
        reason = "outside_replay";
      }
    }
    this.flush();
    // The stream lasts as long as its connection: no chunked framing, so each write is the frames' bytes alone.
    res.useChunkedEncodingByDefault = false;
    res.shouldKeepAlive = false;
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no", connection: "close" });
    res.write(retryFrame(this.limits.retryMs));
    let lastId = this.rev;
    if (from === undefined) {
      res.write(this.snapshotEventOf(filter, reason));
      this.counters.snapshots[reason]++;
    } else {
      const r = render(this.log.since(from) ?? [], filter);
      if (r) res.write(r.bytes);
      this.counters.resumed++;
      this.counters.replayed += r?.events ?? 0;
      lastId = r?.lastId ?? from.toString();
    }
    const s = new Subscriber(res, filter, client, lastId, this.limits.maxPendingBytes, this.limits.lingerMs, (x, why, detail) => this.ended(x, why, detail));
    this.count++;
    this.perClient.set(client, (this.perClient.get(client) ?? 0) + 1);
    let g = this.groups.get(filter.key);
    if (!g) this.groups.set(filter.key, (g = new Set()));
    g.add(s);
  }

  /**
   * The snapshot event for `filter` at the current revision, encoded once:
   * a thousand streams starting after an agent restart hold one copy of it,
   * not a thousand.
   */
  private snapshotEventOf(filter: Filter, reason: SnapshotReason): Buffer {
    if (this.snapEventsRev !== this.rev) {
      this.snapEvents.clear();
      this.snapEventsRev = this.rev;
    }
    const key = `${reason}\u0000${filter.key}`;
    let b = this.snapEvents.get(key);
    if (!b) {
      if (this.snapEvents.size >= 64) this.snapEvents.clear();
      b = snapshotEvent(this.snapshotJson(filter, reason), this.rev);
      this.snapEvents.set(key, b);
    }
    return b;
  }

  /** Refuses a stream over the limits (429 with the limit). */
  private admit(client: string): void {
    if (this.count >= this.limits.maxSubscribers) {
      throw refuse(429, "too_many_subscribers", `this agent serves ${this.count} streams, its limit (--discovery-max-subscribers); try again later`);
    }
    const n = this.perClient.get(client) ?? 0;
    if (client !== "unix" && n >= this.limits.maxPerClient) {
      throw refuse(429, "too_many_subscribers", `${client} holds ${n} streams, the limit per client address; close some first`);
    }
  }

  /** One etcd question per revision at a time, answers kept for a second. */
  private check(revision: string): ReturnType<RevisionCheck> {
    const now = Date.now();
    const hit = this.checks.get(revision);
    if (hit && now - hit.at < 1000) return hit.p;
    if (this.checks.size > 1000) this.checks.clear();
    const p = this.checkRevision(revision).catch(() => "unknown" as const);
    this.checks.set(revision, { at: now, p });
    return p;
  }

  private ended(s: Subscriber, why: StreamEnd, detail: string): void {
    const g = this.groups.get(s.filter.key);
    if (!g?.delete(s)) return;
    if (g.size === 0) this.groups.delete(s.filter.key);
    this.count--;
    const n = (this.perClient.get(s.client) ?? 1) - 1;
    if (n > 0) this.perClient.set(s.client, n);
    else this.perClient.delete(s.client);
    this.counters.ended[why]++;
    if (why === "slow") this.logger.warn({ client: s.client, reason: detail }, "discovery: dropped a consumer too far behind");
  }

  /** Keeps idle streams open and moves every client's last id to the current revision. */
  private beat(): void {
    this.flush();
    const hb = heartbeat(this.rev);
    for (const g of this.groups.values()) for (const s of [...g]) s.write(hb, this.rev, 0);
  }

  /** Ends every stream (each gets a last `dropped` event: the agent is stopping). */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const g of [...this.groups.values()]) {
      for (const s of [...g]) s.drop("shutdown", "the agent is stopping; reconnect (with Last-Event-ID) to resume");
    }
  }
}

function body(services: readonly Service[], endpoints: readonly Endpoint[]): string {
  return `"services":${JSON.stringify(services)},"endpoints":${JSON.stringify(endpoints)}`;
}
