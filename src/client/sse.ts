/**
 * An incremental parser of a Server-Sent Events stream (the WHATWG HTML
 * "event stream interpretation"): lines end in CRLF, LF or CR, also when a
 * chunk ends between CR and LF; `data` lines join with "\n"; an `id` line
 * sets the last event id even for an event without data (which is not
 * dispatched); `retry` takes digits only; comments (":") are ignored.
 */

export interface SseEvent {
  /** "message" when the event named none. */
  readonly type: string;
  readonly data: string;
  /** The stream's last event id when this event was dispatched. */
  readonly lastEventId: string;
}

/** A stream that is not an event stream weft's client can take. */
export class SseError extends Error {
  readonly code = "WEFT_SSE_INVALID";
}

export interface SseHandlers {
  readonly event: (e: SseEvent) => void;
  /** A `retry` line: the server's reconnection delay in ms. */
  readonly retry?: (ms: number) => void;
  /** The last event id changed (also by an `id` line without data). */
  readonly id?: (id: string) => void;
}

export class SseParser {
  private readonly decoder = new TextDecoder("utf-8");
  private line = "";
  /** The previous chunk ended in CR: an LF first in the next one ends no line. */
  private afterCr = false;
  private type = "";
  private data = "";
  private hasData = false;
  private idBuffer: string;
  /** Bytes of the event being read (lines, data): past `maxEventBytes` the stream is refused. */
  private size = 0;

  constructor(private readonly on: SseHandlers, lastEventId = "", private readonly maxEventBytes = 16 << 20) {
    this.idBuffer = lastEventId;
  }

  /** The last event id as the stream set it (what to send as Last-Event-ID). */
  get lastEventId(): string {
    return this.idBuffer;
  }

  /** Feeds bytes; throws SseError when an event grows past the limit. */
  push(chunk: Uint8Array): void {
    const text = this.decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      if (c === 10 && this.afterCr && i === start && this.line === "") {
        // the LF of a CRLF split across chunks (or right after a CR line end)
        this.afterCr = false;
        start = i + 1;
        continue;
      }
      this.lineDone(this.line + text.slice(start, i));
      this.line = "";
      if (c === 13) {
        if (text.charCodeAt(i + 1) === 10) i++;
        else if (i + 1 === text.length) this.afterCr = true;
      }
      start = i + 1;
    }
    if (start < text.length) {
      this.afterCr = false;
      this.line += text.slice(start);
      this.grow(text.length - start);
    }
  }

  private grow(n: number): void {
    this.size += n;
    if (this.size > this.maxEventBytes) throw new SseError(`an event of more than ${this.maxEventBytes} bytes: not a stream this client takes`);
  }

  private lineDone(line: string): void {
    this.afterCr = false;
    if (line === "") return this.dispatch();
    if (line.charCodeAt(0) === 58) return; // ":" comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case "event":
        this.type = value;
        break;
      case "data":
        this.grow(value.length + 1);
        this.data += `${value}\n`;
        this.hasData = true;
        break;
      case "id":
        if (!value.includes("\u0000")) this.idBuffer = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.on.retry?.(Number(value));
        break;
      default: // unknown fields are ignored
    }
  }

  private last = "";

  private dispatch(): void {
    const id = this.idBuffer;
    if (id !== this.last) {
      this.last = id;
      this.on.id?.(id);
    }
    const { type, data, hasData } = this;
    this.type = "";
    this.data = "";
    this.hasData = false;
    this.size = 0;
    if (!hasData) return;
    this.on.event({ type: type || "message", data: data.slice(0, -1), lastEventId: id });
  }
}
