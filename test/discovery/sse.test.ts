import { describe, expect, it } from "vitest";
import { SseError, SseParser, type SseEvent } from "../../src/client/sse.js";

/**
 * The client's event-stream parser against the WHATWG rules, fed whole and
 * split at every byte (a stream arrives in chunks the server does not choose).
 */
function parse(chunks: readonly (string | Uint8Array)[], last = ""): { events: SseEvent[]; ids: string[]; retries: number[]; lastEventId: string } {
  const events: SseEvent[] = [];
  const ids: string[] = [];
  const retries: number[] = [];
  const p = new SseParser({ event: (e) => events.push(e), id: (i) => ids.push(i), retry: (ms) => retries.push(ms) }, last);
  for (const c of chunks) p.push(typeof c === "string" ? Buffer.from(c) : c);
  return { events, ids, retries, lastEventId: p.lastEventId };
}

/** Every split of `text` into two chunks, and one byte per chunk. */
function splits(text: string): (string | Uint8Array)[][] {
  const b = Buffer.from(text);
  const out: Uint8Array[][] = [[b]];
  for (let i = 1; i < b.length; i++) out.push([b.subarray(0, i), b.subarray(i)]);
  out.push([...b].map((x) => Uint8Array.of(x)));
  return out;
}

const STREAM = "retry: 1000\n\nevent: snapshot\ndata: {\"a\":1}\nid: 7\n\n: keepalive\n\nevent: put\r\ndata: x\r\ndata: y\r\n\r\nevent: delete\rdata: z\rid: 9\r\r" +
  "data: é€😀\n\nid: 12\n\nid\n\nbogus: 1\ndata\n\n";

describe("SSE parser", () => {
  it("reads events, ids, retry, comments and every line ending, however the stream is split", () => {
    for (const chunks of splits(STREAM)) {
      const r = parse(chunks);
      expect(r.events).toEqual([
        { type: "snapshot", data: '{"a":1}', lastEventId: "7" },
        { type: "put", data: "x\ny", lastEventId: "7" },
        { type: "delete", data: "z", lastEventId: "9" },
        { type: "message", data: "é€😀", lastEventId: "9" },
        // `id` without a value resets the id to ""; `data` without a colon is an empty data line
        { type: "message", data: "", lastEventId: "" },
      ]);
      expect(r.retries).toEqual([1000]);
      // an id line without data moves the last event id (12) without dispatching anything
      expect(r.ids).toEqual(["7", "9", "12", ""]);
      expect(r.lastEventId).toBe("");
    }
  });

  it("keeps the id it was given until the stream sets one; ignores ids with NUL and retry that is not digits", () => {
    const r = parse(["data: a\n\nid: 1\u00002\nretry: 10x\ndata: b\n\n"], "41");
    expect(r.events.map((e) => e.lastEventId)).toEqual(["41", "41"]);
    expect(r.retries).toEqual([]);
  });

  it("a CR at the end of a chunk followed by LF is one line end, not two", () => {
    const r = parse(["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
    expect(r.events).toEqual([{ type: "message", data: "a\nb", lastEventId: "" }]);
  });

  it("refuses an event that grows past its limit instead of holding it", () => {
    const p = new SseParser({ event: () => undefined }, "", 1024);
    expect(() => p.push(Buffer.from(`data: ${"x".repeat(2000)}`))).toThrow(SseError);
    const q = new SseParser({ event: () => undefined }, "", 1024);
    expect(() => {
      for (let i = 0; i < 100; i++) q.push(Buffer.from("data: 0123456789012345678901234567890123456789\n"));
    }).toThrow(SseError);
  });
});
