import { EventEmitter } from "node:events";
import { request, type ClientRequest, type IncomingMessage } from "node:http";
import { SseParser, type SseEvent } from "./sse.js";
import { parseTarget, refusal, requestOptions, type DiscoveryApiError, type Target } from "./transport.js";
import type { Change, Dropped, Endpoint, Service, Snapshot } from "./types.js";

export interface SubscribeOptions {
  /** The agent: "unix:/path", "/path" or "http://host:port" (default: $WEFT_DISCOVERY, else /run/weft/discovery.sock). */
  readonly target?: string | Target;
  /** Only this namespace. */
  readonly namespace?: string;
  /** Only this service (and its endpoints). */
  readonly name?: string;
  /** Only entries carrying every one of these labels (`key=value` each; see README, "Discovery API"). */
  readonly labels?: Readonly<Record<string, string>>;
  /**
   * Resume from a position kept from an earlier subscription (its
   * `lastEventId`): the stream then starts with what changed since, not with
   * a snapshot (unless the agent no longer has that history), so the state
   * of the new Subscription holds only those changes; keep your own state.
   */
  readonly lastEventId?: string;
  /** First reconnection delay in ms (the agent's `retry` replaces it); doubles up to `maxRetryMs`. Default 1000. */
  readonly retryMs?: number;
  /** Default 30000. */
  readonly maxRetryMs?: number;
}

/** What a subscription delivers, in order. */
export type SubscriptionEvent =
  | { readonly type: "snapshot"; readonly snapshot: Snapshot }
  | { readonly type: "change"; readonly change: Change }
  | { readonly type: "dropped"; readonly dropped: Dropped };

export interface SubscriptionEvents {
  /** Every event, after the state was updated by it. */
  event: [SubscriptionEvent];
  /** The stream is open (again). */
  connected: [];
  /** The stream ended; `retryInMs` until the next attempt. */
  disconnected: [{ readonly reason: string; readonly retryInMs: number }];
  /** A refusal that retrying cannot fix (400, 403, 404): the subscription stops. */
  error: [DiscoveryApiError | Error];
}

/** Statuses worth retrying: the agent is starting (503) or at its subscriber limit (429). */
const RETRYABLE = new Set([429, 500, 502, 503, 504]);

/**
 * A live view of the registry through the node's agent: the state (services
 * and endpoints, kept by applying the stream's events) and the events
 * themselves, as listeners ("event") or an async iterator. When the stream
 * breaks it reconnects with Last-Event-ID, so it gets only what it missed
 * (or a snapshot, which replaces the state, when the agent no longer has
 * that history). `lastEventId` can be kept to resume a later subscription.
 */
export class Subscription extends EventEmitter<SubscriptionEvents> implements AsyncIterable<SubscriptionEvent> {
  readonly services = new Map<string, Service>();
  /** "ns/service/id" → endpoint. */
  readonly endpoints = new Map<string, Endpoint>();
  private readonly target: Target;
  private parser: SseParser | undefined;
  private id: string;
  private req: ClientRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private delay: number;
  private serverRetry: number | undefined;
  private up = false;
  private synced = false;
  private readonly waiting: ((v: IteratorResult<SubscriptionEvent>) => void)[] = [];
  private queue: SubscriptionEvent[] | undefined;
  /** Connections made (1 after the first). */
  connects = 0;

  constructor(private readonly opts: SubscribeOptions = {}) {
    super();
    this.target = typeof opts.target === "object" ? opts.target : parseTarget(opts.target);
    this.id = opts.lastEventId ?? "";
    this.delay = opts.retryMs ?? 1000;
    this.on("error", () => undefined); // an unheard "error" must not throw
    this.connect();
  }

  /** The position to resume from (the Last-Event-ID sent on reconnection). */
  get lastEventId(): string {
    return this.parser?.lastEventId ?? this.id;
  }

  get connected(): boolean {
    return this.up;
  }

  /** Resolves once the state holds a snapshot (or the resumed history); rejects when the subscription stops first. */
  ready(timeoutMs = 30_000): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => done(new Error(`no snapshot from the agent in ${timeoutMs} ms`)), timeoutMs);
      const onEvent = (): void => done();
      const onError = (e: Error): void => done(e);
      const done = (e?: Error): void => {
        clearTimeout(t);
        this.off("event", onEvent).off("error", onError);
        if (e) reject(e);
        else resolve();
      };
      this.on("event", onEvent).on("error", onError);
    });
  }

  /** Endpoints of one service. */
  endpointsOf(namespace: string, name: string): Endpoint[] {
    return [...this.endpoints.values()].filter((e) => e.namespace === namespace && e.service === name);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.req?.destroy();
    this.up = false;
    for (const w of this.waiting.splice(0)) w({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<SubscriptionEvent> {
    this.queue ??= [];
    return {
      next: () => {
        const v = this.queue?.shift();
        if (v) return Promise.resolve({ value: v, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiting.push(resolve));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  private path(): string {
    const q = new URLSearchParams({ watch: "1" });
    if (this.opts.namespace) q.set("namespace", this.opts.namespace);
    if (this.opts.name) q.set("name", this.opts.name);
    for (const [k, v] of Object.entries(this.opts.labels ?? {})) q.append("label", `${k}=${v}`);
    return `/v1/services?${q.toString()}`;
  }

  private connect(): void {
    if (this.closed) return;
    const last = this.lastEventId;
    this.id = last;
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (last) headers["last-event-id"] = last;
    const req = request(requestOptions(this.target, "GET", this.path(), headers), (res) => this.onResponse(req, res));
    this.req = req;
    req.on("error", (e) => this.lost(req, e.message));
    req.end();
  }

  private onResponse(req: ClientRequest, res: IncomingMessage): void {
    const status = res.statusCode ?? 0;
    if (status !== 200) {
      void refusal(res).then((err) => {
        if (RETRYABLE.has(status)) return this.lost(req, err.message);
        this.emit("error", err);
        this.close();
      });
      return;
    }
    this.connects++;
    this.up = true;
    this.emit("connected");
    const parser = new SseParser({
      event: (e) => this.onSse(e),
      retry: (ms) => (this.serverRetry = ms),
    }, this.id);
    this.parser = parser;
    res.on("data", (d: Buffer) => {
      try {
        parser.push(d);
      } catch (e) {
        req.destroy(e as Error);
      }
    });
    res.on("end", () => this.lost(req, "the agent ended the stream"));
    res.on("error", (e) => this.lost(req, e.message));
  }

  private lost(req: ClientRequest, reason: string): void {
    if (req !== this.req || this.closed) return;
    this.req = undefined;
    if (this.parser) this.id = this.parser.lastEventId;
    this.parser = undefined;
    this.up = false;
    req.destroy();
    const wait = this.serverRetry ?? this.delay;
    this.delay = Math.min(this.delay * 2, this.opts.maxRetryMs ?? 30_000);
    this.emit("disconnected", { reason, retryInMs: wait });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  private onSse(e: SseEvent): void {
    let ev: SubscriptionEvent;
    try {
      if (e.type === "snapshot") ev = { type: "snapshot", snapshot: JSON.parse(e.data) as Snapshot };
      else if (e.type === "put" || e.type === "delete") ev = { type: "change", change: JSON.parse(e.data) as Change };
      else if (e.type === "dropped") ev = { type: "dropped", dropped: JSON.parse(e.data) as Dropped };
      else return; // a kind this client does not know: skipped
    } catch {
      return; // not JSON: skipped
    }
    this.apply(ev);
    this.delay = this.opts.retryMs ?? 1000; // a working stream resets the backoff
    this.synced = true;
    this.emit("event", ev);
    if (this.queue) {
      const w = this.waiting.shift();
      if (w) w({ value: ev, done: false });
      else this.queue.push(ev);
    }
  }

  private apply(ev: SubscriptionEvent): void {
    if (ev.type === "snapshot") {
      this.services.clear();
      this.endpoints.clear();
      for (const s of ev.snapshot.services) this.services.set(`${s.namespace}/${s.name}`, s);
      for (const p of ev.snapshot.endpoints) this.endpoints.set(`${p.namespace}/${p.service}/${p.id}`, p);
      return;
    }
    if (ev.type !== "change") return;
    const c = ev.change;
    if (c.kind === "service") {
      if (c.op === "put") this.services.set(`${c.namespace}/${c.name}`, c.value);
      else this.services.delete(`${c.namespace}/${c.name}`);
    } else if (c.op === "put") this.endpoints.set(`${c.namespace}/${c.name}/${c.id}`, c.value);
    else this.endpoints.delete(`${c.namespace}/${c.name}/${c.id}`);
  }
}

/** Subscribes to the registry through the node's agent (see Subscription). */
export function subscribe(opts: SubscribeOptions = {}): Subscription {
  return new Subscription(opts);
}
