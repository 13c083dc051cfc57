import type { ServerResponse } from "node:http";
import { droppedEvent } from "./frames.js";
import type { Filter } from "./filter.js";

/** Why a stream ended (metric label values). */
export type StreamEnd = "client" | "slow" | "shutdown" | "error";

/**
 * One event-stream consumer. Writes go straight to its response; what it
 * has not read yet stays in Node's and the kernel's buffers, and once the
 * agent holds more than `maxPending` bytes for it (besides what was left of
 * its first snapshot when it started), it is dropped: a last
 * `dropped` event says why (it sees it after reading what came before), the
 * stream ends, and a consumer that does not read even that is cut after
 * `lingerMs`. Other consumers are not touched.
 */
export class Subscriber {
  /** The last revision written in full to this consumer (its resume point). */
  revision: string;
  events = 0;
  private ended = false;
  private linger: NodeJS.Timeout | undefined;
  /** What was queued before the first change (the snapshot): a consumer may take its time over it. */
  private readonly allowance: number;

  constructor(
    readonly res: ServerResponse,
    readonly filter: Filter,
    /** The client's address, or "unix" for the Unix socket. */
    readonly client: string,
    revision: string,
    private readonly maxPending: number,
    private readonly lingerMs: number,
    private readonly onEnd: (s: Subscriber, why: StreamEnd, detail: string) => void,
  ) {
    this.revision = revision;
    this.allowance = res.writableLength;
    res.on("close", () => this.finish("client", "the client closed the stream"));
    res.on("error", () => this.finish("error", "the stream failed"));
  }

  get open(): boolean {
    return !this.ended;
  }

  /** Bytes this consumer has not taken yet that the agent still holds. */
  get pending(): number {
    return this.res.writableLength;
  }

  /** Writes bytes; false when the consumer is (now) dropped. */
  write(buf: Buffer, revision: string, events: number): boolean {
    if (this.ended) return false;
    this.res.write(buf);
    this.revision = revision;
    this.events += events;
    if (this.res.writableLength > this.maxPending + this.allowance) {
      this.drop("slow", `this consumer is too far behind: ${this.res.writableLength} bytes unread, the limit is ${this.maxPending}${this.allowance ? ` (+${this.allowance} of the first snapshot)` : ""}; reconnect with Last-Event-ID ${this.revision} to resume`);
      return false;
    }
    return true;
  }

  /** Ends the stream with a last `dropped` event carrying the reason. */
  drop(why: StreamEnd, reason: string): void {
    if (this.ended) return;
    // The stream ends with the connection: its FIN follows the unread bytes, so a reader sees the reason, then the end.
    const sock = this.res.socket; // detached from the response by the time it finishes
    this.res.once("finish", () => sock?.end());
    this.res.end(droppedEvent(reason, this.revision));
    this.linger = setTimeout(() => this.res.destroy(), this.lingerMs);
    this.linger.unref();
    this.finish(why, reason);
  }

  private finish(why: StreamEnd, detail: string): void {
    if (this.ended) {
      if (why === "client") clearTimeout(this.linger);
      return;
    }
    this.ended = true;
    this.onEnd(this, why, detail);
  }
}
