import type { RegistryChange } from "../registry/watch.js";
import type { Endpoint, Service } from "../registry/types.js";

/**
 * The bytes of the event stream (text/event-stream). An event is its frame
 * (`event:` and `data:` lines, shared by every subscriber that gets it) and a
 * terminator: a blank line, or `id: <revision>` and a blank line on the last
 * event a subscriber gets of one etcd revision. So a client's Last-Event-ID
 * is always a revision it has seen in full, and a reconnection never repeats
 * or skips part of one revision (a transaction, or a re-list's difference).
 */

/** Sent first: how long a client waits before reconnecting (the `retry` field). */
export function retryFrame(ms: number): Buffer {
  return Buffer.from(`retry: ${ms}\n\n`);
}

export const END = Buffer.from("\n");

export function idEnd(revision: string): Buffer {
  return Buffer.from(`id: ${revision}\n\n`);
}

/** A change as `weft svc watch` prints it, plus the revision. */
export function changeFrame(c: RegistryChange, revision: string): Buffer {
  return Buffer.from(`event: ${c.op}\ndata: ${JSON.stringify({ revision, ...c })}\n`);
}

/** A put that takes an entry out of a subscriber's filter (its labels changed) reaches it as a delete. */
export function deleteFrameOf(c: RegistryChange, revision: string): Buffer {
  const d = c.kind === "service"
    ? { revision, kind: c.kind, op: "delete", namespace: c.namespace, name: c.name }
    : { revision, kind: c.kind, op: "delete", namespace: c.namespace, name: c.name, id: c.id };
  return Buffer.from(`event: delete\ndata: ${JSON.stringify(d)}\n`);
}

export interface SnapshotBody {
  readonly revision: string;
  readonly reason?: string;
  readonly services: readonly Service[];
  readonly endpoints: readonly Endpoint[];
}

/** A whole (filtered) view, with its revision as id. */
export function snapshotEvent(json: string, revision: string): Buffer {
  return Buffer.from(`event: snapshot\ndata: ${json}\nid: ${revision}\n\n`);
}

/** The last event of a stream the agent gives up on, then it closes. */
export function droppedEvent(reason: string, revision: string): Buffer {
  return Buffer.from(`event: dropped\ndata: ${JSON.stringify({ reason, revision })}\n\n`);
}

/** Every `heartbeatMs`: keeps proxies from closing an idle stream and moves the client's last id on. */
export function heartbeat(revision: string): Buffer {
  return Buffer.from(`: keepalive\nid: ${revision}\n\n`);
}
